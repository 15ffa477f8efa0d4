"""contrib/haproxy/haproxy.cfg with Debian's haproxy in front of three wsproxy instances that
share one TokenRedis store (Debian's redis-server).

The contrib file runs as shipped except for addresses and its log destination. A token is written
once, to Redis; every instance finds it. HAProxy speaks PROXY protocol v2 to the instances (each
trusts it and logs the real client, here 127.0.0.2, not HAProxy's 127.0.0.1) and checks their
/healthz. Stopping one instance while clients connect sends new sessions to the others, with no
client refused once HAProxy's check has noticed.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import ROOT, EchoServer, ProxyProcess, end_process, free_port, wait_until
from test_tokenredis import PASSWORD, RedisServer
from test_upgrade import Prober

HAPROXY = "/usr/sbin/haproxy"
CONTRIB = ROOT / "contrib" / "haproxy" / "haproxy.cfg"
CLIENT = "127.0.0.2"  # clients connect from here; HAProxy from 127.0.0.1
INSTANCES = 3
TOKEN = "console-7"


def derive_config(tmp: Path, front: int, servers: list[tuple[int, int]]) -> Path:
    """The contrib file with test addresses; each edit must apply exactly once."""
    text = CONTRIB.read_text()
    edits = [
        (r"log /dev/log local0", "log stderr format raw local0"),
        (r"bind :6080", f"bind 127.0.0.1:{front}"),
    ]
    for n, (port, metrics) in enumerate(servers, 1):
        edits.append(
            (rf"10\.0\.0\.1{n}:6080 check port 9100", f"127.0.0.1:{port} check port {metrics}")
        )
    for pattern, replacement in edits:
        text, count = re.subn(pattern, replacement, text)
        assert count == 1, pattern
    path = tmp / "haproxy.cfg"
    path.write_text(text)
    return path


@dataclass
class HAProxy:
    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    @property
    def log(self) -> str:
        return "\n".join(self.lines)


@contextlib.contextmanager
def run_haproxy(config: Path, front: int) -> Iterator[HAProxy]:
    if not os.access(HAPROXY, os.X_OK):
        pytest.fail("haproxy is not installed: run `make system-packages` (Debian's haproxy)")
    proc = subprocess.Popen(
        [HAPROXY, "-db", "-f", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    haproxy = HAProxy(proc)
    reader = threading.Thread(target=haproxy.read, daemon=True)
    reader.start()
    try:
        wait_until(lambda: _accepts(front) or proc.poll() is not None, what="haproxy to listen")
        assert proc.poll() is None, haproxy.log
        yield haproxy
    finally:
        end_process(proc, 5)
        reader.join(2)


def _accepts(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


@dataclass
class Cluster:
    url: str
    instances: list[ProxyProcess]
    haproxy: HAProxy
    target: str

    def sessions(self) -> list[int]:
        """Sessions each instance relayed from CLIENT (it saw the real client) to the target."""
        line = re.compile(rf"peer={re.escape(CLIENT)}:\d+ proto=rfc6455 .*target={self.target} ")
        return [len(line.findall(proxy.log)) for proxy in self.instances]


@pytest.fixture
def cluster(run_proxy, echo_server: EchoServer, tmp_path: Path) -> Iterator[Cluster]:
    store = RedisServer(tmp_path)
    try:
        yield from _cluster(run_proxy, store, echo_server, tmp_path)
    finally:
        store.close()


def _cluster(
    run_proxy: type[ProxyProcess], store: RedisServer, echo_server: EchoServer, tmp_path: Path
) -> Iterator[Cluster]:
    store.client.set(TOKEN, echo_server.address)  # written once, for every instance
    servers = [(free_port(), free_port()) for _ in range(INSTANCES)]
    instances = [
        run_proxy(
            [
                f"127.0.0.1:{port}",
                "--token-plugin=TokenRedis",
                f'--token-source=127.0.0.1:{store.port}:0:"{PASSWORD}"',
                "--trusted-proxies=127.0.0.1",
                f"--metrics-listen=127.0.0.1:{metrics}",
                "--graceful-timeout=1",
            ]
        )
        for port, metrics in servers
    ]
    front = free_port()
    with run_haproxy(derive_config(tmp_path, front, servers), front) as haproxy:
        url = f"ws://127.0.0.1:{front}/?token={TOKEN}"
        yield Cluster(url, instances, haproxy, echo_server.address)


def test_a_token_written_once_reaches_the_target_from_every_instance(cluster: Cluster) -> None:
    prober = Prober(cluster.url, source=CLIENT)
    prober.start()
    try:
        wait_until(lambda: all(cluster.sessions()), what="a session on every instance")
    finally:
        prober.finish()
    assert prober.failures == []


def test_stopped_instance_is_taken_out_with_no_client_refused(cluster: Cluster) -> None:
    prober = Prober(cluster.url, source=CLIENT)
    prober.start()
    try:
        wait_until(lambda: all(cluster.sessions()), what="a session on every instance")
        stopped = cluster.instances[0]
        stopped.proc.terminate()  # SIGTERM
        assert stopped.proc.wait(10) == 0
        wait_until(
            lambda: "Server wsproxy/ws1 is DOWN" in cluster.haproxy.log,
            timeout=10,
            what="haproxy's check to take ws1 out",
        )
        noticed = time.monotonic()
        before, ok = cluster.sessions(), prober.ok
        wait_until(lambda: prober.ok >= ok + 20, what="sessions after the check")
        after = cluster.sessions()
    finally:
        prober.finish()
    assert [f for t, f in prober.failed if t >= noticed] == []
    assert after[0] == before[0]  # nothing new reached the stopped instance
    assert after[1] > before[1] and after[2] > before[2]  # the others took the new sessions
