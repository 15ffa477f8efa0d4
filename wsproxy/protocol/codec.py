"""What the relay needs from a WebSocket protocol, sans-I/O.

A codec turns bytes from the client into bytes for the target (plus replies for the client and the
client's close), and bytes from the target into bytes for the client. The relay moves bytes and
never looks inside; each protocol and subprotocol is one small class here.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Protocol

from wsproxy.errors import CloseCode, ProtocolError
from wsproxy.protocol import hixie, payload, rfc6455
from wsproxy.protocol.deflate import Agreement, DeflateFrameParser, Deflater, Inflater
from wsproxy.protocol.message import MessageCheck
from wsproxy.protocol.rfc6455 import Opcode

__all__ = [
    "DECODE_BUDGET",
    "Base64Codec",
    "BinaryCodec",
    "Codec",
    "Decoded",
    "DeflateCodec",
    "HixieCodec",
    "make_codec",
]

DECODE_BUDGET = 256 * 1024  # inflated bytes one decode() call returns at most (deflate)


@dataclass(slots=True)
class Decoded:
    """The result of one read from the client.

    ``to_target``: payload bytes in order. ``to_client``: frames to send back (pongs).
    ``close``: the client's close code and reason, once it sent its close frame.
    ``more``: the codec holds more output for this input (a deflate session inflates at most
    :data:`DECODE_BUDGET` per call): call ``decode`` again, with nothing, before reading on.
    ``error``: the client broke the protocol after what the other fields hold (frames of the
    same read before the violation are valid: they are delivered, then the session closes
    with the error's code).
    """

    to_target: list[bytes]
    to_client: list[bytes]
    close: tuple[int, str] | None = None
    more: bool = False
    error: ProtocolError | None = None


class Codec(Protocol):
    protocol: str  # "rfc6455", "hixie76" or "hixie75"
    subprotocol: str | None
    # True when a frame for the client is just ``header(len(data)) + data``: the relay can then
    # write the header in front of the payload in its read buffer and send both without a copy.
    in_place: bool

    def header(self, length: int) -> bytes:
        """The frame header for ``length`` payload bytes (only when :attr:`in_place`)."""

    def decode(self, data: memoryview) -> Decoded:
        """Decode what the client sent; a violation is :attr:`Decoded.error` (never raised)."""

    def encode(self, data: memoryview) -> bytes:
        """Frame what the target sent, ready for the client."""

    def close_frame(self, code: int, reason: str = "") -> bytes:
        """The frame that closes the connection from our side."""

    def eof(self) -> None:
        """The client's stream ended; raises ProtocolError if that cut a message invalidly."""


class BinaryCodec:
    """RFC 6455 with the ``binary`` subprotocol or none: payload bytes as they are."""

    protocol = "rfc6455"
    opcode = Opcode.BINARY
    in_place = True

    def __init__(self, subprotocol: str | None, max_message: int = 0) -> None:
        self.subprotocol = subprotocol
        self._parser = rfc6455.FrameParser(max_message=max_message)

    def decode(self, data: memoryview) -> Decoded:
        out = Decoded([], [])
        events: list[rfc6455.Event] = []
        try:
            self._parser.feed_into(data, events)
        except ProtocolError as exc:
            out.error = exc  # after the events before it
        try:
            for event in events:
                if type(event) is rfc6455.Data:
                    # An empty last piece still ends the message (base64: flush and check).
                    if event.payload or event.fin:
                        payload = self._payload(event)
                        if payload:
                            out.to_target.append(payload)
                elif type(event) is rfc6455.Ping:
                    out.to_client.append(rfc6455.encode_frame(Opcode.PONG, event.payload))
                elif type(event) is rfc6455.Close:
                    out.close = (event.code, event.reason)
                # a Pong is ignored (section 5.5.3)
        except ProtocolError as exc:  # base64 that does not decode: the first violation
            out.error = exc
        return out

    def _payload(self, event: rfc6455.Data) -> bytes:
        return event.payload

    def eof(self) -> None:
        self._parser.eof()

    def header(self, length: int) -> bytes:
        return rfc6455.frame_header(self.opcode, length)

    def encode(self, data: memoryview) -> bytes:
        return rfc6455.frame_header(self.opcode, len(data)) + data

    def close_frame(self, code: int, reason: str = "") -> bytes:
        return _close_frame(code, reason)


def _close_frame(code: int, reason: str) -> bytes:
    """An RFC 6455 close frame (1005, "no status", is the empty body)."""
    body = rfc6455.encode_close(None if code == CloseCode.NO_STATUS else code, reason)
    return rfc6455.encode_frame(Opcode.CLOSE, body)


class Base64Codec(BinaryCodec):
    """RFC 6455 with the ``base64`` subprotocol: base64 text frames both ways."""

    opcode = Opcode.TEXT
    in_place = False

    def __init__(self, subprotocol: str | None, max_message: int = 0) -> None:
        super().__init__(subprotocol, max_message)
        self._b64 = payload.Base64Decoder()

    def _payload(self, event: rfc6455.Data) -> bytes:
        return self._b64.decode(event.payload, event.fin)

    def encode(self, data: memoryview) -> bytes:
        header = rfc6455.frame_header(Opcode.TEXT, (len(data) + 2) // 3 * 4)
        return payload.b64encode(data, header)


class DeflateCodec:
    """RFC 6455 with permessage-deflate (RFC 7692), for the ``binary``, ``base64`` or no
    subprotocol: each message to the client is compressed (RSV1), each compressed message from
    it inflated in bounded pieces. It counts the bytes on the wire and the messages' bytes."""

    protocol = "rfc6455"
    in_place = False  # the payload is compressed: no header to put in front of the read

    def __init__(
        self, subprotocol: str | None, agreement: Agreement, max_message_size: int = 0
    ) -> None:
        self.subprotocol = subprotocol
        self._base64 = payload.Base64Decoder() if subprotocol == "base64" else None
        self._opcode = Opcode.TEXT if self._base64 else Opcode.BINARY
        self._parser = DeflateFrameParser()
        self._deflater = Deflater(agreement.server_bits, agreement.server_no_context_takeover)
        self._inflater = Inflater(
            agreement.client_bits, agreement.client_no_context_takeover, max_message_size
        )
        self._plain = MessageCheck(max_message_size)  # the size of a message sent uncompressed
        self._fin = False  # the compressed piece being inflated is its message's last
        self._events: deque[rfc6455.Event] = deque()  # parsed, not handled yet (over budget)
        # UTF-8 of inflated text (the parser checks uncompressed text; the Inflater the size).
        self._utf8 = MessageCheck()
        self._starts = True  # the next compressed piece starts a message
        self._error: ProtocolError | None = None  # the parser's, due once its events are out
        self.wire_in = self.wire_out = 0  # frame bytes, as they cross the network
        self.message_in = self.message_out = 0  # message bytes, inflated

    def decode(self, data: memoryview) -> Decoded:
        self.wire_in += len(data)
        out = Decoded([], [])
        events = self._events
        if data:
            try:
                self._parser.feed_into(data, events)
            except ProtocolError as exc:
                self._error = exc
        try:
            self._handle(out, events)
        except ProtocolError as exc:  # bad compressed data, a message over the limit
            out.error = exc
        return out

    def _handle(self, out: Decoded, events: deque[rfc6455.Event]) -> None:
        """Inflate and deliver ``events`` into ``out``, within the budget of one call."""
        inflater = self._inflater
        budget = DECODE_BUDGET
        while True:
            if inflater.more:
                piece = inflater.pull(budget)
                budget -= len(piece)
                fin = not inflater.more and self._fin
                self._deliver(out, self._utf8.piece(piece, fin), fin)
                if budget <= 0 and (inflater.more or events):
                    out.more = True
                    return
                continue
            if not events:
                out.error, self._error = self._error, None
                return
            event = events.popleft()
            if type(event) is rfc6455.Compressed:  # inflated by the pulls above
                if self._starts:
                    self._utf8.begin(event.text)
                self._starts = self._fin = event.fin
                inflater.push(event.payload, event.fin)
            elif type(event) is rfc6455.Data:
                self._plain.count(len(event.payload))
                if event.fin:
                    self._plain.begin(False)
                self._deliver(out, event.payload, event.fin)
            elif type(event) is rfc6455.Ping:
                pong = rfc6455.encode_frame(Opcode.PONG, event.payload)
                self.wire_out += len(pong)
                out.to_client.append(pong)
            elif type(event) is rfc6455.Close:
                self._utf8.cut()  # a compressed text message cut inside a character
                out.close = (event.code, event.reason)
                events.clear()
                return

    def eof(self) -> None:
        self._parser.eof()
        self._utf8.cut()

    def _deliver(self, out: Decoded, piece: bytes, fin: bool) -> None:
        self.message_in += len(piece)
        if self._base64 is not None:
            piece = self._base64.decode(piece, fin)
        if piece:
            out.to_target.append(piece)

    def header(self, length: int) -> bytes:
        raise NotImplementedError("compressed frames are built by encode()")

    def encode(self, data: memoryview) -> bytes:
        message = payload.b64encode(data) if self._base64 is not None else data
        body = self._deflater.compress(message)
        header = rfc6455.frame_header(self._opcode, len(body))
        frame = bytes((header[0] | 0x40,)) + header[1:] + body  # RSV1: compressed
        self.message_out += len(message)
        self.wire_out += len(frame)
        return frame

    def close_frame(self, code: int, reason: str = "") -> bytes:
        return _close_frame(code, reason)


class HixieCodec:
    """Hixie-75/76: ``\\x00 base64 \\xff`` frames both ways."""

    in_place = False

    def __init__(self, protocol: str, subprotocol: str | None, max_message: int = 0) -> None:
        self.protocol = protocol
        self.subprotocol = subprotocol
        self._parser = hixie.HixieParser(max_message=max_message)

    def decode(self, data: memoryview) -> Decoded:
        out = Decoded([], [])
        events: list[bytes | hixie.HixieClose] = []
        try:
            self._parser.feed_into(data, events)
        except ProtocolError as exc:
            out.error = exc  # after the frames before it
        for event in events:
            if isinstance(event, hixie.HixieClose):
                out.close = (CloseCode.NORMAL, "")
            elif event:
                out.to_target.append(event)
        return out

    def header(self, length: int) -> bytes:
        raise NotImplementedError("Hixie frames are base64 text: no header to put in front")

    def encode(self, data: memoryview) -> bytes:
        return hixie.encode_frame(data)

    def close_frame(self, code: int, reason: str = "") -> bytes:
        return hixie.CLOSE_FRAME

    def eof(self) -> None:
        pass  # what arrived of an unterminated frame is relayed already


def make_codec(
    protocol: str,
    subprotocol: str | None,
    deflate: Agreement | None = None,
    max_message_size: int = 0,
) -> Codec:
    """The codec of a session; ``deflate`` is the permessage-deflate agreement (RFC 6455 only),
    ``max_message_size`` the largest message the client may send (0: any)."""
    if protocol.startswith("hixie"):
        return HixieCodec(protocol, subprotocol, max_message_size)
    if deflate is not None:
        return DeflateCodec(subprotocol, deflate, max_message_size)
    if subprotocol == "base64":
        return Base64Codec(subprotocol, max_message_size)
    return BinaryCodec(subprotocol, max_message_size)
