"""The one settings table.

Each setting is declared once, as a field of :class:`Settings` whose metadata says its command-line
flag, its value's form and its help. From that single declaration come the docopt usage text, the
INI file keys (``[wsproxy]`` section, keys are the long option names with ``_``), validation with
messages that name the source and key, ``--help`` and the example file.

This is a protocol-level module: standard library only, no I/O but reading the INI text it is given.
"""

from __future__ import annotations

import configparser
import dataclasses
import ipaddress
import shlex
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from wsproxy.errors import ConfigError
from wsproxy.policy import parse_domain as parse_policy_domain
from wsproxy.policy import parse_ports as parse_policy_ports

__all__ = [
    "SECTION",
    "SETTINGS",
    "WRAP_MODES",
    "Address",
    "Setting",
    "Settings",
    "format_address",
    "parse_address",
    "parse_path",
    "read_ini",
]

SECTION = "wsproxy"
WRAP_MODES = ("exit", "ignore", "respawn")

Address = tuple[str, int]


@dataclass(frozen=True)
class Setting:
    """One row of the table, derived from a :class:`Settings` field."""

    name: str
    default: Any
    parse: Callable[[str], Any]
    expected: str
    help: str
    flag: str | None
    short: str | None
    meta: str | None
    ini: bool

    @property
    def is_bool(self) -> bool:
        return self.meta is None and self.flag is not None

    def format_default(self) -> str:
        return format_value(self.default)


# --- value parsers: each takes the text form and raises ValueError with what it wanted ---------


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "yes", "true", "on"):
        return True
    if value in ("0", "no", "false", "off"):
        return False
    raise ValueError(text)


def parse_port(text: str) -> int:
    port = int(text.strip(), 10)
    if not 0 <= port <= 65535:
        raise ValueError(text)
    return port


def parse_address(text: str, *, default_host: str | None = None) -> Address:
    """Parse ``[HOST:]PORT``; IPv6 hosts are written ``[::1]:6080``.

    Without a host, ``default_host`` is used; if it is None the host is required.
    """
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(text)
        ipaddress.IPv6Address(host)
        return host, parse_port(rest[1:])
    host, sep, port = text.rpartition(":")
    if not sep:
        if default_host is None:
            raise ValueError(text)
        return default_host, parse_port(text)
    if ":" in host:  # a bare IPv6 address must be bracketed
        raise ValueError(text)
    if not host and default_host is None:
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
    value = int(text.strip(), 10)
    if value < 0:
        raise ValueError(text)
    return value


def parse_positive(text: str) -> int:
    value = parse_count(text)
    if value < 1:
        raise ValueError(text)
    return value


def parse_text(text: str) -> str:
    value = text.strip()
    if not value:
        raise ValueError(text)
    return value


def parse_path(text: str) -> str:
    """A file system path; relative ones are made absolute before a daemon leaves its directory
    (see :func:`wsproxy.daemon.absolute_paths`), so declare every path setting with this parser."""
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


def format_address(address: tuple[str, int | None] | None) -> str:
    """``host:port``, ``[v6]:port``, or the host alone (bracketed if v6) when port is None."""
    if address is None:
        return ""
    host, port = address
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


def _setting(
    default: Any,
    parse: Callable[[str], Any],
    expected: str,
    help: str,
    *,
    flag: str | None = "",
    short: str | None = None,
    meta: str | None = None,
    ini: bool = True,
) -> Any:
    """Declare a field of :class:`Settings` together with its row of the table.

    ``flag=""`` derives ``--name-with-dashes``; ``flag=None`` means no option (positional or
    INI-only). ``meta=None`` makes a boolean switch; a switch whose default is true is spelled
    ``--no-NAME`` on the command line.
    """
    return field(
        default=default,
        metadata={
            "parse": parse,
            "expected": expected,
            "help": help,
            "flag": flag,
            "short": short,
            "meta": meta,
            "ini": ini,
        },
    )


