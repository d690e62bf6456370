"""TokenVerifier: composition, configuration, VerifiedToken, async and the sans-IO flow."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import pytest

from zerotrust._clock import FixedClock
from zerotrust.errors import (
    ConfigurationError,
    InvalidSignature,
    KeysUnavailable,
    MalformedToken,
    TokenError,
    TokenExpired,
)
from zerotrust.tokens import (
    JWKSet,
    KeyRequest,
    PrivateJWK,
    SecretKey,
    StaticKeySource,
    TokenVerifier,
    VerifiedToken,
)

from .conftest import AUDIENCE, ISSUER, NOW, T0, claims, mint
from .test_cves import CountingSource

Factory = Callable[..., TokenVerifier]


def test_verify_returns_a_verified_token(make_verifier: Factory, es256: PrivateJWK) -> None:
    token = mint(
        es256,
        claims(
            scope="read write  admin",
            cnf={"x5t#S256": "abc"},
            act={"sub": "svc-a", "act": {"sub": "svc-b", "act": {"sub": "user"}}},
            extra={"nested": [1, {"x": 2}]},
        ),
    )
    verified = make_verifier().verify(token)
    assert verified.subject == "spiffe://example.org/svc/billing"
    assert verified.issuer == ISSUER
    assert verified.audience == (AUDIENCE,)
    assert verified.scopes == {"read", "write", "admin"}
    assert verified.jti == "id-0001"
    assert verified.expires_at == NOW + dt.timedelta(seconds=300)
    assert verified.issued_at == NOW
    assert verified.not_before == NOW
    assert verified.cnf == {"x5t#S256": "abc"}
    assert [dict(actor) for actor in verified.act] == [
        {"sub": "svc-a"},
        {"sub": "svc-b"},
        {"sub": "user"},
    ]
    assert verified.key_id == es256.kid
    assert verified.algorithm == "ES256"
    assert verified.header["alg"] == "ES256"
    assert verified.client_id is None
    assert "id-0001" in repr(verified)


def test_verified_token_is_deeply_immutable(make_verifier: Factory, es256: PrivateJWK) -> None:
    verified = make_verifier().verify(
        mint(es256, claims(aud=[AUDIENCE, "b"], extra={"list": [1, 2], "obj": {"k": "v"}}))
    )
    with pytest.raises(TypeError):
        verified.claims["sub"] = "x"  # type: ignore[index]
    with pytest.raises(TypeError):
        verified.claims["extra"]["obj"]["k"] = "w"
    assert verified.claims["extra"]["list"] == (1, 2)
    assert verified.audience == (AUDIENCE, "b")
    with pytest.raises(AttributeError):
        verified.claims = {}  # type: ignore[misc]
    thawed = verified.claims_dict()
    assert thawed["extra"] == {"list": [1, 2], "obj": {"k": "v"}}
    json.dumps(thawed)


def test_scp_list_and_string(make_verifier: Factory, es256: PrivateJWK) -> None:
    verifier = make_verifier(cache_size=0)
    assert verifier.verify(mint(es256, claims(scp=["a", "b"]))).scopes == {"a", "b"}
    assert verifier.verify(mint(es256, claims(scp="a b"))).scopes == {"a", "b"}
    assert verifier.verify(mint(es256, claims(scope="x", scp=["y"]))).scopes == {"x", "y"}
    assert verifier.verify(mint(es256, claims())).scopes == frozenset()
    assert verifier.verify(mint(es256, claims(nbf=None, iat=None))).issued_at is None


def test_verify_async_and_flow(make_verifier: Factory, es256: PrivateJWK) -> None:
    verifier = make_verifier()
    token = mint(es256, claims())
    assert asyncio.run(verifier.verify_async(token)).jti == "id-0001"
    fresh = make_verifier(keys=CountingSource(JWKSet([es256.public()])))  # keys need I/O
    flow = fresh.flow(token)
    request = next(flow)
    assert isinstance(request, KeyRequest)
    with pytest.raises(StopIteration) as stop:
        flow.send(request.fulfil())
    assert isinstance(stop.value.value, VerifiedToken)
    # a cached token of such a source first confirms the source's current keys
    again = fresh.flow(token)
    with pytest.raises(StopIteration) as repeat:
        again.send(next(again).fulfil())
    assert repeat.value.value is stop.value.value
    # with a fixed key set, verifying needs no I/O at all: the flow finishes at once
    static = make_verifier()
    with pytest.raises(StopIteration) as done:
        next(static.flow(token))
    assert isinstance(done.value.value, VerifiedToken)
    with pytest.raises(StopIteration) as cached:
        next(static.flow(token))
    assert cached.value.value is done.value.value


def test_two_named_steps(make_verifier: Factory, es256: PrivateJWK) -> None:
    verifier = make_verifier()
    signed = verifier.verify_signature(mint(es256, claims()))
    assert signed.claims is signed.claims  # parsed once, on first access
    assert verifier.validate_claims(signed).jti == "id-0001"
    assert verifier.signature_verifier.algorithms == {"ES256"}
    assert verifier.claims_validator.issuer == ISSUER


def test_malformed_payload_after_a_valid_signature(
    make_verifier: Factory, es256: PrivateJWK
) -> None:
    for payload in (b"not json", b"[]", b'{"a":1,"a":2}', b"\xff"):
        with pytest.raises(MalformedToken):
            make_verifier().verify(mint(es256, payload))
    # a signed subject that is no Unicode text (an unpaired surrogate escape, RFC 7493 2.1)
    # never becomes a principal, whose subject is encoded in audit events and store keys
    lone = json.dumps(claims(sub="svc-\udc80")).encode()
    assert b"\\udc80" in lone
    with pytest.raises(MalformedToken, match="unpaired surrogate"):
        make_verifier().verify(mint(es256, lone))
    paired = make_verifier().verify(mint(es256, json.dumps(claims(sub="svc-\U0001f600")).encode()))
    assert paired.subject == "svc-\U0001f600"


@pytest.mark.parametrize(
    "keys_form", ["jwk", "jwkset", "dict_jwks", "dict_jwk", "crypto", "source", "private"]
)
def test_accepted_key_forms(keys_form: str, make_verifier: Factory, es256: PrivateJWK) -> None:
    keys: Any = {
        "jwk": es256.public(),
        "jwkset": JWKSet([es256.public()]),
        "dict_jwks": {"keys": [es256.public().to_public_dict()]},
        "dict_jwk": es256.public().to_public_dict(),
        "crypto": es256.private_key.public_key(),
        "source": StaticKeySource(es256.public()),
        "private": es256,
    }[keys_form]
    verifier = make_verifier(keys=keys)
    token = (
        mint(es256, claims(), {"alg": "ES256"}) if keys_form == "crypto" else mint(es256, claims())
    )
    assert verifier.verify(token).jti == "id-0001"


@pytest.mark.parametrize(
    "settings",
    [
        {"keys": b"secret"},
        {"keys": "secret"},
        {"keys": {"keys": []}},
        {"keys": 5},
        {"cache_size": -1},
        {"cache_size": 1.5},
        {"cache_size": 10**7},
        {"audience": None},
    ],
)
def test_configuration_errors(make_verifier: Factory, settings: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        make_verifier(**settings)


def test_hmac_verifier(clock: FixedClock, hmac_key: SecretKey) -> None:
    verifier = TokenVerifier(
        issuer=ISSUER, audience=AUDIENCE, keys=hmac_key, algorithms=["HS256"], clock=clock
    )
    assert verifier.verify(mint(hmac_key, claims())).key_id == "hs-1"
    assert "HS256" in repr(verifier)


def test_repr_names_the_issuer_and_the_allowlist_only(make_verifier: Factory) -> None:
    verifier = make_verifier(algorithms=["ES256", "ES384"])
    assert repr(verifier) == (
        "TokenVerifier(issuer='https://issuer.example', algorithms=['ES256', 'ES384'])"
    )


def test_all_errors_are_token_errors(make_verifier: Factory, es256: PrivateJWK) -> None:
    token = mint(es256, claims())
    for bad in (token[:-2], token + "x", token.replace(".", ".."), token[::-1]):
        with pytest.raises(TokenError) as info:
            make_verifier(cache_size=0).verify(bad)
        assert info.value.http_status == 401


def test_clock_moves(make_verifier: Factory, es256: PrivateJWK, clock: FixedClock) -> None:
    verifier = make_verifier(cache_size=0)
    token = mint(es256, claims())
    clock.advance(359)
    assert verifier.verify(token)
    clock.advance(1)
    with pytest.raises(TokenExpired):
        verifier.verify(token)


def test_system_clock_is_the_default(es256: PrivateJWK) -> None:
    import time

    now = int(time.time())
    verifier = TokenVerifier(
        issuer=ISSUER, audience=AUDIENCE, keys=es256.public(), algorithms=["ES256"]
    )
    assert verifier.verify(mint(es256, claims(iat=now, nbf=now, exp=now + 60)))
    with pytest.raises(TokenExpired):
        verifier.verify(mint(es256, claims(iat=now - 600, nbf=now - 600, exp=now - 300)))


def test_mutated_signature_fails(make_verifier: Factory, es256: PrivateJWK) -> None:
    token = mint(es256, claims())
    head, payload, sig = token.split(".")
    flipped = sig[:10] + ("A" if sig[10] != "A" else "B") + sig[11:]
    with pytest.raises(InvalidSignature):
        make_verifier().verify(f"{head}.{payload}.{flipped}")


def test_key_id_defaults_to_the_selected_key(make_verifier: Factory, es256: PrivateJWK) -> None:
    token = mint(es256, claims(), {"alg": "ES256"})
    assert make_verifier().verify(token).key_id == es256.kid
    assert T0  # the fixed time used by the fixtures


@pytest.mark.parametrize("scope", ["", " ", "a", " a ", "a  b", "a b a", "a\tb"])
@pytest.mark.parametrize("scp", [None, "c", ["c", ""], []])
def test_scopes_are_the_non_empty_space_separated_names(
    make_verifier: Factory, es256: PrivateJWK, scope: str, scp: object
) -> None:
    verified = make_verifier().verify(mint(es256, claims(scope=scope, scp=scp)))
    expected = set(scope.split(" "))
    if isinstance(scp, str):
        expected.update(scp.split(" "))
    elif scp is not None:
        expected.update(scp)  # type: ignore[call-overload]
    assert verified.scopes == frozenset(expected - {""})
    assert verified.act == ()


@pytest.mark.parametrize("cache_size", [0, 100])
def test_a_static_key_source_subclass_is_asked_for_its_keys(
    make_verifier: Factory, es256: PrivateJWK, cache_size: int
) -> None:
    calls: list[str | None] = []

    class Withdrawn(StaticKeySource):
        __slots__ = ()

        def get_keys(self, *, missing_kid: str | None = None) -> Any:
            calls.append(missing_kid)
            raise KeysUnavailable("keys withdrawn")

    verifier = make_verifier(keys=Withdrawn(JWKSet([es256.public()])), cache_size=cache_size)
    for _ in range(2):
        with pytest.raises(KeysUnavailable):
            verifier.verify(mint(es256, claims()))
    assert calls
