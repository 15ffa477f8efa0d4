"""PROXY protocol v1/v2 parsing, bytes only (wsproxy/protocol/proxyproto.py)."""

from __future__ import annotations

import socket
import struct

import pytest

from wsproxy.protocol.forwarded import TrustedProxies, forwarded_client
from wsproxy.protocol.proxyproto import (
    MAX_HEADER_BYTES,
    NEED_DATA,
    ProxyHeader,
    ProxyHeaderError,
    Sniff,
    parse,
    sniff,
)

SIG = b"\r\n\r\n\x00\r\nQUIT\n"
AFTER = b"GET / HTTP/1.1\r\n"


def v2(cmd: int, fam: int, body: bytes) -> bytes:
    return SIG + bytes([0x20 | cmd, fam]) + struct.pack("!H", len(body)) + body


def v2_tcp4(src: str, dst: str, sport: int, dport: int, tlv: bytes = b"") -> bytes:
    body = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    return v2(0x1, 0x11, body + tlv)


def v2_tcp6(src: str, dst: str, sport: int, dport: int) -> bytes:
    body = socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
    return v2(0x1, 0x21, body + struct.pack("!HH", sport, dport))


def check_bytewise(header: bytes, expected: ProxyHeader) -> None:
    """Every proper prefix needs more data; the whole header (plus what follows) parses."""
    for end in range(len(header)):
        assert parse(header[:end]) is NEED_DATA, end
    assert parse(header + AFTER) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 443\r\n",
            ProxyHeader(1, 44, ("203.0.113.7", 56324), ("192.0.2.1", 443)),
        ),
        (
            b"PROXY TCP6 2001:db8::7 2001:db8::1 65535 6080\r\n",
            ProxyHeader(1, 47, ("2001:db8::7", 65535), ("2001:db8::1", 6080)),
        ),
        (b"PROXY UNKNOWN\r\n", ProxyHeader(1, 15)),
        (b"PROXY UNKNOWN ffff:f...f:ffff 1.2.3.4 1 2\r\n", ProxyHeader(1, 43)),
        (
            v2_tcp4("203.0.113.7", "192.0.2.1", 56324, 443),
            ProxyHeader(2, 28, ("203.0.113.7", 56324), ("192.0.2.1", 443)),
        ),
        (
            v2_tcp6("2001:db8::7", "2001:db8::1", 1, 2),
            ProxyHeader(2, 52, ("2001:db8::7", 1), ("2001:db8::1", 2)),
        ),
        # TLVs (here a PP2_TYPE_ALPN) are skipped with the length.
        (
            v2_tcp4("10.1.2.3", "10.0.0.1", 9, 80, tlv=b"\x01\x00\x02h2"),
            ProxyHeader(2, 33, ("10.1.2.3", 9), ("10.0.0.1", 80)),
        ),
        (v2(0x0, 0x00, b""), ProxyHeader(2, 16)),  # LOCAL: a health check, no addresses
        (v2(0x0, 0x11, bytes(12)), ProxyHeader(2, 28)),  # LOCAL ignores an address block
        (v2(0x1, 0x00, b""), ProxyHeader(2, 16)),  # PROXY UNSPEC
        (v2(0x1, 0x31, bytes(216)), ProxyHeader(2, 232)),  # a UNIX socket client
        (v2(0x1, 0x12, bytes(12)), ProxyHeader(2, 28)),  # DGRAM is not a TCP client
    ],
)
def test_valid_headers_parse_with_their_length_and_need_data_until_complete(
    header: bytes, expected: ProxyHeader
) -> None:
    check_bytewise(header, expected)


