"""rebind.so, the copy wsproxy loads (built by `make rebind` or pip), under LD_PRELOAD in real
child processes."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import ROOT

from wsproxy.rebinding import find_rebind_lib

# Binds each address given on the command line (family, host, port) and prints where each socket
# landed, or the errno of a failed bind, as one JSON list.
CHILD = """
import json, socket, sys
out = []
for spec in sys.argv[1:]:
    family, host, port = spec.split(",")
    sock = socket.socket(socket.AF_INET6 if family == "6" else socket.AF_INET)
    # A free port can still have TIME_WAIT connections of earlier tests on it.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == "6":
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    try:
        sock.bind((host, int(port)))
        out.append(list(sock.getsockname()[:2]))
    except OSError as exc:
        out.append(exc.errno)
    sock.close()
print(json.dumps(out))
"""


SOURCE = ROOT / "rebind" / "rebind.c"


@pytest.fixture(scope="module")
def rebind_so() -> Path:
    """The library wsproxy loads for wrapped programs, built from the current rebind.c."""
    lib = Path(find_rebind_lib(None))
    assert lib.stat().st_mtime >= SOURCE.stat().st_mtime, f"{lib} is older than {SOURCE}"
    return lib


def test_rebind_c_builds_without_warnings(tmp_path: Path) -> None:
    out = tmp_path / "rebind.so"
    cc = os.environ.get("CC") or shutil.which("cc") or "gcc"
    flags = ["-Wall", "-Wextra", "-Werror", "-O2", "-fPIC", "-shared"]
    result = subprocess.run(
        [cc, *flags, "-o", str(out), str(SOURCE), "-ldl", "-pthread"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr  # warning-free, not merely error-free


def test_make_rebind_builds_the_copy_wsproxy_loads(tmp_path: Path) -> None:
    # A copy of the source tree's build inputs: `make rebind` there must (re)build the file
    # find_rebind_lib picks, not a second copy beside it.
    (tmp_path / "rebind").mkdir()
    (tmp_path / "wsproxy").mkdir()
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    shutil.copy(SOURCE, tmp_path / "rebind" / "rebind.c")
    result = subprocess.run(
        ["make", "-C", str(tmp_path), "rebind"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.so")) == [
        "wsproxy/rebind.so"
    ]
    assert Path(find_rebind_lib(None)).relative_to(ROOT).as_posix() == "wsproxy/rebind.so"


PortPairs = Callable[[], tuple[int, int]]


@pytest.fixture
def held_ports() -> Iterator[PortPairs]:
    """Reserves two ports at a time for the whole test, not just while they are picked.

    Each stays bound (dual-stack wildcard, SO_REUSEADDR, never listening), so the kernel
    hands it to no other bind(0) or connect() on the machine, yet the child, which also sets
    SO_REUSEADDR, can still bind it on any address of either family.
    """
    with contextlib.ExitStack() as stack:

        def reserve() -> int:
            sock = stack.enter_context(socket.socket(socket.AF_INET6))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(("::", 0))
            return int(sock.getsockname()[1])

        yield lambda: (reserve(), reserve())


def run_code(
    lib: Path, env: dict[str, str], code: str, *args: str
) -> subprocess.CompletedProcess[str]:
    """Run Python ``code`` in a child with ``lib`` preloaded and ``env`` added."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env={**os.environ, "LD_PRELOAD": str(lib), **env},
        capture_output=True,
        text=True,
        timeout=20,
    )


def run_child(lib: Path, env: dict[str, str], *specs: str) -> tuple[list[object], str]:
    result = run_code(lib, env, CHILD, *specs)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), result.stderr


def ports_env(old: int, new: int) -> dict[str, str]:
    return {"REBIND_OLD_PORT": str(old), "REBIND_NEW_PORT": str(new)}


@pytest.mark.parametrize(
    ("family", "host", "landed"),
    [
        ("4", "0.0.0.0", "127.0.0.1"),
        ("4", "127.0.0.1", "127.0.0.1"),
        ("6", "::", "::1"),
        ("6", "::1", "::1"),
        ("6", "::ffff:0.0.0.0", "::ffff:127.0.0.1"),
        ("6", "::ffff:127.0.0.1", "::ffff:127.0.0.1"),
    ],
)
def test_bind_of_old_port_lands_on_loopback_at_new_port(
    rebind_so: Path, held_ports: PortPairs, family: str, host: str, landed: str
) -> None:
    old, new = held_ports()
    out, stderr = run_child(rebind_so, ports_env(old, new), f"{family},{host},{old}")
    assert out == [[landed, new]]
    assert "rebind" not in stderr


