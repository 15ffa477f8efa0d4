"""The PROXY protocol, versions 1 and 2, sans-I/O: the header a load balancer (HAProxy, nginx's
``proxy_protocol``, AWS NLB) puts in front of a connection to name the real client.

:func:`sniff` tells from the first bytes whether a header is there at all; :func:`parse` takes the
bytes received so far and returns the :class:`ProxyHeader` with the number of bytes it used, or
:data:`NEED_DATA`. Whether to believe a header is the caller's decision (``trusted_proxies``).

Reference: "The PROXY protocol, versions 1 & 2", haproxy.org/download/2.9/doc/proxy-protocol.txt.
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from dataclasses import dataclass
from http import HTTPStatus
from typing import Final

from wsproxy.errors import HandshakeError

__all__ = [
    "MAX_HEADER_BYTES",
    "MAX_V1_BYTES",
    "NEED_DATA",
    "V1_PREFIX",
    "V2_SIGNATURE",
    "Command",
    "Family",
    "NeedData",
    "ProxyHeader",
    "ProxyHeaderError",
    "Sniff",
    "parse",
    "sniff",
]

V1_PREFIX: Final = b"PROXY "
V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
MAX_V1_BYTES: Final = 107  # the spec's worst case, "PROXY TCP6 <two full IPv6> <ports>\r\n"
V2_FIXED_BYTES: Final = 16  # signature, version/command, family/transport, length
# A v2 header may carry TLVs (ALPN, authority, TLS details) up to 64 KiB; we accept this much and
# refuse more. This is a security limit: it bounds what a session peeks before the request.
MAX_HEADER_BYTES: Final = 4096


class Command(enum.IntEnum):
    """v2 command (low nibble of byte 13)."""

    LOCAL = 0x0  # the proxy's own connection (health check): keep the real peer address
    PROXY = 0x1


class Family(enum.IntEnum):
    """v2 address family (high nibble of byte 14) and the size of its address block."""

    UNSPEC = 0x0
    INET = 0x1
    INET6 = 0x2
    UNIX = 0x3

    @property
    def block_bytes(self) -> int:
        return {Family.UNSPEC: 0, Family.INET: 12, Family.INET6: 36, Family.UNIX: 216}[self]


class Sniff(enum.Enum):
    """What the first bytes of a connection say about a PROXY header."""

    ABSENT = "absent"
    PRESENT = "present"
    UNDECIDED = "undecided"  # the bytes so far are a prefix of a signature: wait for more


class NeedData:
    """The header is not complete yet: receive more bytes and call again."""

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData()


class ProxyHeaderError(HandshakeError):
    """A malformed or oversized PROXY header: the connection is answered with 400."""

    def __init__(self, reason: str) -> None:
        super().__init__(HTTPStatus.BAD_REQUEST, f"PROXY protocol: {reason}")


@dataclass(frozen=True)
class ProxyHeader:
    """A parsed header.

    ``source`` and ``destination`` are ``(host, port)`` of the client and of the address it
    connected to, or None when the header does not name them (v1 ``UNKNOWN``, v2 ``LOCAL``,
    ``UNSPEC`` or a UNIX family): the caller then keeps the address of the connection itself.
    ``length`` is the number of bytes the header used; what follows is the client's data.
    """

    version: int
    length: int
    source: tuple[str, int] | None = None
    destination: tuple[str, int] | None = None


def sniff(data: bytes | bytearray) -> Sniff:
    """Does ``data`` (the first bytes of a connection) start with a v1 or v2 signature?"""
    if not data:
        return Sniff.UNDECIDED
    for signature in (V1_PREFIX, V2_SIGNATURE):
        head = bytes(data[: len(signature)])
        if head == signature:
            return Sniff.PRESENT
        if head and signature.startswith(head):
            return Sniff.UNDECIDED
    return Sniff.ABSENT


def parse(data: bytes | bytearray, *, max_bytes: int = MAX_HEADER_BYTES) -> ProxyHeader | NeedData:
    """Parse a v1 or v2 header at the start of ``data``.

    Returns the header (its ``length`` says how many bytes to consume), or :data:`NEED_DATA`.

    Raises:
        ProxyHeaderError: no signature, a malformed header, or one over ``max_bytes`` (400).
    """
    found = sniff(data)
    if found is Sniff.UNDECIDED:
        return NEED_DATA
    if found is Sniff.ABSENT:
        raise ProxyHeaderError("no PROXY signature")
    if data.startswith(V1_PREFIX):
        return _parse_v1(data)
    return _parse_v2(data, max_bytes)


def _parse_v1(data: bytes | bytearray) -> ProxyHeader | NeedData:
    end = data.find(b"\r\n", 0, MAX_V1_BYTES)
    if end < 0:
        if len(data) >= MAX_V1_BYTES:
            raise ProxyHeaderError(f"v1 header line over {MAX_V1_BYTES} bytes")
        return NEED_DATA
    try:
        line = bytes(data[:end]).decode("ascii")
    except UnicodeDecodeError:
        raise ProxyHeaderError("v1 header is not ASCII") from None
    length = end + 2
    fields = line.split(" ")
    if fields[1:2] == ["UNKNOWN"]:
        # "PROXY UNKNOWN" may be followed by anything: the proxy could not tell the addresses.
        return ProxyHeader(version=1, length=length)
    if len(fields) != 6 or fields[1] not in ("TCP4", "TCP6"):
        raise ProxyHeaderError("malformed v1 header line")
    _, proto, src, dst, sport, dport = fields
    kind = ipaddress.IPv4Address if proto == "TCP4" else ipaddress.IPv6Address
    try:
        source = (str(kind(src)), _v1_port(sport))
        destination = (str(kind(dst)), _v1_port(dport))
    except ValueError:
        raise ProxyHeaderError(f"bad {proto} address or port in v1 header") from None
    return ProxyHeader(version=1, length=length, source=source, destination=destination)


def _v1_port(text: str) -> int:
    # Decimal 0..65535 without a sign, spaces or leading zeros.
    if not text.isdigit() or not text.isascii() or (len(text) > 1 and text[0] == "0"):
        raise ValueError(text)
    port = int(text)
    if port > 65535:
        raise ValueError(text)
    return port


def _parse_v2(data: bytes | bytearray, max_bytes: int) -> ProxyHeader | NeedData:
    if len(data) < V2_FIXED_BYTES:
        return NEED_DATA
    ver_cmd, fam_proto, body_bytes = struct.unpack_from("!BBH", data, len(V2_SIGNATURE))
    length = V2_FIXED_BYTES + body_bytes
    if ver_cmd >> 4 != 2:
        raise ProxyHeaderError(f"unsupported v2 version {ver_cmd >> 4}")
    try:
        command = Command(ver_cmd & 0x0F)
        family = Family(fam_proto >> 4)
    except ValueError:
        raise ProxyHeaderError("unknown v2 command or address family") from None
    if length > max_bytes:
        raise ProxyHeaderError(f"v2 header over {max_bytes} bytes")
    if len(data) < length:
        return NEED_DATA
    if command is Command.LOCAL:
        return ProxyHeader(version=2, length=length)
    if body_bytes < family.block_bytes:
        raise ProxyHeaderError(f"v2 address block too short for {family.name}")
    # Only a stream transport is a TCP client; DGRAM or UNSPEC carry no usable source for us.
    if family in (Family.UNSPEC, Family.UNIX) or fam_proto & 0x0F != 0x1:
        return ProxyHeader(version=2, length=length)
    block = bytes(data[V2_FIXED_BYTES : V2_FIXED_BYTES + family.block_bytes])
    size = 4 if family is Family.INET else 16
    src = ipaddress.ip_address(block[:size])
    dst = ipaddress.ip_address(block[size : 2 * size])
    sport, dport = struct.unpack_from("!HH", block, 2 * size)
    return ProxyHeader(
        version=2, length=length, source=(str(src), sport), destination=(str(dst), dport)
    )
