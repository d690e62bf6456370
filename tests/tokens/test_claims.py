"""Step 2: every claim rule, positive and negative, the leeway edges and the profiles."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from typing import Any

import pytest

from zerotrust._clock import FixedClock
from zerotrust.errors import (
    AlgorithmNotAllowed,
    ConfigurationError,
    InvalidAudience,
    InvalidClaim,
    InvalidIssuer,
    InvalidTokenType,
    MalformedToken,
    MissingClaim,
    TokenExpired,
    TokenLifetimeTooLong,
    TokenNotYetValid,
    UnsupportedTokenFeature,
)
from zerotrust.identity import TrustDomain
from zerotrust.tokens import ClaimsValidator, PrivateJWK, TokenVerifier, validate_claims
from zerotrust.tokens.signature import SignatureVerifier

from .conftest import AUDIENCE, ISSUER, NOW, T0, claims, mint

Factory = Callable[..., TokenVerifier]


@pytest.fixture
def check(clock: FixedClock) -> Callable[..., tuple[float, float]]:
    """``check(claims, at=T0, **validator_settings)``."""

    def run(values: dict[str, Any], at: float = T0, **settings: Any) -> tuple[float, float]:
        options: dict[str, Any] = {"issuer": ISSUER, "audience": AUDIENCE, "clock": clock}
        options.update(settings)
        return ClaimsValidator(**options).check(values, at)

    return run


def test_valid_claims_and_window(check: Any) -> None:
    assert check(claims()) == (T0 - 60, T0 + 300)


# --- iss -----------------------------------------------------------------------------------------


def test_iss_required(check: Any) -> None:
    with pytest.raises(MissingClaim, match="iss"):
        check(claims(iss=None))


@pytest.mark.parametrize("iss", ["https://other.example", 1, True, ["https://issuer.example"]])
def test_iss_exact(check: Any, iss: Any) -> None:
    with pytest.raises(InvalidIssuer):
        check(claims(iss=iss))


# --- aud -----------------------------------------------------------------------------------------


def test_aud_required(check: Any) -> None:
    with pytest.raises(MissingClaim, match="aud"):
        check(claims(aud=None))


@pytest.mark.parametrize("aud", [AUDIENCE, [AUDIENCE], ("x", AUDIENCE), ["a", "b", AUDIENCE]])
def test_aud_matches(check: Any, aud: Any) -> None:
    check(claims(aud=aud))


@pytest.mark.parametrize("aud", ["other", ["other"], AUDIENCE + "/x", AUDIENCE[:-1]])
def test_aud_mismatch(check: Any, aud: Any) -> None:
    with pytest.raises(InvalidAudience):
        check(claims(aud=aud))


@pytest.mark.parametrize("aud", [[], [AUDIENCE, 1], 5, {"a": 1}, True, [[AUDIENCE]]])
def test_aud_wrong_type(check: Any, aud: Any) -> None:
    with pytest.raises(InvalidClaim):
        check(claims(aud=aud))


def test_several_configured_audiences(check: Any) -> None:
    check(claims(aud="b"), audience=["a", "b"])
    with pytest.raises(InvalidAudience):
        check(claims(aud="c"), audience=["a", "b"])


# --- exp / nbf / iat and the leeway edges --------------------------------------------------------


def test_exp_required(check: Any) -> None:
    with pytest.raises(MissingClaim, match="exp"):
        check(claims(exp=None))


def test_exp_edges_with_leeway(check: Any) -> None:
    exp = T0 + 300
    check(claims(), at=exp + 59.999)
    with pytest.raises(TokenExpired):
        check(claims(), at=exp + 60)
    check(claims(), at=exp - 0.001, leeway=0)
    with pytest.raises(TokenExpired):
        check(claims(), at=exp, leeway=0)


def test_nbf_edges_with_leeway(check: Any) -> None:
    nbf = T0 + 100
    values = claims(nbf=nbf, iat=None)
    check(values, at=nbf - 60)
    with pytest.raises(TokenNotYetValid):
        check(values, at=nbf - 60.001)
    check(values, at=nbf, leeway=0)
    with pytest.raises(TokenNotYetValid):
        check(values, at=nbf - 0.001, leeway=0)


def test_iat_in_the_future(check: Any) -> None:
    iat = T0 + 100
    values = claims(iat=iat, nbf=None)
    assert check(values, at=iat - 60) == (iat - 60, T0 + 300)
    with pytest.raises(TokenNotYetValid, match="iat"):
        check(values, at=iat - 60.5)


def test_nbf_and_iat_are_optional(check: Any) -> None:
    assert check(claims(nbf=None, iat=None)) == (-math.inf, T0 + 300)


def test_exp_before_iat(check: Any) -> None:
    with pytest.raises(InvalidClaim, match="before"):
        check(claims(iat=T0, exp=T0 - 10), at=T0 - 20)


def test_exp_before_nbf(check: Any) -> None:
    """Valid at no time: only the leeways on both ends would let it pass."""
    with pytest.raises(InvalidClaim, match="before nbf"):
        check(claims(iat=None, nbf=T0, exp=T0 - 10), at=T0 - 20)
    assert check(claims(iat=None, nbf=T0, exp=T0), at=T0) == (T0 - 60, T0)


def test_exp_equal_to_iat_is_not_before_it(check: Any) -> None:
    """Only ``exp < iat`` is contradictory; a token that expires as it is issued is still
    accepted within the leeway."""
    assert check(claims(iat=T0, nbf=None, exp=T0), at=T0) == (T0 - 60, T0)


@pytest.mark.parametrize("name", ["exp", "nbf", "iat"])
@pytest.mark.parametrize(
    "value",
    [True, False, "1767268800", [T0], {"t": T0}, math.nan, math.inf, -math.inf, 10**400, 1e16],
)
def test_numeric_dates_must_be_sane_numbers(check: Any, name: str, value: Any) -> None:
    with pytest.raises(InvalidClaim, match=name):
        check(claims(**{name: value}))


def test_float_dates_are_accepted(check: Any) -> None:
    check(claims(exp=T0 + 300.5, iat=T0 - 0.25, nbf=float(T0)))


def test_the_earliest_date_is_accepted_as_an_int_and_as_a_float(check: Any) -> None:
    """The range is closed below (0001-01-01T00:00:00Z) and open above (year 10000)."""
    earliest = -62_135_596_800
    for value in (earliest, float(earliest)):
        assert check(claims(nbf=value, iat=value), max_lifetime=None)[0] == earliest - 60


@pytest.mark.parametrize("name", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("value", [253_402_300_800, 10**14, -62_135_596_801, -(10**14), 2.6e11])
def test_numeric_dates_are_bounded_to_what_datetime_holds(
    check: Any, name: str, value: float
) -> None:
    """Years 1 to 9999: outside, a verified token's ``expires_at`` could not be read."""
    with pytest.raises(InvalidClaim, match=f"{name}.*out of range"):
        check(claims(**{name: value}))


