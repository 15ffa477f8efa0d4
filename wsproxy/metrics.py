"""Metrics and health on a separate HTTP port (``metrics_listen``), off by default.

``GET /metrics`` answers in the Prometheus text format (through ``prometheus_client``, the optional
extra ``pip install 'wsproxy[metrics]'``); ``GET /healthz`` answers ``200 ok`` while the proxy
serves and ``503 stopping`` while it drains.

The rest of wsproxy talks to a :class:`Metrics` or, with metrics off, to a :class:`NullMetrics`
whose methods do nothing, so callers never test whether metrics are on:
``server.metrics.wrap_restarts.inc()``. Bytes are counted once per session, at its end.

One registry per :class:`Metrics` (no module-level state). With ``--workers`` every process
records into its own value files (prometheus_client's multiprocess mode, set up by
:mod:`wsproxy.workermetrics`) and :meth:`Metrics.aggregate` makes /metrics their sum, served by
one process of the master's; the workers then serve no endpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from gevent.pywsgi import WSGIServer

from wsproxy.errors import CloseCode, ConfigError
from wsproxy.protocol.rfc6455 import check_close_code
from wsproxy.settings import Address, Settings, format_address

__all__ = ["CONNECT_BUCKETS", "Metrics", "NullMetrics", "import_prometheus", "open_metrics"]

log = logging.getLogger(__name__)

# Seconds; a local target connects in well under a millisecond, a remote one in tens.
CONNECT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
INSTALL_HINT = "pip install 'wsproxy[metrics]'"
KNOWN_CLOSE_CODES = frozenset(code.value for code in CloseCode)


class _NullCounter:
    def inc(self, amount: float = 1) -> None:
        pass


class NullMetrics:
    """Metrics switched off: every call is a no-op."""

    address: Address | None = None
    wrap_restarts: Any = _NullCounter()
    worker_restarts: Any = _NullCounter()

    def bind(self) -> None:
        pass

    def fileno(self) -> int | None:
        return None

    def start(self, healthy: Callable[[], bool]) -> None:
        pass

    def stop(self) -> None:
        pass

    def session_opened(self, protocol: str) -> None:
        pass

    def session_closed(
        self, protocol: str, by: str, code: int, bytes_in: int, bytes_out: int
    ) -> None:
        pass

    def deflate_closed(
        self, wire_in: int, wire_out: int, message_in: int, message_out: int
    ) -> None:
        pass

    def handshake_failed(self, reason: str) -> None:
        pass

    def target_connected(self, seconds: float) -> None:
        pass


class Metrics(NullMetrics):
    """Prometheus metrics for one server, and the HTTP listener that serves them.

    Raises:
        ConfigError: prometheus_client is not installed.
    """

    def __init__(self, listen: Address) -> None:
        self._prom = prom = import_prometheus()
        self.listen = listen
        self.registry = registry = prom.CollectorRegistry()
        self.exposed = registry  # what /metrics answers with: this process's, or the sum
        self._aggregated = False
        self.sessions_open = prom.Gauge(
            "wsproxy_sessions_open",
            "WebSocket sessions being relayed now",
            ["protocol"],
            registry=registry,
            # Across worker processes: the sum over live ones (a dead worker's files are dropped).
            multiprocess_mode="livesum",
        )
        self.sessions = prom.Counter(
            "wsproxy_sessions",
            "Relayed sessions that ended, by protocol, who closed and close code",
            ["protocol", "closed_by", "code"],
            registry=registry,
        )
        self.bytes = prom.Counter(
            "wsproxy_payload_bytes",
            "Payload bytes relayed: in = client to target, out = target to client",
            ["direction"],
            registry=registry,
        )
        # permessage-deflate sessions only: wire / message is their compression ratio.
        self.deflate_wire_bytes, self.deflate_message_bytes = (
            prom.Counter(f"wsproxy_deflate_{what}_bytes", doc, ["direction"], registry=registry)
            for what, doc in (
                ("wire", "Bytes on the wire of permessage-deflate sessions (frames, compressed)"),
                ("message", "Message bytes of permessage-deflate sessions (inflated)"),
            )
        )
        self.handshake_failures = prom.Counter(
            "wsproxy_handshake_failures",
            "Requests refused before relaying, by HTTP status (or timeout)",
            ["reason"],
            registry=registry,
        )
        self.connect_seconds = prom.Histogram(
            "wsproxy_target_connect_seconds",
            "Time to connect to the target",
            buckets=CONNECT_BUCKETS,
            registry=registry,
        )
        self.wrap_restarts = prom.Counter(
            "wsproxy_wrap_restarts", "Restarts of the wrapped program", registry=registry
        )
        self.worker_restarts = prom.Counter(
            "wsproxy_worker_restarts", "Worker processes replaced", registry=registry
        )
        self._healthy: Callable[[], bool] = lambda: True
        self._server: WSGIServer | None = None
        self.listener: Any = None  # a socket handed over by an upgrade: used instead of binding

    # -- recording --

    def session_opened(self, protocol: str) -> None:
        self.sessions_open.labels(protocol).inc()

    def session_closed(
        self, protocol: str, by: str, code: int, bytes_in: int, bytes_out: int
    ) -> None:
        self.sessions_open.labels(protocol).dec()
        self.sessions.labels(protocol, by, close_code_label(code)).inc()
        self.bytes.labels("in").inc(bytes_in)
        self.bytes.labels("out").inc(bytes_out)

    def deflate_closed(
        self, wire_in: int, wire_out: int, message_in: int, message_out: int
    ) -> None:
        self.deflate_wire_bytes.labels("in").inc(wire_in)
        self.deflate_wire_bytes.labels("out").inc(wire_out)
        self.deflate_message_bytes.labels("in").inc(message_in)
        self.deflate_message_bytes.labels("out").inc(message_out)

    def handshake_failed(self, reason: str) -> None:
        self.handshake_failures.labels(reason).inc()

    def target_connected(self, seconds: float) -> None:
        self.connect_seconds.observe(seconds)

    # -- serving --

    @property
    def address(self) -> Address | None:  # type: ignore[override]
        if self._server is None:
            return None
        host, port = self._server.address[:2]
        return host, port

    def bind(self) -> None:
        """Bind the listening socket (once); raises OSError if the address is taken."""
        if self._server is None:
            where = self.listener if self.listener is not None else self.listen
            server = WSGIServer(where, self._app, log=None, error_log=log)
            server.init_socket()
            self._server = server

    def fileno(self) -> int | None:
        """The bound socket's descriptor (an upgrade hands it over), or None."""
        return None if self._server is None else int(self._server.socket.fileno())

    def aggregate(self, directory: str) -> None:
        """Under ``--workers``: /metrics answers with the sum over the value files every process
        writes into ``directory``, and :meth:`start` (called in each worker) gives up the
        inherited listening socket instead of serving: one process calls :meth:`serve`."""
        from prometheus_client.multiprocess import MultiProcessCollector

        self.exposed = self._prom.CollectorRegistry()
        MultiProcessCollector(self.exposed, path=directory)
        self._aggregated = True

    def start(self, healthy: Callable[[], bool]) -> None:
        """Serve in the current hub, unless another process serves the aggregate (then only
        close this process's copy of the socket); ``healthy`` answers /healthz."""
        if self._aggregated:
            if self._server is not None:
                self._server.close()
                self._server = None
            return
        self.serve(healthy)

    def serve(self, healthy: Callable[[], bool]) -> None:
        """Serve in the current hub (binding first if needed); ``healthy`` answers /healthz."""
        self._healthy = healthy
        self.bind()
        assert self._server is not None
        self._server.start()
        log.info("metrics at http://%s/metrics", format_address(self.address))

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(timeout=1)
            self._server = None

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            status, kind, body = "405 Method Not Allowed", "text/plain", b"GET only\n"
        elif path == "/metrics":
            status, kind = "200 OK", self._prom.CONTENT_TYPE_LATEST
            body = self._prom.generate_latest(self.exposed)
        elif path == "/healthz":
            up = self._healthy()
            status = "200 OK" if up else "503 Service Unavailable"
            kind, body = "text/plain", b"ok\n" if up else b"stopping\n"
        else:
            status, kind, body = "404 Not Found", "text/plain", b"try /metrics or /healthz\n"
        start_response(status, [("Content-Type", kind), ("Content-Length", str(len(body)))])
        return [body]


def import_prometheus() -> Any:
    """The prometheus_client module; raises ConfigError (with the install hint) if missing."""
    try:
        import prometheus_client
    except ImportError:
        raise ConfigError(
            "needs the prometheus_client package, which is not installed",
            key="metrics_listen",
            expected=f"the metrics extra: {INSTALL_HINT}",
        ) from None
    return prometheus_client


def close_code_label(code: int) -> str:
    """Bounded label values: a protocol code (1000-2999) that may be sent, or that we record
    for a close without a code (1005, 1006), as itself; application codes and anything else as
    their thousand (``3xxx``, ``4xxx``)."""
    if code < 3000 and (check_close_code(code) or code in KNOWN_CLOSE_CODES):
        return str(code)
    return f"{code // 1000}xxx"


def open_metrics(settings: Settings) -> Metrics | NullMetrics:
    """The metrics object for ``settings``: real if ``metrics_listen`` is set."""
    if settings.metrics_listen is None:
        return NullMetrics()
    return Metrics(settings.metrics_listen)
