"""The process-wide runtime choices of the command line (wsproxy.tuning)."""

from __future__ import annotations

import gc

import gevent

from wsproxy.tuning import freeze_startup_objects, lighten_greenlets


def test_lightened_greenlets_keep_no_spawning_stack() -> None:
    before = gevent.config.track_greenlet_tree
    try:
        lighten_greenlets()
        greenlet = gevent.spawn(lambda: None)
        greenlet.join(timeout=5)
        assert greenlet.spawning_stack is None
        assert greenlet.spawning_greenlet is None
    finally:
        gevent.config.track_greenlet_tree = before


def test_start_up_objects_are_frozen_out_of_collections() -> None:
    gc.unfreeze()
    try:
        freeze_startup_objects()
        assert gc.get_freeze_count() > 1000  # the imported modules, at least
        assert gc.get_count()[2] == 0 and sum(len(gc.get_objects(g)) for g in (1, 2)) < 1000
    finally:
        gc.unfreeze()
