"""websockify's ``TokenRedis``: the target of a token is the value of a Redis key.

The source is ``host[:port[:db[:password[:namespace]]]]`` (port 6379 and db 0 when left
empty); a field may be double-quoted to hold colons (``h::::"app:vnc"``). The key is
``namespace:token`` (or the bare token); its value is ``{"host": "host:port"}`` or
``host:port``. Redis is asked with socket timeouts, in a lookup thread; an error reaching it is
a failed lookup (502), a missing key "not found" (404). The password is never logged.
"""

from __future__ import annotations

import json
import logging

import redis

from wsproxy.errors import ConfigError
from wsproxy.plugins.tokentext import parse_source_args
from wsproxy.settings.values import Address, parse_target

__all__ = ["REDIS_TIMEOUT", "TokenRedis"]

log = logging.getLogger(__name__)

REDIS_TIMEOUT = 5.0  # seconds to connect to Redis, and for one answer
SOURCE_FORM = 'host[:port[:db[:password[:namespace]]]], a field with colons in "double quotes"'


class TokenRedis:
    """Targets stored in Redis, one key per token."""

    def __init__(self, source: str | None) -> None:
        fields = parse_source_args(source or "")
        try:
            if not 1 <= len(fields) <= 5 or not fields[0]:
                raise ValueError
            host, port, db, password, namespace = fields + [""] * (5 - len(fields))
            self.host, self.port, self.db = host, int(port or 6379), int(db or 0)
            if not 0 < self.port < 65536 or self.db < 0:
                raise ValueError
        except ValueError:
            # The source is not shown: it may hold the password.
            raise ConfigError(
                "bad TokenRedis source",
                source="command line",
                key="token_source",
                expected=SOURCE_FORM,
            ) from None
        self.namespace = f"{namespace}:" if namespace else ""
        self.client = redis.Redis(
            host=self.host,
            port=self.port,
            db=self.db,
            password=password or None,
            socket_timeout=REDIS_TIMEOUT,
            socket_connect_timeout=REDIS_TIMEOUT,
        )

    def describe(self) -> str:
        namespace = f" namespace {self.namespace[:-1]}" if self.namespace else ""
        return f"by token from redis {self.host}:{self.port} db {self.db}{namespace}"

    def lookup(self, token: str) -> Address | None:
        value = self.client.get(self.namespace + token)
        if value is None:
            return None
        text = (value.decode("utf-8", "replace") if isinstance(value, bytes) else value).strip()
        try:
            if text.startswith("{"):
                target = json.loads(text)["host"]
                if not isinstance(target, str):
                    raise TypeError
            else:
                target = text
            return parse_target(target)
        except (ValueError, KeyError, TypeError):
            raise ValueError(
                f"key {self.namespace + token!r}: bad value {text[:80]!r} "
                '(expected {"host": "host:port"} or host:port)'
            ) from None
