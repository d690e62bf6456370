"""RFC 7515 Appendix A: the JWS examples through each public verification layer.

A.2 (RS256) and A.3 (ES256) verify at the signature layer (``verify_signature``), their bytes
exactly as the RFC gives them. Their payload is a claims set without ``aud``: a
``TokenVerifier`` accepts the signature and then refuses the claims, which the error type
tells apart from a refused signature. A.1 (HS256) verifies only with an HMAC key configured
for it; A.5 (``alg: none``) is refused whatever is configured.
"""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from joserfc import jws
from joserfc.jwk import ECKey, RSAKey

from tests._rfc7515 import (
    A1_KEY,
    A1_TOKEN,
    A2_N,
    A2_TOKEN,
    A3_KEY,
    A3_TOKEN,
    PAYLOAD_A1,
)
from zerotrust import FixedClock
from zerotrust.errors import (
    AlgorithmNotAllowed,
    ConfigurationError,
    InvalidIssuer,
    InvalidSignature,
    MissingClaim,
    TokenError,
)
from zerotrust.tokens import JWK, JWKSet, SecretKey, TokenVerifier, verify_signature
from zerotrust.tokens.sources import KeysLike

PAYLOAD = b'{"iss":"joe",\r\n "exp":1300819380,\r\n "http://example.com/is_root":true}'
EXP = 1300819380
# RFC 7515 A.5: the unsecured JWS (the A.1 payload, an empty signature)
A5_TOKEN = "eyJhbGciOiJub25lIn0." + PAYLOAD_A1 + "."

A2_KEY = {"kty": "RSA", "n": A2_N, "e": "AQAB"}


def secret() -> SecretKey:
    return SecretKey(base64.urlsafe_b64decode(A1_KEY + "=" * (-len(A1_KEY) % 4)), "HS256")


def verifier(keys: KeysLike, algorithm: str, *, issuer: str = "joe") -> TokenVerifier:
    # before the payload's exp, so that only the missing aud is left to refuse
    clock = FixedClock(dt.datetime.fromtimestamp(EXP - 60, dt.timezone.utc))
    return TokenVerifier(
        issuer=issuer,
        audience="https://api.example",
        keys=keys,
        algorithms=[algorithm],
        clock=clock,
    )


EXAMPLES = [
    pytest.param(A2_TOKEN, A2_KEY, "RS256", id="A.2-RS256"),
    pytest.param(A3_TOKEN, A3_KEY, "ES256", id="A.3-ES256"),
]


@pytest.mark.parametrize(("token", "key", "algorithm"), EXAMPLES)
def test_examples_verify_at_the_signature_layer(
    token: str, key: dict[str, Any], algorithm: str
) -> None:
    signed = verify_signature(token, JWK.from_dict(key), algorithms=[algorithm])
    assert signed.payload == PAYLOAD
    assert dict(signed.header) == {"alg": algorithm}
    # the same bytes verify with independent JOSE libraries
    independent = ECKey if key["kty"] == "EC" else RSAKey
    assert jws.deserialize_compact(token, independent.import_key(key)).payload == PAYLOAD
    pyjwt_key = pyjwt.PyJWK.from_dict(key, algorithm=algorithm)
    assert pyjwt.api_jws.decode(token, pyjwt_key, algorithms=[algorithm]) == PAYLOAD


