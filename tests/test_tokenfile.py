"""The file-system token plug-ins, through the real command line: TokenFile, ReadOnlyTokenFile,
TokenFileName, UnixDomainSocketDirectory."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import EchoServer, echo_once, refused_start, upgrade_status, wait_until

from wsproxy.errors import ConfigError
from wsproxy.plugins.tokenfile import MAX_TOKEN_FILE, TokenFile


def test_tokens_pick_targets(run_proxy, tmp_path: Path) -> None:
    first, second = EchoServer(), EchoServer()
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    (tokens / "a.cfg").write_text(f"one: {first.address}\n")
    (tokens / "b.cfg").write_text(f"two: {second.address}\n")
    (tokens / ".b.cfg.swp").write_text("garbage that is not read\n")
    proc = run_proxy(["--token-plugin", "TokenFile", "--token-source", str(tokens), "127.0.0.1:0"])
    assert echo_once(f"ws://127.0.0.1:{proc.port}/websockify?token=one", b"1") == b"1"
    assert echo_once(f"ws://127.0.0.1:{proc.port}/websockify?token=two", b"2") == b"2"
    wait_until(lambda: (first.connections, second.connections) == (1, 1), what="both targets")
    assert upgrade_status(proc.port, "/?token=three") == (404, b"unknown token 'three'\n")
    status, body = upgrade_status(proc.port, "/")
    assert status == 400 and b"missing token" in body
    assert "skipped" not in proc.log  # the dot file was not read
    first.close()
    second.close()


def test_a_token_written_just_before_its_client_is_found(run_proxy, tmp_path: Path) -> None:
    echo = EchoServer()
    path = tmp_path / "tokens"
    path.write_text("")
    proc = run_proxy(["--token-source", str(path), "127.0.0.1:0"])  # alone: TokenFile
    lines = ""
    for n in range(20):  # each rewrite at once followed by its client, as a console broker does
        lines += f"console{n}: {echo.address}\n"
        path.write_text(lines)
        assert upgrade_status(proc.port, f"/?token=console{n}")[0] == 101, proc.log
    # Replaced by rename (a new inode of the same size and, often, the same mtime).
    new = tmp_path / "new"
    new.write_text(lines.replace("console0:", "renamed0:"))
    os.replace(new, path)
    assert upgrade_status(proc.port, "/?token=renamed0")[0] == 101
    assert upgrade_status(proc.port, "/?token=console0")[0] == 404
    echo.close()


def test_bad_lines_are_skipped_and_logged_with_file_and_line(run_proxy, tmp_path: Path) -> None:
    echo = EchoServer()
    path = tmp_path / "tokens"
    path.write_text(f"good: {echo.address}\nbroken line\nv6: ::1:5998\n")
    proc = run_proxy(["--token-plugin", "TokenFile", "--token-source", str(path), "127.0.0.1:0"])
    proc.wait_log(rf"{path}:2: skipped bad line 'broken line' \(expected token: host:port\)")
    assert "(2 tokens)" in proc.log
    assert echo_once(f"ws://127.0.0.1:{proc.port}/?token=good") == b"ping"
    for _ in range(3):  # the file is fresh, so re-read each time: still logged once
        upgrade_status(proc.port, "/?token=good")
    assert proc.log.count("skipped bad line") == 1
    status, body = upgrade_status(proc.port, "/?token=v6")  # accepted; nothing listens there
    assert status == 502 and b"[::1]:5998" in body
    echo.close()


def test_read_only_token_file_changes_only_on_sighup(run_proxy, tmp_path: Path) -> None:
    echo = EchoServer()
    path = tmp_path / "tokens"
    path.write_text("")
    proc = run_proxy(
        ["--token-plugin", "ReadOnlyTokenFile", "--token-source", str(path), "127.0.0.1:0"]
    )
    path.write_text(f"late: {echo.address}\n")
    assert upgrade_status(proc.port, "/?token=late")[0] == 404
    os.kill(proc.proc.pid, signal.SIGHUP)
    proc.wait_log(r"reloaded targets=by token from .* \(1 tokens\)")
    assert upgrade_status(proc.port, "/?token=late")[0] == 101
    echo.close()


def test_target_config_is_the_deprecated_alias(run_proxy, tmp_path: Path, echo_server) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"t: {echo_server.address}\n")
    proc = run_proxy(["--target-config", str(path), "127.0.0.1:0"])
    assert echo_once(f"ws://127.0.0.1:{proc.port}/?token=t") == b"ping"


def test_unreadable_token_source_exits_2(run_proxy, tmp_path: Path) -> None:
    log = refused_start(run_proxy, ["--token-source", str(tmp_path / "missing"), "127.0.0.1:0"])
    assert "missing: token_source: cannot read token source" in log


def test_target_and_token_source_together_is_an_error(run_proxy, tmp_path: Path) -> None:
    path = tmp_path / "t"
    path.write_text("a: h:1\n")
    log = refused_start(run_proxy, ["--token-source", str(path), "127.0.0.1:0", "h:1"])
    assert "too many arguments: 'h:1'" in log


def test_oversized_token_file_is_refused_not_cut(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("a: h:1\n" + "#" * MAX_TOKEN_FILE + "\n")
    with pytest.raises(ConfigError, match="token file over"):
        TokenFile(str(path))


def test_failed_reload_is_logged_once_and_the_old_table_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "tokens"
    path.write_text("a: h:1\n")
    table = TokenFile(str(path))
    path.write_text("a: h:1\n" + "#" * MAX_TOKEN_FILE + "\n")
    for _ in range(3):
        assert table.lookup("a") == ("h", 1)
    failures = [r for r in caplog.records if "not reloaded" in r.getMessage()]
    assert len(failures) == 1
    assert "token file over" in failures[0].getMessage()


def test_a_token_file_that_stays_gone_is_logged_once(
    run_proxy, tmp_path: Path, echo_server
) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"a: {echo_server.address}\n")
    proc = run_proxy(["--token-plugin", "TokenFile", "--token-source", str(path), "127.0.0.1:0"])
    path.unlink()
    for _ in range(3):  # the last good table still serves
        assert echo_once(f"ws://127.0.0.1:{proc.port}/?token=a") == b"ping"
    # The log is in order: once the third session's open line is read, so are the lookups'.
    wait_until(lambda: sum(" open peer=" in line for line in proc.lines) == 3)
    message = f"token_source not reloaded, keeping the previous tokens: {path}: No such file"
    assert sum(message in line for line in proc.lines) == 1, proc.log


def test_token_file_name(run_proxy, tmp_path: Path, echo_server) -> None:
    (tmp_path / "vnc1").write_text(f"{echo_server.address}\n")
    (tmp_path / "bad").write_text("no port here\n")
    proc = run_proxy(
        ["--token-plugin", "TokenFileName", "--token-source", str(tmp_path), "127.0.0.1:0"]
    )
    assert echo_once(f"ws://127.0.0.1:{proc.port}/?token=vnc1") == b"ping"
    assert echo_once(f"ws://127.0.0.1:{proc.port}/?token=..%2Fx%2Fvnc1") == b"ping"  # its name
    assert upgrade_status(proc.port, "/?token=nope")[0] == 404
    assert upgrade_status(proc.port, "/?token=..")[0] == 404
    assert upgrade_status(proc.port, "/?token=bad") == (502, b"token lookup failed\n")
    proc.wait_log(r"token lookup failed plugin=TokenFileName token='bad': .*expected host:port")


def test_token_file_name_needs_a_directory(run_proxy, tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("")
    log = refused_start(
        run_proxy, ["--token-plugin", "TokenFileName", "--token-source", str(path), "127.0.0.1:0"]
    )
    assert "token_source: TokenFileName needs a directory (expected a directory of" in log


@pytest.fixture
def socket_dir(tmp_path: Path) -> Iterator[Path]:
    sockets = tmp_path / "sockets"
    sockets.mkdir()
    inside = EchoServer(sockets / "vm1")
    outside = EchoServer(tmp_path / "outside")
    (sockets / "link").symlink_to(tmp_path / "outside")
    (sockets / "plain").write_text("not a socket")
    yield sockets
    inside.close()
    outside.close()


def test_unix_domain_socket_directory(run_proxy, socket_dir: Path) -> None:
    proc = run_proxy(
        [
            "--token-plugin",
            "UnixDomainSocketDirectory",
            "--token-source",
            str(socket_dir),
            "127.0.0.1:0",
        ]
    )
    assert echo_once(f"ws://127.0.0.1:{proc.port}/?token=vm1", b"uds") == b"uds"
    proc.wait_log(r"target=unix:\S+/sockets/vm1")
    for token in ("..%2Foutside", "link", "plain", "missing", "%2Ftmp"):
        assert upgrade_status(proc.port, f"/?token={token}")[0] == 404, token
    proc.wait_log(r"refused token '\.\./outside': outside")
