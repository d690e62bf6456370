from __future__ import annotations

import base64
import datetime as dt
import json
import re
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID, NameOID

from zerotrust import BundleSet, TrustBundle, TrustDomain
from zerotrust.dev import DevCA
from zerotrust.errors import BundleError, CertificateError, NoTrustBundle
from zerotrust.identity import SpiffeId
from zerotrust.sources import SpiffeJwtBundleKeySource
from zerotrust.tokens import PrivateJWK
from zerotrust.x509._certs import complete_pem_blocks, fingerprint, signing_flags
from zerotrust.x509.verify import verify_x509_svid

#: A P-256 public key (RFC 7517 A.1), as a bundle's jwt-svid element holds it.
P256 = {
    "kty": "EC",
    "crv": "P-256",
    "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
    "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
}


def test_pem_round_trip(ca: DevCA) -> None:
    bundle = ca.bundle
    again = TrustBundle.from_pem("example.org", bundle.to_pem())
    assert again == bundle
    assert hash(again) == hash(bundle)
    assert again.trust_domain == TrustDomain.parse("example.org")
    assert again.has_authority(ca.root_certificate)


def test_spiffe_jwks_round_trip_with_jwt_authorities(ca: DevCA) -> None:
    jwt_key = {**P256, "kid": "k1", "use": "jwt-svid"}
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
    key = {"use": "jwt-svid", "kid": "a", **P256}
    other = {**PrivateJWK.generate("ES256", kid="a").public().to_public_dict(), "use": "jwt-svid"}
    with pytest.raises(BundleError, match="two different keys"):
        TrustBundle.from_jwks("example.org", {"keys": [key, other]})
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
    with pytest.raises(AttributeError, match=r"^TrustBundle is immutable$"):
        ca.bundle.refresh_hint = 3  # type: ignore[misc]
    with pytest.raises(AttributeError, match=r"^BundleSet is immutable$"):
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
    assert repr(bundles) == "BundleSet(['example.org', 'other.org'])"
    assert repr(ca.bundle) == "TrustBundle('example.org', x509_authorities=1, jwt_authorities=0)"
    assert bundles.all_x509_authorities() == [ca.root_certificate, other_ca.root_certificate]
    assert BundleSet().all_x509_authorities() == []


def test_store_holds_only_this_bundle(ca: DevCA) -> None:
    bundle = ca.bundle
    assert bundle.x509_store() is bundle.x509_store()  # built once
    jwt_only = TrustBundle.from_jwks(
        "example.org", {"keys": [{"use": "jwt-svid", "kid": "a", **P256}]}
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
    element = {**entry, "x5c": x5c} if entry.get("use") == "x509-svid" else entry
    doc["keys"] = [element, *doc["keys"], element]  # the elements after it are still read
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


@pytest.mark.parametrize("member", ["x", "y", "n", "e"])
def test_an_x509_entry_giving_any_key_member_must_give_a_whole_key(ca: DevCA, member: str) -> None:
    """One key member alone is no key: the entry is refused, not read as if it gave none."""
    good = ca.bundle.to_jwks()["keys"][0]
    entry = {"kty": good["kty"], "use": "x509-svid", "x5c": good["x5c"]}
    entry[member] = good.get(member, "AQAB")
    with pytest.raises(BundleError, match=r"^x509-svid key 0 has invalid key members$"):
        TrustBundle.from_jwks("example.org", {"keys": [entry]})


def test_authorities_must_be_ca_certificates(ca: DevCA) -> None:
    """A leaf listed as an authority would vouch for itself alone (a pinned leaf)."""
    leaf = ca.issue_svid("spiffe://example.org/workload").leaf
    named = re.escape(
        f"an authority of example.org is not a CA certificate ({fingerprint(leaf)[:16]})"
    )
    with pytest.raises(BundleError, match=f"^{named}$"):
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


def _b64(value: int, size: int) -> str:
    return base64.urlsafe_b64encode(value.to_bytes(size, "big")).rstrip(b"=").decode()


def _private_p256() -> dict[str, str]:
    numbers = ec.generate_private_key(ec.SECP256R1()).private_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": _b64(numbers.public_numbers.x, 32),
        "y": _b64(numbers.public_numbers.y, 32),
        "d": _b64(numbers.private_value, 32),
    }


