"""Shared state for scale-out: revocation, replay cache and rate limits.

:class:`MemoryStore` is the default for one process; :class:`RedisStore` shares the state
between replicas (``pip install 'zerotrust[redis]'``; redis-py is imported only when a
:class:`RedisStore` is built). :class:`ResilientStore` sets what each feature does while the
store is unavailable. Both stores implement :class:`Store` and pass the same contract tests.
"""

from zerotrust.stores._logic import MAX_KEY_LENGTH, REVOCATION_GRACE
from zerotrust.stores.base import (
    FailurePolicy,
    RateLimiter,
    RateLimitResult,
    ReplayCache,
    Revocation,
    RevocationListener,
    RevocationStore,
    Store,
    StoreHealth,
)
from zerotrust.stores.memory import MemoryStore
from zerotrust.stores.redis import RedisStore
from zerotrust.stores.resilient import ResilientStore

__all__ = [
    "MAX_KEY_LENGTH",
    "REVOCATION_GRACE",
    "FailurePolicy",
    "MemoryStore",
    "RateLimitResult",
    "RateLimiter",
    "RedisStore",
    "ReplayCache",
    "ResilientStore",
    "Revocation",
    "RevocationListener",
    "RevocationStore",
    "Store",
    "StoreHealth",
]
