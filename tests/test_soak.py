"""The fault soak: hundreds of concurrent clients against one wsproxy, with every fault at once.

Clients (the ``websockets`` asyncio client, and raw sockets for what no library sends) relay
random sizes with random fragmentation, binary and base64, over ws and wss. Alongside, clients
vanish mid-stream and read slowly; targets reset, refuse and never accept; slowloris heads and
garbage arrive. Every session that closed normally must have delivered every byte: the client
checks what came back, the target what came in (SHA-256 both ways). At the end the proxy's file
descriptors, threads and children are back at their baseline and its session gauge at 0.

``make test`` runs it for ``SOAK_DURATION`` seconds (default 20); ``make soak DURATION=600`` is
the long run (README, "Fault soak").
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import os
import random
import re
import socket
import ssl
import struct
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trustme
from conftest import ProxyProcess, free_port, wait_until
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from wsproxy.plugins.tokens import LOOKUP_THREADS

DURATION = float(os.environ.get("SOAK_DURATION", "20"))
CONCURRENCY = int(os.environ.get("SOAK_CLIENTS", "150"))
HANDSHAKE_TIMEOUT = 2.0
CONNECT_TIMEOUT = 1.0
MAX_MESSAGE = 256 * 1024
ID_BYTES = 16
# Seconds a faulty target's client waits for its 502 or close. Generous, for the driver's one
# event loop (clients and targets) lags behind under load; the proxy's own bound is 1 s.
FAULT_WITHIN = 8.0
CLIENT_TIMEOUT = 20.0  # seconds any one client may take, whatever it does
SETTLE = 15.0  # seconds the proxy has to return to its baseline once the load stops


# -- targets -------------------------------------------------------------------------------------


@dataclass
class Targets:
    """The target side: an echo that checksums what it receives, one that resets every
    connection, a port that refuses and a listener that never accepts."""

    received: dict[bytes, str] = field(default_factory=dict)  # client id -> SHA-256 of its bytes
    servers: list[asyncio.Server] = field(default_factory=list)
    hole: socket.socket | None = None
    ports: dict[str, int] = field(default_factory=dict)

    async def start(self) -> None:
        echo = await asyncio.start_server(self._echo, "127.0.0.1", 0, backlog=1024)
        reset = await asyncio.start_server(self._reset, "127.0.0.1", 0, backlog=1024)
        self.servers = [echo, reset]
        self.hole = socket.create_server(("127.0.0.1", 0), backlog=0)  # never accept()ed
        self.ports = {
            "echo": echo.sockets[0].getsockname()[1],
            "reset": reset.sockets[0].getsockname()[1],
            "refuse": free_port(),
            "hole": self.hole.getsockname()[1],
        }

    def token_file(self, path: Path) -> Path:
        path.write_text("".join(f"{t}: 127.0.0.1:{p}\n" for t, p in self.ports.items()))
        return path

    async def _echo(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        digest = hashlib.sha256()
        ident = b""
        try:
            while data := await reader.read(65536):
                if len(ident) < ID_BYTES:
                    ident += data[: ID_BYTES - len(ident)]
                digest.update(data)
                writer.write(data)
                await writer.drain()
        except OSError:
            return  # a vanished client's session: nothing to check
        finally:
            writer.close()
        self.received[ident] = digest.hexdigest()

    async def _reset(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await asyncio.sleep(random.random() * 0.2)
        writer.close()  # with SO_LINGER 0: a reset

    def close(self) -> None:
        for server in self.servers:
            server.close()
        if self.hole is not None:
            self.hole.close()


# -- clients -------------------------------------------------------------------------------------


@dataclass
class Soak:
    port: int
    tls: ssl.SSLContext
    targets: Targets
    rng: random.Random
    outcomes: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    bytes_up: int = 0
    bytes_down: int = 0

    def url(self, token: str, secure: bool) -> str:
        return f"{'wss' if secure else 'ws'}://127.0.0.1:{self.port}/?token={token}"

    def open(self, token: str, secure: bool, protocol: str, **kwargs: object) -> connect:
        return connect(
            self.url(token, secure),
            ssl=self.tls if secure else None,
            subprotocols=[protocol],  # type: ignore[list-item]
            compression=None,
            max_size=None,
            open_timeout=10,
            close_timeout=5,
            ping_interval=None,
            **kwargs,  # type: ignore[arg-type]
        )

    def fail(self, kind: str, what: str) -> None:
        self.failures.append(f"{kind}: {what}")

    # Each client kind returns the outcome it counts under; unexpected ones call fail().

    async def normal(self, *, slow: bool = False) -> str:
        secure, base64_mode = self.rng.random() < 0.3, self.rng.random() < 0.3
        protocol = "base64" if base64_mode else "binary"
        ident = self.rng.randbytes(ID_BYTES)
        sent, got = hashlib.sha256(), hashlib.sha256()
        messages = self.rng.randint(1, 4) if not slow else 3
        async with self.open("echo", secure, protocol, max_queue=2 if slow else 16) as ws:
            for i in range(messages):
                size = 256 * 1024 if slow else int(2 ** self.rng.uniform(0, 18))
                payload = (ident if i == 0 else b"") + self.rng.randbytes(size)
                sent.update(payload)
                await ws.send(self.fragments(payload, base64_mode))
                got.update(await self.receive(ws, len(payload), base64_mode, slow))
                self.bytes_up += len(payload)
                self.bytes_down += len(payload)
        if ws.close_code != 1000:
            self.fail("normal", f"closed with {ws.close_code}")
        if got.hexdigest() != sent.hexdigest():
            self.fail("normal", "the echo differs from what was sent")
        for _ in range(100):  # the target sees the end of the stream just after the close
            if ident in self.targets.received:
                break
            await asyncio.sleep(0.05)
        if self.targets.received.pop(ident, None) != sent.hexdigest():
            self.fail("normal", "the target received other bytes than were sent")
        return f"{'slow ' if slow else ''}{'wss' if secure else 'ws'} {protocol}"

    def fragments(self, payload: bytes, text: bool) -> list[bytes] | list[str]:
        data: bytes | str = base64.b64encode(payload).decode() if text else payload
        cuts = sorted(self.rng.sample(range(1, len(data)), min(len(data) - 1, 5))) if data else []
        cuts = cuts[: self.rng.randint(0, len(cuts))]
        pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        return pieces  # type: ignore[return-value]

    async def receive(self, ws: ClientConnection, size: int, text: bool, slow: bool) -> bytes:
        got = bytearray()
        while len(got) < size:
            message = await ws.recv()
            got += base64.b64decode(message) if text else message  # type: ignore[arg-type]
            if slow:
                await asyncio.sleep(0.02)
        if len(got) != size:
            self.fail("normal", f"{len(got)} bytes came back for {size}")
        return bytes(got)

    async def vanish(self) -> str:
        secure = self.rng.random() < 0.3
        async with self.open("echo", secure, "binary") as ws:
            await ws.send(self.rng.randbytes(self.rng.randint(1, 200_000)))
            await asyncio.sleep(self.rng.random() * 0.2)
            transport = ws.transport
            if self.rng.random() < 0.5:
                sock = transport.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()  # no close frame: a reset, or a plain FIN
        return "vanished"

    async def target_fault(self) -> str:
        token = self.rng.choice(["reset", "refuse", "hole"])
        start = time.monotonic()
        try:
            async with self.open(token, self.rng.random() < 0.3, "binary") as ws:
                await ws.send(b"x" * 100)
                # The reset target never answers: the close comes instead. The kernel completes
                # a connection or two to the listener that never accepts (its backlog): that
                # relay stays open, silent, until the client gives up.
                try:
                    await asyncio.wait_for(ws.recv(), FAULT_WITHIN)
                except TimeoutError:
                    if token == "hole":
                        return "target hole, in the backlog"
                    raise
        except InvalidStatus as exc:
            if exc.response.status_code != 502:
                self.fail(token, f"status {exc.response.status_code}")
        except ConnectionClosed as exc:
            if exc.rcvd is None or exc.rcvd.code == 1000:
                self.fail(token, f"closed without an error code: {exc}")
        else:
            self.fail(token, "the relay to a faulty target went on")
        if time.monotonic() - start > FAULT_WITHIN + 2:
            self.fail(token, f"took {time.monotonic() - start:.1f} s")
        return f"target {token}"

    async def raw(self, data: bytes, dribble: bool) -> float:
        """Send ``data`` (a byte every 0.3 s if ``dribble``), return how long until closed."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        start = time.monotonic()

        async def until_closed() -> None:
            with contextlib.suppress(OSError):
                while await reader.read(65536):
                    pass

        closed = asyncio.ensure_future(until_closed())
        try:
            for piece in [data[i : i + 1] for i in range(len(data))] if dribble else [data]:
                if closed.done():
                    break
                writer.write(piece)
                if dribble:
                    await asyncio.wait([closed], timeout=0.3)
            await asyncio.wait_for(closed, 30)
            return time.monotonic() - start
        finally:
            writer.close()

    async def slowloris(self) -> str:
        took = await self.raw(
            b"GET /?token=echo HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"z" * 100, True
        )
        # Bounds as the driver sees them: its loop may resume the client late, under load.
        if not 0.5 < took < HANDSHAKE_TIMEOUT + 3:
            self.fail("slowloris", f"closed after {took:.1f} s")
        return "slowloris"

    async def garbage(self) -> str:
        took = await self.raw(self.rng.randbytes(self.rng.randint(1, 4000)), False)
        if took > HANDSHAKE_TIMEOUT + 3:
            self.fail("garbage", f"closed after {took:.1f} s")
        return "garbage"

    def pick(self) -> Callable[[], Awaitable[str]]:
        kinds: list[tuple[float, Callable[[], Awaitable[str]]]] = [
            (0.55, self.normal),
            (0.05, lambda: self.normal(slow=True)),
            (0.12, self.vanish),
            (0.12, self.target_fault),
            (0.06, self.slowloris),
            (0.10, self.garbage),
        ]
        weights, jobs = zip(*kinds, strict=True)
        return self.rng.choices(jobs, weights)[0]

    async def run_one(self) -> None:
        job = self.pick()
        try:
            outcome = await asyncio.wait_for(job(), CLIENT_TIMEOUT)
        except Exception as exc:
            self.fail(getattr(job, "__name__", "client"), repr(exc)[:200])
            return
        self.outcomes[outcome] += 1

    async def run(self, duration: float, concurrency: int) -> None:
        end = time.monotonic() + duration
        running: set[asyncio.Task[None]] = set()
        while time.monotonic() < end:
            while len(running) < concurrency:
                task = asyncio.create_task(self.run_one())
                running.add(task)
                task.add_done_callback(running.discard)
            await asyncio.sleep(0.01)
        await asyncio.gather(*running)


