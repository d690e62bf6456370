"""JWKSet: tolerant reading, skipped entries, duplicate kids, SPIFFE bundles, bounds."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from zerotrust.errors import ConfigurationError
from zerotrust.tokens import JWK, JWKSet, PrivateJWK

from .conftest import b64, rsa_members, rsa_modulus
from .test_rfc_vectors import A3_KEY, A4_KEY, ED_KEY


def test_junk_entries_are_skipped_with_reasons(es256: PrivateJWK) -> None:
    good = es256.public().to_public_dict()
    document = {
        "keys": [
            "not an object",
            {"kty": "oct", "k": b64(b"k" * 32), "kid": "sym"},
            {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "kid": "short"},
            {"kty": "RSA", "n": b64(b"\x01" * 128), "e": "AQAB", "kid": "small"},
            {"kty": "OKP", "crv": "X25519", "x": b64(b"\x09" * 32)},
            {**A3_KEY, "alg": "RS256", "kid": "mismatch"},
            {**A3_KEY, "use": "enc", "kid": "enc"},
            {"kty": "unknown", "kid": 7},
            good,
        ]
    }
    key_set = JWKSet.from_dict(document)
    assert len(key_set) == 1
    assert key_set.get(es256.kid or "") == es256.public()
    assert [s.index for s in key_set.skipped] == list(range(8))
    kids = [s.kid for s in key_set.skipped]
    assert kids == [None, "sym", "short", "small", None, "mismatch", "enc", None]
    assert all(s.reason for s in key_set.skipped)
    assert key_set.skipped[0].reason == "entry is not a JSON object"
    assert key_set.skipped[7].reason == "unsupported JWK key type"
    with pytest.raises(dataclasses.FrozenInstanceError):  # what was skipped stays as read
        key_set.skipped[0].reason = ""  # type: ignore[misc]
    # key sets with the same keys are equal and hash alike; other keys make another hash
    again = JWKSet.from_dict({"keys": [good]})
    assert again == key_set and hash(again) == hash(key_set)
    other = JWKSet.from_dict({"keys": [PrivateJWK.generate("ES256").public().to_public_dict()]})
    assert hash(other) != hash(key_set)
    assert not hasattr(key_set, "__dict__")


def test_rsa_keys_out_of_bounds_are_skipped(es256: PrivateJWK) -> None:
    """An RSA key over 8192 bits or with an exponent over 2**32 is skipped like any unusable
    key; the set's other keys are read."""
    document = {
        "keys": [
            {**rsa_members(8193), "kid": "large"},
            {**rsa_members(16384, (1 << 64) - 1), "kid": "huge"},
            {**rsa_members(2048, (1 << 32) + 1), "kid": "exponent"},
            {**rsa_members(8192), "kid": "rsa-8192"},
            {**rsa_members(2048, 3), "kid": "rsa-e3"},
            es256.public().to_public_dict(),
        ]
    }
    key_set = JWKSet.from_dict(document)
    assert sorted(key.kid or "" for key in key_set) == sorted(["rsa-8192", "rsa-e3", es256.kid])
    reasons = {s.kid: s.reason for s in key_set.skipped}
    assert reasons.keys() == {"large", "huge", "exponent"}
    assert "8192 bits" in reasons["large"] and "8192 bits" in reasons["huge"]
    assert "2**32" in reasons["exponent"]


def test_an_rsa_key_with_an_even_modulus_is_refused() -> None:
    """A modulus is the product of two odd primes; ``cryptography`` builds a public key of an
    even one all the same. Refused in a JWK, skipped in a key set, refused as a key object."""
    even = rsa_modulus(2048) - 1
    members = {"kty": "RSA", "n": b64(even.to_bytes(256, "big")), "e": "AQAB", "kid": "even"}
    with pytest.raises(ConfigurationError, match="RSA modulus must be odd"):
        JWK.from_dict(members)
    key_set = JWKSet.from_dict({"keys": [members]})
    assert len(key_set) == 0 and key_set.skipped[0].reason == "RSA modulus must be odd"
    public = rsa.RSAPublicNumbers(65537, even).public_key()  # cryptography takes it
    with pytest.raises(ConfigurationError, match="RSA modulus must be odd"):
        JWK(public, kid="even", algorithm="RS256")


def test_never_yields_an_oct_key() -> None:
    key_set = JWKSet.from_dict({"keys": [{"kty": "oct", "k": b64(b"s" * 64)}]})
    assert len(key_set) == 0
    assert "symmetric" in key_set.skipped[0].reason


