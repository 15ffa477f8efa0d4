"""Pre-fork workers: a master process that keeps N serving processes alive (gunicorn's arbiter,
small).

The listening socket was bound before the master forks, so every worker accepts on the same socket
and the kernel gives each connection to one of them. The master serves nobody; it loops:

- signal handlers only queue the signal and wake the loop (no logging, no work in a handler);
- the loop takes the signals off the queue and dispatches them (``handle_<name>``), reaps workers
  that exited with ``waitpid(WNOHANG)`` (only its own workers: another child of the master, such
  as a wrapped program, is left to whoever started it), and starts missing workers, waiting a
  growing back-off while workers keep dying young;
- SIGTERM/SIGINT: SIGTERM to every worker, which stops accepting and closes its sessions with
  1001 within ``graceful_timeout``; whatever is left after that gets SIGKILL; the master returns 0;
- SIGHUP: the master runs its ``reload`` callback (log reopen, configuration check) and, unless
  it returned False (an invalid configuration), passes SIGHUP on;
- SIGUSR2: the master runs its ``upgrade`` callback, which starts a new master (see
  :mod:`wsproxy.upgrade`); once that one is ready, SIGUSR2 tells every worker to stop accepting
  and drain, and the master exits 0 when the last one has, replacing none.

Hooks for features that live in the master (a wrapped program, a metrics endpoint): override
:meth:`Arbiter.on_start`, :meth:`Arbiter.on_tick` (at least every ``WAKE_INTERVAL``),
:meth:`Arbiter.on_drain`, :meth:`Arbiter.on_stop` and :meth:`Arbiter.on_worker_exit`;
:attr:`Arbiter.restarts` counts replaced workers; :meth:`Arbiter.fork` starts a helper child
(the fork and the child's side of it: :mod:`wsproxy.forking`).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import select
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from wsproxy.children import Backoff, describe_status, status_of
from wsproxy.forking import MASTER_SIGNALS, fork_child

__all__ = [
    "KILL_WAIT",
    "RESPAWN_BACKOFF_MAX",
    "RESPAWN_BACKOFF_MIN",
    "STOP_KILL_AFTER",
    "WAKE_INTERVAL",
    "WORKER_STABLE_SECS",
    "Arbiter",
    "Worker",
]

log = logging.getLogger(__name__)

WAKE_INTERVAL = 1.0  # the master loop wakes at least this often (back-off timers, on_tick)
RESPAWN_BACKOFF_MIN = 0.5  # delay before replacing a worker that died young...
RESPAWN_BACKOFF_MAX = 30.0  # ...doubling per young death up to this
WORKER_STABLE_SECS = 10.0  # a worker that lived this long resets the back-off
STOP_KILL_AFTER = 2.0  # on stop: seconds beyond graceful_timeout before SIGKILL
KILL_WAIT = 2.0  # after SIGKILL: seconds to wait for the kernel to end a child (D state: never)


@dataclass
class Worker:
    """One forked worker: ``number`` is its slot (1..N, reused by its replacement)."""

    pid: int
    number: int
    started: float


class Arbiter:
    """The master process's loop.

    Args:
        count: how many workers to keep running.
        serve: runs in each worker after the fork (and ``gevent.reinit()``); serves until
            SIGTERM and returns the worker's exit status.
        listener: the bound listening socket; the master closes its copy when it stops, so the
            port refuses new connections while the workers drain.
        graceful_timeout: how long workers have to close their sessions on stop.
        reload: called in the master on SIGHUP, before SIGHUP is passed on (log reopen, the
            configuration checked); returning False keeps the signal from the workers.
        upgrade: called in the master on SIGUSR2; True when a new master serves the port, and
            this one may drain.
        ready: called once the master's signal handlers are in place (before then a SIGHUP
            would end it): where it logs that it listens and reports ready.
        companion: runs in one more child, forked before the workers and not replaced: the
            process that owns a wrapped program. When it exits the master stops and exits with
            its status; on stop it gets SIGTERM after the workers have drained.
    """

    def __init__(
        self,
        count: int,
        serve: Callable[[], int],
        *,
        listener: Any = None,
        graceful_timeout: float = 5.0,
        reload: Callable[[], Any] = lambda: None,
        companion: Callable[[], int] | None = None,
        upgrade: Callable[[], bool] | None = None,
        ready: Callable[[], object] = lambda: None,
    ) -> None:
        self.count = count
        self.serve = serve
        self.listener = listener
        self.graceful_timeout = graceful_timeout
        self.reload = reload
        self.upgrade = upgrade
        self.ready = ready
        self.upgraded = False  # a new master serves: drain, replace no worker
        self.workers: dict[int, Worker] = {}
        self.restarts = 0
        self.companion = companion
        self.companion_pid: int | None = None
        self.exit_status = 0
        self.pid = os.getpid()
        self._signals: collections.deque[int] = collections.deque()
        self._wake_r = self._wake_w = -1
        self._stopping = False
        self._backoff = Backoff(
            first=RESPAWN_BACKOFF_MIN, cap=RESPAWN_BACKOFF_MAX, healthy=WORKER_STABLE_SECS
        )
        self._next_spawn = 0.0

    # -- hooks for features living in the master --

    def on_start(self) -> None:
        """Before the first worker is forked."""

    def on_tick(self) -> None:
        """Each turn of the loop, at least every WAKE_INTERVAL seconds."""

    def on_drain(self) -> None:
        """The master is stopping: called once, before the workers are told to drain."""

    def on_stop(self) -> None:
        """After the last worker has exited."""

    def on_upgraded(self) -> None:
        """A new master serves the port; this one is about to drain its workers."""

    def on_worker_exit(self, worker: Worker, status: int, respawn_in: float | None) -> None:
        """A worker exited (``status`` as ``os.waitpid`` gives it); ``respawn_in`` is None when
        the master is stopping."""

    # -- the loop --

    def run(self) -> int:
        """Fork the workers and supervise them until SIGTERM/SIGINT; returns the exit status."""
        self.pid = os.getpid()
        self._open_wakeup()
        self.on_start()
        log.info("master started workers=%d", self.count)
        self.ready()
        try:
            if self.companion is not None:
                self.companion_pid = self._fork(self.companion)
            while not self._stopping and not (self.upgraded and not self.workers):
                if not self.upgraded:
                    self._spawn_missing()
                self._wait(self._next_wake())
                self._dispatch()
                self._reap()
                self.on_tick()
            self.on_drain()
            self._stop_workers()
            self._stop_companion()
        finally:
            self.on_stop()
            self._close_wakeup()
        log.info("master stopped restarts=%d status=%d", self.restarts, self.exit_status)
        return self.exit_status

    def handle_term(self, signum: int) -> None:
        log.info("received %s, stopping workers=%d", signal.Signals(signum).name, len(self.workers))
        self._stopping = True

    handle_int = handle_term

    def handle_hup(self, signum: int) -> None:
        log.info("received SIGHUP, reloading before passing it to workers=%d", len(self.workers))
        if self.reload() is False:
            return
        self._signal_workers(signal.SIGHUP)

    def handle_usr2(self, signum: int) -> None:
        if self.upgrade is None or self.upgraded:
            log.info("received SIGUSR2, no upgrade to start")
            return
        log.info("received SIGUSR2, starting a new master to upgrade in place")
        if not self.upgrade():
            return
        self.upgraded = True
        self.on_upgraded()
        if self.listener is not None:
            self.listener.close()  # the new master's copy serves the port
        log.info("upgrade: draining workers=%d", len(self.workers))
        self._signal_workers(signal.SIGUSR2)

    def handle_chld(self, signum: int) -> None:
        """Nothing to do: waking up is enough, the loop reaps next."""

    # -- signals: handlers queue, the loop dispatches --

    def _open_wakeup(self) -> None:
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        for signum in MASTER_SIGNALS:
            signal.signal(signum, self._queue_signal)

    def _close_wakeup(self) -> None:
        # The master is on its way out (last log line, pid file): a repeated SIGTERM, as
        # supervisors send, must not kill it half-way with the default action.
        for signum in MASTER_SIGNALS:
            signal.signal(signum, signal.SIG_DFL if signum == signal.SIGCHLD else signal.SIG_IGN)
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _queue_signal(self, signum: int, frame: Any) -> None:
        # A signal handler: queue and wake, nothing else (no logging: it may hold a lock).
        self._signals.append(signum)
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b".")

    def _wait(self, timeout: float) -> None:
        if select.select([self._wake_r], [], [], max(timeout, 0.0))[0]:
            with contextlib.suppress(OSError):
                while os.read(self._wake_r, 4096):
                    pass

    def _dispatch(self) -> None:
        while self._signals:
            signum = self._signals.popleft()
            name = signal.Signals(signum).name[3:].lower()
            getattr(self, f"handle_{name}")(signum)

    def _next_wake(self) -> float:
        if len(self.workers) < self.count:
            return min(WAKE_INTERVAL, self._next_spawn - time.monotonic())
        return WAKE_INTERVAL

    # -- workers --

    def _spawn_missing(self) -> None:
        free = sorted(set(range(1, self.count + 1)) - {w.number for w in self.workers.values()})
        for number in free:
            if time.monotonic() < self._next_spawn:
                return
            self._spawn(number)

    def _spawn(self, number: int) -> None:
        pid = self._fork(self.serve, worker=True)
        if pid is None:
            self._next_spawn = time.monotonic() + self._backoff.after_run(0.0)
            return
        self.workers[pid] = Worker(pid, number, time.monotonic())
        log.info("worker started pid=%d worker=%d", pid, number)

    def fork(self, body: Callable[[], int]) -> int | None:
        """Fork a helper child for a hook (reaping it is the hook's job): it runs ``body`` with
        the same set-up as a worker (default signals, ``gevent.reinit()``, stops when orphaned)
        and exits with its status. None if fork failed (logged)."""
        return self._fork(body)

    def _fork(self, body: Callable[[], int], *, worker: bool = False) -> int | None:
        return fork_child(
            body, master=self.pid, inherited=(self._wake_r, self._wake_w), worker=worker
        )

    def _reap(self) -> None:
        self._reap_companion()
        for worker in list(self.workers.values()):
            try:
                pid, status = os.waitpid(worker.pid, os.WNOHANG)
            except ChildProcessError:  # reaped by someone else: gone all the same
                pid, status = worker.pid, 0
            if pid == 0:
                continue
            del self.workers[worker.pid]
            lived = time.monotonic() - worker.started
            respawn_in = None
            if not (self._stopping or self.upgraded):
                self.restarts += 1
                respawn_in = self._backoff.after_run(lived)
                self._next_spawn = time.monotonic() + respawn_in
            log.log(
                logging.INFO if self._stopping or self.upgraded else logging.WARNING,
                "worker exited pid=%d worker=%d status=%s lived=%.1f respawn_in=%s",
                worker.pid,
                worker.number,
                describe_status(status),
                lived,
                "-" if respawn_in is None else f"{respawn_in:.1f}",
            )
            self.on_worker_exit(worker, status, respawn_in)

    def _reap_companion(self) -> bool:
        """Check on the companion; its exit stops the master with its status. True if gone."""
        if self.companion_pid is None:
            return True
        try:
            pid, status = os.waitpid(self.companion_pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = self.companion_pid, 0
        if pid == 0:
            return False
        self.companion_pid = None
        code = status_of(os.waitstatus_to_exitcode(status))
        if not self._stopping and not self.upgraded:  # else it handed its program over
            log.info("companion exited status=%s, stopping", describe_status(status))
            self.exit_status = code
            self._stopping = True
        return True

    def _stop_companion(self) -> None:
        """SIGTERM the companion (it stops its program), SIGKILL it if it outstays the grace."""
        self.stop_child(
            "companion",
            self.companion_pid,
            self._reap_companion,
            self.graceful_timeout + STOP_KILL_AFTER,
        )

    def stop_child(
        self, name: str, pid: int | None, exited: Callable[[], bool], grace: float
    ) -> None:
        """Stop a helper child: SIGTERM, up to ``grace`` for ``exited()`` to say it is gone,
        then SIGKILL and ``KILL_WAIT`` more; never an unbounded wait (a process stuck in the
        kernel is logged and left)."""
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if self._poll_until(exited, grace):
            return
        log.warning("%s did not stop in time, killing pid=%d", name, pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if not self._poll_until(exited, KILL_WAIT):
            log.error("%s did not go away after SIGKILL pid=%d, not waiting for it", name, pid)

    def _poll_until(self, done: Callable[[], bool], timeout: float) -> bool:
        """Wake on SIGCHLD (or every tenth of WAKE_INTERVAL) until ``done()`` or ``timeout``;
        returns ``done()``. Signals that come meanwhile are dropped: we are stopping already."""
        deadline = time.monotonic() + timeout
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._wait(min(WAKE_INTERVAL / 10, remaining))
            self._signals.clear()
        return True

    def _signal_workers(self, signum: int) -> None:
        for worker in self.workers.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signum)

    def _stop_workers(self) -> None:
        if self.listener is not None:
            self.listener.close()
        self._signal_workers(signal.SIGTERM)
        if self._poll_until(self._reaped_all, self.graceful_timeout + STOP_KILL_AFTER):
            return
        for worker in self.workers.values():
            log.warning("worker did not stop in time, killing pid=%d", worker.pid)
        self._signal_workers(signal.SIGKILL)
        if self._poll_until(self._reaped_all, KILL_WAIT):
            return
        for worker in self.workers.values():
            log.error("worker did not go away after SIGKILL pid=%d, not waiting for it", worker.pid)
        self.workers.clear()

    def _reaped_all(self) -> bool:
        self._reap()
        return not self.workers
