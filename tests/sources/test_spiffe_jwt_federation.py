"""SpiffeJwtBundleSetKeySource: JWT-SVIDs of several trust domains, each verified with the
JWT authorities of the trust domain its ``sub`` names (SPIFFE Trust Domain and Bundle 3)."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest

from zerotrust import (
    Authenticator,
    BundleSet,
    Callers,
    Guard,
    Policy,
    RotatingBundleSource,
    Rule,
    TrustBundle,
    TrustDomain,
)
from zerotrust.audit import MemorySink
from zerotrust.authn.request import Request
from zerotrust.dev import DevCA
from zerotrust.errors import (
    ConfigurationError,
    InvalidClaim,
    InvalidSignature,
    KeysUnavailable,
    MalformedToken,
    MissingClaim,
    UnknownKey,
)
from zerotrust.sources import SpiffeJwtBundleKeySource, SpiffeJwtBundleSetKeySource
from zerotrust.tokens import (
    JWK,
    ClaimsValidator,
    PrivateJWK,
    SignatureVerifier,
    TokenIssuer,
    TokenVerifier,
    TrustDomainKeySource,
)

OURS = PrivateJWK.generate("ES256", kid="a")
THEIRS = PrivateJWK.generate("ES256", kid="a")  # the same kid in another trust domain
OURS_B = PrivateJWK.generate("RS256", kid="b")
WEB = "spiffe://example.org/web"
PARTNER = "spiffe://other.org/billing"


def authorities(*keys: PrivateJWK) -> dict[str, Any]:
    return {k.kid: {**k.public().to_public_dict(), "use": "jwt-svid"} for k in keys if k.kid}


def bundles(
    ca: DevCA,
    other_ca: DevCA,
    *,
    ours: tuple[PrivateJWK, ...] = (OURS, OURS_B),
    theirs: tuple[PrivateJWK, ...] = (THEIRS,),
) -> BundleSet:
    return BundleSet(
        [
            TrustBundle(
                ca.trust_domain, ca.bundle.x509_authorities, jwt_authorities=authorities(*ours)
            ),
            TrustBundle(
                other_ca.trust_domain,
                other_ca.bundle.x509_authorities,
                jwt_authorities=authorities(*theirs),
            ),
        ]
    )


def svid(signer: PrivateJWK, subject: str) -> str:
    return TokenIssuer(signer, issuer="https://spire").issue(
        subject=subject, audience="api", token_type="jwt-svid"
    )


def verifier(keys: object, **kw: Any) -> TokenVerifier:
    return TokenVerifier(
        **{
            "issuer": None,
            "audience": "api",
            "keys": keys,
            "algorithms": ["ES256", "RS256"],
            "token_type": "jwt-svid",
            **kw,
        }
    )


def forged(subject: object, signer: PrivateJWK = OURS) -> str:
    """A token signed by ``signer`` whose payload is ``{"sub": subject, ...}`` as given."""
    header = {"alg": "ES256", "kid": signer.kid, "typ": "JWT"}
    payload = {"aud": "api", "exp": 4102444800}
    if subject is not None:
        payload["sub"] = subject  # type: ignore[assignment]

    def seg(value: object) -> bytes:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=")

    signing_input = seg(header) + b"." + seg(payload)
    signature = signer.sign(signing_input)
    return (signing_input + b"." + base64.urlsafe_b64encode(signature).rstrip(b"=")).decode()


def test_each_trust_domain_verifies_its_own_workloads_only(ca: DevCA, other_ca: DevCA) -> None:
    keys = SpiffeJwtBundleSetKeySource(bundles(ca, other_ca))
    assert isinstance(keys, TrustDomainKeySource)
    check = verifier(keys)
    assert check.claims_validator.any_trust_domain
    assert check.claims_validator.trust_domain is None
    assert check.verify(svid(OURS, WEB)).subject == WEB
    assert check.verify(svid(OURS_B, WEB)).algorithm == "RS256"
    # kid "a" names a key in both domains: the sub's domain decides, never an ambiguity
    assert check.verify(svid(THEIRS, PARTNER)).subject == PARTNER
    # one domain's key never vouches for another's workloads, whatever kid it names
    for signer, subject in ((OURS, PARTNER), (THEIRS, WEB)):
        with pytest.raises(InvalidSignature):
            check.verify(svid(signer, subject))
    with pytest.raises(UnknownKey):  # kid "b" is ours only
        check.verify(svid(OURS_B, PARTNER))
    # a domain outside the bundle set: an invalid token (401), not a key outage (503)
    with pytest.raises(InvalidClaim, match="not accepted"):
        check.verify(svid(OURS, "spiffe://third.org/web"))
    with pytest.raises(InvalidClaim, match="trust domain ID"):  # no workload's
        check.verify(forged("spiffe://example.org"))


def test_listed_trust_domains_only(ca: DevCA, other_ca: DevCA) -> None:
    source = RotatingBundleSource(bundles(ca, other_ca))
    keys = SpiffeJwtBundleSetKeySource(source, ["example.org", "third.org"])
    assert {td.name for td in keys.trust_domains or ()} == {"example.org", "third.org"}
    check = verifier(keys)
    assert check.verify(svid(OURS, WEB)).subject == WEB
    with pytest.raises(InvalidClaim, match="not accepted"):  # in the set, not listed
        check.verify(svid(THEIRS, PARTNER))
    assert [k.kid for k in keys.get_keys()] == ["a", "b"]  # the unlisted domain's are left out
    # a listed domain without a bundle: its keys are missing, not its tokens wrong
    with pytest.raises(KeysUnavailable, match=r"third\.org"):
        check.verify(svid(OURS, "spiffe://third.org/web"))


def test_the_subject_is_read_before_any_key(ca: DevCA, other_ca: DevCA) -> None:
    """The trust domain picks the keys, so ``sub`` is checked first: a token without a
    usable one is refused as step 2 would refuse it, and never reaches a failing source."""

    class Broken:
        def get_bundle_set(self) -> BundleSet:
            raise ConfigurationError("bundle file unreadable")

    for keys in (SpiffeJwtBundleSetKeySource(bundles(ca, other_ca)), Broken()):
        check = verifier(SpiffeJwtBundleSetKeySource(keys) if isinstance(keys, Broken) else keys)
        with pytest.raises(MissingClaim):
            check.verify(forged(None))
        for bad in (7, ["spiffe://example.org/web"], "https://example.org/web", "", "spiffe://"):
            with pytest.raises(InvalidClaim):
                check.verify(forged(bad))
        for bad in (7, ["spiffe://example.org/web"]):
            with pytest.raises(InvalidClaim, match="claim 'sub' must be a string"):
                check.verify(forged(bad))
    token = svid(OURS, WEB)
    head, _, sig = token.split(".")
    not_json = base64.urlsafe_b64encode(b"[1, 2").rstrip(b"=").decode()
    with pytest.raises(MalformedToken):
        verifier(SpiffeJwtBundleSetKeySource(bundles(ca, other_ca))).verify(
            f"{head}.{not_json}.{sig}"
        )
    with pytest.raises(KeysUnavailable, match="bundle source failed"):
        verifier(SpiffeJwtBundleSetKeySource(Broken())).verify(token)


def test_key_sets_are_built_once_per_bundle_snapshot(ca: DevCA, other_ca: DevCA) -> None:
    one = bundles(ca, other_ca).get("example.org")
    assert one is not None
    for source in (one, bundles(ca, other_ca)):  # a TrustBundle makes a new set per call
        keys = SpiffeJwtBundleSetKeySource(source)
        assert keys.get_keys() is keys.get_keys()
        assert keys.keys_of(ca.trust_domain) is keys.keys_of(ca.trust_domain)


def test_no_jwt_authority_anywhere_fails_closed(ca: DevCA, other_ca: DevCA) -> None:
    keys = SpiffeJwtBundleSetKeySource(BundleSet([ca.bundle, other_ca.bundle]))
    with pytest.raises(KeysUnavailable, match="no trust domain"):
        keys.get_keys()
    with pytest.raises(KeysUnavailable):
        verifier(keys).verify(svid(OURS, WEB))
    # a domain with X.509 authorities only signs no JWT-SVID: its tokens are invalid
    only_ours = SpiffeJwtBundleSetKeySource(bundles(ca, other_ca, theirs=()))
    with pytest.raises(InvalidClaim, match="not accepted"):
        verifier(only_ours).verify(svid(THEIRS, PARTNER))


def test_a_source_answering_something_else_fails_closed(ca: DevCA, other_ca: DevCA) -> None:
    real = SpiffeJwtBundleSetKeySource(bundles(ca, other_ca))

    class Odd(TrustDomainKeySource):
        def get_keys(self, *, missing_kid: str | None = None) -> Any:
            return real.get_keys()

        async def get_keys_async(self, *, missing_kid: str | None = None) -> Any:
            return real.get_keys()

        def keys_of(self, trust_domain: TrustDomain) -> Any:
            return {"keys": [OURS.public().to_public_dict()]}  # a JWKS document, not a key set

    with pytest.raises(KeysUnavailable, match="not a key set"):
        verifier(Odd()).verify(svid(OURS, WEB))


def test_rotation_of_one_domain(ca: DevCA, other_ca: DevCA) -> None:
    source = RotatingBundleSource(bundles(ca, other_ca))
    keys = SpiffeJwtBundleSetKeySource(source)
    check = verifier(keys)
    theirs = svid(THEIRS, PARTNER)
    ours = svid(OURS, WEB)
    check.verify(theirs)
    check.verify(ours)
    assert check.cache is not None and len(check.cache) == 2
    merged = keys.get_keys()
    # new X.509 authorities only: the same key objects, and the verified tokens stay cached
    source.set_bundle(source.get_bundle_set().get("other.org").with_x509_authorities([]))  # type: ignore[union-attr]
    assert keys.get_keys() is merged
    check.verify(ours)
    assert len(check.cache) == 2
    # the partner rotates its JWT authority: its old token is refused, even from the cache
    replacement = PrivateJWK.generate("ES256", kid="a2")
    source.set_bundle(
        TrustBundle(other_ca.trust_domain, [], jwt_authorities=authorities(replacement))
    )
    with pytest.raises(UnknownKey):
        check.verify(theirs)
    assert check.verify(svid(replacement, PARTNER)).subject == PARTNER
    assert check.verify(ours).subject == WEB
    # the partner leaves the federation: its tokens are no longer accepted
    source.set(bundles(ca, other_ca).without("other.org"))
    with pytest.raises(InvalidClaim, match="not accepted"):
        check.verify(svid(replacement, PARTNER))


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_key_two_domains_publish_vouches_no_longer_for_the_domain_that_dropped_it(
    ca: DevCA, other_ca: DevCA, mode: str
) -> None:
    """When two trust domains publish the same key, the union of their keys does not change
    when one of them withdraws it, or leaves the federation: the cached verifications of that
    domain's tokens must end anyway, as a fresh verifier would refuse them."""
    shared, own = PrivateJWK.generate("ES256", kid="shared"), PrivateJWK.generate("ES256")
    source = RotatingBundleSource(bundles(ca, other_ca, ours=(shared, own), theirs=(shared,)))
    check = verifier(SpiffeJwtBundleSetKeySource(source))
    token = svid(shared, WEB)

    def verify() -> object:
        if mode == "sync":
            return check.verify(token)
        return asyncio.run(check.verify_async(token))

    assert verify()
    assert check.cache is not None and len(check.cache) == 1
    source.set(bundles(ca, other_ca, ours=(own,), theirs=(shared,)))  # example.org drops it
    with pytest.raises(UnknownKey):
        verify()
    source.set(bundles(ca, other_ca, ours=(shared, own), theirs=(shared,)))
    assert verify()
    source.set(bundles(ca, other_ca, ours=(shared,), theirs=(shared,)).without("example.org"))
    with pytest.raises(InvalidClaim, match="not accepted"):
        verify()


