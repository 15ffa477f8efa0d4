"""A wrapped program handed over by an upgrade (SIGUSR2, :mod:`wsproxy.upgrade`).

The program was started by the process we upgraded from, so it is not our child: Linux lets
only a parent wait for a process and read its exit status. We watch it through a pidfd (readable
once it has exited), read its output from the pipes handed over with it, and signal its process
group as for a program of our own. Its exit status stays unknown: :data:`UNKNOWN_STATUS` stands
for it.
"""

from __future__ import annotations

import os
from typing import Any

import gevent.socket
from gevent.fileobject import FileObjectPosix

__all__ = ["UNKNOWN_STATUS", "AdoptedProcess"]

UNKNOWN_STATUS = 1  # an adopted program's exit reads as a failure: its real status is not ours


class AdoptedProcess:
    """The part of ``Popen`` the wrapped program's keeper uses: ``pid``, the output streams,
    ``wait()``.

    Raises:
        ProcessLookupError: the program has exited already.
    """

    def __init__(self, pid: int, stdout_fd: int, stderr_fd: int) -> None:
        self.pid = pid
        self._pidfd = os.pidfd_open(pid)
        self.stdout: Any = FileObjectPosix(stdout_fd, "rb")
        self.stderr: Any = FileObjectPosix(stderr_fd, "rb")

    def wait(self) -> int:
        """Return once the program has exited, with :data:`UNKNOWN_STATUS`."""
        gevent.socket.wait_read(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = -1
        return UNKNOWN_STATUS