def test_the_dates_of_a_verified_token_are_always_readable(
    es256: PrivateJWK, clock: FixedClock
) -> None:
    latest = 253_402_300_799.99997  # the last float before year 10000
    earliest = -62_135_596_800
    signed = SignatureVerifier(keys=es256.public(), algorithms=["ES256"]).verify(
        mint(es256, claims(exp=latest, iat=earliest, nbf=earliest))
    )
    token = validate_claims(signed, issuer=ISSUER, audience=AUDIENCE, clock=clock)
    assert token.expires_at.year == 9999 and token.expires_at.microsecond == 999_969
    assert token.issued_at == token.not_before == dt.datetime(1, 1, 1, tzinfo=dt.timezone.utc)


# --- max_lifetime --------------------------------------------------------------------------------


def test_max_lifetime(check: Any) -> None:
    check(claims(), max_lifetime=300)
    with pytest.raises(TokenLifetimeTooLong):
        check(claims(), max_lifetime=299)
    # without iat, nbf is the start
    check(claims(iat=None), max_lifetime=300)
    with pytest.raises(TokenLifetimeTooLong):
        check(claims(iat=None, nbf=T0 - 1), max_lifetime=300)
    with pytest.raises(MissingClaim, match="iat"):
        check(claims(iat=None, nbf=None), max_lifetime=300)


