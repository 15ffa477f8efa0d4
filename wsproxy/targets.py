"""Choosing and connecting the target of a session, behind one small interface.

A session asks its :class:`Targets` for a connected socket with :meth:`Targets.open`; it neither
knows nor cares whether the target is fixed, a UNIX socket, chosen by a token plug-in or a
wrapped program. Each kind is one class here; :func:`targets_for` picks it from the settings.
"""

from __future__ import annotations

import errno
import logging
import shlex
import socket
from collections.abc import Callable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Protocol

import gevent.socket

from wsproxy.dial import by_family, dial, family_of
from wsproxy.errors import HandshakeError
from wsproxy.protocol.handshake import Request
from wsproxy.settings import Address, Settings, format_address
from wsproxy.targettls import TargetTLS

if TYPE_CHECKING:
    from wsproxy.wrap import WrappedProgram

__all__ = [
    "FixedTarget",
    "Lookup",
    "Target",
    "Targets",
    "TokenTargets",
    "WrappedTarget",
    "connect",
    "target_name",
]

log = logging.getLogger(__name__)

Target = Address | str  # (host, port) over TCP, or the path of a UNIX socket
Check = Callable[[Target], None]  # the auth plug-in's say on a chosen target (raises to refuse)


class Targets(Protocol):
    """What a session needs of target selection."""

    def open(self, request: Request, check: Check | None = None) -> tuple[Any, str]:
        """A socket connected to the request's target, and the target's name for the log.
        ``check`` is called with the target once it is chosen, before it is connected.

        Raises HandshakeError: ``502`` if the target cannot be reached, ``4xx`` when the request
        names no valid target, or what ``check`` raises.
        """

    def reload(self) -> None:
        """Re-read what may have changed (SIGHUP); raises ConfigError and keeps the old state."""

    def describe(self) -> str:
        """How the start-up log line names the target."""


class Lookup(Protocol):
    """A source of per-client targets (a token plug-in)."""

    def find(self, request: Request) -> Target:
        """The request's target; raises HandshakeError (400 no token, 404 unknown token,
        502 the lookup failed)."""

    def reload(self) -> None: ...

    def describe(self) -> str: ...


class Connector:
    """Opens the connection to a chosen target, with the settings' timeout and family choice,
    and TLS over it with ``ssl_target`` (TCP targets only, as in websockify)."""

    def __init__(self, settings: Settings) -> None:
        self.timeout = settings.connect_timeout
        self.prefer_ipv6 = settings.prefer_ipv6
        self.tls = TargetTLS(settings) if settings.ssl_target else None
        if self.tls is not None and settings.unix_target:
            log.warning("ssl_target: the UNIX socket target is connected without TLS")

    def __call__(self, target: Target) -> Any:
        sock = connect(target, self.timeout, prefer_ipv6=self.prefer_ipv6)
        if self.tls is None or isinstance(target, str):
            return sock
        return self.tls.wrap(sock, target[0], target_name(target))


class FixedTarget:
    """One target for every client: ``HOST:PORT`` or ``--unix-target``."""

    def __init__(self, target: Target, connector: Connector) -> None:
        self.target = target
        self.connector = connector

    def open(self, request: Request, check: Check | None = None) -> tuple[Any, str]:
        if check is not None:
            check(self.target)
        return self.connector(self.target), target_name(self.target)

    def reload(self) -> None:
        pass

    def describe(self) -> str:
        return target_name(self.target)


class TokenTargets:
    """The target named by the client's token, found by a :class:`Lookup`."""

    def __init__(self, lookup: Lookup, connector: Connector) -> None:
        self.lookup = lookup
        self.connector = connector

    def open(self, request: Request, check: Check | None = None) -> tuple[Any, str]:
        target = self.lookup.find(request)
        if check is not None:
            check(target)
        return self.connector(target), target_name(target)

    def reload(self) -> None:
        self.lookup.reload()

    def describe(self) -> str:
        return self.lookup.describe()


class WrappedTarget:
    """The program started by wsproxy (``-- PROGRAM``), at its moved port, or at the UNIX socket
    it serves (``--unix-target PATH PORT -- PROGRAM``, as jupyter-remote-desktop-proxy runs
    ``vncserver -rfbunixpath PATH``); over TLS to the port with ``ssl_target``, as websockify
    does."""

    def __init__(
        self,
        program: WrappedProgram,
        unix_target: str | None = None,
        connector: Connector | None = None,
    ) -> None:
        self.program = program
        self.unix_target = unix_target
        self.tls = connector.tls if connector is not None else None

    def open(self, request: Request, check: Check | None = None) -> tuple[Any, str]:
        if check is not None:
            slot = self.program.slot
            port = slot.get() if slot is not None else self.program.port
            check(self.unix_target if self.unix_target is not None else ("127.0.0.1", port))
        sock, name = self.program.connect(self.unix_target)
        if self.tls is not None and self.unix_target is None:
            sock = self.tls.wrap(sock, sock.getpeername()[0], name)
        return sock, name

    def reload(self) -> None:
        pass

    def describe(self) -> str:
        at = f" at {target_name(self.unix_target)}" if self.unix_target else ""
        return shlex.join(self.program.argv) + at


def connect(address: Target, timeout: float, *, prefer_ipv6: bool = False) -> Any:
    """Connect the target: ``(host, port)`` over TCP, or a UNIX socket path given as text.

    Raises HandshakeError: ``502`` naming the target, with the reason (``503`` when we are out
    of file descriptors).
    """
    try:
        if isinstance(address, str) or family_of(address[0]) is not None:
            # gevent's create_connection always calls getaddrinfo, in its thread pool: the bench's
            # profile of new sessions/s showed that hand-off at a quarter of the proxy's time.
            sock = dial(address, timeout)
        else:
            sock = _connect_by_name(address, timeout, prefer_ipv6)
    except OSError as exc:
        reason = "timed out" if isinstance(exc, socket.timeout) else exc.strerror or str(exc)
        # Out of descriptors is our exhaustion, not the target's fault: 503, as past the cap.
        status = HTTPStatus.BAD_GATEWAY
        if exc.errno in (errno.EMFILE, errno.ENFILE):
            status = HTTPStatus.SERVICE_UNAVAILABLE
        raise HandshakeError(
            status, f"cannot connect to target {target_name(address)}: {reason}"
        ) from None
    sock.settimeout(None)
    return sock


def target_name(address: Target) -> str:
    """How logs and answers name a target: ``host:port`` or ``unix:PATH``."""
    return f"unix:{address}" if isinstance(address, str) else format_address(address)


def _connect_by_name(address: Address, timeout: float, prefer_ipv6: bool) -> Any:
    """Resolve (in gevent's resolver) and try each address in turn: IPv4 first as websockify
    does, IPv6 first with ``-6``."""
    infos = gevent.socket.getaddrinfo(*address, 0, socket.SOCK_STREAM)
    error: OSError = OSError(f"no address for {address[0]}")
    for family, _, _, _, sockaddr in by_family(infos, prefer_ipv6):
        try:
            return dial(sockaddr, timeout, family)
        except OSError as exc:
            error = exc
    raise error
