"""What each feature does while the shared store is down: fail closed (default) or open.

:class:`ResilientStore` wraps any :class:`~zerotrust.stores.Store`. With the policy
``"closed"`` a :class:`~zerotrust.errors.StoreUnavailable` propagates, so the request is
rejected with 503 / ``UNAVAILABLE``. With ``"open"`` the wrapper answers as if the store had
nothing to say -- *not revoked*, *first use*, *allowed* -- and logs one warning per outage
(and one line when the store recovers). Revoking always propagates errors: an operator must
know that a revocation was not recorded. So does a full store
(:class:`~zerotrust.errors.StoreFull`): callers can fill one, and would then be answered
*first use* and *allowed* at will.
"""

from __future__ import annotations

import logging
import threading
from typing import Final, TypeVar

from zerotrust.errors import ConfigurationError, StoreFull, StoreUnavailable
from zerotrust.stores.base import FailurePolicy, RateLimitResult, RevocationListener, Store

__all__ = ["ResilientStore"]

_log = logging.getLogger("zerotrust.stores")
_T = TypeVar("_T")
_POLICIES: Final = ("closed", "open")


def _policy(feature: str, value: str) -> bool:
    if value not in _POLICIES:
        raise ConfigurationError(f"{feature} failure policy must be 'closed' or 'open'")
    return value == "open"


class ResilientStore:
    """A :class:`Store` with a failure policy per feature; all default to ``"closed"``.

    ``ResilientStore(store, rate_limit="open")`` keeps serving when only the rate limiter is
    affected by an outage, but still rejects requests whose revocation or replay status
    cannot be checked. Failing open on revocation or replay trades security for availability:
    a revoked or replayed credential is accepted while the store is down.
    """

    __slots__ = ("_lock", "_open", "_outage", "store")

    def __init__(
        self,
        store: Store,
        *,
        revocation: FailurePolicy = "closed",
        replay: FailurePolicy = "closed",
        rate_limit: FailurePolicy = "closed",
    ) -> None:
        self.store = store
        self._open = {
            "revocation": _policy("revocation", revocation),
            "replay": _policy("replay", replay),
            "rate_limit": _policy("rate_limit", rate_limit),
        }
        self._outage = dict.fromkeys(self._open, False)
        self._lock = threading.Lock()

    @property
    def replay_max_ttl(self) -> float | None:
        """The wrapped store's cap on replay entries (``None`` if it has none)."""
        cap = getattr(self.store, "replay_max_ttl", None)
        return float(cap) if isinstance(cap, (int, float)) else None

    def __repr__(self) -> str:
        policies = ", ".join(f"{k}={'open' if v else 'closed'!r}" for k, v in self._open.items())
        return f"ResilientStore({self.store!r}, {policies})"

    def _failed(self, feature: str, exc: StoreUnavailable, fallback: _T) -> _T:
        if not self._open[feature] or isinstance(exc, StoreFull):
            # a full store is no outage: whoever can send proofs or keys can fill one
            raise exc
        with self._lock:
            first, self._outage[feature] = not self._outage[feature], True
        if first:
            _log.warning("%s check failing open while the store is unavailable: %s", feature, exc)
        return fallback

    def _answered(self, feature: str) -> None:
        if self._outage[feature]:
            with self._lock:
                recovered, self._outage[feature] = self._outage[feature], False
            if recovered:
                _log.info("%s check: store available again", feature)

    # --- revocation -------------------------------------------------------------------------

    def revoke_token(self, jti: str, *, expires_at: float) -> None:
        """Delegates; errors always propagate."""
        self.store.revoke_token(jti, expires_at=expires_at)

    def revoke_subject(self, subject: str, *, issuer: str, until: float) -> None:
        """Delegates; errors always propagate."""
        self.store.revoke_subject(subject, issuer=issuer, until=until)

    def revoke_issued_before(self, issuer: str, *, before: float, until: float) -> None:
        """Delegates; errors always propagate."""
        self.store.revoke_issued_before(issuer, before=before, until=until)

    async def revoke_token_async(self, jti: str, *, expires_at: float) -> None:
        """Async twin of :meth:`revoke_token`."""
        await self.store.revoke_token_async(jti, expires_at=expires_at)

    async def revoke_subject_async(self, subject: str, *, issuer: str, until: float) -> None:
        """Async twin of :meth:`revoke_subject`."""
        await self.store.revoke_subject_async(subject, issuer=issuer, until=until)

    async def revoke_issued_before_async(self, issuer: str, *, before: float, until: float) -> None:
        """Async twin of :meth:`revoke_issued_before`."""
        await self.store.revoke_issued_before_async(issuer, before=before, until=until)

    def add_revocation_listener(self, callback: RevocationListener) -> None:
        """Delegates to the wrapped store."""
        self.store.add_revocation_listener(callback)

    def is_revoked(
        self, *, jti: str | None, subject: str | None, issuer: str, issued_at: float | None
    ) -> bool:
        """The wrapped answer; ``False`` during an outage if revocation fails open."""
        try:
            result = self.store.is_revoked(
                jti=jti, subject=subject, issuer=issuer, issued_at=issued_at
            )
        except StoreUnavailable as exc:
            return self._failed("revocation", exc, False)
        self._answered("revocation")
        return result

    async def is_revoked_async(
        self, *, jti: str | None, subject: str | None, issuer: str, issued_at: float | None
    ) -> bool:
        """Async twin of :meth:`is_revoked`."""
        try:
            result = await self.store.is_revoked_async(
                jti=jti, subject=subject, issuer=issuer, issued_at=issued_at
            )
        except StoreUnavailable as exc:
            return self._failed("revocation", exc, False)
        self._answered("revocation")
        return result

    # --- replay -------------------------------------------------------------------------------

    def check_and_store(self, key: str, *, expires_at: float) -> bool:
        """The wrapped answer; ``True`` (first use) during an outage if replay fails open."""
        try:
            result = self.store.check_and_store(key, expires_at=expires_at)
        except StoreUnavailable as exc:
            return self._failed("replay", exc, True)
        self._answered("replay")
        return result

    async def check_and_store_async(self, key: str, *, expires_at: float) -> bool:
        """Async twin of :meth:`check_and_store`."""
        try:
            result = await self.store.check_and_store_async(key, expires_at=expires_at)
        except StoreUnavailable as exc:
            return self._failed("replay", exc, True)
        self._answered("replay")
        return result

    # --- rate limits --------------------------------------------------------------------------

    def acquire(self, key: str, *, rate: float, burst: int, cost: int = 1) -> RateLimitResult:
        """The wrapped answer; allowed (``remaining = burst - cost``) during an open outage."""
        try:
            result = self.store.acquire(key, rate=rate, burst=burst, cost=cost)
        except StoreUnavailable as exc:
            return self._failed("rate_limit", exc, RateLimitResult(True, burst - cost, 0.0))
        self._answered("rate_limit")
        return result

    async def acquire_async(
        self, key: str, *, rate: float, burst: int, cost: int = 1
    ) -> RateLimitResult:
        """Async twin of :meth:`acquire`."""
        try:
            result = await self.store.acquire_async(key, rate=rate, burst=burst, cost=cost)
        except StoreUnavailable as exc:
            return self._failed("rate_limit", exc, RateLimitResult(True, burst - cost, 0.0))
        self._answered("rate_limit")
        return result
