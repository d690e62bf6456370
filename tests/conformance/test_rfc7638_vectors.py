"""RFC 7638 (JWK Thumbprint): the section 3.1 example (an RSA key), the required members of
section 3.2 for RSA and EC keys, and section 3.3's rule that other members, their order and the
JSON's whitespace do not change the thumbprint. The OKP member set (RFC 8037 section 2, A.3) is
in test_rfc8037_vectors.py.

Where the RFC gives no thumbprint (the EC key of RFC 7515 A.3), the expected value is the
canonical JSON of section 3 hashed here and computed by an independent JOSE library.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from joserfc.jwk import ECKey, RSAKey

from tests._rfc7515 import A2_D, A2_N, A3_D, A3_KEY
from zerotrust.tokens import JWK, JWKSet, PrivateJWK
from zerotrust.tokens._b64 import b64url_encode

# RFC 7638 section 3.1: the example RSA key (from RFC 7517 A.1) and its thumbprint
N = (
    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRX"
    "jBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAt"
    "aSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPk"
    "sINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
)
RSA_KEY: dict[str, Any] = {"kty": "RSA", "n": N, "e": "AQAB", "alg": "RS256", "kid": "2011-04-29"}
# RFC 7638 section 3.1: the JSON hashed (the required members, in lexicographic order, no
# whitespace), its SHA-256 octets and their base64url encoding
CANONICAL = '{"e":"AQAB","kty":"RSA","n":"' + N + '"}'
# fmt: off
OCTETS = bytes([
    55, 54, 203, 177, 120, 124, 184, 48, 156, 119, 238, 140, 55, 5, 197, 225,
    111, 251, 158, 133, 151, 21, 144, 31, 30, 76, 89, 177, 17, 130, 245, 123,
])
# fmt: on
THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"

# RFC 7515 A.2 (an RSA key with its private exponent) and A.3 (a P-256 key)
EC_KEY: dict[str, Any] = dict(A3_KEY)
EC_D = A3_D


def canonical_thumbprint(key: dict[str, Any], required: tuple[str, ...]) -> str:
    """Section 3: SHA-256 of the required members, sorted, without whitespace."""
    text = json.dumps({name: key[name] for name in required}, sort_keys=True, separators=(",", ":"))
    return b64url_encode(hashlib.sha256(text.encode()).digest())


def test_3_1_example() -> None:
    assert hashlib.sha256(CANONICAL.encode()).digest() == OCTETS
    assert b64url_encode(OCTETS) == THUMBPRINT
    assert canonical_thumbprint(RSA_KEY, ("e", "kty", "n")) == THUMBPRINT
    assert RSAKey.import_key(RSA_KEY).thumbprint() == THUMBPRINT
    assert JWK.from_dict(RSA_KEY).thumbprint() == THUMBPRINT


def test_3_2_rsa_required_members_only() -> None:
    # the RFC 7515 A.2 key: its private members are not among "e", "kty", "n" either
    public: dict[str, Any] = {"kty": "RSA", "n": A2_N, "e": "AQAB"}
    expected = canonical_thumbprint(public, ("e", "kty", "n"))
    assert RSAKey.import_key(public).thumbprint() == expected
    assert JWK.from_dict(public).thumbprint() == expected
    private = PrivateJWK.from_dict({**public, "d": A2_D})
    assert private.thumbprint() == private.public().thumbprint() == expected


def test_3_2_ec_required_members_only() -> None:
    expected = canonical_thumbprint(EC_KEY, ("crv", "kty", "x", "y"))
    assert ECKey.import_key(EC_KEY).thumbprint() == expected
    assert JWK.from_dict(EC_KEY).thumbprint() == expected
    private = PrivateJWK.from_dict({**EC_KEY, "d": EC_D})
    assert private.thumbprint() == private.public().thumbprint() == expected


@pytest.mark.parametrize(
    "extra",
    [
        {"alg": "ES256"},
        {"kid": "another id"},
        {"use": "sig"},
        {"key_ops": ["verify"]},
        {"alg": "ES256", "kid": "k", "use": "sig", "ext": True},
    ],
)
def test_3_3_other_members_do_not_change_it(extra: dict[str, Any]) -> None:
    expected = canonical_thumbprint(EC_KEY, ("crv", "kty", "x", "y"))
    assert JWK.from_dict({**EC_KEY, **extra}).thumbprint() == expected


def test_3_3_member_order_and_whitespace_do_not_change_it() -> None:
    reordered = dict(reversed(list(RSA_KEY.items())))
    assert JWK.from_dict(reordered).thumbprint() == THUMBPRINT
    spaced = json.dumps({"keys": [reordered]}, indent=4)
    (key,) = JWKSet.from_json(spaced)
    assert key.thumbprint() == THUMBPRINT
