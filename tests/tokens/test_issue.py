"""TokenIssuer and KeyRing."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from zerotrust._clock import FixedClock
from zerotrust.dev import DevCA
from zerotrust.errors import ConfigurationError, InvalidSignature, UnknownKey
from zerotrust.tokens import (
    JWKSet,
    KeyRing,
    PrivateJWK,
    TokenIssuer,
    TokenVerifier,
    certificate_thumbprint,
)
from zerotrust.tokens._b64 import b64url_decode

from .conftest import AUDIENCE, ISSUER, T0


def _verifier(keys: Any, clock: FixedClock, **kwargs: Any) -> TokenVerifier:
    algorithms = kwargs.pop("algorithms", ["ES256", "ES384", "EdDSA", "RS256", "PS256"])
    return TokenVerifier(
        issuer=ISSUER, audience=AUDIENCE, keys=keys, algorithms=algorithms, clock=clock, **kwargs
    )


def _header(token: str) -> dict[str, Any]:
    import json

    return dict(json.loads(b64url_decode(token.split(".", maxsplit=1)[0])))


@pytest.mark.parametrize(
    ("key_factory", "algorithm", "expected"),
    [
        (lambda: ec.generate_private_key(ec.SECP256R1()), None, "ES256"),
        (lambda: ec.generate_private_key(ec.SECP384R1()), None, "ES384"),
        (ed25519.Ed25519PrivateKey.generate, None, "EdDSA"),
    ],
)
def test_default_algorithms(
    key_factory: Any, algorithm: Any, expected: str, clock: FixedClock
) -> None:
    issuer = TokenIssuer(key_factory(), issuer=ISSUER, clock=clock, algorithm=algorithm)
    token = issuer.issue(subject="svc", audience=AUDIENCE)
    header = _header(token)
    assert header["alg"] == expected
    assert header["typ"] == "JWT"
    assert header["kid"] == issuer.key_ring.current.thumbprint()
    assert _verifier(issuer.jwks(), clock).verify(token).subject == "svc"


def test_rsa_defaults_to_rs256_and_ps256_on_request(rsa_key: PrivateJWK, clock: FixedClock) -> None:
    rs = TokenIssuer(rsa_key.private_key, issuer=ISSUER, clock=clock)
    ps = TokenIssuer(rsa_key.private_key, issuer=ISSUER, clock=clock, algorithm="PS256", kid="ps")
    assert _header(rs.issue(subject="s", audience=AUDIENCE))["alg"] == "RS256"
    token = ps.issue(subject="s", audience=AUDIENCE)
    assert _header(token) == {"alg": "PS256", "kid": "ps", "typ": "JWT"}
    assert _verifier(ps.jwks(), clock).verify(token).algorithm == "PS256"


def test_issued_claims(es256: PrivateJWK, clock: FixedClock, ca: DevCA) -> None:
    issuer = TokenIssuer(es256, issuer=ISSUER, clock=clock)
    svid = ca.issue_svid("spiffe://example.org/svc/client")
    cert = svid.leaf
    token = issuer.issue(
        subject="spiffe://example.org/svc/billing",
        audience=[AUDIENCE, "other", AUDIENCE],
        scopes=["orders:read", "orders:write", "orders:read"],
        ttl=120.5,
        extra_claims={"tenant": "t1"},
        bind_cert=cert,
        act={"sub": "spiffe://example.org/svc/gateway"},
    )
    verified = _verifier(issuer.key_ring, clock).verify(token)
    claims = verified.claims
    assert claims["iss"] == ISSUER
    assert claims["aud"] == (AUDIENCE, "other")
    assert claims["iat"] == claims["nbf"] == T0
    assert claims["exp"] == T0 + 121
    assert claims["scope"] == "orders:read orders:write"
    assert claims["tenant"] == "t1"
    assert verified.act[0]["sub"] == "spiffe://example.org/svc/gateway"
    der = cert.public_bytes(serialization.Encoding.DER)
    assert verified.cnf == {"x5t#S256": certificate_thumbprint(der)}
    assert certificate_thumbprint(cert) == certificate_thumbprint(der)
    assert len(b64url_decode(claims["jti"])) == 16
    assert issuer.issue(subject="s", audience=AUDIENCE) != issuer.issue(
        subject="s", audience=AUDIENCE
    )
    assert _header(token)["kid"] == "es256-1"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"subject": ""},
        {"subject": 5},
        {"audience": []},
        {"audience": ""},
        {"scopes": ["has space"]},
        {"scopes": ['quote"']},
        {"scopes": ["back\\slash"]},
        {"scopes": [""]},
        {"scopes": [5]},
        {"scopes": 5},
        {"scopes": None},
        {"scopes": {"orders:read": True}},
        {"scopes": b"orders:read"},
        {"ttl": 0},
        {"ttl": -5},
        {"ttl": "60"},
        {"ttl": True},
        {"ttl": 10**9},
        {"extra_claims": {"iss": "x"}},
        {"extra_claims": {"exp": 1}},
        {"extra_claims": {"scp": ["x"]}},
        {"extra_claims": {"cnf": {}}},
        {"extra_claims": {"cnf": "thumbprint"}},
        {"extra_claims": {"cnf": {"jkt": "x"}}, "bind_cert": b"0"},
        {"extra_claims": {1: "x"}},
        {"extra_claims": {"bad": float("nan")}},
        {"extra_claims": {"bad": object()}},
        {"bind_cert": b"not a certificate"},
        {"bind_cert": "pem text"},
        {"act": "someone"},
        {"act": {"sub": "a", "act": "b"}},
        {"token_type": "dpop+jwt"},
        {"token_type": "at+jwt"},
        {"token_type": "jwt-svid", "subject": "not-spiffe"},
    ],
)
def test_issue_rejects_bad_input(
    es256: PrivateJWK, clock: FixedClock, kwargs: dict[str, Any]
) -> None:
    issuer = TokenIssuer(es256, issuer=ISSUER, clock=clock)
    settings: dict[str, Any] = {"subject": "svc", "audience": AUDIENCE}
    settings.update(kwargs)
    with pytest.raises(ConfigurationError):
        issuer.issue(**settings)


def test_deep_act_chain_is_refused(es256: PrivateJWK, clock: FixedClock) -> None:
    act: dict[str, Any] = {"sub": "root"}
    for i in range(10):
        act = {"sub": f"actor{i}", "act": act}
    with pytest.raises(ConfigurationError, match="deeper"):
        TokenIssuer(es256, issuer=ISSUER, clock=clock).issue(subject="s", audience="a", act=act)


def test_token_types(es256: PrivateJWK, clock: FixedClock) -> None:
    issuer = TokenIssuer(es256, issuer=ISSUER, clock=clock)
    at = issuer.issue(
        subject="user", audience=AUDIENCE, token_type="at+jwt", extra_claims={"client_id": "c"}
    )
    assert _header(at)["typ"] == "at+jwt"
    assert _verifier(issuer.jwks(), clock, token_type="at+jwt").verify(at).client_id == "c"
    svid = issuer.issue(subject="spiffe://example.org/w", audience=AUDIENCE, token_type="jwt-svid")
    verifier = _verifier(
        issuer.jwks(),
        clock,
        token_type="jwt-svid",
        trust_domain="example.org",
        algorithms=["ES256"],
    )
    assert verifier.verify(svid).subject == "spiffe://example.org/w"


@pytest.mark.parametrize("algorithm", ["EdDSA", "Ed448"])
def test_jwt_svids_are_never_signed_with_eddsa(clock: FixedClock, algorithm: str) -> None:
    """JWT-SVID 2.1 allows RS*, ES* and PS* only: such a token would be refused everywhere."""
    issuer = TokenIssuer(PrivateJWK.generate(algorithm), issuer=ISSUER, clock=clock)
    with pytest.raises(ConfigurationError, match="JWT-SVIDs are signed with RS"):
        issuer.issue(subject="spiffe://example.org/w", audience=AUDIENCE, token_type="jwt-svid")
    assert issuer.issue(subject="spiffe://example.org/w", audience=AUDIENCE)  # other profiles


def test_a_jwt_svid_names_a_workload(es256: PrivateJWK, clock: FixedClock) -> None:
    issuer = TokenIssuer(es256, issuer=ISSUER, clock=clock)
    with pytest.raises(ConfigurationError, match="path"):
        issuer.issue(subject="spiffe://example.org", audience=AUDIENCE, token_type="jwt-svid")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"issuer": ""},
        {"kid": "other"},
        {"algorithm": "ES384"},
    ],
)
def test_issuer_configuration_errors(es256: PrivateJWK, kwargs: dict[str, Any]) -> None:
    settings: dict[str, Any] = {"issuer": ISSUER}
    settings.update(kwargs)
    with pytest.raises(ConfigurationError):
        TokenIssuer(es256, **settings)


def test_issuer_with_keyring_refuses_kid_and_algorithm(es256: PrivateJWK) -> None:
    for kwargs in ({"kid": "x"}, {"algorithm": "ES256"}):
        with pytest.raises(ConfigurationError):
            TokenIssuer(KeyRing(es256), issuer=ISSUER, **kwargs)


def test_kid_for_a_private_jwk_without_one(clock: FixedClock) -> None:
    generated = PrivateJWK.generate("ES256")
    assert generated.kid == generated.thumbprint()
    key = PrivateJWK(ec.generate_private_key(ec.SECP256R1()))
    assert key.kid is None
    assert TokenIssuer(key, issuer=ISSUER, kid="chosen").key_ring.current.kid == "chosen"
    assert TokenIssuer(key, issuer=ISSUER).key_ring.current.kid == key.thumbprint()
    assert "TokenIssuer" in repr(TokenIssuer(key, issuer=ISSUER))


def test_key_rotation(clock: FixedClock) -> None:
    first = PrivateJWK.generate("ES256", kid="k1")
    ring = KeyRing(first)
    issuer = TokenIssuer(ring, issuer=ISSUER, clock=clock)
    verifier = _verifier(ring, clock, cache_size=0)
    old = issuer.issue(subject="s", audience=AUDIENCE)
    second = ring.rotate(PrivateJWK.generate("ES256", kid="k2"))
    assert ring.current is second
    new = issuer.issue(subject="s", audience=AUDIENCE)
    assert _header(new)["kid"] == "k2"
    assert [key["kid"] for key in issuer.jwks()["keys"]] == ["k2", "k1"]
    assert verifier.verify(old) and verifier.verify(new)
    ring.retire("k1")
    assert [key.kid for key in ring.key_set()] == ["k2"]
    with pytest.raises(UnknownKey):
        verifier.verify(old)
    with pytest.raises(ConfigurationError, match="current signing key cannot be retired"):
        ring.retire("k2")  # the current key, named as such
    assert ring.current.kid == "k2"
    with pytest.raises(ConfigurationError, match="no previous key has that kid"):
        ring.retire("nope")
    with pytest.raises(ConfigurationError):
        ring.rotate(PrivateJWK.generate("ES256", kid="k2"))  # duplicate kid
    third = ring.rotate(ec.generate_private_key(ec.SECP256R1()))
    assert third.kid == third.thumbprint()
    assert ring.previous[0].kid == "k2"
    assert "KeyRing" in repr(ring)


def test_keyring_previous_keys(es256: PrivateJWK, attacker: PrivateJWK) -> None:
    anonymous = PrivateJWK(ec.generate_private_key(ec.SECP256R1()))
    ring = KeyRing(PrivateJWK.generate("ES256", kid="cur"), previous=[es256, anonymous.public()])
    assert [k.kid for k in ring.key_set()] == ["cur", "es256-1", anonymous.thumbprint()]
    with pytest.raises(ConfigurationError):
        KeyRing(PrivateJWK.generate("ES256", kid="es256-1"), previous=[es256])
    with pytest.raises(ConfigurationError):
        KeyRing(es256, previous=["nope"])  # type: ignore[list-item]
    assert isinstance(ring.get_keys(), JWKSet)
    import asyncio

    assert asyncio.run(ring.get_keys_async()) is ring.get_keys()


def test_rotation_is_atomic_under_threads(clock: FixedClock) -> None:
    ring = KeyRing(PrivateJWK.generate("EdDSA", kid="k0"))
    issuer = TokenIssuer(ring, issuer=ISSUER, clock=clock)
    verifier = _verifier(ring, clock, cache_size=0)
    errors: list[BaseException] = []

    def issue_and_verify() -> None:
        try:
            for _ in range(100):
                verifier.verify(issuer.issue(subject="s", audience=AUDIENCE))
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=issue_and_verify) for _ in range(4)]
    for thread in threads:
        thread.start()
    for i in range(1, 6):
        ring.rotate(PrivateJWK.generate("EdDSA", kid=f"k{i}"))
    for thread in threads:
        thread.join()
    assert errors == []


def test_tampered_issued_token_fails(es256: PrivateJWK, clock: FixedClock) -> None:
    issuer = TokenIssuer(es256, issuer=ISSUER, clock=clock)
    head, _, sig = issuer.issue(subject="s", audience=AUDIENCE).split(".")
    other = TokenIssuer(es256, issuer=ISSUER, clock=clock).issue(subject="t", audience=AUDIENCE)
    with pytest.raises(InvalidSignature):
        _verifier(issuer.jwks(), clock).verify(f"{head}.{other.split('.')[1]}.{sig}")


def test_cnf_from_extra_claims(es256: PrivateJWK, clock: FixedClock) -> None:
    issuer = TokenIssuer(es256, issuer=ISSUER, clock=clock)
    token = issuer.issue(subject="s", audience=AUDIENCE, extra_claims={"cnf": {"jkt": "abc"}})
    assert _verifier(issuer.jwks(), clock).verify(token).cnf == {"jkt": "abc"}


def test_certificate_thumbprint_is_base64url_sha256_of_the_der(
    es256: PrivateJWK, clock: FixedClock, ca: DevCA
) -> None:
    """RFC 8705 3.1: x5t#S256 is the base64url (unpadded) SHA-256 of the certificate's DER."""
    cert = ca.issue_svid("spiffe://example.org/svc/client").leaf
    der = cert.public_bytes(serialization.Encoding.DER)
    expected = base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()
    assert certificate_thumbprint(cert) == certificate_thumbprint(der) == expected
    issuer = TokenIssuer(es256, issuer=ISSUER, clock=clock)
    token = issuer.issue(subject="s", audience=AUDIENCE, bind_cert=der)
    assert _verifier(issuer.jwks(), clock).verify(token).cnf == {"x5t#S256": expected}
    with pytest.raises(ConfigurationError, match="either via bind_cert or extra_claims"):
        issuer.issue(
            subject="s", audience=AUDIENCE, bind_cert=cert, extra_claims={"cnf": {"jkt": "x"}}
        )


