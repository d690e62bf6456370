"""JWT-SVID verification keys from SPIFFE trust bundles.

:class:`SpiffeJwtBundleKeySource` turns the JWT authorities of one trust domain's bundle into
a :class:`~zerotrust.tokens.JWKSet`, reading the bundle from any X.509 bundle source (a
:class:`~zerotrust.TrustBundle`, a :class:`~zerotrust.BundleSet`, a file or rotating source,
a Workload API source). The set is rebuilt only when the source hands out a different bundle
object, and when the rebuilt set holds the same keys the previous set object is kept, so a
rotation of X.509 authorities alone does not empty the verified-token cache.
"""

from __future__ import annotations

import threading

from zerotrust.errors import ConfigurationError, KeysUnavailable, ZeroTrustError
from zerotrust.identity import TrustDomain
from zerotrust.tokens.jwks import JWKSet
from zerotrust.x509.bundle import TrustBundle
from zerotrust.x509.sources import X509BundleSource

__all__ = ["SpiffeJwtBundleKeySource"]


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
    keys = JWKSet.from_dict({"keys": [{**jwk, "kid": kid} for kid, jwk in authorities.items()]})
    if len(keys) == 0:
        raise KeysUnavailable(
            f"the bundle of {bundle.trust_domain} has no usable JWT authority "
            f"({len(keys.skipped)} skipped)"
        )
    return keys
