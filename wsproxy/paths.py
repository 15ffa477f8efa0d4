"""Relative paths in the settings, resolved against the directory wsproxy was started in.

They are resolved once, by joining, never by changing the process's directory: that is shared by
every greenlet and thread (a session opening a file, a reload building plug-ins in a thread), and
a daemon has left it for ``/``. Start-up and SIGHUP resolve the same way, so a relative path means
the same file for the life of the process.
"""

from __future__ import annotations

import os

from wsproxy.plugins.auth import AUTH_PLUGINS
from wsproxy.plugins.loader import class_says
from wsproxy.plugins.tokens import source_is_path
from wsproxy.settings import DEFAULT_CERT, SETTINGS, Settings, parse_path

__all__ = ["absolute_paths", "resolve"]

# An auth plug-in class with this True takes a source naming an existing file as that file.
FILE_SOURCE = "SOURCE_MAY_BE_FILE"


def resolve(path: str, base: str | None = None) -> str:
    """``path`` made absolute against ``base`` (default: the current directory), normalized as
    :func:`os.path.abspath` does."""
    return os.path.normpath(os.path.join(base if base is not None else os.getcwd(), path))


def absolute_paths(settings: Settings, base: str | None = None) -> Settings:
    """The settings with every path (every setting parsed by ``parse_path``) made absolute
    against ``base`` (default: the current directory); so is a token source that names a file
    (the plug-in says so) and an auth source naming a file where the plug-in reads one.

    websockify's default certificate, ``self.pem``, is used only if it exists: where it does not,
    ``cert`` becomes None (no TLS), decided here, against ``base``, and not later against the
    process's current directory.
    """
    changes: dict[str, str | None] = {
        row.name: resolve(value, base)
        for row in SETTINGS
        if row.parse is parse_path and isinstance(value := getattr(settings, row.name), str)
    }
    if settings.cert == DEFAULT_CERT and not os.path.exists(resolve(DEFAULT_CERT, base)):
        changes["cert"] = None
    if settings.token_source and source_is_path(settings.token_plugin):
        changes["token_source"] = resolve(settings.token_source, base)
    if settings.auth_source and class_says(AUTH_PLUGINS, settings.auth_plugin, FILE_SOURCE):
        path = resolve(settings.auth_source, base)
        if os.path.isfile(path):
            changes["auth_source"] = path
    return settings.replace(**changes) if changes else settings
