"""Token plug-ins: loading by name or dotted path, websockify-style custom plug-ins, the Host
header as token, and lookups that fail or hang (never blocking other clients)."""

from __future__ import annotations

import json
import re
import shlex
import socket
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import (
    EchoServer,
    ProxyProcess,
    echo_once,
    raw_connect,
    read_http_head,
    read_until_closed,
    refused_start,
    upgrade_status,
    wait_until,
)
from websockets.sync.client import connect

from wsproxy.plugins.tokens import LOOKUP_THREADS

# A custom plug-in written for websockify (its BasePlugin interface, blocking calls and all).
CUSTOM_PLUGIN = '''
import os
import time


class StaticTokens(object):
    """Source: token=host:port,token=host:port"""

    def __init__(self, src):
        self.source = src
        self._targets = dict(item.split("=", 1) for item in src.split(","))

    def lookup(self, token):
        if token == "slow":
            with open(os.environ["SLOW_STARTED"], "a") as started:
                started.write("started\\n")  # the test waits for the lookups to be under way
            time.sleep(20)
        if token == "boom":
            raise RuntimeError("backend down")
        if token == "weird":
            return "not a pair"
        target = self._targets.get(token)
        if target is None:
            return None
        host, port = target.rsplit(":", 1)
        return [host, port.encode("ascii")]


class Broken(object):
    def __init__(self, src):
        raise ValueError("cannot parse the source")


class Repeats(object):
    def __init__(self, src):
        host, port, password = src.split(":")
        raise ValueError("cannot log in to %s with %s (source %s)" % (host, password, src))
'''


@pytest.fixture
def plugin_path(tmp_path: Path) -> dict[str, str]:
    """A PYTHONPATH with the user's plug-in module ``myplugins``."""
    (tmp_path / "myplugins.py").write_text(CUSTOM_PLUGIN)
    return {"PYTHONPATH": str(tmp_path), "SLOW_STARTED": str(tmp_path / "slow-started")}


def start_custom(
    run_proxy: Callable[..., ProxyProcess],
    plugin_path: dict[str, str],
    cls: str,
    echo_server: EchoServer,
    *extra: str,
) -> ProxyProcess:
    """wsproxy with ``myplugins.CLS``, whose token ``vnc`` is the echo server."""
    source = f"vnc={echo_server.address}"
    args = ["--token-plugin", f"myplugins.{cls}", "--token-source", source, *extra, "127.0.0.1:0"]
    return run_proxy(args, env=plugin_path)


def test_custom_websockify_plugin_runs_unchanged(run_proxy, plugin_path, echo_server) -> None:
    proc = start_custom(run_proxy, plugin_path, "StaticTokens", echo_server)
    assert "by token with myplugins.StaticTokens" in proc.log
    assert echo_once(f"ws://127.0.0.1:{proc.port}/websockify?token=vnc", b"custom") == b"custom"
    assert upgrade_status(proc.port, "/?token=other") == (404, b"unknown token 'other'\n")
    assert upgrade_status(proc.port, "/?token=boom") == (502, b"token lookup failed\n")
    proc.wait_log(
        r"token lookup failed plugin=myplugins.StaticTokens token='boom': "
        r"RuntimeError: backend down"
    )
    assert upgrade_status(proc.port, "/?token=weird") == (502, b"token lookup gave a bad target\n")
    proc.wait_log(r"token lookup gave no target .*token='weird': expected \(host, port\)")


def test_a_hanging_lookup_gets_502_and_other_clients_go_on(
    run_proxy, plugin_path, echo_server
) -> None:
    proc = run_proxy(
        [
            "--token-plugin",
            "myplugins.StaticTokens",
            "--token-source",
            f"vnc={echo_server.address}",
            "--connect-timeout",
            "2",
            "127.0.0.1:0",
        ],
        env=plugin_path,
    )
    done: dict[str, float] = {}
    answers: list[tuple[int, bytes]] = []
    lock = threading.Lock()

    def slow() -> None:
        answer = upgrade_status(proc.port, "/?token=slow")
        with lock:
            answers.append(answer)
            done["slow"] = min(done.get("slow", float("inf")), time.monotonic())

    started = Path(plugin_path["SLOW_STARTED"])

    def hang(count: int, running: int) -> list[threading.Thread]:
        """``count`` more slow clients; returns once ``running`` slow lookups are under way."""
        threads = [threading.Thread(target=slow) for _ in range(count)]
        for thread in threads:
            thread.start()
        wait_until(
            lambda: started.exists() and len(started.read_text().split()) >= running,
            what=f"{running} slow lookups to start",
        )
        return threads

    with connect(f"ws://127.0.0.1:{proc.port}/?token=vnc", open_timeout=10) as open_ws:
        hanging = hang(3, 3)
        open_ws.send(b"relayed")  # a session already relaying goes on
        assert open_ws.recv(timeout=5) == b"relayed"
        assert echo_once(f"ws://127.0.0.1:{proc.port}/?token=vnc", b"new") == b"new"  # and a new
        done["fast"] = time.monotonic()
        # Every lookup thread stuck, and more clients waiting for one: the same deadline holds
        # for the wait, and relaying sessions still go on.
        hanging += hang(LOOKUP_THREADS, LOOKUP_THREADS)  # all threads busy, 3 clients waiting
        open_ws.send(b"still")
        assert open_ws.recv(timeout=5) == b"still"
        for thread in hanging:
            thread.join(15)
    assert "slow" in done and done["fast"] < done["slow"]
    assert answers == [(502, b"token lookup timed out after 2 s\n")] * (LOOKUP_THREADS + 3)
    proc.wait_log(r"token lookup timed out plugin=myplugins.StaticTokens token='slow' after=2s")
    stopping = time.monotonic()
    assert proc.stop() == 0  # the threads still asleep in lookup() do not hold the exit
    assert time.monotonic() - stopping < 5


