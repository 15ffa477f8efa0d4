"""The Flash cross-domain policy answer, sans-I/O.

Flash (and some old Java/Silverlight) socket clients first ask ``<policy-file-request/>\\0`` on the
port they want to reach; the answer lists who may connect to which ports, terminated by a NUL.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["parse_domain", "parse_ports", "policy_response"]

_DOMAIN = re.compile(r"^(\*|(\*\.)?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*|[0-9A-Fa-f:.]+)$")
_PORT_ITEM = re.compile(r"^(\*|\d{1,5}(-\d{1,5})?)$")


def parse_domain(text: str) -> str:
    """A policy domain: ``*``, a host name (``*.example.com`` allowed) or an IP address."""
    value = text.strip()
    if not _DOMAIN.match(value):
        raise ValueError(text)
    return value


def parse_ports(text: str) -> tuple[str, ...]:
    """Allowed ports: items ``*``, ``N`` or ``N-M`` separated by commas or spaces."""
    items = tuple(item for item in text.replace(",", " ").split() if item)
    for item in items:
        if not _PORT_ITEM.match(item):
            raise ValueError(text)
        low, _, high = item.partition("-")
        if item != "*" and not (int(low) <= 65535 and int(high or low) <= 65535):
            raise ValueError(text)
        if high and int(high) < int(low):
            raise ValueError(text)
    return items


def policy_response(domain: str, ports: Iterable[str | int]) -> bytes:
    """The complete answer: a cross-domain-policy XML document followed by ``\\0``.

    ``domain`` and ``ports`` must have passed :func:`parse_domain` and :func:`parse_ports`
    (they are written into an attribute unescaped).
    """
    to_ports = ",".join(str(p) for p in ports) or "*"
    return (
        '<?xml version="1.0"?>\n'
        '<!DOCTYPE cross-domain-policy SYSTEM "http://www.adobe.com/xml/dtds/cross-domain-policy.dtd">\n'
        "<cross-domain-policy>\n"
        f'<allow-access-from domain="{domain}" to-ports="{to_ports}" />\n'
        "</cross-domain-policy>\n\0"
    ).encode("ascii")
