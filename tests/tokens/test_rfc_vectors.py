"""Known-answer tests from RFC 7515 Appendix A, RFC 8037 Appendix A.4 and RFC 7638 §3.1."""

from __future__ import annotations

import pytest

from zerotrust.errors import AlgorithmNotAllowed, MalformedToken
from zerotrust.tokens import JWK, PrivateJWK, SecretKey, verify_signature

# RFC 7515 A.1: the JWS Payload shared by A.1-A.3 ({"iss":"joe", "exp":1300819380, ...}).
PAYLOAD_A1 = (
    "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ"
)

# --- A.1: HMAC SHA-256 -------------------------------------------------------------------------
A1_KEY = "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"
A1_TOKEN = (
    "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9."
    + PAYLOAD_A1
    + ".dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
)

# --- A.2: RSASSA-PKCS1-v1_5 SHA-256 --------------------------------------------------------------
A2_N = (
    "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4Ql"
    "L-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsL"
    "A9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8"
    "NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ"
)
A2_D = (
    "Eq5xpGnNCivDflJsRQBXHx1hdR1k6Ulwe2JZD50LpXyWPEAeP88vLNO97IjlA7_GQ5sLKMgvfTeXZx9SE-7YwVol2NXOoAJe"
    "46sui395IW_GO-pWJ1O0BkTGoVEn2bKVRUCgu-GjBVaYLU6f3l9kJfFNS3E0QbVdxzubSu3Mkqzjkn439X0M_V51gfpRLI9JY"
    "anrC4D4qAdGcopV_0ZHHzQlBjudU2QvXt4ehNYTCBr6XCLQUShb1juUO1ZdiYoFaFQT5Tw8bGUl_x_jTj3ccPDVZFD9pIuhLh"
    "BOneufuBiB4cS98l2SR_RQyGWSeWjnczT0QU91p1DhOVRuOopznQ"
)
A2_SIGNATURE = (
    "cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujG"
    "bds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K"
    "0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6L"
    "bgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw"
)
A2_TOKEN = "eyJhbGciOiJSUzI1NiJ9." + PAYLOAD_A1 + "." + A2_SIGNATURE

# --- A.3: ECDSA P-256 SHA-256 --------------------------------------------------------------------
A3_KEY = {
    "kty": "EC",
    "crv": "P-256",
    "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
    "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
}
A3_D = "jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI"
A3_TOKEN = (
    "eyJhbGciOiJFUzI1NiJ9."
    + PAYLOAD_A1
    + ".DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q"
)

# --- A.4: ECDSA P-521 SHA-512 (payload is the 7 bytes "Payload", not JSON) -----------------------
A4_KEY = {
    "kty": "EC",
    "crv": "P-521",
    "x": "AekpBQ8ST8a8VcfVOTNl353vSrDCLLJXmPk06wTjxrrjcBpXp5EOnYG_NjFZ6OvLFV1jSfS9tsz4qUxcWceqwQGk",
    "y": "ADSmRA43Z1DSNx_RvcLI87cdL07l6jQyyBXMoxVg_l2Th-x3S1WDhjDly79ajL4Kkd0AZMaZmh9ubmf63e3kyMj2",
}
A4_TOKEN = (
    "eyJhbGciOiJFUzUxMiJ9.UGF5bG9hZA."
    "AdwMgeerwtHoh-l192l60hp9wAHZFVJbLfD_UxMi70cwnZOYaRI1bKPWROc-mZZqwqT2SI-KGDKB34XO0aw_7Xdt"
    "AG8GaSwFKdCAPZgoXD2YBJZCPEX3xKpRwcdOO8KpEHwJjyqOgzDO7iKvU8vcnwNrmxYbSW9ERBXukOXolLzeO_Jn"
)

# --- A.5: unsecured JWS --------------------------------------------------------------------------
A5_TOKEN = "eyJhbGciOiJub25lIn0." + PAYLOAD_A1 + "."

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
