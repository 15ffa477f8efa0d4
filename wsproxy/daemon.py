"""Detaching from the terminal, and the pid file.

:func:`wsproxy.cli.run` uses this module in an order that is the point of it: everything that can
fail is done in the foreground (settings checked, listener bound, log opened, pid file claimed),
only then :func:`detach`, then :meth:`PidFile.commit`. The foreground process waits until the
daemon reports that it serves (or why it could not), so its exit status and message on the terminal
tell whether the start worked.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import sys
import tempfile
import time
from typing import NoReturn

import gevent

from wsproxy.errors import StartupError

__all__ = ["DAEMON_UMASK", "READY_TIMEOUT", "PidFile", "Readiness", "detach"]

log = logging.getLogger(__name__)

DAEMON_UMASK = 0o022
PID_FILE_MODE = 0o644
READY_TIMEOUT = 30.0  # seconds the foreground waits for the daemon to report
READY_WORD = b"ready\n"
MAX_REPORT_BYTES = 4096  # a failure report is one line
STARTUP_FAILED = 1  # exit status of the foreground when the daemon could not start (StartupError)


class Readiness:
    """The daemon's end of the pipe the foreground process waits on. Report exactly once."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def ready(self) -> None:
        """Serving: the foreground process exits 0."""
        self._send(READY_WORD)

    def failed(self, message: str) -> None:
        """Start-up failed after detaching: the foreground prints ``message`` and exits 1."""
        self._send(message.replace("\n", " ").encode("utf-8", "replace")[:MAX_REPORT_BYTES] + b"\n")

    def _send(self, data: bytes) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):  # the foreground gave up waiting: nobody to tell
            os.write(self._fd, data)
        os.close(self._fd)
        self._fd = None


def detach(*, ready_timeout: float = READY_TIMEOUT) -> Readiness:
    """Become a daemon: double fork, ``setsid``, ``umask``, ``chdir("/")``, stdio on /dev/null.

    Returns only in the daemon, with the :class:`Readiness` to report through. The original
    process waits for that report and exits with 0 (ready) or 1 (failed, message on stderr); it
    never returns. Paths must have been made absolute first (:func:`wsproxy.paths.absolute_paths`).
    """
    read_end, write_end = os.pipe()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    first = os.fork()
    if first:
        os.close(write_end)
        _wait_for_report(read_end, first, ready_timeout)
    os.close(read_end)
    os.setsid()  # a new session: no controlling terminal, no SIGHUP when it closes
    if os.fork():
        os._exit(0)  # not a session leader, so the daemon can never reacquire a terminal
    os.umask(DAEMON_UMASK)
    os.chdir("/")
    _stdio_to_devnull()
    gevent.reinit()
    return Readiness(write_end)


def _wait_for_report(read_end: int, child: int, timeout: float) -> NoReturn:
    os.waitpid(child, 0)  # the intermediate child exits at once
    report = b""
    deadline = time.monotonic() + timeout
    while not report.endswith(b"\n") and len(report) < MAX_REPORT_BYTES:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([read_end], [], [], remaining)[0]:
            report = b"the daemon did not report within %d s; see its log\n" % timeout
            break
        chunk = os.read(read_end, MAX_REPORT_BYTES)
        if not chunk:
            report = report or b"the daemon exited during start-up; see its log\n"
            break
        report += chunk
    if report == READY_WORD:
        os._exit(0)
    os.write(2, b"wsproxy: " + report.rstrip(b"\n") + b"\n")
    os._exit(STARTUP_FAILED)


def _stdio_to_devnull() -> None:
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    if null > 2:
        os.close(null)


class PidFile:
    """The pid file: claimed in the foreground, written after detaching, removed on exit.

    ``claim()`` refuses a file naming a running wsproxy (StartupError) and creates the temporary
    file the pid will be written to, so an unwritable directory fails in the foreground too.
    ``commit()`` writes this process's pid and renames the file into place (atomic: readers never
    see a half-written file). ``remove()`` deletes it only if it still names this process.
    """

    def __init__(self, path: str, *, replacing: int | None = None) -> None:
        self.path = path
        self.replacing = replacing  # an upgrade: the old process whose pid file this becomes
        self.pid: int | None = None
        self._temp: tuple[int, str] | None = None

    def claim(self) -> None:
        other = read_pid(self.path)
        mine = (os.getpid(), self.replacing)
        if other is not None and other not in mine and _is_running_wsproxy(other):
            raise StartupError(
                f"pid file {self.path} names a running wsproxy (pid {other}); stop it first"
            )
        if other is not None and other != self.replacing:
            log.info("replacing stale pid file path=%s pid=%d", self.path, other)
        try:
            self._temp = tempfile.mkstemp(
                prefix=".wsproxy-", suffix=".pid", dir=os.path.dirname(self.path) or "."
            )
        except OSError as exc:
            raise self._cannot_write(exc) from None

    def commit(self) -> None:
        assert self._temp is not None, "claim() first"
        fd, temp = self._temp
        self._temp = None
        pid = os.getpid()
        try:
            os.write(fd, b"%d\n" % pid)
            os.fchmod(fd, PID_FILE_MODE)
            os.close(fd)
            os.replace(temp, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise self._cannot_write(exc) from None
        self.pid = pid

    def _cannot_write(self, exc: OSError) -> StartupError:
        return StartupError(f"cannot write pid file {self.path}: {exc.strerror or exc}")

    def remove(self) -> None:
        if self._temp is not None:  # claimed, never committed
            fd, temp = self._temp
            self._temp = None
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(temp)
        if self.pid is not None and self.pid == os.getpid() and read_pid(self.path) == self.pid:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            self.pid = None


def read_pid(path: str) -> int | None:
    """The pid a pid file names, or None (no file, or not a pid)."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            text = f.read(64)
    except OSError:
        return None
    try:
        pid = int(text.strip())
    except ValueError:
        return None
    return pid if pid > 0 else None


def _is_running_wsproxy(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's: look at what it is
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except FileNotFoundError:
        return not os.path.isdir("/proc")  # no procfs: assume the live process is ours
    except OSError as exc:
        return exc.errno != errno.ESRCH
    # "wsproxy ...", "python3 /usr/bin/wsproxy ...", "python -m wsproxy ...". Anything else
    # means the pid was reused by another program (a zombie's cmdline is empty): stale.
    return any(os.path.basename(arg) == b"wsproxy" for arg in cmdline.split(b"\0")[:3])
