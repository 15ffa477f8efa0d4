"""Auth plug-ins with websockify's interface: ``Class(src)`` at start-up, then
``authenticate(headers, target_host, target_port)`` per request, which returns to let the client
in or raises :class:`AuthenticationError` carrying the answer (status, headers, message).

``headers`` is the request's :class:`http.client.HTTPMessage` (``get`` ignores case), with
``SSL_CLIENT_S_DN_CN`` set from a verified client certificate. A plug-in may be called from
several threads at once (wsproxy runs one whose ``blocking`` attribute is not false off the
event loop); the built-in ones below are safe for that. :mod:`wsproxy.auth` runs them.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import logging
import os
import threading
from collections.abc import Mapping
from typing import Protocol

from wsproxy.errors import ConfigError
from wsproxy.plugins.loader import PluginKind
from wsproxy.plugins.passwords import PasswordHash, parse_password_file

__all__ = [
    "AUTH_PLUGINS",
    "AuthenticationError",
    "BasePlugin",
    "BasicHTTPAuth",
    "ClientCertCNAuth",
    "ExpectOrigin",
    "Headers",
    "InvalidOriginError",
]

log = logging.getLogger(__name__)

CLIENT_CN_HEADER = "SSL_CLIENT_S_DN_CN"  # websockify's name (Apache's StdEnvVars style)
CACHE_SIZE = 1024  # verified credentials remembered by a password-file BasicHTTPAuth
NAME_SHOWN = 64  # characters of a user name a log line shows at most
# What --auth-plugin NAME loads; websockify.auth_plugins.NAME names the same.
AUTH_PLUGINS = PluginKind(
    "auth plug-in",
    "auth_plugin",
    "auth_source",
    {name: (__name__, None) for name in ("BasicHTTPAuth", "ExpectOrigin", "ClientCertCNAuth")},
    "websockify.auth_plugins",
)


class Headers(Protocol):
    """What a plug-in gets: an :class:`http.client.HTTPMessage` in practice."""

    def get(self, name: str, /) -> str | None: ...


class AuthenticationError(Exception):
    """A refusal, in websockify's shape: ``code``, ``headers`` and ``msg`` are the answer,
    ``log_msg`` (default: the message) what the log says. The ``response_*`` names are
    aliases, so that code written against either spelling can read them."""

    def __init__(
        self,
        log_msg: str | None = None,
        response_code: int = 403,
        response_headers: Mapping[str, str] | None = None,
        response_msg: str | None = None,
    ) -> None:
        self.code = self.response_code = response_code
        self.headers = self.response_headers = dict(response_headers or {})
        self.msg = self.response_msg = response_msg
        self.log_msg = response_msg if log_msg is None else log_msg
        super().__init__(f"{response_code} {self.log_msg}")


class InvalidOriginError(AuthenticationError):
    def __init__(self, expected: list[str], actual: str | None) -> None:
        self.expected_origin = expected
        self.actual_origin = actual
        super().__init__(
            response_msg="Invalid Origin",
            log_msg=f"Invalid Origin Header: Expected one of {expected}, got {actual!r}",
        )


class BasePlugin:
    """Lets every client in; a base for plug-ins that keep their source."""

    blocking = False

    def __init__(self, src: str | None = None) -> None:
        self.source = src

    def authenticate(self, headers: Headers, target_host: object, target_port: object) -> None:
        pass


class BasicHTTPAuth:
    """HTTP Basic authentication. ``src`` is websockify's ``user:password``, or (ours) the path
    of a file of ``user:HASH`` lines (:mod:`wsproxy.plugins.passwords`), re-read when it changes.

    No credentials or wrong ones get 401 with ``WWW-Authenticate: Basic realm="Websockify"``
    (the browser asks again); credentials that are not Basic or not decodable get 403.
    """

    realm = "Websockify"
    SOURCE_MAY_BE_FILE = True  # a relative password file means one in the start directory

    def __init__(self, src: str | None = None) -> None:
        if not src:
            raise ValueError("BasicHTTPAuth needs auth_source: user:password or a password file")
        self.src = src
        self.path = os.path.abspath(src) if os.path.isfile(src) else None
        if self.path is None and ":" not in src:
            raise ValueError("BasicHTTPAuth's auth_source is neither user:password nor a file")
        self.blocking = self.path is not None  # checking a salted hash costs CPU time
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._users: dict[str, PasswordHash] = {}
        self._verified: set[bytes] = set()
        self._cache_key = os.urandom(32)
        if self.path is not None:
            self._load(self.path, starting=True)

    def authenticate(self, headers: Headers, target_host: object, target_port: object) -> None:
        header = headers.get("Authorization")
        if not header:
            raise self.demand_auth("no credentials")
        scheme, _, encoded = header.strip().partition(" ")
        if scheme.lower() != "basic":
            raise AuthenticationError(log_msg="credentials are not Basic", response_code=403)
        try:
            raw = binascii.a2b_base64(encoded.strip().encode("ascii"), strict_mode=True)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            raise AuthenticationError(log_msg="malformed Basic credentials") from None
        try:
            text = raw.decode("utf-8")  # what browsers send (RFC 7617's charset)
        except UnicodeDecodeError:
            text = raw.decode("iso-8859-1")  # websockify's reading
        user, sep, password = text.partition(":")
        if not sep:
            raise AuthenticationError(log_msg="malformed Basic credentials")
        if not self.validate_creds(user, password):
            raise self.demand_auth(f"wrong password or unknown user {user[:NAME_SHOWN]!r}")

    def validate_creds(self, username: str, password: str) -> bool:
        if self.path is None:
            given = f"{username}:{password}".encode()
            return hmac.compare_digest(given, self.src.encode())
        return self._check_file(self.path, username, password)

    def demand_auth(self, log_msg: str) -> AuthenticationError:
        return AuthenticationError(
            log_msg=log_msg,
            response_code=401,
            response_headers={"WWW-Authenticate": f'Basic realm="{self.realm}"'},
        )

    # -- the password file --

    def _check_file(self, path: str, username: str, password: str) -> bool:
        self._refresh(path)
        digest = hmac.new(
            self._cache_key, f"{username}\0{password}".encode(), hashlib.sha256
        ).digest()
        with self._lock:
            if digest in self._verified:
                return True  # a page load asks for every file: one hash check per credential
            hashed = self._users.get(username)
        if hashed is None or not hashed.verify(password):
            return False
        with self._lock:
            if len(self._verified) >= CACHE_SIZE:
                self._verified.clear()
            self._verified.add(digest)
        return True

    def _refresh(self, path: str) -> None:
        try:
            st = os.stat(path)
        except OSError as exc:
            log.warning("password file unreadable, keeping its users file=%s reason=%s", path, exc)
            return
        if (st.st_mtime_ns, st.st_size, st.st_ino) != self._stamp:
            self._load(path, starting=False)

    def _load(self, path: str, *, starting: bool) -> None:
        try:
            with open(path, encoding="utf-8") as f:
                st = os.fstat(f.fileno())
                text = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            if starting:
                raise ConfigError(
                    f"cannot read the password file: {exc}",
                    source=path,
                    key="auth_source",
                    expected="a readable file of user:HASH lines",
                ) from None
            log.warning("password file unreadable, keeping its users file=%s reason=%s", path, exc)
            return
        users, bad = parse_password_file(text)
        for number, why in bad:
            if starting:
                raise ConfigError(
                    f"bad line: {why}",
                    source=path,
                    line=number,
                    key="auth_source",
                    expected="user:HASH, made with python3 -m wsproxy.plugins.passwords USER",
                )
            log.warning("password file line skipped file=%s line=%d reason=%s", path, number, why)
        with self._lock:
            self._users = users
            self._verified = set()
            self._stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if not starting:
            log.info("password file reloaded file=%s users=%d", path, len(users))


class ExpectOrigin:
    """Only the space-separated origins of ``src`` may connect; others get 403."""

    blocking = False

    def __init__(self, src: str | None = None) -> None:
        self.source = src.split() if src else []

    def authenticate(self, headers: Headers, target_host: object, target_port: object) -> None:
        origin = headers.get("Origin")
        if origin is None or origin not in self.source:
            raise InvalidOriginError(expected=self.source, actual=origin)


class ClientCertCNAuth:
    """Only clients whose verified TLS certificate has one of the space-separated common names
    of ``src`` may connect (needs ``verify_client``); others get 403."""

    blocking = False
    needs_client_certificate = True

    def __init__(self, src: str | None = None) -> None:
        self.source = src.split() if src else []

    def authenticate(self, headers: Headers, target_host: object, target_port: object) -> None:
        common_name = headers.get(CLIENT_CN_HEADER)
        if common_name is None:
            raise AuthenticationError(log_msg="no client certificate common name")
        if common_name not in self.source:
            raise AuthenticationError(log_msg=f"client certificate CN {common_name!r} not allowed")