def test_bind_of_another_port_is_untouched(rebind_so: Path, held_ports: PortPairs) -> None:
    old, new = held_ports()
    _, other = held_ports()
    out, _ = run_child(
        rebind_so, ports_env(old, new), f"4,0.0.0.0,{other}", f"6,::1,{other}", "4,127.0.0.1,0"
    )
    assert out[0] == ["0.0.0.0", other]
    assert out[1] == ["::1", other]
    assert out[2][0] == "127.0.0.1" and out[2][1] not in (0, old, new)  # type: ignore[index]


def test_failing_bind_reports_the_real_errno(rebind_so: Path, held_ports: PortPairs) -> None:
    old, new = held_ports()
    with socket.create_server(("127.0.0.1", new)) as taken:
        assert taken.getsockname()[1] == new
        out, _ = run_child(rebind_so, ports_env(old, new), f"4,0.0.0.0,{old}", f"4,8.8.8.8,{old}")
    assert out == [errno.EADDRINUSE, errno.EADDRNOTAVAIL]


def test_unix_socket_bind_passes_through(
    rebind_so: Path, held_ports: PortPairs, tmp_path: Path
) -> None:
    old, new = held_ports()
    path = tmp_path / "sock"
    code = f"import socket; s = socket.socket(socket.AF_UNIX); s.bind({str(path)!r}); print('ok')"
    result = run_code(rebind_so, ports_env(old, new), code)
    assert result.stdout.strip() == "ok", result.stderr
    assert path.exists()


# bind() with an address of 1 byte, the last one before an unreadable page: a library that
# reads sa_family (2 bytes) before checking the length crashes; the kernel answers EINVAL.
SHORT_ADDRESS_CHILD = """
import ctypes, mmap, socket
libc = ctypes.CDLL(None, use_errno=True)
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
libc.bind.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint]
page = mmap.PAGESIZE
area = mmap.mmap(-1, 2 * page)
base = ctypes.addressof(ctypes.c_char.from_buffer(area))
assert libc.mprotect(base + page, page, 0) == 0  # PROT_NONE
sock = socket.socket()
print(libc.bind(sock.fileno(), base + page - 1, 1), ctypes.get_errno())
"""


def test_address_shorter_than_its_family_passes_through_unread(
    rebind_so: Path, held_ports: PortPairs
) -> None:
    old, new = held_ports()
    result = run_code(rebind_so, ports_env(old, new), SHORT_ADDRESS_CHILD)
    assert result.returncode == 0, f"child died: {result.returncode} {result.stderr}"
    assert result.stdout.split() == ["-1", str(errno.EINVAL)]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "REBIND_OLD_PORT and REBIND_NEW_PORT are unset"),
        ({"REBIND_OLD_PORT": "80x", "REBIND_NEW_PORT": "1"}, "REBIND_OLD_PORT is not a port"),
        ({"REBIND_OLD_PORT": "1", "REBIND_NEW_PORT": "70000"}, "REBIND_NEW_PORT is not a port"),
        ({"REBIND_OLD_PORT": "1"}, "REBIND_NEW_PORT is not a port 1-65535: (unset)"),
    ],
)
def test_unset_or_malformed_ports_pass_through_and_are_reported_once(
    rebind_so: Path, held_ports: PortPairs, env: dict[str, str], message: str
) -> None:
    _, port = held_ports()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("REBIND_")}
    result = subprocess.run(
        [sys.executable, "-c", CHILD, f"4,0.0.0.0,{port}", f"6,::,{port}"],
        env={**clean, "LD_PRELOAD": str(rebind_so), **env},
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert json.loads(result.stdout) == [["0.0.0.0", port], ["::", port]]
    lines = [line for line in result.stderr.splitlines() if line.startswith("rebind:")]
    assert len(lines) == 1 and message in lines[0], result.stderr
