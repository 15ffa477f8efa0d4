"""The legacy Hixie-75/76 protocol, sans-I/O: handshake answers and ``\\x00 ... \\xff`` framing.

Old browsers and some embedded clients still speak it. Every payload is base64 text both ways (the
protocol carries only UTF-8 text). Frames are streamed as the RFC 6455 ones are: the base64 of a
frame is decoded in whole 4-character groups as it arrives, so a session holds at most three
characters of an unterminated frame, however long it is.
"""

from __future__ import annotations

import binascii
import hashlib
import struct
from dataclasses import dataclass
from http import HTTPStatus

from wsproxy.errors import HandshakeError, ProtocolError
from wsproxy.protocol.handshake import Request, check_get, origin_of
from wsproxy.protocol.message import MessageCheck
from wsproxy.protocol.payload import Base64Decoder

__all__ = [
    "CLOSE_FRAME",
    "KEY3_BYTES",
    "MAX_KEY_DIGITS",
    "HixieClose",
    "HixieParser",
    "challenge_answer",
    "encode_frame",
    "hixie75_response",
    "hixie76_response",
]

KEY3_BYTES = 8  # Hixie-76 sends 8 random bytes after the request head
MAX_KEY_DIGITS = 10  # the digits of a key spell number x spaces <= 4294967295 (draft-76 4.1)
CLOSE_FRAME = b"\xff\x00"


@dataclass(frozen=True, slots=True)
class HixieClose:
    """The client sent the closing ``\\xff\\x00``."""


def _key_number(key: str) -> int:
    # ASCII digits only: str.isdigit() also takes "²" (latin-1 0xb2), which int() refuses.
    digits = "".join(c for c in key if c in "0123456789")
    spaces = key.count(" ")
    if not digits or len(digits) > MAX_KEY_DIGITS or spaces == 0:
        raise HandshakeError(HTTPStatus.BAD_REQUEST, "malformed Sec-WebSocket-Key1/Key2")
    number = int(digits)
    if number % spaces or number // spaces > 0xFFFFFFFF:
        raise HandshakeError(HTTPStatus.BAD_REQUEST, "malformed Sec-WebSocket-Key1/Key2")
    return number // spaces


def challenge_answer(key1: str, key2: str, key3: bytes) -> bytes:
    """The 16-byte MD5 answer of draft-hixie-thewebsocketprotocol-76, section 5.2."""
    if len(key3) != KEY3_BYTES:
        raise HandshakeError(HTTPStatus.BAD_REQUEST, "Hixie-76 key3 must be 8 bytes")
    challenge = struct.pack("!II", _key_number(key1), _key_number(key2)) + key3
    return hashlib.md5(challenge).digest()


def _common(request: Request, secure: bool) -> tuple[str, str, str | None]:
    check_get(request)
    host = request.header("Host")
    if host is None:
        raise HandshakeError(HTTPStatus.BAD_REQUEST, "missing Host header")
    location = f"{'wss' if secure else 'ws'}://{host}{request.target}"
    origin = origin_of(request)
    offered = request.tokens("Sec-WebSocket-Protocol") or request.tokens("WebSocket-Protocol")
    protocol = "base64" if "base64" in offered else None
    return location, origin or "null", protocol


def hixie76_response(request: Request, key3: bytes, *, secure: bool) -> tuple[bytes, str | None]:
    """The ``101`` answer (head plus the 16-byte challenge answer) and the echoed subprotocol."""
    location, origin, protocol = _common(request, secure)
    answer = challenge_answer(
        request.header("Sec-WebSocket-Key1") or "", request.header("Sec-WebSocket-Key2") or "", key3
    )
    lines = [
        "HTTP/1.1 101 WebSocket Protocol Handshake",
        "Upgrade: WebSocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Origin: {origin}",
        f"Sec-WebSocket-Location: {location}",
    ]
    if protocol:
        lines.append(f"Sec-WebSocket-Protocol: {protocol}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + answer, protocol


def hixie75_response(request: Request, *, secure: bool) -> tuple[bytes, str | None]:
    """The ``101`` answer of draft-hixie-thewebsocketprotocol-75."""
    location, origin, protocol = _common(request, secure)
    lines = [
        "HTTP/1.1 101 Web Socket Protocol Handshake",
        "Upgrade: WebSocket",
        "Connection: Upgrade",
        f"WebSocket-Origin: {origin}",
        f"WebSocket-Location: {location}",
    ]
    if protocol:
        lines.append(f"WebSocket-Protocol: {protocol}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"), protocol


def encode_frame(data: bytes | bytearray | memoryview) -> bytes:
    """One text frame carrying ``data`` as base64."""
    return b"\x00" + binascii.b2a_base64(data, newline=False) + b"\xff"


class HixieParser:
    """Incremental parser of a Hixie client's frames.

    :meth:`feed` returns the decoded payload as it arrives (pieces of frames, in order; never
    empty) and :class:`HixieClose`. Raises :class:`ProtocolError` for bytes outside a frame, bad
    base64 (1007) or a frame whose base64 text passes ``max_message`` bytes (1009; 0: no limit).
    """

    def __init__(self, *, max_message: int = 0) -> None:
        self._message = MessageCheck(max_message)
        self._base64 = Base64Decoder()
        self._in_frame = False
        self._closing = False  # saw the 0xff that starts the closing frame
        self.closed = False

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes | HixieClose]:
        events: list[bytes | HixieClose] = []
        self.feed_into(data, events)
        return events

    def feed_into(
        self, data: bytes | bytearray | memoryview, events: list[bytes | HixieClose]
    ) -> None:
        """:meth:`feed`, appending to ``events``, which keep what came before a ProtocolError."""
        if self.closed:
            return
        buf = bytes(data)  # searched for the end marker; ``data`` may be a reused buffer
        view = memoryview(buf)
        pos = 0
        end = len(buf)
        while pos < end:
            if not self._in_frame:
                kind = buf[pos]
                pos += 1
                if self._closing:
                    if kind != 0x00:
                        raise ProtocolError("unsupported Hixie frame type 0xff")
                    self.closed = True
                    events.append(HixieClose())
                    break
                if kind == 0xFF:
                    self._closing = True
                elif kind == 0x00:
                    self._in_frame = True
                    self._message.begin(False)
                else:
                    raise ProtocolError(f"unsupported Hixie frame type {kind:#x}")
                continue
            stop = buf.find(b"\xff", pos)
            fin = stop >= 0
            if not fin:
                stop = end
            self._message.count(stop - pos)
            payload = self._base64.decode(view[pos:stop], fin)
            if payload:
                events.append(payload)
            pos = stop + 1 if fin else end
            self._in_frame = not fin
