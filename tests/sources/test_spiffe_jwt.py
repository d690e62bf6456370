"""SpiffeJwtBundleKeySource: JWT authorities of one trust domain's bundle."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from zerotrust import BundleSet, RotatingBundleSource, TrustBundle
from zerotrust.dev import DevCA
from zerotrust.errors import (
    AlgorithmNotAllowed,
    ConfigurationError,
    InvalidClaim,
    KeysUnavailable,
)
from zerotrust.sources import SpiffeJwtBundleKeySource
from zerotrust.tokens import PrivateJWK, TokenIssuer, TokenVerifier

KEY_A = PrivateJWK.generate("ES256", kid="a")
KEY_B = PrivateJWK.generate("RS256", kid="b")


def authority(key: PrivateJWK) -> dict[str, Any]:
    return {**key.public().to_public_dict(), "use": "jwt-svid"}


def bundle(ca: DevCA, *keys: PrivateJWK) -> TrustBundle:
    return TrustBundle(
        ca.trust_domain,
        ca.bundle.x509_authorities,
        jwt_authorities={k.kid: authority(k) for k in keys if k.kid},
    )


def test_keys_follow_the_bundle_and_are_cached_by_identity(ca: DevCA) -> None:
    source = RotatingBundleSource(bundle(ca, KEY_A))
    keys_source = SpiffeJwtBundleKeySource(source, "example.org")
    keys = keys_source.get_keys()
    assert keys.get("a") is not None and len(keys) == 1
    assert keys_source.get_keys() is keys
    assert asyncio.run(keys_source.get_keys_async(missing_kid="zz")) is keys
    # A new bundle object with the same JWT authorities: the same set object.
    source.set(bundle(ca, KEY_A).with_x509_authorities(ca.bundle.x509_authorities))
    assert keys_source.get_keys() is keys
    source.set(bundle(ca, KEY_A, KEY_B))
    rotated = keys_source.get_keys()
    assert rotated is not keys and {k.kid for k in rotated} == {"a", "b"}
    source.set(bundle(ca, KEY_B))
    assert "a" not in keys_source.get_keys()  # removed authorities are gone


def test_only_the_named_trust_domain_is_used(ca: DevCA, other_ca: DevCA) -> None:
    bundles = BundleSet([bundle(ca, KEY_A), bundle(other_ca, KEY_B)])
    keys = SpiffeJwtBundleKeySource(bundles, "other.org").get_keys()
    assert [(k.kid, k.use) for k in keys] == [("b", "jwt-svid")]
    with pytest.raises(KeysUnavailable, match="no trust bundle"):
        SpiffeJwtBundleKeySource(bundles, "third.org").get_keys()


def test_bundle_without_jwt_authorities_is_unavailable(ca: DevCA) -> None:
    with pytest.raises(KeysUnavailable, match="no JWT authorities"):
        SpiffeJwtBundleKeySource(ca.bundle, "example.org").get_keys()


def test_failing_bundle_source_becomes_keys_unavailable(ca: DevCA) -> None:
    class Broken:
        def get_bundle_set(self) -> BundleSet:
            raise ConfigurationError("bundle file unreadable")

    with pytest.raises(KeysUnavailable, match="bundle source failed"):
        SpiffeJwtBundleKeySource(Broken(), "example.org").get_keys()


def test_bad_configuration() -> None:
    with pytest.raises(ConfigurationError):
        SpiffeJwtBundleKeySource(object(), "example.org")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        SpiffeJwtBundleKeySource(BundleSet(), "Not A Domain")


def test_verifies_jwt_svids(ca: DevCA) -> None:
    issuer = TokenIssuer(KEY_A, issuer="https://spire.example.org")
    token = issuer.issue(subject="spiffe://example.org/web", audience="api", token_type="jwt-svid")
    verifier = TokenVerifier(
        issuer="https://spire.example.org",
        audience="api",
        keys=SpiffeJwtBundleKeySource(bundle(ca, KEY_A), "example.org"),
        algorithms=["ES256"],
        token_type="jwt-svid",
        trust_domain="example.org",
    )
    assert verifier.verify(token).subject == "spiffe://example.org/web"


def test_a_trust_domains_keys_never_vouch_for_another(ca: DevCA) -> None:
    """SPIFFE Trust Domain and Bundle 3: a JWT-SVID is checked with its own trust domain's
    bundle, so the key source's trust domain is the one ``sub`` must be in."""
    keys = SpiffeJwtBundleKeySource(bundle(ca, KEY_A), "example.org")
    common = {"issuer": None, "audience": "api", "keys": keys, "algorithms": ["ES256"]}
    with pytest.raises(ConfigurationError, match="cannot vouch"):
        TokenVerifier(**common, token_type="jwt-svid", trust_domain="partner.example")
    with pytest.raises(ConfigurationError, match="cannot vouch"):
        TokenVerifier(**{**common, "issuer": "spiffe://partner.example"}, token_type="jwt-svid")
    with pytest.raises(ConfigurationError, match="JWT-SVIDs only"):
        TokenVerifier(**{**common, "issuer": "https://spire"})
    verifier = TokenVerifier(**common, token_type="jwt-svid")  # the source's trust domain
    issuer = TokenIssuer(KEY_A, issuer="https://spire.example.org")
    ours = issuer.issue(subject="spiffe://example.org/web", audience="api", token_type="jwt-svid")
    assert verifier.verify(ours).subject == "spiffe://example.org/web"
    theirs = issuer.issue(
        subject="spiffe://partner.example/web", audience="api", token_type="jwt-svid"
    )
    with pytest.raises(InvalidClaim):
        verifier.verify(theirs)


