"""A real browser: headless Chromium (Debian's ``chromium``) loads the page wsproxy serves and
opens WebSockets through wsproxy, driven over the Chrome DevTools Protocol with the ``websockets``
client (no other test dependency).

* ws:// and wss:// (a trustme certificate for 127.0.0.1, trusted by its key's SPKI hash):
  random bytes go to a TCP echo and come back byte-exact, with the ``binary`` and ``base64``
  subprotocols.
* The demo: ``wsproxy.ini.example`` (what ``make run`` uses) serves ``web/`` in front of the line
  service; a line typed into the page comes back as the service's echo.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest
import trustme
from chromium import Chromium
from conftest import ROOT, ProxyProcess
from cryptography import x509
from cryptography.hazmat.primitives import serialization


def spki_hash(cert_pem: bytes) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)): what --ignore-certificate-errors-spki-list takes."""
    key = x509.load_pem_x509_certificate(cert_pem).public_key()
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


@pytest.fixture(scope="module")
def server_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A test CA's certificate for 127.0.0.1: (PEM file with key and chain, SPKI hash)."""
    cert = trustme.CA().issue_cert("127.0.0.1", "localhost")
    path = tmp_path_factory.mktemp("browser-pki") / "server.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(path))
    return str(path), spki_hash(cert.cert_chain_pems[0].bytes())


@pytest.fixture(scope="module")
def browser(
    tmp_path_factory: pytest.TempPathFactory, server_cert: tuple[str, str]
) -> Iterator[Chromium]:
    # Only our test certificate is trusted (by its key), not "any certificate".
    chromium = Chromium(
        tmp_path_factory.mktemp("chromium") / "profile",
        [f"--ignore-certificate-errors-spki-list={server_cert[1]}"],
    )
    yield chromium
    chromium.close()


@pytest.fixture(scope="module")
def web_proxy(echo_server, server_cert: tuple[str, str]) -> Iterator[ProxyProcess]:  # type: ignore[no-untyped-def]
    proc = ProxyProcess(
        ["127.0.0.1:0", echo_server.address, "--web", str(ROOT / "web"), "--cert", server_cert[0]]
    )
    yield proc
    proc.stop()


# Runs in the page: one WebSocket per subprotocol back to the page's own host, sends the bytes
# as one message and returns what came back (base64), with the negotiated subprotocol.
ROUND_TRIP_JS = """
(async (payloadB64, subprotocol) => {
  const toBytes = (b64) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const toB64 = (bytes) => {
    let s = "";
    for (let i = 0; i < bytes.length; i += 0x8000) {
      s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    }
    return btoa(s);
  };
  const payload = toBytes(payloadB64);
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  const ws = new WebSocket(scheme + location.host + "/", [subprotocol]);
  ws.binaryType = "arraybuffer";
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = () => reject(new Error("WebSocket failed to open"));
  });
  const received = await new Promise((resolve, reject) => {
    const parts = [];
    let size = 0;
    ws.onmessage = (event) => {
      const part = subprotocol === "base64" ? toBytes(event.data) : new Uint8Array(event.data);
      parts.push(part);
      size += part.length;
      if (size >= payload.length) {
        const all = new Uint8Array(size);
        let offset = 0;
        for (const p of parts) { all.set(p, offset); offset += p.length; }
        resolve(all);
      }
    };
    ws.onclose = (event) => reject(new Error("closed early: " + event.code));
    ws.send(subprotocol === "base64" ? toB64(payload) : payload);
  });
  const protocol = ws.protocol;
  ws.close(1000);
  return { protocol: protocol, url: ws.url, data: toB64(received) };
})(PAYLOAD, SUBPROTOCOL)
"""


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_page_served_by_wsproxy_round_trips_through_it(
    browser: Chromium, web_proxy: ProxyProcess, scheme: str
) -> None:
    page = browser.open_page(f"{scheme}://127.0.0.1:{web_proxy.port}/")
    payload = bytes(range(256)) + os.urandom(200_000)
    for subprotocol in ("binary", "base64"):
        expression = ROUND_TRIP_JS.replace(
            "PAYLOAD", json.dumps(base64.b64encode(payload).decode())
        ).replace("SUBPROTOCOL", json.dumps(subprotocol))
        result = browser.evaluate(page, expression)
        ws_scheme = "wss" if scheme == "https" else "ws"
        assert result["url"] == f"{ws_scheme}://127.0.0.1:{web_proxy.port}/"
        assert result["protocol"] == subprotocol
        assert base64.b64decode(result["data"]) == payload
    # The page's own terminal connected too, with the binary subprotocol.
    browser.wait_for(page, "document.getElementById('status').className.includes('open')")
    assert "binary" in browser.evaluate(page, "document.getElementById('status').textContent")
    browser.close_page(page)


