"""The timing rules of a remote key source and its health report, without I/O."""

from __future__ import annotations

import email.utils
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

from zerotrust.errors import ConfigurationError

__all__ = ["CachePolicy", "KeySourceStatus", "cache_ttl"]


@dataclass(frozen=True, slots=True)
class KeySourceStatus:
    """Health of a remote key source, for readiness probes and dashboards.

    ``last_error`` is a short reason (never a response body); ``stale`` is true while the
    source serves a set past its expiry: a background refresh is under way or has failed.
    """

    url: str
    last_success: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    key_ids: tuple[str, ...]
    expires_at: datetime | None
    fetch_count: int
    stale: bool


#: The longest time a policy may name: a century. Any more and the dates it is added to would
#: pass the year 9999, which no datetime holds.
_MAX_SECONDS = 100 * 365 * 86400


def _seconds(name: str, value: object, *, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{name} must be a number of seconds")
    if not math.isfinite(value) or value < minimum:
        raise ConfigurationError(f"{name} must be finite and at least {minimum}")
    if value > _MAX_SECONDS:
        raise ConfigurationError(f"{name} must be at most {_MAX_SECONDS} seconds (100 years)")
    return float(value)


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """The timing rules of a remote key source (all in seconds)."""

    min_ttl: float
    max_ttl: float
    default_ttl: float
    refresh_ahead: float
    max_stale: float
    unknown_kid_cooldown: float
    negative_cache_ttl: float
    retry_interval: float

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            _seconds(name, getattr(self, name))
        if not 0 < self.min_ttl <= self.max_ttl:
            raise ConfigurationError("need 0 < min_ttl <= max_ttl")
        if not 0 <= self.refresh_ahead < 1:
            raise ConfigurationError("refresh_ahead is a fraction of the TTL: 0 <= x < 1")

    def clamp(self, ttl: float) -> float:
        return min(max(ttl, self.min_ttl), self.max_ttl)


def cache_ttl(headers: Mapping[str, str], now: datetime, policy: CachePolicy) -> float:
    """How long a response may be cached: ``Cache-Control`` (``max-age`` minus ``Age``), else
    ``Expires`` (relative to ``Date``), else ``default_ttl``; ``no-store``/``no-cache``,
    unreadable expiry and a directive given twice with different values (RFC 9111 4.2.1: the
    response is then stale) mean ``min_ttl``; a ``max-age`` or ``Age`` too large to hold is
    taken as 2147483648 seconds (RFC 9111 1.2.2); always clamped to ``[min_ttl, max_ttl]``.
    """
    try:
        return _cache_ttl(headers, now, policy)
    except (ArithmeticError, ValueError, TypeError, IndexError):  # dates no calendar holds
        return policy.min_ttl


def _cache_ttl(headers: Mapping[str, str], now: datetime, policy: CachePolicy) -> float:
    control = headers.get("cache-control")
    if control is not None:
        directives: dict[str, str] = {}
        for part in control.split(","):
            name, _, value = part.strip().partition("=")
            name, value = name.strip().lower(), value.strip().strip('"')
            if directives.setdefault(name, value) != value:
                return policy.min_ttl  # max-age=60, max-age=31536000: which one? stale
        if "no-store" in directives or "no-cache" in directives:
            return policy.min_ttl
        max_age = directives.get("max-age")
        if max_age is not None:
            seconds = _delta_seconds(max_age)
            if seconds is None:
                return policy.min_ttl
            used = _delta_seconds(headers.get("age", "0").strip()) or 0
            return policy.clamp(seconds - used)
    expires = headers.get("expires")
    if expires is not None:
        when = _http_date(expires)
        if when is None:
            return policy.min_ttl
        base = _http_date(headers.get("date", "")) or now
        return policy.clamp((when - base).total_seconds())
    return policy.clamp(policy.default_ttl)


_DELTA_SECONDS_MAX = 2147483648


def _delta_seconds(value: str) -> int | None:
    """RFC 9111 1.2.2 delta-seconds: digits only (else ``None``); a value too large to hold is
    taken as 2147483648 (2^31), so "cache for ever" is clamped to ``max_ttl``, not refused."""
    if not (value.isascii() and value.isdigit()):
        return None
    digits = value.lstrip("0")
    if len(digits) > 10:  # past 2^31 whatever the digits; int() of a long string costs
        return _DELTA_SECONDS_MAX
    return min(int(digits or "0"), _DELTA_SECONDS_MAX)


def _http_date(value: str) -> datetime | None:
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):  # a year of 20 digits
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)
