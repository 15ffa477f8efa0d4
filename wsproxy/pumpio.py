"""Socket reads and writes for the relay's pumps, around gevent's socket (plain TCP or UNIX).

gevent's own ``recv_into``, ``sendall`` and ``send`` are correct for every socket but pay, on each
call, a failed read before waiting, a ``getsockopt`` or a few Python frames: the pumps call these
once per frame, so the relay uses these leaner forms where the socket allows them.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any

import gevent.socket

__all__ = ["DRAIN_READS", "drain", "plain", "reader", "send_all"]

DRAIN_READS = 8  # reads of what is already waiting, at most, before a pump frames what it has


def plain(sock: Any) -> bool:
    """A gevent socket without TLS: its ``send(data, 0, 0.0)`` never waits."""
    return type(sock) is gevent.socket.socket


def reader(sock: Any) -> Callable[[Any, bool], int]:
    """``recv_into(buffer, wait_first)`` for a pump: with ``wait_first`` (the last read was small,
    so the socket is most likely empty) it waits until ``sock`` is readable before reading.

    Plain gevent sockets only: a TLS socket may hold decrypted bytes its descriptor does not
    show, so it (and any other socket) is read with its own ``recv_into``."""
    if not plain(sock) or not hasattr(sock, "_wait"):
        recv = sock.recv_into
        return lambda buf, wait_first: recv(buf)
    raw_recv = sock._sock.recv_into
    wait = sock._wait  # gevent's own wait in recv_into: honours the socket's timeout

    def recv_into(buf: Any, wait_first: bool) -> int:
        if wait_first:
            _wait_readable(sock, wait)
        while True:
            try:
                return raw_recv(buf)
            except BlockingIOError:
                _wait_readable(sock, wait)

    return recv_into


def _wait_readable(sock: Any, wait: Any) -> None:
    event = sock._read_event
    if event is None:  # closed (by another greenlet): what a read would say
        raise OSError(errno.EBADF, "socket closed")
    wait(event)


def drain(recv_into: Any, into: memoryview, n: int) -> int:
    """Read on what is already waiting behind the first ``n`` bytes of ``into``, without waiting,
    until it is full or nothing more is there; returns the bytes now in ``into``."""
    for _ in range(DRAIN_READS):
        if n >= len(into):
            break
        try:
            got = recv_into(into[n:])
        except BlockingIOError:
            break
        if not got:
            break  # the target closed: the next (gevent) read sees it too
        n += got
    return n


def send_all(send: Any, data: bytes) -> None:
    """``sendall`` for the hot path: gevent's costs a ``getsockopt`` call and a few Python frames
    per call. ``send`` (gevent's) waits until the socket can take more, then writes what fits."""
    sent = send(data)
    if sent < len(data):
        view = memoryview(data)
        while sent < len(view):
            sent += send(view[sent:])
