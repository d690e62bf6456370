"""Refusal of weak Edwards-curve public keys (Ed25519, Ed448).

RFC 8032 verification accepts public keys that are points of small order (order dividing the
cofactor: 8 for Ed25519, 4 for Ed448) and non-canonical point encodings. With such a key,
``R = identity, S = 0`` is a valid signature of *every* message, so a JWKS entry or a DPoP
``jwk`` carrying one proves nothing. A key is refused when its encoding is not canonical
(``y >= p``), when it is not a point of the curve, or when multiplying it by the cofactor
gives the neutral element.
"""

from __future__ import annotations

from typing import Final

__all__ = ["weak_edwards_key"]

# (p, a, d, doublings to the cofactor, encoded size) of a*x^2 + y^2 = 1 + d*x^2*y^2
_P25519: Final = 2**255 - 19
_P448: Final = 2**448 - 2**224 - 1
_CURVES: Final = {
    "Ed25519": (_P25519, -1, (-121665 * pow(121666, -1, _P25519)) % _P25519, 3, 32),
    "Ed448": (_P448, 1, -39081 % _P448, 2, 57),
}


def _sqrt(value: int, p: int) -> int | None:
    """A square root of ``value`` modulo ``p`` (p = 5 mod 8 for Ed25519, 3 mod 4 for Ed448)."""
    if p % 4 == 3:
        root = pow(value, (p + 1) // 4, p)
    else:
        root = pow(value, (p + 3) // 8, p)
        if root * root % p != value % p:
            root = root * pow(2, (p - 1) // 4, p) % p
    return root if root * root % p == value % p else None


def weak_edwards_key(curve: str, raw: bytes) -> bool:
    """Whether the encoded public key ``raw`` of ``curve`` must be refused (see the module)."""
    p, a, d, doublings, size = _CURVES[curve]
    if len(raw) != size:
        return True
    sign = raw[-1] >> 7
    if curve == "Ed448" and raw[-1] & 0x7F:
        return True  # the last octet holds only the sign bit
    y = int.from_bytes(raw, "little") & ~(1 << (8 * size - 1))
    if y >= p:
        return True  # non-canonical encoding
    numerator, denominator = (y * y - 1) % p, (d * y * y - a) % p
    if denominator == 0:
        return True
    x = _sqrt(numerator * pow(denominator, p - 2, p), p)
    if x is None or (x == 0 and sign):
        return True  # not on the curve, or a "negative zero" x
    if x & 1 != sign:
        x = p - x
    for _ in range(doublings):  # multiply by the cofactor (complete doubling formulas)
        xx, yy = x * x % p, y * y % p
        x, y = (
            2 * x * y * pow((a * xx + yy) % p, p - 2, p) % p,
            (yy - a * xx) * pow((2 - a * xx - yy) % p, p - 2, p) % p,
        )
    return x == 0 and y == 1
