"""The command-line forms websockify users type, run as the installed console script.

Every test here starts the real ``wsproxy`` program with the listen and target forms of
websockify's README and noVNC's docs (a bare port first of all), and relays a message.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest
from conftest import LISTENING, WSPROXY, EchoServer, ProxyProcess, wait_until
from conftest import ws_echo as echo
from websockets.sync.client import connect


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


# Stands in for a kernel without IPv6 (this machine has it): only the IPv6 socket fails.
NO_IPV6_SITE = """
import errno, socket
import gevent.socket
_real = gevent.socket.socket
class _NoIPv6(_real):
    def __init__(self, family=-1, *args, **kwargs):
        if family == socket.AF_INET6:
            raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
        super().__init__(family, *args, **kwargs)
gevent.socket.socket = _NoIPv6
"""


def test_bare_port_listens_on_every_address_and_relays(run_proxy, echo_server: EchoServer) -> None:  # type: ignore[no-untyped-def]
    proc = run_proxy(["0", f"localhost:{echo_server.port}"])
    port = proc.port
    assert proc.host == "::"
    assert "Traceback" not in proc.log
    assert echo(f"ws://127.0.0.1:{port}/") == b"ping"
    assert echo(f"ws://localhost:{port}/") == b"ping"
    if ipv6_loopback():
        assert echo(f"ws://[::1]:{port}/") == b"ping"
    # The client is logged by its IPv4 address, not as an IPv4-mapped IPv6 one.
    proc.wait_log(r"open peer=127\.0\.0\.1:\d+ ")


def test_bare_port_without_ipv6_listens_on_ipv4(
    run_proxy, echo_server: EchoServer, tmp_path: Path
) -> None:
    """A kernel without IPv6 refuses the ``[::]`` socket (faked: this machine has IPv6)."""
    (tmp_path / "sitecustomize.py").write_text(NO_IPV6_SITE)
    env = {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    }
    proc = run_proxy(["0", echo_server.address], env=env)
    assert proc.host == "0.0.0.0"
    proc.wait_log(r"no IPv6 here \(Address family not supported by protocol\): listening on IPv4")
    assert echo(f"ws://127.0.0.1:{proc.port}/") == b"ping"


@pytest.mark.parametrize("form", ["0.0.0.0:0", "[::]:0", "localhost:0"])
def test_listen_forms(run_proxy, echo_server: EchoServer, form: str) -> None:  # type: ignore[no-untyped-def]
    proc = run_proxy([form, echo_server.address])
    assert proc.port != 0
    assert echo(f"ws://127.0.0.1:{proc.port}/") == b"ping"


def test_ipv6_loopback_listen_and_unbracketed_ipv6_target(run_proxy) -> None:  # type: ignore[no-untyped-def]
    if not ipv6_loopback():
        pytest.fail("this machine has no IPv6 loopback")
    with socket.create_server(("::1", 0), family=socket.AF_INET6) as target:
        target_port = target.getsockname()[1]
        proc = run_proxy(["[::1]:0", f"::1:{target_port}"])  # websockify splits at the last :
        with connect(f"ws://[::1]:{proc.port}/", open_timeout=5) as ws:
            conn, _ = target.accept()
            with conn:
                ws.send(b"to v6")
                assert conn.recv(16) == b"to v6"
        proc.wait_log(rf"target=\[::1\]:{target_port}")


def test_bare_port_as_a_daemon(tmp_path: Path, echo_server: EchoServer) -> None:
    pid_file, log_file = tmp_path / "w.pid", tmp_path / "w.log"
    result = subprocess.run(
        [
            WSPROXY,
            "-D",
            "--pid-file",
            str(pid_file),
            "--log-file",
            str(log_file),
            "0",
            echo_server.address,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    pid = int(pid_file.read_text())
    try:
        listening = LISTENING.search(log_file.read_text())
        assert listening, log_file.read_text()
        assert echo(f"ws://127.0.0.1:{listening.group(2)}/") == b"ping"
    finally:
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not pid_file.exists(), timeout=10, what="the daemon to stop")


def test_the_crash_of_the_first_build_is_gone(echo_server: EchoServer) -> None:
    """``wsproxy 6080 localhost:5900`` crashed formatting the 4-field IPv6 address."""
    proc = ProxyProcess(["0", echo_server.address], ready=False)
    try:
        proc.wait_listening()
        assert proc.proc.poll() is None
    finally:
        code = proc.stop()
    assert code == 0, proc.log
    assert "Traceback" not in proc.log