def test_jwt_authorities_are_published_under_their_key_id_as_jwt_svid_keys(ca: DevCA) -> None:
    """Trust Domain and Bundle 4.2.2 and JWT-SVID 6: every jwt-svid element has ``use`` and
    ``kid``. The constructor's JWKs were published as given: without ``kid`` (go-spiffe, and
    from_jwks, refuse the whole bundle) or ``use`` (readers ignore the element)."""
    members = PrivateJWK.generate("ES256").public().to_public_dict()
    del members["kid"]  # a JWK with neither kid nor use
    assert "use" not in members
    bundle = TrustBundle(
        ca.trust_domain,
        ca.bundle.x509_authorities,
        jwt_authorities={"authority-a": members},
        sequence_number=3,
    )
    published = {**members, "kid": "authority-a", "use": "jwt-svid"}
    assert dict(bundle.jwt_authorities["authority-a"]) == published
    doc = bundle.to_jwks()
    assert [k for k in doc["keys"] if k["use"] != "x509-svid"] == [published]
    assert not any(name in key for key in doc["keys"] for name in ("d", "p", "q", "k"))
    again = TrustBundle.from_jwks(ca.trust_domain, json.dumps(doc))
    assert again == bundle and again.to_jwks() == doc  # exact both ways
    assert {k: dict(v) for k, v in again.jwt_authorities.items()} == {"authority-a": published}
    # verification inside finds the key under the kid the published bundle gives
    keys = SpiffeJwtBundleKeySource(again, ca.trust_domain).get_keys()
    assert [(k.kid, k.use) for k in keys] == [("authority-a", "jwt-svid")]
    # copies keep the authorities as they are
    copy = bundle.with_x509_authorities([])
    assert dict(copy.jwt_authorities) == dict(bundle.jwt_authorities)
    assert BundleSet([copy]).get(ca.trust_domain) == copy
    already = TrustBundle(ca.trust_domain, jwt_authorities={"authority-a": published})
    assert dict(already.jwt_authorities) == dict(bundle.jwt_authorities)


SECRET = _private_p256()


@pytest.mark.parametrize(
    ("kid", "jwk", "reason"),
    [
        ("a", SECRET, "private or secret material"),
        ("a", {**P256, "d": SECRET["d"]}, "private or secret material"),
        ("a", {"kty": "oct", "k": "c2VjcmV0c2VjcmV0"}, "private or secret material"),
        ("a", {**P256, "x": "AA"}, "not a usable public key"),
        ("a", {**P256, "crv": "P-384"}, "not a usable public key"),
        ("a", {"kty": "EC"}, "not a usable public key"),
        ("a", {**P256, "kty": "XYZ"}, "not a usable public key"),
        ("a", {**P256, "alg": "RS256"}, "not a usable public key"),
        ("a", {**P256, "key_ops": ["sign"]}, "not a usable public key"),
        ("authority-A", {**P256, "kid": "real-kid"}, "another key id in its 'kid'"),
        ("a", {**P256, "kid": None}, "another key id in its 'kid'"),
        ("a", {**P256, "use": "sig"}, "'use' other than 'jwt-svid'"),
        ("a", {**P256, "use": "x509-svid"}, "'use' other than 'jwt-svid'"),
        ("", P256, "key id must be a non-empty string"),
        (1, P256, "key id must be a non-empty string"),
        ("a", [("kty", "EC")], "not a JWK object"),
        ("a", {**P256, 1: "x"}, "not a JWK object"),
    ],
)
def test_jwt_authorities_must_be_public_jwt_svid_keys(
    kid: object, jwk: object, reason: str
) -> None:
    """RFC 7517 5 and docs/x509.md: a bundle is public; private members were published as
    given. A ``kid`` member other than the key made verification (by key) and the published
    bundle (by member) disagree. The error names the key id, never key material."""
    with pytest.raises(BundleError, match=reason) as info:
        TrustBundle("example.org", jwt_authorities={kid: jwk})  # type: ignore[dict-item]
    message = str(info.value)
    if isinstance(kid, str) and kid:
        assert repr(kid) in message
    if isinstance(jwk, dict):
        assert not any(isinstance(v, str) and len(v) >= 8 and v in message for v in jwk.values())


