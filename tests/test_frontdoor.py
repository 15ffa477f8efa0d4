"""The front door on the wire: whatever a client sends first, it gets an answer or a close at
once, never a traceback, and the next normal client is served.

One wsproxy with a certificate and ``--web`` takes plain and TLS connections. Bytes that can
never start a valid request get ``400`` as soon as they are seen (not at the 10 s handshake
timeout); then thousands of random and mutated requests must each end within a second.
"""

from __future__ import annotations

import errno
import os
import random
import socket
import ssl
import threading
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


# -- the front-door fuzz test --------------------------------------------------------------------

FUZZ_CASES = 5000
FUZZ_THREADS = 8
TLS_SHARE = 0.15  # of the cases sent inside TLS (a TLS handshake costs the proxy the most)

UPGRADE = (
    b"GET /?token=a HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Protocol: base64, binary\r\nOrigin: http://127.0.0.1\r\n\r\n"
)
SEEDS = [
    UPGRADE,
    UPGRADE + b"\x82\x85\x00\x00\x00\x00hello\x88\x80\x00\x00\x00\x00",  # frames after it
    b"GET /demo HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\n"  # Hixie-76
    b"Sec-WebSocket-Key2: 12998 5 Y3 1  .P00\r\nUpgrade: WebSocket\r\n"
    b"Sec-WebSocket-Key1: 4 @1  46546xW%0l 1 5\r\nOrigin: http://example.com\r\n\r\n^n:ds[4U",
    b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n"  # Hixie-75
    b"Origin: http://x\r\n\r\n\x00aGVsbG8=\xff",
    b"GET /index.html HTTP/1.1\r\nHost: x\r\nRange: bytes=10-20\r\n\r\n",
    b"GET /terminal.css HTTP/1.1\r\nHost: x\r\nIf-Modified-Since: Mon, 01 Jan 2001 00:00:00 GMT"
    b"\r\nIf-Range: Mon, 01 Jan 2001 00:00:00 GMT\r\nRange: bytes=-5\r\n\r\n",
    b"HEAD /terminal.js HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.1\r\n\r\n",
    b"GET //index.html/../%2e%2e/x?y HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
    b"<policy-file-request/>\x00",
    b"PROXY TCP4 203.0.113.1 192.0.2.1 1000 443\r\n" + UPGRADE,
    b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c" + bytes(12) + UPGRADE,
]
NASTY = [
    b"99999999999999999999",
    b"-1",
    b"0",
    b"\xff\xfe",
    b"%",
    b"%00",
    b"%c0%ae",
    b"\\",
    b"..",
    b"/",
    b"\r\n",
    b"\n",
    b"\r",
    b"\x00",
    b" ",
    b":",
    b",",
    b"\t",
    b"bytes=",
    b"GMT",
    b"+9999999999",
    b"\xc3\xbc",
    b"A" * 5000,
    b"\x16\x03\x01",
    b"<",
    b"HTTP/2.0",
    b"websocket",
    b"Upgrade",
]


def mutate(rng: random.Random, data: bytes) -> bytes:
    """One to four random edits of ``data``: flips, cuts, repeats, inserted nasty tokens."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        at = rng.randint(0, len(out))
        op = rng.randrange(6)
        if op == 0 and out:
            out[min(at, len(out) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:
            del out[at : at + rng.randint(1, 16)]
        elif op == 2:
            out[at:at] = rng.choice(NASTY)
        elif op == 3:
            out[at:at] = out[at : at + rng.randint(1, 64)] * rng.randint(2, 20)
        elif op == 4:
            out[at:at] = rng.randbytes(rng.randint(1, 32))
        else:
            del out[at:]
    return bytes(out)


def fuzz_case(rng: random.Random) -> bytes:
    if rng.random() < 0.1:
        return rng.randbytes(rng.randint(1, 512))
    return mutate(rng, rng.choice(SEEDS))


def send_and_wait_for_close(port: int, data: bytes, context: ssl.SSLContext | None) -> float:
    """Send ``data``, end our side, read until the server closes; seconds from the send."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        sock = context.wrap_socket(raw, server_hostname="127.0.0.1") if context else raw
        start = time.monotonic()
        try:
            sock.sendall(data)
            # A TCP half-close that keeps the TLS layer readable (SSLSocket.shutdown drops it).
            socket.socket.shutdown(sock, socket.SHUT_WR)
            while sock.recv(65536):
                pass
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
            pass  # a reset (or a cut TLS stream) is a close too
        except OSError as exc:
            if exc.errno != errno.ENOTCONN:
                raise
            # The server answered and reset the connection before our half-close.
        return time.monotonic() - start
    finally:
        raw.close()


def test_thousands_of_random_and_mutated_requests_each_end_within_a_second(
    door: ProxyProcess, ca: trustme.CA
) -> None:
    seed = int(os.environ.get("FUZZ_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    context = tls_context(ca)
    cases = [(fuzz_case(rng), rng.random() < TLS_SHARE) for _ in range(FUZZ_CASES)]
    slow: list[tuple[float, bytes, bool]] = []
    lock = threading.Lock()
    work = iter(cases)

    failed: list[tuple[str, bytes]] = []

    def worker() -> None:
        while True:
            with lock:
                case = next(work, None)
            if case is None:
                return
            data, secure = case
            try:
                took = send_and_wait_for_close(door.port, data, context if secure else None)
            except Exception as exc:  # a worker must not die quietly with its cases untried
                with lock:
                    failed.append((repr(exc), data[:120]))
                continue
            if took >= ANSWER_WITHIN:
                with lock:
                    slow.append((took, data[:120], secure))

    threads = [threading.Thread(target=worker) for _ in range(FUZZ_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), f"FUZZ_SEED={seed}: a case hung"
    assert not failed, f"FUZZ_SEED={seed}: {len(failed)} cases failed, e.g. {failed[:3]}"
    assert not slow, f"FUZZ_SEED={seed}: {len(slow)} slow cases, e.g. {sorted(slow)[-3:]}"
    assert door.proc.poll() is None
    assert_no_traceback(door)
    round_trip(door.port)
    round_trip(door.port, context)
