"""permessage-deflate end to end: the real ``wsproxy`` command with ``--permessage-deflate``, the
``websockets`` client (``compression="deflate"``) and a raw-socket client that reads the frames
as they cross the wire, in front of a TCP echo."""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import threading
import time
import zlib
from collections.abc import Sequence
from pathlib import Path

import pytest
from conftest import EchoServer, ProxyProcess, wait_until
from websockets.exceptions import ConnectionClosed
from websockets.extensions.base import Extension
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    PerMessageDeflate,
)
from websockets.frames import DATA_OPCODES, Frame
from websockets.sync.client import connect
from websockets.typing import ExtensionParameter
from wsraw import RawClient

from wsproxy.protocol.payload import apply_mask
from wsproxy.protocol.rfc6455 import Compressed, Opcode, frame_header
from wsproxy.record import parse_recording

TEXT = b"".join(b"%06d user@host:~$ ls -l /var/log | grep -c error\r\n" % i for i in range(22000))
MIB = 1 << 20


@pytest.fixture
def deflate_proxy(run_proxy, echo_server: EchoServer) -> ProxyProcess:  # type: ignore[no-untyped-def]
    return run_proxy(["--permessage-deflate", "127.0.0.1:0", echo_server.address])  # type: ignore[no-any-return]


def echo(ws, data: bytes | str, decode=lambda m: m) -> bytes:  # type: ignore[no-untyped-def]
    ws.send(data)
    got = b""
    while len(got) < len(decode(data) if isinstance(data, str) else data):
        got += decode(ws.recv(timeout=10))
    return got


def extension_header(ws) -> str | None:  # type: ignore[no-untyped-def]
    return ws.response.headers.get("Sec-WebSocket-Extensions")  # type: ignore[no-any-return]


def test_off_by_default_an_offer_gets_no_extension(run_proxy, echo_server: EchoServer) -> None:  # type: ignore[no-untyped-def]
    proxy = run_proxy(["127.0.0.1:0", echo_server.address])
    with connect(proxy.url, compression="deflate", subprotocols=["binary"]) as ws:
        assert extension_header(ws) is None
        assert ws.protocol.extensions == []
        assert echo(ws, TEXT[:5000]) == TEXT[:5000]
    # ... and a compressed frame from a client that was not granted it is a protocol error.
    client = RawClient(proxy.port, extensions="permessage-deflate")
    assert "sec-websocket-extensions" not in client.headers
    frame = bytearray(encode(Opcode.BINARY, b"\x02\x00"))
    frame[0] |= 0x40
    client.send_raw(bytes(frame))
    assert client.expect_close().code == 1002
    client.close()


@pytest.mark.parametrize("subprotocol", ["binary", "base64", None])
def test_websockets_negotiates_and_round_trips_byte_exact(
    deflate_proxy: ProxyProcess, subprotocol: str | None
) -> None:
    protocols = [subprotocol] if subprotocol else None
    with connect(
        deflate_proxy.url, compression="deflate", subprotocols=protocols, max_size=None
    ) as ws:
        header = extension_header(ws)
        assert header is not None and header.startswith("permessage-deflate")
        assert "client_max_window_bits=12" in header  # the default cap, both ways
        assert [type(e).__name__ for e in ws.protocol.extensions] == ["PerMessageDeflate"]
        messages = [TEXT[:MIB], os.urandom(256 * 1024)] + [os.urandom(n) for n in range(1, 51)]
        for message in messages:
            if subprotocol == "base64":
                got = echo(ws, base64.b64encode(message).decode(), base64.b64decode)
            else:
                got = echo(ws, message)
            assert got == message
    deflate_proxy.wait_log(rf"closed peer=\S+ proto=rfc6455 sub={subprotocol or '-'} .* code=1000")


