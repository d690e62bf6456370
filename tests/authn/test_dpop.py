"""RFC 9449 DPoP proofs: what a proof must hold, and the request URL it is checked against,
through the Guard with every kind of request view (plain, ASGI scope, WSGI environ, gRPC)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from zerotrust import Authenticator, FixedClock, Guard, MemorySink, MemoryStore
from zerotrust.adapters._asgi_view import ScopeView
from zerotrust.adapters.wsgi import WSGIRequestView
from zerotrust.authn.binding import DPoPConfig, normalize_htu, verify_dpop_proof
from zerotrust.authn.request import Request, RequestView
from zerotrust.authz import Callers, Operations, Policy, Rule
from zerotrust.errors import (
    ConfigurationError,
    DPoPOriginUnknown,
    InvalidDPoPProof,
    MalformedCredentials,
    MalformedToken,
    TokenBindingMismatch,
)
from zerotrust.tokens import JWK, PrivateJWK, TokenIssuer, TokenVerifier
from zerotrust.tokens._b64 import b64url_encode

NOW = 1_800_000_000
ISS = "https://issuer.example"
AUD = "orders-api"
URL = "https://api.example/orders/7"


@pytest.fixture(scope="module")
def holder() -> PrivateJWK:
    return PrivateJWK.generate("ES256")


@pytest.fixture(scope="module")
def clock() -> FixedClock:
    return FixedClock(dt.datetime.fromtimestamp(NOW, tz=dt.timezone.utc))


@pytest.fixture(scope="module")
def issuer(clock: FixedClock) -> TokenIssuer:
    return TokenIssuer(PrivateJWK.generate("ES256"), issuer=ISS, clock=clock)


@pytest.fixture(scope="module")
def token(issuer: TokenIssuer, holder: PrivateJWK) -> str:
    return issuer.issue(
        subject="svc-a", audience=AUD, ttl=3600, extra_claims={"cnf": {"jkt": holder.thumbprint()}}
    )


def sign(key: PrivateJWK, header: dict[str, Any], claims: dict[str, Any]) -> str:
    segments = [b64url_encode(json.dumps(part).encode()) for part in (header, claims)]
    signing_input = ".".join(segments)
    return f"{signing_input}.{b64url_encode(key.sign(signing_input.encode()))}"


ABSENT: Any = object()


def proof(
    key: PrivateJWK,
    token: str,
    *,
    htm: str = "GET",
    htu: str = URL,
    jti: str = "p1",
    **header: Any,
) -> str:
    head = {"typ": "dpop+jwt", "alg": "ES256", "jwk": key.public().to_public_dict(), **header}
    head = {name: value for name, value in head.items() if value is not ABSENT}
    ath = b64url_encode(hashlib.sha256(token.encode()).digest())
    return sign(key, head, {"jti": jti, "htm": htm, "htu": htu, "iat": NOW, "ath": ath})


def check(
    proof_: str,
    token: str,
    *,
    method: str = "GET",
    url: str = URL,
    config: DPoPConfig = DPoPConfig(),  # noqa: B008 - immutable value
) -> str:
    return verify_dpop_proof(
        proof_, method=method, url=url, access_token=token, config=config, now=NOW
    ).jkt


# --- the proof ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "typ", ["dpop+jwt", "DPoP+JWT", "application/dpop+jwt", "Application/DPoP+jwt"]
)
def test_typ_is_a_media_type(holder: PrivateJWK, token: str, typ: str) -> None:
    """RFC 7515 4.1.9: case-insensitive, and ``application/`` may be written or left out."""
    assert check(proof(holder, token, typ=typ), token) == holder.thumbprint()


@pytest.mark.parametrize(
    ("typ", "error"),
    [
        ("JWT", InvalidDPoPProof),
        ("at+jwt", InvalidDPoPProof),
        ("application/dpop+jwt+x", InvalidDPoPProof),
        (ABSENT, InvalidDPoPProof),
        (1, InvalidDPoPProof),
    ],
)
def test_other_typ_values_are_refused(
    holder: PrivateJWK, token: str, typ: object, error: type[Exception]
) -> None:
    with pytest.raises(error):
        check(proof(holder, token, typ=typ), token)


@pytest.mark.parametrize(("htm", "method"), [("get", "GET"), ("GET", "get"), ("GET", "POST")])
def test_htm_is_compared_case_sensitively(
    holder: PrivateJWK, token: str, htm: str, method: str
) -> None:
    """RFC 9110 9.1: methods are case-sensitive; ``get`` is not ``GET``."""
    with pytest.raises(InvalidDPoPProof, match="htm"):
        check(proof(holder, token, htm=htm), token, method=method)


@pytest.mark.parametrize(
    ("htu", "url"),
    [
        (URL, URL),
        (URL + "?a=1#f", URL),
        (URL, URL + "?a=1"),
        ("HTTPS://API.EXAMPLE/orders/7", URL),
        ("https://api.example:443/orders/7", URL),
        ("https://api.example:/orders/7", URL),
        ("http://api.example:80/orders/7", "http://api.example/orders/7"),
        ("https://api.example/orders/%37", URL),
        ("https://api.example/%6Frders/7", URL),
        ("https://api.example/orders/./7", URL),
        ("https://api.example/a/../orders/7", URL),
        ("https://api.example/a/b/../../orders/7/.", "https://api.example/orders/7/"),
        ("https://api.example/../orders/7", URL),
        ("https://api.example/orders/%2e/7", URL),
        ("https://api.example/caf%c3%a9", "https://api.example/caf%C3%A9"),
        ("https://api.example/a%2fb", "https://api.example/a%2Fb"),
        ("https://%61pi.example/orders/7", URL),
        ("https://api.example", "https://api.example/"),
        ("https://[::1]/x", "https://[::1]:443/x"),
        ("https://[FE80::1]:8443/x", "https://[fe80::1]:8443/x"),
        ("https://127.0.0.1:8443/x", "https://127.0.0.1:8443/x"),
    ],
)
def test_htu_is_compared_after_syntax_based_normalisation(
    holder: PrivateJWK, token: str, htu: str, url: str
) -> None:
    """RFC 9449 4.3 with RFC 3986 6.2.2 on both sides: case, percent-encoding, dot segments,
    the default port; query and fragment are not part of the comparison."""
    assert check(proof(holder, token, htu=htu), token, url=url) == holder.thumbprint()


@pytest.mark.parametrize(
    ("htu", "url"),
    [
        ("https://api.example/admin", "https://api.example/orders/../admin"),
        ("https://api.example/orders/../admin", "https://api.example/orders/../admin"),
        ("https://api.example/admin", "https://api.example/orders/%2E%2E/admin"),
        ("https://api.example/orders/7", "https://api.example/orders/./7"),
    ],
)
def test_a_request_path_with_dot_segments_matches_no_proof(
    holder: PrivateJWK, token: str, htu: str, url: str
) -> None:
    """The application routes the path as sent (``/orders/{id}/admin`` matches
    ``/orders/../admin``): a proof for ``/admin`` must not be usable there."""
    with pytest.raises(InvalidDPoPProof, match="htu"):
        check(proof(holder, token, htu=htu), token, url=url)


@pytest.mark.parametrize(
    "htu",
    [
        "https://api.example:8443/orders/7",
        "http://api.example/orders/7",
        "https://api.example/ORDERS/7",
        "https://api.example/orders/7/",
        "https://api.example/orders%2f7",
        "https://api.example/orders/7;p=1",
        "https://evil.example/orders/7",
        "https://api.example.evil/orders/7",
        "https://api.example./orders/7",
    ],
)
def test_htu_naming_another_url_is_refused(holder: PrivateJWK, token: str, htu: str) -> None:
    with pytest.raises(InvalidDPoPProof, match="htu"):
        check(proof(holder, token, htu=htu), token)


@pytest.mark.parametrize(
    "htu",
    [
        "https://user:pw@api.example/orders/7",  # RFC 9110 4.2.4: userinfo is an error
        "//api.example/orders/7",
        "/orders/7",
        "ftp://api.example/orders/7",
        "https://api.example:99999/orders/7",
        "https://api.example:8x/orders/7",
        "https:///orders/7",
        "https://api example/orders/7",
        "https://api.example/orders/7 ",
        "https://api.example/orders/%zz",
        "https://api.example\\@evil.example/orders/7",
        "https://[::1%25eth0]/x",
        "https://[not-ip]/x",
        "https://[1::2::3]/x",
        "https://api.example/caf\u00e9",
    ],
)
def test_htu_that_is_not_an_http_url_is_malformed(holder: PrivateJWK, token: str, htu: str) -> None:
    # refused as malformed, not merely as naming another URL
    with pytest.raises(InvalidDPoPProof, match="htu is not an http"):
        check(proof(holder, token, htu=htu), token)


def test_normalize_htu() -> None:
    assert normalize_htu("HTTPS://Api.Example:443/a/./b/../%63?q#f") == "https://api.example/a/c"
    assert normalize_htu("http://[::1]:8080") == "http://[::1]:8080/"
    # RFC 3986 5.2.4: a final dot segment leaves the path ending in "/"
    assert normalize_htu("https://a.example/a/b/..") == "https://a.example/a/"
    assert normalize_htu("https://a.example/a/b/.") == "https://a.example/a/b/"
    assert normalize_htu("https://[V1.Fe:x]/") == "https://[v1.fe:x]/"  # RFC 3986 IPvFuture
    with pytest.raises(MalformedToken):
        normalize_htu("https://user@api.example/")
    longest = "a" * 1024  # a host (and port) of at most 1024 characters
    assert normalize_htu(f"https://{longest}/") == f"https://{longest}/"
    with pytest.raises(MalformedToken):
        normalize_htu(f"https://{longest}a/")


def test_a_non_ascii_access_token_or_proof_is_a_typed_error(holder: PrivateJWK, token: str) -> None:
    with pytest.raises(MalformedToken, match="access token"):
        check(proof(holder, token), "t\u00e9")
    with pytest.raises(MalformedToken, match="access token"):
        check(proof(holder, token), token.encode())  # type: ignore[arg-type]
    with pytest.raises(InvalidDPoPProof):
        check(b"not.a.string", token)  # type: ignore[arg-type]
    with pytest.raises(InvalidDPoPProof, match="not a compact JWS"):
        check(proof(holder, token) + "\u00e9", token)


@pytest.mark.parametrize(
    "jwk",
    [
        {"kty": "K" * 40},
        {"kty": "EC", "crv": "C" * 40, "x": "AAAA", "y": "AAAA"},
        {"kty": "OKP", "crv": "C" * 40, "x": "AAAA"},
        {"kty": "EC", "crv": "P-256", "alg": "A" * 40},
    ],
)
def test_refusals_do_not_repeat_the_proof(holder: PrivateJWK, token: str, jwk: Any) -> None:
    if "alg" in jwk:
        jwk = {**holder.public().to_public_dict(), "alg": jwk["alg"]}
    with pytest.raises(InvalidDPoPProof) as info:
        check(proof(holder, token, jwk=jwk), token)
    assert "K" * 8 not in str(info.value) and "C" * 8 not in str(info.value)
    assert "A" * 8 not in str(info.value) and "unusable" in str(info.value)


def claims_proof(key: PrivateJWK, token: str, **changes: Any) -> str:
    """A proof of ``GET URL`` for ``token``, its claims changed (``ABSENT`` drops one)."""
    ath = b64url_encode(hashlib.sha256(token.encode()).digest())
    claims = {"jti": "p1", "htm": "GET", "htu": URL, "iat": NOW, "ath": ath, **changes}
    head = {"typ": "dpop+jwt", "alg": "ES256", "jwk": key.public().to_public_dict()}
    return sign(key, head, {name: value for name, value in claims.items() if value is not ABSENT})


WINDOW = DPoPConfig(max_age=60, leeway=5)


@pytest.mark.parametrize(
    ("config", "iat", "accepted"),
    [
        (WINDOW, NOW + 5, True),  # leeway into the future, inclusive
        (WINDOW, NOW + 5.5, False),
        (WINDOW, NOW + 6, False),
        (WINDOW, NOW - 65, True),  # max_age + leeway into the past, inclusive
        (WINDOW, NOW - 65.5, False),
        (WINDOW, NOW - 66, False),
        (WINDOW, NOW - 30.25, True),  # a fractional NumericDate
        (DPoPConfig(), NOW + 5, True),  # by default: 300 s of max_age and 5 s of leeway
        (DPoPConfig(), NOW + 5.5, False),
        (DPoPConfig(), NOW - 305, True),
        (DPoPConfig(), NOW - 305.5, False),
    ],
)
def test_iat_window_is_max_age_and_leeway_inclusive(
    holder: PrivateJWK, token: str, config: DPoPConfig, iat: float, accepted: bool
) -> None:
    # RFC 9449 11.1: a proof is accepted only within a window around its creation time
    presented = claims_proof(holder, token, iat=iat)
    if accepted:
        assert check(presented, token, config=config) == holder.thumbprint()
    else:
        with pytest.raises(InvalidDPoPProof, match="outside the accepted window"):
            check(presented, token, config=config)


@pytest.mark.parametrize(
    "iat",
    [ABSENT, None, str(NOW), [NOW], True, 10**15, -(10**15), 10**400],
    ids=["absent", "null", "string", "array", "bool", "huge", "huge-negative", "beyond-float"],
)
def test_an_iat_that_is_not_a_number_is_refused(holder: PrivateJWK, token: str, iat: Any) -> None:
    with pytest.raises(InvalidDPoPProof, match="iat is not a number"):
        check(claims_proof(holder, token, iat=iat), token)


@pytest.mark.parametrize("claim", ["jti", "htm", "htu"])
@pytest.mark.parametrize("value", [ABSENT, "", 7, None], ids=["absent", "empty", "number", "null"])
def test_required_string_claims_are_refused_when_missing_or_not_strings(
    holder: PrivateJWK, token: str, claim: str, value: Any
) -> None:
    with pytest.raises(InvalidDPoPProof, match=f"no valid '{claim}'"):
        check(claims_proof(holder, token, **{claim: value}), token)


def test_a_jti_is_at_most_256_characters(holder: PrivateJWK, token: str) -> None:
    assert check(claims_proof(holder, token, jti="j" * 256), token) == holder.thumbprint()
    with pytest.raises(InvalidDPoPProof, match="no valid 'jti'"):
        check(claims_proof(holder, token, jti="j" * 257), token)


@pytest.mark.parametrize(
    "ath",
    [
        ABSENT,
        None,
        7,
        "",
        b64url_encode(hashlib.sha256(b"another token").digest()),
        b64url_encode(hashlib.sha256(b"another token").digest()) + "=",
    ],
    ids=["absent", "null", "number", "empty", "other-token", "padded"],
)
def test_ath_must_be_the_hash_of_the_presented_token(
    holder: PrivateJWK, token: str, ath: Any
) -> None:
    # RFC 9449 4.3 and 7: with an access token, ath is its base64url SHA-256, compared exactly
    with pytest.raises(InvalidDPoPProof, match="ath does not match"):
        check(claims_proof(holder, token, ath=ath), token)


def test_without_an_access_token_no_ath_is_required(holder: PrivateJWK, token: str) -> None:
    # a proof sent to a token endpoint (RFC 9449 5) carries no ath
    verified = verify_dpop_proof(
        claims_proof(holder, token, ath=ABSENT),
        method="GET",
        url=URL,
        access_token=None,
        config=DPoPConfig(),
        now=NOW,
    )
    assert (verified.jkt, verified.jti, verified.iat) == (holder.thumbprint(), "p1", float(NOW))


def test_only_the_configured_algorithms_are_accepted(token: str) -> None:
    ed = PrivateJWK.generate("EdDSA")
    signed = proof(ed, token, alg="EdDSA")
    assert check(signed, token) == ed.thumbprint()
    with pytest.raises(InvalidDPoPProof, match="algorithm not accepted"):
        check(signed, token, config=DPoPConfig(algorithms=["ES256"]))


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ({"alg": ABSENT}, "algorithm not accepted"),
        ({"alg": "none"}, "algorithm not accepted"),
        ({"alg": ["ES256"]}, "algorithm not accepted"),
        ({"crit": ["exp"]}, "crit is refused"),  # RFC 7515 4.1.11: no extension is understood
        ({"crit": []}, "crit is refused"),
        ({"b64": False}, "unencoded payload"),  # RFC 7797: the payload would be the segment
        ({"b64": None}, "unencoded payload"),
        ({"zip": "DEF"}, "compressed or encrypted"),
        ({"enc": "A256GCM"}, "compressed or encrypted"),
        ({"jwk": ABSENT}, "no jwk header"),
        ({"jwk": "eyJrdHkiOiJFQyJ9"}, "no jwk header"),
        ({"jwk": [{"kty": "EC"}]}, "no jwk header"),
    ],
    ids=repr,
)
def test_proof_headers_that_are_refused(
    holder: PrivateJWK, token: str, header: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidDPoPProof, match=message):
        check(proof(holder, token, **header), token)


def test_a_proof_must_be_a_canonical_compact_jws(holder: PrivateJWK, token: str) -> None:
    valid = proof(holder, token)
    head, body, sig = valid.split(".")
    # an ES256 signature is 64 bytes: its last base64url character carries 4 unused bits
    last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".index(sig[-1])
    respelt = (
        sig[:-1] + "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[last | 1]
    )
    for refused in (f"{head}.{body}.{respelt}", f"{head}.{body}", f"{valid}.{sig}", f"{valid}="):
        with pytest.raises(InvalidDPoPProof, match="not a compact JWS"):
            check(refused, token)
    not_json = b64url_encode(b"{not json")
    for refused in (f"{not_json}.{body}.{sig}", f"{head}.{not_json}.{sig}"):
        with pytest.raises(InvalidDPoPProof, match="not valid JSON"):
            check(refused, token)


def test_a_proof_is_at_most_8192_bytes(holder: PrivateJWK, token: str) -> None:
    ath = b64url_encode(hashlib.sha256(token.encode()).digest())
    claims = {"jti": "p1", "htm": "GET", "htu": URL, "iat": NOW, "ath": ath}
    by_size = {}
    for pad in range(5600, 5750):
        for extra in ("", "x"):  # a header member: every total length is reached
            head = {"typ": "dpop+jwt", "alg": "ES256", "jwk": holder.public().to_public_dict()}
            signed = sign(holder, {**head, "x": extra}, {**claims, "pad": "p" * pad})
            by_size.setdefault(len(signed), signed)
    assert check(by_size[8192], token) == holder.thumbprint()
    with pytest.raises(InvalidDPoPProof, match="too large"):
        check(by_size[8193], token)


# --- the service's origins ---------------------------------------------------------------------


def test_an_origin_may_carry_the_prefix_a_proxy_strips(holder: PrivateJWK, token: str) -> None:
    """Clients call https://gateway.example/orders/7; the proxy forwards it as /7."""
    config = DPoPConfig(origins=["https://gateway.example/orders/", "https://api.example"])
    assert config.origins == ("https://gateway.example/orders", "https://api.example")
    signed = proof(holder, token, htu="https://gateway.example/orders/7")
    assert check(signed, token, url="/7", config=config) == holder.thumbprint()
    for htu in ("https://gateway.example/7", "https://api.example/orders/7"):
        with pytest.raises(InvalidDPoPProof, match="htu"):
            check(proof(holder, token, htu=htu, jti=htu), token, url="/7", config=config)


