"""A row of the settings table, and the helper that declares one as a dataclass field."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from wsproxy.settings.values import format_value

__all__ = ["Setting", "declare", "rows_of"]


@dataclass(frozen=True)
class Setting:
    """One row of the table, derived from a :class:`~wsproxy.settings.Settings` field.

    ``restart``: a running process cannot take a new value (SIGHUP keeps the old one and says
    the change needs a restart). ``secret``: never written to a log or to ``--help``'s defaults.
    """

    name: str
    default: Any
    parse: Callable[[str], Any]
    expected: str
    help: str
    flag: str | None
    short: str | None
    meta: str | None
    ini: bool
    restart: bool
    secret: bool

    @property
    def is_bool(self) -> bool:
        return self.meta is None and self.flag is not None

    def format_default(self) -> str:
        return format_value(self.default)


def declare(
    default: Any,
    parse: Callable[[str], Any],
    expected: str,
    help: str,
    *,
    flag: str | None = "",
    short: str | None = None,
    meta: str | None = None,
    ini: bool = True,
    restart: bool = False,
    secret: bool = False,
) -> Any:
    """Declare a field of :class:`~wsproxy.settings.Settings` together with its row.

    ``flag=""`` derives ``--name-with-dashes``; ``flag=None`` means no option (positional or
    INI-only). ``meta=None`` makes a boolean switch; a switch whose default is true is spelled
    ``--no-NAME`` on the command line.
    """
    metadata = {
        "parse": parse,
        "expected": expected,
        "help": help,
        "flag": flag,
        "short": short,
        "meta": meta,
        "ini": ini,
        "restart": restart,
        "secret": secret,
    }
    return field(default=default, metadata=metadata)


def rows_of(fields: Iterable[dataclasses.Field[Any]]) -> dict[str, Setting]:
    rows = {}
    for f in fields:
        m = f.metadata
        flag = m["flag"]
        if flag == "":
            prefix = "--no-" if f.default is True and m["meta"] is None else "--"
            flag = prefix + f.name.replace("_", "-")
        rows[f.name] = Setting(
            name=f.name, default=f.default, **{k: m[k] for k in m if k != "flag"}, flag=flag
        )
    return rows
