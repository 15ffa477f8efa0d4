"""The token file(s) behind ``token_source``: read, re-read when they change, looked up per client.

The I/O half of :mod:`wsproxy.tokens` (which parses the lines and finds a request's token).
"""

from __future__ import annotations

import logging
import os
import time
from http import HTTPStatus

from wsproxy.errors import ConfigError, HandshakeError
from wsproxy.protocol.handshake import Request
from wsproxy.settings import Address
from wsproxy.tokens import parse_tokens, token_of

__all__ = ["CHECK_INTERVAL", "MAX_TOKEN_FILE", "TokenTable"]

log = logging.getLogger(__name__)

MAX_TOKEN_FILE = 4 * 1024 * 1024  # bytes read from one token file (security limit)
CHECK_INTERVAL = 1.0  # seconds between checks of the files' modification times


class TokenTable:
    """The token -> target table behind ``token_source``, reloaded when its files change.

    Args:
        source: a token file, or a directory whose every regular file is a token file.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self._table: dict[str, Address] = {}
        self._stamp: tuple[tuple[str, float, int], ...] = ()
        self._checked = float("-inf")
        self._failed: tuple[tuple[str, float, int], ...] = ()  # files that failed to load
        self.reload()

    def _files(self) -> list[str]:
        if os.path.isdir(self.source):
            names = sorted(os.listdir(self.source))
            paths = [os.path.join(self.source, n) for n in names if not n.startswith(".")]
            return [p for p in paths if os.path.isfile(p)]
        return [self.source]

    def _current_stamp(self) -> tuple[tuple[str, float, int], ...]:
        stamp = []
        for path in self._files():
            st = os.stat(path)
            stamp.append((path, st.st_mtime, st.st_size))
        return tuple(stamp)

    def reload(self) -> None:
        """Read every file now; raises ConfigError (bad line, unreadable file)."""
        try:
            stamp = self._current_stamp()
            table: dict[str, Address] = {}
            for path, _, _ in stamp:
                with open(path, encoding="utf-8") as f:
                    text = f.read(MAX_TOKEN_FILE + 1)
                if len(text) > MAX_TOKEN_FILE:  # never cut a line in half into a wrong target
                    raise ConfigError(
                        f"token file over {MAX_TOKEN_FILE} characters",
                        source=path,
                        key="token_source",
                        expected="a smaller file, or several files in a directory",
                    )
                table.update(parse_tokens(text, path))
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ConfigError(
                f"cannot read token source: {reason}",
                source=self.source,
                key="token_source",
                expected="a readable token file or directory",
            ) from None
        self._table = table
        self._stamp = stamp
        self._checked = time.monotonic()

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < CHECK_INTERVAL:
            return
        self._checked = now
        try:
            stamp = self._current_stamp()
        except OSError:
            return  # a file is being replaced; the next check sees the new one
        if stamp in (self._stamp, self._failed):
            return
        try:
            self.reload()
        except ConfigError as exc:
            # Keep serving the last good table; say so once per version of the files.
            self._failed = stamp
            log.error("token_source not reloaded, keeping the previous tokens: %s", exc)

    def __len__(self) -> int:
        return len(self._table)

    def describe(self) -> str:
        return f"by token from {self.source} ({len(self._table)} tokens)"

    def find(self, request: Request) -> Address:
        """The target for the request's token; raises HandshakeError 400 or 404."""
        token = token_of(request)
        if token is None:
            raise HandshakeError(
                HTTPStatus.BAD_REQUEST, "missing token (add ?token=NAME to the URL)"
            )
        self._refresh()
        target = self._table.get(token)
        if target is None:
            raise HandshakeError(HTTPStatus.NOT_FOUND, f"unknown token {token[:64]!r}")
        return target
