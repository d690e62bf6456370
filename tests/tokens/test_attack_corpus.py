"""An attack corpus against ``TokenVerifier`` and the DPoP proof checker, one row per crafted
token: the hostile input and the typed refusal it must meet (error class and ``code``).

The rows cover the jwt_tool playbook and the bug classes JOSE libraries have shipped. Some
classes have deeper tests of their own, which this table does not repeat:

* HMAC with public key material as the secret (PEM, DER, JWK, JWKS, OpenSSH):
  ``test_cves.py::test_cve_2022_29217_*``, ``test_cve_2024_33663_*``, ``test_secret.py``;
* ``crit`` understood by the caller, ``b64`` and registered names in ``critical``:
  ``test_cves.py::test_crit_*``;
* bounds and errors that never echo the token: ``test_cves.py::test_cve_2025_65015_*``;
* RSA key bounds (size, exponent, modulus) and EC/Edwards points: ``test_keys.py``;
* DPoP through the Guard (every request view): ``tests/authn/test_dpop.py`` and
  ``tests/conformance/test_rfc9449_vectors.py``; a replayed proof (``dpop_proof_replayed``):
  ``tests/test_pipeline.py``.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from zerotrust._clock import FixedClock
from zerotrust.authn.binding import DPoPConfig, check_dpop_binding, verify_dpop_proof
from zerotrust.errors import (
    AlgorithmNotAllowed,
    ConfigurationError,
    InvalidAudience,
    InvalidClaim,
    InvalidDPoPProof,
    InvalidIssuer,
    InvalidSignature,
    InvalidTokenType,
    MalformedToken,
    MissingClaim,
    TokenBindingMismatch,
    TokenError,
    TokenExpired,
    TokenLifetimeTooLong,
    TokenNotYetValid,
    TokenTooLarge,
    UnknownKey,
    UnsupportedTokenFeature,
)
from zerotrust.tokens import JWK, JWKSet, PrivateJWK, TokenVerifier
from zerotrust.tokens.algorithms import EC_CURVES
from zerotrust.tokens.sources import KeysLike

from .conftest import AUDIENCE, ISSUER, T0, b64, b64json, claims, rsa_members

# --------------------------------------------------------------------------------------------
# The keys and the verifier every row is checked against


@dataclass(frozen=True)
class Kit:
    """The keys a row may sign with: ``es256`` is the verifier's, the others are not."""

    es256: PrivateJWK
    es384: PrivateJWK
    rsa: PrivateJWK
    ps256: PrivateJWK
    other: PrivateJWK  # another ES256 key, with the verifier key's kid

    def sign(self, header: dict[str, Any], payload: bytes | dict[str, Any], key: Any = None) -> str:
        return _sign(header, payload, self.es256 if key is None else key)

    def token(self, **overrides: Any) -> str:
        body = claims(**overrides)
        return self.sign(HEADER, {k: None if v is _NULL else v for k, v in body.items()})


def _sign(header: dict[str, Any], payload: bytes | dict[str, Any], key: PrivateJWK) -> str:
    body = b64(payload) if isinstance(payload, bytes) else b64json(payload)
    signing_input = f"{b64json(header)}.{body}"
    return f"{signing_input}.{b64(key.sign(signing_input.encode()))}"


HEADER: dict[str, Any] = {"alg": "ES256", "kid": "es256-1", "typ": "JWT"}


@pytest.fixture(scope="module")
def kit() -> Kit:
    es256 = PrivateJWK.generate("ES256", kid="es256-1")
    rsa_key = PrivateJWK.generate("RS256", kid="rs-1")
    return Kit(
        es256=es256,
        es384=PrivateJWK.generate("ES384", kid="es256-1"),
        rsa=rsa_key,
        ps256=PrivateJWK(rsa_key.private_key, algorithm="PS256", kid="rs-1"),
        other=PrivateJWK.generate("ES256", kid="es256-1"),
    )


@pytest.fixture(scope="module")
def verifier(kit: Kit) -> TokenVerifier:
    return TokenVerifier(
        issuer=ISSUER,
        audience=AUDIENCE,
        keys=kit.es256.public(),
        algorithms=["ES256"],
        clock=_clock(),
        cache_size=0,
        max_lifetime=3600,
    )


def _clock() -> FixedClock:
    return FixedClock(dt.datetime.fromtimestamp(T0, tz=dt.timezone.utc))


def _with_header(kit: Kit, **changes: Any) -> str:
    header = {**HEADER, **changes}
    return kit.sign({k: v for k, v in header.items() if v is not _ABSENT}, claims())


def _raw_header(kit: Kit, text: str) -> str:
    signing_input = f"{b64(text.encode())}.{b64json(claims())}"
    return f"{signing_input}.{b64(kit.es256.sign(signing_input.encode()))}"


def _raw_payload(kit: Kit, text: str) -> str:
    return kit.sign(HEADER, text.encode())


def _resign(kit: Kit, token: str, signature: bytes) -> str:
    return token.rsplit(".", 1)[0] + "." + b64(signature)


def _raw_sig(kit: Kit, r: int, s: int, size: int = 32) -> str:
    return _resign(kit, kit.token(), r.to_bytes(size, "big") + s.to_bytes(size, "big"))


def _der_sig(kit: Kit) -> str:
    token = kit.token()
    signing_input = token.rsplit(".", 1)[0].encode()
    key = kit.es256.private_key
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return _resign(kit, token, key.sign(signing_input, ec.ECDSA(hashes.SHA256())))


def _high_s(kit: Kit) -> str:
    token = kit.token()
    raw = _sig_bytes(token)
    n = EC_CURVES["ES256"][3]
    r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
    return _resign(kit, token, r.to_bytes(32, "big") + (n - s).to_bytes(32, "big"))


def _sig_bytes(token: str) -> bytes:
    segment = token.rsplit(".", 1)[1]
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _segment_of_another_token(kit: Kit) -> str:
    one, two = kit.token(sub="a"), kit.token(sub="b")
    return one.rsplit(".", 1)[0] + "." + two.rsplit(".", 1)[1]


