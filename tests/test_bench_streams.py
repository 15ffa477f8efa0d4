"""The compression scenarios' streams (bench/streams.py) and the load client's deflate reading."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from bench import streams
from bench.load import _agreed_window


def test_recording_round_trips_every_write(tmp_path: Path) -> None:
    chunks = streams.terminal(total=50_000)
    path = tmp_path / "terminal.js"
    streams.write_recording(path, chunks)
    assert streams.read_recording(path) == chunks
    assert b"\x1b[" in b"".join(chunks)  # ANSI escapes, as a terminal writes


def test_vnc_streams_are_framebuffer_updates() -> None:
    for encoding, code in (("raw", 0), ("zlib", 6)):
        messages = streams.vnc(encoding, total=1 << 20)
        first = messages[0]
        kind, rects = struct.unpack_from("!BxH", first)
        assert (kind, rects) == (0, streams.HEIGHT // 100)  # the full first update, in bands
        x, y, w, h, got = struct.unpack_from("!HHHHi", first, 4)
        assert (x, y, w, h, got) == (0, 0, streams.WIDTH, 100, code)
    raw = b"".join(streams.vnc("raw", total=1 << 20))
    packed = b"".join(streams.vnc("zlib", total=1 << 20))
    assert len(zlib.compress(raw)) < len(raw) // 5  # raw pixels compress ...
    assert len(zlib.compress(packed)) > len(packed) * 0.95  # ... zlib-encoded ones do not


def test_load_client_reads_the_agreed_window() -> None:
    head = b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Extensions: permessage-deflate"
    assert _agreed_window(head + b"; server_max_window_bits=12") == 12
    assert _agreed_window(head) == 15
    assert _agreed_window(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket") == 0
