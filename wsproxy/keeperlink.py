"""The line between a ``--workers`` master and the keeper of its wrapped program, for an upgrade.

Under ``--workers`` the wrapped program is the child of one more process forked by the master
(the keeper, :func:`keep_program`), so only the keeper holds the program's output
pipes. On SIGUSR2 the master asks the keeper over a socket pair made before the fork; the keeper
answers with the program's pid and moved port, and its output pipes as ``SCM_RIGHTS``
descriptors, which the master hands to the new master (:mod:`wsproxy.upgrade`). Once that one is
ready the keeper lets go of the program (it runs on, adopted by the new keeper) and exits 0; if
the upgrade failed it keeps the program as before.
"""

from __future__ import annotations

import contextlib
import logging
import select
import signal
import socket
from typing import Any

import gevent
import gevent.socket

from wsproxy.logs import reopen_log_files
from wsproxy.wrap import WrappedProgram

__all__ = ["ANSWER_TIMEOUT", "KeeperLink", "keep_program"]

log = logging.getLogger(__name__)

ANSWER_TIMEOUT = 5.0  # seconds the master waits for the keeper's answer
MAX_MESSAGE = 256


class KeeperLink:
    """Both ends; the master uses :meth:`ask` and :meth:`answer`, the keeper :meth:`serve`."""

    def __init__(self) -> None:
        self._master, self._keeper = socket.socketpair()
        self._fds: list[int] = []  # the program's pipes, open in the master during an upgrade

    # -- the master's side (blocking, in the master's loop) --

    def ask(self) -> tuple[int, int, int, int] | None:
        """The program's pid, moved port and output pipes (descriptors now open in the master:
        :meth:`answer` closes them), or None when no program runs or the keeper did not answer."""
        self._master.sendall(b"hand over\n")
        if not select.select([self._master], [], [], ANSWER_TIMEOUT)[0]:
            log.warning("the wrapped program's keeper did not answer within %g s", ANSWER_TIMEOUT)
            return None
        message, fds, _, _ = socket.recv_fds(self._master, MAX_MESSAGE, 2)
        fields = message.split()
        if len(fields) != 2 or len(fds) != 2:
            for fd in fds:
                with contextlib.suppress(OSError):
                    socket.close(fd)
            return None
        self._fds = fds
        return int(fields[0]), int(fields[1]), fds[0], fds[1]

    def answer(self, *, release: bool) -> None:
        """Tell the keeper how the upgrade went: ``release`` the program, or keep it."""
        for fd in self._fds:
            with contextlib.suppress(OSError):
                socket.close(fd)
        self._fds = []
        self._master.sendall(b"release\n" if release else b"keep\n")

    # -- the keeper's side (a greenlet in the keeper process) --

    def serve(self, program: WrappedProgram) -> None:
        """Answer the master until it says ``release`` (then let the program go)."""
        buffered = b""
        while True:
            gevent.socket.wait_read(self._keeper.fileno())
            chunk = self._keeper.recv(MAX_MESSAGE)
            if not chunk:
                return  # the master is gone
            buffered += chunk
            while b"\n" in buffered:
                line, buffered = buffered.split(b"\n", 1)
                if line == b"hand over":
                    handover = program.handover()
                    if handover is None:
                        self._keeper.sendall(b"none\n")
                    else:
                        pid, port, out, err = handover
                        socket.send_fds(self._keeper, [b"%d %d" % (pid, port)], [out, err])
                elif line == b"release":
                    pid = program.proc.pid if program.proc is not None else 0
                    program.release()
                    log.info("wrap handed over name=%s pid=%d", program.name, pid)
                    return


def keep_program(
    program: WrappedProgram, listen_port: int, listener: Any, keeper: KeeperLink | None = None
) -> int:
    """The master's keeper of a wrapped program under ``--workers``: run it, log its output,
    and hand it over when the master upgrades (``keeper``). It serves no client, so it drops
    its copy of the listening socket: once the master and the workers close theirs, the port
    refuses connections instead of queueing them for nobody."""
    listener.close()
    gevent.signal_handler(signal.SIGHUP, reopen_log_files)
    if keeper is not None:
        gevent.spawn(keeper.serve, program)
    return program.keep(listen_port)
