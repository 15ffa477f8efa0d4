"""websockify 0.13's process options with their meaning there, each run as the real command line
against real clients: ``--heartbeat``, ``--run-once``, ``--timeout``, ``--idle-timeout``,
``--traffic`` and ``--libserver``."""

from __future__ import annotations

import contextlib
import datetime
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import EchoServer, ProxyProcess, raw_connect, read_http_head, run_wsproxy
from websockets.sync.client import connect
from wsraw import RawClient

from wsproxy.protocol.rfc6455 import Close, Opcode, Ping

SLACK = 1.0  # seconds of scheduling delay allowed on a loaded machine
LOG_RESOLUTION = 0.001  # seconds: log times are to the millisecond
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ")


def log_time(proxy: ProxyProcess, pattern: str) -> float:
    """The time (seconds since the epoch) of the first log line that matches ``pattern``."""
    line = next(line for line in proxy.lines if re.search(pattern, line))
    match = LOG_TIME.match(line)
    assert match, line
    stamp = datetime.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S")
    return stamp.timestamp() + int(match.group(2)) / 1000


def exit_within(proxy: ProxyProcess, seconds: float) -> int:
    """The exit status of ``proxy``, which must end on its own within ``seconds``."""
    try:
        return proxy.proc.wait(seconds)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"wsproxy still running after {seconds} s:\n{proxy.log}") from None


# -- --heartbeat --


def test_heartbeat_closes_a_client_that_never_answers(run_proxy, echo_server: EchoServer) -> None:
    interval = 1.0
    proxy = run_proxy(["--heartbeat", "1", "127.0.0.1:0", echo_server.address])
    started = time.monotonic()
    client = RawClient(proxy.port, timeout=10)  # reads everything, writes nothing
    pings = 0
    while True:
        event = client.next_event()
        if isinstance(event, Ping):
            pings += 1
        elif isinstance(event, Close):
            break
    closed_after = time.monotonic() - started
    assert pings >= 1
    assert closed_after <= 2 * interval + SLACK, closed_after  # within 2N (README)
    assert event.code == 1011 and event.reason == "heartbeat timeout"
    proxy.wait_log(r"heartbeat timeout peer=127\.0\.0\.1:\d+")
    proxy.wait_log(r"closed peer=.* by=server code=1011 reason=\"heartbeat timeout\"")
    client.sock.close()


@pytest.fixture
def busy_target() -> Iterator[str]:
    """The address of a target that sends zeros for as long as its first client reads (a VNC
    screen that keeps changing)."""
    flood = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        conn, _ = flood.accept()
        with conn, contextlib.suppress(OSError):
            while not stop.is_set():
                conn.sendall(b"\0" * 65536)

    threading.Thread(target=serve, daemon=True).start()
    yield f"127.0.0.1:{flood.getsockname()[1]}"
    stop.set()
    flood.close()


def test_heartbeat_frees_a_dead_client_of_a_busy_target(run_proxy, busy_target: str) -> None:
    """A vanished client of a target that keeps sending: the relay is stuck writing to the
    client, so even the close frame cannot go out; the session still ends."""
    proxy = run_proxy(["--heartbeat", "1", "--close-timeout", "0.5", "127.0.0.1:0", busy_target])
    client = RawClient(proxy.port, timeout=10)
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # and never reads
    started = time.monotonic()
    proxy.wait_log(r"closed peer=.* code=1011 reason=\"heartbeat timeout\"", timeout=10)
    # Closed within 2N (README), then close_timeout for the frame that cannot go out.
    assert time.monotonic() - started <= 2 * 1 + 0.5 + SLACK
    client.sock.close()


def test_heartbeat_keeps_a_live_client_of_a_busy_target(run_proxy, busy_target: str) -> None:
    """A client that reads a target's endless stream, slowly, and only answers pings (a VNC
    viewer watching a screen): its pings go out between data frames, so it is never closed."""
    proxy = run_proxy(["--heartbeat", "1", "127.0.0.1:0", busy_target])
    got = 0
    with connect(proxy.url, open_timeout=5, ping_interval=None, max_size=None) as ws:
        deadline = time.monotonic() + 6.5  # past the 4 intervals a ping may wait, and more
        while time.monotonic() < deadline:
            got += len(ws.recv(timeout=5))
            time.sleep(0.005)  # slower than the target: the relay's writes wait for us
        ws.close()
    assert got > 1 << 20
    proxy.wait_log(r"closed peer=.* by=client code=1000")
    assert "heartbeat timeout" not in proxy.log


def test_heartbeat_keeps_a_client_that_answers(run_proxy, echo_server: EchoServer) -> None:
    proxy = run_proxy(["--heartbeat", "1", "127.0.0.1:0", echo_server.address])
    client = RawClient(proxy.port, timeout=10)
    deadline = time.monotonic() + 4.5  # four intervals and a half
    pongs = 0
    client.sock.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            event = client.next_event()
        except TimeoutError:
            continue
        assert not isinstance(event, Close), event
        if isinstance(event, Ping):
            client.send_frame(Opcode.PONG, event.payload)  # answers with nothing but pongs
            pongs += 1
    assert pongs >= 3
    client.sock.settimeout(5)
    client.send_frame(Opcode.BINARY, b"still here")
    assert client.recv_data(10) == b"still here"
    assert "heartbeat timeout" not in proxy.log