def test_max_lifetime_counts_from_iat_when_there_is_one(check: Any) -> None:
    """``exp - iat`` is the lifetime; a later ``nbf`` does not shorten it."""
    values = claims(iat=T0 - 100, nbf=T0, exp=T0 + 300)
    check(values, max_lifetime=400)
    with pytest.raises(TokenLifetimeTooLong):
        check(values, max_lifetime=300)


def test_max_lifetime_may_be_short(check: Any) -> None:
    check(claims(exp=T0 + 1), max_lifetime=1)
    check(claims(exp=T0 + 0.5), max_lifetime=0.5)


# --- registered claim types ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("sub", 5),
        ("sub", ["a"]),
        ("jti", 1),
        ("client_id", 1),
        ("azp", 1),
        ("azp", ["spiffe://example.org/web"]),
        ("scope", ["read"]),
        ("scp", 5),
        ("scp", ["read", 1]),
        ("cnf", "thumb"),
        ("act", "someone"),
        ("act", {"sub": "a", "act": "b"}),
        # RFC 9068 2.2.1 / OpenID Connect Core 2: auth_time a NumericDate, acr a string, amr
        # an array of strings
        ("auth_time", "1700000000"),
        ("auth_time", True),
        ("auth_time", 10**30),
        ("acr", 2),
        ("acr", ["urn:mace:incommon:iap:silver"]),
        ("amr", "pwd"),
        ("amr", ["pwd", 1]),
    ],
)
def test_registered_claim_types(check: Any, name: str, value: Any) -> None:
    with pytest.raises(InvalidClaim, match=name):
        check(claims(**{name: value}))


def es256_verifier(es256: PrivateJWK, clock: FixedClock, **options: Any) -> TokenVerifier:
    """A verifier of ``es256``'s tokens for this module's issuer and audience."""
    return TokenVerifier(
        issuer=ISSUER,
        audience=AUDIENCE,
        keys=es256.public(),
        algorithms=["ES256"],
        clock=clock,
        **options,
    )


def test_authentication_claims_of_the_right_types_are_accepted(
    es256: PrivateJWK, clock: FixedClock
) -> None:
    verifier = es256_verifier(es256, clock, token_type="at+jwt")
    header = {"alg": "ES256", "kid": es256.kid, "typ": "at+jwt"}
    good = claims(client_id="c", auth_time=T0 - 30, acr="1", amr=["pwd", "otp"])
    assert verifier.verify(mint(es256, good, header)).claims["amr"] == ("pwd", "otp")
    with pytest.raises(InvalidClaim, match="auth_time"):
        verifier.verify(mint(es256, {**good, "auth_time": "yesterday"}, header))


def test_required_claims(check: Any) -> None:
    check(claims(tenant="t1"), required_claims=["tenant"])
    with pytest.raises(MissingClaim, match="tenant"):
        check(claims(), required_claims=["tenant"])
    with pytest.raises(MissingClaim, match="tenant"):  # null is no value
        check({**claims(), "tenant": None}, required_claims=["tenant"])


def test_required_claims_given_as_an_iterator_are_all_required(
    es256: PrivateJWK, clock: FixedClock
) -> None:
    """The names are read once: checking a one-shot iterator must not leave it empty."""
    verifier = es256_verifier(es256, clock, required_claims=(name for name in ["tenant"]))
    with pytest.raises(MissingClaim, match="tenant"):
        verifier.verify(mint(es256, claims()))
    assert verifier.verify(mint(es256, claims(tenant="t1"))).claims["tenant"] == "t1"
    with pytest.raises(MissingClaim, match="tenant"):
        ClaimsValidator(issuer=ISSUER, audience=AUDIENCE, required_claims=iter(["tenant"])).check(
            claims(), T0
        )


@pytest.mark.parametrize(
    "name",
    [
        *("sub", "jti", "nbf", "iat", "client_id", "scope", "cnf", "act"),
        *("scp", "azp", "auth_time", "acr", "amr"),
    ],
)
def test_registered_claims_are_never_null(check: Any, name: str) -> None:
    """RFC 7519 4.1: each registered claim has a type, and null is none of them (a null jti
    would also slip past revocation by jti)."""
    with pytest.raises(InvalidClaim, match=f"'{name}' must not be null"):
        check({**claims(), name: None})


