"""Token plug-ins behind :class:`wsproxy.targets.Lookup`: load one by name, and ask it for a
client's target without blocking the hub.

A plug-in has websockify's signature: ``Class(source)``, and ``lookup(token)`` returning
``(host, port)``, ``["unix_socket", path]`` or None. ``lookup`` may block (websockify's own
plug-ins do HTTP and Redis calls), so it runs in a thread pool of its own, with a timeout; the
pool is not the hub's, whose threads resolve target names and must not wait behind a stuck
lookup. Built-in plug-ins may also have ``reload()`` (SIGHUP) and ``describe()`` (the start-up
log line; it never shows a password).
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from wsproxy.errors import ConfigError, HandshakeError
from wsproxy.offhub import OffHub, TimedOut
from wsproxy.plugins.loader import PluginKind, class_says, load_plugin
from wsproxy.plugins.tokentext import as_target, token_of
from wsproxy.protocol.handshake import Request
from wsproxy.settings import Settings
from wsproxy.targets import Target

__all__ = [
    "BUILTINS",
    "LOOKUP_THREADS",
    "TOKEN_PLUGINS",
    "PluginLookup",
    "load_lookup",
    "source_is_path",
]

log = logging.getLogger(__name__)

LOOKUP_THREADS = 16  # lookups at once; more wait (within their timeout) for a free thread
# Built-in plug-ins: name -> (module, the pip extra its library comes with).
BUILTINS: dict[str, tuple[str, str | None]] = {
    "TokenFile": ("wsproxy.plugins.tokenfile", None),
    "ReadOnlyTokenFile": ("wsproxy.plugins.tokenfile", None),
    "TokenFileName": ("wsproxy.plugins.tokenfile", None),
    "UnixDomainSocketDirectory": ("wsproxy.plugins.tokenfile", None),
    "BaseTokenAPI": ("wsproxy.plugins.tokenapi", None),
    "JSONTokenApi": ("wsproxy.plugins.tokenapi", None),
    "JWTTokenApi": ("wsproxy.plugins.tokenjwt", "jwt"),
    "TokenRedis": ("wsproxy.plugins.tokenredis", "redis"),
}
TOKEN_PLUGINS = PluginKind(
    "token plug-in", "token_plugin", "token_source", BUILTINS, "websockify.token_plugins"
)


def load_lookup(settings: Settings) -> PluginLookup:
    """The settings' token plug-in, created; raises ConfigError (exit 2) naming the key."""
    assert settings.token_plugin is not None
    plugin = load_plugin(TOKEN_PLUGINS, settings.token_plugin, settings.token_source)
    return PluginLookup(
        plugin,
        settings.token_plugin,
        host_token=settings.host_token,
        timeout=settings.connect_timeout,
    )


def source_is_path(name: str | None) -> bool:
    """Whether the token plug-in's source names a file or directory (its class says so with
    ``SOURCE_IS_PATH``), so that a relative one is made absolute against the start directory."""
    return class_says(TOKEN_PLUGINS, name, "SOURCE_IS_PATH")


class PluginLookup:
    """A :class:`wsproxy.targets.Lookup` that asks a token plug-in, off the hub.

    Answers: no token 400, ``lookup`` returned None 404; it raised, returned something that is
    no target, or took longer than ``timeout`` 502. Each 502 is logged with the plug-in's reason.
    """

    def __init__(self, plugin: Any, name: str, *, host_token: bool, timeout: float) -> None:
        self.plugin = plugin
        self.name = name
        self.host_token = host_token
        self.timeout = timeout
        self.pool = OffHub(LOOKUP_THREADS)

    def find(self, request: Request) -> Target:
        token = token_of(request, host_token=self.host_token)
        if token is None:
            where = "a Host header" if self.host_token else "?token=NAME in the URL"
            raise HandshakeError(HTTPStatus.BAD_REQUEST, f"missing token (send {where})")
        shown = repr(token[:64])
        try:
            # One deadline for both waits: for a free thread and for the answer.
            result = self.pool.call(self.timeout, self.plugin.lookup, token)
        except TimedOut:
            log.error(
                "token lookup timed out plugin=%s token=%s after=%gs",
                self.name,
                shown,
                self.timeout,
            )
            raise HandshakeError(
                HTTPStatus.BAD_GATEWAY, f"token lookup timed out after {self.timeout:g} s"
            ) from None
        except Exception as exc:
            log.error(
                "token lookup failed plugin=%s token=%s: %s: %s",
                self.name,
                shown,
                type(exc).__name__,
                exc,
            )
            raise HandshakeError(HTTPStatus.BAD_GATEWAY, "token lookup failed") from None
        try:
            target = as_target(result)
        except ValueError as exc:
            log.error("token lookup gave no target plugin=%s token=%s: %s", self.name, shown, exc)
            raise HandshakeError(HTTPStatus.BAD_GATEWAY, "token lookup gave a bad target") from None
        if target is None:
            raise HandshakeError(HTTPStatus.NOT_FOUND, f"unknown token {shown}")
        return target

    def reload(self) -> None:
        """SIGHUP: the plug-in's ``reload()``, off the hub like a lookup (it may wait for a
        lock the lookups hold, or for I/O) and within the same timeout; raises ConfigError."""
        reload = getattr(self.plugin, "reload", None)
        if not callable(reload):
            return
        try:
            self.pool.call(self.timeout, reload)
        except TimedOut:
            raise ConfigError(
                f"plug-in {self.name} did not reload within {self.timeout:g} s",
                source="SIGHUP",
                key="token_source",
                expected="a reload within connect_timeout",
            ) from None

    def describe(self) -> str:
        describe = getattr(self.plugin, "describe", None)
        return describe() if callable(describe) else f"by token with {self.name}"