def test_a_single_audience_is_a_string_and_the_default_ttl_is_300(
    es256: PrivateJWK, clock: FixedClock
) -> None:
    """RFC 7519 4.1.3: a single audience may be a string; duplicates collapse to it."""
    issuer = TokenIssuer(es256, issuer=ISSUER, clock=clock)
    assert issuer.issuer == ISSUER
    for audience in (AUDIENCE, [AUDIENCE], [AUDIENCE, AUDIENCE]):
        claims = (
            _verifier(issuer.jwks(), clock)
            .verify(issuer.issue(subject="s", audience=audience))
            .claims
        )
        assert claims["aud"] == AUDIENCE
        assert claims["exp"] - claims["iat"] == 300


def test_ttl_bounds(es256: PrivateJWK, clock: FixedClock) -> None:
    """A fractional ttl rounds up to whole seconds; one of exactly 366 days is allowed."""
    issuer = TokenIssuer(es256, issuer=ISSUER, clock=clock)
    verifier = _verifier(issuer.jwks(), clock)
    assert verifier.verify(issuer.issue(subject="s", audience=AUDIENCE, ttl=0.5)).claims["exp"] == (
        T0 + 1
    )
    longest = 366 * 24 * 3600
    token = issuer.issue(subject="s", audience=AUDIENCE, ttl=longest)
    assert verifier.verify(token).claims["exp"] == T0 + longest
    with pytest.raises(ConfigurationError, match="at most"):
        issuer.issue(subject="s", audience=AUDIENCE, ttl=longest + 1)


