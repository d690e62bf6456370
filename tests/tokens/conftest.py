"""Shared helpers for the token tests: keys made once per test run, a fixed clock, a minter
that signs arbitrary headers and claims (so tests can build hostile tokens)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from zerotrust._clock import FixedClock
from zerotrust.tokens import PrivateJWK, SecretKey, TokenVerifier

NOW = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.timezone.utc)
T0 = int(NOW.timestamp())
ISSUER = "https://issuer.example"
AUDIENCE = "spiffe://example.org/svc/orders"
HMAC_SECRET = bytes(range(32, 96))  # 64 bytes that do not look like key material


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def rsa_modulus(bits: int) -> int:
    """A fixed odd number of exactly ``bits`` bits: an RSA modulus for tests that only read or
    refuse a key (generating an RSA-8192 key takes seconds; nothing this one "signs" verifies)."""
    n = int.from_bytes(hashlib.shake_256(b"test modulus").digest((bits + 7) // 8), "big")
    return (n >> (n.bit_length() - bits)) | (1 << (bits - 1)) | 1


def rsa_members(bits: int, e: int = 65537) -> dict[str, str]:
    """The public members of an RSA JWK with :func:`rsa_modulus` and exponent ``e``."""
    n = rsa_modulus(bits)
    return {
        "kty": "RSA",
        "n": b64(n.to_bytes((bits + 7) // 8, "big")),
        "e": b64(e.to_bytes((e.bit_length() + 7) // 8, "big")),
    }


def b64json(value: object) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


def mint(
    key: PrivateJWK | SecretKey,
    claims: Mapping[str, Any] | bytes,
    header: Mapping[str, Any] | None = None,
    **header_extra: Any,
) -> str:
    """Sign ``claims`` (a mapping, or raw payload bytes) under ``header`` with ``key``."""
    if header is None:
        header = {"alg": key.algorithm, "typ": "JWT"}
        if key.kid is not None:
            header["kid"] = key.kid
    header = {**header, **header_extra}
    payload = b64(claims) if isinstance(claims, bytes) else b64json(claims)
    signing_input = b64json(header) + "." + payload
    return signing_input + "." + b64(key.sign(signing_input.encode("ascii")))


def claims(**overrides: Any) -> dict[str, Any]:
    """A valid claims set at ``NOW``; ``name=None`` removes a claim."""
    base: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "spiffe://example.org/svc/billing",
        "aud": AUDIENCE,
        "iat": T0,
        "nbf": T0,
        "exp": T0 + 300,
        "jti": "id-0001",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture(scope="session")
def es256() -> PrivateJWK:
    return PrivateJWK.generate("ES256", kid="es256-1")


@pytest.fixture(scope="session")
def es384() -> PrivateJWK:
    return PrivateJWK.generate("ES384", kid="es384-1")


@pytest.fixture(scope="session")
def es512() -> PrivateJWK:
    return PrivateJWK.generate("ES512", kid="es512-1")


@pytest.fixture(scope="session")
def eddsa() -> PrivateJWK:
    return PrivateJWK.generate("EdDSA", kid="ed-1")


@pytest.fixture(scope="session")
def rsa_key() -> PrivateJWK:
    return PrivateJWK.generate("RS256", kid="rs-1")


@pytest.fixture(scope="session")
def ps256(rsa_key: PrivateJWK) -> PrivateJWK:
    return PrivateJWK(rsa_key.private_key, algorithm="PS256", kid="ps-1")


@pytest.fixture(scope="session")
def attacker() -> PrivateJWK:
    return PrivateJWK.generate("ES256", kid="es256-1")


@pytest.fixture
def hmac_key() -> SecretKey:
    return SecretKey(HMAC_SECRET, "HS256", kid="hs-1")


@pytest.fixture
def make_verifier(clock: FixedClock, es256: PrivateJWK) -> Callable[..., TokenVerifier]:
    """``make_verifier(**overrides)``: a TokenVerifier for ES256 tokens of ``ISSUER``."""

    def factory(**overrides: Any) -> TokenVerifier:
        settings: dict[str, Any] = {
            "issuer": ISSUER,
            "audience": AUDIENCE,
            "keys": es256.public(),
            "algorithms": ["ES256"],
            "clock": clock,
        }
        settings.update(overrides)
        return TokenVerifier(**settings)

    return factory
