"""The deployment examples in contrib/: a real supervisord runs wsproxy from the shipped program
section (paths moved into a temporary directory), and systemd checks the shipped unit."""

from __future__ import annotations

import configparser
import contextlib
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, EchoServer, wait_until
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from wsproxy.admission import auto_max_connections
from wsproxy.settings import Settings
from wsproxy.workers import STOP_KILL_AFTER

SUPERVISOR_CONF = ROOT / "contrib" / "supervisor" / "wsproxy.conf"
SYSTEMD_UNIT = ROOT / "contrib" / "systemd" / "wsproxy.service"
INSTALLED_PROGRAM = "/usr/local/bin/wsproxy"
INSTALLED_CONFIG = "/etc/wsproxy/wsproxy.ini"
CTL_TIMEOUT = 30


def read_ini(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"))
    parser.optionxform = str  # type: ignore[assignment, method-assign]
    parser.read(path)
    return parser


class Supervisor:
    """supervisord in the foreground with a config in ``dir``, and supervisorctl against it."""

    def __init__(self, dir: Path, echo: EchoServer) -> None:
        self.dir = dir
        self.conf = dir / "supervisord.conf"
        self.log = dir / "supervisord.log"
        self.program_log = dir / "wsproxy.log"
        ini = dir / "wsproxy.ini"
        ini.write_text(f"[wsproxy]\nlisten = 127.0.0.1:0\ntarget = {echo.address}\n")

        program = dict(read_ini(SUPERVISOR_CONF)["program:wsproxy"])
        program["command"] = (
            program["command"]
            .replace(INSTALLED_PROGRAM, f"{sys.executable} -m wsproxy")
            .replace(INSTALLED_CONFIG, str(ini))
        )
        program["stdout_logfile"] = str(self.program_log)
        del program["user"]  # runs as whoever runs the tests
        assert not any(v.startswith(("/etc", "/var", "/usr/local")) for v in program.values())

        config = configparser.ConfigParser(interpolation=None)
        config["unix_http_server"] = {"file": str(dir / "supervisor.sock")}
        config["supervisord"] = {
            "logfile": str(self.log),
            "pidfile": str(dir / "supervisord.pid"),
            "childlogdir": str(dir),
            "nodaemon": "true",
            "loglevel": "info",
        }
        config["rpcinterface:supervisor"] = {
            "supervisor.rpcinterface_factory": "supervisor.rpcinterface:make_main_rpcinterface"
        }
        config["supervisorctl"] = {"serverurl": f"unix://{dir / 'supervisor.sock'}"}
        config["program:wsproxy"] = program
        with self.conf.open("w") as f:
            config.write(f)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "supervisor.supervisord", "-c", str(self.conf)],
            cwd=dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def ctl(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(self.conf), *args],
            capture_output=True,
            text=True,
            timeout=CTL_TIMEOUT,
        )
        return result.stdout + result.stderr

    def wait_listening(self, count: int) -> int:
        """Wait for the ``count``-th "listening on" line in the program's log; its port."""

        def ports() -> list[str]:
            text = self.program_log.read_text() if self.program_log.exists() else ""
            return re.findall(r"listening on 127\.0\.0\.1:(\d+)", text)

        wait_until(lambda: len(ports()) >= count, 20, f"wsproxy start #{count} under supervisord")
        return int(ports()[count - 1])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # supervisord stops its programs, then itself
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def supervisor(tmp_path: Path, echo_server: EchoServer) -> Iterator[Supervisor]:
    sup = Supervisor(tmp_path, echo_server)
    try:
        yield sup
    finally:
        sup.close()


def echoing_client(port: int, stack: contextlib.ExitStack) -> ClientConnection:
    ws = stack.enter_context(connect(f"ws://127.0.0.1:{port}/", open_timeout=5, close_timeout=2))
    ws.send(b"via supervisord")
    assert ws.recv(timeout=5) == b"via supervisord"
    return ws


def assert_closed_with_1001(ws: ClientConnection) -> None:
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001


def test_supervisord_serves_restarts_and_stops_wsproxy_cleanly(supervisor: Supervisor) -> None:
    with contextlib.ExitStack() as stack:
        first = echoing_client(supervisor.wait_listening(1), stack)
        # wsproxy's log (its stderr) reaches the program log file supervisord writes
        wait_until(lambda: "open peer=" in supervisor.program_log.read_text(), what="open line")

        out = supervisor.ctl("restart", "wsproxy")
        assert "wsproxy: started" in out, out
        assert_closed_with_1001(first)
        second = echoing_client(supervisor.wait_listening(2), stack)

        out = supervisor.ctl("stop", "wsproxy")
        assert "wsproxy: stopped" in out, out
        assert_closed_with_1001(second)

    assert "STOPPED" in supervisor.ctl("status", "wsproxy")
    log = supervisor.log.read_text()
    assert log.count("stopped: wsproxy (exit status 0)") == 2, log  # by restart, then by stop
    assert "not expected" not in log  # supervisord's word for an exit it did not ask for
    program_log = supervisor.program_log.read_text()
    assert program_log.count("INFO wsproxy: stopped") == 2
    assert "closed peer=" in program_log


def test_supervisor_waits_longer_than_wsproxy_drains() -> None:
    program = read_ini(SUPERVISOR_CONF)["program:wsproxy"]
    default = Settings.create(listen="1", target="h:1").graceful_timeout
    assert program["stopsignal"] == "TERM"
    assert float(program["stopwaitsecs"]) > default + STOP_KILL_AFTER
    assert program["redirect_stderr"] == "true"


def test_systemd_unit_verifies_and_waits_longer_than_wsproxy_drains(tmp_path: Path) -> None:
    unit = tmp_path / "wsproxy.service"
    program = Path(sys.executable).with_name("wsproxy")  # the installed entry point
    assert program.exists()
    unit.write_text(SYSTEMD_UNIT.read_text().replace(INSTALLED_PROGRAM, str(program)))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    service = read_ini(SYSTEMD_UNIT)["Service"]
    default = Settings.create(listen="1", target="h:1").graceful_timeout
    assert service["KillSignal"] == "SIGTERM" and service["Type"] == "forking"
    assert float(service["TimeoutStopSec"]) > default + STOP_KILL_AFTER
    args = service["ExecStart"].split()[1:]
    assert args[:2] == ["-c", INSTALLED_CONFIG] and "--daemon" in args
    # systemd follows an upgrade (SIGUSR2) by reading PIDFile= again: the one wsproxy writes
    assert args[args.index("--pid-file") + 1] == service["PIDFile"]
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    # The open-file limit is raised past systemd's default soft 1,024 (480 sessions).
    assert auto_max_connections(int(service["LimitNOFILE"])) > 30_000
