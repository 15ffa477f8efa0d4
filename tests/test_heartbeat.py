"""The heartbeat's answer window around a ping that waits for the client's socket.

A slow but live link cannot be made to hold a ping in wsproxy's own write for a chosen time
(the kernel's send buffer, which autotunes, takes it first), so the relay is a stand-in here:
its ``send_control`` returns when the test lets the ping out.
"""

from __future__ import annotations

from types import SimpleNamespace

import gevent
import gevent.event

from wsproxy.heartbeat import HEARTBEAT_CLOSE, PENDING_LIMIT, Heartbeat

INTERVAL = 0.2


class SlowRelay:
    """A relay whose ping write waits until ``let_out`` is set."""

    def __init__(self) -> None:
        self.outcome = None
        self.codec = SimpleNamespace(protocol="rfc6455")
        self.client_reads = 0
        self.bytes_out = 0
        self.let_out = gevent.event.Event()
        self.closed: list[tuple[int, str]] = []
        self.client = SimpleNamespace(shutdown=lambda how: None)

    def send_control(self, frame: bytes) -> None:
        self.let_out.wait(10)

    def going_away(self, code: int, reason: str) -> None:
        self.closed.append((code, reason))
        self.outcome = "closed"


def beat_for(relay: SlowRelay) -> Heartbeat:
    return Heartbeat(INTERVAL, lambda: [("peer", relay)], close_timeout=0)


def test_the_window_opens_when_the_ping_is_out() -> None:
    relay = SlowRelay()
    beat = beat_for(relay)
    beat.tick()  # ping queued; its write waits
    gevent.sleep(INTERVAL)
    relay.bytes_out += 4096  # the client is taking data, slowly
    beat.tick()  # still waiting for the socket: not counted as unanswered
    gevent.sleep(0)
    assert relay.closed == []
    relay.let_out.set()  # out now: the whole window starts
    gevent.sleep(INTERVAL * 0.8)
    assert relay.closed == []
    relay.client_reads += 1  # the pong
    gevent.sleep(INTERVAL * 0.4)
    assert relay.closed == []


def test_an_out_ping_unanswered_for_the_window_closes() -> None:
    relay = SlowRelay()
    relay.let_out.set()
    beat_for(relay).tick()
    gevent.sleep(INTERVAL * 1.3)
    assert relay.closed == [HEARTBEAT_CLOSE]


def test_a_ping_that_waits_while_the_client_takes_nothing_closes_at_the_next_tick() -> None:
    relay = SlowRelay()
    beat = beat_for(relay)
    beat.tick()
    beat.tick()
    gevent.sleep(0)
    assert relay.closed == [HEARTBEAT_CLOSE]


def test_a_ping_that_never_leaves_closes_at_the_hard_limit() -> None:
    relay = SlowRelay()
    beat = beat_for(relay)
    beat.tick()
    for _ in range(PENDING_LIMIT - 1):
        relay.bytes_out += 4096
        beat.tick()
        gevent.sleep(0)
        assert relay.closed == []
    relay.bytes_out += 4096
    beat.tick()
    gevent.sleep(0)
    assert relay.closed == [HEARTBEAT_CLOSE]