@pytest.mark.parametrize(
    ("data", "found"),
    [
        (b"PROXY TCP4", Sniff.PRESENT),
        (SIG, Sniff.PRESENT),
        (b"PRO", Sniff.UNDECIDED),
        (b"\r\n\r\n\x00", Sniff.UNDECIDED),
        (b"", Sniff.UNDECIDED),
        (b"POST / HTTP/1.1", Sniff.ABSENT),
        (b"GET / HTTP/1.1", Sniff.ABSENT),
        (b"\x16\x03\x01", Sniff.ABSENT),  # a TLS ClientHello
        (b"\r\n\r\n\x01", Sniff.ABSENT),
    ],
)
def test_sniff_tells_header_from_request_or_tls(data: bytes, found: Sniff) -> None:
    assert sniff(data) is found


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\n\r\n",
        b"PROXY TCP4 203.0.113.7 192.0.2.1 56324\r\n",  # a field missing
        b"PROXY TCP5 203.0.113.7 192.0.2.1 1 2\r\n",
        b"PROXY TCP4 2001:db8::7 192.0.2.1 1 2\r\n",  # IPv6 in a TCP4 line
        b"PROXY TCP6 203.0.113.7 2001:db8::1 1 2\r\n",
        b"PROXY TCP4 203.0.113.777 192.0.2.1 1 2\r\n",
        b"PROXY TCP4 203.0.113.7 192.0.2.1 65536 2\r\n",
        b"PROXY TCP4 203.0.113.7 192.0.2.1 080 2\r\n",  # leading zero
        b"PROXY TCP4 203.0.113.7 192.0.2.1 -1 2\r\n",
        b"PROXY TCP4  203.0.113.7 192.0.2.1 1 2\r\n",  # two spaces
        b"PROXY TCP4 203.0.113.7 192.0.2.1 \xb9 2\r\n",  # not ASCII
        b"PROXY " + b"x" * 101 + b"\r\n",  # 109 bytes: over the 107-byte line limit
        b"PROXY " + b"x" * 200,  # no line end within the limit
        SIG + b"\x11\x11\x00\x0c" + bytes(12),  # version 1 in a v2 header
        SIG + b"\x22\x11\x00\x0c" + bytes(12),  # command 2
        SIG + b"\x21\x41\x00\x0c" + bytes(12),  # family 4
        SIG + b"\x21\x11\x00\x08" + bytes(8),  # block too short for INET
        SIG + b"\x21\x21\x00\x0c" + bytes(12),  # block too short for INET6
        SIG + b"\x21\x11" + struct.pack("!H", MAX_HEADER_BYTES),  # over the size limit
    ],
)
def test_malformed_headers_are_a_400(data: bytes) -> None:
    with pytest.raises(ProxyHeaderError) as info:
        parse(data)
    assert info.value.status == 400


def test_v1_line_of_exactly_107_bytes_is_accepted() -> None:
    line = b"PROXY UNKNOWN " + b"x" * 91 + b"\r\n"
    assert len(line) == 107
    assert parse(line) == ProxyHeader(1, 107)


# -- trusted_proxies and X-Forwarded-For (wsproxy/protocol/forwarded.py) --

TRUSTED = TrustedProxies(["127.0.0.1", "10.0.0.0/8", "fd00::/8"])


@pytest.mark.parametrize(
    ("host", "trusted"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", False),
        ("10.200.3.4", True),
        ("::ffff:10.1.1.1", True),  # an IPv4 peer on a dual-stack socket
        ("fd12::1", True),
        ("2001:db8::1", False),
        ("localhost", False),
        ("", False),
    ],
)
def test_trusted_proxies_match_addresses_and_networks(host: str, trusted: bool) -> None:
    assert (host in TRUSTED) is trusted


@pytest.mark.parametrize(
    ("header", "client"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("203.0.113.7, 10.0.0.5", "203.0.113.7"),  # our own balancer chain is skipped
        ("198.51.100.1, 203.0.113.7, 10.0.0.5", "203.0.113.7"),  # left of it may be forged
        ("10.0.0.9, 10.0.0.5", "10.0.0.9"),  # every hop trusted: the left-most
        ("[2001:db8::7]:4711, 127.0.0.1", "2001:db8::7"),
        ("203.0.113.7:4711", "203.0.113.7"),
        ("unknown, 10.0.0.5", None),
        ("", None),
        (None, None),
    ],
)
def test_forwarded_for_takes_the_right_most_untrusted_address(
    header: str | None, client: str | None
) -> None:
    assert forwarded_client(header, TRUSTED) == client


def test_empty_trusted_proxies_trust_nobody() -> None:
    nobody = TrustedProxies([])
    assert not nobody
    assert "127.0.0.1" not in nobody