RSA_SVID_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"]


def svid(signer: PrivateJWK) -> str:
    return TokenIssuer(signer, issuer="https://spire").issue(
        subject="spiffe://example.org/web", audience="api", token_type="jwt-svid"
    )


@pytest.mark.parametrize("alg", RSA_SVID_ALGORITHMS)
def test_rsa_authorities_published_without_alg_verify_the_jwt_svid_rsa_algorithms(
    ca: DevCA, alg: str
) -> None:
    """SPIFFE bundles carry no ``alg``; JWT-SVID section 3 lets the issuer sign with any of
    RS256 to PS512, and go-spiffe's validators accept each with an RSA authority. The
    verifier's allowlist still decides: without ``alg`` in it, the token is refused."""
    published = {k: v for k, v in authority(KEY_B).items() if k != "alg"}
    token = svid(PrivateJWK(KEY_B.private_key, algorithm=alg, kid="b"))
    others = [name for name in RSA_SVID_ALGORITHMS if name != alg]
    for authority_members, allowed, accepted in (
        (published, RSA_SVID_ALGORITHMS, True),
        (published, others, False),  # the allowlist is the verifier's, whatever the key
        ({**published, "alg": alg}, RSA_SVID_ALGORITHMS, True),
        ({**published, "alg": others[0]}, RSA_SVID_ALGORITHMS, False),  # a named alg binds
    ):
        keys = SpiffeJwtBundleKeySource(
            TrustBundle(
                ca.trust_domain,
                ca.bundle.x509_authorities,
                jwt_authorities={"b": authority_members},
            ),
            "example.org",
        )
        verifier = TokenVerifier(
            issuer=None,
            audience="api",
            keys=keys,
            algorithms=allowed,
            token_type="jwt-svid",
        )
        if accepted:
            assert verifier.verify(token).algorithm == alg
        else:
            with pytest.raises(AlgorithmNotAllowed):
                verifier.verify(token)


def test_an_ec_authority_published_without_alg_verifies_its_curve_only(ca: DevCA) -> None:
    """JWT-SVID section 3 allows ES256/384/512, but each is one curve: a P-256 authority
    verifies ES256 only, and an RSA signature naming its kid is refused before any math."""
    published = {k: v for k, v in authority(KEY_A).items() if k != "alg"}
    keys = SpiffeJwtBundleKeySource(
        TrustBundle(ca.trust_domain, ca.bundle.x509_authorities, jwt_authorities={"a": published}),
        "example.org",
    )
    verifier = TokenVerifier(
        issuer=None,
        audience="api",
        keys=keys,
        algorithms=["ES256", "ES384", *RSA_SVID_ALGORITHMS],
        token_type="jwt-svid",
    )
    assert verifier.verify(svid(KEY_A)).algorithm == "ES256"
    for signer in (
        PrivateJWK.generate("ES384", kid="a"),
        PrivateJWK(KEY_B.private_key, algorithm="PS256", kid="a"),
    ):
        with pytest.raises(AlgorithmNotAllowed):
            verifier.verify(svid(signer))
