"""Unit tests of the sans-I/O RFC 6455 framing (no sockets)."""

from __future__ import annotations

import base64
import os
import struct

import pytest

from wsproxy.errors import CloseCode, ProtocolError
from wsproxy.protocol.payload import Base64Decoder, apply_mask
from wsproxy.protocol.rfc6455 import (
    Close,
    Data,
    FrameParser,
    Opcode,
    Ping,
    Pong,
    accept_key,
    check_close_code,
    encode_close,
    encode_frame,
    frame_header,
)

MASK = bytes.fromhex("37fa213d")


def feed_all(data: bytes, *, one_byte: bool = False, require_mask: bool = True) -> list:
    parser = FrameParser(require_mask=require_mask)
    if not one_byte:
        return parser.feed(data)
    events = []
    for i in range(len(data)):
        events += parser.feed(data[i : i + 1])
    return events


def join_data(events: list) -> bytes:
    return b"".join(e.payload for e in events if isinstance(e, Data))


# --- RFC 6455 section 5.7 examples --------------------------------------------------------------


def test_section_5_7_unmasked_text_hello_is_what_we_send() -> None:
    assert encode_frame(Opcode.TEXT, b"Hello") == bytes.fromhex("810548656c6c6f")


def test_section_5_7_unmasked_text_hello_parses_on_the_client_side() -> None:
    events = feed_all(bytes.fromhex("810548656c6c6f"), require_mask=False)
    assert events == [Data(b"Hello", text=True, fin=True)]


def test_section_5_7_masked_text_hello_round_trip() -> None:
    wire = bytes.fromhex("818537fa213d7f9f4d5158")
    assert encode_frame(Opcode.TEXT, b"Hello", mask=MASK) == wire
    assert feed_all(wire) == [Data(b"Hello", text=True, fin=True)]


def test_section_5_7_fragmented_unmasked_text() -> None:
    wire = bytes.fromhex("010348656c") + bytes.fromhex("80026c6f")
    events = feed_all(wire, require_mask=False)
    assert events == [Data(b"Hel", True, False), Data(b"lo", True, True)]


def test_section_5_7_unmasked_ping_and_masked_pong() -> None:
    assert encode_frame(Opcode.PING, b"Hello") == bytes.fromhex("890548656c6c6f")
    wire = bytes.fromhex("8a8537fa213d7f9f4d5158")
    assert encode_frame(Opcode.PONG, b"Hello", mask=MASK) == wire
    assert feed_all(wire) == [Pong(b"Hello")]


@pytest.mark.parametrize(
    ("length", "header"),
    [
        (256, bytes.fromhex("827e0100")),  # 256 bytes binary in a single unmasked frame
        (65536, bytes.fromhex("827f0000000000010000")),  # 64 KiB
    ],
)
def test_section_5_7_extended_lengths(length: int, header: bytes) -> None:
    assert frame_header(Opcode.BINARY, length) == header
    payload = os.urandom(length)
    assert feed_all(header + payload, require_mask=False) == [Data(payload, False, True)]


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65535, 65536, 100_000])
def test_length_encodings_round_trip_masked(length: int) -> None:
    payload = os.urandom(length)
    frame = encode_frame(Opcode.BINARY, payload, mask=True)
    assert join_data(feed_all(frame)) == payload


def test_accept_key_matches_rfc_example() -> None:
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_apply_mask_is_its_own_inverse() -> None:
    data = os.urandom(1001)
    assert apply_mask(apply_mask(data, MASK), MASK) == data
    assert apply_mask(b"", MASK) == b""


# --- streaming -----------------------------------------------------------------------------------


def test_frame_fed_one_byte_at_a_time_arrives_intact() -> None:
    payload = os.urandom(300)
    frame = encode_frame(Opcode.BINARY, payload, mask=True)
    events = feed_all(frame, one_byte=True)
    assert join_data(events) == payload
    assert events[-1].fin


def test_payload_split_at_every_mask_phase_unmasks_correctly() -> None:
    payload = bytes(range(256)) * 4
    frame = encode_frame(Opcode.BINARY, payload, mask=MASK)
    for cut in range(len(frame) - 8, len(frame)):
        parser = FrameParser()
        events = parser.feed(frame[:cut]) + parser.feed(frame[cut:])
        assert join_data(events) == payload


def test_many_frames_in_one_read_and_fragments_stream() -> None:
    first = encode_frame(Opcode.BINARY, b"ab", fin=False, mask=True)
    ping = encode_frame(Opcode.PING, b"p", mask=True)  # control frames may interleave
    cont = encode_frame(Opcode.CONTINUATION, b"cd", fin=True, mask=True)
    text = encode_frame(Opcode.TEXT, "é".encode(), mask=True)
    events = feed_all(first + ping + cont + text)
    assert events == [
        Data(b"ab", False, False),
        Ping(b"p"),
        Data(b"cd", False, True),
        Data("é".encode(), True, True),
    ]


def test_data_events_do_not_alias_the_input_buffer() -> None:
    buf = bytearray(encode_frame(Opcode.BINARY, b"xyz", mask=MASK))
    (event,) = FrameParser().feed(memoryview(buf))
    buf[:] = b"\0" * len(buf)
    assert event.payload == b"xyz"


def test_input_after_close_is_ignored() -> None:
    parser = FrameParser()
    close = encode_frame(Opcode.CLOSE, encode_close(1000, "bye"), mask=True)
    junk = b"\xff" * 10  # would be a violation if parsed
    assert parser.feed(close + junk) == [Close(1000, "bye")]
    assert parser.feed(junk) == []


# --- violations and their close codes ---------------------------------------------------------


def masked_header(b0: int, length: int) -> bytes:
    return bytes([b0, 0x80 | length]) + MASK


