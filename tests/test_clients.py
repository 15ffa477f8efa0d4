"""Real WebSocket client libraries through the proxy to a TCP echo (acceptance: byte-exact)."""

from __future__ import annotations

import base64
import os

import pytest
import websocket  # websocket-client
from websockets.sync.client import connect

SIZES = [0, 1, 125, 126, 65535, 65536, 1 << 20, 4 << 20]


def recv_exactly(ws, size: int, decode=lambda m: m) -> bytes:  # type: ignore[no-untyped-def]
    got = b""
    while len(got) < size:
        got += decode(ws.recv())
    return got


@pytest.mark.parametrize("subprotocols", [["binary"], None, ["chat", "binary"]])
def test_websockets_binary_round_trip_is_byte_exact(proxy, subprotocols) -> None:
    with connect(proxy.url, subprotocols=subprotocols, max_size=None) as ws:
        assert ws.subprotocol == ("binary" if subprotocols else None)
        for size in SIZES:
            data = os.urandom(size)
            ws.send(data)
            assert recv_exactly(ws, size) == data


def test_websockets_base64_round_trip_is_byte_exact(proxy) -> None:
    with connect(proxy.url, subprotocols=["base64"], max_size=None) as ws:
        assert ws.subprotocol == "base64"
        for size in SIZES:
            data = os.urandom(size)
            ws.send(base64.b64encode(data).decode())
            assert recv_exactly(ws, size, base64.b64decode) == data


def test_binary_preferred_when_both_offered(proxy) -> None:
    with connect(proxy.url, subprotocols=["base64", "binary"]) as ws:
        assert ws.subprotocol == "binary"


def test_fragmented_message_arrives_whole(proxy) -> None:
    data = os.urandom(300_000)
    pieces = [data[i : i + 70_000] for i in range(0, len(data), 70_000)]
    with connect(proxy.url, subprotocols=["binary"], max_size=None) as ws:
        ws.send(iter(pieces))  # websockets sends an iterable as one fragmented message
        assert recv_exactly(ws, len(data)) == data


def test_websocket_client_library_round_trip(proxy) -> None:
    ws = websocket.create_connection(proxy.url, subprotocols=["binary"], timeout=10)
    try:
        for size in SIZES:
            data = os.urandom(size)
            ws.send_binary(data)
            got = b""
            while len(got) < size:
                got += ws.recv()
            assert got == data
        # Fragmented by the client: three frames, one message.
        ws.send_frame(websocket.ABNF.create_frame(b"abc", websocket.ABNF.OPCODE_BINARY, fin=0))
        ws.send_frame(websocket.ABNF.create_frame(b"def", websocket.ABNF.OPCODE_CONT, fin=0))
        ws.send_frame(websocket.ABNF.create_frame(b"ghi", websocket.ABNF.OPCODE_CONT, fin=1))
        assert recv_exactly(ws, 9) == b"abcdefghi"
    finally:
        ws.close()


def test_text_frames_from_binary_client_are_forwarded_as_bytes(proxy) -> None:
    with connect(proxy.url, subprotocols=["binary"]) as ws:
        ws.send("héllo")
        assert recv_exactly(ws, 6) == "héllo".encode()


def test_unix_socket_target(run_proxy, tmp_path) -> None:
    import socket
    import threading

    path = str(tmp_path / "svc.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen()

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data.upper())

    threading.Thread(target=serve, daemon=True).start()
    proc = run_proxy(["--unix-target", path, "127.0.0.1:0"])
    with connect(proc.url, subprotocols=["binary"]) as ws:
        ws.send(b"over unix")
        assert recv_exactly(ws, 9) == b"OVER UNIX"
    proc.wait_log(rf"closed .* target=unix:{path} ")
    server.close()


def test_unreachable_unix_target_is_502(run_proxy, tmp_path) -> None:
    from websockets.exceptions import InvalidStatus

    proc = run_proxy(["--unix-target", str(tmp_path / "none.sock"), "127.0.0.1:0"])
    with pytest.raises(InvalidStatus) as exc_info:
        connect(proc.url)
    assert exc_info.value.response.status_code == 502
    assert b"cannot connect to target unix:" in exc_info.value.response.body