def test_origins_are_validated_and_normalised() -> None:
    config = DPoPConfig(origins=["HTTPS://API.Example:443", "http://[::1]:8080", "https://a.b:80"])
    assert config.origins == ("https://api.example", "http://[::1]:8080", "https://a.b:80")
    assert DPoPConfig().origins == ()
    assert DPoPConfig(origins=["https://a.example/XLSX/"]).origins == ("https://a.example/XLSX",)
    assert DPoPConfig(origins=("https://a.example", "https://A.example")).origins == (
        "https://a.example",
    )


def test_origin_limits_are_inclusive() -> None:
    many = [f"https://a{n}.example" for n in range(64)]
    assert len(DPoPConfig(origins=many).origins) == 64
    assert DPoPConfig(origins=["https://a.example:65535"]).origins == ("https://a.example:65535",)


def test_lists_given_are_kept_as_tuples() -> None:
    """Sequences in (what the docs write), tuples kept: the frozen config stays hashable."""
    config = DPoPConfig(algorithms=["ES256", "EdDSA"], origins=["https://api.example"])
    assert config.algorithms == ("ES256", "EdDSA")
    assert config.origins == ("https://api.example",)
    assert hash(config) == hash(DPoPConfig(algorithms=("ES256", "EdDSA"), origins=config.origins))
    with pytest.raises(ConfigurationError):
        DPoPConfig(algorithms="ES256")  # a string, not a list of them


