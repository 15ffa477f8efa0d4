"""``make bench``: every scenario against socat, websockify and wsproxy in one run.

Prints a table of absolute figures and ratios, writes ``bench/results/<date>.json`` and
``latest.json``, and draws ``bench/results/latest.png``. ``--quick`` runs short; ``-k WORD`` runs
the scenarios whose name contains WORD (repeatable).

The machine is shared: what the neighbours do changes between two measurements seconds apart.
So each scenario runs in ``ROUNDS`` rounds, the proxies taking turns within each round, and
every figure is the median of its rounds (the most ``errors`` of any): a burst of outside load
then moves one round of one proxy, not the ratio. Scenarios that hold thousands of sessions,
overload a proxy or replay the long recordings run once.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import queue
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import proxies
from bench.proxies import Proxy
from bench.rounds import median_figures

RESULTS = Path(__file__).resolve().parent / "results"
PROXIES = ("socat", "websockify", "wsproxy")
FORKING_IDLE_CAP = 200  # websockify and socat fork a process per session: this is what we hold
FD_MARGIN = 64  # descriptors a proxy needs besides its sessions' two each
MiB = 1 << 20
ROUNDS = 3  # turns of every proxy per scenario (1 with --quick)
ONCE = ("idle", "overload", "terminal", "vnc")  # scenarios (name prefixes) measured once


class Services:
    """The target services process (:mod:`bench.services`)."""

    def __init__(self, recordings: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.services", str(recordings)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=proxies.ROOT,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.ports = json.loads(self._lines.get(timeout=10))

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)

    def command(self, word: str) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write(word + "\n")
        self.proc.stdin.flush()
        return json.loads(self._lines.get(timeout=10)) if word == "stats" else None

    def delivered(self) -> dict[str, float]:
        """Bytes the sinks took since the last reset, and their rate from first to last byte."""
        records = [r for r in self.command("stats") if r["bytes"]]
        if not records:
            return {"bytes": 0, "rate": 0.0}
        total = sum(r["bytes"] for r in records)
        span = max(r["last"] for r in records) - min(r["first"] for r in records)
        return {"bytes": total, "rate": total / span if span > 0 else 0.0}

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


class Context:
    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.secs = 1.0 if quick else 1.5  # per round: ROUNDS of them
        self.tmp = tempfile.TemporaryDirectory(prefix="wsproxy-bench-")
        self.services = Services(_make_recordings(Path(self.tmp.name)))
        self.tls = _make_cert(Path(self.tmp.name))
        self.wsproxy_tls = proxies.has_option("--cert")
        self.wsproxy_workers = proxies.has_option("--workers")
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children inherit it
        self.fd_limit = hard


def _make_recordings(folder: Path) -> Path:
    """The streams the compression scenarios replay (:mod:`bench.streams`), as recordings."""
    from bench import streams

    folder = folder / "recordings"
    folder.mkdir()
    streams.write_recording(folder / "terminal.js", streams.terminal())
    streams.write_recording(folder / "vnc-raw.js", streams.vnc("raw"))
    streams.write_recording(folder / "vnc-zlib.js", streams.vnc("zlib"))
    return folder


def _make_cert(folder: Path) -> tuple[str, str]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return str(cert), str(key)


def _load(spec: dict[str, Any], timeout: float = 120.0) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.load", json.dumps(spec)],
        capture_output=True,
        text=True,
        cwd=proxies.ROOT,
        timeout=timeout,
    )
    if out.returncode:
        raise RuntimeError(out.stderr.strip().splitlines()[-1] if out.stderr else "load failed")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _spec(proxy: Proxy, scenario: str, **extra: Any) -> dict[str, Any]:
    return {"scenario": scenario, "port": proxy.port, "ws": proxy.name != "socat", **extra}


def _measured(proxy: Proxy, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``run`` and add the proxy tree's CPU share over it."""
    c0, t0 = proxy.cpu(), time.monotonic()
    out = run()
    out["proxy_cpu"] = (proxy.cpu() - c0) / (time.monotonic() - t0)
    return out


# -- scenarios: each takes the context and a started proxy, returns its figures --


def upload(size: int, **extra: Any) -> Callable[[Context, Proxy], dict[str, Any]]:
    def run(ctx: Context, proxy: Proxy) -> dict[str, Any]:
        ctx.services.command("reset")
        out = _measured(
            proxy, lambda: _load(_spec(proxy, "upload", size=size, secs=ctx.secs, **extra))
        )
        time.sleep(0.2)
        got = ctx.services.delivered()
        return {
            "MB/s": got["rate"] / 1e6,
            "frames/s": got["rate"] / size,
            "client_cpu": out["client_cpu"],
            "proxy_cpu": out["proxy_cpu"],
        }

    return run


def download(size: int, **extra: Any) -> Callable[[Context, Proxy], dict[str, Any]]:
    def run(ctx: Context, proxy: Proxy) -> dict[str, Any]:
        out = _measured(proxy, lambda: _load(_spec(proxy, "download", secs=ctx.secs, **extra)))
        rate = out["bytes"] / out["secs"]
        return {
            "MB/s": rate / 1e6,
            "frames/s": out["frames"] / out["secs"] if out["frames"] is not None else None,
            "client_cpu": out["client_cpu"],
            "proxy_cpu": out["proxy_cpu"],
        }

    return run


