"""The sniffing front door: TLS, Flash policy requests and HTTP on one port.

For each new connection the session asks :meth:`FrontDoor.open` what to do. It peeks at the first
byte (within the session's handshake deadline): a TLS ClientHello is wrapped with the server's TLS
context and sniffed again inside the tunnel; a Flash policy request is answered and closed;
anything else is the start of an HTTP request (a WebSocket upgrade or a plain request for the web
server).
"""

from __future__ import annotations

import logging
import socket
import ssl

from wsproxy import tls
from wsproxy.errors import ClientGone
from wsproxy.logs import logfmt
from wsproxy.protocol import policy, sniff
from wsproxy.settings import Settings
from wsproxy.webserver import WebAuth, WebServer
from wsproxy.wire import Connection, read_until

__all__ = ["FrontDoor"]

log = logging.getLogger(__name__)

NO_CERT_REMEDY = (
    "give a certificate with --cert FILE (and --key FILE) to accept wss:// and https://"
)


class FrontDoor:
    """Server-wide state of the front door, built once with the server.

    ``web_auth`` (``--web-auth``) checks each web server request before it is answered.

    Raises:
        ConfigError: an unreadable certificate, key or CA file, or a ``web`` that is not a
            directory (so the process exits 2 before it listens).
    """

    def __init__(self, settings: Settings, *, web_auth: WebAuth | None = None) -> None:
        self.settings = settings
        self.ssl_context = tls.make_context(settings)
        self.web = (
            WebServer(
                settings.web,
                listing=not settings.file_only,
                close_timeout=settings.close_timeout,
                authorize=web_auth,
            )
            if settings.web
            else None
        )
        self._policy: bytes | None = None
        self._told_no_cert = False

    def policy_answer(self, port: int) -> bytes:
        """The Flash policy document; without configured ports it allows the listening one."""
        if self._policy is None:
            ports = self.settings.policy_ports or (port,)
            self._policy = policy.policy_response(self.settings.policy_domain, ports)
        return self._policy

    def open(self, session: Connection) -> bytes | None:
        """Sniff the connection and handle what is not HTTP.

        Returns the bytes read so far of an HTTP request (the session reads the rest of its head
        and dispatches it), or None when the connection has been answered or refused and only
        needs closing. After a TLS handshake ``session.sock`` is the TLS socket and
        ``session.secure`` is true.
        """
        kind, data = self.sniff(session)
        if kind is sniff.Kind.TLS:
            if not self.start_tls(session):
                return None
            kind, data = self.sniff(session)
        elif self.settings.ssl_only:
            log.info(
                "refused peer=%s reason=%s", session.peer, logfmt("plain connection, ssl_only")
            )
            return None
        if kind is sniff.Kind.POLICY:
            if not self.settings.policy:
                log.info("refused peer=%s reason=%s", session.peer, logfmt("flash policy is off"))
                return None
            session.sock.sendall(self.policy_answer(session.listen_port))
            log.info("policy peer=%s secure=%s", session.peer, session.secure)
            return None
        return data

    def sniff(self, session: Connection) -> tuple[sniff.Kind, bytes]:
        """Classify the connection by its first bytes, within the session's deadline.

        On a plain socket the first byte is only peeked, so that a TLS library wrapping it reads
        the ClientHello whole. Everything else is read and returned, to be parsed further.
        Inside TLS a second ClientHello is not special: it fails as a malformed HTTP request.
        """
        sock = session.sock
        if not session.secure:
            with session.deadline.bound("sniff"):
                first = sock.recv(1, socket.MSG_PEEK)
            if not first:
                raise ClientGone("client closed the connection during sniff")
            if sniff.classify(first) is sniff.Kind.TLS:
                return sniff.Kind.TLS, b""
        buf = bytearray()
        kind = read_until(sock, buf, _classified, session.deadline, "sniff")
        if kind is sniff.Kind.TLS:
            kind = sniff.Kind.HTTP
        return kind, bytes(buf)

    def start_tls(self, session: Connection) -> bool:
        """Wrap the session's socket and shake hands; False (logged) when that cannot be done."""
        if self.ssl_context is None:
            if not self._told_no_cert:
                self._told_no_cert = True
                log.warning(
                    "refused peer=%s reason=%s remedy=%s",
                    session.peer,
                    logfmt("TLS client but no certificate configured"),
                    logfmt(NO_CERT_REMEDY),
                )
            else:
                log.debug("refused peer=%s reason=%s", session.peer, "tls-without-cert")
            return False
        try:
            with session.deadline.bound("tls"):
                session.sock = tls.accept(session.sock, self.ssl_context)
        except ssl.SSLError as exc:
            reason = f"TLS handshake failed: {tls.describe(exc)}"
            log.info("refused peer=%s reason=%s", session.peer, logfmt(reason))
            return False
        session.secure = True
        return True


def _classified(buf: bytearray) -> sniff.Kind | None:
    kind = sniff.classify(buf)
    return None if kind is sniff.Kind.INCOMPLETE else kind