def test_claims_read_from_a_verified_token_can_be_issued_again(
    es256: PrivateJWK, clock: FixedClock
) -> None:
    # RFC 8693 4.1: a service acting for its caller nests the caller's act chain; a verified
    # token's objects are read-only mappings, not dicts
    issuer = TokenIssuer(es256, issuer=ISSUER, clock=clock)
    verifier = _verifier(issuer.jwks(), clock)
    incoming = verifier.verify(
        issuer.issue(
            subject="s",
            audience=AUDIENCE,
            act={"sub": "gateway", "act": {"sub": "edge"}},
            extra_claims={"cnf": {"jkt": "x" * 43}, "tenant": {"id": "acme", "tags": ["a"]}},
        )
    )
    token = issuer.issue(
        subject="s",
        audience=AUDIENCE,
        act={"sub": "orders", "act": incoming.claims["act"]},
        extra_claims={"cnf": incoming.cnf, "tenant": incoming.claims["tenant"]},
    )
    verified = verifier.verify(token)
    assert [actor["sub"] for actor in verified.act] == ["orders", "gateway", "edge"]
    assert verified.claims_dict()["cnf"] == {"jkt": "x" * 43}
    assert verified.claims_dict()["tenant"] == {"id": "acme", "tags": ["a"]}
    assert [
        a["sub"]
        for a in verifier.verify(
            issuer.issue(subject="s", audience=AUDIENCE, act=incoming.claims["act"])
        ).act
    ] == ["gateway", "edge"]


