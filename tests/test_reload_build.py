"""SIGHUP builds the new plug-ins in a thread: a slow constructor does not pause the sessions, a
hung one is given up on after connect_timeout (the old configuration serves on), and relative
paths are resolved without changing the process's directory.

The token plug-in is a user's own (a module on PYTHONPATH), built from a JSON file that also
says how its construction behaves: sleep, hang, or wait until the test lets it go. It logs when
it starts and ends building, so the tests wait for log lines, not for time."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import WSPROXY, EchoServer, ProxyProcess, upgrade_status, wait_until
from test_auth import basic, password_line
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

SLOW_BUILD = 3.0  # seconds the slow constructor takes
MAX_ECHO = 0.5  # seconds any echo may take while it runs
PLUGIN = "slowtokens.SlowTokens"

SLOWTOKENS = """
import json, logging, os, threading, time

log = logging.getLogger("slowtokens")


class SlowTokens:
    SOURCE_IS_PATH = True  # a relative source is the file in the start directory

    def __init__(self, src):
        with open(src) as f:
            config = json.load(f)
        self.tokens = config["tokens"]
        build = config.get("build", {})
        log.warning("building generation=%s cwd=%s", config["generation"], os.getcwd())
        if "sleep" in build:
            time.sleep(build["sleep"])
        if build.get("hang"):
            threading.Event().wait()
        if "wait_for" in build:
            deadline = time.monotonic() + 20
            while not os.path.exists(build["wait_for"]) and time.monotonic() < deadline:
                time.sleep(0.01)
        log.warning("built generation=%s", config["generation"])

    def lookup(self, token):
        target = self.tokens.get(token)
        return None if target is None else target.rsplit(":", 1)
"""


def write_tokens(path: Path, generation: int, tokens: dict[str, str], **build: object) -> None:
    path.write_text(json.dumps({"generation": generation, "tokens": tokens, "build": build}))


def start(run_proxy, tmp_path: Path, echo: str, *extra: str) -> ProxyProcess:
    (tmp_path / "slowtokens.py").write_text(SLOWTOKENS)
    write_tokens(tmp_path / "tokens.json", 1, {"old": echo})
    lines = ["[wsproxy]", "listen = 127.0.0.1:0", f"token_plugin = {PLUGIN}"]
    lines += ["token_source = tokens.json", *extra]
    (tmp_path / "w.ini").write_text("\n".join(lines) + "\n")
    env = {"PYTHONPATH": str(tmp_path)}
    proxy = run_proxy(["-c", "w.ini"], cwd=tmp_path, env=env)
    proxy.wait_log(r"slowtokens: built generation=1")
    return proxy


@pytest.mark.parametrize("workers", [1, 2])
def test_slow_plugin_constructor_does_not_pause_sessions(
    run_proxy, echo_server: EchoServer, tmp_path: Path, workers: int
) -> None:
    """With workers, the master builds first (to check) and then each worker builds: the
    session, in a worker, is timed until every process has reloaded."""
    proxy = start(run_proxy, tmp_path, echo_server.address, f"workers = {workers}")
    reloads = workers + (workers > 1)  # each worker, and the master that checked
    assert upgrade_status(proxy.port, "/?token=new")[0] == 404
    with connect(f"{proxy.url}?token=old", open_timeout=5) as ws:
        ws.send(b"before")
        assert ws.recv(timeout=5) == b"before"
        tokens = {"old": echo_server.address, "new": echo_server.address}
        write_tokens(tmp_path / "tokens.json", 2, tokens, sleep=SLOW_BUILD)
        proxy.proc.send_signal(signal.SIGHUP)
        proxy.wait_log(r"slowtokens: building generation=2")
        began = time.monotonic()
        slowest, echoes = 0.0, 0
        while sum("reloaded targets=" in line for line in list(proxy.lines)) < reloads:
            assert time.monotonic() - began < 2 * SLOW_BUILD + 10, "the reload did not end"
            sent = time.monotonic()
            ws.send(b"during %d" % echoes)
            assert ws.recv(timeout=5) == b"during %d" % echoes
            slowest = max(slowest, time.monotonic() - sent)
            echoes += 1
            if echoes == 5:  # a new client is served meanwhile, with the running plug-in
                assert upgrade_status(proxy.port, "/?token=old")[0] == 101
                assert upgrade_status(proxy.port, "/?token=new")[0] == 404
            time.sleep(0.02)  # pacing only: the loop ends on the log line
        assert time.monotonic() - began >= SLOW_BUILD - 0.5  # the echoes spanned the build
        assert slowest < MAX_ECHO, f"an echo took {slowest:.2f} s during the reload"
        assert echoes >= 20
    assert "slowtokens: built generation=2" in proxy.log
    # The new plug-in answers the next clients.
    assert upgrade_status(proxy.port, "/?token=new")[0] == 101
    assert proxy.stop() == 0


@pytest.mark.parametrize("workers", [1, 2])
def test_hung_plugin_constructor_is_refused_and_the_old_one_serves_on(
    run_proxy, echo_server: EchoServer, tmp_path: Path, workers: int
) -> None:
    """With workers, the master's check is what hangs: it refuses, and tells no worker."""
    extra = ("connect_timeout = 1", f"workers = {workers}")
    proxy = start(run_proxy, tmp_path, echo_server.address, *extra)
    with connect(f"{proxy.url}?token=old", open_timeout=5) as ws:
        tokens = {"old": echo_server.address, "new": echo_server.address}
        write_tokens(tmp_path / "tokens.json", 2, tokens, hang=True)
        proxy.proc.send_signal(signal.SIGHUP)
        proxy.wait_log(r"slowtokens: building generation=2")
        refused = proxy.wait_log(r"reload failed, still serving with the previous config.*")
        assert (
            f"SIGHUP: connect_timeout: token plug-in {PLUGIN} did not finish within 1 s"
            in refused.group(0)
        )
        ws.send(b"still here")
        assert ws.recv(timeout=5) == b"still here"
        # The old plug-in still answers; the new one never came.
        assert upgrade_status(proxy.port, "/?token=old")[0] == 101
        assert upgrade_status(proxy.port, "/?token=new")[0] == 404
        # While that constructor hangs, a reload is refused at once, naming it.
        proxy.proc.send_signal(signal.SIGHUP)
        proxy.wait_log(f"token plug-in {PLUGIN}, from an earlier reload, has not finished yet")
        ws.send(b"and here")
        assert ws.recv(timeout=5) == b"and here"
    assert not any("reloaded targets=" in line for line in proxy.lines)
    assert proxy.stop() == 0  # the hung thread does not keep the process from exiting


