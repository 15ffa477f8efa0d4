"""Loading a plug-in the way websockify does, for both kinds (token and auth plug-ins): a bare
name is a built-in class, a dotted path ``pkg.mod.Class`` a user's own (importable from
``sys.path``, e.g. through ``PYTHONPATH``), and websockify's module path for a built-in
(``websockify.auth_plugins.BasicHTTPAuth``) names ours. The class is created once, with the
source argument: ``Class(src)``."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from wsproxy.errors import ConfigError

__all__ = ["PluginKind", "class_says", "load_plugin", "plugin_class"]

MIN_HIDDEN = 3  # shorter source fields stay in an error's text (hiding them would hide too much)


@dataclass(frozen=True)
class PluginKind:
    """What one kind of plug-in is called, which settings name it, and its built-ins."""

    what: str  # "token plug-in", as messages say it
    key: str  # the setting that names the class
    source_key: str  # the setting that holds its argument
    built_in: Mapping[str, tuple[str, str | None]]  # name -> (module, the pip extra it needs)
    websockify_module: str  # websockify's module of the same built-ins

    @property
    def expected(self) -> str:
        return f"one of {', '.join(self.built_in)}, or a dotted path pkg.module.Class"


def load_plugin(kind: PluginKind, name: str, source: str | None) -> Any:
    """``Class(source)`` for a built-in name or a dotted path. Raises ConfigError naming the
    setting; the message never shows ``source`` (a source may hold a password)."""
    cls = plugin_class(kind, name)
    try:
        return cls(source)
    except ConfigError:
        raise
    except (Exception, SystemExit) as exc:  # a websockify-style plug-in may sys.exit() on bad input
        message = _hide(str(exc), source)
        raise ConfigError(
            f"plug-in {name} refused its source: {type(exc).__name__}: {message}",
            source="command line",
            key=kind.source_key,
            expected=f"the argument {name} takes",
        ) from None


def _hide(text: str, source: str | None) -> str:
    """``text`` without the source or any of its colon-separated fields (websockify's plug-ins
    split it so): an error often repeats them, and a source may hold a password."""
    if not source:
        return text
    for part in sorted({source, *source.split(":")}, key=len, reverse=True):
        if len(part) >= MIN_HIDDEN:
            text = text.replace(part, "(hidden)")
    return text


def class_says(kind: PluginKind, name: str | None, attribute: str) -> bool:
    """Whether the plug-in class ``name`` has ``attribute = True`` (such as ``SOURCE_IS_PATH``).
    A plug-in that does not load is False here; loading it later says why."""
    if name is None:
        return False
    try:
        cls = plugin_class(kind, name)
    except ConfigError:
        return False
    return getattr(cls, attribute, False) is True


def plugin_class(kind: PluginKind, name: str) -> Any:
    """The class a plug-in name stands for, imported; raises ConfigError naming the setting."""
    prefix = kind.websockify_module + "."
    if name.startswith(prefix) and name[len(prefix) :] in kind.built_in:
        name = name[len(prefix) :]
    if name in kind.built_in:
        module_name, extra = kind.built_in[name]
        attribute = name
    elif "." in name.strip(".") and " " not in name:
        module_name, _, attribute = name.rpartition(".")
        extra = None
    else:
        raise ConfigError(
            f"unknown {kind.what} {name!r}",
            source="command line",
            key=kind.key,
            expected=kind.expected,
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        needs = f"; pip install wsproxy[{extra}]" if extra else ""
        raise ConfigError(
            f"cannot load {kind.what} {name}: {exc}{needs}",
            source="command line",
            key=kind.key,
            expected=kind.expected if not extra else f"the {extra} extra installed",
        ) from None
    except Exception as exc:  # the user's module failed while it was imported
        raise ConfigError(
            f"cannot load {kind.what} {name}: {type(exc).__name__}: {exc}",
            source="command line",
            key=kind.key,
            expected="a module that imports",
        ) from None
    cls = getattr(module, attribute, None)
    if not callable(cls):
        raise ConfigError(
            f"module {module_name} has no class {attribute}",
            source="command line",
            key=kind.key,
            expected=kind.expected,
        )
    return cls
