"""Trust bundles: the authorities of one trust domain, and sets of them for federation.

A :class:`TrustBundle` is an immutable snapshot. "Updating" a bundle builds a new one whose
authorities are exactly the new list: an authority that is gone from the source is gone from the
bundle. Peers are always verified against the bundle of **their own** trust domain.

A bundle may be empty: a trust domain that publishes ``{"keys": []}`` has withdrawn every
authority it published (SPIFFE Trust Domain and Bundle 4.1.3), and nothing of it verifies.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.verification import Store

from zerotrust.errors import BundleError, ConfigurationError, NoTrustBundle
from zerotrust.identity import SpiffeId, TrustDomain
from zerotrust.tokens._json import JSONError, loads_object, thaw
from zerotrust.tokens._jwk import JWK
from zerotrust.tokens._jwk_codec import PRIVATE_MEMBERS, public_key_from_members, public_members
from zerotrust.x509._certs import (
    MAX_PEM_BYTES,
    PARSE_ERRORS,
    certs_to_pem,
    check_names,
    fingerprint,
    load_der_certificate,
    load_pem_certs,
    signing_flags,
)

__all__ = ["BundleSet", "TrustBundle"]

_MAX_JWKS_BYTES = MAX_PEM_BYTES
_MAX_KEYS = 1000
_MAX_JSON_DEPTH = 8
#: JWK key types an authority may have; an element of any other type is ignored (4.2.1).
_KEY_TYPES = frozenset({"EC", "OKP", "RSA"})


@final
class TrustBundle:
    """The X.509 (and JWT) authorities of one trust domain. Immutable and hashable by content.

    X.509 authorities must be CA certificates (basic constraints ``CA:TRUE``). JWT authorities
    are public JWKs keyed by their key id: one with private or secret members, one that is not a
    usable public signing key, a ``kid`` member other than its key or a ``use`` other than
    ``jwt-svid`` is refused; each is held with ``kid`` and ``use: jwt-svid`` set. A bundle without
    any authority is valid and trusts nothing (a domain that withdrew all its keys).
    ``refresh_hint`` and ``sequence_number`` are ``None`` or non-negative integers.
    """

    __slots__ = (
        "_bundle_set",
        "_fingerprints",
        "_jwt_authorities",
        "_store",
        "_trust_domain",
        "_x509_authorities",
        "refresh_hint",
        "sequence_number",
    )

    _bundle_set: BundleSet | None
    _fingerprints: frozenset[str]
    _jwt_authorities: Mapping[str, Mapping[str, Any]]
    _store: Store | None
    _trust_domain: TrustDomain
    _x509_authorities: tuple[x509.Certificate, ...]
    refresh_hint: int | None
    sequence_number: int | None

    def __init__(
        self,
        trust_domain: TrustDomain | str,
        x509_authorities: Iterable[x509.Certificate] = (),
        *,
        jwt_authorities: Mapping[str, Mapping[str, Any]] | None = None,
        refresh_hint: int | None = None,
        sequence_number: int | None = None,
    ) -> None:
        td = (
            trust_domain
            if isinstance(trust_domain, TrustDomain)
            else TrustDomain.parse(trust_domain)
        )
        authorities: list[x509.Certificate] = []
        seen: set[str] = set()
        for cert in x509_authorities:
            if not isinstance(cert, x509.Certificate):
                raise BundleError("x509 authorities must be cryptography Certificate objects")
            try:
                check_names(cert)
            except PARSE_ERRORS:
                raise BundleError(
                    f"an authority of {td} has a name that cannot be decoded "
                    f"({fingerprint(cert)[:16]})"
                ) from None
            _require_ca(cert, td)
            fp = fingerprint(cert)
            if fp not in seen:  # duplicates collapse; order is kept
                seen.add(fp)
                authorities.append(cert)
        if jwt_authorities is None:
            jwt_authorities = {}
        elif not isinstance(jwt_authorities, Mapping):
            raise BundleError("jwt authorities must be a mapping of key id to JWK")
        jwt = {kid: _jwt_authority(kid, jwk) for kid, jwk in jwt_authorities.items()}
        set_ = object.__setattr__
        set_(self, "_trust_domain", td)
        set_(self, "_x509_authorities", tuple(authorities))
        set_(self, "_fingerprints", frozenset(seen))
        set_(self, "_jwt_authorities", MappingProxyType(jwt))
        set_(self, "_store", None)
        set_(self, "_bundle_set", None)
        # what from_jwks would refuse is never published by to_jwks
        set_(self, "refresh_hint", _non_negative("refresh_hint", refresh_hint))
        set_(self, "sequence_number", _non_negative("sequence_number", sequence_number))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("TrustBundle is immutable")

    # --- accessors -------------------------------------------------------------------------

    @property
    def trust_domain(self) -> TrustDomain:
        """The trust domain whose authorities this bundle holds."""
        return self._trust_domain

    @property
    def x509_authorities(self) -> tuple[x509.Certificate, ...]:
        """The X.509 CA certificates of the trust domain, in order, without duplicates (may be
        empty)."""
        return self._x509_authorities

    @property
    def jwt_authorities(self) -> Mapping[str, Mapping[str, Any]]:
        """JWT authorities as public JWK dicts keyed by key id, each with that ``kid`` and
        ``use: jwt-svid`` (as :meth:`to_jwks` publishes them)."""
        return self._jwt_authorities

    def has_authority(self, cert: x509.Certificate) -> bool:
        """Whether ``cert`` itself is one of this bundle's X.509 authorities, compared by the
        SHA-256 fingerprint of its DER encoding (the same key or subject is not enough)."""
        return fingerprint(cert) in self._fingerprints

    def x509_store(self) -> Store:
        """A ``cryptography`` verification store holding exactly this bundle's authorities."""
        store = self._store
        if store is None:
            if not self._x509_authorities:
                raise NoTrustBundle(f"bundle for {self._trust_domain} has no X.509 authorities")
            store = Store(list(self._x509_authorities))
            object.__setattr__(self, "_store", store)
        return store

    def with_x509_authorities(self, authorities: Iterable[x509.Certificate]) -> TrustBundle:
        """A new bundle whose X.509 authorities are exactly ``authorities``."""
        return TrustBundle(
            self._trust_domain,
            authorities,
            jwt_authorities=self._jwt_authorities,
            refresh_hint=self.refresh_hint,
            sequence_number=self.sequence_number,
        )

    # --- PEM -------------------------------------------------------------------------------

    @classmethod
    def from_pem(cls, trust_domain: TrustDomain | str, data: bytes | str) -> TrustBundle:
        """The bundle of the CA certificates in PEM ``data`` (at least one: PEM has no way to
        say "no authority", so an empty document is refused as a mistake)."""
        try:
            certs = load_pem_certs(data, what="bundle")
        except ValueError as exc:
            raise BundleError(str(exc)) from exc
        return cls(trust_domain, certs)

    def to_pem(self) -> bytes:
        """The X.509 authorities as concatenated PEM certificates (``b""`` if there are none)."""
        return certs_to_pem(self._x509_authorities)

    # --- SPIFFE bundle format (JWKS) --------------------------------------------------------

    @classmethod
    def from_jwks(
        cls, trust_domain: TrustDomain | str, data: bytes | str | Mapping[str, Any]
    ) -> TrustBundle:
        """Parse the SPIFFE trust bundle format (a JWKS with ``use: x509-svid`` / ``jwt-svid``)."""
        doc = _load_json(data) if isinstance(data, (bytes, str)) else data
        if not isinstance(doc, Mapping):
            raise BundleError("bundle document is not a JSON object")
        keys = doc.get("keys")
        if not isinstance(keys, list):
            raise BundleError("bundle document has no 'keys' list")
        if len(keys) > _MAX_KEYS:
            raise BundleError(f"bundle document has more than {_MAX_KEYS} keys")
        x509_authorities: list[x509.Certificate] = []
        jwt_authorities: dict[str, Mapping[str, Any]] = {}
        for index, key in enumerate(keys):
            if not isinstance(key, Mapping):
                raise BundleError(f"key {index} is not an object")
            kty = key.get("kty")
            if not isinstance(kty, str) or kty not in _KEY_TYPES:
                continue  # an unknown (or missing) key type: the whole element is ignored
            use = key.get("use")
            if use == "x509-svid":
                authority = _x5c_authority(key, index)
                if authority is not None:
                    x509_authorities.append(authority)
            elif use == "jwt-svid":
                kid = key.get("kid")
                if not isinstance(kid, str) or not kid:
                    raise BundleError(f"jwt-svid key {index} has no 'kid'")
                if kid in jwt_authorities and jwt_authorities[kid] != dict(key):
                    # one kid naming two keys is ambiguous; the same entry twice is not
                    raise BundleError(f"jwt-svid key id {kid!r} names two different keys")
                jwt_authorities[kid] = dict(key)  # checked by the constructor (_jwt_authority)
            # other uses are ignored, as the SPIFFE bundle format requires
        return cls(
            trust_domain,
            x509_authorities,
            jwt_authorities=jwt_authorities,
            refresh_hint=_optional_int(doc, "spiffe_refresh_hint"),
            sequence_number=_optional_int(doc, "spiffe_sequence"),
        )

    def to_jwks(self) -> dict[str, Any]:
        """The bundle in the SPIFFE bundle format: a JWKS ``dict`` of ``x509-svid`` and
        ``jwt-svid`` public keys, with ``spiffe_refresh_hint`` and ``spiffe_sequence`` when set."""
        keys: list[dict[str, Any]] = []
        for cert in self._x509_authorities:
            der = cert.public_bytes(serialization.Encoding.DER)
            keys.append(
                {
                    **_public_jwk_fields(cert),
                    "use": "x509-svid",
                    "x5c": [base64.b64encode(der).decode()],
                }
            )
        keys.extend(dict(jwk) for jwk in self._jwt_authorities.values())  # kid and use set
        doc: dict[str, Any] = {"keys": keys}
        if self.refresh_hint is not None:
            doc["spiffe_refresh_hint"] = self.refresh_hint
        if self.sequence_number is not None:
            doc["spiffe_sequence"] = self.sequence_number
        return doc

    # --- value semantics --------------------------------------------------------------------

    def _key(self) -> tuple[object, ...]:
        return (self._trust_domain, self._fingerprints, tuple(sorted(self._jwt_authorities)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TrustBundle):
            return NotImplemented
        return self._key() == other._key() and dict(self._jwt_authorities) == dict(
            other._jwt_authorities
        )

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"TrustBundle({self._trust_domain.name!r},"
            f" x509_authorities={len(self._x509_authorities)},"
            f" jwt_authorities={len(self._jwt_authorities)})"
        )

    # A bundle is its own (static) bundle source: always the same snapshot object, so
    # consumers that compare snapshots by identity (TLS contexts) see no change.
    def get_bundle_set(self) -> BundleSet:
        """A :class:`BundleSet` of this bundle alone, always the same object: a bundle is its own
        (static) bundle source."""
        bundle_set = self._bundle_set
        if bundle_set is None:
            bundle_set = BundleSet([self])
            object.__setattr__(self, "_bundle_set", bundle_set)
        return bundle_set


