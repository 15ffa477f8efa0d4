"""SIGHUP: re-read the configuration the process was started with, and say what changed.

A reload reads the ``-c`` file again and merges it with the original command line, exactly as at
start-up, with relative paths against the directory wsproxy was started from (a daemon has left
it for ``/``), and builds what the files name (plug-ins, TLS context) in a thread, off the hub.
What comes out is compared with the settings in force, row by row of the one table:

- a row marked ``restart`` (listen address, workers, daemon, wrapped program, plug-in classes...)
  that changed keeps its running value, and the log says it needs a restart;
- every other change is applied by the server to new sessions (open ones keep theirs);
- a secret row's value is never written, only its name.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from gevent.lock import Semaphore

from wsproxy.errors import ConfigError
from wsproxy.logs import reopen_log_files
from wsproxy.offhub import OffHub, TimedOut
from wsproxy.settings import SETTINGS, SETTINGS_BY_NAME, Settings, format_value

if TYPE_CHECKING:
    from wsproxy.rebuild import Rebuilt
    from wsproxy.server import WSProxy

__all__ = ["ConfigReader", "Reconciled", "reconcile", "reload_server", "reload_tokens"]

log = logging.getLogger(__name__)

BUILD_THREADS = 1  # builds at once: reloads take turns, and one that is stuck holds only this one
T = TypeVar("T")


@dataclass(frozen=True)
class Reconciled:
    """The settings to apply, and what a log line says about them."""

    settings: Settings
    changed: tuple[str, ...]  # names of the rows whose new value is applied
    needs_restart: tuple[str, ...]  # names of the rows that changed but keep their old value

    def describe(self) -> str:
        """``origins='a b' key_password=(hidden)``, or ``none`` (files named may still be new)."""
        if not self.changed:
            return "none"
        parts = []
        for name in self.changed:
            row = SETTINGS_BY_NAME[name]
            shown = "(hidden)" if row.secret else repr(format_value(getattr(self.settings, name)))
            parts.append(f"{name}={shown}")
        return " ".join(parts)


def reconcile(current: Settings, new: Settings) -> Reconciled:
    """Keep ``current``'s value of every changed restart-only row; list what changed."""
    changed: list[str] = []
    kept: list[str] = []
    for row in SETTINGS:
        if getattr(current, row.name) == getattr(new, row.name):
            continue
        (kept if row.restart else changed).append(row.name)
    settings = new.replace(**{name: getattr(current, name) for name in kept}) if kept else new
    return Reconciled(settings, tuple(changed), tuple(kept))


@dataclass
class Progress:
    """What a build in its thread is doing, for the log line when it does not finish in time."""

    step: str = "reading the configuration"
    done: bool = True
    pid: int = field(default_factory=os.getpid)  # a worker forked meanwhile has no such thread

    def at(self, step: str) -> None:
        self.step = step


class ConfigReader:
    """Reads the configuration again as the process first read it, and builds what it names
    off the hub.

    Args:
        load: (argv, base) -> Settings with absolute paths, relative ones against ``base`` (the
            command line's own parser); raises ConfigError.
        argv: the command line the process was started with.
        cwd: the directory it was started in: relative paths (``-c wsproxy.ini``, a relative
            ``cert``) mean what they meant then. They are joined to it, the process's directory
            is never changed: other greenlets and the build's thread would see it change.
    """

    def __init__(
        self, load: Callable[[Sequence[str], str], Settings], argv: Sequence[str], cwd: str
    ) -> None:
        self.load = load
        self.argv = tuple(argv)
        self.cwd = cwd
        self.pool = OffHub(BUILD_THREADS)
        self.turn = Semaphore()  # one reload at a time: a SIGHUP during one waits for it
        self._last = Progress()

    def read(self) -> Settings:
        """The settings as at start (blocking: the ``-c`` file is read); raises ConfigError."""
        return self.load(self.argv, self.cwd)

    def build(self, server: WSProxy) -> tuple[Reconciled, Rebuilt]:
        """Read the configuration and build what the next sessions use, in a thread, each step
        within ``connect_timeout`` (the running one for reading, the new one for building), as
        a token plug-in's ``reload()`` is. Raises ConfigError; a step that did not finish in
        time keeps its thread, and reloads are refused until it returns."""
        if not self._last.done and self._last.pid == os.getpid():
            raise ConfigError(
                f"{self._last.step}, from an earlier reload, has not finished yet",
                source="SIGHUP",
                expected="the earlier build to finish first",
            )
        progress = self._last = Progress()
        plan = self._off_hub(
            progress, server.settings.connect_timeout, self._reconcile, server.settings
        )
        timeout = plan.settings.connect_timeout
        rebuilt = self._off_hub(progress, timeout, server.prepare, plan.settings, progress.at)
        return plan, rebuilt

    def _reconcile(self, current: Settings) -> Reconciled:
        return reconcile(current, self.read())

    def _off_hub(self, progress: Progress, timeout: float, func: Callable[..., T], *args: Any) -> T:
        progress.done = False
        try:
            return self.pool.call(timeout, _tracked, progress, func, *args)
        except TimedOut:
            raise ConfigError(
                f"{progress.step} did not finish within {timeout:g} s",
                source="SIGHUP",
                key="connect_timeout",
                expected="a reload built within connect_timeout",
            ) from None


def _tracked(progress: Progress, func: Callable[..., T], *args: Any) -> T:
    """In the build's thread: ``func(*args)``, then say it is done (also after timing out)."""
    try:
        return func(*args)
    finally:
        progress.done = True


def reload_server(server: WSProxy, reader: ConfigReader, *, announce: bool = True) -> bool:
    """SIGHUP in a serving process (or a master checking before it passes the signal on):
    reopen the log files, re-read the configuration and switch ``server`` to it.

    The configuration is read and built in a thread, so that sessions go on relaying meanwhile;
    the switch is made here, on the hub, once everything is built. A bad configuration, or one
    whose build did not finish within ``connect_timeout``, is logged in one line (file or step,
    key, expected form) and changes nothing. ``announce``: also log the restart-only rows that
    changed (a master does, for its workers). Returns whether the new configuration is in force.
    """
    reopen_log_files()
    with reader.turn:
        try:
            plan, rebuilt = reader.build(server)
        except ConfigError as exc:
            log.error("reload failed, still serving with the previous configuration: %s", exc)
            return False
        server.switch(rebuilt)
    if announce:
        for name in plan.needs_restart:
            log.warning("reload: %s changed, which needs a restart; keeping the old value", name)
    log.info("reloaded targets=%s changed=%s", server.targets.describe(), plan.describe())
    return True


def reload_tokens(server: WSProxy) -> None:
    """SIGHUP without a configuration to re-read (a library server): the token source only."""
    try:
        server.reload()
    except ConfigError as exc:
        log.error("reload failed, keeping the previous tokens: %s", exc)
