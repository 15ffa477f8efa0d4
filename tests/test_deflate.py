"""Unit tests of the sans-I/O permessage-deflate module (RFC 7692) and the codec built on it."""

from __future__ import annotations

import base64
import os
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wsproxy.errors import CloseCode, HandshakeError, ProtocolError
from wsproxy.protocol.codec import DECODE_BUDGET, DeflateCodec, make_codec
from wsproxy.protocol.deflate import (
    Agreement,
    DeflateFrameParser,
    Deflater,
    Inflater,
    negotiate,
    parse_extensions,
)
from wsproxy.protocol.rfc6455 import Compressed, Data, FrameParser, Opcode, Pong, encode_frame

MASK = bytes.fromhex("37fa213d")
TEXT = b"".join(b"%05d the quick brown fox jumps over the lazy dog\r\n" % i for i in range(2000))


def client_compress(data: bytes, bits: int = 15) -> bytes:
    """What a client sends: raw deflate, sync-flushed, trailer removed."""
    z = zlib.compressobj(6, zlib.DEFLATED, -bits)
    out = z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def compressed_frame(opcode: int, payload: bytes, *, fin: bool = True, rsv1: bool = True) -> bytes:
    frame = bytearray(encode_frame(opcode, payload, fin=fin, mask=MASK))
    if rsv1:
        frame[0] |= 0x40
    return bytes(frame)


def inflate_all(inflater: Inflater, pieces: list[bytes], limit: int = 1 << 20) -> bytes:
    out = b""
    for i, piece in enumerate(pieces):
        inflater.push(piece, i == len(pieces) - 1)
        while inflater.more:
            chunk = inflater.pull(limit)
            assert len(chunk) <= limit
            out += chunk
    return out


# -- parsing the header --


def test_parse_extensions_reads_offers_params_and_quoted_values() -> None:
    header = 'permessage-deflate; client_max_window_bits; server_max_window_bits="10", x-foo'
    assert parse_extensions(header) == [
        (
            "permessage-deflate",
            [("client_max_window_bits", None), ("server_max_window_bits", "10")],
        ),
        ("x-foo", []),
    ]


@pytest.mark.parametrize(
    "header",
    [
        "permessage-deflate; ",
        "permessage-deflate;; client_max_window_bits",
        "permessage-deflate=1",
        'permessage-deflate; server_max_window_bits="1 0"',
        "permessage-deflate; a=b=c",
        "permessage-deflate client_max_window_bits",
        '"permessage-deflate"',
    ],
)
def test_malformed_header_fails_the_handshake_with_400(header: str) -> None:
    with pytest.raises(HandshakeError) as info:
        negotiate(header)
    assert info.value.status == 400
    assert "Sec-WebSocket-Extensions" in info.value.reason


# -- negotiation --


def test_no_offer_or_other_extensions_give_no_agreement() -> None:
    assert negotiate(None) is None
    assert negotiate("") is None
    assert negotiate("x-webkit-deflate-frame, permessage-foo") is None


def test_chromium_offer_gets_both_windows_capped() -> None:
    agreement = negotiate("permessage-deflate; client_max_window_bits", 12)
    assert agreement == Agreement(
        False,
        False,
        12,
        12,
        "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12",
    )


def test_full_offer_within_the_cap_is_echoed() -> None:
    agreement = negotiate(
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover;"
        " server_max_window_bits=10; client_max_window_bits=9",
        15,
    )
    assert agreement is not None
    assert agreement.response == (
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover;"
        " server_max_window_bits=10; client_max_window_bits=9"
    )
    assert (agreement.server_bits, agreement.client_bits) == (10, 9)
    assert agreement.server_no_context_takeover and agreement.client_no_context_takeover


def test_cap_15_accepts_an_offer_without_client_max_window_bits() -> None:
    agreement = negotiate("permessage-deflate", 15)
    assert agreement is not None
    assert agreement.response == "permessage-deflate"
    assert agreement.client_bits == 15


