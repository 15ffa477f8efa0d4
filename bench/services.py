"""The target services, in one process of their own so they are not the proxies' bottleneck.

``python -m bench.services`` listens on loopback and prints one JSON line with its ports:

- ``sink``: reads and counts (1 MiB reads); ``source64k``/``source1k``: write chunks of that size
  as fast as the reader takes them; ``echo``: returns every byte (one epoll loop, so 10,000 idle
  connections cost nothing); ``slow``: a sink that drains about 1 MB/s (overload scenario).

``python -m bench.services DIR`` also replays each recording ``DIR/NAME.js`` (websockify's
format, :mod:`bench.streams`) on a port called NAME: what the recording sent to its client,
write by write, over and over, as fast as the reader takes it.

On stdin, the line ``stats`` prints the per-connection byte counts of the sinks as JSON
(``[{"port": p, "bytes": n, "first": t, "last": t}, ...]``) and ``reset`` forgets them.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import selectors
import socket
import sys
import threading
import time

SINK_READ = 1 << 20
SLOW_READ = 1024
SLOW_PAUSE = 0.001  # seconds between slow reads: about 1 MB/s
SLOW_RCVBUF = 32 * 1024  # a small window so the slow sink pushes back at once

_stats: list[dict[str, float]] = []
_lock = threading.Lock()


def _listen(rcvbuf: int = 0) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)
    return sock


def _serve_threads(sock: socket.socket, work) -> None:
    def accept() -> None:
        while True:
            conn, _ = sock.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=_guard, args=(work, conn), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()


def _guard(work, conn: socket.socket) -> None:
    with conn, contextlib.suppress(OSError):
        work(conn)


def _sink(conn: socket.socket, read: int = SINK_READ, pause: float = 0.0) -> None:
    record = {"port": conn.getpeername()[1], "bytes": 0, "first": 0.0, "last": 0.0}
    with _lock:
        _stats.append(record)
    buf = bytearray(read)
    while n := conn.recv_into(buf):
        now = time.monotonic()
        if not record["bytes"]:
            record["first"] = now
        record["bytes"] += n
        record["last"] = now
        if pause:
            time.sleep(pause)


def _slow(conn: socket.socket) -> None:
    _sink(conn, SLOW_READ, SLOW_PAUSE)


def _source(size: int):
    chunk = os.urandom(size)

    def source(conn: socket.socket) -> None:
        send = conn.sendall
        while True:
            send(chunk)

    return source


def _replay(chunks: list[bytes]):
    def replay(conn: socket.socket) -> None:
        send = conn.sendall
        while True:
            for chunk in chunks:
                send(chunk)

    return replay


def _echo_loop(sock: socket.socket) -> None:
    sel = selectors.DefaultSelector()
    sock.setblocking(False)
    sel.register(sock, selectors.EVENT_READ, None)
    buf = bytearray(1 << 16)
    while True:
        for key, _ in sel.select():
            if key.data is None:
                try:
                    while True:
                        conn, _ = sock.accept()
                        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        conn.setblocking(False)
                        sel.register(conn, selectors.EVENT_READ, True)
                except BlockingIOError:
                    pass
                continue
            conn = key.fileobj
            try:
                n = conn.recv_into(buf)
                if n:
                    sent = conn.send(memoryview(buf)[:n])
                    if sent < n:  # rare: a big echo the peer is slow to take
                        conn.setblocking(True)
                        conn.sendall(memoryview(buf)[sent:n])
                        conn.setblocking(False)
                    continue
            except OSError:
                pass
            sel.unregister(conn)
            conn.close()


def main() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ports = {}
    for name, work in (
        ("sink", _sink),
        ("source64k", _source(64 * 1024)),
        ("source1k", _source(1024)),
        ("slow", _slow),
    ):
        sock = _listen(SLOW_RCVBUF if name == "slow" else 0)
        ports[name] = sock.getsockname()[1]
        _serve_threads(sock, work)
    if len(sys.argv) > 1:
        from pathlib import Path

        from bench.streams import read_recording

        for path in sorted(Path(sys.argv[1]).glob("*.js")):
            sock = _listen()
            ports[path.stem] = sock.getsockname()[1]
            _serve_threads(sock, _replay(read_recording(path)))
    echo = _listen()
    ports["echo"] = echo.getsockname()[1]
    threading.Thread(target=_echo_loop, args=(echo,), daemon=True).start()
    print(json.dumps(ports), flush=True)
    for line in sys.stdin:
        command = line.strip()
        with _lock:
            if command == "stats":
                print(json.dumps(_stats), flush=True)
            elif command == "reset":
                _stats.clear()


if __name__ == "__main__":
    main()
