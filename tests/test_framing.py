"""On the wire: text must be UTF-8 (1007), a message may not pass max_message_size (1009), and
Hixie frames stream through in constant memory. The target records exactly what reached it."""

from __future__ import annotations

import base64
import os
import socket
import threading
import time
import zlib

import pytest
from conftest import read_http_head, wait_until
from wsraw import RawClient

from wsproxy.protocol.hixie import CLOSE_FRAME, encode_frame
from wsproxy.protocol.rfc6455 import Opcode, encode_close, frame_header
from wsproxy.protocol.rfc6455 import encode_frame as ws_frame

GREEK = "κόσμε".encode()  # Autobahn's sample text: 2-byte characters


class Target:
    """A TCP target that keeps what each connection sent (its last ``keep`` bytes, and their
    count in :attr:`counts`), read by one thread per connection."""

    def __init__(self, keep: int = 0) -> None:
        self.keep = keep
        self.counts: list[int] = []
        self.server = socket.create_server(("127.0.0.1", 0), backlog=512)
        self.address = f"127.0.0.1:{self.server.getsockname()[1]}"
        self.received: list[bytearray] = []
        self.ended: list[threading.Event] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with self._lock:
                got, ended = bytearray(), threading.Event()
                index = len(self.received)
                self.received.append(got)
                self.counts.append(0)
                self.ended.append(ended)
            threading.Thread(target=self._read, args=(conn, index), daemon=True).start()

    def _read(self, conn: socket.socket, index: int) -> None:
        got = self.received[index]
        with conn:
            try:
                while data := conn.recv(1 << 20):
                    got += data
                    self.counts[index] += len(data)
                    if self.keep and len(got) > self.keep:
                        del got[: -self.keep]
            except OSError:
                pass
        self.ended[index].set()

    def wait_count(self, count: int, index: int = 0) -> None:
        """Wait until connection ``index`` has sent ``count`` bytes: what follows is then in a
        later read of the proxy (a violation fails the read it is in, all of it)."""
        wait_until(lambda: len(self.counts) > index, 5, "the proxy to connect the target")
        wait_until(lambda: self.counts[index] >= count, 5, f"{count} bytes at the target")

    def got(self, index: int = 0, timeout: float = 5) -> bytes:
        """Everything connection ``index`` sent, once the proxy closed it."""
        wait_until(lambda: len(self.ended) > index, timeout, "the proxy to connect the target")
        assert self.ended[index].wait(timeout), "the proxy did not close the target"
        return bytes(self.received[index])

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def target():
    t = Target()
    yield t
    t.close()


def connect(run_proxy, target: Target, *args: str):
    proc = run_proxy(["127.0.0.1:0", target.address, *args])
    return proc, RawClient(proc.port)


def closed_with(proc, client: RawClient, code: int) -> None:
    assert client.expect_close().code == code
    client.close()
    proc.wait_log(rf"closed .* by=proxy code={code} ")


# --- text is UTF-8 (Autobahn 6.x) ----------------------------------------------------------------

INVALID = [
    b"\xff",
    b"a\xc0\xafb",  # an overlong "/"
    b"\xed\xa0\x80",  # a surrogate
    b"\xf4\x90\x80\x80",  # past U+10FFFF
    b"\x80",  # a lone continuation byte
    GREEK + b"\xce",  # a message ending inside a character
]


@pytest.mark.parametrize("payload", INVALID, ids=lambda p: p.hex())
def test_invalid_utf8_text_closes_with_1007_and_never_reaches_the_target(
    run_proxy, target, payload: bytes
) -> None:
    proc, client = connect(run_proxy, target)
    client.send_frame(Opcode.TEXT, "héllo €".encode())
    target.wait_count(len("héllo €".encode()))
    client.send_frame(Opcode.TEXT, payload)
    closed_with(proc, client, 1007)
    assert target.got() == "héllo €".encode()  # a text frame's bytes, as before


def test_a_character_split_across_fragments_and_reads_is_relayed_whole(run_proxy, target) -> None:
    _, client = connect(run_proxy, target)
    client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    euro = "€".encode()
    client.send_frame(Opcode.TEXT, GREEK + euro[:1], fin=False)
    client.send_frame(Opcode.CONTINUATION, euro[1:2], fin=False)
    # One frame whose payload arrives in two reads, cut inside a 4-byte character.
    frame = ws_frame(Opcode.CONTINUATION, euro[2:] + "😀".encode(), fin=True, mask=True)
    client.send_raw(frame[:-2])
    time.sleep(0.05)
    client.send_raw(frame[-2:])
    client.send_frame(Opcode.CLOSE, encode_close(1000))
    assert client.expect_close().code == 1000
    client.close()
    assert target.got() == GREEK + euro + "😀".encode()


