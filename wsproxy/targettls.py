"""TLS toward the target (``--ssl-target``), as websockify's client side does it: the target's
host name is sent as SNI and its certificate checked against the system's CAs, or ours:
``target_cafile``, or no check at all with ``target_insecure`` (said at start-up).

The handshake runs right after the TCP connect, before the client gets its ``101``, so a target
that fails it is a ``502`` naming the reason. The relay then reads the target through gevent's
TLS socket, which asks OpenSSL first and waits on the socket only when OpenSSL has nothing
decrypted left: a TLS 1.3 session ticket arriving with (or before) the target's first bytes
cannot hold those bytes back, as it can in a select() loop on the raw socket.
"""

from __future__ import annotations

import logging
import socket
import ssl
from http import HTTPStatus
from typing import Any

from gevent import ssl as gevent_ssl

from wsproxy.errors import ConfigError, HandshakeError
from wsproxy.settings import Settings
from wsproxy.tls import describe

__all__ = ["TargetTLS"]

log = logging.getLogger(__name__)


class TargetTLS:
    """The client-side context, built once with the server.

    Raises:
        ConfigError: ``target_cafile`` cannot be loaded.
    """

    def __init__(self, settings: Settings) -> None:
        self.timeout = settings.connect_timeout
        context = gevent_ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if settings.target_insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            log.warning(
                "target_insecure: the target's TLS certificate is not checked; anyone on the "
                "path to it can read and change the traffic"
            )
        elif settings.target_cafile is not None:
            try:
                context.load_verify_locations(cafile=settings.target_cafile)
            except (OSError, ssl.SSLError) as exc:
                reason = describe(exc) if isinstance(exc, ssl.SSLError) else exc.strerror
                raise ConfigError(
                    f"cannot load CA certificates: {reason}",
                    source=settings.target_cafile,
                    key="target_cafile",
                    expected="a PEM file of CA certificates",
                ) from None
        else:
            context.set_default_verify_paths()  # the system's CAs, as websockify's default
        self.context = context

    def wrap(self, sock: Any, host: str, name: str) -> Any:
        """Shake hands over the connected ``sock`` with SNI ``host`` (none for an IP address,
        whose certificate must then name the address), within ``connect_timeout``.

        Returns the TLS socket (blocking, as the relay wants it). Raises HandshakeError:
        ``502`` with the reason; ``sock`` is closed then.
        """
        tls_sock = self.context.wrap_socket(
            sock, server_hostname=host, do_handshake_on_connect=False
        )
        tls_sock.settimeout(self.timeout)
        try:
            tls_sock.do_handshake()
        except (OSError, ssl.SSLError) as exc:
            tls_sock.close()
            if isinstance(exc, ssl.SSLCertVerificationError):
                reason = f"certificate not trusted: {exc.verify_message}"
            elif isinstance(exc, ssl.SSLError):
                reason = f"TLS handshake failed: {describe(exc)}"
            elif isinstance(exc, socket.timeout):
                reason = "TLS handshake timed out"
            else:
                reason = f"TLS handshake failed: {exc.strerror or exc}"
            raise HandshakeError(
                HTTPStatus.BAD_GATEWAY, f"cannot connect to target {name}: {reason}"
            ) from None
        tls_sock.settimeout(None)
        return tls_sock
