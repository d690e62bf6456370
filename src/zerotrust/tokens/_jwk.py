"""Public signing keys as JWKs (RFC 7517), each bound to exactly one algorithm.

(Import these from :mod:`zerotrust.tokens.keys` or :mod:`zerotrust.tokens`.)

A :class:`JWK` is parsed and validated once, when it is built: its ``cryptography`` key
object and its verification function are ready before the first token arrives. The
algorithm it verifies is its ``alg`` member when present (which must fit the key type and
curve, else the key is refused) or the one inferred from the key: P-256 -> ES256,
P-384 -> ES384, P-521 -> ES512, Ed25519/Ed448 -> EdDSA, RSA -> RS256 (RS256 to PS512 for an
RSA SPIFFE JWT authority, ``use`` ``"jwt-svid"``, as JWT-SVID section 3 allows). The
fully-specified names of RFC 9864 (``Ed25519``, ``Ed448``) are accepted as ``alg`` values too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final, final

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from zerotrust.errors import ConfigurationError
from zerotrust.tokens._frozen import Frozen
from zerotrust.tokens._jwk_codec import (
    PRIVATE_MEMBERS,
    public_key_from_members,
    public_members,
    thumbprint_of,
)
from zerotrust.tokens.algorithms import (
    PublicKey,
    Verifier,
    default_algorithm,
    inferred_algorithms,
    make_verifier,
)

__all__ = ["JWK", "bind_unnamed", "check_alg_member", "check_key_ops", "pem_bytes"]

_USES: Final = frozenset({"sig", "jwt-svid"})
_PUBLIC_TYPES: Final = (
    ec.EllipticCurvePublicKey,
    ed25519.Ed25519PublicKey,
    ed448.Ed448PublicKey,
    rsa.RSAPublicKey,
)
_MAX_KID: Final = 1024


def _check_kid(kid: object) -> str | None:
    if kid is None:
        return None
    if not isinstance(kid, str) or not kid or len(kid) > _MAX_KID:
        raise ConfigurationError("kid must be a non-empty string of at most 1024 characters")
    try:  # a surrogate code point is no Unicode text: JSON readers refuse it (RFC 7493 2.1)
        kid.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigurationError("kid must be valid Unicode text (it holds a surrogate)") from None
    return str(kid)


def _check_use(use: object) -> str | None:
    if use is None:
        return None
    if isinstance(use, str) and use in _USES:
        return use
    raise ConfigurationError("key 'use' must be 'sig' or 'jwt-svid' for a signing key")


def check_key_ops(key_ops: object, needed: str) -> tuple[str, ...] | None:
    """Validate a ``key_ops`` member: absent, or distinct strings that include ``needed``."""
    if key_ops is None:
        return None
    # RFC 7517 4.3: an array; a JSON object's member names are no operations
    if isinstance(key_ops, (str, bytes, Mapping)) or not isinstance(key_ops, Iterable):
        raise ConfigurationError("key_ops must be a list of strings")
    ops = tuple(key_ops)
    if not all(isinstance(op, str) for op in ops) or len(set(ops)) != len(ops):
        raise ConfigurationError("key_ops must be a list of distinct strings")
    if needed not in ops:
        raise ConfigurationError(f"key_ops does not allow {needed!r}")
    return ops


def pem_bytes(data: object) -> bytes:
    """PEM text or DER/PEM bytes as bytes; ConfigurationError for anything else."""
    if isinstance(data, str):
        if not data.isascii():
            raise ConfigurationError("PEM text must be ASCII")
        return data.encode("ascii")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise ConfigurationError("key data must be bytes or PEM text")


def check_alg_member(members: Mapping[str, Any]) -> str | None:
    """The ``alg`` member of a JWK object, which must be a string if present."""
    alg = members.get("alg")
    if alg is not None and not isinstance(alg, str):
        raise ConfigurationError("JWK member 'alg' must be a string")
    return alg


@final
class JWK(Frozen):
    """A public signing key (EC P-256/384/521, Ed25519/Ed448, RSA of 2048 to 8192 bits).

    ``JWK(public_key, algorithm=..., kid=..., use=..., key_ops=...)`` binds a
    ``cryptography`` public key to one algorithm; :meth:`from_dict` reads a JWK object.
    Values are immutable, hashable and compare by key material and binding.
    """

    __slots__ = (
        "_alg",
        "_algs",
        "_key",
        "_key_ops",
        "_kid",
        "_members",
        "_others",
        "_thumbprint",
        "_use",
        "_verify",
    )
    _alg: str
    _algs: frozenset[str]
    _others: dict[str, Verifier]
    _key: PublicKey
    _key_ops: tuple[str, ...] | None
    _kid: str | None
    _members: dict[str, str]
    _thumbprint: str
    _use: str | None
    _verify: Verifier

    def __init__(
        self,
        public_key: PublicKey,
        *,
        algorithm: str | None = None,
        kid: str | None = None,
        use: str | None = None,
        key_ops: Iterable[str] | None = None,
    ) -> None:
        if not isinstance(public_key, _PUBLIC_TYPES):
            raise ConfigurationError(
                f"expected a public EC, Ed25519, Ed448 or RSA key, not {type(public_key).__name__}"
            )
        alg = default_algorithm(public_key) if algorithm is None else algorithm
        verify = make_verifier(alg, public_key)  # refuses a key/algorithm mismatch
        members = public_members(public_key)
        init = object.__setattr__
        init(self, "_key", public_key)
        init(self, "_alg", alg)
        # without a named algorithm, every name of its type's algorithm (see inferred_algorithms)
        names = inferred_algorithms(public_key, use) if algorithm is None else frozenset({alg})
        init(self, "_algs", names)
        init(self, "_others", {})  # verifiers of the other names, made on first use
        init(self, "_kid", _check_kid(kid))
        init(self, "_use", _check_use(use))
        init(self, "_key_ops", check_key_ops(key_ops, "verify"))
        init(self, "_members", members)
        init(self, "_thumbprint", thumbprint_of(members))
        init(self, "_verify", verify)

    @classmethod
    def from_dict(cls, members: Mapping[str, Any]) -> JWK:
        """Read a public JWK object; raises ConfigurationError if it is unusable.

        Refused: ``oct`` keys (use :class:`SecretKey`), private members, unknown key types
        or curves, points off the curve, RSA keys under 2048 or over 8192 bits, RSA public
        exponents other than odd ones from 3 to 2**32, an ``alg`` that does not fit the key,
        ``use`` other than ``sig``/``jwt-svid``, ``key_ops`` without ``verify``.
        """
        if not isinstance(members, Mapping):
            raise ConfigurationError("a JWK must be a JSON object")
        if PRIVATE_MEMBERS & members.keys():
            if members.get("kty") == "oct":
                public_key_from_members(members)  # raises the 'use SecretKey' error
            raise ConfigurationError("JWK holds private key material; use PrivateJWK for that")
        return cls(
            public_key_from_members(members),
            algorithm=check_alg_member(members),
            kid=members.get("kid"),
            use=members.get("use"),
            key_ops=members.get("key_ops"),
        )

    @classmethod
    def from_public_key(
        cls,
        key: PublicKey | x509.Certificate,
        *,
        algorithm: str | None = None,
        kid: str | None = None,
        use: str | None = None,
    ) -> JWK:
        """Wrap a ``cryptography`` public key, or the public key of a certificate.

        The certificate is only a carrier of the key: its validity is not checked here.
        """
        if isinstance(key, x509.Certificate):
            try:  # read when asked: a certificate's key may be of no known type
                key = key.public_key()  # type: ignore[assignment]
            except (ValueError, UnsupportedAlgorithm):
                raise ConfigurationError("the certificate's public key is not supported") from None
        return cls(key, algorithm=algorithm, kid=kid, use=use)  # type: ignore[arg-type]

    @classmethod
    def from_pem(
        cls,
        data: bytes | str,
        *,
        algorithm: str | None = None,
        kid: str | None = None,
        use: str | None = None,
    ) -> JWK:
        """Read a public key or certificate, PEM or DER encoded."""
        raw = pem_bytes(data)
        loaders = (
            (serialization.load_pem_public_key, x509.load_pem_x509_certificate)
            if b"-----BEGIN" in raw
            else (serialization.load_der_public_key, x509.load_der_x509_certificate)
        )
        for loader in loaders:
            try:
                loaded = loader(raw)
            except UnsupportedAlgorithm:  # read, but of no type cryptography supports
                raise ConfigurationError("unsupported public key type or curve") from None
            except (ValueError, TypeError):
                continue
            return cls.from_public_key(loaded, algorithm=algorithm, kid=kid, use=use)  # type: ignore[arg-type]
        raise ConfigurationError("not a PEM/DER public key or certificate")

    @property
    def public_key(self) -> PublicKey:
        """The ``cryptography`` public key object."""
        return self._key

    @property
    def algorithm(self) -> str:
        """The JWS algorithm this key is bound to (the default of its type when it was read
        without ``alg``; see :attr:`algorithms`)."""
        return self._alg

    @property
    def algorithms(self) -> frozenset[str]:
        """The names this key's one algorithm is accepted under: :attr:`algorithm`, and for an
        Ed25519/Ed448 key read without ``alg`` also its RFC 9864 name (``Ed25519``/``Ed448``,
        the same operation as ``EdDSA`` on that curve). An RSA key read without ``alg`` as a
        SPIFFE JWT authority (``use`` ``"jwt-svid"``) verifies the six RSA algorithms the
        JWT-SVID specification allows (RS256 to PS512)."""
        return self._algs

    def _verifier_for(self, alg: str) -> Verifier | None:
        """The verifier of ``alg`` if this key verifies it, else ``None``."""
        if alg == self._alg:
            return self._verify
        if alg not in self._algs:
            return None
        verify = self._others.get(alg)
        if verify is None:
            verify = self._others[alg] = make_verifier(alg, self._key)
        return verify

    @property
    def kid(self) -> str | None:
        """The key id, if any."""
        return self._kid

    @property
    def use(self) -> str | None:
        """``"sig"``, ``"jwt-svid"`` or ``None``."""
        return self._use

    @property
    def key_ops(self) -> tuple[str, ...] | None:
        """The ``key_ops`` member, if any (it always includes ``"verify"``)."""
        return self._key_ops

    @property
    def kty(self) -> str:
        """``"EC"``, ``"OKP"`` or ``"RSA"``."""
        return self._members["kty"]

    @property
    def crv(self) -> str | None:
        """The curve name for EC and OKP keys, else ``None``."""
        return self._members.get("crv")

    def thumbprint(self) -> str:
        """The RFC 7638 thumbprint: base64url SHA-256 of the required members."""
        return self._thumbprint

    def to_public_dict(self) -> dict[str, Any]:
        """The JWK object, with its bound ``alg`` written out (none for a key that verifies
        several names, an Ed25519/Ed448 key or a SPIFFE JWT authority read without one, so
        that its readers accept the same names)."""
        out: dict[str, Any] = dict(self._members)
        if len(self._algs) == 1:
            out["alg"] = self._alg
        if self._kid is not None:
            out["kid"] = self._kid
        if self._use is not None:
            out["use"] = self._use
        if self._key_ops is not None:
            out["key_ops"] = list(self._key_ops)
        return out

    def _identity(self) -> tuple[object, ...]:
        return (self._thumbprint, self._alg, self._algs, self._kid, self._use, self._key_ops)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, JWK):
            return NotImplemented
        return self._identity() == other._identity()

    def __hash__(self) -> int:
        return hash(self._identity())

    def __repr__(self) -> str:
        curve = f", crv={self.crv!r}" if self.crv else ""
        return f"JWK(kty={self.kty!r}{curve}, alg={self._alg!r}, kid={self._kid!r})"


def bind_unnamed(key: JWK, allowed: Iterable[str], name: str) -> JWK:
    """A key read without an algorithm (a PEM key) bound to the one that ``allowed`` (a
    verifier's allowlist) has for it: ``key`` itself if its inferred algorithm is allowed
    (RS256 for an RSA key...), else the one allowed algorithm that fits it (PS256...).

    ``key`` itself if no allowed algorithm fits it (it verifies nothing, as before); a
    :class:`~zerotrust.errors.ConfigurationError` naming ``name`` if several do, since a
    key signs with one algorithm (RFC 8725 3.1).
    """
    wanted = [alg for alg in dict.fromkeys(allowed) if isinstance(alg, str)]
    if not wanted or key.algorithms.intersection(wanted):
        return key
    fitting = {alg: bound for alg in wanted if (bound := _rebound(key, alg)) is not None}
    if len(fitting) > 1:
        raise ConfigurationError(
            f"{name}: its {key.kty} key names no algorithm and {', '.join(fitting)} all fit it:"
            " allow one of them, or publish the key as a JWK with its alg"
        )
    return next(iter(fitting.values()), key)


def _rebound(key: JWK, algorithm: str) -> JWK | None:
    """``key`` bound to ``algorithm``; ``None`` if that does not fit it (another key type's
    algorithm, or no public-key algorithm at all)."""
    try:
        return JWK(
            key.public_key, algorithm=algorithm, kid=key.kid, use=key.use, key_ops=key.key_ops
        )
    except ConfigurationError:
        return None
