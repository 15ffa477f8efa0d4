"""The command line and the INI file: exit statuses and messages that name the culprit."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from wsproxy.cli import build_usage, parse_args
from wsproxy.errors import ConfigError
from wsproxy.settings import SETTINGS, Settings, read_ini

EXAMPLE = ROOT / "wsproxy.ini.example"


def run_cli(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wsproxy", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "wsproxy.ini"
    path.write_text(text)
    return str(path)


# --- parsing (in-process) -----------------------------------------------------------------------


def test_positional_listen_and_target() -> None:
    settings = parse_args(["6080", "localhost:5900"])
    assert settings.listen == ("", 6080)
    assert settings.target == ("localhost", 5900)


def test_ipv6_addresses_in_brackets() -> None:
    settings = parse_args(["[::1]:6080", "[::1]:5900"])
    assert settings.listen == ("::1", 6080)
    assert settings.target == ("::1", 5900)


def test_command_line_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[wsproxy]\nlisten = 1234\ntarget = a:1\nconnect_timeout = 7\n")
    settings = parse_args(["-c", path, "--connect-timeout", "3", "2345"])
    assert settings.listen == ("", 2345)
    assert settings.target == ("a", 1)
    assert settings.connect_timeout == 3.0


def test_example_file_loads_and_documents_every_key() -> None:
    text = EXAMPLE.read_text()
    settings = parse_args(["-c", str(EXAMPLE)])
    assert settings.listen is not None and settings.target is not None
    for row in SETTINGS:
        if row.ini:
            assert re.search(rf"^#? ?{row.name} =", text, re.M), f"{row.name} undocumented"
            if row.default not in (None, ()):
                assert f"{row.name} = {row.format_default()}" in text, row.name


def test_usage_has_an_option_for_every_flagged_setting() -> None:
    usage = build_usage()
    for row in SETTINGS:
        if row.flag:
            assert row.flag in usage


def test_library_settings_accept_text_forms() -> None:
    settings = Settings.create(listen="127.0.0.1:0", target="[::1]:22", hixie="no")
    assert settings.listen == ("127.0.0.1", 0)
    assert settings.target == ("::1", 22)
    assert settings.hixie is False


@pytest.mark.parametrize(
    ("text", "key", "line", "expected"),
    [
        (
            "[wsproxy]\nlisten = 1\ntarget = a:1\nbogus = 1\n",
            "bogus",
            4,
            "one of listen, prefer_ipv6",
        ),
        ("[wsproxy]\nlisten = 99999\ntarget = a:1\n", "listen", 2, "[ADDR:]PORT"),
        ("[wsproxy]\nlisten = 1\ntarget = nohost\n", "target", 3, "HOST:PORT"),
        ("[wsproxy]\nlisten = 1\ntarget = a:1\nhixie = maybe\n", "hixie", 4, "yes or no"),
        (
            "[wsproxy]\nlisten = 1\ntarget = a:1\nconnect_timeout = -1\n",
            "connect_timeout",
            4,
            "seconds",
        ),
        ("[wsproxy]\nlisten = 1\n", "target", None, "HOST:PORT"),
    ],
)
def test_bad_file_names_file_key_and_expected_form(
    tmp_path: Path, text: str, key: str, line: int | None, expected: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as exc_info:
        parse_args(["-c", path])
    error = exc_info.value
    assert (error.key, error.line) == (key, line)
    assert expected in str(error)
    assert str(error).startswith(path)


def test_ini_syntax_error_and_missing_section(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no \\[wsproxy\\] section"):
        read_ini("[other]\nx = 1\n", "f.ini")
    with pytest.raises(ConfigError) as exc_info:
        read_ini("[wsproxy]\nthis is not ini\n", "f.ini")
    assert exc_info.value.line == 2


def test_a_key_before_any_section_exits_2_naming_the_file(tmp_path: Path) -> None:
    # Once an AttributeError inside the INI reader, and a traceback.
    path = tmp_path / "no-section.ini"
    path.write_text("listen = 6080\n[wsproxy]\n")
    result = run_cli("-c", str(path))
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        f"wsproxy: {path}:1: a key before any [section] header "
        "(expected INI syntax: [wsproxy] then key = value lines)\n"
    )


# --- the process: exit statuses and messages ---------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["6080"], "target: no target given (expected HOST:PORT"),
        (["70000", "a:1"], "listen: bad value '70000'"),
        (["6080", "a:b"], "target: bad value 'a:b'"),
        (["--bogus", "6080", "a:1"], "unknown option --bogus"),
        (["--max-connections", "x", "6080", "a:1"], "max_connections: bad value 'x'"),
        (["-c", "/nonexistent/wsproxy.ini"], "/nonexistent/wsproxy.ini: cannot read the file"),
        (["1", "a:1", "extra"], "too many arguments: 'extra'"),
    ],
)
def test_bad_input_exits_2_with_message(args: list[str], message: str) -> None:
    result = run_cli(*args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "key",
    [
        "handshake_timeout",
        "connect_timeout",
        "close_timeout",
        "graceful_timeout",
        "wrap_connect_timeout",
    ],
)
def test_zero_timeout_exits_2_naming_key_and_form(key: str) -> None:
    # 0 would fire every wait at once (gevent.Timeout(0)): refused, not taken as "no limit".
    flag = "--" + key.replace("_", "-")
    result = run_cli(flag, "0", "6080", "a:1")
    assert result.returncode == 2, result.stderr
    assert f"{key}: bad value '0' (expected seconds above 0)" in result.stderr
    assert "Traceback" not in result.stderr


def test_zero_timeout_refused_from_the_library() -> None:
    with pytest.raises(ConfigError, match="close_timeout: bad value '0'"):
        Settings.create(listen="6080", target="a:1", close_timeout=0)


def test_bad_file_exits_2_naming_file_line_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, "[wsproxy]\nlisten = 6080\ntarget = localhost:5900\nlisten_port = 1\n")
    result = run_cli("-c", path)
    assert result.returncode == 2
    assert f"{path}:4: listen_port: unknown key" in result.stderr


def test_port_in_use_exits_1_with_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(f"127.0.0.1:{port}", "127.0.0.1:1")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"wsproxy: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]


def test_help_and_version_exit_0() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    assert "Usage:" in result.stdout and "--connect-timeout SECS" in result.stdout
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("wsproxy ")


def test_readme_key_table_lists_every_key() -> None:
    text = (ROOT / "README.md").read_text()
    for row in SETTINGS:
        assert f"| `{row.name}` |" in text, f"{row.name} missing from the README's key table"


# Every option of websockify 0.13.0's command line (websocketproxy.websockify_init).
WEBSOCKIFY_OPTIONS = [
    "-v",
    "--verbose",
    "--traffic",
    "--record",
    "-D",
    "--daemon",
    "--run-once",
    "--timeout",
    "--idle-timeout",
    "--cert",
    "--key",
    "--key-password",
    "--ssl-only",
    "--ssl-target",
    "--verify-client",
    "--cafile",
    "--ssl-version",
    "--ssl-ciphers",
    "--unix-listen",
    "--unix-listen-mode",
    "--unix-target",
    "--inetd",
    "--web",
    "--web-auth",
    "--wrap-mode",
    "-6",
    "--prefer-ipv6",
    "--libserver",
    "--target-config",
    "--token-plugin",
    "--token-source",
    "--host-token",
    "--auth-plugin",
    "--auth-source",
    "--heartbeat",
    "--log-file",
    "--syslog",
    "--legacy-syslog",
    "--file-only",
]


def test_every_websockify_option_is_accepted_and_in_the_readme_table() -> None:
    usage = build_usage()
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("### Switching from websockify") :]
    for option in WEBSOCKIFY_OPTIONS:
        assert re.search(rf"(^|[ ,]){re.escape(option)}[ ,\n]", usage, re.M), option
        assert f"`{option}" in table, f"{option} missing from the README's websockify table"
