"""The load clients, one scenario per process: ``python -m bench.load '{"scenario": ...}'``.

Each prints one JSON line with its figures and its own CPU share (1.0 = one core busy), so a
reader can tell whether the client, not the proxy, was the limit. Frames are built once and sent
as they are; server frames are counted by walking their headers (:mod:`bench.frames`).
``raw`` targets (socat) get the same payload bytes without WebSocket framing.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import resource
import select
import socket
import ssl
import sys
import time
import zlib
from typing import Any

from bench.frames import BINARY, TEXT, FrameCounter, client_frame, close_frame, handshake_request
from wsproxy.protocol.deflate import DeflateFrameParser
from wsproxy.protocol.rfc6455 import Compressed, Data

DEFLATE_OFFER = "permessage-deflate; client_max_window_bits"  # what Chromium offers
BATCH = 256 * 1024  # bytes handed to one sendall
READ = 1 << 20
TIMEOUT = 10.0


class Conn:
    """A connected client socket, WebSocket (handshake done) or raw."""

    def __init__(self, spec: dict[str, Any], *, sock_module: Any = socket) -> None:
        self.ws = spec["ws"]
        self.b64 = spec.get("subprotocol") == "base64"
        sock = sock_module.create_connection(("127.0.0.1", spec["port"]), timeout=TIMEOUT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if spec.get("tls"):
            if sock_module is socket:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            else:
                from gevent import ssl as gssl

                ctx = gssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            sock = ctx.wrap_socket(sock)
        self.sock = sock
        self.rest = b""
        self.deflate_bits = 0  # the server's window if permessage-deflate was agreed
        if self.ws:
            offer = DEFLATE_OFFER if spec.get("deflate") else None
            sock.sendall(
                handshake_request("127.0.0.1", spec["port"], spec.get("subprotocol"), offer)
            )
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(4096)
                if not chunk:
                    raise ConnectionError("closed during the handshake")
                head += chunk
            head, _, self.rest = head.partition(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 101"):
                raise ConnectionError(head.split(b"\r\n", 1)[0].decode())
            self.deflate_bits = _agreed_window(head)
        self.counter = FrameCounter()

    def message(self, payload: bytes) -> bytes:
        """What to send for one message of ``payload``."""
        if not self.ws:
            return payload
        if self.b64:
            return client_frame(base64.b64encode(payload), TEXT)
        return client_frame(payload, BINARY)

    def read_payload(self, want: int) -> None:
        """Read until ``want`` more payload bytes have arrived."""
        if not self.ws:
            while want > 0:
                data = self.sock.recv(READ)
                if not data:
                    raise ConnectionError("closed")
                want -= len(data)
            return
        counter = self.counter
        goal = counter.payload + want
        if self.rest:
            counter.feed(self.rest)
            self.rest = b""
        while counter.payload < goal:
            data = self.sock.recv(READ)
            if not data:
                raise ConnectionError("closed")
            counter.feed(data)

    def close(self) -> None:
        try:
            if self.ws:
                self.sock.sendall(close_frame())
        except OSError:
            pass
        self.sock.close()


def _agreed_window(head: bytes) -> int:
    """The server's window bits if the answer agreed to permessage-deflate, else 0."""
    for line in head.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() == "sec-websocket-extensions" and "permessage-deflate" in value:
            for param in value.split(";"):
                key, _, bits = param.strip().partition("=")
                if key == "server_max_window_bits":
                    return int(bits)
            return 15
    return 0


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def upload(spec: dict[str, Any]) -> dict[str, Any]:
    conn = Conn(spec)
    size = spec["size"]
    one = conn.message(os.urandom(size))
    batch = one * max(1, BATCH // len(one))
    per_batch = size * max(1, BATCH // len(one))
    sent = 0
    c0, t0 = _cpu(), time.monotonic()
    deadline = t0 + spec["secs"]
    send = conn.sock.sendall
    while time.monotonic() < deadline:
        send(batch)
        sent += per_batch
    t1 = time.monotonic()
    cpu = (_cpu() - c0) / (t1 - t0)
    conn.close()
    return {"sent": sent, "secs": t1 - t0, "client_cpu": cpu}


def download(spec: dict[str, Any]) -> dict[str, Any]:
    conn = Conn(spec)
    buf = bytearray(READ)
    view = memoryview(buf)
    recv_into = conn.sock.recv_into
    counter = conn.counter
    if conn.rest:  # frames that came with the handshake's answer
        counter.feed(conn.rest)
    warm = time.monotonic() + spec.get("warmup", 0.3)
    while time.monotonic() < warm:
        counter.feed(view[: recv_into(buf)]) if conn.ws else recv_into(buf)
    got = frames = 0
    c0, t0 = _cpu(), time.monotonic()
    deadline = t0 + spec["secs"]
    if conn.ws:
        p0, f0 = counter.payload, counter.frames
        while time.monotonic() < deadline:
            n = recv_into(buf)
            if not n:
                break
            counter.feed(view[:n])
        got, frames = counter.payload - p0, counter.frames - f0
        if conn.b64:
            got = got * 3 // 4
    else:
        while time.monotonic() < deadline:
            n = recv_into(buf)
            if not n:
                break
            got += n
    t1 = time.monotonic()
    cpu = (_cpu() - c0) / (t1 - t0)
    conn.sock.close()
    return {"bytes": got, "frames": frames if conn.ws else None, "secs": t1 - t0, "client_cpu": cpu}


def stream(spec: dict[str, Any]) -> dict[str, Any]:
    """Read a replayed stream for ``secs``: bytes on the wire and payload bytes (inflated when
    the proxy compresses)."""
    conn = Conn(spec)
    buf = bytearray(READ)
    view = memoryview(buf)
    recv_into = conn.sock.recv_into
    if conn.deflate_bits:
        parser = DeflateFrameParser(require_mask=False)
        inflater = zlib.decompressobj(-conn.deflate_bits)

        def payload_of(data: memoryview) -> int:
            n = 0
            for event in parser.feed(data):
                if type(event) is Compressed:
                    n += len(inflater.decompress(event.payload))
                    if event.fin:
                        n += len(inflater.decompress(b"\x00\x00\xff\xff"))
                elif type(event) is Data:
                    n += len(event.payload)
            return n
    elif conn.ws:
        counter = conn.counter

        def payload_of(data: memoryview) -> int:
            before = counter.payload
            counter.feed(data)
            return counter.payload - before
    else:

        def payload_of(data: memoryview) -> int:
            return len(data)

    payload_of(memoryview(conn.rest))
    warm = time.monotonic() + spec.get("warmup", 0.3)
    while time.monotonic() < warm:
        payload_of(view[: recv_into(buf)])
    wire = payload = 0
    c0, t0 = _cpu(), time.monotonic()
    deadline = t0 + spec["secs"]
    while time.monotonic() < deadline:
        n = recv_into(buf)
        if not n:
            break
        wire += n
        payload += payload_of(view[:n])
    t1 = time.monotonic()
    cpu = (_cpu() - c0) / (t1 - t0)
    conn.sock.close()
    return {"payload": payload, "wire": wire, "secs": t1 - t0, "client_cpu": cpu}


def _percentiles(lat: list[float]) -> dict[str, float]:
    lat = sorted(lat)
    n = len(lat)

    def at(q: float) -> float:
        return lat[min(n - 1, int(q * n))] * 1e6 if n else 0.0

    return {"p50_us": at(0.50), "p99_us": at(0.99), "p999_us": at(0.999), "samples": n}


def echo(spec: dict[str, Any]) -> dict[str, Any]:
    conn = Conn(spec)
    size = spec.get("size", 32)
    msg = conn.message(os.urandom(size))
    lat: list[float] = []
    clock = time.perf_counter
    send, read = conn.sock.sendall, conn.read_payload
    for _ in range(200):  # warm up
        send(msg)
        read(size)
    c0, t0 = _cpu(), time.monotonic()
    deadline = t0 + spec["secs"]
    while len(lat) < spec.get("max", 200_000) and time.monotonic() < deadline:
        s = clock()
        send(msg)
        read(size)
        lat.append(clock() - s)
    t1 = time.monotonic()
    cpu = (_cpu() - c0) / (t1 - t0)
    conn.close()
    return {**_percentiles(lat), "rate": len(lat) / (t1 - t0), "client_cpu": cpu}


def concurrent(spec: dict[str, Any]) -> dict[str, Any]:
    import gevent
    import gevent.event
    import gevent.socket

    clients, size = spec["clients"], spec.get("size", 32)
    conns = [Conn(spec, sock_module=gevent.socket) for _ in range(clients)]
    go = gevent.event.Event()
    lat: list[float] = []
    stop = [0.0]
    errors = []
    clock = time.perf_counter

    def client(conn: Conn) -> None:
        msg = conn.message(os.urandom(size))
        send, read = conn.sock.sendall, conn.read_payload
        go.wait()
        try:
            while time.monotonic() < stop[0]:
                s = clock()
                send(msg)
                read(size)
                lat.append(clock() - s)
        except OSError as exc:
            errors.append(str(exc))

    workers = [gevent.spawn(client, c) for c in conns]
    gevent.sleep(0.1)
    c0, t0 = _cpu(), time.monotonic()
    stop[0] = t0 + spec["secs"]
    go.set()
    gevent.joinall(workers, timeout=spec["secs"] + 10)
    t1 = time.monotonic()
    cpu = (_cpu() - c0) / (t1 - t0)
    for c in conns:
        c.close()
    out = _percentiles(lat)
    return {**out, "rate": len(lat) / (t1 - t0), "errors": len(errors), "client_cpu": cpu}


def connrate(spec: dict[str, Any]) -> dict[str, Any]:
    size = 32
    payload = os.urandom(size)
    parallel = spec.get("parallel", 1)
    done = [0]
    errors: list[str] = []

    def loop(sock_module: Any, deadline: float) -> None:
        while time.monotonic() < deadline:
            try:
                conn = Conn(spec, sock_module=sock_module)
                conn.sock.sendall(conn.message(payload))
                conn.read_payload(size)
                conn.close()
                done[0] += 1
            except OSError as exc:
                errors.append(str(exc))

    c0, t0 = _cpu(), time.monotonic()
    if parallel == 1:
        loop(socket, t0 + spec["secs"])
    else:
        import gevent
        import gevent.socket

        gevent.joinall(
            [gevent.spawn(loop, gevent.socket, t0 + spec["secs"]) for _ in range(parallel)],
            timeout=spec["secs"] + 20,
        )
    t1 = time.monotonic()
    cpu = (_cpu() - c0) / (t1 - t0)
    return {
        "rate": done[0] / (t1 - t0),
        "sessions": done[0],
        "errors": len(errors),
        "error": errors[0] if errors else "",
        "client_cpu": cpu,
    }


def idle(spec: dict[str, Any]) -> dict[str, Any]:
    """Open ``count`` sessions, report, wait for a line on stdin, then echo through every one."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    conns = []
    t0 = time.monotonic()
    error = ""
    try:
        for _ in range(spec["count"]):
            conns.append(Conn(spec))
    except OSError as exc:
        error = str(exc)
    print(
        json.dumps({"opened": len(conns), "secs": time.monotonic() - t0, "error": error}),
        flush=True,
    )
    sys.stdin.readline()
    payload = os.urandom(32)
    alive = 0
    for conn in conns:
        with contextlib.suppress(OSError):
            conn.sock.sendall(conn.message(payload))
    for conn in conns:
        try:
            conn.read_payload(len(payload))
            alive += 1
        except OSError:
            pass
    for conn in conns:
        conn.close()
    return {"opened": len(conns), "echoing": alive, "error": error}


def overload(spec: dict[str, Any]) -> dict[str, Any]:
    """Offer 1 KiB frames as fast as the proxy takes them, for ``secs``; count what it took."""
    conn = Conn(spec)
    size = 1024
    one = conn.message(os.urandom(size))
    batch = memoryview(one * 64)
    sock = conn.sock
    sock.setblocking(False)
    offered = 0
    pos = 0
    c0, t0 = _cpu(), time.monotonic()
    deadline = t0 + spec["secs"]
    while (now := time.monotonic()) < deadline:
        try:
            sent = sock.send(batch[pos:])
        except BlockingIOError:
            select.select([], [sock], [], min(0.05, deadline - now))
            continue
        offered += sent
        pos = (pos + sent) % len(batch)
    t1 = time.monotonic()
    cpu = (_cpu() - c0) / (t1 - t0)
    sock.close()
    return {"offered": offered * size // len(one), "secs": t1 - t0, "client_cpu": cpu}


SCENARIOS = {
    f.__name__: f for f in (upload, download, stream, echo, concurrent, connrate, idle, overload)
}


def main() -> None:
    spec = json.loads(sys.argv[1])
    result = SCENARIOS[spec["scenario"]](spec)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
