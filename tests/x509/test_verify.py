from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from zerotrust import (
    BundleSet,
    FixedClock,
    SpiffeId,
    TrustBundle,
    X509Svid,
    verify_peer_chain,
    verify_x509_svid,
)
from zerotrust.dev import DevCA
from zerotrust.errors import (
    CertificateError,
    CertificateExpired,
    CertificateNotYetValid,
    MalformedCertificate,
    NoTrustBundle,
    SvidError,
    SvidProfileViolation,
    UntrustedCertificate,
)

NOW = dt.datetime.now(dt.timezone.utc)
WEB = "spiffe://example.org/web"
HOUR = dt.timedelta(hours=1)


def der(chain: list[x509.Certificate]) -> list[bytes]:
    return [c.public_bytes(serialization.Encoding.DER) for c in chain]


def leaf(issuer: DevCA, /, **kw: object) -> list[x509.Certificate]:
    kw.setdefault("uri_sans", ["spiffe://example.org/web"])
    kw.setdefault("not_before", NOW - HOUR)
    kw.setdefault("not_after", NOW + HOUR)
    chain, _key = issuer.issue_unchecked_leaf(**kw)  # type: ignore[arg-type]
    return chain


def ku(**flags: bool) -> x509.KeyUsage:
    names = [
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
    ]
    return x509.KeyUsage(
        **{n: flags.get(n, False) for n in names}, encipher_only=False, decipher_only=False
    )


def test_good_svid_returns_its_spiffe_id(ca: DevCA) -> None:
    svid = ca.issue_svid("spiffe://example.org/ns/prod/sa/web")
    assert verify_peer_chain(der(list(svid.cert_chain)), ca.bundle) == SpiffeId.parse(
        "spiffe://example.org/ns/prod/sa/web"
    )


def test_good_svid_through_intermediate(ca_with_intermediate: DevCA) -> None:
    svid = ca_with_intermediate.issue_svid("spiffe://example.org/api")
    peer = verify_x509_svid(svid.cert_chain, ca_with_intermediate.bundle, role="client")
    assert peer.spiffe_id == svid.spiffe_id
    assert peer.fingerprint == svid.fingerprint
    assert len(peer.chain) == 3
    assert peer.chain[-1] == ca_with_intermediate.root_certificate
    assert peer.leaf == svid.leaf
    # the earliest expiry of the path: the leaf's here; and the result cannot be altered
    assert peer.not_after == min(cert.not_valid_after_utc for cert in peer.chain)
    assert peer.not_before == max(cert.not_valid_before_utc for cert in peer.chain)
    with pytest.raises(dataclasses.FrozenInstanceError):
        peer.spiffe_id = SpiffeId.parse("spiffe://example.org/other")  # type: ignore[misc]
    assert not hasattr(peer, "__dict__")


def test_missing_intermediate_is_untrusted(ca_with_intermediate: DevCA) -> None:
    svid = ca_with_intermediate.issue_svid("spiffe://example.org/api")
    with pytest.raises(UntrustedCertificate):
        verify_peer_chain([svid.leaf], ca_with_intermediate.bundle)


def test_peer_of_a_trust_domain_without_bundle(ca: DevCA, other_ca: DevCA) -> None:
    svid = other_ca.issue_svid("spiffe://other.org/web")
    with pytest.raises(NoTrustBundle) as info:
        verify_peer_chain(svid.cert_chain, ca.bundle)
    assert info.value.code == "no_trust_bundle"
    assert isinstance(info.value, UntrustedCertificate)


def test_federated_peer_is_verified_with_its_own_bundle(ca: DevCA, other_ca: DevCA) -> None:
    svid = other_ca.issue_svid("spiffe://other.org/web")
    bundles = BundleSet([ca.bundle, other_ca.bundle])
    assert verify_peer_chain(svid.cert_chain, bundles) == svid.spiffe_id


def test_cross_trust_domain_minting_is_refused(ca: DevCA, other_ca: DevCA) -> None:
    # other.org's CA signs an identity in example.org; both bundles are trusted.
    forged = leaf(other_ca, uri_sans=["spiffe://example.org/admin"])
    bundles = BundleSet([ca.bundle, other_ca.bundle])
    with pytest.raises(UntrustedCertificate) as info:
        verify_peer_chain(forged, bundles)
    assert "example.org" in str(info.value)


