"""The settings table: value forms and the derived rows."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsproxy.errors import ConfigError
from wsproxy.settings import SETTINGS, SETTINGS_BY_NAME, Setting, read_ini
from wsproxy.settings.values import (
    format_address,
    format_value,
    parse_command,
    parse_listen,
    parse_target,
)


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("6080", ("", 6080)),
        ("0.0.0.0:6080", ("0.0.0.0", 6080)),
        ("localhost:0", ("localhost", 0)),
        ("[::1]:6080", ("::1", 6080)),
        ("[::]:1", ("::", 1)),
    ],
)
def test_listen_forms_round_trip(text: str, address: tuple[str, int]) -> None:
    assert parse_listen(text) == address
    assert parse_listen(format_address(address)) == address


@pytest.mark.parametrize(
    "text", ["", "x", "70000", "-1", "[::1]", "[::1]80", "[nothost]:80", "host:"]
)
def test_bad_listen_forms(text: str) -> None:
    with pytest.raises(ValueError):
        parse_listen(text)


@pytest.mark.parametrize("text", ["5900", ":5900", "host:0", "host:abc"])
def test_target_needs_host_and_nonzero_port(text: str) -> None:
    with pytest.raises(ValueError):
        parse_target(text)


def test_default_true_switch_is_spelled_no_on_the_command_line() -> None:
    assert SETTINGS_BY_NAME["hixie"].flag == "--no-hixie"
    assert SETTINGS_BY_NAME["verbose"].flag == "--verbose"
    assert SETTINGS_BY_NAME["listen"].flag is None


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("localhost:5900", ("localhost", 5900)),
        ("192.0.2.7:5900", ("192.0.2.7", 5900)),
        ("[::1]:5900", ("::1", 5900)),
        ("::1:5900", ("::1", 5900)),  # websockify splits at the last colon
        ("fd00::7:23", ("fd00::7", 23)),
    ],
)
def test_target_forms_as_websockify_splits_them(text: str, address: tuple[str, int]) -> None:
    assert parse_target(text) == address


@pytest.mark.parametrize(
    ("address", "text"),
    [
        (("::", 6080, 0, 0), "[::]:6080"),  # an IPv6 socket address has four fields
        (("::ffff:127.0.0.1", 5000, 0, 0), "127.0.0.1:5000"),  # IPv4 client, dual-stack socket
        (("127.0.0.1", 5000), "127.0.0.1:5000"),
        (("", 6080), "6080"),
        ("/run/ws.sock", "unix:/run/ws.sock"),  # a UNIX socket: its path ...
        ("", "unix"),  # ... or no name at all (an unbound client)
    ],
)
def test_format_address_takes_every_socket_address_form(
    address: tuple[object, ...] | str, text: str
) -> None:
    assert format_address(address) == text


# -- properties (hypothesis) ---------------------------------------------------------------------

value_text = st.one_of(
    st.text(max_size=60),
    st.from_regex(r"\A[ -~]{0,40}\Z"),  # printable ASCII, where most valid values live
    st.integers().map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
)


# One row per value parser (many rows share one).
parser_rows = list({id(row.parse): row for row in SETTINGS}.values())


@given(st.sampled_from(parser_rows), value_text)
def test_any_text_gives_a_value_or_a_value_error_and_values_round_trip(
    row: Setting, text: str
) -> None:
    try:
        value = row.parse(text)
    except ValueError:
        return
    if row.name == "workers" and text.strip().lower() == "auto":
        return  # auto becomes a count, which reads back as that count
    if isinstance(value, tuple) and row.parse is not parse_command and row.name != "listen":
        return  # lists are shown shell-quoted (--help) but read as plain words: no round trip
    assert row.parse(format_value(value)) == value


ini_keys = st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=20)
word = st.text(st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="#;%"))
ini_values = (
    st.lists(word.filter(bool), min_size=1, max_size=4)
    .map(" ".join)
    .filter(lambda v: not v.startswith(("[", "=", ":")))
)


@given(st.dictionaries(ini_keys, ini_values, max_size=8), st.sampled_from([" = ", "=", ": "]))
def test_ini_files_round_trip(entries: dict[str, str], sep: str) -> None:
    text = "# a comment\n[other]\nx = 1\n[wsproxy]\n" + "".join(
        f"{key}{sep}{value}\n" for key, value in entries.items()
    )
    read = read_ini(text, "test.ini")
    assert read == {key: (value, 5 + i) for i, (key, value) in enumerate(entries.items())}


@given(st.one_of(st.text(max_size=300), st.text(max_size=300).map(lambda t: "[wsproxy]\n" + t)))
def test_any_ini_text_gives_keys_or_a_config_error_naming_the_file(text: str) -> None:
    try:
        read = read_ini(text, "any.ini")
    except ConfigError as exc:
        assert exc.source == "any.ini" and exc.expected
        return
    for value, line in read.values():
        assert isinstance(value, str) and line >= 0