def test_heartbeat_with_a_real_client_library(run_proxy, echo_server: EchoServer) -> None:
    """websockets answers pings on its own: its session outlives many intervals."""
    proxy = run_proxy(["--heartbeat", "1", "127.0.0.1:0", echo_server.address])
    with connect(proxy.url, open_timeout=5, ping_interval=None) as ws:
        time.sleep(3.5)
        ws.send(b"alive")
        assert ws.recv(timeout=5) == b"alive"
    assert "heartbeat timeout" not in proxy.log


# -- --run-once --


def test_run_once_exits_0_after_one_websocket_connection(
    run_proxy, echo_server: EchoServer, tmp_path: Path
) -> None:
    (tmp_path / "index.html").write_text("<p>console</p>")
    proxy = run_proxy(["--run-once", "--web", str(tmp_path), "127.0.0.1:0", echo_server.address])
    with raw_connect(proxy.port) as page:  # the page: a plain HTTP request does not count ...
        page.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, _ = read_http_head(page)
        assert status == 200 and headers.get("connection") != "close"
        time.sleep(0.3)
        assert proxy.proc.poll() is None
        # ... and its kept-alive connection does not hold the WebSocket back.
        with connect(proxy.url, open_timeout=5) as ws:
            ws.send(b"once")
            assert ws.recv(timeout=5) == b"once"
        assert exit_within(proxy, 10) == 0
    assert "stopping: --run-once, the WebSocket connection has ended" in proxy.log


# -- --timeout --


def test_timeout_exits_0_when_no_client_came(run_proxy, echo_server: EchoServer) -> None:
    started = time.monotonic()
    proxy = run_proxy(["--timeout", "1", "127.0.0.1:0", echo_server.address])
    assert exit_within(proxy, 10) == 0
    assert time.monotonic() - started >= 1
    assert "stopping: --timeout 1s reached with no connection open" in proxy.log


def test_timeout_lets_an_open_session_run_and_refuses_new_ones(
    run_proxy, echo_server: EchoServer
) -> None:
    """websockify stops accepting at the timeout; its session processes run to their end."""
    proxy = run_proxy(["--timeout", "1", "127.0.0.1:0", echo_server.address])
    with connect(proxy.url, open_timeout=5) as ws:
        proxy.wait_log(r"stopping: --timeout 1s reached: no new connections", timeout=5)
        with socket.socket() as late, pytest.raises(ConnectionRefusedError):
            late.connect(("127.0.0.1", proxy.port))
        ws.send(b"after the timeout")
        assert ws.recv(timeout=5) == b"after the timeout"
        assert proxy.proc.poll() is None
    assert exit_within(proxy, 10) == 0


# -- --idle-timeout --


def test_idle_timeout_exits_0_after_n_seconds_without_a_connection(
    run_proxy, echo_server: EchoServer
) -> None:
    proxy = run_proxy(["--idle-timeout", "1", "127.0.0.1:0", echo_server.address])
    with connect(proxy.url, open_timeout=5) as ws:
        time.sleep(1.5)  # longer than the idle timeout, but a connection is open
        assert proxy.proc.poll() is None
        ws.send(b"busy")
        assert ws.recv(timeout=5) == b"busy"
    assert exit_within(proxy, 10) == 0
    # The server's clock starts when its session ends: measure between its own log lines.
    closed = log_time(proxy, r"closed peer=")
    stopping = log_time(proxy, r"stopping: --idle-timeout 1s: no connection open for that long")
    assert stopping - closed >= 1.0 - LOG_RESOLUTION, (closed, stopping)


@pytest.mark.parametrize("option", [["--run-once"], ["--timeout", "5"], ["--idle-timeout", "5"]])
def test_exit_options_refuse_several_workers(echo_server: EchoServer, option: list[str]) -> None:
    result = run_wsproxy([*option, "--workers", "2", "0", echo_server.address])
    assert result.returncode == 2
    assert "workers = 1" in result.stderr


# -- --traffic, --libserver --


def test_traffic_writes_websockify_characters(run_proxy, echo_server: EchoServer) -> None:
    proxy = run_proxy(["--traffic", "127.0.0.1:0", echo_server.address])
    with connect(proxy.url, open_timeout=5) as ws:
        for _ in range(3):
            ws.send(b"x")
            assert ws.recv(timeout=5) == b"x"
    proxy.wait_log(r"closed peer=")
    assert "Traffic Legend:" in proxy.log
    assert proxy.log.count("}>") == 3 and proxy.log.count("{<") == 3


def test_no_traffic_characters_without_the_option(proxy: ProxyProcess) -> None:
    with connect(proxy.url, open_timeout=5) as ws:
        ws.send(b"x")
        assert ws.recv(timeout=5) == b"x"
    proxy.wait_log(r"closed peer=")
    assert "}>" not in proxy.log and "Traffic Legend" not in proxy.log


def test_libserver_is_accepted_and_said_to_be_ignored(run_proxy, echo_server: EchoServer) -> None:
    proxy = run_proxy(["--libserver", "127.0.0.1:0", echo_server.address])
    proxy.wait_log(r"--libserver is ignored")
    with connect(proxy.url, open_timeout=5) as ws:
        ws.send(b"x")
        assert ws.recv(timeout=5) == b"x"
