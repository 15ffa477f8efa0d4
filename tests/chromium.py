"""Headless Chromium (Debian's ``chromium``) driven over the Chrome DevTools Protocol with the
``websockets`` client: the browser the browser tests use as their user."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--no-proxy-server",
    "--remote-debugging-port=0",
]
START_TIMEOUT = 30.0  # Chromium's first start on a cold, busy machine
CALL_TIMEOUT = 20.0


class Chromium:
    """One headless Chromium and a DevTools connection to it."""

    def __init__(self, profile: Path, extra_flags: list[str]) -> None:
        profile.mkdir()
        self.profile = profile
        self.stderr = open(profile.parent / "chromium.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *extra_flags, "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.stderr,
        )
        self.ids = 0
        self.targets: dict[str, str] = {}  # DevTools session id -> target (tab) id
        self._stack = contextlib.ExitStack()
        try:
            self.cdp = self._stack.enter_context(
                connect(self._endpoint(), max_size=None, proxy=None, open_timeout=10)
            )
        except BaseException:
            self.close()
            raise

    def _endpoint(self) -> str:
        """Chromium writes its DevTools port and path to DevToolsActivePort once it listens."""
        active = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"chromium exited {self.proc.returncode}:\n{self.log}")
            lines = active.read_text().split() if active.exists() else []
            if len(lines) >= 2:
                return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
            time.sleep(0.05)
        raise AssertionError("chromium did not open its DevTools port:\n" + self.log)

    @property
    def log(self) -> str:
        self.stderr.flush()
        return (self.profile.parent / "chromium.log").read_text(errors="replace")[-4000:]

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Send one DevTools command and wait for its result (events in between are skipped)."""
        self.ids += 1
        message: dict[str, Any] = {"id": self.ids, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        self.cdp.send(json.dumps(message))
        deadline = time.monotonic() + CALL_TIMEOUT
        while True:
            reply = json.loads(self.cdp.recv(timeout=max(deadline - time.monotonic(), 0.01)))
            if reply.get("id") == self.ids:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                return reply["result"]  # type: ignore[no-any-return]

    def open_page(self, url: str) -> str:
        """A new tab showing ``url``, loaded; returns its DevTools session id."""
        target = self.call("Target.createTarget", url=url)["targetId"]
        session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.targets[session] = target
        self.wait_for(
            session, f"location.href === {json.dumps(url)} && document.readyState === 'complete'"
        )
        return session

    def close_page(self, session: str) -> None:
        self.call("Target.closeTarget", targetId=self.targets.pop(session))

    def evaluate(self, session: str, expression: str) -> Any:
        result = self.call(
            "Runtime.evaluate",
            session,
            expression=expression,
            awaitPromise=True,
            returnByValue=True,
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise AssertionError(details.get("exception", {}).get("description") or details)
        return result["result"].get("value")

    def wait_for(self, session: str, condition: str, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while not self.evaluate(session, f"Boolean({condition})"):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {condition}")
            time.sleep(0.05)

    def close(self) -> None:
        if hasattr(self, "cdp"):
            with contextlib.suppress(Exception):  # the browser may already be gone
                self.call("Browser.close")
        self._stack.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()
