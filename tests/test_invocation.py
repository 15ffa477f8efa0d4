"""Invocation forms beyond a listen address and a target, each with websockify 0.13's meaning and
run as the real command line: ``-6/--prefer-ipv6``, ``--unix-target`` with ``-- PROGRAM`` (as
jupyter-remote-desktop-proxy runs it), ``--unix-listen`` with ``--unix-listen-mode``, ``--inetd``.

Host names that resolve to both families come from a hosts file read through nss_wrapper
(Debian's libnss-wrapper): the machine's own /etc/hosts may name ``localhost`` in one family only.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import WSPROXY, EchoServer, ProxyProcess, free_port, run_wsproxy, wait_until
from conftest import ws_echo as echo
from websockets.asyncio.client import unix_connect
from websockets.sync.client import connect

NSS_WRAPPER = "libnss_wrapper.so"
DUAL = "dual.test"  # ::1 first in the hosts file, so that websockify's IPv4-first order shows


@pytest.fixture
def dual_stack_name(tmp_path: Path) -> dict[str, str]:
    """The environment under which ``dual.test`` resolves to ::1, then 127.0.0.1."""
    hosts = tmp_path / "hosts"
    hosts.write_text(f"::1 {DUAL}\n127.0.0.1 {DUAL}\n")
    env = {"LD_PRELOAD": NSS_WRAPPER, "NSS_WRAPPER_HOSTS": str(hosts)}
    probe = subprocess.run(
        [sys.executable, "-c", f"import socket; socket.getaddrinfo({DUAL!r}, 1)"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    if probe.returncode != 0 or "cannot be preloaded" in probe.stderr:
        pytest.fail(f"libnss-wrapper does not work here (make test installs it): {probe.stderr}")
    return env


class FamilyServer:
    """A one-family TCP server that answers each connection with its family's name."""

    def __init__(self, family: socket.AddressFamily, port: int = 0) -> None:
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        if family == socket.AF_INET6:
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        self.sock.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", port))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.name = b"v6" if family == socket.AF_INET6 else b"v4"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.sendall(self.name)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def family_servers() -> Iterator[tuple[FamilyServer, FamilyServer]]:
    """An IPv4 and an IPv6 server on the same port number of the two loopbacks."""
    for _ in range(20):
        v4 = FamilyServer(socket.AF_INET)
        try:
            v6 = FamilyServer(socket.AF_INET6, v4.port)
        except OSError:
            v4.close()
            continue
        yield v4, v6
        v4.close()
        v6.close()
        return
    pytest.fail("no port free on both loopbacks")


def first_message(url: str) -> bytes:
    with connect(url, open_timeout=5, close_timeout=2) as ws:
        answer = ws.recv(timeout=5)
    assert isinstance(answer, bytes)
    return answer


# -- -6 / --prefer-ipv6 --


@pytest.mark.parametrize(("flags", "family"), [([], "v4"), (["-6"], "v6")])
def test_target_name_resolving_to_both_families(
    run_proxy, dual_stack_name, family_servers, flags: list[str], family: str
) -> None:
    """websockify connects IPv4 first, whatever the resolver's order; -6 turns that round."""
    port = family_servers[0].port
    proxy = run_proxy([*flags, "127.0.0.1:0", f"{DUAL}:{port}"], env=dual_stack_name)
    assert first_message(proxy.url) == family.encode()


@pytest.mark.parametrize(
    ("flags", "bound", "other"), [([], "127.0.0.1", "::1"), (["-6"], "::1", "127.0.0.1")]
)
def test_listen_name_resolving_to_both_families(
    run_proxy, dual_stack_name, echo_server: EchoServer, flags, bound: str, other: str
) -> None:
    # A port below the ephemeral range: with :0 the kernel may give the other family's address
    # the same port number for a server of another test (seen: the probe below connected).
    port = free_port()
    proxy = run_proxy([*flags, f"{DUAL}:{port}", echo_server.address], env=dual_stack_name)
    assert proxy.port == port
    assert proxy.host == bound
    shown = f"[{bound}]" if ":" in bound else bound
    assert echo(f"ws://{shown}:{port}/") == b"ping"
    family = socket.AF_INET6 if ":" in other else socket.AF_INET
    with socket.socket(family) as probe, pytest.raises(ConnectionRefusedError):
        probe.connect((other, port))


def test_a_target_family_that_refuses_falls_back_to_the_other(run_proxy, dual_stack_name) -> None:
    """-6 prefers IPv6, but a name whose IPv6 address refuses still reaches its IPv4 one."""
    v4 = FamilyServer(socket.AF_INET)
    try:
        proxy = run_proxy(["-6", "127.0.0.1:0", f"{DUAL}:{v4.port}"], env=dual_stack_name)
        assert first_message(proxy.url) == b"v4"
    finally:
        v4.close()


# -- --unix-target with a wrapped program --