@dataclass(frozen=True)
class Settings:
    """Immutable, validated configuration, passed down to every part of the proxy."""

    # -- where --
    listen: Address | None = _setting(
        None, parse_listen, "[ADDR:]PORT, IPv6 as [::1]:PORT", "address to listen on", flag=None
    )
    target: Address | None = _setting(
        None,
        parse_target,
        "HOST:PORT, IPv6 as [::1]:PORT",
        "TCP service each WebSocket client is relayed to",
        flag=None,
    )
    unix_target: str | None = _setting(
        None,
        parse_path,
        "a path",
        "relay to this UNIX socket instead of a TCP target (e.g. QEMU's -vnc unix:PATH)",
        meta="PATH",
    )
    token_source: str | None = _setting(
        None,
        parse_path,
        "a file or directory of 'token: host:port' lines",
        "choose the target per client by the token in its URL (?token=NAME) or cookie, "
        "from this file or directory (websockify's TokenFile format)",
        meta="PATH",
    )
    # -- protocol --
    hixie: bool = _setting(True, parse_bool, "yes or no", "accept legacy Hixie-75/76 clients")
    origins: tuple[str, ...] = _setting(
        (),
        parse_list,
        "a space-separated list of origins",
        "allowed Origin header values; empty allows any",
        meta="LIST",
    )
    # -- limits and timeouts --
    max_connections: int = _setting(
        0,
        parse_count,
        "a whole number, 0 for no limit",
        "concurrent clients; further ones wait to be accepted",
        meta="N",
    )
    handshake_timeout: float = _setting(
        10.0,
        parse_positive_seconds,
        "seconds above 0",
        "time a client has to complete its opening handshake",
        meta="SECS",
    )
    connect_timeout: float = _setting(
        5.0,
        parse_positive_seconds,
        "seconds above 0",
        "time allowed to connect to the target",
        meta="SECS",
    )
    idle_timeout: float = _setting(
        0.0,
        parse_seconds,
        "seconds, 0 for none",
        "close a session (1000, 'idle timeout') when no data moved either way for this long "
        "(pings do not count)",
        meta="SECS",
    )
    close_timeout: float = _setting(
        2.0,
        parse_positive_seconds,
        "seconds above 0",
        "time a client has to answer our close frame",
        meta="SECS",
    )
    graceful_timeout: float = _setting(
        5.0,
        parse_positive_seconds,
        "seconds above 0",
        "on SIGTERM/SIGINT, time clients have to close before they are cut (and a wrapped "
        "program has between SIGTERM and SIGKILL)",
        meta="SECS",
    )
    # -- front door: TLS, Flash policy, web server --
    web: str | None = _setting(
        None,
        parse_path,
        "a directory",
        "serve static files from DIR to plain HTTP requests on the same port",
        meta="DIR",
    )
    web_listing: bool = _setting(
        False, parse_bool, "yes or no", "list directories without an index.html (with --web)"
    )
    cert: str | None = _setting(
        None,
        parse_path,
        "a PEM file",
        "TLS certificate (PEM, may hold the key too): accept wss:// and https://",
        meta="FILE",
    )
    key: str | None = _setting(
        None, parse_path, "a PEM file", "TLS private key, if not in the --cert file", meta="FILE"
    )
    ssl_only: bool = _setting(
        False, parse_bool, "yes or no", "refuse plain (non-TLS) connections (needs --cert)"
    )
    verify_client: bool = _setting(
        False,
        parse_bool,
        "yes or no",
        "require a client certificate signed by a CA in --cafile",
    )
    cafile: str | None = _setting(
        None,
        parse_path,
        "a PEM file",
        "CA certificates for --verify-client",
        meta="FILE",
    )
    policy: bool = _setting(
        True, parse_bool, "yes or no", "answer Flash <policy-file-request/> on the same port"
    )
    policy_domain: str = _setting(
        "*",
        parse_policy_domain,
        "*, a host name (*.example.com) or an IP address",
        "domain the Flash policy allows",
        meta="DOMAIN",
    )
    policy_ports: tuple[str, ...] = _setting(
        (),
        parse_policy_ports,
        "ports N, ranges N-M or * separated by commas",
        "ports the Flash policy allows; empty means the listening port",
        meta="PORTS",
    )
    # -- traffic: recording, load balancers, metrics --
    record: str | None = _setting(
        None,
        parse_path,
        "a file name prefix",
        "record each session to PREFIX.<n>, in websockify's format",
        meta="PREFIX",
    )
    trusted_proxies: tuple[str, ...] = _setting(
        (),
        parse_networks,
        "addresses or CIDR networks, space-separated",
        "load balancers whose X-Forwarded-For or PROXY protocol header names the real client",
        meta="LIST",
    )
    metrics_listen: Address | None = _setting(
        None,
        parse_listen,
        "[ADDR:]PORT, IPv6 as [::1]:PORT",
        "serve /metrics (Prometheus) and /healthz on this address",
        meta="ADDR",
    )
    # -- logging --
    verbose: bool = _setting(False, parse_bool, "yes or no", "log debug detail", short="-v")
    # -- wrap: start a program and relay to it (wsproxy PORT -- PROGRAM ARGS) --
    wrap: tuple[str, ...] = _setting(
        (),
        parse_command,
        "a command line with shell-like quoting",
        "program to start with its bind() of the listen port moved to a free loopback port; "
        "on the command line it follows --",
        flag=None,
    )
    wrap_mode: str = _setting(
        "exit",
        choice(*WRAP_MODES),
        "exit, ignore or respawn",
        "when the wrapped program exits: exit (with its status), ignore (keep serving) or "
        "respawn (start it again, with back-off)",
        meta="MODE",
    )
    rebind_lib: str | None = _setting(
        None,
        parse_path,
        "the path of rebind.so",
        "the LD_PRELOAD library for wrapped programs (default: the one built with wsproxy)",
        meta="PATH",
    )
    wrap_connect_timeout: float = _setting(
        5.0,
        parse_positive_seconds,
        "seconds above 0",
        "time a client waits for the wrapped program to accept (start-up, respawn); then 502",
        meta="SECS",
    )
    # -- process: daemon, pid file, log destinations, workers --
    daemon: bool = _setting(
        False,
        parse_bool,
        "yes or no",
        "detach from the terminal and run in the background (after every start-up check)",
        short="-D",
    )
    pid_file: str | None = _setting(
        None,
        parse_path,
        "a file path",
        "write the process id to FILE; a FILE naming a running wsproxy refuses the start",
        meta="FILE",
    )
    log_file: str | None = _setting(
        None, parse_path, "a file path", "append the log to FILE; SIGHUP reopens it", meta="FILE"
    )
    syslog: bool = _setting(
        False, parse_bool, "yes or no", "send the log to syslog (daemon facility)"
    )
    syslog_address: str = _setting(
        "/dev/log",
        parse_path,
        "the path of a UNIX datagram socket",
        "syslog socket; if the default is missing, /var/run/syslog is tried",
        meta="PATH",
    )
    workers: int = _setting(
        1,
        parse_positive,
        "a whole number, 1 or more",
        "processes serving clients; above 1 a master process supervises them",
        meta="N",
    )

    def __post_init__(self) -> None:
        # Library callers may pass text forms (``listen="127.0.0.1:6080"``); parse them here
        # so that every instance holds typed values.
        for row in SETTINGS_BY_NAME.values():
            value = getattr(self, row.name)
            if isinstance(value, str) and row.parse is not parse_text:
                object.__setattr__(self, row.name, _parse(row, value, "arguments", None))
            elif isinstance(value, list):
                object.__setattr__(self, row.name, tuple(value))
            elif row.parse is parse_positive_seconds:  # a number from a library caller
                _parse(row, str(value), "arguments", None)

    # -- constructors --

    @classmethod
    def create(cls, **values: Any) -> Settings:
        """Build from Python values (text forms are parsed too); unknown names are refused."""
        unknown = sorted(set(values) - set(SETTINGS_BY_NAME))
        if unknown:
            raise ConfigError(
                "unknown setting",
                source="arguments",
                key=unknown[0],
                expected="one of " + ", ".join(SETTINGS_BY_NAME),
            )
        return cls(**values).checked("arguments")

    @classmethod
    def load(
        cls,
        *,
        ini: Mapping[str, tuple[str, int]] | None = None,
        ini_source: str = "",
        cli: Mapping[str, Any] | None = None,
    ) -> Settings:
        """Merge an INI section (text values with line numbers) and command-line values.

        Command-line values override the file. Raises :class:`ConfigError` naming the source,
        key and expected form.
        """
        values: dict[str, Any] = {}
        for key, (text, line) in (ini or {}).items():
            row = SETTINGS_BY_NAME.get(key)
            if row is None or not row.ini:
                raise ConfigError(
                    "unknown key",
                    source=ini_source,
                    key=key,
                    line=line,
                    expected="one of " + ", ".join(n for n, r in SETTINGS_BY_NAME.items() if r.ini),
                )
            values[key] = _parse(row, text, ini_source, line)
        for key, value in (cli or {}).items():
            row = SETTINGS_BY_NAME[key]
            values[key] = (
                _parse(row, value, "command line", None) if isinstance(value, str) else value
            )
        return cls(**values).checked(ini_source or "command line")

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def checked(self, source: str) -> Settings:
        """Cross-setting rules; raises :class:`ConfigError`."""
        if self.listen is None:
            raise ConfigError(
                "no listen address given", source=source, key="listen", expected="[ADDR:]PORT"
            )
        targets = [n for n in ("target", "unix_target", "token_source", "wrap") if getattr(self, n)]
        if len(targets) > 1:
            raise ConfigError(
                "give one of target, unix_target, token_source and wrap, "
                f"not {' and '.join(targets)}",
                source=source,
                key=targets[1],
                expected="a single way to choose the target",
            )
        if not targets:
            raise ConfigError(
                "no target given",
                source=source,
                key="target",
                expected="HOST:PORT, or a program to wrap after --",
            )
        return self


