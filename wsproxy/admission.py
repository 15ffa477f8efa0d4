"""Who gets in: the open-file limit, ``max_connections`` and ``max_connections_per_ip``, and the
immediate ``503`` for the clients turned away.

Every session holds two file descriptors (client and target; a web request holds the client and
a file), so the file limit bounds the sessions. The command raises its soft limit to the hard one
at start, as nginx and gunicorn users expect, and ``max_connections`` defaults to what that limit
allows after a reserve for logs, the web server, token files and the like. The programs it
starts (``wsproxy PORT -- PROGRAM``, an upgrade's new process) get the limit it found: a program
that closes every descriptor up to its limit, or keeps them in a ``select()`` set, should not
find a million where its user set 1024.

A client past the cap is answered at once instead of waiting in the listen backlog: the
:class:`Doorman` writes ``503`` on the freshly accepted socket, without a greenlet. When
``accept()`` itself fails for want of descriptors (EMFILE: the cap is off or set too high), a
spare descriptor kept open for that moment is closed, the client accepted on it and refused, and
the spare reopened. Refusals are logged one line per interval, never one per client.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import resource
import socket
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import gevent
import gevent.socket

from wsproxy.errors import HandshakeError
from wsproxy.protocol.handshake import error_response
from wsproxy.settings import Settings
from wsproxy.wire import linger_close

__all__ = [
    "FDS_PER_SESSION",
    "ClientCounts",
    "Doorman",
    "RefusalLog",
    "auto_max_connections",
    "connection_cap",
    "fd_reserve",
    "raise_fd_limit",
    "restore_fd_limit",
]

log = logging.getLogger(__name__)

FDS_PER_SESSION = 2  # the client's socket and the target's (or the file a web request sends)
FD_RESERVE_MIN = 32  # descriptors kept for the rest: listener, hub, logs, metrics, spare ...
REFUSAL_LOG_INTERVAL = 10.0  # seconds between two log lines about refused clients
ACCEPT_PAUSE = 0.1  # seconds without accepting after an accept() failure we cannot work around
LINGER = 1.0  # seconds a refused client has to read its 503 and close
DRAIN_READS = 4  # reads of what a refused client sent already, so that closing sends no reset
# accept() failures of one connection (it left, or a firewall rule): the next one may be fine.
_TRANSIENT = frozenset((errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.EINTR, errno.EAGAIN))
_OUT_OF_FDS = frozenset((errno.EMFILE, errno.ENFILE))
_found_soft: int | None = None  # the soft limit before raise_fd_limit raised it


def raise_fd_limit() -> tuple[int, int]:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; returns (before, after).

    An unlimited hard limit is not a valid soft one for files: the kernel's ``nr_open`` is used.
    If the kernel refuses, the soft limit stays as it was.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard
    if hard == resource.RLIM_INFINITY:
        try:
            with open("/proc/sys/fs/nr_open", encoding="ascii") as f:
                wanted = int(f.read())
        except (OSError, ValueError):
            return soft, soft
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (OSError, ValueError):
            return soft, soft
        global _found_soft
        if _found_soft is None:
            _found_soft = soft
        return soft, wanted
    return soft, soft


def restore_fd_limit() -> None:
    """Put back the soft limit raise_fd_limit found: the ``preexec_fn`` of the programs we
    start. Nothing when it raised nothing (wsproxy run as a library leaves the limit alone)."""
    if _found_soft is not None:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (_found_soft, hard))


def fd_limit() -> int:
    """The soft limit on open files now (what ``accept()`` runs into)."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return 1 << 20 if soft == resource.RLIM_INFINITY else soft


def fd_reserve(limit: int) -> int:
    """Descriptors kept out of the sessions' share: a floor plus about 3 % of the limit."""
    return FD_RESERVE_MIN + limit // 32


def connection_cap(settings: Settings) -> int:
    """``max_connections``, with ``auto`` worked out from the open-file limit (a recorded
    session holds its recording too); 0 for no cap."""
    if settings.max_connections is not None:
        return settings.max_connections
    per_session = FDS_PER_SESSION + (1 if settings.record else 0)
    return auto_max_connections(fd_limit(), per_session)


