"""Metrics and health (``metrics_listen``): /metrics scraped after real traffic, /healthz."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import (
    ROOT,
    EchoServer,
    ProxyProcess,
    free_port,
    read_http_head,
    read_until_closed,
    wait_until,
)
from prometheus_client.parser import text_string_to_metric_families
from test_workers import Clients, echoes, worker_pids
from test_wrap import program
from websockets.sync.client import connect

from wsproxy.metrics import NullMetrics, close_code_label, open_metrics
from wsproxy.settings import Settings

METRICS_AT = r"metrics at http://(\S+)/metrics"
UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def scrape(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(base + "/metrics", timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def wait_count(proxy: ProxyProcess, pattern: str, count: int) -> None:
    wait_until(
        lambda: sum(bool(re.search(pattern, line)) for line in list(proxy.lines)) >= count,
        what=f"{count} log lines matching {pattern}",
    )


def wsproxy(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wsproxy", *args],
        capture_output=True, text=True, timeout=30, cwd=ROOT, env=env,
    )  # fmt: skip


def echo(ws, data: bytes) -> None:  # type: ignore[no-untyped-def]
    ws.send(data)
    got = b""
    while len(got) < len(data):
        got += ws.recv(timeout=5)
    assert got == data


def sigterm_and_see_healthz_503_while_draining(proxy: ProxyProcess, base: str) -> None:
    """SIGTERM with a session open whose client never answers the close frame, so the drain
    lasts close_timeout: /healthz is 503 meanwhile, then wsproxy exits 0."""
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        sock.sendall(UPGRADE)
        assert read_http_head(sock)[0] == 101
        proxy.proc.send_signal(signal.SIGTERM)
        proxy.wait_log(r"stopping: closing 1 session")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(base + "/healthz", timeout=5)
        assert info.value.code == 503
    assert proxy.stop() == 0


def test_metrics_counters_match_the_traffic_sent(run_proxy, echo_server: EchoServer) -> None:  # type: ignore[no-untyped-def]
    proxy = run_proxy(["--metrics-listen", "127.0.0.1:0", "127.0.0.1:0", echo_server.address])
    base = "http://" + proxy.wait_log(METRICS_AT)[1]
    sizes = [1000, 2500, 70000]
    with connect(proxy.url, subprotocols=["binary"], max_size=None) as ws:
        echo(ws, os.urandom(sizes[0]))
        wait_count(proxy, r"open peer=", 1)
        during = scrape(base)
        assert during[("wsproxy_sessions_open", (("protocol", "rfc6455"),))] == 1
    for size in sizes[1:]:
        with connect(proxy.url, max_size=None) as ws:
            echo(ws, os.urandom(size))
    # Refusals: a plain GET (404) and a malformed request (400).
    for request in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"NONSENSE\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
            sock.sendall(request)
            read_http_head(sock)
            read_until_closed(sock)
    wait_count(proxy, r"closed peer=", len(sizes))
    wait_count(proxy, r"refused peer=", 2)

    after = scrape(base)
    total = sum(sizes)
    assert after[("wsproxy_payload_bytes_total", (("direction", "in"),))] == total
    assert after[("wsproxy_payload_bytes_total", (("direction", "out"),))] == total
    labels = (("closed_by", "client"), ("code", "1000"), ("protocol", "rfc6455"))
    assert after[("wsproxy_sessions_total", labels)] == len(sizes)
    assert after[("wsproxy_sessions_open", (("protocol", "rfc6455"),))] == 0
    assert after[("wsproxy_handshake_failures_total", (("reason", "404"),))] == 1
    assert after[("wsproxy_handshake_failures_total", (("reason", "400"),))] == 1
    assert after[("wsproxy_target_connect_seconds_count", ())] == len(sizes)
    assert 0 < after[("wsproxy_target_connect_seconds_sum", ())] < 5
    assert after[("wsproxy_wrap_restarts_total", ())] == 0
    assert after[("wsproxy_worker_restarts_total", ())] == 0


def test_healthz_is_ok_while_serving_and_unknown_paths_are_404(run_proxy, echo_server) -> None:  # type: ignore[no-untyped-def]
    proxy = run_proxy(["--metrics-listen", "127.0.0.1:0", "127.0.0.1:0", echo_server.address])
    base = "http://" + proxy.wait_log(METRICS_AT)[1]
    with urllib.request.urlopen(base + "/healthz", timeout=5) as response:
        assert response.status == 200
        assert response.read() == b"ok\n"
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(base + "/other", timeout=5)
    assert info.value.code == 404


@pytest.mark.parametrize("workers", ["1", "2"])
def test_metrics_without_prometheus_client_is_a_config_error(tmp_path: Path, workers: str) -> None:
    # A module that fails to import stands for the package not being installed.
    (tmp_path / "prometheus_client.py").write_text("raise ImportError('not installed')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = wsproxy(
        "--workers", workers, "--metrics-listen", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:9",
        env=env,
    )  # fmt: skip
    assert result.returncode == 2
    assert "metrics_listen" in result.stderr
    assert "pip install 'wsproxy[metrics]'" in result.stderr


@pytest.mark.parametrize(
    "options",
    [[], ["-D"], ["-D", "--workers", "2"]],
    ids=["foreground", "daemon", "daemon-workers"],
)
def test_metrics_port_in_use_fails_at_start_with_exit_1(options: list[str], tmp_path: Path) -> None:
    # With -D the port is bound before detaching (and with workers before forking), so the
    # failure reaches the terminal too; the workers' value files do not outlive the failure.
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = wsproxy(
            *options, "--metrics-listen", f"127.0.0.1:{port}", "127.0.0.1:0", "127.0.0.1:9",
            env={**os.environ, "TMPDIR": str(tmp_path)},
        )  # fmt: skip
    assert result.returncode == 1
    assert f"cannot listen for metrics on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_without_metrics_listen_the_metrics_are_a_null_object() -> None:
    metrics = open_metrics(Settings.create(listen="6080", target="localhost:5900"))
    assert type(metrics) is NullMetrics
    metrics.wrap_restarts.inc()  # other features call these unconditionally
    metrics.worker_restarts.inc()
    metrics.session_closed("rfc6455", "client", 1000, 1, 2)


def test_healthz_is_503_while_draining(run_proxy, echo_server) -> None:  # type: ignore[no-untyped-def]
    proxy = run_proxy(
        [
            "--metrics-listen",
            "127.0.0.1:0",
            "--close-timeout",
            "5",
            "127.0.0.1:0",
            echo_server.address,
        ]
    )
    base = "http://" + proxy.wait_log(METRICS_AT)[1]
    sigterm_and_see_healthz_503_while_draining(proxy, base)


# -- with --workers: every process records, one endpoint of the master's serves the sum --

OPEN = ("wsproxy_sessions_open", (("protocol", "rfc6455"),))
WORKERS_METRICS = ["--workers", "2", "--metrics-listen", "127.0.0.1:0"]


def start_workers(run_proxy, *args: str, **kwargs: object) -> tuple[ProxyProcess, str]:  # type: ignore[no-untyped-def]
    """wsproxy with two workers and metrics; returns it once both workers run, and the base URL."""
    proxy = run_proxy([*WORKERS_METRICS, *args], **kwargs)
    base = "http://" + proxy.wait_log(METRICS_AT)[1]
    wait_until(lambda: len(worker_pids(proxy)) == 2, what="two workers")
    return proxy, base


def test_workers_sessions_on_both_workers_are_counted_in_one_scrape(
    run_proxy, echo_server: EchoServer
) -> None:  # type: ignore[no-untyped-def]
    proxy, base = start_workers(run_proxy, "127.0.0.1:0", echo_server.address)
    served = Clients(proxy)  # each client has echoed b"hello" once
    try:
        served.spread(2)
        sessions = [ws for group in served.by_worker.values() for ws in group]
        sent = 5 * len(sessions)
        for n, ws in enumerate(sessions):
            echo(ws, os.urandom(1000 * (n + 1)))
            sent += 1000 * (n + 1)
        assert scrape(base)[OPEN] == len(sessions)
    finally:
        served.close()
    wait_count(proxy, r"closed peer=", len(sessions))

    after = scrape(base)
    assert after[("wsproxy_payload_bytes_total", (("direction", "in"),))] == sent
    assert after[("wsproxy_payload_bytes_total", (("direction", "out"),))] == sent
    labels = (("closed_by", "client"), ("code", "1000"), ("protocol", "rfc6455"))
    assert after[("wsproxy_sessions_total", labels)] == len(sessions)
    assert after[OPEN] == 0
    assert after[("wsproxy_target_connect_seconds_count", ())] == len(sessions)
    assert after[("wsproxy_worker_restarts_total", ())] == 0


def test_workers_killed_worker_counts_a_restart_and_its_open_sessions_vanish(
    run_proxy, echo_server: EchoServer
) -> None:  # type: ignore[no-untyped-def]
    proxy, base = start_workers(run_proxy, "127.0.0.1:0", echo_server.address)
    served = Clients(proxy)
    try:
        served.spread(2)
        victim, survivor = list(served.by_worker)
        assert scrape(base)[OPEN] == len(served.by_worker[victim] + served.by_worker[survivor])
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: len(worker_pids(proxy)) == 3, what="a replacement worker")
        after = scrape(base)
        assert after[("wsproxy_worker_restarts_total", ())] == 1
        assert after[OPEN] == len(served.by_worker[survivor])
        assert all(echoes(ws) for ws in served.by_worker[survivor])
    finally:
        served.close()


def test_workers_metrics_endpoint_that_dies_is_started_again(run_proxy, echo_server) -> None:  # type: ignore[no-untyped-def]
    proxy, base = start_workers(run_proxy, "127.0.0.1:0", echo_server.address)
    endpoint = int(proxy.wait_log(r"(\d+) INFO wsproxy\.metrics: metrics at")[1])
    os.kill(endpoint, signal.SIGKILL)
    wait_count(proxy, r"INFO wsproxy\.metrics: metrics at", 2)
    assert scrape(base)[("wsproxy_worker_restarts_total", ())] == 0
    assert proxy.stop() == 0


# Serves one connection, telling whether it sees prometheus_client's variable, then exits.
ONE_SHOT_ENV = program(
    """
    import os, socket, sys
    srv = socket.create_server(("0.0.0.0", int(sys.argv[1])))
    conn, _ = srv.accept()
    conn.sendall(repr(os.environ.get("PROMETHEUS_MULTIPROC_DIR")).encode())
    conn.close()
    """
)


def test_workers_wrapped_program_restarts_are_counted(run_proxy) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    proxy = run_proxy(
        [
            *WORKERS_METRICS,
            "--wrap-mode=respawn",
            f"127.0.0.1:{port}",
            "--",
            *ONE_SHOT_ENV,
            str(port),
        ]
    )
    base = "http://" + proxy.wait_log(METRICS_AT)[1]
    for restart in (1, 2, 3):
        with connect(proxy.url, open_timeout=10) as ws:
            assert ws.recv(timeout=5) == b"None"  # the variable is ours, not the program's
        proxy.wait_log(rf"wrap respawn name=python\S* restart={restart} ")
    assert scrape(base)[("wsproxy_wrap_restarts_total", ())] == 3
    assert proxy.stop() == 0


def test_workers_healthz_is_503_while_draining_and_value_files_are_removed_at_exit(
    run_proxy, echo_server: EchoServer, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    proxy, base = start_workers(
        run_proxy,
        "--close-timeout", "5", "127.0.0.1:0", echo_server.address,
        env={"TMPDIR": str(tmp_path)},
    )  # fmt: skip
    (files,) = tmp_path.iterdir()
    assert files.name.startswith("wsproxy-metrics-")
    assert files.stat().st_mode & 0o777 == 0o700
    assert any(files.glob("counter_*.db"))
    with urllib.request.urlopen(base + "/healthz", timeout=5) as response:
        assert response.status == 200
    sigterm_and_see_healthz_503_while_draining(proxy, base)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("code", "label"),
    [
        (1000, "1000"),
        (1006, "1006"),  # recorded for a dropped connection, never sent
        (1012, "1012"),  # valid (IANA registry), though not in our CloseCode enum
        (1014, "1014"),
        (1004, "1xxx"),  # reserved
        (1015, "1xxx"),  # never on the wire
        (2999, "2xxx"),
        (3000, "3xxx"),
        (4999, "4xxx"),
    ],
)
def test_close_code_labels_are_bounded_and_keep_valid_protocol_codes(code: int, label: str) -> None:
    assert close_code_label(code) == label
