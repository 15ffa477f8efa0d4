"""A minimal raw-socket WebSocket client for wire-level tests (bytes exactly as we choose)."""

from __future__ import annotations

import base64
import os
import socket

from conftest import read_http_head

from wsproxy.protocol.deflate import DeflateFrameParser
from wsproxy.protocol.rfc6455 import Close, Data, FrameParser, Opcode, encode_frame


class RawClient:
    def __init__(
        self,
        port: int,
        *,
        protocols: str | None = "binary",
        extensions: str | None = None,
        timeout: float = 5,
    ) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.pending: list = []
        key = base64.b64encode(os.urandom(16)).decode()
        head = (
            "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        )
        if protocols:
            head += f"Sec-WebSocket-Protocol: {protocols}\r\n"
        if extensions:
            head += f"Sec-WebSocket-Extensions: {extensions}\r\n"
        self.sock.sendall((head + "\r\n").encode())
        self.status, self.headers, rest = read_http_head(self.sock)
        assert self.status == 101, self.status
        # With permessage-deflate agreed, RSV1 marks the server's compressed messages.
        deflate = "permessage-deflate" in self.headers.get("sec-websocket-extensions", "")
        self.parser = (DeflateFrameParser if deflate else FrameParser)(require_mask=False)
        self.initial = rest  # the raw bytes that came with the answer, for byte-level checks
        self.pending += self.parser.feed(rest)

    def send_frame(self, opcode: int, payload: bytes = b"", *, fin: bool = True) -> None:
        self.sock.sendall(encode_frame(opcode, payload, fin=fin, mask=True))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def next_event(self):  # type: ignore[no-untyped-def]
        while not self.pending:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed without a close frame")
            self.pending += self.parser.feed(chunk)
        return self.pending.pop(0)

    def recv_data(self, size: int) -> bytes:
        got = b""
        while len(got) < size:
            event = self.next_event()
            assert isinstance(event, Data), event
            got += event.payload
        return got

    def expect_close(self) -> Close:
        """Skip data until the close frame; returns it."""
        while True:
            event = self.next_event()
            if isinstance(event, Close):
                return event

    def close(self) -> None:
        self.sock.close()


__all__ = ["Opcode", "RawClient"]
