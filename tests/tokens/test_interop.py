"""Interoperability, both ways, with PyJWT and joserfc (ES256, EdDSA, RS256, PS256)."""

from __future__ import annotations

import time
import warnings
from typing import Any

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from joserfc import errors as joserfc_errors
from joserfc import jwk as joserfc_jwk
from joserfc import jwt as joserfc_jwt

from zerotrust._clock import FixedClock
from zerotrust.tokens import PrivateJWK, TokenIssuer, TokenVerifier

from .conftest import AUDIENCE, ISSUER, claims

ALGORITHMS = ["ES256", "EdDSA", "Ed25519", "RS256", "PS256"]
KEY_TYPES = {"ES256": "EC", "EdDSA": "OKP", "Ed25519": "OKP", "RS256": "RSA", "PS256": "RSA"}


_KEYS: dict[str, PrivateJWK] = {}


def _key(algorithm: str) -> PrivateJWK:
    if algorithm not in _KEYS:
        _KEYS[algorithm] = PrivateJWK.generate(algorithm, kid=f"{algorithm}-interop")
    return _KEYS[algorithm]


@pytest.fixture(params=ALGORITHMS)
def key(request: pytest.FixtureRequest) -> PrivateJWK:
    return _key(request.param)


@pytest.fixture
def joserfc_key(key: PrivateJWK) -> PrivateJWK:
    from joserfc.jws import JWSRegistry

    if key.algorithm not in JWSRegistry.algorithms:  # "Ed25519" (RFC 9864): joserfc >= 1.5
        pytest.skip(f"this joserfc has no {key.algorithm}")
    return key


@pytest.fixture(params=[alg for alg in ALGORITHMS if alg != "Ed25519"])  # PyJWT: EdDSA only
def pyjwt_key(request: pytest.FixtureRequest) -> PrivateJWK:
    return _key(request.param)


def _pem(key: PrivateJWK) -> bytes:
    return key.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


# recent joserfc releases flag plain "EdDSA" as deprecated (RFC 9864); old ones have no such class
_SECURITY_WARNING: type[Warning] = getattr(joserfc_errors, "SecurityWarning", UserWarning)


def _joserfc(call: Any, *args: Any, **kwargs: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", _SECURITY_WARNING)
        return call(*args, **kwargs)


def _verifier(key: PrivateJWK, clock: FixedClock | None = None) -> TokenVerifier:
    return TokenVerifier(
        issuer=ISSUER,
        audience=AUDIENCE,
        keys={"keys": [key.public().to_public_dict()]},
        algorithms=[key.algorithm],
        clock=clock,
    )


def test_pyjwt_tokens_verify_in_zerotrust(pyjwt_key: PrivateJWK, clock: FixedClock) -> None:
    key = pyjwt_key
    token = pyjwt.encode(
        claims(), key.private_key, algorithm=key.algorithm, headers={"kid": key.kid}
    )
    verified = _verifier(key, clock).verify(token)
    assert verified.subject == claims()["sub"]
    assert verified.algorithm == key.algorithm


def test_zerotrust_tokens_verify_in_pyjwt(pyjwt_key: PrivateJWK) -> None:
    key = pyjwt_key
    token = TokenIssuer(key, issuer=ISSUER).issue(
        subject="svc", audience=AUDIENCE, scopes=["a", "b"]
    )
    decoded = pyjwt.decode(
        token,
        key.private_key.public_key(),
        algorithms=[key.algorithm],
        audience=AUDIENCE,
        issuer=ISSUER,
        options={"require": ["exp", "iat", "nbf", "jti"]},
    )
    assert decoded["sub"] == "svc"
    assert decoded["scope"] == "a b"
    assert pyjwt.get_unverified_header(token)["kid"] == key.kid


def test_joserfc_tokens_verify_in_zerotrust(joserfc_key: PrivateJWK, clock: FixedClock) -> None:
    key = joserfc_key
    private = joserfc_jwk.JWKRegistry.import_key(_pem(key), KEY_TYPES[key.algorithm])
    token = _joserfc(
        joserfc_jwt.encode,
        {"alg": key.algorithm, "kid": key.kid},
        claims(),
        private,
        algorithms=[key.algorithm],
    )
    verified = _verifier(key, clock).verify(token)
    assert verified.jti == "id-0001"


def test_zerotrust_tokens_verify_in_joserfc(joserfc_key: PrivateJWK) -> None:
    key = joserfc_key
    token = TokenIssuer(key, issuer=ISSUER).issue(subject="svc", audience=AUDIENCE)
    public = joserfc_jwk.JWKRegistry.import_key(
        key.public().to_public_dict(), KEY_TYPES[key.algorithm]
    )
    decoded = _joserfc(joserfc_jwt.decode, token, public, algorithms=[key.algorithm])
    registry = joserfc_jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": ISSUER},
        aud={"essential": True, "value": AUDIENCE},
    )
    registry.validate(decoded.claims)
    assert decoded.claims["exp"] > time.time()
    assert decoded.header["kid"] == key.kid


def test_jwks_document_is_read_by_joserfc(joserfc_key: PrivateJWK) -> None:
    key = joserfc_key
    issuer = TokenIssuer(key, issuer=ISSUER)
    key_set = joserfc_jwk.KeySet.import_key_set(issuer.jwks())  # type: ignore[arg-type]
    token = issuer.issue(subject="svc", audience=AUDIENCE)
    decoded = _joserfc(joserfc_jwt.decode, token, key_set, algorithms=[key.algorithm])
    assert decoded.claims["sub"] == "svc"
