"""The streams of the compression scenarios, generated (seeded, so every run sends the same bytes).

- :func:`terminal`: what a shell session writes: prompts, ``ls -l`` listings, log lines with
  time stamps, ANSI colours and a ``top``-like screen redrawn, in writes of a few lines each.
- :func:`vnc`: RFB ``FramebufferUpdate`` messages of a synthetic 1280x800 desktop (a gradient
  background, windows of text-like glyphs, a photo-like noisy area, a moving cursor). ``raw``
  sends the pixels as they are (Raw encoding, what a LAN setting picks); ``zlib`` compresses them
  with one zlib stream per session as ZRLE and Tight do, i.e. traffic already compressed.

:func:`write_recording` stores a stream in websockify's ``--record`` format and
:func:`read_recording` reads it back, so the VNC scenarios replay a recording.
"""

from __future__ import annotations

import random
import struct
import zlib
from pathlib import Path

from wsproxy.record import FOOTER, HEADER, TO_CLIENT, encode_frame, parse_recording

__all__ = ["read_recording", "terminal", "vnc", "write_recording"]

WIDTH, HEIGHT, BPP = 1280, 800, 4
WORDS = [
    *("error", "warning", "info", "debug", "kernel", "systemd", "sshd", "cron", "nginx"),
    *("postgres", "connection", "accepted", "closed", "timeout", "retry", "user", "session"),
    *("started", "stopped", "failed", "ok", "GET", "POST", "/api/v1/items", "200", "404"),
]


def terminal(total: int = 4 << 20, seed: int = 1) -> list[bytes]:
    """About ``total`` bytes of terminal output, as the writes a pty would see."""
    rng = random.Random(seed)
    out: list[bytes] = []
    size = 0
    t = 1_700_000_000
    while size < total:
        kind = rng.random()
        lines: list[str] = []
        if kind < 0.4:
            for _ in range(rng.randint(1, 30)):
                t += rng.randint(0, 3)
                words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12)))
                level = rng.choice(("\x1b[32mINFO\x1b[0m", "\x1b[33mWARN\x1b[0m", "DEBUG"))
                lines.append(
                    f"{t} host{rng.randint(1, 9)} {level} pid={rng.randint(100, 65535)} {words}"
                )
        elif kind < 0.7:
            for _ in range(rng.randint(3, 40)):
                lines.append(
                    f"-rw-r--r-- 1 user staff {rng.randint(0, 10**7):>9} "
                    f"Nov {rng.randint(1, 30):>2} {rng.randint(0, 23):02}:{rng.randint(0, 59):02} "
                    f"{rng.choice(WORDS)}_{rng.randint(0, 999)}.{rng.choice(('log', 'txt', 'py'))}"
                )
        elif kind < 0.85:
            lines.append(f"\x1b[H\x1b[2J top - load average: {rng.random():.2f}")
            for pid in range(20):
                lines.append(
                    f"{1000 + pid:>6} user 20 0 {rng.randint(10**4, 10**6):>8} "
                    f"{rng.random() * 100:5.1f} {rng.random() * 10:5.1f} {rng.choice(WORDS)}"
                )
        else:
            lines.append(f"\x1b[1;34muser@host\x1b[0m:\x1b[1;32m~\x1b[0m$ {rng.choice(WORDS)}")
        chunk = ("\r\n".join(lines) + "\r\n").encode()
        out.append(chunk)
        size += len(chunk)
    return out


def _desktop(rng: random.Random) -> bytearray:
    """The framebuffer: BGRX pixels, row by row."""
    fb = bytearray(WIDTH * HEIGHT * BPP)
    for y in range(HEIGHT):
        shade = 40 + y * 80 // HEIGHT
        fb[y * WIDTH * BPP : (y + 1) * WIDTH * BPP] = bytes((shade, 30, 20, 0)) * WIDTH
    glyphs = [bytes(rng.choice((0, 255)) for _ in range(8)) for _ in range(64)]
    for wx, wy, ww, wh in ((60, 60, 640, 420), (600, 300, 600, 450)):
        for y in range(wy, wy + wh):
            row = bytearray(b"\xf0\xf0\xf0\x00" * ww)
            if (y - wy) % 14 < 8 and 20 < y - wy < wh - 10:
                line = (y - wy) // 14
                for col in range(4, ww // 8 - 4):
                    glyph = glyphs[(line * 131 + col * 17 + rng.randint(0, 1)) % 64]
                    bits = glyph[(y - wy) % 14]
                    for bit in range(8):
                        if bits & (1 << bit):
                            p = (col * 8 + bit) * BPP
                            row[p : p + 4] = b"\x20\x20\x20\x00"
            fb[(y * WIDTH + wx) * BPP : (y * WIDTH + wx + ww) * BPP] = row
    for y in range(520, 760):  # a photo: smooth gradient plus sensor noise
        row = bytearray()
        for x in range(80, 480):
            n = rng.randint(-12, 12)
            row += bytes(((x + n) & 255, (y + n) & 255, ((x * y) >> 8) & 255, 0))
        fb[(y * WIDTH + 80) * BPP : (y * WIDTH + 480) * BPP] = row
    return fb


def vnc(encoding: str = "raw", total: int = 16 << 20, seed: int = 2) -> list[bytes]:
    """About ``total`` bytes of FramebufferUpdate messages (``raw`` or ``zlib`` encoded)."""
    rng = random.Random(seed)
    fb = _desktop(rng)
    z = zlib.compressobj(6)
    out: list[bytes] = []
    size = 0
    first = True
    while size < total:
        if first:  # the initial full update, in horizontal bands
            rects = [(0, y, WIDTH, 100) for y in range(0, HEIGHT, 100)]
            first = False
        else:  # a changed area: text typed, a window scrolled, the cursor moved
            w, h = rng.choice(((64, 64), (256, 32), (640, 160), (16, 16)))
            x, y = rng.randrange(0, WIDTH - w), rng.randrange(0, HEIGHT - h)
            for row in range(y, y + h, 7):
                p = (row * WIDTH + x + rng.randrange(w)) * BPP
                fb[p : p + 4] = bytes((rng.randrange(256), 0, 0, 0))
            rects = [(x, y, w, h)]
        body = [struct.pack("!BxH", 0, len(rects))]
        for x, y, w, h in rects:
            pixels = b"".join(
                bytes(fb[(row * WIDTH + x) * BPP : (row * WIDTH + x + w) * BPP])
                for row in range(y, y + h)
            )
            if encoding == "raw":
                body.append(struct.pack("!HHHHi", x, y, w, h, 0) + pixels)
            else:
                data = z.compress(pixels) + z.flush(zlib.Z_SYNC_FLUSH)
                body.append(struct.pack("!HHHHiI", x, y, w, h, 6, len(data)) + data)
        message = b"".join(body)
        out.append(message)
        size += len(message)
    return out


def write_recording(path: Path, chunks: list[bytes], ms_step: int = 20) -> None:
    with path.open("w", encoding="ascii") as f:
        f.write(HEADER)
        for i, chunk in enumerate(chunks):
            f.write(encode_frame(TO_CLIENT, i * ms_step, chunk))
        f.write(FOOTER)


def read_recording(path: Path) -> list[bytes]:
    """The data a recording sent to the client, write by write."""
    recording = parse_recording(path.read_text("ascii"))
    return [f.data for f in recording.frames if not f.from_client]
