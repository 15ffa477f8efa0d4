"""Restart back-off and exit statuses shared by the wrapped program's keeper and the master."""

from __future__ import annotations

import signal

from wsproxy import workers, wrap
from wsproxy.children import Backoff, status_of


def test_backoff_doubles_to_the_cap_and_resets_after_a_healthy_run() -> None:
    backoff = Backoff(first=0.1, cap=1.0, healthy=10)
    assert [backoff.after_run(0.5) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert backoff.after_run(10) == 0.1
    assert backoff.after_run(0) == 0.2


def test_master_and_wrap_use_the_shared_backoff() -> None:
    arbiter = workers.Arbiter(1, lambda: 0)
    delays = [arbiter._backoff.after_run(0.0) for _ in range(12)]
    assert delays[:4] == [workers.RESPAWN_BACKOFF_MIN * 2**i for i in range(4)]
    assert delays[-1] == workers.RESPAWN_BACKOFF_MAX
    assert arbiter._backoff.after_run(workers.WORKER_STABLE_SECS) == workers.RESPAWN_BACKOFF_MIN
    assert wrap.Backoff is Backoff


def test_status_of_maps_signal_death_to_128_plus_signo() -> None:
    assert status_of(0) == 0
    assert status_of(7) == 7
    assert status_of(-signal.SIGKILL) == 137