def auto_max_connections(limit: int, fds_per_session: int = FDS_PER_SESSION) -> int:
    """``max_connections=auto``: the sessions ``limit`` descriptors hold after the reserve."""
    return max((limit - fd_reserve(limit)) // fds_per_session, 1)


class RefusalLog:
    """Counts refused clients by reason and logs them at most once per ``interval``: the first
    refusal at once, then a count of those since the last line."""

    def __init__(self, interval: float = REFUSAL_LOG_INTERVAL) -> None:
        self.interval = interval
        self.counts: dict[str, int] = {}
        self.last = -interval

    def note(self, reason: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        now = time.monotonic()
        if now - self.last < self.interval:
            return
        self.last = now
        for why, count in self.counts.items():
            log.warning("refused %d new client(s) with 503 since the last report: %s", count, why)
        self.counts.clear()


class ClientCounts:
    """Concurrent sessions per client address, for ``max_connections_per_ip`` (0: no limit)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.counts: dict[str, int] = {}

    def acquire(self, address: str) -> str:
        """Count a session for ``address``; returns what :meth:`release` takes back: the
        address, or '' when nothing was counted (no limit, or a UNIX socket client that no
        trusted proxy named). The limit may change at a reload between the two.

        Raises:
            HandshakeError: 503, the address has ``limit`` sessions already.
        """
        if not self.limit or not address:
            return ""
        held = self.counts.get(address, 0)
        if held >= self.limit:
            raise HandshakeError(
                HTTPStatus.SERVICE_UNAVAILABLE,
                f"too many connections from {address} (max_connections_per_ip {self.limit})",
            )
        self.counts[address] = held + 1
        return address

    def release(self, counted: str) -> None:
        """Take back what :meth:`acquire` counted."""
        if not counted:
            return
        if self.counts[counted] == 1:
            del self.counts[counted]
        else:
            self.counts[counted] -= 1


class Doorman:
    """Turns clients away at the door: past ``max_connections`` or out of descriptors.

    ``counted`` is called once per refused client (the metrics' handshake failure counter).
    Up to ``max_lingering`` refusals at a time wait up to ``linger`` seconds for the client to
    read the answer and close (see :func:`wsproxy.wire.linger_close`); the others, and all of
    them when no descriptor is left, are closed at once.
    """

    ANSWER = error_response(
        HandshakeError(HTTPStatus.SERVICE_UNAVAILABLE, "server busy: too many connections")
    )

    def __init__(
        self,
        counted: Callable[[], None] = lambda: None,
        *,
        max_lingering: int = FD_RESERVE_MIN // 2,
        linger: float = LINGER,
    ) -> None:
        self.counted = counted
        self.max_lingering = max_lingering
        self.linger = linger
        self.lingering = 0
        self.refusals = RefusalLog()
        self.spare: int | None = _open_spare()

    def close(self) -> None:
        if self.spare is not None:
            os.close(self.spare)
            self.spare = None

    def turn_away(self, fd: int, reason: str, *, may_linger: bool = True) -> None:
        """Answer ``503`` on the accepted ``fd`` and close it, without waiting for anything.

        Closing with unread input makes the kernel reset the connection, which can destroy the
        answer before the client reads it. So what the client sent is read first; a client
        whose request is still on its way gets a lingering close, in a greenlet of its own.
        """
        self.refusals.note(reason)
        self.counted()
        if may_linger and self.lingering < self.max_lingering:
            self.lingering += 1
            gevent.spawn(self._linger, gevent.socket.socket(fileno=fd))
            return
        sock = socket.socket(fileno=fd)
        try:
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                for _ in range(DRAIN_READS):
                    if not sock.recv(65536):
                        break
            with contextlib.suppress(OSError):
                sock.send(self.ANSWER)
                sock.shutdown(socket.SHUT_WR)
        finally:
            sock.close()

    def _linger(self, sock: Any) -> None:
        # The answer follows the client's first bytes, as an answer to its request: some client
        # libraries trip over an answer that comes before they have finished sending.
        try:
            with contextlib.suppress(OSError), gevent.Timeout(self.linger / 2, False):
                sock.recv(65536)
            linger_close(sock, self.ANSWER, self.linger / 2)
        finally:
            sock.close()
            self.lingering -= 1

    def accept_failed(self, listener: Any, exc: OSError) -> float:
        """Deal with a failed ``accept()`` on ``listener``; returns how long to stop accepting
        (0: go on). Out of descriptors, the spare one takes the client to refuse it."""
        if exc.errno in _TRANSIENT:
            return 0.0
        if exc.errno not in _OUT_OF_FDS:
            self.refusals.note(f"accept() failed: {exc.strerror or exc}")
            return ACCEPT_PAUSE
        if self.spare is None:
            self.spare = _open_spare()
            self.refusals.note("out of file descriptors, and no spare one to answer with")
            return ACCEPT_PAUSE
        os.close(self.spare)
        self.spare = None
        try:
            fd, _ = listener._accept()
        except OSError:
            return 0.0  # gone meanwhile, or still no descriptor: the next event tries again
        else:
            reason = f"out of file descriptors ({os.strerror(exc.errno)})"
            self.turn_away(fd, reason, may_linger=False)
        finally:
            self.spare = _open_spare()
        return 0.0


def _open_spare() -> int | None:
    try:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