def test_unknown_ca_with_the_same_trust_domain_name(ca: DevCA) -> None:
    impostor = DevCA.create("example.org")
    svid = impostor.issue_svid("spiffe://example.org/web")
    with pytest.raises(UntrustedCertificate):
        verify_peer_chain(svid.cert_chain, ca.bundle)


def test_expired_leaf(ca: DevCA) -> None:
    chain = leaf(ca, not_before=NOW - 3 * HOUR, not_after=NOW - HOUR)
    with pytest.raises(CertificateExpired):
        verify_peer_chain(chain, ca.bundle)


def test_expiry_follows_the_injected_clock(ca: DevCA) -> None:
    svid = ca.issue_svid("spiffe://example.org/web", ttl=600)
    clock = FixedClock(svid.leaf.not_valid_before_utc + dt.timedelta(seconds=60))
    assert verify_peer_chain(svid.cert_chain, ca.bundle, now=clock.now())
    clock.advance(minutes=11)
    with pytest.raises(CertificateExpired):
        verify_peer_chain(svid.cert_chain, ca.bundle, now=clock.now())


def test_the_validity_period_includes_both_of_its_ends(ca: DevCA) -> None:
    """RFC 5280 4.1.2.5: a certificate is valid from notBefore through notAfter, inclusive."""
    second = dt.timedelta(seconds=1)
    (cert, *_) = chain = leaf(ca, not_before=ca.root_certificate.not_valid_before_utc + second)
    assert verify_peer_chain(chain, ca.bundle, now=cert.not_valid_before_utc)
    assert verify_peer_chain(chain, ca.bundle, now=cert.not_valid_after_utc)
    with pytest.raises(CertificateNotYetValid):
        verify_peer_chain(chain, ca.bundle, now=cert.not_valid_before_utc - second)
    with pytest.raises(CertificateExpired):
        verify_peer_chain(chain, ca.bundle, now=cert.not_valid_after_utc + second)


def test_not_yet_valid_leaf(ca: DevCA) -> None:
    chain = leaf(ca, not_before=NOW + HOUR, not_after=NOW + 2 * HOUR)
    with pytest.raises(CertificateNotYetValid):
        verify_peer_chain(chain, ca.bundle)


def test_leaf_with_ca_flag(ca: DevCA) -> None:
    chain = leaf(ca, ca=True, key_usage=ku(digital_signature=True))
    with pytest.raises(SvidProfileViolation) as info:
        verify_peer_chain(chain, ca.bundle)
    assert info.value.rule == "leaf_is_ca"


@pytest.mark.parametrize(
    ("sans", "rule"),
    [
        (["spiffe://example.org/a", "spiffe://example.org/b"], "multiple_uri_sans"),
        ([], "missing_uri_san"),
        (["https://example.org/a"], "invalid_spiffe_id"),
        (["spiffe://example.org"], "root_spiffe_id"),
        (["spiffe://EXAMPLE.org/a"], "invalid_spiffe_id"),
    ],
)
def test_uri_san_rules(ca: DevCA, sans: list[str], rule: str) -> None:
    with pytest.raises(SvidProfileViolation) as info:
        verify_peer_chain(leaf(ca, uri_sans=sans), ca.bundle)
    assert info.value.rule == rule
    assert info.value.code == "svid_profile_violation"


def test_dns_only_leaf_has_no_uri_san(ca: DevCA) -> None:
    with pytest.raises(SvidProfileViolation) as info:
        verify_peer_chain(leaf(ca, uri_sans=[], dns_names=["web.example.org"]), ca.bundle)
    assert info.value.rule == "missing_uri_san"


@pytest.mark.parametrize(
    ("usage", "rule"),
    [
        (ku(digital_signature=True, key_cert_sign=True), "leaf_key_cert_sign"),
        (ku(digital_signature=True, crl_sign=True), "leaf_crl_sign"),
        (ku(key_agreement=True), "missing_digital_signature"),
    ],
)
def test_key_usage_rules(ca: DevCA, usage: x509.KeyUsage, rule: str) -> None:
    with pytest.raises(SvidProfileViolation) as info:
        verify_peer_chain(leaf(ca, key_usage=usage), ca.bundle)
    assert info.value.rule == rule


