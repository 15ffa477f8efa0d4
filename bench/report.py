"""The table, the target checks and the plot of one bench run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

PROXIES = ("socat", "websockify", "wsproxy")
S, F, W = PROXIES  # socat, websockify, wsproxy
IDLE_KIB_LIMIT = 24
OVERLOAD_GROWTH_MIB_LIMIT = 16  # "flat": a few buffers, not a queue


def _get(results: dict[str, Any], scenario: str, proxy: str, key: str) -> float | None:
    value = results.get(scenario, {}).get(proxy, {}).get(key)
    return value if isinstance(value, int | float) else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


# Ratio targets: name, (scenario, proxy) measured, (scenario, proxy) compared with, figure, limit.
# "100 clients" and "new sessions" are issue 14's "in one process" goals: no --workers row.
RATIOS: tuple[tuple[str, tuple[str, str], tuple[str, str], str, str, float], ...] = (
    ("upload 64 KiB MB/s vs socat", ("upload-64k", W), ("upload-64k", S), "MB/s", ">=", 0.40),
    ("download 64 KiB MB/s vs socat", ("download-64k", W), ("download-64k", S), "MB/s", ">=", 0.85),
    (
        "download 64 KiB MB/s vs websockify",
        ("download-64k", W),
        ("download-64k", F),
        "MB/s",
        ">=",
        1.3,
    ),
    (
        "download 1 KiB MB/s vs websockify",
        ("download-1k", W),
        ("download-1k", F),
        "MB/s",
        ">=",
        1.3,
    ),
    (
        "upload 1 KiB frames/s vs websockify",
        ("upload-1k", W),
        ("upload-1k", F),
        "frames/s",
        ">=",
        2.0,
    ),
    ("echo p50 vs websockify", ("echo-32", W), ("echo-32", F), "p50_us", "<=", 1.0),
    ("echo p99 vs socat", ("echo-32", W), ("echo-32", S), "p99_us", "<=", 1.5),
    ("echo p99.9 vs socat", ("echo-32", W), ("echo-32", S), "p999_us", "<=", 2.0),
    ("100 clients rt/s vs socat", ("concurrent-100", W), ("concurrent-100", S), "rt/s", ">=", 1.0),
    ("new sessions/s vs socat", ("connect-seq", W), ("connect-seq", S), "sessions/s", ">=", 1.0),
    (
        "base64 upload vs binary",
        ("upload-64k-base64", W),
        ("upload-64k", W),
        "MB/s",
        ">=",
        0.5,
    ),
    (
        "base64 download vs binary",
        ("download-64k-base64", W),
        ("download-64k", W),
        "MB/s",
        ">=",
        0.5,
    ),
)


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the issues: the measured ratio or figure, its limit, and whether it is met."""

    def g(scenario: str, proxy: str, key: str) -> float | None:
        return _get(results, scenario, proxy, key)

    rows: list[tuple[str, float | None, str, float]] = [
        (name, _ratio(g(*a, key), g(*b, key)), op, limit) for name, a, b, key, op, limit in RATIOS
    ]
    # Against websockify (the earlier target) the better of one process and --workers 2 counts.
    workers = [g(s, W, "rt/s") for s in ("concurrent-100", "concurrent-100-workers2")]
    best = max((v for v in workers if v is not None), default=None)
    rows.append(
        ("100 clients rt/s vs websockify", _ratio(best, g("concurrent-100", F, "rt/s")), ">=", 2.0)
    )
    sessions = g("idle-10000", W, "sessions")
    rows += [
        (
            "idle 10,000: KiB PSS per session",
            g("idle-10000", W, "KiB/session"),
            "<=",
            IDLE_KIB_LIMIT,
        ),
        (
            "idle 10,000: share of sessions echoing",
            _ratio(g("idle-10000", W, "echoing"), sessions),
            ">=",
            1.0,
        ),
        ("new sessions/s (50 clients)", g("connect-50", W, "sessions/s"), ">=", 1000.0),
        (
            "overload: peak memory growth MiB",
            g("overload", W, "peak_growth_MiB"),
            "<=",
            OVERLOAD_GROWTH_MIB_LIMIT,
        ),
    ]
    out = []
    for name, value, op, limit in rows:
        met = None if value is None else (value >= limit if op == ">=" else value <= limit)
        out.append({"target": name, "value": value, "op": op, "limit": limit, "met": met})
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return "-" if value is None else str(value)


