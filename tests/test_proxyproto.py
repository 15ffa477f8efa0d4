"""PROXY protocol v1/v2 parsing, bytes only (wsproxy/protocol/proxyproto.py)."""

from __future__ import annotations

import ipaddress
import socket
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsproxy.protocol.forwarded import TrustedProxies, forwarded_client, parse_ip
from wsproxy.protocol.proxyproto import (
    MAX_HEADER_BYTES,
    NEED_DATA,
    V1_PREFIX,
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


# -- properties (hypothesis) ---------------------------------------------------------------------

ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
ports = st.integers(min_value=0, max_value=65535)


@st.composite
def headers(draw: st.DrawFn) -> tuple[bytes, ProxyHeader]:
    """A v1 or v2 header with random addresses, and what it must parse to."""
    v6 = draw(st.booleans())
    src, dst = draw(st.tuples(*(ipv6 if v6 else ipv4,) * 2))
    sport, dport = draw(ports), draw(ports)
    if draw(st.booleans()):
        line = f"PROXY TCP{6 if v6 else 4} {src} {dst} {sport} {dport}\r\n".encode()
        return line, ProxyHeader(1, len(line), (src, sport), (dst, dport))
    tlv = draw(st.binary(max_size=64))
    header = v2_tcp6(src, dst, sport, dport) if v6 else v2_tcp4(src, dst, sport, dport, tlv)
    return header, ProxyHeader(2, len(header), (src, sport), (dst, dport))


def outcome(data: bytes) -> object:
    """What parse() makes of ``data``: a header, NEED_DATA, or the module's own error."""
    try:
        return parse(data)
    except ProxyHeaderError as exc:
        assert exc.status == 400
        return ProxyHeaderError


@given(headers(), st.binary(max_size=32))
def test_headers_round_trip_and_every_prefix_needs_more(
    case: tuple[bytes, ProxyHeader], after: bytes
) -> None:
    header, expected = case
    assert outcome(header + after) == expected
    for end in range(len(header)):
        assert outcome(header[:end]) is NEED_DATA


signature_then_bytes = st.tuples(
    st.sampled_from([b"", V1_PREFIX, SIG, SIG + b"\x21", SIG + b"\x21\x11"]),
    st.binary(max_size=300),
).map(b"".join)


@given(st.one_of(st.binary(max_size=300), signature_then_bytes), st.data())
def test_any_bytes_give_a_header_need_data_or_a_400_and_splitting_changes_nothing(
    data: bytes, draw: st.DataObject
) -> None:
    final = outcome(data)
    assert final is NEED_DATA or final is ProxyHeaderError or isinstance(final, ProxyHeader)
    if isinstance(final, ProxyHeader):
        assert final.length <= len(data)
    # The caller parses what it has so far: a decision on a prefix is the decision on the whole.
    cut = draw.draw(st.integers(min_value=0, max_value=len(data)))
    early = outcome(data[:cut])
    if early is not NEED_DATA:
        assert early == final
    if sniff(data) is Sniff.ABSENT:  # no signature: never a header, never a wait
        assert final is ProxyHeaderError


@given(st.lists(st.one_of(ipv4, ipv6), min_size=1, max_size=6), st.data())
def test_forwarded_for_names_the_right_most_untrusted_hop(
    hops: list[str], draw: st.DataObject
) -> None:
    trusted_hops = draw.draw(st.lists(st.sampled_from(hops), unique=True))
    trusted = TrustedProxies(trusted_hops)
    written = [f"[{h}]" if ":" in h and draw.draw(st.booleans()) else h for h in hops]
    client = forwarded_client(" , ".join(written), trusted)
    untrusted = [h for h in hops if h not in trusted_hops]
    assert client == str(ipaddress.ip_address(untrusted[-1] if untrusted else hops[0]))


@given(st.text(max_size=200), st.lists(st.text(max_size=40), max_size=4))
def test_any_forwarded_for_and_trust_list_give_an_address_none_or_value_error(
    header: str, entries: list[str]
) -> None:
    try:
        trusted = TrustedProxies(entries)
    except ValueError:
        trusted = TrustedProxies(["127.0.0.1"])
    client = forwarded_client(header, trusted)
    assert client is None or ipaddress.ip_address(client)
    assert (parse_ip(header) is None) or ipaddress.ip_address(str(parse_ip(header)))
