"""``--syslog SERVER``: log lines to a syslog server, as websockify sends them.

SERVER is a UNIX socket path (``/dev/log``; datagram, else stream) or, when it holds a colon, a
UDP ``host:port`` (``[::1]:514`` too). Lines are RFC 5424 (``<PRI>1 TIMESTAMP HOST wsproxy PID - -
MSG``) unless ``--legacy-syslog`` asks for the BSD form (``<PRI>wsproxy[PID]: MSG``, RFC 3164 as
local syslog daemons take it). The facility is ``daemon`` with ``-D``, else ``user``, as websockify
chooses it. A message that is not ASCII is sent as UTF-8 after a byte order mark (RFC 5424's
MSG-UTF8).

The socket is opened at start-up, in the foreground: a missing syslog socket or an unknown host
stops the start instead of losing every line in silence.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import logging.handlers
import os
import socket
import time
from typing import Any

from wsproxy.errors import StartupError
from wsproxy.settings.values import syslog_address

__all__ = ["APP_NAME", "SYSLOG_FALLBACK_ADDRESS", "SyslogHandler", "open_syslog"]

APP_NAME = "wsproxy"
DEFAULT_SYSLOG_ADDRESS = "/dev/log"
SYSLOG_FALLBACK_ADDRESS = "/var/run/syslog"  # macOS and some BSDs have no /dev/log
MAX_HOSTNAME = 255  # RFC 5424's HOSTNAME field
BOM = b"\xef\xbb\xbf"
_PRIORITIES = logging.handlers.SysLogHandler.priority_names
_LEVELS = {"DEBUG": "debug", "INFO": "info", "WARNING": "warning", "ERROR": "err"}


class SyslogHandler(logging.Handler):
    """Sends each record as one syslog message on ``sock``: to the UDP ``address``, or on the
    connected UNIX socket at the path ``address`` (``stream``: a stream socket, where each
    message ends with a newline)."""

    def __init__(self, sock: Any, *, facility: int, legacy: bool, stream: bool, address: Any):
        super().__init__()
        self.sock = sock
        self.facility = facility
        self.legacy = legacy
        self.stream = stream
        self.address = address
        self.hostname = socket.gethostname()[:MAX_HOSTNAME] or "-"

    def header(self, record: logging.LogRecord) -> str:
        level = _LEVELS.get(record.levelname, "crit")
        pri = self.facility << 3 | _PRIORITIES[level]
        if self.legacy:
            return f"<{pri}>{APP_NAME}[{record.process}]: "
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        stamp += f".{int(record.msecs):03d}Z"
        return f"<{pri}>1 {stamp} {self.hostname} {APP_NAME} {record.process} - - "

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record).replace("\n", " ")
            try:
                body = text.encode("ascii")
            except UnicodeEncodeError:
                body = BOM + text.encode("utf-8")
            self.send(self.header(record).encode("ascii") + body)
        except Exception:
            self.handleError(record)

    def send(self, message: bytes) -> None:
        if not isinstance(self.address, str):
            # UDP: unconnected, so a port nobody reads is no error (syslog over UDP is lossy).
            with contextlib.suppress(OSError):
                self.sock.sendto(message, self.address)
            return
        try:
            self.sock.sendall(message + b"\n" if self.stream else message)
        except OSError:
            self.sock.close()  # the syslog daemon restarted: reconnect once
            self.sock, self.stream = _connect_unix(self.address)
            self.sock.sendall(message + b"\n" if self.stream else message)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
        super().close()


def open_syslog(server: str, *, daemon: bool, legacy: bool) -> SyslogHandler:
    """The handler for ``--syslog SERVER``; raises StartupError if it cannot be reached."""
    codes = logging.handlers.SysLogHandler
    facility = codes.LOG_DAEMON if daemon else codes.LOG_USER
    address = syslog_address(server)  # checked by the settings
    if isinstance(address, tuple):
        try:
            family, _, _, _, sockaddr = socket.getaddrinfo(*address, 0, socket.SOCK_DGRAM)[0]
            sock = socket.socket(family, socket.SOCK_DGRAM)
        except OSError as exc:
            raise StartupError(f"cannot reach syslog at {server}: {exc.strerror or exc}") from None
        return SyslogHandler(sock, facility=facility, legacy=legacy, stream=False, address=sockaddr)
    candidates = [os.path.abspath(address)]
    if address == DEFAULT_SYSLOG_ADDRESS:
        candidates.append(SYSLOG_FALLBACK_ADDRESS)
    errors = []
    for path in candidates:
        try:
            sock, stream = _connect_unix(path)
        except OSError as exc:
            errors.append(f"{path}: {exc.strerror or exc}")
            continue
        return SyslogHandler(sock, facility=facility, legacy=legacy, stream=stream, address=path)
    # No silent fall-back to UDP: a daemon's log sent to a port nobody reads would just vanish.
    raise StartupError("cannot reach syslog (" + "; ".join(errors) + "); check --syslog")


def _connect_unix(path: str) -> tuple[socket.socket, bool]:
    """A socket connected to ``path``: datagram if the server takes it, else stream."""
    error: OSError | None = None
    for socktype in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        sock = socket.socket(socket.AF_UNIX, socktype)
        try:
            sock.connect(path)
        except OSError as exc:
            sock.close()
            # EPROTOTYPE: a stream socket at the path; keep the first other error.
            error = exc if error is None or error.errno == errno.EPROTOTYPE else error
            continue
        return sock, socktype == socket.SOCK_STREAM
    assert error is not None
    raise error