@pytest.fixture
def line_service() -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "wsproxy.lineservice", "127.0.0.1:0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        m = re.search(r"line service on (\S+:\d+)", proc.stderr.readline())
        assert m, "the line service did not start"
        yield m.group(1)
    finally:
        proc.terminate()
        proc.wait(10)


def test_demo_page_echoes_a_typed_line(browser: Chromium, run_proxy, line_service: str) -> None:  # type: ignore[no-untyped-def]
    # What `make run` starts: the example configuration, with free ports instead of 6080/6081.
    proxy = run_proxy(["-c", "wsproxy.ini.example", "127.0.0.1:0", line_service], cwd=ROOT)
    page = browser.open_page(f"http://127.0.0.1:{proxy.port}/")
    screen = "document.getElementById('screen').textContent"
    browser.wait_for(page, f"{screen}.includes('hello from the wsproxy demo line service')")
    browser.wait_for(page, "document.activeElement === document.getElementById('line')")
    browser.call("Input.insertText", page, text="hello through the browser")
    for kind in ("keyDown", "keyUp"):
        browser.call(
            "Input.dispatchKeyEvent",
            page,
            type=kind,
            key="Enter",
            code="Enter",
            windowsVirtualKeyCode=13,
            text="\r" if kind == "keyDown" else "",
        )
    browser.wait_for(page, f"{screen}.includes('echo: hello through the browser')")
    proxy.wait_log(r"open peer=\S+ proto=rfc6455 sub=binary")
    browser.close_page(page)


# Runs in the page: one WebSocket with permessage-deflate; each payload goes out as one message
# and is collected back (the echo target may split it), byte-exact; returns the extension agreed.
DEFLATE_JS = """
(async (payloads) => {
  const bytes = (b64) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const ws = new WebSocket("ws://" + location.host + "/", ["binary"]);
  ws.binaryType = "arraybuffer";
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = () => reject(new Error("WebSocket failed to open"));
  });
  let wanted = null, got = [], size = 0, done = null;
  ws.onmessage = (event) => {
    const part = new Uint8Array(event.data);
    got.push(part);
    size += part.length;
    if (size >= wanted.length) done();
  };
  ws.onclose = (event) => { throw new Error("closed early: " + event.code); };
  const bad = [];
  for (const [i, b64] of payloads.entries()) {
    wanted = bytes(b64); got = []; size = 0;
    const back = new Promise((resolve) => { done = resolve; });
    ws.send(wanted);
    await back;
    const all = new Uint8Array(size);
    let offset = 0;
    for (const p of got) { all.set(p, offset); offset += p.length; }
    if (all.length !== wanted.length || all.some((b, j) => b !== wanted[j])) bad.push(i);
  }
  const extensions = ws.extensions;
  ws.onclose = null;
  ws.close(1000);
  return { extensions: extensions, bad: bad };
})(PAYLOADS)
"""


def test_chromium_negotiates_permessage_deflate(
    browser: Chromium,
    run_proxy,
    echo_server,  # type: ignore[no-untyped-def]
) -> None:
    proxy = run_proxy(
        ["--permessage-deflate", "--web", str(ROOT / "web"), "127.0.0.1:0", echo_server.address]
    )
    page = browser.open_page(f"http://127.0.0.1:{proxy.port}/")
    text = b"".join(b"%06d $ tail -f /var/log/syslog\r\n" % i for i in range(40000))[: 1 << 20]
    payloads = [text, os.urandom(256 * 1024)] + [os.urandom(n) for n in range(1, 51)]
    encoded = json.dumps([base64.b64encode(p).decode() for p in payloads])
    result = browser.evaluate(page, DEFLATE_JS.replace("PAYLOADS", encoded))
    assert result["bad"] == []
    # Chromium offers "permessage-deflate; client_max_window_bits"; both windows get the cap.
    assert result["extensions"] == (
        "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"
    )
    proxy.wait_log(r"closed peer=\S+ proto=rfc6455 sub=binary .* code=1000")
    browser.close_page(page)
