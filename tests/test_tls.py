"""TLS on the shared port: wss:// and https:// next to plain ws://, policy requests, --ssl-only,
--verify-client, and the start-up and run-time failures, with a trustme test CA and real clients
(``websockets``, Python ``ssl``, raw sockets)."""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
import websocket  # websocket-client
from conftest import ROOT, ProxyProcess, read_http_head, read_until_closed
from test_cli import run_cli
from websockets.exceptions import ConnectionClosed, InvalidMessage
from websockets.sync.client import connect

from wsproxy.protocol.sniff import POLICY_REQUEST

# How a client sees a TLS refusal: an alert, a reset, or a closed connection during the upgrade.
REFUSED = (ssl.SSLError, ConnectionError, ConnectionClosed, InvalidMessage, EOFError)


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def sync_safe(context: ssl.SSLContext) -> ssl.SSLContext:
    """TLS 1.2 for websockets' sync client. It reads on a background thread while the caller
    writes, on one ssl object; with TLS 1.3's post-handshake messages that now and then stalls
    its opening handshake (a client-side race: also seen with nginx as the server, never with
    websocket-client). TLS 1.3 itself is tested with websocket-client below."""
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    return context


@pytest.fixture(scope="module")
def tls_proxy(pki: dict[str, str], echo_server) -> Iterator[ProxyProcess]:  # type: ignore[no-untyped-def]
    web = str(ROOT / "web")
    proc = ProxyProcess(["127.0.0.1:0", echo_server.address, "--cert", pki["server"], "--web", web])
    yield proc
    proc.stop()


def assert_wss_echoes(port: int, context: ssl.SSLContext, data: bytes) -> None:
    with connect(f"wss://127.0.0.1:{port}/", subprotocols=["binary"], ssl=sync_safe(context)) as ws:
        ws.send(data)
        assert ws.recv(timeout=5) == data


def https_get(port: int, context: ssl.SSLContext, target: str = "/") -> tuple[int, bytes, str]:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as sock,
    ):
        version = str(sock.version())
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        status, headers, rest = read_http_head(sock)
        body = rest + read_until_closed(sock)
        assert len(body) == int(headers["content-length"])
        return status, body, version


def policy_request(sock: socket.socket) -> bytes:
    sock.sendall(POLICY_REQUEST)
    return read_until_closed(sock)


def test_plain_ws_wss_web_and_policy_on_one_port_at_once(
    tls_proxy: ProxyProcess, ca: trustme.CA
) -> None:
    port = tls_proxy.port
    wss_url = f"wss://127.0.0.1:{port}/"
    with (
        connect(tls_proxy.url, subprotocols=["binary"]) as ws,
        connect(wss_url, subprotocols=["binary"], ssl=sync_safe(client_context(ca))) as wss,
    ):
        # Both sessions are open while the web and policy requests come in on the same port.
        status, body, _ = https_get(port, client_context(ca))
        assert status == 200
        assert body == (ROOT / "web" / "index.html").read_bytes()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET /terminal.js HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert read_http_head(sock)[0] == 200
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            answer = policy_request(sock)
        assert answer.endswith(b"</cross-domain-policy>\n\0")
        assert f'to-ports="{port}"'.encode() in answer
        for client, data in ((ws, b"plain"), (wss, b"secure")):
            client.send(data)
            assert client.recv(timeout=5) == data
    tls_proxy.wait_log(r"policy peer=\S+ secure=False")


@pytest.mark.parametrize("subprotocol", ["binary", "base64"])
def test_wss_round_trip_is_byte_exact(
    tls_proxy: ProxyProcess, ca: trustme.CA, subprotocol: str
) -> None:
    url = f"wss://127.0.0.1:{tls_proxy.port}/"
    with connect(
        url, subprotocols=[subprotocol], ssl=sync_safe(client_context(ca)), max_size=None
    ) as ws:
        assert ws.subprotocol == subprotocol
        for size in (1, 125, 65536, 1 << 20):
            data = os.urandom(size)
            ws.send(data if subprotocol == "binary" else base64.b64encode(data).decode())
            got = b""
            while len(got) < size:
                message = ws.recv(timeout=10)
                got += message if subprotocol == "binary" else base64.b64decode(message)
            assert got == data