def test_invalid_utf8_fails_at_its_fragment_not_at_the_end_of_the_message(
    run_proxy, target
) -> None:
    # Autobahn 6.4.2: the first fragment ends with the lead byte of a code point past U+10FFFF.
    proc, client = connect(run_proxy, target)
    client.send_frame(Opcode.TEXT, GREEK + b"\xf4", fin=False)
    target.wait_count(len(GREEK))  # relayed: all but the start of the next character
    client.send_frame(Opcode.CONTINUATION, b"\x90", fin=False)
    closed_with(proc, client, 1007)  # before the last fragment was sent
    assert target.got() == GREEK


def test_a_text_message_cut_by_a_close_inside_a_character_is_1007(run_proxy, target) -> None:
    proc, client = connect(run_proxy, target)
    client.send_frame(Opcode.TEXT, b"ab" + "€".encode()[:2], fin=False)
    target.wait_count(2)
    client.send_frame(Opcode.CLOSE, encode_close(1000))
    closed_with(proc, client, 1007)
    assert target.got() == b"ab"


def test_a_text_message_cut_by_a_close_between_characters_closes_normally(
    run_proxy, target
) -> None:
    _, client = connect(run_proxy, target)
    client.send_frame(Opcode.TEXT, b"ab" + "€".encode(), fin=False)
    client.send_frame(Opcode.CLOSE, encode_close(1000))
    assert client.expect_close().code == 1000
    client.close()
    assert target.got() == b"ab" + "€".encode()


def test_a_text_message_cut_by_the_end_of_the_stream_inside_a_character_is_1007(
    run_proxy, target
) -> None:
    proc, client = connect(run_proxy, target)
    client.send_frame(Opcode.TEXT, b"ab\xe2", fin=False)
    target.wait_count(2)
    client.sock.shutdown(socket.SHUT_WR)
    closed_with(proc, client, 1007)
    assert target.got() == b"ab"


def test_binary_messages_are_not_utf8_checked(run_proxy, target) -> None:
    _, client = connect(run_proxy, target)
    client.send_frame(Opcode.BINARY, b"\xff\xfe\xc0")
    client.send_frame(Opcode.CLOSE, encode_close(1000))
    assert client.expect_close().code == 1000
    client.close()
    assert target.got() == b"\xff\xfe\xc0"


def test_base64_text_that_is_not_utf8_is_1007(run_proxy, target) -> None:
    proc = run_proxy(["127.0.0.1:0", target.address])
    client = RawClient(proc.port, protocols="base64")
    client.send_frame(Opcode.TEXT, b"QUJD\xff")
    closed_with(proc, client, 1007)
    assert target.got() == b""


def deflated_text(payload: bytes, *, fin: bool = True) -> bytes:
    """A client's compressed text frame (RFC 7692: raw deflate, sync-flushed, trailer off)."""
    z = zlib.compressobj(6, zlib.DEFLATED, -15)
    body = (z.compress(payload) + z.flush(zlib.Z_SYNC_FLUSH))[:-4]
    frame = ws_frame(Opcode.TEXT, body, fin=fin, mask=True)
    return bytes((frame[0] | 0x40,)) + frame[1:]  # RSV1: compressed


@pytest.mark.parametrize("payload", [b"\xc0\xaf", GREEK + b"\xce"], ids=["overlong", "cut"])
def test_compressed_text_is_utf8_checked_once_inflated(run_proxy, target, payload: bytes) -> None:
    proc = run_proxy(["--permessage-deflate", "127.0.0.1:0", target.address])
    client = RawClient(proc.port, extensions="permessage-deflate; client_max_window_bits")
    assert "permessage-deflate" in client.headers["sec-websocket-extensions"]
    client.send_raw(deflated_text(GREEK))  # valid, compressed: inflated, checked, relayed
    target.wait_count(len(GREEK))
    client.send_raw(deflated_text(payload))
    closed_with(proc, client, 1007)
    assert target.got() == GREEK


# --- max_message_size (1009) ------------------------------------------------------------------


def test_a_message_past_max_message_size_is_1009(run_proxy, target) -> None:
    proc, client = connect(run_proxy, target, "--max-message-size", "1000")
    client.send_frame(Opcode.BINARY, b"a" * 1000)  # at the limit: relayed
    client.send_frame(Opcode.BINARY, b"b" * 600, fin=False)
    target.wait_count(1600)
    client.send_frame(Opcode.CONTINUATION, b"c" * 401)  # the message is now 1001 bytes
    closed_with(proc, client, 1009)
    # A frame past the limit is refused at its header: none of it is relayed.
    assert target.got() == b"a" * 1000 + b"b" * 600


