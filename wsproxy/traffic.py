"""``--traffic``: websockify's per-frame trace, one character per event, written to standard
error (websockify writes it to standard output; ours stays apart from a wrapped program's output
and from anything piped out of stdout).

It hooks into the relay as a recorder (see :mod:`wsproxy.record`), so with ``--traffic`` off the
pumps make no call for it at all.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

__all__ = ["LEGEND", "TrafficTrace", "write_legend"]

LEGEND = """
Traffic Legend:
    }  - Client receive
    {  - Target receive
    >  - Target send
    <  - Client send
"""
STDERR = 2


def write_legend() -> None:
    _write(LEGEND.encode("ascii"))


class TrafficTrace:
    """A recorder that writes ``}>`` for each client frame relayed to the target and ``{<`` for
    each target read relayed to the client, then hands the data to ``inner`` (a session
    recording, which its session closes), if any."""

    def __init__(self, inner: Any = None) -> None:
        self.inner = inner

    def from_client(self, payload: bytes) -> None:
        _write(b"}>")
        if self.inner is not None:
            self.inner.from_client(payload)

    def to_client(self, data: bytes) -> None:
        _write(b"{<")
        if self.inner is not None:
            self.inner.to_client(data)


def _write(data: bytes) -> None:
    # Unbuffered, so the trace keeps pace with the traffic; a closed stderr is no error.
    with contextlib.suppress(OSError):
        os.write(STDERR, data)
