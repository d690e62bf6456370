"""``TokenVerifier``: signature (step 1) + claims (step 2) + the verified-token cache.

The verification logic is written once, as a sans-IO generator (:meth:`TokenVerifier.flow`)
that yields a :class:`~zerotrust.tokens.KeyRequest` when it needs keys and is resumed with
the key set. :meth:`~TokenVerifier.verify` and :meth:`~TokenVerifier.verify_async` are thin
drivers; a larger sans-IO pipeline can ``yield from verifier.flow(token)``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from types import MappingProxyType
from typing import Literal, cast

from zerotrust._clock import Clock
from zerotrust._sansio import drive, drive_async
from zerotrust.errors import ConfigurationError, InvalidClaim, KeysUnavailable, MalformedToken
from zerotrust.identity import TrustDomain
from zerotrust.tokens._json import JSONError, loads_dict
from zerotrust.tokens.cache import VerifiedTokenCache
from zerotrust.tokens.claims import ClaimsValidator, clock_function
from zerotrust.tokens.jwks import JWKSet
from zerotrust.tokens.keys import JWK
from zerotrust.tokens.secret import SecretKeySet
from zerotrust.tokens.signature import (
    DEFAULT_MAX_TOKEN_SIZE,
    Flow,
    SignatureVerifier,
    ascii_token,
    subject_trust_domain,
)
from zerotrust.tokens.sources import KeysLike, StaticKeySource, TrustDomainKeySource
from zerotrust.tokens.verified import VerifiedSignature, VerifiedToken

__all__ = ["TokenVerifier"]

_sha256 = hashlib.sha256


class TokenVerifier:
    """Verifies signed JWTs from one issuer for one or more audiences.

    Required: ``issuer`` (matched exactly; ``None`` only for JWT-SVIDs checked against
    ``trust_domain=``, since SPIRE may issue them without ``iss``), ``audience`` (one or
    several accepted values), ``keys`` (a :class:`~zerotrust.tokens.KeySource`, or a static
    ``JWKSet``, ``JWK``,
    ``SecretKey``, JWKS ``dict`` or ``cryptography`` public key) and ``algorithms`` (the
    allowlist; there is no default). ``token_type`` picks a profile: ``None`` (generic JWT),
    ``"jwt-svid"`` (SPIFFE JWT-SVID; see ``trust_domain``) or ``"at+jwt"`` (RFC 9068 access
    token). ``cache_size=0`` disables the verified-token cache.

    Configuration errors raise :class:`~zerotrust.errors.ConfigurationError` here, never
    during verification. Verification raises :class:`~zerotrust.errors.TokenError`
    subclasses, or :class:`~zerotrust.errors.KeysUnavailable` from the key source.
    """

    __slots__ = ("_cache", "_claims", "_max_size", "_now", "_observe", "_signature", "_static_keys")

    def __init__(
        self,
        *,
        issuer: str | None,
        audience: str | Sequence[str],
        keys: KeysLike,
        algorithms: Sequence[str],
        leeway: float = 60,
        token_type: Literal["jwt-svid", "at+jwt"] | None = None,
        required_claims: Sequence[str] = (),
        max_lifetime: float | None = None,
        max_token_size: int = DEFAULT_MAX_TOKEN_SIZE,
        clock: Clock | None = None,
        cache_size: int = 10_000,
        trust_domain: str | TrustDomain | None = None,
    ) -> None:
        # A trust domain's JWT authorities vouch only for that trust domain's SPIFFE IDs
        # (SPIFFE Trust Domain and Bundle, section 3): a key source bound to one (a SPIFFE
        # bundle's JWT authorities) fixes the profile and the trust domain ``sub`` must be in.
        bound = getattr(keys, "trust_domain", None)
        several = isinstance(keys, TrustDomainKeySource)
        if several:
            if token_type != "jwt-svid":  # noqa: S105 - a token profile, not a secret
                raise ConfigurationError(
                    "keys of several trust domains verify JWT-SVIDs only: token_type='jwt-svid'"
                )
            if trust_domain is not None:
                raise ConfigurationError(
                    "the key source names the trust domains: each JWT-SVID is checked against"
                    " its own domain's keys (leave trust_domain out)"
                )
        elif isinstance(bound, TrustDomain):
            if token_type != "jwt-svid":  # noqa: S105 - a token profile, not a secret
                raise ConfigurationError(
                    "keys from a SPIFFE bundle verify JWT-SVIDs only: token_type='jwt-svid'"
                )
            if trust_domain is None and not (issuer or "").startswith("spiffe://"):
                trust_domain = bound
        self._claims = ClaimsValidator(
            issuer=issuer,
            audience=audience,
            leeway=leeway,
            token_type=token_type,
            required_claims=required_claims,
            max_lifetime=max_lifetime,
            clock=clock,
            trust_domain=trust_domain,
            any_trust_domain=several,
        )
        # keys found through an issuer's OpenID discovery are that issuer's (JWT-SVIDs checked
        # by trust domain alone, with issuer=None, may use a SPIRE discovery provider's keys)
        discovered = getattr(keys, "oidc_issuer", None)
        if isinstance(discovered, str) and issuer is not None and discovered != issuer:
            shown = discovered.split("?", 1)[0].split("#", 1)[0]  # a query may hold a secret
            raise ConfigurationError(
                f"the key source holds the keys of the OpenID issuer {shown!r}: they do"
                f" not vouch for tokens of issuer {issuer!r} (if that issuer does sign with"
                " them, point a RemoteJWKSource at its jwks_uri instead)"
            )
        if isinstance(bound, TrustDomain) and self._claims.trust_domain != bound:
            raise ConfigurationError(
                f"the key source holds the JWT authorities of {bound.name!r}: they cannot"
                " vouch for the JWT-SVIDs of another trust domain"
            )
        self._signature = SignatureVerifier(
            keys=keys,
            algorithms=algorithms,
            max_token_size=max_token_size,
            token_type=token_type,
        )
        if type(cache_size) is not int or cache_size < 0:
            raise ConfigurationError("cache_size must be a non-negative int (0 disables it)")
        self._cache = VerifiedTokenCache(cache_size) if cache_size else None
        self._observe: Callable[[object], None] | None = (
            self._cache.observe_keys if self._cache is not None else None
        )
        if self._cache is not None and several:
            # the union of the domains' keys can stay the same while one domain's change:
            # the cache watches each domain's keys where the source tells them
            observe, source = self._cache.observe_keys, cast(TrustDomainKeySource, keys)

            def observe_domains(answer: object) -> None:
                by_domain = source.domain_keys()
                observe(answer if by_domain is None else by_domain)

            self._observe = observe_domains
        self._max_size = max_token_size
        self._now = clock_function(clock)
        # A cache hit must still hold for the key source's *current* keys: a retired key or a
        # source that fails closed ends its tokens' cache entries at once. Static key sets
        # never change, so only their hits skip the question (a subclass may answer in its
        # own way: it is asked).
        self._static_keys = type(self._signature._source) is StaticKeySource

    @property
    def signature_verifier(self) -> SignatureVerifier:
        """Step 1 on its own."""
        return self._signature

    @property
    def claims_validator(self) -> ClaimsValidator:
        """Step 2 on its own."""
        return self._claims

    @property
    def cache(self) -> VerifiedTokenCache | None:
        """The verified-token cache (``None`` when disabled)."""
        return self._cache

    def verify(self, token: str | bytes) -> VerifiedToken:
        """Verify a token, blocking on the key source if it needs to fetch."""
        if type(token) is str and len(token) <= self._max_size and token.isascii():
            raw = token.encode("ascii")  # the common case, inlined
        else:
            raw = ascii_token(token, self._max_size)
        cache = self._cache
        if cache is None:
            return drive(self._flow(raw, None))
        digest = _sha256(raw).digest()
        entry = cache._entries.get(digest)  # the hot path: a hash and a lookup
        if entry is not None:
            if not self._static_keys:
                # asked directly (what the driver would do): raises KeysUnavailable when the
                # source fails closed, and a changed key set empties the cache
                self._check_keys(self._signature._first.fulfil())
                entry = cache._entries.get(digest)
            if entry is not None:
                if entry[1] <= self._now() < entry[2]:
                    return entry[0]
                cache.get(digest, self._now())  # drops the entry if it has expired
        return drive(self._flow(raw, digest))

    def _cached(self, token: str) -> VerifiedToken | None:
        """The cached verification of ``token`` if it holds now; ``None`` otherwise. Never does
        I/O and never asks the key source: with a changing source the caller must confirm the
        current keys first (:meth:`_confirm_keys` / :meth:`_aconfirm_keys`), exactly as
        :meth:`verify` does on a hit."""
        cache = self._cache
        if cache is None or len(token) > self._max_size:
            return None
        try:
            entry = cache._entries.get(_sha256(token.encode("ascii")).digest())
        except UnicodeEncodeError:  # not a token this cache can hold
            return None
        if entry is not None and entry[1] <= self._now() < entry[2]:
            return entry[0]
        return None

    def _confirm_keys(self) -> None:
        """Ask a changing key source for its current keys (a changed set empties the cache;
        a failing source raises ``KeysUnavailable``). Static key sets skip the question."""
        if not self._static_keys:
            self._check_keys(self._signature._first.fulfil())

    async def _aconfirm_keys(self) -> None:
        """:meth:`_confirm_keys` without blocking the event loop."""
        if not self._static_keys:
            self._check_keys(await self._signature._first.fulfil_async())

    async def verify_async(self, token: str | bytes) -> VerifiedToken:
        """Verify a token, awaiting the key source if it needs to fetch."""
        return await drive_async(self.flow(token))

    def flow(self, token: str | bytes) -> Flow[VerifiedToken]:
        """The sans-IO verification: a generator yielding :class:`KeyRequest` values."""
        raw = ascii_token(token, self._max_size)
        cache = self._cache
        digest = None
        if cache is not None:
            digest = _sha256(raw).digest()
            if self._static_keys:
                hit = cache.get(digest, self._now())
                if hit is not None:
                    return _done(hit)
            elif digest in cache._entries:
                return self._cached_flow(raw, digest)
        return self._flow(raw, digest)

    def _cached_flow(self, raw: bytes, digest: bytes) -> Flow[VerifiedToken]:
        """A cache hit of a changing key source: confirm the source's current keys first."""
        cache = self._cache
        assert cache is not None
        self._check_keys((yield self._signature._first))
        hit = cache.get(digest, self._now())
        if hit is not None:
            return hit
        return (yield from self._flow(raw, digest))

    def _check_keys(self, keys: object) -> None:
        if not isinstance(keys, (JWKSet, SecretKeySet)):
            raise KeysUnavailable("key source returned something that is not a key set")
        assert self._observe is not None
        self._observe(keys)

    def _flow(self, raw: bytes, digest: bytes | None) -> Flow[VerifiedToken]:
        cache = self._cache
        generation = cache.generation if cache is not None else 0
        header, payload, _, alg, kid = yield from self._signature._flow(raw, self._observe)
        try:
            claims = loads_dict(payload)
        except JSONError as exc:
            raise MalformedToken(f"payload {exc}") from None
        valid_from, valid_until = self._claims.check(claims, self._now())
        token = VerifiedToken(header, MappingProxyType(claims), kid, alg)
        if cache is not None and digest is not None:
            cache.put(digest, token, valid_from, valid_until, generation)
        return token

    def verify_signature(self, token: str | bytes) -> VerifiedSignature:
        """Step 1 only: the signature-verified token with its claims still unvalidated."""
        return self._signature.verify(token)

    def validate_claims(self, signed: VerifiedSignature) -> VerifiedToken:
        """Step 2 only: validate the claims of a :meth:`verify_signature` result."""
        source = self._signature._source
        if isinstance(source, TrustDomainKeySource):
            # the claims step accepts any trust domain: the key must be sub's domain's own
            domain = subject_trust_domain(signed.claims.get("sub"))
            key = signed.key
            if not isinstance(key, JWK) or all(
                key.thumbprint() != own.thumbprint() for own in source.keys_of(domain)
            ):
                raise InvalidClaim("JWT-SVID signed by a key of another trust domain")
        return self._claims.validate(signed)

    def evict(self, jti: str) -> int:
        """Forget cached verifications of tokens with this ``jti`` (e.g. on revocation)."""
        return self._cache.evict(jti) if self._cache is not None else 0

    def clear_cache(self) -> None:
        """Forget every cached verification."""
        if self._cache is not None:
            self._cache.clear()

    def __repr__(self) -> str:
        return (
            f"TokenVerifier(issuer={self._claims.issuer!r}, "
            f"algorithms={sorted(self._signature.algorithms)!r})"
        )


def _done(token: VerifiedToken) -> Flow[VerifiedToken]:
    yield from ()
    return token
