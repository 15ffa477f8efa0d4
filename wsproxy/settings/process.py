"""Settings of the process: traffic (recording, balancers, metrics), logging, a wrapped program,
daemon and workers. A group of the one table (see :mod:`wsproxy.settings`)."""

from __future__ import annotations

from dataclasses import dataclass

from wsproxy.settings.rows import declare
from wsproxy.settings.values import (
    Address,
    choice,
    parse_bool,
    parse_command,
    parse_listen,
    parse_networks,
    parse_path,
    parse_positive_seconds,
    parse_syslog,
    parse_workers,
)

__all__ = ["WRAP_MODES", "ProcessSettings"]

YES_NO = "yes or no"
WRAP_MODES = ("exit", "ignore", "respawn")


@dataclass(frozen=True)
class ProcessSettings:
    # -- traffic: recording, load balancers, metrics --
    record: str | None = declare(
        None,
        parse_path,
        "a file name prefix",
        "record each session to PREFIX.<n>, in websockify's format",
        meta="FILE",
    )
    traffic: bool = declare(
        False,
        parse_bool,
        YES_NO,
        "write websockify's per-frame traffic characters to standard error",
    )
    trusted_proxies: tuple[str, ...] = declare(
        (),
        parse_networks,
        "addresses or CIDR networks, space-separated",
        "load balancers whose X-Forwarded-For or PROXY protocol header names the real client",
        meta="LIST",
    )
    metrics_listen: Address | None = declare(
        None,
        parse_listen,
        "[ADDR:]PORT, IPv6 as [::1]:PORT",
        "serve /metrics (Prometheus) and /healthz on this address",
        meta="ADDR",
        restart=True,
    )
    # -- logging --
    verbose: bool = declare(False, parse_bool, YES_NO, "log debug detail", short="-v")
    log_file: str | None = declare(
        None, parse_path, "a file path", "append the log to FILE; SIGHUP reopens it", meta="FILE"
    )
    syslog: str | None = declare(
        None,
        parse_syslog,
        "a UNIX socket path (/dev/log) or a UDP host:port",
        "send the log to this syslog server (RFC 5424)",
        meta="SERVER",
        restart=True,
    )
    legacy_syslog: bool = declare(
        False,
        parse_bool,
        YES_NO,
        "send syslog lines in the old BSD format (RFC 3164) instead of RFC 5424",
        restart=True,
    )
    # -- wrap: start a program and relay to it (wsproxy PORT -- PROGRAM ARGS) --
    wrap: tuple[str, ...] = declare(
        (),
        parse_command,
        "a command line with shell-like quoting",
        "program to start with its bind() of the listen port moved to a free loopback port; "
        "on the command line it follows --",
        flag=None,
        restart=True,
    )
    wrap_mode: str = declare(
        "exit",
        choice(*WRAP_MODES),
        "exit, ignore or respawn",
        "when the wrapped program exits: exit (with its status), ignore (keep serving) or "
        "respawn (start it again, with back-off)",
        meta="MODE",
        restart=True,
    )
    rebind_lib: str | None = declare(
        None,
        parse_path,
        "the path of rebind.so",
        "the LD_PRELOAD library for wrapped programs (default: the one built with wsproxy)",
        meta="PATH",
        restart=True,
    )
    wrap_connect_timeout: float = declare(
        5.0,
        parse_positive_seconds,
        "seconds above 0",
        "time a client waits for the wrapped program to accept (start-up, respawn); then 502",
        meta="SECS",
    )
    # -- process: daemon, pid file, workers --
    daemon: bool = declare(
        False,
        parse_bool,
        YES_NO,
        "detach from the terminal and run in the background (after every start-up check)",
        short="-D",
        restart=True,
    )
    pid_file: str | None = declare(
        None,
        parse_path,
        "a file path",
        "write the process id to FILE; a FILE naming a running wsproxy refuses the start",
        meta="FILE",
        restart=True,
    )
    workers: int = declare(
        1,
        parse_workers,
        "a whole number, 1 or more, or auto (one per CPU)",
        "processes serving clients; above 1 a master process supervises them",
        meta="N",
        restart=True,
    )
    libserver: bool = declare(
        False,
        parse_bool,
        YES_NO,
        "accepted for websockify compatibility, and ignored (a note says so)",
        restart=True,
    )