def test_async_verification(ca: DevCA, other_ca: DevCA) -> None:
    check = verifier(SpiffeJwtBundleSetKeySource(bundles(ca, other_ca)))

    async def both() -> list[str | None]:
        return [
            (await check.verify_async(svid(OURS, WEB))).subject,
            (await check.verify_async(svid(THEIRS, PARTNER))).subject,
        ]

    assert asyncio.run(both()) == [WEB, PARTNER]
    with pytest.raises(InvalidSignature):
        asyncio.run(check.verify_async(svid(OURS, PARTNER)))


def test_the_two_steps_alone_keep_the_binding(ca: DevCA, other_ca: DevCA) -> None:
    check = verifier(SpiffeJwtBundleSetKeySource(bundles(ca, other_ca)))
    signed = check.verify_signature(svid(THEIRS, PARTNER))
    assert check.validate_claims(signed).subject == PARTNER
    # a signature step of another verifier (our key, any sub): the claims step refuses it
    elsewhere = SignatureVerifier(keys=OURS.public(), algorithms=["ES256"], token_type="jwt-svid")
    with pytest.raises(InvalidClaim, match="another trust domain"):
        check.validate_claims(elsewhere.verify(svid(OURS, PARTNER)))
    assert check.validate_claims(elsewhere.verify(svid(OURS, WEB))).subject == WEB


