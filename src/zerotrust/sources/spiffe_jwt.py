"""JWT-SVID verification keys from SPIFFE trust bundles.

:class:`SpiffeJwtBundleKeySource` turns the JWT authorities of one trust domain's bundle into
a :class:`~zerotrust.tokens.JWKSet`, reading the bundle from any X.509 bundle source (a
:class:`~zerotrust.TrustBundle`, a :class:`~zerotrust.BundleSet`, a file or rotating source,
a Workload API source). The set is rebuilt only when the source hands out a different bundle
object, and when the rebuilt set holds the same keys the previous set object is kept, so a
rotation of X.509 authorities alone does not empty the verified-token cache.

:class:`SpiffeJwtBundleSetKeySource` does the same for several trust domains at once
(federation): each JWT-SVID is verified with the JWT authorities of the trust domain its
``sub`` names, and only those, as go-spiffe's ``jwtsvid.ParseAndValidate`` does.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping

from zerotrust.errors import ConfigurationError, InvalidClaim, KeysUnavailable, ZeroTrustError
from zerotrust.identity import TrustDomain
from zerotrust.tokens.jwks import JWKSet
from zerotrust.tokens.sources import TrustDomainKeySource
from zerotrust.x509.bundle import BundleSet, TrustBundle
from zerotrust.x509.sources import X509BundleSource

__all__ = ["SpiffeJwtBundleKeySource", "SpiffeJwtBundleSetKeySource"]


class SpiffeJwtBundleKeySource:
    """A :class:`~zerotrust.tokens.KeySource` of ``trust_domain``'s JWT authorities.

    ``bundles`` is anything with ``get_bundle_set()``. Missing bundles, bundles without JWT
    authorities and failing bundle sources raise :class:`~zerotrust.errors.KeysUnavailable`
    at verification time (fail closed). Use it with ``token_type="jwt-svid"`` and the same
    ``trust_domain`` on the verifier.
    """

    __slots__ = ("_bundles", "_cached", "_lock", "_td")

    def __init__(self, bundles: X509BundleSource, trust_domain: TrustDomain | str) -> None:
        if not callable(getattr(bundles, "get_bundle_set", None)):
            raise ConfigurationError("bundles must have a get_bundle_set() method")
        self._bundles = bundles
        self._td = (
            trust_domain
            if isinstance(trust_domain, TrustDomain)
            else TrustDomain.parse(trust_domain)
        )
        self._lock = threading.Lock()
        self._cached: tuple[TrustBundle, JWKSet] | None = None

    @property
    def trust_domain(self) -> TrustDomain:
        """The trust domain whose bundle's JWT authorities are the keys."""
        return self._td

    def get_keys(self, *, missing_kid: str | None = None) -> JWKSet:
        """The JWT authorities of the current bundle (``missing_kid`` changes nothing: the
        bundle source decides when bundles are refreshed)."""
        try:
            bundle = self._bundles.get_bundle_set().get(self._td)
        except ZeroTrustError as exc:
            raise KeysUnavailable(f"bundle source failed: {exc}") from None
        if bundle is None:
            raise KeysUnavailable(f"no trust bundle for {self._td}")
        cached = self._cached
        if cached is not None and cached[0] is bundle:
            return cached[1]
        with self._lock:
            cached = self._cached
            if cached is not None and cached[0] is bundle:
                return cached[1]
            keys = _jwt_keys(bundle)
            if cached is not None and cached[1] == keys:
                keys = cached[1]
            self._cached = (bundle, keys)
            return keys

    async def get_keys_async(self, *, missing_kid: str | None = None) -> JWKSet:
        """Same as :meth:`get_keys` (bundle sources answer from memory)."""
        return self.get_keys(missing_kid=missing_kid)

    def __repr__(self) -> str:
        return f"SpiffeJwtBundleKeySource({self._td.name!r})"


def _jwt_keys(bundle: TrustBundle) -> JWKSet:
    authorities = bundle.jwt_authorities
    if not authorities:
        raise KeysUnavailable(f"the bundle of {bundle.trust_domain} has no JWT authorities")
    # every authority the bundle accepted is a key: the bundle bounds their number, and a
    # JWKS document's own bound must not turn a large bundle into an error on every request
    keys = JWKSet.from_dict(
        {"keys": [{**jwk, "kid": kid} for kid, jwk in authorities.items()]},
        max_keys=len(authorities),
    )
    if len(keys) == 0:
        raise KeysUnavailable(
            f"the bundle of {bundle.trust_domain} has no usable JWT authority "
            f"({len(keys.skipped)} skipped)"
        )
    return keys