def test_relative_paths_after_reload_without_changing_directory(
    echo_server: EchoServer, tmp_path: Path
) -> None:
    """A daemon (its directory is /) started with -c conf/w.ini: the relative paths in the file
    name files in the start directory, not the file's, before and after a reload, and the
    process stays in / while the plug-in is built."""
    (tmp_path / "slowtokens.py").write_text(SLOWTOKENS)
    write_tokens(tmp_path / "tokens.json", 1, {"old": echo_server.address})
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "index.html").write_text("the start directory's web root\n")
    lines = [f"token_plugin = {PLUGIN}", "token_source = tokens.json", "web = www"]
    pid, log = start_daemon(tmp_path, lines)
    try:
        port = int(str(wait_until(lambda: _port(log.read_text()), what="the listening line")))
        index = f"http://127.0.0.1:{port}/index.html"
        assert os.readlink(f"/proc/{pid}/cwd") == "/"
        assert _get(index) == "the start directory's web root\n"
        tokens = {"old": echo_server.address, "new": echo_server.address}
        release = tmp_path / "release"
        write_tokens(tmp_path / "tokens.json", 2, tokens, wait_for=str(release))
        os.kill(pid, signal.SIGHUP)
        wait_until(lambda: "building generation=2" in log.read_text(), what="the build")
        assert os.readlink(f"/proc/{pid}/cwd") == "/"  # while the plug-in is being built
        release.touch()
        wait_until(lambda: "reloaded targets=" in log.read_text(), what="the reload")
        text = log.read_text()
        assert "building generation=1 cwd=/\n" not in text  # built before detaching...
        assert f"building generation=1 cwd={tmp_path}\n" in text
        assert "building generation=2 cwd=/\n" in text  # ...and again, from where it is
        assert os.readlink(f"/proc/{pid}/cwd") == "/"
        assert _get(index) == "the start directory's web root\n"
        assert upgrade_status(port, "/?token=new")[0] == 101  # tokens.json re-read
    finally:
        os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not Path(f"/proc/{pid}").exists(), timeout=10, what="the daemon to exit")


def test_relative_password_file_of_a_daemon_after_reload(
    echo_server: EchoServer, tmp_path: Path
) -> None:
    """BasicHTTPAuth's relative password file is the start directory's at a reload too (the
    daemon is in /, where there is no such file, and a source without a colon is no user:pass)."""
    users = tmp_path / "users.txt"
    users.write_text(password_line("ann", "old") + "\n")
    lines = [f"target = {echo_server.address}", "auth_plugin = BasicHTTPAuth"]
    pid, log = start_daemon(tmp_path, [*lines, "auth_source = users.txt"])
    try:
        port = int(str(wait_until(lambda: _port(log.read_text()), what="the listening line")))
        assert _basic_status(port, "ann:old") == 101
        users.write_text(password_line("ann", "new") + "\n")
        os.kill(pid, signal.SIGHUP)
        wait_until(lambda: re.search("reloaded targets=|reload failed", log.read_text()))
        assert "reload failed" not in log.read_text(), log.read_text()
        assert (_basic_status(port, "ann:old"), _basic_status(port, "ann:new")) == (401, 101)
    finally:
        os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not Path(f"/proc/{pid}").exists(), timeout=10, what="the daemon to exit")


def start_daemon(tmp_path: Path, lines: list[str]) -> tuple[int, Path]:
    """``wsproxy -c conf/w.ini`` from ``tmp_path``, the file saying ``lines`` and to run as a
    daemon with its log and pid file in ``tmp_path``; returns its pid and log file."""
    (tmp_path / "conf").mkdir()
    head = ["[wsproxy]", "listen = 127.0.0.1:0", "daemon = yes"]
    tail = ["log_file = w.log", "pid_file = w.pid"]
    (tmp_path / "conf" / "w.ini").write_text("\n".join([*head, *lines, *tail]) + "\n")
    started = subprocess.run(
        [WSPROXY, "-c", "conf/w.ini"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert started.returncode == 0, started.stderr
    return int((tmp_path / "w.pid").read_text()), tmp_path / "w.log"


def _basic_status(port: int, user_password: str) -> int:
    user, password = user_password.split(":")
    try:
        with connect(
            f"ws://127.0.0.1:{port}/",
            additional_headers={"Authorization": basic(user, password)},
            open_timeout=5,
        ):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


def _port(text: str) -> int | None:
    for line in text.splitlines():
        if "listening on 127.0.0.1:" in line:
            return int(line.split("listening on 127.0.0.1:")[1].split(",")[0])
    return None


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()