@pytest.mark.parametrize(("name", "error"), [("exp", MissingClaim), ("aud", MissingClaim)])
def test_null_required_registered_claims_are_missing(
    check: Any, name: str, error: type[Exception]
) -> None:
    with pytest.raises(error, match=name):
        check({**claims(), name: None})


def test_at_jwt_claims_must_have_values(check: Any) -> None:
    """RFC 9068 2.2: sub, client_id, iat and jti are REQUIRED; null does not provide one."""
    good = claims(client_id="web")
    check(good, token_type="at+jwt")
    for name in ("sub", "client_id", "iat", "jti"):
        with pytest.raises((MissingClaim, InvalidClaim), match=name):
            check({**good, name: None}, token_type="at+jwt")


# --- profiles ------------------------------------------------------------------------------------


def test_jwt_svid_profile(check: Any) -> None:
    settings = {"token_type": "jwt-svid", "issuer": "spiffe://example.org/spire"}
    good = claims(iss="spiffe://example.org/spire", sub="spiffe://example.org/ns/a")
    check(good, **settings)
    with pytest.raises(MissingClaim, match="sub"):
        check({k: v for k, v in good.items() if k != "sub"}, **settings)
    for sub in ("not-a-spiffe-id", "spiffe://EXAMPLE.org/x", "spiffe://example.org/a/../b", 7):
        with pytest.raises(InvalidClaim):
            check({**good, "sub": sub}, **settings)
    with pytest.raises(InvalidClaim, match="trust domain"):
        check({**good, "sub": "spiffe://other.org/ns/a"}, **settings)
    # the trust domain's own ID names no workload (as for X509-SVIDs)
    with pytest.raises(InvalidClaim, match="trust domain ID"):
        check({**good, "sub": "spiffe://example.org"}, **settings)


def test_other_profiles_take_any_subject(check: Any) -> None:
    """Only JWT-SVIDs need a workload's SPIFFE ID: an OAuth subject is any string, and a
    trust domain ID or another trust domain's workload is no error there."""
    for sub in ("alice", "spiffe://example.org", "spiffe://other.org/ns/a", "not a URI"):
        check(claims(sub=sub))
        check(claims(sub=sub, client_id="c"), token_type="at+jwt")


def test_jwt_svid_trust_domain_argument(check: Any) -> None:
    good = claims(sub="spiffe://example.org/ns/a")
    check(good, token_type="jwt-svid", trust_domain="example.org")
    check(good, token_type="jwt-svid", trust_domain=TrustDomain("example.org"))
    with pytest.raises(InvalidClaim):
        check(good, token_type="jwt-svid", trust_domain="other.org")
    validator = ClaimsValidator(issuer="spiffe://example.org", audience="a", token_type="jwt-svid")
    assert validator.trust_domain == TrustDomain("example.org")
    # the issuer's own trust domain, named again, is no conflict
    validator = ClaimsValidator(
        issuer="spiffe://example.org/spire",
        audience="a",
        token_type="jwt-svid",
        trust_domain="example.org",
    )
    assert validator.trust_domain == TrustDomain("example.org")


@pytest.mark.parametrize(
    "settings",
    [
        {"token_type": "jwt-svid"},  # issuer is not a SPIFFE ID and no trust_domain
        {"token_type": "jwt-svid", "trust_domain": "Not Valid"},
        {"token_type": "jwt-svid", "issuer": "spiffe://example.org", "trust_domain": "other.org"},
        {"token_type": "jwt-svid", "issuer": "spiffe://bad..id/x/../y"},
        {
            "token_type": "jwt-svid",
            "issuer": "spiffe://example.org/../y",
            "trust_domain": "example.org",
        },
        {"trust_domain": "example.org"},  # only meaningful for jwt-svid
        {"token_type": "JWT"},
    ],
)
def test_profile_configuration_errors(settings: dict[str, Any]) -> None:
    options: dict[str, Any] = {"issuer": ISSUER, "audience": AUDIENCE}
    options.update(settings)
    with pytest.raises(ConfigurationError):
        ClaimsValidator(**options)


