"""Workload API messages to zerotrust values: X.509-SVIDs, trust bundles, JWT bundles.

Every function takes the fields of a message as plain Python values and returns immutable
zerotrust objects, or raises a :class:`~zerotrust.errors.ZeroTrustError` that refuses the
whole update (a half-applied update never becomes a snapshot). Certificates arrive as
concatenated ASN.1 DER, private keys as unencrypted PKCS#8 DER, JWT bundles as JWKS
documents keyed by trust domain. Certificate revocation lists are not used.

Two parts are judged on their own, because the agent's bundles must always apply (they may
withdraw an authority):

* a federated domain's bundle: an empty one (how SPIRE sends a domain without X.509
  authorities) trusts nothing of that domain, and so does one that cannot be read, or is keyed
  by a name that is no trust domain, with a warning. One federated domain can neither stop the
  workload's own rotation nor keep its old authorities trusted;
* the workload's own SVID, once converted: when no peer would accept it (its chain does not
  validate to its own bundle in the update, it expired, or it becomes valid only more than
  :data:`MAX_CLOCK_SKEW` ahead), the update's bundles apply and the previous SVID is kept
  (:attr:`X509Context.refused` says why), if the update still holds its identity;
* the SVID this source serves missing from the update (the agent redacted it): the update's
  bundles apply and no SVID is served any more (the specification says a client ceases to
  use redacted SVIDs).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from zerotrust.errors import BundleError, SvidError, ZeroTrustError
from zerotrust.identity import TrustDomain
from zerotrust.tokens._json import JSONError, loads_dict, thaw
from zerotrust.x509._certs import (
    MAX_CERT_DER_BYTES,
    MAX_CHAIN_LENGTH,
    MAX_PEM_BYTES,
    PARSE_ERRORS,
    load_der_certificate,
)
from zerotrust.x509.bundle import BundleSet, TrustBundle
from zerotrust.x509.svid import X509Svid
from zerotrust.x509.verify import verify_x509_svid

__all__ = ["SvidEntry", "X509Context", "jwt_bundle_set", "pick", "withdrawn", "x509_context"]

_MAX_BUNDLE_CERTS: Final = 1000
_MAX_JWKS_BYTES: Final = 1 << 20
#: How far ahead of our clock an SVID's ``notBefore`` may be (the agent's clock ahead of ours)
#: for it to be taken now: it is sent only once, and will be valid soon.
MAX_CLOCK_SKEW: Final = timedelta(minutes=5)
_log = logging.getLogger("zerotrust.spire")


@dataclass(frozen=True, slots=True)
class SvidEntry:
    """The fields of one ``X509SVID`` message (the private key is kept out of the repr)."""

    spiffe_id: str
    cert_chain: bytes
    private_key: bytes = field(repr=False)
    bundle: bytes
    hint: str = ""


@dataclass(frozen=True, slots=True)
class X509Context:
    """One X.509 update: the chosen SVID and the bundles of every trusted domain.

    ``refused`` says why the update's own SVID was not taken (``svid`` is then the previous
    one, and ``bundles`` the update's). ``svid`` is ``None`` once the agent withdrew the SVID
    this source serves (SPIFFE Workload API §5.2.1: a client ceases to use redacted SVIDs)."""

    svid: X509Svid | None
    bundles: BundleSet
    refused: str | None = None


def pick(entries: Sequence[Any], spiffe_id: str | None, hint: str | None) -> Any:
    """The first entry matching ``spiffe_id`` and ``hint`` (the first entry without either)."""
    for entry in entries:
        if spiffe_id is not None and entry.spiffe_id != spiffe_id:
            continue
        if hint is not None and entry.hint != hint:
            continue
        return entry
    wanted = " and ".join(
        f"{name} {value!r}" for name, value in (("SPIFFE ID", spiffe_id), ("hint", hint)) if value
    )
    raise SvidError(f"no SVID with {wanted}" if wanted else "the update holds no SVID")


def split_der(data: bytes, *, limit: int, what: str) -> list[x509.Certificate]:
    """Parse concatenated DER certificates (at most ``limit`` of them)."""
    if not data:
        raise BundleError(f"{what} holds no certificate")
    if len(data) > MAX_PEM_BYTES:
        raise BundleError(f"{what} exceeds {MAX_PEM_BYTES} bytes")
    certs: list[x509.Certificate] = []
    offset = 0
    while offset < len(data):
        if len(certs) == limit:
            raise BundleError(f"{what} holds more than {limit} certificates")
        end = offset + _der_length(data, offset, what)
        try:
            certs.append(load_der_certificate(data[offset:end]))
        except ValueError:
            raise BundleError(f"{what}: certificate {len(certs)} is not valid DER") from None
        offset = end
    return certs


def _der_length(data: bytes, offset: int, what: str) -> int:
    """The size of the DER SEQUENCE starting at ``offset`` (header included)."""
    if len(data) - offset < 2 or data[offset] != 0x30:
        raise BundleError(f"{what} is not a sequence of DER certificates")
    first = data[offset + 1]
    if first < 0x80:
        header, length = 2, first
    else:
        count = first & 0x7F
        if not 1 <= count <= 3 or len(data) - offset < 2 + count:
            raise BundleError(f"{what} has an invalid DER length")
        header = 2 + count
        length = int.from_bytes(data[offset + 2 : offset + header], "big")
    if length > MAX_CERT_DER_BYTES or offset + header + length > len(data):
        raise BundleError(f"{what} has a truncated or oversized certificate")
    return header + length


def _svid(entry: SvidEntry) -> X509Svid:
    chain = split_der(entry.cert_chain, limit=MAX_CHAIN_LENGTH, what="SVID certificate chain")
    try:
        key = serialization.load_der_private_key(entry.private_key, password=None)
    except PARSE_ERRORS:
        raise SvidError("SVID private key is not unencrypted PKCS#8 DER") from None
    if not isinstance(
        key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey)
    ):
        raise SvidError("unsupported SVID private key type")
    svid = X509Svid(chain, key)
    if entry.spiffe_id and str(svid.spiffe_id) != entry.spiffe_id:
        raise SvidError("the SVID's certificate does not carry the SPIFFE ID it was sent with")
    return svid


def x509_context(
    entries: Sequence[SvidEntry],
    federated: Mapping[str, bytes],
    *,
    spiffe_id: str | None = None,
    hint: str | None = None,
    previous: X509Context | None,
    now: datetime,
) -> X509Context:
    """Convert an ``X509SVIDResponse`` received at ``now``; unchanged parts keep their
    previous objects (see the module documentation for what is judged on its own)."""
    try:
        chosen = pick(entries, spiffe_id, hint)
    except SvidError:
        if previous is None:
            raise
        chosen = None  # withdrawn (redacted): no longer served, the bundles still apply
    svid = _svid(chosen) if chosen is not None else None
    if svid is not None and previous is not None and _same_chain(previous.svid, svid):
        svid = previous.svid  # a resent SVID: consumers see no change, reload nothing
    bundles: dict[TrustDomain, TrustBundle] = {}
    for entry in entries:
        td = TrustDomain.parse(entry.spiffe_id) if entry.spiffe_id else None
        if td is not None and td not in bundles:
            bundles[td] = _x509_bundle(td, entry.bundle)
    if svid is not None and svid.spiffe_id.trust_domain not in bundles:
        raise BundleError("the update holds no bundle for the SVID's trust domain")
    for key, der in federated.items():
        try:
            td = _trust_domain(key)
        except ZeroTrustError:
            _log.warning("Workload API: a federated bundle keyed by an invalid name is ignored")
            continue
        if td not in bundles:  # a domain's own bundle wins over a federated copy
            bundles[td] = _federated_bundle(td, der)
    bundle_set = _reuse(bundles.values(), previous.bundles if previous else None)
    if svid is None:
        return X509Context(None, bundle_set, withdrawn(spiffe_id, hint))
    refused = _unusable(svid, bundle_set, now)
    if refused is None:
        return X509Context(svid, bundle_set)
    if previous is None:  # nothing to keep serving
        raise SvidError(refused)
    if previous.svid is None:  # withdrawn before: still none to serve, the bundles apply
        return X509Context(None, bundle_set, refused)
    kept_id = str(previous.svid.spiffe_id)
    if not any(e.spiffe_id == kept_id for e in entries if hint is None or e.hint == hint):
        # the identity served before is not in the update (redacted): never kept
        return X509Context(None, bundle_set, f"{refused}; {withdrawn(kept_id, hint)}")
    if _unusable(previous.svid, bundle_set, now) is not None:
        refused += "; the SVID kept does not validate to the new bundles either"
    return X509Context(previous.svid, bundle_set, refused)


def withdrawn(spiffe_id: str | None = None, hint: str | None = None) -> str:
    """Why no SVID is served: the agent stopped sending the one this source serves."""
    wanted = " and ".join(
        f"{name} {value!r}" for name, value in (("SPIFFE ID", spiffe_id), ("hint", hint)) if value
    )
    which = f"the SVID with {wanted}" if wanted else "every SVID"
    return f"the Workload API withdrew {which}: it is no longer served"


def _x509_bundle(td: TrustDomain, der: bytes) -> TrustBundle:
    return TrustBundle(td, split_der(der, limit=_MAX_BUNDLE_CERTS, what=f"bundle of {td}"))


def _federated_bundle(td: TrustDomain, der: bytes) -> TrustBundle:
    """A federated domain's bundle; empty or unreadable, one that trusts nothing."""
    if not der:
        return TrustBundle(td)
    try:
        return _x509_bundle(td, der)
    except Exception as exc:  # whatever it is, nothing of it is trusted
        reason = exc if isinstance(exc, ZeroTrustError) else type(exc).__name__
        _log.warning("Workload API: bundle of %s refused, nothing of it is trusted: %s", td, reason)
        return TrustBundle(td)


