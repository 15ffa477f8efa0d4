"""The settings table: value forms and the derived rows."""

from __future__ import annotations

import pytest

from wsproxy.settings import SETTINGS_BY_NAME, format_address, parse_listen, parse_target


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
    "text", ["", "x", "70000", "-1", "::1:80", "[::1]", "[::1]80", "[nothost]:80", "host:"]
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
