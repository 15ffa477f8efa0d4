"""Session recordings in websockify's ``--record`` format, and the ``wsproxy record`` command.

A recording is a JavaScript file that noVNC's playback tools (``tests/vnc_playback.html``) load::

    var VNC_frame_data = [
    '{15{RFB 003.008\\n',
    '}40}RFB 003.008\\n',
    'EOF'];

One line per frame: ``'{MS{DATA',`` for data sent to the client, ``'}MS}DATA',`` for data
received from it. MS is the time in milliseconds since the session began; DATA is the payload
decoded as latin-1, escaped with Python's ``unicode_escape`` (``\\\\``, ``\\n``, ``\\r``,
``\\t``, ``\\xNN`` for other bytes outside printable ASCII; valid JavaScript escapes too) and with
``'`` written ``\\'``. The payload is what travels between the proxy and the target: base64 and
framing are already removed.

Writing: the relay hands each payload to :meth:`Recorder.to_client` / :meth:`Recorder.from_client`,
which only append it to a buffer. A greenlet escapes the buffer and writes it in large pieces
through gevent's thread pool, so the disk never blocks the relay. The buffer is bounded: past
``max_buffer_bytes`` (a disk slower than the traffic) frames are dropped and counted. A write
error (disk full, file too large) stops the recording with one log line; the session goes on.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import gevent
from docopt import DocoptExit, docopt

from wsproxy.errors import ConfigError
from wsproxy.logs import logfmt

__all__ = [
    "FLUSH_BYTES",
    "FROM_CLIENT",
    "MAX_BUFFER_BYTES",
    "TO_CLIENT",
    "Frame",
    "Recorder",
    "Recording",
    "Recordings",
    "command",
    "decode_frame",
    "encode_frame",
    "parse_recording",
]

log = logging.getLogger(__name__)

HEADER = "var VNC_frame_data = [\n"
FOOTER = "'EOF'];\n"
TO_CLIENT = "{"  # data the proxy sent to the client (from the target)
FROM_CLIENT = "}"  # data the proxy received from the client (to the target)
DIRECTION_NAMES = {TO_CLIENT: "to-client", FROM_CLIENT: "from-client"}

FLUSH_BYTES = 256 * 1024  # buffered payload that wakes the writer: few, large writes
MAX_BUFFER_BYTES = 4 * 1024 * 1024  # payload waiting for the disk past which frames are dropped
CLOSE_WAIT = 5.0  # seconds close() waits for a write under way before it abandons the recording
MAX_NAME_TRIES = 100_000  # PREFIX.<n> names skipped because they exist (other workers, old runs)
FILE_MODE = 0o640

USAGE = """\
Usage:
  wsproxy record show <file>
  wsproxy record stats <file>