# -- the proxy's resources, from /proc -----------------------------------------------------------


def resources(pid: int) -> dict[str, int]:
    children = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rpartition(")")[2].split()[1]) == pid:
                children += 1
    return {
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": len(os.listdir(f"/proc/{pid}/task")),
        "children": children,
    }


def sessions_open(metrics: str) -> float:
    with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(float(m) for m in re.findall(r"^wsproxy_sessions_open\{[^}]*\} (\S+)$", text, re.M))


@pytest.fixture
def soak_proxy(tmp_path: Path) -> Iterator[tuple[ProxyProcess, Targets, trustme.CA, str]]:
    ca = trustme.CA()
    pem = tmp_path / "server.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
    targets = Targets()
    loop = asyncio.new_event_loop()
    loop.run_until_complete(targets.start())
    tokens = targets.token_file(tmp_path / "tokens")
    proc = ProxyProcess(
        [
            "--token-plugin", "TokenFile", "--token-source", str(tokens), "--cert", str(pem),
            "--handshake-timeout", str(HANDSHAKE_TIMEOUT),
            "--connect-timeout", str(CONNECT_TIMEOUT),
            "--close-timeout", "1", "--metrics-listen", "127.0.0.1:0", "127.0.0.1:0",
        ]
    )  # fmt: skip
    metrics = proc.wait_log(r"metrics at http://(\S+)/metrics").group(1)
    try:
        asyncio.set_event_loop(loop)
        yield proc, targets, ca, metrics
    finally:
        proc.stop()
        targets.close()
        loop.close()
        asyncio.set_event_loop(None)