def test_a_frame_announcing_more_than_the_default_16_mib_is_refused_at_its_header(
    run_proxy, target
) -> None:
    proc, client = connect(run_proxy, target)
    client.send_raw(frame_header(Opcode.BINARY, (16 << 20) + 1, mask=b"\0\0\0\0") + b"x" * 1000)
    closed_with(proc, client, 1009)
    assert target.got() == b""


def test_max_message_size_0_lets_any_size_through(run_proxy, target) -> None:
    _, client = connect(run_proxy, target, "--max-message-size", "0")
    size = (16 << 20) + 4096
    client.send_raw(frame_header(Opcode.BINARY, size, mask=b"\0\0\0\0"))  # a zero mask: no XOR
    chunk = b"z" * 65536
    for _ in range(size // len(chunk)):
        client.send_raw(chunk)
    client.send_raw(b"z" * (size % len(chunk)))
    client.send_frame(Opcode.CLOSE, encode_close(1000))
    assert client.expect_close().code == 1000
    client.close()
    got = target.got(timeout=20)
    assert (len(got), got.count(b"z")) == (size, size)


# --- Hixie: streamed, limited -----------------------------------------------------------------

HIXIE75 = b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n\r\n"


def hixie75_connect(port: int) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(HIXIE75)
    status, _, rest = read_http_head(sock)
    assert status == 101
    return sock, rest


def test_a_hixie_frame_past_max_message_size_is_closed_as_1009(run_proxy, target) -> None:
    proc = run_proxy(["127.0.0.1:0", target.address, "--max-message-size", "4K"])
    sock, _ = hixie75_connect(proc.port)
    sock.sendall(encode_frame(b"k" * 3000))  # 4,000 characters: within
    target.wait_count(3000)
    sock.sendall(b"\x00" + b"QUFB" * 1025)  # 4,100 characters
    got = b""
    while chunk := sock.recv(65536):
        got += chunk
    assert got.endswith(CLOSE_FRAME)
    proc.wait_log(r"closed .* by=proxy code=1009 ")
    sock.close()
    got = target.got()  # and the second frame streamed, in the reads within the limit
    assert got[:3000] == b"k" * 3000
    assert got[3000:] == b"AAA" * (len(got[3000:]) // 3) and len(got) <= 3000 + 3 * 1024


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["VmRSS"].split()[0])


SESSIONS = 200
FRAME_TEXT = 4 << 20  # base64 characters of each unterminated frame


def test_200_unterminated_4_mib_hixie_frames_stream_in_bounded_memory(run_proxy) -> None:
    target = Target(keep=64)
    proc = run_proxy(["127.0.0.1:0", target.address])
    pid = proc.proc.pid
    warm, _ = hixie75_connect(proc.port)  # the code paths once, before the baseline
    warm.sendall(encode_frame(b"warm-up") + CLOSE_FRAME)
    assert target.got(0) == b"warm-up"
    warm.close()
    before = rss_kib(pid)
    data = os.urandom(FRAME_TEXT // 4 * 3)
    text = base64.b64encode(data)
    socks = []
    peak = before
    for i in range(SESSIONS):
        sock, _ = hixie75_connect(proc.port)
        socks.append(sock)
        sock.sendall(b"\x00" + text)  # no end marker: the frame stays open
        if i % 20 == 19:
            peak = max(peak, rss_kib(pid))
    # Every session's frame was decoded and relayed as it arrived, without its end.
    for i in range(1, SESSIONS + 1):
        # The target's accept thread may not have taken the last connections in yet.
        wait_until(
            lambda i=i: len(target.counts) > i and target.counts[i] == len(data),
            30,
            f"session {i} relayed",
        )
    peak = max(peak, rss_kib(pid))
    # Before streaming, each session held its 4 MiB of text: 800 MiB in all. Now it holds at
    # most 3 characters; what grows (about 30 MiB here, as with RFC 6455 sessions in the middle
    # of a frame) is the allocator's heap after the relay's 256 KiB reads.
    assert peak - before < 96 * 1024, f"RSS grew from {before} to {peak} KiB"
    for sock in socks:  # each session still relays: end the frame, send one more, close
        sock.sendall(b"\xff" + encode_frame(b"after") + CLOSE_FRAME)
    for i, sock in enumerate(socks, start=1):
        assert target.got(i, timeout=30) == (data + b"after")[-64:]
        assert target.counts[i] == len(data) + 5
        sock.close()
    target.close()