@pytest.mark.parametrize(
    "settings",
    [
        {"algorithms": []},
        {"algorithms": ["HS256"]},
        {"algorithms": ["ES256", "none"]},
        {"algorithms": "ES256"},
        {"algorithms": None},
        {"max_age": 0},
        {"max_age": -1},
        {"max_age": 3600.5},
        {"leeway": -0.5},
        {"leeway": 300.5},
        {"max_age": "300"},  # a value read from the environment, say
        {"leeway": None},
        {"max_age": True},
        {"leeway": False},
    ],
    ids=repr,
)
def test_invalid_dpop_settings_are_configuration_errors(settings: dict[str, Any]) -> None:
    # RFC 9449 3.1 and RFC 8725 3.1: proofs are signed with asymmetric keys; the iat window
    # (max_age and leeway) is bounded
    with pytest.raises(ConfigurationError, match="DPoP"):
        DPoPConfig(**settings)


def test_dpop_window_bounds_are_inclusive() -> None:
    assert DPoPConfig(max_age=3600, leeway=300).max_age == 3600
    assert DPoPConfig(max_age=0.5, leeway=0).leeway == 0


@pytest.mark.parametrize(
    "origins",
    [
        "https://api.example",  # a string, not a list of them
        None,
        {"https://api.example": 1},
        ["https://api.example/v1/../v2"],
        ["https://api.example?x"],
        ["https://api.example#x"],
        ["https://user@api.example"],
        ["ftp://api.example"],
        ["api.example"],
        ["https://api.example:65536"],
        ["https://"],
        [5],
        ["https://a.example"] * 65,
        ["https://api.example/a b"],
        ["https://api.example/caf\u00e9"],
        ["https://[not-ip]"],
    ],
)
def test_invalid_origins_are_configuration_errors(origins: Any) -> None:
    with pytest.raises(ConfigurationError):
        DPoPConfig(origins=origins)


