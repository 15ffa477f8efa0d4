"""One client, from its first byte to its log line.

A :class:`Session` reads the request head (bounded in size and time), decides what it asks for,
connects to the target *before* answering ``101`` (so an unreachable target is a clean ``502``),
runs the :class:`~wsproxy.relay.Relay`, and writes exactly one line when it ends.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import gevent
import gevent.socket

from wsproxy import handshake, hixie, realip
from wsproxy.codec import make_codec
from wsproxy.errors import CloseCode, HandshakeError
from wsproxy.forwarded import forwarded_client
from wsproxy.handshake import Kind, Request
from wsproxy.relay import Outcome, Relay
from wsproxy.settings import Address, format_address

if TYPE_CHECKING:
    from wsproxy.server import WSProxy

__all__ = ["HEAD_READ_SIZE", "Session"]

log = logging.getLogger(__name__)

HEAD_READ_SIZE = 4096
LINGER_BYTES = 256 * 1024  # input read and dropped after a refusal, at most


class HandshakeTimeout(Exception):
    """The client did not complete its handshake in time (raised by a gevent.Timeout)."""


class ClientGone(Exception):
    """The client closed the connection before its request was complete."""


class Session:
    """State and steps for one client connection; the server calls :meth:`run` in its greenlet."""

    def __init__(self, sock: Any, address: Any, server: WSProxy) -> None:
        self.sock = sock
        self.server = server
        self.settings = server.settings
        self.peer = _format_peer(address)
        self.client_ip = address[0] if isinstance(address, tuple) else ""  # real, once known
        self.secure = False
        self.started = time.monotonic()
        self.relay: Relay | None = None
        self._stopping = False
        self._greenlet: gevent.Greenlet | None = None

    # -- life cycle --

    def run(self) -> None:
        self._greenlet = gevent.getcurrent()  # type: ignore[assignment]
        try:
            _nodelay(self.sock)
            self.serve()
        except HandshakeTimeout:
            log.info("refused peer=%s reason=%s", self.peer, "handshake timed out")
            self.server.metrics.handshake_failed("timeout")
        except ClientGone:
            log.debug("client left before its request was complete peer=%s", self.peer)
        except HandshakeError as exc:
            self.refuse(exc)
        except OSError as exc:
            log.info("refused peer=%s reason=%s", self.peer, exc.strerror or exc)
        finally:
            with contextlib.suppress(OSError):
                self.sock.close()

    def serve(self) -> None:
        """Take the PROXY header of a trusted balancer, let the front door sniff (TLS, Flash
        policy), then read the request and dispatch it."""
        self.read_proxy_header()
        data = self.server.frontdoor.open(self)
        if data is None:
            return
        request, rest = self.read_request(data)
        self.dispatch(request, rest)

    def going_away(self) -> None:
        """Server shutdown: close the relay with 1001, or drop a session still handshaking."""
        self._stopping = True
        if self.relay is not None:
            self.relay.going_away()
        elif self._greenlet is not None:
            self._greenlet.kill(block=False)  # no relay yet: nothing to close gracefully

    # -- steps --

    def read_request(self, data: bytes, timeout: float | None = None) -> tuple[Request, bytes]:
        """Read until a whole request head is in; returns it and the bytes after it.

        ``timeout`` defaults to the handshake timeout (the web server passes its idle timeout).
        """
        buf = bytearray(data)
        if timeout is None:
            timeout = self.settings.handshake_timeout
        with gevent.Timeout(timeout, HandshakeTimeout):
            while True:
                parsed = handshake.parse_request(buf)
                if parsed is not None:
                    request, used = parsed
                    return request, bytes(buf[used:])
                chunk = self.sock.recv(HEAD_READ_SIZE)
                if not chunk:
                    raise ClientGone()
                buf += chunk

    def read_exactly(self, data: bytes, size: int) -> tuple[bytes, bytes]:
        """Make sure ``size`` bytes are in ``data``; returns them and what follows."""
        buf = bytearray(data)
        with gevent.Timeout(self.settings.handshake_timeout, HandshakeTimeout):
            while len(buf) < size:
                chunk = self.sock.recv(HEAD_READ_SIZE)
                if not chunk:
                    raise ClientGone()
                buf += chunk
        return bytes(buf[:size]), bytes(buf[size:])

    def read_proxy_header(self) -> None:
        """Behind a trusted load balancer, a PROXY protocol header names the real client."""
        trusted = self.server.trusted_proxies
        if not trusted:
            return
        with gevent.Timeout(self.settings.handshake_timeout, HandshakeTimeout):
            header = realip.receive_proxy_header(self.sock, trusted=self.client_ip in trusted)
        if header is not None and header.source is not None:
            self.set_client(*header.source)

    def read_forwarded_for(self, request: Request) -> None:
        """From a trusted proxy, X-Forwarded-For names the real client."""
        trusted = self.server.trusted_proxies
        if trusted and self.client_ip in trusted:
            client = forwarded_client(request.header("X-Forwarded-For"), trusted)
            if client is not None:
                self.set_client(client, None)

    def set_client(self, host: str, port: int | None) -> None:
        """The real client address replaces the peer's in logs, limits and recordings."""
        via, self.client_ip = self.peer, host
        self.peer = format_address((host, port)) if port is not None else _format_host(host)
        log.debug("forwarded peer=%s via=%s", self.peer, via)

    def dispatch(self, request: Request, rest: bytes) -> None:
        self.read_forwarded_for(request)
        kind = handshake.classify(request)
        if kind is Kind.HTTP:
            self.serve_http(request, rest)
            return
        if kind is not Kind.RFC6455 and not self.settings.hixie:
            raise HandshakeError(
                HTTPStatus.UPGRADE_REQUIRED,
                "legacy Hixie WebSocket protocol is switched off",
                (("Sec-WebSocket-Version", "13"),),
            )
        handshake.check_origin(request, self.settings.origins)
        if kind is Kind.RFC6455:
            response, subprotocol = handshake.accept_rfc6455(request)
        elif kind is Kind.HIXIE76:
            key3, rest = self.read_exactly(rest, hixie.KEY3_BYTES)
            response, subprotocol = hixie.hixie76_response(request, key3, secure=self.secure)
        else:
            response, subprotocol = hixie.hixie75_response(request, secure=self.secure)
        self.proxy(kind.value, subprotocol, response, rest, request)

    def serve_http(self, request: Request, rest: bytes) -> None:
        """A plain HTTP request: the web server's if ``web`` is set, else a short refusal."""
        web = self.server.frontdoor.web
        if web is not None:
            web.serve(self, request, rest)
            return
        if request.method not in ("GET", "HEAD"):
            raise HandshakeError(
                HTTPStatus.METHOD_NOT_ALLOWED, "this is a WebSocket endpoint", (("Allow", "GET"),)
            )
        raise HandshakeError(
            HTTPStatus.NOT_FOUND, "this is a WebSocket endpoint: connect with a WebSocket client"
        )

    def proxy(
        self, protocol: str, subprotocol: str | None, response: bytes, rest: bytes, request: Request
    ) -> None:
        """Connect the target, accept the client, relay, log."""
        connecting = time.monotonic()
        target_sock, target = self.server.connect_target(request)
        self.server.metrics.target_connected(time.monotonic() - connecting)
        recorder = None
        try:
            _nodelay(target_sock)
            if self._stopping:
                raise HandshakeError(HTTPStatus.SERVICE_UNAVAILABLE, "server shutting down")
            self.sock.sendall(response)
            codec = make_codec(protocol, subprotocol)
            recorder = self.server.open_recorder(self)
            self.relay = relay = Relay(
                self.sock,
                target_sock,
                codec,
                close_timeout=self.settings.close_timeout,
                recorder=recorder,
            )
            log.info(
                "open peer=%s proto=%s sub=%s target=%s path=%s",
                self.peer,
                protocol,
                subprotocol or "-",
                target,
                request.target,
            )
            self.server.metrics.session_opened(protocol)
            try:
                outcome = relay.run(rest)
            finally:
                ended = relay.outcome or Outcome("proxy", CloseCode.INTERNAL_ERROR, "")
                self.server.metrics.session_closed(
                    protocol, ended.by, ended.code, relay.bytes_in, relay.bytes_out
                )
        finally:
            target_sock.close()
            if recorder is not None:
                recorder.close()
        log.info(
            "closed peer=%s proto=%s sub=%s target=%s in=%d out=%d secs=%.2f by=%s code=%d "
            "reason=%s",
            self.peer,
            protocol,
            subprotocol or "-",
            target,
            relay.bytes_in,
            relay.bytes_out,
            time.monotonic() - self.started,
            outcome.by,
            outcome.code,
            _quote(outcome.reason),
        )

    def refuse(self, error: HandshakeError) -> None:
        """Answer a refused request with its status and reason, and log it."""
        self.server.metrics.handshake_failed(str(error.status.value))
        log.warning(
            "refused peer=%s status=%d reason=%s",
            self.peer,
            error.status.value,
            _quote(error.reason),
        )
        try:
            with gevent.Timeout(self.settings.close_timeout):
                self.sock.sendall(handshake.error_response(error))
                self.linger()
        except (OSError, gevent.Timeout):
            pass

    def linger(self) -> None:
        """Half-close, then read and drop what the client is still sending (bounded).

        Closing with unread input makes the kernel send a reset, which can destroy the answer
        before the client reads it; this is the "lingering close" of HTTP servers.
        """
        self.sock.shutdown(socket.SHUT_WR)
        drained = 0
        while drained < LINGER_BYTES:
            chunk = self.sock.recv(HEAD_READ_SIZE)
            if not chunk:
                break
            drained += len(chunk)


def connect(address: Address | str, timeout: float) -> Any:
    """Connect the target: ``(host, port)`` over TCP, or a UNIX socket path given as text.

    Raises HandshakeError: ``502`` naming the target, with the reason.
    """
    try:
        if isinstance(address, str):
            sock = gevent.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(address)
            except OSError:
                sock.close()
                raise
        else:
            sock = gevent.socket.create_connection(address, timeout=timeout)
    except OSError as exc:
        reason = "timed out" if isinstance(exc, socket.timeout) else exc.strerror or str(exc)
        raise HandshakeError(
            HTTPStatus.BAD_GATEWAY, f"cannot connect to target {target_name(address)}: {reason}"
        ) from None
    sock.settimeout(None)
    return sock


def target_name(address: Address | str) -> str:
    """How logs and answers name a target: ``host:port`` or ``unix:PATH``."""
    return f"unix:{address}" if isinstance(address, str) else format_address(address)


def _nodelay(sock: Any) -> None:
    # Not TCP (a UNIX socket in tests, an inherited fd): nothing to set.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _format_peer(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return format_address((address[0], address[1]))
    return str(address) or "-"


def _format_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _quote(text: str) -> str:
    return '"' + text.replace('"', "'") + '"' if (" " in text or not text) else text