def test_act_chain_of_eight_actors_is_the_limit(es256: PrivateJWK, clock: FixedClock) -> None:
    issuer = TokenIssuer(es256, issuer=ISSUER, clock=clock)

    def chain(length: int) -> dict[str, Any]:
        act: dict[str, Any] = {"sub": "actor0"}
        for i in range(1, length):
            act = {"sub": f"actor{i}", "act": act}
        return act

    token = issuer.issue(subject="s", audience=AUDIENCE, act=chain(8))
    assert len(_verifier(issuer.jwks(), clock).verify(token).act) == 8
    with pytest.raises(ConfigurationError, match="deeper than 8"):
        issuer.issue(subject="s", audience=AUDIENCE, act=chain(9))
    with pytest.raises(ConfigurationError, match="JSON object"):
        issuer.issue(subject="s", audience=AUDIENCE, act={"sub": "a", "act": {1: "b"}})


def test_issuer_name_must_be_a_string(es256: PrivateJWK) -> None:
    for bad in (5, b"https://issuer.example", ["https://issuer.example"]):
        with pytest.raises(ConfigurationError, match="issuer must be a non-empty string"):
            TokenIssuer(es256, issuer=bad)  # type: ignore[arg-type]


def test_the_private_jwks_own_kid_may_be_repeated(es256: PrivateJWK) -> None:
    assert es256.kid is not None
    issuer = TokenIssuer(es256, issuer=ISSUER, kid=es256.kid)
    assert issuer.key_ring.current.kid == es256.kid


