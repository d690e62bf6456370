"""KeySource protocol and StaticKeySource."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from zerotrust.errors import ConfigurationError
from zerotrust.tokens import (
    JWKSet,
    KeyRing,
    KeySource,
    PrivateJWK,
    SecretKey,
    SecretKeySet,
    StaticKeySource,
)
from zerotrust.tokens.sources import as_key_source

from .conftest import b64


def test_static_source_forms(es256: PrivateJWK, hmac_key: SecretKey) -> None:
    public = es256.public()
    for keys in (
        public,
        JWKSet([public]),
        public.to_public_dict(),
        {"keys": [public.to_public_dict()]},
        es256.private_key.public_key(),
        es256,
    ):
        source = StaticKeySource(keys)  # type: ignore[arg-type]
        assert [key.thumbprint() for key in source.get_keys()] == [public.thumbprint()]
        assert source.get_keys(missing_kid="x") is source.get_keys()
        assert asyncio.run(source.get_keys_async()) is source.keys
    secret = StaticKeySource(hmac_key)
    assert isinstance(secret.keys, SecretKeySet)
    assert StaticKeySource(SecretKeySet(hmac_key)).keys == secret.keys
    assert "StaticKeySource" in repr(secret)


@pytest.mark.parametrize(
    "keys",
    [
        JWKSet(),
        {"keys": []},
        {"keys": [{"kty": "oct", "k": b64(b"k" * 32)}]},
        b"raw bytes",
        "text",
        5,
        None,
    ],
)
def test_static_source_refuses_empty_or_ambiguous_input(keys: Any) -> None:
    with pytest.raises(ConfigurationError):
        StaticKeySource(keys)


def test_a_public_key_as_text_or_bytes_is_never_taken_as_a_secret(es256: PrivateJWK) -> None:
    """The algorithm-confusion pattern: a PEM public key passed where keys belong must not be
    read as an HMAC secret (nor guessed as a public key): the caller is told what to use."""
    from cryptography.hazmat.primitives import serialization

    pem = es256.public().public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for raw in (pem, pem.decode(), b"s3cret" * 8, "s3cret" * 8):
        with pytest.raises(ConfigurationError, match="raw bytes/str are ambiguous as keys"):
            StaticKeySource(raw)  # type: ignore[arg-type]


def test_empty_set_error_names_skip_reasons() -> None:
    with pytest.raises(ConfigurationError, match="symmetric"):
        StaticKeySource({"keys": [{"kty": "oct", "k": b64(b"k" * 32)}]})


def test_protocol_is_runtime_checkable(es256: PrivateJWK) -> None:
    assert isinstance(StaticKeySource(es256.public()), KeySource)
    assert isinstance(KeyRing(es256), KeySource)
    assert not isinstance(es256.public(), KeySource)
    ring = KeyRing(es256)
    assert as_key_source(ring) is ring
    assert isinstance(as_key_source(es256.public()), StaticKeySource)


def test_a_key_source_raising_stop_iteration_fails_closed(es256: PrivateJWK) -> None:
    """Verification is a generator driven by its caller: a StopIteration escaping a broken key
    source must not read as the flow's end (a verification that returned nothing)."""
    from zerotrust.errors import KeysUnavailable
    from zerotrust.tokens import TokenIssuer, TokenVerifier

    class Broken:
        def get_keys(self, *, missing_kid: str | None = None) -> Any:
            raise StopIteration

        async def get_keys_async(self, *, missing_kid: str | None = None) -> Any:
            raise StopIteration

    token = TokenIssuer(es256, issuer="https://issuer.example").issue(subject="s", audience="api")
    verifier = TokenVerifier(
        issuer="https://issuer.example", audience="api", keys=Broken(), algorithms=["ES256"]
    )
    with pytest.raises(KeysUnavailable, match="key source failed"):
        verifier.verify(token)
    with pytest.raises(KeysUnavailable, match="key source failed"):
        asyncio.run(verifier.verify_async(token))


def test_a_key_source_needs_one_method_get_keys(es256: PrivateJWK) -> None:
    """KeySource is one method: a source without ``get_keys_async`` serves the async path
    too, its ``get_keys`` run in a worker thread (off the event loop)."""
    from zerotrust.errors import KeysUnavailable
    from zerotrust.tokens import TokenIssuer, TokenVerifier

    keys = JWKSet([es256.public()])
    asked: list[str | None] = []

    class OwnKeys:
        def get_keys(self, *, missing_kid: str | None = None) -> JWKSet:
            asked.append(missing_kid)
            return keys

    class Broken:
        def get_keys(self, *, missing_kid: str | None = None) -> Any:
            raise StopIteration

    source = OwnKeys()
    assert isinstance(source, KeySource) and as_key_source(source) is source
    issuer = TokenIssuer(es256, issuer="https://issuer.example")
    token = issuer.issue(subject="s", audience="api")

    def verifier(keys: object) -> TokenVerifier:
        return TokenVerifier(
            issuer="https://issuer.example", audience="api", keys=keys, algorithms=["ES256"]
        )

    assert verifier(source).verify(token).subject == "s"
    assert asyncio.run(verifier(OwnKeys()).verify_async(token)).subject == "s"
    assert asked == [None, None]
    with pytest.raises(KeysUnavailable, match="key source failed"):
        asyncio.run(verifier(Broken()).verify_async(token))
