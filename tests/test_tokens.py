"""Per-client targets by token (websockify TokenFile format)."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
from conftest import EchoServer, read_http_head, read_until_closed
from websockets.sync.client import connect

from wsproxy.errors import ConfigError
from wsproxy.protocol.handshake import parse_request
from wsproxy.tokens import parse_tokens, token_of


def request(target: str, *headers: str) -> object:
    head = f"GET {target} HTTP/1.1\r\nHost: x\r\n" + "".join(h + "\r\n" for h in headers)
    parsed = parse_request((head + "\r\n").encode())
    assert parsed is not None
    return parsed[0]


def test_parse_tokens_with_comments_and_ipv6() -> None:
    text = "# tokens\nvnc1: 10.0.0.1:5900\n\n term : [::1]:23  # trailing comment\n"
    assert parse_tokens(text, "t") == {"vnc1": ("10.0.0.1", 5900), "term": ("::1", 23)}


@pytest.mark.parametrize("line", ["novalue", "t: host", "t: host:0", ": host:1"])
def test_bad_token_line_names_file_and_line(line: str) -> None:
    with pytest.raises(ConfigError) as exc_info:
        parse_tokens(f"ok: h:1\n{line}\n", "tokens.cfg")
    assert (exc_info.value.source, exc_info.value.line) == ("tokens.cfg", 2)
    assert "token: host:port" in str(exc_info.value)


def test_token_from_query_then_cookie() -> None:
    assert token_of(request("/websockify?token=abc&x=1")) == "abc"
    assert token_of(request("/?x=1", "Cookie: a=b; token=fromcookie")) == "fromcookie"
    assert token_of(request("/?token=q", "Cookie: token=c")) == "q"
    assert token_of(request("/")) is None


def upgrade_status(port: int, path: str) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        head = (
            f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        sock.sendall(head.encode())
        status, _, rest = read_http_head(sock)
        return status, rest if status == 101 else rest + read_until_closed(sock)


def test_tokens_pick_targets_and_file_changes_are_picked_up(run_proxy, tmp_path: Path) -> None:
    first, second = EchoServer(), EchoServer()
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    (tokens / "a.cfg").write_text(f"one: {first.address}\n")
    proc = run_proxy(["--token-source", str(tokens), "127.0.0.1:0"])
    with connect(f"ws://127.0.0.1:{proc.port}/websockify?token=one") as ws:
        ws.send(b"x")
        assert ws.recv(timeout=5) == b"x"
    assert (first.connections, second.connections) == (1, 0)

    assert upgrade_status(proc.port, "/?token=two") == (404, b"unknown token 'two'\n")
    status, body = upgrade_status(proc.port, "/")
    assert status == 400 and b"missing token" in body

    (tokens / "b.cfg").write_text(f"two: {second.address}\n")
    deadline = time.monotonic() + 5
    while upgrade_status(proc.port, "/?token=two")[0] != 101:  # picked up within a second
        assert time.monotonic() < deadline
        time.sleep(0.2)
    while second.connections < 1:  # the echo thread counts after the kernel accepted
        assert time.monotonic() < deadline
        time.sleep(0.02)
    first.close()
    second.close()


def test_unreadable_token_source_exits_2(run_proxy, tmp_path: Path) -> None:
    proc = run_proxy(["--token-source", str(tmp_path / "missing"), "127.0.0.1:0"], ready=False)
    assert proc.proc.wait(10) == 2
    proc._reader.join(2)
    assert "missing: token_source: cannot read token source" in proc.log


def test_target_and_token_source_together_is_an_error(run_proxy, tmp_path: Path) -> None:
    path = tmp_path / "t"
    path.write_text("a: h:1\n")
    proc = run_proxy(["--token-source", str(path), "127.0.0.1:0", "h:1"], ready=False)
    assert proc.proc.wait(10) == 2


def test_sighup_reloads_tokens(run_proxy, tmp_path: Path, echo_server) -> None:
    path = tmp_path / "tokens"
    path.write_text("")
    proc = run_proxy(["--token-source", str(path), "127.0.0.1:0"])
    path.write_text(f"late: {echo_server.address}\n")
    os.kill(proc.proc.pid, 1)  # SIGHUP
    proc.wait_log(r"reloaded targets=by token from .* \(1 tokens\)")
    assert upgrade_status(proc.port, "/?token=late")[0] == 101


def test_oversized_token_file_is_refused_not_cut(tmp_path: Path) -> None:
    from wsproxy.tokenfile import MAX_TOKEN_FILE, TokenTable

    path = tmp_path / "tokens"
    path.write_text("a: h:1\n" + "#" * MAX_TOKEN_FILE + "\n")
    with pytest.raises(ConfigError, match="token file over"):
        TokenTable(str(path))


def test_failed_reload_is_logged_once_and_the_old_table_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from wsproxy import tokenfile

    path = tmp_path / "tokens"
    path.write_text("a: h:1\n")
    table = tokenfile.TokenTable(str(path))
    path.write_text("a: h:1\nbroken line\n")
    for _ in range(3):
        table._checked = float("-inf")  # as if a second had passed
        assert table.find(request("/?token=a")) == ("h", 1)  # type: ignore[arg-type]
    failures = [r for r in caplog.records if "not reloaded" in r.getMessage()]
    assert len(failures) == 1
    assert "broken line" in failures[0].getMessage()
