"""``KeyRing``: the signing key of an issuer plus the keys it still publishes.

Rotation without a flag day: :meth:`KeyRing.stage` publishes the next key before it signs
anything, so verifiers that cached the key set (for its ``Cache-Control: max-age``) already
hold it when :meth:`KeyRing.rotate` makes it current (new tokens are signed with it); the
previous key stays in :meth:`KeyRing.jwks` so tokens it signed keep verifying, and
:meth:`KeyRing.retire` removes it once those tokens have expired. Every change swaps one
immutable snapshot, so readers on other threads see either the old or the new state, never a
mix.

A ``KeyRing`` is also a :class:`~zerotrust.tokens.KeySource` of its published keys, so a
service can verify the tokens it issues with ``TokenVerifier(keys=ring, ...)``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from zerotrust.errors import ConfigurationError
from zerotrust.tokens.algorithms import PrivateKey
from zerotrust.tokens.jwks import JWKSet
from zerotrust.tokens.keys import JWK, PrivateJWK

__all__ = ["KeyRing"]

# (current, previous public keys, the published set, the staged next key)
_Snapshot = tuple[PrivateJWK, tuple[JWK, ...], JWKSet, "PrivateJWK | None"]


def signing_key(key: PrivateJWK | PrivateKey, *, algorithm: str | None = None) -> PrivateJWK:
    """``key`` as a :class:`PrivateJWK` with a ``kid`` (its RFC 7638 thumbprint by default)."""
    if isinstance(key, PrivateJWK):
        if algorithm is not None and algorithm != key.algorithm:
            raise ConfigurationError("algorithm differs from the one bound to the PrivateJWK")
        jwk = key
    else:
        jwk = PrivateJWK(key, algorithm=algorithm)
    return jwk if jwk.kid is not None else jwk.with_kid(jwk.thumbprint())


class KeyRing:
    """The current signing key and the previous public keys still published."""

    __slots__ = ("_lock", "_state")

    def __init__(
        self,
        current: PrivateJWK | PrivateKey,
        *,
        previous: Iterable[JWK | PrivateJWK] = (),
        staged: PrivateJWK | PrivateKey | None = None,
    ) -> None:
        self._lock = threading.Lock()
        key = signing_key(current)
        published: list[JWK] = []
        for item in previous:
            public = item.public() if isinstance(item, PrivateJWK) else item
            if not isinstance(public, JWK):
                raise ConfigurationError("previous keys must be JWK or PrivateJWK values")
            if public.kid is None:
                public = JWK(public.public_key, algorithm=public.algorithm, kid=public.thumbprint())
            published.append(public)
        upcoming = signing_key(staged) if staged is not None else None
        self._state = self._snapshot(key, tuple(published), upcoming)

    @staticmethod
    def _snapshot(
        current: PrivateJWK, previous: tuple[JWK, ...], staged: PrivateJWK | None = None
    ) -> _Snapshot:
        upcoming = [staged.public()] if staged is not None else []
        kids = [current.kid, *(key.kid for key in upcoming), *(key.kid for key in previous)]
        if len(set(kids)) != len(kids):
            raise ConfigurationError("every key in a KeyRing needs a distinct kid")
        return current, previous, JWKSet([current.public(), *upcoming, *previous]), staged

    @property
    def current(self) -> PrivateJWK:
        """The key new tokens are signed with."""
        return self._state[0]

    @property
    def previous(self) -> tuple[JWK, ...]:
        """Public keys of earlier signing keys, still published."""
        return self._state[1]

    @property
    def staged(self) -> PrivateJWK | None:
        """The next signing key: published, not signing yet (see :meth:`stage`)."""
        return self._state[3]

    def stage(self, next_key: PrivateJWK | PrivateKey) -> PrivateJWK:
        """Publish ``next_key`` without signing with it yet; :meth:`rotate` makes it current.

        Stage it at least one publication ``max-age`` before rotating, so that verifiers
        holding a cached key set know it before the first token it signs. Staging another key
        replaces the staged one (it was never used to sign)."""
        key = signing_key(next_key)
        with self._lock:
            current, previous, _, _ = self._state
            self._state = self._snapshot(current, previous, key)
        return key

    def rotate(self, new_key: PrivateJWK | PrivateKey | None = None) -> PrivateJWK:
        """Make ``new_key`` current, or without it the staged key (:meth:`stage`); the old
        current key stays published until retired. Raises
        :class:`~zerotrust.errors.ConfigurationError` when neither is there."""
        with self._lock:
            current, previous, _, staged = self._state
            if new_key is not None:
                key = signing_key(new_key)
                if staged is not None and staged.kid == key.kid and staged.public() != key.public():
                    # verifiers that cached the staged key under this kid would refuse its tokens
                    raise ConfigurationError(
                        "the new key reuses the staged key's kid with other key material;"
                        " unstage() first"
                    )
                # a staged key other than the new one stays staged
                keep = staged if staged is not None and staged.kid != key.kid else None
            elif staged is not None:
                key, keep = staged, None
            else:
                raise ConfigurationError("rotate() needs a new key, or one staged with stage()")
            self._state = self._snapshot(key, (current.public(), *previous), keep)
        return key

    def retire(self, kid: str) -> None:
        """Stop publishing the previous key ``kid`` (the current key cannot be retired; a
        staged key is withdrawn with :meth:`unstage`)."""
        with self._lock:
            current, previous, _, staged = self._state
            if current.kid == kid:
                raise ConfigurationError("the current signing key cannot be retired; rotate first")
            remaining = tuple(key for key in previous if key.kid != kid)
            if len(remaining) == len(previous):
                raise ConfigurationError("no previous key has that kid")
            self._state = self._snapshot(current, remaining, staged)

    def unstage(self) -> None:
        """Withdraw the staged key (it never signed anything); nothing happens without one."""
        with self._lock:
            current, previous, _, _ = self._state
            self._state = self._snapshot(current, previous)

    def key_set(self) -> JWKSet:
        """The published public keys: current first, then the staged one, then previous."""
        return self._state[2]

    def jwks(self) -> dict[str, Any]:
        """The published keys as a JWKS document."""
        return self._state[2].to_public_dict()

    def get_keys(self, *, missing_kid: str | None = None) -> JWKSet:
        """:class:`~zerotrust.tokens.KeySource`: the published keys."""
        return self._state[2]

    async def get_keys_async(self, *, missing_kid: str | None = None) -> JWKSet:
        """:class:`~zerotrust.tokens.KeySource`: the published keys."""
        return self._state[2]

    def __repr__(self) -> str:
        current, previous, _, staged = self._state
        upcoming = f", staged={staged.kid!r}" if staged is not None else ""
        return f"KeyRing(current={current.kid!r}{upcoming}, previous={[k.kid for k in previous]!r})"