def _unusable(svid: X509Svid, bundles: BundleSet, now: datetime) -> str | None:
    """Why no peer would accept ``svid`` with ``bundles``, or ``None``."""
    not_before = svid.leaf.not_valid_before_utc
    if now < not_before <= now + MAX_CLOCK_SKEW:
        now = not_before  # the agent's clock a little ahead: judge it from when it will be
    try:
        verify_x509_svid(svid.cert_chain, bundles, now=now)
    except ZeroTrustError as exc:
        return f"the SVID {svid.spiffe_id} is not usable: {exc}"
    return None


def _same_chain(a: X509Svid | None, b: X509Svid) -> bool:
    return a is not None and a.cert_chain == b.cert_chain  # certificates compare by their DER


def _trust_domain(key: str) -> TrustDomain:
    try:
        return TrustDomain.parse(key)
    except ZeroTrustError:
        raise BundleError("a bundle is keyed by an invalid trust domain") from None


def jwt_bundle_set(
    documents: Mapping[str, bytes], previous: BundleSet | None
) -> tuple[BundleSet, str | None]:
    """Convert a ``JWTBundlesResponse``: one JWT-only :class:`TrustBundle` per trust domain,
    and why a domain was left out, if one was.

    Keys without ``use`` (as SPIRE publishes them) are JWT authorities; ``x509-svid`` keys
    are ignored. A domain whose document holds no JWT authority, or cannot be read, is left
    out: none of its tokens verify (fail closed), and the other domains' keys still change
    (one bad document cannot keep a withdrawn key of another domain in use).
    """
    bundles: list[TrustBundle] = []
    problems: list[str] = []
    for key, raw in documents.items():
        try:
            bundle = _jwt_bundle(_trust_domain(key), raw)
        except ZeroTrustError as exc:
            problems.append(str(exc))
            continue
        if bundle is not None:
            bundles.append(bundle)
    return _reuse(bundles, previous), "; ".join(problems) or None


