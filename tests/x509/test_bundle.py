from __future__ import annotations

import base64
import datetime as dt
import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID, NameOID

from zerotrust import BundleSet, TrustBundle, TrustDomain
from zerotrust.dev import DevCA
from zerotrust.errors import BundleError, CertificateError, NoTrustBundle
from zerotrust.x509.verify import verify_x509_svid


def test_pem_round_trip(ca: DevCA) -> None:
    bundle = ca.bundle
    again = TrustBundle.from_pem("example.org", bundle.to_pem())
    assert again == bundle
    assert hash(again) == hash(bundle)
    assert again.trust_domain == TrustDomain.parse("example.org")
    assert again.has_authority(ca.root_certificate)


def test_spiffe_jwks_round_trip_with_jwt_authorities(ca: DevCA) -> None:
    jwt_key = {"kty": "EC", "crv": "P-256", "kid": "k1", "use": "jwt-svid", "x": "AA", "y": "AA"}
    doc = ca.bundle.to_jwks()
    doc["keys"].append(jwt_key)
    doc["spiffe_sequence"] = 7
    doc["spiffe_refresh_hint"] = 300
    bundle = TrustBundle.from_jwks("example.org", json.dumps(doc))
    assert bundle.x509_authorities == (ca.root_certificate,)
    assert dict(bundle.jwt_authorities["k1"]) == jwt_key
    assert bundle.sequence_number == 7
    assert bundle.refresh_hint == 300
    assert TrustBundle.from_jwks("example.org", bundle.to_jwks()) == bundle
    x5c = doc["keys"][0]["x5c"][0]
    assert base64.b64decode(x5c) == ca.root_certificate.public_bytes(serialization.Encoding.DER)
    assert doc["keys"][0]["use"] == "x509-svid"


def test_unknown_uses_are_ignored(ca: DevCA) -> None:
    doc = ca.bundle.to_jwks()
    doc["keys"].append({"kty": "EC", "use": "something-else"})
    assert TrustBundle.from_jwks("example.org", doc) == ca.bundle


def test_x509_entries_follow_the_consumer_rules(ca: DevCA, other_ca: DevCA) -> None:
    """X509-SVID 6.2: an entry without x5c values is ignored; only the first value counts."""
    doc = ca.bundle.to_jwks()
    good = doc["keys"][0]
    other = other_ca.bundle.to_jwks()["keys"][0]["x5c"][0]
    doc["keys"] = [
        {"kty": good["kty"], "use": "x509-svid"},
        {"kty": good["kty"], "use": "x509-svid", "x5c": []},
        {**good, "x5c": [good["x5c"][0], other]},
    ]
    bundle = TrustBundle.from_jwks("example.org", doc)
    assert bundle.x509_authorities == (ca.root_certificate,)


@pytest.mark.parametrize(
    "doc",
    [
        b"not json",
        b'{"keys": [{"kty": "EC", "use": "x509-svid", "x5c": "AA=="}]}',
        b'{"keys": [{"kty": "EC", "use": "x509-svid", "x5c": [1]}]}',
        b"[]",
        b"{}",
        b'{"keys": {}}',
        b'{"keys": [1]}',
        b'{"keys": [{"kty": "EC", "use": "x509-svid", "x5c": ["!!"]}]}',
        b'{"keys": [{"kty": "RSA", "use": "x509-svid", "x5c": ["AA==", "AA=="]}]}',
        b'{"keys": [{"use": "jwt-svid", "kty": "EC"}]}',
        b'{"keys": [{"use": "jwt-svid", "kid": "a", "kty": "EC", "d": "AA"}]}',
        b'{"keys": [], "spiffe_sequence": "1"}',
        b'{"keys": [], "spiffe_sequence": true}',
        b'{"a":' * 50 + b"1" + b"}" * 50,
        b" " * (4 * 1024 * 1024 + 1),
    ],
)
def test_bad_bundle_documents(doc: bytes) -> None:
    with pytest.raises(BundleError):
        TrustBundle.from_jwks("example.org", doc)


