"""Semantics shared by every backend, written once.

The in-memory store calls these functions directly; the Redis Lua scripts in ``_lua.py``
perform the same arithmetic in the same order (both are IEEE doubles), and one contract test
suite runs against both.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import threading
import weakref
from collections.abc import Callable
from typing import Any, Final

from zerotrust.errors import ConfigurationError, MalformedCredentials
from zerotrust.stores.base import RateLimitResult, Revocation, RevocationListener

__all__ = [
    "DEFAULT_PREFIX",
    "DEFAULT_REPLAY_MAX_TTL",
    "EPSILON",
    "MAX_BURST",
    "MAX_KEY_LENGTH",
    "MAX_REFILL_SECONDS",
    "MAX_TIMESTAMP",
    "REPLAY_MIN_TTL",
    "REVOCATION_GRACE",
    "KeySpace",
    "Listeners",
    "OwnedListener",
    "bucket_step",
    "check_rate",
    "cutoff_applies",
    "digest",
    "finite",
    "merge_revocation",
    "replay_deadline",
    "revocation_end",
]

_log = logging.getLogger("zerotrust.stores")

MAX_KEY_LENGTH: Final = 16_384
"""Longest caller-supplied value (characters) accepted as a key; longer ones are refused."""
DEFAULT_REPLAY_MAX_TTL: Final = 86_400.0
REPLAY_MIN_TTL: Final = 1.0
DEFAULT_PREFIX: Final = "zerotrust:"
MAX_TIMESTAMP: Final = 1e11
"""Latest revocation end accepted (about the year 5138): keeps every TTL a sane integer."""
REVOCATION_GRACE: Final = 1_200.0
"""How long a revocation is kept past the end it was given. A token verifier accepts a token
for its leeway (at most 600 s) after ``exp``, on its own clock: a revocation kept until ``exp``
alone would let a revoked token back in for that long, more where replicas' clocks differ."""
MAX_BURST: Final = 1_000_000_000
MAX_REFILL_SECONDS: Final = 1e9
EPSILON: Final = 1e-9
"""Tolerance of the token-bucket comparisons, so float rounding never denies a due token."""

_PREFIX = re.compile(r"[A-Za-z0-9_.:/\-]{1,64}")

# Key families (the tag is hashed into the digest, so families never collide in memory).
TOKEN, SUBJECT, ISSUER, REPLAY, RATE = "t", "s", "i", "r", "l"


def digest(tag: str, *parts: str) -> str:
    """SHA-256 hex of ``parts``, each length-prefixed, so that no two inputs share a key.

    Values come from tokens and callers (attacker-controlled): any character is fine, and the
    length is bounded before hashing.
    """
    sha = hashlib.sha256(tag.encode("ascii"))
    for part in parts:
        if not isinstance(part, str):
            raise TypeError(f"store keys must be str, not {type(part).__name__}")
        if len(part) > MAX_KEY_LENGTH:
            raise MalformedCredentials(f"identifier longer than {MAX_KEY_LENGTH} characters")
        raw = part.encode("utf-8", "surrogatepass")
        sha.update(len(raw).to_bytes(8, "big"))
        sha.update(raw)
    return sha.hexdigest()


class KeySpace:
    """Namespaced, hashed key names: ``<prefix>{rv}:t:<sha256>``, ``<prefix>rp:<sha256>``, ...

    The three revocation families share the ``{rv}`` hash tag so that the single-round-trip
    revocation query touches one Redis Cluster slot.
    """

    __slots__ = ("prefix",)

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
            raise ConfigurationError(
                "prefix must be 1-64 characters from letters, digits and '_.:/-'"
            )
        self.prefix = prefix

    def token(self, jti: str) -> str:
        return f"{self.prefix}{{rv}}:t:{digest(TOKEN, jti)}"

    def subject(self, issuer: str, subject: str) -> str:
        return f"{self.prefix}{{rv}}:s:{digest(SUBJECT, issuer, subject)}"

    def issuer(self, issuer: str) -> str:
        return f"{self.prefix}{{rv}}:i:{digest(ISSUER, issuer)}"

    def replay(self, key: str) -> str:
        return f"{self.prefix}rp:{digest(REPLAY, key)}"

    def rate(self, key: str) -> str:
        return f"{self.prefix}rl:{digest(RATE, key)}"


