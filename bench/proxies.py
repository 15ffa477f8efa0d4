"""Start, measure and stop the proxies under test: socat (raw TCP), websockify and wsproxy."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

__all__ = ["Proxy", "has_option", "start"]

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SOCAT_BUFFER = 262144  # the socat -b: its 8 KiB default would flatter the ratio


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def has_option(option: str) -> bool:
    """Whether this wsproxy's ``--help`` lists ``option`` (TLS, workers: other branches)."""
    out = subprocess.run(
        [sys.executable, "-m", "wsproxy", "--help"], capture_output=True, text=True, cwd=ROOT
    ).stdout
    return option in out


class Proxy:
    def __init__(self, name: str, argv: list[str], port: int, env: dict[str, str]) -> None:
        self.name = name
        self.port = port
        self.proc = subprocess.Popen(
            argv,
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_listening()
        self.ps = psutil.Process(self.proc.pid)

    def _wait_listening(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}")
            conns = psutil.Process(self.proc.pid).net_connections("tcp")
            if any(c.status == psutil.CONN_LISTEN and c.laddr.port == self.port for c in conns):
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} is not listening on {self.port}")

    def tree(self) -> list[psutil.Process]:
        try:
            return [self.ps, *self.ps.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def pss(self) -> int:
        """Bytes of PSS summed over the proxy's process tree (forked children included)."""
        total = 0
        for p in self.tree():
            try:
                with open(f"/proc/{p.pid}/smaps_rollup") as f:
                    for line in f:
                        if line.startswith("Pss:"):
                            total += int(line.split()[1]) * 1024
                            break
            except OSError:
                pass
        return total

    def cpu(self) -> float:
        """CPU seconds used so far by the tree (living processes)."""
        total = 0.0
        for p in self.tree():
            try:
                t = p.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
            except psutil.NoSuchProcess:
                pass
        return total

    def stop(self) -> None:
        for p in reversed(self.tree()):
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        self.proc.wait(timeout=10)


def start(
    kind: str,
    target: int,
    *,
    tls: tuple[str, str] | None = None,
    workers: int = 0,
    deflate: bool = False,
) -> Proxy:
    """A proxy of ``kind`` on a fresh loopback port in front of ``127.0.0.1:target``."""
    port = _free_port()
    env = dict(os.environ)
    if kind == "socat":
        listen = f"TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr,backlog=1024,nodelay"
        if tls:
            listen = (
                f"OPENSSL-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr,backlog=1024,"
                f"cert={tls[0]},key={tls[1]},verify=0,nodelay"
            )
        argv = [
            shutil.which("socat") or "socat",
            "-b",
            str(SOCAT_BUFFER),
            listen,
            f"TCP:127.0.0.1:{target},nodelay",
        ]
    elif kind == "websockify":
        # numpy's masking is element-wise: OpenBLAS settings do not matter, but the machine's
        # notes say to unset them when measuring numpy, so we do.
        env.pop("OPENBLAS_CORETYPE", None)
        env.pop("OPENBLAS_L2_SIZE", None)
        argv = [str(BIN / "websockify")]
        if tls:
            argv += ["--cert", tls[0], "--key", tls[1], "--ssl-only"]
        argv += [f"127.0.0.1:{port}", f"127.0.0.1:{target}"]
    elif kind == "wsproxy":
        argv = [sys.executable, "-m", "wsproxy"]
        if tls:
            argv += ["--cert", tls[0], "--key", tls[1]]
        if workers:
            argv += ["--workers", str(workers)]
        if deflate:
            argv += ["--permessage-deflate"]
        argv += [str(port), f"127.0.0.1:{target}"]  # a bare port, as users start it
    else:
        raise ValueError(kind)
    return Proxy(kind if not workers else f"{kind} --workers {workers}", argv, port, env)
