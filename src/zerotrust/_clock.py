"""Injectable clocks: every time-dependent check takes one, tests use :class:`FixedClock`."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from typing import Protocol, runtime_checkable

__all__ = ["SYSTEM_CLOCK", "Clock", "FixedClock", "SystemClock", "to_utc"]


@runtime_checkable
class Clock(Protocol):
    """Anything with ``now()`` returning an aware UTC :class:`~datetime.datetime`."""

    def now(self) -> datetime:
        """The current time, as an aware UTC datetime."""
        ...


class SystemClock:
    """The wall clock, in UTC."""

    __slots__ = ()

    def now(self) -> datetime:
        """The current wall-clock time, as an aware UTC datetime."""
        return datetime.now(timezone.utc)

    def __repr__(self) -> str:
        return "SystemClock()"


SYSTEM_CLOCK = SystemClock()


class FixedClock:
    """A clock that only moves when told to: for tests and reproducible verification."""

    __slots__ = ("_lock", "_now")

    def __init__(self, now: datetime | None = None) -> None:
        self._now = to_utc(now) if now is not None else SYSTEM_CLOCK.now()
        self._lock = threading.Lock()

    def now(self) -> datetime:
        """The time this clock was set to (construction, :meth:`set` or :meth:`advance`), in UTC."""
        return self._now

    def set(self, now: datetime) -> None:
        """Move the clock to ``now`` (forward or back); a naive ``now`` is taken to be UTC."""
        with self._lock:
            self._now = to_utc(now)

    def advance(self, seconds: float = 0, **delta: float) -> datetime:
        """Move forward by ``seconds`` (and/or ``timedelta`` keywords); returns the new time."""
        with self._lock:
            self._now = self._now + timedelta(seconds=seconds, **delta)
            return self._now

    def __repr__(self) -> str:
        return f"FixedClock({self._now.isoformat()})"


def to_utc(value: datetime) -> datetime:
    """Return ``value`` as an aware UTC datetime; naive values are taken to be UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)
