"""Loading a plug-in the way websockify does: a bare name is a built-in class, a dotted path
``pkg.mod.Class`` a user's own (importable from ``sys.path``, e.g. through ``PYTHONPATH``), and
websockify's own module path (``websockify.auth_plugins.BasicHTTPAuth``) names our built-in.
The class is created once, with the source argument: ``Class(src)``."""

from __future__ import annotations

import importlib
from types import ModuleType

from wsproxy.errors import ConfigError

__all__ = ["load_plugin"]


def load_plugin(
    name: str,
    src: str | None,
    *,
    built_in: ModuleType,
    names: tuple[str, ...],
    websockify_module: str,
    key: str,
) -> object:
    """The plug-in instance. Raises ConfigError naming ``key``; the message never shows
    ``src`` (a source may hold a password)."""
    expected = f"one of {', '.join(names)}, or an importable pkg.module.Class"
    module_name, _, class_name = name.rpartition(".")
    if not module_name or module_name == websockify_module:
        if class_name not in names:
            raise ConfigError(f"unknown plug-in {name!r}", key=key, expected=expected)
        module: ModuleType = built_in
    else:
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # an import runs the user's code: any error says why
            raise ConfigError(
                f"cannot import {module_name!r}: {type(exc).__name__}: {exc}",
                key=key,
                expected=expected,
            ) from None
    cls = getattr(module, class_name, None)
    if not callable(cls):
        raise ConfigError(
            f"{module.__name__} has no class {class_name!r}", key=key, expected=expected
        )
    try:
        return cls(src)
    except ConfigError:
        raise
    except Exception as exc:
        message = str(exc)
        if src and src in message:
            message = message.replace(src, "(hidden)")
        raise ConfigError(
            f"plug-in {name} cannot start: {type(exc).__name__}: {message}",
            key=key,
            expected=f"a source that {class_name} accepts",
        ) from None
