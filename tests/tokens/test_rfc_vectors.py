"""Known-answer tests from RFC 7515 Appendix A, RFC 8037 Appendix A.4 and RFC 7638 §3.1."""

from __future__ import annotations

import pytest

from tests._rfc7515 import (
    A1_KEY,
    A1_TOKEN,
    A2_D,
    A2_N,
    A2_SIGNATURE,
    A2_TOKEN,
    A3_D,
    A3_KEY,
    A3_TOKEN,
    A4_KEY,
    A4_TOKEN,
    A5_TOKEN,
)
from zerotrust.errors import AlgorithmNotAllowed, MalformedToken
from zerotrust.tokens import JWK, PrivateJWK, SecretKey, verify_signature

# --- RFC 8037 A.4: Ed25519 -----------------------------------------------------------------------
ED_KEY = {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
ED_D = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
ED_SIGNING_INPUT = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc"
ED_SIGNATURE = (
    "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
)

RFC_CLAIMS = {"iss": "joe", "exp": 1300819380, "http://example.com/is_root": True}


def _b64decode(text: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_rfc7515_a1_hs256_with_secret_key() -> None:
    key = SecretKey(_b64decode(A1_KEY), "HS256")
    signed = verify_signature(A1_TOKEN, key, algorithms=["HS256"])
    assert signed.algorithm == "HS256"
    assert dict(signed.claims) == RFC_CLAIMS
    assert signed.header["typ"] == "JWT"


def test_rfc7515_a2_rs256() -> None:
    key = JWK.from_dict({"kty": "RSA", "n": A2_N, "e": "AQAB"})
    assert key.algorithm == "RS256"
    signed = verify_signature(A2_TOKEN, key, algorithms=["RS256"])
    assert dict(signed.claims) == RFC_CLAIMS


def test_rfc7515_a2_private_key_reproduces_the_signature() -> None:
    # PKCS#1 v1.5 is deterministic; d alone (no CRT members) exercises prime recovery.
    key = PrivateJWK.from_dict({"kty": "RSA", "n": A2_N, "e": "AQAB", "d": A2_D})
    signing_input = A2_TOKEN.rsplit(".", 1)[0].encode()
    assert key.sign(signing_input) == _b64decode(A2_SIGNATURE)


def test_rfc7515_a3_es256() -> None:
    signed = verify_signature(A3_TOKEN, JWK.from_dict(A3_KEY), algorithms=["ES256"])
    assert signed.algorithm == "ES256"
    assert dict(signed.claims) == RFC_CLAIMS


def test_rfc7515_a3_private_key_matches_public() -> None:
    key = PrivateJWK.from_dict({**A3_KEY, "d": A3_D})
    assert key.public() == JWK.from_dict(A3_KEY)


def test_rfc7515_a4_es512_verifies_at_the_signature_step() -> None:
    signed = verify_signature(A4_TOKEN, JWK.from_dict(A4_KEY), algorithms=["ES512"])
    assert signed.payload == b"Payload"
    with pytest.raises(MalformedToken):
        _ = signed.claims  # the RFC's payload is not a claims set


def test_rfc7515_a5_unsecured_is_rejected() -> None:
    with pytest.raises(AlgorithmNotAllowed):
        verify_signature(A5_TOKEN, JWK.from_dict(A3_KEY), algorithms=["ES256"])


def test_rfc8037_a4_ed25519() -> None:
    token = ED_SIGNING_INPUT + "." + ED_SIGNATURE
    signed = verify_signature(token, JWK.from_dict(ED_KEY), algorithms=["EdDSA"])
    assert signed.payload == b"Example of Ed25519 signing"


def test_rfc8037_a4_ed25519_signing_is_deterministic() -> None:
    key = PrivateJWK.from_dict({**ED_KEY, "d": ED_D})
    assert key.sign(ED_SIGNING_INPUT.encode()) == _b64decode(ED_SIGNATURE)


def test_rfc7638_thumbprint_vector() -> None:
    key = JWK.from_dict(
        {
            "kty": "RSA",
            "n": (
                "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6"
                "tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5"
                "v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD0"
                "8qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU"
                "8awapJzKnqDKgw"
            ),
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29",
        }
    )
    assert key.thumbprint() == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
