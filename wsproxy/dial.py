"""Opening sockets to an address already chosen, and websockify's order of address families.

Shared by the target connector, the wrapped program's connector and the listener, so that each
names a UNIX socket, an IPv4 and an IPv6 address the same way.
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import os
import socket
from typing import Any

import gevent.socket

__all__ = ["by_family", "dial", "family_of"]


@functools.lru_cache(maxsize=256)  # a session asks twice; ipaddress parses in Python
def family_of(host: str) -> int | None:
    """AF_INET or AF_INET6 for a numeric IP address, None for a host name."""
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return None


def by_family(infos: list[Any], prefer_ipv6: bool) -> list[Any]:
    """``getaddrinfo`` results in websockify's order: IPv4 first, IPv6 first with ``-6``
    (stable within a family, so the resolver's own order is kept there)."""
    first = socket.AF_INET6 if prefer_ipv6 else socket.AF_INET
    return sorted(infos, key=lambda info: info[0] != first)


def dial(address: tuple[Any, ...] | str, timeout: float, family: int | None = None) -> Any:
    """A gevent socket connected to ``address``: a UNIX socket path, or a numeric IP address
    (``family`` may say which, else it is read from the host). No resolver call: gevent's
    ``create_connection`` makes one, in its thread pool, even for a numeric address."""
    if isinstance(address, str):
        family = socket.AF_UNIX
    elif family is None:
        family = family_of(address[0]) or socket.AF_INET
    sock = gevent.socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        _connect(sock, address)
    except BaseException:
        sock.close()
        raise
    return sock


_PENDING = (errno.EINPROGRESS, errno.EALREADY, errno.EAGAIN)


def _connect(sock: Any, address: tuple[Any, ...] | str) -> None:
    """gevent's ``connect``, less its wait on the event loop when the connection is already
    made. A connection to a local listener (loopback, the usual target) is complete by the
    time the non-blocking ``connect`` returns EINPROGRESS: asking again says so, and saves
    each such session a watcher, a loop turn and two greenlet switches. Any other target
    answers EALREADY and is waited for, within the socket's timeout, by gevent's own."""
    raw = sock._sock
    err = raw.connect_ex(address)
    if err == errno.EINPROGRESS:
        err = raw.connect_ex(address)
    if err in (0, errno.EISCONN):
        return
    if err in _PENDING:
        sock.connect(address)
        return
    raise OSError(err, os.strerror(err))
