"""``--syslog SERVER``: log lines to a syslog server, as websockify sends them.

SERVER is a UNIX socket path (``/dev/log``; datagram, else stream) or, when it holds a colon, a
UDP ``host:port`` (``[::1]:514`` too). Lines are RFC 5424 (``<PRI>1 TIMESTAMP HOST wsproxy PID - -
MSG``) unless ``--legacy-syslog`` asks for the BSD form (``<PRI>wsproxy[PID]: MSG``, RFC 3164 as
local syslog daemons take it). The facility is ``daemon`` with ``-D``, else ``user``, as websockify
chooses it. A message that is not ASCII is sent as UTF-8 after a byte order mark (RFC 5424's
MSG-UTF8).

The socket is opened at start-up, in the foreground: a missing syslog socket or an unknown host
stops the start instead of losing every line in silence. It never blocks: a syslog daemon that
stops reading (journald or rsyslog stalled) must not freeze the proxy, so a line it cannot take
now is dropped and counted, and the count is logged to the other destinations (stderr, the log
file) at most once per ``DROP_REPORT_INTERVAL``.
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
from wsproxy.settings.values import format_address, syslog_address

__all__ = [
    "APP_NAME",
    "DROP_REPORT_INTERVAL",
    "SYSLOG_FALLBACK_ADDRESS",
    "SyslogHandler",
    "open_syslog",
]

log = logging.getLogger(__name__)

APP_NAME = "wsproxy"
DEFAULT_SYSLOG_ADDRESS = "/dev/log"
SYSLOG_FALLBACK_ADDRESS = "/var/run/syslog"  # macOS and some BSDs have no /dev/log
MAX_HOSTNAME = 255  # RFC 5424's HOSTNAME field
BOM = b"\xef\xbb\xbf"
_PRIORITIES = logging.handlers.SysLogHandler.priority_names
DROP_REPORT_INTERVAL = 10.0  # seconds between warnings about dropped lines
_NOT_HERE = "syslog_skip"  # a record attribute: the warning about this handler, for the others
_LEVELS = {"DEBUG": "debug", "INFO": "info", "WARNING": "warning", "ERROR": "err"}


class SyslogHandler(logging.Handler):
    """Sends each record as one syslog message on ``sock``: to the UDP ``address``, or on the
    connected UNIX socket at the path ``address`` (``stream``: a stream socket, where each
    message ends with a newline)."""

    def __init__(self, sock: Any, *, facility: int, legacy: bool, stream: bool, address: Any):
        super().__init__()
        sock.setblocking(False)
        self.sock = sock
        self.facility = facility
        self.legacy = legacy
        self.stream = stream
        self.address = address
        self.hostname = socket.gethostname()[:MAX_HOSTNAME] or "-"
        self.dropped = 0  # lines not sent since the last warning
        self._warned_at = -DROP_REPORT_INTERVAL
        self._pending = b""  # the rest of a stream line that went out in part

    def header(self, record: logging.LogRecord) -> str:
        level = _LEVELS.get(record.levelname, "crit")
        pri = self.facility << 3 | _PRIORITIES[level]
        if self.legacy:
            return f"<{pri}>{APP_NAME}[{record.process}]: "
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        stamp += f".{int(record.msecs):03d}Z"
        return f"<{pri}>1 {stamp} {self.hostname} {APP_NAME} {record.process} - - "

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, _NOT_HERE, False):
            return
        try:
            text = self.format(record).replace("\n", " ")
            try:
                body = text.encode("ascii")
            except UnicodeEncodeError:
                body = BOM + text.encode("utf-8")
            if not self.send(self.header(record).encode("ascii") + body):
                self._drop()
        except Exception:
            self.handleError(record)

    def _drop(self) -> None:
        self.dropped += 1
        now = time.monotonic()
        if now - self._warned_at >= DROP_REPORT_INTERVAL:
            self._warned_at = now
            log.warning(
                "syslog is not reading: dropped %d line(s) server=%s",
                self.dropped,
                self.address if isinstance(self.address, str) else format_address(self.address),
                extra={_NOT_HERE: True},
            )
            self.dropped = 0

    def send(self, message: bytes) -> bool:
        """Send one line without blocking; False if the syslog server cannot take it now."""
        if not isinstance(self.address, str):
            # UDP: unconnected, so a port nobody reads is no error (syslog over UDP is lossy).
            try:
                self.sock.sendto(message, self.address)
            except BlockingIOError:
                return False
            except OSError:
                pass
            return True
        data = message + b"\n" if self.stream else message
        try:
            return self._write(data)
        except BlockingIOError:
            return False
        except OSError:
            self.sock.close()  # the syslog daemon restarted: reconnect once
            self.sock, self.stream = _connect_unix(self.address)
            self.sock.setblocking(False)
            self._pending = b""
            return self._write(message + b"\n" if self.stream else message)

    def _write(self, data: bytes) -> bool:
        if not self.stream:
            self.sock.send(data)  # a datagram goes whole or not at all
            return True
        if self._pending:  # finish the line that went out in part, or drop this one
            self._pending = self._pending[self.sock.send(self._pending) :]
            if self._pending:
                return False
        sent = self.sock.send(data)
        self._pending = data[sent:]  # one line at most
        return True

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
