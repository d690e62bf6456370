"""HMAC secrets, kept apart from public keys by type.

:class:`SecretKey` is the only way to get an HMAC verifier, and it refuses anything that
looks like public key material: verifying HS256 with a *public* key as the secret lets anyone
who can read that public key mint tokens (CVE-2022-29217, CVE-2024-33663 and the JWK form of
the same mistake, CVE-2026-48526). A JWKS document never yields a :class:`SecretKey`.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Iterator
from typing import Final, NoReturn, final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from zerotrust.errors import ConfigurationError
from zerotrust.tokens._b64 import b64url_encode
from zerotrust.tokens._frozen import Frozen
from zerotrust.tokens._header import _MAX_KID
from zerotrust.tokens.algorithms import (
    HMAC_ALGORITHMS,
    HMAC_MIN_KEY_BYTES,
    Signer,
    Verifier,
    hmac_signer,
    hmac_verifier,
)

__all__ = ["SecretKey", "SecretKeySet"]

_SSH_PREFIX: Final = re.compile(rb"\s*(?:ssh-|ecdsa-sha2-|sk-ssh-|sk-ecdsa-)")
_BASE64_TEXT: Final = re.compile(rb"[A-Za-z0-9+/=_\-\s]+")
_HEX_TEXT: Final = re.compile(rb"(?:[0-9A-Fa-f]{2})+")
_BOM: Final = b"\xef\xbb\xbf"
# SEC 1 points by length: uncompressed (0x04, x, y) and compressed (0x02 or 0x03, x). None of
# these lengths is a hash size, so the 32/48/64-byte secrets HMAC asks for are never taken
# for a point; a random secret of a compressed point's length starts like one and holds a
# valid x coordinate about once in 256 times.
_EC_POINTS: Final[dict[int, tuple[ec.EllipticCurve, bytes]]] = {
    65: (ec.SECP256R1(), b"\x04"),
    97: (ec.SECP384R1(), b"\x04"),
    133: (ec.SECP521R1(), b"\x04"),
    33: (ec.SECP256R1(), b"\x02\x03"),
    49: (ec.SECP384R1(), b"\x02\x03"),
    67: (ec.SECP521R1(), b"\x02\x03"),
}


def _loads_as_der_key(data: bytes) -> bool:
    loaders = (
        serialization.load_der_public_key,
        x509.load_der_x509_certificate,
        lambda raw: serialization.load_der_private_key(raw, password=None),
    )
    for loader in loaders:
        try:
            loader(data)
        except Exception:  # noqa: S112 - any failure just means "not this format"
            continue
        return True
    return False


def _der_key(data: bytes) -> bool:
    """Whether ``data`` starts with a DER key or certificate, whatever follows it (a newline
    an editor added): the outer SEQUENCE says where it ends."""
    if len(data) < 2 or data[0] != 0x30:
        return False
    first = data[1]
    if first < 0x80:
        start, length = 2, first
    else:
        size = first & 0x7F
        if not 0 < size <= 4 or len(data) < 2 + size:
            return False
        start, length = 2 + size, int.from_bytes(data[2 : 2 + size], "big")
    end = start + length
    return end <= len(data) and _loads_as_der_key(data[:end])


def public_key_lookalike(secret: bytes) -> str | None:
    """Name the kind of key material ``secret`` looks like, or ``None``."""
    if b"-----BEGIN" in secret:
        return "PEM-armoured key or certificate"
    if _SSH_PREFIX.match(secret):
        return "OpenSSH public key"
    try:
        serialization.load_ssh_public_key(secret.strip())
    except Exception:  # noqa: S110 - not an OpenSSH key
        pass
    else:
        return "OpenSSH public key"
    if _der_key(secret):
        return "DER key or certificate"
    stripped = secret.strip()
    text = stripped.removeprefix(_BOM).lstrip()  # JSON as some editors save it
    if text[:1] in (b"{", b"["):
        try:
            doc = json.loads(text)
        except (ValueError, UnicodeDecodeError, RecursionError):  # nested too deep: not a key
            doc = None
        if isinstance(doc, dict) and ("kty" in doc or "keys" in doc):
            return "JWK or JWKS document"
        if isinstance(doc, list) and any(isinstance(item, dict) and "kty" in item for item in doc):
            return "JWK or JWKS document"
    point = _EC_POINTS.get(len(secret))
    if point is not None and secret[0] in point[1]:
        try:
            ec.EllipticCurvePublicKey.from_encoded_point(point[0], secret)
        except ValueError:
            pass
        else:
            return "raw EC public point"
    compact = b"".join(stripped.split()).replace(b":", b"")  # as hex dumps print it
    if _HEX_TEXT.fullmatch(compact):
        decoded = bytes.fromhex(compact.decode("ascii"))
        if _der_key(decoded):
            return "hex DER key or certificate"
    if _BASE64_TEXT.fullmatch(stripped):
        import base64

        text = b"".join(stripped.split()).translate(bytes.maketrans(b"-_", b"+/"))
        try:
            decoded = base64.b64decode(text + b"=" * (-len(text) % 4))
        except ValueError:
            return None
        if _der_key(decoded):
            return "base64 DER key or certificate"
    return None


@final
class SecretKey(Frozen):
    """A shared HMAC secret bound to one of HS256, HS384 or HS512.

    The secret must be ``bytes`` at least as long as the hash output (32/48/64 bytes) and
    must not look like public key material (PEM of any kind, DER keys or certificates, raw or
    in base64 or hex, OpenSSH public keys, JWK/JWKS JSON, raw EC points, compressed or not):
    those raise
    :class:`~zerotrust.errors.ConfigurationError`. ``repr`` never shows the secret.
    """

    __slots__ = ("_alg", "_kid", "_secret", "_sign", "_verify")
    _alg: str
    _kid: str | None
    _secret: bytes
    _sign: Signer
    _verify: Verifier

    def __init__(self, secret: bytes, algorithm: str = "HS256", *, kid: str | None = None) -> None:
        if not isinstance(secret, (bytes, bytearray, memoryview)):
            raise ConfigurationError("an HMAC secret must be bytes (random, not a password)")
        raw = bytes(secret)
        if algorithm not in HMAC_ALGORITHMS:
            raise ConfigurationError(
                f"SecretKey algorithm must be one of {sorted(HMAC_ALGORITHMS)}"
            )
        minimum = HMAC_MIN_KEY_BYTES[algorithm]
        if len(raw) < minimum:
            raise ConfigurationError(f"{algorithm} secrets must be at least {minimum} bytes")
        lookalike = public_key_lookalike(raw)
        if lookalike is not None:
            raise ConfigurationError(
                f"refusing an HMAC secret that is a {lookalike}: public key material is not "
                "secret (verify public-key tokens with a JWK instead)"
            )
        if kid is not None and (not isinstance(kid, str) or not kid or len(kid) > _MAX_KID):
            # a longer one could be built, and every token naming it refused (the header's)
            raise ConfigurationError(f"kid must be a non-empty string of at most {_MAX_KID}")
        object.__setattr__(self, "_secret", raw)
        object.__setattr__(self, "_alg", algorithm)
        object.__setattr__(self, "_kid", kid)
        object.__setattr__(self, "_verify", hmac_verifier(algorithm, raw))
        object.__setattr__(self, "_sign", hmac_signer(algorithm, raw))

    @property
    def algorithm(self) -> str:
        """The one HMAC algorithm this secret is used with."""
        return self._alg

    @property
    def kid(self) -> str | None:
        """The key id, if any."""
        return self._kid

    @property
    def algorithms(self) -> frozenset[str]:
        """Every algorithm this key verifies: its one HMAC algorithm."""
        return frozenset({self._alg})

    def _verifier_for(self, alg: str) -> Verifier | None:
        """The verifier of ``alg`` if it is this key's algorithm, else ``None``."""
        return self._verify if alg == self._alg else None

    def sign(self, signing_input: bytes) -> bytes:
        """The HMAC of ``signing_input``."""
        return self._sign(signing_input)

    def fingerprint(self) -> str:
        """A non-reversible identifier of the secret, safe to log (HMAC of a fixed label)."""
        return b64url_encode(hmac.digest(self._secret, b"zerotrust key fingerprint", "sha256"))[:16]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SecretKey):
            return NotImplemented
        return (
            hmac.compare_digest(self._secret, other._secret)
            and self._alg == other._alg
            and self._kid == other._kid
        )

    def __hash__(self) -> int:
        return hash((self.fingerprint(), self._alg, self._kid))

    def __repr__(self) -> str:
        return f"SecretKey(alg={self._alg!r}, kid={self._kid!r}, secret=<redacted>)"

    def __reduce__(self) -> NoReturn:
        raise TypeError("SecretKey cannot be pickled")


