"""TLS for wss:// and https:// on the shared port.

The :class:`ssl.SSLContext` is built once, when the server is constructed, so a bad certificate
is a start-up error (exit 2 naming the file) rather than a failure per client. A connection is
wrapped only after the front door has *peeked* at its first byte, so the TLS library reads the
whole ClientHello itself.
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Callable
from typing import Any

from gevent import ssl as gevent_ssl

from wsproxy.errors import ConfigError
from wsproxy.settings import DEFAULT_CERT, Settings

__all__ = ["MINIMUM_VERSIONS", "accept", "describe", "make_context"]

log = logging.getLogger(__name__)

# ssl_version -> the lowest version offered. websockify's "default" lets OpenSSL decide; ours is
# TLS 1.2 whatever the system's OpenSSL configuration says. TLS 1.1 (deprecated by RFC 8996)
# is never offered: tlsv1_1 is accepted, so that websockify command lines still start, and
# means TLS 1.2 with a warning.
MINIMUM_VERSIONS = {
    "default": ssl.TLSVersion.TLSv1_2,
    "tlsv1_1": ssl.TLSVersion.TLSv1_2,
    "tlsv1_2": ssl.TLSVersion.TLSv1_2,
    "tlsv1_3": ssl.TLSVersion.TLSv1_3,
}


def make_context(settings: Settings) -> ssl.SSLContext | None:
    """The server's TLS context, or None when no certificate is configured.

    The lowest version is ``ssl_version``'s (TLS 1.2 by default), the TLS 1.2 ciphers
    ``ssl_ciphers`` or the ``ssl`` module's secure defaults. An encrypted key is opened with
    ``key_password``. With ``verify_client`` a client must present a certificate signed by a CA
    in ``cafile``, or without it by one of the system's CAs (as websockify does).

    Raises:
        ConfigError: a file that cannot be read or parsed (naming it, never the password), a
            cipher list OpenSSL refuses, or TLS options that need a certificate (``key``,
            ``ssl_only``, ``verify_client``) without ``cert``.
    """
    cert: str | None = settings.cert
    if cert in (DEFAULT_CERT, os.path.abspath(DEFAULT_CERT)) and not os.path.exists(cert):
        cert = None  # websockify's default, self.pem: TLS only where the file is there
    if cert is None:
        for name in ("key", "ssl_only", "verify_client"):
            if getattr(settings, name):
                raise ConfigError(
                    f"{name} needs a certificate", key="cert", expected="cert = a PEM file"
                )
        return None
    for name in ("cert", "key", "cafile"):
        path = getattr(settings, name)
        if path is not None:
            _check_readable(path, name)
    context = gevent_ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_VERSIONS[settings.ssl_version]
    if settings.ssl_version == "tlsv1_1":
        log.warning(
            "ssl_version tlsv1_1: TLS 1.1 is deprecated (RFC 8996) and not offered; "
            "the lowest version accepted is TLS 1.2"
        )
    if settings.ssl_ciphers is not None:
        try:
            context.set_ciphers(settings.ssl_ciphers)
        except ssl.SSLError:
            raise ConfigError(
                "OpenSSL selects no cipher from this list",
                key="ssl_ciphers",
                expected="an OpenSSL cipher list (see openssl ciphers)",
            ) from None
    password: str | Callable[[], bytes] = settings.key_password or _no_password
    try:
        # Without key_password an encrypted key fails here instead of prompting on the terminal.
        context.load_cert_chain(cert, settings.key, password=password)
    except ssl.SSLError as exc:
        source = settings.key or cert
        raise ConfigError(
            f"cannot load the certificate and key: {describe(exc)}",
            source=source,
            key="key" if settings.key else "cert",
            expected="a PEM certificate with its private key (key_password for an encrypted key)",
        ) from None
    if settings.verify_client:
        try:
            if settings.cafile is None:
                context.set_default_verify_paths()  # the system CAs (SSL_CERT_FILE too)
            else:
                context.load_verify_locations(cafile=settings.cafile)
        except ssl.SSLError as exc:
            raise ConfigError(
                f"cannot load CA certificates: {describe(exc)}",
                source=settings.cafile,
                key="cafile",
                expected="a PEM file of CA certificates",
            ) from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def accept(sock: Any, context: ssl.SSLContext) -> Any:
    """Wrap ``sock`` and run the server side of the handshake; the caller bounds the wait
    (the session's handshake deadline).

    Returns the TLS socket, which now owns the file descriptor (``sock`` is detached). Raises
    :class:`ssl.SSLError` when the handshake fails (no shared version or cipher, a missing or
    untrusted client certificate); on any error, the timeout too, the TLS socket is closed.
    """
    tls_sock = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
    try:
        tls_sock.do_handshake()
    except BaseException:
        tls_sock.close()
        raise
    return tls_sock


def describe(error: ssl.SSLError) -> str:
    """The short OpenSSL reason (``NO_SHARED_CIPHER``), else the message."""
    return getattr(error, "reason", None) or error.strerror or str(error)


def _check_readable(path: str, name: str) -> None:
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as exc:
        raise ConfigError(
            f"cannot read the file: {exc.strerror or exc}",
            source=path,
            key=name,
            expected="a readable PEM file",
        ) from None


def _no_password() -> bytes:
    raise ssl.SSLError("the private key is encrypted; give key_password")
