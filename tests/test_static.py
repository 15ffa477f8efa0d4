"""wsproxy.protocol.static: safe request paths, byte ranges and conditional GET, without sockets."""

from __future__ import annotations

import time
import urllib.parse
from http import HTTPStatus

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsproxy.errors import HandshakeError
from wsproxy.protocol.static import (
    ByteRange,
    RangeNotSatisfiable,
    content_type,
    http_date,
    not_modified,
    parse_http_date,
    parse_range,
    redirect_location,
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


# -- properties (hypothesis): any input gives a result or the module's own error -----------------

# What parse_request hands over: the request's bytes, one character each (latin-1).
wire_text = st.binary(max_size=300).map(lambda b: b.decode("latin-1"))
any_text = st.one_of(st.text(max_size=300), wire_text)
safe_names = st.text(min_size=1, max_size=20).filter(
    lambda n: (
        not n.startswith(".") and not any(c in "/\\" or ord(c) < 32 or ord(c) == 127 for c in n)
    )
)


@given(st.one_of(any_text, any_text.map(lambda t: "/" + t)))
def test_any_target_gives_safe_segments_or_a_refusal(target: str) -> None:
    try:
        segments = request_segments(target)
    except HandshakeError as exc:
        assert exc.status in (400, 403, 414)
        return
    assert all(segments[:-1])  # only the last may be "" (a trailing slash)
    for name in segments:
        assert not name.startswith(".") and "/" not in name and "\\" not in name
        assert not any(ord(c) < 32 or ord(c) == 127 for c in name)


def raw_or_escaped(char: str) -> str:
    if ord(char) < 128:
        return urllib.parse.quote(char, safe="")
    return char.encode("utf-8", "surrogatepass").decode("latin-1")


@given(st.lists(safe_names, min_size=1, max_size=6), st.booleans(), st.text(max_size=20))
def test_escaped_segments_and_redirects_round_trip(names: list[str], raw: bool, query: str) -> None:
    escaped = [urllib.parse.quote(n, safe="") for n in names]
    if raw:  # non-ASCII as raw UTF-8 bytes, as some clients send it
        escaped = ["".join(map(raw_or_escaped, n)) for n in names]
    target = "/" + "/".join(escaped)
    assert request_segments(target) == tuple(names)
    query = urllib.parse.quote(query, safe="=&")
    location = redirect_location(tuple(names), target + ("?" + query if query else ""))
    assert location.startswith("/") and not location.startswith("//")
    assert request_segments(location) == (*names, "")
    assert location.partition("?")[2] == query


@given(any_text, st.integers(min_value=0, max_value=1 << 62))
def test_any_range_header_gives_a_range_inside_the_file_or_416(header: str, size: int) -> None:
    try:
        byte_range = parse_range(header, size)
    except RangeNotSatisfiable as exc:
        assert exc.status == 416
        return
    if byte_range is not None:
        assert 0 <= byte_range.start <= byte_range.end < size
        assert byte_range.length == byte_range.end - byte_range.start + 1


@given(st.integers(min_value=1, max_value=1 << 50), st.data())
def test_a_range_round_trips(size: int, data: st.DataObject) -> None:
    start = data.draw(st.integers(min_value=0, max_value=size - 1))
    end = data.draw(st.integers(min_value=start, max_value=size - 1))
    assert parse_range(f"bytes={start}-{end}", size) == ByteRange(start, end, size)
    assert parse_range(f"bytes={start}-", size) == ByteRange(start, size - 1, size)


# Every second from 1970 to 9999: what an HTTP-date can say.
timestamps = st.integers(min_value=0, max_value=253402300799)


@given(timestamps)
def test_http_dates_round_trip_in_all_three_forms(timestamp: int) -> None:
    assert parse_http_date(http_date(timestamp)) == timestamp
    when = time.gmtime(timestamp)
    asctime = (
        time.strftime("%a %b ", when) + f"{when.tm_mday:2d}" + time.strftime(" %H:%M:%S %Y", when)
    )
    assert parse_http_date(asctime) == timestamp
    if 1970 <= when.tm_year < 2070:  # two-digit years: 70-99 are 19xx, the rest 20xx
        rfc850 = time.strftime("%A, %d-%b-%y %H:%M:%S GMT", when)
        assert parse_http_date(rfc850) == timestamp


# Date-shaped text with numbers of any size (a 20-digit year once overflowed) and any zone.
numbers = st.integers(min_value=0, max_value=10**25).map(str)
zones = st.one_of(st.sampled_from(["GMT", "UTC", "EST", ""]), st.integers().map("{:+05d}".format))
date_shaped = st.builds(
    "{}, {} {} {} {}:{}:{} {}".format,
    st.sampled_from(["Mon", "Sunday", "Xyz"]),
    numbers,
    st.sampled_from(["Jan", "Feb", "Foo"]),
    numbers,
    numbers,
    numbers,
    numbers,
    zones,
)


@given(st.one_of(any_text, date_shaped))
def test_any_if_modified_since_gives_a_date_or_none(text: str) -> None:
    since = parse_http_date(text)
    assert since is None or 0 <= since <= 253402300799 + 1
    assert not_modified(text, 1_700_000_000) in (True, False)