def test_with_origins_a_hash_in_the_request_path_is_malformed(
    holder: PrivateJWK, token: str
) -> None:
    # RFC 9112 3.2: a request target holds no fragment; "#" is never where the path ends
    config = DPoPConfig(origins=["https://api.example"])
    for url in ("/orders/7#/x", "/orders/7?q#x"):
        with pytest.raises(MalformedCredentials, match="'#'"):
            check(proof(holder, token), token, url=url, config=config)


def test_with_origins_only_the_path_of_the_url_counts(holder: PrivateJWK, token: str) -> None:
    config = DPoPConfig(origins=("https://api.example", "https://api.example:8443"))
    for htu in (URL, "https://api.example:8443/orders/7"):
        signed = proof(holder, token, htu=htu)
        assert check(signed, token, url="/orders/7?x=1", config=config) == holder.thumbprint()
        # the origin the server pieced together from the request is not used
        assert check(signed, token, url="http://10.0.0.1:8080/orders/7", config=config)
    with pytest.raises(InvalidDPoPProof, match="htu"):
        check(proof(holder, token, htu="https://other.example/orders/7"), token, config=config)
    with pytest.raises(InvalidDPoPProof, match="htu"):
        check(proof(holder, token), token, url="/orders/8", config=config)


@pytest.mark.parametrize(
    "url", ["/orders/7", "api.example/orders/7", "https://a b/orders/7", URL + "#f", URL + "?q#f"]
)
def test_a_url_that_is_not_one_is_malformed(holder: PrivateJWK, token: str, url: str) -> None:
    """Without configured origins the server's URL must be absolute (a path alone is not)."""
    with pytest.raises(MalformedCredentials):
        check(proof(holder, token), token, url=url)


