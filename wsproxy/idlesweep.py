"""``session_idle_timeout``: close sessions in which no data moved either way for a while.

One greenlet per server looks at the relays' byte counters now and then, so the pumps pay
nothing for it (no timer per read). Pings and other control frames do not count: they are not
the user's traffic.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import gevent

from wsproxy.errors import CloseCode
from wsproxy.relay import Relay

__all__ = ["SWEEP_MAX", "SWEEP_MIN", "IdleSweep"]

SWEEP_MAX = 5.0  # the sweeper looks every idle / 4, at most this long apart ...
SWEEP_MIN = 0.1  # ... and at least this long apart, whatever idle says


class IdleSweep:
    """Closes (1000, "idle timeout") the relays that ``relays()`` lists once ``idle`` seconds
    passed with no byte moved either way."""

    def __init__(self, idle: float, relays: Callable[[], Iterable[tuple[str, Relay]]]) -> None:
        self.idle = idle
        self.relays = relays

    def run(self) -> None:
        while True:
            gevent.sleep(min(max(self.idle / 4, SWEEP_MIN), SWEEP_MAX))
            self.tick(time.monotonic())

    def tick(self, now: float) -> None:
        for _, relay in self.relays():
            if relay.outcome is not None:
                continue
            moved, seen = (relay.bytes_in, relay.bytes_out), relay.last_counts
            if moved != seen[:2] or not seen[2]:
                relay.last_counts = (*moved, now)
            elif now - seen[2] >= self.idle:
                gevent.spawn(relay.going_away, CloseCode.NORMAL, "idle timeout")
