"""Socket reads and writes for the relay's pumps, around gevent's socket (plain TCP or UNIX).

gevent's own ``recv_into``, ``sendall`` and ``send`` are correct for every socket but pay, on each
call, a failed read before waiting, a ``getsockopt`` or a few Python frames: the pumps call these
once per frame, so the relay uses these leaner forms where the socket allows them.
"""

from __future__ import annotations

import errno
from typing import Any

import gevent.socket

__all__ = ["DRAIN_READS", "drain", "fast_reads", "plain", "recv", "send_all"]

DRAIN_READS = 8  # reads of what is already waiting, at most, before a pump frames what it has


def plain(sock: Any) -> bool:
    """A gevent socket without TLS: its ``send(data, 0, 0.0)`` never waits."""
    return type(sock) is gevent.socket.socket


def fast_reads(sock: Any) -> bool:
    """Whether :func:`recv` may read ``sock``: a plain gevent socket. A TLS socket may hold
    decrypted bytes its descriptor does not show: it is read with its own ``recv_into``."""
    return plain(sock) and hasattr(sock, "_wait") and hasattr(sock, "_read_event")


def recv(sock: Any, buf: Any, wait_first: bool) -> int:
    """``sock.recv_into(buf)`` for a pump (``sock`` passed :func:`fast_reads`): with
    ``wait_first`` (the last read was small, so the socket is most likely empty) it waits until
    ``sock`` is readable before reading, instead of failing a read first.

    A function of the socket, not a closure kept per pump: 10,000 idle sessions would hold
    20,000 of those. The waits are written out for the same reason (an idle pump waits here).
    """
    if wait_first:
        event = sock._read_event
        if event is None:  # closed (by another greenlet): what a read would say
            raise OSError(errno.EBADF, "socket closed")
        sock._wait(event)  # gevent's own wait in recv_into: honours the socket's timeout
    while True:
        try:
            return sock._sock.recv_into(buf)
        except BlockingIOError:
            event = sock._read_event
            if event is None:
                raise OSError(errno.EBADF, "socket closed") from None
            sock._wait(event)


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