@final
class SecretKeySet(Frozen):
    """A key set holding exactly one :class:`SecretKey` (what an HMAC key source returns).

    Lookup follows the same rules as :class:`~zerotrust.tokens.JWKSet`: a token without
    ``kid`` uses the one secret; a token with a ``kid`` needs the secret to carry that kid.
    """

    __slots__ = ("_key",)
    _key: SecretKey

    def __init__(self, key: SecretKey) -> None:
        if not isinstance(key, SecretKey):
            raise ConfigurationError("SecretKeySet holds a SecretKey")
        object.__setattr__(self, "_key", key)

    @property
    def key(self) -> SecretKey:
        """The one secret."""
        return self._key

    def get(self, kid: str) -> SecretKey | None:
        """The secret if its ``kid`` is ``kid``, else ``None``."""
        return self._key if self._key.kid is not None and self._key.kid == kid else None

    def select(self, kid: str | None) -> SecretKey | None:
        """The key for a token's ``kid`` (``None``: the one secret)."""
        return self._key if kid is None else self.get(kid)

    def is_ambiguous(self, kid: str) -> bool:
        """Always ``False``: one secret cannot be ambiguous."""
        return False

    def __len__(self) -> int:
        return 1

    def __iter__(self) -> Iterator[SecretKey]:
        yield self._key

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SecretKeySet):
            return NotImplemented
        return self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __repr__(self) -> str:
        return f"SecretKeySet({self._key!r})"
