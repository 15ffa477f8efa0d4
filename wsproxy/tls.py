"""TLS for wss:// and https:// on the shared port.

The :class:`ssl.SSLContext` is built once, when the server is constructed, so a bad certificate
is a start-up error (exit 2 naming the file) rather than a failure per client. A connection is
wrapped only after the front door has *peeked* at its first byte, so the TLS library reads the
whole ClientHello itself.
"""

from __future__ import annotations

import os
import ssl
from typing import Any

from gevent import ssl as gevent_ssl

from wsproxy.errors import ConfigError
from wsproxy.settings import DEFAULT_CERT, Settings

__all__ = ["MINIMUM_VERSION", "accept", "describe", "make_context"]

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2


def make_context(settings: Settings) -> ssl.SSLContext | None:
    """The server's TLS context, or None when no certificate is configured.

    TLS 1.2 or newer with the ``ssl`` module's secure default ciphers. With ``verify_client``
    a client must present a certificate signed by a CA in ``cafile``.

    Raises:
        ConfigError: a file that cannot be read or parsed (naming it), or TLS options that need
            a certificate (``key``, ``ssl_only``, ``verify_client``) without ``cert``.
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
    if settings.verify_client and settings.cafile is None:
        raise ConfigError(
            "verify_client needs the CA that signs client certificates",
            key="cafile",
            expected="cafile = a PEM file of CA certificates",
        )
    for name in ("cert", "key", "cafile"):
        path = getattr(settings, name)
        if path is not None:
            _check_readable(path, name)
    context = gevent_ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_VERSION
    try:
        # A passphrase-protected key fails here instead of prompting on the terminal.
        context.load_cert_chain(cert, settings.key, password=_no_password)
    except ssl.SSLError as exc:
        source = settings.key or cert
        raise ConfigError(
            f"cannot load the certificate and key: {describe(exc)}",
            source=source,
            key="key" if settings.key else "cert",
            expected="a PEM certificate with its unencrypted private key",
        ) from None
    if settings.verify_client:
        try:
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
    raise ssl.SSLError("the private key is encrypted; give an unencrypted key")