def _rsa(bits: int, e: int = 65537) -> dict[str, str]:
    """The members of an RSA public key of numbers alone: modulus 2**(bits-1) + 1."""
    n, size = (1 << (bits - 1)) | 1, (bits + 7) // 8
    raw_e = e.to_bytes((e.bit_length() + 7) // 8, "big")
    n_b64 = base64.urlsafe_b64encode(n.to_bytes(size, "big")).rstrip(b"=").decode()
    return {"kty": "RSA", "n": n_b64, "e": base64.urlsafe_b64encode(raw_e).rstrip(b"=").decode()}


def test_jwt_authorities_hold_rsa_keys_within_bounds(ca: DevCA) -> None:
    """A jwt-svid RSA key over 8192 bits or with an exponent over 2**32 is not a usable public
    key: it refuses the bundle, as other unusable jwt-svid elements do."""
    for bad, reason in ((_rsa(8193), "8192 bits"), (_rsa(2048, (1 << 32) + 1), r"2\*\*32")):
        doc = {"keys": [*ca.bundle.to_jwks()["keys"], {**bad, "kid": "a", "use": "jwt-svid"}]}
        with pytest.raises(BundleError, match=f"'a' is not a usable public key: .*{reason}"):
            TrustBundle.from_jwks("example.org", doc)
        with pytest.raises(BundleError, match=reason):
            TrustBundle("example.org", jwt_authorities={"a": bad})
    good = {"keys": [{**_rsa(8192), "kid": "a", "use": "jwt-svid"}]}
    assert "a" in TrustBundle.from_jwks("example.org", good).jwt_authorities


def test_bundle_documents_hold_the_same_jwt_authorities(ca: DevCA) -> None:
    """from_jwks and the constructor apply one check: a jwt-svid element that is not a usable
    public key refuses the document, as its x509-svid elements' key members do."""
    for bad in ({**P256, "x": "AA"}, {**P256, "alg": "RS256"}, SECRET):
        doc = {"keys": [*ca.bundle.to_jwks()["keys"], {**bad, "kid": "a", "use": "jwt-svid"}]}
        with pytest.raises(BundleError, match="'a'"):
            TrustBundle.from_jwks("example.org", doc)
    with pytest.raises(BundleError, match="mapping"):
        TrustBundle("example.org", jwt_authorities=[("a", P256)])  # type: ignore[arg-type]


def test_bundle_documents_are_bounded_in_size_and_key_count() -> None:
    """A valid document of 4 MiB is read; one byte more is refused before parsing, as is a
    ``keys`` list of more than 1000 elements (even of ignored ones)."""
    limit = 4 * 1024 * 1024
    head, tail = b'{"keys": [], "pad": "', b'"}'
    at_limit = head + b"a" * (limit - len(head) - len(tail)) + tail
    assert TrustBundle.from_jwks("example.org", at_limit).x509_authorities == ()
    with pytest.raises(BundleError, match="exceeds"):
        TrustBundle.from_jwks("example.org", head + b"a" * (limit - len(head)) + tail)
    ignored = {"kty": "EC", "use": "future-svid"}
    assert TrustBundle.from_jwks("example.org", {"keys": [ignored] * 1000}) is not None
    with pytest.raises(BundleError, match="more than 1000 keys"):
        TrustBundle.from_jwks("example.org", {"keys": [ignored] * 1001})


def _x509_entry(ca: DevCA, **members: Any) -> dict[str, Any]:
    return {**ca.bundle.to_jwks()["keys"][0], **members}


_CA = DevCA.create("example.org")
_OTHER_KEY = {
    k: v for k, v in DevCA.create("other.org").bundle.to_jwks()["keys"][0].items() if k in "xy"
}


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        (b"not json", "bundle document is not valid: not valid JSON"),
        ([{"keys": []}], "bundle document is not a JSON object"),
        ({}, "bundle document has no 'keys' list"),
        ({"keys": [1]}, "key 0 is not an object"),
        (
            {"keys": [], "spiffe_refresh_hint": -1},
            "'spiffe_refresh_hint' must be a non-negative integer",
        ),
        ({"keys": [], "spiffe_sequence": -1}, "'spiffe_sequence' must be a non-negative integer"),
        ({"keys": [{"use": "jwt-svid", **P256}]}, "jwt-svid key 0 has no 'kid'"),
        ({"keys": [{"use": "jwt-svid", "kid": "", **P256}]}, "jwt-svid key 0 has no 'kid'"),
        ({"keys": [{"use": "jwt-svid", "kid": 1, **P256}]}, "jwt-svid key 0 has no 'kid'"),
        (
            {
                "keys": [
                    {"use": "jwt-svid", "kid": "a", **P256},
                    {"use": "jwt-svid", "kid": "a", **P256, "x": P256["y"]},
                ]
            },
            "jwt-svid key id 'a' names two different keys",
        ),
        (
            {"keys": [{"use": "jwt-svid", "kid": "a", "d": "AA", **P256}]},
            "jwt-svid key 'a' contains private or secret material",
        ),
        (
            {"keys": [{"kty": "EC", "use": "x509-svid", "x5c": {}}]},
            "x509-svid key 0 has a malformed 'x5c'",
        ),
        (
            {"keys": [{"kty": "EC", "use": "x509-svid", "x5c": ["AA=="]}]},
            "x509-svid key 0 has an invalid certificate",
        ),
        (
            {"keys": [_x509_entry(_CA, kty="RSA")]},
            "x509-svid key 0: 'kty' does not match its certificate's key",
        ),
        (
            {"keys": [_x509_entry(_CA, crv="P-384")]},
            "x509-svid key 0: its key is not its certificate's key",
        ),
        (
            {"keys": [_x509_entry(_CA, **_OTHER_KEY)]},
            "x509-svid key 0: its key is not its certificate's key",
        ),
        ({"keys": [_x509_entry(_CA, x="!")]}, "x509-svid key 0 has invalid key members"),
    ],
)
def test_bad_bundle_documents_say_why(doc: object, reason: str) -> None:
    with pytest.raises(BundleError, match=f"^{re.escape(reason)}$"):
        TrustBundle.from_jwks("example.org", doc)  # type: ignore[arg-type]


