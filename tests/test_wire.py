"""wsproxy.wire: the handshake deadline, the one bounded read loop and the lingering close, on
real (gevent) socket pairs."""

from __future__ import annotations

import time

import gevent
import gevent.socket
import pytest
from gevent import socket

from wsproxy.errors import ClientGone, HandshakeTimeout
from wsproxy.wire import Deadline, linger_close, read_until


def until_newline(buf: bytearray) -> int | None:
    end = buf.find(b"\n")
    return None if end < 0 else end


def test_read_until_returns_what_the_parser_found_and_keeps_the_rest() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        sender = gevent.spawn(lambda: [theirs.sendall(b) for b in (b"ab", b"c\nrest")])
        buf = bytearray()
        assert read_until(ours, buf, until_newline, Deadline(5), "line") == 3
        assert bytes(buf) == b"abc\nrest"
        sender.join()


def test_read_until_raises_client_gone_naming_the_step() -> None:
    ours, theirs = socket.socketpair()
    with ours:
        theirs.sendall(b"abc")
        theirs.close()
        with pytest.raises(ClientGone, match="during line"):
            read_until(ours, bytearray(), until_newline, Deadline(5), "line")


def test_deadline_is_shared_by_the_steps() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        deadline = Deadline(1.0)
        theirs.sendall(b"first\n")
        gevent.sleep(0.6)
        assert read_until(ours, bytearray(), until_newline, deadline, "one") == 5
        started = time.monotonic()
        with pytest.raises(HandshakeTimeout) as info:
            read_until(ours, bytearray(), until_newline, deadline, "two")
        assert time.monotonic() - started < 0.9  # the time left, not a fresh second
        assert info.value.step == "two"


def test_deadline_already_passed_raises_at_once() -> None:
    deadline = Deadline(0.01)
    gevent.sleep(0.02)
    with pytest.raises(HandshakeTimeout), deadline.bound("late"):
        pytest.fail("the block must not run")


def test_linger_close_sends_the_answer_and_drains_until_the_client_closes() -> None:
    # TCP, not a socket pair: closing with unread input makes TCP reset the connection, which
    # can destroy the answer before the client reads it; the drain is what prevents that.
    with socket.create_server(("127.0.0.1", 0)) as server:
        theirs = socket.create_connection(server.getsockname())
        ours_plain, _ = server.accept()
    ours = gevent.socket.socket(fileno=ours_plain.detach())
    with ours, theirs:
        theirs.sendall(b"unread input" * 1000)

        def client() -> bytes:
            gevent.sleep(0.2)  # the answer and the half-close arrive before we read
            got = b""
            while chunk := theirs.recv(65536):
                got += chunk
            theirs.close()
            return got

        reader = gevent.spawn(client)
        start = time.monotonic()
        linger_close(ours, b"answer", 5)
        assert time.monotonic() - start >= 0.2  # it waited for the client to close
        assert reader.get(timeout=5) == b"answer"