def test_firefox_offer_is_accepted_under_the_cap_with_a_15_bit_client_window() -> None:
    # Section 7.1.2.2: without client_max_window_bits in the offer we may not answer it, and the
    # client may use 15 bits; our own window is still capped, unasked (section 7.1.2.1).
    agreement = negotiate("permessage-deflate", 12)
    assert agreement == Agreement(
        False, False, 12, 15, "permessage-deflate; server_max_window_bits=12"
    )
    inflater = Inflater(agreement.client_bits, False, 0)
    data = os.urandom(20 << 10) * 3  # back-references 20 KiB away: past a 12-bit window
    body = client_compress(data, 15)
    with pytest.raises(zlib.error, match="too far back"):
        zlib.decompressobj(-12).decompress(body)
    assert inflate_all(inflater, [body]) == data


def test_firefox_offer_with_flags_keeps_them_and_stays_uncapped_for_the_client() -> None:
    agreement = negotiate("permessage-deflate; client_no_context_takeover", 10)
    assert agreement is not None
    assert agreement.response == (
        "permessage-deflate; client_no_context_takeover; server_max_window_bits=10"
    )
    assert (agreement.server_bits, agreement.client_bits) == (10, 15)


@pytest.mark.parametrize(
    ("offer", "response", "bits"),
    [
        ("client_max_window_bits", "server_max_window_bits=12; client_max_window_bits=12", 12),
        ("client_max_window_bits=10", "server_max_window_bits=12; client_max_window_bits=10", 10),
        ("client_max_window_bits=15", "server_max_window_bits=12; client_max_window_bits=12", 12),
    ],
)
def test_an_offer_that_lets_us_cap_the_client_is_still_capped(
    offer: str, response: str, bits: int
) -> None:
    agreement = negotiate(f"permessage-deflate; {offer}", 12)
    assert agreement is not None
    assert agreement.response == f"permessage-deflate; {response}"
    assert (agreement.server_bits, agreement.client_bits) == (12, bits)


@pytest.mark.parametrize(
    "params",
    [
        "; server_max_window_bits=8",  # zlib cannot compress with a 256-byte window
        "; server_max_window_bits",  # a value is required
        "; server_max_window_bits=16",
        "; client_max_window_bits=7",
        "; client_max_window_bits=08",
        "; client_max_window_bits=abc",
        "; server_no_context_takeover=1",
        "; client_no_context_takeover; client_no_context_takeover",  # twice
        "; client_max_window_bits; mystery",  # not defined for an offer
    ],
)
@pytest.mark.parametrize("cap", [12, 15])
def test_invalid_offer_is_declined_and_the_next_one_taken(params: str, cap: int) -> None:
    header = f"permessage-deflate{params}"
    assert negotiate(header, cap) is None
    agreement = negotiate(f"{header}, permessage-deflate; client_max_window_bits=11", cap)
    assert agreement is not None
    ours = "" if cap == 15 else f"; server_max_window_bits={cap}"
    assert agreement.response == f"permessage-deflate{ours}; client_max_window_bits=11"
    agreement = negotiate(f"{header}, permessage-deflate", cap)  # then Firefox's offer
    assert agreement is not None
    assert (agreement.response, agreement.client_bits) == (f"permessage-deflate{ours}", 15)


def test_client_window_8_is_answered_8_and_inflated_with_9() -> None:
    agreement = negotiate("permessage-deflate; client_max_window_bits=8", 15)
    assert agreement is not None
    assert agreement.response.endswith("client_max_window_bits=8")
    inflater = Inflater(agreement.client_bits, False, 0)
    # A zlib client asked for 8 bits compresses with 9: the inflater must take that.
    data = os.urandom(300) * 3
    assert inflate_all(inflater, [client_compress(data, 9)]) == data


# -- the zlib streams --


@pytest.mark.parametrize("bits", range(9, 16))
@pytest.mark.parametrize("no_context_takeover", [False, True])
def test_deflater_output_inflates_message_by_message(bits: int, no_context_takeover: bool) -> None:
    deflater = Deflater(bits, no_context_takeover)
    peer = zlib.decompressobj(-bits)
    for message in (TEXT[:5000], b"", os.urandom(3000), TEXT):
        body = deflater.compress(message)
        if no_context_takeover:
            peer = zlib.decompressobj(-bits)
        assert peer.decompress(body + b"\x00\x00\xff\xff") == message
    assert len(deflater.compress(TEXT)) < len(TEXT) // 10


def test_context_takeover_makes_repeated_messages_smaller() -> None:
    keep, reset = Deflater(15, False), Deflater(15, True)
    keep.compress(TEXT[:4000])
    reset.compress(TEXT[:4000])
    assert len(keep.compress(TEXT[:4000])) < len(reset.compress(TEXT[:4000])) // 4