def test_bundle_documents_are_bounded_in_depth() -> None:
    """Eight levels of nesting are read (a bundle needs four); a ninth is refused."""

    def nested(depth: int) -> str:  # the document itself is the first level
        return '{"keys": [], "x": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}"

    assert TrustBundle.from_jwks("example.org", nested(8)).x509_authorities == ()
    with pytest.raises(BundleError, match=r"^bundle document is not valid: nested too deeply$"):
        TrustBundle.from_jwks("example.org", nested(9))


def test_okp_jwt_authorities_are_read(ca: DevCA) -> None:
    """Ed25519 keys (``kty`` OKP) are authorities like EC and RSA ones, not ignored elements."""
    ed = {**PrivateJWK.generate("EdDSA", kid="ed").public().to_public_dict(), "use": "jwt-svid"}
    doc = ca.bundle.to_jwks()
    doc["keys"].append(ed)
    bundle = TrustBundle.from_jwks("example.org", doc)
    assert dict(bundle.jwt_authorities) == {"ed": ed}
    assert bundle.x509_authorities == (ca.root_certificate,)


def test_x5c_values_are_strict_base64(ca: DevCA) -> None:
    """RFC 7517 4.7: x5c holds base64 DER; characters outside the alphabet are not skipped."""
    entry = ca.bundle.to_jwks()["keys"][0]
    value = entry["x5c"][0]
    for bad in (value[:8] + "!" + value[8:], value[:8] + "\n" + value[8:]):
        with pytest.raises(BundleError, match="invalid certificate"):
            TrustBundle.from_jwks("example.org", {"keys": [{**entry, "x5c": [bad]}]})