@final
class BundleSet:
    """Bundles of several trust domains (federation). Immutable; lookups never merge domains."""

    __slots__ = ("_bundles",)

    _bundles: Mapping[TrustDomain, TrustBundle]

    def __init__(self, bundles: Iterable[TrustBundle] = ()) -> None:
        by_td: dict[TrustDomain, TrustBundle] = {}
        for bundle in bundles:
            if not isinstance(bundle, TrustBundle):
                raise BundleError("BundleSet holds TrustBundle objects only")
            if bundle.trust_domain in by_td:
                raise BundleError(f"two bundles for trust domain {bundle.trust_domain}")
            by_td[bundle.trust_domain] = bundle
        object.__setattr__(self, "_bundles", MappingProxyType(by_td))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("BundleSet is immutable")

    def get(self, trust_domain: TrustDomain | SpiffeId | str) -> TrustBundle | None:
        """The bundle of ``trust_domain`` (or of a SPIFFE ID's trust domain), or ``None``.

        A string that is not a valid trust domain or SPIFFE ID raises
        :class:`~zerotrust.errors.InvalidTrustDomain`."""
        return self._bundles.get(_as_td(trust_domain))

    def get_bundle_for_trust_domain(
        self, trust_domain: TrustDomain | SpiffeId | str
    ) -> TrustBundle:
        """The bundle of ``trust_domain``; raises :class:`~zerotrust.errors.NoTrustBundle`."""
        td = _as_td(trust_domain)
        bundle = self._bundles.get(td)
        if bundle is None:
            raise NoTrustBundle(f"no trust bundle for trust domain {td}")
        return bundle

    def with_bundle(self, bundle: TrustBundle) -> BundleSet:
        """A new set where ``bundle`` replaces any bundle of its trust domain."""
        others = [b for td, b in self._bundles.items() if td != bundle.trust_domain]
        return BundleSet([*others, bundle])

    def without(self, trust_domain: TrustDomain | str) -> BundleSet:
        """A new set without the bundle of ``trust_domain`` (the same bundles if it had none)."""
        td = _as_td(trust_domain)
        return BundleSet(b for t, b in self._bundles.items() if t != td)

    @property
    def trust_domains(self) -> frozenset[TrustDomain]:
        """The trust domains this set holds a bundle for."""
        return frozenset(self._bundles)

    def all_x509_authorities(self) -> list[x509.Certificate]:
        """Every X.509 authority of every domain (for OpenSSL's first-pass store only)."""
        return [cert for b in self._bundles.values() for cert in b.x509_authorities]

    def __iter__(self) -> Iterator[TrustBundle]:
        return iter(self._bundles.values())

    def __len__(self) -> int:
        return len(self._bundles)

    def __contains__(self, trust_domain: object) -> bool:
        if isinstance(trust_domain, (TrustDomain, SpiffeId, str)):
            try:
                return _as_td(trust_domain) in self._bundles
            except ValueError:
                return False
        return False

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BundleSet):
            return NotImplemented
        return dict(self._bundles) == dict(other._bundles)

    def __hash__(self) -> int:
        return hash(frozenset(self._bundles.items()))

    def __repr__(self) -> str:
        return f"BundleSet({sorted(td.name for td in self._bundles)})"

    def get_bundle_set(self) -> BundleSet:
        """This set itself: a bundle set is its own (static) bundle source."""
        return self