# --- through the Guard -------------------------------------------------------------------------


def guard(issuer: TokenIssuer, clock: FixedClock, **dpop: Any) -> Guard:
    verifier = TokenVerifier(
        issuer=ISS, audience=AUD, keys=issuer.jwks(), algorithms=["ES256"], clock=clock
    )
    policy = Policy(
        [
            Rule(
                id="any",
                callers=[Callers(not_subjects=["nobody"])],
                operations=[Operations(methods=["GET", "POST"])],
            )
        ]
    )
    return Guard(
        authenticator=Authenticator(tokens=verifier, clock=clock, dpop=DPoPConfig(**dpop)),
        policy=policy,
        audit=MemorySink(),
        store=MemoryStore(clock=clock),
        service="orders",
        clock=clock,
    )


def plain(host: str | None, path: str, headers: dict[str, str]) -> RequestView:
    return Request(method="GET", path=path, host=host, headers=headers)


def asgi(host: str | None, path: str, headers: dict[str, str]) -> RequestView:
    """The scope uvicorn builds: the target in raw_path, the Host header as received."""
    items = [(k.encode(), v.encode()) for k, v in headers.items()]
    if host is not None:
        items.append((b"host", host.encode("latin-1")))
    scope = {
        "type": "http",
        "method": "GET",
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": items,
        "client": ("203.0.113.9", 5555),
    }
    return ScopeView(scope, None)


def wsgi(host: str | None, path: str, headers: dict[str, str]) -> RequestView:
    environ = {
        "REQUEST_METHOD": "GET",
        "wsgi.url_scheme": "https",
        "PATH_INFO": path,
        "RAW_URI": path,
        "REMOTE_ADDR": "203.0.113.9",
        **{f"HTTP_{k.upper()}": v for k, v in headers.items()},
    }
    if host is not None:
        environ["HTTP_HOST"] = host
    return WSGIRequestView(environ)


VIEWS = pytest.mark.parametrize("view", [plain, asgi, wsgi], ids=["Request", "ASGI", "WSGI"])


def code(outcome: Any) -> str:
    return "allowed" if outcome.allowed else f"{outcome.status} {outcome.error.code}"


def headers(token: str, proof_: str) -> dict[str, str]:
    return {"authorization": f"DPoP {token}", "dpop": proof_}


@VIEWS
@pytest.mark.parametrize(
    "host",
    [
        "api.example/orders/7#",
        "api.example/orders/7?",
        "api.example/orders/7#x",
        "api.example/orders/7",
        "evil@api.example",
        "api.example\\orders",
        "api.example orders",
        "api.example\t",
        "api.example:99999",
        "api.example:443x",
        "api.example,other.example",  # two Host headers, joined by a WSGI server
        "other.example,api.example",
        "[::1",
        "[::1%25lo]",
        "caf\u00e9.example",
        "a" * 1025,
    ],
)
def test_a_host_that_is_not_one_is_refused(
    issuer: TokenIssuer, clock: FixedClock, holder: PrivateJWK, token: str, view: Any, host: str
) -> None:
    """A proof for /orders/7 used on /admin/export: a Host of ``api.example/orders/7#`` once
    made the server's URL ``https://api.example/orders/7#/admin/export``."""
    request = view(host, "/admin/export", headers(token, proof(holder, token, jti=host)))
    outcome = guard(issuer, clock).evaluate(request)
    assert code(outcome) == "400 malformed_credentials"
    assert outcome.www_authenticate == (
        'DPoP realm="orders", algs="ES256 ES384 EdDSA PS256 RS256", error="invalid_request"'
    )


@VIEWS
@pytest.mark.parametrize(
    ("host", "htu"),
    [
        ("api.example", URL),
        ("API.example:443", URL),
        ("api.example:", URL),
        ("api.example:8443", "https://api.example:8443/orders/7"),
        ("[::1]:8443", "https://[::1]:8443/orders/7"),
        ("127.0.0.1", "https://127.0.0.1/orders/7"),
    ],
)
def test_a_valid_host_names_the_origin(
    issuer: TokenIssuer,
    clock: FixedClock,
    holder: PrivateJWK,
    token: str,
    view: Any,
    host: str,
    htu: str,
) -> None:
    g = guard(issuer, clock)
    signed = proof(holder, token, htu=htu)
    assert code(g.evaluate(view(host, "/orders/7", headers(token, signed)))) == "allowed"
    other = view(host, "/admin/export", headers(token, proof(holder, token, htu=htu, jti="p2")))
    assert code(g.evaluate(other)) == "401 invalid_dpop_proof"


@VIEWS
@pytest.mark.parametrize("path", ["/orders/7/../../admin", "/orders/%2e%2E/admin", "/./admin"])
def test_dot_segments_in_the_request_path_are_not_resolved(
    issuer: TokenIssuer, clock: FixedClock, holder: PrivateJWK, token: str, view: Any, path: str
) -> None:
    signed = proof(holder, token, htu="https://api.example/admin")
    outcome = guard(issuer, clock).evaluate(view("api.example", path, headers(token, signed)))
    assert code(outcome) == "401 invalid_dpop_proof"


