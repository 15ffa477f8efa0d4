"""TokenRedis against a real redis-server (one per module, on an ephemeral port)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from conftest import ProxyProcess, echo_once, free_port, refused_start, upgrade_status, wait_until
from websockets.sync.client import connect

from wsproxy.plugins.tokenredis import TokenRedis

PASSWORD = "pa:ss w0rd"  # a colon: the source quotes it


class RedisServer:
    def __init__(self, folder: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed (make test installs it)")
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(folder),
                "--requirepass",
                PASSWORD,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.client = redis.Redis(port=self.port, password=PASSWORD, socket_timeout=5)
        self.db1 = redis.Redis(port=self.port, password=PASSWORD, db=1, socket_timeout=5)

        def ready() -> bool:
            try:
                return bool(self.client.ping())
            except redis.ConnectionError:
                return False

        wait_until(ready, timeout=10, what="redis-server")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.close()


@pytest.fixture(scope="module")
def proxy(redis_server: RedisServer) -> Iterator[ProxyProcess]:
    source = f'127.0.0.1:{redis_server.port}:1:"{PASSWORD}":"app:vnc"'
    proc = ProxyProcess(
        [
            "--token-plugin",
            "TokenRedis",
            "--token-source",
            source,
            "--connect-timeout",
            "1.5",
            "127.0.0.1:0",
        ]
    )
    yield proc
    proc.stop()
    assert PASSWORD not in proc.log and "w0rd" not in proc.log


def test_json_and_plain_values_in_a_namespace(proxy, redis_server, echo_server) -> None:
    redis_server.db1.set("app:vnc:json", f'{{"host": "{echo_server.address}"}}')
    redis_server.db1.set("app:vnc:plain", echo_server.address)
    redis_server.client.set("app:vnc:db0", echo_server.address)  # another db: not seen
    redis_server.db1.set("json", echo_server.address)  # no namespace: not seen
    assert echo_once(f"ws://127.0.0.1:{proxy.port}/?token=json", b"j") == b"j"
    assert echo_once(f"ws://127.0.0.1:{proxy.port}/?token=plain", b"p") == b"p"
    assert upgrade_status(proxy.port, "/?token=db0") == (404, b"unknown token 'db0'\n")
    assert upgrade_status(proxy.port, "/?token=missing")[0] == 404
    assert "by token from redis 127.0.0.1:" in proxy.log and "db 1 namespace app:vnc" in proxy.log


def test_a_bad_value_is_a_502_naming_the_key(proxy, redis_server) -> None:
    redis_server.db1.set("app:vnc:bad", '{"port": 1}')
    assert upgrade_status(proxy.port, "/?token=bad") == (502, b"token lookup failed\n")
    proxy.wait_log(r"""key 'app:vnc:bad': bad value '\{"port": 1\}'""")


def test_a_stopped_redis_times_out_and_relays_go_on(proxy, redis_server, echo_server) -> None:
    redis_server.db1.set("app:vnc:live", echo_server.address)
    with connect(f"ws://127.0.0.1:{proxy.port}/?token=live", open_timeout=10) as ws:
        os.kill(redis_server.proc.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            assert upgrade_status(proxy.port, "/?token=live") == (
                502,
                b"token lookup timed out after 1.5 s\n",
            )
            assert time.monotonic() - started < 5
            ws.send(b"during the hang")
            assert ws.recv(timeout=5) == b"during the hang"
        finally:
            os.kill(redis_server.proc.pid, signal.SIGCONT)
    proxy.wait_log(r"token lookup timed out plugin=TokenRedis token='live'")
    # the lookup threads come back (redis answers the queued commands) and serve again
    assert echo_once(f"ws://127.0.0.1:{proxy.port}/?token=live") == b"ping"


def test_wrong_password_and_no_redis_are_502_without_the_password(run_proxy, redis_server) -> None:
    wrong = run_proxy(
        [
            "--token-plugin",
            "TokenRedis",
            "--token-source",
            f"127.0.0.1:{redis_server.port}:0:notthepassword",
            "127.0.0.1:0",
        ]
    )
    assert upgrade_status(wrong.port, "/?token=x") == (502, b"token lookup failed\n")
    wrong.wait_log(r"token lookup failed plugin=TokenRedis token='x': AuthenticationError")
    down = run_proxy(
        [
            "--token-plugin",
            "TokenRedis",
            "--token-source",
            f"127.0.0.1:{free_port()}:0:secretpw",
            "127.0.0.1:0",
        ]
    )
    assert upgrade_status(down.port, "/?token=x") == (502, b"token lookup failed\n")
    down.wait_log(r"token lookup failed plugin=TokenRedis token='x': ConnectionError")
    for proc in (wrong, down):
        proc.stop()
        assert "notthepassword" not in proc.log and "secretpw" not in proc.log


@pytest.mark.parametrize("source", ["h:port:0:secretpw", "h:1:db:secretpw", "a:1:2:secretpw:n:x"])
def test_bad_source_exits_2_without_showing_it(run_proxy, source: str) -> None:
    log = refused_start(
        run_proxy, ["--token-plugin", "TokenRedis", "--token-source", source, "127.0.0.1:0"]
    )
    assert "token_source: bad TokenRedis source (expected host[:port[:db[:password" in log
    assert "secretpw" not in log


def test_source_defaults_as_websockify() -> None:
    plain = TokenRedis("my-redis-host")
    assert (plain.host, plain.port, plain.db, plain.namespace) == ("my-redis-host", 6379, 0, "")
    full = TokenRedis('h:6380:2:pw:"first-ns:second-ns"')
    assert (full.port, full.db, full.namespace) == (6380, 2, "first-ns:second-ns:")
    assert full.client.connection_pool.connection_kwargs["password"] == "pw"
    empty = TokenRedis("h::::")
    assert (empty.port, empty.db, empty.namespace) == (6379, 0, "")
    assert empty.client.connection_pool.connection_kwargs["password"] is None
