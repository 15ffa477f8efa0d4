"""Wrapping real programs: ``wsproxy PORT -- PROGRAM``, the wrap modes, and clean shutdown."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import struct
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import ProxyProcess, free_port, nofile
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect
from wsraw import Opcode, RawClient

from wsproxy.rebinding import find_rebind_lib, rebind_env

PY = sys.executable
STARTED = r"wrap started name=\S+ pid=(\d+)"


def program(source: str) -> list[str]:
    """A Python program given as source; its first argument is the port it must bind."""
    return [PY, "-c", textwrap.dedent(source)]


# Serves one connection (a greeting naming its pid), then exits. Like telnetd -debug, it stops
# listening once it has its connection, so a next client waits for the respawn.
ONE_SHOT = program(
    """
    import os, socket, sys
    srv = socket.create_server(("0.0.0.0", int(sys.argv[1])))
    conn, _ = srv.accept()
    srv.close()
    conn.sendall(b"hello from %d" % os.getpid())
    conn.close()
    """
)

# Echoes on [::]:PORT, IPv6 only; on SIGTERM says so and exits.
ECHO_V6 = program(
    """
    import signal, socket, sys, threading
    def term(signum, frame):
        print("program got SIGTERM", flush=True)
        sys.exit(0)
    signal.signal(signal.SIGTERM, term)
    srv = socket.socket(socket.AF_INET6)
    srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("::", int(sys.argv[1])))
    srv.listen()
    print("listening on", srv.getsockname(), flush=True)
    def echo(conn):
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)
    while True:
        threading.Thread(target=echo, args=(srv.accept()[0],), daemon=True).start()
    """
)

# Forks a daemon child (same process group) that binds the port and echoes; the parent exits
# once the child is listening.
DAEMON = program(
    """
    import os, socket, sys
    r, w = os.pipe()
    if os.fork() == 0:
        srv = socket.create_server(("0.0.0.0", int(sys.argv[1])))
        os.write(w, b"x")
        while True:
            conn, _ = srv.accept()
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data)
    os.read(r, 1)
    print("parent exits, daemon", flush=True)
    """
)

# Serves one connection: a forked child holds it open, the parent exits 7 on the client's "bye".
HOLD_THEN_EXIT = program(
    """
    import os, signal, socket, sys
    srv = socket.create_server(("127.0.0.1", int(sys.argv[1])))
    conn, _ = srv.accept()
    if os.fork() == 0:
        while True:
            signal.pause()
    conn.recv(100)
    sys.exit(7)
    """
)

# Listens, and forks a child that stays; with a second argument the child ignores SIGTERM.
FAMILY = program(
    """
    import os, signal, socket, sys, time
    srv = socket.create_server(("127.0.0.1", int(sys.argv[1])))
    if os.fork() == 0:
        if len(sys.argv) > 2:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while True:
            time.sleep(1)
    while True:
        srv.accept()[0].close()
    """
)


@pytest.fixture
def wrap(run_proxy: type[ProxyProcess]) -> Iterator[Callable[..., ProxyProcess]]:
    """``wrap(argv, *options, **kwargs)``: wsproxy on a free port wrapping ``argv``, where
    ``{port}`` stands for that port. Each is stopped with SIGTERM after the test, so that it ends
    its program's group (a SIGKILLed wsproxy would leave the program to PID 1)."""
    started: list[ProxyProcess] = []

    def start(argv: list[str], *options: str, **kwargs: object) -> ProxyProcess:
        port = free_port()
        args = [a.replace("{port}", str(port)) for a in argv]
        proxy = run_proxy([*options, f"127.0.0.1:{port}", "--", *args], **kwargs)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        with contextlib.suppress(AssertionError):
            proxy.stop(signal.SIGTERM)


def ws(proxy: ProxyProcess) -> ClientConnection:
    return connect(proxy.url, subprotocols=["binary"], open_timeout=10, max_size=None)


def recv_all(conn: ClientConnection, timeout: float = 5) -> bytes:
    data = b""
    try:
        while True:
            data += conn.recv(timeout=timeout)  # type: ignore[operator]
    except ConnectionClosed:
        return data