def table(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    lines = [
        f"wsproxy bench {doc['date']}  {m['nproc']} cores  {m['cpu']}  Python {m['python']}"
        + ("  (quick)" if doc.get("quick") else "")
        + (f"  medians of {doc['rounds']} rounds" if doc.get("rounds", 1) > 1 else ""),
        "",
    ]
    head = f"{'scenario':26}{'figure':15}" + "".join(f"{p:>12}" for p in PROXIES)
    head += f"{'ws/socat':>10}{'ws/wsfy':>9}"
    lines += [head, "-" * len(head)]
    for scenario, row in doc["results"].items():
        keys: list[str] = []
        for figures in row.values():
            keys += [k for k in figures if k not in keys and k not in ("note", "rounds")]
        for key in keys:
            vals = [row.get(p, {}).get(key) for p in PROXIES]
            if all(not isinstance(v, int | float) for v in vals):
                text = next((v for v in vals if v is not None), "")
                lines.append(f"{scenario:26}{key:15}{str(text)[:60]}")
                continue
            cells = "".join(f"{_fmt(v):>12}" for v in vals)
            r1 = _ratio(vals[2], vals[0]) if key not in ("client_cpu", "proxy_cpu") else None
            r2 = _ratio(vals[2], vals[1]) if key not in ("client_cpu", "proxy_cpu") else None
            lines.append(f"{scenario:26}{key:15}{cells}{_fmt(r1):>10}{_fmt(r2):>9}")
            scenario = ""
        notes = {p: f.get("note") for p, f in row.items() if f.get("note")}
        for p, note in notes.items():
            lines.append(f"{'':26}{'note':15}{p}: {note}")
    lines += ["", "targets:"]
    for t in doc["targets"]:
        mark = {True: "met", False: "NOT MET", None: "not measured"}[t["met"]]
        lines.append(
            f"  {t['target']:40} {_fmt(t['value']):>10} {t['op']} {_fmt(t['limit']):<6} {mark}"
        )
    return "\n".join(lines)


# The plot's four panels: title, unit, and (scenario, figure, label) bars.
PANELS: tuple[tuple[str, str, list[tuple[str, str, str]]], ...] = (
    (
        "throughput (payload)",
        "MB/s",
        [
            ("upload-64k", "MB/s", "up 64K"),
            ("upload-1k", "MB/s", "up 1K"),
            ("download-64k", "MB/s", "down 64K"),
            ("download-1k", "MB/s", "down 1K"),
            ("upload-64k-tls", "MB/s", "up TLS"),
            ("download-64k-tls", "MB/s", "down TLS"),
            ("upload-64k-base64", "MB/s", "up b64"),
            ("download-64k-base64", "MB/s", "down b64"),
        ],
    ),
    (
        "latency, 32-byte echo (lower is better)",
        "µs",
        [
            ("echo-32", "p50_us", "echo p50"),
            ("echo-32", "p99_us", "echo p99"),
            ("echo-32", "p999_us", "echo p99.9"),
            ("concurrent-100", "p99_us", "100 clients p99"),
        ],
    ),
    (
        "rates",
        "per second",
        [
            ("concurrent-100", "rt/s", "100 clients rt/s"),
            ("concurrent-100-workers2", "rt/s", "100 clients, 2 workers"),
            ("connect-seq", "sessions/s", "new sessions/s, 1"),
            ("connect-50", "sessions/s", "new sessions/s, 50"),
            ("connect-seq-tls", "sessions/s", "new wss sessions/s"),
        ],
    ),
    (
        "memory (lower is better)",
        "KiB PSS per session / MiB",
        [
            ("idle-1000", "KiB/session", "idle 1,000"),
            ("idle-10000", "KiB/session", "idle 10,000"),
            ("overload", "peak_growth_MiB", "overload growth (MiB)"),
        ],
    ),
)


def plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = doc["results"]
    colors = {"socat": "#888888", "websockify": "#d08030", "wsproxy": "#3070c0"}
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))

    def bars(
        ax: Any,
        items: list[tuple[str, str, str]],
        title: str,
        ylabel: str,
        log: bool = False,
    ) -> None:
        width = 0.8 / len(PROXIES)
        for i, proxy in enumerate(PROXIES):
            ys = [_get(results, s, proxy, k) or 0 for s, k, _ in items]
            xs = [j + i * width for j in range(len(items))]
            ax.bar(xs, ys, width, label=proxy, color=colors[proxy])
        ax.set_xticks([j + width for j in range(len(items))])
        ax.set_xticklabels([label for _, _, label in items], rotation=20, fontsize=8)
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        if log:
            ax.set_yscale("log")
        ax.legend(fontsize=8)

    for ax, (title, ylabel, items) in zip(axes.flat, PANELS, strict=True):
        bars(ax, items, title, ylabel, log=True)
    m = doc["machine"]
    fig.suptitle(
        f"wsproxy bench {doc['date']} · {m['nproc']} cores {m['cpu']} · Python {m['python']}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


# The compression scenarios (bench/streams.py), each run with and without a deflate offer.
STREAMS = (
    ("terminal", "terminal stream"),
    ("vnc-raw", "VNC recording, Raw"),
    ("vnc-zlib", "VNC recording, zlib"),
)


def markdown(doc: dict[str, Any]) -> str:
    """The headline figures as a Markdown table (for the README)."""
    r = doc["results"]
    rows = [
        ("upload 64 KiB frames", "upload-64k", "MB/s", "MB/s"),
        ("upload 1 KiB frames", "upload-1k", "frames/s", "frames/s"),
        ("download 64 KiB reads", "download-64k", "MB/s", "MB/s"),
        ("download 1 KiB writes", "download-1k", "MB/s", "MB/s"),
        ("upload 64 KiB, TLS", "upload-64k-tls", "MB/s", "MB/s"),
        ("download 64 KiB, TLS", "download-64k-tls", "MB/s", "MB/s"),
        ("upload 64 KiB, base64", "upload-64k-base64", "MB/s", "MB/s"),
        ("download 64 KiB, base64", "download-64k-base64", "MB/s", "MB/s"),
        ("echo 32 B p50", "echo-32", "p50_us", "µs"),
        ("echo 32 B p99", "echo-32", "p99_us", "µs"),
        ("echo 32 B p99.9", "echo-32", "p999_us", "µs"),
        ("100 clients echo", "concurrent-100", "rt/s", "round trips/s"),
        ("100 clients echo p99", "concurrent-100", "p99_us", "µs"),
        (
            "100 clients, --workers 2",
            "concurrent-100-workers2",
            "rt/s",
            "round trips/s",
        ),
        ("new sessions, one at a time", "connect-seq", "sessions/s", "sessions/s"),
        ("new sessions, 50 clients", "connect-50", "sessions/s", "sessions/s"),
        ("new wss sessions, one at a time", "connect-seq-tls", "sessions/s", "sessions/s"),
        ("idle 1,000: PSS per session", "idle-1000", "KiB/session", "KiB"),
        ("idle 10,000: PSS per session", "idle-10000", "KiB/session", "KiB"),
        ("idle 10,000: sessions held/echoing", "idle-10000", "echoing", "sessions"),
        ("overload: offered", "overload", "offered_MB/s", "MB/s"),
        ("overload: delivered", "overload", "delivered_MB/s", "MB/s"),
        ("overload: peak memory growth", "overload", "peak_growth_MiB", "MiB"),
    ]
    for stream, label in STREAMS:
        for suffix, how in (("", ""), ("-deflate", ", deflate offered")):
            rows += [
                (f"{label}{how}", f"{stream}{suffix}", "MB/s", "MB/s"),
                (f"{label}{how}: wire bytes", f"{stream}{suffix}", "wire/payload", "per payload"),
                (f"{label}{how}: proxy CPU", f"{stream}{suffix}", "cpu_s/GB", "s per GB"),
            ]
    out = [
        "| scenario | unit | socat | websockify | wsproxy | wsproxy/socat | wsproxy/websockify |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, scenario, key, unit in rows:
        vals = [_get(r, scenario, p, key) for p in PROXIES]
        if vals[2] is None and vals[1] is None:
            continue
        cells = " | ".join(_fmt(v) for v in vals)
        out.append(
            f"| {label} | {unit} | {cells} | {_fmt(_ratio(vals[2], vals[0]))} | "
            f"{_fmt(_ratio(vals[2], vals[1]))} |"
        )
    out += ["", "| target | measured | limit | met |", "| --- | ---: | ---: | --- |"]
    for t in doc["targets"]:
        mark = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
        out.append(
            f"| {t['target']} | {_fmt(t['value'])} | {t['op']} {_fmt(t['limit'])} | {mark} |"
        )
    return "\n".join(out)


if __name__ == "__main__":
    import json
    import sys

    print(markdown(json.loads(Path(sys.argv[1]).read_text())))
