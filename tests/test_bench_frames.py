"""The bench's frame builder and counter (bench/frames.py) agree with wsproxy's RFC 6455 code."""

from __future__ import annotations

import os

import pytest

from bench.frames import FrameCounter, client_frame, close_frame
from wsproxy.protocol import rfc6455

SIZES = [0, 1, 125, 126, 65535, 65536, 70000]


@pytest.mark.parametrize("size", SIZES)
def test_client_frame_parses_back_to_its_payload(size: int) -> None:
    payload = os.urandom(size)
    events = rfc6455.FrameParser().feed(client_frame(payload))
    assert b"".join(e.payload for e in events if isinstance(e, rfc6455.Data)) == payload
    assert events[-1].fin


def test_close_frame_is_a_normal_close() -> None:
    assert rfc6455.FrameParser().feed(close_frame()) == [rfc6455.Close(1000)]


@pytest.mark.parametrize("step", [1, 3, 7, 1 << 20])
def test_counter_counts_server_frames_split_anywhere(step: int) -> None:
    payloads = [os.urandom(n) for n in SIZES]
    wire = b"".join(rfc6455.encode_frame(rfc6455.Opcode.BINARY, p) for p in payloads)
    counter = FrameCounter(collect=True)
    pieces = []
    for i in range(0, len(wire), step):
        pieces += counter.feed(wire[i : i + step])
    assert counter.frames == len(payloads)
    assert counter.payload == sum(SIZES)
    assert b"".join(pieces) == b"".join(payloads)
    assert not counter.closed


def test_counter_sees_a_close_frame() -> None:
    counter = FrameCounter()
    counter.feed(rfc6455.encode_frame(rfc6455.Opcode.CLOSE, rfc6455.encode_close(1000)))
    assert counter.closed and counter.frames == 1 and counter.payload == 2