def _as_td(value: TrustDomain | SpiffeId | str) -> TrustDomain:
    if isinstance(value, TrustDomain):
        return value
    if isinstance(value, SpiffeId):
        return value.trust_domain
    return TrustDomain.parse(value)


def _load_json(data: bytes | str) -> Any:
    try:
        raw = data.encode() if isinstance(data, str) else data
    except UnicodeEncodeError:  # a lone surrogate: no JSON text can hold it
        raise BundleError("bundle document is not valid: not UTF-8 text") from None
    if len(raw) > _MAX_JWKS_BYTES:
        raise BundleError(f"bundle document exceeds {_MAX_JWKS_BYTES} bytes")
    try:  # the token parser's strict JSON: bounded depth, no duplicate members
        return thaw(loads_object(raw, max_depth=_MAX_JSON_DEPTH))
    except JSONError as exc:
        raise BundleError(f"bundle document is not valid: {exc}") from None


def _jwt_authority(kid: object, jwk: object) -> Mapping[str, Any]:
    """The JWT authority ``kid`` as a bundle holds and publishes it: the public members of
    ``jwk`` with ``kid`` and ``use: jwt-svid`` set (Trust Domain and Bundle 4.2.2, JWT-SVID 6).

    The one check of every JWT authority, whether given to the constructor or read by
    :meth:`TrustBundle.from_jwks`: no private or secret members (RFC 7517 5), a ``kid`` member,
    if any, equal to the key it is held under (verification looks keys up by that key), a ``use``
    member, if any, of ``jwt-svid``, and a key that :class:`~zerotrust.tokens.JWK` accepts as
    verifiers will read it (key type, curve and size, points on the curve, ``alg`` fitting the
    key, ``key_ops``). Messages name the key id, never key material."""
    if not isinstance(kid, str) or not kid:
        raise BundleError("a jwt-svid key id must be a non-empty string")
    if not isinstance(jwk, Mapping) or not all(isinstance(name, str) for name in jwk):
        raise BundleError(f"jwt-svid key {kid!r} is not a JWK object")
    if PRIVATE_MEMBERS & jwk.keys():
        raise BundleError(f"jwt-svid key {kid!r} contains private or secret material")
    if jwk.get("kid", kid) != kid:
        raise BundleError(f"jwt-svid key {kid!r} has another key id in its 'kid' member")
    if jwk.get("use", "jwt-svid") != "jwt-svid":
        raise BundleError(f"jwt-svid key {kid!r} has a 'use' other than 'jwt-svid'")
    authority = {**jwk, "kid": kid, "use": "jwt-svid"}
    try:
        JWK.from_dict(authority)
    except ConfigurationError as exc:
        raise BundleError(f"jwt-svid key {kid!r} is not a usable public key: {exc}") from None
    return MappingProxyType(authority)


