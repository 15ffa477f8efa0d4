"""``--ssl-target``: TLS toward the target, with SNI, checked against the system's CAs or
``--target-cafile``, ``--target-insecure``; and a TLS 1.3 target that sends session tickets and
speaks first (as a VNC server does) never has its first bytes held back. Real TLS (a trustme CA
and Python's OpenSSL as the target), real clients (websocket-client, websockets)."""

from __future__ import annotations

import contextlib
import signal
import socket
import ssl
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
import websocket  # websocket-client
from conftest import EchoServer, ProxyProcess, free_port, raw_connect, read_http_head
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

GREETING = b"RFB 003.008\n"  # a VNC server's first bytes, sent unasked right after the handshake


class TLSTarget(EchoServer):
    """A TLS server on loopback. Per connection: shake hands, send ``greeting`` (if any), then
    answer each read with ``b"ok:" + data`` until the peer closes. Records the SNI names and
    TLS versions it saw and the handshakes that failed."""

    def __init__(self, context: ssl.SSLContext, greeting: bytes = b"") -> None:
        self.context = context
        self.greeting = greeting
        self.names: list[str | None] = []
        self.versions: list[str | None] = []
        self.failures: list[str] = []
        context.sni_callback = self._sni
        super().__init__()  # accepts from now on

    def _sni(self, sock: ssl.SSLObject, name: str | None, context: ssl.SSLContext) -> None:
        self.names.append(name)

    def _echo(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        try:
            with self.context.wrap_socket(conn, server_side=True) as tls:
                self.versions.append(tls.version())
                if self.greeting:
                    tls.sendall(self.greeting)
                while data := tls.recv(65536):
                    tls.sendall(b"ok:" + data)
        except (OSError, ssl.SSLError) as exc:
            self.failures.append(str(exc))


@pytest.fixture(scope="module")
def ca_file(pki: dict[str, str]) -> str:
    return pki["ca"]


def server_context(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    return context


@pytest.fixture
def target(ca: trustme.CA) -> Iterator[TLSTarget]:
    server = TLSTarget(server_context(ca, "localhost", "127.0.0.1"))
    yield server
    server.close()


def echo_by_websocket_client(port: int, data: bytes) -> bytes:
    ws = websocket.create_connection(f"ws://127.0.0.1:{port}/", subprotocols=["binary"], timeout=5)
    try:
        ws.send_binary(data)
        return bytes(ws.recv())
    finally:
        ws.close()


def upgrade_status(port: int) -> tuple[int, bytes]:
    """A raw RFC 6455 upgrade: the answer's status and body."""
    with raw_connect(port) as sock:
        sock.sendall(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        status, _, body = read_http_head(sock)
        return status, body


def test_ssl_target_sends_the_host_name_and_checks_it_against_target_cafile(
    run_proxy: type[ProxyProcess], target: TLSTarget, ca_file: str
) -> None:
    proc = run_proxy(
        ["127.0.0.1:0", f"localhost:{target.port}", "--ssl-target", "--target-cafile", ca_file]
    )
    assert echo_by_websocket_client(proc.port, b"hello") == b"ok:hello"
    assert target.names == ["localhost"]  # SNI is the target's host name
    assert target.versions == ["TLSv1.3"]


def test_ssl_target_uses_the_system_cas_by_default(
    run_proxy: type[ProxyProcess], target: TLSTarget, ca_file: str
) -> None:
    # OpenSSL's default verify paths honour SSL_CERT_FILE: a "system store" holding the test CA.
    trusting = run_proxy(
        ["127.0.0.1:0", f"127.0.0.1:{target.port}", "--ssl-target"],
        env={"SSL_CERT_FILE": ca_file, "SSL_CERT_DIR": "/nonexistent"},
    )
    # The certificate names 127.0.0.1 too.
    assert echo_by_websocket_client(trusting.port, b"by ip") == b"ok:by ip"
    assert target.names == [None]  # no SNI for an IP address
    # The real system store does not know the test CA: 502 with the reason, logged too.
    plain = run_proxy(["127.0.0.1:0", f"localhost:{target.port}", "--ssl-target"])
    status, body = upgrade_status(plain.port)
    assert status == 502
    assert b"certificate not trusted" in body
    plain.wait_log(r"refused peer=\S+ status=502 reason=.*certificate not trusted: .*unable to get")


def test_a_certificate_for_another_name_is_502(
    run_proxy: type[ProxyProcess], ca: trustme.CA, ca_file: str
) -> None:
    other = TLSTarget(server_context(ca, "other.example"))
    try:
        proc = run_proxy(
            ["127.0.0.1:0", f"localhost:{other.port}", "--ssl-target", "--target-cafile", ca_file]
        )
        status, body = upgrade_status(proc.port)
        assert status == 502
        assert b"Hostname mismatch" in body
        with pytest.raises(websocket.WebSocketBadStatusException) as exc_info:
            echo_by_websocket_client(proc.port, b"x")
        assert exc_info.value.status_code == 502
    finally:
        other.close()


def test_target_insecure_skips_the_check_and_warns_at_start(
    run_proxy: type[ProxyProcess], target: TLSTarget
) -> None:
    proc = run_proxy(
        ["127.0.0.1:0", f"localhost:{target.port}", "--ssl-target", "--target-insecure"]
    )
    proc.wait_log(r"WARNING .*target_insecure: the target's TLS certificate is not checked")
    assert echo_by_websocket_client(proc.port, b"unchecked") == b"ok:unchecked"


def test_a_target_that_does_not_speak_tls_is_502(
    run_proxy: type[ProxyProcess], echo_server: EchoServer
) -> None:
    proc = run_proxy(["127.0.0.1:0", echo_server.address, "--ssl-target", "--target-insecure"])
    status, body = upgrade_status(proc.port)
    assert status == 502
    assert b"TLS handshake failed" in body


def test_a_target_that_never_answers_the_handshake_is_502_after_connect_timeout(
    run_proxy: type[ProxyProcess],
) -> None:
    silent = socket.create_server(("127.0.0.1", 0))  # accepts (backlog) and says nothing
    try:
        port = silent.getsockname()[1]
        proc = run_proxy(
            ["127.0.0.1:0", f"127.0.0.1:{port}", "--ssl-target", "--connect-timeout", "0.5"]
        )
        started = time.monotonic()
        status, body = upgrade_status(proc.port)
        assert status == 502
        assert b"timed out" in body
        assert time.monotonic() - started < 4
    finally:
        silent.close()


@pytest.mark.parametrize("tickets", [2, 8])
def test_tls_1_3_session_tickets_never_hold_back_the_targets_first_bytes(
    run_proxy: type[ProxyProcess], ca: trustme.CA, ca_file: str, tickets: int
) -> None:
    # The target sends its session tickets, then its greeting, then waits for the client: a
    # relay that waited on the raw socket while OpenSSL held the greeting would stall here.
    context = server_context(ca, "localhost")
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.num_tickets = tickets
    vnc = TLSTarget(context, greeting=GREETING)
    try:
        proc = run_proxy(
            ["127.0.0.1:0", f"localhost:{vnc.port}", "--ssl-target", "--target-cafile", ca_file]
        )
        for attempt in range(10):
            with connect(proc.url, subprotocols=["binary"], open_timeout=5) as ws:
                assert ws.recv(timeout=2) == GREETING, attempt  # a stall never ends
                ws.send(b"RFB 003.008\n")
                assert ws.recv(timeout=2) == b"ok:RFB 003.008\n"
        assert vnc.versions == ["TLSv1.3"] * 10
        assert not vnc.failures
    finally:
        vnc.close()


def test_tls_1_3_session_tickets_never_hold_back_what_the_client_says_first(
    run_proxy: type[ProxyProcess], ca: trustme.CA, ca_file: str
) -> None:
    # The target sends only its session tickets and waits for the client's request. A relay
    # that, woken by the tickets' bytes, sat in a read for data that is not coming could not
    # forward the request: websockify's select loop does that with its blocking TLS socket.
    context = server_context(ca, "localhost")
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    web = TLSTarget(context)
    try:
        proc = run_proxy(
            ["127.0.0.1:0", f"localhost:{web.port}", "--ssl-target", "--target-cafile", ca_file]
        )
        for attempt in range(10):
            with connect(proc.url, subprotocols=["binary"], open_timeout=5) as ws:
                time.sleep(0.05)  # the tickets are in before the request goes out
                ws.send(b"GET / HTTP/1.0\r\n\r\n")
                assert ws.recv(timeout=2) == b"ok:GET / HTTP/1.0\r\n\r\n", attempt
        assert web.versions == ["TLSv1.3"] * 10
    finally:
        web.close()


@pytest.mark.parametrize("how", ["idle", "stop"])
def test_a_tls_target_session_closed_by_the_server_ends_cleanly(
    run_proxy: type[ProxyProcess], target: TLSTarget, ca_file: str, how: str
) -> None:
    # Our side cuts the target (idle timeout, shutdown) while its pump waits in a TLS read.
    args = ["127.0.0.1:0", f"localhost:{target.port}", "--ssl-target", "--target-cafile", ca_file]
    proc = run_proxy([*args, "--session-idle-timeout", "0.5"] if how == "idle" else args)
    with connect(proc.url, subprotocols=["binary"], open_timeout=5) as ws:
        ws.send(b"before")
        assert ws.recv(timeout=5) == b"ok:before"
        if how == "stop":
            proc.proc.send_signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
    assert ws.close_code == (1000 if how == "idle" else 1001)
    proc.wait_log(r"closed peer=\S+ .* by=server code=100[01]")
    if how == "stop":
        assert proc.stop() == 0
    assert "Traceback" not in proc.log
    assert "Error" not in proc.log


def test_ssl_target_with_a_token_target(
    run_proxy: type[ProxyProcess], target: TLSTarget, ca_file: str, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens.cfg"
    tokens.write_text(f"vnc: localhost:{target.port}\n")
    proc = run_proxy(
        ["--token-source", str(tokens), "127.0.0.1:0", "--ssl-target", "--target-cafile", ca_file]
    )
    ws = websocket.create_connection(f"ws://127.0.0.1:{proc.port}/?token=vnc", timeout=5)
    with contextlib.closing(ws):
        ws.send_binary(b"token")
        assert ws.recv() == b"ok:token"
    assert target.names == ["localhost"]


WRAPPED_TLS_SERVER = """
import socket, ssl, sys
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[2])
srv = socket.create_server(("127.0.0.1", int(sys.argv[1])))
while True:
    conn = srv.accept()[0]
    try:
        with context.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(b"wrapped " + tls.version().encode())
            tls.recv(10)
    except OSError:
        pass
"""


def test_ssl_target_applies_to_a_wrapped_program(
    run_proxy: type[ProxyProcess], pki: dict[str, str], tmp_path: Path
) -> None:
    program = tmp_path / "tls_server.py"
    program.write_text(WRAPPED_TLS_SERVER)
    port = free_port()
    args = ["--ssl-target", "--target-cafile", pki["ca"], f"127.0.0.1:{port}", "--"]
    proc = run_proxy([*args, sys.executable, str(program), str(port), pki["server"]])
    try:
        with connect(proc.url, subprotocols=["binary"], open_timeout=10) as ws:
            assert ws.recv(timeout=5) == b"wrapped TLSv1.3"
    finally:
        proc.stop()  # SIGTERM: wsproxy stops the program's group


def test_target_tls_options_need_ssl_target(ca_file: str) -> None:
    from test_cli import run_cli

    for option in (["--target-cafile", ca_file], ["--target-insecure"]):
        result = run_cli("127.0.0.1:0", "127.0.0.1:1", *option)
        assert result.returncode == 2
        assert "needs ssl_target" in result.stderr
    result = run_cli("127.0.0.1:0", "127.0.0.1:1", "--ssl-target", "--target-cafile", "/nope.pem")
    assert result.returncode == 2
    assert "/nope.pem" in result.stderr
