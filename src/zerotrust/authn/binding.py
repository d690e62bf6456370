"""Sender-constrained tokens: RFC 8705 certificate binding and RFC 9449 DPoP proofs.

A bound token is only accepted from the party holding the bound key:

* ``cnf.x5t#S256`` (RFC 8705 §3): the connection (direct mTLS, or a trusted proxy's forwarded
  certificate) must present exactly that certificate;
* ``cnf.jkt`` (RFC 9449 §6): the request must carry a valid DPoP proof signed by that key,
  with the ``DPoP`` authorization scheme. A DPoP-bound token sent as plain ``Bearer`` is refused.

Proof ``jti`` values are remembered in a replay cache by the caller (the Guard).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from zerotrust.errors import ConfigurationError, MalformedToken, TokenBindingMismatch, TokenError
from zerotrust.tokens._b64 import b64url_encode, decode_canonical, is_canonical
from zerotrust.tokens._json import JSONError, loads_object
from zerotrust.tokens.algorithms import ASYMMETRIC_ALGORITHMS
from zerotrust.tokens.keys import JWK
from zerotrust.tokens.verified import VerifiedToken
from zerotrust.x509.verify import VerifiedPeer

__all__ = [
    "DPoPConfig",
    "DPoPProof",
    "check_certificate_binding",
    "normalize_htu",
    "verify_dpop_proof",
]

_COMPACT = re.compile(rb"([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)")
_MAX_PROOF_BYTES = 8192
_MAX_JTI = 256
_MAX_IAT = 10**15  # seconds: far beyond any real time, and exactly representable as a float


def _cert_thumbprint(peer: VerifiedPeer) -> str:
    return b64url_encode(bytes.fromhex(peer.fingerprint))


def _same(presented: str, expected: str) -> bool:
    """Constant-time equality of a value from a token or proof (any string JSON can hold, lone
    surrogates included) and the value computed here."""
    return hmac.compare_digest(
        presented.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


def check_certificate_binding(token: VerifiedToken, peer: VerifiedPeer | None) -> bool:
    """Enforce ``cnf.x5t#S256``; returns whether the token was certificate-bound."""
    cnf = token.cnf
    if not cnf or "x5t#S256" not in cnf:
        return False
    expected = cnf["x5t#S256"]
    if not isinstance(expected, str):
        raise TokenBindingMismatch("cnf.x5t#S256 is not a string")
    if peer is None:
        raise TokenBindingMismatch("certificate-bound token presented without a client certificate")
    if not _same(expected, _cert_thumbprint(peer)):
        raise TokenBindingMismatch("token is bound to another certificate")
    return True


@dataclass(frozen=True)
class DPoPConfig:
    """How DPoP proofs are checked: accepted algorithms and the ``iat`` window in seconds."""

    algorithms: tuple[str, ...] = ("ES256", "ES384", "EdDSA", "PS256", "RS256")
    max_age: float = 300.0
    leeway: float = 5.0

    def __post_init__(self) -> None:
        bad = set(self.algorithms) - ASYMMETRIC_ALGORITHMS
        if not self.algorithms or bad:
            raise ConfigurationError(
                f"DPoP proofs need asymmetric algorithms; refused: {sorted(bad)}"
            )
        if not (0 < self.max_age <= 3600) or not (0 <= self.leeway <= 300):
            raise ConfigurationError("DPoP max_age must be in (0, 3600] and leeway in [0, 300]")


@dataclass(frozen=True, slots=True)
class DPoPProof:
    """A verified proof: the JWK thumbprint (``jkt``), its ``jti`` and ``iat``."""

    jkt: str
    jti: str
    iat: float

    def replay_key(self) -> str:
        return f"dpop:{self.jkt}:{self.jti}"


