"""Relay behaviour with slow peers (backpressure instead of buffering) and many at once."""

from __future__ import annotations

import os
import random
import socket
import threading

from conftest import read_http_head
from websockets.sync.client import connect
from wsraw import RawClient

from wsproxy.rfc6455 import Opcode, encode_frame

LIMIT = 48 << 20  # kernel socket buffers on loopback can hold a few MiB each way; we hold 64 KiB


def test_slow_target_blocks_the_client_instead_of_filling_memory(run_proxy) -> None:
    target = socket.create_server(("127.0.0.1", 0))
    proc = run_proxy(["127.0.0.1:0", f"127.0.0.1:{target.getsockname()[1]}"])
    client = RawClient(proc.port)
    conn, _ = target.accept()  # accepted, never read
    frame = encode_frame(Opcode.BINARY, b"x" * 65536, mask=True)
    client.sock.settimeout(1.0)
    offered = 0
    try:
        while offered < 4 * LIMIT:
            client.sock.sendall(frame)
            offered += len(frame)
    except TimeoutError:
        pass
    assert offered < LIMIT, f"proxy accepted {offered} bytes the target never read"
    # The relay still works once the target reads again: every whole frame sent arrives.
    conn.settimeout(5)
    expected = offered // len(frame) * 65536
    received = 0
    while received < expected:
        chunk = conn.recv(1 << 20)
        assert chunk, f"target got {received} of {expected} bytes, then EOF"
        received += len(chunk)
    client.close()
    conn.close()
    target.close()


def test_slow_client_blocks_the_target(run_proxy) -> None:
    target = socket.create_server(("127.0.0.1", 0))
    proc = run_proxy(["127.0.0.1:0", f"127.0.0.1:{target.getsockname()[1]}"])
    client = RawClient(proc.port)  # never reads after the handshake
    conn, _ = target.accept()
    conn.settimeout(1.0)
    chunk = b"y" * 65536
    offered = 0
    try:
        while offered < 4 * LIMIT:
            conn.sendall(chunk)
            offered += len(chunk)
    except TimeoutError:
        pass
    assert offered < LIMIT, f"proxy took {offered} bytes the client never read"
    client.close()
    conn.close()
    target.close()


def test_frames_sent_right_after_the_handshake_are_not_lost(proxy) -> None:
    # The first frame travels in the same TCP segment as the request head.
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    sock.sendall(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        + encode_frame(Opcode.BINARY, b"early", mask=True)
    )
    status, _, rest = read_http_head(sock)
    assert status == 101
    while len(rest) < 7:
        rest += sock.recv(100)
    assert rest == encode_frame(Opcode.BINARY, b"early")
    sock.close()


# All relays of a process read into one shared buffer (relay.py): none may see another's bytes.
def test_concurrent_sessions_each_get_their_own_bytes_back(proxy) -> None:
    failures: list[str] = []

    def client(seed: int) -> None:
        rng = random.Random(seed)
        try:
            with connect(proxy.url, max_size=None, open_timeout=10, close_timeout=5) as ws:
                for _ in range(10):
                    data = os.urandom(rng.choice([1, 100, 5000, 70000, 300000]))
                    ws.send(data)
                    got = b""
                    while len(got) < len(data):
                        got += ws.recv(timeout=10)
                    if got != data:
                        failures.append(f"client {seed}: echo differs")
                        return
        except Exception as exc:
            failures.append(f"client {seed}: {exc!r}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=50)
    assert not failures
