"""The rules of serving static files, sans-I/O: which request paths are safe, which byte range a
``Range`` header asks for, whether ``If-Modified-Since`` allows a ``304``, and the response head.

Nothing here touches the file system; :mod:`wsproxy.webserver` resolves the segments under its
root (and re-checks symlinks there) and streams the file.
"""

from __future__ import annotations

import calendar
import email.utils
import html
import re
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus

from wsproxy.errors import HandshakeError

__all__ = [
    "MAX_TARGET_BYTES",
    "ByteRange",
    "RangeNotSatisfiable",
    "content_type",
    "http_date",
    "listing_page",
    "not_modified",
    "parse_http_date",
    "parse_range",
    "redirect_location",
    "request_segments",
    "response_head",
]

MAX_TARGET_BYTES = 2048  # a longer request path gets 414 (security limit)
MAX_RANGE_DIGITS = 18  # a longer number in a Range header makes it ignored (int() stays cheap)

_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# ASCII digits only: str.isdigit() also takes "²" or "٣", which int() then refuses or misreads.
_RANGE_SPEC = re.compile(rf"([0-9]{{0,{MAX_RANGE_DIGITS}}})-([0-9]{{0,{MAX_RANGE_DIGITS}}})")
_TEXT_TYPES = ("text/", "application/javascript", "application/json", "image/svg+xml")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTH = "(?P<month>" + "|".join(_MONTHS) + ")"
_CLOCK = r"(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})"
_SHORT_DAY = "(?:" + "|".join(day[:3] for day in _WEEKDAYS) + ")"
_LONG_DAY = "(?:" + "|".join(_WEEKDAYS) + ")"
# The three forms a recipient must accept (RFC 9110 section 5.6.7), ASCII digits of fixed width,
# so that no number can grow past what a date holds.
_HTTP_DATES = tuple(
    re.compile(form, re.ASCII)
    for form in (
        rf"{_SHORT_DAY}, (?P<day>[0-9]{{2}}) {_MONTH} (?P<year>[0-9]{{4}}) {_CLOCK} GMT",
        rf"{_LONG_DAY}, (?P<day>[0-9]{{2}})-{_MONTH}-(?P<year>[0-9]{{2}}) {_CLOCK} GMT",
        rf"{_SHORT_DAY} {_MONTH} (?P<day>[ 0-9][0-9]) {_CLOCK} (?P<year>[0-9]{{4}})",
    )
)


def request_segments(target: str, *, max_bytes: int = MAX_TARGET_BYTES) -> tuple[str, ...]:
    """The decoded path segments of a request target, or a refusal.

    The target must be an origin-form path (``/a/b?q``). Each segment is percent-decoded on its
    own, so an encoded slash cannot create a new segment. Refused:

    * 414 past ``max_bytes``; 400 for a target not starting with ``/``, a malformed escape or
      invalid UTF-8;
    * 403 for anything that could leave the root or name something other than a plain entry:
      ``.``/``..`` (also encoded), an encoded ``/``, a backslash, a NUL or other control character
      (raw or encoded), and dot-files such as ``.git`` or ``.htpasswd``.

    Empty segments (``//``) are dropped; a trailing slash gives a final empty segment ``""`` so
    the caller can tell ``/dir/`` from ``/dir``.
    """
    if len(target) > max_bytes:
        raise HandshakeError(
            HTTPStatus.REQUEST_URI_TOO_LONG, f"request path over {max_bytes} bytes"
        )
    path = target.split("#", 1)[0].split("?", 1)[0]
    if not path.startswith("/"):
        raise HandshakeError(HTTPStatus.BAD_REQUEST, "request path must start with /")
    if _BAD_ESCAPE.search(path):
        raise HandshakeError(HTTPStatus.BAD_REQUEST, "malformed percent-escape in path")
    raw = path[1:].split("/")
    segments: list[str] = []
    for index, part in enumerate(raw):
        try:
            # The target holds the request's bytes one per character (latin-1): percent-decode
            # those bytes, then decode UTF-8 once, whether the client escaped it or not.
            name = urllib.parse.unquote_to_bytes(part.encode("latin-1")).decode("utf-8")
        except UnicodeError:
            raise HandshakeError(HTTPStatus.BAD_REQUEST, "path is not UTF-8") from None
        if not name:
            if index == len(raw) - 1:
                segments.append("")
            continue
        if name.startswith(".") or "/" in name or "\\" in name:
            raise HandshakeError(HTTPStatus.FORBIDDEN, "path not allowed")
        if any(ord(c) < 32 or ord(c) == 127 for c in name):
            raise HandshakeError(HTTPStatus.FORBIDDEN, "path not allowed")
        segments.append(name)
    return tuple(segments)