def test_configuration_mistakes(ca: DevCA, other_ca: DevCA) -> None:
    keys = SpiffeJwtBundleSetKeySource(bundles(ca, other_ca))
    with pytest.raises(ConfigurationError, match="JWT-SVIDs only"):
        verifier(keys, token_type=None, issuer="https://spire")
    with pytest.raises(ConfigurationError, match="JWT-SVIDs only"):
        SignatureVerifier(keys=keys, algorithms=["ES256"])
    with pytest.raises(ConfigurationError, match="leave trust_domain out"):
        verifier(keys, trust_domain="example.org")
    with pytest.raises(ConfigurationError, match="spiffe:// issuer"):
        verifier(keys, issuer="spiffe://example.org")
    assert verifier(keys, issuer="https://spire").verify(svid(THEIRS, PARTNER)).issuer == (
        "https://spire"
    )
    for bad in (
        {"any_trust_domain": 1},
        {"any_trust_domain": True, "token_type": None, "issuer": "https://spire"},
        {"any_trust_domain": True, "trust_domain": "example.org"},
        {"any_trust_domain": True, "issuer": "spiffe://example.org"},
        {"any_trust_domain": False},  # issuer None needs a trust domain, as ever
    ):
        with pytest.raises(ConfigurationError):
            ClaimsValidator(**{"issuer": None, "audience": "api", "token_type": "jwt-svid", **bad})
    with pytest.raises(ConfigurationError):
        SpiffeJwtBundleSetKeySource(object())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="list"):
        SpiffeJwtBundleSetKeySource(bundles(ca, other_ca), "example.org")
    with pytest.raises(ConfigurationError, match="empty"):
        SpiffeJwtBundleSetKeySource(BundleSet(), [])
    with pytest.raises(ValueError):
        SpiffeJwtBundleSetKeySource(BundleSet(), ["Not A Domain"])
    assert repr(SpiffeJwtBundleSetKeySource(BundleSet(), ["b.org", "a.org"])) == (
        "SpiffeJwtBundleSetKeySource(trust_domains=['a.org', 'b.org'])"
    )


