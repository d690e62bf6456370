"""The verified-token cache: a repeated token costs a SHA-256 and a dictionary lookup.

* Keyed by the SHA-256 of the token bytes, so the cache holds no bearer token.
* Bounded: when full, the oldest entry is evicted.
* An entry is returned only inside the window computed when its claims were validated:
  from ``max(nbf, iat) - leeway`` up to (not including) ``exp``. Near expiry, a token falls
  back to full verification (which applies the leeway), so cached and uncached answers agree.
* :meth:`evict` (by ``jti``) and :meth:`clear` let revocation take effect immediately: a
  verification already under way when they run does not store its token afterwards.
* When the key set seen by the verifier changes (rotation, removal), everything is dropped,
  and a token whose verification overlapped the change is not stored. The verifier asks a
  changing key source for its current keys on every hit, so a key withdrawn from the source
  (or a source that fails closed) ends its tokens' entries at once; static key sets never
  change and skip the question.

Thread safety: reads are single ``dict`` operations; every write holds one lock.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Final

from zerotrust.errors import ConfigurationError
from zerotrust.tokens.verified import VerifiedToken

__all__ = ["VerifiedTokenCache", "token_digest"]

_Entry = tuple[VerifiedToken, float, float]
MAX_ENTRIES: Final = 1_000_000


def token_digest(raw: bytes) -> bytes:
    """The cache key of a token: SHA-256 of its ASCII bytes."""
    return hashlib.sha256(raw).digest()


class VerifiedTokenCache:
    """A bounded, thread-safe map from token digest to :class:`VerifiedToken`."""

    __slots__ = ("_by_jti", "_entries", "_generation", "_keys", "_lock", "_max")

    def __init__(self, max_entries: int = 10_000) -> None:
        if type(max_entries) is not int or not (1 <= max_entries <= MAX_ENTRIES):
            raise ConfigurationError(f"cache size must be an int from 1 to {MAX_ENTRIES}")
        self._max = max_entries
        self._entries: dict[bytes, _Entry] = {}
        self._by_jti: dict[str, set[bytes]] = {}
        self._keys: object = None
        self._generation = 0
        self._lock = threading.Lock()

    @property
    def max_entries(self) -> int:
        """The bound on the number of entries."""
        return self._max

    @property
    def generation(self) -> int:
        """Incremented whenever the observed key set changes, and by :meth:`evict` and
        :meth:`clear`; read before a verification starts (:meth:`put` ignores a token whose
        verification began before it changed)."""
        return self._generation

    def get(self, digest: bytes, now: float) -> VerifiedToken | None:
        """The cached token for ``digest`` if its time window holds at ``now``."""
        entry = self._entries.get(digest)
        if entry is None:
            return None
        token, valid_from, valid_until = entry
        if valid_from <= now < valid_until:
            return token
        if now >= valid_until:
            self._drop(digest)
        return None

    def put(
        self,
        digest: bytes,
        token: VerifiedToken,
        valid_from: float,
        valid_until: float,
        generation: int,
    ) -> None:
        """Store a token; ignored if the key set changed since ``generation`` was read."""
        jti = token.jti
        with self._lock:
            if generation != self._generation:
                return
            entries = self._entries
            if digest not in entries and len(entries) >= self._max:
                self._drop_locked(next(iter(entries)))
            entries[digest] = (token, valid_from, valid_until)
            if jti is not None:
                self._by_jti.setdefault(jti, set()).add(digest)

    def observe_keys(self, keys: object) -> None:
        """Called with every key set the verifier receives; a changed set empties the cache."""
        if keys is self._keys:
            return
        with self._lock:
            if keys is self._keys:
                return
            if self._keys is not None and keys != self._keys:
                self._entries.clear()
                self._by_jti.clear()
                self._generation += 1
            self._keys = keys

    def evict(self, jti: str) -> int:
        """Drop every entry whose token has this ``jti``; returns how many were dropped."""
        with self._lock:
            # a verification in flight (waiting for keys, say) may hold this very token
            self._generation += 1
            digests = self._by_jti.pop(jti, set())
            for digest in digests:
                self._entries.pop(digest, None)
            return len(digests)

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._generation += 1
            self._entries.clear()
            self._by_jti.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def _drop(self, digest: bytes) -> None:
        with self._lock:
            self._drop_locked(digest)

    def _drop_locked(self, digest: bytes) -> None:
        entry = self._entries.pop(digest, None)
        if entry is None:
            return
        jti = entry[0].jti
        if jti is not None:
            digests = self._by_jti.get(jti)
            if digests is not None:
                digests.discard(digest)
                if not digests:
                    del self._by_jti[jti]

    def __repr__(self) -> str:
        return f"VerifiedTokenCache({len(self._entries)}/{self._max})"
