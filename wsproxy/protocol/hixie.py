"""The legacy Hixie-75/76 protocol, sans-I/O: handshake answers and ``\\x00 ... \\xff`` framing.

Old browsers and some embedded clients still speak it. Every payload is base64 text both ways (the
protocol carries only UTF-8 text). A frame split across any number of reads is buffered until its
``\\xff`` arrives, up to ``max_frame`` bytes.
"""

from __future__ import annotations

import binascii
import hashlib
import struct
from dataclasses import dataclass
from http import HTTPStatus

from wsproxy.errors import CloseCode, HandshakeError, ProtocolError
from wsproxy.protocol.handshake import Request, check_get, origin_of

__all__ = [
    "CLOSE_FRAME",
    "KEY3_BYTES",
    "MAX_FRAME",
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
MAX_FRAME = 4 * 1024 * 1024  # buffered base64 text of one frame (security limit)
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
    """Incremental parser of a Hixie client's frames; :meth:`feed` returns decoded payloads.

    Raises :class:`ProtocolError` for bytes outside a frame, bad base64 (1007) or a frame over
    ``max_frame`` (1009).
    """

    def __init__(self, *, max_frame: int = MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()
        self._scanned = 0  # bytes of _buf already searched for the end marker
        self.closed = False

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes | HixieClose]:
        events: list[bytes | HixieClose] = []
        if self.closed:
            return events
        buf = self._buf
        buf += data
        while buf:
            kind = buf[0]
            if kind == 0xFF:
                if len(buf) < 2:
                    break
                if buf[1] != 0x00:
                    raise ProtocolError("unsupported Hixie frame type 0xff")
                self.closed = True
                events.append(HixieClose())
                buf.clear()
                break
            if kind != 0x00:
                raise ProtocolError(f"unsupported Hixie frame type {kind:#x}")
            end = buf.find(b"\xff", max(1, self._scanned))
            if end < 0:
                self._scanned = len(buf)
                if len(buf) - 1 > self.max_frame:
                    raise ProtocolError(
                        f"Hixie frame over {self.max_frame} bytes", CloseCode.MESSAGE_TOO_BIG
                    )
                break
            try:
                events.append(binascii.a2b_base64(buf[1:end], strict_mode=True))
            except (binascii.Error, ValueError):
                raise ProtocolError("invalid base64 payload", CloseCode.INVALID_DATA) from None
            del buf[: end + 1]
            self._scanned = 0
        return events
