"""The front door on the wire: whatever a client sends first, it gets an answer or a close at
once, never a traceback, and the next normal client is served.

One wsproxy with a certificate and ``--web`` takes plain and TLS connections. Bytes that can
never start a valid request get ``400`` as soon as they are seen (not at the 10 s handshake
timeout); then thousands of random and mutated requests must each end within a second.
"""

from __future__ import annotations

import os
import socket
import ssl
import time
from collections.abc import Iterator

import pytest
import trustme
from conftest import ROOT, ProxyProcess, read_until_closed
from websockets.sync.client import connect

ANSWER_WITHIN = 1.0  # seconds: what "at once" means here (the handshake timeout is 10 s)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def door(
    ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory, echo_server
) -> Iterator[ProxyProcess]:  # type: ignore[no-untyped-def]
    pem = tmp_path_factory.mktemp("pki") / "server.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
    web = str(ROOT / "web")
    proc = ProxyProcess(["127.0.0.1:0", echo_server.address, "--cert", str(pem), "--web", web])
    yield proc
    proc.stop()


def tls_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    context.maximum_version = ssl.TLSVersion.TLSv1_2  # websockets' sync client: see test_tls
    return context


def exchange(port: int, data: bytes, context: ssl.SSLContext | None = None) -> tuple[bytes, float]:
    """Send ``data`` and read until the server closes; returns the answer and how long it took."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock = context.wrap_socket(raw, server_hostname="127.0.0.1") if context else raw
    with sock:
        start = time.monotonic()
        sock.sendall(data)
        answer = read_until_closed(sock)
        return answer, time.monotonic() - start


NEVER_VALID = [
    b"\x00\x01\x02\x03",  # not a method's first byte, not TLS, not a policy request
    b"\xff" * 10,
    b'{"jsonrpc": "2.0"}',
    b"<html>",  # starts like a policy request, then is not one
    b"GE(T / HTTP/1.1",  # not a token method, no line end yet
    b"GET /" + b"a" * 9000,  # no line end within the request-line limit
    b"GET / HTTP/1.1\n",  # a bare LF ends the request line
    b"GET / FTP/1.0\r\n",  # a complete request line of another protocol
    b"SSH-2.0-OpenSSH_9.6\r\n",
]


@pytest.mark.parametrize("data", NEVER_VALID, ids=lambda d: repr(d[:16]))
@pytest.mark.parametrize("secure", [False, True], ids=["plain", "tls"])
def test_a_request_that_can_never_be_valid_gets_400_at_once(
    door: ProxyProcess, ca: trustme.CA, data: bytes, secure: bool
) -> None:
    answer, took = exchange(door.port, data, tls_context(ca) if secure else None)
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer[:60]
    assert took < ANSWER_WITHIN


def test_a_valid_prefix_is_still_waited_for(door: ProxyProcess) -> None:
    with socket.create_connection(("127.0.0.1", door.port), timeout=5) as sock:
        sock.sendall(b"GET /index.html HTT")
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            sock.recv(100)  # nothing yet: the rest may still come
        sock.settimeout(5)
        sock.sendall(b"P/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert read_until_closed(sock).startswith(b"HTTP/1.1 200 OK\r\n")


def round_trip(port: int, context: ssl.SSLContext | None = None) -> None:
    scheme = "wss" if context else "ws"
    with connect(f"{scheme}://127.0.0.1:{port}/", subprotocols=["binary"], ssl=context) as ws:
        payload = os.urandom(1000)
        ws.send(payload)
        assert ws.recv(timeout=5) == payload


def assert_no_traceback(proc: ProxyProcess) -> None:
    assert "Traceback" not in proc.log, proc.log[-3000:]
