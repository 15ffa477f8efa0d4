"""Reading the ``[wsproxy]`` section of an INI file into key -> (text, line number)."""

from __future__ import annotations

import configparser

from wsproxy.errors import ConfigError

__all__ = ["SECTION", "read_ini"]

SECTION = "wsproxy"


def read_ini(text: str, source: str) -> dict[str, tuple[str, int]]:
    """Read the ``[wsproxy]`` section: key -> (value text, line number).

    Raises :class:`ConfigError` for a syntax error or a missing section.
    """
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=("#", ";"))
    parser.optionxform = str  # type: ignore[assignment, method-assign]
    try:
        parser.read_string(text, source=source)
    except configparser.Error as exc:
        line: int | None = getattr(exc, "lineno", None)
        message = str(exc).splitlines()[0]
        # First: a MissingSectionHeaderError is a ParsingError without ``errors``.
        if isinstance(exc, configparser.MissingSectionHeaderError):
            message = "a key before any [section] header"
        elif isinstance(exc, configparser.ParsingError) and exc.errors:
            line, bad = exc.errors[0]
            message = f"cannot parse {bad.strip()!r}"
        raise ConfigError(
            message,
            source=source,
            line=line,
            expected="INI syntax: [wsproxy] then key = value lines",
        ) from None
    if not parser.has_section(SECTION):
        raise ConfigError(
            f"no [{SECTION}] section", source=source, expected=f"a [{SECTION}] section"
        )
    lines = _key_lines(text)
    return {
        key.replace("-", "_"): (value, lines.get(key, 0)) for key, value in parser.items(SECTION)
    }


def _key_lines(text: str) -> dict[str, int]:
    """Line numbers of keys in the [wsproxy] section, so messages can point at them."""
    found: dict[str, int] = {}
    in_section = False
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line.startswith("["):
            in_section = line.split("]")[0][1:].strip() == SECTION
        elif in_section and line and line[0] not in "#;" and not raw[0].isspace():
            key = line.split("=", 1)[0].split(":", 1)[0].strip()
            found.setdefault(key, number)
    return found
