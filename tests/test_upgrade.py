"""SIGUSR2 upgrades in place with the real command line: a client connecting every 20 ms never
fails, the pid file names the new process, an open session relays across the switch and the old
process exits once it has closed. With ``-D --pid-file``, ``--workers 2`` and a wrapped program."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import EchoServer, ProxyProcess, free_port, nofile, wait_until
from test_daemon import running, wsproxy
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

PROBE_EVERY = 0.02  # seconds between the prober's connections
NEW_PID_WITHIN = 10.0


class Prober(threading.Thread):
    """Connects every 20 ms: opening handshake, one echo, close. Keeps what failed, with the
    time (monotonic) each failed attempt started. ``source``: the client address to bind."""

    def __init__(self, url: str, source: str | None = None) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.source = source
        self.done = threading.Event()
        self.ok = 0
        self.failed: list[tuple[float, str]] = []

    @property
    def failures(self) -> list[str]:
        return [text for _, text in self.failed]

    def run(self) -> None:
        n = 0
        while not self.done.is_set():
            n += 1
            data = b"probe %d" % n
            started = time.monotonic()
            try:
                with self.connect() as ws:
                    ws.send(data)
                    assert ws.recv(timeout=5) == data
                self.ok += 1
            except Exception as exc:  # every failure is the finding: keep them all
                self.failed.append((started, f"{type(exc).__name__}: {exc}"))
            time.sleep(PROBE_EVERY)

    def connect(self) -> ClientConnection:
        if self.source is None:
            return connect(self.url, open_timeout=5, close_timeout=5)
        host, port = urlsplit(self.url).hostname, urlsplit(self.url).port
        sock = socket.create_connection((host, port), timeout=5, source_address=(self.source, 0))
        return connect(self.url, sock=sock, open_timeout=5, close_timeout=5)

    def finish(self) -> None:
        self.done.set()
        self.join(10)
        assert not self.is_alive()


def relays(ws: ClientConnection, tag: bytes) -> None:
    ws.send(tag)
    assert ws.recv(timeout=5) == tag


def read_pid(path: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(path.read_text())
    return None


def upgrade_and_check(
    url: str,
    pid_file: Path,
    old_pid: int,
    old_exited: Callable[[], bool],
    log: Callable[[], str],
) -> int:
    """The acceptance steps around one SIGUSR2; ``log`` reads the log so far. Returns the new
    pid."""
    prober = Prober(url)
    prober.start()
    try:
        with connect(url, open_timeout=5) as ws:
            wait_until(lambda: prober.ok >= 5, what="the prober connecting")
            relays(ws, b"before")
            os.kill(old_pid, signal.SIGUSR2)
            started = time.monotonic()
            new_pid = wait_new_pid(pid_file, old_pid)
            assert time.monotonic() - started < NEW_PID_WITHIN
            assert running(new_pid)
            seen = prober.ok
            wait_until(lambda: prober.ok >= seen + 10, what="the prober after the switch")
            wait_until(lambda: "upgrade: no longer accepting" in log(), what="the old draining")
            relays(ws, b"after")  # the old process still relays this session
            assert not old_exited(), "the old process left before its session closed"
        wait_until(old_exited, timeout=10, what="the old process to exit once drained")
        seen = prober.ok
        wait_until(lambda: prober.ok >= seen + 5, what="the prober on the new process alone")
    finally:
        prober.finish()
    assert prober.failures == [], prober.failures
    return new_pid


def upgrade_foreground(proxy: ProxyProcess, pid_file: Path, pids: list[int]) -> int:
    """:func:`upgrade_and_check` for a process run in the foreground; returns the new pid."""
    new_pid = upgrade_and_check(
        proxy.url,
        pid_file,
        proxy.proc.pid,
        lambda: proxy.proc.poll() is not None,
        lambda: proxy.log,
    )
    pids.append(new_pid)
    assert proxy.proc.returncode == 0
    return new_pid


def wait_new_pid(pid_file: Path, old_pid: int) -> int:
    """The pid the pid file names once it no longer names ``old_pid``."""
    new_pid = wait_until(
        lambda: (pid := read_pid(pid_file)) != old_pid and pid,
        timeout=NEW_PID_WITHIN,
        what="the pid file naming the new process",
    )
    assert isinstance(new_pid, int)
    return new_pid


@pytest.fixture
def pids() -> Iterator[list[int]]:
    """Pids to SIGTERM (then SIGKILL) after the test: the processes the upgrade started."""
    started: list[int] = []
    yield started
    for pid in started:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    for pid in started:
        while running(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if running(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_daemon_with_pid_file(tmp_path: Path, echo_server: EchoServer, pids: list[int]) -> None:
    port = free_port()
    args = ["-D", "--pid-file", "w.pid", "--log-file", "w.log"]
    result = wsproxy(*args, f"127.0.0.1:{port}", echo_server.address, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    pid_file = tmp_path / "w.pid"
    old_pid = read_pid(pid_file)
    assert old_pid is not None
    pids.append(old_pid)
    new_pid = upgrade_and_check(
        f"ws://127.0.0.1:{port}/",
        pid_file,
        old_pid,
        lambda: not running(old_pid),
        (tmp_path / "w.log").read_text,
    )
    pids.append(new_pid)
    log = (tmp_path / "w.log").read_text()
    assert "upgrade: the new process is ready" in log
    assert "upgrade: no longer accepting" in log


def test_workers(
    run_proxy: type[ProxyProcess], echo_server: EchoServer, tmp_path: Path, pids: list[int]
) -> None:
    pid_file = tmp_path / "w.pid"
    proxy = run_proxy(
        ["--workers", "2", "--pid-file", str(pid_file), "127.0.0.1:0", echo_server.address]
    )
    new_pid = upgrade_foreground(proxy, pid_file, pids)
    proxy.wait_log(rf" {new_pid} INFO wsproxy.workers: master started workers=2")
    assert "upgrade: draining workers=2" in proxy.log


def test_new_process_starts_from_the_users_file_limit(
    run_proxy: type[ProxyProcess], echo_server: EchoServer, tmp_path: Path, pids: list[int]
) -> None:
    # Else it would find the raised limit as its user's, and give it to the programs it starts.
    pid_file = tmp_path / "w.pid"
    args = ["--pid-file", str(pid_file), "127.0.0.1:0", echo_server.address]
    proxy = run_proxy(args, prefix=nofile(1000, 4000))
    new_pid = upgrade_foreground(proxy, pid_file, pids)
    proxy.wait_log(rf" {new_pid} INFO wsproxy: open file limit raised from 1000 to 4000")


@pytest.mark.parametrize("workers", ["1", "2"])
def test_wrapped_program_is_handed_over(
    run_proxy: type[ProxyProcess], tmp_path: Path, pids: list[int], workers: str
) -> None:
    port = free_port()
    pid_file = tmp_path / "w.pid"
    program = ["socat", f"TCP-LISTEN:{port},reuseaddr,fork", "EXEC:cat"]
    args = ["--workers", workers, "--pid-file", str(pid_file)]
    proxy = run_proxy([*args, f"127.0.0.1:{port}", "--", *program])
    program_pid = int(proxy.wait_log(r"wrap started name=socat pid=(\d+)").group(1))
    new_pid = upgrade_foreground(proxy, pid_file, pids)
    adopter = new_pid if workers == "1" else r"\d+"  # the new master's keeper under --workers
    proxy.wait_log(rf" {adopter} INFO wsproxy.wrap: wrap adopted name=socat pid={program_pid} ")
    assert running(program_pid)  # not restarted: the same program serves on
    assert proxy.log.count("wrap started") == 1


def test_failed_new_process_leaves_the_old_one_serving(
    run_proxy: type[ProxyProcess], echo_server: EchoServer, tmp_path: Path
) -> None:
    ini = tmp_path / "w.ini"
    ini.write_text(f"[wsproxy]\nlisten = 127.0.0.1:0\ntarget = {echo_server.address}\n")
    proxy = run_proxy(["-c", "w.ini"], cwd=tmp_path)
    ini.write_text("[wsproxy]\nlisten = 127.0.0.1:0\ntarget = nowhere\n")
    proxy.proc.send_signal(signal.SIGUSR2)
    line = proxy.wait_log(r"upgrade failed, still serving: .*").group(0)
    assert "w.ini:3: target" in line
    with connect(proxy.url, open_timeout=5) as ws:
        relays(ws, b"still the old one")
    assert proxy.proc.poll() is None


def test_sessions_left_at_upgrade_drain_timeout_get_1001(
    run_proxy: type[ProxyProcess], echo_server: EchoServer, tmp_path: Path, pids: list[int]
) -> None:
    pid_file = tmp_path / "w.pid"
    args = ["--upgrade-drain-timeout=0.5", "--pid-file", str(pid_file)]
    proxy = run_proxy([*args, "127.0.0.1:0", echo_server.address])
    with connect(proxy.url, open_timeout=5) as ws:
        relays(ws, b"before")
        proxy.proc.send_signal(signal.SIGUSR2)
        pids.append(wait_new_pid(pid_file, proxy.proc.pid))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    assert proxy.proc.wait(5) == 0
    with connect(proxy.url, open_timeout=5) as ws:  # the new process serves
        relays(ws, b"after")