def test_at_jwt_profile(check: Any) -> None:
    good = claims(client_id="client-1")
    check(good, token_type="at+jwt")
    for missing in ("client_id", "iat", "jti", "sub"):
        values = {k: v for k, v in good.items() if k != missing}
        with pytest.raises(MissingClaim, match=missing):
            check(values, token_type="at+jwt")


def test_profiles_are_mutually_exclusive_end_to_end(es256: PrivateJWK, clock: FixedClock) -> None:
    at = mint(es256, claims(client_id="c"), {"alg": "ES256", "kid": es256.kid, "typ": "at+jwt"})
    svid = mint(es256, claims(sub="spiffe://example.org/x"))
    common: dict[str, Any] = {
        "audience": AUDIENCE,
        "keys": es256.public(),
        "algorithms": ["ES256"],
        "clock": clock,
    }
    at_verifier = TokenVerifier(issuer=ISSUER, token_type="at+jwt", **common)
    svid_verifier = TokenVerifier(
        issuer=ISSUER, token_type="jwt-svid", trust_domain="example.org", **common
    )
    generic = TokenVerifier(issuer=ISSUER, **common)
    assert at_verifier.verify(at).client_id == "c"
    assert svid_verifier.verify(svid).subject == "spiffe://example.org/x"
    assert generic.verify(svid)
    from zerotrust.errors import InvalidTokenType

    for verifier, token in ((svid_verifier, at), (generic, at), (at_verifier, svid)):
        with pytest.raises(InvalidTokenType):
            verifier.verify(token)


# --- the two steps apart: step 2 applies the profile's header rules too -----------------------


def _signed(
    key: PrivateJWK, values: dict[str, Any], step1: str | None = None, **header: Any
) -> Any:
    """Step 1 under the ``step1`` profile, allowing the key's algorithm."""
    token = mint(key, values, {"alg": key.algorithm, "kid": key.kid, **header})
    verifier = SignatureVerifier(keys=key.public(), algorithms=[key.algorithm], token_type=step1)
    return verifier.verify(token)


@pytest.mark.parametrize("typ", [{"typ": "JWT"}, {}, {"typ": "application/jwt"}])
def test_step_two_at_jwt_needs_the_at_jwt_typ(
    es256: PrivateJWK, clock: FixedClock, typ: dict[str, str]
) -> None:
    """RFC 9068 4: the resource server MUST reject any other ``typ``, whatever step 1 ran."""
    signed = _signed(es256, claims(client_id="c"), **typ)
    with pytest.raises(InvalidTokenType):
        validate_claims(signed, issuer=ISSUER, audience=AUDIENCE, token_type="at+jwt", clock=clock)
    validator = ClaimsValidator(issuer=ISSUER, audience=AUDIENCE, token_type="at+jwt", clock=clock)
    with pytest.raises(InvalidTokenType):
        validator.validate(signed)
    good = _signed(es256, claims(client_id="c"), "at+jwt", typ="application/AT+JWT")
    assert validator.validate(good).client_id == "c"


def test_step_two_generic_refuses_an_at_jwt(es256: PrivateJWK, clock: FixedClock) -> None:
    signed = _signed(es256, claims(client_id="c"), "at+jwt", typ="at+jwt")
    with pytest.raises(InvalidTokenType):
        validate_claims(signed, issuer=ISSUER, audience=AUDIENCE, clock=clock)


def _jwt_svid_settings(clock: FixedClock) -> dict[str, Any]:
    """Claims settings of the JWT-SVID profile for the ``example.org`` trust domain."""
    return {
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "token_type": "jwt-svid",
        "trust_domain": "example.org",
        "clock": clock,
    }


