"""The listening socket, in websockify's three ways: a TCP address, a UNIX socket
(``--unix-listen PATH``, ``--unix-listen-mode``) or the socket inherited on standard input
(``--inetd``, as inetd's ``wait`` services and systemd's ``Accept=no`` sockets hand it over).

A listen *host name* binds the first address it resolves to, IPv4 first as websockify sorts them,
IPv6 first with ``-6``. A bare port binds ``[::]`` with IPv6-only off,
so it serves both families: a superset of websockify, whose bare port is IPv4 only. On a kernel
without IPv6 it binds ``0.0.0.0``, as websockify does.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import stat
from dataclasses import dataclass
from typing import Any

import gevent.socket

from wsproxy.dial import by_family, family_of
from wsproxy.errors import StartupError
from wsproxy.settings import Address, Settings, format_address

__all__ = ["DEFAULT_UNIX_MODE", "Listener", "open_listener"]

log = logging.getLogger(__name__)

DEFAULT_UNIX_MODE = 0o600  # websockify's default for --unix-listen: the owner only
INETD_FD = 0
NO_IPV6 = (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL)  # a kernel or host without IPv6


@dataclass
class Listener:
    """A bound, listening socket and what must be undone when the process ends."""

    sock: Any
    name: str  # how the log names it
    unix_path: str | None = None  # a UNIX socket file we created ...
    unix_inode: int = 0  # ... identified by its inode, so a successor's file is left alone
    owner_pid: int = 0  # only the process that bound it removes it (not a forked worker)

    def adopt(self) -> None:
        """Make this process the owner: the daemon, after :func:`wsproxy.daemon.detach` forked
        it from the process that bound the socket."""
        if self.unix_path is not None:
            self.owner_pid = os.getpid()

    def remove(self) -> None:
        """Remove our UNIX socket file, if this process created it and it is still ours."""
        if self.unix_path is None or os.getpid() != self.owner_pid:
            return
        with contextlib.suppress(OSError):
            if os.stat(self.unix_path).st_ino == self.unix_inode:
                os.unlink(self.unix_path)
        self.unix_path = None


def open_listener(settings: Settings, backlog: int) -> Listener:
    """Bind and listen as the settings ask; raises OSError (the caller says it cannot listen)
    or StartupError (no socket on standard input)."""
    if settings.inetd:
        return _inherited()
    if settings.unix_listen:
        return _unix(settings.unix_listen, settings.unix_listen_mode, backlog)
    assert settings.listen is not None
    host, port = settings.listen
    if host:
        sock = _bind(*_resolve(settings.listen, settings.prefer_ipv6), backlog)
    else:
        try:
            sock = _bind(socket.AF_INET6, ("::", port), backlog, dual_stack=True)
        except OSError as exc:
            if exc.errno not in NO_IPV6:
                raise
            log.info("no IPv6 here (%s): listening on IPv4 only", exc.strerror or exc)
            sock = _bind(socket.AF_INET, ("0.0.0.0", port), backlog)
    return Listener(sock, format_address(sock.getsockname()))


def _bind(family: int, address: Any, backlog: int, *, dual_stack: bool = False) -> Any:
    sock = gevent.socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if dual_stack:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def _resolve(listen: Address, prefer_ipv6: bool) -> tuple[int, Any]:
    host, port = listen
    family = family_of(host)
    if family is not None:
        return family, (host, port)
    infos = socket.getaddrinfo(
        host, port, 0, socket.SOCK_STREAM, socket.IPPROTO_TCP, socket.AI_PASSIVE
    )
    if not infos:
        raise OSError(errno.EADDRNOTAVAIL, f"{host} has no address")
    family, _, _, _, address = by_family(infos, prefer_ipv6)[0]
    return family, address


def _unix(path: str, mode: int | None, backlog: int) -> Listener:
    """Bind a UNIX stream socket at ``path`` with ``mode`` (set through the umask, so the file
    never exists with a wider one). A stale socket file (nobody accepts on it) is replaced;
    unlike websockify, a live one or a file that is not a socket is left alone (an error)."""
    mode = DEFAULT_UNIX_MODE if mode is None else mode
    _clear_stale(path)
    sock = gevent.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_mask = os.umask(0o777 & ~mode)
    try:
        sock.bind(path)
    except BaseException:
        sock.close()
        raise
    finally:
        os.umask(old_mask)
    try:
        sock.listen(backlog)
        inode = os.stat(path).st_ino
    except BaseException:
        sock.close()
        raise
    return Listener(
        sock, format_address(path), unix_path=path, unix_inode=inode, owner_pid=os.getpid()
    )


def _clear_stale(path: str) -> None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise OSError(errno.EEXIST, "the path exists and is not a socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            os.unlink(path)  # left behind by a process that is gone
            log.info("replacing stale socket path=%s", path)
            return
        except OSError:
            return  # let bind() say what is wrong
    raise OSError(errno.EADDRINUSE, "another process accepts on this socket")


def _inherited() -> Listener:
    """The listening socket on standard input. It is moved off fd 0 (which then reads
    /dev/null), so that closing our listener really closes it."""
    try:
        fd = os.dup(INETD_FD)
        sock = gevent.socket.socket(fileno=fd)
    except OSError as exc:
        raise StartupError(
            f"--inetd: standard input is not a socket ({exc.strerror or exc})"
        ) from None
    try:
        accepting = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    except OSError:
        accepting = 0
    if sock.type != socket.SOCK_STREAM or not accepting:
        sock.close()
        raise StartupError(
            "--inetd: standard input is not a listening stream socket (inetd 'wait' mode, "
            "systemd Accept=no)"
        )
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, INETD_FD)
    os.close(null)
    sock.setblocking(False)
    name = format_address(sock.getsockname())
    return Listener(sock, f"{name} (inetd: the socket on standard input)")
