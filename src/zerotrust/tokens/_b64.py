"""Strict, canonical base64url (RFC 7515 §2: unpadded, URL-safe alphabet).

Everything here works on ``bytes`` and costs a few C-level passes: one precompiled regex
``fullmatch`` for the alphabet, a table lookup for the final character and
:func:`binascii.a2b_base64` for the decoding. There is no per-character Python loop.

A segment is *canonical* when it is the only encoding of its bytes: no padding, no
whitespace, no ``+``/``/``, a length that is not ``1 (mod 4)`` and no set bits in the unused
low bits of the last character. Accepting non-canonical encodings would give one signed
token many spellings, each a cache entry of its own, so they are refused. (An ECDSA
signature still has two, ``s`` and ``n - s``: checks that must see a token once key on its
``jti``, never on its spelling.)
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Final

__all__ = [
    "ALPHABET",
    "B64TOKEN",
    "PADDING",
    "TO_STANDARD",
    "b64url_decode",
    "b64url_encode",
    "decode_canonical",
    "is_canonical",
    "tail_ok",
]

#: RFC 6750 2.1 ``b64token``: the syntax of a Bearer (and, RFC 9449 7.1, DPoP) access token in
#: an ``Authorization`` header.
B64TOKEN: Final = re.compile(r"[A-Za-z0-9\-._~+/]+=*")

_ALPHABET: Final = re.compile(rb"[A-Za-z0-9_-]*")
# Last character of a segment whose length is 2 or 3 (mod 4): the bits it carries beyond
# the final byte must be zero. Index = len(segment) % 4; 0 means "any", 1 is impossible.
_LAST_CHAR_2: Final = frozenset(b"AQgw")
_LAST_CHAR_3: Final = frozenset(b"AEIMQUYcgkosw048")
_TAILS: Final[tuple[frozenset[int], ...]] = (frozenset(), frozenset(), _LAST_CHAR_2, _LAST_CHAR_3)
ALPHABET: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
"""The base64url alphabet: ``token.translate(None, ALPHABET)`` leaves only the separators."""
TO_STANDARD: Final = bytes.maketrans(b"-_", b"+/")
PADDING: Final = (b"", b"", b"==", b"=")


def is_canonical(segment: bytes) -> bool:
    """Whether ``segment`` is canonical, unpadded base64url."""
    if _ALPHABET.fullmatch(segment) is None:
        return False
    rest = len(segment) & 3
    if rest == 0:
        return True
    if rest == 2:
        return segment[-1] in _LAST_CHAR_2
    if rest == 3:
        return segment[-1] in _LAST_CHAR_3
    return False


def tail_ok(segment: bytes) -> bool:
    """Whether a segment already known to use the alphabet has a canonical length/ending."""
    rest = len(segment) & 3
    return not rest or (rest != 1 and segment[-1] in _TAILS[rest])


def decode_canonical(segment: bytes) -> bytes:
    """Decode a segment already checked by :func:`is_canonical` (no re-validation)."""
    return binascii.a2b_base64(segment.translate(TO_STANDARD) + PADDING[len(segment) & 3])


def b64url_decode(value: str | bytes) -> bytes:
    """Decode canonical base64url; raises :class:`ValueError` for anything else."""
    if isinstance(value, str):
        if not value.isascii():
            raise ValueError("base64url text must be ASCII")
        value = value.encode("ascii")
    if not is_canonical(value):
        raise ValueError("not canonical unpadded base64url")
    return decode_canonical(value)


def b64url_encode(data: bytes) -> str:
    """Encode ``data`` as unpadded base64url text."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
