"""SIGUSR2: upgrade in place, as nginx and gunicorn do, with no refused connection.

The running process (the old one) starts a new copy of wsproxy: the same command line, in the
directory it was first started from, with the code installed now. The new process inherits the
listening socket (and the metrics socket) as open file descriptors whose numbers it finds in the
environment, so the port is never closed: while both processes hold it, the kernel queues new
connections for whichever accepts first. The new process reports on a pipe, as a daemon reports to
its foreground (:class:`wsproxy.daemon.Readiness`), once it serves and its pid file names it. Only
then does the old process stop accepting; its open sessions run on until they end (or
``upgrade_drain_timeout``), then it exits 0. A new process that fails says why on the same pipe
(or exits): the old one logs it and serves on as before.

A wrapped program is handed over, not restarted: its pid, moved port and output pipes go to the
new process, which relays to it, logs its output and watches for its exit (see
:mod:`wsproxy.adopt`); under ``--workers`` the master asks the program's keeper for them
(:mod:`wsproxy.keeperlink`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import gevent.select
import gevent.socket

from wsproxy.admission import restore_fd_limit
from wsproxy.daemon import MAX_REPORT_BYTES, READY_TIMEOUT, READY_WORD, Readiness
from wsproxy.keeperlink import KeeperLink
from wsproxy.listeners import Listener
from wsproxy.metrics import Metrics
from wsproxy.reload import ConfigReader
from wsproxy.settings import format_address

if TYPE_CHECKING:
    from wsproxy.server import WSProxy

__all__ = [
    "LISTEN_FD_ENV",
    "METRICS_FD_ENV",
    "READY_FD_ENV",
    "UPGRADE_FROM_ENV",
    "WRAP_ENV",
    "Handover",
    "NewCopy",
    "plan_copy",
    "start_new_copy",
    "take_over",
    "upgrade_master",
    "upgrade_server",
]

log = logging.getLogger(__name__)

LISTEN_FD_ENV = "WSPROXY_LISTEN_FD"  # the listening socket: use it instead of binding
METRICS_FD_ENV = "WSPROXY_METRICS_FD"  # the metrics socket, likewise
READY_FD_ENV = "WSPROXY_READY_FD"  # where the new process reports "ready" or why it failed
UPGRADE_FROM_ENV = "WSPROXY_UPGRADE_FROM"  # the old pid: the pid file naming it may be replaced
WRAP_ENV = "WSPROXY_WRAP"  # the wrapped program: "PID PORT STDOUT_FD STDERR_FD"
EXIT_WAIT = 2.0  # seconds to wait for the exit status of a new process that gave up
ENV_NAMES = (LISTEN_FD_ENV, METRICS_FD_ENV, READY_FD_ENV, UPGRADE_FROM_ENV, WRAP_ENV)


@dataclass
class Handover:
    """The new process's side: what the old one handed over (all None when not an upgrade).

    Read once, at start, by :meth:`from_environment`, which also removes the variables so that
    workers and the wrapped program do not see them.
    """

    listen_fd: int | None = None
    metrics_fd: int | None = None
    readiness: Readiness | None = None
    old_pid: int | None = None
    wrap: tuple[int, int, int, int] | None = None  # pid, moved port, stdout fd, stderr fd

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None) -> Handover:
        env = os.environ if environ is None else environ
        values = {name: env.pop(name, "") for name in ENV_NAMES}

        def number(name: str) -> int | None:
            text = values[name].strip()
            return int(text) if text.isdigit() else None

        def descriptor(name: str) -> int | None:
            fd = number(name)
            if fd is None:
                return None
            try:
                os.fstat(fd)
            except OSError:  # not open here: a stray variable, not a hand-over
                return None
            return fd

        ready = descriptor(READY_FD_ENV)
        w = [int(v) for v in values[WRAP_ENV].split() if v.isdigit()]
        return cls(
            listen_fd=descriptor(LISTEN_FD_ENV),
            metrics_fd=descriptor(METRICS_FD_ENV),
            readiness=Readiness(ready) if ready is not None else None,
            old_pid=number(UPGRADE_FROM_ENV),
            wrap=(w[0], w[1], w[2], w[3]) if len(w) == 4 else None,
        )


@dataclass
class NewCopy:
    """What the old process hands over: the command line, its directory and the descriptors."""

    argv: Sequence[str]
    cwd: str
    fds: dict[str, int]  # environment name -> descriptor
    wrap: tuple[int, int, int, int] | None = None
    env: Mapping[str, str] = field(default_factory=lambda: os.environ)


def command(argv: Sequence[str]) -> list[str]:
    """How to run the installed wsproxy again: the console script it was started as, or
    ``python -m wsproxy`` (``sys.argv[0]`` is then the package's ``__main__.py``)."""
    script = sys.argv[0]
    if os.path.basename(script) == "__main__.py" or not os.path.exists(script):
        return [sys.executable, "-m", "wsproxy", *argv]
    return [sys.executable, os.path.abspath(script), *argv]


def start_new_copy(
    copy: NewCopy, wait_readable: Callable[[int, float], bool], timeout: float = READY_TIMEOUT
) -> str | None:
    """Start the new process and wait (``wait_readable(fd, seconds)``: cooperative in a gevent
    process, a plain select in the master) for its report. Returns None once it is ready, else
    the reason it is not (it failed, or did not report within ``timeout``: it is then killed).
    """
    read_end, write_end = os.pipe()
    env = {k: v for k, v in copy.env.items() if k not in ENV_NAMES}
    env.update({name: str(fd) for name, fd in copy.fds.items()})
    env[READY_FD_ENV] = str(write_end)
    env[UPGRADE_FROM_ENV] = str(os.getpid())
    fds = [write_end, *copy.fds.values()]
    if copy.wrap is not None:
        env[WRAP_ENV] = " ".join(str(n) for n in copy.wrap)
        fds += copy.wrap[2:]
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    try:
        proc = subprocess.Popen(
            command(copy.argv),
            cwd=copy.cwd,
            env=env,
            pass_fds=fds,
            stdin=subprocess.DEVNULL,
            preexec_fn=restore_fd_limit,  # it raises its own, and its programs get the user's
        )
    except OSError as exc:
        os.close(read_end)
        return f"cannot start {sys.executable}: {exc.strerror or exc}"
    finally:
        os.close(write_end)
    try:
        report = _read_report(read_end, wait_readable, timeout)
    finally:
        os.close(read_end)
    if report == READY_WORD:
        log.info("upgrade: the new process is ready (started as pid=%d)", proc.pid)
        return None
    if not report:
        with contextlib.suppress(OSError):
            proc.kill()
        return f"the new process pid={proc.pid} did not report within {timeout:g} s (killed)"
    reason = report.decode("utf-8", "replace").strip()
    if reason:
        return reason
    try:
        status = f"status={proc.wait(EXIT_WAIT)}"
    except subprocess.TimeoutExpired:
        status = "and closed its report pipe"
    return f"the new process pid={proc.pid} exited during start-up {status}"


def _read_report(fd: int, wait_readable: Callable[[int, float], bool], timeout: float) -> bytes:
    """The report line; b"\\n" when the pipe closed without one, b"" on time-out."""
    report = b""
    deadline = time.monotonic() + timeout
    while not report.endswith(b"\n") and len(report) < MAX_REPORT_BYTES:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not wait_readable(fd, remaining):
            return b""
        chunk = os.read(fd, MAX_REPORT_BYTES)
        if not chunk:
            return report + b"\n"
        report += chunk
    return report


def plan_copy(
    server: WSProxy, reader: ConfigReader, keeper: KeeperLink | None = None
) -> NewCopy | str:
    """What the new copy of ``server``'s process gets, or why there can be no upgrade. Under
    ``--workers`` the wrapped program's ``keeper`` says what to hand over of it."""
    settings = server.settings
    if server.handed_over:
        return "this process has handed over to a new one already and is draining"
    if settings.inetd or settings.run_once:
        return "not with inetd or run_once: there is no port to hand over"
    fds = {LISTEN_FD_ENV: int(server.socket.fileno())}
    metrics_fd = server.metrics.fileno()
    if metrics_fd is not None:
        fds[METRICS_FD_ENV] = metrics_fd
    wrap = None
    if keeper is not None:
        wrap = keeper.ask()
    elif server.wrapped is not None:
        wrap = server.wrapped.handover()
    return NewCopy(reader.argv, reader.cwd, fds, wrap)


def upgrade_server(server: WSProxy, reader: ConfigReader) -> None:
    """SIGUSR2 in a single process (in a greenlet): start the new copy; once it is ready, hand
    the wrapped program over and drain. On failure log why and serve on."""
    copy = plan_copy(server, reader)
    reason = copy if isinstance(copy, str) else start_new_copy(copy, _gevent_readable)
    if reason is not None:
        log.error("upgrade failed, still serving: %s", reason)
        return
    if server.wrapped is not None:
        server.wrapped.release()
    server.drain()


def _gevent_readable(fd: int, timeout: float) -> bool:
    return bool(gevent.select.select([fd], [], [], timeout)[0])


def take_over(server: WSProxy, handover: Handover) -> None:
    """After an upgrade: serve on the sockets the old process handed over instead of binding."""
    if handover.listen_fd is not None:
        sock = gevent.socket.socket(fileno=handover.listen_fd)
        where = sock.getsockname()
        if sock.family == socket.AF_UNIX:  # this process removes the file when it exits
            inode, pid = os.stat(where).st_ino, os.getpid()
            name = format_address(where)
            listener = Listener(sock, name, unix_path=where, unix_inode=inode, owner_pid=pid)
        else:
            listener = Listener(sock, format_address(where))
        server.listener = listener
        server.set_listener(sock)
    if handover.metrics_fd is not None and isinstance(server.metrics, Metrics):
        server.metrics.listener = gevent.socket.socket(fileno=handover.metrics_fd)
    if handover.wrap is not None and server.wrapped is not None:
        server.wrapped.adopt(*handover.wrap)


def upgrade_master(server: WSProxy, reader: ConfigReader, keeper: KeeperLink | None = None) -> bool:
    """SIGUSR2 in the ``--workers`` master: start the new copy, True once it is ready; the
    ``keeper`` of a wrapped program then lets go of it (else keeps it)."""
    copy = plan_copy(server, reader, keeper)
    reason = copy if isinstance(copy, str) else start_new_copy(copy, _readable)
    if keeper is not None:
        keeper.answer(release=reason is None)
    if reason is not None:
        log.error("upgrade failed, still serving: %s", reason)
        return False
    return True


def _readable(fd: int, timeout: float) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])
