"""RFC 6750 section 3 and RFC 9449 sections 7.1 and 9: the ``WWW-Authenticate`` challenges a
client reads. A challenge's ``error`` is an auth-param (RFC 9110 section 11.2): a token or a
quoted-string, whose quoted-pairs stand for the character they escape; text inside another
parameter's quoted-string is no parameter at all.
"""

from __future__ import annotations

import httpx
import pytest

from zerotrust import Request
from zerotrust.authn.credentials import extract_credentials
from zerotrust.client._httpx_auth import invalid_token_challenge, use_dpop_nonce_challenge
from zerotrust.errors import MalformedCredentials


def request(authorization: str) -> Request:
    return Request(method="GET", path="/resource", headers={"authorization": authorization})


def challenged(*values: str) -> httpx.Response:
    return httpx.Response(401, headers=[("WWW-Authenticate", value) for value in values])


@pytest.mark.parametrize(
    ("value", "invalid_token"),
    [
        # RFC 6750 section 3: a request without authentication, and an expired token
        ('Bearer realm="example"', False),
        (
            'Bearer realm="example", error="invalid_token",'
            ' error_description="The access token expired"',
            True,
        ),
        # RFC 9449 section 7.1: a DPoP challenge for a token bound to another key
        (
            'DPoP error="invalid_token", error_description="Invalid DPoP key binding",'
            ' algs="ES256"',
            True,
        ),
        # RFC 9449 section 9: a nonce is wanted, the token is fine
        (
            'DPoP error="use_dpop_nonce", error_description="Resource server requires nonce'
            ' in DPoP proof"',
            False,
        ),
        # RFC 6750 section 3.1: the other error codes
        ('Bearer realm="example", error="invalid_request"', False),
        ('Bearer realm="example", error="insufficient_scope", scope="a b"', False),
        # RFC 9110 11.2: a token value, BWS around "=", parameter names in any case
        ("Bearer realm=example, error=invalid_token", True),
        ('Bearer error = "invalid_token"', True),
        ('Bearer Error="invalid_token"', True),
        # RFC 9110 5.6.4: a quoted-pair stands for the character it escapes
        (r'Bearer error="invalid\_token"', True),
        (r'Bearer realm="say \"hi\"", error="invalid_token"', True),
        # text inside a quoted-string is part of that value, whatever it looks like
        ('Bearer error_description="not error=invalid_token, nor this"', False),
        ('Bearer realm="a,error=invalid_token,b"', False),
        ('Bearer realm="a, error=\\"invalid_token\\", b"', False),
        (r'Bearer realm="a\", error=invalid_token, b=\"c"', False),
        ('Bearer error_description="error=\\"invalid_token\\""', False),
        # other parameter names and values
        ('Bearer error="invalid_token_x"', False),
        ('Bearer xerror="invalid_token"', False),
        ('Bearer error_description="invalid_token"', False),
    ],
)
def test_invalid_token_challenge(value: str, invalid_token: bool) -> None:
    assert invalid_token_challenge(challenged(value)) is invalid_token


def test_several_challenges_in_several_fields() -> None:
    # RFC 9110 11.6.1: a field may list several challenges, and there may be several fields
    assert invalid_token_challenge(challenged('Basic realm="a"', 'Bearer error="invalid_token"'))
    assert invalid_token_challenge(challenged('Basic realm="a", Bearer error="invalid_token"'))
    assert not invalid_token_challenge(challenged('Basic realm="error=invalid_token, x"'))


@pytest.mark.parametrize(
    ("value", "use_nonce"),
    [
        (
            'DPoP error="use_dpop_nonce", error_description="Resource server requires nonce'
            ' in DPoP proof"',
            True,
        ),
        ('DPoP algs="ES256", error=use_dpop_nonce', True),
        ('DPoP error="invalid_token", algs="ES256"', False),
        ('DPoP error_description="see: error=use_dpop_nonce, please"', False),
        (r'DPoP error_description="error=\"use_dpop_nonce\""', False),
    ],
)
def test_use_dpop_nonce_challenge(value: str, use_nonce: bool) -> None:
    assert use_dpop_nonce_challenge(challenged(value)) is use_nonce


def test_section_2_1_authorization_request_header() -> None:
    # RFC 6750 2.1: "Authorization: Bearer mF_9.B5f-4.1JqM"; the scheme is case-insensitive
    for value in ("Bearer mF_9.B5f-4.1JqM", "bearer mF_9.B5f-4.1JqM", "BEARER  mF_9.B5f-4.1JqM"):
        credentials = extract_credentials(request(value))
        assert (credentials.scheme, credentials.token) == ("Bearer", "mF_9.B5f-4.1JqM")


@pytest.mark.parametrize(
    "value",
    ["Bearer", "Bearer ", "Bearer mF_9 B5f", "Bearer mF_9.B5f-4.1JqM=a", "Bearer\tmF_9.B5f-4.1JqM"],
)
def test_section_2_1_b64token_syntax(value: str) -> None:
    with pytest.raises(MalformedCredentials):
        extract_credentials(request(value))