def test_spiffe_bundle_document(es256: PrivateJWK, ca: Any) -> None:
    from cryptography.hazmat.primitives import serialization

    der = ca.root_certificate.public_bytes(serialization.Encoding.DER)
    x509_entry = {**JWK(ca.root_certificate.public_key()).to_public_dict(), "use": "x509-svid"}
    x509_entry["x5c"] = [__import__("base64").b64encode(der).decode()]
    del x509_entry["alg"]
    jwt_entry = {**es256.public().to_public_dict(), "use": "jwt-svid"}
    bundle = {"keys": [x509_entry, jwt_entry], "spiffe_sequence": 3, "spiffe_refresh_hint": 60}
    key_set = JWKSet.from_json(json.dumps(bundle))
    assert [key.kid for key in key_set] == [es256.kid]
    assert key_set.get(es256.kid or "").use == "jwt-svid"  # type: ignore[union-attr]
    assert "X.509-SVID" in key_set.skipped[0].reason


def test_duplicate_kid_with_different_keys_is_ambiguous(es256: PrivateJWK) -> None:
    first = {**A3_KEY, "kid": "dup"}
    second = {**es256.public().to_public_dict(), "kid": "dup"}
    key_set = JWKSet.from_dict({"keys": [first, second, ED_KEY]})
    assert len(key_set) == 3
    assert key_set.get("dup") is None
    assert key_set.select("dup") is None
    assert key_set.is_ambiguous("dup")
    assert key_set.ambiguous_kids == {"dup"}
    assert "dup" not in key_set


def test_identical_duplicates_are_merged() -> None:
    entry = {**A3_KEY, "kid": "same"}
    key_set = JWKSet.from_dict({"keys": [entry, dict(entry)]})
    assert len(key_set) == 1
    assert key_set.get("same") is not None
    assert not key_set.ambiguous_kids


def test_keys_without_kid_are_never_ambiguous(es256: PrivateJWK) -> None:
    unnamed = JWK(es256.private_key.public_key())  # type: ignore[arg-type]
    key_set = JWKSet([unnamed, JWK.from_dict(A3_KEY)])
    assert len(key_set) == 2
    assert key_set.ambiguous_kids == frozenset()


def test_select_without_kid_needs_exactly_one_key(es256: PrivateJWK) -> None:
    assert JWKSet([es256.public()]).select(None) == es256.public()
    assert JWKSet([es256.public(), JWK.from_dict(A3_KEY)]).select(None) is None
    assert JWKSet().select(None) is None


def test_lookup_and_iteration(es256: PrivateJWK) -> None:
    key_set = JWKSet([es256.public(), JWK.from_dict(A4_KEY)])
    assert es256.kid in key_set
    assert es256.public() in key_set
    assert "nope" not in key_set
    assert JWK.from_dict(A3_KEY) not in key_set
    assert (key_set == 5) is False
    assert key_set.get("nope") is None
    assert list(key_set) == [es256.public(), JWK.from_dict(A4_KEY)]
    assert key_set == JWKSet(reversed(list(key_set)))
    assert hash(key_set) == hash(JWKSet(list(key_set)))
    assert JWKSet.from_dict(key_set.to_public_dict()) == key_set
    assert "es256-1" in repr(key_set)
    with pytest.raises(AttributeError):
        key_set._keys = ()  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del key_set._keys
    assert len(key_set) == 2
    with pytest.raises(ConfigurationError):
        JWKSet(["not a key"])  # type: ignore[list-item]


@pytest.mark.parametrize(
    "document",
    [
        [],
        {"keys": "nope"},
        {"keys": {"kty": "EC"}},
        {"nokeys": []},
        "text",
    ],
)
def test_non_jwks_documents_are_refused(document: Any) -> None:
    with pytest.raises(ConfigurationError):
        JWKSet.from_dict(document)


@pytest.mark.parametrize(
    "text",
    [
        b"",
        b"[]",
        b'{"keys": [}',
        b'{"keys": [], "keys": []}',
        b'{"keys": [' + b"[" * 20 + b"]" * 20 + b"]}",
        b"\xff\xfe{}",
        b'{"keys": [{"kty": "EC", "x": NaN}]}',
    ],
)
def test_from_json_refuses_bad_json(text: bytes) -> None:
    with pytest.raises(ConfigurationError):
        JWKSet.from_json(text)


def test_from_json_bounds(es256: PrivateJWK) -> None:
    entry = es256.public().to_public_dict()
    with pytest.raises(ConfigurationError, match="larger than"):
        JWKSet.from_json(json.dumps({"keys": [entry], "pad": "x" * 1000}), max_size=500)
    with pytest.raises(ConfigurationError, match="more than 2 keys"):
        JWKSet.from_json(json.dumps({"keys": [entry] * 3}), max_keys=2)
    with pytest.raises(ConfigurationError):
        JWKSet.from_json(123)  # type: ignore[arg-type]
    exactly = json.dumps({"keys": [entry, {**entry, "kid": "k2"}]})
    assert len(JWKSet.from_json(exactly, max_size=len(exactly), max_keys=2)) == 2
    assert len(JWKSet.from_json(json.dumps({"keys": [entry]}).encode())) == 1