@pytest.mark.timeout(DURATION + CLIENT_TIMEOUT + SETTLE + 30)
def test_fault_soak(soak_proxy: tuple[ProxyProcess, Targets, trustme.CA, str]) -> None:
    proc, targets, ca, metrics = soak_proxy
    context = ssl.create_default_context()
    ca.configure_trust(context)
    seed = int(os.environ.get("SOAK_SEED", time.time_ns() % 1_000_000))
    soak = Soak(proc.port, context, targets, random.Random(seed))
    loop = asyncio.get_event_loop()
    logging.getLogger("asyncio").setLevel(logging.ERROR)  # vanishing clients' writes: noise

    loop.run_until_complete(soak.run(0.5, 4))  # warm-up: TLS, the token file, metrics
    sessions_open(metrics)
    time.sleep(1)
    baseline = resources(proc.proc.pid)

    start = time.monotonic()
    loop.run_until_complete(soak.run(DURATION, CONCURRENCY))
    took = time.monotonic() - start
    assert not soak.failures, (
        f"SOAK_SEED={seed}: {len(soak.failures)} failures: {soak.failures[:10]}"
    )

    def settled() -> bool:
        now = resources(proc.proc.pid)
        # Token lookups run in a pool of threads that stay once started, at most LOOKUP_THREADS.
        threads = now["threads"] <= baseline["threads"] + LOOKUP_THREADS
        back = threads and now["fds"] == baseline["fds"]
        return back and now["children"] == baseline["children"] and sessions_open(metrics) == 0

    wait_until(settled, timeout=SETTLE, what=f"baseline {baseline}, not {resources(proc.proc.pid)}")
    assert "Traceback" not in proc.log, proc.log[-3000:]
    loop.run_until_complete(soak.normal())  # and it still serves
    assert not soak.failures, soak.failures
    total = sum(soak.outcomes.values())
    print(
        f"\nsoak: {total} clients in {took:.0f} s, {CONCURRENCY} at a time, "
        f"{soak.bytes_up / 1e6:.0f} MB each way checked; baseline {baseline}; "
        f"{dict(sorted(soak.outcomes.items()))}"
    )
