"""``--syslog SERVER`` and ``--legacy-syslog`` as websockify 0.13 takes them, against real
receivers: a UNIX datagram socket (``/dev/log``-style), a UNIX stream socket and a UDP port."""

from __future__ import annotations

import os
import re
import signal
import socket
from pathlib import Path

from conftest import EchoServer, run_wsproxy, wait_until
from websockets.sync.client import connect

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


def receive_until(sock: socket.socket, word: str, limit: int = 20) -> list[str]:
    """Datagrams until one holds ``word`` (at most ``limit``, each within the socket's timeout)."""
    messages = []
    for _ in range(limit):
        messages.append(sock.recv(65536).decode("utf-8"))
        if word in messages[-1]:
            return messages
    raise AssertionError(f"no message with {word!r} in {messages}")


def test_udp_host_port_gets_rfc5424_lines(run_proxy, echo_server: EchoServer) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(5)
        port = receiver.getsockname()[1]
        proxy = run_proxy(["--syslog", f"127.0.0.1:{port}", "127.0.0.1:0", echo_server.address])
        messages = receive_until(receiver, "listening on")
        assert re.fullmatch(
            rf"<14>1 {STAMP} \S+ wsproxy {proxy.proc.pid} - - INFO wsproxy: listening on .*",
            messages[-1],
        )
        with connect(f"ws://127.0.0.1:{proxy.port}/", open_timeout=5, close_timeout=5) as ws:
            ws.send(b"x")
            ws.recv(timeout=5)
            ws.close(1000, "caf\u00e9")  # the closed line logs the reason
        closed = receive_until(receiver, "closed peer=")[-1].encode("utf-8")
        # Not ASCII: UTF-8 after a byte order mark, where RFC 5424's MSG begins.
        head, _, body = closed.partition(b" - - ")
        assert head.startswith(b"<14>1 ") and body.startswith(b"\xef\xbb\xbfINFO ")
        assert "reason=caf\u00e9" in body.decode("utf-8-sig")


def test_legacy_syslog_bracketed_ipv6_udp(run_proxy, echo_server: EchoServer) -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("::1", 0))
        receiver.settimeout(5)
        port = receiver.getsockname()[1]
        proxy = run_proxy(
            ["--syslog", f"[::1]:{port}", "--legacy-syslog", "127.0.0.1:0", echo_server.address]
        )
        line = receive_until(receiver, "listening on")[-1]
        assert line == (
            f"<14>wsproxy[{proxy.proc.pid}]: INFO wsproxy: listening on "
            f"127.0.0.1:{proxy.port}, target {echo_server.address}"
        )


def test_unix_stream_syslog_gets_one_line_per_message(
    run_proxy, tmp_path: Path, echo_server: EchoServer
) -> None:
    path = tmp_path / "stream.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen(1)
        server.settimeout(10)
        run_proxy(["--syslog", str(path), "127.0.0.1:0", echo_server.address], ready=False)
        conn, _ = server.accept()
        with conn:
            conn.settimeout(5)
            data = b""
            while b"listening on" not in data:
                chunk = conn.recv(65536)
                assert chunk, data
                data += chunk
        lines = data.split(b"\n")
        assert all(re.match(rb"<1[24]>1 ", line) for line in lines if line), lines


def test_daemon_logs_with_facility_daemon(tmp_path: Path, echo_server: EchoServer) -> None:
    address = tmp_path / "log.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as syslog:
        syslog.bind(str(address))
        syslog.settimeout(5)
        args = ["-D", "--pid-file", "w.pid", "--syslog", "log.sock", "127.0.0.1:0"]
        result = run_wsproxy([*args, echo_server.address], cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        pid = int((tmp_path / "w.pid").read_text())
        try:
            listening = receive_until(syslog, "listening on")[-1]
            # <30>: facility daemon (3) * 8 + severity info (6); the relative path still works
            # after the daemon left its directory.
            assert re.fullmatch(rf"<30>1 {STAMP} \S+ wsproxy {pid} - - INFO wsproxy: .*", listening)
        finally:
            os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not (tmp_path / "w.pid").exists(), timeout=10, what="the daemon stop")


def test_syslog_port_that_is_no_number_is_refused_with_status_2(echo_server: EchoServer) -> None:
    result = run_wsproxy(["--syslog", "loghost:five", "0", echo_server.address])
    assert result.returncode == 2
    assert "syslog" in result.stderr and "UDP host:port" in result.stderr


def test_a_syslog_that_stops_reading_does_not_freeze_the_proxy(
    run_proxy, tmp_path: Path, echo_server: EchoServer
) -> None:
    """A datagram receiver that never reads fills up after a few lines (net.unix.max_dgram_qlen):
    lines are then dropped, and counted on the other destinations, while sessions go on."""
    path = tmp_path / "log.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as stalled:
        stalled.bind(str(path))
        proxy = run_proxy(["--syslog", str(path), "127.0.0.1:0", echo_server.address])
        for i in range(40):  # two lines each (open, closed): more than the receiver's queue
            with connect(proxy.url, open_timeout=5, close_timeout=5) as ws:
                ws.send(b"%d" % i)
                assert ws.recv(timeout=5) == b"%d" % i
        proxy.wait_log(
            r"WARNING wsproxy.sysloghandler: syslog is not reading: "
            rf"dropped 1 line\(s\) server={path}"
        )
        assert (
            sum("syslog is not reading" in line for line in proxy.lines) == 1
        )  # once per interval
