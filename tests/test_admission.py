"""Who gets in (wsproxy/admission.py): the open-file limit, max_connections and
max_connections_per_ip, on the wire, with wsproxy started under ``prlimit`` as a user's shell
or systemd would limit it."""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable

import pytest
from conftest import nofile, read_http_head, read_until_closed
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from wsproxy.admission import ClientCounts, RefusalLog, auto_max_connections
from wsproxy.errors import HandshakeError

ANSWER_WITHIN = 1.0  # seconds
UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)


def in_parallel(count: int, job: Callable[[], object]) -> list[object]:
    """Run ``job`` in ``count`` threads at once; their results (or exceptions)."""
    results: list[object] = [None] * count
    start = threading.Barrier(count)

    def run(i: int) -> None:
        start.wait(5)
        try:
            results[i] = job()
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return results


class Clients:
    """Real websockets clients, each timed from its connect to the answer; the open ones are
    kept until :meth:`close`."""

    def __init__(self, port: int) -> None:
        self.url = f"ws://127.0.0.1:{port}/"
        self.open = contextlib.ExitStack()
        self.lock = threading.Lock()

    def one(self) -> tuple[int, float]:
        start = time.monotonic()
        try:
            ws = connect(self.url, subprotocols=["binary"], open_timeout=5)
        except InvalidStatus as exc:
            return exc.response.status_code, time.monotonic() - start
        took = time.monotonic() - start
        with self.lock:
            self.open.enter_context(ws)
        return 101, took

    def many(self, count: int) -> tuple[Counter[int | str], float]:
        """``count`` clients at once: how many got each status, and the slowest answer."""
        results = in_parallel(count, self.one)
        statuses = Counter(r[0] if isinstance(r, tuple) else repr(r) for r in results)
        return statuses, max((r[1] for r in results if isinstance(r, tuple)), default=0.0)

    def __enter__(self) -> Clients:
        return self

    def __exit__(self, *exc: object) -> None:
        self.open.close()


def assert_round_trip(port: int) -> None:
    with connect(f"ws://127.0.0.1:{port}/", subprotocols=["binary"], open_timeout=5) as ws:
        ws.send(b"still serving")
        assert ws.recv(timeout=5) == b"still serving"


def test_under_ulimit_64_clients_past_the_cap_get_503_at_once(run_proxy, echo_server) -> None:
    proc = run_proxy(["127.0.0.1:0", echo_server.address], prefix=nofile(64, 64))
    proc.wait_log(r"open file limit 64: max_connections 15 \(auto\)")
    with Clients(proc.port) as clients:
        statuses, slowest = clients.many(40)
    assert set(statuses) == {101, 503}, statuses
    assert statuses[101] == 15
    assert slowest < ANSWER_WITHIN
    proc.wait_log(r"WARNING wsproxy\.admission: refused \d+ new client\(s\) with 503 .*max_conn")
    assert_round_trip(proc.port)
    refusals = [line for line in proc.lines if "refused" in line and "503" in line]
    assert len(refusals) == 1  # one line per interval, not one per client
    assert "Traceback" not in proc.log


def test_a_soft_limit_is_raised_to_the_hard_one(run_proxy, echo_server) -> None:
    proc = run_proxy(["127.0.0.1:0", echo_server.address], prefix=nofile(64, 4096))
    proc.wait_log(r"open file limit raised from 64 to 4096: max_connections 1968 \(auto\)")
    with Clients(proc.port) as clients:
        statuses, _ = clients.many(100)
    assert statuses == {101: 100}, statuses


