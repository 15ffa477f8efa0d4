"""Value parsers of the settings table: each takes a setting's text form and returns its value,
or raises ValueError (the caller names the source, the key and the expected form).

Address forms follow websockify: ``[HOST:]PORT`` splits at the *last* colon, brackets are
optional around an IPv6 host (``[::1]:5900`` and ``::1:5900`` are the same target).
"""

from __future__ import annotations

import ipaddress
import os
import shlex
from collections.abc import Callable
from typing import Any

__all__ = [
    "Address",
    "choice",
    "format_address",
    "format_value",
    "parse_address",
    "parse_bool",
    "parse_command",
    "parse_count",
    "parse_list",
    "parse_listen",
    "parse_max_connections",
    "parse_mode",
    "parse_networks",
    "parse_path",
    "parse_port",
    "parse_positive",
    "parse_positive_seconds",
    "parse_seconds",
    "parse_size",
    "parse_syslog",
    "parse_target",
    "parse_text",
    "parse_window_bits",
    "parse_workers",
    "syslog_address",
]

Address = tuple[str, int]

_SIZE_UNITS = {"": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20, "g": 1 << 30}
_SIZE_UNITS["gib"] = 1 << 30


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "yes", "true", "on"):
        return True
    if value in ("0", "no", "false", "off"):
        return False
    raise ValueError(text)


def parse_port(text: str) -> int:
    text = text.strip()
    if not text.isascii() or not text.isdigit():
        raise ValueError(text)
    port = int(text, 10)
    if not 0 <= port <= 65535:
        raise ValueError(text)
    return port


def parse_address(text: str, *, default_host: str | None = None) -> Address:
    """Parse ``[HOST:]PORT`` as websockify does: split at the last colon, strip the brackets of
    an IPv6 host. Without a host, ``default_host`` is used; if it is None the host is required.
    """
    text = text.strip()
    host, sep, port = text.rpartition(":")
    if not sep:
        if default_host is None:
            raise ValueError(text)
        return default_host, parse_port(text)
    if host.startswith("[") != host.endswith("]"):
        raise ValueError(text)
    if host.startswith("["):
        host = host[1:-1]
        ipaddress.IPv6Address(host)
    elif ":" in host:  # websockify's unbracketed form, ``::1:5900``: must be an IPv6 address
        ipaddress.IPv6Address(host)
    if not host and default_host is None:
        raise ValueError(text)
    if any(c.isspace() or c in "/[]" for c in host):
        raise ValueError(text)
    return host, parse_port(port)


def parse_listen(text: str) -> Address:
    return parse_address(text, default_host="")


def parse_target(text: str) -> Address:
    host, port = parse_address(text)
    if port == 0:
        raise ValueError(text)
    return host, port


def parse_seconds(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1e9:
        raise ValueError(text)
    return value


def parse_positive_seconds(text: str) -> float:
    """Seconds above zero: for waits where 0 would end every attempt at once."""
    value = parse_seconds(text)
    if value <= 0:
        raise ValueError(text)
    return value


def parse_count(text: str) -> int:
    text = text.strip()
    if not text.isascii() or not text.isdigit():
        raise ValueError(text)
    return int(text, 10)


def parse_positive(text: str) -> int:
    value = parse_count(text)
    if value < 1:
        raise ValueError(text)
    return value


def parse_size(text: str) -> int:
    """Bytes: ``16777216``, ``16M``, ``16MiB``, ``512K``, ``1G``."""
    value = text.strip().lower()
    digits = value.rstrip("kmgib")
    unit = _SIZE_UNITS.get(value[len(digits) :].strip())
    if unit is None:
        raise ValueError(text)
    return parse_count(digits) * unit


def parse_max_connections(text: str) -> int | None:
    """``auto`` (None: derived from the file descriptor limit at start), or a count (0: none)."""
    return None if text.strip().lower() == "auto" else parse_count(text)


def parse_workers(text: str) -> int:
    """A count of processes, or ``auto``: one per CPU this process may run on."""
    if text.strip().lower() == "auto":
        return max(len(os.sched_getaffinity(0)), 1)
    return parse_positive(text)


def parse_window_bits(text: str) -> int:
    value = parse_count(text)
    if not 9 <= value <= 15:
        raise ValueError(text)
    return value


def parse_mode(text: str) -> int:
    """A file mode in octal, as ``chmod`` takes it (``600``, ``0660``)."""
    value = int(text.strip(), 8)
    if not 0 <= value <= 0o7777:
        raise ValueError(text)
    return value


def syslog_address(text: str) -> tuple[str, int] | str:
    """websockify's ``--syslog SERVER``: with a colon, a UDP ``host:port`` (split at the last
    colon; brackets around an IPv6 host are stripped), else a UNIX socket path."""
    if ":" not in text:
        return text
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    if not host:
        raise ValueError(text)
    return host, parse_port(port)


def parse_syslog(text: str) -> str:
    value = parse_text(text)
    syslog_address(value)
    return value


def parse_text(text: str) -> str:
    value = text.strip()
    if not value:
        raise ValueError(text)
    return value


def parse_path(text: str) -> str:
    """A file system path; relative ones are made absolute against the directory wsproxy was
    started in (see :func:`wsproxy.paths.absolute_paths`), so declare every path setting with
    this parser."""
    return parse_text(text)


def parse_list(text: str) -> tuple[str, ...]:
    return tuple(item for item in text.replace(",", " ").split() if item)


def parse_networks(text: str) -> tuple[str, ...]:
    return tuple(str(ipaddress.ip_network(item, strict=False)) for item in parse_list(text))


def parse_command(text: str) -> tuple[str, ...]:
    argv = tuple(shlex.split(text))
    if not argv:
        raise ValueError(text)
    return argv


def choice(*options: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in options:
            raise ValueError(text)
        return value

    return parse


def format_address(address: tuple[Any, ...] | str | None) -> str:
    """``host:port``, ``[v6]:port``, or the host alone (bracketed if v6) when port is None.

    Takes any socket address: IPv6 tuples have four fields (host, port, flowinfo, scope), and
    an IPv4 client of a dual-stack listener (``::ffff:192.0.2.1``) is named by its IPv4
    address. A UNIX socket address is a path (``unix:PATH``), or ``''`` for an unnamed peer
    (``unix``).
    """
    if isinstance(address, str):
        return f"unix:{address}" if address else "unix"
    if not address:
        return ""
    host, port = str(address[0]), address[1] if len(address) > 1 else None
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    if port is None:
        return f"[{host}]" if ":" in host else host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}" if host else str(port)


def format_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], int):
        return format_address(value)
    if isinstance(value, tuple):
        return " ".join(shlex.quote(str(v)) for v in value)
    return str(value)
