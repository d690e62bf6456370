"""JOSE header rules for JWS compact tokens (RFC 7515 §4, RFC 7797, RFC 8725).

The header is decoded and checked on its own, before the payload is decoded and before any
cryptography: a token is refused here for an unencoded (``b64: false``) or compressed
payload, an algorithm outside the allowlist (``none`` in any spelling can never be in it), an
unknown ``crit`` parameter, a nested JWT, or a ``typ`` of another kind of token.

``jwk``, ``jku``, ``x5u``, ``x5c`` and ``x5t`` are ignored: keys come from the configured
key source only, never from the token that is being verified.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from zerotrust.errors import (
    AlgorithmNotAllowed,
    InvalidTokenType,
    MalformedToken,
    UnsupportedTokenFeature,
)
from zerotrust.tokens._b64 import decode_canonical, is_canonical
from zerotrust.tokens._json import JSONError, loads_object
from zerotrust.tokens._profiles import JWT_SVID, TYP_RULES
from zerotrust.tokens.algorithms import JWT_SVID_ALGORITHMS, SUPPORTED_ALGORITHMS, is_none

__all__ = [
    "JWT_SVID_HEADERS",
    "MAX_HEADER_BYTES",
    "REGISTERED_HEADERS",
    "check_profile",
    "check_typ",
    "parse_header",
]

MAX_HEADER_BYTES: Final = 4096
"""Longest header segment accepted (base64url characters)."""
_MAX_KID: Final = 1024

REGISTERED_HEADERS: Final = frozenset(
    {"alg", "jku", "jwk", "kid", "x5u", "x5c", "x5t", "x5t#S256", "typ", "cty", "crit"}
)
#: The only header parameters a JWT-SVID may carry (JWT-SVID 2: "any header not described
#: here, registered or private, MUST NOT be included").
JWT_SVID_HEADERS: Final = frozenset({"alg", "kid", "typ"})

HeaderInfo = tuple[Mapping[str, Any], str, "str | None"]


def parse_header(
    segment: bytes,
    *,
    allowed: frozenset[str],
    token_type: str | None,
    critical: frozenset[str],
) -> HeaderInfo:
    """Decode and check a header segment; returns ``(header, alg, kid)``."""
    if len(segment) > MAX_HEADER_BYTES:
        raise MalformedToken("header is too large")
    if not is_canonical(segment):
        raise MalformedToken("header is not canonical base64url")
    try:
        header = loads_object(decode_canonical(segment))
    except JSONError as exc:
        raise MalformedToken(f"header {exc}") from None
    if None in header.values():  # a registered parameter is never null (RFC 7515 4.1)
        for name in REGISTERED_HEADERS | {"b64", "zip", "enc"}:
            if name in header and header[name] is None:
                raise MalformedToken(f"header {name!r} is null")
    if "b64" in header and header["b64"] is not True:
        raise UnsupportedTokenFeature("unencoded payloads (b64: false, RFC 7797) are refused")
    if "zip" in header or "enc" in header:
        raise UnsupportedTokenFeature("compressed or encrypted (JWE) content is refused")
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise MalformedToken("header has no string 'alg'")
    if is_none(alg):
        raise AlgorithmNotAllowed("the 'none' algorithm is never accepted")
    if alg not in allowed:
        shown = repr(alg) if alg in SUPPORTED_ALGORITHMS else "(unsupported)"
        raise AlgorithmNotAllowed(f"algorithm {shown} is not in the allowlist")
    if "crit" in header:
        _check_crit(header, header["crit"], critical)
    kid = header.get("kid")
    if kid is not None and (not isinstance(kid, str) or not kid or len(kid) > _MAX_KID):
        raise MalformedToken(
            f"header 'kid' must be a non-empty string of at most {_MAX_KID} characters"
        )
    check_profile(header, alg, token_type)
    cty = header.get("cty")
    if cty is not None:
        if not isinstance(cty, str):
            raise MalformedToken("header 'cty' must be a string")
        if cty.lower() in ("jwt", "application/jwt"):
            raise UnsupportedTokenFeature("nested JWTs (cty: JWT) are refused")
    return header, alg, kid


def _check_crit(header: Mapping[str, Any], crit: object, understood: frozenset[str]) -> None:
    if not isinstance(crit, (tuple, list)) or not crit:
        raise MalformedToken("header 'crit' must be a non-empty array")
    if not all(isinstance(name, str) for name in crit) or len(set(crit)) != len(crit):
        raise MalformedToken("header 'crit' must list distinct names")
    for name in crit:
        if name in REGISTERED_HEADERS:
            raise MalformedToken("header 'crit' lists a registered parameter")
        if name not in header:
            raise MalformedToken("header 'crit' lists a parameter that is absent")
        if name not in understood:
            raise UnsupportedTokenFeature("header 'crit' lists a parameter that is not understood")


def check_typ(typ: object, rule: tuple[frozenset[str], bool], kind: str) -> None:
    """``typ`` against ``rule`` (accepted lower-cased values, is it required?) for ``kind``
    (with its article: ``"a DPoP proof"``). Media types
    ignore case, and RFC 7515 4.1.9 reads a value without ``/`` as ``application/<value>``:
    the accepted sets hold both spellings."""
    accepted, required = rule
    if typ is None:
        if required:
            raise InvalidTokenType(f"{kind} needs a 'typ' header")
        return
    if not isinstance(typ, str):
        raise MalformedToken("header 'typ' must be a string")
    if typ.lower() not in accepted:
        raise InvalidTokenType(f"header 'typ' is not acceptable for {kind}")


def _kind(token_type: str | None) -> str:
    if token_type is None:
        return "a generic JWT"
    return f"{'an' if token_type[0] in 'aeiou' else 'a'} {token_type} token"


def check_profile(header: Mapping[str, Any], alg: str, token_type: str | None) -> None:
    """The header rules of a profile: its ``typ``; for JWT-SVIDs, RS/ES/PS algorithms only
    and no header parameter besides ``alg``, ``kid`` and ``typ``. Step 2 on its own applies
    them again, so that a signature verified under another profile cannot pass for this
    one."""
    check_typ(header.get("typ"), TYP_RULES[token_type], _kind(token_type))
    if token_type == JWT_SVID:
        if alg not in JWT_SVID_ALGORITHMS:
            raise AlgorithmNotAllowed("JWT-SVIDs are signed with RS*, ES* or PS* algorithms only")
        if not header.keys() <= JWT_SVID_HEADERS:
            raise MalformedToken("a JWT-SVID header holds only 'alg', 'kid' and 'typ'")
