"""The token cache behind every outgoing token source (see :mod:`zerotrust.tokens.outgoing`).

:class:`TokenCache` keeps one token per key in a bounded least-recently-used map, schedules
its refresh ahead of ``exp``, shares one minting among concurrent callers (threads, and tasks
of any event loop, through one :class:`concurrent.futures.Future` per key) and falls back to
the current token while a refresh fails. The decisions (:meth:`TokenCache._begin`,
:meth:`TokenCache._settle`) are shared by the sync and async paths; only the call to the
minting function differs. An async minting runs in a task of its own, so the cancellation of
the caller that started it (a deadline around one request) fails no other caller; if its
event loop is closed without cancelling that task, the flight is taken for lost.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Final, Generic, TypeVar

from zerotrust._aio import wait_for
from zerotrust._clock import SYSTEM_CLOCK, Clock
from zerotrust.errors import ConfigurationError, SourceError, ZeroTrustError
from zerotrust.tokens._b64 import B64TOKEN, b64url_decode
from zerotrust.tokens._json import loads_object
from zerotrust.tokens.claims import numeric_date
from zerotrust.tokens.verified import utc_datetime

__all__ = ["MAX_LIFETIME", "MintedToken", "TokenCache", "check_token", "read_unverified", "seconds"]

_log = logging.getLogger("zerotrust.sources")
K = TypeVar("K", bound=Hashable)
_MAX_TOKEN_CHARS: Final = 64 * 1024
#: However long a token claims to live (``expires_in``, or its own ``exp``), it is asked for
#: again within a year: a revoked grant or a rotated client is picked up.
MAX_LIFETIME: Final = 365 * 86400
#: The longest ``wait_timeout``: a day.
_MAX_WAIT: Final = 86400


@dataclass(frozen=True, slots=True)
class MintedToken:
    """A freshly obtained token and, if known, when it expires. The expiry of a JWT is its own
    ``exp`` when that is earlier (or ``expires_at`` is not given)."""

    token: str = field(repr=False)
    expires_at: datetime | None = None


def read_unverified(token: str) -> tuple[Mapping[str, Any], Mapping[str, Any]] | None:
    """The header and claims of a compact JWT, read WITHOUT verifying it (only to judge a
    token this process obtained, never one it received), or ``None`` when it is not one."""
    if len(token) > _MAX_TOKEN_CHARS:
        return None
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        return loads_object(b64url_decode(parts[0])), loads_object(b64url_decode(parts[1]))
    except ValueError:
        return None


def _unverified_exp(token: str) -> datetime | None:
    """The ``exp`` of a JWT, read WITHOUT verifying it: only for scheduling refreshes."""
    read = read_unverified(token)
    return utc_datetime(numeric_date(read[1].get("exp"))) if read is not None else None


def check_token(token: object) -> str:
    """``token`` if it is a non-empty, bounded string of the syntax an ``Authorization``
    header carries it in (RFC 6750 2.1 ``b64token``: header-safe, and what servers accept)."""
    if not isinstance(token, str) or not token or len(token) > _MAX_TOKEN_CHARS:
        raise SourceError("token source produced an empty, oversized or non-string token")
    if not B64TOKEN.fullmatch(token):
        raise SourceError("token source produced a token with invalid characters")
    return token


def seconds(name: str, value: object, minimum: float, maximum: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{name} must be a number of seconds")
    if not math.isfinite(value) or value < minimum:
        raise ConfigurationError(f"{name} must be finite and at least {minimum}")
    if value > maximum:
        raise ConfigurationError(f"{name} must be at most {maximum:g} seconds")
    return float(value)


@dataclass(frozen=True, slots=True)
class _Entry:
    token: str = field(repr=False)
    expires_at: datetime
    refresh_at: datetime
    retry_at: datetime | None = None
    failing: bool = False


_Flight = concurrent.futures.Future  # of str

_caches: weakref.WeakSet[TokenCache[Any]] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for cache in list(_caches):
        cache._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class TokenCache(Generic[K]):
    """Per-key token cache with refresh-ahead and single-flight minting (see module docs)."""

    def __init__(
        self,
        *,
        refresh_before: float | None = None,
        max_entries: int = 256,
        default_lifetime: float = 60,
        retry_interval: float = 5,
        wait_timeout: float = 30,
        clock: Clock | None = None,
    ) -> None:
        self._before = (
            None if refresh_before is None else seconds("refresh_before", refresh_before, 0)
        )
        if type(max_entries) is not int or max_entries < 1:
            raise ConfigurationError("max_entries must be a positive int")
        self._max = max_entries
        # bounded: dates and waits of centuries are out of datetime's and the locks' range
        self._default = seconds("default_lifetime", default_lifetime, 1, MAX_LIFETIME)
        self._retry = seconds("retry_interval", retry_interval, 0, MAX_LIFETIME)
        self._wait = seconds("wait_timeout", wait_timeout, 0.001, _MAX_WAIT)
        self._clock = clock or SYSTEM_CLOCK
        if not callable(getattr(self._clock, "now", None)):
            raise ConfigurationError("clock must have a now() method")
        self._lock = threading.Lock()
        self._entries: OrderedDict[K, _Entry] = OrderedDict()
        # each flight with the generation it began in (clear() starts a new one, and a token
        # minted across it answers its callers but is not kept) and, for an async minting,
        # the event loop its task runs on (closed without cancelling it, the flight is lost)
        self._flights: dict[K, tuple[_Flight[str], int, asyncio.AbstractEventLoop | None]] = {}
        self._generation = 0
        self._tasks: set[asyncio.Future[str]] = set()
        _caches.add(self)

    def _after_fork(self) -> None:
        """In a child forked from this process: the mintings under way were the parent's and
        never settle here (their threads and tasks did not come along), so they are let go,
        with the lock one of them may have held; the child's callers mint for themselves."""
        self._lock = threading.Lock()
        self._flights = {}
        self._tasks = set()

    def get(self, key: K, mint: Callable[[], MintedToken | str]) -> str:
        """The cached token for ``key``, minting one with ``mint`` when needed."""
        token, flight, mine = self._begin(key)
        if flight is None:
            assert token is not None
            return token
        if not mine:
            try:
                return flight.result(timeout=self._wait)
            except concurrent.futures.TimeoutError:
                raise SourceError("timed out waiting for a token refresh") from None
        try:
            minted = mint()
        except BaseException as exc:
            return self._settle(key, flight, None, exc)
        return self._settle(key, flight, minted, None)

    async def get_async(self, key: K, mint: Callable[[], Awaitable[MintedToken | str]]) -> str:
        """Async twin of :meth:`get`."""
        token, flight, mine = self._begin(key, asyncio.get_running_loop())
        if flight is None:
            assert token is not None
            return token
        if not mine:
            try:
                return await wait_for(asyncio.wrap_future(flight), self._wait)
            except asyncio.TimeoutError:
                raise SourceError("timed out waiting for a token refresh") from None
        # The minting runs in a task of its own: a caller cancelled while it runs (a deadline
        # around one request) gets CancelledError, but the minting goes on for the other
        # callers sharing it, bounded by the minting function's own limits.
        task = asyncio.ensure_future(self._mint_async(key, flight, mint))
        self._tasks.add(task)  # the event loop keeps only a weak reference
        task.add_done_callback(self._minted)
        return await asyncio.shield(task)

    def _minted(self, task: asyncio.Future[str]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # its outcome is the flight's: never "never retrieved"

    async def _mint_async(
        self, key: K, flight: _Flight[str], mint: Callable[[], Awaitable[MintedToken | str]]
    ) -> str:
        try:
            minted = await mint()
        except BaseException as exc:  # a failure, or this task cancelled (its loop closing)
            return self._settle(key, flight, None, exc)
        return self._settle(key, flight, minted, None)

    def clear(self) -> None:
        """Forget every cached token (e.g. after a 401 from the audience, or an identity
        withdrawn); a token being minted now is handed to its callers but not kept."""
        with self._lock:
            self._generation += 1
            self._entries.clear()

    def invalidate(self, key: K, *, token: str | None = None) -> None:
        """Forget the cached token of ``key`` (a mint already in flight is left alone); with
        ``token``, only if the cached token is that one (a refusal of a token that was
        already replaced leaves its successor alone)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and (token is None or entry.token == token):
                del self._entries[key]

    def expires_at(self, token: str, where: Callable[[K], bool]) -> datetime | None:
        """When ``token`` expires, if it is the cached token of a key ``where`` accepts (even
        while a failing refresh hands it out until then); ``None`` otherwise."""
        with self._lock:
            for key, entry in self._entries.items():
                if entry.token == token and where(key):
                    return entry.expires_at
        return None

    def invalidate_where(self, predicate: Callable[[K], bool], *, token: str | None = None) -> None:
        """Forget every cached token whose key matches ``predicate``; with ``token``, only
        those that are that token."""
        with self._lock:
            for key in [
                key
                for key, entry in self._entries.items()
                if predicate(key) and (token is None or entry.token == token)
            ]:
                del self._entries[key]

    def _begin(
        self, key: K, loop: asyncio.AbstractEventLoop | None = None
    ) -> tuple[str | None, _Flight[str] | None, bool]:
        """The token to use now, or the flight to wait for (and whether it is the caller's to
        run: ``loop`` is the event loop an async caller would run it on)."""
        now = self._clock.now()
        lost: _Flight[str] | None = None
        with self._lock:
            entry = self._entries.get(key)
            valid = None
            if entry is not None:
                self._entries.move_to_end(key)
                if now < entry.expires_at:
                    valid = entry.token
                    backing_off = entry.retry_at is not None and now < entry.retry_at
                    if now < entry.refresh_at or backing_off:
                        return valid, None, False
            under_way = self._flights.get(key)
            if under_way is not None and under_way[2] is not None:
                flight_loop = under_way[2]
                if not flight_loop.is_running():
                    # The minting task's event loop is not running, so this caller mints:
                    # * closed without cancelling the task (run_until_complete, then close):
                    #   the task never runs again, and its waiters are told at once;
                    # * stopped (a caller cancelled by its deadline under a sync wrapper's
                    #   run_until_complete): the task waits for a run that may never come; it
                    #   still answers its own waiters if the loop runs again.
                    if flight_loop.is_closed():
                        lost = under_way[0]
                    del self._flights[key]
                    under_way = None
            if under_way is not None:
                return (valid, None, False) if valid is not None else (None, under_way[0], False)
            flight: _Flight[str] = concurrent.futures.Future()
            flight.set_running_or_notify_cancel()  # waiters can no longer cancel it
            self._flights[key] = (flight, self._generation, loop)
        if lost is not None:
            self._abandon(lost)
        return valid, flight, True

    def _abandon(self, lost: _Flight[str]) -> None:
        """Fail the callers waiting on a flight whose event loop closed under it, and let its
        task go (the closed loop can never run it: kept here, it would never be freed)."""
        with contextlib.suppress(concurrent.futures.InvalidStateError):
            lost.set_exception(SourceError("token refresh interrupted"))
        for task in list(self._tasks):
            if task.get_loop().is_closed():
                self._tasks.discard(task)

    def _new_entry(self, minted: MintedToken | str, now: datetime) -> _Entry:
        if isinstance(minted, str):
            minted = MintedToken(minted)
        if not isinstance(minted, MintedToken):
            raise SourceError("token source produced something that is not a token")
        token = check_token(minted.token)
        expires = minted.expires_at
        if expires is not None and (
            not isinstance(expires, datetime) or expires.utcoffset() is None
        ):
            raise SourceError("token source produced an expiry that is not an aware datetime")
        # a JWT is refused past its own exp, whatever expires_in said: the earlier one counts
        exp = _unverified_exp(token)
        if exp is not None and (expires is None or exp < expires):
            expires = exp
        if expires is None:
            expires = now + timedelta(seconds=self._default)
        lifetime = (expires - now).total_seconds()
        if lifetime <= 0:
            raise SourceError("token source produced an expired token")
        if lifetime > MAX_LIFETIME:
            expires, lifetime = now + timedelta(seconds=MAX_LIFETIME), MAX_LIFETIME
        before = self._before if self._before is not None else max(5.0, 0.2 * lifetime)
        return _Entry(token, expires, expires - timedelta(seconds=min(before, lifetime / 2)))

    def _settle(
        self,
        key: K,
        flight: _Flight[str],
        minted: MintedToken | str | None,
        error: BaseException | None,
    ) -> str:
        now = self._clock.now()
        entry = None
        if error is None:
            try:
                entry = self._new_entry(minted, now)  # type: ignore[arg-type]
            except ZeroTrustError as exc:
                error = exc
            except Exception:  # whatever the result was, the flight must still be settled
                error = SourceError("token source produced an unusable token")
        with self._lock:
            under_way = self._flights.get(key)
            kept = under_way is not None and under_way[0] is flight
            if kept:
                del self._flights[key]
                kept = under_way is not None and under_way[1] == self._generation
            result: str | None
            if entry is None:
                result = self._fallback(key, error, now)
            elif not kept:  # the cache was cleared while it was minted: answered, not kept
                result = entry.token
            else:
                self._entries[key] = entry
                self._entries.move_to_end(key)
                while len(self._entries) > self._max:
                    self._entries.popitem(last=False)
                result = entry.token
        if result is not None:
            with contextlib.suppress(concurrent.futures.InvalidStateError):  # failed as lost
                flight.set_result(result)
            return result
        assert error is not None
        shared = error if isinstance(error, Exception) else SourceError("token refresh interrupted")
        with contextlib.suppress(concurrent.futures.InvalidStateError):  # failed as lost
            flight.set_exception(shared)
        raise error

    def _fallback(self, key: K, error: BaseException | None, now: datetime) -> str | None:
        old = self._entries.get(key)
        # any failure of the minting function, but never an interruption (KeyboardInterrupt,
        # a cancelled task): the current token is used while it is valid
        if not isinstance(error, Exception) or old is None or now >= old.expires_at:
            return None
        if not old.failing:
            # a zerotrust error is safe to show; another one's text may hold anything
            reason = f"[{error.code}] {error}" if isinstance(error, ZeroTrustError) else ""
            _log.warning(
                "token refresh failed: %s%s; using the current token until %s",
                type(error).__name__ if not reason else "",
                reason,
                f"{old.expires_at:%Y-%m-%dT%H:%M:%SZ}",
            )
        retry_at = now + timedelta(seconds=self._retry)
        self._entries[key] = replace(old, retry_at=retry_at, failing=True)
        return old.token
