"""A wrapped program's process group: signal it, wait until it is gone, and adopt the orphans
it leaves (Linux child subreaper). Used by :mod:`wsproxy.wrap`."""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import time

import gevent

__all__ = ["GROUP_POLL", "become_subreaper", "signal_group", "wait_group_gone"]

log = logging.getLogger("wsproxy.wrap")

GROUP_POLL = 0.05  # pause between checks that the program's group is gone
PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>


def signal_group(pgid: int, signum: int) -> bool:
    """Send a signal to a process group; False if the group no longer exists."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member changed its user (setuid): it is still there
        return True
    return True


def wait_group_gone(pgid: int, timeout: float) -> bool:
    # Zombies count as members until reaped; gevent's SIGCHLD handler reaps our children and,
    # as we are a subreaper, the group's orphans too.
    deadline = time.monotonic() + timeout
    while signal_group(pgid, 0):
        if time.monotonic() >= deadline:
            return False
        gevent.sleep(GROUP_POLL)
    return True


def become_subreaper() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            log.debug("prctl(PR_SET_CHILD_SUBREAPER) failed: errno=%d", ctypes.get_errno())
    except (OSError, AttributeError):
        log.debug("prctl not available: orphans of the wrapped program go to PID 1")
