"""Running the auth plug-in (``--auth-plugin``) for a request, where websockify runs it.

* A WebSocket upgrade is checked after its target is chosen (a token plug-in has looked the
  token up) and before the target is connected: the plug-in is told that target's host and
  port, or ``None, None`` for a UNIX socket.
* With ``--web-auth``, every request to the web server is checked too, with the fixed target
  (``None, None`` when targets are chosen per client).

A plug-in that may block (any but the built-ins that only compare strings) runs in a thread
pool of its own, bounded by what is left of the handshake deadline, so that a slow auth backend
stalls only its own client. A refusal becomes the plug-in's answer; the log line names the
plug-in and its reason, never the credentials.
"""

from __future__ import annotations

import http.client
import logging
import re
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from wsproxy.errors import ConfigError, HandshakeError
from wsproxy.offhub import OffHub, TimedOut
from wsproxy.plugins import auth as built_in
from wsproxy.plugins.loader import load_plugin
from wsproxy.protocol.handshake import Request
from wsproxy.settings import Settings
from wsproxy.wire import Connection

__all__ = ["Authenticator", "plugin_headers"]

log = logging.getLogger(__name__)

AUTH_THREADS = 16  # blocking plug-in calls at once; more wait (within the deadline) for a thread
MIN_WAIT = 0.05  # seconds a blocking plug-in gets even when the handshake deadline is spent
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_OURS = frozenset({"content-length", "content-type", "connection", "transfer-encoding"})


class Authenticator:
    """The loaded plug-in and how to call it; built once with the server.

    Raises:
        ConfigError: the plug-in cannot be loaded or created, or it needs ``verify_client``.
    """

    def __init__(self, settings: Settings) -> None:
        assert settings.auth_plugin is not None
        self.name = settings.auth_plugin.rpartition(".")[2]
        self.plugin: Any = load_plugin(
            built_in.AUTH_PLUGINS, settings.auth_plugin, settings.auth_source
        )
        if not callable(getattr(self.plugin, "authenticate", None)):
            raise ConfigError(
                f"{settings.auth_plugin} has no authenticate() method",
                key="auth_plugin",
                expected="a class with authenticate(headers, target_host, target_port)",
            )
        self.blocking = bool(getattr(self.plugin, "blocking", True))
        if getattr(self.plugin, "needs_client_certificate", False) and not settings.verify_client:
            raise ConfigError(
                f"{self.name} needs a verified client certificate",
                key="auth_plugin",
                expected="verify_client = yes with a cert",
            )
        self.web_target = settings.target  # what web requests are checked against
        self.pool = OffHub(AUTH_THREADS)
        log.info("auth plugin=%s web_auth=%s", self.name, "yes" if settings.web_auth else "no")

    def check(self, session: Connection, request: Request, target: object) -> None:
        """Let the request through, or raise the plug-in's refusal as a HandshakeError
        (``503`` when a blocking plug-in did not answer in time, ``500`` when it failed)."""
        host, port = target if isinstance(target, tuple) else (None, None)
        headers = plugin_headers(request, session.sock if session.secure else None)
        call = self.plugin.authenticate
        try:
            if not self.blocking:
                call(headers=headers, target_host=host, target_port=port)
                return
            wait = max(session.deadline.left(), MIN_WAIT)
            try:
                self.pool.call(wait, call, headers=headers, target_host=host, target_port=port)
            except TimedOut:
                raise HandshakeError(
                    HTTPStatus.SERVICE_UNAVAILABLE,
                    "authentication did not answer in time",
                    log_reason=f"{self.name} did not answer within {wait:.1f}s",
                ) from None
        except HandshakeError:
            raise
        except Exception as exc:
            if _is_refusal(exc):
                raise self.refusal(exc) from None
            log.error(
                "auth plug-in failed peer=%s plugin=%s", session.peer, self.name, exc_info=exc
            )
            raise HandshakeError(
                HTTPStatus.INTERNAL_SERVER_ERROR,
                "authentication failed",
                log_reason=f"{self.name} raised {type(exc).__name__}",
            ) from None

    def check_web(self, session: Connection, request: Request) -> None:
        """``--web-auth``: the same check for a request to the web server."""
        self.check(session, request, self.web_target)

    def refusal(self, exc: Exception) -> HandshakeError:
        """The plug-in's answer (websockify's ``code``, ``headers`` and ``msg``) as a
        HandshakeError; a header that could break the answer is dropped."""
        code = _first(exc, "code", "response_code")
        try:
            status = HTTPStatus(int(code if code is not None else 403))
        except (TypeError, ValueError):
            status = HTTPStatus.INTERNAL_SERVER_ERROR
        if status < 300:
            status = HTTPStatus.INTERNAL_SERVER_ERROR  # a refusal cannot say "OK"
        headers = []
        given = _first(exc, "headers", "response_headers")
        for name, value in given.items() if hasattr(given, "items") else ():
            name, value = str(name), str(value)
            if _HEADER_NAME.match(name) and not _BAD_VALUE.search(value):
                if name.lower() not in _OURS:
                    headers.append((name, value))
            else:
                log.warning("auth header dropped plugin=%s header=%.40r", self.name, name)
        message = _first(exc, "msg", "response_msg")
        # Ours keeps log_msg apart; websockify's says it in its text, "403 log_msg".
        detail = getattr(exc, "log_msg", None) or str(exc)
        if detail in ("", f"{code} None"):  # no log message given
            detail = str(message) if message else status.phrase
        return HandshakeError(
            status,
            str(message) if message else status.phrase,
            tuple(headers),
            log_reason=f"{self.name}: {detail}",
        )


def plugin_headers(request: Request, tls_sock: Any) -> http.client.HTTPMessage:
    """The request's headers as websockify hands them to a plug-in: an HTTPMessage without the
    ``SSL_*`` headers a client sent (they could forge a certificate's name), plus
    ``SSL_CLIENT_S_DN_CN`` from the verified client certificate, if there is one."""
    headers = http.client.HTTPMessage()
    for name, value in request.headers:
        if not name.upper().startswith("SSL_"):
            headers[name] = value
    common_name = client_common_name(tls_sock)
    if common_name is not None:
        headers[built_in.CLIENT_CN_HEADER] = common_name
    return headers


def client_common_name(tls_sock: Any) -> str | None:
    """The commonName of the client certificate's subject (the last one, as websockify takes
    it); None without TLS or without a verified certificate."""
    getpeercert: Callable[[], Any] | None = getattr(tls_sock, "getpeercert", None)
    if getpeercert is None:
        return None
    try:
        cert = getpeercert() or {}
    except (OSError, ValueError):
        return None
    names = [value for rdn in cert.get("subject", ()) for key, value in rdn if key == "commonName"]
    return names[-1] if names else None


def _is_refusal(exc: Exception) -> bool:
    """websockify's contract is an ``AuthenticationError``: ours, websockify's own, or a
    plug-in's class of that name (its subclasses too)."""
    return any(cls.__name__ == "AuthenticationError" for cls in type(exc).__mro__)


def _first(exc: Exception, *names: str) -> Any:
    for name in names:
        value = getattr(exc, name, None)
        if value is not None:
            return value
    return None