def test_host_header_as_token(run_proxy, tmp_path: Path) -> None:
    first, second = EchoServer(), EchoServer()
    path = tmp_path / "tokens"
    path.write_text(f"vnc1.example: {first.address}\nvnc2.example: {second.address}\n")
    proc = run_proxy(
        ["--token-plugin", "TokenFile", "--token-source", str(path), "--host-token", "127.0.0.1:0"]
    )
    for name, server in (("vnc1.example", first), ("vnc2.example", second)):
        sock = socket.create_connection(("127.0.0.1", proc.port), timeout=10)
        url = f"ws://{name}:{proc.port}/?token=vnc2.example"  # the query is not the token
        assert echo_once(url, name.encode(), sock=sock) == name.encode()
        proc.wait_log(rf"target={server.address}")
    assert upgrade_status(proc.port, "/", host="other:6080") == (404, b"unknown token 'other'\n")
    first.close()
    second.close()


def test_a_target_urlsplit_refuses_still_gets_its_token(run_proxy, tmp_path: Path) -> None:
    """An absolute-form target with a broken authority: the query is read all the same."""
    path = tmp_path / "tokens"
    path.write_text("b: 127.0.0.1:1\n")
    proc = run_proxy(["--token-plugin", "TokenFile", "--token-source", str(path), "127.0.0.1:0"])
    with raw_connect(proc.port) as sock:
        sock.sendall(
            b"GET http://[x/?token=a HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        status, _, rest = read_http_head(sock)
        assert (status, rest + read_until_closed(sock)) == (404, b"unknown token 'a'\n")
    assert "Traceback" not in proc.log


def test_websockify_module_names_load_the_builtins(run_proxy, tmp_path: Path, echo_server) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"t: {echo_server.address}\n")
    proc = run_proxy(
        [
            "--token-plugin",
            "websockify.token_plugins.TokenFile",
            "--token-source",
            str(path),
            "127.0.0.1:0",
        ]
    )
    assert echo_once(f"ws://127.0.0.1:{proc.port}/?token=t") == b"ping"


@pytest.mark.parametrize(
    ("plugin", "message"),
    [
        (
            "NoSuchPlugin",
            "token_plugin: unknown token plug-in 'NoSuchPlugin' (expected one of "
            "TokenFile, ReadOnlyTokenFile",
        ),
        (
            "nosuchmodule.Class",
            "token_plugin: cannot load token plug-in nosuchmodule.Class: "
            "No module named 'nosuchmodule'",
        ),
        ("myplugins.Missing", "token_plugin: module myplugins has no class Missing"),
        (
            "myplugins.Broken",
            "token_source: plug-in myplugins.Broken refused its source: "
            "ValueError: cannot parse the source",
        ),
        (
            "myplugins.Repeats",
            "token_source: plug-in myplugins.Repeats refused its source: "
            "ValueError: cannot log in to (hidden) with (hidden) (source (hidden))",
        ),
    ],
)
def test_bad_plugin_exits_2_naming_the_key(run_proxy, plugin_path, plugin, message) -> None:
    source = "db.example:6379:s3cret"
    log = refused_start(
        run_proxy,
        ["--token-plugin", plugin, "--token-source", source, "127.0.0.1:0"],
        env=plugin_path,
    )
    assert message in log
    assert "s3cret" not in log


@pytest.mark.parametrize(
    ("plugin", "library", "extra"),
    [("TokenRedis", "redis", "redis"), ("JWTTokenApi", "jwcrypto", "jwt")],
)
def test_missing_optional_library_names_the_extra(
    run_proxy, tmp_path: Path, plugin, library, extra
) -> None:
    # The library is shadowed by a module that fails as a missing one does.
    (tmp_path / f"{library}.py").write_text(
        textwrap.dedent(f"""
        raise ModuleNotFoundError("No module named {library!r}", name={library!r})
    """)
    )
    log = refused_start(
        run_proxy,
        ["--token-plugin", plugin, "--token-source", "x", "127.0.0.1:0"],
        env={"PYTHONPATH": str(tmp_path)},
    )
    assert (
        f"token_plugin: cannot load token plug-in {plugin}: No module named '{library}'; "
        f"pip install wsproxy[{extra}]" in log
    )


def test_the_readme_example_plugin_runs(run_proxy, tmp_path: Path, echo_server) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    example = re.search(r"`myplugins.py`:\n\n```python\n(.*?)```", readme, re.S)
    command = re.search(r"\n(PYTHONPATH=\. wsproxy [^\n]+)\n", readme)
    assert example and command
    (tmp_path / "myplugins.py").write_text(example.group(1))
    (tmp_path / "tokens.json").write_text(json.dumps({"vnc1": echo_server.address}))
    args = shlex.split(command.group(1))[2:]  # after PYTHONPATH=. and wsproxy
    args[-1] = "127.0.0.1:0"
    proc = run_proxy(args, env={"PYTHONPATH": "."}, cwd=tmp_path)
    assert echo_once(f"ws://127.0.0.1:{proc.port}/?token=vnc1", b"readme") == b"readme"
    assert upgrade_status(proc.port, "/?token=vnc2")[0] == 404