def test_policy_request_inside_tls(tls_proxy: ProxyProcess, ca: trustme.CA) -> None:
    context = client_context(ca)
    with (
        socket.create_connection(("127.0.0.1", tls_proxy.port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as sock,
    ):
        assert policy_request(sock).endswith(b"</cross-domain-policy>\n\0")
    tls_proxy.wait_log(r"policy peer=\S+ secure=True")


def test_policy_can_be_switched_off(run_proxy, echo_server) -> None:  # type: ignore[no-untyped-def]
    proc = run_proxy(["127.0.0.1:0", echo_server.address, "--no-policy"])
    with socket.create_connection(("127.0.0.1", proc.port), timeout=5) as sock:
        assert policy_request(sock) == b""
    proc.wait_log(r'refused peer=\S+ reason="flash policy is off"')


def test_policy_domain_and_ports_from_settings(run_proxy, echo_server) -> None:  # type: ignore[no-untyped-def]
    proc = run_proxy(
        [
            "127.0.0.1:0",
            echo_server.address,
            "--policy-domain",
            "example.com",
            "--policy-ports",
            "5900-5910,6080",
        ]
    )
    with socket.create_connection(("127.0.0.1", proc.port), timeout=5) as sock:
        answer = policy_request(sock)
    assert b'domain="example.com" to-ports="5900-5910,6080"' in answer


def test_tls_is_1_2_or_newer(tls_proxy: ProxyProcess, ca: trustme.CA) -> None:
    assert https_get(tls_proxy.port, client_context(ca))[2] in ("TLSv1.2", "TLSv1.3")
    context = client_context(ca)
    context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_2
    assert https_get(tls_proxy.port, context)[2] == "TLSv1.2"


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
def test_tls_1_1_client_is_refused(tls_proxy: ProxyProcess, ca: trustme.CA) -> None:
    context = client_context(ca)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.minimum_version = ssl.TLSVersion.TLSv1
    context.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises((ssl.SSLError, ConnectionError)):
        https_get(tls_proxy.port, context)
    tls_proxy.wait_log(r'refused peer=\S+ reason="TLS handshake failed: \w+')


def test_hixie_location_says_wss_over_tls(tls_proxy: ProxyProcess, ca: trustme.CA) -> None:
    context = client_context(ca)
    with (
        socket.create_connection(("127.0.0.1", tls_proxy.port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as sock,
    ):
        sock.sendall(
            b"GET /path HTTP/1.1\r\nHost: h:1\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n"
            b"Origin: https://h\r\n\r\n"
        )
        status, headers, _ = read_http_head(sock)
    assert status == 101
    assert headers["websocket-location"] == "wss://h:1/path"


def test_failed_handshakes_do_not_disturb_other_clients(
    tls_proxy: ProxyProcess, ca: trustme.CA
) -> None:
    url = f"wss://127.0.0.1:{tls_proxy.port}/"
    with connect(url, subprotocols=["binary"], ssl=sync_safe(client_context(ca))) as ws:
        # A broken ClientHello, an untrusting client, a client that stops mid-handshake.
        with socket.create_connection(("127.0.0.1", tls_proxy.port), timeout=5) as sock:
            sock.sendall(b"\x16\x03\x01\x00\x05hello" + os.urandom(64))
            assert read_until_closed(sock)[:1] in (b"", b"\x15")  # nothing, or a TLS alert
        with pytest.raises(ssl.SSLCertVerificationError):
            https_get(tls_proxy.port, ssl.create_default_context())
        with socket.create_connection(("127.0.0.1", tls_proxy.port), timeout=5) as sock:
            sock.sendall(b"\x16\x03")
        ws.send(b"still here")
        assert ws.recv(timeout=5) == b"still here"


def test_ssl_only_refuses_plain_connections(
    run_proxy, pki: dict[str, str], ca: trustme.CA, echo_server
) -> None:  # type: ignore[no-untyped-def]
    args = ["--cert", pki["cert"], "--key", pki["key"], "--ssl-only"]
    proc = run_proxy(["127.0.0.1:0", echo_server.address, *args])
    with socket.create_connection(("127.0.0.1", proc.port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n")
        assert read_until_closed(sock) == b""
    proc.wait_log(r'refused peer=\S+ reason="plain connection, ssl_only"')
    assert_wss_echoes(proc.port, client_context(ca), b"tls only")


def test_verify_client_requires_a_client_certificate(
    run_proxy, pki: dict[str, str], ca: trustme.CA, echo_server
) -> None:  # type: ignore[no-untyped-def]
    args = ["--cert", pki["server"], "--verify-client", "--cafile", pki["ca"]]
    proc = run_proxy(["127.0.0.1:0", echo_server.address, *args])
    url = f"wss://127.0.0.1:{proc.port}/"
    with (
        pytest.raises(REFUSED),
        connect(
            url, subprotocols=["binary"], ssl=sync_safe(client_context(ca)), open_timeout=5
        ) as ws,
    ):
        ws.send(b"x")
        ws.recv(timeout=5)
    proc.wait_log(r'refused peer=\S+ reason="TLS handshake failed: \w+')

    context = client_context(ca)
    ca.issue_cert("client@example.test").configure_cert(context)
    assert_wss_echoes(proc.port, context, b"with a client certificate")

    other = client_context(ca)
    trustme.CA().issue_cert("stranger@example.test").configure_cert(other)
    with (
        pytest.raises(REFUSED),
        connect(url, subprotocols=["binary"], ssl=sync_safe(other), open_timeout=5) as ws,
    ):
        ws.send(b"x")
        ws.recv(timeout=5)


@pytest.mark.parametrize(
    ("args", "culprit"),
    [
        (["--cert", "{d}/missing.pem"], "{d}/missing.pem"),
        (["--cert", "{d}"], "{d}"),  # a directory
        (["--cert", "{garbage}"], "{garbage}"),
        (["--cert", "{cert}", "--key", "{d}/missing-key.pem"], "{d}/missing-key.pem"),
        (["--cert", "{cert}", "--key", "{encrypted-key}"], "{encrypted-key}"),
        (["--cert", "{cert}"], "{cert}"),  # no key in the file, none given
        (["--cert", "{server}", "--verify-client", "--cafile", "{d}/no-ca.pem"], "{d}/no-ca.pem"),
        (["--ssl-only"], "cert"),
        (["--key", "{key}"], "cert"),
    ],
)
def test_bad_tls_configuration_exits_2_naming_the_file(
    pki: dict[str, str], args: list[str], culprit: str
) -> None:
    names = {**pki, "d": str(Path(pki["server"]).parent)}
    result = run_cli("127.0.0.1:0", "127.0.0.1:1", *(a.format(**names) for a in args))
    assert result.returncode == 2, result.stderr
    assert culprit.format(**names) in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_tls_without_a_certificate_is_closed_and_logged_once(
    proxy: ProxyProcess, ca: trustme.CA
) -> None:
    for _ in range(3):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            https_get(proxy.port, client_context(ca))
    proxy.wait_log(r"TLS client but no certificate configured.*--cert FILE")
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        port = sock.getsockname()[1]
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_http_head(sock)[0] == 404  # plain requests still work
    # Logged after the three TLS attempts were refused: once it is in, a second warning would be.
    proxy.wait_log(rf"refused peer=127\.0\.0\.1:{port} status=404")
    assert sum("no certificate configured" in line for line in proxy.lines) == 1


def test_policy_request_sent_one_byte_at_a_time(tls_proxy: ProxyProcess) -> None:
    with socket.create_connection(("127.0.0.1", tls_proxy.port), timeout=5) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for byte in POLICY_REQUEST:
            sock.send(bytes([byte]))
            time.sleep(0.002)
        assert read_until_closed(sock).endswith(b"</cross-domain-policy>\n\0")


@pytest.mark.parametrize("first_bytes", [b"", b"<policy-file", b"\x16\x03\x01", b"GET / HT"])
def test_stalled_clients_are_closed_after_the_handshake_timeout(
    run_proxy, pki: dict[str, str], echo_server, first_bytes: bytes
) -> None:  # type: ignore[no-untyped-def]
    proc = run_proxy(
        ["127.0.0.1:0", echo_server.address, "--cert", pki["server"], "--handshake-timeout", "0.5"]
    )
    with socket.create_connection(("127.0.0.1", proc.port), timeout=5) as sock:
        sock.sendall(first_bytes)
        started = time.monotonic()
        read_until_closed(sock)
        assert 0.3 < time.monotonic() - started < 4
    proc.wait_log(r'refused peer=\S+ reason="?handshake timed out')


def test_one_handshake_deadline_covers_tls_and_the_request(
    run_proxy, pki: dict[str, str], ca: trustme.CA, echo_server
) -> None:  # type: ignore[no-untyped-def]
    # TLS handshake at 0.6 s, request at 1.3 s: each step is within 1 s, the whole handshake
    # is not. (A fresh timeout per step would answer 101.)
    proc = run_proxy(
        ["127.0.0.1:0", echo_server.address, "--cert", pki["server"], "--handshake-timeout", "1"]
    )
    raw = socket.create_connection(("127.0.0.1", proc.port), timeout=5)
    started = time.monotonic()
    time.sleep(0.6)
    answer = b""
    with client_context(ca).wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        time.sleep(1.3 - (time.monotonic() - started))
        with contextlib.suppress(OSError):  # the proxy closed: a reset or a TLS error
            sock.sendall(
                b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            answer = sock.recv(4096)
    assert b" 101 " not in answer
    proc.wait_log(r'refused peer=\S+ reason="handshake timed out" step=sniff')


def test_wss_over_tls_1_3_with_websocket_client(tls_proxy, ca: trustme.CA) -> None:  # type: ignore[no-untyped-def]
    ws = websocket.create_connection(
        f"wss://127.0.0.1:{tls_proxy.port}/",
        subprotocols=["binary"],
        sslopt={"context": client_context(ca)},
        timeout=10,
    )
    try:
        assert ws.sock.version() == "TLSv1.3"
        data = os.urandom(200_000)
        ws.send_binary(data)
        got = b""
        while len(got) < len(data):
            got += ws.recv()
        assert got == data
    finally:
        ws.close()
