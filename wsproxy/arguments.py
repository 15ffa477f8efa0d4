"""The command line's words: the usage text built from the settings table, and argv (with the
INI file it names) -> validated :class:`~wsproxy.settings.Settings`, positional arguments
assigned as websockify assigns them."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence
from typing import Any

from docopt import DocoptExit, docopt

from wsproxy import __version__
from wsproxy.errors import ConfigError
from wsproxy.settings import SETTINGS, SETTINGS_BY_NAME, Setting, Settings, read_ini

__all__ = ["build_usage", "parse_args"]


USAGE_HEAD = """\
wsproxy {version}: a WebSockets-to-TCP proxy, command-line compatible with websockify.

Usage:
  wsproxy [options] [<arg>...]
  wsproxy (-h | --help)
  wsproxy --version

The <arg>s take websockify's forms:
  wsproxy [options] [SOURCE_ADDR:]SOURCE_PORT TARGET_ADDR:TARGET_PORT
  wsproxy [options] --token-plugin CLASS [--token-source ARG] [SOURCE_ADDR:]SOURCE_PORT
  wsproxy [options] --unix-target FILE [SOURCE_ADDR:]SOURCE_PORT
  wsproxy [options] [SOURCE_ADDR:]SOURCE_PORT -- WRAP_COMMAND_LINE
  wsproxy [options] (--unix-listen FILE | --inetd) TARGET_ADDR:TARGET_PORT
  wsproxy record (show | stats) FILE
SOURCE_PORT alone listens on every address, IPv4 and IPv6; addresses are written
0.0.0.0:6080, localhost:6080, [::1]:6080; targets localhost:5900, [::1]:5900 or ::1:5900.
After --, a program to start and relay to: its bind() of SOURCE_PORT is moved to a free
loopback port (rebind.so), e.g. -- python3 -m http.server 6080

Options:
  -h, --help               show this help and exit
  --version                show the version and exit
  -c FILE, --config FILE   read settings from the [wsproxy] section of FILE;
                           options given here override the file
"""


def _option_line(row: Setting) -> str:
    assert row.flag is not None
    names = f"{row.short}, {row.flag}" if row.short else row.flag
    if row.meta:
        names += f" {row.meta}"
    help_text = f"switch off: {row.help}" if row.flag.startswith("--no-") else row.help
    if row.meta and row.default not in (None, (), ""):
        help_text += f" (default {row.format_default()})"
    left = f"  {names}"
    lines = textwrap.wrap(help_text, 100 - 27) or [""]
    out = f"{left:<27}{lines[0]}" if len(left) < 26 else f"{left}\n{'':<27}{lines[0]}"
    return "\n".join([out] + [f"{'':<27}{line}" for line in lines[1:]])


def build_usage() -> str:
    """The docopt usage text: the fixed head plus one option line per setting with a flag."""
    options = [_option_line(row) for row in SETTINGS if row.flag]
    return USAGE_HEAD.format(version=__version__) + "\n".join(options) + "\n"


def parse_args(argv: Sequence[str], base: str | None = None) -> Settings:
    """Command line (and the file it names) -> validated Settings. Raises ConfigError.

    A relative ``-c`` file is looked for in ``base`` (default: the current directory); messages
    name it as it was given.

    The positional arguments are assigned as websockify assigns them: the listen address
    (unless ``--inetd`` or ``--unix-listen`` replaces it), then the target (unless a token
    plug-in, a UNIX target or a program after ``--`` chooses it).
    """
    argv = list(argv)
    program: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, program = argv[:cut], argv[cut + 1 :]
        if not program:
            raise ConfigError("no program after --; see wsproxy --help", source="command line")
    # docopt-ng reads "-6" as a negative number, a positional argument: spell it out.
    argv = ["--prefer-ipv6" if arg == "-6" else arg for arg in argv]
    usage = build_usage()
    known = {"-h", "--help", "--version", "-c", "--config"}
    known |= {name for row in SETTINGS for name in (row.flag, row.short) if name}
    for arg in argv:
        name = arg.split("=", 1)[0]
        if name.startswith("--") and name not in known:
            raise ConfigError(f"unknown option {name}; see wsproxy --help", source="command line")
    try:
        args = docopt(usage, argv, default_help=False)
    except DocoptExit as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        message = "arguments do not match the usage" if "Warning" in first or not first else first
        raise ConfigError(f"{message}; see wsproxy --help", source="command line") from None
    if args["--help"]:
        print(usage, end="")
        raise SystemExit(0)
    if args["--version"]:
        print(f"wsproxy {__version__}")
        raise SystemExit(0)
    cli: dict[str, Any] = {}
    for row in SETTINGS:
        if not row.flag:
            continue
        value = args.get(row.flag)
        if row.is_bool:
            if value:
                cli[row.name] = not row.flag.startswith("--no-")
        elif value is not None:
            cli[row.name] = value
    if program:
        cli["wrap"] = tuple(program)
    ini: dict[str, tuple[str, int]] = {}
    source = ""
    if args["--config"]:
        source = args["--config"]
        path = os.path.join(base, source) if base is not None else source
        ini = read_ini(_read_file(path, source), source)
    cli.update(_positionals(args["<arg>"], cli, ini))
    return Settings.load(ini=ini, ini_source=source, cli=cli)


def _positionals(
    values: list[str], cli: dict[str, Any], ini: dict[str, tuple[str, int]]
) -> dict[str, str]:
    """Name the positional arguments: ``listen`` then ``target``, each where it is needed."""

    def given(name: str) -> bool:
        if name in cli:
            return bool(cli[name])
        text = ini.get(name, ("", 0))[0]
        if not text.strip():
            return False
        try:
            return bool(SETTINGS_BY_NAME[name].parse(text))  # the value as the settings read it
        except ValueError:
            return True  # given, wrongly: the settings say so, naming the file and key

    names = []
    if not (given("inetd") or given("unix_listen")):
        names.append("listen")
    chosen = ("wrap", "unix_target", "token_plugin", "token_source", "target_config")
    if not any(given(name) for name in chosen):
        names.append("target")
    if len(values) > len(names):
        extra = values[len(names)]
        raise ConfigError(
            f"too many arguments: {extra!r}; see wsproxy --help", source="command line"
        )
    return dict(zip(names, values, strict=False))


def _read_file(path: str, source: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(
            f"cannot read the file: {reason}", source=source, expected="a readable INI file"
        ) from None