def finite(name: str, value: float) -> float:
    """``value`` as a float; NaN, infinities and non-numbers are refused (never "forever")."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    try:
        result = float(value)
    except OverflowError:  # an int past a float's range: not a finite number
        raise ValueError(f"{name} must be finite") from None
    if not math.isfinite(result):
        raise ValueError(f"{name} must be finite")
    return result


def revocation_end(name: str, value: float) -> float:
    """When a revocation given the end ``value`` lapses: ``value`` (finite, no later than
    :data:`MAX_TIMESTAMP`) plus :data:`REVOCATION_GRACE`."""
    result = finite(name, value)
    if result > MAX_TIMESTAMP:
        raise ValueError(f"{name} must be a POSIX timestamp in seconds (at most {MAX_TIMESTAMP:g})")
    return result + REVOCATION_GRACE


def check_rate(rate: float, burst: int, cost: int) -> tuple[float, float, int]:
    """Validate token-bucket parameters; ``cost`` must fit in the bucket."""
    rate = finite("rate", rate)
    if rate <= 0:
        raise ValueError("rate must be positive (tokens per second)")
    for name, value in (("burst", burst), ("cost", cost)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int")
    if burst < 1:
        raise ValueError("burst must be at least 1")
    if burst > MAX_BURST:
        raise ValueError(f"burst must be at most {MAX_BURST}")
    if not 1 <= cost <= burst:
        raise ValueError("cost must be between 1 and burst")
    if burst / rate > MAX_REFILL_SECONDS:
        raise ValueError("rate is too low: an empty bucket would take over 30 years to refill")
    return rate, float(burst), cost


def replay_deadline(expires_at: float, now: float, max_ttl: float) -> float:
    """When a replay entry lapses: ``expires_at``, kept within ``[now + 1 s, now + max_ttl]``."""
    return now + min(max(expires_at - now, REPLAY_MIN_TTL), max_ttl)


def merge_revocation(
    current: tuple[float, float | None] | None, until: float, cutoff: float | None
) -> tuple[float, float | None]:
    """Combine a new revocation with a live one for the same key: the later of each bound."""
    if current is None:
        return until, cutoff
    old_until, old_cutoff = current
    if cutoff is not None and old_cutoff is not None:
        cutoff = max(cutoff, old_cutoff)
    return max(until, old_until), cutoff


def cutoff_applies(cutoff: float, issued_at: float | None, *, inclusive: bool) -> bool:
    """Whether a live cut-off revokes a token issued at ``issued_at`` (unknown: fail closed)."""
    if issued_at is None:
        return True
    return issued_at <= cutoff if inclusive else issued_at < cutoff


def bucket_step(
    state: tuple[float, float] | None, now: float, rate: float, burst: float, cost: int
) -> tuple[tuple[float, float], float, RateLimitResult]:
    """One token-bucket decision: the new ``(tokens, ts)``, when it is full again, the result.

    ``state`` is ``None`` for a new (or lapsed, hence full) bucket. A clock that moves back
    refills nothing.
    """
    tokens, ts = (burst, now) if state is None else state
    elapsed = now - ts
    if elapsed > 0:
        tokens = min(burst, tokens + elapsed * rate)
        ts = now
    if tokens + EPSILON >= cost:
        tokens = tokens - cost
        allowed, retry_after = True, 0.0
    else:
        allowed, retry_after = False, (cost - tokens) / rate
    remaining = max(0, math.floor(tokens + EPSILON))
    full_at = ts + (burst - tokens) / rate
    return (tokens, ts), full_at, RateLimitResult(allowed, remaining, retry_after)


class OwnedListener:
    """A revocation listener that lives as long as its ``owner``: it calls
    ``callback(owner, event)`` while the owner lives, and the stores drop it once the owner is
    gone (a Guard built again and again on one long-lived store leaves nothing behind)."""

    __slots__ = ("_callback", "_owner")

    def __init__(self, owner: object, callback: Callable[[Any, Revocation], None]) -> None:
        self._owner = weakref.ref(owner)
        self._callback = callback

    @property
    def alive(self) -> bool:
        return self._owner() is not None

    def __call__(self, event: Revocation) -> None:
        owner = self._owner()
        if owner is not None:
            self._callback(owner, event)


def _alive(callback: RevocationListener) -> bool:
    return not isinstance(callback, OwnedListener) or callback.alive


class Listeners:
    """Revocation listeners of one store object; every listener runs even if one fails."""

    __slots__ = ("_callbacks", "_lock")

    def __init__(self) -> None:
        self._callbacks: tuple[RevocationListener, ...] = ()
        self._lock = threading.Lock()

    def add(self, callback: RevocationListener) -> None:
        if not callable(callback):
            raise TypeError("a revocation listener must be callable")
        with self._lock:
            self._callbacks = (*filter(_alive, self._callbacks), callback)

    def notify(self, event: Revocation) -> None:
        """Call every listener; re-raise the first exception after all ran, log later ones."""
        first: Exception | None = None
        for callback in self._callbacks:
            try:
                callback(event)
            except Exception as exc:  # noqa: PERF203 - one failing hook must not starve others
                if first is None:
                    first = exc
                else:
                    _log.exception("revocation listener %r failed", callback)
        if first is not None:
            raise first
