"""Server life cycle: graceful SIGTERM with open relays, and library use inside a gevent app."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import struct
import time

import gevent
import gevent.server
import gevent.socket
import pytest
from websockets.exceptions import ConnectionClosedOK
from websockets.sync.client import connect
from wsraw import Opcode, RawClient

from wsproxy import WSProxy
from wsproxy.errors import ConfigError


def test_sigterm_with_50_open_relays_sends_1001_and_exits_0(run_proxy, echo_server) -> None:
    proc = run_proxy(["--graceful-timeout", "5", "127.0.0.1:0", echo_server.address])
    clients = [RawClient(proc.port, timeout=10) for _ in range(50)]
    for i, client in enumerate(clients):
        client.send_frame(Opcode.BINARY, b"%d" % i)
        assert client.recv_data(len(b"%d" % i)) == b"%d" % i  # relay open end to end
    start = time.monotonic()
    proc.proc.send_signal(signal.SIGTERM)
    for i, client in enumerate(clients):
        close = client.expect_close()
        assert (close.code, close.reason) == (1001, "server shutting down")
        if i % 2:  # half answer like well-behaved clients, half leave it to the timeout
            client.send_frame(Opcode.CLOSE, struct.pack("!H", 1001))
    assert proc.stop(timeout=10) == 0
    assert time.monotonic() - start < 5
    for client in clients:
        client.close()
    assert len([line for line in proc.lines if "by=server code=1001" in line]) == 50


def test_wsproxy_runs_inside_a_gevent_application() -> None:
    # The application: its own TCP service and a greenlet doing its own work.
    def echo(sock, _address):  # type: ignore[no-untyped-def]
        while data := sock.recv(65536):
            sock.sendall(data)

    service = gevent.server.StreamServer(("127.0.0.1", 0), echo)
    service.start()
    ticks = []
    ticker = gevent.spawn(lambda: [ticks.append(gevent.sleep(0.01)) for _ in range(1000)])

    proxy = WSProxy(("127.0.0.1", 0), ("127.0.0.1", service.server_port), close_timeout=1)
    proxy.start()
    serving = gevent.spawn(proxy.serve_forever)
    url = f"ws://127.0.0.1:{proxy.server_port}/"

    def client() -> bytes:
        # A real client library in a native thread; the hub keeps running the greenlets.
        with connect(url, subprotocols=["binary"]) as ws:
            payload = os.urandom(100_000)
            ws.send(payload)
            got = b""
            while len(got) < len(payload):
                got += ws.recv()
            assert got == payload
            return ws.recv(timeout=10)  # raises ConnectionClosedOK at the shutdown close

    result = gevent.get_hub().threadpool.spawn(client)
    with gevent.Timeout(10):
        while not proxy.sessions:
            gevent.sleep(0.01)
        gevent.sleep(0.2)
        ticks_before = len(ticks)
        proxy.stop()
        serving.join()
        with pytest.raises(ConnectionClosedOK) as exc_info:
            result.get()
    assert exc_info.value.rcvd is not None
    assert exc_info.value.rcvd.code == 1001
    assert ticks_before > 0 and not ticker.dead  # the app's greenlet ran all along
    ticker.kill()
    service.stop()


def test_library_rejects_unknown_option() -> None:
    with pytest.raises(ConfigError, match="unknown setting"):
        WSProxy("127.0.0.1:0", "127.0.0.1:1", no_such_option=1)


def test_stop_does_not_wait_for_clients_still_in_their_handshake(run_proxy, echo_server) -> None:
    proc = run_proxy(["-v", "--graceful-timeout", "5", "127.0.0.1:0", echo_server.address])
    slow = socket.create_connection(("127.0.0.1", proc.port), timeout=5)
    slow.sendall(b"GET / HTTP/1.1\r\n")  # and never more
    host, port = slow.getsockname()[:2]
    proc.wait_log(rf"accepted peer={re.escape(host)}:{port}$")  # its session is under way
    start = time.monotonic()
    assert proc.stop() == 0
    assert time.monotonic() - start < 2
    with contextlib.suppress(ConnectionResetError):
        assert slow.recv(100) == b""  # closed, with no answer
    slow.close()


def test_a_client_accepted_just_before_the_listener_retires_is_served(echo_server) -> None:  # type: ignore[no-untyped-def]
    """gevent starts a handler a loop turn after its accept: a drain (SIGUSR2) or --timeout that
    retires the listener in between must not close that client unanswered."""
    proxy = WSProxy(("127.0.0.1", 0), echo_server.address)
    proxy.start()
    side = gevent.socket.socket()
    side.bind(("127.0.0.1", 0))
    side.listen(1)
    hub = gevent.get_hub()

    def client() -> bytes:
        with socket.create_connection(side.getsockname(), timeout=5) as sock:
            sock.sendall(
                b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            return sock.recv(100)

    try:
        with gevent.Timeout(10):
            answer = hub.threadpool.spawn(client)
            conn, address = side.accept()
            proxy.pool.spawn(proxy.handle, conn, address)  # accepted: its handler not yet run
            proxy.retire()  # before the handler's first turn
            assert answer.get().startswith(b"HTTP/1.1 101 ")
    finally:
        side.close()
        proxy.stop()


def test_a_relaying_session_holds_nothing_of_its_handshake(echo_server) -> None:  # type: ignore[no-untyped-def]
    """The request (its headers: 1.9 KiB for a small client, 3.3 KiB for Chromium's) is only
    the handshake's: while the session relays, no Request object is alive any more."""
    import gc
    import threading

    from wsproxy.protocol.handshake import Request

    proxy = WSProxy(("127.0.0.1", 0), echo_server.address)
    proxy.start()
    url = f"ws://127.0.0.1:{proxy.server_port}/path?token=x"
    relaying, finish = threading.Event(), threading.Event()

    def client() -> bytes:
        with connect(url, subprotocols=["binary"]) as ws:
            ws.send(b"before")
            got = ws.recv(timeout=5)
            relaying.set()
            finish.wait(5)
            ws.send(b"after")
            return got + ws.recv(timeout=5)

    result = gevent.get_hub().threadpool.spawn(client)
    try:
        with gevent.Timeout(10):
            while not relaying.is_set():
                gevent.sleep(0.01)
            assert [s.relay is not None for s in proxy.sessions] == [True]
            gc.collect()
            assert [o for o in gc.get_objects() if type(o) is Request] == []
            finish.set()
            assert result.get() == b"beforeafter"
    finally:
        finish.set()
        proxy.stop()
