"""WebSocket frames for the load clients: built once, sent many times; parsed without copies.

The clients must not be the bottleneck, so nothing here runs per byte in Python: a client frame is
masked once with one big-integer XOR and then re-sent as is, and :class:`FrameCounter` walks the
server's frame headers and skips over payloads, counting them.
"""

from __future__ import annotations

import base64
import os
import struct

__all__ = ["MASK", "FrameCounter", "client_frame", "close_frame", "handshake_request"]

MASK = b"\x37\xfa\x21\x3d"
BINARY, TEXT, CLOSE = 0x2, 0x1, 0x8


def _mask(data: bytes, key: bytes) -> bytes:
    n = len(data)
    if not n:
        return b""
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(stream, "little")).to_bytes(n, "little")


def client_frame(payload: bytes, opcode: int = BINARY, mask: bytes = MASK) -> bytes:
    """One masked, final frame carrying ``payload`` (a client must mask, RFC 6455 5.1)."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 0x10000:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + mask + _mask(payload, mask)


def close_frame(code: int = 1000) -> bytes:
    return client_frame(struct.pack("!H", code), CLOSE)


def handshake_request(
    host: str, port: int, subprotocol: str | None = None, extensions: str | None = None
) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        "GET / HTTP/1.1",
        f"Host: {host}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if subprotocol:
        lines.append(f"Sec-WebSocket-Protocol: {subprotocol}")
    if extensions:
        lines.append(f"Sec-WebSocket-Extensions: {extensions}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class FrameCounter:
    """Counts the frames and payload bytes a server sends (unmasked frames), across reads.

    ``feed`` returns the payload pieces when ``collect`` is true (for checking echoes), else an
    empty list: payload bytes are skipped, never copied.
    """

    def __init__(self, *, collect: bool = False) -> None:
        self.collect = collect
        self.frames = 0  # frames whose header has been read
        self.payload = 0  # payload bytes seen
        self.closed = False  # a close frame arrived
        self._skip = 0  # payload bytes of the current frame still to come
        self._head = b""  # a header split across reads

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        view = memoryview(data)
        pieces: list[bytes] = []
        pos, end = 0, len(view)
        while pos < end:
            if self._skip:
                take = min(self._skip, end - pos)
                if self.collect:
                    pieces.append(bytes(view[pos : pos + take]))
                self._skip -= take
                self.payload += take
                pos += take
                continue
            if self._head:
                head = self._head + bytes(view[pos : pos + 14 - len(self._head)])
                base_used = len(self._head)
            else:
                head = view[pos : pos + 14]
                base_used = 0
            if len(head) < 2:
                self._head = bytes(head)
                return pieces
            b0, b1 = head[0], head[1]
            length = b1 & 0x7F
            size = 2 + (2 if length == 126 else 8 if length == 127 else 0)
            if len(head) < size:
                self._head = bytes(head)
                return pieces
            if length == 126:
                (length,) = struct.unpack_from("!H", head, 2)
            elif length == 127:
                (length,) = struct.unpack_from("!Q", head, 2)
            self._head = b""
            pos += size - base_used
            self.frames += 1
            if b0 & 0x0F == CLOSE:
                self.closed = True
            self._skip = length
            if length == 0 and self.collect:
                pieces.append(b"")
        return pieces
