"""What wsproxy's two supervisors share: the wrapped program's keeper (:mod:`wsproxy.wrap`) and
the pre-fork master (:mod:`wsproxy.workers`) both restart children that die and report how they
ended.

Pure functions: the callers measure time and wait; nothing here touches a process or a clock.
"""

from __future__ import annotations

import contextlib
import os
import signal

__all__ = ["Backoff", "describe_status", "status_of"]


def status_of(returncode: int) -> int:
    """A shell-style exit status: the code, or 128 + the signal number for a signal death.

    ``returncode`` as ``Popen.returncode`` or ``os.waitstatus_to_exitcode()`` give it (negative
    for a signal).
    """
    return 128 - returncode if returncode < 0 else returncode


class Backoff:
    """Restart delays: ``first``, doubling after each run shorter than ``healthy`` seconds up to
    ``cap``; a healthy run starts again from ``first``.

    Call :meth:`after_run` once per ended run and wait the delay it returns before the restart.
    """

    def __init__(self, *, first: float, cap: float, healthy: float) -> None:
        self.first = first
        self.cap = cap
        self.healthy = healthy
        self._next = first

    def after_run(self, seconds: float) -> float:
        """The delay before the next start, given how long the last run lasted (0 when the start
        itself failed)."""
        if seconds >= self.healthy:
            self._next = self.first
        delay = self._next
        self._next = min(self._next * 2, self.cap)
        return delay


def describe_status(status: int) -> str:
    """``exit 0`` or ``signal SIGKILL`` for a status from ``os.waitpid``."""
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
        return f"signal {-code}"
    return f"exit {code}"
