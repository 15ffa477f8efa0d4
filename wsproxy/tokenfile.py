"""The token file(s) behind ``token_source``: read, re-read when they change, looked up per client.

The I/O half of :mod:`wsproxy.tokens` (which parses the lines and finds a request's token).
"""

from __future__ import annotations

import os
import time
from http import HTTPStatus

from wsproxy.errors import ConfigError, HandshakeError
from wsproxy.handshake import Request
from wsproxy.settings import Address
from wsproxy.tokens import parse_tokens, token_of

__all__ = ["CHECK_INTERVAL", "MAX_TOKEN_FILE", "TokenTable"]

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
                    table.update(parse_tokens(f.read(MAX_TOKEN_FILE), path))
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
            if self._current_stamp() != self._stamp:
                self.reload()
        except (OSError, ConfigError):
            pass  # keep serving the last good table; the next check tries again

    def __len__(self) -> int:
        return len(self._table)

    def lookup(self, request: Request) -> Address:
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
