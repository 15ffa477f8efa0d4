"""permessage-deflate (RFC 7692), sans-I/O: the negotiation and the two zlib streams.

:func:`negotiate` answers a client's ``Sec-WebSocket-Extensions`` offers: the first acceptable
``permessage-deflate`` offer wins, an offer that breaks section 7's rules is declined (the next one
is tried), and none acceptable means no extension (a plain session, as the RFC lets a server do).

Memory is the point of every choice here. Our window is the smallest of what the client allows
and ``deflate_max_window_bits``, and we say so even unasked (section 7.1.2.1). The client's window
is capped the same way when its offer lets us (``client_max_window_bits``). An offer without it
(Firefox's) is still accepted, as section 7.1.2.2 allows: the client may use 15 bits, so we inflate
with 15. zlib's compressor state is 8 windows (``memLevel`` follows the window), the inflater's
one window, which zlib allocates on the first compressed message, not before.

:class:`Inflater` never holds a whole message: each :meth:`Inflater.pull` returns at most the
bytes asked for, keeping the rest of its input, and counts the message's inflated size against
``max_message_size`` as it goes (a 1000:1 bomb stops at the limit, not at its end).
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from http import HTTPStatus

from wsproxy.errors import CloseCode, HandshakeError, ProtocolError
from wsproxy.protocol.rfc6455 import Compressed, Data, FrameParser, Opcode

__all__ = [
    "EXTENSION",
    "Agreement",
    "DeflateFrameParser",
    "Deflater",
    "Inflater",
    "negotiate",
    "parse_extensions",
]

EXTENSION = "permessage-deflate"
TRAILER = b"\x00\x00\xff\xff"  # the empty stored block a sync flush ends with (section 7.2.1)
LEVEL = 6  # zlib's default: most of level 9's ratio at a third of its cost
MIN_COMPRESS_BITS = 9  # zlib cannot compress raw deflate with a 256-byte window (windowBits 8)

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_PARAM = re.compile(rf"\s*({_TOKEN})\s*(?:=\s*({_TOKEN}|\"(?:[^\"\\]|\\.)*\"))?\s*")
_WINDOW_VALUE = re.compile(r"[89]|1[0-5]")  # section 7.1.2: 8 to 15, no leading zero

Params = list[tuple[str, str | None]]


def parse_extensions(header: str) -> list[tuple[str, Params]]:
    """The offers of a ``Sec-WebSocket-Extensions`` value (RFC 6455 section 9.1), in order.

    Parameter names are lower-cased, quoted values unquoted.

    Raises:
        HandshakeError: 400 when the header does not follow the grammar.
    """
    offers: list[tuple[str, Params]] = []
    pos, end = 0, len(header)
    while pos < end:
        element, pos = _parse_element(header, pos)
        if element is not None:
            offers.append(element)
    return offers


def _parse_element(header: str, pos: int) -> tuple[tuple[str, Params] | None, int]:
    """One comma-separated element from ``pos``; returns it (None if empty) and where the next
    one starts."""
    params: Params = []
    name: str | None = None
    while True:
        m = _PARAM.match(header, pos)
        if m is None or m.end() == pos:
            if name is None and header[pos:].lstrip().startswith(","):  # an empty list element
                return None, header.index(",", pos) + 1
            raise _malformed()
        key, value = m.group(1), m.group(2)
        pos = m.end()
        if name is None:
            if value is not None:
                raise _malformed()
            name = key.lower()
        else:
            if value is not None and value.startswith('"'):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
                if not re.fullmatch(_TOKEN, value):  # section 9.1: a quoted value is a token
                    raise _malformed()
            params.append((key.lower(), value))
        if pos >= len(header):
            return (name, params), pos
        if header[pos] == ",":
            return (name, params), pos + 1
        if header[pos] != ";":
            raise _malformed()
        pos += 1


def _malformed() -> HandshakeError:
    return HandshakeError(HTTPStatus.BAD_REQUEST, "malformed Sec-WebSocket-Extensions header")


@dataclass(frozen=True, slots=True)
class Agreement:
    """What a session compresses with, and the response header's value that says so.

    ``server_bits`` is our compressor's window, ``client_bits`` the client's: 15 when its offer
    did not let us cap it. We inflate with at least 9 bits: a larger window reads any stream, and
    zlib clients asked for 8 still use 9.
    """

    server_no_context_takeover: bool
    client_no_context_takeover: bool
    server_bits: int
    client_bits: int
    response: str


def negotiate(header: str | None, max_window_bits: int = 15) -> Agreement | None:
    """Accept the first acceptable ``permessage-deflate`` offer in ``header``, or None.

    Raises:
        HandshakeError: 400 when the header is malformed (see :func:`parse_extensions`).
    """
    if not header:
        return None
    for name, params in parse_extensions(header):
        if name == EXTENSION:
            agreement = _accept(params, max_window_bits)
            if agreement is not None:
                return agreement
    return None


def _accept(params: Params, cap: int) -> Agreement | None:
    """Section 7.1: the response to one offer, or None to decline it."""
    seen: dict[str, str | None] = {}
    for key, value in params:
        if key in seen:
            return None  # a parameter given twice
        seen[key] = value
    flags = ("server_no_context_takeover", "client_no_context_takeover")
    for key, value in seen.items():
        if key in flags:
            if value is not None:
                return None
        elif key == "server_max_window_bits":
            if value is None or not _WINDOW_VALUE.fullmatch(value):
                return None
        elif key == "client_max_window_bits":
            if value is not None and not _WINDOW_VALUE.fullmatch(value):
                return None
        else:
            return None  # a parameter RFC 7692 does not define for an offer
    answer = [EXTENSION]
    server_nct = "server_no_context_takeover" in seen
    client_nct = "client_no_context_takeover" in seen
    if server_nct:
        answer.append("server_no_context_takeover")
    if client_nct:
        answer.append("client_no_context_takeover")  # a hint we accept: it costs us nothing
    offered_server = seen.get("server_max_window_bits")
    server_bits = min(int(offered_server or 15), cap)
    if server_bits < MIN_COMPRESS_BITS:
        return None  # we cannot honour 8, and may not answer more than asked
    if offered_server is not None or server_bits < 15:
        answer.append(f"server_max_window_bits={server_bits}")
    if "client_max_window_bits" in seen:
        client_bits = min(int(seen["client_max_window_bits"] or 15), cap)
        answer.append(f"client_max_window_bits={client_bits}")
    else:
        # Section 7.1.2.2: we may not answer it unasked, and the client may use 15 bits.
        client_bits = 15
    return Agreement(server_nct, client_nct, server_bits, client_bits, "; ".join(answer))


class DeflateFrameParser(FrameParser):
    """The frame parser of a session that agreed to permessage-deflate (section 6.1).

    RSV1 on the first frame of a data message marks it compressed: its pieces come as
    :class:`~wsproxy.protocol.rfc6455.Compressed`. RSV1 on a control or continuation frame, and
    RSV2 or RSV3 anywhere, are still protocol errors (1002).
    """

    def _start_frame(self, b0: int, length: int, mask: bytes | None) -> None:
        rsv1 = b0 & 0x40
        opcode = b0 & 0x0F
        data = Opcode.CONTINUATION < opcode < Opcode.CLOSE  # the first frame of a message
        if rsv1 and not data:
            raise ProtocolError("RSV1 set on a control or continuation frame")
        super()._start_frame(b0 & ~0x40, length, mask)
        if data:
            self._data = Compressed if rsv1 else Data


class Deflater:
    """Compresses the messages we send, one whole message (at most one read) per call."""

    def __init__(self, window_bits: int, no_context_takeover: bool, level: int = LEVEL) -> None:
        self._bits = max(window_bits, MIN_COMPRESS_BITS)
        self._level = level
        self._reset = no_context_takeover
        self._z = self._new()

    def _new(self) -> zlib._Compress:
        # memLevel follows the window: the state is 2**(bits+2) + 2**(memLevel+9) = 8 windows.
        return zlib.compressobj(self._level, zlib.DEFLATED, -self._bits, self._bits - 7)

    def compress(self, data: bytes | bytearray | memoryview) -> bytes:
        """The compressed payload of one message: sync-flushed, the trailer taken off."""
        z = self._z
        out = z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH)
        if self._reset:
            self._z = self._new()
        return out[:-4] if out.endswith(TRAILER) else out


class Inflater:
    """Inflates the compressed messages a client sends, in pieces of bounded size.

    :meth:`push` one piece of a message's compressed payload (``fin`` on its last), then
    :meth:`pull` until :attr:`more` is false. Raises :class:`ProtocolError`: 1007 for data that
    is not deflate, 1009 once the message passes ``max_message_size`` inflated (0: no limit).
    """

    def __init__(self, window_bits: int, no_context_takeover: bool, max_message_size: int) -> None:
        self._bits = max(window_bits, MIN_COMPRESS_BITS)
        self._reset = no_context_takeover
        self.max_message_size = max_message_size
        self._z = zlib.decompressobj(-self._bits)
        self._input = b""
        self._fin = False
        self.more = False  # pushed input (or output zlib holds) not pulled yet
        self.size = 0  # inflated bytes of the current message so far

    def push(self, data: bytes, fin: bool) -> None:
        if self.more:
            raise RuntimeError("push before the previous input was pulled")
        self._input = data + TRAILER if fin else data
        self._fin = fin
        self.more = bool(self._input)

    def pull(self, limit: int) -> bytes:
        """At most ``limit`` inflated bytes (maybe none); the message ends when :attr:`more`
        turns false after the ``fin`` piece."""
        if not self.more:
            return b""
        z = self._z
        try:
            out = z.decompress(self._input, limit)
        except zlib.error as exc:
            raise ProtocolError(f"invalid compressed data: {exc}", CloseCode.INVALID_DATA) from None
        self._input = z.unconsumed_tail
        # A full output may leave output inside zlib even when all input is consumed.
        self.more = bool(self._input) or len(out) == limit
        if z.eof:
            # The client ended its stream with a final block: only our trailer may follow.
            if z.unused_data not in (b"", TRAILER) or self._input:
                raise ProtocolError("data after the final deflate block", CloseCode.INVALID_DATA)
            self.more = False
        self.size += len(out)
        if self.max_message_size and self.size > self.max_message_size:
            raise ProtocolError(
                f"message over {self.max_message_size} bytes inflated", CloseCode.MESSAGE_TOO_BIG
            )
        if not self.more and self._fin:
            self.size = 0
            if z.eof or self._reset:
                self._z = zlib.decompressobj(-self._bits)
        return out
