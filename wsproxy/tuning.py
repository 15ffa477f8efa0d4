"""Process-wide runtime choices that make a session cheaper; the command line applies them.

* gevent's greenlet-tree tracking records, for every greenlet, the greenlet that spawned it and
  ten frames of its stack: about twenty objects per session, and a walk of the stack per spawn,
  for a debugging aid that nothing here reads. :func:`lighten_greenlets` turns it off.
* Every log record looks up its caller's file and line, and the current thread: our formats
  print neither (the logging HOWTO's "Optimization"). :func:`lighten_logging` skips both, a few
  microseconds of each session's two lines.
* What start-up builds (modules, settings, the TLS context) lives as long as the process.
  :func:`freeze_startup_objects` moves it out of the collector's generations, so a full
  collection (a burst of new sessions can trigger one) does not traverse it again, and a worker
  forked from the master does not write to the pages it shares with it just to collect.
"""

from __future__ import annotations

import gc
import logging

import gevent

__all__ = ["freeze_startup_objects", "lighten_greenlets", "lighten_logging"]


def lighten_greenlets() -> None:
    """No spawning tree or spawning stack on new greenlets (before the first is spawned)."""
    gevent.config.track_greenlet_tree = False


def lighten_logging() -> None:
    """No caller lookup (file, line, function) and no thread names in log records."""
    logging._srcfile = None  # the documented switch (logging HOWTO, "Optimization")
    logging.logThreads = False
    logging.logMultiprocessing = False


def freeze_startup_objects() -> None:
    """Collect what start-up left over, then exempt the survivors from later collections."""
    gc.collect()
    gc.freeze()
