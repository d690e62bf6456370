"""JWS algorithms (RFC 7518, RFC 8037): the allowlist rules and per-key sign/verify functions.

Every key is bound to exactly one algorithm, and each binding produces a closure that can
only do that algorithm: an ES256 key's verifier checks a P-256/SHA-256 ECDSA signature and
nothing else, an HMAC verifier exists only for a :class:`~zerotrust.tokens.SecretKey`. Which
verifier runs is therefore decided by the key, never by the token header, which is what makes
algorithm-confusion attacks impossible by construction.

``none`` is not an algorithm here: it is not in the table, cannot be allowed and can never be
selected.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable
from typing import Any, Final, TypeAlias

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from zerotrust.errors import ConfigurationError
from zerotrust.tokens._edwards import weak_edwards_key

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "HMAC_ALGORITHMS",
    "JWT_SVID_ALGORITHMS",
    "SUPPORTED_ALGORITHMS",
    "check_allowlist",
]

Verifier: TypeAlias = Callable[[bytes, bytes], bool]
"""``verify(signature, signing_input) -> bool``; never raises."""
Signer: TypeAlias = Callable[[bytes], bytes]
"""``sign(signing_input) -> signature`` in the JWS encoding."""
PublicKey: TypeAlias = (
    ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey | rsa.RSAPublicKey
)
PrivateKey: TypeAlias = (
    ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
    | rsa.RSAPrivateKey
)

_HASHES: Final[dict[str, type[hashes.HashAlgorithm]]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
# JWS name -> (curve name, curve class, coordinate size in bytes, group order n)
EC_CURVES: Final[dict[str, tuple[str, type[ec.EllipticCurve], int, int]]] = {
    "ES256": (
        "P-256",
        ec.SECP256R1,
        32,
        0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    ),
    "ES384": (
        "P-384",
        ec.SECP384R1,
        48,
        int(
            "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF"
            "C7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973",
            16,
        ),
    ),
    "ES512": (
        "P-521",
        ec.SECP521R1,
        66,
        int(
            "01FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF"
            "FA51868783BF2F966B7FCC0148F709A5D03BB5C9B8899C47AEBB6FB71E91386409",
            16,
        ),
    ),
}
CURVE_ALGORITHMS: Final = {spec[0]: name for name, spec in EC_CURVES.items()}
RSA_ALGORITHMS: Final = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
HMAC_ALGORITHMS: Final = frozenset({"HS256", "HS384", "HS512"})
"""HMAC algorithms: usable only with a :class:`~zerotrust.tokens.SecretKey`."""
_ED25519: Final = (ed25519.Ed25519PublicKey, ed25519.Ed25519PrivateKey)
_ED448: Final = (ed448.Ed448PublicKey, ed448.Ed448PrivateKey)
# "EdDSA" (RFC 8037) covers both curves; "Ed25519"/"Ed448" are the fully-specified names of
# RFC 9864. A key is still bound to exactly one of these names.
OKP_ALGORITHMS: Final = {"EdDSA": _ED25519 + _ED448, "Ed25519": _ED25519, "Ed448": _ED448}
ASYMMETRIC_ALGORITHMS: Final = frozenset(EC_CURVES) | RSA_ALGORITHMS | frozenset(OKP_ALGORITHMS)
"""Public-key signature algorithms."""
SUPPORTED_ALGORITHMS: Final = ASYMMETRIC_ALGORITHMS | HMAC_ALGORITHMS
"""Every algorithm name this package can verify (case-sensitive, as in RFC 7518)."""
JWT_SVID_ALGORITHMS: Final = frozenset(EC_CURVES) | RSA_ALGORITHMS
"""Algorithms the JWT-SVID specification allows (RS*, ES*, PS*)."""

#: The sizes of the RSA keys accepted, in bits: the smallest that is still safe, and the largest
#: in use (each doubling of the modulus makes every verification, a forged token's included,
#: about four times as costly).
MIN_RSA_BITS: Final = 2048
MAX_RSA_BITS: Final = 8192
#: The largest RSA key a DPoP proof may carry (its key is the sender's choice, and checking its
#: signature costs more with its size): servers refuse larger ones, clients never sign with one.
MAX_DPOP_RSA_BITS: Final = 4096
#: The largest RSA public exponent accepted (every issuer uses 65537; BoringSSL and Go refuse
#: exponents this large or larger too), which bounds the cost of a verification as well.
MAX_RSA_EXPONENT: Final = 1 << 32
HMAC_MIN_KEY_BYTES: Final = {"HS256": 32, "HS384": 48, "HS512": 64}


def is_none(name: object) -> bool:
    """Whether ``name`` spells the unsecured ``none`` algorithm, in any case."""
    return isinstance(name, str) and name.strip().lower() == "none"


def check_allowlist(algorithms: object) -> frozenset[str]:
    """Validate a verifier's algorithm allowlist; raises ConfigurationError.

    The list is required and non-empty (no default that would trust a header), may not
    contain ``none`` in any spelling, unknown names, or HMAC mixed with public-key algorithms.
    """
    if algorithms is None or isinstance(algorithms, (str, bytes)):
        raise ConfigurationError("algorithms must be a non-empty list of algorithm names")
    if not isinstance(algorithms, Iterable):
        raise ConfigurationError("algorithms must be a non-empty list of algorithm names")
    names = list(algorithms)
    if not names:
        raise ConfigurationError("algorithms must not be empty: name the algorithms to accept")
    for name in names:
        if is_none(name):
            raise ConfigurationError("the 'none' algorithm can never be allowed")
        if not isinstance(name, str) or name not in SUPPORTED_ALGORITHMS:
            raise ConfigurationError(
                f"unsupported algorithm {name!r}; supported: {sorted(SUPPORTED_ALGORITHMS)}"
            )
    allowed = frozenset(names)
    if allowed & HMAC_ALGORITHMS and allowed - HMAC_ALGORITHMS:
        raise ConfigurationError("HMAC and public-key algorithms cannot be mixed in one verifier")
    return allowed


def default_algorithm(key: PublicKey | PrivateKey) -> str:
    """The algorithm a key is bound to when none is named (P-256 -> ES256, RSA -> RS256...)."""
    if isinstance(key, (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey)):
        algorithm = CURVE_ALGORITHMS.get(_curve_name(key.curve))
        if algorithm is None:
            raise ConfigurationError(f"unsupported elliptic curve {key.curve.name!r}")
        return algorithm
    if isinstance(
        key,
        (
            ed25519.Ed25519PublicKey,
            ed25519.Ed25519PrivateKey,
            ed448.Ed448PublicKey,
            ed448.Ed448PrivateKey,
        ),
    ):
        return "EdDSA"
    if isinstance(key, (rsa.RSAPublicKey, rsa.RSAPrivateKey)):
        return "RS256"
    raise ConfigurationError(f"unsupported key type {type(key).__name__}")


def inferred_algorithms(key: PublicKey, use: str | None = None) -> frozenset[str]:
    """The names of the one algorithm a key published without ``alg`` verifies (RFC 8725 3.1:
    one algorithm per key): its curve's for EC keys, RS256 for RSA keys, and EdDSA for
    Ed25519/Ed448 keys, under both its RFC 8037 name and its RFC 9864 name (``Ed25519`` or
    ``Ed448``: the same operation). The verifier's allowlist is checked first.

    The one exception is a SPIFFE JWT authority (``use`` ``"jwt-svid"``), which SPIFFE bundles
    publish without ``alg``: the JWT-SVID specification (section 3) lets its issuer sign with
    any of RS256, RS384, RS512, PS256, PS384 and PS512, so an RSA authority verifies those six,
    as go-spiffe's validators do (an EC authority still verifies its curve's algorithm only)."""
    if use == "jwt-svid" and isinstance(key, rsa.RSAPublicKey):
        return RSA_ALGORITHMS
    if isinstance(key, ed25519.Ed25519PublicKey):
        return frozenset({"EdDSA", "Ed25519"})
    if isinstance(key, ed448.Ed448PublicKey):
        return frozenset({"EdDSA", "Ed448"})
    return frozenset({default_algorithm(key)})


def _curve_name(curve: ec.EllipticCurve) -> str:
    for name, curve_cls, _, _ in EC_CURVES.values():
        if isinstance(curve, curve_cls):
            return name
    return curve.name


def check_key_algorithm(key: PublicKey | PrivateKey, algorithm: str) -> None:
    """Raise ConfigurationError unless ``key`` can be used with ``algorithm``."""
    if not isinstance(algorithm, str) or algorithm not in ASYMMETRIC_ALGORITHMS:
        # a key document's alg is not echoed unless it is a known name (documents may be hostile)
        known = isinstance(algorithm, str) and algorithm in SUPPORTED_ALGORITHMS
        shown = repr(algorithm) if known else "(unsupported)"
        raise ConfigurationError(f"algorithm {shown} is not a public-key JWS algorithm")
    if algorithm in EC_CURVES:
        curve_cls = EC_CURVES[algorithm][1]
        ok = isinstance(key, (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey)) and (
            isinstance(key.curve, curve_cls)
        )
    elif algorithm in OKP_ALGORITHMS:
        ok = isinstance(key, OKP_ALGORITHMS[algorithm])
    else:
        ok = isinstance(key, (rsa.RSAPublicKey, rsa.RSAPrivateKey))
    if not ok:
        raise ConfigurationError(
            f"a {type(key).__name__} cannot be used with {algorithm} (key/algorithm mismatch)"
        )
    if isinstance(key, (rsa.RSAPublicKey, rsa.RSAPrivateKey)):
        public = key if isinstance(key, rsa.RSAPublicKey) else key.public_key()
        numbers = public.public_numbers()
        check_rsa_modulus(numbers.n)
        check_rsa_exponent(numbers.e)
    elif isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        check_edwards_key(key)


def check_edwards_key(key: ed25519.Ed25519PublicKey | ed448.Ed448PublicKey) -> None:
    """Refuse a small-order or non-canonical Ed25519/Ed448 public key: any signature of the
    neutral element verifies with one (see :mod:`zerotrust.tokens._edwards`)."""
    curve = "Ed25519" if isinstance(key, ed25519.Ed25519PublicKey) else "Ed448"
    if weak_edwards_key(curve, key.public_bytes_raw()):
        raise ConfigurationError(f"weak {curve} public key (small order or non-canonical)")


def check_rsa_size(bits: int) -> None:
    """Refuse an RSA modulus outside ``MIN_RSA_BITS`` to ``MAX_RSA_BITS`` bits."""
    if bits < MIN_RSA_BITS:
        raise ConfigurationError(f"RSA keys must have at least {MIN_RSA_BITS} bits, not {bits}")
    if bits > MAX_RSA_BITS:
        raise ConfigurationError(f"RSA keys larger than {MAX_RSA_BITS} bits are refused")


def check_rsa_modulus(n: int) -> None:
    """Refuse an RSA modulus of a size :func:`check_rsa_size` refuses, or an even one: the
    product of two odd primes is odd (``cryptography`` builds a public key of any modulus)."""
    check_rsa_size(n.bit_length())
    if n % 2 == 0:
        raise ConfigurationError("RSA modulus must be odd")


def check_rsa_exponent(e: int) -> None:
    """Refuse an RSA public exponent that is even, below 3 or above ``MAX_RSA_EXPONENT``."""
    if e < 3 or e % 2 == 0 or e > MAX_RSA_EXPONENT:
        raise ConfigurationError("RSA public exponent must be odd, at least 3 and at most 2**32")


def _pss(hash_cls: type[hashes.HashAlgorithm]) -> padding.PSS:
    digest = hash_cls()
    return padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)


def make_verifier(algorithm: str, key: PublicKey) -> Verifier:
    """Build the one verification function of ``key`` bound to ``algorithm``.

    The returned function answers ``False`` (never raises) for a wrong-length signature, an
    ECDSA ``r`` or ``s`` outside ``[1, n-1]`` (the CVE-2022-21449 class is refused before the
    library sees it) or any error from ``cryptography``.
    """
    check_key_algorithm(key, algorithm)
    if algorithm in EC_CURVES:
        assert isinstance(key, ec.EllipticCurvePublicKey)
        return _ecdsa_verifier(algorithm, key)
    if algorithm in OKP_ALGORITHMS:
        assert isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey))
        size = 64 if isinstance(key, ed25519.Ed25519PublicKey) else 114
        return _plain_verifier(key.verify, size, ())
    assert isinstance(key, rsa.RSAPublicKey)
    hash_cls = _HASHES[algorithm[2:]]
    pad = padding.PKCS1v15() if algorithm.startswith("RS") else _pss(hash_cls)
    return _plain_verifier(key.verify, (key.key_size + 7) // 8, (pad, hash_cls()))


def _plain_verifier(verify: Callable[..., None], size: int, extra: tuple[Any, ...]) -> Verifier:
    def verifier(signature: bytes, data: bytes) -> bool:
        if len(signature) != size:
            return False
        try:
            verify(signature, data, *extra)
        except Exception:  # InvalidSignature or anything else: one opaque failure
            return False
        return True

    return verifier


def _ecdsa_verifier(algorithm: str, key: ec.EllipticCurvePublicKey) -> Verifier:
    _, _, size, order = EC_CURVES[algorithm]
    scheme = ec.ECDSA(_HASHES[algorithm[2:]]())
    verify = key.verify
    total = 2 * size

    def verifier(signature: bytes, data: bytes) -> bool:
        if len(signature) != total:
            return False
        r = int.from_bytes(signature[:size], "big")
        s = int.from_bytes(signature[size:], "big")
        if not (0 < r < order and 0 < s < order):
            return False
        try:
            verify(encode_dss_signature(r, s), data, scheme)
        except Exception:  # InvalidSignature or anything else: one opaque failure
            return False
        return True

    return verifier


def make_signer(algorithm: str, key: PrivateKey) -> Signer:
    """Build the signing function of a private ``key`` bound to ``algorithm``."""
    check_key_algorithm(key, algorithm)
    if algorithm in EC_CURVES:
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        size = EC_CURVES[algorithm][2]
        scheme = ec.ECDSA(_HASHES[algorithm[2:]]())
        ec_sign = key.sign

        def sign_ecdsa(data: bytes) -> bytes:
            r, s = decode_dss_signature(ec_sign(data, scheme))
            return r.to_bytes(size, "big") + s.to_bytes(size, "big")

        return sign_ecdsa
    if algorithm in OKP_ALGORITHMS:
        assert isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey))
        return key.sign
    assert isinstance(key, rsa.RSAPrivateKey)
    hash_cls = _HASHES[algorithm[2:]]
    pad = padding.PKCS1v15() if algorithm.startswith("RS") else _pss(hash_cls)
    rsa_sign = key.sign
    digest = hash_cls()

    def sign_rsa(data: bytes) -> bytes:
        return rsa_sign(data, pad, digest)

    return sign_rsa


def hmac_verifier(algorithm: str, secret: bytes) -> Verifier:
    """The HMAC-SHA-2 verifier for ``secret`` (constant-time comparison)."""
    name = "sha" + algorithm[2:]
    size = hashlib.new(name).digest_size
    digest = hmac.digest
    compare = hmac.compare_digest

    def verifier(signature: bytes, data: bytes) -> bool:
        return len(signature) == size and compare(digest(secret, data, name), signature)

    return verifier


def hmac_signer(algorithm: str, secret: bytes) -> Signer:
    """The HMAC-SHA-2 signer for ``secret``."""
    name = "sha" + algorithm[2:]

    def signer(data: bytes) -> bytes:
        return hmac.digest(secret, data, name)

    return signer
