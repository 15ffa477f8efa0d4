"""The ``wsproxy`` command: settings from :mod:`wsproxy.arguments`, then logging, the start-up
order, signals and exit codes.

Exit status: 0 after a clean stop, 1 for an operational failure (port in use), 2 for bad input
(command line or configuration file).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING

import gevent

from wsproxy import admission, record
from wsproxy.arguments import build_usage, parse_args
from wsproxy.daemon import PidFile, Readiness, detach
from wsproxy.errors import ConfigError, StartupError
from wsproxy.forking import release_deferred_signals
from wsproxy.keeperlink import KeeperLink, keep_program
from wsproxy.logs import open_handlers, reopen_log_files
from wsproxy.metrics import Metrics
from wsproxy.paths import absolute_paths
from wsproxy.rebinding import PortSlot
from wsproxy.reload import ConfigReader, reload_server, reload_tokens
from wsproxy.settings import (
    Settings,
    format_address,
)
from wsproxy.tuning import freeze_startup_objects, lighten_greenlets, lighten_logging
from wsproxy.upgrade import Handover, take_over, upgrade_master, upgrade_server
from wsproxy.workermetrics import MetricsArbiter, ValueFiles
from wsproxy.workers import Arbiter

if TYPE_CHECKING:
    from wsproxy.server import WSProxy

__all__ = ["build_usage", "main", "parse_args", "run", "serve", "setup_logging"]

log = logging.getLogger("wsproxy")


def setup_logging(settings: Settings) -> None:
    """Install the log handlers the settings ask for (stderr, file, syslog); raises StartupError."""
    root = logging.getLogger()
    for handler in open_handlers(absolute_paths(settings)):
        root.addHandler(handler)
    root.setLevel(logging.DEBUG if settings.verbose else logging.INFO)


def run(
    settings: Settings, reader: ConfigReader | None = None, handover: Handover | None = None
) -> int:
    """Start in the order that keeps failures on the terminal, serve until SIGTERM/SIGINT, and
    return the exit status.

    Order: settings validated and the log opened (by the caller), paths made absolute -> server
    built (anything it reads, such as a certificate, is read now; under ``--workers`` with metrics,
    the value files every process records into come first) -> pid file claimed -> listener
    bound -> detach (``--daemon``) -> pid file written -> serve, in this process or in
    ``--workers`` processes.

    ``reader`` re-reads the configuration on SIGHUP (without it SIGHUP only reopens the logs and
    re-reads the token source); it also knows the command line SIGUSR2 starts again. After an
    upgrade, ``handover`` holds what the old process passed on: the sockets, used instead of
    binding, and the pipe to report on once serving.
    """
    from wsproxy.server import WSProxy

    settings = absolute_paths(settings)
    handover = handover or Handover()
    pid_file = PidFile(settings.pid_file, replacing=handover.old_pid) if settings.pid_file else None
    readiness: Readiness | None = None
    files: ValueFiles | None = None
    server: WSProxy | None = None
    try:
        if settings.metrics_listen and settings.workers > 1:
            files = ValueFiles()  # every process records into files: before any metric exists
        limits = admission.raise_fd_limit()  # before max_connections=auto is worked out
        server = WSProxy(settings=settings)
        take_over(server, handover)
        if pid_file:
            pid_file.claim()  # "already running" says more than "address in use"
        try:
            server.init_socket()  # bound and listening now; accepting starts where it serves
        except OSError as exc:
            raise _cannot_listen(settings, exc) from None
        _log_fd_limit(server, *limits)
        if settings.daemon:
            if not (settings.log_file or settings.syslog):
                print(
                    "wsproxy: warning: no --log-file or --syslog: the log is discarded",
                    file=sys.stderr,
                )
            readiness = detach()
            if server.listener is not None:
                server.listener.adopt()  # the daemon removes a --unix-listen file, not its parent
        if pid_file:
            pid_file.commit()
        reports = [r for r in (readiness, handover.readiness) if r is not None]
        if settings.workers > 1:
            companion: Callable[[], int] | None = None
            keeper: KeeperLink | None = None
            run_program = True
            program = server.wrapped
            if program is not None:
                # The program belongs to the master (one process keeps it), not to each worker.
                program.slot = PortSlot()
                if files:
                    program.env = files.program_env
                keeper = KeeperLink()
                companion = partial(
                    keep_program, program, server.server_port, server.socket, keeper
                )
                run_program = False
            master: Callable[..., Arbiter] = Arbiter
            if files:  # one endpoint for all processes, served by a child of the master
                assert isinstance(server.metrics, Metrics)
                master = partial(MetricsArbiter, metrics=server.metrics, files=files)
            arbiter = master(
                settings.workers,
                lambda: serve(server, run_program=run_program, reader=reader, worker=True),
                listener=server.socket,
                graceful_timeout=settings.graceful_timeout,
                reload=partial(reload_server, server, reader) if reader else reopen_log_files,
                companion=companion,
                upgrade=partial(upgrade_master, server, reader, keeper) if reader else None,
                ready=partial(_master_ready, server, reports),
            )
            freeze_startup_objects()  # before the fork: the workers inherit it
            return arbiter.run()
        return serve(server, *reports, reader=reader)
    except StartupError as exc:
        for failed in (readiness, handover.readiness):
            if failed:
                failed.failed(str(exc))
        raise
    finally:
        if server is not None and server.listener is not None:
            server.listener.remove()  # a --unix-listen socket file (the master's, with workers)
        if pid_file:
            pid_file.remove()
        if files:
            files.remove()


def serve(
    server: WSProxy,
    *reports: Readiness,
    run_program: bool = True,
    reader: ConfigReader | None = None,
    worker: bool = False,
) -> int:
    """Serve in this process (the only one, or a worker) until SIGTERM/SIGINT, and tell each
    of ``reports`` once serving. SIGHUP reopens the log files and reloads the configuration
    (:func:`wsproxy.reload.reload_server`; without ``reader`` the token source only). SIGUSR2
    upgrades in place (:func:`wsproxy.upgrade.upgrade_server`); in a ``worker`` it means the
    master's upgrade is done: drain."""
    try:
        server.start(run_program=run_program)
    except OSError as exc:
        raise _cannot_listen(server.settings, exc) from None

    def on_stop(signum: int) -> None:
        # Runs in the hub: only hand the work to a greenlet.
        log.info("received %s, stopping", signal.Signals(signum).name)
        gevent.spawn(server.stop)

    def on_hup() -> None:
        log.info("received SIGHUP, reloading the configuration")
        if reader is not None:
            gevent.spawn(reload_server, server, reader, announce=not worker)
            return
        reopen_log_files()
        gevent.spawn(reload_tokens, server)

    def on_usr2() -> None:
        if worker:
            gevent.spawn(server.drain)
        elif reader is not None and not upgrading:
            log.info("received SIGUSR2, starting a new copy to upgrade in place")
            upgrading.append(gevent.spawn(upgrade_server, server, reader))
            upgrading[0].link(lambda _: upgrading.clear())

    upgrading: list[gevent.Greenlet] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, on_stop, signum)
    gevent.signal_handler(signal.SIGHUP, on_hup)
    gevent.signal_handler(signal.SIGUSR2, on_usr2)
    release_deferred_signals()
    if server.settings.workers == 1:  # else the master said it
        _log_listening(server)
    for report in reports:
        report.ready()
    freeze_startup_objects()
    server.serve_forever()
    log.info("stopped")
    return server.exit_status


