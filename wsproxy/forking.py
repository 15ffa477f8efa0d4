"""The fork of the pre-fork master (:mod:`wsproxy.workers`), and the child's side of it.

Apart from the master's loop because the child runs none of it: it sets its own signals,
re-initialises gevent, watches for its master going away and exits with its body's status,
never returning into the master's code.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterable
from typing import NoReturn

import gevent

__all__ = [
    "CHILD_DEFERS",
    "MASTER_SIGNALS",
    "PARENT_CHECK_INTERVAL",
    "fork_child",
    "release_deferred_signals",
]

log = logging.getLogger(__name__)

PARENT_CHECK_INTERVAL = 1.0  # a worker checks this often whether its master is gone

MASTER_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR2, signal.SIGCHLD)
# Ignored in a helper child; in a new worker held pending (blocked) until serve() has its
# handlers and calls release_deferred_signals(): a logrotate SIGHUP that comes while a worker
# starts must still make it reopen the log file it inherited.
CHILD_DEFERS = (signal.SIGHUP, signal.SIGUSR2)


def fork_child(
    body: Callable[[], int], *, master: int, inherited: Iterable[int], worker: bool
) -> int | None:
    """Fork a child that closes the master's ``inherited`` descriptors, runs ``body`` and exits
    with its status. Returns the child's pid, or None if fork failed (logged)."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    # Blocked across the fork, so a signal cannot reach the child while it still runs the
    # master's handlers; the child unblocks once its own are in place.
    signal.pthread_sigmask(signal.SIG_BLOCK, MASTER_SIGNALS)
    try:
        pid = os.fork()
    except OSError as exc:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, MASTER_SIGNALS)
        log.error("cannot fork: %s", exc.strerror or exc)
        return None
    if pid == 0:
        _child_main(body, master, inherited, worker)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, MASTER_SIGNALS)
    return pid


def release_deferred_signals() -> None:
    """In a worker whose SIGHUP/SIGUSR2 handlers are in place: deliver any that came meanwhile
    (a no-op in a process that blocked none)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, CHILD_DEFERS)


def _child_main(
    body: Callable[[], int], master: int, inherited: Iterable[int], worker: bool
) -> NoReturn:
    """The child side of the fork: never returns into the master's code."""
    status = 1
    try:
        for fd in inherited:
            os.close(fd)
        # Default actions until serve() installs its handlers: SIGTERM before then simply
        # ends a worker that has no client yet. A helper ignores CHILD_DEFERS (a program it
        # execs inherits that, and may still handle them); a worker keeps them pending.
        for signum in MASTER_SIGNALS:
            ignored = signum in CHILD_DEFERS and not worker
            signal.signal(signum, signal.SIG_IGN if ignored else signal.SIG_DFL)
        unblock = [s for s in MASTER_SIGNALS if not worker or s not in CHILD_DEFERS]
        signal.pthread_sigmask(signal.SIG_UNBLOCK, unblock)
        gevent.reinit()
        gevent.spawn(_stop_when_orphaned, master)
        status = body()
    except SystemExit as exc:
        # sys.exit() and sys.exit(None) mean success; a message means failure.
        status = 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        log.exception("worker failed")
    finally:
        for handler in logging.getLogger().handlers:
            with contextlib.suppress(Exception):
                handler.flush()
        os._exit(status)


def _stop_when_orphaned(master: int) -> None:
    """In a worker: if the master died (SIGKILL, crash), stop like on SIGTERM rather than serve
    on unsupervised."""
    while os.getppid() == master:
        gevent.sleep(PARENT_CHECK_INTERVAL)
    log.warning("master pid=%d is gone, stopping", master)
    os.kill(os.getpid(), signal.SIGTERM)
