"""Conversions between JWK members (RFC 7517/7518/8037) and ``cryptography`` key objects.

Input is validated strictly: canonical base64url, EC coordinates of exactly the curve size
and below the field prime (points off the curve are refused by ``cryptography``),
Ed25519/Ed448 only for OKP, RSA of 2048 to 8192 bits with an odd public exponent from 3 to
2**32 (``MIN_RSA_BITS``, ``MAX_RSA_BITS`` and ``MAX_RSA_EXPONENT`` of
:mod:`zerotrust.tokens.algorithms`), private members consistent with the public ones. Errors
are :class:`~zerotrust.errors.ConfigurationError` naming the member, never echoing key bytes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from zerotrust.errors import ConfigurationError
from zerotrust.tokens._b64 import b64url_decode, b64url_encode
from zerotrust.tokens.algorithms import (
    EC_CURVES,
    PrivateKey,
    PublicKey,
    check_edwards_key,
    check_rsa_exponent,
    check_rsa_modulus,
)

__all__ = [
    "PRIVATE_MEMBERS",
    "private_key_from_members",
    "public_key_from_members",
    "public_members",
    "required_members",
    "thumbprint_of",
]

PRIVATE_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_CURVES: Final = {spec[0]: (spec[1], spec[2]) for spec in EC_CURVES.values()}
# The field primes: a coordinate is an integer modulo p (SEC 1 3.2.2.1). ``cryptography``
# reduces a larger one, so the same point would have several spellings (every P-521 point
# fits ``x + p`` in its 66 octets), each with a thumbprint of its own.
_FIELD_PRIMES: Final = {
    "P-256": 2**256 - 2**224 + 2**192 + 2**96 - 1,
    "P-384": 2**384 - 2**128 - 2**96 + 2**32 - 1,
    "P-521": 2**521 - 1,
}
_OKP_SIZES: Final = {"Ed25519": 32, "Ed448": 57}


def _member(members: Mapping[str, Any], name: str) -> str:
    value = members.get(name)
    if not isinstance(value, str):
        raise ConfigurationError(f"JWK member {name!r} is missing or not a string")
    return value


def _bytes(members: Mapping[str, Any], name: str, size: int | None = None) -> bytes:
    try:
        data = b64url_decode(_member(members, name))
    except ValueError:
        raise ConfigurationError(f"JWK member {name!r} is not canonical base64url") from None
    if size is not None and len(data) != size:
        raise ConfigurationError(f"JWK member {name!r} must be exactly {size} bytes")
    if not data:
        raise ConfigurationError(f"JWK member {name!r} is empty")
    return data


def _coordinate(members: Mapping[str, Any], name: str, crv: str) -> bytes:
    data = _bytes(members, name, _CURVES[crv][1])
    if int.from_bytes(data, "big") >= _FIELD_PRIMES[crv]:
        raise ConfigurationError(f"JWK member {name!r} is not a coordinate of {crv}")
    return data


def _int(members: Mapping[str, Any], name: str) -> int:
    # Leading zero octets (which RFC 7518 2 tells writers to omit) are read as the same number,
    # as most JOSE libraries do: some publishers pad n, and thumbprints are re-encoded minimally.
    return int.from_bytes(_bytes(members, name), "big")


def _kty(members: Mapping[str, Any]) -> str:
    kty = _member(members, "kty")
    if kty == "oct":
        raise ConfigurationError("'oct' keys are not accepted as JWKs; use SecretKey for HMAC")
    if kty not in ("EC", "OKP", "RSA"):
        raise ConfigurationError("unsupported JWK key type")
    return kty


def public_key_from_members(members: Mapping[str, Any]) -> PublicKey:
    """Build the public key a JWK describes (its private members, if any, are not read)."""
    kty = _kty(members)
    if kty == "EC":
        crv = _member(members, "crv")
        if crv not in _CURVES:
            raise ConfigurationError("unsupported EC curve")
        curve_cls = _CURVES[crv][0]
        x = int.from_bytes(_coordinate(members, "x", crv), "big")
        y = int.from_bytes(_coordinate(members, "y", crv), "big")
        try:
            return ec.EllipticCurvePublicNumbers(x, y, curve_cls()).public_key()
        except ValueError:
            raise ConfigurationError("EC point is not on the curve") from None
    if kty == "OKP":
        crv = _member(members, "crv")
        if crv not in _OKP_SIZES:
            raise ConfigurationError("unsupported OKP curve (signing keys only)")
        raw = _bytes(members, "x", _OKP_SIZES[crv])
        try:
            okp: ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
            if crv == "Ed25519":
                okp = ed25519.Ed25519PublicKey.from_public_bytes(raw)
            else:
                okp = ed448.Ed448PublicKey.from_public_bytes(raw)
        except ValueError:
            raise ConfigurationError("invalid OKP public key") from None
        check_edwards_key(okp)
        return okp
    n = _int(members, "n")
    e = _int(members, "e")
    check_rsa_modulus(n)
    check_rsa_exponent(e)
    try:
        return rsa.RSAPublicNumbers(e, n).public_key()
    except ValueError:
        raise ConfigurationError("invalid RSA public key") from None


def required_members(members: Mapping[str, Any]) -> dict[str, str]:
    """The required public members (RFC 7638 §3.2) of a JWK object, canonically encoded as
    :func:`public_members` gives them for the key it describes, read without building that key:
    its thumbprint can be compared before the key is imported. A key type, curve or member
    encoding :func:`public_key_from_members` refuses is refused here too (ConfigurationError);
    the key itself (its point, its size) is not checked."""
    kty = _kty(members)
    if kty == "RSA":
        n, e = _int(members, "n"), _int(members, "e")  # leading zero octets dropped
        return {"e": b64url_encode(_unsigned(e)), "kty": "RSA", "n": b64url_encode(_unsigned(n))}
    crv = _member(members, "crv")
    if kty == "EC":
        if crv not in _CURVES:
            raise ConfigurationError("unsupported EC curve")
        x, y = _coordinate(members, "x", crv), _coordinate(members, "y", crv)
        return {"crv": crv, "kty": "EC", "x": b64url_encode(x), "y": b64url_encode(y)}
    if crv not in _OKP_SIZES:
        raise ConfigurationError("unsupported OKP curve (signing keys only)")
    return {"crv": crv, "kty": "OKP", "x": b64url_encode(_bytes(members, "x", _OKP_SIZES[crv]))}


def private_key_from_members(members: Mapping[str, Any]) -> PrivateKey:
    """Build the private key of a private JWK and check it matches the public members."""
    public = public_key_from_members(members)
    if "d" not in members:
        raise ConfigurationError("JWK has no private member 'd'")
    try:
        if isinstance(public, ec.EllipticCurvePublicKey):
            curve_cls, size = _CURVES[members["crv"]]
            ec_key = ec.derive_private_key(_int_sized(members, "d", size), curve_cls())
            if ec_key.public_key().public_numbers() != public.public_numbers():
                raise ConfigurationError("EC private key does not match its public members")
            return ec_key
        if isinstance(public, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
            raw = _bytes(members, "d", _OKP_SIZES[members["crv"]])
            okp_key: ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey
            if isinstance(public, ed25519.Ed25519PublicKey):
                okp_key = ed25519.Ed25519PrivateKey.from_private_bytes(raw)
            else:
                okp_key = ed448.Ed448PrivateKey.from_private_bytes(raw)
            if public_members(okp_key.public_key()) != public_members(public):
                raise ConfigurationError("OKP private key does not match its public members")
            return okp_key
        return _rsa_private(members, public)
    except ValueError:
        raise ConfigurationError("invalid private key members") from None


def _int_sized(members: Mapping[str, Any], name: str, size: int) -> int:
    return int.from_bytes(_bytes(members, name, size), "big")


def _rsa_private(members: Mapping[str, Any], public: PublicKey) -> rsa.RSAPrivateKey:
    assert isinstance(public, rsa.RSAPublicKey)
    if "oth" in members:
        raise ConfigurationError("multi-prime RSA keys are not supported")
    numbers = public.public_numbers()
    d = _int(members, "d")
    crt = ("p", "q", "dp", "dq", "qi")
    if all(name in members for name in crt):
        p, q, dp, dq, qi = (_int(members, name) for name in crt)
    elif any(name in members for name in crt):
        raise ConfigurationError("RSA private JWK has some but not all of p, q, dp, dq, qi")
    else:
        p, q = rsa.rsa_recover_prime_factors(numbers.n, numbers.e, d)
        dp, dq, qi = rsa.rsa_crt_dmp1(d, p), rsa.rsa_crt_dmq1(d, q), rsa.rsa_crt_iqmp(p, q)
    return rsa.RSAPrivateNumbers(p, q, d, dp, dq, qi, numbers).private_key()


def public_members(key: PublicKey) -> dict[str, str]:
    """The required public members of ``key`` (RFC 7638 §3.2), canonically encoded."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        for crv, (curve_cls, size) in _CURVES.items():
            if isinstance(key.curve, curve_cls):
                nums = key.public_numbers()
                return {
                    "crv": crv,
                    "kty": "EC",
                    "x": b64url_encode(nums.x.to_bytes(size, "big")),
                    "y": b64url_encode(nums.y.to_bytes(size, "big")),
                }
        raise ConfigurationError(f"unsupported elliptic curve {key.curve.name!r}")
    if isinstance(key, ed25519.Ed25519PublicKey):
        return {"crv": "Ed25519", "kty": "OKP", "x": b64url_encode(key.public_bytes_raw())}
    if isinstance(key, ed448.Ed448PublicKey):
        return {"crv": "Ed448", "kty": "OKP", "x": b64url_encode(key.public_bytes_raw())}
    if isinstance(key, rsa.RSAPublicKey):
        rsa_nums = key.public_numbers()
        return {
            "e": b64url_encode(_unsigned(rsa_nums.e)),
            "kty": "RSA",
            "n": b64url_encode(_unsigned(rsa_nums.n)),
        }
    raise ConfigurationError(f"unsupported key type {type(key).__name__}")


def _unsigned(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8 or 1, "big")


def thumbprint_of(members: Mapping[str, str]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url) of the required members."""
    canonical = json.dumps(dict(sorted(members.items())), separators=(",", ":"))
    return b64url_encode(hashlib.sha256(canonical.encode("utf-8")).digest())
