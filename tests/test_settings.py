"""The settings table: value forms and the derived rows."""

from __future__ import annotations

import pytest

from wsproxy.settings import SETTINGS_BY_NAME
from wsproxy.settings.values import format_address, parse_listen, parse_target


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
