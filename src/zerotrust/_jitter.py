"""Backoff jitter, drawn from a generator of zerotrust's own.

The :mod:`random` module's shared generator belongs to the application: tests and
simulations seed it to replay a run, and a library drawing from it (from background threads,
at any moment) would change their sequences. Jitter needs no secrecy, only spread.
"""

from __future__ import annotations

import os
import random

__all__ = ["fraction"]

_GENERATOR = random.Random()  # noqa: S311 - backoff jitter, not a secret

if hasattr(os, "register_at_fork"):
    # a forked worker (gunicorn --preload, multiprocessing) would draw its parent's sequence:
    # every worker would retry in lockstep, what jitter is for avoiding (random reseeds its
    # own generator so, not this one)
    os.register_at_fork(after_in_child=_GENERATOR.seed)


def fraction() -> float:
    """A random float in ``[0, 1)``."""
    return _GENERATOR.random()