class SpiffeJwtBundleSetKeySource(TrustDomainKeySource):
    """The JWT authorities of several trust domains (federation): a
    :class:`~zerotrust.tokens.TrustDomainKeySource`.

    ``bundles`` is anything with ``get_bundle_set()``. ``trust_domains`` lists the domains
    whose JWT-SVIDs are accepted; ``None`` accepts every domain of the bundle set that has
    JWT authorities. Give it as ``keys`` to ``TokenVerifier(token_type="jwt-svid")`` without
    ``trust_domain``: each token is verified with the keys of the trust domain its ``sub``
    names, never with another domain's, and a ``kid`` two domains both publish is no
    ambiguity. A token of a domain that is not accepted (not listed, or absent from the
    bundle set or without JWT authorities when none are listed) is an invalid token
    (:class:`~zerotrust.errors.InvalidClaim`, 401). A failing bundle source, a listed domain
    without a bundle or JWT authorities, and a set with no JWT authority at all raise
    :class:`~zerotrust.errors.KeysUnavailable` (fail closed, 503).
    """

    __slots__ = ("_bundles", "_cached", "_listed", "_lock")

    def __init__(
        self,
        bundles: X509BundleSource,
        trust_domains: Iterable[TrustDomain | str] | None = None,
    ) -> None:
        if not callable(getattr(bundles, "get_bundle_set", None)):
            raise ConfigurationError("bundles must have a get_bundle_set() method")
        listed: frozenset[TrustDomain] | None = None
        if trust_domains is not None:
            if isinstance(trust_domains, (str, TrustDomain)):
                raise ConfigurationError("trust_domains must be a list of trust domains")
            listed = frozenset(
                td if isinstance(td, TrustDomain) else TrustDomain.parse(td) for td in trust_domains
            )
            if not listed:
                raise ConfigurationError("trust_domains must not be empty (None accepts all)")
        self._bundles = bundles
        self._listed = listed
        self._lock = threading.Lock()
        self._cached: tuple[BundleSet, JWKSet, Mapping[TrustDomain, JWKSet]] | None = None

    @property
    def trust_domains(self) -> frozenset[TrustDomain] | None:
        """The accepted trust domains (``None``: those of the bundle set)."""
        return self._listed

    def get_keys(self, *, missing_kid: str | None = None) -> JWKSet:
        """The JWT authorities of every accepted trust domain as one set: what a verifier
        watches for rotation (``missing_kid`` changes nothing: the bundle source decides when
        bundles are refreshed)."""
        return self._snapshot()[1]

    async def get_keys_async(self, *, missing_kid: str | None = None) -> JWKSet:
        """Same as :meth:`get_keys` (bundle sources answer from memory)."""
        return self.get_keys(missing_kid=missing_kid)

    def keys_of(self, trust_domain: TrustDomain) -> JWKSet:
        """The JWT authorities of ``trust_domain`` alone (see the class documentation)."""
        listed = self._listed
        if listed is not None and trust_domain not in listed:
            raise InvalidClaim("JWT-SVIDs of this trust domain are not accepted")
        keys = self._snapshot()[2].get(trust_domain)
        if keys is None:
            if listed is not None:
                raise KeysUnavailable(f"no JWT authorities for {trust_domain}")
            raise InvalidClaim("JWT-SVIDs of this trust domain are not accepted")
        return keys

    def domain_keys(self) -> Mapping[TrustDomain, JWKSet]:
        """Each accepted trust domain's JWT authorities, the same mapping while the bundle set
        is the same object (see :meth:`TrustDomainKeySource.domain_keys`)."""
        return self._snapshot()[2]

    def _snapshot(self) -> tuple[BundleSet, JWKSet, Mapping[TrustDomain, JWKSet]]:
        try:
            bundle_set = self._bundles.get_bundle_set()
        except ZeroTrustError as exc:
            raise KeysUnavailable(f"bundle source failed: {exc}") from None
        cached = self._cached
        if cached is not None and cached[0] is bundle_set:
            return cached
        with self._lock:
            cached = self._cached
            if cached is not None and cached[0] is bundle_set:
                return cached
            previous = cached[2] if cached is not None else {}
            by_domain: dict[TrustDomain, JWKSet] = {}
            for bundle in bundle_set:
                td = bundle.trust_domain
                if self._listed is not None and td not in self._listed:
                    continue
                try:
                    keys = _jwt_keys(bundle)
                except KeysUnavailable:
                    continue  # no (usable) JWT authority: that domain's tokens are refused
                old = previous.get(td)
                by_domain[td] = old if old is not None and old == keys else keys
            if not by_domain:
                raise KeysUnavailable("no trust domain of the bundle set has JWT authorities")
            merged = JWKSet([key for keys in by_domain.values() for key in keys])
            if cached is not None and cached[1] == merged:
                merged = cached[1]  # the same keys: a verifier's cache stays
            snapshot = (bundle_set, merged, by_domain)
            self._cached = snapshot
            return snapshot

    def __repr__(self) -> str:
        listed = "None" if self._listed is None else sorted(td.name for td in self._listed)
        return f"SpiffeJwtBundleSetKeySource(trust_domains={listed!r})"
