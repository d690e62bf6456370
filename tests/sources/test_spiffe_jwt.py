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


@pytest.mark.parametrize("alg", ["RS256", "PS256"])
def test_rsa_authorities_published_without_alg_are_rs256_keys(ca: DevCA, alg: str) -> None:
    """SPIFFE bundles carry no ``alg``; RFC 8725 3.1 binds each key to one algorithm, RS256
    for an RSA key (what SPIRE signs with). Another algorithm needs ``alg`` in the bundle."""
    published = {k: v for k, v in authority(KEY_B).items() if k != "alg"}
    signer = PrivateJWK(KEY_B.private_key, algorithm=alg, kid="b")
    token = TokenIssuer(signer, issuer="https://spire").issue(
        subject="spiffe://example.org/web", audience="api", token_type="jwt-svid"
    )
    for authority_members, accepted in (
        (published, alg == "RS256"),
        ({**published, "alg": alg}, True),
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
            algorithms=["RS256", "PS256"],
            token_type="jwt-svid",
        )
        if accepted:
            assert verifier.verify(token).algorithm == alg
        else:
            with pytest.raises(AlgorithmNotAllowed):
                verifier.verify(token)