def _master_ready(server: WSProxy, reports: list[Readiness]) -> None:
    _log_listening(server)
    for report in reports:
        report.ready()


def _load(argv: Sequence[str], base: str) -> Settings:
    return absolute_paths(parse_args(argv, base), base)


def _cannot_listen(settings: Settings, exc: OSError) -> StartupError:
    reason = (exc.strerror or os.strerror(exc.errno)) if exc.errno else str(exc)
    where = format_address(settings.unix_listen) if settings.unix_listen else None
    return StartupError(f"cannot listen on {where or format_address(settings.listen)}: {reason}")


def _log_fd_limit(server: WSProxy, before: int, after: int) -> None:
    """Say what the open-file limit allows, and warn when max_connections asks for more."""
    raised = f"raised from {before} to {after}" if after > before else f"{after}"
    cap = server.max_connections
    auto = " (auto)" if server.settings.max_connections is None else ""
    log.info("open file limit %s: max_connections %s%s", raised, cap or "unlimited", auto)
    if cap > admission.auto_max_connections(after):
        log.warning(
            "max_connections %d needs more file descriptors than the limit %d leaves (2 per "
            "session): past them, new clients get 503; raise the limit (LimitNOFILE=, ulimit -n)",
            cap,
            after,
        )


def _log_listening(server: WSProxy) -> None:
    settings = server.settings
    if not settings.origins:
        # Said whatever the listen address: a loopback-only proxy is exactly what a page in the
        # local user's browser can reach (cross-site WebSocket hijacking of a local service).
        log.warning(
            "origins is empty: any web page open in a browser that can reach this port can "
            "connect to the target; set origins to the pages that may (README: Origin)"
        )
    if settings.libserver:
        log.info("--libserver is ignored: wsproxy has one server, this one")
    if settings.traffic and settings.daemon:
        log.warning("--traffic writes to standard error, which a daemon does not have")
    log.info("listening on %s, target %s", server.listen_name, server.targets.describe())


def main(argv: Sequence[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    handover = Handover.from_environment()
    try:
        if argv[:1] == ["record"]:  # a sub-command: no settings, no server
            raise SystemExit(record.command(argv[1:], sys.stdout))
        lighten_greenlets()
        lighten_logging()
        settings = parse_args(argv)
        setup_logging(settings)
        status = run(settings, ConfigReader(_load, argv, os.getcwd()), handover)
    except (ConfigError, StartupError) as exc:
        if handover.readiness:
            handover.readiness.failed(str(exc))
        print(f"wsproxy: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_status) from None
    raise SystemExit(status)