def stream(ctx: Context, proxy: Proxy, deflate: bool) -> dict[str, Any]:
    """A replayed recording downloaded as fast as it goes: bytes on the wire per payload byte,
    payload throughput and what it cost the proxy."""
    out = _measured(proxy, lambda: _load(_spec(proxy, "stream", secs=ctx.secs, deflate=deflate)))
    payload_gb = out["payload"] / 1e9
    return {
        "MB/s": out["payload"] / out["secs"] / 1e6,
        "wire/payload": out["wire"] / out["payload"] if out["payload"] else None,
        "cpu_s/GB": out["proxy_cpu"] * out["secs"] / payload_gb if payload_gb else None,
        "client_cpu": out["client_cpu"],
        "proxy_cpu": out["proxy_cpu"],
    }


def replay(deflate: bool) -> Callable[[Context, Proxy], dict[str, Any]]:
    return lambda ctx, proxy: stream(ctx, proxy, deflate)


def echo(ctx: Context, proxy: Proxy) -> dict[str, Any]:
    out = _measured(proxy, lambda: _load(_spec(proxy, "echo", secs=ctx.secs)))
    return {
        k: out[k] for k in ("p50_us", "p99_us", "p999_us", "samples", "client_cpu", "proxy_cpu")
    }


def concurrent(ctx: Context, proxy: Proxy) -> dict[str, Any]:
    out = _measured(
        proxy, lambda: _load(_spec(proxy, "concurrent", clients=100, secs=ctx.secs + 1))
    )
    return {
        "rt/s": out["rate"],
        "p99_us": out["p99_us"],
        "errors": out["errors"],
        "client_cpu": out["client_cpu"],
        "proxy_cpu": out["proxy_cpu"],
    }


def connrate(parallel: int, **extra: Any) -> Callable[[Context, Proxy], dict[str, Any]]:
    def run(ctx: Context, proxy: Proxy) -> dict[str, Any]:
        spec = _spec(proxy, "connrate", parallel=parallel, secs=ctx.secs, **extra)
        out = _measured(proxy, lambda: _load(spec))
        return {
            "sessions/s": out["rate"],
            "errors": out["errors"],
            "client_cpu": out["client_cpu"],
            "proxy_cpu": out["proxy_cpu"],
        }

    return run


