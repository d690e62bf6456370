"""The binding checks themselves, on verified tokens and peers: RFC 8705 ``cnf.x5t#S256`` and
RFC 9449 ``cnf.jkt`` (what each returns, and every refusal)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from zerotrust.authn.binding import (
    DPoPProof,
    bound_jkt,
    check_certificate_binding,
    check_confirmation_methods,
    check_dpop_binding,
)
from zerotrust.dev import DevCA
from zerotrust.errors import InvalidDPoPProof, TokenBindingMismatch
from zerotrust.tokens import PrivateJWK, TokenIssuer, TokenVerifier, certificate_thumbprint
from zerotrust.tokens._b64 import b64url_encode
from zerotrust.tokens.verified import VerifiedToken
from zerotrust.x509.verify import VerifiedPeer, verify_x509_svid

ISS = "https://issuer.example"
AUD = "orders-api"
WEB = "spiffe://example.org/ns/shop/sa/web"


@pytest.fixture(scope="module")
def ca() -> DevCA:
    return DevCA.create("example.org")


@pytest.fixture(scope="module")
def peer(ca: DevCA) -> VerifiedPeer:
    return verify_x509_svid(ca.issue_svid(WEB).cert_chain, ca.bundle)


@pytest.fixture(scope="module")
def other_peer(ca: DevCA) -> VerifiedPeer:
    return verify_x509_svid(ca.issue_svid(WEB).cert_chain, ca.bundle)


@pytest.fixture(scope="module")
def issuer() -> TokenIssuer:
    return TokenIssuer(PrivateJWK.generate("ES256"), issuer=ISS)


def verified(issuer: TokenIssuer, **extra: Any) -> VerifiedToken:
    token = issuer.issue(subject=WEB, audience=AUD, ttl=600, extra_claims=extra)
    verifier = TokenVerifier(issuer=ISS, audience=AUD, keys=issuer.jwks(), algorithms=["ES256"])
    return verifier.verify(token)


# --- which confirmation methods are enforced (RFC 7800 3) ------------------------------------


@pytest.mark.parametrize(
    "cnf",
    [
        {"jwk": {"kty": "EC", "crv": "P-256", "x": "x", "y": "y"}},  # RFC 7800 3.2
        {"kid": "holder-key"},  # RFC 7800 3.4
        {"jku": "https://holder.example/jwks"},  # RFC 7800 3.5
        {"jwe": "a.b.c.d.e"},  # RFC 7800 3.3
        {"x5t#s256": "misspelt"},  # member names are case-sensitive
        {"Jkt": "misspelt"},
        {"jkt": "x", "kid": "also bound to a key id"},
    ],
)
def test_a_token_bound_by_a_method_not_checked_here_is_refused(
    issuer: TokenIssuer, cnf: dict[str, Any]
) -> None:
    # accepted, it would be a plain bearer token although its issuer bound it to a holder
    with pytest.raises(TokenBindingMismatch, match="confirmation method"):
        check_confirmation_methods(verified(issuer, cnf=cnf))


@pytest.mark.parametrize(
    "cnf", [None, {"jkt": "x"}, {"x5t#S256": "y"}, {"jkt": "x", "x5t#S256": "y"}]
)
def test_tokens_bound_by_enforced_methods_or_by_none_pass_the_method_check(
    issuer: TokenIssuer, cnf: Any
) -> None:
    token = verified(issuer) if cnf is None else verified(issuer, cnf=cnf)
    assert check_confirmation_methods(token) is None


def test_an_empty_cnf_binds_to_nothing() -> None:
    # zerotrust's own issuer refuses to write one; another issuer may
    key = PrivateJWK.generate("ES256")
    header = {"alg": "ES256", "typ": "JWT", "kid": key.kid}
    claims = {"iss": ISS, "sub": WEB, "aud": AUD, "exp": 4_102_444_800, "cnf": {}}
    signing_input = ".".join(b64url_encode(json.dumps(part).encode()) for part in (header, claims))
    token = f"{signing_input}.{b64url_encode(key.sign(signing_input.encode()))}"
    jwks = TokenIssuer(key, issuer=ISS).jwks()
    verifier = TokenVerifier(issuer=ISS, audience=AUD, keys=jwks, algorithms=["ES256"])
    unbound = verifier.verify(token)
    assert unbound.cnf == {}
    assert check_confirmation_methods(unbound) is None


# --- cnf.x5t#S256 (RFC 8705 3) -----------------------------------------------------------------


def test_a_certificate_bound_token_is_accepted_from_its_certificate(
    issuer: TokenIssuer, peer: VerifiedPeer
) -> None:
    bound = verified(issuer, cnf={"x5t#S256": certificate_thumbprint(peer.leaf)})
    assert check_certificate_binding(bound, peer) is True


@pytest.mark.parametrize("cnf", [None, {"jkt": "x"}, {"x5t": "SHA-1 member"}])
def test_a_token_not_certificate_bound_is_not_checked(
    issuer: TokenIssuer, peer: VerifiedPeer, cnf: Any
) -> None:
    token = verified(issuer) if cnf is None else verified(issuer, cnf=cnf)
    assert check_certificate_binding(token, peer) is False
    assert check_certificate_binding(token, None) is False


def test_a_certificate_bound_token_is_refused_from_another_or_no_certificate(
    issuer: TokenIssuer, peer: VerifiedPeer, other_peer: VerifiedPeer
) -> None:
    bound = verified(issuer, cnf={"x5t#S256": certificate_thumbprint(peer.leaf)})
    with pytest.raises(TokenBindingMismatch, match="another certificate"):
        check_certificate_binding(bound, other_peer)
    with pytest.raises(TokenBindingMismatch, match="without a client certificate"):
        check_certificate_binding(bound, None)


@pytest.mark.parametrize("thumbprint", [None, 7, [], {"x": 1}], ids=repr)
def test_a_thumbprint_that_is_not_a_string_binds_to_no_certificate(
    issuer: TokenIssuer, peer: VerifiedPeer, thumbprint: Any
) -> None:
    # a present x5t#S256 always binds: an unusable value refuses the token, never crashes
    bound = verified(issuer, cnf={"x5t#S256": thumbprint})
    with pytest.raises(TokenBindingMismatch, match="not a string"):
        check_certificate_binding(bound, peer)


def test_the_thumbprint_is_compared_exactly(issuer: TokenIssuer, peer: VerifiedPeer) -> None:
    thumbprint = certificate_thumbprint(peer.leaf)
    for variant in (thumbprint + "=", thumbprint.upper(), thumbprint[:-1], peer.fingerprint):
        bound = verified(issuer, cnf={"x5t#S256": variant})
        with pytest.raises(TokenBindingMismatch, match="another certificate"):
            check_certificate_binding(bound, peer)


# --- cnf.jkt (RFC 9449 6, 7.1) ------------------------------------------------------------------


def test_a_dpop_bound_token_is_accepted_with_a_proof_by_its_key(issuer: TokenIssuer) -> None:
    bound = verified(issuer, cnf={"jkt": "key-thumbprint"})
    assert bound_jkt(bound) == "key-thumbprint"
    proof = DPoPProof(jkt="key-thumbprint", jti="p1", iat=0.0)
    assert check_dpop_binding(bound, proof, "DPoP") is True


def test_a_verified_proof_cannot_be_changed() -> None:
    proof = DPoPProof(jkt="key-thumbprint", jti="p1", iat=0.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        proof.jkt = "other-thumbprint"  # type: ignore[misc]
    assert hash(proof) == hash(DPoPProof(jkt="key-thumbprint", jti="p1", iat=0.0))
    assert proof.replay_key() == "dpop:key-thumbprint:p1"


def test_a_dpop_bound_token_is_refused_with_a_proof_by_another_key(issuer: TokenIssuer) -> None:
    bound = verified(issuer, cnf={"jkt": "key-thumbprint"})
    for jkt in ("other-thumbprint", "key-thumbprinT", "key-thumbprint=", "key-thumbprint\ud800"):
        with pytest.raises(TokenBindingMismatch, match=r"cnf\.jkt"):
            check_dpop_binding(bound, DPoPProof(jkt=jkt, jti="p1", iat=0.0), "DPoP")


def test_a_dpop_bound_token_needs_the_dpop_scheme_and_a_proof(issuer: TokenIssuer) -> None:
    bound = verified(issuer, cnf={"jkt": "key-thumbprint"})
    proof = DPoPProof(jkt="key-thumbprint", jti="p1", iat=0.0)
    for scheme in ("Bearer", None):
        with pytest.raises(TokenBindingMismatch, match="as a Bearer token"):
            check_dpop_binding(bound, proof, scheme)
    with pytest.raises(InvalidDPoPProof, match="without a DPoP proof"):
        check_dpop_binding(bound, None, "DPoP")


@pytest.mark.parametrize("cnf", [None, {"x5t#S256": "x"}])
def test_the_dpop_scheme_is_refused_with_a_token_that_is_not_dpop_bound(
    issuer: TokenIssuer, cnf: Any
) -> None:
    token = verified(issuer) if cnf is None else verified(issuer, cnf=cnf)
    assert bound_jkt(token) is None
    assert check_dpop_binding(token, None, "Bearer") is False
    proof = DPoPProof(jkt="key-thumbprint", jti="p1", iat=0.0)
    with pytest.raises(TokenBindingMismatch, match="not DPoP-bound"):
        check_dpop_binding(token, proof, "DPoP")