def _jwt_bundle(td: TrustDomain, raw: bytes) -> TrustBundle | None:
    if len(raw) > _MAX_JWKS_BYTES:
        raise BundleError(f"JWT bundle of {td} exceeds {_MAX_JWKS_BYTES} bytes")
    try:
        doc = loads_dict(raw)
    except JSONError as exc:
        raise BundleError(f"JWT bundle of {td} is not a JSON object: {exc}") from None
    keys = doc.get("keys")
    if not isinstance(keys, tuple):
        raise BundleError(f"JWT bundle of {td} has no 'keys' list")
    if not all(isinstance(k, Mapping) for k in keys):
        raise BundleError(f"JWT bundle of {td} holds a key that is not an object")
    jwt_keys = [
        {"use": "jwt-svid", **thaw(k)} for k in keys if k.get("use", "jwt-svid") == "jwt-svid"
    ]
    if not jwt_keys:
        return None
    try:
        return TrustBundle.from_jwks(td, {"keys": jwt_keys})
    except BundleError as exc:
        raise BundleError(f"JWT bundle of {td}: {exc}") from None


def _reuse(bundles: Iterable[TrustBundle], previous: BundleSet | None) -> BundleSet:
    """A set of ``bundles`` where each bundle equal to its previous version is that object,
    and the whole previous set when nothing changed (identity tells consumers "no change")."""
    if previous is None:
        return BundleSet(bundles)
    kept = []
    for bundle in bundles:
        old = previous.get(bundle.trust_domain)
        kept.append(old if old is not None and old == bundle else bundle)
    new = BundleSet(kept)
    return previous if new == previous else new