def _non_canonical_tail(token: str, index: int) -> str:
    """``token`` with the last character of segment ``index`` carrying a stray low bit."""
    segments = token.split(".")
    segment = segments[index]
    assert len(segment) % 4 in (2, 3)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    segments[index] = segment[:-1] + alphabet[alphabet.index(segment[-1]) | 1]
    return ".".join(segments)


def _tail_segment(kit: Kit, index: int) -> str:
    # pad claims until the segment's length is 2 or 3 (mod 4)
    for pad in range(4):
        token = kit.token(pad="x" * pad)
        if len(token.split(".")[index]) % 4 in (2, 3):
            return _non_canonical_tail(token, index)
    raise AssertionError("no padding gives a partial final quantum")  # pragma: no cover


_ABSENT: Any = object()
_NULL: Any = object()  # a JSON null (claims() drops the claims given as None)

Build = Callable[[Kit], Any]


@dataclass(frozen=True)
class Row:
    name: str
    build: Build
    error: type[TokenError]
    code: str


def row(name: str, build: Build, error: type[TokenError]) -> Any:
    return pytest.param(Row(name, build, error, error.code), id=name)


def _pad(token: str, index: int) -> str:
    segments = token.split(".")
    segments[index] += "=" * (-len(segments[index]) % 4 or 4)
    return ".".join(segments)


def _std_alphabet(kit: Kit) -> str:
    for pad in range(200):
        token = kit.token(pad="?" * pad + "~")
        if "-" in token or "_" in token:
            return token.replace("-", "+").replace("_", "/")
    raise AssertionError("no '-' or '_' in any token")  # pragma: no cover


def _header_tail(kit: Kit) -> str:
    for pad in range(4):
        header = {**HEADER, "p": "x" * pad}
        token = kit.sign(header, claims())
        if len(token.split(".")[0]) % 4 in (2, 3):
            return _non_canonical_tail(token, 0)
    raise AssertionError("no padding gives a partial final quantum")  # pragma: no cover


def _insert(token: str, index: int, at: int, text: str) -> str:
    segments = token.split(".")
    segments[index] = segments[index][:at] + text + segments[index][at:]
    return ".".join(segments)


def _empty_payload(kit: Kit) -> str:
    signing_input = f"{b64json(HEADER)}."
    return signing_input + "." + b64(kit.es256.sign(signing_input.encode()))


def _raw_header_bytes(kit: Kit, data: bytes) -> str:
    signing_input = f"{b64(data)}.{b64json(claims())}"
    return f"{signing_input}.{b64(kit.es256.sign(signing_input.encode()))}"


def _claims_text(**raw: str) -> str:
    """The claims of :func:`claims` as JSON text, with members given as raw JSON text."""
    members = {name: json.dumps(value) for name, value in claims().items()}
    members.update(raw)
    return "{" + ",".join(f"{json.dumps(name)}:{text}" for name, text in members.items()) + "}"


def _dup(name: str, first: object, last: object) -> str:
    text = json.dumps(claims(**{name: None}))
    return (
        text[:-1]
        + f",{json.dumps(name)}:{json.dumps(first)},{json.dumps(name)}:{json.dumps(last)}}}"
    )


