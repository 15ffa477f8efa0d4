"""Targets chosen per client by a token, compatible with websockify's ``TokenFile`` plugin.

One proxy can front many services: the client names a token in its URL
(``ws://host:6080/websockify?token=vnc1``) or in a ``token`` cookie, and a token file maps it to
a target. The file (or every file in a directory) holds lines ``token: host:port``; ``#`` starts
a comment. Files are re-read when they change, so operators edit them without a restart.
"""

from __future__ import annotations

import os
import time
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qs, urlsplit

from wsproxy.errors import ConfigError, HandshakeError
from wsproxy.handshake import Request
from wsproxy.settings import Address, parse_target

__all__ = ["CHECK_INTERVAL", "MAX_TOKEN_FILE", "TokenTable", "parse_tokens", "token_of"]

MAX_TOKEN_FILE = 4 * 1024 * 1024  # bytes read from one token file (security limit)
CHECK_INTERVAL = 1.0  # seconds between checks of the files' modification times


def parse_tokens(text: str, source: str) -> dict[str, Address]:
    """Parse ``token: host:port`` lines; raises ConfigError naming the file and line."""
    table: dict[str, Address] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        token, sep, target = line.partition(":")
        try:
            if not sep or not token.strip():
                raise ValueError(line)
            table[token.strip()] = parse_target(target.strip())
        except ValueError:
            raise ConfigError(
                f"bad line {raw.strip()!r}",
                source=source,
                line=number,
                expected="token: host:port",
            ) from None
    return table


def token_of(request: Request) -> str | None:
    """The token in the request's ``token`` query parameter, else in its ``token`` cookie."""
    query = parse_qs(urlsplit(request.target).query)
    if query.get("token"):
        return query["token"][0]
    cookie_header = request.header("Cookie")
    if cookie_header:
        try:
            cookie = SimpleCookie(cookie_header)
        except CookieError:
            return None
        if "token" in cookie:
            return cookie["token"].value
    return None


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
