"""Session recording (``--record``) in websockify's format, and ``wsproxy record show|stats``.

The file is checked against the format with decoders written here from the format's definition
(JavaScript string escapes), and with node running noVNC's way of reading frames.
"""

from __future__ import annotations

import json
import logging
import os
import re
import resource
import subprocess
import sys
from pathlib import Path

import gevent
import pytest
from conftest import ROOT, EchoServer, ProxyProcess
from websockets.sync.client import connect

from wsproxy.record import FOOTER, HEADER, Recorder, decode_frame, encode_frame, parse_recording

FRAME_LINE = re.compile(r"^'([{}])(\d+)\1((?:[ -&(-\[\]-~]|\\\\|\\'|\\[nrt]|\\x[0-9a-f]{2})*)',$")
JS_ESCAPES = {"\\\\": "\\", "\\'": "'", "\\n": "\n", "\\r": "\r", "\\t": "\t"}
# Every byte value, the quote and backslash that need escaping, and a text-looking message.
MESSAGES = [bytes(range(256)), b"it's a \\ back'slash", b"RFB 003.008\n", os.urandom(3000)]


def js_unescape(body: str) -> bytes:
    """A JavaScript single-quoted string body -> the byte values of its characters."""
    out = re.sub(
        r"\\x([0-9a-f]{2})|\\.", lambda m: chr(int(m[1], 16)) if m[1] else JS_ESCAPES[m[0]], body
    )
    return out.encode("latin-1")


def check_layout(text: str) -> dict[str, bytes]:
    """Assert websockify's layout line by line; returns the bytes of each direction."""
    lines = text.split("\n")
    assert lines[0] + "\n" == HEADER == "var VNC_frame_data = [\n"
    assert lines[-2] + "\n" == FOOTER == "'EOF'];\n"
    assert lines[-1] == ""
    got = {"{": b"", "}": b""}
    last_ms = 0
    for line in lines[1:-2]:
        m = FRAME_LINE.match(line)
        assert m, line[:80]
        assert int(m[2]) >= last_ms  # time stamps never go back
        last_ms = int(m[2])
        got[m[1]] += js_unescape(m[3])
    return got


def wsproxy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, timeout=30, cwd=ROOT
    )


def record_session(proxy: ProxyProcess, messages: list[bytes]) -> None:
    with connect(proxy.url, subprotocols=["binary"], max_size=None, open_timeout=5) as ws:
        for message in messages:
            ws.send(message)
            received = b""
            while len(received) < len(message):
                received += ws.recv(timeout=5)
            assert received == message


@pytest.fixture
def recorded(tmp_path: Path, run_proxy, echo_server: EchoServer) -> Path:  # type: ignore[no-untyped-def]
    proxy = run_proxy(["--record", str(tmp_path / "rec"), "127.0.0.1:0", echo_server.address])
    record_session(proxy, MESSAGES)
    proxy.wait_log(r"closed peer=")
    proxy.wait_log(rf"recording peer=\S+ file={re.escape(str(tmp_path))}/rec\.1$")
    return tmp_path / "rec.1"


def test_recorded_session_has_websockify_layout_with_every_byte(recorded: Path) -> None:
    got = check_layout(recorded.read_text("ascii"))
    assert got["}"] == b"".join(MESSAGES)  # received from the client
    assert got["{"] == b"".join(MESSAGES)  # sent to the client (the echo)


