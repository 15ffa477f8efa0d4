"""What a session needs from the process that accepted it, in one object.

The server builds a :class:`Context` from its settings and hands it to every session it starts;
a session never reaches back into the server. A reload (SIGHUP) builds a new context for new
sessions, while the open ones keep the one they started with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wsproxy.admission import ClientCounts
from wsproxy.auth import Authenticator
from wsproxy.frontdoor import FrontDoor
from wsproxy.protocol.forwarded import TrustedProxies
from wsproxy.record import Recordings
from wsproxy.settings import Settings
from wsproxy.targets import Targets

__all__ = ["Context"]


@dataclass(frozen=True)
class Context:
    """The shared, read-only services of a session.

    Attributes:
        settings: the settings in force when the session started.
        frontdoor: TLS context, Flash policy and web server.
        targets: where the session's relay connects to.
        metrics: counters and histograms (a no-op object when metrics are off).
        trusted_proxies: the balancers whose PROXY header or X-Forwarded-For is believed.
        recordings: where sessions are recorded, or None.
        scratch: the relays' shared read buffer (see :func:`wsproxy.relay.scratch_buffer`).
        per_client: the sessions each client address holds (``max_connections_per_ip``).
        listen_port: the port clients connected to (the Flash policy names it).
        listener_tuned: the listening socket has the options :func:`wsproxy.session.tune_socket`
            sets, and accepted sockets inherit them (Linux): a session need not set them again.
        auth: the auth plug-in's runner (``--auth-plugin``), or None.
    """

    settings: Settings
    frontdoor: FrontDoor
    targets: Targets
    metrics: Any
    trusted_proxies: TrustedProxies
    recordings: Recordings | None
    scratch: bytearray
    per_client: ClientCounts
    listen_port: int = 0
    listener_tuned: bool = False
    auth: Authenticator | None = None
