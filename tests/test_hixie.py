"""Unit tests of the legacy Hixie-75/76 handshake and framing (no sockets)."""

from __future__ import annotations

import base64
import os

import pytest

from wsproxy.errors import CloseCode, HandshakeError, ProtocolError
from wsproxy.protocol.handshake import parse_request
from wsproxy.protocol.hixie import (
    CLOSE_FRAME,
    HixieClose,
    HixieParser,
    challenge_answer,
    encode_frame,
    hixie75_response,
    hixie76_response,
)

# draft-hixie-thewebsocketprotocol-76, section 1.3: the handshake example.
DRAFT76_REQUEST = (
    b"GET /demo HTTP/1.1\r\n"
    b"Host: example.com\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key2: 12998 5 Y3 1  .P00\r\n"
    b"Sec-WebSocket-Protocol: sample\r\n"
    b"Upgrade: WebSocket\r\n"
    b"Sec-WebSocket-Key1: 4 @1  46546xW%0l 1 5\r\n"
    b"Origin: http://example.com\r\n"
    b"\r\n"
    b"^n:ds[4U"
)


def test_draft76_example_challenge_answer() -> None:
    request, used = parse_request(DRAFT76_REQUEST)
    key3 = DRAFT76_REQUEST[used:]
    assert key3 == b"^n:ds[4U"
    answer = challenge_answer(
        request.header("Sec-WebSocket-Key1"), request.header("Sec-WebSocket-Key2"), key3
    )
    assert answer == b"8jKS'y:G*Co,Wxa-"


def test_draft76_response_carries_origin_location_and_answer() -> None:
    request, used = parse_request(DRAFT76_REQUEST)
    response, protocol = hixie76_response(request, DRAFT76_REQUEST[used:], secure=False)
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 WebSocket Protocol Handshake\r\n")
    assert b"\r\nSec-WebSocket-Origin: http://example.com" in head
    assert b"\r\nSec-WebSocket-Location: ws://example.com/demo" in head
    assert body == b"8jKS'y:G*Co,Wxa-"
    assert protocol is None  # "sample" is not a protocol we speak


def test_hixie75_response_uses_wss_location_when_secure() -> None:
    request, _ = parse_request(
        b"GET /x HTTP/1.1\r\nHost: h:1\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n"
        b"Origin: http://o\r\nWebSocket-Protocol: base64\r\n\r\n"
    )
    response, protocol = hixie75_response(request, secure=True)
    assert response.startswith(b"HTTP/1.1 101 Web Socket Protocol Handshake\r\n")
    assert b"WebSocket-Location: wss://h:1/x\r\n" in response
    assert b"WebSocket-Protocol: base64\r\n" in response
    assert protocol == "base64"


@pytest.mark.parametrize(
    ("key1", "key2"),
    [
        ("no digits here", "1 2"),
        ("12345", "1 2"),
        ("1 2 3", "1 2"),
        ("99999999999 ", "1 2"),
        ("1" * 5000 + " ", "1 2"),  # past int()'s digit limit: must not reach int()
        ("0000000000012 ", "1 2"),  # 13 digits, small value: still over the 10-digit bound
    ],
)
def test_malformed_keys_are_400(key1: str, key2: str) -> None:
    with pytest.raises(HandshakeError) as exc_info:
        challenge_answer(key1, key2, b"12345678")
    assert exc_info.value.status == 400


@pytest.mark.parametrize("odd", ["\xb2", "\u0663", "\uff11"])
def test_only_ascii_digits_count_in_a_key(odd: str) -> None:
    # latin-1 "²", an Arabic-Indic three, a full-width one: str.isdigit() takes them all, int()
    # refuses or misreads them. Like any other non-digit they are ignored.
    plain = challenge_answer("1 4 ", "1 2", b"12345678")
    assert challenge_answer(f"1{odd} 4 ", f"1 {odd}2", b"12345678") == plain


def test_frames_round_trip_as_base64() -> None:
    data = os.urandom(1000)
    frame = encode_frame(data)
    assert frame[0] == 0 and frame[-1] == 0xFF
    assert base64.b64decode(frame[1:-1]) == data
    assert HixieParser().feed(frame) == [data]


def test_frame_fed_one_byte_at_a_time_streams_out_in_groups_of_three_bytes() -> None:
    data = os.urandom(200)
    parser = HixieParser()
    events = []
    for byte in encode_frame(data) + encode_frame(b"second"):
        events += parser.feed(bytes([byte]))
    assert b"".join(events) == data + b"second"
    # Each whole 4-character group is decoded as soon as it is in: nothing waits for the 0xff.
    assert {len(e) for e in events} <= {1, 2, 3}


def test_several_frames_and_close_in_one_read() -> None:
    parser = HixieParser()
    events = parser.feed(encode_frame(b"a") + encode_frame(b"") + encode_frame(b"b") + CLOSE_FRAME)
    assert events == [b"a", b"b", HixieClose()]  # an empty frame gives no event
    assert parser.closed
    assert parser.feed(b"junk") == []


def test_invalid_base64_is_1007() -> None:
    with pytest.raises(ProtocolError) as exc_info:
        HixieParser().feed(b"\x00not base64!\xff")
    assert exc_info.value.close_code == CloseCode.INVALID_DATA


def test_bytes_outside_a_frame_are_a_violation() -> None:
    with pytest.raises(ProtocolError):
        HixieParser().feed(b"xyz")


def test_frame_over_the_message_limit_is_1009() -> None:
    parser = HixieParser(max_message=100)
    assert len(b"".join(parser.feed(b"\x00" + b"A" * 100))) == 75
    with pytest.raises(ProtocolError) as exc_info:
        parser.feed(b"AAAA")
    assert exc_info.value.close_code == CloseCode.MESSAGE_TOO_BIG


def test_the_limit_counts_each_frame_on_its_own() -> None:
    parser = HixieParser(max_message=8)
    events = parser.feed(encode_frame(b"123456") * 3)
    assert events == [b"123456"] * 3


def test_an_unterminated_frame_is_relayed_as_it_arrives_and_held_in_three_bytes() -> None:
    parser = HixieParser()
    text = base64.b64encode(os.urandom(3000))
    assert parser.feed(b"\x00" + text[:1001]) == [base64.b64decode(text[:1000])]
    assert parser.feed(text[1001:]) == [base64.b64decode(text[1000:])]
    assert parser.feed(b"\xff") == []


def test_padding_before_the_end_of_a_frame_is_1007() -> None:
    parser = HixieParser()
    parser.feed(b"\x00QQ==")
    with pytest.raises(ProtocolError) as exc_info:
        parser.feed(b"QUFB\xff")
    assert exc_info.value.close_code == CloseCode.INVALID_DATA