def normalize_htu(url: str) -> str:
    """Scheme, host, port and path of ``url`` for ``htu`` comparison (RFC 9449 §4.3)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise MalformedToken("DPoP htu is not a URL") from None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme not in ("http", "https") or not host:
        raise MalformedToken("DPoP htu is not an http(s) URL")
    default = 443 if scheme == "https" else 80
    netloc = host if port in (None, default) else f"{host}:{port}"
    if ":" in host:
        netloc = f"[{host}]" if port in (None, default) else f"[{host}]:{port}"
    return f"{scheme}://{netloc}{parts.path or '/'}"


def _claim_str(claims: Mapping[str, Any], name: str, limit: int = 2048) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value or len(value) > limit:
        raise MalformedToken(f"DPoP proof has no valid {name!r}")
    return value


def verify_dpop_proof(
    proof: str,
    *,
    method: str,
    url: str,
    access_token: str | None,
    config: DPoPConfig,
    now: float,
) -> DPoPProof:
    """Verify a DPoP proof JWT for this request (signature, ``typ``, ``htm``, ``htu``, ``iat``,
    ``ath``); raises a :class:`~zerotrust.errors.TokenError` subclass."""
    raw = proof.encode("ascii", "replace")
    if len(raw) > _MAX_PROOF_BYTES:
        raise MalformedToken("DPoP proof is too large")
    match = _COMPACT.fullmatch(raw)
    if match is None or not all(is_canonical(seg) for seg in match.groups()):
        raise MalformedToken("DPoP proof is not a compact JWS")
    head, body, sig = match.groups()
    try:
        header = loads_object(decode_canonical(head))
        claims = loads_object(decode_canonical(body))
    except JSONError:
        raise MalformedToken("DPoP proof is not valid JSON") from None
    if header.get("typ") != "dpop+jwt":
        raise MalformedToken("DPoP proof typ must be dpop+jwt")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in config.algorithms:
        raise TokenError("DPoP proof algorithm not accepted")
    if "crit" in header:
        raise MalformedToken("DPoP proof with crit is refused")
    members = header.get("jwk")
    if not isinstance(members, Mapping):
        raise MalformedToken("DPoP proof has no jwk header")
    try:
        jwk = JWK.from_dict(members)
        if jwk.algorithm != alg:
            jwk = JWK(jwk.public_key, algorithm=alg)
    except ConfigurationError as exc:
        raise MalformedToken(f"DPoP proof jwk is unusable: {exc}") from None
    if not jwk._verify(decode_canonical(sig), raw[: len(head) + 1 + len(body)]):
        raise TokenBindingMismatch("DPoP proof signature is invalid")
    jti = _claim_str(claims, "jti", _MAX_JTI)
    if _claim_str(claims, "htm", 32) != method.upper():
        raise TokenBindingMismatch("DPoP proof htm does not match the request method")
    if normalize_htu(_claim_str(claims, "htu")) != normalize_htu(url):
        raise TokenBindingMismatch("DPoP proof htu does not match the request URL")
    iat = claims.get("iat")
    if (
        isinstance(iat, bool)
        or not isinstance(iat, (int, float))
        or (isinstance(iat, int) and not -_MAX_IAT < iat < _MAX_IAT)  # before any float()
        or not math.isfinite(iat)
    ):
        raise MalformedToken("DPoP proof iat is not a number")
    if iat > now + config.leeway or iat < now - config.max_age - config.leeway:
        raise TokenBindingMismatch("DPoP proof iat is outside the accepted window")
    if access_token is not None:
        ath = b64url_encode(hashlib.sha256(access_token.encode("ascii")).digest())
        presented = claims.get("ath")
        if not isinstance(presented, str) or not _same(presented, ath):
            raise TokenBindingMismatch("DPoP proof ath does not match the access token")
    return DPoPProof(jkt=jwk.thumbprint(), jti=jti, iat=float(iat))


def check_dpop_binding(token: VerifiedToken, proof: DPoPProof | None, scheme: str | None) -> bool:
    """Enforce ``cnf.jkt``: returns whether the token is DPoP-bound (and properly presented)."""
    cnf = token.cnf
    jkt = cnf.get("jkt") if cnf else None
    if jkt is None:
        if scheme == "DPoP":
            raise TokenBindingMismatch("DPoP scheme used with a token that is not DPoP-bound")
        return False
    if scheme != "DPoP":
        raise TokenBindingMismatch("DPoP-bound token presented as a Bearer token")
    if proof is None:
        raise TokenBindingMismatch("DPoP-bound token presented without a DPoP proof")
    if not isinstance(jkt, str) or not _same(jkt, proof.jkt):
        raise TokenBindingMismatch("DPoP proof key does not match the token's cnf.jkt")
    return True
