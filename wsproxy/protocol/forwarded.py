"""Who is the real client behind a load balancer, sans-I/O: the ``trusted_proxies`` rule and the
``X-Forwarded-For`` chain.

Each proxy appends the address it received a connection from, so in ``client, proxy1, proxy2``
only the entries added by proxies we trust are believed: reading from the right, the first address
that is not a trusted proxy is the client (anything left of it may be made up by that client).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

__all__ = ["TrustedProxies", "forwarded_client", "parse_ip"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class TrustedProxies:
    """A set of networks (``127.0.0.1``, ``10.0.0.0/8``, ``fd00::/8``); an empty set trusts none.

    Raises ValueError for an entry that is not an address or a network.
    """

    def __init__(self, entries: Iterable[str]) -> None:
        self.networks = tuple(ipaddress.ip_network(e, strict=False) for e in entries)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __contains__(self, host: object) -> bool:
        ip = parse_ip(host) if isinstance(host, str) else host
        if not isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address):
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # a dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d
        return any(ip.version == net.version and ip in net for net in self.networks)

    def __repr__(self) -> str:
        return f"TrustedProxies({[str(n) for n in self.networks]!r})"


def parse_ip(text: str) -> IPAddress | None:
    """An address as proxies write it: bare, ``[v6]``, ``v4:port`` or ``[v6]:port``; else None."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def forwarded_client(header: str | None, trusted: TrustedProxies) -> str | None:
    """The client address an ``X-Forwarded-For`` value names, or None to keep the peer's.

    ``header`` must come from a trusted peer (the caller checks). The right-most entry that is
    not a trusted proxy is the client; if every entry is trusted, the left-most one. An entry that
    is not an address (``unknown``, garbage) makes the whole header unusable: None.
    """
    if not header:
        return None
    hops = [parse_ip(hop) for hop in header.split(",")]
    if any(hop is None for hop in hops):
        return None
    for hop in reversed(hops):
        if hop not in trusted:
            return str(hop)
    return str(hops[0])
