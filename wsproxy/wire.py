"""Bounded waits on a client socket, shared by the session, the front door and the web server.

* :class:`Deadline`: one time bound for the whole opening handshake. The steps (PROXY header,
  sniff, TLS handshake, sniff inside TLS, request head, Hixie-76 key3) each wait only for the
  time left, so a client that dribbles bytes cannot stretch the handshake step by step.
* :func:`read_until`: the one read loop: receive into a buffer until a sans-I/O parser says
  it has what it needs.
* :func:`linger_close`: write a last answer, half-close, and drop what the client still sends,
  so that the close does not reset the answer.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import gevent

from wsproxy.errors import ClientGone, HandshakeTimeout
from wsproxy.protocol.handshake import Request

__all__ = [
    "LINGER_BYTES",
    "READ_SIZE",
    "Connection",
    "Deadline",
    "linger_close",
    "read_until",
]

READ_SIZE = 4096  # one recv() of a request head
LINGER_BYTES = 256 * 1024  # input read and dropped before a close, at most

T = TypeVar("T")


class Deadline:
    """A point in time ``seconds`` from now, after which waiting steps raise HandshakeTimeout."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def left(self) -> float:
        return self.at - time.monotonic()

    def bound(self, step: str) -> Any:
        """A ``with`` block within the time left: a gevent Timeout that raises
        HandshakeTimeout(step) when it runs out; raises at once when it has run out already.
        (A plain Timeout, not a generator-based context manager: six of these a session.)"""
        left = self.left()
        if left <= 0:
            raise HandshakeTimeout(step)
        return gevent.Timeout(left, HandshakeTimeout(step))


class Connection(Protocol):
    """What the front door and the web server use of a client's session
    (:class:`wsproxy.session.Session`), so that they need not import it."""

    sock: Any
    secure: bool
    peer: str
    deadline: Deadline
    listen_port: int

    def read_request(self, data: bytes) -> tuple[Request, bytes]: ...

    def identify(self, request: Request) -> None: ...

    def dispatch(self, request: Request, rest: bytes) -> None: ...


def read_until(
    sock: Any,
    buf: bytearray,
    done: Callable[[bytearray], T | None],
    deadline: Deadline,
    step: str,
    *,
    read_size: int = READ_SIZE,
) -> T:
    """Receive into ``buf`` until ``done(buf)`` returns something other than None; returns it.

    ``done`` is a sans-I/O parser; it bounds the size (raising its own error, such as a
    HandshakeError 431). ``buf`` keeps every byte read, so the caller can take what follows.

    Raises:
        HandshakeTimeout: ``deadline`` passed (``step`` says what was awaited).
        ClientGone: the client closed first.
    """
    with deadline.bound(step):
        while (result := done(buf)) is None:
            chunk = sock.recv(read_size)
            if not chunk:
                raise ClientGone(f"client closed the connection during {step}")
            buf += chunk
    return result


def linger_close(
    sock: Any, answer: bytes, timeout: float, *, max_bytes: int = LINGER_BYTES
) -> None:
    """Send ``answer`` (may be empty), half-close, then read and drop the client's input until
    it closes, ``max_bytes`` or ``timeout``. The caller closes the socket.

    Closing with unread input makes the kernel send a reset, which can destroy the answer before
    the client reads it; this is the "lingering close" of HTTP servers. Never raises for a client
    that is gone or slow.
    """
    with contextlib.suppress(OSError), gevent.Timeout(timeout, False):
        if answer:
            sock.sendall(answer)
        sock.shutdown(socket.SHUT_WR)
        drained = 0
        while drained < max_bytes:
            chunk = sock.recv(READ_SIZE)
            if not chunk:
                break
            drained += len(chunk)