def test_extended_key_usage_must_allow_the_role(ca: DevCA) -> None:
    server_only = leaf(ca, extended_key_usage=[ExtendedKeyUsageOID.SERVER_AUTH])
    assert verify_peer_chain(server_only, ca.bundle, role="server")
    with pytest.raises(SvidProfileViolation) as info:
        verify_peer_chain(server_only, ca.bundle, role="client")
    assert info.value.rule == "extended_key_usage"


def _signed(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[str, ec.EllipticCurvePrivateKey],
    *,
    ca: bool,
    eku: list[x509.ObjectIdentifier] | None = None,
    uri: str | None = None,
) -> x509.Certificate:
    usage = dict.fromkeys(
        ("content_commitment", "key_encipherment", "data_encipherment", "key_agreement"), False
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer[0])]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - HOUR)
        .not_valid_after(NOW + HOUR)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
                **usage,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[1].public_key()), False
        )
    )
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    if uri is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False
        )
    return builder.sign(issuer[1], hashes.SHA256())


@pytest.mark.parametrize("where", ["intermediate", "root"])
def test_a_signing_certificate_extended_key_usage_never_narrows_the_chain(where: str) -> None:
    """X509-SVID 4.4: signing certificates MAY carry an EKU; the leaf's decides the role."""
    root_key, mid_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    server_only = [ExtendedKeyUsageOID.SERVER_AUTH]
    root = _signed(
        "root", root_key, ("root", root_key), ca=True, eku=server_only if where == "root" else None
    )
    mid = _signed(
        "mid", mid_key, ("root", root_key), ca=True, eku=server_only if where != "root" else None
    )
    both = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    leaf_cert = _signed(
        "leaf", leaf_key, ("mid", mid_key), ca=False, eku=both, uri="spiffe://example.org/web"
    )
    bundle = TrustBundle("example.org", [root])
    for role in ("client", "server", None):
        peer = verify_x509_svid([leaf_cert, mid], bundle, role=role)  # type: ignore[arg-type]
        assert str(peer.spiffe_id) == "spiffe://example.org/web"
    server_leaf = _signed(
        "leaf", leaf_key, ("mid", mid_key), ca=False, eku=server_only, uri="spiffe://example.org/w"
    )
    with pytest.raises(SvidProfileViolation) as info:  # the leaf's own EKU still counts
        verify_x509_svid([server_leaf, mid], bundle, role="client")
    assert info.value.rule == "extended_key_usage"


@pytest.mark.parametrize(
    ("signing_uri", "refused"),
    [
        ("spiffe://example.org/ns/ca", True),  # a workload's ID on a signing certificate
        ("spiffe://other.org/spire/upstream", True),
        ("spiffe://example.org", False),  # a trust domain's ID is what a signing cert names
        ("spiffe://other.org", False),  # a signing certificate may name another trust domain
        ("spiffe://example.org/", False),  # no valid SPIFFE ID: not a SPIFFE ID at all
        ("https://ca.example.org/issuer", False),
        (None, False),
    ],
)
def test_a_signing_certificate_has_no_spiffe_id_path(
    signing_uri: str | None, refused: bool
) -> None:
    """X509-SVID 3.2: "If present, the SPIFFE ID of a signing certificate MUST NOT have a path
    component": it names a trust domain, never a workload."""
    root_key, mid_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root = _signed("root", root_key, ("root", root_key), ca=True, uri="spiffe://example.org")
    mid = _signed("mid", mid_key, ("root", root_key), ca=True, uri=signing_uri)
    leaf_cert = _signed("leaf", leaf_key, ("mid", mid_key), ca=False, uri="spiffe://example.org/w")
    bundle = TrustBundle("example.org", [root])
    if not refused:
        assert str(verify_x509_svid([leaf_cert, mid], bundle).spiffe_id) == "spiffe://example.org/w"
        assert X509Svid([leaf_cert, mid], leaf_key).spiffe_id == SpiffeId.parse(
            "spiffe://example.org/w"
        )
        return
    with pytest.raises(SvidProfileViolation) as info:
        verify_x509_svid([leaf_cert, mid], bundle)
    assert info.value.rule == "signing_certificate_id"
    assert signing_uri not in str(info.value)  # the issuer's text stays out of the message
    with pytest.raises(SvidError, match="certificate 1 of the chain"):
        X509Svid([leaf_cert, mid], leaf_key)