@pytest.mark.parametrize(
    "claims",
    [
        {"subject": "svc-\udc80", "audience": AUDIENCE},
        {"subject": "svc", "audience": [AUDIENCE, "\ud800"]},
        {"subject": "svc", "audience": AUDIENCE, "extra_claims": {"tenant": "a\udfffb"}},
        {"subject": "svc", "audience": AUDIENCE, "extra_claims": {"\ud83d": 1}},
    ],
)
def test_claims_that_are_no_unicode_text_are_never_issued(
    es256: PrivateJWK, clock: FixedClock, claims: dict[str, Any]
) -> None:
    # a lone surrogate can only be written as an escape no strict JSON reader accepts (RFC 7493
    # 2.1): the token would be refused by every verifier, this package's own included
    issuer = TokenIssuer(es256, issuer=ISSUER, clock=clock)
    with pytest.raises(ConfigurationError, match="valid Unicode"):
        issuer.issue(**claims)


def test_claims_beyond_the_basic_plane_are_issued_and_verify(
    es256: PrivateJWK, clock: FixedClock
) -> None:
    issuer = TokenIssuer(es256, issuer=ISSUER, clock=clock)
    text = "caf\u00e9 \U0001f600 \\ud800"  # the last is a backslash and five letters
    token = issuer.issue(subject="svc", audience=AUDIENCE, extra_claims={"note": text})
    assert _verifier(issuer.jwks(), clock).verify(token).claims["note"] == text


def test_a_kid_that_is_no_unicode_text_is_refused_before_it_is_published() -> None:
    # published, it would make the whole JWKS document unreadable (one kid breaks every key)
    with pytest.raises(ConfigurationError, match="valid Unicode"):
        PrivateJWK.generate("ES256", kid="2026-\udcff")
    ring = KeyRing(PrivateJWK.generate("ES256", kid="2026-01"))
    with pytest.raises(ConfigurationError, match="valid Unicode"):
        ring.stage(PrivateJWK.generate("ES256").with_kid("2026-\udcff"))
    assert JWKSet.from_json(json.dumps(ring.jwks()).encode()).get("2026-01") is not None
