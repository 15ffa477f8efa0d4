"""Log destinations: stderr, a log file that SIGHUP reopens, syslog; and :func:`logfmt`, the one
way a value the client controls is written into a ``key=value`` log line.

This module builds the handlers and can reopen them; :mod:`wsproxy.cli` installs them. Every
destination is opened here, in the foreground, so a file that cannot be written or a missing syslog
socket stops the start with a :class:`~wsproxy.errors.StartupError` before a daemon detaches.

Every line carries the process id: with ``--workers`` it tells which worker served a session.
"""

from __future__ import annotations

import logging
import sys
import time

from wsproxy.errors import StartupError
from wsproxy.settings import Settings
from wsproxy.sysloghandler import open_syslog

__all__ = [
    "LOG_FORMAT",
    "MAX_FIELD_CHARS",
    "SYSLOG_FORMAT",
    "LineFormatter",
    "ReopeningFileHandler",
    "logfmt",
    "open_handlers",
    "reopen_log_files",
]

LOG_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
# The syslog header (see :mod:`wsproxy.sysloghandler`) carries the time, host, name and pid.
SYSLOG_FORMAT = "%(levelname)s %(name)s: %(message)s"
log = logging.getLogger(__name__)

MAX_FIELD_CHARS = 200  # a longer value is cut in the log line (and ends with "...")


def logfmt(value: object, *, limit: int = MAX_FIELD_CHARS) -> str:
    """``value`` as one field of a ``key=value`` log line, whatever the client put in it.

    Every character that is not printable (a newline that would start a forged line, an escape
    sequence for the terminal, a bidi override) is written as its Python escape, and so are
    ``\\`` and ``"``. The result is quoted when it is empty or holds a space or a quote, so
    it stays one field. Past ``limit`` characters the value is cut and ends with ``...``.
    """
    text = str(value)
    shown = "".join(
        ch if ch.isprintable() and ch not in '"\\' else _escape(ch) for ch in text[:limit]
    )
    if len(text) > limit:
        shown += "..."
    if not text or " " in shown or '"' in text:
        return f'"{shown}"'
    return shown


def _escape(ch: str) -> str:
    return '\\"' if ch == '"' else ch.encode("unicode_escape").decode("ascii")


class LineFormatter(logging.Formatter):
    """The log line's formatter: the time's text is made once a second, not for every line
    (``strftime`` and ``localtime`` per line were 10-20% of the cost of a session's two)."""

    def __init__(self, fmt: str) -> None:
        super().__init__(fmt)
        self._cached = (-1, "")  # (second, its text): one tuple, so threads never mix the two

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second, text = self._cached
        if int(record.created) != second:
            second = int(record.created)
            text = time.strftime(self.default_time_format, self.converter(second))
            self._cached = (second, text)
        return f"{text},{int(record.msecs):03d}"  # as logging.Formatter writes it


class ReopeningFileHandler(logging.FileHandler):
    """A file handler that :meth:`reopen` points at a fresh file of the same name.

    logrotate renames the file and sends SIGHUP; the next line goes to the new file. (Unlike
    ``WatchedFileHandler``, nothing is ``stat``-ed per log line.)
    """

    def __init__(self, path: str) -> None:
        super().__init__(path, mode="a", encoding="utf-8")

    def reopen(self) -> None:
        """Close and reopen the file. Raises OSError and keeps the old file if that fails."""
        self.acquire()
        try:
            stream = self._open()
            old, self.stream = self.stream, stream
            if old is not None:
                old.close()
        finally:
            self.release()


def open_handlers(settings: Settings) -> list[logging.Handler]:
    """The handlers the settings ask for, each opened now; raises StartupError.

    stderr is used unless the process will detach (its stderr becomes /dev/null).
    """
    handlers: list[logging.Handler] = []
    if not settings.daemon:
        handlers.append(logging.StreamHandler(sys.stderr))
    if settings.log_file:
        try:
            handlers.append(ReopeningFileHandler(settings.log_file))
        except OSError as exc:
            raise StartupError(
                f"cannot open log file {settings.log_file}: {exc.strerror or exc}"
            ) from None
    for handler in handlers:
        handler.setFormatter(LineFormatter(LOG_FORMAT))
    if settings.syslog:
        handler = open_syslog(
            settings.syslog, daemon=settings.daemon, legacy=settings.legacy_syslog
        )
        handler.setFormatter(logging.Formatter(SYSLOG_FORMAT))
        handlers.append(handler)
    return handlers


def reopen_log_files(logger: logging.Logger | None = None) -> int:
    """Reopen every :class:`ReopeningFileHandler` of ``logger`` (the root logger by default).

    Returns how many were reopened. One that cannot be reopened (its directory is gone, no
    permission) keeps writing to the old file, and says so there. Syslog and stderr need nothing.
    """
    logger = logger or logging.getLogger()
    reopened = 0
    for handler in logger.handlers:
        if isinstance(handler, ReopeningFileHandler):
            try:
                handler.reopen()
            except OSError as exc:
                log.error(
                    "cannot reopen log file path=%s reason=%s; still writing to the old file",
                    handler.baseFilename,
                    exc.strerror or exc,
                )
            else:
                reopened += 1
    return reopened
