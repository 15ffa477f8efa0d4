"""The text side of token plug-ins, without I/O: token lines, the request's token, plug-in
sources with quoted fields, and what a plug-in's ``lookup`` may return.

Everything here follows websockify 0.13 so that its token files, sources and custom plug-ins
mean the same to wsproxy.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qs

from wsproxy.protocol.handshake import Request
from wsproxy.settings.values import parse_port, parse_target
from wsproxy.targets import Target

__all__ = [
    "UNIX_SOCKET",
    "BadLine",
    "as_target",
    "parse_source_args",
    "parse_tokens",
    "token_of",
]

UNIX_SOCKET = "unix_socket"  # websockify's host name for "the port is a UNIX socket path"
TOKEN_LINE = "token: host:port"

# websockify splits a token line at the first colon followed by white space, so a token may
# hold colons (``a:b: host:1``); a line without one splits at its first colon.
_TOKEN_SEPARATOR = re.compile(r":\s+")
# A source field is text without colons or a double-quoted text that may hold them.
_SOURCE_FIELD = re.compile(r'"([^"]*)"|([^:]*)')


BadLine = tuple[int, str]  # (line number, the line) of a line that was skipped


def parse_tokens(text: str) -> tuple[dict[str, Target], list[BadLine]]:
    """Parse ``token: host:port`` lines (``#`` starts a comment).

    Returns the table and the lines that were skipped, as websockify skips them: one bad line
    does not cost the others. ``token: unix_socket:PATH`` names a UNIX socket, as in websockify.
    """
    table: dict[str, Target] = {}
    bad: list[BadLine] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = _TOKEN_SEPARATOR.split(line, maxsplit=1)
        if len(parts) < 2:
            parts = line.split(":", 1)
        token, target = parts[0].strip(), parts[-1].strip() if len(parts) == 2 else ""
        try:
            if not token or not target:
                raise ValueError(line)
            table[token] = _parse_target(target)
        except ValueError:
            bad.append((number, raw.strip()))
    return table, bad


def _parse_target(text: str) -> Target:
    kind, sep, path = text.partition(":")
    if sep and kind == UNIX_SOCKET:
        if not path:
            raise ValueError(text)
        return path
    return parse_target(text)


def token_of(request: Request, *, host_token: bool = False) -> str | None:
    """The client's token, as websockify finds it.

    With ``host_token`` it is the Host header without its port (websockify cuts at the first
    colon; a bracketed IPv6 host is kept whole). Otherwise it is the ``token`` query parameter
    (a trailing newline cut, as websockify does), else, as an extra of ours, a ``token`` cookie.
    """
    if host_token:
        host = (request.header("Host") or "").strip()
        name = host[: host.find("]") + 1] if host.startswith("[") else host.partition(":")[0]
        return name or None
    # Not urlsplit: it raises on a bad authority (``http://[x/?token=a``), which is client input.
    query = parse_qs(request.target.partition("#")[0].partition("?")[2])
    if query.get("token"):
        return query["token"][0].rstrip("\n")
    cookie_header = request.header("Cookie")
    if cookie_header:
        try:
            cookie = SimpleCookie(cookie_header)
        except CookieError:
            return None
        if "token" in cookie:
            return cookie["token"].value
    return None


def parse_source_args(source: str) -> list[str]:
    """Split a source at its colons, as websockify does, except inside double quotes:
    ``a:"b:c":d`` -> ``["a", "b:c", "d"]``."""
    fields: list[str] = []
    position = 0
    while True:
        match = _SOURCE_FIELD.match(source, position)
        assert match is not None  # the second alternative matches the empty text
        quoted, plain = match.groups()
        end = match.end()
        if quoted is not None and end < len(source) and source[end] != ":":
            # a quote inside a field is plain text, as in websockify
            match = re.compile(r"[^:]*").match(source, position)
            assert match is not None
            quoted, plain, end = None, match.group(), match.end()
        fields.append(quoted if quoted is not None else plain or "")
        if end >= len(source):
            return fields
        position = end + 1  # past the colon


def as_target(result: object) -> Target | None:
    """What a websockify-style ``lookup()`` returned, as a target; None for "not found".

    A plug-in returns ``(host, port)`` (websockify's own return the port as text or bytes, and
    may bracket an IPv6 host), ``["unix_socket", path]``, or None. Raises ValueError for
    anything else.
    """
    if result is None:
        return None
    if isinstance(result, str | bytes) or not isinstance(result, Sequence) or len(result) != 2:
        raise ValueError(f"expected (host, port), ['unix_socket', path] or None, got {result!r}")
    host, port = (_text(part) for part in result)
    if host == UNIX_SOCKET:
        if not port or "\0" in port:
            raise ValueError(f"bad UNIX socket path {port!r}")
        return port
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or any(c.isspace() or c in "/[]" for c in host):
        raise ValueError(f"bad host {host!r}")
    number = parse_port(port)
    if number == 0:
        raise ValueError("port 0")
    return host, number


def _text(value: object) -> str:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, bytes):
        return os.fsdecode(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str):
        return value
    raise ValueError(f"expected text, bytes or a number, got {value!r}")