VIOLATIONS = {
    "unmasked_client_frame": (bytes([0x82, 0x01]) + b"x", CloseCode.PROTOCOL_ERROR),
    "rsv1_set": (masked_header(0xC2, 0), CloseCode.PROTOCOL_ERROR),
    "rsv2_set": (masked_header(0xA2, 0), CloseCode.PROTOCOL_ERROR),
    "rsv3_set": (masked_header(0x92, 0), CloseCode.PROTOCOL_ERROR),
    "opcode_3": (masked_header(0x83, 0), CloseCode.PROTOCOL_ERROR),
    "opcode_7": (masked_header(0x87, 0), CloseCode.PROTOCOL_ERROR),
    "opcode_0xb": (masked_header(0x8B, 0), CloseCode.PROTOCOL_ERROR),
    "opcode_0xf": (masked_header(0x8F, 0), CloseCode.PROTOCOL_ERROR),
    "fragmented_ping": (masked_header(0x09, 0), CloseCode.PROTOCOL_ERROR),
    "fragmented_close": (masked_header(0x08, 0), CloseCode.PROTOCOL_ERROR),
    "ping_over_125": (bytes([0x89, 0xFE, 0, 126]) + MASK + bytes(126), CloseCode.PROTOCOL_ERROR),
    "continuation_first": (masked_header(0x80, 0), CloseCode.PROTOCOL_ERROR),
    "text_inside_fragmented": (
        masked_header(0x02, 0) + masked_header(0x81, 0),
        CloseCode.PROTOCOL_ERROR,
    ),
    "length_top_bit": (
        bytes([0x82, 0xFF]) + struct.pack("!Q", 1 << 63) + MASK,
        CloseCode.PROTOCOL_ERROR,
    ),
    "close_one_byte_body": (masked_header(0x88, 1) + b"\x03", CloseCode.PROTOCOL_ERROR),
}


@pytest.mark.parametrize("case", sorted(VIOLATIONS))
def test_violation_raises_with_close_code(case: str) -> None:
    wire, code = VIOLATIONS[case]
    with pytest.raises(ProtocolError) as exc_info:
        feed_all(wire)
    assert exc_info.value.close_code == code


def test_violations_are_detected_when_fed_one_byte_at_a_time() -> None:
    for case, (wire, code) in VIOLATIONS.items():
        with pytest.raises(ProtocolError) as exc_info:
            feed_all(wire, one_byte=True)
        assert exc_info.value.close_code == code, case


def test_client_side_parser_refuses_masked_frames() -> None:
    with pytest.raises(ProtocolError):
        feed_all(encode_frame(Opcode.BINARY, b"x", mask=True), require_mask=False)


# --- close frames (section 7.4) -----------------------------------------------------------------

VALID_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014]
VALID_CODES += [3000, 3999, 4000, 4999]
INVALID_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]


@pytest.mark.parametrize("code", VALID_CODES)
def test_close_with_valid_code_is_accepted(code: int) -> None:
    wire = encode_frame(Opcode.CLOSE, struct.pack("!H", code) + b"why", mask=True)
    assert feed_all(wire) == [Close(code, "why")]
    assert check_close_code(code)


@pytest.mark.parametrize("code", INVALID_CODES)
def test_close_with_code_that_may_not_be_sent_is_1002(code: int) -> None:
    wire = encode_frame(Opcode.CLOSE, struct.pack("!H", code), mask=True)
    with pytest.raises(ProtocolError) as exc_info:
        feed_all(wire)
    assert exc_info.value.close_code == CloseCode.PROTOCOL_ERROR


def test_close_without_body_is_no_status() -> None:
    assert feed_all(encode_frame(Opcode.CLOSE, b"", mask=True)) == [Close(CloseCode.NO_STATUS)]


def test_close_reason_not_utf8_is_1007() -> None:
    wire = encode_frame(Opcode.CLOSE, struct.pack("!H", 1000) + b"\xff\xfe", mask=True)
    with pytest.raises(ProtocolError) as exc_info:
        feed_all(wire)
    assert exc_info.value.close_code == CloseCode.INVALID_DATA


def test_close_reason_with_utf8_split_across_reads_is_accepted() -> None:
    wire = encode_frame(Opcode.CLOSE, struct.pack("!H", 1001) + "ça".encode(), mask=True)
    assert feed_all(wire, one_byte=True) == [Close(1001, "ça")]


def test_encode_close_truncates_to_control_frame_limit() -> None:
    assert len(encode_close(1000, "x" * 500)) == 125
    assert encode_close(None) == b""


def test_encode_close_cuts_a_long_reason_at_a_character_boundary() -> None:
    body = encode_close(1000, "é" * 100)  # 200 bytes of 2-byte characters
    assert len(body) == 124
    assert body[2:].decode("utf-8") == "é" * 61


# --- base64 subprotocol --------------------------------------------------------------------------


def test_base64_decoder_accepts_any_split() -> None:
    data = os.urandom(100)
    text = base64.b64encode(data)
    for cut in range(len(text)):
        decoder = Base64Decoder()
        assert decoder.decode(text[:cut], False) + decoder.decode(text[cut:], True) == data


@pytest.mark.parametrize("text", [b"QQ=", b"Q", b"!!!!", b"QQ==QQ==", b"QUJD\n"])
def test_invalid_base64_is_1007(text: bytes) -> None:
    with pytest.raises(ProtocolError) as exc_info:
        Base64Decoder().decode(text, True)
    assert exc_info.value.close_code == CloseCode.INVALID_DATA


def test_base64_data_after_padding_in_a_fragmented_message_is_1007() -> None:
    decoder = Base64Decoder()
    assert decoder.decode(b"QQ==", False) == b"A"
    with pytest.raises(ProtocolError):
        decoder.decode(b"QQ==", True)
