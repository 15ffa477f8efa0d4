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
import contextlib
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from conftest import ROOT, ProxyProcess
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from websockets.sync.client import connect

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--no-proxy-server",
    "--remote-debugging-port=0",
]
START_TIMEOUT = 30.0  # Chromium's first start on a cold, busy machine
CALL_TIMEOUT = 20.0


class Chromium:
    """One headless Chromium and a DevTools connection to it."""

    def __init__(self, profile: Path, extra_flags: list[str]) -> None:
        profile.mkdir()
        self.profile = profile
        self.stderr = open(profile.parent / "chromium.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *extra_flags, "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.stderr,
        )
        self.ids = 0
        self.targets: dict[str, str] = {}  # DevTools session id -> target (tab) id
        self._stack = contextlib.ExitStack()
        try:
            self.cdp = self._stack.enter_context(
                connect(self._endpoint(), max_size=None, proxy=None, open_timeout=10)
            )
        except BaseException:
            self.close()
            raise

    def _endpoint(self) -> str:
        """Chromium writes its DevTools port and path to DevToolsActivePort once it listens."""
        active = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"chromium exited {self.proc.returncode}:\n{self.log}")
            lines = active.read_text().split() if active.exists() else []
            if len(lines) >= 2:
                return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
            time.sleep(0.05)
        raise AssertionError("chromium did not open its DevTools port:\n" + self.log)

    @property
    def log(self) -> str:
        self.stderr.flush()
        return (self.profile.parent / "chromium.log").read_text(errors="replace")[-4000:]

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Send one DevTools command and wait for its result (events in between are skipped)."""
        self.ids += 1
        message: dict[str, Any] = {"id": self.ids, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        self.cdp.send(json.dumps(message))
        deadline = time.monotonic() + CALL_TIMEOUT
        while True:
            reply = json.loads(self.cdp.recv(timeout=max(deadline - time.monotonic(), 0.01)))
            if reply.get("id") == self.ids:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                return reply["result"]  # type: ignore[no-any-return]

    def open_page(self, url: str) -> str:
        """A new tab showing ``url``, loaded; returns its DevTools session id."""
        target = self.call("Target.createTarget", url=url)["targetId"]
        session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.targets[session] = target
        self.wait_for(
            session, f"location.href === {json.dumps(url)} && document.readyState === 'complete'"
        )
        return session

    def close_page(self, session: str) -> None:
        self.call("Target.closeTarget", targetId=self.targets.pop(session))

    def evaluate(self, session: str, expression: str) -> Any:
        result = self.call(
            "Runtime.evaluate",
            session,
            expression=expression,
            awaitPromise=True,
            returnByValue=True,
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise AssertionError(details.get("exception", {}).get("description") or details)
        return result["result"].get("value")

    def wait_for(self, session: str, condition: str, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while not self.evaluate(session, f"Boolean({condition})"):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {condition}")
            time.sleep(0.05)

    def close(self) -> None:
        if hasattr(self, "cdp"):
            with contextlib.suppress(Exception):  # the browser may already be gone
                self.call("Browser.close")
        self._stack.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()


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