def test_a_guard_admits_federated_workloads_by_policy(ca: DevCA, other_ca: DevCA) -> None:
    """End to end through the Guard, its repeated-request fast path included: a partner's
    workload is a principal with its SPIFFE ID, and leaving the federation ends its access."""
    source = RotatingBundleSource(bundles(ca, other_ca))
    sink = MemorySink()
    guard = Guard(
        authenticator=Authenticator(tokens=verifier(SpiffeJwtBundleSetKeySource(source))),
        policy=Policy(
            [Rule(id="partner-billing", callers=[Callers(spiffe_ids=["spiffe://other.org/*"])])]
        ),
        audit=sink,
    )

    def call(token: str) -> Any:
        return guard.evaluate(
            Request(method="GET", route="/invoices", headers={"Authorization": f"Bearer {token}"})
        )

    theirs = svid(THEIRS, PARTNER)
    for _ in range(3):  # the first decides, the others repeat it
        outcome = call(theirs)
        assert outcome.allowed
        assert str(outcome.principal.spiffe_id) == PARTNER  # type: ignore[union-attr]
    assert call(svid(OURS, WEB)).status == 403  # ours, but no rule admits it
    assert call(svid(OURS, PARTNER)).status == 401  # our key, their name
    source.set(bundles(ca, other_ca).without("other.org"))
    outcome = call(theirs)
    assert (outcome.allowed, outcome.status) == (False, 401)
    assert len(sink.events) == 6