class RecordingDeflate(PerMessageDeflate):
    """websockets' own extension, keeping each data frame's RSV1 and payload as it crosses."""

    def __init__(self, agreed: PerMessageDeflate) -> None:
        super().__init__(
            agreed.remote_no_context_takeover,
            agreed.local_no_context_takeover,
            agreed.remote_max_window_bits,
            agreed.local_max_window_bits,
            agreed.compress_settings,
        )
        self.sent: list[tuple[bool, bytes]] = []
        self.received: list[tuple[bool, bytes]] = []

    def encode(self, frame: Frame) -> Frame:
        frame = super().encode(frame)
        if frame.opcode in DATA_OPCODES:
            self.sent.append((frame.rsv1, bytes(frame.data)))
        return frame

    def decode(self, frame: Frame, *, max_size: int | None = None) -> Frame:
        if frame.opcode in DATA_OPCODES:
            self.received.append((frame.rsv1, bytes(frame.data)))
        return super().decode(frame, max_size=max_size)


class FirefoxOffer(ClientPerMessageDeflateFactory):
    """What Firefox offers: ``permessage-deflate`` with no parameter, so it may use 15 bits."""

    def __init__(self) -> None:
        super().__init__(client_max_window_bits=None)

    def process_response_params(
        self, params: Sequence[ExtensionParameter], accepted_extensions: Sequence[Extension]
    ) -> RecordingDeflate:
        return RecordingDeflate(super().process_response_params(params, accepted_extensions))


def test_firefox_offer_is_agreed_and_its_15_bit_window_inflated(
    deflate_proxy: ProxyProcess,
) -> None:
    with connect(
        deflate_proxy.url, extensions=[FirefoxOffer()], compression=None, subprotocols=["binary"]
    ) as ws:
        assert ws.request is not None
        assert ws.request.headers["Sec-WebSocket-Extensions"] == "permessage-deflate"
        # Our window capped unasked (RFC 7692 7.1.2.1); the client's not (7.1.2.2).
        assert extension_header(ws) == "permessage-deflate; server_max_window_bits=12"
        [ext] = ws.protocol.extensions
        assert isinstance(ext, RecordingDeflate)
        assert (ext.local_max_window_bits, ext.remote_max_window_bits) == (15, 12)
        # Repeats 20 KiB apart: the client refers back past a 12-bit (4 KiB) window.
        far = os.urandom(20 << 10) * 4
        assert echo(ws, far) == far
        [(rsv1, body)] = ext.sent
        assert rsv1 and len(body) < 24 << 10
        assert zlib.decompressobj(-15).decompress(body + b"\x00\x00\xff\xff") == far
        with pytest.raises(zlib.error, match="too far back"):
            zlib.decompressobj(-12).decompress(body + b"\x00\x00\xff\xff")
        before = len(ext.received)
        assert echo(ws, TEXT[:100_000]) == TEXT[:100_000]
        assert len(ext.sent) == 2 and all(rsv1 for rsv1, _ in ext.sent)
        assert ext.received and all(rsv1 for rsv1, _ in ext.received)
        wire = sum(len(body) for _, body in ext.received[before:])
        assert wire < 10_000, f"{wire} bytes from the proxy for 100000"
    deflate_proxy.wait_log(r"closed peer=\S+ proto=rfc6455 sub=binary .* code=1000")


def encode(opcode: int, payload: bytes, *, fin: bool = True, rsv1: bool = False) -> bytes:
    mask = os.urandom(4)
    header = bytearray(frame_header(opcode, len(payload), fin=fin, mask=mask))
    if rsv1:
        header[0] |= 0x40
    return bytes(header) + apply_mask(payload, mask)


def test_server_frames_on_the_wire_are_compressed(deflate_proxy: ProxyProcess) -> None:
    client = RawClient(deflate_proxy.port, extensions="permessage-deflate; client_max_window_bits")
    assert client.headers["sec-websocket-extensions"] == (
        "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"
    )
    # One uncompressed message from us (allowed: RSV1 is per message), then one compressed.
    client.send_raw(encode(Opcode.BINARY, TEXT[:MIB]))
    inflater = zlib.decompressobj(-12)
    got, wire, frames = b"", 0, 0
    while len(got) < MIB:
        event = client.next_event()
        assert type(event) is Compressed and event.fin
        wire += len(event.payload)
        frames += 1
        got += inflater.decompress(event.payload + b"\x00\x00\xff\xff")
    assert got == TEXT[:MIB]
    assert wire < MIB // 10, f"{wire} bytes on the wire for {MIB}"
    z = zlib.compressobj(6, zlib.DEFLATED, -12)
    body = (z.compress(b"ping me back") + z.flush(zlib.Z_SYNC_FLUSH))[:-4]
    client.send_raw(encode(Opcode.BINARY, body, rsv1=True))
    event = client.next_event()
    assert type(event) is Compressed
    assert inflater.decompress(event.payload + b"\x00\x00\xff\xff") == b"ping me back"
    client.close()


