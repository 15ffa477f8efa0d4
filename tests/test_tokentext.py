"""Token lines, the request's token, plug-in sources and plug-in results (sans-I/O)."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsproxy.plugins.tokentext import as_target, parse_source_args, parse_tokens, token_of
from wsproxy.protocol.handshake import Request, parse_request


def request(target: str, *headers: str, host: str | None = "x") -> Request:
    lines = [f"Host: {host}"] if host is not None else []
    head = f"GET {target} HTTP/1.1\r\n" + "".join(h + "\r\n" for h in [*lines, *headers])
    parsed = parse_request((head + "\r\n").encode())
    assert parsed is not None
    return parsed[0]


def test_token_lines_as_websockify_reads_them() -> None:
    text = (
        "# tokens\n"
        "vnc1: 10.0.0.1:5900\n"
        "\n"
        " term : [::1]:23  # trailing comment\n"
        "bare: ::1:5998\n"  # websockify splits the target at its last colon
        "a:b: host:7\n"  # the token ends at the first colon followed by white space
        "tight:h:8\n"  # no white space: the first colon
        "sock: unix_socket:/run/vnc.sock\n"
    )
    table, bad = parse_tokens(text)
    assert table == {
        "vnc1": ("10.0.0.1", 5900),
        "term": ("::1", 23),
        "bare": ("::1", 5998),
        "a:b": ("host", 7),
        "tight": ("h", 8),
        "sock": "/run/vnc.sock",
    }
    assert bad == []


def test_bad_lines_are_skipped_with_their_numbers() -> None:
    table, bad = parse_tokens("ok: h:1\nnovalue\nt: host\nt2: host:0\n: host:1\nlast: h:2\n")
    assert table == {"ok": ("h", 1), "last": ("h", 2)}
    assert bad == [(2, "novalue"), (3, "t: host"), (4, "t2: host:0"), (5, ": host:1")]


def test_token_from_query_then_cookie() -> None:
    assert token_of(request("/websockify?token=abc&x=1")) == "abc"
    assert token_of(request("/?token=abc%0A")) == "abc"  # websockify strips a trailing newline
    assert token_of(request("/?x=1", "Cookie: a=b; token=fromcookie")) == "fromcookie"
    assert token_of(request("/?token=q", "Cookie: token=c")) == "q"
    assert token_of(request("/")) is None


def test_host_token_is_the_host_header_without_port() -> None:
    assert token_of(request("/?token=q", host="vnc1.example.com:6080"), host_token=True) == (
        "vnc1.example.com"
    )
    assert token_of(request("/", host="vnc2"), host_token=True) == "vnc2"
    assert token_of(request("/", host="[fd00::1]:6080"), host_token=True) == "[fd00::1]"
    assert token_of(request("/?token=q", host=None), host_token=True) is None


@pytest.mark.parametrize(
    ("source", "fields"),
    [
        ("h", ["h"]),
        ("h:6380", ["h", "6380"]),
        ("h:::secret", ["h", "", "", "secret"]),
        ('h::::"first-ns:second-ns"', ["h", "", "", "", "first-ns:second-ns"]),
        ('h:6380:1:"pa:ss":ns', ["h", "6380", "1", "pa:ss", "ns"]),
        ('a:b"c:d', ["a", 'b"c', "d"]),
    ],
)
def test_source_fields_split_at_colons_outside_quotes(source: str, fields: list[str]) -> None:
    assert parse_source_args(source) == fields


@pytest.mark.parametrize(
    ("result", "target"),
    [
        (None, None),
        (("h", 5900), ("h", 5900)),
        (["h", "5900"], ("h", 5900)),
        (["h", b"5900"], ("h", 5900)),  # websockify's BaseTokenAPI returns the port as bytes
        (("[::1]", 1), ("::1", 1)),
        (("::1", "1"), ("::1", 1)),
        (["unix_socket", "/run/s"], "/run/s"),
        (["unix_socket", Path("/run/s")], "/run/s"),  # websockify's UnixDomainSocketDirectory
    ],
)
def test_plugin_results_become_targets(result: object, target: object) -> None:
    assert as_target(result) == target


@pytest.mark.parametrize(
    "result",
    [
        "h:1",
        b"h:1",
        ("h",),
        ("h", 1, 2),
        ("h", "x"),
        ("h", 0),
        ("h", 70000),
        ("", 1),
        ("a b", 1),
        ("h", True),
        ["unix_socket", ""],
        {"host": "h"},
    ],
)
def test_other_plugin_results_are_refused(result: object) -> None:
    with pytest.raises(ValueError):
        as_target(result)
