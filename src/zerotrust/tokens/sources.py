"""Key sources: where a verifier gets the keys it trusts.

A key source is any object with the one method of :class:`KeySource`. The verifier asks
``get_keys()`` for the current :data:`KeySet`; only when a token names a ``kid`` that set
does not hold does it ask once more with ``get_keys(missing_kid=kid)``, which a remote
source may answer by refetching (subject to its own rate limit and negative cache) and a
static source answers with the same set. A source that cannot produce keys raises
:class:`~zerotrust.errors.KeysUnavailable`; the verifier lets it propagate (HTTP 503, fail
closed). Sources must be safe to call from many threads and should return the same set
object while their keys do not change (the verified-token cache is emptied whenever the
set it sees changes).

Writing a source: return an immutable :class:`~zerotrust.tokens.JWKSet` (or a
:class:`~zerotrust.tokens.SecretKeySet`), swap whole sets on rotation, never block in
``get_keys_async`` (an optional async twin: without it, async callers run ``get_keys`` in a
worker thread), and never raise anything but ``KeysUnavailable`` on a request path.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias, runtime_checkable

from cryptography import x509

from zerotrust.errors import ConfigurationError, KeysUnavailable
from zerotrust.identity import TrustDomain
from zerotrust.tokens.algorithms import PublicKey
from zerotrust.tokens.jwks import JWKSet
from zerotrust.tokens.keys import JWK, PrivateJWK
from zerotrust.tokens.secret import SecretKey, SecretKeySet

__all__ = [
    "KeyRequest",
    "KeySet",
    "KeySource",
    "KeysLike",
    "StaticKeySource",
    "StaticKeys",
    "TrustDomainKeySource",
    "as_key_source",
]

KeySet: TypeAlias = JWKSet | SecretKeySet
"""What a key source returns: public keys (:class:`JWKSet`) or one HMAC secret."""


@runtime_checkable
class KeySource(Protocol):
    """Supplies the keys a verifier trusts (see the module documentation for the contract):
    one method, :meth:`get_keys`.

    A source may also have ``async def get_keys_async(*, missing_kid=None)``, its async twin,
    which must not block the event loop (every source zerotrust provides has it). The async
    Guard awaits it, and runs :meth:`get_keys` in a worker thread for a source without it.
    """

    def get_keys(self, *, missing_kid: str | None = None) -> KeySet:
        """The current key set; ``missing_kid`` names a kid a token used that was not in it."""
        ...


async def get_keys_async_of(source: KeySource, missing_kid: str | None = None) -> KeySet:
    """``await source.get_keys_async(...)``, or ``source.get_keys(...)`` in a worker thread
    when the source has no ``get_keys_async``."""
    get_keys_async = getattr(source, "get_keys_async", None)
    if callable(get_keys_async):
        keys: KeySet = await get_keys_async(missing_kid=missing_kid)
        return keys

    def get_keys() -> KeySet:
        try:
            return source.get_keys(missing_kid=missing_kid)
        except StopIteration:  # cannot cross into a future
            raise KeysUnavailable("key source failed") from None

    return await asyncio.to_thread(get_keys)


StaticKeys: TypeAlias = (
    JWKSet
    | JWK
    | PrivateJWK
    | SecretKey
    | SecretKeySet
    | Mapping[str, Any]
    | PublicKey
    | x509.Certificate
)
"""What :class:`StaticKeySource` accepts."""
KeysLike: TypeAlias = KeySource | StaticKeys
"""What verifiers accept as ``keys``: a key source or static keys."""


@dataclass(frozen=True, slots=True)
class KeyRequest:
    """What a sans-IO verification flow yields: "send me the keys of ``source``".

    Resume the flow with ``source.get_keys(missing_kid=missing_kid)`` (or the async twin).
    """

    source: KeySource
    missing_kid: str | None = None

    def fulfil(self) -> KeySet:
        """Answer the request synchronously."""
        try:
            return self.source.get_keys(missing_kid=self.missing_kid)
        except StopIteration:  # a broken source must not end the flow silently
            raise KeysUnavailable("key source failed") from None

    async def fulfil_async(self) -> KeySet:
        """Answer the request asynchronously."""
        try:
            return await get_keys_async_of(self.source, self.missing_kid)
        except StopIteration:  # from an awaitable that is no coroutine
            raise KeysUnavailable("key source failed") from None
        except RuntimeError as exc:
            if isinstance(exc.__cause__, StopIteration):  # a coroutine's, renamed (PEP 479)
                raise KeysUnavailable("key source failed") from None
            raise


class StaticKeySource:
    """A fixed key set: a :class:`JWKSet`, a :class:`JWK`, a :class:`SecretKey`, a JWKS (or
    single JWK) ``dict``, or a ``cryptography`` public key / certificate.

    An empty set is refused: a verifier with no keys is a configuration mistake.
    """

    __slots__ = ("_keys",)

    def __init__(self, keys: StaticKeys) -> None:
        self._keys = _to_key_set(keys)
        if len(self._keys) == 0:
            detail = ""
            if isinstance(self._keys, JWKSet) and self._keys.skipped:
                detail = ": " + "; ".join(s.reason for s in self._keys.skipped[:3])
            raise ConfigurationError("static key set holds no usable key" + detail)

    @property
    def keys(self) -> KeySet:
        """The fixed key set."""
        return self._keys

    def get_keys(self, *, missing_kid: str | None = None) -> KeySet:
        """Always the same set (there is nothing to refetch)."""
        return self._keys

    async def get_keys_async(self, *, missing_kid: str | None = None) -> KeySet:
        """Always the same set (there is nothing to refetch)."""
        return self._keys

    def __repr__(self) -> str:
        return f"StaticKeySource({self._keys!r})"


class TrustDomainKeySource(ABC):
    """A key source holding the JWT authorities of several SPIFFE trust domains, each
    verifying only the JWT-SVIDs of its own domain (SPIFFE Trust Domain and Bundle, section 3).

    A verifier given one reads the token's ``sub`` before its signature, as go-spiffe does,
    and checks the signature with :meth:`keys_of` that SPIFFE ID's trust domain only: a key of
    one domain never vouches for another domain's workloads, and a key id published by two
    domains is no ambiguity. :meth:`get_keys` answers for all of them together (what the
    verifier watches to notice rotation, and what fails closed when the source does).
    """

    __slots__ = ()

    @abstractmethod
    def get_keys(self, *, missing_kid: str | None = None) -> JWKSet:
        """The keys of every accepted trust domain, one set (see the class documentation)."""

    @abstractmethod
    async def get_keys_async(self, *, missing_kid: str | None = None) -> JWKSet:
        """Async twin of :meth:`get_keys`: must not block the event loop."""

    @abstractmethod
    def keys_of(self, trust_domain: TrustDomain) -> JWKSet:
        """The keys of ``trust_domain`` alone (answered from memory). Raises
        :class:`~zerotrust.errors.InvalidClaim` for a domain whose tokens are not accepted and
        :class:`~zerotrust.errors.KeysUnavailable` when an accepted domain's keys cannot be
        had."""

    def domain_keys(self) -> Mapping[TrustDomain, JWKSet] | None:
        """Every accepted trust domain's keys (the same object while none changes): what a
        verifier's cache watches for rotation. :meth:`get_keys` alone can stay the same while
        one domain withdraws a key another domain still publishes, or a domain leaves; a
        verified token of that domain must then not be answered from the cache. ``None`` (the
        default): the verifier watches :meth:`get_keys`."""
        return None


def _to_key_set(keys: object) -> KeySet:
    if isinstance(keys, (JWKSet, SecretKeySet)):
        return keys
    if isinstance(keys, JWK):
        return JWKSet([keys])
    if isinstance(keys, PrivateJWK):
        return JWKSet([keys.public()])
    if isinstance(keys, SecretKey):
        return SecretKeySet(keys)
    if isinstance(keys, Mapping):
        if "keys" in keys:
            return JWKSet.from_dict(keys)
        return JWKSet([JWK.from_dict(keys)])
    if isinstance(keys, (bytes, str)):
        raise ConfigurationError(
            "raw bytes/str are ambiguous as keys: use SecretKey(...) for an HMAC secret, "
            "JWK.from_pem(...) or JWKSet.from_json(...) for public keys"
        )
    return JWKSet([JWK.from_public_key(keys)])  # type: ignore[arg-type]


def as_key_source(keys: object) -> KeySource:
    """``keys`` itself if it is a :class:`KeySource`, else a :class:`StaticKeySource` of it."""
    if isinstance(keys, KeySource) and not isinstance(keys, type):
        return keys
    return StaticKeySource(keys)  # type: ignore[arg-type]
