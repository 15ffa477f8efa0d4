"""What the relay needs from a WebSocket protocol, sans-I/O.

A codec turns bytes from the client into bytes for the target (plus replies for the client and the
client's close), and bytes from the target into bytes for the client. The relay moves bytes and
never looks inside; each protocol and subprotocol is one small class here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from wsproxy.errors import CloseCode
from wsproxy.protocol import hixie, rfc6455
from wsproxy.protocol.rfc6455 import Opcode

__all__ = ["Base64Codec", "BinaryCodec", "Codec", "Decoded", "HixieCodec", "make_codec"]


@dataclass(slots=True)
class Decoded:
    """The result of one read from the client.

    ``to_target``: payload bytes in order. ``to_client``: frames to send back (pongs).
    ``close``: the client's close code and reason, once it sent its close frame.
    """

    to_target: list[bytes]
    to_client: list[bytes]
    close: tuple[int, str] | None = None


class Codec(Protocol):
    protocol: str  # "rfc6455", "hixie76" or "hixie75"
    subprotocol: str | None
    # True when a frame for the client is just ``header(len(data)) + data``: the relay can then
    # write the header in front of the payload in its read buffer and send both without a copy.
    in_place: bool

    def header(self, length: int) -> bytes:
        """The frame header for ``length`` payload bytes (only when :attr:`in_place`)."""

    def decode(self, data: memoryview) -> Decoded:
        """Decode what the client sent. Raises ProtocolError with the close code to send."""

    def encode(self, data: memoryview) -> bytes:
        """Frame what the target sent, ready for the client."""

    def close_frame(self, code: int, reason: str = "") -> bytes:
        """The frame that closes the connection from our side."""


class BinaryCodec:
    """RFC 6455 with the ``binary`` subprotocol or none: payload bytes as they are."""

    protocol = "rfc6455"
    opcode = Opcode.BINARY
    in_place = True

    def __init__(self, subprotocol: str | None) -> None:
        self.subprotocol = subprotocol
        self._parser = rfc6455.FrameParser()

    def decode(self, data: memoryview) -> Decoded:
        out = Decoded([], [])
        for event in self._parser.feed(data):
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
        return out

    def _payload(self, event: rfc6455.Data) -> bytes:
        return event.payload

    def header(self, length: int) -> bytes:
        return rfc6455.frame_header(self.opcode, length)

    def encode(self, data: memoryview) -> bytes:
        return rfc6455.frame_header(self.opcode, len(data)) + data

    def close_frame(self, code: int, reason: str = "") -> bytes:
        body = rfc6455.encode_close(None if code == CloseCode.NO_STATUS else code, reason)
        return rfc6455.encode_frame(Opcode.CLOSE, body)


class Base64Codec(BinaryCodec):
    """RFC 6455 with the ``base64`` subprotocol: base64 text frames both ways."""

    opcode = Opcode.TEXT
    in_place = False

    def __init__(self, subprotocol: str | None) -> None:
        super().__init__(subprotocol)
        self._b64 = rfc6455.Base64Decoder()

    def _payload(self, event: rfc6455.Data) -> bytes:
        return self._b64.decode(event.payload, event.fin)

    def encode(self, data: memoryview) -> bytes:
        header = rfc6455.frame_header(Opcode.TEXT, (len(data) + 2) // 3 * 4)
        return rfc6455.b64encode(data, header)


class HixieCodec:
    """Hixie-75/76: ``\\x00 base64 \\xff`` frames both ways."""

    in_place = False

    def __init__(self, protocol: str, subprotocol: str | None) -> None:
        self.protocol = protocol
        self.subprotocol = subprotocol
        self._parser = hixie.HixieParser()

    def decode(self, data: memoryview) -> Decoded:
        out = Decoded([], [])
        for event in self._parser.feed(data):
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


def make_codec(protocol: str, subprotocol: str | None) -> Codec:
    if protocol.startswith("hixie"):
        return HixieCodec(protocol, subprotocol)
    if subprotocol == "base64":
        return Base64Codec(subprotocol)
    return BinaryCodec(subprotocol)
