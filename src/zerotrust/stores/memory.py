"""The in-memory store: the zero-infrastructure default for one process.

Thread-safe (one lock per feature) and bounded (a maximum number of entries per feature).
When a table is full, expired entries go first. Then:

* rate limits evict the buckets that fill up soonest (a bucket evicted early starts full
  again);
* replay entries and revocations are never evicted early: that would let a proof be used
  again, or silently un-revoke a token. A new entry that does not fit raises
  :class:`~zerotrust.errors.StoreUnavailable` (fail closed: the Guard answers 503, and a
  revocation's caller learns that it was *not* recorded). Queries keep working.

The async methods run the same code directly: there is no I/O to wait for.
"""

from __future__ import annotations

from zerotrust._clock import SYSTEM_CLOCK, Clock
from zerotrust.errors import ConfigurationError
from zerotrust.stores._logic import (
    DEFAULT_REPLAY_MAX_TTL,
    ISSUER,
    MAX_KEY_LENGTH,
    RATE,
    REPLAY,
    SUBJECT,
    TOKEN,
    Listeners,
    bucket_step,
    check_rate,
    cutoff_applies,
    digest,
    finite,
    merge_revocation,
    replay_deadline,
    revocation_end,
)
from zerotrust.stores._table import ExpiringTable
from zerotrust.stores.base import (
    RateLimitResult,
    Revocation,
    RevocationListener,
    StoreHealth,
)

__all__ = ["MemoryStore"]

DEFAULT_MAX_ENTRIES = 100_000


def _positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{name} must be a positive int")
    return value