def test_inflater_keeps_context_between_messages_and_resets_without_it() -> None:
    client = zlib.compressobj(6, zlib.DEFLATED, -15)
    inflater = Inflater(15, False, 0)
    for message in (TEXT, TEXT, b"", b"tail"):
        body = (client.compress(message) + client.flush(zlib.Z_SYNC_FLUSH))[:-4]
        assert inflate_all(inflater, [body]) == message


def test_final_block_from_client_then_next_message() -> None:
    inflater = Inflater(15, False, 0)
    z = zlib.compressobj(6, zlib.DEFLATED, -15)
    body = z.compress(TEXT) + z.flush()  # BFINAL: a client may end its stream per message
    assert inflate_all(inflater, [body]) == TEXT
    assert inflate_all(inflater, [client_compress(b"next")]) == b"next"


def test_garbage_closes_with_1007() -> None:
    inflater = Inflater(15, False, 0)
    inflater.push(b"\xff\xff\xff\xff", True)
    with pytest.raises(ProtocolError) as info:
        inflater.pull(1024)
    assert info.value.close_code == CloseCode.INVALID_DATA


def test_bomb_stops_at_max_message_size_with_bounded_pieces() -> None:
    limit = 1 << 20
    bomb = client_compress(bytes(64 << 20))  # 64 MiB of zeros in about 64 KiB
    inflater = Inflater(15, False, limit)
    inflater.push(bomb, True)
    pulled = 0
    with pytest.raises(ProtocolError) as info:
        while inflater.more:
            piece = inflater.pull(65536)
            assert len(piece) <= 65536
            pulled += len(piece)
    assert info.value.close_code == CloseCode.MESSAGE_TOO_BIG
    assert limit - 65536 < pulled <= limit


@settings(max_examples=150, deadline=None)
@given(
    data=st.binary(max_size=20000) | st.sampled_from([TEXT, TEXT[:777], bytes(50000)]),
    cuts=st.lists(st.integers(min_value=0, max_value=30000), max_size=8),
    limit=st.integers(min_value=1, max_value=70000),
)
def test_inflate_fed_in_any_split_gives_the_same_bytes(
    data: bytes, cuts: list[int], limit: int
) -> None:
    body = client_compress(data)
    points = sorted({min(c, len(body)) for c in cuts})
    pieces = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
    assert inflate_all(Inflater(15, False, 0), pieces, limit) == data


# -- the frame parser --


def test_rsv1_refused_without_deflate() -> None:
    with pytest.raises(ProtocolError) as info:
        FrameParser().feed(compressed_frame(Opcode.BINARY, b"x"))
    assert info.value.close_code == CloseCode.PROTOCOL_ERROR


@pytest.mark.parametrize(
    "frames",
    [
        [compressed_frame(Opcode.PING, b"")],
        [
            compressed_frame(Opcode.BINARY, b"a", fin=False),
            compressed_frame(Opcode.CONTINUATION, b"b"),
        ],
        [bytes([0xA2 | 0x40]) + encode_frame(Opcode.BINARY, b"", mask=MASK)[1:]],  # RSV1+RSV3
    ],
    ids=["control", "continuation", "rsv3"],
)
def test_rsv1_refused_where_rfc7692_forbids_it(frames: list[bytes]) -> None:
    parser = DeflateFrameParser()
    with pytest.raises(ProtocolError) as info:
        for frame in frames:
            parser.feed(frame)
    assert info.value.close_code == CloseCode.PROTOCOL_ERROR


def test_compressed_flag_covers_every_piece_of_the_message() -> None:
    parser = DeflateFrameParser()
    events = parser.feed(
        compressed_frame(Opcode.TEXT, b"ab", fin=False)
        + compressed_frame(Opcode.CONTINUATION, b"cd", rsv1=False)
        + encode_frame(Opcode.BINARY, b"plain", mask=MASK)
    )
    assert events == [
        Compressed(b"ab", True, False),
        Compressed(b"cd", True, True),
        Data(b"plain", False, True),
    ]


# -- the codec --

AGREEMENT = Agreement(False, False, 15, 15, "permessage-deflate")


def client_parser() -> FrameParser:
    return DeflateFrameParser(require_mask=False)


