"""Relay behaviour with slow peers (backpressure instead of buffering) and many at once."""

from __future__ import annotations

import base64
import contextlib
import gc
import os
import random
import socket
import threading
import time

import gevent
import gevent.select
import gevent.socket
import pytest
from conftest import read_http_head, wait_until
from websockets.sync.client import connect
from wsraw import RawClient

from wsproxy.protocol.codec import BinaryCodec
from wsproxy.protocol.rfc6455 import Opcode, encode_frame
from wsproxy.relay import Relay, scratch_buffer

LIMIT = 48 << 20  # kernel socket buffers on loopback can hold a few MiB each way; we hold 256 KiB


def test_slow_target_blocks_the_client_instead_of_filling_memory(run_proxy) -> None:
    target = socket.create_server(("127.0.0.1", 0))
    proc = run_proxy(["127.0.0.1:0", f"127.0.0.1:{target.getsockname()[1]}"])
    client = RawClient(proc.port)
    conn, _ = target.accept()  # accepted, never read
    frame = encode_frame(Opcode.BINARY, b"x" * 65536, mask=True)
    client.sock.settimeout(1.0)
    offered = 0
    try:
        while offered < 4 * LIMIT:
            client.sock.sendall(frame)
            offered += len(frame)
    except TimeoutError:
        pass
    assert offered < LIMIT, f"proxy accepted {offered} bytes the target never read"
    # The relay still works once the target reads again: every whole frame sent arrives.
    conn.settimeout(5)
    expected = offered // len(frame) * 65536
    received = 0
    while received < expected:
        chunk = conn.recv(1 << 20)
        assert chunk, f"target got {received} of {expected} bytes, then EOF"
        received += len(chunk)
    client.close()
    conn.close()
    target.close()


def test_slow_client_blocks_the_target(run_proxy) -> None:
    target = socket.create_server(("127.0.0.1", 0))
    proc = run_proxy(["127.0.0.1:0", f"127.0.0.1:{target.getsockname()[1]}"])
    client = RawClient(proc.port)  # never reads after the handshake
    conn, _ = target.accept()
    conn.settimeout(1.0)
    chunk = b"y" * 65536
    offered = 0
    try:
        while offered < 4 * LIMIT:
            conn.sendall(chunk)
            offered += len(chunk)
    except TimeoutError:
        pass
    assert offered < LIMIT, f"proxy took {offered} bytes the client never read"
    client.close()
    conn.close()
    target.close()


def test_frames_sent_right_after_the_handshake_are_not_lost(proxy) -> None:
    # The first frame travels in the same TCP segment as the request head.
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    sock.sendall(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        + encode_frame(Opcode.BINARY, b"early", mask=True)
    )
    status, _, rest = read_http_head(sock)
    assert status == 101
    while len(rest) < 7:
        rest += sock.recv(100)
    assert rest == encode_frame(Opcode.BINARY, b"early")
    sock.close()