def idle(count: int) -> Callable[[Context, Proxy], dict[str, Any]]:
    def run(ctx: Context, proxy: Proxy) -> dict[str, Any]:
        want = count
        note = ""
        if proxy.name != "wsproxy":
            want = min(count, FORKING_IDLE_CAP)
            note = "forks per session: capped"
        fd_cap = (ctx.fd_limit - FD_MARGIN) // 2
        if want > fd_cap:
            want, note = fd_cap, f"capped by the fd hard limit {ctx.fd_limit}"
        time.sleep(0.3)
        base = proxy.pss()
        client = subprocess.Popen(
            [sys.executable, "-m", "bench.load", json.dumps(_spec(proxy, "idle", count=want))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=proxies.ROOT,
        )
        assert client.stdin is not None and client.stdout is not None
        opened = json.loads(client.stdout.readline())
        time.sleep(1.0)
        held = proxy.pss()
        client.stdin.write("\n")
        client.stdin.flush()
        final = json.loads(client.stdout.readline())
        client.wait(timeout=60)
        n = max(1, opened["opened"])
        return {
            "sessions": opened["opened"],
            "echoing": final["echoing"],
            "KiB/session": (held - base) / n / 1024,
            "baseline_MiB": base / MiB,
            "open_secs": opened["secs"],
            "note": note or opened["error"],
        }

    return run


def overload(ctx: Context, proxy: Proxy) -> dict[str, Any]:
    ctx.services.command("reset")
    base = proxy.pss()
    secs = ctx.secs + 2
    client = subprocess.Popen(
        [sys.executable, "-m", "bench.load", json.dumps(_spec(proxy, "overload", secs=secs))],
        stdout=subprocess.PIPE,
        text=True,
        cwd=proxies.ROOT,
    )
    peak = base
    while client.poll() is None:
        peak = max(peak, proxy.pss())
        time.sleep(0.1)
    assert client.stdout is not None
    out = json.loads(client.stdout.read().strip().splitlines()[-1])
    got = ctx.services.delivered()
    return {
        "offered_MB/s": out["offered"] / out["secs"] / 1e6,
        "delivered_MB/s": got["bytes"] / out["secs"] / 1e6,
        "peak_growth_MiB": (peak - base) / MiB,
        "client_cpu": out["client_cpu"],
    }


# name, scenario, target service, proxies, proxy options
SCENARIOS: list[
    tuple[str, Callable[[Context, Proxy], dict[str, Any]], str, tuple[str, ...], dict[str, Any]]
] = [
    ("upload-64k", upload(65536), "sink", PROXIES, {}),
    ("upload-1k", upload(1024), "sink", PROXIES, {}),
    ("download-64k", download(65536), "source64k", PROXIES, {}),
    ("download-1k", download(1024), "source1k", PROXIES, {}),
    ("upload-64k-tls", upload(65536, tls=True), "sink", PROXIES, {"tls": True}),
    ("download-64k-tls", download(65536, tls=True), "source64k", PROXIES, {"tls": True}),
    ("upload-64k-base64", upload(65536, subprotocol="base64"), "sink", ("wsproxy",), {}),
    ("download-64k-base64", download(65536, subprotocol="base64"), "source64k", ("wsproxy",), {}),
    ("echo-32", echo, "echo", PROXIES, {}),
    ("concurrent-100", concurrent, "echo", PROXIES, {}),
    ("concurrent-100-workers2", concurrent, "echo", ("wsproxy",), {"workers": 2}),
    ("connect-seq", connrate(1), "echo", PROXIES, {}),
    ("connect-50", connrate(50), "echo", PROXIES, {}),
    ("connect-seq-tls", connrate(1, tls=True), "echo", PROXIES, {"tls": True}),
    ("idle-1000", idle(1000), "echo", ("websockify", "wsproxy"), {}),
    ("idle-10000", idle(10000), "echo", ("wsproxy",), {}),
    ("overload", overload, "slow", PROXIES, {}),
    # Compression (permessage-deflate): the client offers it as Chromium does in the -deflate
    # rows, where wsproxy runs with --permessage-deflate (websockify never agrees to it).
    ("terminal", replay(False), "terminal", PROXIES, {}),
    ("terminal-deflate", replay(True), "terminal", ("websockify", "wsproxy"), {"deflate": True}),
    ("vnc-raw", replay(False), "vnc-raw", PROXIES, {}),
    ("vnc-raw-deflate", replay(True), "vnc-raw", ("websockify", "wsproxy"), {"deflate": True}),
    ("vnc-zlib", replay(False), "vnc-zlib", PROXIES, {}),
    ("vnc-zlib-deflate", replay(True), "vnc-zlib", ("websockify", "wsproxy"), {"deflate": True}),
]


def run_all(ctx: Context, only: list[str]) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    for name, scenario, service, kinds, options in SCENARIOS:
        if only and not any(word in name for word in only):
            continue
        if ctx.quick and name == "idle-10000":
            continue
        rounds = 1 if ctx.quick or name.startswith(ONCE) else ROUNDS
        measured: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
        row: dict[str, Any] = {}
        for _ in range(rounds):
            for kind in kinds:
                if kind == "wsproxy" and options.get("tls") and not ctx.wsproxy_tls:
                    row[kind] = {"skipped": "this wsproxy has no --cert"}
                    continue
                if options.get("workers") and not ctx.wsproxy_workers:
                    row[kind] = {"skipped": "this wsproxy has no --workers"}
                    continue
                measured[kind].append(_measure(ctx, scenario, kind, service, options))
        for kind, figures in measured.items():
            if figures:
                row[kind] = median_figures(figures)
            print(f"  {name:24} {kind:11} {_brief(row[kind])}", flush=True)
        results[name] = row
    return results


def _measure(
    ctx: Context,
    scenario: Callable[[Context, Proxy], dict[str, Any]],
    kind: str,
    service: str,
    options: dict[str, Any],
) -> dict[str, Any]:
    """One round of ``scenario`` against a fresh proxy of ``kind``."""
    proxy = proxies.start(
        kind,
        ctx.services.ports[service],
        tls=ctx.tls if options.get("tls") else None,
        workers=options.get("workers", 0),
        deflate=options.get("deflate", False),
    )
    try:
        return scenario(ctx, proxy)
    except Exception as exc:  # one failed measurement must not lose the run
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        proxy.stop()


def _brief(figures: dict[str, Any]) -> str:
    return " ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()
    )


def machine() -> dict[str, Any]:
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short scenarios, no 10,000 idle")
    parser.add_argument(
        "-k",
        dest="only",
        action="append",
        default=[],
        help="run only scenarios whose name contains this (repeatable)",
    )
    parser.add_argument("--no-save", action="store_true", help="print only; write no files")
    args = parser.parse_args(argv)
    from bench import report

    ctx = Context(args.quick)
    started = datetime.datetime.now(datetime.UTC)
    try:
        results = run_all(ctx, args.only)
    finally:
        ctx.services.stop()
        ctx.tmp.cleanup()
    doc = {
        "date": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "quick": args.quick,
        "rounds": 1 if args.quick else ROUNDS,
        "machine": machine(),
        "results": results,
    }
    doc["targets"] = report.targets(results)
    print()
    print(report.table(doc))
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        text = json.dumps(doc, indent=1) + "\n"
        (RESULTS / f"{started.strftime('%Y-%m-%dT%H%M%SZ')}.json").write_text(text)
        (RESULTS / "latest.json").write_text(text)
        report.plot(doc, RESULTS / "latest.png")
        print(f"\nwrote {RESULTS}/latest.json and latest.png")
    return 0