@VIEWS
def test_configured_origins_replace_the_host_header(
    issuer: TokenIssuer, clock: FixedClock, holder: PrivateJWK, token: str, view: Any
) -> None:
    g = guard(issuer, clock, origins=["https://api.example"])
    ok = g.evaluate(view("10.0.0.1:8080", "/orders/7", headers(token, proof(holder, token))))
    assert code(ok) == "allowed"
    # a Host header that is not one does not matter: it is not read
    signed = proof(holder, token, jti="p2")
    garbled = view("api.example/orders/7#", "/orders/7", headers(token, signed))
    assert code(g.evaluate(garbled)) == "allowed"
    signed = proof(holder, token, jti="p3")
    injected = view("api.example/orders/7#", "/admin/export", headers(token, signed))
    assert code(g.evaluate(injected)) == "401 invalid_dpop_proof"
    # a proof for another resource server the token is valid for, with a Host to match it
    elsewhere = proof(holder, token, htu="https://other-service.example/orders/7", jti="p4")
    request = view("other-service.example", "/orders/7", headers(token, elsewhere))
    assert code(g.evaluate(request)) == "401 invalid_dpop_proof"
    assert code(guard(issuer, clock).evaluate(request)) == "allowed"  # without origins


def test_a_request_without_a_host_needs_configured_origins(
    issuer: TokenIssuer, clock: FixedClock, holder: PrivateJWK, token: str
) -> None:
    """A gRPC call names no host: it is never compared with an invented one."""
    path = "/pkg.Orders/Get"

    def rpc(proof_: str) -> Request:
        return Request(
            method="POST", path=path, kind="grpc", host=None, headers=headers(token, proof_)
        )

    localhost = proof(holder, token, htm="POST", htu=f"https://localhost{path}")
    refused = guard(issuer, clock).evaluate(rpc(localhost))
    assert code(refused) == "401 dpop_origin_unknown" and refused.grpc_status == "UNAUTHENTICATED"
    assert isinstance(refused.error, DPoPOriginUnknown)
    assert isinstance(refused.error, TokenBindingMismatch)
    assert refused.error is not None and refused.error.to_dict()["error"] == "invalid_token"
    g = guard(issuer, clock, origins=["https://orders.internal:8443"])
    assert code(g.evaluate(rpc(localhost))) == "401 invalid_dpop_proof"
    good = proof(holder, token, htm="POST", htu=f"https://orders.internal:8443{path}", jti="p2")
    assert code(g.evaluate(rpc(good))) == "allowed"


def test_a_target_that_is_not_a_path_is_refused(
    issuer: TokenIssuer, clock: FixedClock, holder: PrivateJWK, token: str
) -> None:
    for origins in ((), ("https://api.example",)):
        request = plain("api.example", "*", headers(token, proof(holder, token)))
        assert code(guard(issuer, clock, origins=origins).evaluate(request)) == (
            "400 malformed_credentials"
        )


@VIEWS
def test_a_hash_in_the_request_path_is_malformed(
    issuer: TokenIssuer, clock: FixedClock, holder: PrivateJWK, token: str, view: Any
) -> None:
    """Some servers (uvicorn with h11, hypercorn) hand a raw '#' to the application, whose
    router serves /users/7#/delete from /users/{uid}/delete: it never starts a fragment."""
    signed = proof(holder, token, htu="https://api.example/users/7")
    for config in ({}, {"origins": ["https://api.example"]}):
        request = view("api.example", "/users/7#/delete", headers(token, signed))
        assert code(guard(issuer, clock, **config).evaluate(request)) == (
            "400 malformed_credentials"
        )
    # a view's path holds no query: a '?' in it was decoded (a Request built from a decoded
    # path); as the WSGI view reads a raw URI, there it is the query's start
    request = plain("api.example", "/users/7?/delete", headers(token, signed))
    assert code(guard(issuer, clock).evaluate(request)) == "400 malformed_credentials"


def test_a_decoded_path_is_encoded_again(
    issuer: TokenIssuer, clock: FixedClock, holder: PrivateJWK, token: str
) -> None:
    """An ASGI server without raw_path hands over the decoded path: a decoded '?' (from %3F)
    must not end the path the proof is compared with."""
    signed = proof(holder, token, htu="https://api.example/files/x")
    scope = {
        "type": "http",
        "method": "GET",
        "scheme": "https",
        "path": "/files/x?/../secret",
        "query_string": b"",
        "headers": [
            (b"host", b"api.example"),
            *((k.encode(), v.encode()) for k, v in headers(token, signed).items()),
        ],
        "client": ("203.0.113.9", 5555),
    }
    view = ScopeView(scope, None)
    assert view.path == "/files/x%3F/../secret"
    assert code(guard(issuer, clock).evaluate(view)) == "401 invalid_dpop_proof"


@VIEWS
@pytest.mark.parametrize("path", ["/users/auth0|5f3c", "/a^b", "/a\\b", "/q/%7C"])
def test_characters_clients_send_unencoded_are_compared_as_written(
    issuer: TokenIssuer, clock: FixedClock, holder: PrivateJWK, token: str, view: Any, path: str
) -> None:
    """httpx sends '|', '^' and '\\' in a path as they are, in the request and in the htu."""
    signed = proof(holder, token, htu=f"https://api.example{path}")
    outcome = guard(issuer, clock).evaluate(view("api.example", path, headers(token, signed)))
    assert code(outcome) == "allowed"


def test_two_host_headers_are_refused(
    issuer: TokenIssuer, clock: FixedClock, holder: PrivateJWK, token: str
) -> None:
    """uvicorn with httptools hands both to the application (RFC 9112 3.2: refuse them)."""
    signed = proof(holder, token, htu="https://other.example/orders/7")
    view = asgi("api.example", "/orders/7", headers(token, signed))
    view._scope["headers"].insert(0, (b"host", b"other.example"))  # type: ignore[attr-defined]
    assert code(guard(issuer, clock).evaluate(view)) == "400 malformed_credentials"


def test_an_ipv6_server_address_is_bracketed_without_a_host_header() -> None:
    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "server": ("::1", 8443)}
    assert ScopeView(scope, None).host == "[::1]:8443"


def test_without_a_host_header_or_server_address_there_is_no_host() -> None:
    """No host to compare a proof's ``htu`` with: never a guessed one."""
    for server in (None, ("10.0.0.1", None), ("/run/app.sock", None)):
        scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "server": server}
        assert ScopeView(scope, None).host is None
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "headers": [],
        "server": ("10.0.0.1", 80),
    }
    assert ScopeView(scope, None).host == "10.0.0.1:80"
    assert WSGIRequestView({"REQUEST_METHOD": "GET"}).host is None
    assert WSGIRequestView({"REQUEST_METHOD": "GET", "SERVER_NAME": ""}).host is None
    named = {"REQUEST_METHOD": "GET", "SERVER_NAME": "api.example", "SERVER_PORT": "8443"}
    assert WSGIRequestView(named).host == "api.example:8443"