def redirect_location(segments: tuple[str, ...], target: str) -> str:
    """The ``Location`` of a directory asked for without its trailing slash: the normalised
    path, re-escaped, plus the query. Never the raw target: ``//host`` there would send a
    browser to another site."""
    path = "/".join(urllib.parse.quote(segment, safe="") for segment in segments if segment)
    query = target.partition("#")[0].partition("?")[2]
    return f"/{path}/" + (f"?{query}" if query else "")


@dataclass(frozen=True)
class ByteRange:
    """Bytes ``start`` to ``end`` inclusive, of a representation of ``size`` bytes."""

    start: int
    end: int
    size: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self) -> str:
        return f"bytes {self.start}-{self.end}/{self.size}"


class RangeNotSatisfiable(HandshakeError):
    """A ``Range`` none of whose bytes exist: ``416`` with ``Content-Range: bytes */SIZE``."""

    def __init__(self, size: int) -> None:
        super().__init__(
            HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE,
            "requested range not satisfiable",
            (("Content-Range", f"bytes */{size}"),),
        )


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The single byte range asked for, or None to send the whole file (RFC 9110 section 14.2).

    Only one ``bytes=`` range is honoured: a malformed header (numbers must be ASCII digits, at
    most ``MAX_RANGE_DIGITS`` of them), another unit or several ranges are ignored (the whole
    file is sent, as the RFC allows). Raises :class:`RangeNotSatisfiable`
    when the range starts past the end or is an empty suffix.
    """
    if header is None:
        return None
    unit, sep, spec = header.strip().partition("=")
    if not sep or unit.strip().lower() != "bytes" or "," in spec:
        return None
    match = _RANGE_SPEC.fullmatch(spec.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first:
        if not last:
            return None
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(size)
        return ByteRange(max(size - suffix, 0), size - 1, size)
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        raise RangeNotSatisfiable(size)
    end = min(int(last), size - 1) if last else size - 1
    return ByteRange(start, end, size)


def http_date(timestamp: float) -> str:
    """An IMF-fixdate (``Sun, 06 Nov 1994 08:49:37 GMT``)."""
    return email.utils.formatdate(timestamp, usegmt=True)


def parse_http_date(text: str) -> int | None:
    """The POSIX time of an HTTP-date in any of its three forms, or None if it is not one.

    Strict on purpose (a general date parser accepted 20-digit years and zones, then overflowed):
    fixed-width ASCII fields, GMT only, and a calendar check. A two-digit RFC 850 year is taken
    as 19xx from 70 on, else 20xx.
    """
    text = text.strip()
    for form in _HTTP_DATES:
        if (match := form.fullmatch(text)) is not None:
            break
    else:
        return None
    field = match.groupdict()
    year = int(field["year"])
    if len(field["year"]) == 2:
        year += 1900 if year >= 70 else 2000
    hour, minute, second = int(field["hour"]), int(field["minute"]), int(field["second"])
    day = int(field["day"])
    month = _MONTHS.index(field["month"]) + 1
    if not (1 <= day <= calendar.monthrange(year, month)[1] and hour < 24 and minute < 60):
        return None
    if second > 60:  # 60: a leap second, as the RFC's grammar allows
        return None
    return calendar.timegm((year, month, day, hour, minute, second))


def not_modified(if_modified_since: str | None, mtime: float) -> bool:
    """True if the file has not changed since the client's copy: answer ``304``.

    HTTP dates have whole seconds, so the file time is truncated; an unparsable date is ignored.
    """
    since = parse_http_date(if_modified_since) if if_modified_since else None
    return since is not None and int(mtime) <= since


def content_type(guessed: str | None) -> str:
    """The ``Content-Type`` for a guessed MIME type; text types are declared UTF-8."""
    if not guessed:
        return "application/octet-stream"
    if guessed.startswith(_TEXT_TYPES):
        return f"{guessed}; charset=utf-8"
    return guessed


def response_head(status: HTTPStatus, headers: Iterable[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status.value} {status.phrase}"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def listing_page(path: str, names: Iterable[tuple[str, bool]]) -> bytes:
    """An HTML index of a directory: ``names`` are (entry name, is a directory) pairs."""
    title = html.escape(path)
    items = []
    for name, is_dir in names:
        shown = name + "/" if is_dir else name
        href = urllib.parse.quote(name) + ("/" if is_dir else "")
        items.append(f'<li><a href="{html.escape(href)}">{html.escape(shown)}</a></li>')
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{title}</title></head>\n'
        f"<body><h1>{title}</h1><ul>\n" + "\n".join(items) + "\n</ul></body></html>\n"
    ).encode("utf-8")