show prints each frame: seconds since the session began, direction, size and the data (printable
ASCII as is, other bytes escaped as in the file). stats prints the totals.
"""


# -- the format -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    direction: str  # TO_CLIENT or FROM_CLIENT
    ms: int
    data: bytes

    @property
    def from_client(self) -> bool:
        return self.direction == FROM_CLIENT


@dataclass(frozen=True)
class Recording:
    frames: list[Frame]
    complete: bool  # ends with 'EOF'] (else the recording was stopped or is still being written)


def escape(data: bytes) -> str:
    """Payload bytes as the quoted text of a frame (websockify's escaping)."""
    return data.decode("latin-1").encode("unicode_escape").decode("ascii").replace("'", "\\'")


def unescape(text: str) -> bytes:
    """The inverse of :func:`escape`; raises ValueError for text it could not have produced."""
    return text.encode("ascii").decode("unicode_escape").encode("latin-1")


def encode_frame(direction: str, ms: int, data: bytes) -> str:
    """One line of the file, newline included."""
    return f"'{direction}{ms}{direction}{escape(data)}',\n"


def decode_frame(line: str) -> Frame:
    """Parse one frame line (without its newline); raises ValueError if it is not one."""
    if len(line) < 5 or line[0] != "'" or not line.endswith("',") or line[1] not in "{}":
        raise ValueError("not a frame line")
    direction = line[1]
    ms, sep, payload = line[2:-2].partition(direction)
    if not sep or not ms.isdigit():
        raise ValueError("bad time stamp")
    return Frame(direction, int(ms), unescape(payload))


def parse_recording(text: str) -> Recording:
    """Read a whole recording back. A recording cut short (no ``'EOF']``, a partial last line)
    gives the frames before the cut with ``complete=False``.

    Raises:
        ValueError: the text is not a recording (the message says where).
    """
    lines = text.split("\n")
    if lines[0] + "\n" != HEADER:
        raise ValueError(f"line 1: expected {HEADER.strip()!r}")
    frames: list[Frame] = []
    for number, line in enumerate(lines[1:], 2):
        if line + "\n" == FOOTER:
            return Recording(frames, complete=True)
        try:
            frames.append(decode_frame(line))
        except (ValueError, UnicodeError) as exc:
            if number == len(lines):  # the last, unfinished line of a cut recording
                break
            raise ValueError(f"line {number}: {exc}") from None
    return Recording(frames, complete=False)


# -- writing ----------------------------------------------------------------------------------


class Recordings:
    """Server-wide: opens ``PREFIX.<n>`` for each recorded session; n counts sessions.

    Names are created exclusively (``O_EXCL``): a name another worker process or an earlier
    run already used is skipped, never overwritten.
    """

    def __init__(self, prefix: str, **recorder_options: Any) -> None:
        self.prefix = os.path.abspath(prefix)  # a later chdir (daemon mode) must not move it
        self.count = 0
        self.recorder_options = recorder_options

    def open(self, peer: str, started: float) -> Recorder | None:
        """A recorder for a session that began at ``started`` (monotonic), or None if the file
        cannot be created (logged; the session goes on unrecorded)."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        for _ in range(MAX_NAME_TRIES):
            self.count += 1
            path = f"{self.prefix}.{self.count}"
            try:
                fd = os.open(path, flags, FILE_MODE)
            except FileExistsError:
                continue
            except OSError as exc:
                log.warning(
                    "recording failed peer=%s file=%s reason=%s",
                    peer,
                    path,
                    logfmt(exc.strerror or exc),
                )
                return None
            log.info("recording peer=%s file=%s", peer, path)
            return Recorder(fd, path, peer, started, **self.recorder_options)
        log.warning("recording failed peer=%s reason=no free name %s.<n>", peer, self.prefix)
        return None


class Recorder:
    """One session's recording; the relay calls :meth:`to_client`/:meth:`from_client`, the session
    calls :meth:`close` when the relay has ended."""

    def __init__(
        self,
        fd: int,
        path: str,
        peer: str,
        started: float,
        *,
        flush_bytes: int = FLUSH_BYTES,
        max_buffer_bytes: int = MAX_BUFFER_BYTES,
        close_wait: float = CLOSE_WAIT,
    ) -> None:
        self.path = path
        self.peer = peer
        self.started = started
        self.flush_bytes = flush_bytes
        self.max_buffer_bytes = max_buffer_bytes
        self.close_wait = close_wait
        self.dropped_frames = 0
        self.dropped_bytes = 0
        self._fd: int | None = fd
        self._pending: list[tuple[str, int, bytes]] = []
        self._pending_bytes = 0
        self._writer: gevent.Greenlet | None = None
        self._write(HEADER)

    @property
    def active(self) -> bool:
        """False once the recording was stopped by an error or closed."""
        return self._fd is not None

    # -- called by the relay, on the hot path: append only --

    def to_client(self, data: bytes) -> None:
        self._add(TO_CLIENT, data)

    def from_client(self, data: bytes) -> None:
        self._add(FROM_CLIENT, data)

    def _add(self, direction: str, data: bytes) -> None:
        if self._fd is None:
            return
        if self._pending_bytes + len(data) > self.max_buffer_bytes:
            self.dropped_frames += 1
            self.dropped_bytes += len(data)
            return
        ms = int((time.monotonic() - self.started) * 1000)
        if type(data) is not bytes:  # a view of a buffer the relay reuses: keep a copy
            data = bytes(data)
        self._pending.append((direction, ms, data))
        self._pending_bytes += len(data)
        if self._pending_bytes >= self.flush_bytes and self._writer is None:
            self._writer = gevent.spawn(self._drain)

    # -- writing --

    def close(self) -> None:
        """Write what is buffered and the end marker, close the file, log dropped frames.

        Waits at most ``close_wait`` for a write under way (a stuck disk or NFS server): past
        that, the rest is dropped and the file is closed once that write returns (closing it
        under the write could send the bytes to a file that reuses the descriptor).
        """
        writer = self._writer
        if writer is not None:
            writer.join(timeout=self.close_wait)
            if not writer.dead:
                log.warning(
                    "recording abandoned peer=%s file=%s bytes=%d reason=%s",
                    self.peer,
                    self.path,
                    self._pending_bytes,
                    f"a write took longer than {self.close_wait:g}s",
                )
                self._pending, self._pending_bytes = [], 0  # the writer stops after this write
                writer.link(lambda _: self._close_file())
                return
        self._flush()
        self._write(FOOTER)
        if self.dropped_frames:
            log.warning(
                "recording dropped peer=%s file=%s frames=%d bytes=%d reason=%s",
                self.peer,
                self.path,
                self.dropped_frames,
                self.dropped_bytes,
                "disk slower than the traffic",
            )
        self._close_file()

    def _drain(self) -> None:
        try:
            while self._pending_bytes >= self.flush_bytes and self._fd is not None:
                self._flush()
        finally:
            self._writer = None

    def _flush(self) -> None:
        pending, self._pending, self._pending_bytes = self._pending, [], 0
        if pending:
            self._write("".join(encode_frame(*frame) for frame in pending))

    def _write(self, text: str) -> None:
        fd = self._fd
        if fd is None:
            return
        try:
            gevent.get_hub().threadpool.apply(_write_all, (fd, text.encode("ascii")))
        except OSError as exc:
            self._stopped(exc)
            self._close_file()

    def _close_file(self) -> None:
        fd, self._fd = self._fd, None
        self._pending = []
        if fd is not None:
            try:
                os.close(fd)
            except OSError as exc:
                self._stopped(exc)

    def _stopped(self, exc: OSError) -> None:
        """The one log line of a recording that stopped on a write error (the session goes on)."""
        log.warning(
            "recording stopped peer=%s file=%s reason=%s",
            self.peer,
            self.path,
            logfmt(exc.strerror or exc),
        )


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


# -- the ``wsproxy record`` command -----------------------------------------------------------


def command(argv: Sequence[str], out: TextIO) -> int:
    """``wsproxy record (show | stats) <file>``; ``argv`` follows the word ``record``.

    Raises:
        ConfigError: arguments that do not match the usage, a file that cannot be read or is
            not a recording (exit status 2).
    """
    if any(arg in ("-h", "--help") for arg in argv):
        out.write(USAGE)
        return 0
    try:
        args = docopt(USAGE, ["record", *argv], default_help=False)
    except DocoptExit:
        raise ConfigError(
            "arguments do not match the usage",
            source="command line",
            expected="wsproxy record (show | stats) <file>",
        ) from None
    path = args["<file>"]
    try:
        with open(path, encoding="ascii") as f:
            recording = parse_recording(f.read())
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not ASCII text"
        raise ConfigError(f"cannot read the file: {reason}", source=path) from None
    except ValueError as exc:
        raise ConfigError(f"not a recording: {exc}", source=path) from None
    if args["show"]:
        show(recording, out)
    else:
        stats(recording, out)
    return 0


def show(recording: Recording, out: TextIO) -> None:
    for frame in recording.frames:
        out.write(
            f"{frame.ms / 1000:10.3f}  {DIRECTION_NAMES[frame.direction]:<11}  "
            f"{len(frame.data):>8}  {_printable(frame.data)}\n"
        )
    if not recording.complete:
        out.write("(recording ends without its end marker: it was cut short)\n")


def stats(recording: Recording, out: TextIO) -> None:
    frames = recording.frames
    lines = [
        ("complete", "yes" if recording.complete else "no"),
        ("duration", f"{frames[-1].ms / 1000 if frames else 0:.3f} s"),
    ]
    for direction in (TO_CLIENT, FROM_CLIENT):
        mine = [f for f in frames if f.direction == direction]
        name = DIRECTION_NAMES[direction]
        lines.append((f"{name} frames", str(len(mine))))
        lines.append((f"{name} bytes", str(sum(len(f.data) for f in mine))))
    for key, value in lines:
        out.write(f"{key:<20}{value}\n")


def _printable(data: bytes) -> str:
    # The file's escaping without the quote escape: shows every byte, sends no control
    # character to the terminal.
    return data.decode("latin-1").encode("unicode_escape").decode("ascii")