def _x5c_authority(key: Mapping[str, Any], index: int) -> x509.Certificate | None:
    """The CA certificate of an ``x509-svid`` entry (X509-SVID 6.2): an entry without ``x5c``
    values is ignored, and only the first value counts. The entry's own key members, when
    present, must describe the certificate's key (RFC 7517 4.7)."""
    x5c = key.get("x5c")
    if x5c is None or x5c == []:
        return None
    if not isinstance(x5c, list) or not isinstance(x5c[0], str):
        raise BundleError(f"x509-svid key {index} has a malformed 'x5c'")
    try:
        cert = load_der_certificate(base64.b64decode(x5c[0], validate=True))
    except ValueError as exc:
        raise BundleError(f"x509-svid key {index} has an invalid certificate") from exc
    described = _public_jwk_fields(cert)
    if key.get("kty") != described["kty"]:
        raise BundleError(f"x509-svid key {index}: 'kty' does not match its certificate's key")
    # An entry may leave its key members out (x5c is what counts); those it gives are read as
    # a key and compared as one, as go-jose does (an RSA n with a leading zero octet, or e on
    # four octets, is the same key).
    if "crv" in key and key["crv"] != described.get("crv"):
        raise BundleError(f"x509-svid key {index}: its key is not its certificate's key")
    if any(name in key for name in ("x", "y", "n", "e")):
        try:
            given = public_members(public_key_from_members(key))
        except ConfigurationError:
            raise BundleError(f"x509-svid key {index} has invalid key members") from None
        if given != described:
            raise BundleError(f"x509-svid key {index}: its key is not its certificate's key")
    return cert


def _require_ca(cert: x509.Certificate, td: TrustDomain) -> None:
    """An X.509 authority is a CA certificate: a leaf listed as one would vouch for itself.
    (``keyCertSign``, and extensions cryptography cannot read, are left to path validation: a
    legacy root without it in a PEM bundle verifies nothing, but does not stop the others.)"""
    try:
        ca, _ = signing_flags(cert)
    except ValueError:
        return
    if not ca:
        raise BundleError(
            f"an authority of {td} is not a CA certificate ({fingerprint(cert)[:16]})"
        )


def _public_jwk_fields(cert: x509.Certificate) -> dict[str, Any]:
    try:
        return dict(public_members(cert.public_key()))  # type: ignore[arg-type]
    except ConfigurationError:
        raise BundleError("unsupported authority key type") from None


def _optional_int(doc: Mapping[str, Any], name: str) -> int | None:
    return _non_negative(name, doc.get(name))


def _non_negative(name: str, value: object) -> int | None:
    """``value`` if it is ``None`` or a non-negative integer (SPIFFE Trust Domain and Bundle
    4.1.1 and 4.1.2); raises :class:`~zerotrust.errors.BundleError` naming ``name`` otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BundleError(f"{name!r} must be a non-negative integer")
    return value