def test_step_two_jwt_svid_refuses_what_jwt_svids_may_not_be(
    es256: PrivateJWK, eddsa: PrivateJWK, clock: FixedClock
) -> None:
    """JWT-SVID 2.1: RS*, ES* or PS* only; and no ``typ`` of another profile."""
    svid = claims(sub="spiffe://example.org/ns/a")
    settings = _jwt_svid_settings(clock)
    with pytest.raises(AlgorithmNotAllowed):
        validate_claims(_signed(eddsa, svid, typ="JWT"), **settings)
    with pytest.raises(AlgorithmNotAllowed):
        ClaimsValidator(**settings).validate(_signed(eddsa, svid))
    at_jwt = _signed(es256, {**svid, "client_id": "c"}, "at+jwt", typ="at+jwt")
    with pytest.raises(InvalidTokenType):
        validate_claims(at_jwt, **settings)
    for typ in ("JWT", "JOSE", "application/jose"):
        signed = _signed(es256, svid, "jwt-svid", typ=typ)
        assert validate_claims(signed, **settings).subject == svid["sub"]


@pytest.mark.parametrize(
    "extra",
    [
        {"cty": "text/plain"},
        {"x5t": "AAAA"},
        {"jku": "https://keys.example/jwks"},
        {"jwk": {"kty": "EC"}},
        {"b64": True},
        {"nonce": "private"},
        {"crit": ["exp"], "exp": 1},
    ],
)
def test_a_jwt_svid_carries_no_header_besides_alg_kid_and_typ(
    es256: PrivateJWK, clock: FixedClock, extra: dict[str, Any]
) -> None:
    """JWT-SVID 2: "Any header not described here, registered or private, MUST NOT be
    included". Refused by step 1 under the profile, and by step 2 after a generic step 1."""
    svid = claims(sub="spiffe://example.org/ns/a")
    settings = _jwt_svid_settings(clock)
    critical = list(extra.get("crit", ()))
    token = mint(es256, svid, {"alg": "ES256", "kid": es256.kid, "typ": "JWT", **extra})
    generic = SignatureVerifier(keys=es256.public(), algorithms=["ES256"], critical=critical)
    signed = generic.verify(token)  # a generic JWT may carry it
    with pytest.raises(MalformedToken, match="only 'alg', 'kid' and 'typ'"):
        validate_claims(signed, **settings)
    profile = SignatureVerifier(keys=es256.public(), algorithms=["ES256"], token_type="jwt-svid")
    with pytest.raises((MalformedToken, UnsupportedTokenFeature)):
        profile.verify(token)
    verifier = TokenVerifier(keys=es256.public(), algorithms=["ES256"], **settings)
    with pytest.raises((MalformedToken, UnsupportedTokenFeature)):
        verifier.verify(token)
    # alg, kid and typ alone, and each of kid and typ left out, are a JWT-SVID's header
    for header in ({"kid": es256.kid, "typ": "JOSE"}, {"kid": es256.kid}, {"typ": "JWT"}, {}):
        plain = mint(es256, svid, {"alg": "ES256", **header})
        assert verifier.verify(plain).subject == svid["sub"]


def test_a_jwt_svid_verifier_understands_no_critical_header() -> None:
    key = PrivateJWK.generate("ES256")
    with pytest.raises(ConfigurationError, match="no 'crit'"):
        SignatureVerifier(
            keys=key.public(), algorithms=["ES256"], token_type="jwt-svid", critical=["x"]
        )
    SignatureVerifier(keys=key.public(), algorithms=["ES256"], token_type="jwt-svid", critical=[])


def test_step_two_through_the_verifier_agrees_with_verify(
    es256: PrivateJWK, clock: FixedClock
) -> None:
    verifier = TokenVerifier(
        issuer=ISSUER,
        audience=AUDIENCE,
        keys=es256.public(),
        algorithms=["ES256"],
        token_type="at+jwt",
        clock=clock,
    )
    signed = _signed(es256, claims(client_id="c"), typ="JWT")
    with pytest.raises(InvalidTokenType):
        verifier.validate_claims(signed)


# --- configuration -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [
        {"issuer": ""},
        {"issuer": None},
        {"audience": ""},
        {"audience": []},
        {"audience": ["a", ""]},
        {"audience": b"aud"},
        {"audience": 5},
        {"leeway": -1},
        {"leeway": 601},
        {"leeway": "60"},
        {"leeway": True},
        {"max_lifetime": 0},
        {"max_lifetime": -1},
        {"max_lifetime": True},
        {"max_lifetime": math.inf},
        {"max_lifetime": "1"},
        {"required_claims": "sub"},
        {"required_claims": [""]},
        {"required_claims": [5]},
        {"required_claims": None},
        {"issuer": 5},
        {"issuer": b"https://issuer.example"},
        {"clock": object()},
    ],
)
def test_validator_configuration_errors(settings: dict[str, Any]) -> None:
    options: dict[str, Any] = {"issuer": ISSUER, "audience": AUDIENCE}
    options.update(settings)
    with pytest.raises(ConfigurationError):
        ClaimsValidator(**options)


