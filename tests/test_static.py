"""wsproxy.protocol.static: safe request paths, byte ranges and conditional GET, without sockets."""

from __future__ import annotations

from http import HTTPStatus

import pytest

from wsproxy.errors import HandshakeError
from wsproxy.protocol.static import (
    ByteRange,
    RangeNotSatisfiable,
    content_type,
    http_date,
    not_modified,
    parse_range,
    request_segments,
)


@pytest.mark.parametrize(
    ("target", "segments"),
    [
        ("/", ("",)),
        ("/index.html", ("index.html",)),
        ("/a/b.txt?x=1#frag", ("a", "b.txt")),
        ("/dir/", ("dir", "")),
        ("//etc/passwd", ("etc", "passwd")),  # empty segments dropped: still under the root
        ("/a%20b.txt", ("a b.txt",)),
        ("/caf%C3%A9", ("café",)),
        ("/%252e%252e/x", ("%2e%2e", "x")),  # decoded once: a literal name, not a parent
        ("/a..b", ("a..b",)),
    ],
)
def test_request_segments(target: str, segments: tuple[str, ...]) -> None:
    assert request_segments(target) == segments


# At least twenty ways to try to leave the root; each is refused before any file is touched.
TRAVERSALS = [
    ("/..", HTTPStatus.FORBIDDEN),
    ("/../etc/passwd", HTTPStatus.FORBIDDEN),
    ("/a/../../etc/passwd", HTTPStatus.FORBIDDEN),
    ("/./etc", HTTPStatus.FORBIDDEN),
    ("/%2e%2e/etc/passwd", HTTPStatus.FORBIDDEN),
    ("/%2E%2E/etc/passwd", HTTPStatus.FORBIDDEN),
    ("/.%2e/etc/passwd", HTTPStatus.FORBIDDEN),
    ("/%2e./etc/passwd", HTTPStatus.FORBIDDEN),
    ("/%2e/etc", HTTPStatus.FORBIDDEN),
    ("/..%2fetc%2fpasswd", HTTPStatus.FORBIDDEN),
    ("/..%2Fetc", HTTPStatus.FORBIDDEN),
    ("/a%2f..%2f..%2fetc", HTTPStatus.FORBIDDEN),
    ("/%2fetc%2fpasswd", HTTPStatus.FORBIDDEN),
    ("/..\\etc\\passwd", HTTPStatus.FORBIDDEN),
    ("/a\\..\\..\\etc", HTTPStatus.FORBIDDEN),
    ("/..%5cetc", HTTPStatus.FORBIDDEN),
    ("/index.html%00.txt", HTTPStatus.FORBIDDEN),
    ("/a\x00b", HTTPStatus.FORBIDDEN),
    ("/a%0d%0aSet-Cookie:x", HTTPStatus.FORBIDDEN),
    ("/.git/config", HTTPStatus.FORBIDDEN),
    ("/.htpasswd", HTTPStatus.FORBIDDEN),
    ("/..;/etc", HTTPStatus.FORBIDDEN),
    ("/%c0%ae%c0%ae/etc", HTTPStatus.BAD_REQUEST),  # overlong UTF-8 for "..": not UTF-8
    ("/%e0%80%ae/x", HTTPStatus.BAD_REQUEST),
    ("/%zz/x", HTTPStatus.BAD_REQUEST),
    ("/x%2", HTTPStatus.BAD_REQUEST),
    ("etc/passwd", HTTPStatus.BAD_REQUEST),
    ("http://host/../etc/passwd", HTTPStatus.BAD_REQUEST),
    ("*", HTTPStatus.BAD_REQUEST),
    ("/" + "a" * 3000, HTTPStatus.REQUEST_URI_TOO_LONG),
]


@pytest.mark.parametrize(("target", "status"), TRAVERSALS)
def test_request_segments_refuses_traversal(target: str, status: HTTPStatus) -> None:
    with pytest.raises(HandshakeError) as info:
        request_segments(target)
    assert info.value.status is status


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 100, None),
        ("bytes=0-9", 100, ByteRange(0, 9, 100)),
        ("bytes=90-", 100, ByteRange(90, 99, 100)),
        ("bytes=-10", 100, ByteRange(90, 99, 100)),
        ("bytes=-500", 100, ByteRange(0, 99, 100)),
        ("bytes=50-5000", 100, ByteRange(50, 99, 100)),
        ("bytes=99-99", 100, ByteRange(99, 99, 100)),
        ("BYTES = 1-2", 100, ByteRange(1, 2, 100)),
        # Ignored (the whole file is sent): malformed, other units, several ranges.
        ("bytes=5-1", 100, None),
        ("bytes=0-1,5-6", 100, None),
        ("items=0-1", 100, None),
        ("bytes=a-b", 100, None),
        ("bytes=-", 100, None),
        ("bytes 0-1", 100, None),
        ("bytes=\xb2-", 100, None),  # latin-1 "²": isdigit() takes it, int() refuses it
        ("bytes=-\xb2", 100, None),
        ("bytes=0-\u0669", 100, None),  # an Arabic-Indic nine
        ("bytes=0-" + "9" * 5000, 100, None),  # past int()'s digit limit
        ("bytes=" + "1" * 19 + "-", 100, None),  # over MAX_RANGE_DIGITS
    ],
)
def test_parse_range(header: str | None, size: int, expected: ByteRange | None) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(
    ("header", "size"), [("bytes=100-", 100), ("bytes=-0", 100), ("bytes=0-", 0)]
)
def test_unsatisfiable_range_is_416_with_the_size(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable) as info:
        parse_range(header, size)
    assert info.value.status is HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE
    assert ("Content-Range", f"bytes */{size}") in info.value.headers


def test_byte_range_content_range_and_length() -> None:
    r = ByteRange(10, 19, 100)
    assert (r.length, r.content_range()) == (10, "bytes 10-19/100")


def test_not_modified_compares_whole_seconds() -> None:
    mtime = 1_700_000_000.75
    assert not_modified(http_date(mtime), mtime)
    assert not_modified(http_date(mtime + 60), mtime)
    assert not not_modified(http_date(mtime - 1), mtime)
    assert not not_modified(None, mtime)
    assert not not_modified("yesterday", mtime)
    assert not not_modified("Tue, 14 Nov 2023 22:13:20", mtime)  # no zone: not an HTTP date


@pytest.mark.parametrize(
    ("guessed", "header"),
    [
        ("text/html", "text/html; charset=utf-8"),
        ("text/javascript", "text/javascript; charset=utf-8"),
        ("image/png", "image/png"),
        (None, "application/octet-stream"),
    ],
)
def test_content_type(guessed: str | None, header: str) -> None:
    assert content_type(guessed) == header
