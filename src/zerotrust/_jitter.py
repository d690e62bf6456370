"""Backoff jitter, drawn from a generator of zerotrust's own.

The :mod:`random` module's shared generator belongs to the application: tests and
simulations seed it to replay a run, and a library drawing from it (from background threads,
at any moment) would change their sequences. Jitter needs no secrecy, only spread.
"""

from __future__ import annotations

import random

__all__ = ["fraction"]

_GENERATOR = random.Random()  # noqa: S311 - backoff jitter, not a secret


def fraction() -> float:
    """A random float in ``[0, 1)``."""
    return _GENERATOR.random()
