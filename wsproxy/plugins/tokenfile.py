"""The token plug-ins that read the file system: ``TokenFile``, ``ReadOnlyTokenFile``,
``TokenFileName`` and ``UnixDomainSocketDirectory``, with websockify's names and sources.

``TokenFile`` sees every change at the next lookup: it compares each file's inode, size and
modification time on every lookup (a few ``stat`` calls) and re-reads what changed. A file
modified in the last ``RECENT`` seconds is re-read every time, because a second change within
the file system's timestamp granularity, of the same size, would not show in its stamp.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from pathlib import PurePath

from wsproxy.errors import ConfigError
from wsproxy.plugins.tokentext import TOKEN_LINE, UNIX_SOCKET, parse_tokens
from wsproxy.settings.values import Address, parse_target
from wsproxy.targets import Target

__all__ = [
    "MAX_TOKEN_FILE",
    "RECENT",
    "ReadOnlyTokenFile",
    "TokenFile",
    "TokenFileName",
    "UnixDomainSocketDirectory",
]

log = logging.getLogger(__name__)

MAX_TOKEN_FILE = 4 * 1024 * 1024  # characters read from one token file (security limit)
MAX_TARGET_FILE = 4096  # characters read from one TokenFileName file
RECENT = 2.0  # seconds within which a file's stamp may not show a change (see above)

Stamp = tuple[tuple[str, int, int, int], ...]  # (path, inode, size, mtime_ns) per file


def _needs(source: str | None, plugin: str, expected: str) -> str:
    if not source:
        raise ConfigError(
            f"{plugin} needs a token_source",
            source="command line",
            key="token_source",
            expected=expected,
        )
    return source


def _as_result(target: Target | None) -> object:
    """A target in websockify's ``lookup()`` form."""
    return (UNIX_SOCKET, target) if isinstance(target, str) else target


class ReadOnlyTokenFile:
    """websockify's ``ReadOnlyTokenFile``: the file, or every file of a directory (names
    starting with a dot are skipped), is read at start and on SIGHUP."""

    SOURCE_IS_PATH = True  # a daemon makes a relative source absolute

    def __init__(self, source: str | None) -> None:
        self.source = _needs(source, type(self).__name__, "a token file or directory")
        self._lock = threading.Lock()  # lookups run in several threads
        self._table: dict[str, Target] = {}
        self._stamp: Stamp = ()
        self._reported: Stamp | None = None  # the version whose problems were logged
        self.reload()

    def _files(self) -> list[str]:
        if os.path.isdir(self.source):
            names = sorted(n for n in os.listdir(self.source) if not n.startswith("."))
            paths = [os.path.join(self.source, n) for n in names]
            return [p for p in paths if os.path.isfile(p)]
        return [self.source]

    def _current(self) -> tuple[Stamp, bool]:
        """The files' stamp, and whether one of them changed within ``RECENT`` seconds."""
        stamp = []
        recent = time.time_ns() - int(RECENT * 1e9)
        fresh = False
        for path in self._files():
            st = os.stat(path)
            stamp.append((path, st.st_ino, st.st_size, st.st_mtime_ns))
            fresh = fresh or st.st_mtime_ns > recent or st.st_ctime_ns > recent
        return tuple(stamp), fresh

    def reload(self) -> None:
        """SIGHUP: read every file now; raises ConfigError (see :meth:`_load`)."""
        with self._lock:
            self._load()

    def _load(self) -> None:
        """Read every file. A bad line is skipped and logged (once per version of the
        files); an unreadable or oversized file raises ConfigError and keeps the old table."""
        try:
            stamp, _ = self._current()
            table: dict[str, Target] = {}
            problems: list[ConfigError] = []
            for path, *_ in stamp:
                with open(path, encoding="utf-8") as f:
                    text = f.read(MAX_TOKEN_FILE + 1)
                if len(text) > MAX_TOKEN_FILE:  # never cut a line in half into a wrong target
                    raise ConfigError(
                        f"token file over {MAX_TOKEN_FILE} characters",
                        source=path,
                        key="token_source",
                        expected="a smaller file, or several files in a directory",
                    )
                tokens, bad = parse_tokens(text)
                table.update(tokens)
                problems += [
                    ConfigError(
                        f"skipped bad line {raw!r}", source=path, line=n, expected=TOKEN_LINE
                    )
                    for n, raw in bad
                ]
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ConfigError(
                f"cannot read token source: {reason}",
                source=self.source,
                key="token_source",
                expected="a readable token file or directory",
            ) from None
        if stamp != self._reported:
            self._reported = stamp
            for problem in problems:
                log.error("%s", problem)
        self._table = table
        self._stamp = stamp

    def __len__(self) -> int:
        return len(self._table)

    def describe(self) -> str:
        return f"by token from {self.source} ({len(self._table)} tokens)"

    def lookup(self, token: str) -> object:
        return _as_result(self._table.get(token))