def test_only_signing_certificates_of_the_validated_path_are_checked_for_a_path() -> None:
    """A certificate the peer sends but path building does not use signs nothing, and the
    bundle's own authority is the trust domain's configuration: neither is refused for the
    SPIFFE ID it carries."""
    root_key, mid_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root = _signed("root", root_key, ("root", root_key), ca=True, uri="spiffe://example.org/root")
    mid = _signed("mid", mid_key, ("root", root_key), ca=True, uri="spiffe://example.org")
    leaf_cert = _signed("leaf", leaf_key, ("mid", mid_key), ca=False, uri="spiffe://example.org/w")
    unused = _signed("other", leaf_key, ("mid", mid_key), ca=False, uri="spiffe://example.org/x")
    bundle = TrustBundle("example.org", [root])
    peer = verify_x509_svid([leaf_cert, unused, mid], bundle)
    assert str(peer.spiffe_id) == "spiffe://example.org/w"
    assert peer.chain == (leaf_cert, mid, root)


def test_any_extended_key_usage_allows_both_roles(ca: DevCA) -> None:
    chain = leaf(ca, extended_key_usage=[ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE])
    assert verify_peer_chain(chain, ca.bundle, role="client")
    assert verify_peer_chain(chain, ca.bundle, role="server")


def test_no_extended_key_usage_allows_both_roles(ca: DevCA) -> None:
    chain = leaf(ca, extended_key_usage=None)
    assert verify_peer_chain(chain, ca.bundle, role="client")
    assert verify_peer_chain(chain, ca.bundle, role="server")


def test_authority_removed_from_bundle(ca: DevCA) -> None:
    svid = ca.issue_svid("spiffe://example.org/web")
    replacement = DevCA.create("example.org")
    rotated = ca.bundle.with_x509_authorities([replacement.root_certificate])
    with pytest.raises(UntrustedCertificate):
        verify_peer_chain(svid.cert_chain, rotated)


@pytest.mark.parametrize(
    "chain",
    [[], [b"not a certificate"], ["text"], [b"\x30" * 70_000], [b"x"] * 11],
)
def test_malformed_chains(ca: DevCA, chain: list[object]) -> None:
    with pytest.raises(MalformedCertificate):
        verify_peer_chain(chain, ca.bundle)  # type: ignore[arg-type]


def test_every_failure_is_a_certificate_error(ca: DevCA, other_ca: DevCA) -> None:
    cases = [
        leaf(ca, uri_sans=[]),
        leaf(other_ca),
        leaf(ca, not_after=NOW - HOUR, not_before=NOW - 2 * HOUR),
    ]
    for chain in cases:
        with pytest.raises(CertificateError):
            verify_peer_chain(chain, BundleSet([ca.bundle, other_ca.bundle]))


def test_trust_bundle_is_its_own_source(ca: DevCA) -> None:
    bundle: TrustBundle = ca.bundle
    assert bundle.get_bundle_set().get("example.org") == bundle


def _deep_chain(intermediates: int) -> tuple[TrustBundle, list[x509.Certificate]]:
    """A root, ``intermediates`` CAs below it, and a leaf SVID below those (leaf first)."""

    def issue(
        name: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[x509.Certificate, Any] | None
    ) -> x509.Certificate:
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        ca = name != "leaf"
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer[0].subject if issuer else subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(minutes=5))
            .not_valid_after(NOW + dt.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(not ca, False, False, False, False, ca, ca, False, False),
                critical=True,
            )
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(WEB)]), False
            )
        return builder.sign(issuer[1] if issuer else key, hashes.SHA256())

    root_key = ec.generate_private_key(ec.SECP256R1())
    above = (issue("root", root_key, None), root_key)
    bundle = TrustBundle("example.org", [above[0]])
    middle: list[x509.Certificate] = []
    for index in range(intermediates):
        key = ec.generate_private_key(ec.SECP256R1())
        above = (issue(f"intermediate {index}", key, above), key)
        middle.insert(0, above[0])
    leaf = issue("leaf", ec.generate_private_key(ec.SECP256R1()), above)
    return bundle, [leaf, *middle]


