"""The mini web server for ``--web DIR``: static files on the WebSocket port.

GET and HEAD only; ``index.html`` for directories (a listing only when enabled); ``304`` on
``If-Modified-Since``; one byte ``Range`` (``206``/``416``); HTTP/1.1 keep-alive for a bounded
number of requests with an idle timeout. Files are streamed in bounded chunks, never read whole.
Path rules live in :mod:`wsproxy.protocol.static`; here every resolved path is checked again after
following symlinks, so nothing outside the root is ever opened.
"""

from __future__ import annotations

import errno
import logging
import mimetypes
import os
import stat
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from wsproxy.errors import ClientGone, ConfigError, HandshakeError, HandshakeTimeout, Redirect
from wsproxy.logs import logfmt
from wsproxy.protocol import handshake, static
from wsproxy.protocol.handshake import Kind, Request
from wsproxy.wire import Connection, Deadline, linger_close

__all__ = [
    "CHUNK_BYTES",
    "KEEPALIVE_TIMEOUT",
    "MAX_KEEPALIVE_REQUESTS",
    "SEND_TIMEOUT",
    "WebAuth",
    "WebServer",
]

log = logging.getLogger(__name__)

CHUNK_BYTES = 64 * 1024  # one read from the file, one send to the client
KEEPALIVE_TIMEOUT = 15.0  # seconds an idle kept-alive connection waits for its next request
MAX_KEEPALIVE_REQUESTS = 100  # requests on one connection before it is closed
SEND_TIMEOUT = 60.0  # seconds a client may take to accept one chunk
CLOSE_TIMEOUT = 2.0  # seconds to deliver a last answer and see the client close

WebAuth = Callable[[Connection, Request], None]  # raises HandshakeError to refuse a request

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # a FIFO must not block