# --- binding members that are present but unusable ----------------------------------------------


@pytest.mark.parametrize("jkt", [None, "", 7, {"x": 1}], ids=["null", "empty", "number", "object"])
def test_a_present_jkt_binds_whatever_its_value(
    issuer: TokenIssuer, clock: FixedClock, holder: PrivateJWK, jkt: Any
) -> None:
    # an issuer that copied a null cnf.jkt meant a bound token: it is never a plain bearer one
    bound = issuer.issue(
        subject="svc-a", audience=AUD, ttl=3600, extra_claims={"cnf": {"jkt": jkt}}
    )
    zt = guard(issuer, clock, origins=["https://api.example"])
    bearer = zt.evaluate(plain("api.example", "/orders/7", {"authorization": f"Bearer {bound}"}))
    assert code(bearer) == "401 token_binding_mismatch"
    assert bearer.body() == {"error": "invalid_token", "error_description": "invalid token"}
    presented = plain("api.example", "/orders/7", headers(bound, proof(holder, bound)))
    assert code(zt.evaluate(presented)) == "401 token_binding_mismatch"


def test_the_dpop_scheme_with_an_unbound_token_is_refused(
    issuer: TokenIssuer, clock: FixedClock, holder: PrivateJWK
) -> None:
    # a valid proof does not make a plain bearer token sender-constrained (RFC 9449 7.1)
    zt = guard(issuer, clock, origins=["https://api.example"])
    for extra in ({}, {"cnf": {"kid": "other-binding"}}):
        unbound = issuer.issue(subject="svc-a", audience=AUD, ttl=3600, extra_claims=extra)
        presented = plain("api.example", "/orders/7", headers(unbound, proof(holder, unbound)))
        assert code(zt.evaluate(presented)) == "401 token_binding_mismatch"


def test_a_cnf_of_methods_not_checked_here_is_no_bearer_token(
    issuer: TokenIssuer, clock: FixedClock
) -> None:
    # bound to a holder by a method zerotrust does not enforce (a key id, a SHA-1 certificate
    # thumbprint): taken as Bearer, the binding its issuer wrote would be dropped
    for cnf in ({"kid": "other-binding"}, {"x5t": "not the SHA-256 member"}):
        bound = issuer.issue(subject="svc-a", audience=AUD, ttl=3600, extra_claims={"cnf": cnf})
        zt = guard(issuer, clock, origins=["https://api.example"])
        view = plain("api.example", "/orders/7", {"authorization": f"Bearer {bound}"})
        assert code(zt.evaluate(view)) == "401 token_binding_mismatch"


_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.mark.parametrize(
    ("key_alg", "jwk_alg", "header_alg", "allowed"),
    [
        ("RS256", "PS256", "RS256", False),  # the key is for PS256: an RS256 proof is refused
        ("PS256", "RS256", "PS256", False),
        ("RS256", "RS256", "RS256", True),
        ("RS256", None, "RS256", True),  # no alg member: the header names it
        ("RS256", None, "PS256", True),
        ("ES256", "ES256", "ES256", True),
    ],
)
def test_a_jwk_alg_member_binds_the_proof_to_that_algorithm(
    token: str, key_alg: str, jwk_alg: str | None, header_alg: str, allowed: bool
) -> None:
    private = _RSA if key_alg != "ES256" else ec.generate_private_key(ec.SECP256R1())
    key = PrivateJWK(private, algorithm=key_alg)
    signer = PrivateJWK(private, algorithm=header_alg)
    members = {
        name: value for name, value in key.public().to_public_dict().items() if name != "alg"
    }
    if jwk_alg is not None:
        members["alg"] = jwk_alg
    presented = proof(signer, token, alg=header_alg, jwk=members)
    config = DPoPConfig(algorithms=["ES256", "RS256", "PS256"])
    if allowed:
        assert check(presented, token, config=config) == key.thumbprint()
    else:
        with pytest.raises(InvalidDPoPProof, match="another algorithm"):
            check(presented, token, config=config)


# --- the proof's key: compared with cnf.jkt before it is used, and bounded ----------------------