@pytest.mark.parametrize("value", [-1, True, 1.5, "300"])
@pytest.mark.parametrize("name", ["refresh_hint", "sequence_number"])
def test_the_constructor_refuses_a_refresh_hint_or_sequence_the_format_refuses(
    ca: DevCA, name: str, value: object
) -> None:
    """Only non-negative integers: a bundle never publishes a document that from_jwks (and
    every other SPIFFE implementation) refuses."""
    with pytest.raises(BundleError, match=f"'{name}' must be a non-negative integer"):
        TrustBundle("example.org", [ca.root_certificate], **{name: value})  # type: ignore[arg-type]


def test_zero_sequence_and_refresh_hint_are_kept_and_published(ca: DevCA) -> None:
    doc = {**ca.bundle.to_jwks(), "spiffe_refresh_hint": 0, "spiffe_sequence": 0}
    bundle = TrustBundle.from_jwks("example.org", doc)
    assert (bundle.refresh_hint, bundle.sequence_number) == (0, 0)
    assert bundle.to_jwks() == doc
    plain = TrustBundle("example.org", [ca.root_certificate])
    assert set(plain.to_jwks()) == {"keys"}  # neither member when not set
    hinted = TrustBundle("example.org", [ca.root_certificate], refresh_hint=60)
    assert hinted.to_jwks()["spiffe_refresh_hint"] == 60 and "spiffe_sequence" not in (
        hinted.to_jwks()
    )


def test_a_jwt_key_rotated_under_the_same_kid_changes_the_bundle() -> None:
    """Equality (what sources compare to notice an update) covers the keys, not only kids."""
    other = PrivateJWK.generate("ES256").public().to_public_dict()
    del other["kid"]
    first = TrustBundle("example.org", jwt_authorities={"a": P256})
    rotated = TrustBundle("example.org", jwt_authorities={"a": other})
    assert first != rotated
    assert first == TrustBundle("example.org", jwt_authorities={"a": dict(P256)})


def test_bundles_compare_and_hash_as_values(ca: DevCA) -> None:
    assert (ca.bundle == "example.org") is False
    assert (ca.bundle.get_bundle_set() == ca.bundle) is False
    assert (BundleSet([ca.bundle]) == [ca.bundle]) is False
    same = BundleSet([TrustBundle.from_pem("example.org", ca.bundle.to_pem())])
    assert same == BundleSet([ca.bundle]) and hash(same) == hash(BundleSet([ca.bundle]))
    assert len({same, BundleSet([ca.bundle]), BundleSet()}) == 2


def test_bundle_set_looks_up_by_spiffe_id_object(ca: DevCA, other_ca: DevCA) -> None:
    bundles = BundleSet([ca.bundle, other_ca.bundle])
    peer = SpiffeId.parse("spiffe://other.org/web")
    assert bundles.get(peer) == other_ca.bundle
    assert bundles.get_bundle_for_trust_domain(peer) == other_ca.bundle
    assert peer in bundles


@pytest.mark.parametrize(
    "build",
    [
        lambda: TrustBundle("example.org", ["not a certificate"]),  # type: ignore[list-item]
        lambda: BundleSet(["example.org"]),  # type: ignore[list-item]
        lambda: TrustBundle("example.org", jwt_authorities={"a": 5}),  # type: ignore[dict-item]
    ],
)
def test_constructors_refuse_wrong_types_as_bundle_errors(build: object) -> None:
    with pytest.raises(BundleError):
        build()  # type: ignore[operator]


