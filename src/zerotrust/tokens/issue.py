"""``TokenIssuer``: sign short-lived JWTs (ES256 by default; EdDSA, RS256, PS256, ...).

Each token carries ``iss``, ``sub``, ``aud``, ``iat``, ``nbf``, ``exp`` and a random 128-bit
``jti``, optionally ``scope``, a certificate binding (``cnf.x5t#S256``, RFC 8705) and a
delegation chain (``act``, RFC 8693). The header carries ``alg``, ``kid`` and ``typ``.
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from zerotrust._clock import Clock
from zerotrust._scopes import scope_string
from zerotrust.errors import ConfigurationError, InvalidSpiffeId
from zerotrust.identity import SpiffeId
from zerotrust.tokens._b64 import b64url_encode
from zerotrust.tokens._profiles import AT_JWT, JWT_SVID, string_tuple
from zerotrust.tokens.algorithms import JWT_SVID_ALGORITHMS, PrivateKey
from zerotrust.tokens.claims import clock_function
from zerotrust.tokens.keyring import KeyRing, signing_key
from zerotrust.tokens.keys import PrivateJWK

__all__ = ["TokenIssuer", "certificate_thumbprint"]

REGISTERED_CLAIMS: Final = frozenset(
    {"iss", "sub", "aud", "iat", "nbf", "exp", "jti", "scope", "scp", "act"}
)
"""Claims the issuer sets itself; ``extra_claims`` may not contain them. (``cnf`` may come
from ``extra_claims``, e.g. a DPoP ``jkt``, unless ``bind_cert`` sets it.)"""
_TYP: Final = {None: "JWT", "jwt": "JWT", JWT_SVID: "JWT", AT_JWT: "at+jwt"}
_MAX_TTL: Final = 366 * 24 * 3600


def certificate_thumbprint(cert: x509.Certificate | bytes) -> str:
    """RFC 8705 ``x5t#S256``: base64url SHA-256 of the certificate's DER encoding."""
    if isinstance(cert, x509.Certificate):
        der = cert.public_bytes(serialization.Encoding.DER)
    elif isinstance(cert, (bytes, bytearray, memoryview)):
        der = bytes(cert)
        try:
            x509.load_der_x509_certificate(der)
        except ValueError:
            raise ConfigurationError("bind_cert bytes are not a DER certificate") from None
    else:
        raise ConfigurationError("bind_cert must be an x509.Certificate or DER bytes")
    return b64url_encode(hashlib.sha256(der).digest())


def _object(value: object) -> dict[Any, Any]:
    """A mapping that is no dict (the read-only objects of a verified token) as a dict."""
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _json(value: object) -> bytes:
    try:
        text = json.dumps(value, separators=(",", ":"), allow_nan=False, default=_object)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"claims are not JSON-serialisable: {exc}") from None
    if "\\ud" in text:  # a surrogate escaped: valid only as a pair standing for one character
        try:  # a string with a surrogate code point is no Unicode text (RFC 8259 8.2, RFC 7493 2.1)
            json.dumps(value, ensure_ascii=False, default=_object).encode("utf-8")
        except UnicodeEncodeError:
            raise ConfigurationError(
                "claims and header values must be valid Unicode: a string holds a surrogate"
            ) from None
    return text.encode("ascii")


def _scope(scopes: Iterable[str]) -> str | None:
    return scope_string(scopes)


def _audience(audience: str | Sequence[str]) -> str | list[str]:
    values = list(dict.fromkeys(string_tuple(audience, "audience")))
    return values[0] if len(values) == 1 else values


def _check_act(act: object) -> None:
    depth = 0
    while act is not None:
        if not isinstance(act, Mapping) or not all(isinstance(k, str) for k in act):
            raise ConfigurationError("act must be a JSON object (its nested act too)")
        depth += 1
        if depth > 8:
            raise ConfigurationError("act chain is deeper than 8 actors")
        act = act.get("act")


