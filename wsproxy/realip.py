"""Read a PROXY protocol header off a client socket, and nothing after it.

The header is found by peeking, then exactly its bytes are consumed: what follows (a TLS
ClientHello, an HTTP request) stays in the socket for the next step, which may sniff it too.
The parsing itself is :mod:`wsproxy.protocol.proxyproto`; trust is
:mod:`wsproxy.protocol.forwarded`.
"""

from __future__ import annotations

import socket
from typing import Any

import gevent.socket

from wsproxy.protocol import proxyproto
from wsproxy.protocol.proxyproto import ProxyHeader, ProxyHeaderError, Sniff

__all__ = ["receive_proxy_header"]


def receive_proxy_header(
    sock: Any, *, trusted: bool, max_bytes: int = proxyproto.MAX_HEADER_BYTES
) -> ProxyHeader | None:
    """Consume a PROXY header at the start of ``sock``, if there is one.

    From a ``trusted`` peer, waits until the first bytes show whether a header is there and
    returns it parsed (None without one). From any other peer a header is refused. The caller
    bounds the wait (``gevent.Timeout``).

    Raises:
        ProxyHeaderError: a malformed header, or any header from an untrusted peer (400).
    """
    seen = -1
    while True:
        data = sock.recv(max_bytes, socket.MSG_PEEK)
        if not data:
            return None  # the client left; reading the request will say so
        found = proxyproto.sniff(data)
        if found is Sniff.ABSENT or (found is Sniff.UNDECIDED and not trusted):
            return None
        if not trusted:
            raise ProxyHeaderError("header from a peer that is not in trusted_proxies")
        header = proxyproto.parse(data, max_bytes=max_bytes)
        if isinstance(header, ProxyHeader):
            _consume(sock, header.length)
            return header
        if len(data) == seen:
            raise ProxyHeaderError("connection closed inside the header")
        seen = len(data)
        _wait_for_more(sock, seen)


def _consume(sock: Any, size: int) -> None:
    # The bytes are queued already (we peeked them): these reads do not wait.
    while size:
        chunk = sock.recv(size)
        if not chunk:
            raise ProxyHeaderError("connection closed inside the header")
        size -= len(chunk)


def _wait_for_more(sock: Any, have: int) -> None:
    # A peek returns at once while any byte is queued, so "wait for more" is asked of the kernel:
    # with SO_RCVLOWAT, the socket polls readable only when more than ``have`` bytes are in (or
    # at end of stream).
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, have + 1)
    try:
        gevent.socket.wait_read(sock.fileno())
    finally:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)
