"""Shared fixtures: real peers on ephemeral loopback ports, and wsproxy run as its own process."""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, settings

# --- hypothesis profiles: "test" for `make test` (the same examples every run, a few seconds a
# module), "fuzz" for `make fuzz` (new random examples, many more). HYPOTHESIS_PROFILE picks one.
for _name, _examples in (("test", 100), ("fuzz", 1000)):  # fuzz: a round of about a minute
    settings.register_profile(
        _name,
        max_examples=_examples,
        derandomize=_name == "test",
        print_blob=_name == "fuzz",
        deadline=None,  # a shared, loaded machine: time is not what these tests measure
        database=None,  # no .hypothesis directory: a failure prints its example (and blob)
        suppress_health_check=[HealthCheck.too_slow],
    )
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "test"))

ROOT = Path(__file__).resolve().parent.parent
LISTENING = re.compile(r"listening on (\S+?):?(\d+),")
# The console script that `pip install` put beside this Python: what users run.
WSPROXY = str(Path(sys.executable).with_name("wsproxy"))


class EchoServer:
    """A threaded TCP echo server (or, given ``unix_path``, a UNIX socket one): every byte it
    receives goes back, until the peer closes."""

    def __init__(self, unix_path: Path | None = None) -> None:
        if unix_path is None:
            self.sock = socket.create_server(("127.0.0.1", 0), backlog=128)
            self.port = self.sock.getsockname()[1]
            self.address = f"127.0.0.1:{self.port}"
        else:
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.bind(str(unix_path))
            self.sock.listen(128)
            self.port, self.address = 0, str(unix_path)
        self.connections = 0
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(262144):
                    conn.sendall(data)
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()


