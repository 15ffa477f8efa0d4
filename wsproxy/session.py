"""One client, from its first byte to its log line.

A :class:`Session` reads the request head (bounded in size, and in time by one deadline for the
whole opening handshake), decides what it asks for, connects to the target *before* answering
``101`` (so an unreachable target is a clean ``502``), runs the :class:`~wsproxy.relay.Relay`, and
writes exactly one line when it ends.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from dataclasses import dataclass
from functools import partial
from http import HTTPStatus
from typing import Any

import gevent
import gevent.socket

from wsproxy import realip
from wsproxy.context import Context
from wsproxy.errors import ClientGone, CloseCode, HandshakeError, HandshakeTimeout
from wsproxy.logs import logfmt
from wsproxy.protocol import deflate, handshake, hixie
from wsproxy.protocol.codec import DeflateCodec, make_codec
from wsproxy.protocol.forwarded import forwarded_client
from wsproxy.protocol.handshake import Kind, Request
from wsproxy.pumpio import send_all
from wsproxy.relay import Outcome, Relay
from wsproxy.settings import format_address
from wsproxy.traffic import TrafficTrace
from wsproxy.wire import Deadline, linger_close, read_until

__all__ = ["Session", "tune_socket"]

log = logging.getLogger(__name__)

KEEPALIVE_IDLE = 60  # seconds of silence before the kernel probes a peer ...
KEEPALIVE_INTERVAL = 15  # ... then every this many seconds ...
KEEPALIVE_PROBES = 4  # ... and gives up after this many unanswered probes (about 2 minutes)


@dataclass(slots=True)
class Opened:
    """A relay set up by the handshake, and what :meth:`Session.relay_opened` needs besides."""

    relay: Relay
    target_sock: Any
    target: str
    protocol: str
    subprotocol: str | None
    recorder: Any
    rest: bytes  # client bytes read with the request head
    counted: str = ""  # the address ``per_client`` counts this session under ('' for none)


class Session:
    """State and steps for one client connection; the server calls :meth:`run` in its greenlet."""

    def __init__(self, sock: Any, address: Any, context: Context) -> None:
        self.sock = sock
        self.context = context
        self.settings = context.settings
        # Where the connection comes from: the TCP peer, or the client a trusted PROXY header
        # names. A trusted X-Forwarded-For is weighed against it, request by request.
        self.via_ip = address[0] if isinstance(address, tuple) else ""
        # A UNIX socket client has no name (''): it is named by the socket it came through.
        self.via = _format_peer(address or self.settings.unix_listen or "")
        self.peer = self.via  # the client of the current request, as logs and recordings name it
        self.client = format_address((self.via_ip, None))  # its address alone
        self.secure = False
        self.started = time.monotonic()
        # One bound for the whole opening handshake, from PROXY header to Hixie-76 key3.
        self.deadline = Deadline(self.settings.handshake_timeout)
        self.relay: Relay | None = None
        self._opened: Opened | None = None  # a relay the handshake set up, for run() to run
        self.listen_port = context.listen_port
        self._stopping = False
        self._greenlet: gevent.Greenlet | None = None

    # -- life cycle --

    def run(self) -> None:
        self._greenlet = gevent.getcurrent()  # type: ignore[assignment]
        try:
            if not self.context.listener_tuned:
                tune_socket(self.sock)
            self.serve()
            opened, self._opened = self._opened, None
            if opened is not None:  # the handshake's frames have returned, and its objects
                self.relay_opened(opened)
        except HandshakeTimeout as exc:
            log.info("refused peer=%s reason=%s step=%s", self.peer, logfmt(exc.reason), exc.step)
            self.context.metrics.handshake_failed(exc.metric_label)
        except ClientGone as exc:
            log.debug("client left peer=%s reason=%s", self.peer, logfmt(exc.reason))
        except HandshakeError as exc:
            self.refuse(exc)
        except OSError as exc:
            log.info("refused peer=%s reason=%s", self.peer, logfmt(exc.strerror or exc))
        except Exception:
            # A bug of ours: say so in our log, with the traceback, instead of letting it escape
            # to gevent's hub; the finally still closes the client's socket.
            log.exception("session failed peer=%s", self.peer)
        finally:
            with contextlib.suppress(OSError):
                self.sock.close()

    def serve(self) -> None:
        """Take the PROXY header of a trusted balancer, let the front door sniff (TLS, Flash
        policy), then read the request and dispatch it."""
        self.read_proxy_header()
        data = self.context.frontdoor.open(self)
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

    def read_request(self, data: bytes) -> tuple[Request, bytes]:
        """Read until a whole request head is in, within :attr:`deadline` (the web server sets
        a fresh one for each kept-alive request); returns it and the bytes after it."""
        buf = bytearray(data)
        request, used = read_until(
            self.sock, buf, handshake.parse_request, self.deadline, "request"
        )
        return request, bytes(buf[used:])

    def read_exactly(self, data: bytes, size: int, step: str) -> tuple[bytes, bytes]:
        """Make sure ``size`` bytes are in ``data`` (within :attr:`deadline`); returns them and
        what follows."""
        buf = bytearray(data)
        read_until(self.sock, buf, lambda b: True if len(b) >= size else None, self.deadline, step)
        return bytes(buf[:size]), bytes(buf[size:])

    def read_proxy_header(self) -> None:
        """Behind a trusted load balancer, a PROXY protocol header names the real client: it
        becomes :attr:`via`, the source of every request on this connection."""
        trusted = self.context.trusted_proxies
        if not trusted:
            return
        with self.deadline.bound("proxy header"):
            header = realip.receive_proxy_header(self.sock, trusted=self.via_ip in trusted)
        if header is not None and header.source is not None:
            tcp_peer, (self.via_ip, port) = self.via, header.source
            self.peer = self.via = format_address((self.via_ip, port))
            log.debug("forwarded peer=%s via=%s", self.peer, tcp_peer)

    def identify(self, request: Request) -> None:
        """Name the client of ``request`` in :attr:`peer`: the address a trusted
        ``X-Forwarded-For`` gives when :attr:`via` is a trusted proxy, else :attr:`via`.

        Called for every request, so a kept-alive connection from a balancer names each
        request's own client. Logs, recordings and ``max_connections_per_ip`` (by
        :attr:`client`, the address alone) use it; ``max_connections`` counts connections,
        whoever their client.
        """
        self.peer = self.via
        self.client = format_address((self.via_ip, None))
        trusted = self.context.trusted_proxies
        if trusted and self.via_ip in trusted:
            client = forwarded_client(request.header("X-Forwarded-For"), trusted)
            if client is not None:
                self.peer = self.client = format_address((client, None))
                log.debug("forwarded peer=%s via=%s", self.peer, self.via)

    def dispatch(self, request: Request, rest: bytes) -> None:
        self.identify(request)
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
        agreement = None
        if kind is Kind.RFC6455:
            if self.settings.permessage_deflate:
                agreement = deflate.negotiate(
                    request.header("Sec-WebSocket-Extensions"),
                    self.settings.deflate_max_window_bits,
                )
            response, subprotocol = handshake.accept_rfc6455(
                request, extensions=agreement.response if agreement else None
            )
        elif kind is Kind.HIXIE76:
            key3, rest = self.read_exactly(rest, hixie.KEY3_BYTES, "key3")
            response, subprotocol = hixie.hixie76_response(request, key3, secure=self.secure)
        else:
            response, subprotocol = hixie.hixie75_response(request, secure=self.secure)
        # Within the client's share of sessions (max_connections_per_ip): 503 past it, before
        # the target is connected; the share is given back when the relay ends.
        counted = self.context.per_client.acquire(self.client)
        try:
            opened = self.open_relay(kind.value, subprotocol, response, rest, request, agreement)
        except BaseException:
            self.context.per_client.release(counted)
            raise
        opened.counted = counted
        self._opened = opened

    def serve_http(self, request: Request, rest: bytes) -> None:
        """A plain HTTP request: the web server's if ``web`` is set, else a short refusal."""
        web = self.context.frontdoor.web
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

    def open_relay(
        self,
        protocol: str,
        subprotocol: str | None,
        response: bytes,
        rest: bytes,
        request: Request,
        agreement: deflate.Agreement | None = None,
    ) -> Opened:
        """Connect the target, accept the client and set up the relay, which :meth:`run` runs
        once the handshake's steps have returned; ``agreement`` is the permessage-deflate one,
        if negotiated. Relaying outside the handshake's frames frees what only the handshake
        needed while the session lasts: the request (1.9 KiB for the bench's client, 3.3 KiB
        for Chromium's) and its head."""
        connecting = time.monotonic()
        auth = self.context.auth
        check = None if auth is None else partial(auth.check, self, request)
        target_sock, target = self.context.targets.open(request, check)
        self.context.metrics.target_connected(time.monotonic() - connecting)
        recorder = None
        try:
            tune_socket(target_sock)
            if self._stopping:
                raise HandshakeError(HTTPStatus.SERVICE_UNAVAILABLE, "server shutting down")
            send_all(self.sock.send, response)  # gevent's sendall asks SO_SNDBUF
            codec = make_codec(protocol, subprotocol, agreement, self.settings.max_message_size)
            recordings = self.context.recordings
            recorder = recordings.open(self.peer, self.started) if recordings else None
            hook = TrafficTrace(recorder) if self.settings.traffic else recorder
            self.relay = relay = Relay(
                self.sock,
                target_sock,
                codec,
                close_timeout=self.settings.close_timeout,
                recorder=hook,
                scratch=self.context.scratch,
            )
            log.info(
                "open peer=%s proto=%s sub=%s target=%s path=%s",
                self.peer,
                protocol,
                subprotocol or "-",
                target,
                logfmt(request.target),
            )
            self.context.metrics.session_opened(protocol)
        except BaseException:
            target_sock.close()
            if recorder is not None:
                recorder.close()
            raise
        return Opened(relay, target_sock, target, protocol, subprotocol, recorder, rest)

    def relay_opened(self, opened: Opened) -> None:
        """Relay until either side ends, then close the target and log the session."""
        relay, codec, protocol = opened.relay, opened.relay.codec, opened.protocol
        try:
            try:
                outcome = relay.run(opened.rest)
            finally:
                ended = relay.outcome or Outcome("proxy", CloseCode.INTERNAL_ERROR, "")
                self.context.metrics.session_closed(
                    protocol, ended.by, ended.code, relay.bytes_in, relay.bytes_out
                )
                if isinstance(codec, DeflateCodec):
                    self.context.metrics.deflate_closed(
                        codec.wire_in, codec.wire_out, codec.message_in, codec.message_out
                    )
        finally:
            opened.target_sock.close()
            if opened.recorder is not None:
                opened.recorder.close()
            self.context.per_client.release(opened.counted)
        log.info(
            "closed peer=%s proto=%s sub=%s target=%s in=%d out=%d secs=%.2f by=%s code=%d "
            "reason=%s",
            self.peer,
            protocol,
            opened.subprotocol or "-",
            opened.target,
            relay.bytes_in,
            relay.bytes_out,
            time.monotonic() - self.started,
            outcome.by,
            outcome.code,
            logfmt(outcome.reason),
        )

    def refuse(self, error: HandshakeError) -> None:
        """Answer a refused request with its status and reason, and log it."""
        self.context.metrics.handshake_failed(str(error.status.value))
        log.warning(
            "refused peer=%s status=%d reason=%s",
            self.peer,
            error.status.value,
            logfmt(error.log_reason),
        )
        linger_close(self.sock, handshake.error_response(error), self.settings.close_timeout)


def tune_socket(sock: Any) -> bool:
    """No Nagle delay (keystrokes and echoes are small), and TCP keepalive probes so that a peer
    that vanished without a FIN (a NAT or Wi-Fi drop) frees its session within minutes, not the
    kernel's default two hours. True when all is set.

    On Linux an accepted socket inherits these options from its listening socket, so the server
    sets them once on the listener (five system calls less per session) when it can."""
    # Not TCP (a UNIX socket target, an inherited fd): nothing to set.
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_PROBES)
    except (OSError, AttributeError):
        return False
    return True


def _format_peer(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return format_address((address[0], address[1]))
    if isinstance(address, str):
        return format_address(address)
    return str(address) or "-"
