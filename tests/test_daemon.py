"""``--daemon``, ``--pid-file``, ``--log-file`` and ``--syslog`` with the real program.

Start-up failures stay in the foreground with the right status; a good start detaches, serves and
cleans up after itself."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import EchoServer, wait_until
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

START_TIMEOUT = 30


def wsproxy(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wsproxy", *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
    )


def proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state, ppid, pgrp, session, tty_nr...)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    return text.rsplit(")", 1)[1].split()


def running(pid: int) -> bool:
    stat = proc_stat(pid)
    return stat is not None and stat[0] != "Z"  # a zombie has exited already


def echo_once(port: int, data: bytes = b"ping") -> None:
    echo_once_to(f"ws://127.0.0.1:{port}/", data)


def echo_once_to(url: str, data: bytes = b"ping") -> None:
    with connect(url, open_timeout=5, close_timeout=5) as ws:
        ws.send(data)
        assert ws.recv(timeout=5) == data


@dataclass
class Daemon:
    dir: Path
    pid_path: Path
    log_path: Path
    result: subprocess.CompletedProcess[str]

    @property
    def pid(self) -> int:
        return int(self.pid_path.read_text())

    @property
    def port(self) -> int:
        m = re.search(r"listening on \S+:(\d+)", self.log_path.read_text())
        assert m, self.log_path.read_text()
        return int(m.group(1))

    def log(self) -> str:
        return self.log_path.read_text()


@pytest.fixture
def start_daemon(tmp_path: Path, echo_server: EchoServer) -> Iterator[object]:
    """``start_daemon(*extra_args)``: ``wsproxy -D`` with a relative pid and log file in tmp_path;
    asserts the foreground exited 0. Anything still running is killed afterwards."""
    started: list[int] = []

    def start(
        *extra: str,
        pid_file: str = "w.pid",
        log_file: str = "w.log",
        target: tuple[str, ...] = (echo_server.address,),
    ) -> Daemon:
        args = ["-D", "--pid-file", pid_file, "--log-file", log_file, *extra]
        result = wsproxy(*args, "127.0.0.1:0", *target, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        daemon = Daemon(tmp_path, tmp_path / pid_file, tmp_path / log_file, result)
        started.append(daemon.pid)
        return daemon

    yield start
    for pid in started:
        if running(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


# -- failures in the foreground --


def test_bad_config_fails_in_foreground_with_status_2(tmp_path: Path) -> None:
    result = wsproxy("-D", "--pid-file", "w.pid", "--workers", "none", "6080", "h:1", cwd=tmp_path)
    assert result.returncode == 2
    assert "workers" in result.stderr and "expected a whole number" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_missing_config_file_fails_in_foreground_with_status_2(tmp_path: Path) -> None:
    result = wsproxy("-D", "-c", "nowhere.ini", cwd=tmp_path)
    assert result.returncode == 2
    assert "nowhere.ini: cannot read the file" in result.stderr


def test_unreadable_cert_fails_in_foreground_with_status_2(
    tmp_path: Path, echo_server: EchoServer
) -> None:
    (tmp_path / "cert.pem").write_text("not a certificate\n")
    for cert, reason in [("missing.pem", "cannot read the file"), ("cert.pem", "")]:
        result = wsproxy(
            "-D", "--pid-file", "w.pid", "--cert", cert, "127.0.0.1:0", echo_server.address,
            cwd=tmp_path,
        )  # fmt: skip
        assert result.returncode == 2
        assert f"{tmp_path / cert}: cert: {reason}" in result.stderr
        assert not (tmp_path / "w.pid").exists()


def test_port_in_use_fails_in_foreground_with_status_1(
    tmp_path: Path, echo_server: EchoServer
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = wsproxy(
            "-D", "--pid-file", "w.pid", f"127.0.0.1:{port}", echo_server.address, cwd=tmp_path
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # no pid file, no temporary file left


@pytest.mark.parametrize(
    ("option", "path", "message"),
    [
        ("--log-file", "no/such/dir/w.log", "cannot open log file"),
        ("--log-file", ".", "cannot open log file"),
        ("--pid-file", "no/such/dir/w.pid", "cannot write pid file"),
    ],
)
def test_unwritable_file_fails_in_foreground_with_status_1(
    tmp_path: Path, echo_server: EchoServer, option: str, path: str, message: str
) -> None:
    result = wsproxy("-D", option, path, "127.0.0.1:0", echo_server.address, cwd=tmp_path)
    assert result.returncode == 1
    assert f"{message} {tmp_path / path}" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_syslog_socket_fails_in_foreground_with_status_1(
    tmp_path: Path, echo_server: EchoServer
) -> None:
    result = wsproxy(
        "-D",
        "--syslog",
        "no.sock",
        "127.0.0.1:0",
        echo_server.address,
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "cannot reach syslog" in result.stderr


# -- a good start --


def test_daemon_detaches_writes_pid_file_serves_logs_and_cleans_up(start_daemon) -> None:
    daemon = start_daemon()
    pid = daemon.pid
    assert running(pid)
    stat = proc_stat(pid)
    assert stat is not None
    _state, ppid, _pgrp, session, tty_nr = stat[:5]
    assert int(session) != os.getsid(0) and int(session) != pid  # new session, not its leader
    assert int(tty_nr) == 0 and int(ppid) != os.getpid()
    assert os.readlink(f"/proc/{pid}/cwd") == "/"
    for fd in (0, 1, 2):
        assert os.readlink(f"/proc/{pid}/fd/{fd}") == "/dev/null"
    assert daemon.result.stdout == "" and daemon.result.stderr == ""
    assert oct(os.stat(daemon.pid_path).st_mode & 0o777) == "0o644"

    echo_once(daemon.port)
    wait_until(lambda: "closed peer=" in daemon.log(), what="the session's log line")
    assert re.search(rf"{pid} INFO wsproxy.session: open peer=127\.0\.0\.1:\d+", daemon.log())

    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not running(pid), 10, "the daemon to exit")
    assert not daemon.pid_path.exists()
    assert "stopped" in daemon.log().splitlines()[-1]


def test_daemon_with_workers_names_the_master_and_stops_everything(start_daemon) -> None:
    daemon = start_daemon("--workers", "2")
    master = daemon.pid
    wait_until(lambda: daemon.log().count("worker started") == 2, what="two workers")
    workers = [int(p) for p in re.findall(r"worker started pid=(\d+)", daemon.log())]
    for pid in workers:
        assert running(pid) and proc_stat(pid)[1] == str(master)  # type: ignore[index]
    echo_once(daemon.port)
    os.kill(master, signal.SIGTERM)
    wait_until(lambda: not any(map(running, [master, *workers])), 15, "all processes to exit")
    assert not daemon.pid_path.exists()
    assert "master stopped" in daemon.log()


def test_daemon_without_a_log_destination_warns_on_the_terminal(
    tmp_path: Path, echo_server: EchoServer
) -> None:
    result = wsproxy("-D", "--pid-file", "w.pid", "127.0.0.1:0", echo_server.address, cwd=tmp_path)
    assert result.returncode == 0
    pid = int((tmp_path / "w.pid").read_text())
    os.kill(pid, signal.SIGTERM)
    assert "the log is discarded" in result.stderr
    wait_until(lambda: not running(pid), 10, "the daemon to exit")


def test_open_client_gets_1001_when_daemon_is_stopped(start_daemon) -> None:
    daemon = start_daemon()
    with connect(f"ws://127.0.0.1:{daemon.port}/", open_timeout=5) as ws:
        ws.send(b"x")
        assert ws.recv(timeout=5) == b"x"
        os.kill(daemon.pid, signal.SIGTERM)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001


def test_pid_file_of_a_running_wsproxy_refuses_the_start(start_daemon, echo_server) -> None:
    first = start_daemon()
    result = wsproxy("-D", "--pid-file", "w.pid", "127.0.0.1:0", echo_server.address, cwd=first.dir)
    assert result.returncode == 1
    assert f"names a running wsproxy (pid {first.pid})" in result.stderr
    assert first.pid_path.read_text() == f"{first.pid}\n" and running(first.pid)
    echo_once(first.port)


@pytest.mark.parametrize("stale", ["exited process", "other program", "not a pid"])
def test_stale_pid_file_is_replaced(start_daemon, tmp_path: Path, stale: str) -> None:
    with subprocess.Popen(["sleep", "30"]) as other:
        if stale == "exited process":
            text = f"{_pid_of_finished()}\n"
        elif stale == "other program":
            text = f"{other.pid}\n"
        else:
            text = "garbage\n"
        (tmp_path / "w.pid").write_text(text)
        daemon = start_daemon()
        other.kill()
    assert daemon.pid_path.read_text() == f"{daemon.pid}\n"
    assert "replacing stale pid file" in daemon.log() or stale == "not a pid"
    echo_once(daemon.port)


def _pid_of_finished() -> int:
    with subprocess.Popen(["true"]) as proc:
        proc.wait()
    return proc.pid


@pytest.mark.parametrize("plugin", [[], ["--token-plugin", "websockify.token_plugins.TokenFile"]])
def test_relative_paths_still_name_the_same_files_after_detaching(
    start_daemon, tmp_path: Path, echo_server: EchoServer, plugin: list[str]
) -> None:
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(f"first: {echo_server.address}\n")
    daemon = start_daemon(*plugin, "--token-source", "tokens.txt", target=())
    echo_once_to(f"ws://127.0.0.1:{daemon.port}/?token=first")
    tokens.write_text(f"first: {echo_server.address}\nsecond: {echo_server.address}\n")
    os.kill(daemon.pid, signal.SIGHUP)  # re-read from "/" as cwd: only an absolute path works
    wait_until(
        lambda: f"reloaded targets=by token from {tokens} (2 tokens)" in daemon.log(),
        what="token reload",
    )
    echo_once_to(f"ws://127.0.0.1:{daemon.port}/?token=second")


def test_sighup_reopens_a_rotated_log_file(start_daemon) -> None:
    daemon = start_daemon()
    port = daemon.port
    rotated = daemon.log_path.with_suffix(".log.1")
    daemon.log_path.rename(rotated)
    os.kill(daemon.pid, signal.SIGHUP)
    wait_until(daemon.log_path.exists, what="the log file to be reopened")
    echo_once(port)
    wait_until(lambda: "closed peer=" in daemon.log(), what="the session in the new log")
    assert "open peer=" not in rotated.read_text()
    assert "listening on" in rotated.read_text()


def test_log_file_that_cannot_be_reopened_keeps_the_old_one(start_daemon, tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    daemon = start_daemon(log_file="logs/w.log")
    port = daemon.port
    (tmp_path / "logs").rename(tmp_path / "old")
    os.kill(daemon.pid, signal.SIGHUP)
    old = tmp_path / "old" / "w.log"
    wait_until(lambda: "cannot reopen log file" in old.read_text(), what="the reopen error")
    assert f"path={tmp_path / 'logs' / 'w.log'} reason=No such file or directory" in old.read_text()
    echo_once(port)
    wait_until(lambda: "closed peer=" in old.read_text(), what="the session in the old file")


def test_syslog_receives_log_lines(tmp_path: Path, echo_server: EchoServer, run_proxy) -> None:
    """websockify's default: RFC 5424 lines, facility user when not a daemon."""
    address = tmp_path / "log.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as syslog:
        syslog.bind(str(address))
        syslog.settimeout(5)
        proxy = run_proxy(["--syslog", str(address), "127.0.0.1:0", echo_server.address])
        pid = proxy.proc.pid
        host = re.escape(socket.gethostname())
        stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
        # <12>, <14>: facility user (1) * 8 + severity warning (4), info (6)
        limit = syslog.recv(4096).decode()  # the open-file limit: said first
        assert re.fullmatch(
            rf"<14>1 {stamp} {host} wsproxy {pid} - - INFO wsproxy: open file limit .*", limit
        ), limit
        warning = syslog.recv(4096).decode()  # origins is empty
        assert re.fullmatch(
            rf"<12>1 {stamp} {host} wsproxy {pid} - - WARNING wsproxy: origins is empty.*", warning
        ), warning
        listening = syslog.recv(4096).decode()
        assert re.fullmatch(
            rf"<14>1 {stamp} {host} wsproxy {pid} - - INFO wsproxy: listening on "
            rf"127\.0\.0\.1:{proxy.port}, target {re.escape(echo_server.address)}",
            listening,
        ), listening
        echo_once(proxy.port)
        messages = [syslog.recv(4096).decode() for _ in range(2)]
    assert "open peer=" in messages[0] and "closed peer=" in messages[1]
    assert "listening on" in proxy.log  # stderr still logs when not a daemon


def test_wrapped_program_of_a_daemon_runs_where_wsproxy_was_started(
    start_daemon, tmp_path: Path
) -> None:
    daemon = start_daemon(target=("--", "sh", "-c", "pwd; exec sleep 30"))
    wait_until(lambda: f": {tmp_path}" in daemon.log(), what="the program's pwd in the log")
    pid = daemon.pid
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not running(pid), what="the daemon to stop")
    assert not daemon.pid_path.exists()
