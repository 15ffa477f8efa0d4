"""The command-line forms websockify users type, run as the installed console script.

Every test here starts the real ``wsproxy`` program with the listen and target forms of
websockify's README and noVNC's docs (a bare port first of all), and relays a message.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest
from conftest import WSPROXY, EchoServer, ProxyProcess, free_port, wait_until
from conftest import ws_echo as echo
from websockets.sync.client import connect


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_bare_port_listens_on_every_address_and_relays(run_proxy, echo_server: EchoServer) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    proc = run_proxy([str(port), f"localhost:{echo_server.port}"])
    assert proc.port == port
    assert "Traceback" not in proc.log
    assert echo(f"ws://127.0.0.1:{port}/") == b"ping"
    assert echo(f"ws://localhost:{port}/") == b"ping"
    if ipv6_loopback():
        assert echo(f"ws://[::1]:{port}/") == b"ping"
    # The client is logged by its IPv4 address, not as an IPv4-mapped IPv6 one.
    proc.wait_log(r"open peer=127\.0\.0\.1:\d+ ")


@pytest.mark.parametrize("form", ["0.0.0.0:{port}", "[::]:{port}", "localhost:{port}"])
def test_listen_forms(run_proxy, echo_server: EchoServer, form: str) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    proc = run_proxy([form.format(port=port), echo_server.address])
    assert proc.port == port
    assert echo(f"ws://127.0.0.1:{port}/") == b"ping"


def test_ipv6_loopback_listen_and_unbracketed_ipv6_target(run_proxy) -> None:  # type: ignore[no-untyped-def]
    if not ipv6_loopback():
        pytest.fail("this machine has no IPv6 loopback")
    with socket.create_server(("::1", 0), family=socket.AF_INET6) as target:
        target_port = target.getsockname()[1]
        port = free_port()
        proc = run_proxy([f"[::1]:{port}", f"::1:{target_port}"])  # websockify splits at the last :
        with connect(f"ws://[::1]:{port}/", open_timeout=5) as ws:
            conn, _ = target.accept()
            with conn:
                ws.send(b"to v6")
                assert conn.recv(16) == b"to v6"
        proc.wait_log(rf"target=\[::1\]:{target_port}")


def test_bare_port_as_a_daemon(tmp_path: Path, echo_server: EchoServer) -> None:
    port = free_port()
    pid_file = tmp_path / "w.pid"
    result = subprocess.run(
        [WSPROXY, "-D", "--pid-file", str(pid_file), str(port), echo_server.address],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    pid = int(pid_file.read_text())
    try:
        assert echo(f"ws://127.0.0.1:{port}/") == b"ping"
    finally:
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not pid_file.exists(), timeout=10, what="the daemon to stop")


def test_the_crash_of_the_first_build_is_gone(echo_server: EchoServer) -> None:
    """``wsproxy 6080 localhost:5900`` crashed formatting the 4-field IPv6 address."""
    port = free_port()
    proc = ProxyProcess([str(port), echo_server.address], ready=False)
    try:
        proc.wait_listening()
        assert proc.proc.poll() is None
    finally:
        with contextlib.suppress(AssertionError):
            assert proc.stop() == 0
    assert "Traceback" not in proc.log
