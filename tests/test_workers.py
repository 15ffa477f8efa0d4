"""``--workers N``: a master supervising N serving processes, driven as a real program with real
WebSocket clients. Every log line carries its process id, which tells which worker served whom."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import EchoServer, ProxyProcess, wait_until
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from wsproxy.workers import KILL_WAIT, RESPAWN_BACKOFF_MIN, STOP_KILL_AFTER, Arbiter, Worker

MAX_CLIENTS = 40  # bound on connections opened while waiting for both workers to get one


def running(pid: int) -> bool:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return text.rsplit(")", 1)[1].split()[0] != "Z"


def worker_pids(proxy: ProxyProcess) -> list[int]:
    return [int(m) for m in re.findall(r"worker started pid=(\d+)", proxy.log)]


def echoes(ws: ClientConnection, data: bytes = b"still here") -> bool:
    """Send ``data``; True if the same bytes come back (the echo may split them into messages)."""
    ws.send(data)
    got = b""
    while len(got) < len(data):
        got += ws.recv(timeout=5)
    return got == data


class Clients:
    """Open WebSocket clients, each with the pid of the worker that logged its session."""

    def __init__(self, proxy: ProxyProcess) -> None:
        self.proxy = proxy
        self.by_worker: dict[int, list[ClientConnection]] = {}
        self._stack = contextlib.ExitStack()

    def open(self) -> int:
        ws = self._stack.enter_context(
            connect(self.proxy.url, open_timeout=5, close_timeout=2, max_size=None)
        )
        assert echoes(ws, b"hello")
        port = ws.socket.getsockname()[1]
        m = self.proxy.wait_log(rf"(\d+) INFO wsproxy\.session: open peer=127\.0\.0\.1:{port} ")
        pid = int(m.group(1))
        self.by_worker.setdefault(pid, []).append(ws)
        return pid

    def spread(self, workers: int) -> None:
        """Open clients until ``workers`` different workers serve at least one each."""
        for _ in range(MAX_CLIENTS):
            if len(self.by_worker) >= workers:
                return
            self.open()
        raise AssertionError(f"{MAX_CLIENTS} sessions all landed on {list(self.by_worker)}")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._stack.close()


@pytest.fixture
def clients() -> Iterator[object]:
    made: list[Clients] = []

    def make(proxy: ProxyProcess) -> Clients:
        made.append(Clients(proxy))
        return made[-1]

    yield make
    for c in made:
        c.close()


@pytest.fixture
def two_workers(run_proxy, echo_server: EchoServer) -> ProxyProcess:
    proxy = run_proxy(["127.0.0.1:0", echo_server.address, "--workers", "2"])
    wait_until(lambda: len(worker_pids(proxy)) == 2, what="two workers")
    return proxy


def test_sessions_land_on_both_workers(two_workers: ProxyProcess, clients) -> None:
    served = clients(two_workers)
    served.spread(2)
    assert set(served.by_worker) == set(worker_pids(two_workers))
    assert two_workers.proc.pid not in served.by_worker  # the master serves nobody
    for sessions in served.by_worker.values():
        assert all(echoes(ws) for ws in sessions)


def test_killed_worker_is_replaced_and_other_sessions_go_on(
    two_workers: ProxyProcess, clients
) -> None:
    served = clients(two_workers)
    served.spread(2)
    victim, survivor = list(served.by_worker)
    os.kill(victim, signal.SIGKILL)

    m = two_workers.wait_log(
        rf"worker exited pid={victim} worker=(\d) status=signal SIGKILL lived=\S+ respawn_in=(\S+)"
    )
    # It died young: the first back-off step. respawn_in is the back-off itself, not a time left
    # (read off a clock that moved on), so it is exact whatever the load.
    assert float(m.group(2)) == RESPAWN_BACKOFF_MIN
    wait_until(lambda: len(worker_pids(two_workers)) == 3, what="a replacement worker")
    replacement = worker_pids(two_workers)[-1]
    assert re.search(
        rf"worker started pid={replacement} worker={m.group(1)}$", two_workers.log, re.M
    )
    assert replacement not in (victim, survivor) and running(replacement)
    assert not running(victim)

    for ws in served.by_worker[victim]:  # its sessions went down with it...
        with pytest.raises(ConnectionClosed):
            echoes(ws)
    for ws in served.by_worker[survivor]:  # ...the other worker's did not notice
        assert echoes(ws) and echoes(ws, os.urandom(70_000))
    served.spread(1)  # and new clients are served
    assert echoes(served.by_worker[survivor][0])


def test_sigterm_to_master_drains_both_workers_with_1001(two_workers, clients) -> None:
    served = clients(two_workers)
    served.spread(2)
    workers = worker_pids(two_workers)
    two_workers.proc.send_signal(signal.SIGTERM)
    for sessions in served.by_worker.values():
        for ws in sessions:
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    assert two_workers.stop() == 0
    for pid in workers:
        assert re.search(rf"worker exited pid={pid} worker=\d status=exit 0 ", two_workers.log)
        assert not running(pid)
    assert "master stopped restarts=0" in two_workers.log


def test_sighup_reopens_logs_in_master_and_workers(
    run_proxy, echo_server: EchoServer, tmp_path: Path, clients
) -> None:
    log_file = tmp_path / "w.log"
    proxy = run_proxy(
        ["127.0.0.1:0", echo_server.address, "--workers", "2", "--log-file", str(log_file)]
    )
    wait_until(lambda: len(worker_pids(proxy)) == 2, what="two workers")
    rotated = log_file.rename(tmp_path / "w.log.1")
    proxy.proc.send_signal(signal.SIGHUP)
    for pid in [proxy.proc.pid, *worker_pids(proxy)]:  # logged once the log is reopened
        proxy.wait_log(rf"{pid} INFO wsproxy\S*: reloaded targets=")
    served = clients(proxy)
    served.spread(2)  # both workers write their sessions to the new file
    text = log_file.read_text()
    for pid in served.by_worker:
        assert re.search(rf"{pid} INFO wsproxy\.session: open peer=", text)
    assert "open peer=" not in rotated.read_text()


def test_workers_stop_when_the_master_is_killed(two_workers: ProxyProcess) -> None:
    workers = worker_pids(two_workers)
    two_workers.proc.kill()
    two_workers.proc.wait(5)
    for pid in workers:
        wait_until(lambda pid=pid: not running(pid), 10, f"orphaned worker {pid} to stop")


def test_port_in_use_fails_before_any_worker_starts(echo_server: EchoServer) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "wsproxy", "--workers", "3", f"127.0.0.1:{port}",
             echo_server.address],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "worker started" not in result.stderr


@pytest.mark.parametrize("role", ["worker", "companion"])
def test_stop_does_not_wait_forever_for_a_child_that_survives_sigkill(
    role: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A child stuck in the kernel (D state) outlives SIGKILL; here a real child the master's
    # signals do not reach stands for it, and a blocking waitpid on it would hang the test.
    child = subprocess.Popen(["sleep", "60"])
    real_kill, real_waitpid = os.kill, os.waitpid

    def kill(pid: int, signum: int) -> None:
        if pid != child.pid:
            real_kill(pid, signum)

    def waitpid(pid: int, flags: int) -> tuple[int, int]:
        assert flags & os.WNOHANG, "a blocking waitpid: the master would hang on a D-state child"
        return real_waitpid(pid, flags)

    arbiter = Arbiter(1, lambda: 0, graceful_timeout=0.1)
    arbiter._wake_r, arbiter._wake_w = os.pipe()
    monkeypatch.setattr(os, "kill", kill)
    monkeypatch.setattr(os, "waitpid", waitpid)
    try:
        start = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="wsproxy.workers"):
            if role == "worker":
                arbiter.workers[child.pid] = Worker(child.pid, 1, start)
                arbiter._stop_workers()
                assert not arbiter.workers
            else:
                arbiter.companion_pid = child.pid
                arbiter._stop_companion()
        elapsed = time.monotonic() - start
        assert elapsed < 0.1 + STOP_KILL_AFTER + KILL_WAIT + 1
        assert f"{role} did not go away after SIGKILL pid={child.pid}" in caplog.text
    finally:
        monkeypatch.undo()
        child.kill()
        child.wait(timeout=5)
        os.close(arbiter._wake_r)
        os.close(arbiter._wake_w)


def test_repeated_sigterm_still_ends_the_master_with_status_0(two_workers: ProxyProcess) -> None:
    # Supervisors repeat SIGTERM; the master must finish its own stop, not die half-way.
    deadline = time.monotonic() + 15
    while two_workers.proc.poll() is None:
        two_workers.proc.send_signal(signal.SIGTERM)
        assert time.monotonic() < deadline, two_workers.log
        time.sleep(0.005)
    assert two_workers.proc.returncode == 0, two_workers.log


def test_workers_auto_starts_one_worker_per_cpu(
    run_proxy, echo_server: EchoServer, clients
) -> None:
    cpus = len(os.sched_getaffinity(0))
    proxy = run_proxy(["127.0.0.1:0", echo_server.address, "--workers", "auto"])
    if cpus == 1:  # one process serves, as with --workers 1
        assert worker_pids(proxy) == []
        return
    wait_until(lambda: len(worker_pids(proxy)) == cpus, what=f"{cpus} workers")
    served = clients(proxy)
    served.spread(cpus)
    assert all(echoes(ws) for sessions in served.by_worker.values() for ws in sessions)