class TokenIssuer:
    """Signs tokens as ``issuer`` with a private key, a :class:`PrivateJWK` or a :class:`KeyRing`.

    For a bare key, ``algorithm`` defaults to the key's (ES256 for P-256, EdDSA for Ed25519,
    RS256 for RSA; pass ``"PS256"`` for RSA-PSS) and ``kid`` to the RFC 7638 thumbprint. With
    a :class:`KeyRing`, the ring's current key signs and ``kid``/``algorithm`` may not be given.
    """

    __slots__ = ("_issuer", "_now", "_ring")

    def __init__(
        self,
        key: PrivateKey | PrivateJWK | KeyRing,
        *,
        issuer: str,
        kid: str | None = None,
        algorithm: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        if not isinstance(issuer, str) or not issuer:
            raise ConfigurationError("issuer must be a non-empty string")
        if isinstance(key, KeyRing):
            if kid is not None or algorithm is not None:
                raise ConfigurationError("kid and algorithm come from the KeyRing's keys")
            ring = key
        else:
            jwk = key if isinstance(key, PrivateJWK) else PrivateJWK(key, algorithm=algorithm)
            if kid is not None:
                if jwk.kid is not None and jwk.kid != kid:
                    raise ConfigurationError("kid differs from the PrivateJWK's kid")
                jwk = jwk.with_kid(kid)
            ring = KeyRing(signing_key(jwk, algorithm=algorithm))
        self._ring = ring
        self._issuer = issuer
        self._now = clock_function(clock)

    @property
    def issuer(self) -> str:
        """The ``iss`` of issued tokens."""
        return self._issuer

    @property
    def key_ring(self) -> KeyRing:
        """The key ring (also a key source of the published keys)."""
        return self._ring

    def jwks(self) -> dict[str, Any]:
        """The public JWKS to publish: current and still-published previous keys."""
        return self._ring.jwks()

    def issue(
        self,
        *,
        subject: str,
        audience: str | Sequence[str],
        scopes: Iterable[str] = (),
        ttl: float = 300,
        extra_claims: Mapping[str, Any] | None = None,
        bind_cert: x509.Certificate | bytes | None = None,
        act: Mapping[str, Any] | None = None,
        token_type: str | None = None,
    ) -> str:
        """Sign and return a compact JWT valid for ``ttl`` seconds from now.

        ``token_type``: ``None``/``"jwt"`` (``typ: JWT``), ``"jwt-svid"`` (``subject`` must
        be a workload's SPIFFE ID, and the key an RS/ES/PS one) or ``"at+jwt"`` (RFC 9068;
        ``extra_claims`` must hold ``client_id``).
        ``extra_claims`` may not set the registered claims the issuer writes itself; it may
        carry a ``cnf`` confirmation (e.g. DPoP's ``jkt``) when ``bind_cert`` is not used.
        """
        if token_type not in _TYP:
            raise ConfigurationError("token_type must be None, 'jwt', 'jwt-svid' or 'at+jwt'")
        if not isinstance(subject, str) or not subject:
            raise ConfigurationError("subject must be a non-empty string")
        if token_type == JWT_SVID:
            try:
                spiffe_id = SpiffeId.parse(subject)
            except InvalidSpiffeId as exc:
                raise ConfigurationError(f"a JWT-SVID subject must be a SPIFFE ID: {exc}") from None
            if not spiffe_id.path:
                raise ConfigurationError("a JWT-SVID subject is a workload's ID, with a path")
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
            raise ConfigurationError("ttl must be a number of seconds")
        if not (0 < ttl <= _MAX_TTL):
            raise ConfigurationError(f"ttl must be positive and at most {_MAX_TTL} seconds")
        now = math.floor(self._now())
        claims: dict[str, Any] = {
            "iss": self._issuer,
            "sub": subject,
            "aud": _audience(audience),
            "iat": now,
            "nbf": now,
            "exp": now + math.ceil(ttl),
            "jti": secrets.token_urlsafe(16),
        }
        scope = _scope(scopes)
        if scope is not None:
            claims["scope"] = scope
        if bind_cert is not None:
            claims["cnf"] = {"x5t#S256": certificate_thumbprint(bind_cert)}
        if act is not None:
            _check_act(act)
            claims["act"] = act
        if extra_claims:
            if not all(isinstance(name, str) for name in extra_claims):
                raise ConfigurationError("claim names must be strings")
            clash = REGISTERED_CLAIMS.intersection(extra_claims)
            if clash:
                raise ConfigurationError(f"extra_claims may not set {sorted(clash)}")
            if "cnf" in extra_claims:
                if bind_cert is not None:
                    raise ConfigurationError("give cnf either via bind_cert or extra_claims")
                if not isinstance(extra_claims["cnf"], Mapping) or not extra_claims["cnf"]:
                    raise ConfigurationError("cnf must be a non-empty JSON object")
            claims.update(extra_claims)
        if token_type == AT_JWT and not isinstance(claims.get("client_id"), str):
            raise ConfigurationError("an at+jwt token needs extra_claims={'client_id': ...}")
        key = self._ring.current
        if token_type == JWT_SVID and key.algorithm not in JWT_SVID_ALGORITHMS:  # JWT-SVID 2.1
            raise ConfigurationError(
                f"JWT-SVIDs are signed with RS*, ES* or PS* algorithms only, not {key.algorithm}"
            )
        header = {"alg": key.algorithm, "kid": key.kid, "typ": _TYP[token_type]}
        signing_input = (b64url_encode(_json(header)) + "." + b64url_encode(_json(claims))).encode(
            "ascii"
        )
        return signing_input.decode("ascii") + "." + b64url_encode(key.sign(signing_input))

    def __repr__(self) -> str:
        return f"TokenIssuer(issuer={self._issuer!r}, kid={self._ring.current.kid!r})"
