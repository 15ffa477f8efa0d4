"""Wire-level tests with raw sockets: handshake answers, close codes, Hixie clients, logging."""

from __future__ import annotations

import contextlib
import io
import os
import socket
import struct
import time

import gevent
import pytest
from conftest import free_port, read_http_head, read_until_closed
from wsraw import Opcode, RawClient

from wsproxy import WSProxy
from wsproxy.protocol.hixie import CLOSE_FRAME, HixieParser, encode_frame
from wsproxy.protocol.rfc6455 import encode_frame as rfc_encode_frame

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def encode_ws(opcode: int, payload: bytes) -> bytes:
    return rfc_encode_frame(opcode, payload, mask=True)


def http_exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        status, headers, rest = read_http_head(sock)
        body = rest + read_until_closed(sock)
    return status, headers, body


def upgrade(version: str = "13", key: str = KEY, method: str = "GET") -> bytes:
    return (
        f"{method} / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: {version}\r\n\r\n"
    ).encode()


# --- handshake answers on the wire ---------------------------------------------------------------


def test_bad_key_gets_400_with_reason(proxy) -> None:
    status, headers, body = http_exchange(proxy.port, upgrade(key="c2hvcnQ="))
    assert status == 400
    assert body == b"Sec-WebSocket-Key is not 16 bytes of base64\n"
    assert headers["connection"] == "close"
    proxy.wait_log(r"refused peer=127\.0\.0\.1:\d+ status=400")


def test_unsupported_version_gets_426_naming_13(proxy) -> None:
    status, headers, body = http_exchange(proxy.port, upgrade(version="6"))
    assert status == 426
    assert "13" in headers["sec-websocket-version"]
    assert b"unsupported Sec-WebSocket-Version" in body


def test_post_upgrade_gets_405(proxy) -> None:
    status, headers, _ = http_exchange(proxy.port, upgrade(method="POST"))
    assert status == 405
    assert headers["allow"] == "GET"


