"""Exception tree and wire constants.

Every error carries its own answer, so the one place that catches it writes the answer without
guessing: a handshake error knows its HTTP status, a framing error its close code, a configuration
error its exit status and the file/key at fault. This module imports nothing of ours.
"""

from __future__ import annotations

import enum
from http import HTTPStatus

__all__ = [
    "ClientGone",
    "CloseCode",
    "ConfigError",
    "HandshakeError",
    "HandshakeTimeout",
    "ProtocolError",
    "Redirect",
    "StartupError",
    "WSProxyError",
]


class CloseCode(enum.IntEnum):
    """RFC 6455 section 7.4.1 status codes (the ones we send or inspect)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS = 1005  # never on the wire: "the close frame had no body"
    ABNORMAL = 1006  # never on the wire: "the TCP connection dropped without a close frame"
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011


class WSProxyError(Exception):
    """Root of every error wsproxy raises on purpose."""


class HandshakeError(WSProxyError):
    """The opening handshake (or a plain HTTP request) cannot be accepted.

    The session answers with ``status`` and ``reason`` as a one-line body, plus ``headers``
    (e.g. ``Sec-WebSocket-Version`` on a 426), then closes the connection. ``log_reason``, when
    given, is what the log says instead: an auth plug-in's detail that the client must not see.
    """

    def __init__(
        self,
        status: HTTPStatus,
        reason: str,
        headers: tuple[tuple[str, str], ...] = (),
        *,
        log_reason: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers
        self.log_reason = log_reason or reason

    def __str__(self) -> str:
        return f"{self.status.value} {self.status.phrase}: {self.reason}"


class HandshakeTimeout(WSProxyError):
    """The client did not finish its opening handshake (or, on a kept-alive web connection, did
    not send its next request) in time.

    ``step`` names what was still awaited (``"tls"``, ``"request"``...). The session refuses
    the connection without an answer, logging ``reason`` and counting ``metric_label``.
    """

    reason = "handshake timed out"
    metric_label = "timeout"

    def __init__(self, step: str) -> None:
        super().__init__(f"{self.reason} during {step}")
        self.step = step


class ClientGone(WSProxyError):
    """The client connection ended before a request (or our answer) was complete.

    Nothing can be said to the client any more: the catcher logs ``reason`` and closes.
    """

    def __init__(self, reason: str = "client closed the connection") -> None:
        super().__init__(reason)
        self.reason = reason


class Redirect(WSProxyError):
    """A web request is answered with ``status`` and a ``Location`` header (a directory asked
    for without its trailing slash)."""

    status = HTTPStatus.MOVED_PERMANENTLY

    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location


class ProtocolError(WSProxyError):
    """The peer broke the framing rules; the session closes with ``close_code``."""

    def __init__(self, reason: str, close_code: CloseCode = CloseCode.PROTOCOL_ERROR) -> None:
        super().__init__(reason)
        self.reason = reason
        self.close_code = close_code


class ConfigError(WSProxyError):
    """Bad command line or configuration file: exit status 2 with a message naming the culprit.

    ``source`` is the file (or ``"command line"``), ``key`` the setting, ``expected`` the form that
    would have been accepted.
    """

    exit_status = 2

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        key: str | None = None,
        line: int | None = None,
        expected: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.source = source
        self.key = key
        self.line = line
        self.expected = expected

    def __str__(self) -> str:
        where = self.source or ""
        if self.line is not None:
            where += f":{self.line}"
        if self.key:
            where += f"{': ' if where else ''}{self.key}"
        text = f"{where}: {self.message}" if where else self.message
        if self.expected:
            text += f" (expected {self.expected})"
        return text


class StartupError(WSProxyError):
    """Start-up failed for an operational reason (port in use, stale state): exit status 1."""

    def __init__(self, message: str, exit_status: int = 1) -> None:
        super().__init__(message)
        self.exit_status = exit_status