# All relays of a process read into one shared buffer (relay.py): none may see another's bytes.
def hammer(url: str, clients: int = 12) -> list[str]:
    """Concurrent clients, binary and base64 alternately, each checking its own echo: the relays
    of one process share a read buffer, so any yield between a read and its copy shows here."""
    failures: list[str] = []

    def client(seed: int) -> None:
        rng = random.Random(seed)
        b64 = seed % 2 == 1
        try:
            with connect(
                url,
                subprotocols=["base64" if b64 else "binary"],
                max_size=None,
                open_timeout=10,
                close_timeout=5,
            ) as ws:
                for _ in range(10):
                    data = os.urandom(rng.choice([1, 100, 5000, 70000, 300000]))
                    ws.send(base64.b64encode(data).decode() if b64 else data)
                    got = b""
                    while len(got) < len(data):
                        message = ws.recv(timeout=10)
                        got += base64.b64decode(message) if b64 else message
                    if got != data:
                        failures.append(f"client {seed}: echo differs")
                        return
        except Exception as exc:
            failures.append(f"client {seed}: {exc!r}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=50)
    return failures


def test_concurrent_sessions_each_get_their_own_bytes_back(proxy) -> None:
    assert not hammer(proxy.url)


def test_concurrent_recorded_sessions_each_get_their_own_bytes_back(
    run_proxy, echo_server, tmp_path
) -> None:
    proc = run_proxy(["--record", str(tmp_path / "rec"), "127.0.0.1:0", echo_server.address])
    assert not hammer(proc.url, clients=6)
    assert len(list(tmp_path.glob("rec.*"))) == 6


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """Split unmasked server frames; fails on a trailing partial frame."""
    out = []
    pos = 0
    while pos < len(data):
        b0, b1 = data[pos], data[pos + 1]
        length, pos = b1 & 0x7F, pos + 2
        if length == 126:
            length, pos = int.from_bytes(data[pos : pos + 2], "big"), pos + 2
        elif length == 127:
            length, pos = int.from_bytes(data[pos : pos + 8], "big"), pos + 8
        assert pos + length <= len(data), "partial frame at the end"
        out.append((b0 & 0x0F, data[pos : pos + length]))
        pos += length
    return out


def streaming_target() -> tuple[socket.socket, threading.Event]:
    """A target that sends 16 KiB chunks to its client until it goes away."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def stream() -> None:
        conn, _ = server.accept()
        with conn:
            while not stop.is_set():
                try:
                    conn.sendall(b"z" * 16384)
                except OSError:
                    return

    threading.Thread(target=stream, daemon=True).start()
    return server, stop


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(1 << 20):
        data += chunk
    return data


def sigterm_while_streaming(run_proxy, client_pause: float) -> list[tuple[int, bytes]]:
    target, stop = streaming_target()
    proc = run_proxy(
        ["--close-timeout", "3", "127.0.0.1:0", f"127.0.0.1:{target.getsockname()[1]}"]
    )
    client = RawClient(proc.port, timeout=10)
    data = client.initial  # read raw from the first byte of the first frame on
    while len(data) < 16384:  # the stream flows
        data += client.sock.recv(65536)
    proc.proc.terminate()
    time.sleep(client_pause)  # a client that does not read for a while: the proxy's send blocks
    data += read_all(client.sock)
    stop.set()
    client.close()
    target.close()
    return server_frames(data)


def test_no_data_frame_follows_the_close_frame(run_proxy) -> None:
    frames = sigterm_while_streaming(run_proxy, 0)
    opcodes = [op for op, _ in frames]
    assert opcodes.count(Opcode.CLOSE) == 1
    assert opcodes[-1] == Opcode.CLOSE, opcodes[-5:]
    assert frames[-1][1][:2] == (1001).to_bytes(2, "big")


def socket_pairs() -> tuple[gevent.socket.socket, ...]:
    """(relay's client end, test's client end, relay's target end, test's target end)."""
    client_ours, client_theirs = gevent.socket.socketpair()
    target_ours, target_theirs = gevent.socket.socketpair()
    return client_ours, client_theirs, target_ours, target_theirs


@pytest.mark.parametrize("client_answers", [False, True], ids=["silent", "client-closes-too"])
def test_close_goes_out_whole_and_next_while_the_data_pump_holds_a_slow_client(
    client_answers: bool,
) -> None:
    # In-process, with socket pairs: the data pump is blocked writing to a client that reads
    # slowly; going_away() must not be starved, nothing may follow the close frame, and a client
    # that sends its own close meanwhile must not make the relay cut a frame in half.
    client_ours, client_theirs, target_ours, target_theirs = socket_pairs()
    relay = Relay(client_ours, target_ours, BinaryCodec("binary"), close_timeout=3)
    runner = gevent.spawn(relay.run)

    def stream() -> None:
        with contextlib.suppress(OSError):
            while True:
                target_theirs.sendall(b"z" * 16384)

    def read_slowly() -> bytes:
        data = b""
        while chunk := client_theirs.recv(4096):
            data += chunk
            gevent.sleep(0.0005)
        return data

    streamer = gevent.spawn(stream)
    with gevent.Timeout(10):
        while relay.bytes_out < 16384:  # data flows, then the client's buffers fill up
            gevent.sleep(0.01)
        gevent.spawn(relay.going_away)
        gevent.sleep(0)
        if client_answers:
            client_theirs.sendall(encode_frame(Opcode.CLOSE, b"\x03\xe8", mask=True))
        reader = gevent.spawn(read_slowly)
        outcome = runner.get()
        client_ours.close()
        data = reader.get()
    streamer.kill()
    frames = server_frames(data)
    assert outcome.by == "server"
    assert [op for op, _ in frames].count(Opcode.CLOSE) == 1
    assert frames[-1] == (Opcode.CLOSE, (1001).to_bytes(2, "big") + b"server shutting down")


def test_a_frame_the_client_cannot_take_at_once_is_copied_out_of_the_shared_buffer() -> None:
    # Frames go to the client straight from the shared read buffer. Relay A's client reads
    # nothing for a while, so A's send stops part way; relay B meanwhile reads its own target's
    # bytes into the same buffer. A's client must still get exactly A's bytes.
    scratch = scratch_buffer()
    a_client, a_reader, a_target, a_source = socket_pairs()
    b_client, b_reader, b_target, b_source = socket_pairs()
    relays = [
        Relay(a_client, a_target, BinaryCodec("binary"), scratch=scratch),
        Relay(b_client, b_target, BinaryCodec("binary"), scratch=scratch),
    ]
    runners = [gevent.spawn(relay.run) for relay in relays]
    data_a = os.urandom(4 << 20)  # far more than the socket buffers between us hold
    data_b = os.urandom(2 << 20)

    def read_frames(sock: gevent.socket.socket, size: int) -> bytes:
        raw = b""
        while sum(len(p) for _, p in server_frames_prefix(raw)) < size:
            chunk = sock.recv(1 << 20)
            assert chunk, "the relay closed early"
            raw += chunk
        return b"".join(p for _, p in server_frames_prefix(raw))

    with gevent.Timeout(20):
        senders = [gevent.spawn(a_source.sendall, data_a), gevent.spawn(b_source.sendall, data_b)]
        ready, _, _ = gevent.select.select([a_reader], [], [], 10)  # A's frames started
        assert ready
        assert read_frames(b_reader, len(data_b)) == data_b  # B ran while A's send waited
        assert read_frames(a_reader, len(data_a)) == data_a
        gevent.joinall(senders, raise_error=True)
    for sock in (a_reader, b_reader, a_source, b_source):
        sock.close()
    gevent.joinall(runners, timeout=10)


def server_frames_prefix(data: bytes) -> list[tuple[int, bytes]]:
    """The whole unmasked server frames at the start of ``data`` (a partial last one is left)."""
    out = []
    pos = 0
    while pos + 2 <= len(data):
        length, start = data[pos + 1] & 0x7F, pos + 2
        if length == 126:
            length, start = int.from_bytes(data[start : start + 2], "big"), start + 2
        elif length == 127:
            length, start = int.from_bytes(data[start : start + 8], "big"), start + 8
        if start + length > len(data):
            break
        out.append((data[pos] & 0x0F, data[start : start + length]))
        pos = start + length
    return out


def test_relay_waits_for_the_close_answer_of_a_client_still_uploading() -> None:
    client_ours, client_theirs, target_ours, target_theirs = socket_pairs()
    relay = Relay(client_ours, target_ours, BinaryCodec("binary"), close_timeout=5)
    runner = gevent.spawn(relay.run)
    frame = encode_frame(Opcode.BINARY, b"u" * 4096, mask=True)

    def upload() -> None:
        with contextlib.suppress(OSError):
            while True:
                client_theirs.sendall(frame)
                gevent.sleep(0.001)

    def drain_target() -> None:
        with contextlib.suppress(OSError):
            while target_theirs.recv(65536):
                pass

    uploader, drainer = gevent.spawn(upload), gevent.spawn(drain_target)
    with gevent.Timeout(10):
        while relay.bytes_in < 4096:
            gevent.sleep(0.01)
        gevent.spawn(relay.going_away)
        gevent.sleep(0.3)
        assert not runner.ready(), "the relay ended without the client's answer"
        uploader.kill()
        client_theirs.sendall(encode_frame(Opcode.CLOSE, b"\x03\xe9", mask=True))
        outcome = runner.get()
        client_ours.close()
        received = b""
        while chunk := client_theirs.recv(65536):
            received += chunk
    drainer.kill()
    assert outcome.by == "server"
    assert server_frames(received)[-1][0] == Opcode.CLOSE


class CountingSocket:
    """A plain socket that counts reads that found nothing (EAGAIN), for gevent to wrap."""

    def __init__(self, sock: socket.socket) -> None:
        self._real = sock
        self.empty_reads = 0

    def recv_into(self, *args):
        try:
            return self._real.recv_into(*args)
        except BlockingIOError:
            self.empty_reads += 1
            raise

    def __getattr__(self, name: str):
        return getattr(self._real, name)


def test_pumps_wait_for_data_after_a_short_read_instead_of_failing_a_read() -> None:
    # An interactive session: every read takes all there is. Reading again at once would fail
    # with EAGAIN on every wake-up of both pumps (a system call and an exception each).
    client_ours, client_theirs, target_ours, target_theirs = socket_pairs()
    counters = [CountingSocket(client_ours._sock), CountingSocket(target_ours._sock)]
    client_ours._sock, target_ours._sock = counters
    relay = Relay(client_ours, target_ours, BinaryCodec("binary"))
    runner = gevent.spawn(relay.run)
    rounds = 200
    with gevent.Timeout(20):
        for i in range(rounds):
            message = i.to_bytes(4, "big") * 8
            client_theirs.sendall(encode_frame(Opcode.BINARY, message, mask=True))
            got = b""
            while len(got) < len(message):
                got += target_theirs.recv(64)
            assert got == message
            target_theirs.sendall(message)
            frame = client_theirs.recv(64)
            assert server_frames(frame) == [(Opcode.BINARY, message)]
        client_theirs.sendall(encode_frame(Opcode.CLOSE, b"\x03\xe8", mask=True))
        assert runner.get().by == "client"
    assert relay.bytes_in == relay.bytes_out == rounds * 32
    # A wake-up may still race with a read now and then; one per round trip would be 2 * rounds.
    assert sum(c.empty_reads for c in counters) < rounds // 10


def test_an_interactive_session_runs_its_target_pump_without_a_greenlet(monkeypatch) -> None:
    # Plain sockets, no recording: every echo fits the client's socket, so the target pump runs
    # on the hub (the target's read watcher) and the session spawns nothing, nor kills anything.
    spawned: list[object] = []
    real_spawn = gevent.spawn

    def counting_spawn(*args, **kwargs):
        spawned.append(args[0])
        return real_spawn(*args, **kwargs)

    client_ours, client_theirs, target_ours, target_theirs = socket_pairs()
    relay = Relay(client_ours, target_ours, BinaryCodec("binary"))
    runner = gevent.spawn(relay.run)
    monkeypatch.setattr(gevent, "spawn", counting_spawn)
    with gevent.Timeout(20):
        for i in range(100):
            message = i.to_bytes(4, "big") * 8
            client_theirs.sendall(encode_frame(Opcode.BINARY, message, mask=True))
            got = b""
            while len(got) < len(message):
                got += target_theirs.recv(64)
            target_theirs.sendall(got)
            assert server_frames(client_theirs.recv(64)) == [(Opcode.BINARY, message)]
        client_theirs.sendall(encode_frame(Opcode.CLOSE, b"\x03\xe8", mask=True))
        assert runner.get().by == "client"
    assert spawned == []
    assert relay.bytes_out == 100 * 32
    for sock in (client_ours, client_theirs, target_ours, target_theirs):
        sock.close()


def test_a_frame_waiting_for_the_send_lock_is_copied_out_of_the_shared_buffer() -> None:
    # The target pump on the hub finds another writer holding the client's send lock: its frame
    # waits in a greenlet, and must not change when another relay reads into the shared buffer
    # before that greenlet runs. The test makes that interleaving certain: it calls the hub's
    # read itself (the loop would, the same way) and overwrites the buffer before it yields.
    scratch = scratch_buffer()
    client_ours, client_theirs, target_ours, target_theirs = socket_pairs()
    relay = Relay(client_ours, target_ours, BinaryCodec("binary"), scratch=scratch)
    runner = gevent.spawn(relay.run)
    with gevent.Timeout(10):
        gevent.sleep(0)  # the relay is running
        relay._send_lock.acquire()  # as a pong or a ping being written would
        target_theirs.sendall(b"a" * 32)
        relay._target_readable()
        scratch[:] = bytes(len(scratch))  # another relay's read
        relay._send_lock.release()
        assert server_frames(client_theirs.recv(128)) == [(Opcode.BINARY, b"a" * 32)]
        target_theirs.sendall(b"c" * 16)  # the pump goes on, in its greenlet now
        assert server_frames(client_theirs.recv(128)) == [(Opcode.BINARY, b"c" * 16)]
        target_theirs.close()
        outcome = runner.get()
    assert (outcome.by, outcome.code) == ("target", 1000)
    for sock in (client_ours, client_theirs, target_ours):
        sock.close()


def test_a_target_closed_by_another_greenlet_ends_the_relay_with_1011() -> None:
    # gevent's close of a socket throws into whoever waits on it: here the relay itself, whose
    # target pump runs on the hub.
    client_ours, client_theirs, target_ours, target_theirs = socket_pairs()
    relay = Relay(client_ours, target_ours, BinaryCodec("binary"))
    runner = gevent.spawn(relay.run)
    with gevent.Timeout(10):
        target_theirs.sendall(b"hello")
        assert server_frames(client_theirs.recv(64)) == [(Opcode.BINARY, b"hello")]
        target_ours.close()
        outcome = runner.get()
        frames = server_frames(client_theirs.recv(256))
    assert (outcome.by, outcome.code) == ("target", 1011)
    assert frames[0][0] == Opcode.CLOSE and frames[0][1][:2] == (1011).to_bytes(2, "big")
    for sock in (client_ours, client_theirs, target_theirs):
        sock.close()


def test_a_control_frame_goes_out_between_data_frames_of_a_flooding_target() -> None:
    # The heartbeat's ping shares the client's socket with the target pump. Behind a target that
    # always has more to send and a client that reads slowly, the pump takes the writer's lock
    # again at once after every frame: the ping must still go out after the frame being written.
    client_ours, client_theirs, target_ours, target_theirs = socket_pairs()
    relay = Relay(client_ours, target_ours, BinaryCodec("binary"))
    runner = gevent.spawn(relay.run)
    chunk = os.urandom(256 * 1024)

    def flood() -> None:
        with contextlib.suppress(OSError):
            while True:
                target_theirs.sendall(chunk)

    seen: list[int] = []
    raw = bytearray()

    def read_slowly() -> None:
        with contextlib.suppress(OSError):
            while not seen:
                data = client_theirs.recv(64 * 1024)
                if not data:
                    return
                raw.extend(data)
                frames = server_frames_prefix(bytes(raw))
                seen.extend(op for op, _ in frames if op == Opcode.PING)
                used = sum(
                    2 + len(p) + (8 if len(p) > 65535 else 2 if len(p) > 125 else 0)
                    for _, p in frames
                )
                del raw[:used]
                gevent.sleep(0.002)

    flooder, reader = gevent.spawn(flood), gevent.spawn(read_slowly)
    with gevent.Timeout(20):
        while relay.bytes_out < 4 << 20:  # the flood is under way, the client behind it
            gevent.sleep(0.01)
        pinger = gevent.spawn(relay.send_control, encode_frame(Opcode.PING, b"beat"))
        pinger.join(timeout=5)
        assert pinger.successful(), "the ping never left"
        reader.join(timeout=10)
    assert seen == [Opcode.PING]
    flooder.kill()
    relay.going_away()
    client_theirs.close()
    runner.join(timeout=10)


def test_close_1002_survives_a_client_still_sending(proxy) -> None:
    client = RawClient(proxy.port)
    junk = encode_frame(Opcode.BINARY, b"j" * 60000, mask=True)
    client.send_raw(bytes([0x82, 0x03]) + b"bad" + junk)  # unmasked: 1002, then more data
    assert client.expect_close().code == 1002
    client.close()


def test_after_a_violation_the_relay_lingers_until_a_quiet_client_closes() -> None:
    # The client pump stops reading at the violation; the lingering close then reads the client
    # with gevent's own recv, which finds the socket's read watcher free (the pump's Reader kept
    # it started between reads) and waits, the client being quiet, until it closes.
    client_ours, client_theirs, target_ours, target_theirs = socket_pairs()
    relay = Relay(client_ours, target_ours, BinaryCodec("binary"), close_timeout=5)
    runner = gevent.spawn(relay.run)
    with gevent.Timeout(10):
        client_theirs.sendall(encode_frame(Opcode.BINARY, b"ok", mask=True))
        assert target_theirs.recv(64) == b"ok"
        client_theirs.sendall(b"\x82\x03bad")  # unmasked
        frames = server_frames(client_theirs.recv(64))
        assert frames[0][0] == Opcode.CLOSE and frames[0][1][:2] == (1002).to_bytes(2, "big")
        gevent.sleep(0.1)  # quiet: the relay's linger waits for the client
        assert not runner.ready()
        client_theirs.close()
        outcome = runner.get()
    assert (outcome.by, outcome.code) == ("proxy", 1002)
    for sock in (client_ours, target_ours, target_theirs):
        sock.close()


@pytest.mark.parametrize("ending", ["client", "target", "server"])
def test_a_relay_leaves_no_reference_cycles(ending: str) -> None:
    # Freed by reference counting alone, a session never feeds the cyclic collector, whose full
    # collections would stall every session of the process (the echo tail). Each ending takes
    # another path out of the pumps: a close frame, the target's EOF, going_away() and a kill.
    scratch = scratch_buffer()

    def one() -> None:
        client_ours, client_theirs, target_ours, target_theirs = socket_pairs()
        relay = Relay(client_ours, target_ours, BinaryCodec("binary"), scratch=scratch)
        runner = gevent.spawn(relay.run)
        client_theirs.sendall(encode_frame(Opcode.BINARY, b"x" * 32, mask=True))
        assert target_theirs.recv(64) == b"x" * 32
        target_theirs.sendall(b"y" * 32)
        assert server_frames(client_theirs.recv(64)) == [(Opcode.BINARY, b"y" * 32)]
        if ending == "client":
            client_theirs.sendall(encode_frame(Opcode.CLOSE, b"\x03\xe8", mask=True))
        elif ending == "target":
            target_theirs.close()
            client_theirs.recv(64)  # our close frame
            client_theirs.close()
        else:
            relay.going_away()
            client_theirs.close()
        assert runner.get(timeout=5).by == ending
        for sock in (client_ours, client_theirs, target_ours, target_theirs):
            sock.close()

    with gevent.Timeout(30):
        one()  # first use: module-level caches
        gevent.sleep(0.01)
        gc.collect()
        gc.disable()
        try:
            gc.set_debug(gc.DEBUG_SAVEALL)
            for _ in range(50):
                one()
            gevent.sleep(0.01)
            found = gc.collect()
            kinds = sorted({type(o).__name__ for o in gc.garbage})
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
    assert found < 50, f"{found} objects in cycles after 50 relays: {kinds}"


def test_a_valid_frame_sent_with_a_violation_still_reaches_the_target(run_proxy) -> None:
    # One write: a valid message, then an unmasked frame. The message came before the
    # violation: the target gets it, then the client gets its 1002.
    sink = socket.create_server(("127.0.0.1", 0))
    received = bytearray()

    def serve() -> None:
        conn, _ = sink.accept()
        with conn:
            while chunk := conn.recv(65536):
                received.extend(chunk)

    reader = threading.Thread(target=serve, daemon=True)
    reader.start()
    try:
        proxy = run_proxy(["127.0.0.1:0", f"127.0.0.1:{sink.getsockname()[1]}"])
        client = RawClient(proxy.port)
        message = os.urandom(3000)
        client.send_raw(encode_frame(Opcode.BINARY, message, mask=True) + b"\x82\x03bad")
        assert client.expect_close().code == 1002
        client.close()
        reader.join(timeout=10)  # the relay closed the target after the message
        assert not reader.is_alive()
        assert bytes(received) == message
    finally:
        sink.close()


def test_idle_session_is_closed_and_a_busy_one_is_not(run_proxy, echo_server) -> None:
    proc = run_proxy(["--session-idle-timeout", "0.6", "127.0.0.1:0", echo_server.address])
    idle, busy = RawClient(proc.port), RawClient(proc.port)
    start = time.monotonic()
    while time.monotonic() - start < 1.5:  # the busy one talks every 0.1 s, past the timeout
        busy.send_frame(Opcode.BINARY, b"tick")
        assert busy.recv_data(4) == b"tick"
        time.sleep(0.1)
    close = idle.expect_close()
    assert (close.code, close.reason) == (1000, "idle timeout")
    assert time.monotonic() - start < 3
    busy.send_frame(Opcode.BINARY, b"still")
    assert busy.recv_data(5) == b"still"
    proc.wait_log(r"closed .* by=server code=1000 reason=\"idle timeout\"")
    idle.close()
    busy.close()


def test_sockets_probe_dead_peers_with_tcp_keepalive() -> None:
    from wsproxy.session import KEEPALIVE_IDLE, tune_socket

    with socket.socket() as sock:
        tune_socket(sock)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == KEEPALIVE_IDLE
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1


def keepalive_timers(port: int) -> list[int]:
    """Seconds left on the keepalive timer of each established loopback TCP socket whose local
    port is ``port`` (from /proc/net/tcp: timer kind 2 is keepalive, the delay is in ticks)."""
    ticks = os.sysconf("SC_CLK_TCK")
    found = []
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            local, state, timer = fields[1], fields[3], fields[5]
            kind, when = timer.split(":")
            if int(local.split(":")[1], 16) == port and state == "01" and int(kind, 16) == 2:
                found.append(int(when, 16) // ticks)
    return found


def test_listening_socket_carries_the_options_accepted_sockets_inherit() -> None:
    from wsproxy.server import WSProxy
    from wsproxy.session import KEEPALIVE_IDLE

    server = WSProxy("127.0.0.1:0", "127.0.0.1:1")
    server.init_socket()
    try:
        listener = server.socket
        assert listener.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == KEEPALIVE_IDLE
        assert listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert server.context.listener_tuned  # so sessions do not set them again
    finally:
        server.close()


def test_accepted_sockets_probe_dead_peers_with_tcp_keepalive(run_proxy, echo_server) -> None:
    # Set once on the listening socket, inherited by every accepted one (Linux).
    from wsproxy.session import KEEPALIVE_IDLE

    proc = run_proxy(["127.0.0.1:0", echo_server.address])
    client = RawClient(proc.port)
    client.send_frame(Opcode.BINARY, b"ping")
    assert client.recv_data(4) == b"ping"
    # Right after the echo the retransmission timer (kind 1) runs until the client's delayed ACK.
    timers = wait_until(lambda: keepalive_timers(proc.port), what="a keepalive timer")
    client.close()
    assert len(timers) == 1, timers
    assert 0 < timers[0] <= KEEPALIVE_IDLE
