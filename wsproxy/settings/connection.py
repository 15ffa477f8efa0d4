"""Settings of the connection itself: where to listen, how to choose the target, the protocol,
limits and timeouts. A group of the one table (see :mod:`wsproxy.settings`)."""

from __future__ import annotations

from dataclasses import dataclass

from wsproxy.settings.rows import declare
from wsproxy.settings.values import (
    Address,
    parse_bool,
    parse_count,
    parse_list,
    parse_listen,
    parse_max_connections,
    parse_mode,
    parse_path,
    parse_positive_seconds,
    parse_seconds,
    parse_size,
    parse_target,
    parse_text,
    parse_window_bits,
)

__all__ = ["ConnectionSettings"]

ADDRESS = "[ADDR:]PORT, IPv6 as [::1]:PORT"
YES_NO = "yes or no"


@dataclass(frozen=True)
class ConnectionSettings:
    # -- where: listen --
    listen: Address | None = declare(
        None, parse_listen, ADDRESS, "address to listen on", flag=None, restart=True
    )
    prefer_ipv6: bool = declare(
        False,
        parse_bool,
        YES_NO,
        "prefer IPv6 when a host name resolves to both families (listen address and targets)",
        short="-6",
        restart=True,
    )
    unix_listen: str | None = declare(
        None,
        parse_path,
        "a path",
        "listen on this UNIX socket instead of a TCP port",
        meta="FILE",
        restart=True,
    )
    unix_listen_mode: int | None = declare(
        None,
        parse_mode,
        "an octal file mode such as 600",
        "mode of the --unix-listen socket (default 600)",
        meta="MODE",
        restart=True,
    )
    inetd: bool = declare(
        False,
        parse_bool,
        YES_NO,
        "inetd mode: the listening socket is standard input (no listen address)",
        restart=True,
    )
    # -- where: the target --
    target: Address | None = declare(
        None,
        parse_target,
        "HOST:PORT, IPv6 as [::1]:PORT or ::1:PORT",
        "TCP service each WebSocket client is relayed to",
        flag=None,
        restart=True,
    )
    unix_target: str | None = declare(
        None,
        parse_path,
        "a path",
        "relay to this UNIX socket instead of a TCP target (e.g. QEMU's -vnc unix:PATH)",
        meta="FILE",
        restart=True,
    )
    token_plugin: str | None = declare(
        None,
        parse_text,
        "a built-in plug-in name (TokenFile, TokenRedis, ...) or a dotted path pkg.mod.Class",
        "choose the target per client by its token with this plug-in (README: Tokens)",
        meta="CLASS",
        restart=True,
    )
    token_source: str | None = declare(
        None,
        parse_text,
        "the token plug-in's argument (for TokenFile a file or directory)",
        "the argument the token plug-in is created with; alone, a TokenFile path",
        meta="ARG",
        secret=True,  # TokenRedis's holds a password
    )
    target_config: str | None = declare(
        None,
        parse_path,
        "a file or directory of 'token: host:port' lines",
        "deprecated alias of --token-plugin TokenFile --token-source FILE",
        meta="FILE",
    )
    host_token: bool = declare(
        False,
        parse_bool,
        YES_NO,
        "take the token from the Host header instead of the URL (needs --token-plugin)",
    )
    # -- protocol --
    hixie: bool = declare(True, parse_bool, YES_NO, "accept legacy Hixie-75/76 clients")
    origins: tuple[str, ...] = declare(
        (),
        parse_list,
        "a space-separated list of origins",
        "allowed Origin header values; empty allows any",
        meta="LIST",
    )
    heartbeat: float = declare(
        0.0,
        parse_seconds,
        "seconds, 0 for none",
        "send a ping every INTERVAL seconds; a client that answered nothing within another "
        "INTERVAL is closed",
        meta="INTERVAL",
        restart=True,  # one sweeper greenlet, started with the server at this interval
    )
    permessage_deflate: bool = declare(
        False,
        parse_bool,
        YES_NO,
        "accept a client's permessage-deflate offer (RFC 7692 compression)",
    )
    # 12, not zlib's 15: a session's zlib state is then about 50 KiB instead of 300 KiB (80 KiB
    # for an offer without client_max_window_bits, Firefox's: RFC 7692 lets that client use 15).
    deflate_max_window_bits: int = declare(
        12,
        parse_window_bits,
        "a whole number from 9 to 15",
        "the largest LZ77 window (2**N bytes) wsproxy compresses with, and the client's when its"
        " offer lets us cap it (client_max_window_bits; without it the client may use 15)",
        meta="N",
    )
    max_message_size: int = declare(
        16 << 20,
        parse_size,
        "bytes, with an optional K, M or G; 0 for no limit",
        "a message past this size (inflated, with permessage-deflate) closes with 1009",
        meta="BYTES",
    )
    # -- limits and timeouts --
    max_connections: int | None = declare(
        None,
        parse_max_connections,
        "auto, or a whole number (0 for no limit)",
        "concurrent clients; further ones get 503 (auto: from the file descriptor limit)",
        meta="N",
    )
    max_connections_per_ip: int = declare(
        0,
        parse_count,
        "a whole number, 0 for no limit",
        "concurrent WebSocket sessions from one address (the real client behind "
        "trusted_proxies); further upgrades get 503",
        meta="N",
    )
    handshake_timeout: float = declare(
        10.0,
        parse_positive_seconds,
        "seconds above 0",
        "time a client has to complete its opening handshake",
        meta="SECS",
    )
    connect_timeout: float = declare(
        5.0,
        parse_positive_seconds,
        "seconds above 0",
        "time allowed to connect to the target",
        meta="SECS",
    )
    session_idle_timeout: float = declare(
        0.0,
        parse_seconds,
        "seconds, 0 for none",
        "close a session (1000, 'idle timeout') when no data moved either way for this long "
        "(pings do not count)",
        meta="SECS",
    )
    close_timeout: float = declare(
        2.0,
        parse_positive_seconds,
        "seconds above 0",
        "time a client has to answer our close frame",
        meta="SECS",
    )
    graceful_timeout: float = declare(
        5.0,
        parse_positive_seconds,
        "seconds above 0",
        "on SIGTERM/SIGINT, time clients have to close before they are cut (and a wrapped "
        "program has between SIGTERM and SIGKILL)",
        meta="SECS",
    )
    upgrade_drain_timeout: float = declare(
        0.0,
        parse_seconds,
        "seconds, 0 for no limit",
        "after an upgrade (SIGUSR2), time the old process's sessions may go on",
        meta="SECS",
    )
    # -- websockify's process life: exit when unused --
    run_once: bool = declare(
        False, parse_bool, YES_NO, "handle a single WebSocket connection and exit", restart=True
    )
    timeout: float = declare(
        0.0,
        parse_seconds,
        "seconds, 0 for none",
        "exit after TIMEOUT seconds if no client has connected by then",
        meta="TIMEOUT",
        restart=True,
    )
    idle_timeout: float = declare(
        0.0,
        parse_seconds,
        "seconds, 0 for none",
        "exit after TIMEOUT seconds with no active connection",
        meta="TIMEOUT",
        restart=True,
    )
