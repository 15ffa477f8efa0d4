"""The opening handshake, sans-I/O: parse an HTTP request head with limits, tell which protocol it
asks for, and build the answer (``101`` or an error with its reason).

Every refusal is a :class:`HandshakeError` that carries its HTTP status, so the session writes the
answer with :func:`error_response` without re-deriving anything.
"""

from __future__ import annotations

import binascii
import enum
import functools
import re
from dataclasses import dataclass
from http import HTTPStatus

from wsproxy.errors import HandshakeError
from wsproxy.protocol.rfc6455 import accept_key

__all__ = [
    "MAX_HEADERS",
    "MAX_HEAD_BYTES",
    "MAX_REQUEST_LINE",
    "SUBPROTOCOLS",
    "SUPPORTED_VERSIONS",
    "Kind",
    "Request",
    "accept_rfc6455",
    "check_get",
    "check_origin",
    "classify",
    "error_response",
    "origin_of",
    "parse_request",
]

MAX_HEAD_BYTES = 16 * 1024  # a request head larger than this gets 431 (security limit)
MAX_HEADERS = 100
MAX_REQUEST_LINE = 8 * 1024  # a request line without its CRLF by then can never be valid
SUPPORTED_VERSIONS = ("13", "8", "7")  # RFC 6455 and the hybi-07/-10 drafts it grew from
SUBPROTOCOLS = ("binary", "base64")  # in order of preference

# No control character, space or DEL in the request line's parts or in a header name: a LF in
# the target would otherwise reach the Hixie Location header (header injection) and the log.
_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f]")
_CONTROL_IN_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # a tab is allowed in a value
_METHOD_SO_FAR = re.compile(rb"[A-Za-z]*")  # the methods we parse are letters only


