"""The ``wsproxy`` command: usage text built from the settings table, argv + INI -> Settings,
logging, signals and exit codes.

Exit status: 0 after a clean stop, 1 for an operational failure (port in use), 2 for bad input
(command line or configuration file).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import textwrap
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import gevent
from docopt import DocoptExit, docopt

from wsproxy import __version__, admission, record
from wsproxy.daemon import PidFile, Readiness, absolute_paths, detach
from wsproxy.errors import ConfigError, StartupError
from wsproxy.keeperlink import KeeperLink, keep_program
from wsproxy.logs import open_handlers, reopen_log_files
from wsproxy.metrics import Metrics
from wsproxy.reload import ConfigReader, reload_server, reload_tokens
from wsproxy.settings import (
    SETTINGS,
    SETTINGS_BY_NAME,
    Setting,
    Settings,
    format_address,
    read_ini,
)
from wsproxy.tuning import freeze_startup_objects, lighten_greenlets, lighten_logging
from wsproxy.upgrade import Handover, take_over, upgrade_master, upgrade_server
from wsproxy.workermetrics import MetricsArbiter, ValueFiles
from wsproxy.workers import Arbiter
from wsproxy.wrap import PortSlot

if TYPE_CHECKING:
    from wsproxy.server import WSProxy

__all__ = ["build_usage", "main", "parse_args", "run", "serve", "setup_logging"]

log = logging.getLogger("wsproxy")

USAGE_HEAD = """\
wsproxy {version}: a WebSockets-to-TCP proxy, command-line compatible with websockify.

Usage:
  wsproxy [options] [<arg>...]
  wsproxy (-h | --help)
  wsproxy --version

The <arg>s take websockify's forms:
  wsproxy [options] [SOURCE_ADDR:]SOURCE_PORT TARGET_ADDR:TARGET_PORT
  wsproxy [options] --token-plugin CLASS [--token-source ARG] [SOURCE_ADDR:]SOURCE_PORT
  wsproxy [options] --unix-target FILE [SOURCE_ADDR:]SOURCE_PORT
  wsproxy [options] [SOURCE_ADDR:]SOURCE_PORT -- WRAP_COMMAND_LINE
  wsproxy [options] (--unix-listen FILE | --inetd) TARGET_ADDR:TARGET_PORT
  wsproxy record (show | stats) FILE
SOURCE_PORT alone listens on every address, IPv4 and IPv6; addresses are written
0.0.0.0:6080, localhost:6080, [::1]:6080; targets localhost:5900, [::1]:5900 or ::1:5900.
After --, a program to start and relay to: its bind() of SOURCE_PORT is moved to a free
loopback port (rebind.so), e.g. -- python3 -m http.server 6080

Options:
  -h, --help               show this help and exit
  --version                show the version and exit
  -c FILE, --config FILE   read settings from the [wsproxy] section of FILE;
                           options given here override the file
"""


def _option_line(row: Setting) -> str:
    assert row.flag is not None
    names = f"{row.short}, {row.flag}" if row.short else row.flag
    if row.meta:
        names += f" {row.meta}"
    help_text = f"switch off: {row.help}" if row.flag.startswith("--no-") else row.help
    if row.meta and row.default not in (None, (), ""):
        help_text += f" (default {row.format_default()})"
    left = f"  {names}"
    lines = textwrap.wrap(help_text, 100 - 27) or [""]
    out = f"{left:<27}{lines[0]}" if len(left) < 26 else f"{left}\n{'':<27}{lines[0]}"
    return "\n".join([out] + [f"{'':<27}{line}" for line in lines[1:]])


def build_usage() -> str:
    """The docopt usage text: the fixed head plus one option line per setting with a flag."""
    options = [_option_line(row) for row in SETTINGS if row.flag]
    return USAGE_HEAD.format(version=__version__) + "\n".join(options) + "\n"


def parse_args(argv: Sequence[str]) -> Settings:
    """Command line (and the file it names) -> validated Settings. Raises ConfigError.

    The positional arguments are assigned as websockify assigns them: the listen address
    (unless ``--inetd`` or ``--unix-listen`` replaces it), then the target (unless a token
    plug-in, a UNIX target or a program after ``--`` chooses it).
    """
    argv = list(argv)
    program: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, program = argv[:cut], argv[cut + 1 :]
        if not program:
            raise ConfigError("no program after --; see wsproxy --help", source="command line")
    # docopt-ng reads "-6" as a negative number, a positional argument: spell it out.
    argv = ["--prefer-ipv6" if arg == "-6" else arg for arg in argv]
    usage = build_usage()
    known = {"-h", "--help", "--version", "-c", "--config"}
    known |= {name for row in SETTINGS for name in (row.flag, row.short) if name}
    for arg in argv:
        name = arg.split("=", 1)[0]
        if name.startswith("--") and name not in known:
            raise ConfigError(f"unknown option {name}; see wsproxy --help", source="command line")
    try:
        args = docopt(usage, argv, default_help=False)
    except DocoptExit as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        message = "arguments do not match the usage" if "Warning" in first or not first else first
        raise ConfigError(f"{message}; see wsproxy --help", source="command line") from None
    if args["--help"]:
        print(usage, end="")
        raise SystemExit(0)
    if args["--version"]:
        print(f"wsproxy {__version__}")
        raise SystemExit(0)
    cli: dict[str, Any] = {}
    for row in SETTINGS:
        if not row.flag:
            continue
        value = args.get(row.flag)
        if row.is_bool:
            if value:
                cli[row.name] = not row.flag.startswith("--no-")
        elif value is not None:
            cli[row.name] = value
    if program:
        cli["wrap"] = tuple(program)
    ini: dict[str, tuple[str, int]] = {}
    source = ""
    if args["--config"]:
        source = args["--config"]
        ini = read_ini(_read_file(source), source)
    cli.update(_positionals(args["<arg>"], cli, ini))
    return Settings.load(ini=ini, ini_source=source, cli=cli)


def _positionals(
    values: list[str], cli: dict[str, Any], ini: dict[str, tuple[str, int]]
) -> dict[str, str]:
    """Name the positional arguments: ``listen`` then ``target``, each where it is needed."""

    def given(name: str) -> bool:
        if name in cli:
            return bool(cli[name])
        text = ini.get(name, ("", 0))[0]
        if not text.strip():
            return False
        try:
            return bool(SETTINGS_BY_NAME[name].parse(text))  # the value as the settings read it
        except ValueError:
            return True  # given, wrongly: the settings say so, naming the file and key

    names = []
    if not (given("inetd") or given("unix_listen")):
        names.append("listen")
    chosen = ("wrap", "unix_target", "token_plugin", "token_source", "target_config")
    if not any(given(name) for name in chosen):
        names.append("target")
    if len(values) > len(names):
        extra = values[len(names)]
        raise ConfigError(
            f"too many arguments: {extra!r}; see wsproxy --help", source="command line"
        )
    return dict(zip(names, values, strict=False))


def _read_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(
            f"cannot read the file: {reason}", source=path, expected="a readable INI file"
        ) from None


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


def _load(argv: Sequence[str]) -> Settings:
    return absolute_paths(parse_args(argv))


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
