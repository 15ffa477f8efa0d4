"""websockify's ways for a server to end when it is not used, each an exit with status 0:

- ``--run-once``: when the first WebSocket session ends, the server stops. Plain HTTP requests
  (the web page) do not count; nor does a WebSocket request refused before its ``101`` (a target
  that is down, ``502``), unlike websockify, whose ``101`` comes first: such a client may try
  again. websockify serves its connections one at a time then, and one request per connection;
  wsproxy keeps serving others meanwhile (a browser's kept-alive page connection must not hold
  the WebSocket back), and a session still open at the stop gets ``1001``.
- ``--timeout N``: N seconds after the start, the listener is closed; sessions still open run to
  their end, then the process exits (at once if there are none). websockify stops accepting at
  that time too and its session processes run on.
- ``--idle-timeout N``: the server stops once no connection has been open for N seconds (counted
  from the start, then from the end of the last connection).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import gevent

from wsproxy.settings import Settings

__all__ = ["Lifetime"]

log = logging.getLogger(__name__)


class Lifetime:
    """Watches the settings' exit conditions for one server.

    Args:
        active: how many connections are open now.
        retire: stop accepting, and stop the server once the open sessions have ended.
        stop: stop the server now (gracefully, as on SIGTERM).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        active: Callable[[], int],
        retire: Callable[[], None],
        stop: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.active = active
        self.retire = retire
        self.stop = stop
        self.idle_since = time.monotonic()
        self._watchers: list[gevent.Greenlet] = []
        self._done = False

    def start(self) -> None:
        self.idle_since = time.monotonic()
        if self.settings.timeout > 0:
            self._watchers.append(gevent.spawn(self._watch_timeout, self.settings.timeout))
        if self.settings.idle_timeout > 0:
            self._watchers.append(gevent.spawn(self._watch_idle, self.settings.idle_timeout))

    def cancel(self) -> None:
        self._done = True
        gevent.killall(self._watchers, block=False)

    def ended(self, websocket: bool) -> None:
        """A connection has ended; ``websocket``: it was a relayed WebSocket session."""
        if not self.active():
            self.idle_since = time.monotonic()
        if websocket and self.settings.run_once and not self._done:
            self._done = True
            log.info("stopping: --run-once, the WebSocket connection has ended")
            gevent.spawn(self.stop)

    def _watch_timeout(self, limit: float) -> None:
        gevent.sleep(limit)
        if self._done:
            return
        self._done = True
        open_now = self.active()
        if open_now:
            log.info(
                "stopping: --timeout %gs reached: no new connections; exiting once the %d open "
                "one(s) end",
                limit,
                open_now,
            )
        else:
            log.info("stopping: --timeout %gs reached with no connection open", limit)
        self.retire()

    def _watch_idle(self, limit: float) -> None:
        while not self._done:
            if self.active():
                gevent.sleep(limit)  # the end of the last one sets idle_since
                continue
            left = self.idle_since + limit - time.monotonic()
            if left > 0:
                gevent.sleep(left)
                continue
            self._done = True
            log.info("stopping: --idle-timeout %gs: no connection open for that long", limit)
            gevent.spawn(self.stop)
            return
