"""The protocol codecs the relay uses (no sockets)."""

from __future__ import annotations

import base64

import pytest

from wsproxy.errors import CloseCode
from wsproxy.protocol.codec import Base64Codec, BinaryCodec, HixieCodec
from wsproxy.protocol.hixie import encode_frame as hixie_frame
from wsproxy.protocol.rfc6455 import Opcode, encode_frame


def frames(*parts: tuple[int, bytes, bool]) -> memoryview:
    return memoryview(
        b"".join(encode_frame(op, data, fin=fin, mask=True) for op, data, fin in parts)
    )


def test_base64_message_ended_by_an_empty_final_fragment_is_checked() -> None:
    codec = Base64Codec("base64")
    # "QUJDRA" alone is not whole base64
    out = codec.decode(frames((Opcode.TEXT, b"QUJDRA", False), (Opcode.CONTINUATION, b"", True)))
    assert out.error is not None and out.error.close_code == CloseCode.INVALID_DATA


@pytest.mark.parametrize(
    ("violation", "code"),
    [
        (bytes([0x82, 0x03]) + b"bad", CloseCode.PROTOCOL_ERROR),  # unmasked
        (encode_frame(Opcode.TEXT, b"\xff", mask=True), CloseCode.INVALID_DATA),
    ],
    ids=["unmasked", "invalid-utf8"],
)
def test_frames_before_a_violation_in_the_same_read_are_delivered(
    violation: bytes, code: int
) -> None:
    codec = BinaryCodec("binary")
    ping = encode_frame(Opcode.PING, b"p", mask=True)
    first = encode_frame(Opcode.BINARY, b"first", mask=True)
    out = codec.decode(memoryview(first + ping + violation + first))
    assert out.to_target == [b"first"]
    assert out.to_client == [encode_frame(Opcode.PONG, b"p")]
    assert out.error is not None and out.error.close_code == code
    assert out.close is None


def test_hixie_frames_before_a_bad_frame_type_are_delivered() -> None:
    codec = HixieCodec("hixie76", None)
    out = codec.decode(memoryview(b"\x00" + base64.b64encode(b"kept") + b"\xff\x80junk"))
    assert out.to_target == [b"kept"]
    assert out.error is not None and out.error.close_code == CloseCode.PROTOCOL_ERROR


def test_base64_carry_does_not_leak_into_the_next_message() -> None:
    codec = Base64Codec("base64")
    out = codec.decode(
        frames(
            (Opcode.TEXT, b"QUJ", False),
            (Opcode.CONTINUATION, b"D", False),
            (Opcode.CONTINUATION, b"", True),
            (Opcode.TEXT, b"QQ==", True),
        )
    )
    assert out.to_target == [b"ABC", b"A"]


def test_binary_codec_answers_ping_and_reports_close() -> None:
    out = BinaryCodec("binary").decode(
        frames(
            (Opcode.BINARY, b"x", True),
            (Opcode.PING, b"p", True),
            (Opcode.CLOSE, b"\x03\xe8", True),
        )
    )
    assert out.to_target == [b"x"]
    assert out.to_client == [encode_frame(Opcode.PONG, b"p")]
    assert out.close == (1000, "")


def test_encoders_frame_target_bytes() -> None:
    data = memoryview(b"\x00\xffdata")
    assert BinaryCodec(None).encode(data) == encode_frame(Opcode.BINARY, bytes(data))
    text = base64.b64encode(bytes(data))
    assert Base64Codec("base64").encode(data) == encode_frame(Opcode.TEXT, text)
    assert HixieCodec("hixie76", None).encode(data) == hixie_frame(bytes(data))
