"""wsproxy.protocol.policy: the Flash cross-domain policy document and its settings."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from wsproxy.errors import ConfigError
from wsproxy.protocol.policy import parse_domain, parse_ports, policy_response
from wsproxy.settings import Settings


def parse(answer: bytes) -> ET.Element:
    assert answer.endswith(b"\0")
    assert answer.count(b"\0") == 1
    return ET.fromstring(answer[:-1].split(b"\n", 2)[2])  # skip the XML declaration and DOCTYPE


def test_policy_allows_the_domain_and_ports() -> None:
    root = parse(policy_response("*", [6080]))
    assert root.tag == "cross-domain-policy"
    (allow,) = root
    assert allow.tag == "allow-access-from"
    assert allow.attrib == {"domain": "*", "to-ports": "6080"}


def test_policy_lists_several_ports_and_ranges() -> None:
    allow = parse(policy_response("*.example.com", ["5900-5910", "6080"]))[0]
    assert allow.attrib == {"domain": "*.example.com", "to-ports": "5900-5910,6080"}


@pytest.mark.parametrize("text", ["*", "example.com", "*.example.com", "10.0.0.1", "::1"])
def test_parse_domain_accepts(text: str) -> None:
    assert parse_domain(text) == text


@pytest.mark.parametrize("text", ["", 'a"b', "a b", "<x>", "exa*mple.com", "a&b"])
def test_parse_domain_refuses_what_could_break_the_xml(text: str) -> None:
    with pytest.raises(ValueError):
        parse_domain(text)


@pytest.mark.parametrize(
    ("text", "ports"),
    [("6080", ("6080",)), ("5900-5910, 6080", ("5900-5910", "6080")), ("*", ("*",)), ("", ())],
)
def test_parse_ports(text: str, ports: tuple[str, ...]) -> None:
    assert parse_ports(text) == ports


@pytest.mark.parametrize("text", ["70000", "10-5", "a", "1-2-3", '1"', "-5"])
def test_parse_ports_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_ports(text)


def test_policy_settings_come_from_the_table() -> None:
    settings = Settings.load(
        ini={"policy_domain": ("example.com", 3), "policy_ports": ("843, 6080", 4)},
        ini_source="x.ini",
        cli={"listen": "6080", "target": "localhost:5900"},
    )
    assert settings.policy is True
    assert settings.policy_domain == "example.com"
    assert settings.policy_ports == ("843", "6080")
    with pytest.raises(ConfigError, match=r"x.ini:7: policy_ports"):
        Settings.load(
            ini={"policy_ports": ("99999", 7)},
            ini_source="x.ini",
            cli={"listen": "6080", "target": "localhost:5900"},
        )
