"""Shared pieces of the fault-injection tests: a bounded load runner and real servers.

Every load loop here is bounded twice, by a count and by a wall-clock budget, and stops by
itself; no assertion depends on how fast anything ran.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.stores.conftest import RedisServer, start_redis_server

BUDGET = 15.0  # seconds: the most any one load phase may take on a loaded machine


@dataclass
class Load:
    """``workers`` threads calling ``work(worker_index)`` until stopped (or a bound is hit).

    ``work`` returns a label (e.g. ``"ok"`` or ``"503"``) that is counted; any exception is
    recorded in :attr:`errors` and stops that worker.
    """

    work: Callable[[int], str]
    workers: int = 4
    max_calls: int = 100_000
    counts: Counter[str] = field(default_factory=Counter)
    errors: list[BaseException] = field(default_factory=list)
    calls: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(self.workers)
        ]

    def _run(self, index: int) -> None:
        deadline = time.monotonic() + 2 * BUDGET
        while not self._stop.is_set() and time.monotonic() < deadline:
            with self._lock:
                if self.calls >= self.max_calls:
                    return
                self.calls += 1
            try:
                label = self.work(index)
            except BaseException as exc:  # reported by the test
                with self._lock:
                    self.errors.append(exc)
                return
            with self._lock:
                self.counts[label] += 1

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(2 * BUDGET)
        assert not any(t.is_alive() for t in self._threads), "a load worker did not stop"

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.counts)

    def wait_for(self, predicate: Callable[[Counter[str]], bool], what: str) -> None:
        """Bounded polling until ``predicate(counts)`` holds (or a worker failed)."""
        deadline = time.monotonic() + BUDGET
        while True:
            counts = self.snapshot()
            if self.errors:
                raise AssertionError(f"load worker failed: {self.errors[0]!r}") from self.errors[0]
            if predicate(counts):
                return
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {counts}"
            time.sleep(0.005)

    def wait_more(self, label: str, more: int) -> None:
        """Wait until ``more`` further calls were counted under ``label``."""
        target = self.snapshot()[label] + more
        self.wait_for(lambda counts: counts[label] >= target, f"{more} more {label!r}")


def poll(predicate: Callable[[], Any], what: str, timeout: float = BUDGET) -> Any:
    """Bounded polling for readiness."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A redis-server of this test only (it gets stopped and restarted)."""
    with tempfile.TemporaryDirectory() as workdir:
        server = start_redis_server(Path(workdir))
        try:
            yield server
        finally:
            server.stop()
