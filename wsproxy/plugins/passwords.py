"""Salted password hashes for ``BasicHTTPAuth``'s password file (an extra of ours: websockify
only compares a ``user:pass`` source in clear).

A line is ``user:HASH``, one of

* ``$scrypt$ln=14,r=8,p=1$SALT$KEY`` (what :func:`make_hash` writes), or
* ``$pbkdf2-sha256$ITERATIONS$SALT$KEY``,

with SALT and KEY in unpadded base64. Both come from :mod:`hashlib`, so nothing is installed.
Create a line with ``python3 -m wsproxy.plugins.passwords USER >> FILE`` (it asks for the
password twice, or reads one line from a pipe).
"""

from __future__ import annotations

import base64
import binascii
import getpass
import hashlib
import hmac
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["PasswordHash", "make_hash", "parse_hash", "parse_password_file"]

SCRYPT_LOG_N = 14  # 2**14 rounds, r=8: 16 MiB and about 50 ms per check
SCRYPT_MAX_MEMORY = 256 << 20  # a hash asking for more memory per check is refused
PBKDF2_MAX_ITERATIONS = 10_000_000
SALT_BYTES = 16
KEY_BYTES = 32


@dataclass(frozen=True)
class PasswordHash:
    """One parsed hash; :meth:`verify` recomputes it for a candidate password."""

    scheme: str  # "scrypt" or "pbkdf2-sha256"
    cost: tuple[int, ...]  # (log2 n, r, p) or (iterations,)
    salt: bytes
    key: bytes

    def verify(self, password: str) -> bool:
        return hmac.compare_digest(self._derive(password.encode("utf-8")), self.key)

    def _derive(self, password: bytes) -> bytes:
        if self.scheme == "scrypt":
            log_n, r, p = self.cost
            n = 1 << log_n
            return hashlib.scrypt(
                password,
                salt=self.salt,
                n=n,
                r=r,
                p=p,
                maxmem=128 * r * (n + p + 2) + (1 << 20),
                dklen=len(self.key),
            )
        return hashlib.pbkdf2_hmac("sha256", password, self.salt, self.cost[0], len(self.key))


def make_hash(password: str, *, log_n: int = SCRYPT_LOG_N) -> str:
    """A new scrypt hash of ``password`` with a random salt, in the file's form."""
    salt = os.urandom(SALT_BYTES)
    hashed = PasswordHash("scrypt", (log_n, 8, 1), salt, b"\0" * KEY_BYTES)
    key = hashed._derive(password.encode("utf-8"))
    return f"$scrypt$ln={log_n},r=8,p=1${_b64(salt)}${_b64(key)}"


def parse_hash(text: str) -> PasswordHash:
    """Parse one ``$scheme$...`` hash; raises ValueError saying what is wrong (never the hash)."""
    parts = text.split("$")
    if len(parts) != 5 or parts[0]:
        raise ValueError("not a $scheme$cost$salt$key hash")
    _, scheme, cost_text, salt_text, key_text = parts
    salt, key = _unb64(salt_text), _unb64(key_text)
    if not salt or len(key) < 16:
        raise ValueError("salt or key too short")
    if scheme == "scrypt":
        fields = dict(item.partition("=")[::2] for item in cost_text.split(","))
        try:
            cost = (int(fields["ln"]), int(fields["r"]), int(fields["p"]))
        except (KeyError, ValueError):
            raise ValueError("scrypt cost is not ln=N,r=N,p=N") from None
        log_n, r, p = cost
        if not (1 <= log_n <= 30 and 1 <= r <= 64 and 1 <= p <= 16) or (
            128 * r << log_n > SCRYPT_MAX_MEMORY
        ):
            raise ValueError("scrypt cost out of range")
        return PasswordHash(scheme, cost, salt, key)
    if scheme == "pbkdf2-sha256":
        if not cost_text.isdigit() or not 1 <= int(cost_text) <= PBKDF2_MAX_ITERATIONS:
            raise ValueError("pbkdf2 iterations are not a number in range")
        return PasswordHash(scheme, (int(cost_text),), salt, key)
    raise ValueError(f"unknown scheme {scheme[:20]!r} (scrypt or pbkdf2-sha256)")


def parse_password_file(text: str) -> tuple[dict[str, PasswordHash], list[tuple[int, str]]]:
    """``user:HASH`` lines (``#`` comments, blank lines) -> the table and the bad lines as
    ``(line number, why)``; the reason never quotes the line, which holds a hash."""
    table: dict[str, PasswordHash] = {}
    bad: list[tuple[int, str]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        if not sep or not user:
            bad.append((number, "not user:HASH"))
            continue
        try:
            table[user] = parse_hash(hashed)
        except ValueError as exc:
            bad.append((number, str(exc)))
    return table, bad


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("salt or key is not base64") from None


def main(argv: Sequence[str] | None = None) -> int:
    """``python3 -m wsproxy.plugins.passwords USER``: print ``USER:HASH`` for a password file."""
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) != 1 or ":" in args[0] or not args[0]:
        print("usage: python3 -m wsproxy.plugins.passwords USER  (no ':' in USER)", file=sys.stderr)
        return 2
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("the passwords differ", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        print("empty password", file=sys.stderr)
        return 1
    print(f"{args[0]}:{make_hash(password)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
