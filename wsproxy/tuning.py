"""Process-wide runtime choices that make a session cheaper; the command line applies them.

* gevent's greenlet-tree tracking records, for every greenlet, the greenlet that spawned it and
  ten frames of its stack: about twenty objects per session, and a walk of the stack per spawn,
  for a debugging aid that nothing here reads. :func:`lighten_greenlets` turns it off.
* What start-up builds (modules, settings, the TLS context) lives as long as the process.
  :func:`freeze_startup_objects` moves it out of the collector's generations, so a full
  collection (a burst of new sessions can trigger one) does not traverse it again, and a worker
  forked from the master does not write to the pages it shares with it just to collect.
"""

from __future__ import annotations

import gc

import gevent

__all__ = ["freeze_startup_objects", "lighten_greenlets"]


def lighten_greenlets() -> None:
    """No spawning tree or spawning stack on new greenlets (before the first is spawned)."""
    gevent.config.track_greenlet_tree = False


def freeze_startup_objects() -> None:
    """Collect what start-up left over, then exempt the survivors from later collections."""
    gc.collect()
    gc.freeze()
