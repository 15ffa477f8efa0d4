"""Property tests (hypothesis) of the sans-I/O parsers a client's bytes reach first: RFC 6455
framing, Hixie framing and the request head. For each: encoding then decoding is the identity,
the same bytes split anywhere give the same result, and arbitrary bytes give only events or the
module's own error, holding no more than a small constant. Profiles: tests/conftest.py."""

from __future__ import annotations

import base64
import itertools
import string
import tracemalloc
from collections.abc import Callable

from hypothesis import example, given
from hypothesis import strategies as st

from wsproxy.errors import HandshakeError, ProtocolError
from wsproxy.protocol import hixie
from wsproxy.protocol.handshake import MAX_HEAD_BYTES, Request, parse_request
from wsproxy.protocol.payload import Base64Decoder
from wsproxy.protocol.rfc6455 import (
    Close,
    Data,
    FrameParser,
    Opcode,
    Ping,
    encode_close,
    encode_frame,
)

RETAINED = 4096  # bytes a parser may keep between reads, whatever it was fed


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


def retained(make: Callable[[], object], feed: Callable[[object, bytes], object], chunks) -> int:
    """Bytes still allocated by a parser after it was fed ``chunks`` and its output dropped."""
    tracemalloc.start()
    try:
        parser = make()
        base = tracemalloc.get_traced_memory()[0]
        for chunk in chunks:
            try:
                feed(parser, chunk)
            except (ProtocolError, HandshakeError):
                break
        return tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()


# --- RFC 6455 ------------------------------------------------------------------------------------

text_or_binary = st.one_of(
    st.text(max_size=300).map(lambda t: (True, t.encode("utf-8"))),
    st.binary(max_size=300).map(lambda b: (False, b)),
)
# A message: its type, its payload, where it is cut into fragments, and pings between them.
messages = st.lists(
    st.tuples(text_or_binary, st.lists(st.integers(0, 300), max_size=4), st.booleans()),
    max_size=6,
)


def wire_of(msgs, close: bool) -> bytes:
    out = b""
    for (text, payload), cuts, ping in msgs:
        pieces = split(payload, cuts)
        for i, piece in enumerate(pieces):
            opcode = (Opcode.TEXT if text else Opcode.BINARY) if i == 0 else Opcode.CONTINUATION
            out += encode_frame(opcode, piece, fin=i == len(pieces) - 1, mask=True)
            if ping:
                out += encode_frame(Opcode.PING, b"p%d" % i, mask=True)
    if close:
        out += encode_frame(Opcode.CLOSE, encode_close(1000, "bye"), mask=True)
    return out


def normalized(events: list) -> list:
    """Data pieces joined into their messages (how pieces fall depends on the reads)."""
    out: list = []
    data = b""
    for event in events:
        if isinstance(event, Data):
            data += event.payload
            if event.fin:
                out.append(Data(data, event.text, True))
                data = b""
        else:
            out.append(event)
    if data:
        out.append(("partial", data))
    return out


def parse_chunks(chunks: list[bytes], max_message: int = 0) -> tuple[list, int | None]:
    parser = FrameParser(max_message=max_message)
    events: list = []
    try:
        for chunk in chunks:
            events += parser.feed(chunk)
        parser.eof()
    except ProtocolError as exc:
        return [], exc.close_code
    return normalized(events), None


@given(messages, st.booleans())
def test_rfc6455_encode_then_parse_is_the_identity(msgs, close: bool) -> None:
    events, error = parse_chunks([wire_of(msgs, close)])
    assert error is None
    data = [e for e in events if isinstance(e, Data)]
    assert data == [Data(payload, text, True) for (text, payload), _, _ in msgs]
    assert all(isinstance(e, Ping) for e in events if not isinstance(e, Data | Close))
    assert (events[-1:] == [Close(1000, "bye")]) == close


@given(messages, st.lists(st.integers(0, 1 << 16), max_size=12))
def test_rfc6455_split_anywhere_gives_the_same_events(msgs, cuts: list[int]) -> None:
    wire = wire_of(msgs, True)
    assert parse_chunks(split(wire, cuts)) == parse_chunks([wire])


@given(
    st.binary(max_size=2000),
    st.lists(st.integers(0, 1 << 16), max_size=8),
    st.sampled_from([0, 10, 1000]),
)
def test_rfc6455_arbitrary_bytes_give_events_or_a_protocol_error(
    data: bytes, cuts: list[int], max_message: int
) -> None:
    # The same outcome (events, or the error's close code) however the bytes are split.
    whole = parse_chunks([data], max_message)
    assert parse_chunks(split(data, cuts), max_message) == whole
    assert whole[1] in (None, 1002, 1007, 1009)