def _parse(row: Setting, text: str, source: str, line: int | None) -> Any:
    try:
        return row.parse(text)
    except ValueError:
        raise ConfigError(
            f"bad value {text!r}", source=source, key=row.name, line=line, expected=row.expected
        ) from None


def _rows(fields: Iterable[dataclasses.Field[Any]]) -> dict[str, Setting]:
    rows = {}
    for f in fields:
        m = f.metadata
        flag = m["flag"]
        if flag == "":
            prefix = "--no-" if f.default is True and m["meta"] is None else "--"
            flag = prefix + f.name.replace("_", "-")
        rows[f.name] = Setting(
            name=f.name,
            default=f.default,
            parse=m["parse"],
            expected=m["expected"],
            help=m["help"],
            flag=flag,
            short=m["short"],
            meta=m["meta"],
            ini=m["ini"],
        )
    return rows


SETTINGS_BY_NAME: dict[str, Setting] = _rows(dataclasses.fields(Settings))
SETTINGS: tuple[Setting, ...] = tuple(SETTINGS_BY_NAME.values())


def read_ini(text: str, source: str) -> dict[str, tuple[str, int]]:
    """Read the ``[wsproxy]`` section: key -> (value text, line number).

    Raises :class:`ConfigError` for a syntax error or a missing section.
    """
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=("#", ";"))
    parser.optionxform = str  # type: ignore[assignment, method-assign]
    try:
        parser.read_string(text, source=source)
    except configparser.Error as exc:
        line: int | None = getattr(exc, "lineno", None)
        message = str(exc).splitlines()[0]
        if isinstance(exc, configparser.ParsingError) and exc.errors:
            line, bad = exc.errors[0]
            message = f"cannot parse {bad.strip()!r}"
        elif isinstance(exc, configparser.MissingSectionHeaderError):
            message = "a key before any [section] header"
        raise ConfigError(
            message,
            source=source,
            line=line,
            expected="INI syntax: [wsproxy] then key = value lines",
        ) from None
    if not parser.has_section(SECTION):
        raise ConfigError(
            f"no [{SECTION}] section", source=source, expected=f"a [{SECTION}] section"
        )
    lines = _key_lines(text)
    return {
        key.replace("-", "_"): (value, lines.get(key, 0)) for key, value in parser.items(SECTION)
    }


def _key_lines(text: str) -> dict[str, int]:
    """Line numbers of keys in the [wsproxy] section, so messages can point at them."""
    found: dict[str, int] = {}
    in_section = False
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line.startswith("["):
            in_section = line.split("]")[0][1:].strip() == SECTION
        elif in_section and line and line[0] not in "#;" and not raw[0].isspace():
            key = line.split("=", 1)[0].split(":", 1)[0].strip()
            found.setdefault(key, number)
    return found
