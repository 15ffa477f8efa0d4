"""Calls that may block (a user's plug-in doing HTTP, Redis or database calls), run in a thread
pool so that the hub goes on serving every other client, within a deadline.

Each user of it has a pool of its own rather than the hub's, whose threads resolve target names
and must not wait behind a stuck plug-in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import gevent
from gevent.threadpool import ThreadPool

__all__ = ["OffHub", "TimedOut", "share_pool"]

T = TypeVar("T")


class TimedOut(Exception):
    """The call did not answer within its deadline (its thread runs on until it returns)."""


class OffHub:
    """A thread pool of ``threads``, made on first use (after a daemon's or worker's fork)."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._pool: ThreadPool | None = None

    def call(self, timeout: float, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``func(*args, **kwargs)`` in a pool thread: its result, or the exception it raised.

        Raises TimedOut when waiting for a free thread and for the answer took ``timeout`` in all.
        """
        if self._pool is None:
            self._pool = ThreadPool(self.threads)
        deadline = gevent.Timeout(timeout)
        deadline.start()
        try:
            failed, value = self._pool.spawn(_outcome, func, args, kwargs).get()
        except gevent.Timeout as exc:
            if exc is not deadline:
                raise
            raise TimedOut() from None
        finally:
            deadline.close()
        if failed:
            raise value
        return cast(T, value)


def _outcome(func: Callable[..., Any], args: Any, kwargs: Any) -> tuple[bool, Any]:
    """Run in the pool thread: an exception comes back as a value, to be raised in the caller's
    greenlet, instead of being raised in the thread, where gevent prints it as a crash."""
    try:
        return False, func(*args, **kwargs)
    except Exception as exc:
        return True, exc


def share_pool(new: Any, old: Any) -> None:
    """A plug-in runner rebuilt by a reload (auth, token lookup) takes over the thread pool of
    the one it replaces, so that reloads do not pile up threads (calls running finish in it)."""
    pool = getattr(old, "pool", None)
    if isinstance(pool, OffHub) and isinstance(getattr(new, "pool", None), OffHub):
        new.pool = pool
