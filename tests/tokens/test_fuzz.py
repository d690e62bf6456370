"""Property tests: hostile input raises TokenError (never another exception); mutated tokens
never verify; strict base64url round-trips."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from zerotrust._clock import FixedClock
from zerotrust.errors import ConfigurationError, TokenError
from zerotrust.tokens import JWKSet, PrivateJWK, SecretKey, TokenVerifier
from zerotrust.tokens._b64 import b64url_decode, b64url_encode, is_canonical

from .conftest import AUDIENCE, ISSUER, NOW, b64, b64json, claims, mint

KEY = PrivateJWK.generate("ES256", kid="fuzz")
HMAC = SecretKey(bytes(range(100, 164)), "HS256", kid="fuzz-hs")
CLOCK = FixedClock(NOW)
VERIFIER = TokenVerifier(
    issuer=ISSUER,
    audience=AUDIENCE,
    keys=KEY.public(),
    algorithms=["ES256"],
    clock=CLOCK,
    cache_size=0,
)
CACHED = TokenVerifier(
    issuer=ISSUER, audience=AUDIENCE, keys=KEY.public(), algorithms=["ES256"], clock=CLOCK
)
HMAC_VERIFIER = TokenVerifier(
    issuer=ISSUER, audience=AUDIENCE, keys=HMAC, algorithms=["HS256"], clock=CLOCK, cache_size=0
)
VALID = mint(KEY, claims(scope="a b", extra={"k": [1, 2, {"x": None}]}))
VALID_HMAC = mint(HMAC, claims())
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

B64_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def _refused(verifier: TokenVerifier, token: Any) -> None:
    try:
        verifier.verify(token)
    except TokenError:
        return
    pytest.fail("a hostile token verified")


@FAST
@given(st.text(max_size=600))
def test_arbitrary_text_raises_only_token_errors(text: str) -> None:
    _refused(VERIFIER, text)


@FAST
@given(st.binary(max_size=600))
def test_arbitrary_bytes_raise_only_token_errors(data: bytes) -> None:
    _refused(VERIFIER, data)


@FAST
@given(st.lists(st.text(alphabet=B64_CHARS + "=+/ .", max_size=80), min_size=1, max_size=6))
def test_segment_soup_raises_only_token_errors(segments: list[str]) -> None:
    _refused(VERIFIER, ".".join(segments))


@FAST
@given(
    header=st.dictionaries(st.text(max_size=6), json_values, max_size=5),
    alg=st.sampled_from(["ES256", "none", "HS256", "RS256", "EdDSA", None, 1]),
    payload=json_values,
    signature=st.binary(max_size=80),
)
def test_structured_garbage_raises_only_token_errors(
    header: dict[str, Any], alg: Any, payload: Any, signature: bytes
) -> None:
    header = {**header, "alg": alg}
    token = b64json(header) + "." + b64(json.dumps(payload).encode()) + "." + b64(signature)
    _refused(VERIFIER, token)
    _refused(HMAC_VERIFIER, token)


def _mutations() -> st.SearchStrategy[tuple[int, str, str]]:
    return st.tuples(
        st.integers(min_value=0, max_value=10_000),
        st.sampled_from(["replace", "insert", "delete"]),
        st.sampled_from([*B64_CHARS, ".", "=", "+", "/", " ", "\n", "é", "\x00"]),
    )


def _mutate(token: str, mutation: tuple[int, str, str]) -> str:
    index, kind, char = mutation
    index %= len(token)
    if kind == "replace":
        assume(token[index] != char)
        return token[:index] + char + token[index + 1 :]
    if kind == "insert":
        return token[:index] + char + token[index:]
    return token[:index] + token[index + 1 :]


@FAST
@given(_mutations())
def test_mutated_tokens_never_verify(mutation: tuple[int, str, str]) -> None:
    assert VERIFIER.verify(VALID)
    mutated = _mutate(VALID, mutation)
    _refused(VERIFIER, mutated)
    _refused(CACHED, mutated)


@FAST
@given(_mutations())
def test_mutated_hmac_tokens_never_verify(mutation: tuple[int, str, str]) -> None:
    assert HMAC_VERIFIER.verify(VALID_HMAC)
    _refused(HMAC_VERIFIER, _mutate(VALID_HMAC, mutation))


def test_valid_token_still_verifies_after_fuzzing() -> None:
    CLOCK.set(NOW)
    assert CACHED.verify(VALID).jti == "id-0001"
    assert CACHED.verify(VALID) is CACHED.verify(VALID)
    assert CLOCK.now() == NOW.astimezone(dt.timezone.utc)


@FAST
@given(st.binary(max_size=200))
def test_base64url_round_trip(data: bytes) -> None:
    text = b64url_encode(data)
    assert is_canonical(text.encode())
    assert b64url_decode(text) == data


@FAST
@given(st.text(alphabet=B64_CHARS + "=", max_size=40))
def test_base64url_accepts_only_canonical_text(text: str) -> None:
    try:
        data = b64url_decode(text)
    except ValueError:
        return
    assert b64url_encode(data) == text


@FAST
@given(st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
def test_jwks_from_json_raises_only_configuration_errors(data: bytes) -> None:
    with contextlib.suppress(ConfigurationError):
        JWKSet.from_json(data)


@FAST
@given(st.binary(min_size=32, max_size=200))
def test_secret_key_checks_never_crash(secret: bytes) -> None:
    with contextlib.suppress(ConfigurationError):
        SecretKey(secret)
