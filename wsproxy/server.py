"""The listening server: accept, one :class:`~wsproxy.session.Session` per client, graceful stop.

:class:`WSProxy` is also the library entry point for gevent applications::

    proxy = WSProxy("127.0.0.1:6080", "127.0.0.1:5900")
    proxy.start()          # bound and accepting, in the caller's hub
    ...
    proxy.stop()           # clients get close 1001, then the handlers are waited for
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

import gevent
from gevent.pool import Pool
from gevent.server import StreamServer
from gevent.socket import socket as gevent_socket

from wsproxy import admission
from wsproxy.admission import ClientCounts, Doorman
from wsproxy.auth import Authenticator
from wsproxy.context import Context
from wsproxy.errors import StartupError
from wsproxy.frontdoor import FrontDoor
from wsproxy.heartbeat import Heartbeat
from wsproxy.idlesweep import IdleSweep
from wsproxy.lifetime import Lifetime
from wsproxy.listeners import Listener, open_listener
from wsproxy.metrics import open_metrics
from wsproxy.offhub import share_pool
from wsproxy.plugins.tokens import load_lookup
from wsproxy.rebuild import Rebuilt, rebuild, trusted_proxies
from wsproxy.record import Recordings
from wsproxy.relay import Relay, scratch_buffer
from wsproxy.session import Session, tune_socket
from wsproxy.settings import Address, Settings, format_address
from wsproxy.targets import Connector, FixedTarget, Targets, TokenTargets, WrappedTarget
from wsproxy.traffic import write_legend
from wsproxy.wrap import WrappedProgram

__all__ = ["WSProxy"]

log = logging.getLogger(__name__)

KILL_WAIT = 1.0  # seconds killed sessions get to unwind (close their sockets) after the deadline


class WSProxy(StreamServer):
    """A WebSocket-to-TCP proxy server.

    Args:
        listen: ``(host, port)`` or ``"[HOST:]PORT"``; port 0 picks a free one (see
            :attr:`server_port` after :meth:`start`).
        target: ``(host, port)`` or ``"HOST:PORT"`` of the TCP service; or ``wrap=`` a program
            to start and relay to (see :mod:`wsproxy.wrap`).
        settings: a complete :class:`~wsproxy.settings.Settings` instead of the above.
        **options: any other setting by name (``web="www"``, ``max_connections=100``, ...).

    Raises:
        ConfigError: an unknown option or a value of the wrong form; rebind.so not found.
    """

    session_class = Session
    backlog = 1024  # pending connections the kernel queues for us (gevent's default is 256)

    def __init__(
        self,
        listen: Address | str | None = None,
        target: Address | str | None = None,
        *,
        settings: Settings | None = None,
        **options: Any,
    ) -> None:
        if settings is None:
            settings = Settings.create(listen=listen, target=target, **options)
        self.settings = settings
        self.auth = Authenticator(settings) if settings.auth_plugin else None
        web_auth = self.auth.check_web if self.auth is not None and settings.web_auth else None
        # TLS context, web root: built once, checked now.
        self.frontdoor = FrontDoor(settings, web_auth=web_auth)
        self.sessions: set[Session] = set()
        self._context: Context | None = None
        self._stopping = False
        self._stopper: gevent.Greenlet | None = None
        self._drainer: gevent.Greenlet | None = None
        self.handed_over = False  # an upgrade gave the port (and the wrapped program) away
        self._sweeper: gevent.Greenlet | None = None
        self._heartbeat: gevent.Greenlet | None = None
        self.listener: Listener | None = None
        self._retired = False  # no longer accepting: waiting for the open sessions to end
        self.lifetime = Lifetime(
            settings, active=lambda: len(self.sessions), retire=self.retire, stop=self.stop
        )
        self._listener_tuned = False  # see init_socket()
        self.scratch = scratch_buffer()  # the relays' shared read buffer (see relay.py)
        # -- traffic: recording, load balancers, metrics --
        self.recordings = Recordings(settings.record) if settings.record else None
        self.trusted_proxies = trusted_proxies(settings)
        self.metrics = open_metrics(settings)
        self.wrapped: WrappedProgram | None = None
        if settings.wrap:
            self.wrapped = WrappedProgram(
                settings.wrap,
                mode=settings.wrap_mode,
                rebind_lib=settings.rebind_lib,
                connect_timeout=settings.wrap_connect_timeout,
                on_exit=self._wrapped_exited,
                stop_grace=settings.graceful_timeout,
                on_restart=self.metrics.wrap_restarts.inc,
            )
        self.targets = self.make_targets(settings)
        self.max_connections = admission.connection_cap(settings)
        self.doorman = Doorman(
            lambda: self.metrics.handshake_failed("503"),
            max_lingering=admission.fd_reserve(admission.fd_limit()),
        )
        self.per_client = ClientCounts(settings.max_connections_per_ip)
        # Always a pool: it is what stop() waits on. It is never full: do_read() answers the
        # clients past max_connections with 503 instead of leaving them in the backlog.
        # The listener itself is made by get_listener (UNIX socket, inetd, -6): gevent needs
        # an address of some form here.
        super().__init__(settings.listen or ("", 0), spawn=Pool())

    # -- what sessions share --

    def make_targets(self, settings: Settings) -> Targets:
        """The target selection the settings ask for (see :mod:`wsproxy.targets`)."""
        connector = Connector(settings)
        if self.wrapped is not None:
            return WrappedTarget(self.wrapped, settings.unix_target, connector)
        if settings.token_plugin:
            return TokenTargets(load_lookup(settings), connector)
        target = settings.unix_target or settings.target
        assert target is not None
        return FixedTarget(target, connector)

    @property
    def context(self) -> Context:
        """What the next session is started with (built once it is bound)."""
        if self._context is not None:
            return self._context
        context = Context(
            settings=self.settings,
            frontdoor=self.frontdoor,
            targets=self.targets,
            metrics=self.metrics,
            trusted_proxies=self.trusted_proxies,
            recordings=self.recordings,
            scratch=self.scratch,
            auth=self.auth,
            per_client=self.per_client,
            listen_port=(self.server_port or 0) if self.socket is not None else 0,
            listener_tuned=self._listener_tuned,
        )
        if self.socket is not None:
            self._context = context
        return context

    def reload(self, settings: Settings | None = None) -> None:
        """SIGHUP: re-read the token source; or, given ``settings``, build all the next sessions
        use from them and switch to it only if all of it builds (raises ConfigError, nothing
        changed). Open sessions keep their context. (:mod:`wsproxy.reload` builds off the hub
        with :meth:`prepare`, then calls :meth:`switch` on it.)"""
        if settings is None:
            self.targets.reload()
            log.info("reloaded targets=%s", self.targets.describe())
            return
        self.switch(self.prepare(settings))

    def prepare(self, settings: Settings, step: Callable[[str], None] | None = None) -> Rebuilt:
        """What the next sessions would use with ``settings`` (files read, plug-ins created);
        changes nothing here, so it may run in a thread. Raises ConfigError."""
        return rebuild(settings, self.make_targets, self.settings, self.recordings, step)

    def switch(self, new: Rebuilt) -> None:
        """Serve the next sessions with ``new`` (on the hub; open sessions keep theirs)."""
        settings = new.settings
        share_pool(new.auth, self.auth)
        if isinstance(new.targets, TokenTargets) and isinstance(self.targets, TokenTargets):
            share_pool(new.targets.lookup, self.targets.lookup)
        idle_changed = settings.session_idle_timeout != self.settings.session_idle_timeout
        # The caps apply to the next clients; open sessions are not cut.
        self.max_connections = admission.connection_cap(settings)
        self.per_client.limit = settings.max_connections_per_ip
        self.settings = settings
        self.frontdoor, self.trusted_proxies = new.frontdoor, new.trusted_proxies
        self.targets, self.recordings, self.auth = new.targets, new.recordings, new.auth
        self._context = None  # the next session gets one built from the above
        if idle_changed and self._sweeper is not None:
            self._sweeper.kill(block=False)
            self._sweeper = None
        if idle_changed and settings.session_idle_timeout > 0 and self.started:
            self._start_sweeper(settings.session_idle_timeout)

    # -- wrapped program --

    def start(self, *, run_program: bool = True) -> None:
        """Bind (unless :meth:`init_socket` did) and accept, serve the metrics port; then start
        the wrapped program, if any, for the bound port. ``run_program=False`` in a worker:
        another process runs the program, we connect to it.

        Raises:
            OSError: cannot listen. StartupError: the metrics port is taken, or the wrapped
            program cannot be started.
        """
        super().start()
        settings = self.settings
        if settings.session_idle_timeout > 0:
            self._start_sweeper(settings.session_idle_timeout)
        if settings.heartbeat > 0:
            beat = Heartbeat(settings.heartbeat, self._relays, settings.close_timeout)
            self._heartbeat = gevent.spawn(beat.run)
        if settings.traffic:
            write_legend()
        self.lifetime.start()
        try:
            self.metrics.start(healthy=lambda: not self._stopping)
            if self.wrapped is not None and run_program:
                self.wrapped.start(self.server_port or 0)
        except BaseException:
            self.metrics.stop()
            self.close()
            raise

    @property
    def exit_status(self) -> int:
        """0, or the wrapped program's status when its exit stopped us (``wrap_mode=exit``)."""
        status = self.wrapped.exit_status if self.wrapped is not None else None
        return status or 0

    def _wrapped_exited(self, status: int) -> None:
        log.info("stopping: wrapped program exited status=%d", status)
        gevent.spawn(self.stop)

    # -- serving --

    def init_socket(self) -> None:
        """Bind the metrics port (if any) and the listening socket, so that both fail in the
        foreground (before a daemon detaches); raises StartupError or OSError."""
        try:
            self.metrics.bind()
        except OSError as exc:
            address = format_address(self.settings.metrics_listen)
            raise StartupError(
                f"cannot listen for metrics on {address}: {exc.strerror or exc}"
            ) from None
        try:
            super().init_socket()
        except BaseException:
            self.metrics.stop()
            raise
        # Accepted sockets inherit TCP_NODELAY and the keepalive options on Linux only.
        self._listener_tuned = sys.platform == "linux" and tune_socket(self.socket)

    def get_listener(self, address: Any, backlog: Any = None, family: Any = None) -> Any:
        """gevent's hook for binding: TCP (host names in websockify's family order), a UNIX
        socket or the inetd socket, as the settings say (see :mod:`wsproxy.listeners`)."""
        self.listener = open_listener(self.settings, backlog or self.backlog)
        return self.listener.sock

    @property
    def listen_name(self) -> str:
        """How the log names where we listen."""
        if self.listener is not None:
            return self.listener.name
        return format_address(self.address)

    def do_read(self) -> tuple[Any, Any] | None:
        """Accept one client, or turn it away with 503 past ``max_connections`` or when out of
        file descriptors. Replaces gevent's, which waits in the backlog while its pool is full
        and prints a traceback on every failed ``accept()``."""
        listener = self.socket
        try:
            fd, address = listener._accept()
        except BlockingIOError:
            return None
        except OSError as exc:
            if exc.errno in self.fatal_errors:  # the listener itself is broken: stop
                log.error("stopped accepting: %s", exc.strerror or exc)
                self.close()
                return None
            pause = self.doorman.accept_failed(listener, exc)
            if pause:
                self.stop_accepting()
                gevent.spawn_later(pause, self._start_accepting_if_started)
            return None
        if self.max_connections and self.open_sessions >= self.max_connections:
            self.doorman.turn_away(fd, f"at max_connections {self.max_connections}")
            return None
        return gevent_socket(listener.family, listener.type, listener.proto, fileno=fd), address

    def handle(self, sock: Any, address: Any) -> None:
        if self._stopping:  # accepted just before stop(): it will not be closed, so drop it
            sock.close()
            return
        # Accepted before a drain or --timeout retired the listener (gevent runs a handler a
        # loop turn after its accept): served, since the drain waits for the pool.
        session = self.session_class(sock, address, self.context)
        log.debug("accepted peer=%s", session.peer)
        self.sessions.add(session)
        try:
            session.run()
        finally:
            self.sessions.discard(session)
            self.lifetime.ended(session.relay is not None)

    def _relays(self) -> list[tuple[str, Relay]]:
        return [(s.peer, s.relay) for s in self.sessions if s.relay is not None]

    def start_accepting(self) -> None:
        if not self._retired:  # gevent restarts accepting when a pool slot frees
            super().start_accepting()

    def retire(self) -> None:
        """Stop accepting (the listener is closed) and stop once the open sessions have ended,
        however long they take (websockify's ``--timeout``)."""
        self._retired = True
        self.stop_accepting()
        self._close_listener()
        gevent.spawn(self._stop_when_drained)

    def _stop_when_drained(self) -> None:
        self.pool.join()
        self.stop()

    def _close_listener(self) -> None:
        with contextlib.suppress(OSError, AttributeError):
            self.socket.close()
        if self.listener is not None:
            self.listener.remove()

    def stop(self, timeout: float | None = None) -> None:
        """Stop within one deadline of ``timeout`` (default ``graceful_timeout``): stop accepting,
        close every relay with 1001, wait for the sessions to end and kill those left at the
        deadline (they get up to ``KILL_WAIT`` more to unwind); only then stop the wrapped program,
        whose own SIGTERM-to-SIGKILL grace starts there.

        Every call waits for the same stop, so calling it again (gevent's ``serve_forever`` does
        once :meth:`close` wakes it) neither restarts the clock nor stops the program early.
        """
        if self._drainer is not None and self._drainer is not gevent.getcurrent():
            self._drainer.kill(block=False)  # SIGTERM while draining: stop now
        if self._stopper is None:
            if timeout is None:
                timeout = self.settings.graceful_timeout
            self._stopper = gevent.spawn(self._stop, time.monotonic() + timeout)
        self._stopper.join()

    def drain(self) -> None:
        """After an upgrade (the new process serves): stop accepting, give up the metrics port,
        and let the open sessions run until they end or ``upgrade_drain_timeout``; then stop as
        on SIGTERM, without stopping the wrapped program (it was handed over)."""
        if self._drainer is not None or self._stopper is not None:
            return
        self.handed_over = self._retired = True  # _retired: accepting never starts again
        self.stop_accepting()
        if self.listener is not None:
            self.listener.unix_path = None  # a UNIX socket file is the new process's now
        self.metrics.stop()
        self._drainer = gevent.spawn(self._drain)

    def _drain(self) -> None:
        limit = self.settings.upgrade_drain_timeout
        log.info(
            "upgrade: no longer accepting, draining session(s)=%d upgrade_drain_timeout=%s",
            self.open_sessions,
            f"{limit:g}" if limit else "none",
        )
        deadline = time.monotonic() + limit if limit else None
        self.pool.join(timeout=None if deadline is None else _left(deadline))
        self.stop()

    @property
    def open_sessions(self) -> int:
        """Connections being handled now (handshaking, relaying or served by the web server)."""
        return len(self.pool)

    def _start_sweeper(self, idle: float) -> None:
        self._sweeper = gevent.spawn(IdleSweep(idle, self._relays).run)

    def _stop(self, deadline: float) -> None:
        self._stopping = True
        self.lifetime.cancel()
        for helper in (self._sweeper, self._heartbeat):
            if helper is not None:
                helper.kill(block=False)
        self.close()
        if self.listener is not None:
            self.listener.remove()
        if self.sessions:
            log.info("stopping: closing %d session(s)", len(self.sessions))
        closers = [gevent.spawn(s.going_away) for s in list(self.sessions)]
        gevent.joinall(closers, timeout=_left(deadline))
        gevent.killall(closers, block=False)
        self.pool.join(timeout=_left(deadline))
        if self.open_sessions:
            log.info("stopping: cutting %d session(s) at graceful_timeout", self.open_sessions)
            self.pool.kill(block=True, timeout=KILL_WAIT)
        if self.wrapped is not None and not self.handed_over:
            self.wrapped.stop()  # waits until the program's group is gone
        self.metrics.stop()
        self.doorman.close()


def _left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.0)
