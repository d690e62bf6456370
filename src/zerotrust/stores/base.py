"""The shared-state vocabulary: result types and the store protocols.

Three features share one small protocol so that a single object (in memory, or a Redis
connection shared by every replica) can back all of them:

* :class:`RevocationStore` -- revoke one token (``jti``), every token of a subject, or every
  token an issuer issued before a moment; one query checks all three at once.
* :class:`ReplayCache` -- remember one-time identifiers (a token's ``jti``, a DPoP proof's
  ``jti``) until they expire; the first use wins, every later use is a replay.
* :class:`RateLimiter` -- a token bucket per principal.

Every method has an ``_async`` twin with the same semantics. Times are POSIX timestamps in
seconds (``float``), the unit of JWT ``exp`` / ``iat`` claims. A store that cannot answer
raises :class:`~zerotrust.errors.StoreUnavailable`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

__all__ = [
    "FailurePolicy",
    "RateLimitResult",
    "RateLimiter",
    "ReplayCache",
    "Revocation",
    "RevocationListener",
    "RevocationStore",
    "Store",
    "StoreHealth",
]

#: What a feature does while its store is unavailable: reject (``"closed"``) or allow.
FailurePolicy = Literal["closed", "open"]


@dataclass(frozen=True, slots=True)
class RateLimitResult:
    """The answer of :meth:`RateLimiter.acquire`.

    ``remaining`` is the number of whole tokens left after this request; ``retry_after`` is
    how many seconds to wait before the same request could succeed (``0.0`` when allowed).
    """

    allowed: bool
    remaining: int
    retry_after: float


@dataclass(frozen=True, slots=True)
class Revocation:
    """What was revoked, as passed to revocation listeners.

    ``kind`` is ``"token"`` (``jti`` set), ``"subject"`` (``subject`` and ``issuer`` set,
    ``cutoff`` is the moment of revocation) or ``"issuer"`` (``issuer`` set, ``cutoff`` is the
    ``before`` bound). ``until`` is when the revocation lapses.
    """

    kind: Literal["token", "subject", "issuer"]
    until: float
    jti: str | None = None
    subject: str | None = None
    issuer: str | None = None
    cutoff: float | None = None


@dataclass(frozen=True, slots=True)
class StoreHealth:
    """A store's health signal: ``available`` and a short, credential-free ``detail``."""

    backend: str
    available: bool
    detail: str = "ok"


#: Called in the revoking process after a revocation was stored (e.g. to evict caches). Every
#: listener runs; the first exception is then re-raised to the caller that revoked.
RevocationListener = Callable[[Revocation], None]


@runtime_checkable
class RevocationStore(Protocol):
    """Revocation by token id, by subject and by issuer-before-time.

    Every revocation lapses (:data:`REVOCATION_GRACE` after the token's own ``exp``, or after
    ``until``): nothing is kept forever. Revocations never shrink: revoking again keeps the
    later ``until`` and cut-off.
    """

    def revoke_token(self, jti: str, *, expires_at: float) -> None:
        """Revoke the token with this ``jti`` until ``expires_at`` (its ``exp``). Every
        revocation is kept :data:`REVOCATION_GRACE` past the end it is given, so a verifier's
        leeway after ``exp`` cannot let the token back in."""
        ...

    def revoke_subject(self, subject: str, *, issuer: str, until: float) -> None:
        """Revoke every token of ``subject`` from ``issuer`` issued up to now, until ``until``."""
        ...

    def revoke_issued_before(self, issuer: str, *, before: float, until: float) -> None:
        """Revoke every token from ``issuer`` with ``iat < before``, until ``until``."""
        ...

    def is_revoked(
        self, *, jti: str | None, subject: str | None, issuer: str, issued_at: float | None
    ) -> bool:
        """Whether any revocation applies; a token without ``iat`` under a cut-off is revoked."""
        ...

    async def revoke_token_async(self, jti: str, *, expires_at: float) -> None:
        """Async twin of :meth:`revoke_token`."""
        ...

    async def revoke_subject_async(self, subject: str, *, issuer: str, until: float) -> None:
        """Async twin of :meth:`revoke_subject`."""
        ...

    async def revoke_issued_before_async(self, issuer: str, *, before: float, until: float) -> None:
        """Async twin of :meth:`revoke_issued_before`."""
        ...

    async def is_revoked_async(
        self, *, jti: str | None, subject: str | None, issuer: str, issued_at: float | None
    ) -> bool:
        """Async twin of :meth:`is_revoked`."""
        ...

    def add_revocation_listener(self, callback: RevocationListener) -> None:
        """Call ``callback`` after each revocation made *through this object*.

        Other replicas are not notified: they learn about revocations through
        :meth:`is_revoked`, which reads the shared state on every call.
        """
        ...


@runtime_checkable
class ReplayCache(Protocol):
    """One-time identifiers: the first use of a key succeeds, every replay fails."""

    def check_and_store(self, key: str, *, expires_at: float) -> bool:
        """``True`` the first time ``key`` is seen, ``False`` while it is remembered."""
        ...

    async def check_and_store_async(self, key: str, *, expires_at: float) -> bool:
        """Async twin of :meth:`check_and_store`."""
        ...


@runtime_checkable
class RateLimiter(Protocol):
    """Token buckets: ``burst`` tokens, refilled at ``rate`` tokens per second."""

    def acquire(self, key: str, *, rate: float, burst: int, cost: int = 1) -> RateLimitResult:
        """Take ``cost`` tokens from the bucket of ``key`` if it holds that many."""
        ...

    async def acquire_async(
        self, key: str, *, rate: float, burst: int, cost: int = 1
    ) -> RateLimitResult:
        """Async twin of :meth:`acquire`."""
        ...


@runtime_checkable
class Store(RevocationStore, ReplayCache, RateLimiter, Protocol):
    """All three features: what the guard needs from shared state (memory or Redis)."""
