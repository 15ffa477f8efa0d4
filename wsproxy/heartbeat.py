"""``--heartbeat N``: a ping to every RFC 6455 client each N seconds, as websockify sends it, and,
beyond websockify, the close of a client that answered nothing (no pong, no data) by the next
tick, so that a dead NAT path frees its session.

One greenlet per server does it for every session, at N-second ticks: the pumps pay one counter
increment per read (:attr:`Relay.client_reads`) and no timer. A client is pinged at most N seconds
after it connects and closed at most N seconds after an unanswered ping, so within 2N.

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

__all__ = ["HEARTBEAT_CLOSE", "Heartbeat"]

log = logging.getLogger(__name__)

HEARTBEAT_CLOSE = (CloseCode.INTERNAL_ERROR, "heartbeat timeout")
PING = rfc6455.encode_frame(rfc6455.Opcode.PING, b"")


class Heartbeat:
    """Pings the relays that ``relays()`` lists (``(peer, relay)`` pairs) every ``interval``.

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
        self._pinged: dict[Relay, int] = {}  # client_reads when the last ping was sent
        self._sending: dict[Relay, gevent.Greenlet] = {}

    def run(self) -> None:
        while True:
            gevent.sleep(self.interval)
            self.tick()

    def tick(self) -> None:
        pinged: dict[Relay, int] = {}
        for peer, relay in self.relays():
            if relay.outcome is not None or relay.codec.protocol != "rfc6455":
                continue  # ending already; Hixie has no ping
            heard = relay.client_reads
            if self._pinged.get(relay) == heard:
                log.info(
                    "heartbeat timeout peer=%s: no answer within %gs of a ping, closing",
                    peer,
                    self.interval,
                )
                gevent.spawn(self._close, relay)
                continue
            pinged[relay] = heard
            sending = self._sending.get(relay)
            if sending is None or sending.dead:  # the last ping may still wait for the socket
                self._sending[relay] = gevent.spawn(relay.send_control, PING)
        self._pinged = pinged
        self._sending = {r: g for r, g in self._sending.items() if r in pinged}

    def _close(self, relay: Relay) -> None:
        relay.going_away(*HEARTBEAT_CLOSE)
        gevent.sleep(self.close_timeout)
        # A peer that could not even take the close frame: wake its pumps. (Once the session
        # has ended its socket is closed, and this fails harmlessly.)
        with contextlib.suppress(OSError):
            relay.client.shutdown(socket.SHUT_RDWR)