def test_codec_round_trip_compressed_plain_and_fragmented() -> None:
    codec = DeflateCodec("binary", AGREEMENT)
    body = client_compress(TEXT)
    wire = (
        compressed_frame(Opcode.BINARY, body[:100], fin=False)
        + compressed_frame(Opcode.CONTINUATION, body[100:], rsv1=False)
        + encode_frame(Opcode.PING, b"hi", mask=MASK)
        + encode_frame(Opcode.BINARY, b"raw", mask=MASK)
    )
    decoded = codec.decode(memoryview(wire))
    assert b"".join(decoded.to_target) == TEXT + b"raw"
    assert not decoded.more
    assert client_parser().feed(decoded.to_client[0]) == [Pong(b"hi")]
    assert (codec.wire_in, codec.message_in) == (len(wire), len(TEXT) + 3)


def test_codec_encodes_compressed_frames_with_rsv1() -> None:
    codec = DeflateCodec(None, AGREEMENT)
    frame = codec.encode(memoryview(TEXT))
    assert frame[0] == 0x80 | 0x40 | Opcode.BINARY
    (event,) = client_parser().feed(frame)
    assert type(event) is Compressed and event.fin
    assert zlib.decompressobj(-15).decompress(event.payload + b"\x00\x00\xff\xff") == TEXT
    assert len(frame) < len(TEXT) // 10
    assert (codec.wire_out, codec.message_out) == (len(frame), len(TEXT))


def test_codec_base64_compresses_the_text() -> None:
    codec = make_codec("rfc6455", "base64", AGREEMENT)
    data = os.urandom(5000)
    (event,) = client_parser().feed(codec.encode(memoryview(data)))
    assert event.text and type(event) is Compressed
    text = zlib.decompressobj(-15).decompress(event.payload + b"\x00\x00\xff\xff")
    assert base64.b64decode(text) == data
    wire = compressed_frame(Opcode.TEXT, client_compress(base64.b64encode(data)))
    assert b"".join(codec.decode(memoryview(wire)).to_target) == data


def test_codec_returns_bounded_pieces_and_says_there_is_more() -> None:
    codec = DeflateCodec("binary", AGREEMENT)
    message = bytes(3 * DECODE_BUDGET + 5)
    wire = compressed_frame(Opcode.BINARY, client_compress(message))
    wire += encode_frame(Opcode.CLOSE, b"\x03\xe8", mask=MASK)
    decoded = codec.decode(memoryview(wire))
    got, calls = b"".join(decoded.to_target), 1
    assert len(got) <= DECODE_BUDGET
    while decoded.more:
        decoded = codec.decode(memoryview(b""))
        assert sum(map(len, decoded.to_target)) <= DECODE_BUDGET
        got += b"".join(decoded.to_target)
        calls += 1
    assert got == message
    assert calls == 4
    assert decoded.close == (1000, "")


def test_codec_delivers_what_came_before_a_violation_then_the_error() -> None:
    # A compressed message larger than one call's budget, then an unmasked frame, in one read:
    # the whole message comes out (over several calls), and only then the violation.
    codec = DeflateCodec("binary", AGREEMENT)
    data = os.urandom(1024) * (2 * DECODE_BUDGET // 1024)
    wire = compressed_frame(Opcode.BINARY, client_compress(data)) + b"\x82\x03bad"
    decoded = codec.decode(memoryview(wire))
    got = b"".join(decoded.to_target)
    assert decoded.more and decoded.error is None
    while decoded.more:
        decoded = codec.decode(memoryview(b""))
        got += b"".join(decoded.to_target)
    assert got == data
    assert decoded.error is not None and decoded.error.close_code == CloseCode.PROTOCOL_ERROR


def test_codec_counts_uncompressed_messages_against_the_limit() -> None:
    codec = DeflateCodec("binary", AGREEMENT, max_message_size=10)
    codec.decode(memoryview(encode_frame(Opcode.BINARY, b"x" * 10, mask=MASK)))
    out = codec.decode(memoryview(encode_frame(Opcode.BINARY, b"x" * 11, mask=MASK)))
    assert out.error is not None and out.error.close_code == CloseCode.MESSAGE_TOO_BIG


def test_hixie_never_gets_deflate() -> None:
    assert not isinstance(make_codec("hixie76", None, AGREEMENT), DeflateCodec)
