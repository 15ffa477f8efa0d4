"""noVNC's own launcher, ``utils/novnc_proxy`` from Debian's ``novnc`` package, running wsproxy in
place of websockify, end to end: Chromium loads noVNC's ``vnc.html`` from wsproxy's web server,
connects through wsproxy to a real VNC server (TigerVNC's ``Xvnc``) and draws its framebuffer.

novnc_proxy looks for ``websockify/run`` beside itself, then ``websockify`` on ``PATH``: a
``websockify`` link to the ``wsproxy`` console script first on ``PATH`` is all it takes (README).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from chromium import Chromium
from conftest import WSPROXY, wait_until

NOVNC_PROXY = Path("/usr/share/novnc/utils/novnc_proxy")
WIDTH, HEIGHT = 320, 200


def free_port() -> int:
    """A port free on both 127.0.0.1 and [::] (novnc_proxy and Xvnc take a number, not 0; a
    bare port binds both families), checked by binding both."""
    for _ in range(20):
        with socket.socket() as v4, socket.socket(socket.AF_INET6) as v6:
            v4.bind(("127.0.0.1", 0))
            port = v4.getsockname()[1]
            v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                v6.bind(("::", port))
            except OSError:
                continue
            return port
    pytest.fail("no port free on both 127.0.0.1 and [::]")


@pytest.fixture
def vnc_server() -> Iterator[int]:
    """Xvnc on a free display (it picks one: -displayfd) and port, no authentication; the root
    window has the classic X weave (-retro), so a drawn framebuffer is not a blank canvas."""
    port = free_port()
    read_fd, write_fd = os.pipe()
    options = ["-SecurityTypes", "None", "-geometry", f"{WIDTH}x{HEIGHT}", "-retro"]
    proc = subprocess.Popen(
        ["Xvnc", "-displayfd", str(write_fd), "-rfbport", str(port), "-localhost", *options],
        pass_fds=(write_fd,),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_fd)
    try:
        with os.fdopen(read_fd, "rb") as displayfd:
            assert displayfd.readline().strip().isdigit(), "Xvnc did not start"
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


class Launcher:
    """``novnc_proxy`` with ``websockify`` resolved to wsproxy; its output collected."""

    def __init__(self, tmp_path: Path, args: list[str]) -> None:
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        (bin_dir / "websockify").symlink_to(WSPROXY)
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [str(NOVNC_PROXY), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=tmp_path,
            env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"},
            start_new_session=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


CANVAS = "document.querySelector('#noVNC_container canvas')"
# Distinct colours in a sample of the canvas: more than one once a framebuffer update is drawn.
COLOURS_JS = f"""
(() => {{
  const c = {CANVAS};
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  const seen = new Set();
  for (let i = 0; i < d.length; i += 4 * 7) seen.add(d[i] << 16 | d[i + 1] << 8 | d[i + 2]);
  return seen.size;
}})()
"""


def test_novnc_proxy_runs_wsproxy_and_chromium_draws_the_vnc_framebuffer(
    tmp_path: Path, vnc_server: int
) -> None:
    if not NOVNC_PROXY.exists():
        pytest.fail("Debian's novnc package is not installed (make test installs it)")
    port = free_port()
    record = tmp_path / "session"
    launcher = Launcher(
        tmp_path,
        ["--listen", str(port), "--vnc", f"localhost:{vnc_server}", "--record", str(record)],
    )
    chromium = Chromium(tmp_path / "profile", [])
    try:
        wait_until(lambda: "listening on" in launcher.log, timeout=15, what=launcher.log)
        assert "Using installed websockify" in launcher.log
        page = chromium.open_page(
            f"http://127.0.0.1:{port}/vnc.html?host=127.0.0.1&port={port}&autoconnect=true"
        )
        # ServerInit arrived: the canvas has the VNC server's size; then an update was drawn.
        chromium.wait_for(page, f"{CANVAS} && {CANVAS}.width === {WIDTH}", timeout=20)
        assert chromium.evaluate(page, f"{CANVAS}.height") == HEIGHT
        chromium.wait_for(page, f"{COLOURS_JS} > 1", timeout=20)
        status = chromium.evaluate(page, "document.getElementById('noVNC_status').textContent")
        assert "Connected" in status, status
        wait_until(lambda: re.search(r"open peer=\S+ proto=rfc6455", launcher.log), what="open")
        chromium.close_page(page)
        time.sleep(0.2)
    finally:
        chromium.close()
        launcher.stop()
    assert "Traceback" not in launcher.log
    # wsproxy recorded the session in websockify's format: the RFB greeting went to the client.
    recordings = list(tmp_path.glob("session*"))
    assert recordings, launcher.log
    assert any("RFB 003.008" in path.read_text(errors="replace") for path in recordings)
