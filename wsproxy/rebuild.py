"""What a reload builds for the next sessions: the auth and token plug-ins, the TLS context and
web root, the trusted proxies, the recordings.

Building may block for long (a plug-in's constructor connects somewhere, a big token file, a key
file on a slow disk), so :mod:`wsproxy.reload` runs :func:`rebuild` in a thread, off the hub,
and the server switches to the result on the hub, in one step, only once all of it is built.
Nothing here changes the running server.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from wsproxy.auth import Authenticator
from wsproxy.errors import ConfigError
from wsproxy.frontdoor import FrontDoor
from wsproxy.protocol.forwarded import TrustedProxies
from wsproxy.record import Recordings
from wsproxy.settings import Settings
from wsproxy.targets import Targets

__all__ = ["Rebuilt", "rebuild", "trusted_proxies"]


@dataclass(frozen=True)
class Rebuilt:
    """The parts the next sessions use, built from ``settings``."""

    settings: Settings
    auth: Authenticator | None
    frontdoor: FrontDoor
    trusted_proxies: TrustedProxies
    targets: Targets
    recordings: Recordings | None


def rebuild(
    settings: Settings,
    make_targets: Callable[[Settings], Targets],
    current: Settings,
    recordings: Recordings | None,
    step: Callable[[str], None] | None = None,
) -> Rebuilt:
    """Build every part from ``settings`` (``recordings`` is kept while ``record`` is unchanged:
    its file counter goes on); raises ConfigError. ``step`` is told what is being built next, so
    that a build that does not finish in time can be named."""
    step = step or _ignore
    auth = None
    if settings.auth_plugin:
        step(f"auth plug-in {settings.auth_plugin}")
        auth = Authenticator(settings)  # its source again
    web_auth = auth.check_web if auth is not None and settings.web_auth else None
    step("the certificate, key, CA files and web root")
    frontdoor = FrontDoor(settings, web_auth=web_auth)
    trusted = trusted_proxies(settings)
    step(f"token plug-in {settings.token_plugin}" if settings.token_plugin else "the target")
    targets = make_targets(settings)
    if settings.record != current.record:
        recordings = Recordings(settings.record) if settings.record else None
    return Rebuilt(settings, auth, frontdoor, trusted, targets, recordings)


def _ignore(step: str) -> None:
    pass


def trusted_proxies(settings: Settings) -> TrustedProxies:
    try:
        return TrustedProxies(settings.trusted_proxies)
    except ValueError as exc:
        raise ConfigError(
            str(exc), key="trusted_proxies", expected="addresses or CIDR networks"
        ) from None
