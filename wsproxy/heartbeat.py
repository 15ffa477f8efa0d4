"""``--heartbeat N``: a ping to every RFC 6455 client each N seconds, as websockify sends it, and,
beyond websockify, the close of a client that answered nothing (no pong, no data) by the next
tick, so that a dead NAT path frees its session.

One greenlet per server pings every session at N-second ticks: the pumps pay one counter
increment per read (:attr:`Relay.client_reads`) and no timer. A client is pinged at most N seconds
after it connects and closed N seconds after an unanswered ping left, so within 2N, also when the
ping cannot leave because the client reads nothing while the target sends. A client that reads,
slowly, gets its window once the ping is out (see :class:`Heartbeat`).

The close code is 1011 with reason ``heartbeat timeout``: the peer vanished, the session cannot go
on (1011: "an unexpected condition prevented it from fulfilling the request", which is also what
the ``websockets`` library sends on a keepalive timeout). 1001 stays the code of a server shutdown,
so the log and the metrics tell the two apart.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Callable, Iterable

import gevent

from wsproxy.errors import CloseCode
from wsproxy.protocol import rfc6455
from wsproxy.relay import Relay

__all__ = ["HEARTBEAT_CLOSE", "PENDING_LIMIT", "Heartbeat"]

log = logging.getLogger(__name__)

HEARTBEAT_CLOSE = (CloseCode.INTERNAL_ERROR, "heartbeat timeout")
PENDING_LIMIT = 4  # intervals a ping may wait behind data a slow client is still taking
PING = rfc6455.encode_frame(rfc6455.Opcode.PING, b"")


class Heartbeat:
    """Pings the relays that ``relays()`` lists (``(peer, relay)`` pairs) every ``interval``.

    A ping's answer window (``interval``) opens when its write completes: a slow client whose
    socket takes the ping late still gets the whole window. A ping still waiting for the socket
    at the next tick, with nothing heard from the client, closes it if the client took no data
    either in that interval (it is gone; the relay is stuck writing to it), else once the ping has
    waited ``PENDING_LIMIT`` intervals (a hard limit for a ping that never leaves).

    ``close_timeout``: after our close frame, the time a dead client gets before its socket is
    shut down (its pumps may be blocked writing to it: the close frame cannot go out).
    """

    def __init__(
        self,
        interval: float,
        relays: Callable[[], Iterable[tuple[str, Relay]]],
        close_timeout: float,
    ) -> None:
        self.interval = interval
        self.relays = relays
        self.close_timeout = close_timeout
        self._pings: dict[Relay, _Ping] = {}  # the last ping of each relay
        self._closing: set[Relay] = set()

    def run(self) -> None:
        while True:
            gevent.sleep(self.interval)
            self.tick()

    def tick(self) -> None:
        pings: dict[Relay, _Ping] = {}
        for peer, relay in self.relays():
            if relay.outcome is not None or relay.codec.protocol != "rfc6455":
                continue  # ending already; Hixie has no ping
            last = self._pings.get(relay)
            if last is not None and not last.out:  # the last ping still waits for the socket
                pings[relay] = last
                last.ticks += 1
                if relay.client_reads != last.heard:
                    continue  # the client spoke: alive
                if relay.bytes_out == last.sent or last.ticks >= PENDING_LIMIT:
                    self._timeout(peer, relay, f"a ping not sent in {last.ticks} interval(s)")
                continue
            ping = pings[relay] = _Ping(relay.client_reads, relay.bytes_out)
            gevent.spawn(self._ping, peer, relay, ping)
        self._pings = pings
        self._closing &= pings.keys()

    def _ping(self, peer: str, relay: Relay, ping: _Ping) -> None:
        relay.send_control(PING)  # may wait for the socket
        ping.out = True
        gevent.sleep(self.interval)  # the answer window opens once the ping is out
        if relay.outcome is None and relay.client_reads == ping.heard:
            self._timeout(peer, relay, f"no answer within {self.interval:g}s of a ping")

    def _timeout(self, peer: str, relay: Relay, why: str) -> None:
        if relay in self._closing:
            return
        self._closing.add(relay)
        log.info("heartbeat timeout peer=%s: %s, closing", peer, why)
        gevent.spawn(self._close, relay)

    def _close(self, relay: Relay) -> None:
        relay.going_away(*HEARTBEAT_CLOSE)
        gevent.sleep(self.close_timeout)
        # A peer that could not even take the close frame: wake its pumps. (Once the session
        # has ended its socket is closed, and this fails harmlessly.)
        with contextlib.suppress(OSError):
            relay.client.shutdown(socket.SHUT_RDWR)


class _Ping:
    """One ping: the relay's counters when it was queued, the ticks it has waited since, and
    whether it is out."""

    __slots__ = ("heard", "out", "sent", "ticks")

    def __init__(self, heard: int, sent: int) -> None:
        self.heard = heard  # client_reads
        self.sent = sent  # bytes_out: data the client took since shows it is reading
        self.ticks = 0
        self.out = False
