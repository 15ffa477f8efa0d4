"""The real client address behind a load balancer, on the wire: PROXY protocol v1/v2 and
X-Forwarded-For from trusted peers only (``trusted_proxies``).

The proxy trusts 127.0.0.1; a client connecting from 127.0.0.2 (also loopback) is an untrusted peer.
"""

from __future__ import annotations

import socket
import ssl
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
import websocket  # websocket-client
from conftest import EchoServer, ProxyProcess, read_http_head, read_until_closed
from websockets.sync.client import connect

TRUSTED = "127.0.0.1"
UNTRUSTED = "127.0.0.2"
SIG = b"\r\n\r\n\x00\r\nQUIT\n"
REQUEST = (
    b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


@pytest.fixture(scope="module")
def lb_proxy(echo_server: EchoServer) -> Iterator[ProxyProcess]:
    proc = ProxyProcess(
        ["--trusted-proxies", f"{TRUSTED} 10.0.0.0/8", "127.0.0.1:0", echo_server.address]
    )
    yield proc
    proc.stop()


def session(
    proxy: ProxyProcess,
    *,
    source: str = TRUSTED,
    preamble: list[bytes] | None = None,
    headers: dict[str, str] | None = None,
) -> int:
    """A real websockets client session with an echo; returns the client's port."""
    sock = socket.create_connection(
        ("127.0.0.1", proxy.port), timeout=5, source_address=(source, 0)
    )
    port = sock.getsockname()[1]
    for i, piece in enumerate(preamble or []):
        if i:
            time.sleep(0.05)  # the stimulus: the header arrives in separate segments
        sock.sendall(piece)
    with connect(proxy.url, sock=sock, additional_headers=headers, open_timeout=5) as ws:
        ws.send(b"ping")
        assert ws.recv(timeout=5) == b"ping"
    return port


def test_proxy_v1_from_trusted_peer_gives_the_real_address(lb_proxy: ProxyProcess) -> None:
    session(lb_proxy, preamble=[b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 443\r\n"])
    lb_proxy.wait_log(r"open peer=203\.0\.113\.7:56324 ")
    lb_proxy.wait_log(r"closed peer=203\.0\.113\.7:56324 ")


def test_proxy_v2_split_across_segments_gives_the_real_address(lb_proxy: ProxyProcess) -> None:
    body = (
        socket.inet_pton(socket.AF_INET6, "2001:db8::7")
        + bytes(16)
        + struct.pack("!HH", 4711, 6080)
    )
    header = SIG + b"\x21\x21" + struct.pack("!H", len(body)) + body
    session(lb_proxy, preamble=[header[:5], header[5:14], header[14:30], header[30:]])
    lb_proxy.wait_log(r"open peer=\[2001:db8::7\]:4711 ")


def test_proxy_v2_local_keeps_the_connection_address(lb_proxy: ProxyProcess) -> None:
    port = session(lb_proxy, preamble=[SIG + b"\x20\x00\x00\x00"])
    lb_proxy.wait_log(rf"open peer=127\.0\.0\.1:{port} ")


def test_proxy_header_before_tls_gives_the_real_address(
    tmp_path: Path, echo_server: EchoServer
) -> None:
    # HAProxy "send-proxy" in front of a wsproxy that terminates TLS itself: the header comes
    # first, in clear, then the ClientHello.
    ca = trustme.CA()
    pem = tmp_path / "cert.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(pem)
    proxy = ProxyProcess(["--trusted-proxies", TRUSTED, "--cert", str(pem), "--ssl-only",
                          "127.0.0.1:0", echo_server.address])  # fmt: skip
    try:
        client_tls = ssl.create_default_context()
        ca.configure_trust(client_tls)
        raw = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        raw.sendall(b"PROXY TCP4 203.0.113.20 192.0.2.1 40000 443\r\n")
        tls = client_tls.wrap_socket(raw, server_hostname="127.0.0.1")
        # websocket-client: one thread per TLS connection (see test_nginx.py)
        ws = websocket.create_connection(f"wss://127.0.0.1:{proxy.port}/", socket=tls, timeout=5)
        ws.send_binary(b"over tls")
        assert ws.recv() == b"over tls"
        ws.close()
        proxy.wait_log(r"open peer=203\.0\.113\.20:40000 ")
    finally:
        proxy.stop()


def test_forwarded_for_from_trusted_peer_gives_the_real_address(lb_proxy: ProxyProcess) -> None:
    session(lb_proxy, headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.8, 10.1.2.3"})
    lb_proxy.wait_log(r"open peer=203\.0\.113\.8 ")


def test_forwarded_for_from_untrusted_peer_is_ignored(lb_proxy: ProxyProcess) -> None:
    port = session(lb_proxy, source=UNTRUSTED, headers={"X-Forwarded-For": "203.0.113.9"})
    lb_proxy.wait_log(rf"closed peer=127\.0\.0\.2:{port} ")
    assert "203.0.113.9" not in lb_proxy.log


def test_forwarded_for_is_ignored_when_proxy_header_names_an_untrusted_client(
    lb_proxy: ProxyProcess,
) -> None:
    # HAProxy says the client is 203.0.113.10: that client's own X-Forwarded-For is not evidence.
    session(
        lb_proxy,
        preamble=[b"PROXY TCP4 203.0.113.10 192.0.2.1 1000 443\r\n"],
        headers={"X-Forwarded-For": "198.51.100.66"},
    )
    lb_proxy.wait_log(r"closed peer=203\.0\.113\.10:1000 ")
    assert "198.51.100.66" not in lb_proxy.log


def test_proxy_header_from_untrusted_peer_is_refused_with_400(lb_proxy: ProxyProcess) -> None:
    with socket.create_connection(
        ("127.0.0.1", lb_proxy.port), timeout=5, source_address=(UNTRUSTED, 0)
    ) as sock:
        sock.sendall(b"PROXY TCP4 203.0.113.11 192.0.2.1 1 2\r\n" + REQUEST)
        status, _, body = read_http_head(sock)
        body += read_until_closed(sock)
    assert status == 400
    assert b"trusted_proxies" in body
    lb_proxy.wait_log(r"refused peer=127\.0\.0\.2:\d+ status=400 reason=.*trusted_proxies")
    assert "203.0.113.11" not in lb_proxy.log


def test_malformed_proxy_header_from_trusted_peer_is_refused_with_400(
    lb_proxy: ProxyProcess,
) -> None:
    with socket.create_connection(("127.0.0.1", lb_proxy.port), timeout=5) as sock:
        sock.sendall(b"PROXY TCP4 203.0.113.12 nowhere 1 2\r\n" + REQUEST)
        status, _, _ = read_http_head(sock)
    assert status == 400


def test_without_trusted_proxies_a_proxy_header_is_a_bad_request(proxy: ProxyProcess) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        sock.sendall(b"PROXY TCP4 203.0.113.13 192.0.2.1 1 2\r\n" + REQUEST)
        status, _, _ = read_http_head(sock)
    assert status == 400
    assert "203.0.113.13" not in proxy.log


def test_forwarded_for_is_read_for_each_request_on_a_kept_alive_connection(
    run_proxy, tmp_path: Path, echo_server: EchoServer
) -> None:
    # A balancer reuses one connection for many clients: each request names its own.
    (tmp_path / "a.txt").write_bytes(b"a\n")
    proxy = run_proxy(["--trusted-proxies", TRUSTED, "--web", str(tmp_path),
                       "127.0.0.1:0", echo_server.address])  # fmt: skip
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    port = sock.getsockname()[1]
    for n, client in enumerate(["203.0.113.21", "203.0.113.22", None]):
        xff = f"X-Forwarded-For: {client}\r\n" if client else ""
        sock.sendall(f"GET /a.txt?n={n} HTTP/1.1\r\nHost: x\r\n{xff}\r\n".encode())
        status, _, body = read_http_head(sock)
        while len(body) < 2:
            body += sock.recv(2)
        assert (status, body) == (200, b"a\n")
    with connect(proxy.url, sock=sock, additional_headers={"X-Forwarded-For": "203.0.113.23"},
                 open_timeout=5) as ws:  # fmt: skip
        ws.send(b"ping")
        assert ws.recv(timeout=5) == b"ping"
    proxy.wait_log(r"web peer=203\.0\.113\.21 method=GET path=/a\.txt\?n=0 ")
    proxy.wait_log(r"web peer=203\.0\.113\.22 method=GET path=/a\.txt\?n=1 ")
    proxy.wait_log(rf"web peer=127\.0\.0\.1:{port} method=GET path=/a\.txt\?n=2 ")
    proxy.wait_log(r"open peer=203\.0\.113\.23 ")