def one_shot_greetings(proxy: ProxyProcess, clients: int) -> set[bytes]:
    """Connect ``clients`` times in a row to a wrapped ONE_SHOT program; its distinct greetings
    (each names the pid of the run that served it)."""
    greetings = set()
    for _ in range(clients):
        with ws(proxy) as conn:
            greeting = recv_all(conn)
        assert greeting.startswith(b"hello from ")
        greetings.add(greeting)
    return greetings


def group_members(pgid: int) -> list[str]:
    """/proc/PID/stat of every process (zombies too) in process group ``pgid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text.rsplit(")", 1)[1].split()  # state, ppid, pgrp, ...
        if int(fields[2]) == pgid:
            found.append(text)
    return found


# -- pure helpers --


def test_rebind_env_puts_our_library_first_and_leaves_the_base_alone() -> None:
    base = {"LD_PRELOAD": "libuser.so", "HOME": "/h"}
    env = rebind_env(base, "/lib/rebind.so", 2023, 41000)
    assert env["LD_PRELOAD"] == "/lib/rebind.so libuser.so"
    assert (env["REBIND_OLD_PORT"], env["REBIND_NEW_PORT"], env["HOME"]) == ("2023", "41000", "/h")
    assert base == {"LD_PRELOAD": "libuser.so", "HOME": "/h"}
    assert rebind_env({}, "/lib/rebind.so", 1, 2)["LD_PRELOAD"] == "/lib/rebind.so"


# -- real programs --


def test_http_server_page_fetched_over_websocket(wrap, tmp_path: Path) -> None:
    (tmp_path / "hello.txt").write_text("hello through the wrap\n")
    proxy = wrap([PY, "-m", "http.server", "{port}"], cwd=tmp_path)
    with ws(proxy) as conn:
        conn.send(b"GET /hello.txt HTTP/1.0\r\nHost: x\r\n\r\n")
        response = recv_all(conn)
    assert response.startswith(b"HTTP/1.0 200 OK\r\n")
    assert response.endswith(b"\r\n\r\nhello through the wrap\n")
    proxy.wait_log(r'wrap python\S*\[\d+\]: .*"GET /hello.txt HTTP/1.0" 200')


def test_socat_exec_cat_echoes(wrap) -> None:
    proxy = wrap(["socat", "TCP-LISTEN:{port},reuseaddr,fork", "EXEC:cat"])
    for _ in range(2):
        with ws(proxy) as conn:
            for size in (1, 1000, 100_000):
                data = os.urandom(size)
                conn.send(data)
                got = b""
                while len(got) < size:
                    got += conn.recv(timeout=5)  # type: ignore[operator]
                assert got == data


def test_program_binding_ipv6_any_is_reached_on_ipv6_loopback(wrap) -> None:
    proxy = wrap([*ECHO_V6, "{port}"])
    with ws(proxy) as conn:
        conn.send(b"over v6")
        assert conn.recv(timeout=5) == b"over v6"
    proxy.wait_log(r"listening on \('::1', \d+")  # the program saw its bind moved to ::1
    proxy.wait_log(r"open peer=\S+ .*target=\[::1\]:\d+")


def test_program_output_is_logged_and_user_ld_preload_kept(wrap) -> None:
    show = program(
        "import os, sys; print(os.environ['LD_PRELOAD']); print('err', file=sys.stderr)\n"
        "print('x' * 10000)"
    )
    proxy = wrap([*show, "{port}"], "--wrap-mode=ignore", env={"LD_PRELOAD": "libm.so.6"})
    pid = proxy.wait_log(STARTED).group(1)
    proxy.wait_log(rf"wrap python\S*\[{pid}\]: /\S+/rebind\.so libm\.so\.6$")
    proxy.wait_log(rf"wrap python\S*\[{pid}\]: err$")
    proxy.wait_log(r"wrap exit ignored")
    long_line = [line.split("]: ", 1)[1] for line in proxy.lines if line.endswith("xxx")]
    assert "".join(long_line) == "x" * 10000
    assert max(len(part) for part in long_line) <= 4096  # logged in bounded pieces


def test_program_gets_the_file_limit_wsproxy_found_not_the_raised_one(wrap) -> None:
    # As a user's shell starts it: soft 1000, hard 4000. wsproxy raises its own soft limit.
    show = program("import resource; print('nofile', *resource.getrlimit(resource.RLIMIT_NOFILE))")
    proxy = wrap([*show, "{port}"], "--wrap-mode=ignore", prefix=nofile(1000, 4000))
    proxy.wait_log(r"open file limit raised from 1000 to 4000")
    proxy.wait_log(r"wrap python\S*\[\d+\]: nofile 1000 4000$")


def test_rebind_lib_option_is_used(wrap, tmp_path: Path) -> None:
    lib = tmp_path / "my-rebind.so"
    shutil.copy(find_rebind_lib(None), lib)
    show = program("import os; print('preload', os.environ['LD_PRELOAD'])")
    proxy = wrap([*show, "{port}"], f"--rebind-lib={lib}", "--wrap-mode=ignore")
    proxy.wait_log(rf"wrap python\S*\[\d+\]: preload {re.escape(str(lib))}$")


def test_client_waits_for_a_slow_starting_program(wrap) -> None:
    slow = ["sh", "-c", 'sleep 1; exec socat TCP-LISTEN:"$0",reuseaddr,fork EXEC:cat', "{port}"]
    proxy = wrap(slow)
    started = time.monotonic()
    with ws(proxy) as conn:
        conn.send(b"late")
        assert conn.recv(timeout=5) == b"late"
    assert time.monotonic() - started >= 0.5


def test_client_gets_502_when_program_never_listens(wrap) -> None:
    proxy = wrap(["sleep", "30"], "--wrap-connect-timeout=0.5")
    with pytest.raises(InvalidStatus) as caught:
        ws(proxy)
    assert caught.value.response.status_code == 502
    proxy.wait_log(r"status=502 reason=.*did not accept on port \d+ within 0.5s")


# -- modes --


def test_respawn_serves_five_clients_in_a_row(wrap) -> None:
    proxy = wrap([*ONE_SHOT, "{port}"], "--wrap-mode=respawn")
    assert len(one_shot_greetings(proxy, 5)) == 5  # five different processes
    for restart in range(1, 5):
        proxy.wait_log(rf"wrap respawn name=python\S* restart={restart} delay=")
    assert len(set(re.findall(STARTED, proxy.log))) >= 5


def test_exit_mode_closes_clients_with_1001_and_exits_with_program_status(wrap) -> None:
    proxy = wrap([*HOLD_THEN_EXIT, "{port}"])
    with ws(proxy) as conn:
        conn.send(b"bye")
        with pytest.raises(ConnectionClosed) as caught:
            conn.recv(timeout=10)
    assert caught.value.rcvd is not None and caught.value.rcvd.code == 1001
    assert proxy.proc.wait(10) == 7
    proxy.wait_log(r"wrap exited name=python\S* pid=\d+ status=7")


@pytest.mark.parametrize(("script", "status"), [("exit 3", 3), ("kill -KILL $$", 137)])
def test_exit_mode_exit_status_follows_the_program(wrap, script: str, status: int) -> None:
    proxy = wrap(["sh", "-c", f"sleep 0.3; {script}"])
    assert proxy.proc.wait(10) == status


def test_ignore_mode_daemon_child_keeps_serving(wrap) -> None:
    proxy = wrap([*DAEMON, "{port}"], "--wrap-mode=ignore")
    proxy.wait_log(r"wrap exit ignored name=python")
    for _ in range(3):
        with ws(proxy) as conn:
            conn.send(b"still here")
            assert conn.recv(timeout=5) == b"still here"
    assert proxy.proc.poll() is None


# -- shutdown --


@pytest.mark.parametrize(
    ("mode", "argv"),
    [
        ("exit", [*FAMILY, "{port}"]),
        ("respawn", [*FAMILY, "{port}"]),
        ("ignore", [*DAEMON, "{port}"]),
        ("exit", [*FAMILY, "{port}", "ignore-sigterm"]),
    ],
    ids=["exit", "respawn", "ignore-daemon", "sigterm-ignored-gets-sigkill"],
)
def test_sigterm_leaves_no_process_or_zombie_of_the_group(wrap, mode: str, argv: list[str]) -> None:
    proxy = wrap(argv, f"--wrap-mode={mode}", "--graceful-timeout=1")
    pgid = int(proxy.wait_log(STARTED).group(1))
    with ws(proxy):  # relayed: the program is up (and, for ignore, its daemon child)
        pass
    assert len(group_members(pgid)) >= 1
    assert proxy.stop(signal.SIGTERM) == 0
    assert group_members(pgid) == []


@pytest.mark.parametrize("answers", [True, False], ids=["client-answers", "client-silent"])
def test_sigterm_stops_the_program_only_after_the_sessions_within_one_deadline(
    wrap, answers: bool
) -> None:
    # graceful_timeout 2, close_timeout 10: a silent client is cut at the graceful deadline.
    proxy = wrap([*ECHO_V6, "{port}"], "--graceful-timeout=2", "--close-timeout=10")
    client = RawClient(proxy.port, timeout=10)
    client.send_frame(Opcode.BINARY, b"ping")
    assert client.recv_data(4) == b"ping"
    start = time.monotonic()
    proxy.proc.send_signal(signal.SIGTERM)
    assert client.expect_close().code == 1001
    if answers:
        time.sleep(0.5)  # a client slow to answer: the program must still be running meanwhile
        client.send_frame(Opcode.CLOSE, struct.pack("!H", 1001))
    assert proxy.stop(timeout=10) == 0
    elapsed = time.monotonic() - start
    client.close()
    ended = "by=server code=1001" if answers else "stopping: cutting 1 session(s)"
    closed = next(i for i, line in enumerate(proxy.lines) if ended in line)
    term = next(
        i
        for i, line in enumerate(proxy.lines)
        if re.search(r"wrap \S+\[\d+\]: program got SIGTERM", line)
    )
    assert closed < term, proxy.log  # the program outlived the session it served
    # One deadline for the sessions (2 s), then the program's own quick exit; not 2 x 2 s.
    assert elapsed < (3 if answers else 4.5), proxy.log


# -- the examples in the README --


def refuse_options(data: bytes) -> bytes:
    """Telnet: answer every DO with WONT and every WILL with DONT (RFC 854), so the server
    goes on to the login prompt."""
    answer = b""
    for cmd, opt in re.findall(rb"\xff([\xfb\xfd])(.)", data, re.S):
        answer += b"\xff" + (b"\xfc" if cmd == b"\xfd" else b"\xfe") + opt
    return answer


def telnet_text(data: bytes) -> bytes:
    """The data stream of a telnet connection with its commands taken out (RFC 854): the
    server may send option negotiation anywhere, even right after a prompt, and a read may
    end inside a command."""
    command = rb"\xff\xff|\xff\xfa.*?(?:\xff\xf0|\Z)|\xff[\xfb-\xfe](?:.|\Z)|\xff[\xf0-\xf9]|\xff\Z"
    return re.sub(command, lambda m: b"\xff" if m[0] == b"\xff\xff" else b"", data, flags=re.S)


def test_debian_telnetd_respawned_shows_negotiation_and_login_prompt(wrap) -> None:
    # Debian's telnetd (inetutils) serves the connection on its stdin, as under inetd: socat
    # accepts one connection and execs it; respawn mode makes the next listener.
    argv = ["socat", "TCP-LISTEN:{port},reuseaddr", "EXEC:/usr/sbin/telnetd,nofork"]
    proxy = wrap(argv, "--wrap-mode=respawn")
    for _ in range(2):
        with ws(proxy) as conn:
            data = b""
            deadline = time.monotonic() + 10
            while b"login: " not in telnet_text(data) and time.monotonic() < deadline:
                chunk = conn.recv(timeout=10)
                assert isinstance(chunk, bytes)
                data += chunk
                if answer := refuse_options(chunk):
                    conn.send(answer)
        assert data.startswith(b"\xff") and b"\xff\xfd\x18" in data  # IAC DO TERMINAL-TYPE
        assert telnet_text(data).endswith(b"login: "), data  # commands may follow it
    proxy.wait_log(r"wrap respawn name=socat restart=1")


def free_display() -> int:
    for display in range(40, 100):
        if (
            not Path(f"/tmp/.X{display}-lock").exists()
            and not Path(f"/tmp/.X11-unix/X{display}").exists()
        ):
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", 6000 + display)) != 0:
                    return display
    raise AssertionError("no free X display number")


def test_tigervnc_in_ignore_mode_greets_with_rfb(wrap) -> None:
    display = free_display()
    argv = ["Xvnc", f":{display}", "-rfbport", "{port}", "-SecurityTypes", "None"]
    proxy = wrap(argv, "--wrap-mode=ignore")
    pgid = int(proxy.wait_log(STARTED).group(1))
    with ws(proxy) as conn:
        assert re.fullmatch(rb"RFB 003\.00\d\n", conn.recv(timeout=10))  # type: ignore[arg-type]
    assert proxy.stop(signal.SIGTERM) == 0
    assert group_members(pgid) == []


# -- configuration and start-up errors --


def test_wrap_from_ini_file_with_shell_quoting(run_proxy, tmp_path: Path) -> None:
    port = free_port()
    ini = tmp_path / "wsproxy.ini"
    ini.write_text(
        f"[wsproxy]\nlisten = 127.0.0.1:{port}\n"
        f"wrap = socat 'TCP-LISTEN:{port},reuseaddr,fork' \"EXEC:cat\"\nwrap_mode = respawn\n"
    )
    proxy = run_proxy(["-c", str(ini)])
    with connect(proxy.url, open_timeout=10) as conn:
        conn.send(b"from ini")
        assert conn.recv(timeout=5) == b"from ini"
    assert proxy.stop(signal.SIGTERM) == 0


@pytest.mark.parametrize(
    ("args", "ini", "message"),
    [
        (["--rebind-lib=/nonexistent/rebind.so", "127.0.0.1:0", "--", "cat"], None, "make rebind"),
        (["-c", "{ini}"], "target = 127.0.0.1:1\nwrap = cat\n", "not target and wrap"),
        (["--wrap-mode=sometimes", "127.0.0.1:0", "--", "cat"], None, "exit, ignore or respawn"),
        (["127.0.0.1:0", "--"], None, "no program after --"),
    ],
    ids=["missing-rebind-lib", "target-and-wrap", "bad-mode", "empty-program"],
)
def test_bad_wrap_configuration_exits_2(
    run_proxy, tmp_path: Path, args: list[str], ini: str | None, message: str
) -> None:
    path = tmp_path / "bad.ini"
    path.write_text(f"[wsproxy]\nlisten = 127.0.0.1:0\n{ini or ''}")
    proxy = run_proxy([a.replace("{ini}", str(path)) for a in args], ready=False)
    assert proxy.proc.wait(10) == 2
    proxy.stop()
    assert message in proxy.log


def test_program_that_cannot_be_executed_exits_1(run_proxy) -> None:
    proxy = run_proxy(["127.0.0.1:0", "--", "/nonexistent/program"], ready=False)
    assert proxy.proc.wait(10) == 1
    proxy.stop()
    assert "cannot start /nonexistent/program: No such file or directory" in proxy.log


# -- with --workers: the program belongs to the master, not to each worker --


def test_workers_share_one_program_and_sigterm_ends_its_group(wrap) -> None:
    proxy = wrap([*ECHO_V6, "{port}"], "--workers=2", "--wrap-mode=respawn", "--graceful-timeout=1")
    pgid = int(proxy.wait_log(STARTED).group(1))
    served_by = set()
    for _ in range(40):
        with ws(proxy) as conn:
            conn.send(b"ping")
            assert conn.recv(timeout=5) == b"ping"
            port = conn.socket.getsockname()[1]
        served_by.add(
            int(
                proxy.wait_log(
                    rf"(\d+) INFO wsproxy\.session: open peer=127\.0\.0\.1:{port} "
                ).group(1)
            )
        )
        if len(served_by) == 2:
            break
    assert len(served_by) == 2, "sessions did not reach both workers"
    assert len(re.findall(STARTED, proxy.log)) == 1  # one program for all workers
    assert proxy.stop(signal.SIGTERM) == 0
    assert group_members(pgid) == []


def test_workers_respawned_program_is_found_on_its_new_port(wrap) -> None:
    proxy = wrap([*ONE_SHOT, "{port}"], "--workers=2", "--wrap-mode=respawn")
    assert len(one_shot_greetings(proxy, 3)) == 3  # three runs, each on a fresh port


def test_workers_exit_mode_master_exits_with_program_status(wrap) -> None:
    proxy = wrap(["sh", "-c", "sleep 0.5; exit 5"], "--workers=2")
    assert proxy.proc.wait(15) == 5
    proxy.wait_log(r"companion exited status=exit 5, stopping")