def test_unix_target_served_by_the_wrapped_program(run_proxy, tmp_path: Path) -> None:
    """jupyter-remote-desktop-proxy's form: websockify ... --unix-target SOCK PORT -- vncserver
    ... -rfbunixpath SOCK. Here the program is socat serving an echo on the UNIX socket."""
    sock = tmp_path / "vnc.sock"
    program = ["socat", f"UNIX-LISTEN:{sock},fork", "EXEC:cat"]
    proxy = run_proxy(["--unix-target", str(sock), "0", "--", *program])
    proxy.wait_log(r"wrap started name=socat")
    assert echo(proxy.url, b"over unix") == b"over unix"  # waits for the socket to appear
    proxy.wait_log(rf"open peer=\S+ .*target=unix:{sock} ")
    assert proxy.stop() == 0
    assert not any(line for line in proxy.lines if "Traceback" in line)


# -- --unix-listen --


async def unix_echo(path: Path, data: bytes) -> bytes:
    async with unix_connect(str(path), "ws://localhost/", open_timeout=5) as ws:
        await ws.send(data)
        answer = await asyncio.wait_for(ws.recv(), 5)
    assert isinstance(answer, bytes)
    return answer


@pytest.mark.parametrize(("flags", "mode"), [([], 0o600), (["--unix-listen-mode", "660"], 0o660)])
def test_unix_listen_with_its_mode(
    tmp_path: Path, echo_server: EchoServer, flags: list[str], mode: int
) -> None:
    path = tmp_path / "ws.sock"
    proxy = ProxyProcess(["--unix-listen", str(path), *flags, echo_server.address], ready=False)
    try:
        proxy.wait_log(rf"listening on unix:{path}, target {echo_server.address}")
        info = os.stat(path)
        assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == mode
        assert asyncio.run(unix_echo(path, b"via unix")) == b"via unix"
        proxy.wait_log(rf"open peer=unix:{path} ")
    finally:
        assert proxy.stop() == 0, proxy.log
    assert not path.exists()  # removed on exit


def test_unix_listen_as_a_daemon_removes_its_socket(
    tmp_path: Path, echo_server: EchoServer
) -> None:
    path, pid_file, log_file = tmp_path / "ws.sock", tmp_path / "w.pid", tmp_path / "w.log"
    args = ["-D", "--pid-file", str(pid_file), "--log-file", str(log_file)]
    started = run_wsproxy([*args, "--unix-listen", str(path), echo_server.address], cwd=tmp_path)
    assert started.returncode == 0, started.stderr
    pid = int(pid_file.read_text())
    try:
        assert asyncio.run(unix_echo(path, b"daemon")) == b"daemon"
    finally:
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not pid_file.exists(), timeout=10, what="the daemon to stop")
    assert not path.exists(), log_file.read_text()


def test_unix_listen_with_workers(tmp_path: Path, echo_server: EchoServer) -> None:
    """Every worker accepts on the master's socket; the master removes it on exit."""
    path = tmp_path / "ws.sock"
    args = ["--workers", "2", "--unix-listen", str(path), echo_server.address]
    proxy = ProxyProcess(args, ready=False)
    try:
        proxy.wait_log(r"listening on unix:")
        for i in range(4):
            assert asyncio.run(unix_echo(path, b"%d" % i)) == b"%d" % i
    finally:
        assert proxy.stop() == 0, proxy.log
    assert not path.exists()


def test_unix_listen_replaces_a_stale_socket_and_refuses_a_live_one(
    tmp_path: Path, echo_server: EchoServer
) -> None:
    path = tmp_path / "ws.sock"
    with socket.socket(socket.AF_UNIX) as old:
        old.bind(str(path))  # left behind: nobody accepts on it any more
    proxy = ProxyProcess(["--unix-listen", str(path), echo_server.address], ready=False)
    try:
        proxy.wait_log(r"listening on unix:")
        second = run_wsproxy(["--unix-listen", str(path), echo_server.address])
        assert second.returncode == 1
        assert f"cannot listen on unix:{path}: another process accepts" in second.stderr
        assert asyncio.run(unix_echo(path, b"still mine")) == b"still mine"
    finally:
        assert proxy.stop() == 0
    assert "replacing stale socket" in proxy.log


# -- --inetd --


def test_inetd_takes_the_listening_socket_on_stdin(echo_server: EchoServer) -> None:
    """As inetd ('wait' services) and systemd socket activation (Accept=no) hand it over."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    proc = subprocess.Popen(
        [WSPROXY, "--inetd", echo_server.address],
        stdin=listener.fileno(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    listener.close()  # the process holds the only copy now
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True)
    reader.start()
    try:
        assert echo(f"ws://127.0.0.1:{port}/", b"inetd") == b"inetd"
        assert echo(f"ws://127.0.0.1:{port}/", b"again") == b"again"
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
        reader.join(5)
    log = "".join(lines)
    assert f"listening on 127.0.0.1:{port} (inetd" in log, log
    with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(("127.0.0.1", port))  # our copy was the last: closed on exit


def test_inetd_without_a_socket_on_stdin_fails_with_status_1(echo_server: EchoServer) -> None:
    result = run_wsproxy(["--inetd", echo_server.address])
    assert result.returncode == 1
    assert "--inetd: standard input is not a" in result.stderr


def test_inetd_takes_no_listen_argument(echo_server: EchoServer) -> None:
    result = run_wsproxy(["--inetd", "6080", echo_server.address])
    assert result.returncode == 2
    assert "too many arguments" in result.stderr
