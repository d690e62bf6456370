from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from zerotrust import (
    BundleSet,
    FixedClock,
    SpiffeId,
    TrustBundle,
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
    SvidProfileViolation,
    UntrustedCertificate,
)

NOW = dt.datetime.now(dt.timezone.utc)
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