class TokenFile(ReadOnlyTokenFile):
    """websockify's ``TokenFile``: like ``ReadOnlyTokenFile``, and every lookup sees the files
    as they are (re-read when their stamp changed; see the module's docstring)."""

    def lookup(self, token: str) -> object:
        with self._lock:
            self._refresh()
        return super().lookup(token)

    def _refresh(self) -> None:
        try:
            stamp, fresh = self._current()
        except OSError as exc:
            # A file being replaced shows at the next lookup; one that stays gone is said once.
            failed: Stamp = (("", 0, 0, exc.errno or 0),)
            if self._reported != failed:
                self._reported = failed
                log.error(
                    "token_source not reloaded, keeping the previous tokens: %s: %s",
                    self.source,
                    exc.strerror or exc,
                )
            return
        if stamp == self._stamp and not fresh:
            return
        try:
            self._load()
        except ConfigError as exc:
            # Keep serving the last good table; say so once per version of the files.
            if stamp != self._reported:
                self._reported = stamp
                log.error("token_source not reloaded, keeping the previous tokens: %s", exc)


class TokenFileName:
    """websockify's ``TokenFileName``: the source is a directory, the token a file name in it,
    and the file holds ``host:port``."""

    SOURCE_IS_PATH = True  # a daemon makes a relative source absolute

    def __init__(self, source: str | None) -> None:
        self.source = _needs(source, "TokenFileName", "a directory")
        if not os.path.isdir(self.source):
            raise ConfigError(
                "TokenFileName needs a directory",
                source=self.source,
                key="token_source",
                expected="a directory of files named by token, each holding host:port",
            )

    def describe(self) -> str:
        return f"by token: file names in {self.source}"

    def lookup(self, token: str) -> Address | None:
        name = PurePath(token).name  # as websockify: the last part of a path, never a way out
        if name in ("", ".", "..") or "\0" in name:
            return None
        path = os.path.join(self.source, name)
        if not os.path.isfile(path):
            return None
        with open(path, encoding="utf-8") as f:
            text = f.read(MAX_TARGET_FILE).strip()
        try:
            return parse_target(text)
        except ValueError:
            raise ValueError(f"{path}: bad content {text[:80]!r} (expected host:port)") from None


class UnixDomainSocketDirectory:
    """websockify's ``UnixDomainSocketDirectory``: the token names a UNIX socket in the source
    directory. A path that leads outside it (``..``, an absolute path, a symbolic link) or is
    not a socket is not found."""

    SOURCE_IS_PATH = True  # a daemon makes a relative source absolute

    def __init__(self, source: str | None) -> None:
        self.source = _needs(source, "UnixDomainSocketDirectory", "a directory of UNIX sockets")
        self.directory = os.path.realpath(self.source)
        if not os.path.isdir(self.directory):
            log.warning("token_source %s is not a directory (yet): no token is found", self.source)

    def describe(self) -> str:
        return f"by token: UNIX sockets in {self.source}"

    def lookup(self, token: str) -> object:
        if "\0" in token:
            return None
        path = os.path.realpath(os.path.join(self.directory, token))
        if os.path.commonpath([self.directory, path]) != self.directory or path == self.directory:
            log.warning("refused token %r: outside %s", token[:64], self.source)
            return None
        try:
            mode = os.stat(path).st_mode
        except OSError:
            return None
        return (UNIX_SOCKET, path) if stat.S_ISSOCK(mode) else None
