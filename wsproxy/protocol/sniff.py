"""Classify a connection by its first bytes, sans-I/O.

One port serves TLS, Flash policy requests and HTTP (plain requests and WebSocket upgrades). The
first byte tells TLS apart; a Flash policy request is recognised only once it is complete, and a
prefix of it is "need more data", because every HTTP request starts with a method name and never
with ``<``. Anything else is handed to the HTTP parser, which refuses bytes that can never
start a request (a first byte that is not a letter, say) as soon as it sees them.
"""

from __future__ import annotations

import enum

__all__ = ["POLICY_REQUEST", "SNIFF_BYTES", "TLS_FIRST_BYTES", "Kind", "classify"]

POLICY_REQUEST = b"<policy-file-request/>\0"
# 0x16: a TLS record of type handshake (RFC 8446 section 5.1); 0x80: an SSLv2-style ClientHello
# (the high bit of its two-byte record length), still sent by a few old clients.
TLS_FIRST_BYTES = frozenset((0x16, 0x80))
SNIFF_BYTES = len(POLICY_REQUEST)  # never more is needed to decide


class Kind(enum.Enum):
    """What a connection's first bytes say it is."""

    INCOMPLETE = "incomplete"  # not enough bytes yet: read more and ask again
    TLS = "tls"
    POLICY = "policy"
    HTTP = "http"  # a request head follows (upgrade or plain); the HTTP parser judges it


def classify(data: bytes | bytearray) -> Kind:
    """The kind of connection that starts with ``data`` (all bytes received so far).

    Returns :attr:`Kind.INCOMPLETE` for no bytes or a strict prefix of the policy request; the
    caller reads more (under its handshake timeout) and calls again with everything so far.
    """
    if not data:
        return Kind.INCOMPLETE
    if data[0] in TLS_FIRST_BYTES:
        return Kind.TLS
    head = bytes(data[:SNIFF_BYTES])
    if head == POLICY_REQUEST:
        return Kind.POLICY
    if POLICY_REQUEST.startswith(head):
        return Kind.INCOMPLETE
    return Kind.HTTP