class Kind(enum.Enum):
    """What a request asks for."""

    RFC6455 = "rfc6455"
    HIXIE76 = "hixie76"
    HIXIE75 = "hixie75"
    HTTP = "http"  # a plain request, not an upgrade


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    version: str
    headers: tuple[tuple[str, str], ...]

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (any case); repeated headers are joined with ``, ``."""
        return self._by_name.get(name.lower())

    @functools.cached_property
    def _by_name(self) -> dict[str, str]:
        """Each header's value by lower-case name, built at the first lookup: a handshake looks
        up seven or more, each a scan of every header otherwise."""
        values: dict[str, list[str]] = {}
        for key, value in self.headers:
            values.setdefault(key.lower(), []).append(value)
        return {key: ", ".join(found) for key, found in values.items()}

    def tokens(self, name: str) -> list[str]:
        """A comma-separated header as lower-case tokens."""
        value = self.header(name) or ""
        return [t.strip().lower() for t in value.split(",") if t.strip()]


def parse_request(
    data: bytes | bytearray, *, max_bytes: int = MAX_HEAD_BYTES, max_headers: int = MAX_HEADERS
) -> tuple[Request, int] | None:
    """Parse the head of an HTTP/1.x request.

    Returns the request and the number of bytes the head used (what follows is the body or the
    first frames), or None if the head is not complete yet.

    Raises:
        HandshakeError: 400 for a malformed head (a control character or a space inside the
            method, target or version, or in a header name or value), 431 past ``max_bytes``
            or ``max_headers``.
    """
    end = data.find(b"\r\n\r\n", 0, max_bytes + 4)
    if end < 0:
        _check_start(data)
        if len(data) > max_bytes:
            raise HandshakeError(
                HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, f"request head over {max_bytes} bytes"
            )
        return None
    lines = bytes(data[:end]).decode("latin-1").split("\r\n")  # latin-1 decodes any byte
    method, target, version = _request_line(lines[0])
    if len(lines) - 1 > max_headers:
        raise HandshakeError(
            HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, f"more than {max_headers} headers"
        )
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or _CONTROL_OR_SPACE.search(name):
            raise HandshakeError(HTTPStatus.BAD_REQUEST, f"malformed header line {line[:40]!r}")
        if _CONTROL_IN_VALUE.search(value):
            raise HandshakeError(HTTPStatus.BAD_REQUEST, f"control character in header {name}")
        headers.append((name, value.strip()))
    return Request(method, target, version, tuple(headers)), end + 4


def _request_line(line: str) -> tuple[str, str, str]:
    """Method, target and version of a complete request line, or a 400."""
    parts = line.split(" ")
    if (
        len(line) > MAX_REQUEST_LINE
        or len(parts) != 3
        or any(not part or _CONTROL_OR_SPACE.search(part) for part in parts)
        or not (parts[0].isascii() and parts[0].isalpha())
        or not parts[2].startswith("HTTP/1.")
    ):
        raise HandshakeError(HTTPStatus.BAD_REQUEST, "malformed request line")
    return parts[0], parts[1], parts[2]


def _check_start(data: bytes | bytearray) -> None:
    """Refuse an incomplete head at once when its start can never become a valid request: a
    method that is not a word, a request line past its limit, or a complete request line that
    is malformed. Without this, garbage would hold a session until the handshake timeout."""
    line_end = data.find(b"\n", 0, MAX_REQUEST_LINE + 1)
    if line_end >= 0:
        if not data[:line_end].endswith(b"\r"):
            raise HandshakeError(HTTPStatus.BAD_REQUEST, "malformed request line")
        _request_line(bytes(data[: line_end - 1]).decode("latin-1"))
        return
    if len(data) > MAX_REQUEST_LINE:
        raise HandshakeError(
            HTTPStatus.BAD_REQUEST, f"no request line within {MAX_REQUEST_LINE} bytes"
        )
    method = bytes(data[:MAX_REQUEST_LINE]).partition(b" ")[0]
    if _METHOD_SO_FAR.fullmatch(method) is None:
        raise HandshakeError(HTTPStatus.BAD_REQUEST, "malformed request line")


def classify(request: Request) -> Kind:
    """Which protocol the request asks for; validation happens in the matching ``accept``."""
    if "websocket" not in request.tokens("Upgrade"):
        return Kind.HTTP
    if request.header("Sec-WebSocket-Version") is not None:
        return Kind.RFC6455
    if (
        request.header("Sec-WebSocket-Key1") is not None
        or request.header("Sec-WebSocket-Key2") is not None
    ):
        return Kind.HIXIE76
    if request.header("Sec-WebSocket-Key") is not None:
        return Kind.RFC6455  # a version is required; accept_rfc6455 answers 426
    return Kind.HIXIE75


def origin_of(request: Request) -> str | None:
    """The page origin a browser sent: ``Origin`` (RFC 6455, Hixie-76) or the
    ``Sec-WebSocket-Origin`` of the hybi-07/-10 drafts."""
    return request.header("Origin") or request.header("Sec-WebSocket-Origin")


def check_origin(request: Request, allowed: tuple[str, ...]) -> None:
    """Refuse with 403 unless the Origin is allowed (an empty ``allowed`` allows any)."""
    if not allowed:
        return
    origin = origin_of(request)
    if origin not in allowed:
        raise HandshakeError(HTTPStatus.FORBIDDEN, f"origin {origin!r} not allowed")


def check_get(request: Request) -> None:
    """Refuse a WebSocket handshake (any protocol version) that is not a GET with 405."""
    if request.method != "GET":
        raise HandshakeError(
            HTTPStatus.METHOD_NOT_ALLOWED,
            f"WebSocket handshake must use GET, not {request.method}",
            (("Allow", "GET"),),
        )


def _check_upgrade(request: Request) -> None:
    check_get(request)
    if request.version != "HTTP/1.1":
        raise HandshakeError(
            HTTPStatus.BAD_REQUEST, f"WebSocket handshake needs HTTP/1.1, not {request.version}"
        )
    if "upgrade" not in request.tokens("Connection"):
        raise HandshakeError(HTTPStatus.BAD_REQUEST, "missing Connection: Upgrade")


def accept_rfc6455(
    request: Request, subprotocols: tuple[str, ...] = SUBPROTOCOLS, extensions: str | None = None
) -> tuple[bytes, str | None]:
    """Validate an RFC 6455 upgrade; returns the ``101`` response and the chosen subprotocol.

    The subprotocol is the first of ``subprotocols`` the client offered, or None (the client
    offered none we speak: the payload is then raw binary, as with no subprotocol).
    ``extensions`` is the ``Sec-WebSocket-Extensions`` answer, if any was agreed.
    """
    _check_upgrade(request)
    version = request.header("Sec-WebSocket-Version")
    if version not in SUPPORTED_VERSIONS:
        raise HandshakeError(
            HTTPStatus.UPGRADE_REQUIRED,
            f"unsupported Sec-WebSocket-Version {version!r}"
            if version
            else "missing Sec-WebSocket-Version",
            (("Sec-WebSocket-Version", ", ".join(SUPPORTED_VERSIONS)),),
        )
    if request.header("Host") is None:
        raise HandshakeError(HTTPStatus.BAD_REQUEST, "missing Host header")
    key = request.header("Sec-WebSocket-Key")
    if key is None:
        raise HandshakeError(HTTPStatus.BAD_REQUEST, "missing Sec-WebSocket-Key")
    try:
        raw = binascii.a2b_base64(key.encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raw = b""
    if len(raw) != 16:
        raise HandshakeError(HTTPStatus.BAD_REQUEST, "Sec-WebSocket-Key is not 16 bytes of base64")
    offered = request.tokens("Sec-WebSocket-Protocol")
    chosen = next((p for p in subprotocols if p in offered), None)
    lines = [
        "HTTP/1.1 101 Switching Protocols",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Accept: {accept_key(key)}",
    ]
    if chosen:
        lines.append(f"Sec-WebSocket-Protocol: {chosen}")
    if extensions:
        lines.append(f"Sec-WebSocket-Extensions: {extensions}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii"), chosen


def error_response(error: HandshakeError) -> bytes:
    """The complete HTTP answer to a refused request: status, headers and a one-line reason."""
    body = (error.reason + "\n").encode("utf-8")
    lines = [
        f"HTTP/1.1 {error.status.value} {error.status.phrase}",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    lines += [f"{name}: {value}" for name, value in error.headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