@pytest.mark.parametrize(("token", "key", "algorithm"), EXAMPLES)
def test_token_verifier_accepts_the_signature_then_refuses_the_claims(
    token: str, key: dict[str, Any], algorithm: str
) -> None:
    keys = JWK.from_dict(key)
    with pytest.raises(MissingClaim, match="'aud'") as missing:
        verifier(keys, algorithm).verify(token)
    assert missing.value.code == "missing_claim"
    with pytest.raises(InvalidIssuer) as issuer:
        verifier(keys, algorithm, issuer="https://other.example").verify(token)
    assert issuer.value.code == "invalid_issuer"
    # a refused signature is told apart: the last signature byte changed
    head, _, signature = token.rpartition(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[-1] ^= 1
    tampered = head + "." + base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    with pytest.raises(InvalidSignature) as refused:
        verifier(keys, algorithm).verify(tampered)
    assert refused.value.code == "invalid_signature"


def test_a1_hs256_only_with_an_hmac_key_configured() -> None:
    with pytest.raises(MissingClaim, match="'aud'"):
        verifier(secret(), "HS256").verify(A1_TOKEN)  # the signature was accepted
    # public keys only: the token's algorithm is not allowed
    for keys, algorithm in ((JWK.from_dict(A2_KEY), "RS256"), (JWK.from_dict(A3_KEY), "ES256")):
        with pytest.raises(AlgorithmNotAllowed) as info:
            verify_signature(A1_TOKEN, keys, algorithms=[algorithm])
        assert info.value.code == "algorithm_not_allowed"
        with pytest.raises(AlgorithmNotAllowed):
            verifier(keys, algorithm).verify(A1_TOKEN)
    # HS256 allowed with public keys, or the key given as an "oct" JWK, is a configuration error
    with pytest.raises(ConfigurationError, match="SecretKey"):
        verify_signature(A1_TOKEN, JWK.from_dict(A2_KEY), algorithms=["HS256"])
    oct_set = JWKSet.from_dict({"keys": [{"kty": "oct", "k": A1_KEY, "alg": "HS256"}]})
    assert len(oct_set) == 0
    with pytest.raises(ConfigurationError, match="'oct'"):
        verify_signature(A1_TOKEN, oct_set, algorithms=["HS256"])
    # an HMAC key for another algorithm does not verify it either
    other = SecretKey(base64.urlsafe_b64decode(A1_KEY + "=" * (-len(A1_KEY) % 4)), "HS512")
    with pytest.raises(AlgorithmNotAllowed):
        verify_signature(A1_TOKEN, other, algorithms=["HS512"])


@pytest.mark.parametrize(
    ("keys", "algorithm"),
    [
        pytest.param(JWK.from_dict(A2_KEY), "RS256", id="rsa"),
        pytest.param(JWK.from_dict(A3_KEY), "ES256", id="ec"),
        pytest.param(secret(), "HS256", id="hmac"),
    ],
)
def test_a5_unsecured_is_always_refused(keys: KeysLike, algorithm: str) -> None:
    with pytest.raises(AlgorithmNotAllowed, match="never") as info:
        verify_signature(A5_TOKEN, keys, algorithms=[algorithm])
    assert info.value.code == "algorithm_not_allowed"
    with pytest.raises(AlgorithmNotAllowed):
        verifier(keys, algorithm).verify(A5_TOKEN)
    # other spellings of "none", and a signature added to it
    for header in (b'{"alg":"None"}', b'{"alg":"NONE"}', b'{"alg":"none","typ":"JWT"}'):
        encoded = base64.urlsafe_b64encode(header).decode().rstrip("=")
        with pytest.raises(TokenError):
            verify_signature(f"{encoded}.{PAYLOAD_A1}.", keys, algorithms=[algorithm])
    with pytest.raises(TokenError):
        verify_signature(A5_TOKEN + A3_TOKEN.rpartition(".")[2], keys, algorithms=[algorithm])
    # and "none" can never be allowed
    with pytest.raises(ConfigurationError, match="never"):
        verify_signature(A5_TOKEN, keys, algorithms=[algorithm, "none"])


def test_a3_1_signature_is_r_then_s_not_der() -> None:
    # A.3.1: the JWS Signature is R and S as 32-octet big-endian integers, concatenated; the
    # same values in another form (DER, as X.509 carries them; lengths other than 64) fail
    head, _, signature = A3_TOKEN.rpartition(".")
    raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    assert len(raw) == 64
    r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
    for variant in (encode_dss_signature(r, s), raw[:-1], raw + b"\0", b"\0" + raw):
        encoded = base64.urlsafe_b64encode(variant).decode().rstrip("=")
        with pytest.raises(InvalidSignature):
            verify_signature(f"{head}.{encoded}", JWK.from_dict(A3_KEY), algorithms=["ES256"])