def test_a_key_id_naming_two_keys_is_refused() -> None:
    key = {"use": "jwt-svid", "kid": "a", "kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}
    with pytest.raises(BundleError, match="two different keys"):
        TrustBundle.from_jwks("example.org", {"keys": [key, {**key, "x": "AQ"}]})
    twice = TrustBundle.from_jwks("example.org", {"keys": [key, dict(key)]})  # harmless
    assert list(twice.jwt_authorities) == ["a"]


def test_update_removes_authorities_that_are_gone(ca: DevCA) -> None:
    other = DevCA.create("example.org")
    both = ca.bundle.with_x509_authorities(
        [ca.root_certificate, other.root_certificate, ca.root_certificate]
    )
    assert len(both.x509_authorities) == 2  # duplicates collapse
    only_new = both.with_x509_authorities([other.root_certificate])
    assert only_new.x509_authorities == (other.root_certificate,)
    assert not only_new.has_authority(ca.root_certificate)
    none_left = both.with_x509_authorities([])
    assert none_left.x509_authorities == ()
    with pytest.raises(NoTrustBundle):
        none_left.x509_store()


def test_bundles_are_immutable(ca: DevCA) -> None:
    with pytest.raises(AttributeError):
        ca.bundle.refresh_hint = 3  # type: ignore[misc]
    with pytest.raises(AttributeError):
        BundleSet([ca.bundle])._bundles = {}  # type: ignore[misc]


def test_bundle_set_lookups_never_merge_domains(ca: DevCA, other_ca: DevCA) -> None:
    bundles = BundleSet([ca.bundle, other_ca.bundle])
    assert bundles.get_bundle_for_trust_domain("example.org") is not bundles.get("other.org")
    assert bundles.get("spiffe://example.org/anything") == ca.bundle
    assert "other.org" in bundles and "third.org" not in bundles and 3 not in bundles
    assert "Not A Domain" not in bundles
    assert len(bundles) == 2
    assert {b.trust_domain.name for b in bundles} == {"example.org", "other.org"}
    with pytest.raises(NoTrustBundle):
        bundles.get_bundle_for_trust_domain("third.org")
    with pytest.raises(BundleError):
        BundleSet([ca.bundle, ca.bundle])
    replaced = bundles.with_bundle(DevCA.create("example.org").bundle)
    assert replaced.get("example.org") != ca.bundle
    assert replaced.without("example.org").trust_domains == {TrustDomain.parse("other.org")}
    assert BundleSet([ca.bundle]) == ca.bundle.get_bundle_set()
    assert "example.org" in repr(bundles) and "x509_authorities=1" in repr(ca.bundle)


def test_store_holds_only_this_bundle(ca: DevCA) -> None:
    bundle = ca.bundle
    assert bundle.x509_store() is bundle.x509_store()  # built once
    jwt_only = TrustBundle.from_jwks(
        "example.org", {"keys": [{"use": "jwt-svid", "kid": "a", "kty": "EC"}]}
    )
    with pytest.raises(NoTrustBundle):
        jwt_only.x509_store()


def test_static_bundle_source_returns_one_snapshot(ca: DevCA) -> None:
    bundle = ca.bundle
    assert bundle.get_bundle_set() is bundle.get_bundle_set()


def test_an_empty_key_list_withdraws_every_authority(ca: DevCA) -> None:
    """Trust Domain and Bundle 4.1.3: ``"keys": []`` is a valid bundle that trusts nothing
    (before, it was refused, and a file source kept trusting the withdrawn authorities)."""
    svid = ca.issue_svid("spiffe://example.org/workload")
    withdrawn = TrustBundle.from_jwks("example.org", b'{"keys": [], "spiffe_sequence": 2}')
    assert withdrawn.x509_authorities == () and dict(withdrawn.jwt_authorities) == {}
    assert withdrawn.sequence_number == 2
    with pytest.raises(NoTrustBundle):
        verify_x509_svid([svid.leaf], withdrawn)
    only_ignored = {"keys": [{"kty": "EC", "use": "future-svid"}, {"use": "x509-svid"}]}
    assert TrustBundle.from_jwks("example.org", only_ignored).x509_authorities == ()


@pytest.mark.parametrize(
    "entry",
    [
        {"use": "x509-svid"},  # no kty
        {"kty": "XYZ", "use": "x509-svid"},
        {"kty": "oct", "use": "jwt-svid", "kid": "a", "k": "c2VjcmV0"},
        {"use": "jwt-svid", "kid": "b", "crv": "P-256", "x": "AA", "y": "AA"},
        {"kty": ["EC"], "use": "jwt-svid", "kid": "c"},
    ],
)
def test_elements_of_unknown_or_missing_key_type_are_ignored(
    ca: DevCA, other_ca: DevCA, entry: dict
) -> None:
    """Trust Domain and Bundle 4.2.1: the whole element is ignored, whatever else it holds
    (here another root, which would otherwise become an authority)."""
    doc = ca.bundle.to_jwks()
    x5c = other_ca.bundle.to_jwks()["keys"][0]["x5c"]
    doc["keys"].append({**entry, "x5c": x5c} if entry.get("use") == "x509-svid" else entry)
    bundle = TrustBundle.from_jwks("example.org", doc)
    assert bundle.x509_authorities == (ca.root_certificate,)
    assert dict(bundle.jwt_authorities) == {}


def test_an_x509_entry_must_describe_its_own_certificate(ca: DevCA, other_ca: DevCA) -> None:
    """RFC 7517 4.7: the key in x5c is the key the JWK describes."""
    good = ca.bundle.to_jwks()["keys"][0]
    other_members = {k: v for k, v in other_ca.bundle.to_jwks()["keys"][0].items() if k != "x5c"}
    with pytest.raises(BundleError, match="not its certificate's key"):
        TrustBundle.from_jwks("example.org", {"keys": [{**other_members, "x5c": good["x5c"]}]})
    with pytest.raises(BundleError, match="'kty' does not match"):
        TrustBundle.from_jwks("example.org", {"keys": [{**good, "kty": "RSA"}]})
    bare = {"kty": good["kty"], "use": "x509-svid", "x5c": good["x5c"]}  # members are optional
    assert TrustBundle.from_jwks("example.org", {"keys": [bare]}) == ca.bundle
    partial = {**bare, "crv": good["crv"]}  # and may be partial: what is there must match
    assert TrustBundle.from_jwks("example.org", {"keys": [partial]}) == ca.bundle
    with pytest.raises(BundleError, match="not its certificate's key"):
        TrustBundle.from_jwks("example.org", {"keys": [{**bare, "crv": "P-384"}]})


def test_authorities_must_be_ca_certificates(ca: DevCA) -> None:
    """A leaf listed as an authority would vouch for itself alone (a pinned leaf)."""
    leaf = ca.issue_svid("spiffe://example.org/workload").leaf
    with pytest.raises(BundleError, match="not a CA certificate"):
        TrustBundle("example.org", [leaf])
    with pytest.raises(BundleError, match="not a CA certificate"):
        TrustBundle.from_pem("example.org", leaf.public_bytes(serialization.Encoding.PEM))
    der = leaf.public_bytes(serialization.Encoding.DER)
    entry = {"kty": "EC", "use": "x509-svid", "x5c": [base64.b64encode(der).decode()]}
    with pytest.raises(BundleError, match="not a CA certificate"):
        TrustBundle.from_jwks("example.org", {"keys": [entry]})


def test_rsa_key_members_are_compared_as_keys() -> None:
    """go-jose reads members as numbers: an RSA n with a leading zero octet, or e written on
    four octets (as square/go-jose v1 did), is the same key and must not refuse the document."""
    rsa_ca = DevCA.create("example.org", key_type="rsa-2048")
    entry = rsa_ca.bundle.to_jwks()["keys"][0]
    n = base64.urlsafe_b64decode(entry["n"] + "==")
    padded = {
        **entry,
        "n": base64.urlsafe_b64encode(b"\x00" + n).rstrip(b"=").decode(),
        "e": "AAEAAQ",
    }
    assert TrustBundle.from_jwks("example.org", {"keys": [padded]}) == rsa_ca.bundle
    other_n = DevCA.create("other.org", key_type="rsa-2048").bundle.to_jwks()["keys"][0]["n"]
    with pytest.raises(BundleError, match="not its certificate's key"):
        TrustBundle.from_jwks("example.org", {"keys": [{**entry, "n": other_n}]})
    with pytest.raises(BundleError, match="invalid key members"):
        TrustBundle.from_jwks("example.org", {"keys": [{**entry, "n": "!!"}]})


def test_certificates_with_name_forms_cryptography_cannot_read() -> None:
    """A CA whose SAN holds an ediPartyName: cryptography cannot read its extensions. As an
    authority it is left to path validation (one such root must not refuse a whole bundle,
    which would keep the previous one, withdrawn authorities included); it never raises
    cryptography's own exception."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "odd root")])
    san = x509.UnrecognizedExtension(
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME, bytes.fromhex("3007a505a1030c0178")
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc))
        .not_valid_after(dt.datetime(2040, 1, 1, tzinfo=dt.timezone.utc))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(san, critical=False)
        .sign(key, hashes.SHA256())
    )
    bundle = TrustBundle.from_pem("example.org", cert.public_bytes(serialization.Encoding.PEM))
    assert bundle.x509_authorities == (cert,) and TrustBundle("example.org", [cert]) == bundle
    leaf = DevCA.create("example.org").issue_svid("spiffe://example.org/web").leaf
    with pytest.raises(CertificateError):
        verify_x509_svid([leaf], bundle)


def test_a_bundle_document_that_is_no_utf8_text_is_a_bundle_error() -> None:
    with pytest.raises(BundleError, match="not UTF-8"):
        TrustBundle.from_jwks("example.org", '{"keys": [], "x": "\ud800"}')
