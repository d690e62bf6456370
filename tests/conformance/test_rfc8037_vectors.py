"""RFC 8037 Appendix A: the Ed25519 key (A.1/A.2), its thumbprint (A.3) and the signature of
A.4 with the fully-specified algorithm name of RFC 9864. A.4 itself (``EdDSA``) and the
deterministic signature are in tests/tokens/test_rfc_vectors.py; A.5 to A.7 are ECDH-ES
(X25519, X448), which signs nothing: such keys are refused as signing keys.
"""

from __future__ import annotations

import pytest

from zerotrust.errors import ConfigurationError
from zerotrust.tokens import JWK, JWKSet, PrivateJWK, verify_signature
from zerotrust.tokens._b64 import b64url_encode

# RFC 8037 A.1 (private key) and A.2 (public key)
X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
D = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
PUBLIC = {"kty": "OKP", "crv": "Ed25519", "x": X}
# RFC 8037 A.3: the JWK thumbprint canonicalization and its SHA-256 (hex and base64url)
CANONICAL = '{"crv":"Ed25519","kty":"OKP","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}'
DIGEST_HEX = "90facafea9b1556698540f70c0117a22ea37bd5cf3ed3c47093c1707282b4b89"
THUMBPRINT = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
# RFC 8037 A.4: the payload "Example of Ed25519 signing" and its signature
PAYLOAD = "RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc"
SIGNATURE = "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
# RFC 8037 A.6: an X25519 public key (ECDH-ES), not a signing key
X25519 = {"kty": "OKP", "crv": "X25519", "x": "hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo"}


def test_a3_thumbprint() -> None:
    assert b64url_encode(bytes.fromhex(DIGEST_HEX)) == THUMBPRINT
    assert JWK.from_dict(PUBLIC).thumbprint() == THUMBPRINT
    assert PrivateJWK.from_dict({**PUBLIC, "d": D}).thumbprint() == THUMBPRINT


def test_a3_thumbprint_ignores_optional_members() -> None:
    key = JWK.from_dict({**PUBLIC, "alg": "EdDSA", "kid": "k", "use": "sig"})
    assert key.thumbprint() == THUMBPRINT


def test_a2_public_key_from_the_private_key() -> None:
    public = PrivateJWK.from_dict({**PUBLIC, "d": D}).public()
    assert {name: public.to_public_dict()[name] for name in PUBLIC} == PUBLIC


def test_a2_private_member_is_refused_in_a_public_key() -> None:
    with pytest.raises(ConfigurationError, match="private"):
        JWK.from_dict({**PUBLIC, "d": D})


def test_a4_signature_with_the_fully_specified_name() -> None:
    # RFC 9864: "Ed25519" names EdDSA on Ed25519; the A.2 key read without "alg" verifies the
    # A.4 payload signed under that name too (the header differs, so does the signature)
    private = PrivateJWK.from_dict({**PUBLIC, "d": D})
    header = b64url_encode(b'{"alg":"Ed25519"}')
    signature = b64url_encode(private.sign(f"{header}.{PAYLOAD}".encode()))
    token = f"{header}.{PAYLOAD}.{signature}"
    signed = verify_signature(token, JWK.from_dict(PUBLIC), algorithms=["Ed25519"])
    assert (signed.algorithm, signed.payload) == ("Ed25519", b"Example of Ed25519 signing")
    # and the RFC's own A.4 token under "EdDSA", through a key set
    rfc_token = f"eyJhbGciOiJFZERTQSJ9.{PAYLOAD}.{SIGNATURE}"
    key_set = JWKSet.from_dict({"keys": [PUBLIC]})
    assert verify_signature(rfc_token, key_set, algorithms=["EdDSA"]).algorithm == "EdDSA"


def test_a6_x25519_is_not_a_signing_key() -> None:
    with pytest.raises(ConfigurationError):
        JWK.from_dict(X25519)
    key_set = JWKSet.from_dict({"keys": [X25519, PUBLIC]})
    assert len(key_set) == 1
    assert [s.index for s in key_set.skipped] == [0]
