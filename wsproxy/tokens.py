"""Targets chosen per client by a token, compatible with websockify's ``TokenFile`` plugin.

One proxy can front many services: the client names a token in its URL
(``ws://host:6080/websockify?token=vnc1``) or in a ``token`` cookie, and a token file maps it to
a target. The file (or every file in a directory) holds lines ``token: host:port``; ``#`` starts
a comment. This module parses; :mod:`wsproxy.tokenfile` reads the files (and re-reads them when
they change, so operators edit them without a restart).
"""

from __future__ import annotations

from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qs, urlsplit

from wsproxy.errors import ConfigError
from wsproxy.protocol.handshake import Request
from wsproxy.settings.values import Address, parse_target

__all__ = ["parse_tokens", "token_of"]


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