def test_recording_reads_in_novnc_way_with_node(recorded: Path, tmp_path: Path) -> None:
    # noVNC's vnc_playback.html evaluates the file, then for each frame takes the data after the
    # second "{" as character codes; here node does the same and prints the server frames.
    script = tmp_path / "read.js"
    script.write_text(
        "const fs = require('fs'); const vm = require('vm');\n"
        "vm.runInThisContext(fs.readFileSync(process.argv[2], 'latin1') +"
        " '\\nglobalThis.frames = VNC_frame_data;');\n"
        "const out = [];\n"
        "for (const frame of frames) {\n"
        "  if (frame === 'EOF') break;\n"
        "  if (frame[0] === '}') continue;\n"
        "  const i = frame.indexOf('{', 1) + 1;\n"
        "  const bytes = [];\n"
        "  for (let j = i; j < frame.length; j++) bytes.push(frame.charCodeAt(j));\n"
        "  out.push(Buffer.from(bytes).toString('hex'));\n"
        "}\n"
        "console.log(JSON.stringify(out));\n"
    )
    result = subprocess.run(
        ["node", str(script), str(recorded)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    frames = [bytes.fromhex(h) for h in json.loads(result.stdout)]
    assert b"".join(frames) == b"".join(MESSAGES)


def test_record_show_prints_every_byte_of_both_directions(recorded: Path) -> None:
    result = wsproxy("wsproxy", "record", "show", str(recorded))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    got = {"to-client": b"", "from-client": b""}
    for line in out.splitlines():
        m = re.match(r"^\s*(\d+\.\d{3})  (to-client|from-client)\s+(\d+)  (.*)$", line)
        assert m, line[:80]
        data = m[4].encode("ascii").decode("unicode_escape").encode("latin-1")
        assert len(data) == int(m[3])
        got[m[2]] += data
    assert got["from-client"] == got["to-client"] == b"".join(MESSAGES)


def test_record_stats_prints_the_totals(recorded: Path) -> None:
    result = wsproxy("wsproxy", "record", "stats", str(recorded))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    fields = dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in out.splitlines())
    total = sum(len(m) for m in MESSAGES)
    assert fields["complete"] == "yes"
    assert fields["from-client bytes"] == fields["to-client bytes"] == str(total)
    assert int(fields["from-client frames"]) == len(MESSAGES)  # one per WebSocket message
    assert int(fields["to-client frames"]) >= 1
    assert re.fullmatch(r"\d+\.\d{3} s", fields["duration"])


@pytest.mark.parametrize(
    ("args", "message"),
    [(["record", "show"], "do not match"), (["record", "play", "x"], "do not match")],
)
def test_record_command_with_bad_arguments_exits_2(args: list[str], message: str) -> None:
    result = wsproxy("wsproxy", *args)
    assert result.returncode == 2
    assert message in result.stderr


def test_record_show_of_a_file_that_is_not_a_recording_exits_2(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.js"
    bogus.write_text("var x = 1;\n")
    for path in (bogus, tmp_path / "missing"):
        result = wsproxy("wsproxy", "record", "show", str(path))
        assert result.returncode == 2
        assert str(path) in result.stderr


def test_file_size_limit_stops_the_recording_not_the_session(
    tmp_path: Path,
    run_proxy,
    echo_server: EchoServer,  # type: ignore[no-untyped-def]
) -> None:
    limit = 100_000
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    # The child inherits the limit (CPython ignores SIGXFSZ, so writes fail with EFBIG).
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        proxy = run_proxy(
            ["--record", str(tmp_path / "rec"), "127.0.0.1:0", echo_server.address], ready=False
        )
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    proxy.wait_listening()
    messages = [os.urandom(16384) for _ in range(64)]  # 1 MiB each way, far past the limit
    record_session(proxy, messages)
    proxy.wait_log(r"recording stopped peer=\S+ file=\S+rec\.1 reason=\"File too large\"")
    proxy.wait_log(r"closed peer=.* in=1048576 out=1048576 .* by=client code=1000")
    assert (tmp_path / "rec.1").stat().st_size <= limit
    recording = parse_recording((tmp_path / "rec.1").read_text("ascii"))
    assert not recording.complete
    # After the stop the proxy serves and records new sessions as before.
    record_session(proxy, [b"again"])
    proxy.wait_log(r"recording peer=\S+ file=\S+rec\.2$")


def test_unwritable_prefix_logs_once_and_relays(
    tmp_path: Path,
    run_proxy,
    echo_server: EchoServer,  # type: ignore[no-untyped-def]
) -> None:
    proxy = run_proxy(
        ["--record", str(tmp_path / "no" / "rec"), "127.0.0.1:0", echo_server.address]
    )
    record_session(proxy, [b"hello"])
    proxy.wait_log(r"recording failed peer=\S+ file=\S+rec\.1 reason=\"No such file")
    proxy.wait_log(r"closed peer=.* in=5 out=5 ")


def test_existing_files_are_skipped_not_overwritten(
    tmp_path: Path,
    run_proxy,
    echo_server: EchoServer,  # type: ignore[no-untyped-def]
) -> None:
    (tmp_path / "rec.1").write_text("another worker's\n")
    proxy = run_proxy(["--record", str(tmp_path / "rec"), "127.0.0.1:0", echo_server.address])
    record_session(proxy, [b"one"])
    record_session(proxy, [b"two"])
    proxy.wait_log(r"recording peer=\S+ file=\S+rec\.3$")
    assert proxy.stop() == 0  # sessions and their recordings are finished
    assert (tmp_path / "rec.1").read_text() == "another worker's\n"
    for name, data in (("rec.2", b"one"), ("rec.3", b"two")):
        assert check_layout((tmp_path / name).read_text("ascii")) == {"{": data, "}": data}


# -- in-process: the format round trip and the bounded buffer --


def test_frame_encoding_round_trips_every_byte() -> None:
    data = bytes(range(256)) + b"'\\'"
    line = encode_frame("}", 42, data)
    assert FRAME_LINE.match(line.rstrip("\n"))
    assert decode_frame(line.rstrip("\n")).data == data
    assert js_unescape(FRAME_LINE.match(line.rstrip("\n"))[3]) == data  # type: ignore[index]


def test_buffer_past_its_bound_drops_frames_and_logs_the_count(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "rec.1"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    recorder = Recorder(fd, str(path), "peer", started=0.0, flush_bytes=1000, max_buffer_bytes=3000)
    # No yield between the calls: the writer greenlet cannot run, as with a stalled disk.
    for _ in range(5):
        recorder.to_client(b"x" * 1000)
    with caplog.at_level(logging.WARNING, logger="wsproxy.record"):
        recorder.close()
    gevent.sleep(0)
    assert "recording dropped peer=peer" in caplog.text
    assert "frames=2 bytes=2000" in caplog.text
    got = check_layout(path.read_text("ascii"))
    assert got["{"] == b"x" * 3000


def test_close_gives_up_on_a_stuck_write_and_closes_the_file_when_it_returns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A pipe nobody reads stands for a stuck disk: once its buffer is full, write() blocks.
    # The writer starts at the first 1000 bytes and writes all that is pending at once.
    read_fd, write_fd = os.pipe()
    recorder = Recorder(write_fd, "stuck", "peer", started=0.0, flush_bytes=1000, close_wait=0.5)
    for _ in range(200):  # 200 KB pending: more than the pipe holds
        recorder.to_client(b"x" * 1000)
    with caplog.at_level(logging.WARNING, logger="wsproxy.record"), gevent.Timeout(5):
        recorder.close()
    assert "recording abandoned peer=peer file=stuck" in caplog.text
    assert recorder.active  # not closed under the write under way
    # The disk comes back: the write finishes and the file is closed after it (EOF on the pipe).
    os.set_blocking(read_fd, False)
    with gevent.Timeout(10):
        while True:
            try:
                chunk = os.read(read_fd, 1 << 20)
            except BlockingIOError:
                gevent.sleep(0.01)
                continue
            if not chunk:
                break
    os.close(read_fd)
    assert not recorder.active
