"""RFC 7797 section 4: the JWS Unencoded Payload Option examples.

The example of section 4.1 (the payload ``$.02`` base64url-encoded, as any JWS) verifies. The
example of section 4.2 (``b64: false``) is refused whichever way its payload is carried, as
docs/tokens.md says: a reader honouring ``b64`` would not read the payload that was verified.
"""

from __future__ import annotations

import base64

import pytest

from zerotrust.errors import MalformedToken, UnsupportedTokenFeature
from zerotrust.tokens import SecretKey, verify_signature

# RFC 7797 section 4: the HMAC key of RFC 7515 A.1
KEY = "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"
PAYLOAD = b"$.02"
# RFC 7797 4.1: {"alg":"HS256"}, the payload encoded
ENCODED = "eyJhbGciOiJIUzI1NiJ9.JC4wMg.5mvfOroL-g7HyqJoozehmsaqmvTYGEq5jTI1gVvoEoQ"
# RFC 7797 4.2: {"alg":"HS256","b64":false,"crit":["b64"]}, detached content
UNENCODED_HEADER = "eyJhbGciOiJIUzI1NiIsImI2NCI6ZmFsc2UsImNyaXQiOlsiYjY0Il19"
UNENCODED_SIGNATURE = "A5dxf2s96_n5FLueVuW1Z_vh161FwXZC4YLPff6dmDY"


def secret() -> SecretKey:
    return SecretKey(base64.urlsafe_b64decode(KEY + "=" * (-len(KEY) % 4)), "HS256")


def test_4_1_encoded_payload_verifies() -> None:
    signed = verify_signature(ENCODED, secret(), algorithms=["HS256"])
    assert signed.payload == PAYLOAD
    assert dict(signed.header) == {"alg": "HS256"}


def test_4_2_unencoded_payload_is_refused_detached() -> None:
    token = f"{UNENCODED_HEADER}..{UNENCODED_SIGNATURE}"
    with pytest.raises(UnsupportedTokenFeature) as info:
        verify_signature(token, secret(), algorithms=["HS256"])
    assert info.value.code == "unsupported_token"


def test_4_2_unencoded_payload_is_refused_inline() -> None:
    # the payload in place, as RFC 7797 section 5 describes: not base64url, so not a JWS token
    token = f"{UNENCODED_HEADER}.{PAYLOAD.decode()}.{UNENCODED_SIGNATURE}"
    with pytest.raises((UnsupportedTokenFeature, MalformedToken)):
        verify_signature(token, secret(), algorithms=["HS256"])
