"""Socket reads and writes for the relay's pumps, around gevent's socket (plain TCP or UNIX).

gevent's own ``recv_into``, ``sendall`` and ``send`` are correct for every socket but pay, on each
call, a failed read before waiting, a ``getsockopt`` or a few Python frames: the pumps call these
once per frame, so the relay uses these leaner forms where the socket allows them.
"""

from __future__ import annotations

import errno
from typing import Any

import gevent.socket
from gevent.exceptions import ConcurrentObjectUseError

__all__ = ["DRAIN_READS", "Reader", "drain", "fast_reads", "plain", "send_all", "send_first"]

DRAIN_READS = 8  # reads of what is already waiting, at most, before a pump frames what it has


def plain(sock: Any) -> bool:
    """A gevent socket without TLS: its ``send(data, 0, 0.0)`` never waits."""
    return type(sock) is gevent.socket.socket


def fast_reads(sock: Any) -> bool:
    """Whether a :class:`Reader` may read ``sock``: a plain gevent socket. A TLS socket may hold
    decrypted bytes its descriptor does not show: it is read with its own ``recv_into``."""
    return plain(sock) and hasattr(sock, "_wait") and hasattr(sock, "_read_event")


class Reader:
    """Reads for one pump, in the pump's greenlet: a socket that does not pass
    :func:`fast_reads` (TLS) is read with its own ``recv_into``.

    gevent's wait starts the socket's read watcher with a new ``Waiter`` and stops it again on
    every wake-up. A pump waits on the same socket all its life, so the watcher stays started
    between reads, with :meth:`_wake` as its callback: that callback switches to the pump only
    while it waits here, and stops the watcher if it fires while the pump is elsewhere (writing,
    waiting for the send lock). :meth:`stop` must run when the pump ends, so that the socket's
    other users (a lingering close, gevent's own reads) find the watcher free.

    A socket closed by another greenlet raises in the waiting pump as with gevent's wait: its
    close calls the callback's owner's :meth:`throw`.
    """

    __slots__ = ("_greenlet", "_hub", "_sock", "_waiting", "fast")

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self.fast = fast_reads(sock)
        self._greenlet: Any = None  # the greenlet waiting in recv()
        self._hub = gevent.get_hub()
        self._waiting = False

    def recv(self, buf: Any, wait_first: bool) -> int:
        """``sock.recv_into(buf)``: with ``wait_first`` (the last read was small, so the socket
        is most likely empty) it waits until the socket is readable before reading, instead of
        failing a read first."""
        sock = self._sock
        if not self.fast:
            return int(sock.recv_into(buf))
        if wait_first:
            self._wait(sock)
        while True:
            try:
                return sock._sock.recv_into(buf)
            except BlockingIOError:
                self._wait(sock)

    def _wait(self, sock: Any) -> None:
        watcher = sock._read_event
        if watcher is None:  # closed (by another greenlet): what a read would say
            raise OSError(errno.EBADF, "socket closed")
        if sock.timeout is not None:
            self.stop()
            sock._wait(watcher)  # gevent's own wait honours the socket's timeout
            return
        callback = watcher.callback
        if callback is None:
            watcher.start(self._wake)
        elif getattr(callback, "__self__", None) is not self:
            raise ConcurrentObjectUseError(f"another greenlet waits on this socket: {callback!r}")
        self._greenlet = gevent.getcurrent()
        self._waiting = True
        try:
            self._hub.switch()
        finally:
            # Held only while waiting: a killed pump's greenlet keeps its exception, whose
            # traceback holds the pump's frame and this reader (a cycle only gc would free).
            self._waiting = False
            self._greenlet = None

    def _wake(self) -> None:
        if self._waiting:
            self._greenlet.switch()
            return
        # Readable while the pump is busy elsewhere: it reads when it is back. (None: closed by
        # another greenlet, whose close stops the watcher.)
        watcher = self._sock._read_event
        if watcher is not None:
            watcher.stop()

    def throw(self, *args: Any) -> None:
        """gevent's close of the socket in another greenlet: raise in the pump if it waits."""
        if self._waiting:
            self._greenlet.throw(*args)

    def stop(self) -> None:
        """The pump is done reading: free the socket's read watcher."""
        watcher = getattr(self._sock, "_read_event", None)
        if watcher is not None and getattr(watcher.callback, "__self__", None) is self:
            watcher.stop()


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


def send_all(send: Any, data: bytes | memoryview) -> None:
    """``sendall`` for the hot path: gevent's costs a ``getsockopt`` call and a few Python frames
    per call. ``send`` (gevent's) waits until the socket can take more, then writes what fits."""
    sent = send(data)
    if sent < len(data):
        view = memoryview(data)
        while sent < len(view):
            sent += send(view[sent:])


def send_first(raw_send: Any, send: Any, data: bytes | memoryview) -> None:
    """Write all of ``data``: first with ``raw_send``, the non-blocking send of the socket below
    a plain gevent socket (it never waits; one Python frame less than gevent's), then what that
    could not take with gevent's ``send``, which waits for room. What is left is copied before
    that wait, so ``data`` may be a view of the pumps' shared buffer."""
    try:
        sent = raw_send(data)
    except BlockingIOError:
        sent = 0
    if sent < len(data):
        send_all(send, bytes(data[sent:]))