def raw_upgrade(port: int) -> tuple[bytes, float]:
    """A hand-written upgrade; the first line of the answer and how long it took."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(UPGRADE + b"\r\n")
        answer = sock.recv(200).partition(b"\r\n")[0]
        took = time.monotonic() - start
        if answer.startswith(b"HTTP/1.1 101"):
            time.sleep(0.5)  # hold it while the others arrive
        return answer, took


def test_out_of_descriptors_new_clients_get_503_and_no_traceback(run_proxy, echo_server) -> None:
    # No cap: accept() itself runs out (EMFILE). gevent printed a traceback for each; now the
    # spare descriptor takes the client, answers 503 and is opened again.
    proc = run_proxy(
        ["--max-connections", "0", "127.0.0.1:0", echo_server.address], prefix=nofile(64, 64)
    )
    results = in_parallel(40, lambda: raw_upgrade(proc.port))
    answers = Counter(r[0] if isinstance(r, tuple) else repr(r) for r in results)
    assert set(answers) <= {
        b"HTTP/1.1 101 Switching Protocols",
        b"HTTP/1.1 503 Service Unavailable",
    }
    assert answers[b"HTTP/1.1 503 Service Unavailable"] > 0, answers
    assert max(r[1] for r in results if isinstance(r, tuple)) < ANSWER_WITHIN
    proc.wait_log(r"refused \d+ new client\(s\) with 503 .*out of file descriptors|Too many open")
    assert_round_trip(proc.port)
    assert "Traceback" not in proc.log


def test_past_max_connections_a_client_gets_503_instead_of_waiting(run_proxy, echo_server) -> None:
    proc = run_proxy(["--max-connections", "2", "127.0.0.1:0", echo_server.address])
    held = [socket.create_connection(("127.0.0.1", proc.port), timeout=5) for _ in range(2)]
    try:
        time.sleep(0.2)  # both accepted: their sessions wait for a request
        start = time.monotonic()
        with socket.create_connection(("127.0.0.1", proc.port), timeout=5) as sock:
            sock.sendall(UPGRADE + b"\r\n")
            status, headers, _ = read_http_head(sock)
        assert (status, headers["connection"]) == (503, "close")
        assert time.monotonic() - start < ANSWER_WITHIN
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.2)
    assert_round_trip(proc.port)


def test_a_reload_changes_the_cap_for_the_next_clients(run_proxy, echo_server, tmp_path) -> None:
    ini = tmp_path / "w.ini"
    ini.write_text(f"[wsproxy]\nlisten = 127.0.0.1:0\ntarget = {echo_server.address}\n"
                   "max_connections = 1\n")  # fmt: skip
    proc = run_proxy(["-c", str(ini)])
    held = socket.create_connection(("127.0.0.1", proc.port), timeout=5)
    try:
        time.sleep(0.2)  # accepted: its session waits for a request
        assert raw_upgrade(proc.port)[0] == b"HTTP/1.1 503 Service Unavailable"
        ini.write_text(ini.read_text().replace("max_connections = 1", "max_connections = 2"))
        proc.proc.send_signal(signal.SIGHUP)
        proc.wait_log(r"reloaded targets=.* changed=max_connections='2'")
        assert raw_upgrade(proc.port)[0] == b"HTTP/1.1 101 Switching Protocols"
    finally:
        held.close()


# -- max_connections_per_ip ----------------------------------------------------------------------


def upgrade_from(
    port: int, source: str, preamble: bytes = b"", extra: bytes = b""
) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
    sock.sendall(preamble + UPGRADE + extra + b"\r\n")
    return sock


def test_max_connections_per_ip(run_proxy, echo_server) -> None:
    proc = run_proxy(["--max-connections-per-ip", "2", "127.0.0.1:0", echo_server.address])
    first = [upgrade_from(proc.port, "127.0.0.1") for _ in range(2)]
    try:
        assert [read_http_head(s)[0] for s in first] == [101, 101]
        third = upgrade_from(proc.port, "127.0.0.1")
        status, _, body = read_http_head(third)
        assert status == 503 and b"max_connections_per_ip" in body + read_until_closed(third)
        other = upgrade_from(proc.port, "127.0.0.2")  # another address has its own share
        assert read_http_head(other)[0] == 101
        other.close()
        proc.wait_log(r"refused peer=127\.0\.0\.1:\d+ status=503 reason=.*max_connections_per_ip")
    finally:
        for sock in first:
            sock.close()
    time.sleep(0.2)
    assert_round_trip(proc.port)  # the slots were given back


@pytest.mark.parametrize("how", ["proxy header", "x-forwarded-for"])
def test_max_connections_per_ip_counts_the_real_client_behind_a_balancer(
    run_proxy, echo_server, how: str
) -> None:
    proc = run_proxy(
        [
            "--max-connections-per-ip", "1", "--trusted-proxies", "127.0.0.1",
            "127.0.0.1:0", echo_server.address,
        ]
    )  # fmt: skip

    def via_balancer(client: str) -> socket.socket:
        if how == "proxy header":
            preamble = f"PROXY TCP4 {client} 192.0.2.1 40000 443\r\n".encode()
            return upgrade_from(proc.port, "127.0.0.1", preamble=preamble)
        return upgrade_from(proc.port, "127.0.0.1", extra=f"X-Forwarded-For: {client}\r\n".encode())

    a = via_balancer("203.0.113.1")
    b = via_balancer("203.0.113.2")  # same balancer, another client: not over
    try:
        assert [read_http_head(s)[0] for s in (a, b)] == [101, 101]
        again = via_balancer("203.0.113.1")
        assert read_http_head(again)[0] == 503
        again.close()
        proc.wait_log(r"refused peer=203\.0\.113\.1\S* status=503 .*max_connections_per_ip")
    finally:
        a.close()
        b.close()


# -- the rules, without sockets ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "sessions"), [(64, 15), (1024, 480), (4096, 1968), (65536, 31728), (20, 1)]
)
def test_auto_max_connections_leaves_a_reserve(limit: int, sessions: int) -> None:
    assert auto_max_connections(limit) == sessions
    assert 2 * sessions < limit


def test_client_counts_hold_and_give_back() -> None:
    counts = ClientCounts(2)
    first, second = counts.acquire("a"), counts.acquire("a")
    with pytest.raises(HandshakeError) as exc_info:
        counts.acquire("a")
    assert exc_info.value.status == 503
    counts.release(counts.acquire("b"))
    counts.release(second)
    counts.release(first)
    assert counts.counts == {}
    assert [counts.acquire("") for _ in range(3)] == ["", "", ""]  # a UNIX socket client
    assert counts.counts == {}
    unlimited = ClientCounts(0)
    assert [unlimited.acquire("a"), unlimited.acquire("a")] == ["", ""]  # 0: no limit


def test_client_counts_give_back_what_was_counted_across_a_limit_change() -> None:
    """A reload may set or clear the limit while sessions relay: each gives back what it took."""
    counts = ClientCounts(0)
    uncounted = counts.acquire("a")  # no limit yet: not counted
    counts.limit = 1
    counted = counts.acquire("a")
    counts.release(uncounted)
    assert counts.counts == {"a": 1}
    counts.limit = 0
    counts.release(counted)
    assert counts.counts == {}


def test_refusal_log_says_one_line_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    refusals = RefusalLog(interval=0.2)
    with caplog.at_level("WARNING", "wsproxy.admission"):
        for _ in range(50):
            refusals.note("full")
        time.sleep(0.25)
        refusals.note("full")
    assert [r.getMessage() for r in caplog.records] == [
        "refused 1 new client(s) with 503 since the last report: full",
        "refused 50 new client(s) with 503 since the last report: full",
    ]
