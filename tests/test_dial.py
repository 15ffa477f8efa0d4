"""Connecting a target (wsproxy/dial.py): a local listener is connected without a wait on the
event loop; a target that does not answer yet is waited for, within the timeout, as gevent does."""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from typing import Any

import gevent
import pytest

from wsproxy.dial import dial


def _others_ran_during(call: Callable[[], Any]) -> tuple[Any, bool]:
    """``call()``'s result, and whether another greenlet ran while it was in progress."""
    ran: list[bool] = []
    other = gevent.spawn(ran.append, True)
    try:
        result = call()
    finally:
        other.kill()
    return result, bool(ran)


def test_a_loopback_listener_is_connected_without_waiting_on_the_loop() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        address = listener.getsockname()
        sock, yielded = _others_ran_during(lambda: dial(address, 5.0))
        try:
            assert sock.getpeername() == address
            assert not yielded
            peer, _ = listener.accept()
            sock.sendall(b"x")
            assert peer.recv(1) == b"x"
            peer.close()
        finally:
            sock.close()


def test_a_closed_port_is_refused() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        address = listener.getsockname()
    with pytest.raises(OSError) as exc_info:
        dial(address, 5.0)
    assert exc_info.value.errno == errno.ECONNREFUSED


def test_a_target_that_does_not_answer_is_waited_for_until_the_timeout() -> None:
    """A listener whose backlog is full drops new SYNs: the connection stays pending. The dial
    waits for it on the loop (other greenlets run) and gives up at its timeout."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=0)
    address = listener.getsockname()
    queued = []
    try:
        for _ in range(8):  # fill the accept queue (backlog 0 holds one or two)
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(address)
            queued.append(s)
        gevent.sleep(0.05)
        ticks: list[float] = []
        ticker = gevent.spawn(lambda: [(ticks.append(1), gevent.sleep(0.05)) for _ in range(100)])
        started = gevent.get_hub().loop.now()
        with pytest.raises(socket.timeout):
            dial(address, 0.3)
        assert gevent.get_hub().loop.now() - started >= 0.25
        assert len(ticks) >= 3  # the loop went on while the connection was pending
        ticker.kill()
    finally:
        for s in queued:
            s.close()
        listener.close()
