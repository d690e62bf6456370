"""SecretKey: length, type and "this is public key material" checks; SecretKeySet lookup."""

from __future__ import annotations

import hmac
import pickle
import secrets
from typing import Any

import pytest

from zerotrust.errors import ConfigurationError
from zerotrust.tokens import SecretKey, SecretKeySet


@pytest.mark.parametrize(("alg", "size"), [("HS256", 32), ("HS384", 48), ("HS512", 64)])
def test_minimum_length_is_the_hash_size(alg: str, size: int) -> None:
    assert SecretKey(secrets.token_bytes(size), alg).algorithm == alg
    with pytest.raises(ConfigurationError, match=f"at least {size} bytes"):
        SecretKey(secrets.token_bytes(size - 1), alg)


@pytest.mark.parametrize("secret", ["a" * 64, None, 12345, ["x"] * 64])
def test_secret_must_be_bytes(secret: Any) -> None:
    with pytest.raises(ConfigurationError, match="must be bytes"):
        SecretKey(secret)


def test_bytearray_and_memoryview_are_accepted() -> None:
    raw = secrets.token_bytes(32)
    assert SecretKey(bytearray(raw)) == SecretKey(memoryview(raw)) == SecretKey(raw)


@pytest.mark.parametrize("alg", ["RS256", "none", "hs256", "HS1", "ES256"])
def test_only_hmac_algorithms(alg: str) -> None:
    with pytest.raises(ConfigurationError):
        SecretKey(secrets.token_bytes(64), alg)


@pytest.mark.parametrize(
    "secret",
    [
        b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl u@h",
        b"ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTY= x",
        b'{"kty": "EC", "crv": "P-256", "x": "...", "y": "..."}',
        b'{"keys": []}                                      ',
        b'[{"kty": "RSA", "n": "AQAB", "e": "AQAB"}]                          ',
        b"-----BEGIN CERTIFICATE-----\nMIIB....\n-----END CERTIFICATE-----",
        b"-----BEGIN RSA PUBLIC KEY-----\nMIIB....\n-----END RSA PUBLIC KEY-----",
    ],
)
def test_public_key_lookalikes_are_refused(secret: bytes) -> None:
    with pytest.raises(ConfigurationError, match="refusing an HMAC secret"):
        SecretKey(secret, "HS256")


def test_ordinary_random_secrets_are_accepted() -> None:
    for _ in range(200):
        SecretKey(secrets.token_bytes(32))
        SecretKey(secrets.token_urlsafe(48).encode())
    SecretKey(b'{"not": "a key", "padding": "xxxxxxxxxxxxxxxxxxxxxxxx"}')


def test_repr_and_fingerprint_do_not_leak(hmac_key: SecretKey) -> None:
    from .conftest import HMAC_SECRET

    text = repr(hmac_key) + hmac_key.fingerprint()
    assert HMAC_SECRET.hex() not in text
    assert "redacted" in repr(hmac_key)
    assert len(hmac_key.fingerprint()) == 16
    with pytest.raises(TypeError):
        pickle.dumps(hmac_key)


def test_sign_is_hmac(hmac_key: SecretKey) -> None:
    from .conftest import HMAC_SECRET

    assert hmac_key.sign(b"data") == hmac.digest(HMAC_SECRET, b"data", "sha256")
    assert hmac_key._verify(hmac_key.sign(b"data"), b"data")
    assert not hmac_key._verify(hmac_key.sign(b"data")[:-1], b"data")
    assert not hmac_key._verify(hmac_key.sign(b"data"), b"date")


def test_equality_and_hash(hmac_key: SecretKey) -> None:
    from .conftest import HMAC_SECRET

    same = SecretKey(HMAC_SECRET, "HS256", kid="hs-1")
    assert same == hmac_key
    assert hash(same) == hash(hmac_key)
    assert SecretKey(HMAC_SECRET, "HS512", kid="hs-1") != hmac_key
    assert SecretKey(HMAC_SECRET, "HS256") != hmac_key
    with pytest.raises(AttributeError):
        hmac_key._secret = b"x"  # type: ignore[misc]


def test_bad_kid() -> None:
    with pytest.raises(ConfigurationError):
        SecretKey(secrets.token_bytes(32), kid="")


def test_secret_key_set_lookup(hmac_key: SecretKey) -> None:
    key_set = SecretKeySet(hmac_key)
    assert len(key_set) == 1
    assert list(key_set) == [hmac_key]
    assert key_set.select(None) is hmac_key
    assert key_set.select("hs-1") is hmac_key
    assert key_set.select("other") is None
    assert not key_set.is_ambiguous("hs-1")
    anonymous = SecretKeySet(SecretKey(secrets.token_bytes(32)))
    assert anonymous.get("anything") is None
    assert key_set == SecretKeySet(hmac_key)
    assert "redacted" in repr(key_set)
    with pytest.raises(ConfigurationError):
        SecretKeySet("secret")  # type: ignore[arg-type]