def test_several_trust_domains_without_a_cache(ca: DevCA, other_ca: DevCA) -> None:
    check = verifier(SpiffeJwtBundleSetKeySource(bundles(ca, other_ca)), cache_size=0)
    assert check.cache is None
    assert check.verify(svid(OURS, WEB)).subject == WEB
    assert check.verify(svid(THEIRS, PARTNER)).subject == PARTNER
    with pytest.raises(InvalidSignature):
        check.verify(svid(OURS, PARTNER))


def test_a_bundle_with_more_authorities_than_a_jwks_may_list(ca: DevCA, other_ca: DevCA) -> None:
    # a bundle may hold more JWT authorities than a fetched JWKS document may list (256):
    # every authority the bundle accepted is a key (once, a server error on every JWT-SVID
    # check, whatever its trust domain)
    public = {**THEIRS.public().to_public_dict(), "use": "jwt-svid"}
    many = {f"p{i}": {**public, "kid": f"p{i}"} for i in range(300)}
    crowded = TrustBundle(
        other_ca.trust_domain, other_ca.bundle.x509_authorities, jwt_authorities=many
    )
    ours = TrustBundle(ca.trust_domain, jwt_authorities=authorities(OURS))
    keys = SpiffeJwtBundleSetKeySource(BundleSet([ours, crowded]))
    assert len(keys.get_keys()) == 301
    partner = TokenIssuer(THEIRS.with_kid("p299"), issuer="https://spire").issue(
        subject=PARTNER, audience="api", token_type="jwt-svid"
    )
    assert verifier(keys).verify(partner).subject == PARTNER
    assert verifier(keys).verify(svid(OURS, WEB)).subject == WEB

    single = SpiffeJwtBundleKeySource(RotatingBundleSource(crowded), other_ca.trust_domain)
    assert verifier(single).verify(partner).subject == PARTNER


def test_large_federated_key_sets_are_built_in_linear_time(
    ca: DevCA, other_ca: DevCA, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bundle may hold up to 1,000 JWT authorities, and a federated set merges those of
    every domain: each key is compared with a bounded number of others while the set is
    built (a list's ``in`` compared each with every key before it, seconds of CPU for a few
    domains' worth of keys)."""
    shared = [k.public().to_public_dict() for k in (OURS, THEIRS, OURS_B)]
    per_domain = 600

    def many(prefix: str) -> dict[str, Any]:
        return {
            f"{prefix}{i}": {**shared[i % len(shared)], "kid": f"{prefix}{i}", "use": "jwt-svid"}
            for i in range(per_domain)
        }

    bundle_set = BundleSet(
        [
            TrustBundle(ca.trust_domain, jwt_authorities=many("o")),
            TrustBundle(other_ca.trust_domain, jwt_authorities=many("t")),
        ]
    )
    compared = 0
    real_eq = JWK.__eq__

    def counting_eq(self: JWK, other: object) -> bool:
        nonlocal compared
        compared += 1
        return real_eq(self, other)  # type: ignore[no-any-return]

    monkeypatch.setattr(JWK, "__eq__", counting_eq)
    keys = SpiffeJwtBundleSetKeySource(bundle_set).get_keys()
    assert len(keys) == 2 * per_domain
    assert compared <= 2 * per_domain