def _self_signed(*extensions: x509.ExtensionType, key: Any = None) -> x509.Certificate:
    key = key if key is not None else ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "no constraints")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc))
        .not_valid_after(dt.datetime(2040, 1, 1, tzinfo=dt.timezone.utc))
    )
    for extension in extensions:
        builder = builder.add_extension(extension, critical=True)
    return builder.sign(key, hashes.SHA256())


def test_a_certificate_without_basic_constraints_is_no_authority() -> None:
    """RFC 5280 4.2.1.9 and X509-SVID 4.1: only basic constraints CA:TRUE makes a CA; a
    certificate without the extension (or without key usage) is not one."""
    bare = _self_signed()
    assert signing_flags(bare) == (False, False)
    with pytest.raises(BundleError, match="not a CA certificate"):
        TrustBundle("example.org", [bare])
    usage = x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )
    assert signing_flags(_self_signed(usage)) == (False, True)
    ca_only = _self_signed(x509.BasicConstraints(ca=True, path_length=None))
    assert signing_flags(ca_only) == (True, False)


@pytest.mark.parametrize(
    ("raw", "complete"),
    [
        (b"", True),
        (b"no pem here", True),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", True),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n \n", True),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n", False),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\nx", False),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIF", False),
        (b"-----BEGIN CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\n", False),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END PRIVATE KEY-----\n", False),
        (b"-----END CERTIFICATE-----\n", False),
        (b"-----BEGIN " + b"X" * 65 + b"-----\n", False),  # a marker too long to be one
    ],
)
def test_complete_pem_blocks(raw: bytes, complete: bool) -> None:
    """A PEM file cut short (inside a block or its END line) is incomplete, never shorter."""
    assert complete_pem_blocks(raw) is complete


def test_an_authority_key_no_jwk_describes_is_refused_in_the_spiffe_format() -> None:
    """A CA certificate with a DSA key is a CA (a PEM bundle may hold one), but the SPIFFE
    bundle format has no JWK for its key: writing or reading such an entry is a BundleError."""
    from cryptography.hazmat.primitives.asymmetric import dsa

    authority = x509.BasicConstraints(ca=True, path_length=None)
    cert = _self_signed(authority, key=dsa.generate_private_key(2048))
    bundle = TrustBundle.from_pem("example.org", cert.public_bytes(serialization.Encoding.PEM))
    assert bundle.x509_authorities == (cert,)
    with pytest.raises(BundleError, match=r"^unsupported authority key type$"):
        bundle.to_jwks()
    der = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
    for kty in ("EC", "RSA"):
        doc = {"keys": [{"kty": kty, "use": "x509-svid", "x5c": [der]}]}
        with pytest.raises(BundleError, match=r"^unsupported authority key type$"):
            TrustBundle.from_jwks("example.org", doc)
    # an element of a key type JWK does not know is ignored, as the bundle format requires
    doc = {"keys": [{"kty": "DSA", "use": "x509-svid", "x5c": [der]}]}
    assert TrustBundle.from_jwks("example.org", doc).x509_authorities == ()


def test_pem_bundles_are_bounded_in_size(ca: DevCA) -> None:
    """PEM input is refused above 4 MiB before any parsing; at the limit it is read."""
    pem = ca.bundle.to_pem()
    limit = 4 * 1024 * 1024
    padded = pem + b"\n" * (limit - len(pem))
    assert TrustBundle.from_pem("example.org", padded) == ca.bundle
    with pytest.raises(BundleError, match="bundle PEM exceeds 4194304 bytes"):
        TrustBundle.from_pem("example.org", padded + b"\n")
    with pytest.raises(BundleError, match="exceeds"):
        TrustBundle.from_pem("example.org", padded.decode("ascii") + "\n")
