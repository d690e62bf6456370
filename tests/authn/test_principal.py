"""The verified caller handed to handlers: immutable, named by one stable id."""

from __future__ import annotations

import dataclasses

import pytest

from zerotrust import SpiffeId
from zerotrust.authn.principal import Principal
from zerotrust.errors import ConfigurationError

WEB = SpiffeId.parse("spiffe://example.org/ns/shop/sa/web")
ISS = "https://issuer.example"


def test_claims_and_scopes_are_kept_as_read_only_copies() -> None:
    claims = {"sub": "user-7", "roles": ["reader"]}
    scopes = ["orders:read", "orders:write", "orders:read"]
    principal = Principal(proven_by="jwt", subject="user-7", claims=claims, scopes=scopes)  # type: ignore[arg-type]
    claims["sub"] = "admin"
    scopes.append("orders:admin")
    assert principal.claims["sub"] == "user-7"
    assert principal.scopes == frozenset({"orders:read", "orders:write"})
    with pytest.raises(TypeError):
        principal.claims["sub"] = "admin"  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        principal.subject = "admin"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"spiffe_id": WEB, "subject": "s", "issuer": ISS, "api_key_id": "k"}, str(WEB)),
        ({"subject": "user-7", "issuer": ISS, "api_key_id": "k"}, f"{ISS}|user-7"),
        ({"subject": "user-7"}, "|user-7"),
        ({"api_key_id": "k1", "client_id": "c"}, "api-key:k1"),
        ({"client_id": "c", "issuer": ISS, "token_jti": "j"}, f"{ISS}#client_id:c"),
        ({"issuer": ISS, "token_jti": "j"}, f"{ISS}#jti:j"),
        ({}, "#jti:"),
    ],
)
def test_the_id_names_the_caller_by_the_strongest_identifier(
    fields: dict[str, object], expected: str
) -> None:
    assert Principal(proven_by="jwt", **fields).id == expected  # type: ignore[arg-type]


def test_has_scopes_needs_every_one_named() -> None:
    principal = Principal(proven_by="jwt", scopes=frozenset({"a", "b"}))
    assert principal.has_scopes() and principal.has_scopes("a") and principal.has_scopes("a", "b")
    assert not principal.has_scopes("c") and not principal.has_scopes("a", "c")
    assert not Principal(proven_by="mtls").has_scopes("a")


def test_the_summary_holds_identifiers_and_never_claims() -> None:
    principal = Principal(
        proven_by="mtls+jwt",
        spiffe_id=WEB,
        subject=str(WEB),
        issuer=ISS,
        scopes=frozenset({"orders:read"}),
        claims={"secret_claim": "do-not-log"},
        client_id="web",
        actor="spiffe://example.org/gw",
        delegation=({"sub": "spiffe://example.org/gw"},),
        cert_fingerprint="ab" * 32,
        token_jti="j-1",
    )
    assert principal.summary() == {
        "spiffe_id": str(WEB),
        "subject": str(WEB),
        "issuer": ISS,
        "proven_by": "mtls+jwt",
        "client_id": "web",
        "actor": "spiffe://example.org/gw",
        "cert_fingerprint": "ab" * 32,
        "token_jti": "j-1",
    }
    assert Principal(proven_by="jwt").summary()["spiffe_id"] is None
    assert "do-not-log" not in repr(principal) and "delegation" not in repr(principal)


def test_scopes_given_as_one_string_are_refused_not_split_into_characters() -> None:
    """``scopes="orders:read"`` would grant the scopes "o", "r", "d", ...: a principal built by
    hand (a test's, a custom authenticator's) takes a collection of scopes."""
    for value in ("orders:read", b"orders:read"):
        with pytest.raises(ConfigurationError, match="not one string"):
            Principal(proven_by="jwt", scopes=value)  # type: ignore[arg-type]
    assert Principal(proven_by="jwt", scopes=["orders:read"]).scopes == {"orders:read"}
