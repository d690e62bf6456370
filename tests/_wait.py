"""Bounded polling for what another thread brings about (no timed assertions)."""

from __future__ import annotations

import time
from collections.abc import Callable


def eventually(predicate: Callable[[], object], timeout: float = 30.0) -> None:
    """Bounded polling until ``predicate()`` is true (updates arrive on another thread)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)