def test_the_largest_leeway_is_accepted(check: Any) -> None:
    check(claims(), at=T0 + 300 + 599, leeway=600)
    with pytest.raises(TokenExpired):
        check(claims(), at=T0 + 300 + 600, leeway=600)


def test_validate_claims_one_shot_allows_a_minute_of_leeway(
    es256: PrivateJWK, clock: FixedClock
) -> None:
    signed = SignatureVerifier(keys=es256.public(), algorithms=["ES256"]).verify(
        mint(es256, claims())
    )
    clock.set(NOW + dt.timedelta(seconds=300 + 59))
    validate_claims(signed, issuer=ISSUER, audience=AUDIENCE, clock=clock)
    clock.set(NOW + dt.timedelta(seconds=300 + 60))
    with pytest.raises(TokenExpired):
        validate_claims(signed, issuer=ISSUER, audience=AUDIENCE, clock=clock)


def test_validate_claims_one_shot(es256: PrivateJWK, clock: FixedClock) -> None:
    signed = SignatureVerifier(keys=es256.public(), algorithms=["ES256"]).verify(
        mint(es256, claims())
    )
    token = validate_claims(signed, issuer=ISSUER, audience=AUDIENCE, clock=clock)
    assert token.expires_at.timestamp() == T0 + 300
    clock.set(NOW.replace(year=2030))
    with pytest.raises(TokenExpired):
        validate_claims(signed, issuer=ISSUER, audience=AUDIENCE, clock=clock)
    validator = ClaimsValidator(issuer=ISSUER, audience=[AUDIENCE, "b"], clock=clock)
    assert validator.issuer == ISSUER
    assert validator.audiences == {AUDIENCE, "b"}
    assert validator.trust_domain is None
    assert validator.any_trust_domain is False


def test_jwt_svid_without_issuer_is_bound_to_the_trust_domain() -> None:
    """SPIRE issues JWT-SVIDs without ``iss`` unless configured: the trust domain binds them."""
    from zerotrust import TokenIssuer, TokenVerifier
    from zerotrust.errors import ConfigurationError, InvalidClaim, TokenError
    from zerotrust.tokens import PrivateJWK

    key = PrivateJWK.generate("ES256", kid="k")
    minted = TokenIssuer(key, issuer="https://spire.example")
    verifier = TokenVerifier(
        issuer=None,
        audience="api",
        keys=key.public(),
        algorithms=["ES256"],
        token_type="jwt-svid",
        trust_domain="example.org",
    )
    good = minted.issue(subject="spiffe://example.org/web", audience="api", token_type="jwt-svid")
    token = verifier.verify(good)
    assert token.issuer == "https://spire.example"
    with pytest.raises(TokenError):
        verifier.verify(
            minted.issue(subject="spiffe://other.org/web", audience="api", token_type="jwt-svid")
        )
    with pytest.raises(ConfigurationError):
        TokenVerifier(issuer=None, audience="api", keys=key.public(), algorithms=["ES256"])
    with pytest.raises(ConfigurationError):
        TokenVerifier(
            issuer=None,
            audience="api",
            keys=key.public(),
            algorithms=["ES256"],
            token_type="jwt-svid",
        )
    from zerotrust.tokens import ClaimsValidator

    validator = ClaimsValidator(
        issuer=None, audience="api", token_type="jwt-svid", trust_domain="example.org"
    )
    claims = {"sub": "spiffe://example.org/x", "aud": "api", "exp": 2_000_000_000}
    validator.check(claims, 1_900_000_000)  # no iss at all: accepted for this profile
    with pytest.raises(InvalidClaim):
        validator.check({**claims, "iss": 7}, 1_900_000_000)