class MemoryStore:
    """Revocations, replay cache and rate limits in this process's memory.

    ``clock`` supplies "now" (tests pass a :class:`~zerotrust.FixedClock`). ``replay_max_ttl``
    caps how long a replay entry is kept, whatever ``expires_at`` the caller passes: set it at
    least to the longest lifetime (plus leeway) of the credentials you check for replay.
    """

    __slots__ = ("_clock", "_listeners", "_rates", "_replay", "_replay_max_ttl", "_revocations")

    def __init__(
        self,
        *,
        clock: Clock = SYSTEM_CLOCK,
        max_revocations: int = DEFAULT_MAX_ENTRIES,
        max_replay_entries: int = DEFAULT_MAX_ENTRIES,
        max_rate_limit_keys: int = DEFAULT_MAX_ENTRIES,
        replay_max_ttl: float = DEFAULT_REPLAY_MAX_TTL,
    ) -> None:
        self._clock = clock
        self._revocations: ExpiringTable[float | None] = ExpiringTable(
            _positive("max_revocations", max_revocations), evict_live=False, name="revocation"
        )
        self._replay: ExpiringTable[None] = ExpiringTable(
            _positive("max_replay_entries", max_replay_entries), evict_live=False, name="replay"
        )
        self._rates: ExpiringTable[tuple[float, float]] = ExpiringTable(
            _positive("max_rate_limit_keys", max_rate_limit_keys), evict_live=True, name="rate"
        )
        try:
            self._replay_max_ttl = finite("replay_max_ttl", replay_max_ttl)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(str(exc)) from None
        if self._replay_max_ttl < 1:
            raise ConfigurationError("replay_max_ttl must be at least 1 second")
        self._listeners = Listeners()

    def __repr__(self) -> str:
        return (
            f"MemoryStore(revocations={len(self._revocations)}, replay={len(self._replay)}, "
            f"rate_limits={len(self._rates)})"
        )

    def _now(self) -> float:
        return self._clock.now().timestamp()

    # --- revocation -----------------------------------------------------------------------

    def _revoke(self, key: str, until: float, cutoff: float | None) -> None:
        table = self._revocations
        with table.lock:
            now = self._now()
            if until <= now:
                return  # lapsed already: nothing left to revoke
            entry = table.get(key, now)
            until, cutoff = merge_revocation(entry, until, cutoff)
            table.put(key, cutoff, until, now)

    def revoke_token(self, jti: str, *, expires_at: float) -> None:
        """Revoke the token with this ``jti`` until ``expires_at`` (its ``exp``), plus
        :data:`~zerotrust.stores.REVOCATION_GRACE`."""
        until = revocation_end("expires_at", expires_at)
        self._revoke(digest(TOKEN, jti), until, None)
        self._listeners.notify(Revocation("token", until, jti=jti))

    def revoke_subject(self, subject: str, *, issuer: str, until: float) -> None:
        """Revoke every token of ``subject`` from ``issuer`` issued up to now, until ``until``."""
        until = revocation_end("until", until)
        now = self._now()
        self._revoke(digest(SUBJECT, issuer, subject), until, now)
        self._listeners.notify(
            Revocation("subject", until, subject=subject, issuer=issuer, cutoff=now)
        )

    def revoke_issued_before(self, issuer: str, *, before: float, until: float) -> None:
        """Revoke every token from ``issuer`` with ``iat < before``, until ``until``."""
        before, until = finite("before", before), revocation_end("until", until)
        self._revoke(digest(ISSUER, issuer), until, before)
        self._listeners.notify(Revocation("issuer", until, issuer=issuer, cutoff=before))

    @property
    def has_revocations(self) -> bool:
        """Whether any revocation is held (lapsed ones count until they are swept)."""
        return bool(len(self._revocations))

    def is_revoked(
        self, *, jti: str | None, subject: str | None, issuer: str, issued_at: float | None
    ) -> bool:
        """Whether the token, its subject or its issuer's cut-off revokes it."""
        iat = None if issued_at is None else finite("issued_at", issued_at)
        if not len(self._revocations):  # nothing is revoked: validate cheaply, hash nothing
            for part in (jti, subject, issuer):
                if part is not None and (type(part) is not str or len(part) > MAX_KEY_LENGTH):
                    digest(TOKEN, part)  # raises the same error as the slow path
            if type(issuer) is not str:  # required, as on the slow path and in Redis
                digest(ISSUER, issuer)
            return False
        keys = (
            None if jti is None else digest(TOKEN, jti),
            None if subject is None else digest(SUBJECT, issuer, subject),
            digest(ISSUER, issuer),
        )
        table = self._revocations
        with table.lock:
            now = self._now()
            token, by_subject, by_issuer = (None if k is None else table.get(k, now) for k in keys)
        if token is not None:
            return True
        if (
            by_issuer is not None
            and by_issuer[1] is not None
            and cutoff_applies(by_issuer[1], iat, inclusive=False)
        ):
            return True
        if by_subject is not None and by_subject[1] is not None:
            return cutoff_applies(by_subject[1], iat, inclusive=True)
        return False

    def add_revocation_listener(self, callback: RevocationListener) -> None:
        """Call ``callback`` after each revocation made through this store."""
        self._listeners.add(callback)

    # --- replay cache ---------------------------------------------------------------------

    def check_and_store(self, key: str, *, expires_at: float) -> bool:
        """``True`` the first time ``key`` is seen, ``False`` while it is remembered."""
        expires_at = finite("expires_at", expires_at)
        name = digest(REPLAY, key)
        table = self._replay
        with table.lock:
            now = self._now()
            if table.get(name, now) is not None:
                return False
            table.put(name, None, replay_deadline(expires_at, now, self._replay_max_ttl), now)
            return True

    # --- rate limits ----------------------------------------------------------------------

    def acquire(self, key: str, *, rate: float, burst: int, cost: int = 1) -> RateLimitResult:
        """Take ``cost`` tokens from ``key``'s bucket (``burst`` tokens, ``rate`` per second)."""
        rate_f, burst_f, cost = check_rate(rate, burst, cost)
        name = digest(RATE, key)
        table = self._rates
        with table.lock:
            now = self._now()
            entry = table.get(name, now)
            state, full_at, result = bucket_step(
                None if entry is None else entry[1], now, rate_f, burst_f, cost
            )
            table.put(name, state, full_at, now)
        return result

    # --- health and async twins -----------------------------------------------------------

    def ping(self) -> None:
        """Always succeeds: memory is always available."""

    @property
    def replay_max_ttl(self) -> float:
        """The longest a replay entry is kept, in seconds."""
        return self._replay_max_ttl

    def health(self) -> StoreHealth:
        """Always available."""
        return StoreHealth("memory", True)

    async def revoke_token_async(self, jti: str, *, expires_at: float) -> None:
        """Async twin of :meth:`revoke_token`."""
        self.revoke_token(jti, expires_at=expires_at)

    async def revoke_subject_async(self, subject: str, *, issuer: str, until: float) -> None:
        """Async twin of :meth:`revoke_subject`."""
        self.revoke_subject(subject, issuer=issuer, until=until)

    async def revoke_issued_before_async(self, issuer: str, *, before: float, until: float) -> None:
        """Async twin of :meth:`revoke_issued_before`."""
        self.revoke_issued_before(issuer, before=before, until=until)

    async def is_revoked_async(
        self, *, jti: str | None, subject: str | None, issuer: str, issued_at: float | None
    ) -> bool:
        """Async twin of :meth:`is_revoked`."""
        return self.is_revoked(jti=jti, subject=subject, issuer=issuer, issued_at=issued_at)

    async def check_and_store_async(self, key: str, *, expires_at: float) -> bool:
        """Async twin of :meth:`check_and_store`."""
        return self.check_and_store(key, expires_at=expires_at)

    async def acquire_async(
        self, key: str, *, rate: float, burst: int, cost: int = 1
    ) -> RateLimitResult:
        """Async twin of :meth:`acquire`."""
        return self.acquire(key, rate=rate, burst=burst, cost=cost)

    async def ping_async(self) -> None:
        """Always succeeds."""

    async def health_async(self) -> StoreHealth:
        """Async twin of :meth:`health`."""
        return self.health()

    def close(self) -> None:
        """Nothing to release (present for symmetry with :class:`RedisStore`)."""

    async def aclose(self) -> None:
        """Nothing to release."""