@pytest.mark.parametrize(
    "frames",
    [
        [encode(Opcode.PING, b"", rsv1=True)],
        [encode(Opcode.BINARY, b"", fin=False), encode(Opcode.CONTINUATION, b"", rsv1=True)],
    ],
    ids=["control", "continuation"],
)
def test_rsv1_where_rfc7692_forbids_it_closes_1002(
    deflate_proxy: ProxyProcess, frames: list[bytes]
) -> None:
    client = RawClient(deflate_proxy.port, extensions="permessage-deflate; client_max_window_bits")
    assert "permessage-deflate" in client.headers["sec-websocket-extensions"]
    client.send_raw(b"".join(frames))
    assert client.expect_close().code == 1002
    client.close()


def test_malformed_offer_gets_400(deflate_proxy: ProxyProcess) -> None:
    with pytest.raises(AssertionError, match="400"):
        RawClient(deflate_proxy.port, extensions="permessage-deflate;;")
    deflate_proxy.wait_log(r"status=400 reason=.*Sec-WebSocket-Extensions")


def bomb_frame(bits: int) -> bytes:
    """One message of about 2 MB that inflates to 2 GiB of zeros: a sync-flushed 1 MiB segment
    repeated (each starts with a literal, so it is valid after any history)."""
    z = zlib.compressobj(9, zlib.DEFLATED, -bits)
    segment = z.compress(bytes(MIB)) + z.flush(zlib.Z_SYNC_FLUSH)
    return encode(Opcode.BINARY, segment * 2048, rsv1=True)


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0])


CAPPED = "permessage-deflate; server_max_window_bits=12"


@pytest.mark.parametrize(
    ("offer", "response", "bits"),
    [
        ("permessage-deflate; client_max_window_bits", f"{CAPPED}; client_max_window_bits=12", 12),
        ("permessage-deflate", CAPPED, 15),  # Firefox's offer: the client keeps 15 bits
    ],
    ids=["capped", "firefox"],
)
def test_bomb_closes_1009_fast_with_bounded_memory_and_others_go_on(
    deflate_proxy: ProxyProcess, offer: str, response: str, bits: int
) -> None:
    frame = bomb_frame(bits)
    assert len(frame) < 2_200_000
    pid = deflate_proxy.proc.pid
    with connect(deflate_proxy.url, compression="deflate", subprotocols=["binary"]) as other:
        assert echo(other, TEXT[:100_000]) == TEXT[:100_000]  # warmed up: imports, buffers
        baseline = rss_kib(pid)
        peak = [baseline]
        echoes: list[bytes] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], rss_kib(pid))
                time.sleep(0.005)

        def keep_echoing() -> None:
            while not stop.is_set():
                echoes.append(echo(other, b"still here %d" % len(echoes)))

        threads = [threading.Thread(target=sample), threading.Thread(target=keep_echoing)]
        for thread in threads:
            thread.start()
        try:
            client = RawClient(deflate_proxy.port, extensions=offer)
            assert client.headers["sec-websocket-extensions"] == response
            sender = threading.Thread(target=_send_ignoring_errors, args=(client, frame))
            started = time.monotonic()
            sender.start()
            close = client.expect_close()
            elapsed = time.monotonic() - started
            assert (close.code, close.reason) == (1009, f"message over {16 * MIB} bytes inflated")
            assert elapsed < 1.0, f"closed after {elapsed:.2f} s"
            sender.join(10)
            client.close()
            before = len(echoes)
            wait_until(lambda: len(echoes) > before + 10, what="the other client echoing on")
        finally:
            stop.set()
            for thread in threads:
                thread.join(10)
        assert echoes == [b"still here %d" % i for i in range(len(echoes))]
    growth = (peak[0] - baseline) / 1024
    assert growth < 64, f"RSS grew {growth:.1f} MiB"
    deflate_proxy.wait_log(r"closed peer=\S+ .* by=proxy code=1009")
    print(f"bomb: closed after {elapsed:.3f} s, RSS grew {growth:.1f} MiB")


