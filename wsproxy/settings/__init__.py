"""The one settings table.

Each setting is declared once, as a field of :class:`Settings` whose metadata says its command-line
flag, its value's form and its help. From that single declaration come the docopt usage text, the
INI file keys (``[wsproxy]`` section, keys are the long option names with ``_``), validation with
messages that name the source and key, ``--help`` and the example file.

The table is long, so its fields live in groups (:mod:`.connection`, :mod:`.security`,
:mod:`.process`) that :class:`Settings` combines. Standard library only, no I/O but reading
the INI text it is given.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from wsproxy.errors import ConfigError
from wsproxy.settings.connection import ConnectionSettings
from wsproxy.settings.ini import SECTION, read_ini
from wsproxy.settings.process import WRAP_MODES, ProcessSettings
from wsproxy.settings.rows import Setting, rows_of
from wsproxy.settings.security import DEFAULT_CERT, SSL_VERSIONS, SecuritySettings
from wsproxy.settings.values import (
    Address,
    format_address,
    format_value,
    parse_address,
    parse_path,
    parse_positive_seconds,
    parse_text,
)

__all__ = [
    "DEFAULT_CERT",
    "SECTION",
    "SETTINGS",
    "SETTINGS_BY_NAME",
    "SSL_VERSIONS",
    "TARGET_SETTINGS",
    "WRAP_MODES",
    "Address",
    "Setting",
    "Settings",
    "format_address",
    "format_value",
    "parse_address",
    "parse_path",
    "read_ini",
]

# The ways to choose the target; one of them, except that a wrapped program may serve the
# unix_target socket (``--unix-target PATH PORT -- PROGRAM``).
TARGET_SETTINGS = ("target", "unix_target", "token_plugin", "wrap")

# websockify's "X needs Y" rules: (setting, the one it needs).
NEEDS = (
    ("host_token", "token_plugin"),
    ("auth_source", "auth_plugin"),
    ("web_auth", "auth_plugin"),
    ("web_auth", "web"),
    ("legacy_syslog", "syslog"),
    ("unix_listen_mode", "unix_listen"),
    ("target_cafile", "ssl_target"),
    ("target_insecure", "ssl_target"),
)


@dataclass(frozen=True)
class Settings(ProcessSettings, SecuritySettings, ConnectionSettings):
    """Immutable, validated configuration, passed down to every part of the proxy."""

    def __post_init__(self) -> None:
        # Library callers may pass text forms (``listen="127.0.0.1:6080"``); parse them here
        # so that every instance holds typed values.
        for row in SETTINGS_BY_NAME.values():
            value = getattr(self, row.name)
            if isinstance(value, str) and row.parse not in (parse_text, parse_path):
                object.__setattr__(self, row.name, _parse(row, value, "arguments", None))
            elif isinstance(value, list):
                object.__setattr__(self, row.name, tuple(value))
            elif row.parse is parse_positive_seconds:  # a number from a library caller
                _parse(row, str(value), "arguments", None)

    # -- constructors --

    @classmethod
    def create(cls, **values: Any) -> Settings:
        """Build from Python values (text forms are parsed too); unknown names are refused."""
        unknown = sorted(set(values) - set(SETTINGS_BY_NAME))
        if unknown:
            raise ConfigError(
                "unknown setting",
                source="arguments",
                key=unknown[0],
                expected="one of " + ", ".join(SETTINGS_BY_NAME),
            )
        return cls(**values).checked("arguments")

    @classmethod
    def load(
        cls,
        *,
        ini: Mapping[str, tuple[str, int]] | None = None,
        ini_source: str = "",
        cli: Mapping[str, Any] | None = None,
    ) -> Settings:
        """Merge an INI section (text values with line numbers) and command-line values.

        Command-line values override the file. Raises :class:`ConfigError` naming the source,
        key and expected form.
        """
        values: dict[str, Any] = {}
        for key, (text, line) in (ini or {}).items():
            row = SETTINGS_BY_NAME.get(key)
            if row is None or not row.ini:
                raise ConfigError(
                    "unknown key",
                    source=ini_source,
                    key=key,
                    line=line,
                    expected="one of " + ", ".join(n for n, r in SETTINGS_BY_NAME.items() if r.ini),
                )
            values[key] = _parse(row, text, ini_source, line)
        for key, value in (cli or {}).items():
            row = SETTINGS_BY_NAME[key]
            values[key] = (
                _parse(row, value, "command line", None) if isinstance(value, str) else value
            )
        return cls(**values).checked(ini_source or "command line")

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def checked(self, source: str) -> Settings:
        """Cross-setting rules; raises :class:`ConfigError`. Returns the settings with the
        aliases resolved (``target_config``; ``token_source`` alone means TokenFile)."""
        settings = self
        if settings.target_config:
            if settings.token_plugin or settings.token_source:
                raise _conflict(source, "target_config", "token_plugin and token_source")
            settings = settings.replace(
                token_plugin="TokenFile", token_source=settings.target_config, target_config=None
            )
        if settings.token_source and not settings.token_plugin:
            settings = settings.replace(token_plugin="TokenFile")
        if settings.listen is None and not (settings.inetd or settings.unix_listen):
            raise ConfigError(
                "no listen address given", source=source, key="listen", expected="[ADDR:]PORT"
            )
        listens = [n for n in ("listen", "unix_listen", "inetd") if getattr(settings, n)]
        if len(listens) > 1:
            raise _conflict(source, listens[1], listens[0])
        targets = [n for n in TARGET_SETTINGS if getattr(settings, n)]
        if targets == ["unix_target", "wrap"]:
            targets = ["wrap"]  # the program serves the socket we relay to
        if len(targets) > 1:
            raise ConfigError(
                "give one of target, unix_target, token_plugin and wrap, "
                f"not {' and '.join(targets)}",
                source=source,
                key=targets[1],
                expected="a single way to choose the target",
            )
        if not targets:
            raise ConfigError(
                "no target given",
                source=source,
                key="target",
                expected="HOST:PORT, or a program to wrap after --",
            )
        single = [n for n in ("run_once", "timeout", "idle_timeout") if getattr(settings, n)]
        if single and settings.workers > 1:
            raise ConfigError(
                f"{single[0]} ends one process, and workers is {settings.workers}",
                source=source,
                key=single[0],
                expected="workers = 1 with run_once, timeout and idle_timeout",
            )
        for name, needed in NEEDS:
            if getattr(settings, name) not in (None, False) and not getattr(settings, needed):
                raise ConfigError(
                    f"{name} needs {needed}",
                    source=source,
                    key=name,
                    expected=f"{needed} set too",
                )
        return settings


def _conflict(source: str, key: str, other: str) -> ConfigError:
    return ConfigError(
        f"{key} and {other} exclude each other",
        source=source,
        key=key,
        expected="one of them",
    )


def _parse(row: Setting, text: str, source: str, line: int | None) -> Any:
    try:
        return row.parse(text)
    except ValueError:
        shown = "(hidden)" if row.secret else repr(text)
        raise ConfigError(
            f"bad value {shown}", source=source, key=row.name, line=line, expected=row.expected
        ) from None


SETTINGS_BY_NAME: dict[str, Setting] = rows_of(dataclasses.fields(Settings))
SETTINGS: tuple[Setting, ...] = tuple(SETTINGS_BY_NAME.values())
