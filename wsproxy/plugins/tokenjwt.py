"""websockify's ``JWTTokenApi``: the token is a JWT that carries its own target.

The source is a key file: a PEM key (RSA or EC; a private key both decrypts and verifies), or
else a symmetric key, the file's text being the key's base64url ``k`` as in websockify. A
signed token (JWS) must verify with it; an encrypted one (JWE) is decrypted with it and holds a
signed token, or its claims directly. The claims ``host`` and ``port`` name the target; ``nbf``
and ``exp``, when present, are honoured to the second, with no leeway. A token that fails any
check is "not found" (404) and the reason is logged.
"""

from __future__ import annotations

import json
import logging
import re
import time

from jwcrypto import jwk, jwt
from jwcrypto.common import JWException

from wsproxy.errors import ConfigError

__all__ = ["MAX_KEY_FILE", "JWTTokenApi"]

log = logging.getLogger(__name__)

MAX_KEY_FILE = 64 * 1024
BASE64URL = re.compile(rb"[A-Za-z0-9_-]+")
KEY_FORM = "a PEM key file, or a file holding a symmetric key in base64url"


class JWTTokenApi:
    """Targets from the claims of a signed or encrypted JWT; the key file is read at start
    and on SIGHUP."""

    SOURCE_IS_PATH = True  # a daemon makes a relative key file absolute

    def __init__(self, source: str | None) -> None:
        if not source:
            raise ConfigError(
                "JWTTokenApi needs a key file",
                source="command line",
                key="token_source",
                expected=KEY_FORM,
            )
        self.source = source
        self.key = self._read_key()

    def reload(self) -> None:
        self.key = self._read_key()

    def describe(self) -> str:
        return f"by JWT token, key {self.source}"

    def _read_key(self) -> jwk.JWK:
        try:
            with open(self.source, "rb") as f:
                data = f.read(MAX_KEY_FILE)
        except OSError as exc:
            raise ConfigError(
                f"cannot read key file: {exc.strerror}",
                source=self.source,
                key="token_source",
                expected=KEY_FORM,
            ) from None
        try:
            return jwk.JWK.from_pem(data)
        except (ValueError, TypeError, JWException):
            pass
        text = data.strip()
        try:
            if not BASE64URL.fullmatch(text):
                raise ValueError("not base64url")
            return jwk.JWK(kty="oct", k=text.decode("ascii"))
        except (ValueError, TypeError, JWException):
            raise ConfigError(
                "key file holds neither a PEM key nor a symmetric key",
                source=self.source,
                key="token_source",
                expected=KEY_FORM,
            ) from None

    def lookup(self, token: str) -> object:
        try:
            claims = self._claims(token)
            not_before, expires = _time(claims, "nbf"), _time(claims, "exp")
        except (ValueError, TypeError, KeyError, JWException) as exc:
            log.warning("JWT token refused: %s: %s", type(exc).__name__, exc)
            return None
        now = time.time()
        if not_before is not None and now < not_before:
            log.warning("JWT token refused: not valid before %s", not_before)
            return None
        if expires is not None and now > expires:
            log.warning("JWT token refused: expired at %s", expires)
            return None
        if "host" not in claims or "port" not in claims:
            log.warning("JWT token refused: no host and port claims")
            return None
        return (claims["host"], claims["port"])

    def _claims(self, token: str) -> dict[str, object]:
        """The verified claims (``nbf`` and ``exp`` are checked by the caller, strictly)."""
        kind = "JWE" if token.count(".") == 4 else "JWS"  # compact forms: 5 parts or 3
        outer = jwt.JWT(jwt=token, key=self.key, check_claims=False, expected_type=kind)
        text = outer.claims
        if kind == "JWE" and not text.lstrip().startswith("{"):
            inner = jwt.JWT(jwt=text, key=self.key, check_claims=False, expected_type="JWS")
            text = inner.claims
        claims = json.loads(text)
        if not isinstance(claims, dict):
            raise ValueError("the claims are not a JSON object")
        return claims


def _time(claims: dict[str, object], name: str) -> float | None:
    """A NumericDate claim (seconds since the epoch), None if absent; ValueError if no number."""
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"claim {name} is not a number")
    return float(value)
