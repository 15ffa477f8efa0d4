"""The wrapped program: ``wsproxy PORT -- PROGRAM ARGS``.

wsproxy listens on PORT itself and starts PROGRAM with ``LD_PRELOAD=rebind.so``, which turns the
program's ``bind()`` of PORT (on a wildcard or loopback address) into a bind of loopback on a free
port picked here; clients are relayed to that port. The program runs in its own session and process
group, its output goes to our log line by line, and what happens when it exits is the wrap mode:

- ``exit``: wsproxy stops (clients get 1001) and exits with the program's status;
- ``ignore``: logged, wsproxy keeps serving (programs that daemonize, like ``vncserver``);
- ``respawn``: started again after a back-off (programs that serve one connection).

The moved port, the library and the program's environment: :mod:`wsproxy.rebinding`.

wsproxy makes itself a child subreaper (Linux): descendants the program leaves behind are
re-parented to us rather than to PID 1, so gevent's SIGCHLD handler reaps them and no zombie is
left even where PID 1 does not reap.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from http import HTTPStatus
from typing import Any

import gevent
import gevent.event
import gevent.socket
import gevent.subprocess

from wsproxy.admission import restore_fd_limit
from wsproxy.adopt import AdoptedProcess
from wsproxy.children import Backoff, status_of
from wsproxy.dial import dial
from wsproxy.errors import HandshakeError, StartupError
from wsproxy.procgroup import become_subreaper, signal_group, wait_group_gone
from wsproxy.rebinding import LOOPBACKS, PortSlot, find_rebind_lib, pick_port, rebind_env
from wsproxy.settings import format_address

__all__ = ["WrappedProgram"]

log = logging.getLogger(__name__)

MAX_LOG_LINE = 4096  # bytes of one output line logged at once; the rest follows as another line
BACKOFF_MIN = 0.1  # first respawn delay (seconds); doubles after each short run ...
BACKOFF_MAX = 30.0  # ... up to this cap
HEALTHY_RUN = 10.0  # a run at least this long resets the back-off
STOP_GRACE = 5.0  # SIGTERM to the program's group, then SIGKILL after this long
KILL_WAIT = 2.0  # time for the kernel to finish off a SIGKILLed group
CONNECT_PAUSE = 0.05  # first pause between connection attempts while the program starts ...
CONNECT_PAUSE_MAX = 0.5  # ... doubling up to this


class WrappedProgram:
    """One wrapped program and its restarts; :meth:`start` it after the listener is bound.

    Args:
        argv: the program and its arguments (looked up in ``PATH``).
        mode: ``exit``, ``ignore`` or ``respawn``.
        rebind_lib: ``--rebind-lib`` or None for the built-in search (see :func:`find_rebind_lib`).
        connect_timeout: how long :meth:`connect` waits for the program to accept.
        on_exit: called with the exit status when the program exits in ``exit`` mode.
        on_restart: called each time the program is started again (``respawn`` mode).

    Raises:
        ConfigError: rebind.so cannot be found.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        mode: str,
        rebind_lib: str | None,
        connect_timeout: float,
        on_exit: Callable[[int], None],
        stop_grace: float = STOP_GRACE,
        on_restart: Callable[[], object] = lambda: None,
    ) -> None:
        self.argv = tuple(argv)
        self.name = os.path.basename(self.argv[0])
        self.mode = mode
        self.lib = find_rebind_lib(rebind_lib)
        self.connect_timeout = connect_timeout
        self.on_exit = on_exit
        self.on_restart = on_restart
        self.stop_grace = stop_grace
        self.listen_port = 0
        self.port = 0  # the moved port of the current run
        self.exit_status: int | None = None  # set when the program exits in exit mode
        self.slot: PortSlot | None = None  # where other processes read the moved port
        self.env: Mapping[str, str] | None = None  # the program's environment; None: ours
        self.cwd = os.getcwd()  # the program runs where wsproxy was started, even as a daemon
        self.proc: Any = None
        self.started = 0.0  # monotonic time of the current run's start
        self.restarts = 0
        self._host = LOOPBACKS[0]
        self._backoff = Backoff(first=BACKOFF_MIN, cap=BACKOFF_MAX, healthy=HEALTHY_RUN)
        self._stopping = False
        self._supervisor: gevent.Greenlet | None = None
        self._readers: list[gevent.Greenlet] = []
        self._stopper: gevent.Greenlet | None = None
        self._wake = gevent.event.Event()  # set when keeping the program ends: stop, release
        self._adopted: tuple[int, int, int, int] | None = None

    # -- life cycle --

    def start(self, listen_port: int) -> None:
        """Start the program for the listener on ``listen_port``, and watch it. On Linux this
        makes the whole process a child subreaper (see the module docstring).

        Raises:
            StartupError: the program cannot be executed (not found, not executable).
        """
        self.listen_port = listen_port
        become_subreaper()
        if self._adopted is not None:
            pid, port, stdout_fd, stderr_fd = self._adopted
            try:
                self._watch(AdoptedProcess(pid, stdout_fd, stderr_fd), port)
                log.info("wrap adopted name=%s pid=%d moved_to=%d", self.name, pid, port)
            except ProcessLookupError:
                log.info("wrap %s[%d] handed over but gone: starting it", self.name, pid)
                self._spawn()
        else:
            self._spawn()
        self._supervisor = gevent.spawn(self._supervise)

    def adopt(self, pid: int, port: int, stdout_fd: int, stderr_fd: int) -> None:
        """An upgrade handed the running program over: :meth:`start` watches it instead of
        starting one (see :mod:`wsproxy.adopt`)."""
        self._adopted = (pid, port, stdout_fd, stderr_fd)

    def handover(self) -> tuple[int, int, int, int] | None:
        """What the new process of an upgrade needs to adopt the program: pid, moved port and
        the output pipes; None when no program runs (the new process then starts one)."""
        if self.proc is None or self.proc.stdout is None or self.proc.stderr is None:
            return None
        return self.proc.pid, self.port, self.proc.stdout.fileno(), self.proc.stderr.fileno()

    def release(self) -> None:
        """The new process has adopted the program: stop watching it and leave it running."""
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.kill(block=False)
        gevent.killall(self._readers, block=False)
        self.proc = None
        self._wake.set()  # keep() returns: the program is the new process's now

    def keep(self, listen_port: int) -> int:
        """Run the program in this process until SIGTERM/SIGINT or, in exit mode, until it exits;
        returns the program's status (exit mode) or 0. This is the body of the process that owns
        the program under ``--workers``: workers only connect (see :attr:`slot`).
        """
        self.on_exit = lambda status: self._wake.set()
        for signum in (signal.SIGTERM, signal.SIGINT):
            gevent.signal_handler(signum, self._wake.set)
        self.start(listen_port)
        self._wake.wait()
        self.stop()
        return self.exit_status or 0

    def stop(self) -> None:
        """SIGTERM the program's process group, SIGKILL it after the grace period, and return once
        the group is gone. Every call waits for the same work, so it is safe to call twice."""
        self._stopping = True
        self._wake.set()
        if self._stopper is None:
            self._stopper = gevent.spawn(self._stop)
        self._stopper.join()

    def _stop(self) -> None:
        # The supervisor goes first, so that no respawn starts behind our back.
        if self._supervisor is not None:
            self._supervisor.kill()
        if self.proc is not None:
            self._end_group(self.proc.pid, self.stop_grace)
        gevent.joinall(self._readers, timeout=KILL_WAIT)
        gevent.killall(self._readers)

    def connect(self, unix_path: str | None = None) -> tuple[Any, str]:
        """Connect to the program's moved port (or to the UNIX socket it serves, ``--unix-target``),
        waiting up to ``connect_timeout`` for it to accept (it may still be starting or
        respawning). Returns the socket and its address for the log.

        Raises:
            HandshakeError: 502 when it did not accept in time.
        """
        deadline = time.monotonic() + self.connect_timeout
        pause = CONNECT_PAUSE
        reason = "not started"
        while True:
            port = self.slot.get() if self.slot is not None else self.port
            hosts = (self._host, *(h for h in LOOPBACKS if h != self._host))
            for address in [unix_path] if unix_path else [(host, port) for host in hosts]:
                remaining = max(deadline - time.monotonic(), 0.01)
                try:
                    sock = dial(address, remaining)
                except OSError as exc:
                    if not isinstance(exc, socket.timeout) and exc.errno != errno.EADDRNOTAVAIL:
                        reason = exc.strerror or str(exc)
                    continue
                sock.settimeout(None)
                if not isinstance(address, str):
                    self._host = address[0]
                return sock, format_address(address)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                where = format_address(unix_path) if unix_path else f"port {port}"
                raise HandshakeError(
                    HTTPStatus.BAD_GATEWAY,
                    f"wrapped program {self.name} did not accept on {where} within "
                    f"{self.connect_timeout:g}s: {reason}",
                )
            gevent.sleep(min(pause, remaining))
            pause = min(pause * 2, CONNECT_PAUSE_MAX)

    # -- internals --

    def _spawn(self) -> None:
        """Pick a port and start one run of the program."""
        self.port = pick_port()  # closed again at once: see wsproxy.rebinding
        if self.slot is not None:
            self.slot.set(self.port)
        base = os.environ if self.env is None else self.env
        env = rebind_env(base, self.lib, self.listen_port, self.port)
        try:
            proc = gevent.subprocess.Popen(
                self.argv,
                env=env,
                stdin=gevent.subprocess.DEVNULL,
                stdout=gevent.subprocess.PIPE,
                stderr=gevent.subprocess.PIPE,
                start_new_session=True,  # own session and process group: we signal the group
                close_fds=True,
                cwd=self.cwd,
                preexec_fn=restore_fd_limit,  # the user's limit, not the one we raised
            )
        except OSError as exc:
            self.proc = None
            raise StartupError(f"cannot start {self.argv[0]}: {exc.strerror or exc}") from None
        self._watch(proc, self.port)
        log.info(
            "wrap started name=%s pid=%d port=%d moved_to=%d",
            self.name,
            proc.pid,
            self.listen_port,
            self.port,
        )

    def _watch(self, proc: Any, port: int) -> None:
        """Relay to ``port`` and log the output of ``proc`` (ours, or adopted)."""
        self.proc, self.port = proc, port
        if self.slot is not None:
            self.slot.set(port)
        self.started = time.monotonic()
        self._readers = [r for r in self._readers if not r.dead]
        for stream in (proc.stdout, proc.stderr):
            self._readers.append(gevent.spawn(self._log_output, stream, proc.pid))

    def _log_output(self, stream: Any, pid: int) -> None:
        """Copy one of the program's output streams to the log, line by line."""
        try:
            while line := stream.readline(MAX_LOG_LINE):
                text = line.rstrip(b"\r\n").decode("utf-8", "replace")
                log.info("wrap %s[%d]: %s", self.name, pid, text)
        except (OSError, ValueError):  # closed under us at shutdown
            pass
        finally:
            with contextlib.suppress(OSError):
                stream.close()

    def _supervise(self) -> None:
        """Wait for each run to end and apply the mode."""
        while True:
            proc = self.proc
            if proc is not None:
                status = status_of(proc.wait())
                ran = time.monotonic() - self.started
                if self._stopping:
                    return
                log.info(
                    "wrap exited name=%s pid=%d status=%d secs=%.2f mode=%s",
                    self.name,
                    proc.pid,
                    status,
                    ran,
                    self.mode,
                )
            else:  # the last start failed
                status, ran = 127, 0.0
            if self.mode == "exit":
                self.exit_status = status
                self.on_exit(status)
                return
            if self.mode == "ignore":
                log.info(
                    "wrap exit ignored name=%s, still relaying to port %d", self.name, self.port
                )
                return
            if proc is not None:
                self._end_group(proc.pid, self.stop_grace)  # leftovers of the last run
            delay = self._backoff.after_run(ran)
            self.restarts += 1
            self.on_restart()
            log.info("wrap respawn name=%s restart=%d delay=%.1f", self.name, self.restarts, delay)
            if self._wake.wait(delay) or self._stopping:
                return
            try:
                self._spawn()
            except StartupError as exc:
                log.error("wrap %s", exc)

    def _end_group(self, pgid: int, grace: float) -> None:
        """SIGTERM the process group, SIGKILL it after ``grace``; return once it is gone."""
        if not signal_group(pgid, signal.SIGTERM):
            return
        if wait_group_gone(pgid, grace):
            return
        log.warning("wrap group pgid=%d still running after %.1fs: SIGKILL", pgid, grace)
        signal_group(pgid, signal.SIGKILL)
        if not wait_group_gone(pgid, KILL_WAIT):
            log.error("wrap group pgid=%d did not go away after SIGKILL", pgid)
