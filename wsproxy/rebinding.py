"""rebind.so, the LD_PRELOAD library of a wrapped program (:mod:`wsproxy.wrap`): where it is,
the port it moves the program's ``bind()`` to, and the environment that tells it.

The moved port is picked by binding port 0 and closing the socket just before the program starts:
holding it would make the program's own bind fail (most programs do not set ``SO_REUSEPORT``).
The race this leaves (another process taking the port between our close and the program's bind)
is short, and the kernel hands out port-0 ports in a spread-out order, so a collision is unlikely;
if it happens the program's bind fails and, in respawn mode, the next start picks another port.
Each start picks a fresh port, so a respawned server never trips over the TIME_WAIT connections
of the last one.
"""

from __future__ import annotations

import mmap
import socket
import struct
from collections.abc import Mapping
from pathlib import Path

from wsproxy.errors import ConfigError

__all__ = [
    "LOOPBACKS",
    "REBIND_LIB",
    "PortSlot",
    "find_rebind_lib",
    "pick_port",
    "rebind_env",
]

REBIND_LIB = "rebind.so"
LOOPBACKS = ("127.0.0.1", "::1")  # rebind.so moves IPv4 binds to the first, IPv6 to the second


def find_rebind_lib(configured: str | None) -> str:
    """The LD_PRELOAD library: ``--rebind-lib`` if given, else the copy in the package, which
    ``pip install`` and ``make rebind`` both build (one file, so a stale second copy cannot be
    the one that runs).

    Raises:
        ConfigError: the library is not there, with how to build it.
    """
    path = Path(configured) if configured else Path(__file__).resolve().parent / REBIND_LIB
    if path.is_file():
        return str(path.resolve())
    raise ConfigError(
        f"{REBIND_LIB} not found at {path}",
        key="rebind_lib",
        expected="the path of a built rebind.so: run `make rebind` in the source tree, "
        "or reinstall wsproxy with `pip install .` (needs a C compiler)",
    )


def pick_port() -> int:
    """A port free on every local address, IPv4 and IPv6 (so the program may bind either)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(("::", 0))
            return int(sock.getsockname()[1])
    except OSError:  # no IPv6 on this host
        with socket.socket() as sock4:
            sock4.bind(("127.0.0.1", 0))
            return int(sock4.getsockname()[1])


def rebind_env(base: Mapping[str, str], lib: str, old_port: int, new_port: int) -> dict[str, str]:
    """The program's environment: ``base`` plus our library first in ``LD_PRELOAD`` (the user's
    own preloads kept after it) and the two ports. ``base`` is not changed."""
    env = dict(base)
    preload = env.get("LD_PRELOAD", "").strip()
    env["LD_PRELOAD"] = f"{lib} {preload}" if preload else lib
    env["REBIND_OLD_PORT"] = str(old_port)
    env["REBIND_NEW_PORT"] = str(new_port)
    return env


class PortSlot:
    """The moved port, shared between processes: with ``--workers`` the program runs in one
    process (the master's keeper) and every worker reads where it listens now.

    An anonymous shared mapping, made before the fork; a 4-byte aligned store is atomic.
    """

    def __init__(self) -> None:
        self._map = mmap.mmap(-1, 4)

    def get(self) -> int:
        return int(struct.unpack_from("=I", self._map)[0])

    def set(self, port: int) -> None:
        struct.pack_into("=I", self._map, 0, port)