def exact_events(chunks: list[bytes], max_message: int, fast: bool) -> tuple[list, int | None]:
    """Every event as the parser gives it (pieces not joined), and the close code it failed
    with; ``fast=False`` turns off the parser's path for whole small binary frames."""
    parser = FrameParser(max_message=max_message)
    parser._plain = fast
    events: list = []
    try:
        for chunk in chunks:
            parser.feed_into(chunk, events)
        parser.eof()
    except ProtocolError as exc:
        return events, exc.close_code
    return events, None


# Frames as a relay gets them: mostly small binary ones, some of every other kind and size, and
# bytes that are not a frame at all.
small_frames = st.lists(
    st.one_of(
        st.binary(max_size=130).map(lambda b: encode_frame(Opcode.BINARY, b, mask=True)),
        st.binary(max_size=130).map(lambda b: encode_frame(Opcode.BINARY, b)),  # unmasked
        st.binary(max_size=20).map(lambda b: encode_frame(Opcode.BINARY, b, fin=False, mask=True)),
        st.binary(max_size=20).map(lambda b: encode_frame(Opcode.CONTINUATION, b, mask=True)),
        st.text(max_size=20).map(lambda t: encode_frame(Opcode.TEXT, t.encode(), mask=True)),
        st.binary(max_size=20).map(lambda b: encode_frame(Opcode.PING, b, mask=True)),
        st.binary(max_size=8),
    ),
    max_size=12,
)


_B = encode_frame(Opcode.BINARY, b"0123456789abcdef", mask=True)  # 16 bytes of payload
_START = encode_frame(Opcode.BINARY, b"xy", fin=False, mask=True)  # a fragmented message begins


@given(small_frames, st.lists(st.integers(0, 1 << 12), max_size=8), st.sampled_from([0, 10, 1000]))
@example([_B, _B], [], 10)  # past max_message: 1009 at the first, none relayed
@example([_B, _B], [], 16)  # exactly max_message: relayed
@example([_START, _B], [len(_START)], 0)  # a new message inside a fragmented one (1002)
@example([_START, _B], [], 0)
@example([encode_frame(Opcode.BINARY, b"x" * 125, mask=True)], [], 0)  # the largest small one
@example([encode_frame(Opcode.BINARY, b"x" * 126, mask=True)], [], 0)  # a 16-bit length
@example([encode_frame(Opcode.BINARY, b"ab")], [], 0)  # unmasked (1002)
@example([b"\xc2\x82abcdxy"], [], 0)  # RSV1 without an extension (1002)
@example([_B, encode_frame(Opcode.CLOSE, b"", mask=True), _B], [], 0)  # nothing after a close
def test_rfc6455_small_binary_frames_path_gives_the_general_loops_events(
    frames: list[bytes], cuts: list[int], max_message: int
) -> None:
    """The parser's shortcut for whole small binary frames: event for event and error for
    error what the general loop gives, however the input is split."""
    chunks = split(b"".join(frames), cuts)
    assert exact_events(chunks, max_message, True) == exact_events(chunks, max_message, False)


@given(st.binary(max_size=300), st.integers(0, 200_000), st.booleans())
def test_rfc6455_parser_holds_a_small_constant(head: bytes, size: int, text: bool) -> None:
    # A long frame after arbitrary bytes: streamed, so nothing grows with its size.
    frame = encode_frame(Opcode.TEXT if text else Opcode.BINARY, b"a" * size, mask=True)
    chunks = split(head + frame, list(range(0, len(head) + len(frame), 4096)))
    assert retained(FrameParser, lambda p, c: p.feed(c), chunks) < RETAINED


@given(st.binary(max_size=500), st.lists(st.integers(0, 1000), max_size=6))
def test_base64_pieces_anywhere_decode_to_the_data(data: bytes, cuts: list[int]) -> None:
    text = base64.b64encode(data)
    pieces = split(text, cuts)
    decoder = Base64Decoder()
    out = b"".join(decoder.decode(p, i == len(pieces) - 1) for i, p in enumerate(pieces))
    assert out == data


# --- Hixie ---------------------------------------------------------------------------------------


def hixie_chunks(chunks: list[bytes], max_message: int = 0) -> tuple[bytes, bool, int | None]:
    """Payload joined (Hixie pieces fall where the reads do), whether it closed, the error."""
    parser = hixie.HixieParser(max_message=max_message)
    payload, closed = b"", False
    try:
        for chunk in chunks:
            for event in parser.feed(chunk):
                assert event  # never an empty piece
                if isinstance(event, hixie.HixieClose):
                    closed = True
                else:
                    payload += event
    except ProtocolError as exc:
        return b"", False, exc.close_code
    return payload, closed, None