def _send_ignoring_errors(client: RawClient, data: bytes) -> None:
    # The proxy may close after 1009 before it read the rest: that is the point.
    with contextlib.suppress(OSError):
        client.send_raw(data)


def test_recording_stores_the_inflated_payload(run_proxy, echo_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    proxy = run_proxy(
        [
            "--permessage-deflate",
            "--record",
            str(tmp_path / "rec"),
            "127.0.0.1:0",
            echo_server.address,
        ]
    )
    message = TEXT[:200_000]
    with connect(proxy.url, compression="deflate", subprotocols=["binary"], max_size=None) as ws:
        assert extension_header(ws) is not None
        assert echo(ws, message) == message
    proxy.wait_log(r"recording peer=\S+ file=")
    recording = parse_recording((tmp_path / "rec.1").read_text("ascii"))
    assert b"".join(f.data for f in recording.frames if f.from_client) == message
    assert b"".join(f.data for f in recording.frames if not f.from_client) == message


def test_metrics_show_wire_and_message_bytes(run_proxy, echo_server: EchoServer) -> None:  # type: ignore[no-untyped-def]
    from test_metrics import METRICS_AT, scrape

    proxy = run_proxy(
        [
            "--permessage-deflate",
            "--metrics-listen",
            "127.0.0.1:0",
            "127.0.0.1:0",
            echo_server.address,
        ]
    )
    base = "http://" + proxy.wait_log(METRICS_AT)[1]
    message = TEXT[:500_000]
    with connect(proxy.url, compression="deflate", subprotocols=["binary"], max_size=None) as ws:
        assert echo(ws, message) == message
    proxy.wait_log(r"closed peer=")
    got = scrape(base)
    for direction in ("in", "out"):
        label = (("direction", direction),)
        assert got[("wsproxy_deflate_message_bytes_total", label)] == len(message)
        wire = got[("wsproxy_deflate_wire_bytes_total", label)]
        assert 0 < wire < len(message) / 10
        assert got[("wsproxy_payload_bytes_total", label)] == len(message)


def test_client_that_drops_mid_message_ends_cleanly(deflate_proxy: ProxyProcess) -> None:
    client = RawClient(deflate_proxy.port, extensions="permessage-deflate; client_max_window_bits")
    z = zlib.compressobj(6, zlib.DEFLATED, -12)
    client.send_raw(encode(Opcode.BINARY, z.compress(TEXT[:50_000]), fin=False, rsv1=True))
    client.close()
    deflate_proxy.wait_log(r"closed peer=\S+ .* by=client code=1006")
    with connect(deflate_proxy.url, compression="deflate") as ws:
        assert echo(ws, b"after") == b"after"


def test_close_from_the_client_is_answered_after_compressed_data(
    deflate_proxy: ProxyProcess,
) -> None:
    with connect(deflate_proxy.url, compression="deflate", subprotocols=["binary"]) as ws:
        assert echo(ws, TEXT[:10_000]) == TEXT[:10_000]
        ws.close(4000, "bye")
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=5)
        assert info.value.rcvd is not None and info.value.rcvd.code == 4000


def test_hixie_never_gets_compression(deflate_proxy: ProxyProcess) -> None:
    from conftest import read_http_head
    from test_session import hixie_read

    from wsproxy.protocol.hixie import HixieParser
    from wsproxy.protocol.hixie import encode_frame as hixie_frame

    with socket.create_connection(("127.0.0.1", deflate_proxy.port), timeout=5) as sock:
        sock.sendall(
            b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n"
            b"Origin: http://h\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
        )
        status, headers, rest = read_http_head(sock)
        assert status == 101
        assert "sec-websocket-extensions" not in headers
        sock.sendall(hixie_frame(TEXT[:3000]))
        assert hixie_read(sock, HixieParser(), 3000, rest) == TEXT[:3000]
    deflate_proxy.wait_log(r"closed .* proto=hixie75 .* in=3000 out=3000")
