"""Metrics under ``--workers``: every process records, one endpoint serves the sum.

prometheus_client's multiprocess mode: each process writes its values into its own files
(``counter_<pid>.db``, ``gauge_livesum_<pid>.db``...) in one directory, and a
``MultiProcessCollector`` over that directory adds them up at each scrape. Here:

- :class:`ValueFiles` is that directory: private to one master (a fresh ``mkdtemp``, mode 0700,
  so a directory left by a killed run can never add its values to ours), made before the first
  metric exists and removed when the master exits.
- :class:`MetricsArbiter` is the master with metrics: it forks the endpoint process (the one that
  serves /metrics and /healthz on the socket bound in the foreground), counts replaced workers,
  drops a dead worker's live gauges (its open sessions) and, while draining, makes /healthz 503.
- Workers and the wrapped program's keeper record through the same :class:`~wsproxy.metrics.Metrics`
  object they inherited from the master: after a fork prometheus_client notices the new pid and
  switches to that process's files.

Only :func:`wsproxy.cli.run` uses this module: a host application embedding :class:`WSProxy`
(one process) never gets the environment variable or the global value class set here.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Mapping
from typing import Any

import gevent
import gevent.event

from wsproxy.logs import reopen_log_files
from wsproxy.metrics import Metrics, import_prometheus
from wsproxy.workers import STOP_KILL_AFTER, WAKE_INTERVAL, Arbiter, Worker

__all__ = [
    "ENDPOINT_RESPAWN_DELAY",
    "ENDPOINT_STOP_TIMEOUT",
    "MULTIPROC_ENV",
    "MetricsArbiter",
    "ValueFiles",
]

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # where prometheus_client's value files go
ENDPOINT_STOP_TIMEOUT = 1.0 + STOP_KILL_AFTER  # seconds the endpoint has to stop, then SIGKILL
ENDPOINT_RESPAWN_DELAY = WAKE_INTERVAL  # a crashing endpoint is restarted at most this often


class ValueFiles:
    """The private directory of value files for one master and its children.

    Creating it switches this process (and every child forked later) to multiprocess mode;
    create it before any metric exists, i.e. before the server is built.

    Raises:
        ConfigError: prometheus_client is not installed.
    """

    def __init__(self) -> None:
        import_prometheus()
        # What a wrapped program gets as its environment: ours before the variable was set (it
        # is ours, not the program's; a Python program using prometheus_client would otherwise
        # write into our directory).
        self.program_env: Mapping[str, str] = dict(os.environ)
        self.path = tempfile.mkdtemp(prefix="wsproxy-metrics-")  # mode 0700, a fresh name
        # prometheus_client reads the variable twice: at import, to choose its value class (and
        # it has been imported just above, before the variable existed), and each time a value
        # opens its file (after a fork too), for the directory. So: set the variable for the
        # files, and replace the value class chosen at import with the multiprocess one. Every
        # metric is created after this (the server is built next), so all of them use files.
        self._previous_env = os.environ.get(MULTIPROC_ENV)
        os.environ[MULTIPROC_ENV] = self.path
        from prometheus_client import values

        self._previous_class = values.ValueClass
        values.ValueClass = values.MultiProcessValue()

    def mark_dead(self, pid: int) -> None:
        """Drop the live gauges of a process that exited (its open sessions); its counters stay."""
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, self.path)

    def remove(self) -> None:
        """Delete the directory (at the master's exit) and undo the switch to multiprocess mode,
        so that code running on in this process (a host program, a test) is as before."""
        from prometheus_client import values

        shutil.rmtree(self.path, ignore_errors=True)
        values.ValueClass = self._previous_class
        if self._previous_env is None:
            os.environ.pop(MULTIPROC_ENV, None)
        else:
            os.environ[MULTIPROC_ENV] = self._previous_env


class DrainFlag:
    """Set by the master when it starts draining, read by the endpoint process for /healthz.

    One byte of anonymous shared memory, mapped before the fork."""

    def __init__(self) -> None:
        self._map = mmap.mmap(-1, 1)

    def set(self) -> None:
        self._map[0] = 1

    def is_set(self) -> bool:
        return self._map[0] == 1


class MetricsArbiter(Arbiter):
    """The pre-fork master (:class:`~wsproxy.workers.Arbiter`) plus the metrics endpoint.

    Args:
        metrics: the server's metrics, built after ``files`` and already bound (the socket is
            bound in the foreground, so a taken port fails before detaching).
        files: the value files every process records into.
        *args, **kwargs: as for :class:`~wsproxy.workers.Arbiter`.
    """

    def __init__(self, *args: Any, metrics: Metrics, files: ValueFiles, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.metrics = metrics
        self.files = files
        metrics.aggregate(files.path)
        self.endpoint_pid: int | None = None
        self._endpoint_next = 0.0  # monotonic time before which the endpoint is not restarted
        self._draining = DrainFlag()

    # -- hooks --

    def on_start(self) -> None:
        self._start_endpoint()

    def on_tick(self) -> None:
        if self.endpoint_pid is not None and self._endpoint_exited():
            log.warning("metrics endpoint exited, starting it again")
        if self.upgraded:
            return
        if self.endpoint_pid is None and time.monotonic() >= self._endpoint_next:
            self._start_endpoint()

    def on_worker_exit(self, worker: Worker, status: int, respawn_in: float | None) -> None:
        self.files.mark_dead(worker.pid)
        if respawn_in is not None:
            self.metrics.worker_restarts.inc()

    def on_drain(self) -> None:
        self._draining.set()

    def on_stop(self) -> None:
        self.stop_child(
            "metrics endpoint", self.endpoint_pid, self._endpoint_exited, ENDPOINT_STOP_TIMEOUT
        )

    def on_upgraded(self) -> None:
        # The new master's endpoint serves the metrics port from now on.
        self.stop_child(
            "metrics endpoint", self.endpoint_pid, self._endpoint_exited, ENDPOINT_STOP_TIMEOUT
        )
        self.metrics.stop()

    def handle_hup(self, signum: int) -> None:
        super().handle_hup(signum)
        if self.endpoint_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.endpoint_pid, signal.SIGHUP)

    # -- the endpoint process --

    def _start_endpoint(self) -> None:
        self._endpoint_next = time.monotonic() + ENDPOINT_RESPAWN_DELAY
        self.endpoint_pid = self.fork(self._serve_endpoint)

    def _endpoint_exited(self) -> bool:
        assert self.endpoint_pid is not None
        try:
            pid, _ = os.waitpid(self.endpoint_pid, os.WNOHANG)
        except ChildProcessError:
            pid = self.endpoint_pid
        if pid == 0:
            return False
        self.endpoint_pid = None
        return True

    def _serve_endpoint(self) -> int:
        """The endpoint process: serve /metrics and /healthz until SIGTERM."""
        if self.listener is not None:
            # Only the master and the workers hold the clients' port: once they have closed it
            # on stop, it must refuse connections.
            self.listener.close()
        done = gevent.event.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            gevent.signal_handler(signum, done.set)
        gevent.signal_handler(signal.SIGHUP, reopen_log_files)
        self.metrics.serve(healthy=lambda: not self._draining.is_set())
        done.wait()
        self.metrics.stop()
        return 0
