"""X509-SVID peer validation (SPIFFE X509-SVID specification, go-spiffe ``x509svid.Verify``).

The chain must validate to the bundle of **the leaf's own trust domain**: the authorities of
trust domain B can never vouch for ``spiffe://A/...``. Path building and signature checks are
done by :mod:`cryptography.x509.verification`; the SVID profile rules are checked here so each
failure has a precise, stable code.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Final, Literal, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    VerificationError,
)

from zerotrust._clock import SYSTEM_CLOCK, to_utc
from zerotrust._text import escaped
from zerotrust.errors import (
    CertificateExpired,
    CertificateNotYetValid,
    ConfigurationError,
    InvalidSpiffeId,
    MalformedCertificate,
    SvidProfileViolation,
    UntrustedCertificate,
)
from zerotrust.identity import SpiffeId
from zerotrust.tokens.algorithms import MAX_RSA_BITS, MAX_RSA_EXPONENT
from zerotrust.x509._certs import MAX_CHAIN_LENGTH, PARSE_ERRORS, fingerprint, load_der_chain
from zerotrust.x509.bundle import BundleSet
from zerotrust.x509.sources import X509BundleSource

__all__ = ["Role", "VerifiedPeer", "leaf_spiffe_id", "verify_peer_chain", "verify_x509_svid"]

#: Which side of the connection the *peer* is: a ``"client"`` certificate is checked by a
#: server, a ``"server"`` certificate by a client. It decides which extended key usage is needed.
Role = Literal["client", "server"]

#: The smallest RSA key a leaf may have, and the curves an EC leaf may use (cryptography's path
#: validation checks the issuers' keys, not the leaf's own). Other EC curves are refused as
#: ``unsupported_key``; Ed25519 and Ed448 leaves are accepted.
MIN_RSA_BITS = 2048
# Every certificate of a presented chain has the RSA bounds of JWKs (MAX_RSA_BITS and
# MAX_RSA_EXPONENT of zerotrust.tokens.algorithms). Path building may check up to 100
# signatures (cryptography's budget) with the keys of the chain's own certificates, which the
# sender chose: a 16,384-bit modulus with a 64-bit exponent makes each check cost about seven
# times what the largest key these bounds allow does.
#: The most name-constraint comparisons one step of path building may need: the names the
#: chain carries (the leaf's subject alternative names, and a subject per certificate) times
#: the subtrees of the name constraints of its certificates. Path building takes up to 100
#: steps through certificates the sender chose, each comparing every name with every subtree
#: (cryptography stops at 2**20 comparisons, about 100 ms): 400 names and 250 subtrees in a
#: chain of two certificates, 6 KB, came close.
MAX_CONSTRAINT_WORK = 1024
#: The most bytes of presented certificates :class:`VerifiedChains` keeps (a chain of ten 64 KiB
#: certificates is 640 KiB; a usual SVID chain, 1 to 3 KiB).
MAX_CACHED_CHAIN_BYTES = 16 * 1024 * 1024
_CURVES = frozenset({"secp256r1", "secp384r1", "secp521r1"})

_EKU_FOR_ROLE = {
    "client": ExtendedKeyUsageOID.CLIENT_AUTH,
    "server": ExtendedKeyUsageOID.SERVER_AUTH,
}


_LONG_AGO: Final = datetime.min.replace(tzinfo=timezone.utc)


@dataclass(frozen=True, slots=True)
class VerifiedPeer:
    """The outcome of a successful peer verification."""

    spiffe_id: SpiffeId
    #: Leaf first, ending with the bundle authority the chain validated to.
    chain: tuple[x509.Certificate, ...] = field(repr=False)
    #: SHA-256 of the leaf's DER encoding, lowercase hex.
    fingerprint: str
    #: When the first certificate of the chain expires: the path stops validating then.
    not_after: datetime = field(init=False, repr=False, compare=False)
    #: When the last certificate of the chain becomes valid: the path validates only from then.
    not_before: datetime = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ends = [cert.not_valid_after_utc for cert in self.chain]
        object.__setattr__(self, "not_after", min(ends) if ends else _LONG_AGO)
        starts = [cert.not_valid_before_utc for cert in self.chain]
        object.__setattr__(self, "not_before", max(starts) if starts else _LONG_AGO)

    @property
    def leaf(self) -> x509.Certificate:
        """The peer's own (leaf) certificate: the first of :attr:`chain`."""
        return self.chain[0]


