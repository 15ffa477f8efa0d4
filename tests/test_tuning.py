"""The process-wide runtime choices of the command line (wsproxy.tuning)."""

from __future__ import annotations

import gc
import logging

import gevent

from wsproxy.logs import LOG_FORMAT, SYSLOG_FORMAT
from wsproxy.tuning import freeze_startup_objects, lighten_greenlets, lighten_logging


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


def test_lightened_log_records_skip_the_caller_and_thread_our_formats_do_not_print() -> None:
    saved = logging._srcfile, logging.logThreads, logging.logMultiprocessing
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    logger = logging.getLogger("wsproxy.test_tuning")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        lighten_logging()
        logger.info("closed peer=%s", "127.0.0.1:1")
    finally:
        logging._srcfile, logging.logThreads, logging.logMultiprocessing = saved
        logger.removeHandler(handler)
    (record,) = records
    assert record.lineno == 0 and record.threadName is None  # not looked up
    assert record.getMessage() == "closed peer=127.0.0.1:1"
    for fmt in (LOG_FORMAT, SYSLOG_FORMAT):
        assert logging.Formatter(fmt).format(record).endswith("closed peer=127.0.0.1:1")
        assert "lineno" not in fmt and "thread" not in fmt and "funcName" not in fmt