def test_plain_http_get_gets_404_explaining_the_endpoint(proxy) -> None:
    status, _, body = http_exchange(proxy.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 404
    assert b"WebSocket endpoint" in body


def test_oversized_head_gets_431(proxy) -> None:
    request = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 20000 + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        sock.sendall(request)
        status, _, _ = read_http_head(sock)
    assert status == 431


def test_unreachable_target_gets_502_and_log_names_target(run_proxy) -> None:
    dead = free_port()
    proc = run_proxy(["127.0.0.1:0", f"127.0.0.1:{dead}"])
    status, _, body = http_exchange(proc.port, upgrade())
    assert status == 502
    assert body.startswith(f"cannot connect to target 127.0.0.1:{dead}".encode())
    assert len(body.splitlines()) == 1
    proc.wait_log(rf"status=502 reason=\"cannot connect to target 127\.0\.0\.1:{dead}")


def test_client_silent_past_handshake_timeout_is_dropped(run_proxy, echo_server) -> None:
    proc = run_proxy(["--handshake-timeout", "0.3", "127.0.0.1:0", echo_server.address])
    with socket.create_connection(("127.0.0.1", proc.port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n")
        start = time.monotonic()
        assert read_until_closed(sock) == b""
        assert time.monotonic() - start < 3
    proc.wait_log("handshake timed out")


def test_hixie_switched_off_gets_426(run_proxy, echo_server) -> None:
    proc = run_proxy(["--no-hixie", "127.0.0.1:0", echo_server.address])
    request = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n\r\n"
    status, headers, _ = http_exchange(proc.port, request)
    assert status == 426
    assert headers["sec-websocket-version"] == "13"


def test_disallowed_origin_gets_403(run_proxy, echo_server) -> None:
    proc = run_proxy(["--origins", "https://ok.example", "127.0.0.1:0", echo_server.address])
    request = upgrade().replace(b"\r\n\r\n", b"\r\nOrigin: https://evil.example\r\n\r\n")
    status, _, body = http_exchange(proc.port, request)
    assert status == 403
    assert b"evil.example" in body


# --- frames and close codes on the wire ---------------------------------------------------------


def test_ping_gets_pong_and_data_still_flows(proxy) -> None:
    client = RawClient(proxy.port)
    client.send_frame(Opcode.PING, b"are you there")
    event = client.next_event()
    assert event.__class__.__name__ == "Pong" and event.payload == b"are you there"
    client.send_frame(Opcode.PONG, b"unsolicited")  # ignored
    client.send_frame(Opcode.BINARY, b"data")
    assert client.recv_data(4) == b"data"
    client.close()


def test_ping_with_125_byte_binary_payload_gets_identical_pong(proxy) -> None:
    client = RawClient(proxy.port)
    payload = bytes(range(125))
    client.send_frame(Opcode.PING, payload)
    event = client.next_event()
    assert event.__class__.__name__ == "Pong" and event.payload == payload
    client.close()


def test_frames_after_the_close_frame_are_ignored(proxy) -> None:
    client = RawClient(proxy.port)
    client.send_raw(
        encode_ws(Opcode.CLOSE, struct.pack("!H", 1000)) + encode_ws(Opcode.PING, b"late")
    )
    assert client.expect_close().code == 1000
    assert read_until_closed(client.sock) == b""  # no pong for the late ping
    client.close()


def test_client_close_is_echoed_with_its_code(proxy) -> None:
    client = RawClient(proxy.port)
    client.send_frame(Opcode.CLOSE, struct.pack("!H", 4001) + b"done")
    close = client.expect_close()
    assert close.code == 4001
    assert read_until_closed(client.sock) == b""
    proxy.wait_log(r"closed peer=.* by=client code=4001 reason=done")


@pytest.mark.parametrize(
    ("wire", "code"),
    [
        (bytes([0x82, 0x03]) + b"abc", 1002),  # unmasked
        (bytes([0xC2, 0x80]) + os.urandom(4), 1002),  # RSV1
        (bytes([0x83, 0x80]) + os.urandom(4), 1002),  # reserved opcode
        (bytes([0x09, 0x80]) + os.urandom(4), 1002),  # fragmented ping
        (bytes([0x80, 0x80]) + os.urandom(4), 1002),  # continuation with nothing to continue
        (bytes([0x88, 0x82]) + b"\0\0\0\0" + struct.pack("!H", 1005), 1002),  # 1005 on the wire
        (bytes([0x88, 0x81]) + b"\0\0\0\0" + b"\x03", 1002),  # one-byte close body
        (bytes([0x88, 0x84]) + b"\0\0\0\0" + struct.pack("!H", 1000) + b"\xff\xfe", 1007),
        (bytes([0x88, 0xFE, 0, 126]) + b"\0\0\0\0" + b"\x03\xe8" + b"a" * 124, 1002),  # > 125
        (bytes([0x82, 0xFF]) + struct.pack("!Q", 1 << 63) + b"\0\0\0\0", 1002),  # top bit
        (bytes([0x01, 0x80]) + b"\0\0\0\0" + bytes([0x82, 0x80]) + b"\0\0\0\0", 1002),
    ],
)
def test_protocol_violation_closes_with_code(proxy, wire: bytes, code: int) -> None:
    client = RawClient(proxy.port)
    client.send_raw(wire)
    assert client.expect_close().code == code
    assert read_until_closed(client.sock) == b""
    client.close()


def test_invalid_base64_from_base64_client_is_1007(proxy) -> None:
    client = RawClient(proxy.port, protocols="base64")
    assert client.headers["sec-websocket-protocol"] == "base64"
    client.send_frame(Opcode.TEXT, b"not*base64")
    assert client.expect_close().code == 1007
    client.close()


def test_target_closing_sends_close_1000(run_proxy) -> None:
    target = socket.create_server(("127.0.0.1", 0))
    proc = run_proxy(["127.0.0.1:0", f"127.0.0.1:{target.getsockname()[1]}"])
    client = RawClient(proc.port)
    conn, _ = target.accept()
    conn.sendall(b"last words")
    conn.close()
    assert client.recv_data(10) == b"last words"
    assert client.expect_close().code == 1000
    client.send_frame(Opcode.CLOSE, struct.pack("!H", 1000))
    assert read_until_closed(client.sock) == b""
    proc.wait_log(r"closed .* in=0 out=10 secs=[\d.]+ by=target code=1000")
    target.close()


def test_open_and_closed_log_lines_carry_fields(proxy, echo_server) -> None:
    client = RawClient(proxy.port)
    client.send_frame(Opcode.BINARY, b"12345")
    assert client.recv_data(5) == b"12345"
    client.close()  # dropped without a close frame
    proxy.wait_log(
        rf"open peer=127\.0\.0\.1:\d+ proto=rfc6455 sub=binary target={echo_server.address}"
    )
    proxy.wait_log(r"closed peer=127\.0\.0\.1:\d+ .* in=5 out=5 .* by=client code=1006")


# --- legacy Hixie clients ------------------------------------------------------------------------


def hixie76_connect(port: int) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(
        b"GET /demo HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key2: 12998 5 Y3 1  .P00\r\nSec-WebSocket-Protocol: base64\r\n"
        b"Upgrade: WebSocket\r\nSec-WebSocket-Key1: 4 @1  46546xW%0l 1 5\r\n"
        b"Origin: http://example.com\r\n\r\n^n:ds[4U"
    )
    status, headers, rest = read_http_head(sock)
    assert status == 101
    assert headers["sec-websocket-location"] == "ws://example.com/demo"
    while len(rest) < 16:
        rest += sock.recv(16)
    return sock, rest


def hixie_read(sock: socket.socket, parser: HixieParser, size: int, rest: bytes = b"") -> bytes:
    # The server's frames have the same layout as the client's, so the parser reads them too.
    got = b"".join(e for e in parser.feed(rest) if isinstance(e, bytes))
    while len(got) < size:
        got += b"".join(e for e in parser.feed(sock.recv(65536)) if isinstance(e, bytes))
    return got


def test_hixie76_client_exchanges_base64_data(proxy) -> None:
    sock, rest = hixie76_connect(proxy.port)
    assert rest[:16] == b"8jKS'y:G*Co,Wxa-"
    data = os.urandom(5000)
    sock.sendall(encode_frame(data))
    assert hixie_read(sock, HixieParser(), len(data), rest[16:]) == data
    sock.sendall(CLOSE_FRAME)
    assert read_until_closed(sock).endswith(CLOSE_FRAME)
    sock.close()
    proxy.wait_log(r"closed .* proto=hixie76 sub=base64 .* by=client")


def test_hixie75_frame_fed_one_byte_at_a_time_arrives_intact(proxy) -> None:
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(
        b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n"
        b"Origin: http://h\r\n\r\n"
    )
    status, _, rest = read_http_head(sock)
    assert status == 101
    data = os.urandom(64)
    for byte in encode_frame(data):
        sock.send(bytes([byte]))
        time.sleep(0.001)
    assert hixie_read(sock, HixieParser(), len(data), rest) == data
    sock.close()
    proxy.wait_log(r"closed .* proto=hixie75 .* in=64 out=64")


# --- hostile handshakes: answered, never a crash, never an injected header or log line -------


def test_hixie76_key_with_too_many_digits_gets_400(proxy) -> None:
    request = (
        b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key1: " + b"1" * 2500 + b" " + b"1" * 2500 + b"\r\n"
        b"Sec-WebSocket-Key2: 1 2\r\n\r\n12345678"
    )
    status, _, body = http_exchange(proxy.port, request)
    assert (status, body) == (400, b"malformed Sec-WebSocket-Key1/Key2\n")
    proxy.wait_log(r"refused peer=\S+ status=400 reason=\"malformed Sec-WebSocket-Key1/Key2\"")


def test_hixie75_target_with_a_line_feed_cannot_inject_a_header(proxy) -> None:
    request = (
        b"GET /a\nSet-Cookie:x HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\n"
        b"Connection: Upgrade\r\nOrigin: http://h\r\n\r\n"
    )
    status, headers, body = http_exchange(proxy.port, request)
    assert status == 400
    assert "set-cookie" not in headers
    assert b"Set-Cookie" not in body
    proxy.wait_log(r"refused peer=\S+ status=400 reason=\"malformed request line\"")


def test_close_reason_with_a_line_feed_stays_on_its_log_line(proxy) -> None:
    client = RawClient(proxy.port)
    client.send_frame(Opcode.CLOSE, struct.pack("!H", 4002) + b"bye\nforged=1 \x1b[2J")
    assert client.expect_close().code == 4002
    client.close()
    proxy.wait_log(r'closed peer=.* code=4002 reason="bye\\nforged=1 \\x1b\[2J"$')
    assert not any(line.startswith("forged") for line in proxy.lines)


def test_one_handshake_deadline_covers_every_step(run_proxy, echo_server) -> None:
    # Sniff done at 0.6 s, request head complete at 1.3 s: each step is within 1 s, the whole
    # handshake is not. (One fresh timeout per step would answer 101.)
    proc = run_proxy(["--handshake-timeout", "1", "127.0.0.1:0", echo_server.address])
    with socket.create_connection(("127.0.0.1", proc.port), timeout=5) as sock:
        started = time.monotonic()
        time.sleep(0.6)
        head = upgrade()
        sock.sendall(head[:16])
        time.sleep(1.3 - (time.monotonic() - started))
        with contextlib.suppress(OSError):
            sock.sendall(head[16:])
        assert b" 101 " not in read_until_closed(sock)
    proc.wait_log(r'refused peer=\S+ reason="handshake timed out" step=request')


def test_unexpected_error_is_logged_and_the_client_socket_closed(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, echo_server
) -> None:
    class BrokenTargets:
        def open(self, request, check=None):  # type: ignore[no-untyped-def]
            raise RuntimeError("a bug in a hook")

    class Broken(WSProxy):
        def make_targets(self, settings):  # type: ignore[no-untyped-def]
            return BrokenTargets()

    hub = gevent.get_hub()
    hub_errors = io.StringIO()
    monkeypatch.setattr(hub, "exception_stream", hub_errors)
    proxy = Broken(("127.0.0.1", 0), echo_server.address)
    proxy.start()

    def client() -> bytes:
        with socket.create_connection(("127.0.0.1", proxy.server_port), timeout=5) as sock:
            sock.sendall(upgrade())
            return read_until_closed(sock)

    try:
        with gevent.Timeout(10):
            answer = hub.threadpool.spawn(client).get()
    finally:
        proxy.stop()
    assert answer == b""  # closed, not left hanging
    assert "session failed peer=127.0.0.1:" in caplog.text
    assert "RuntimeError: a bug in a hook" in caplog.text
    assert hub_errors.getvalue() == ""  # nothing escaped to gevent


# --- Origin: open by default, and said so --------------------------------------------------------


def test_empty_origins_is_warned_about_at_start(run_proxy, echo_server) -> None:
    proc = run_proxy(["127.0.0.1:0", echo_server.address])
    proc.wait_log(r"WARNING .*origins is empty: any web page .* can connect")


def test_configured_origins_are_not_warned_about(run_proxy, echo_server) -> None:
    proc = run_proxy(["--origins", "https://ok.example", "127.0.0.1:0", echo_server.address])
    assert not any("origins is empty" in line for line in proc.lines)