def rsa_members(bits: int) -> dict[str, str]:
    """An RSA JWK of ``bits`` bits made of numbers alone (no key generated; nothing it signs
    verifies)."""
    n = int.from_bytes(hashlib.shake_256(b"modulus").digest((bits + 7) // 8), "big")
    n = (n >> (n.bit_length() - bits)) | (1 << (bits - 1)) | 1
    return {"kty": "RSA", "n": b64url_encode(n.to_bytes((bits + 7) // 8, "big")), "e": "AQAB"}


def unsigned(token: str, jwk: dict[str, Any], alg: str = "RS256", size: int = 512) -> str:
    """A proof for this request carrying ``jwk``, with a signature of ``size`` junk bytes."""
    ath = b64url_encode(hashlib.sha256(token.encode()).digest())
    claims = {"jti": "p1", "htm": "GET", "htu": URL, "iat": NOW, "ath": ath}
    head = {"typ": "dpop+jwt", "alg": alg, "jwk": jwk}
    segments = [b64url_encode(json.dumps(part).encode()) for part in (head, claims)]
    return ".".join([*segments, b64url_encode(b"\x5a" * size)])


@pytest.mark.parametrize("bits", [2048, 4097, 16384])
def test_a_proof_by_another_key_is_refused_before_its_key_is_used(
    holder: PrivateJWK, token: str, monkeypatch: pytest.MonkeyPatch, bits: int
) -> None:
    """A stolen bound token with a proof by any key the thief likes: refused with the binding
    mismatch at the cost of a hash, the key never built and the signature never checked."""
    import zerotrust.authn.binding as binding

    def never(members: Any) -> None:
        raise AssertionError("the proof's key was imported")

    monkeypatch.setattr(binding.JWK, "from_dict", never)
    presented = unsigned(token, rsa_members(bits), size=(bits + 7) // 8)
    with pytest.raises(TokenBindingMismatch, match=r"cnf\.jkt"):
        verify_dpop_proof(
            presented,
            method="GET",
            url=URL,
            access_token=token,
            config=DPoPConfig(),
            now=NOW,
            jkt=holder.thumbprint(),
        )


def test_the_binding_is_compared_on_the_canonical_members(holder: PrivateJWK, token: str) -> None:
    """The thumbprint compared early is the one the key has once read (RFC 7638: required
    members only, an RSA n without leading zero octets)."""
    key = PrivateJWK(_RSA)
    members = {**key.public().to_public_dict(), "kid": "k", "use": "sig"}
    modulus = _RSA.public_key().public_numbers().n.to_bytes(256, "big")
    padded = {**members, "n": b64url_encode(b"\x00" + modulus)}
    presented = proof(key, token, alg="RS256", jwk=padded)
    jkt = key.thumbprint()
    result = verify_dpop_proof(
        presented, method="GET", url=URL, access_token=token, config=DPoPConfig(), now=NOW, jkt=jkt
    )
    assert result.jkt == jkt
    # the same key, a matching jkt, a signature by another key: the signature is still checked
    forged = proof(holder, token, alg="RS256", jwk=key.public().to_public_dict())
    with pytest.raises(InvalidDPoPProof, match="signature"):
        verify_dpop_proof(
            forged, method="GET", url=URL, access_token=token, config=DPoPConfig(), now=NOW, jkt=jkt
        )


@pytest.mark.parametrize(
    "jwk",
    [{"kty": "oct", "k": "AAAA"}, {"kty": "RSA", "n": "AQAB"}, {"kty": "EC", "crv": "P-256"}],
    ids=["oct", "no-e", "no-x"],
)
def test_an_unusable_jwk_is_still_an_invalid_proof(
    holder: PrivateJWK, token: str, jwk: Any
) -> None:
    with pytest.raises(InvalidDPoPProof, match="jwk is unusable"):
        verify_dpop_proof(
            unsigned(token, jwk),
            method="GET",
            url=URL,
            access_token=token,
            config=DPoPConfig(),
            now=NOW,
            jkt=holder.thumbprint(),
        )


def test_a_stolen_token_with_a_large_rsa_proof_key_is_a_binding_mismatch(
    issuer: TokenIssuer, clock: FixedClock, token: str
) -> None:
    """Through the Guard: the audit reason of a proof by the wrong key stays the binding
    mismatch, also when the proof's signature (checked before, until now) is not valid."""
    zt = guard(issuer, clock, origins=["https://api.example"])
    presented = unsigned(token, rsa_members(8192), size=1024)
    outcome = zt.evaluate(plain("api.example", "/orders/7", headers(token, presented)))
    assert code(outcome) == "401 token_binding_mismatch"
    # a token bound to no key: the proof is verified in full, and its signature refused
    unbound = issuer.issue(subject="svc-a", audience=AUD, ttl=3600)
    presented = unsigned(unbound, rsa_members(4096), size=512)
    outcome = zt.evaluate(plain("api.example", "/orders/7", headers(unbound, presented)))
    assert code(outcome) == "401 invalid_dpop_proof"


@pytest.mark.parametrize("bound", [False, True], ids=["unbound", "bound-to-that-key"])
def test_rsa_proof_keys_larger_than_4096_bits_are_refused(
    token: str, monkeypatch: pytest.MonkeyPatch, bound: bool
) -> None:
    import zerotrust.authn.binding as binding

    jkts = {bits: JWK.from_dict(rsa_members(bits)).thumbprint() for bits in (4096, 4097, 8192)}

    def check_(bits: int) -> None:
        verify_dpop_proof(
            unsigned(token, rsa_members(bits), size=(bits + 7) // 8),
            method="GET",
            url=URL,
            access_token=token,
            config=DPoPConfig(),
            now=NOW,
            jkt=jkts[bits] if bound else None,
        )

    # 4096 bits: the key is read, and its (junk) signature checked and refused
    with pytest.raises(InvalidDPoPProof, match="signature is invalid"):
        check_(4096)
    # larger: refused before the key is built, whether the token is bound to it or not
    monkeypatch.setattr(binding.JWK, "from_dict", lambda members: pytest.fail("imported"))
    for bits in (4097, 8192):
        with pytest.raises(InvalidDPoPProof, match="larger than 4096 bits"):
            check_(bits)


def test_the_url_a_proof_is_checked_against() -> None:
    from zerotrust.authn.binding import request_url

    with_origins = DPoPConfig(origins=["https://api.example"])
    without = DPoPConfig()
    assert request_url(Request(path=""), with_origins) == "/"  # an empty path is "/"
    assert request_url(Request(path="/orders/7"), with_origins) == "/orders/7"
    view = Request(path="/orders/7", host="api.example:8443", scheme="https")
    assert request_url(view, without) == "https://api.example:8443/orders/7"
    for path in ("/orders?id=7", "/orders#top", "/orders?"):
        with pytest.raises(MalformedCredentials, match=r"the request path holds '\?' or '#'"):
            request_url(Request(path=path), with_origins)
    with pytest.raises(MalformedCredentials, match="the request target is not a path"):
        request_url(Request(path="orders"), with_origins)


def test_a_proof_s_htu_is_bounded_by_the_proof_s_size_alone(holder: PrivateJWK, token: str) -> None:
    # RFC 9110 4.1: URIs of at least 8,000 octets should work; the proof (at most 8,192
    # bytes) bounds its htu
    base = "https://api.example/"
    long = base + "a" * (5000 - len(base))
    long_proof = proof(holder, token, htu=long)
    assert 7000 < len(long_proof) <= 8192
    assert check(long_proof, token, url=long)
    longer = base + "a" * (6500 - len(base))
    with pytest.raises(InvalidDPoPProof, match="too large"):
        check(proof(holder, token, htu=longer), token, url=longer)