def test_a_chain_of_ten_certificates_is_the_longest_accepted() -> None:
    # the documented bound (1 to 10 certificates) is the one path validation applies too:
    # the leaf and nine intermediates (cryptography's own default stops at eight)
    bundle, chain = _deep_chain(9)
    assert len(chain) == 10
    assert verify_x509_svid(chain, bundle).spiffe_id == SpiffeId.parse(WEB)
    bundle, chain = _deep_chain(10)
    with pytest.raises(MalformedCertificate, match="11 certificates, limit 10"):
        verify_x509_svid(chain, bundle)


def _signing_usage(*, key_cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        not key_cert_sign, False, False, False, False, key_cert_sign, key_cert_sign, False, False
    )


def _certificate(
    subject: str, public: Any, issuer: x509.Name, signer: Any, *extensions: x509.ExtensionType
) -> x509.Certificate:
    """A certificate of ``subject`` (a leaf of WEB when it is ``"leaf"``) with ``extensions``,
    all critical but the SAN."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - HOUR)
        .not_valid_after(NOW + HOUR)
    )
    for extension in extensions:
        builder = builder.add_extension(extension, critical=True)
    if subject == "leaf":
        builder = builder.add_extension(
            x509.BasicConstraints(ca=False, path_length=None), critical=True
        ).add_extension(ku(digital_signature=True), critical=True)
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(WEB)]), False
        )
    return builder.sign(signer, hashes.SHA256())


_CA = x509.BasicConstraints(ca=True, path_length=None)


@pytest.mark.parametrize(
    "extensions",
    [
        (x509.BasicConstraints(ca=False, path_length=None), _signing_usage(key_cert_sign=True)),
        (_CA, _signing_usage(key_cert_sign=False)),
        (_CA,),
        (_signing_usage(key_cert_sign=True),),
    ],
    ids=["not-a-ca", "no-keyCertSign", "no-key-usage", "no-basic-constraints"],
)
def test_a_chain_through_a_certificate_that_may_not_sign_is_untrusted(
    extensions: tuple[x509.ExtensionType, ...],
) -> None:
    """RFC 5280 6.1.4 (k) and (n), X509-SVID 4.1 and 4.3: a certificate between the leaf and
    the bundle's root issues nothing unless it is a CA with keyCertSign (key usage left out
    is refused too), whatever signature it carries."""
    root_key, middle_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(2))
    root = _certificate("root", root_key.public_key(), _name("root"), root_key, _CA, _usage())
    bundle = TrustBundle("example.org", [root])
    for middle_extensions, trusted in (((_CA, _usage()), True), (extensions, False)):
        middle = _certificate(
            "middle", middle_key.public_key(), root.subject, root_key, *middle_extensions
        )
        leaf_key = ec.generate_private_key(ec.SECP256R1())
        chain = [_certificate("leaf", leaf_key.public_key(), middle.subject, middle_key), middle]
        if trusted:  # the same chain through a signing certificate verifies
            assert verify_x509_svid(chain, bundle, role="client").spiffe_id == SpiffeId.parse(WEB)
        else:
            with pytest.raises(UntrustedCertificate):
                verify_x509_svid(chain, bundle, role="client")


def test_a_root_path_length_of_zero_allows_no_intermediate() -> None:
    """RFC 5280 6.1.4 (l) and (m): a bundle root whose pathLenConstraint is 0 vouches for the
    leaves it signs itself, never for one signed by an intermediate below it."""
    root_key, middle_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    for path_length, trusted in ((None, True), (1, True), (0, False)):
        root = _certificate(
            "root",
            root_key.public_key(),
            _name("root"),
            root_key,
            x509.BasicConstraints(ca=True, path_length=path_length),
            _usage(),
        )
        bundle = TrustBundle("example.org", [root])
        middle = _certificate(
            "middle", middle_key.public_key(), root.subject, root_key, _CA, _usage()
        )
        chain = [_certificate("leaf", leaf_key.public_key(), middle.subject, middle_key), middle]
        if trusted:
            assert verify_x509_svid(chain, bundle).spiffe_id == SpiffeId.parse(WEB)
        else:
            with pytest.raises(UntrustedCertificate):
                verify_x509_svid(chain, bundle)
        direct = _certificate("leaf", leaf_key.public_key(), root.subject, root_key)
        assert verify_x509_svid([direct], bundle).spiffe_id == SpiffeId.parse(WEB)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _usage() -> x509.KeyUsage:
    return _signing_usage(key_cert_sign=True)
