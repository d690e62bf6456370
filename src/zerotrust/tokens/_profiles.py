"""Token profiles (generic JWT, JWT-SVID, RFC 9068 access token) and small config checks."""

from __future__ import annotations

from typing import Final

from zerotrust.errors import ConfigurationError

__all__ = ["AT_JWT", "DPOP_TYP", "JWT_SVID", "TYP_RULES", "string_tuple"]

JWT_SVID: Final = "jwt-svid"
"""The SPIFFE JWT-SVID profile."""
AT_JWT: Final = "at+jwt"
"""The RFC 9068 JWT access-token profile."""

# profile -> (accepted lower-cased ``typ`` values, is ``typ`` required?)
TYP_RULES: Final[dict[str | None, tuple[frozenset[str], bool]]] = {
    None: (frozenset({"jwt", "application/jwt"}), False),
    JWT_SVID: (frozenset({"jwt", "jose", "application/jwt", "application/jose"}), False),
    AT_JWT: (frozenset({"at+jwt", "application/at+jwt"}), True),
}
#: The same rule for RFC 9449 DPoP proofs (not a token profile).
DPOP_TYP: Final = (frozenset({"dpop+jwt", "application/dpop+jwt"}), True)


def string_tuple(value: object, what: str) -> tuple[str, ...]:
    """A str or a list/tuple of non-empty str, as a tuple; ConfigurationError otherwise."""
    if isinstance(value, str):
        values: tuple[object, ...] = (value,)
    elif isinstance(value, (list, tuple)):
        values = tuple(value)
    else:
        raise ConfigurationError(f"{what} must be a string or a list of strings")
    if not values or not all(isinstance(item, str) and item for item in values):
        raise ConfigurationError(f"{what} must be a non-empty string or list of them")
    return values  # type: ignore[return-value]