class WebServer:
    """Serves the files under ``directory``; one instance per proxy server. ``authorize``, when
    given, is asked about every GET and HEAD before it is answered (``--web-auth``).

    Raises:
        ConfigError: ``directory`` is not a directory.
    """

    def __init__(
        self,
        directory: str,
        *,
        listing: bool = False,
        keepalive_timeout: float = KEEPALIVE_TIMEOUT,
        max_requests: int = MAX_KEEPALIVE_REQUESTS,
        send_timeout: float = SEND_TIMEOUT,
        close_timeout: float = CLOSE_TIMEOUT,
        chunk_bytes: int = CHUNK_BYTES,
        authorize: WebAuth | None = None,
    ) -> None:
        self.root = os.path.realpath(directory)
        if not os.path.isdir(self.root):
            raise ConfigError(
                "not a directory", source=directory, key="web", expected="a directory to serve"
            )
        self.listing = listing
        self.keepalive_timeout = keepalive_timeout
        self.max_requests = max_requests
        self.send_timeout = send_timeout
        self.close_timeout = close_timeout
        self.chunk_bytes = chunk_bytes
        self.authorize = authorize

    def serve(self, session: Connection, request: Request, rest: bytes) -> None:
        """Answer ``request`` and the ones that follow on the connection, until one asks to
        close, an error answer, the request limit or the idle timeout. A WebSocket upgrade
        arriving on a kept-alive connection is handed back to the session."""
        for count in range(1, self.max_requests + 1):
            if not self.answer(session, request, last=count == self.max_requests):
                return
            # The next request (with a Hixie-76 key3, if it is one) within the idle timeout.
            session.deadline = Deadline(self.keepalive_timeout)
            try:
                request, rest = session.read_request(rest)
            except (HandshakeTimeout, ClientGone):
                return
            session.identify(request)
            if handshake.classify(request) is not Kind.HTTP:
                session.dispatch(request, rest)
                return

    def answer(self, session: Connection, request: Request, *, last: bool = False) -> bool:
        """Write the answer to one request; returns whether the connection stays open."""
        keep = not last and _keep_alive(request)
        sock = session.sock
        head_only = request.method == "HEAD"
        status: HTTPStatus
        sent = 0
        farewell = b""  # what is still to send before a lingering close
        refused = ""  # the log's reason for an error answer
        try:
            if request.method not in ("GET", "HEAD"):
                raise HandshakeError(
                    HTTPStatus.METHOD_NOT_ALLOWED,
                    f"method {request.method} not allowed",
                    (("Allow", "GET, HEAD"),),
                )
            if self.authorize is not None:
                self.authorize(session, request)
            segments = static.request_segments(request.target)
            sock.settimeout(self.send_timeout)
            try:
                status, sent = self._send_resource(sock, request, segments, keep, head_only)
            finally:
                sock.settimeout(None)
        except Redirect as redirect:
            status = redirect.status
            body = b"moved\n"
            headers = [("Location", redirect.location), ("Content-Length", str(len(body)))]
            headers.append(("Connection", "keep-alive" if keep else "close"))
            sock.sendall(static.response_head(status, headers) + (b"" if head_only else body))
        except (OSError, ClientGone) as exc:
            # The client left or stalled mid-answer: nothing more can be said to it.
            reason = exc.reason if isinstance(exc, ClientGone) else exc.strerror or str(exc)
            log.info(
                "web peer=%s method=%s path=%s aborted reason=%s",
                session.peer,
                logfmt(request.method),
                logfmt(request.target),
                logfmt(reason or type(exc).__name__),
            )
            return False
        except HandshakeError as error:
            status, keep = error.status, False
            farewell = handshake.error_response(error)
            if head_only:
                farewell = farewell[: farewell.index(b"\r\n\r\n") + 4]
            refused = f" reason={logfmt(error.log_reason)}"
        log.info(
            "web peer=%s method=%s path=%s status=%d bytes=%d%s",
            session.peer,
            logfmt(request.method),
            logfmt(request.target),
            status.value,
            sent,
            refused,
        )
        if not keep:
            # The connection ends with this answer: a lingering close, so that input we did not
            # read (a body, pipelined requests) cannot reset the answer on its way.
            linger_close(sock, farewell, self.close_timeout)
        return keep

    # -- resolving and sending --

    def _send_resource(
        self, sock: Any, request: Request, segments: tuple[str, ...], keep: bool, head_only: bool
    ) -> tuple[HTTPStatus, int]:
        path = self._inside_root(os.path.join(self.root, *segments))
        st = _stat(path)
        if stat.S_ISDIR(st.st_mode):
            if segments and segments[-1] != "":
                raise Redirect(static.redirect_location(segments, request.target))
            index = os.path.join(path, "index.html")
            if not os.path.exists(index):
                if not self.listing:
                    raise HandshakeError(HTTPStatus.FORBIDDEN, "directory listing is off")
                return self._send_listing(sock, request, path, keep, head_only)
            path = self._inside_root(index)
        fd = _open(path)
        with os.fdopen(fd, "rb", buffering=0) as f:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise HandshakeError(HTTPStatus.FORBIDDEN, "not a regular file")
            headers = [
                ("Content-Type", static.content_type(mimetypes.guess_type(path)[0])),
                ("Last-Modified", static.http_date(st.st_mtime)),
                ("Accept-Ranges", "bytes"),
                ("X-Content-Type-Options", "nosniff"),
                ("Connection", "keep-alive" if keep else "close"),
            ]
            if static.not_modified(request.header("If-Modified-Since"), st.st_mtime):
                sock.sendall(static.response_head(HTTPStatus.NOT_MODIFIED, headers))
                return HTTPStatus.NOT_MODIFIED, 0
            byte_range = None
            if_range = request.header("If-Range")
            if if_range is None or if_range == static.http_date(st.st_mtime):
                byte_range = static.parse_range(request.header("Range"), st.st_size)
            if byte_range is None:
                status, start, length = HTTPStatus.OK, 0, st.st_size
            else:
                status, start, length = (
                    HTTPStatus.PARTIAL_CONTENT,
                    byte_range.start,
                    byte_range.length,
                )
                headers.append(("Content-Range", byte_range.content_range()))
            headers.append(("Content-Length", str(length)))
            sock.sendall(static.response_head(status, headers))
            if head_only:
                return status, 0
            return status, self._stream(sock, f, start, length)

    def _stream(self, sock: Any, f: Any, start: int, length: int) -> int:
        """Send ``length`` bytes of ``f`` from ``start`` through one reused buffer."""
        f.seek(start)
        buf = bytearray(self.chunk_bytes)
        view = memoryview(buf)
        sent = 0
        while sent < length:
            n = f.readinto(view[: min(self.chunk_bytes, length - sent)])
            if not n:  # the file shrank under us: the promised length cannot be kept
                raise ClientGone("the file shrank while it was sent")
            sock.sendall(view[:n])
            sent += n
        return sent

    def _send_listing(
        self, sock: Any, request: Request, path: str, keep: bool, head_only: bool
    ) -> tuple[HTTPStatus, int]:
        names = []
        for entry in sorted(os.scandir(path), key=lambda e: e.name):
            if not entry.name.startswith("."):
                names.append((entry.name, entry.is_dir()))
        body = static.listing_page(request.target.partition("?")[0], names)
        headers = [
            ("Content-Type", "text/html; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Connection", "keep-alive" if keep else "close"),
        ]
        sock.sendall(static.response_head(HTTPStatus.OK, headers) + (b"" if head_only else body))
        return HTTPStatus.OK, 0 if head_only else len(body)

    def _inside_root(self, path: str) -> str:
        """``path`` with every symlink resolved, or 403 when that leaves the root."""
        real = os.path.realpath(path)
        if real != self.root and not real.startswith(self.root + os.sep):
            raise HandshakeError(HTTPStatus.FORBIDDEN, "path leads outside the web root")
        return real


def _stat(path: str) -> os.stat_result:
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise HandshakeError(HTTPStatus.NOT_FOUND, "not found") from None
    except OSError:
        raise HandshakeError(HTTPStatus.FORBIDDEN, "not readable") from None


def _open(path: str) -> int:
    try:
        return os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        raise HandshakeError(HTTPStatus.NOT_FOUND, "not found") from None
    except OSError as exc:
        if exc.errno in (errno.EMFILE, errno.ENFILE):  # our exhaustion, not the file's fault
            raise HandshakeError(HTTPStatus.SERVICE_UNAVAILABLE, "server busy") from None
        raise HandshakeError(HTTPStatus.FORBIDDEN, "not readable") from None


def _keep_alive(request: Request) -> bool:
    """HTTP/1.1 keeps the connection unless asked to close; HTTP/1.0 only when asked. A request
    with a body closes it (we do not read bodies)."""
    tokens = request.tokens("Connection")
    if request.header("Content-Length") not in (None, "0") or request.header("Transfer-Encoding"):
        return False
    if request.version == "HTTP/1.1":
        return "close" not in tokens
    return "keep-alive" in tokens
