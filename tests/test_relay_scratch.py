"""Concurrent sessions share one read buffer (relay.py): none may see another's bytes."""

from __future__ import annotations

import os
import random
import threading

from websockets.sync.client import connect


def test_concurrent_sessions_each_get_their_own_bytes_back(proxy) -> None:
    failures: list[str] = []

    def client(seed: int) -> None:
        rng = random.Random(seed)
        try:
            with connect(proxy.url, max_size=None, open_timeout=10, close_timeout=5) as ws:
                for _ in range(10):
                    data = os.urandom(rng.choice([1, 100, 5000, 70000, 300000]))
                    ws.send(data)
                    got = b""
                    while len(got) < len(data):
                        got += ws.recv(timeout=10)
                    if got != data:
                        failures.append(f"client {seed}: echo differs")
                        return
        except Exception as exc:
            failures.append(f"client {seed}: {exc!r}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=50)
    assert not failures