@given(st.lists(st.binary(max_size=300), max_size=8), st.lists(st.integers(0, 1 << 14)))
def test_hixie_encode_then_parse_is_the_identity_split_anywhere(
    payloads: list[bytes], cuts: list[int]
) -> None:
    wire = b"".join(hixie.encode_frame(p) for p in payloads) + hixie.CLOSE_FRAME
    expected = (b"".join(payloads), True, None)
    assert hixie_chunks([wire]) == expected
    assert hixie_chunks(split(wire, cuts)) == expected


@given(
    st.binary(max_size=2000),
    st.lists(st.integers(0, 1 << 14), max_size=8),
    st.sampled_from([0, 8, 1000]),
)
def test_hixie_arbitrary_bytes_give_payload_or_a_protocol_error(
    data: bytes, cuts: list[int], max_message: int
) -> None:
    whole = hixie_chunks([data], max_message)
    assert hixie_chunks(split(data, cuts), max_message) == whole
    assert whole[2] in (None, 1002, 1007, 1009)


@given(st.binary(max_size=300), st.integers(0, 200_000))
def test_hixie_unterminated_frame_holds_a_small_constant(head: bytes, size: int) -> None:
    wire = head + b"\x00" + base64.b64encode(b"h" * size)
    chunks = split(wire, list(range(0, len(wire), 4096)))
    assert retained(hixie.HixieParser, lambda p, c: p.feed(c), chunks) < RETAINED


# --- the request head ----------------------------------------------------------------------------

TARGET_CHARS = st.characters(min_codepoint=0x21, max_codepoint=0xFF, exclude_characters="\x7f")
NAME_CHARS = st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=":")
VALUE_CHARS = st.characters(
    min_codepoint=0x09, max_codepoint=0xFF, exclude_characters="\n\x0b\x0c\r\x7f"
).filter(lambda c: c == "\t" or ord(c) >= 0x20)
requests = st.builds(
    Request,
    method=st.text(string.ascii_letters, min_size=1, max_size=8),
    target=st.text(TARGET_CHARS, min_size=1, max_size=60),
    version=st.sampled_from(["HTTP/1.0", "HTTP/1.1"]),
    headers=st.lists(
        st.tuples(
            st.text(NAME_CHARS, min_size=1, max_size=20),
            st.text(VALUE_CHARS, max_size=60).filter(lambda v: v == v.strip()),
        ),
        max_size=10,
    ).map(tuple),
)


def head_of(request: Request) -> bytes:
    lines = [f"{request.method} {request.target} {request.version}"]
    lines += [f"{name}: {value}" for name, value in request.headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def read_head(chunks: list[bytes]) -> object:
    """What the session's read loop gets: parse after every read until an answer or an error."""
    buf = b""
    try:
        for chunk in chunks:
            buf += chunk
            if (result := parse_request(buf)) is not None:
                return result
    except HandshakeError as exc:
        return exc.status
    return None


@given(requests, st.binary(max_size=20), st.lists(st.integers(0, 1 << 12), max_size=8))
def test_request_head_encode_then_parse_is_the_identity_split_anywhere(
    request: Request, body: bytes, cuts: list[int]
) -> None:
    head = head_of(request)
    assert parse_request(head + body) == (request, len(head))
    assert read_head(split(head + body, cuts)) == (request, len(head))


@given(st.binary(max_size=3000), st.lists(st.integers(0, 1 << 12), max_size=8))
def test_request_head_arbitrary_bytes_give_a_request_none_or_a_handshake_error(
    data: bytes, cuts: list[int]
) -> None:
    whole = read_head([data])
    assert read_head(split(data, cuts)) == whole
    assert whole is None or isinstance(whole, tuple) or whole in (400, 431)


@given(st.binary(max_size=200).filter(lambda b: b"\r\n\r\n" not in b), st.integers(1, 5000))
def test_a_request_head_without_its_end_is_refused_past_the_limit(head: bytes, pad: int) -> None:
    # The read loop's buffer stays bounded: past MAX_HEAD_BYTES a head that has not ended is 431,
    # or 400 sooner when its start can never be a valid request line (refused as soon as seen).
    data = head + b"x" * (MAX_HEAD_BYTES + pad)
    assert read_head([data]) in (400, 431)
    assert read_head([b"GET / HTTP/1.1\r\nX: " + data]) == 431