def leaf_spiffe_id(cert: x509.Certificate) -> SpiffeId:
    """The SPIFFE ID of an X509-SVID leaf: its single URI SAN, a valid ID with a non-root path."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise SvidProfileViolation("missing_uri_san", "leaf has no URI SAN") from None
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
        # a malformed or duplicated extension: cryptography refuses to read any of them
        raise SvidProfileViolation("malformed_extension", "leaf has malformed extensions") from exc
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if not uris:
        raise SvidProfileViolation("missing_uri_san", "leaf has no URI SAN")
    if len(uris) > 1:
        raise SvidProfileViolation(
            "multiple_uri_sans", f"leaf has {len(uris)} URI SANs, needs exactly 1"
        )
    try:
        spiffe_id = SpiffeId.parse(uris[0])
    except InvalidSpiffeId as exc:
        raise SvidProfileViolation(
            "invalid_spiffe_id", f"URI SAN is not a SPIFFE ID ({exc.rule})"
        ) from exc
    if not spiffe_id.path:
        raise SvidProfileViolation("root_spiffe_id", "leaf SPIFFE ID has no path")
    return spiffe_id


def _check_leaf_key(leaf: x509.Certificate) -> None:
    try:
        key = leaf.public_key()
    except PARSE_ERRORS:
        raise SvidProfileViolation("unsupported_key", "leaf's public key cannot be read") from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise SvidProfileViolation(
                "weak_key", f"leaf's RSA key has {key.key_size} bits, fewer than {MIN_RSA_BITS}"
            )
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in _CURVES:
            raise SvidProfileViolation(
                "unsupported_key", "leaf's EC key is not on P-256, P-384 or P-521"
            )
    elif not isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        raise SvidProfileViolation("unsupported_key", "leaf's key type is not RSA, EC or EdDSA")


def _check_rsa_bounds(certs: Sequence[x509.Certificate]) -> None:
    """Refuse an RSA key of the presented chain larger than the bounds, before any signature
    is checked with it. A key that cannot be read is left to path validation (the leaf's was
    checked already)."""
    for index, cert in enumerate(certs):
        try:
            key = cert.public_key()
        except PARSE_ERRORS:
            continue
        if not isinstance(key, rsa.RSAPublicKey):
            continue
        which = "leaf" if index == 0 else f"certificate {index} of the chain"
        if key.key_size > MAX_RSA_BITS:
            raise SvidProfileViolation(
                "unsupported_key",
                f"{which} has an RSA key of {key.key_size} bits, more than {MAX_RSA_BITS}",
            )
        if key.public_numbers().e > MAX_RSA_EXPONENT:
            raise SvidProfileViolation(
                "unsupported_key", f"{which} has an RSA public exponent larger than 2**32"
            )


_E = TypeVar("_E", bound=x509.ExtensionType)


def _readable(cert: x509.Certificate, kind: type[_E]) -> _E | None:
    """``cert``'s extension of ``kind``; ``None`` when it has none, or one that cannot be read
    (left to path validation)."""
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except (
        x509.ExtensionNotFound,
        x509.DuplicateExtension,
        x509.UnsupportedGeneralNameType,
        ValueError,
    ):
        return None


def _check_constraint_work(certs: Sequence[x509.Certificate]) -> None:
    """Refuse a chain whose names times name-constraint subtrees exceed
    :data:`MAX_CONSTRAINT_WORK`, before path building compares them. Extensions that cannot be
    read are left to path validation (the leaf's were read already)."""
    subtrees = 0
    for cert in certs[1:]:
        constraints = _readable(cert, x509.NameConstraints)
        if constraints is None:
            continue
        subtrees += len(constraints.permitted_subtrees or ())
        subtrees += len(constraints.excluded_subtrees or ())
    if not subtrees:
        return
    san = certs[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = len(san) + len(certs)
    if names * subtrees > MAX_CONSTRAINT_WORK:
        raise SvidProfileViolation(
            "too_many_constraints",
            f"chain has {names} names and {subtrees} name-constraint subtrees: their product"
            f" exceeds {MAX_CONSTRAINT_WORK}",
        )


def _check_signing_ids(certs: Sequence[x509.Certificate]) -> None:
    """X509-SVID 3.2: the SPIFFE ID of a signing certificate (every certificate of ``certs``
    after the leaf), if it has one, has no path: it names a trust domain, never a workload. A
    URI SAN that is no valid SPIFFE ID is not one, and extensions that cannot be read are left
    to path validation."""
    for index, cert in enumerate(certs[1:], start=1):
        san = _readable(cert, x509.SubjectAlternativeName)
        if san is None:
            continue
        for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
            try:
                path = SpiffeId.parse(uri).path
            except InvalidSpiffeId:
                continue
            if path:
                raise SvidProfileViolation(
                    "signing_certificate_id",
                    f"certificate {index} of the chain is a signing certificate with a"
                    " workload's SPIFFE ID (one with a path)",
                )


def _check_leaf_profile(leaf: x509.Certificate, role: Role | None) -> None:
    _check_leaf_key(leaf)
    exts = leaf.extensions
    try:
        bc = exts.get_extension_for_class(x509.BasicConstraints).value
        if bc.ca:
            raise SvidProfileViolation("leaf_is_ca", "leaf certificate has the CA flag")
    except x509.ExtensionNotFound:
        pass
    try:
        ku = exts.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise SvidProfileViolation("missing_key_usage", "leaf has no key usage extension") from None
    if ku.key_cert_sign:
        raise SvidProfileViolation("leaf_key_cert_sign", "leaf may sign certificates (keyCertSign)")
    if ku.crl_sign:
        raise SvidProfileViolation("leaf_crl_sign", "leaf may sign CRLs (cRLSign)")
    if not ku.digital_signature:
        raise SvidProfileViolation("missing_digital_signature", "leaf lacks digitalSignature")
    if role is not None:
        try:
            eku = exts.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            return  # no EKU: any role
        if _EKU_FOR_ROLE[role] not in eku and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in eku:
            raise SvidProfileViolation(
                "extended_key_usage", f"leaf's extended key usage does not allow the {role} role"
            )


def _ee_policy() -> ExtensionPolicy:
    # WebPKI defaults for everything else; SAN and EKU are SPIFFE's business and checked above.
    # The authority key identifier only helps path building: the X509-SVID profile does not
    # require it of a leaf (go-spiffe accepts leaves without), so neither is it required here.
    return (
        ExtensionPolicy.webpki_defaults_ee()
        .may_be_present(x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)
        .may_be_present(x509.ExtendedKeyUsage, Criticality.AGNOSTIC, None)
        .may_be_present(x509.AuthorityKeyIdentifier, Criticality.NON_CRITICAL, None)
    )


def _ca_policy() -> ExtensionPolicy:
    # X509-SVID 4.4: signing certificates MAY carry an EKU, and the SVID's role is decided by
    # the leaf's (go-spiffe verifies with ExtKeyUsageAny): a CA's EKU never narrows the chain.
    return ExtensionPolicy.webpki_defaults_ca().may_be_present(
        x509.ExtendedKeyUsage, Criticality.AGNOSTIC, None
    )


@functools.cache
def _policies() -> tuple[ExtensionPolicy, ExtensionPolicy]:
    """Built on first use, not at import time (it needs cryptography fully initialised)."""
    return _ca_policy(), _ee_policy()


def verify_x509_svid(
    chain: Sequence[bytes | x509.Certificate],
    bundles: X509BundleSource,
    *,
    now: datetime | None = None,
    role: Role | None = None,
) -> VerifiedPeer:
    """Verify a peer's leaf-first chain (DER bytes or certificates) as an X509-SVID.

    ``bundles`` is a :class:`~zerotrust.BundleSet`, a :class:`~zerotrust.TrustBundle` or any bundle
    source. Raises a :class:`~zerotrust.errors.CertificateError` subclass on any failure.
    """
    if role is not None and role not in ("client", "server"):  # a typo would skip its check
        raise ConfigurationError(f"role must be 'client', 'server' or None, not {role!r}")
    certs = load_der_chain(chain)
    leaf = certs[0]
    spiffe_id = leaf_spiffe_id(leaf)
    _check_leaf_profile(leaf, role)
    _check_rsa_bounds(certs)
    _check_constraint_work(certs)
    when = to_utc(now) if now is not None else SYSTEM_CLOCK.now()
    if leaf.not_valid_before_utc > when:
        raise CertificateNotYetValid(
            f"leaf of {spiffe_id} is not valid before"
            f" {leaf.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ}"
        )
    if leaf.not_valid_after_utc < when:
        raise CertificateExpired(
            f"leaf of {spiffe_id} expired at {leaf.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}"
        )
    bundle = bundles.get_bundle_set().get_bundle_for_trust_domain(spiffe_id.trust_domain)
    ca_policy, ee_policy = _policies()
    verifier = (
        PolicyBuilder()
        .store(bundle.x509_store())
        .time(when)
        # a chain may be MAX_CHAIN_LENGTH certificates: the leaf and up to one fewer
        # intermediates (cryptography's default allows 8)
        .max_chain_depth(MAX_CHAIN_LENGTH - 1)
        .extension_policies(ca_policy=ca_policy, ee_policy=ee_policy)
        .build_client_verifier()
    )
    try:
        verified = verifier.verify(leaf, certs[1:])
    except VerificationError as exc:
        # cryptography's text quotes the certificates' names, which their issuer wrote:
        # escaped and cut, so a partner's CA cannot forge log lines through it
        raise UntrustedCertificate(
            f"chain of {spiffe_id} does not validate to the {spiffe_id.trust_domain} bundle:"
            f" {escaped(str(exc), 512)}"
        ) from None
    except PARSE_ERRORS:  # a field read only during path building is not valid DER
        raise MalformedCertificate(f"a certificate of {spiffe_id}'s chain is malformed") from None
    # the intermediates path building used (a peer may send certificates it does not need;
    # the bundle's own authority is the trust domain's configuration)
    _check_signing_ids(verified.chain[:-1])
    return VerifiedPeer(
        spiffe_id=spiffe_id, chain=tuple(verified.chain), fingerprint=fingerprint(leaf)
    )


def verify_peer_chain(
    chain: Sequence[bytes | x509.Certificate],
    bundles: X509BundleSource,
    *,
    now: datetime | None = None,
    role: Role | None = None,
) -> SpiffeId:
    """Verify ``chain`` as an X509-SVID (see :func:`verify_x509_svid`) and return its SPIFFE ID."""
    return verify_x509_svid(chain, bundles, now=now, role=role).spiffe_id


class VerifiedChains:
    """Chains :func:`verify_x509_svid` accepted, so that the same chain presented again (a
    forwarded client certificate on every request, a server's unverified chain on every
    request of a connection) is not path-validated again.

    A chain is only answered from here while the bundle snapshot it was verified against is
    still ``bundles``' current one and every certificate of its path is within its validity
    period; otherwise it is verified again. Refusals are not kept: whatever fails keeps
    failing with its precise reason. At most ``size`` chains are kept, and at most
    :data:`MAX_CACHED_CHAIN_BYTES` of presented certificates (the oldest go first): a caller
    with a valid SVID may pad its chain with certificates of no use to it, each padding a new
    entry.
    """

    __slots__ = ("_bundles", "_bytes", "_entries", "_lock", "_size")

    def __init__(self, bundles: X509BundleSource, *, size: int = 1024) -> None:
        self._bundles = bundles
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigurationError("size must be a positive number of chains")
        self._size = size
        self._entries: dict[tuple[bytes, ...], tuple[BundleSet, VerifiedPeer, datetime, int]] = {}
        self._bytes = 0  # of the presented certificates the keys hold
        self._lock = threading.Lock()

    def verify(self, chain: Sequence[bytes], *, now: datetime, role: Role) -> VerifiedPeer:
        """:func:`verify_x509_svid` of ``chain`` (DER, leaf first) at ``now``."""
        snapshot = self._bundles.get_bundle_set()
        now = to_utc(now)
        if not all(type(der) is bytes for der in chain):  # not exactly DER bytes: no memo
            return verify_x509_svid(chain, snapshot, now=now, role=role)
        key = (role.encode(), *chain)
        hit = self._entries.get(key)
        if hit is not None and hit[0] is snapshot and hit[2] <= now <= hit[1].not_after:
            return hit[1]
        peer = verify_x509_svid(chain, snapshot, now=now, role=role)
        not_before = peer.not_before
        size = sum(map(len, chain))
        if size > MAX_CACHED_CHAIN_BYTES:  # never kept: nothing else goes for it
            return peer
        with self._lock:
            entries = self._entries
            old = entries.pop(key, None)
            if old is not None:
                self._bytes -= old[3]
            while entries and (
                len(entries) >= self._size or self._bytes + size > MAX_CACHED_CHAIN_BYTES
            ):
                self._bytes -= entries.pop(next(iter(entries)))[3]
            entries[key] = (snapshot, peer, not_before, size)
            self._bytes += size
        return peer

    def __len__(self) -> int:
        return len(self._entries)