def _nest(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def _header_change(**changes: Any) -> Build:
    return lambda kit: _with_header(kit, **changes)


def _claims_change(**changes: Any) -> Build:
    return lambda kit: kit.token(**changes)


def _embedded(name: str) -> Build:
    """A token signed by another key that the header names (the verifier's keys stay in use)."""
    values: dict[str, Callable[[Kit], object]] = {
        "jwk": lambda kit: kit.other.public().to_public_dict(),
        "jku": lambda kit: "https://attacker.example/jwks.json",
        "x5u": lambda kit: "https://attacker.example/cert.pem",
        "x5c": lambda kit: ["MIIBszCCAVmgAwIBAgIUU"],
        "x5t": lambda kit: "dGhpcyBpcyBub3QgYSB0aHVtYnByaW50",
        "x5t#S256": lambda kit: "dGhpcyBpcyBub3QgYSB0aHVtYnByaW50",
    }
    return lambda kit: kit.sign({**HEADER, name: values[name](kit)}, claims(), kit.other)


# --------------------------------------------------------------------------------------------
# The corpus: token -> expected refusal

CORPUS = [
    # alg
    *(
        row(f"alg-{alg}", _header_change(alg=alg), AlgorithmNotAllowed)
        for alg in ("none", "None", "NONE", "nOnE", "", "ES384", "HS256", "RS256", "PS256")
    ),
    row("alg-missing", lambda k: _with_header(k, alg=_ABSENT), MalformedToken),
    row("alg-null", lambda k: _with_header(k, alg=None), MalformedToken),
    row("alg-number", lambda k: _with_header(k, alg=256), MalformedToken),
    row("alg-list", lambda k: _with_header(k, alg=["ES256"]), MalformedToken),
    row("alg-object", lambda k: _with_header(k, alg={"ES256": True}), MalformedToken),
    row("alg-lower-es256", lambda k: _with_header(k, alg="es256"), AlgorithmNotAllowed),
    row("alg-trailing-space", lambda k: _with_header(k, alg="ES256 "), AlgorithmNotAllowed),
    row("alg-none-nul", lambda k: _with_header(k, alg="none\x00"), AlgorithmNotAllowed),
    row(
        "none-empty-signature",
        lambda k: _with_header(k, alg="none").rsplit(".", 1)[0] + ".",
        AlgorithmNotAllowed,
    ),
    # the signature of a P-384 key (same kid) under an ES256 header
    row("es256-header-p384-key", lambda k: k.sign(HEADER, claims(), k.es384), InvalidSignature),
    row("other-key-same-kid", lambda k: k.sign(HEADER, claims(), k.other), InvalidSignature),
    # keys in the header are never used
    *(
        row(f"embedded-{name}", _embedded(name), InvalidSignature)
        for name in ("jwk", "jku", "x5u", "x5c", "x5t", "x5t#S256")
    ),
    row(
        "embedded-jwk-no-kid",
        lambda k: k.sign(
            {"alg": "ES256", "jwk": k.other.public().to_public_dict()}, claims(), k.other
        ),
        InvalidSignature,
    ),
    # kid tricks: never a path, a query or a file; too long or not a string is malformed
    *(
        row(f"kid-{name}", _header_change(kid=value), UnknownKey)
        for name, value in (
            ("path-traversal", "../../../../../../dev/null"),
            ("sql", "x' UNION SELECT 'secret' --"),
            ("nul", "es256-1\x00"),
            ("prefix", "es256-"),
            ("case", "ES256-1"),
            ("url", "https://attacker.example/key"),
        )
    ),
    row("kid-too-long", lambda k: _with_header(k, kid="k" * 1025), MalformedToken),
    row("kid-number", lambda k: _with_header(k, kid=1), MalformedToken),
    row("kid-list", lambda k: _with_header(k, kid=["es256-1"]), MalformedToken),
    row("kid-empty", lambda k: _with_header(k, kid=""), MalformedToken),
    row("kid-null", lambda k: _with_header(k, kid=None), MalformedToken),
    # crit
    row("crit-unknown", lambda k: _with_header(k, crit=["exp"], exp=1), UnsupportedTokenFeature),
    row("crit-registered", lambda k: _with_header(k, crit=["alg"]), MalformedToken),
    row("crit-empty", lambda k: _with_header(k, crit=[]), MalformedToken),
    row("crit-absent-name", lambda k: _with_header(k, crit=["x"]), MalformedToken),
    row("crit-duplicate", lambda k: _with_header(k, crit=["x", "x"], x=1), MalformedToken),
    row("crit-not-list", lambda k: _with_header(k, crit="x", x=1), MalformedToken),
    row("crit-b64", lambda k: _with_header(k, crit=["b64"], b64=True), UnsupportedTokenFeature),
    # payload features that change what is signed or read
    row("b64-false", lambda k: _with_header(k, b64=False, crit=["b64"]), UnsupportedTokenFeature),
    row("b64-false-no-crit", lambda k: _with_header(k, b64=False), UnsupportedTokenFeature),
    row("b64-string", lambda k: _with_header(k, b64="false"), UnsupportedTokenFeature),
    row("zip", lambda k: _with_header(k, zip="DEF"), UnsupportedTokenFeature),
    row("enc", lambda k: _with_header(k, enc="A256GCM"), UnsupportedTokenFeature),
    row("jwe-five-segments", lambda k: "eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d", UnsupportedTokenFeature),
    row("cty-jwt", lambda k: _with_header(k, cty="JWT"), UnsupportedTokenFeature),
    row(
        "cty-application-jwt",
        lambda k: _with_header(k, cty="application/jwt"),
        UnsupportedTokenFeature,
    ),
    row("cty-not-string", lambda k: _with_header(k, cty=1), MalformedToken),
    # typ confusion
    row("typ-at+jwt", lambda k: _with_header(k, typ="at+jwt"), InvalidTokenType),
    row("typ-dpop+jwt", lambda k: _with_header(k, typ="dpop+jwt"), InvalidTokenType),
    row("typ-jwt-svid-other", lambda k: _with_header(k, typ="secevent+jwt"), InvalidTokenType),
    row("typ-number", lambda k: _with_header(k, typ=1), MalformedToken),
    # ECDSA signatures
    row("ecdsa-psychic-zero", lambda k: _raw_sig(k, 0, 0), InvalidSignature),
    row("ecdsa-r-zero", lambda k: _raw_sig(k, 0, 1), InvalidSignature),
    row("ecdsa-r-n", lambda k: _raw_sig(k, EC_CURVES["ES256"][3], 1), InvalidSignature),
    row("ecdsa-s-n", lambda k: _raw_sig(k, 1, EC_CURVES["ES256"][3]), InvalidSignature),
    row("ecdsa-r-s-max", lambda k: _raw_sig(k, 2**256 - 1, 2**256 - 1), InvalidSignature),
    row("ecdsa-der", _der_sig, InvalidSignature),
    row(
        "ecdsa-short", lambda k: _resign(k, k.token(), _sig_bytes(k.token())[:63]), InvalidSignature
    ),
    row(
        "ecdsa-long",
        lambda k: _resign(k, k.token(), _sig_bytes(k.token()) + b"\0"),
        InvalidSignature,
    ),
    row("ecdsa-p384-length", lambda k: _raw_sig(k, 1, 1, 48), InvalidSignature),
    row("empty-signature", lambda k: k.token().rsplit(".", 1)[0] + ".", InvalidSignature),
    row("signature-of-another-token", _segment_of_another_token, InvalidSignature),
    # encoding
    row("padding-payload", lambda k: _pad(k.token(), 1), MalformedToken),
    row("padding-signature", lambda k: _pad(k.token(), 2), MalformedToken),
    row("std-alphabet", _std_alphabet, MalformedToken),
    row("stray-bits-payload", lambda k: _tail_segment(k, 1), MalformedToken),
    row("stray-bits-header", _header_tail, MalformedToken),
    row("newline-in-segment", lambda k: _insert(k.token(), 1, 10, "\n"), MalformedToken),
    row("space-in-segment", lambda k: _insert(k.token(), 1, 10, " "), MalformedToken),
    row("tab-in-segment", lambda k: _insert(k.token(), 0, 5, "\t"), MalformedToken),
    row("leading-space", lambda k: " " + k.token(), MalformedToken),
    row("trailing-newline", lambda k: k.token() + "\n", MalformedToken),
    row("trailing-crlf", lambda k: k.token() + "\r\n", MalformedToken),
    row("extra-dot-end", lambda k: k.token() + ".", MalformedToken),
    row("extra-dot-middle", lambda k: k.token().replace(".", "..", 1), MalformedToken),
    row("four-segments", lambda k: k.token() + ".AAAA", MalformedToken),
    row("two-segments", lambda k: k.token().rsplit(".", 1)[0], MalformedToken),
    row("empty-header", lambda k: "." + k.token().split(".", 1)[1], MalformedToken),
    row("empty-payload", _empty_payload, MalformedToken),
    row("only-dots", lambda k: "..", MalformedToken),
    row("fullwidth-dot", lambda k: k.token().replace(".", "\uff0e"), MalformedToken),
    row("one-dot-leader", lambda k: k.token().replace(".", "\u2024"), MalformedToken),
    row("ideographic-dot", lambda k: k.token().replace(".", "\u3002"), MalformedToken),
    row("too-large", lambda k: k.token(pad="x" * 9000), TokenTooLarge),
    row("empty-token", lambda k: "", MalformedToken),
    row("bearer-prefix", lambda k: "Bearer " + k.token(), MalformedToken),
    # JSON
    row(
        "header-duplicate-alg",
        lambda k: _raw_header(k, '{"alg":"none","alg":"ES256"}'),
        MalformedToken,
    ),
    row(
        "header-duplicate-escaped",
        lambda k: _raw_header(k, '{"alg":"ES256","\\u0061lg":"none"}'),
        MalformedToken,
    ),
    row(
        "header-duplicate-kid",
        lambda k: _raw_header(k, '{"alg":"ES256","kid":"x","kid":"es256-1"}'),
        MalformedToken,
    ),
    row("header-not-object", lambda k: _raw_header(k, '["ES256"]'), MalformedToken),
    row("header-nan", lambda k: _raw_header(k, '{"alg":"ES256","x":NaN}'), MalformedToken),
    row(
        "header-deep",
        lambda k: _raw_header(k, '{"alg":"ES256","x":' + "[" * 40 + "]" * 40 + "}"),
        MalformedToken,
    ),
    row("header-trailing", lambda k: _raw_header(k, '{"alg":"ES256"}{}'), MalformedToken),
    row("header-bom", lambda k: _raw_header(k, '\ufeff{"alg":"ES256"}'), MalformedToken),
    row(
        "header-lone-surrogate",
        lambda k: _raw_header(k, '{"alg":"ES256","x":"\\ud800"}'),
        MalformedToken,
    ),
    row(
        "header-not-utf8",
        lambda k: _raw_header_bytes(k, b'{"alg":"ES256","x":"\xff"}'),
        MalformedToken,
    ),
    row(
        "payload-duplicate-aud",
        lambda k: _raw_payload(k, _dup("aud", "other", AUDIENCE)),
        MalformedToken,
    ),
    row(
        "payload-duplicate-exp",
        lambda k: _raw_payload(k, _dup("exp", T0 - 10_000, T0 + 60)),
        MalformedToken,
    ),
    row(
        "payload-duplicate-iss",
        lambda k: _raw_payload(k, _dup("iss", "https://evil", ISSUER)),
        MalformedToken,
    ),
    row("payload-deep", lambda k: k.token(x=_nest(40)), MalformedToken),
    row(
        "payload-infinity", lambda k: _raw_payload(k, _claims_text(exp="Infinity")), MalformedToken
    ),
    row("payload-1e309", lambda k: _raw_payload(k, _claims_text(exp="1e309")), MalformedToken),
    row(
        "payload-minus-1e309", lambda k: _raw_payload(k, _claims_text(nbf="-1e309")), MalformedToken
    ),
    row("payload-nan", lambda k: _raw_payload(k, _claims_text(exp="NaN")), MalformedToken),
    row(
        "payload-huge-int", lambda k: _raw_payload(k, _claims_text(exp="9" * 5000)), MalformedToken
    ),
    row("payload-array", lambda k: _raw_payload(k, "[]"), MalformedToken),
    row("payload-not-json", lambda k: _raw_payload(k, "not json"), MalformedToken),
    # numeric dates
    *(
        row(f"{name}-{label}", _claims_change(**{name: value}), InvalidClaim)
        for name in ("exp", "nbf", "iat")
        for label, value in (
            ("string", str(T0 + 60)),
            ("true", True),
            ("false", False),
            ("list", [T0 + 60]),
            ("object", {"v": T0 + 60}),
            ("beyond-9999", 253_402_300_800),
            ("huge", 10**30),
            ("before-year-1", -62_135_596_801),
        )
    ),
    row("exp-null", lambda k: k.token(exp=_NULL), MissingClaim),
    row("exp-missing", lambda k: k.token(exp=None), MissingClaim),
    row("exp-minus-zero", lambda k: _raw_payload(k, _claims_text(exp="-0")), TokenExpired),
    row("exp-minus-zero-float", lambda k: _raw_payload(k, _claims_text(exp="-0.0")), TokenExpired),
    row("exp-negative", lambda k: k.token(exp=-1, iat=None, nbf=None), TokenExpired),
    row("exp-float-past", lambda k: k.token(exp=T0 - 60.5), TokenExpired),
    # issuer, subject, audience
    row("iss-missing", lambda k: k.token(iss=None), MissingClaim),
    row("iss-list", lambda k: k.token(iss=[ISSUER]), InvalidIssuer),
    row("iss-object", lambda k: k.token(iss={"iss": ISSUER}), InvalidIssuer),
    row("iss-prefix", lambda k: k.token(iss=ISSUER + ".evil"), InvalidIssuer),
    row("iss-case", lambda k: k.token(iss=ISSUER.upper()), InvalidIssuer),
    row("iss-trailing-slash", lambda k: k.token(iss=ISSUER + "/"), InvalidIssuer),
    row("iss-nul", lambda k: k.token(iss=ISSUER + "\x00"), InvalidIssuer),
    row("aud-missing", lambda k: k.token(aud=None), MissingClaim),
    row("aud-object", lambda k: k.token(aud={AUDIENCE: True}), InvalidClaim),
    row("aud-list-null", lambda k: k.token(aud=[AUDIENCE, None]), InvalidClaim),
    row("aud-empty-list", lambda k: k.token(aud=[]), InvalidClaim),
    row("aud-nested-list", lambda k: k.token(aud=[[AUDIENCE]]), InvalidClaim),
    row("aud-number", lambda k: k.token(aud=1), InvalidClaim),
    row("aud-true", lambda k: k.token(aud=True), InvalidClaim),
    row("aud-substring", lambda k: k.token(aud=AUDIENCE + "/admin"), InvalidAudience),
    row("aud-superstring", lambda k: k.token(aud=AUDIENCE[:-1]), InvalidAudience),
    row("aud-space-joined", lambda k: k.token(aud=f"other {AUDIENCE}"), InvalidAudience),
    row("aud-empty-string", lambda k: k.token(aud=""), InvalidAudience),
    row("aud-list-other", lambda k: k.token(aud=["other", AUDIENCE + " "]), InvalidAudience),
    row("sub-number", lambda k: k.token(sub=1), InvalidClaim),
    row("sub-list", lambda k: k.token(sub=["a"]), InvalidClaim),
    row("sub-null", lambda k: k.token(sub=_NULL), InvalidClaim),
    row("jti-number", lambda k: k.token(jti=1), InvalidClaim),
    row("jti-null", lambda k: k.token(jti=_NULL), InvalidClaim),
    row("cnf-string", lambda k: k.token(cnf="jkt"), InvalidClaim),
    row("scp-number", lambda k: k.token(scp=1), InvalidClaim),
    # time
    row(
        "expired-leeway-plus-one",
        lambda k: k.token(exp=T0 - 61, iat=T0 - 120, nbf=None),
        TokenExpired,
    ),
    row("expired-at-leeway", lambda k: k.token(exp=T0 - 60, iat=T0 - 120, nbf=None), TokenExpired),
    row("nbf-future", lambda k: k.token(nbf=T0 + 61, exp=T0 + 600), TokenNotYetValid),
    row("iat-future", lambda k: k.token(iat=T0 + 61, nbf=None, exp=T0 + 600), TokenNotYetValid),
    row(
        "iat-far-future",
        lambda k: k.token(iat=T0 + 10**9, nbf=None, exp=T0 + 10**9 + 60),
        TokenNotYetValid,
    ),
    row("exp-beyond-max-lifetime", lambda k: k.token(exp=T0 + 3601), TokenLifetimeTooLong),
    row("exp-far-future", lambda k: k.token(exp=T0 + 10**9), TokenLifetimeTooLong),
    row("exp-before-iat", lambda k: k.token(iat=T0 + 30, nbf=None, exp=T0 + 10), InvalidClaim),
]


@pytest.mark.parametrize("case", CORPUS)
def test_corpus_token_is_refused(case: Row, kit: Kit, verifier: TokenVerifier) -> None:
    token = case.build(kit)
    with pytest.raises(TokenError) as caught:
        verifier.verify(token)
    assert type(caught.value) is case.error, (case.name, repr(caught.value))
    assert caught.value.code == case.code
    assert token not in str(caught.value) or not token


def test_corpus_control_token_verifies(kit: Kit, verifier: TokenVerifier) -> None:
    """Each row differs from this token in its one hostile change."""
    assert verifier.verify(kit.token()).subject == "spiffe://example.org/svc/billing"


def test_high_s_ecdsa_signature_is_accepted_and_names_the_same_token(
    kit: Kit, verifier: TokenVerifier
) -> None:
    """ECDSA signatures are malleable: ``(r, n - s)`` verifies as ``(r, s)`` does. The other
    spelling is accepted (JWS does not ask for low ``s``), which is why a check that must see
    a token once keys on its ``jti``, never on its text."""
    token = kit.token()
    twin = _high_s(kit)
    assert twin != token
    assert verifier.verify(twin).jti == verifier.verify(token).jti


# --------------------------------------------------------------------------------------------
# Rows that need another key set or algorithm allowlist


def _rsa_verifier(key: KeysLike, algorithms: list[str]) -> TokenVerifier:
    return TokenVerifier(
        issuer=ISSUER, audience=AUDIENCE, keys=key, algorithms=algorithms, clock=_clock()
    )


def test_pss_token_is_not_verified_as_pkcs1(kit: Kit) -> None:
    """A PS256 signature by the RSA key, relabelled RS256 (and the reverse): the key is bound
    to one padding."""
    rs256 = _rsa_verifier(kit.rsa.public(), ["RS256"])
    ps256 = _rsa_verifier(kit.ps256.public(), ["PS256"])
    rs_header = {"alg": "RS256", "kid": "rs-1"}
    ps_header = {"alg": "PS256", "kid": "rs-1"}
    pss_as_pkcs1 = _resign(
        kit,
        kit.sign(rs_header, claims(), kit.rsa),
        _sig_bytes(kit.sign(rs_header, claims(), kit.ps256)),
    )
    with pytest.raises(InvalidSignature):
        rs256.verify(pss_as_pkcs1)
    with pytest.raises(AlgorithmNotAllowed):  # the header alg is not the key's
        rs256.verify(kit.sign(ps_header, claims(), kit.ps256))
    with pytest.raises(AlgorithmNotAllowed):
        _rsa_verifier(kit.rsa.public(), ["RS256", "PS256"]).verify(
            kit.sign(ps_header, claims(), kit.ps256)
        )
    with pytest.raises(AlgorithmNotAllowed):
        ps256.verify(kit.sign(rs_header, claims(), kit.rsa))
    assert rs256.verify(kit.sign(rs_header, claims(), kit.rsa)).algorithm == "RS256"


@pytest.mark.parametrize(
    ("bits", "e"), [(1024, 65537), (2047, 65537), (2048, 1), (2048, 2), (2048, 65536)]
)
def test_weak_rsa_keys_are_refused_when_read(bits: int, e: int) -> None:
    with pytest.raises(ConfigurationError):
        JWK.from_dict(rsa_members(bits, e))
    with pytest.raises(ConfigurationError):  # no verifier can be built on them
        _rsa_verifier(JWKSet.from_dict({"keys": [rsa_members(bits, e)]}), ["RS256"])


def test_a_short_rsa_key_is_refused_by_every_loader() -> None:
    private = rsa.generate_private_key(65537, 1024)
    public = private.public_key()
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    loaders: list[Callable[[], object]] = [
        lambda: JWK(public),
        lambda: JWK.from_pem(pem),
        lambda: PrivateJWK(private),
        lambda: _rsa_verifier(public, ["RS256"]),
    ]
    for load in loaders:
        with pytest.raises(ConfigurationError):
            load()


def test_rsa_exponent_three_is_read_as_documented() -> None:
    assert JWK.from_dict(rsa_members(2048, 3)).algorithm == "RS256"


def test_rsa_empty_and_short_signatures(kit: Kit) -> None:
    verifier = _rsa_verifier(kit.rsa.public(), ["RS256"])
    token = kit.sign({"alg": "RS256", "kid": "rs-1"}, claims(), kit.rsa)
    signature = _sig_bytes(token)
    for forged in (b"", signature[:-1], b"\0" + signature, b"\0" * len(signature)):
        with pytest.raises(InvalidSignature):
            verifier.verify(_resign(kit, token, forged))


def test_hs256_signed_with_the_public_key_is_refused(kit: Kit, verifier: TokenVerifier) -> None:
    """The key-confusion token itself (HMAC over the verifier's own public key in every
    form); that no such secret can be configured is tested in ``test_cves.py``."""
    public = kit.es256.private_key.public_key()
    forms = [
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        json.dumps(kit.es256.public().to_public_dict()).encode(),
    ]
    for secret in forms:
        signing_input = f"{b64json({**HEADER, 'alg': 'HS256'})}.{b64json(claims())}"
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        with pytest.raises(AlgorithmNotAllowed):
            verifier.verify(f"{signing_input}.{b64(mac)}")


def test_es256_header_over_an_rsa_key_is_refused(kit: Kit) -> None:
    verifier = _rsa_verifier(kit.rsa.public(), ["RS256", "ES256"])
    with pytest.raises(AlgorithmNotAllowed):
        verifier.verify(kit.sign({"alg": "ES256", "kid": "rs-1"}, claims(), kit.es256))


def test_a_p384_key_never_verifies_es256(kit: Kit) -> None:
    with pytest.raises(ConfigurationError):  # an ES256 binding does not fit the curve
        JWK(kit.es384.private_key.public_key(), algorithm="ES256")
    verifier = _rsa_verifier(kit.es384.public(), ["ES256", "ES384"])
    with pytest.raises(AlgorithmNotAllowed):
        verifier.verify(kit.sign(HEADER, claims(), kit.es256))


@pytest.mark.parametrize(
    ("curve", "header_alg", "allowed", "error"),
    [
        ("Ed25519", "Ed448", ["EdDSA", "Ed25519", "Ed448"], AlgorithmNotAllowed),
        ("Ed448", "Ed25519", ["EdDSA", "Ed25519", "Ed448"], AlgorithmNotAllowed),
        ("Ed25519", "Ed25519", ["EdDSA"], AlgorithmNotAllowed),  # not in the allowlist
        ("Ed25519", "eddsa", ["EdDSA"], AlgorithmNotAllowed),
        ("Ed25519", "ED25519", ["EdDSA", "Ed25519"], AlgorithmNotAllowed),
    ],
)
def test_eddsa_name_variants(
    curve: str, header_alg: str, allowed: list[str], error: type[TokenError]
) -> None:
    private = (
        ed25519.Ed25519PrivateKey.generate()
        if curve == "Ed25519"
        else (ed448.Ed448PrivateKey.generate())
    )
    key = PrivateJWK(private, kid="ed")
    # read without alg, as a key set publishes it: the key verifies under both its names
    verifier = _rsa_verifier(JWK(private.public_key(), kid="ed"), allowed)
    token = _sign({"alg": header_alg, "kid": "ed"}, claims(), key)
    with pytest.raises(error):
        verifier.verify(token)
    # and the key's own names do verify
    for name in sorted({"EdDSA", curve} & set(allowed)):
        verifier.verify(_sign({"alg": name, "kid": "ed"}, claims(), key))


def test_a_kid_naming_two_different_keys_selects_neither(kit: Kit) -> None:
    two = JWKSet.from_dict(
        {"keys": [kit.es256.public().to_public_dict(), kit.other.public().to_public_dict()]}
    )
    verifier = _rsa_verifier(two, ["ES256"])
    for signer in (kit.es256, kit.other):
        with pytest.raises(UnknownKey):
            verifier.verify(kit.sign(HEADER, claims(), signer))
    with pytest.raises(UnknownKey):  # without a kid: two keys, none is chosen
        verifier.verify(kit.sign({"alg": "ES256"}, claims()))


def test_a_dpop_proof_is_no_access_token_and_an_access_token_no_proof(kit: Kit) -> None:
    """typ keeps the two apart both ways, for every profile of access token."""
    holder = kit.other
    proof_header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": holder.public().to_public_dict()}
    dpop_claims = {**claims(), "htm": "GET", "htu": URL}
    token_type: Literal["at+jwt"] | None
    for token_type in (None, "at+jwt"):
        verifier = TokenVerifier(
            issuer=ISSUER,
            audience=AUDIENCE,
            keys=kit.es256.public(),
            algorithms=["ES256"],
            clock=_clock(),
            token_type=token_type,
        )
        with pytest.raises(InvalidTokenType):
            verifier.verify(kit.sign({**proof_header, "kid": "es256-1"}, dpop_claims))
    access = kit.sign({**HEADER, "jwk": holder.public().to_public_dict()}, dpop_claims, holder)
    with pytest.raises(InvalidDPoPProof):
        verify_dpop_proof(access, method="GET", url=URL, access_token=None, config=DPOP, now=T0)


# --------------------------------------------------------------------------------------------
# DPoP proofs (RFC 9449): proof -> expected refusal

URL = "https://api.example/orders/7"
DPOP = DPoPConfig(algorithms=("ES256", "RS256"), max_age=300, leeway=5)
ACCESS = "access.token.value"


def _ath(token: str = ACCESS) -> str:
    return b64(hashlib.sha256(token.encode()).digest())


def _proof(
    kit: Kit,
    *,
    key: PrivateJWK | None = None,
    jwk: Any = _ABSENT,
    signer: Any = None,
    **changes: Any,
) -> str:
    holder = kit.other if key is None else key
    members = holder.public().to_public_dict() if jwk is _ABSENT else jwk
    header = {"typ": "dpop+jwt", "alg": holder.algorithm, "jwk": members}
    body = {"jti": "proof-1", "htm": "GET", "htu": URL, "iat": T0, "ath": _ath()}
    for change, value in changes.items():
        target = header if change.startswith("h_") else body
        name = change.removeprefix("h_")
        if value is _ABSENT:
            target.pop(name, None)
        else:
            target[name] = value
    return kit.sign(header, body, holder if signer is None else signer)


def _private_jwk(kit: Kit) -> dict[str, Any]:
    key = kit.other.private_key
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    d = key.private_numbers().private_value.to_bytes(32, "big")
    return {**kit.other.public().to_public_dict(), "d": b64(d)}


def _dup_proof_header(kit: Kit) -> str:
    members = json.dumps(kit.other.public().to_public_dict())
    text = f'{{"typ":"JWT","alg":"ES256","jwk":{members},"typ":"dpop+jwt"}}'
    body = {"jti": "proof-1", "htm": "GET", "htu": URL, "iat": T0, "ath": _ath()}
    signing_input = f"{b64(text.encode())}.{b64json(body)}"
    return f"{signing_input}.{b64(kit.other.sign(signing_input.encode()))}"


DPOP_CORPUS = [
    ("private-jwk", lambda k: _proof(k, jwk=_private_jwk(k)), InvalidDPoPProof),
    (
        "symmetric-jwk",
        lambda k: _proof(k, jwk={"kty": "oct", "k": b64(b"s" * 32)}),
        InvalidDPoPProof,
    ),
    ("no-jwk", lambda k: _proof(k, h_jwk=_ABSENT), InvalidDPoPProof),
    ("jwk-string", lambda k: _proof(k, h_jwk="key"), InvalidDPoPProof),
    (
        "jwk-of-another-key",
        lambda k: _proof(k, jwk=k.es256.public().to_public_dict()),
        InvalidDPoPProof,
    ),
    (
        "jwk-use-enc",
        lambda k: _proof(k, jwk={**k.other.public().to_public_dict(), "use": "enc"}),
        InvalidDPoPProof,
    ),
    (
        "jwk-alg-other",
        lambda k: _proof(k, jwk={**k.other.public().to_public_dict(), "alg": "ES384"}),
        InvalidDPoPProof,
    ),
    ("alg-none", lambda k: _proof(k, h_alg="none"), InvalidDPoPProof),
    ("alg-hs256", lambda k: _proof(k, h_alg="HS256"), InvalidDPoPProof),
    ("alg-es384-on-p256", lambda k: _proof(k, h_alg="ES384"), InvalidDPoPProof),
    ("alg-rs256-on-ec", lambda k: _proof(k, h_alg="RS256"), InvalidDPoPProof),
    ("typ-missing", lambda k: _proof(k, h_typ=_ABSENT), InvalidDPoPProof),
    ("typ-jwt", lambda k: _proof(k, h_typ="JWT"), InvalidDPoPProof),
    ("typ-at+jwt", lambda k: _proof(k, h_typ="at+jwt"), InvalidDPoPProof),
    ("crit", lambda k: _proof(k, h_crit=["x"], h_x=1), InvalidDPoPProof),
    ("b64-false", lambda k: _proof(k, h_b64=False), InvalidDPoPProof),
    ("zip", lambda k: _proof(k, h_zip="DEF"), InvalidDPoPProof),
    ("htm-lower", lambda k: _proof(k, htm="get"), InvalidDPoPProof),
    ("htm-other", lambda k: _proof(k, htm="POST"), InvalidDPoPProof),
    ("htm-missing", lambda k: _proof(k, htm=_ABSENT), InvalidDPoPProof),
    ("htu-trailing-slash", lambda k: _proof(k, htu=URL + "/"), InvalidDPoPProof),
    ("htu-path-case", lambda k: _proof(k, htu=URL.replace("orders", "Orders")), InvalidDPoPProof),
    ("htu-http", lambda k: _proof(k, htu=URL.replace("https", "http")), InvalidDPoPProof),
    (
        "htu-other-port",
        lambda k: _proof(k, htu=URL.replace("example/", "example:8443/")),
        InvalidDPoPProof,
    ),
    ("htu-other-host", lambda k: _proof(k, htu=URL.replace("api.", "evil.")), InvalidDPoPProof),
    (
        "htu-userinfo",
        lambda k: _proof(k, htu=URL.replace("//", "//api.example@")),
        InvalidDPoPProof,
    ),
    ("htu-prefix", lambda k: _proof(k, htu=URL.rsplit("/", 1)[0]), InvalidDPoPProof),
    ("htu-missing", lambda k: _proof(k, htu=_ABSENT), InvalidDPoPProof),
    ("htu-list", lambda k: _proof(k, htu=[URL]), InvalidDPoPProof),
    ("ath-missing", lambda k: _proof(k, ath=_ABSENT), InvalidDPoPProof),
    ("ath-other-token", lambda k: _proof(k, ath=_ath("other")), InvalidDPoPProof),
    ("ath-padded", lambda k: _proof(k, ath=_ath() + "="), InvalidDPoPProof),
    (
        "ath-hex",
        lambda k: _proof(k, ath=hashlib.sha256(ACCESS.encode()).hexdigest()),
        InvalidDPoPProof,
    ),
    ("iat-too-old", lambda k: _proof(k, iat=T0 - 306), InvalidDPoPProof),
    ("iat-future", lambda k: _proof(k, iat=T0 + 6), InvalidDPoPProof),
    ("iat-string", lambda k: _proof(k, iat=str(T0)), InvalidDPoPProof),
    ("iat-bool", lambda k: _proof(k, iat=True), InvalidDPoPProof),
    ("iat-missing", lambda k: _proof(k, iat=_ABSENT), InvalidDPoPProof),
    ("jti-missing", lambda k: _proof(k, jti=_ABSENT), InvalidDPoPProof),
    ("jti-empty", lambda k: _proof(k, jti=""), InvalidDPoPProof),
    ("jti-number", lambda k: _proof(k, jti=1), InvalidDPoPProof),
    ("signed-by-another-key", lambda k: _proof(k, signer=k.es256), InvalidDPoPProof),
    ("signature-empty", lambda k: _proof(k).rsplit(".", 1)[0] + ".", InvalidDPoPProof),
    ("psychic-signature", lambda k: _resign(k, _proof(k), bytes(64)), InvalidDPoPProof),
    ("five-segments", lambda k: _proof(k) + ".AA.AA", InvalidDPoPProof),
    ("trailing-newline", lambda k: _proof(k) + "\n", InvalidDPoPProof),
    ("padding", lambda k: _pad(_proof(k), 2), InvalidDPoPProof),
    ("header-duplicate-typ", _dup_proof_header, InvalidDPoPProof),
]


@pytest.mark.parametrize(("build", "error"), [pytest.param(b, e, id=n) for n, b, e in DPOP_CORPUS])
def test_dpop_corpus_proof_is_refused(build: Build, error: type[TokenError], kit: Kit) -> None:
    proof = build(kit)
    with pytest.raises(TokenError) as caught:
        verify_dpop_proof(proof, method="GET", url=URL, access_token=ACCESS, config=DPOP, now=T0)
    assert type(caught.value) is error, repr(caught.value)
    assert caught.value.code == error.code


@pytest.mark.parametrize(
    "htu",
    [
        URL,
        "HTTPS://API.EXAMPLE/orders/7",  # scheme and host compare case-insensitively
        "https://api.example:443/orders/7",  # the default port
        URL + "?q=1",  # query and fragment are ignored (RFC 9449 4.3)
        URL + "#frag",
        "https://api.example/orders/%37",  # a percent-encoded unreserved character
    ],
)
def test_dpop_htu_spellings_of_the_request_url_are_accepted(kit: Kit, htu: str) -> None:
    proof = _proof(kit, htu=htu)
    verified = verify_dpop_proof(
        proof, method="GET", url=URL, access_token=ACCESS, config=DPOP, now=T0
    )
    assert verified.jkt == kit.other.thumbprint()


def test_dpop_proof_for_a_token_bound_to_another_key(kit: Kit) -> None:
    with pytest.raises(TokenBindingMismatch):
        verify_dpop_proof(
            _proof(kit),
            method="GET",
            url=URL,
            access_token=ACCESS,
            config=DPOP,
            now=T0,
            jkt=kit.es256.thumbprint(),
        )


def test_dpop_bound_token_as_bearer_and_bearer_token_as_dpop(
    kit: Kit, verifier: TokenVerifier
) -> None:
    bound = verifier.verify(kit.token(cnf={"jkt": kit.other.thumbprint()}))
    plain = verifier.verify(kit.token())
    proof = verify_dpop_proof(
        _proof(kit), method="GET", url=URL, access_token=ACCESS, config=DPOP, now=T0
    )
    with pytest.raises(TokenBindingMismatch):
        check_dpop_binding(bound, proof, "Bearer")
    with pytest.raises(TokenBindingMismatch):
        check_dpop_binding(bound, None, "Bearer")
    with pytest.raises(InvalidDPoPProof):
        check_dpop_binding(bound, None, "DPoP")
    with pytest.raises(TokenBindingMismatch):
        check_dpop_binding(plain, proof, "DPoP")
    assert check_dpop_binding(bound, proof, "DPoP") is True
    assert check_dpop_binding(plain, None, "Bearer") is False


def test_dpop_proof_replay_key_names_the_key_and_jti(kit: Kit) -> None:
    """Replay is refused by the Guard's replay cache (``tests/authn/test_dpop.py`` and the
    Redis tests); the key it stores must change with the jti and with the proof key."""

    def key(proof: str) -> str:
        return verify_dpop_proof(
            proof, method="GET", url=URL, access_token=ACCESS, config=DPOP, now=T0
        ).replay_key()

    first = key(_proof(kit))
    assert key(_proof(kit)) == first
    assert key(_proof(kit, jti="proof-2")) != first
    es256_holder = PrivateJWK.generate("ES256")
    assert key(_proof(kit, key=es256_holder)) != first


@pytest.mark.parametrize(
    ("header", "overrides", "error"),
    [
        ({"typ": "JWT"}, {}, InvalidTokenType),
        ({"typ": _ABSENT}, {}, InvalidTokenType),
        ({"typ": "dpop+jwt"}, {}, InvalidTokenType),
        ({"typ": "at+jwt; charset=utf-8"}, {}, InvalidTokenType),
        ({}, {"jti": None}, MissingClaim),  # revocation and replay checks need one
        ({}, {"jti": _NULL}, InvalidClaim),
        ({}, {"client_id": None}, MissingClaim),
        ({}, {"sub": None}, MissingClaim),
        ({}, {"iat": None}, MissingClaim),
    ],
)
def test_access_token_profile_rows(
    kit: Kit, header: dict[str, Any], overrides: dict[str, Any], error: type[TokenError]
) -> None:
    verifier = TokenVerifier(
        issuer=ISSUER,
        audience=AUDIENCE,
        keys=kit.es256.public(),
        algorithms=["ES256"],
        clock=_clock(),
        token_type="at+jwt",
    )
    head = {k: v for k, v in {**HEADER, "typ": "at+jwt", **header}.items() if v is not _ABSENT}
    body = claims(**{"client_id": "client-1", **overrides})
    token = kit.sign(head, {k: None if v is _NULL else v for k, v in body.items()})
    with pytest.raises(error):
        verifier.verify(token)
    assert verifier.verify(kit.sign({**HEADER, "typ": "at+jwt"}, claims(client_id="c"))).jti


@pytest.mark.parametrize("sub", ["spiffe://example.org/svc/a\n", "spiffe://example.org/svc/a\x00"])
def test_a_subject_with_control_characters_is_text_never_a_spiffe_id(
    kit: Kit, verifier: TokenVerifier, sub: str
) -> None:
    """A generic token's ``sub`` is any string (RFC 7519 4.1.2) and is kept as it is; it never
    names a workload, and the JWT-SVID profile refuses it."""
    assert verifier.verify(kit.token(sub=sub)).subject == sub
    svid = TokenVerifier(
        issuer=ISSUER,
        audience=AUDIENCE,
        keys=kit.es256.public(),
        algorithms=["ES256"],
        clock=_clock(),
        token_type="jwt-svid",
        trust_domain="example.org",
    )
    with pytest.raises(InvalidClaim):
        svid.verify(kit.sign({"alg": "ES256", "kid": "es256-1"}, claims(sub=sub)))