class ProxyProcess:
    """``python -m wsproxy ARGS`` with its log collected; ``port`` is the bound port."""

    def __init__(
        self,
        args: list[str],
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        ready: bool = True,
        prefix: tuple[str, ...] = (),
    ) -> None:
        self.args = args
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [*prefix, WSPROXY, *args],  # prefix: a wrapper that execs it, such as prlimit
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **(env or {})},
            cwd=cwd or ROOT,
        )
        self._listening = threading.Event()
        self.host = ""
        self.port = 0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if ready:
            self.wait_listening()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            m = LISTENING.search(line)
            if m and not self._listening.is_set():
                self.host = m.group(1).strip("[]")
                self.port = int(m.group(2))
                self._listening.set()

    def wait_listening(self, timeout: float = 10) -> None:
        if not self._listening.wait(timeout):
            self.proc.kill()
            raise AssertionError("wsproxy did not start:\n" + self.log)

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def wait_log(self, pattern: str, timeout: float = 5) -> re.Match[str]:
        """Wait until a log line matches ``pattern``; returns the match."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if m := regex.search(line):
                    return m
            time.sleep(0.02)
        raise AssertionError(f"no log line matches {pattern!r}:\n{self.log}")

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("wsproxy did not stop in time:\n" + self.log) from None
        self._reader.join(2)
        return code


@pytest.fixture(scope="session")
def echo_server() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.close()


@pytest.fixture
def run_proxy() -> Iterator[type[ProxyProcess]]:
    """Start wsproxy processes with ``run_proxy(args)``; each is stopped after the test."""
    started: list[ProxyProcess] = []

    def start(args: list[str], **kwargs: object) -> ProxyProcess:
        proc = ProxyProcess(args, **kwargs)  # type: ignore[arg-type]
        started.append(proc)
        return proc

    yield start  # type: ignore[misc]
    for proc in started:
        with contextlib.suppress(AssertionError):
            proc.stop(signal.SIGKILL if proc.proc.poll() is None else signal.SIGTERM)


@pytest.fixture(scope="module")
def proxy(echo_server: EchoServer) -> Iterator[ProxyProcess]:
    """One wsproxy in front of the echo server, shared by a test module."""
    proc = ProxyProcess(["127.0.0.1:0", echo_server.address])
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    """The test CA every TLS test trusts."""
    return trustme.CA()


@pytest.fixture(scope="session")
def pki(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Files: the server's key+chain in one PEM, cert and key apart, the CA, a client cert."""
    d = tmp_path_factory.mktemp("pki")
    server = ca.issue_cert("127.0.0.1", "localhost")
    server.private_key_and_cert_chain_pem.write_to_path(str(d / "server.pem"))
    server.cert_chain_pems[0].write_to_path(str(d / "cert.pem"))
    server.private_key_pem.write_to_path(str(d / "key.pem"))
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    key = serialization.load_pem_private_key(server.private_key_pem.bytes(), password=None)
    (d / "encrypted-key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    (d / "garbage.pem").write_text("not a certificate\n")
    return {p.stem: str(p) for p in d.iterdir()}


def end_process(proc: subprocess.Popen[str], timeout: float = 10) -> None:
    """SIGTERM a peer the test started, and SIGKILL it if it has not gone within ``timeout``."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_until(predicate: Callable[[], object], timeout: float = 5, what: str = "") -> object:
    """Poll ``predicate`` until it returns something true (returned), or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        if result := predicate():
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(0.02)


def run_wsproxy(
    args: list[str], *, cwd: Path | None = None, stdin: int = subprocess.DEVNULL
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``wsproxy`` to its end (a start that must fail, or a short-lived one),
    with its output captured as text."""
    return subprocess.run(
        [WSPROXY, *args], cwd=cwd, stdin=stdin, capture_output=True, text=True, timeout=30
    )


def ws_echo(url: str, data: bytes = b"ping") -> bytes:
    """Send ``data`` with the websockets client and return the answer."""
    from websockets.sync.client import connect

    with connect(url, open_timeout=5, close_timeout=2) as ws:
        ws.send(data)
        answer = ws.recv(timeout=5)
    assert isinstance(answer, bytes)
    return answer


_GIVEN_PORTS: set[int] = set()


def nofile(soft: int, hard: int) -> tuple[str, ...]:
    """A ``ProxyProcess`` prefix: wsproxy started with that open-file limit, as from a shell."""
    return ("prlimit", f"--nofile={soft}:{hard}", "--")


def free_port() -> int:
    """A loopback port nothing listens on (for a server a test starts, or a 502 test).

    Chosen below the kernel's ephemeral range: a port ``bind(0)`` gives is an ephemeral one, which
    any outgoing connection on the machine may take as its source port before the test's server
    binds it (seen: haproxy's check port of an instance "already in use"). A port that TIME_WAIT
    still holds fails the bind here and is skipped; none is given twice in one run.
    """
    with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as f:
        low = int(f.read().split()[0])
    for _ in range(1000):
        port = random.randrange(max(1024, low - 12000), low)
        if port in _GIVEN_PORTS:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _GIVEN_PORTS.add(port)
        return port
    raise RuntimeError("no free port below the ephemeral range")


def raw_connect(port: int, timeout: float = 5) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return sock


def read_http_head(sock: socket.socket, limit: int = 65536) -> tuple[int, dict[str, str], bytes]:
    """Read an HTTP response head; returns (status, lower-cased headers, bytes after the head)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
        assert len(data) < limit
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, rest


def read_until_closed(sock: socket.socket, limit: int = 1 << 20) -> bytes:
    data = b""
    while len(data) < limit:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


def upgrade_status(port: int, path: str, host: str = "x", timeout: float = 10) -> tuple[int, bytes]:
    """Send a WebSocket upgrade for ``path``; returns the status and, unless it is 101, the
    answer's body (after 101, the bytes that came with the head)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        head = (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        )
        sock.sendall(head.encode())
        status, _, rest = read_http_head(sock)
        return status, rest if status == 101 else rest + read_until_closed(sock)


def echo_once(url: str, payload: bytes = b"ping", sock: socket.socket | None = None) -> bytes:
    """Open a WebSocket (the ``websockets`` client; over ``sock`` if given, so that the URL's
    host is only the Host header), send ``payload``, return the echo."""
    from websockets.sync.client import connect

    with connect(url, open_timeout=10, sock=sock) as ws:
        ws.send(payload)
        answer = ws.recv(timeout=10)
        return answer if isinstance(answer, bytes) else answer.encode()


def refused_start(run_proxy: Callable[..., ProxyProcess], args: list[str], **kwargs: object) -> str:
    """Start wsproxy with ``args`` (``run_proxy``'s ``kwargs``), expect exit status 2 (bad input)
    before it listens; returns its log."""
    proc = run_proxy(args, ready=False, **kwargs)
    assert proc.proc.wait(10) == 2, proc.log
    proc._reader.join(2)
    return proc.log
