"""Signing keys as JWKs: :class:`JWK` (public, for verification) and :class:`PrivateJWK`.

Every key is bound to exactly one algorithm: its ``alg`` member when present (which must fit
the key type and curve, else the key is refused) or the one inferred from the key: P-256 ->
ES256, P-384 -> ES384, P-521 -> ES512, Ed25519/Ed448 -> EdDSA, RSA -> RS256 (an RSA SPIFFE
JWT authority, ``use`` ``"jwt-svid"``, read without ``alg``: the RSA algorithms of the
JWT-SVID specification, RS256 to PS512).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn, final

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from zerotrust.errors import ConfigurationError
from zerotrust.tokens._frozen import Frozen
from zerotrust.tokens._jwk import JWK, check_alg_member, check_key_ops, pem_bytes
from zerotrust.tokens._jwk_codec import private_key_from_members
from zerotrust.tokens.algorithms import (
    EC_CURVES,
    RSA_ALGORITHMS,
    PrivateKey,
    Signer,
    default_algorithm,
    make_signer,
)

__all__ = ["JWK", "PrivateJWK"]

_PRIVATE_TYPES = (
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
    rsa.RSAPrivateKey,
)


@final
class PrivateJWK(Frozen):
    """A private signing key bound to one algorithm, for issuing tokens.

    Build it from a ``cryptography`` private key, a private JWK object (:meth:`from_dict`),
    PEM/DER (:meth:`from_pem`) or :meth:`generate`. :meth:`public` is the :class:`JWK` to
    publish. ``repr`` never shows key material.
    """

    __slots__ = ("_key", "_public", "_sign")
    _key: PrivateKey
    _public: JWK
    _sign: Signer

    def __init__(
        self,
        private_key: PrivateKey,
        *,
        algorithm: str | None = None,
        kid: str | None = None,
        use: str | None = None,
    ) -> None:
        if not isinstance(private_key, _PRIVATE_TYPES):
            raise ConfigurationError(
                "expected a private EC, Ed25519, Ed448 or RSA key, "
                f"not {type(private_key).__name__}"
            )
        alg = default_algorithm(private_key) if algorithm is None else algorithm
        public = JWK(private_key.public_key(), algorithm=alg, kid=kid, use=use)
        object.__setattr__(self, "_key", private_key)
        object.__setattr__(self, "_public", public)
        object.__setattr__(self, "_sign", make_signer(alg, private_key))

    @classmethod
    def generate(cls, algorithm: str = "ES256", *, kid: str | None = None) -> PrivateJWK:
        """A fresh key for ``algorithm``: ES256/384/512, EdDSA or Ed25519 (an Ed25519 key),
        Ed448, RS*/PS* (RSA-2048). ``kid`` defaults to the key's RFC 7638 thumbprint."""
        key: PrivateKey
        if algorithm in EC_CURVES:
            key = ec.generate_private_key(EC_CURVES[algorithm][1]())
        elif algorithm in ("EdDSA", "Ed25519"):
            key = ed25519.Ed25519PrivateKey.generate()
        elif algorithm == "Ed448":
            key = ed448.Ed448PrivateKey.generate()
        elif algorithm in RSA_ALGORITHMS:
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            raise ConfigurationError(f"cannot generate a key for {algorithm!r}")
        generated = cls(key, algorithm=algorithm, kid=kid)
        return generated if kid is not None else generated.with_kid(generated.thumbprint())

    @classmethod
    def from_dict(cls, members: Mapping[str, Any]) -> PrivateJWK:
        """Read a private JWK object (EC/OKP ``d``; RSA ``d`` with or without CRT members)."""
        if not isinstance(members, Mapping):
            raise ConfigurationError("a JWK must be a JSON object")
        check_key_ops(members.get("key_ops"), "sign")
        return cls(
            private_key_from_members(members),
            algorithm=check_alg_member(members),
            kid=members.get("kid"),
            use=members.get("use"),
        )

    @classmethod
    def from_pem(
        cls,
        data: bytes | str,
        *,
        password: bytes | None = None,
        algorithm: str | None = None,
        kid: str | None = None,
    ) -> PrivateJWK:
        """Read a PEM or DER (PKCS#8, SEC1, PKCS#1) private key."""
        raw = pem_bytes(data)
        loader = (
            serialization.load_pem_private_key
            if b"-----BEGIN" in raw
            else serialization.load_der_private_key
        )
        try:
            key = loader(raw, password=password)
        except UnsupportedAlgorithm:
            raise ConfigurationError("unsupported private key type or curve") from None
        except (ValueError, TypeError):
            raise ConfigurationError("not a readable PEM/DER private key") from None
        return cls(key, algorithm=algorithm, kid=kid)  # type: ignore[arg-type]

    def with_kid(self, kid: str) -> PrivateJWK:
        """The same key and algorithm under another ``kid``."""
        return PrivateJWK(self._key, algorithm=self.algorithm, kid=kid, use=self._public.use)

    def public(self) -> JWK:
        """The public half, to publish in a JWKS."""
        return self._public

    @property
    def private_key(self) -> PrivateKey:
        """The ``cryptography`` private key object."""
        return self._key

    @property
    def algorithm(self) -> str:
        """The one algorithm this key signs with."""
        return self._public.algorithm

    @property
    def kid(self) -> str | None:
        """The key id written into token headers."""
        return self._public.kid

    def thumbprint(self) -> str:
        """The RFC 7638 thumbprint of the public key."""
        return self._public.thumbprint()

    def sign(self, signing_input: bytes) -> bytes:
        """Sign with the bound algorithm; the result is in JWS form (ECDSA is raw r||s)."""
        return self._sign(signing_input)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PrivateJWK):
            return NotImplemented
        return self._public == other._public

    def __hash__(self) -> int:
        return hash(self._public)

    def __repr__(self) -> str:
        return f"PrivateJWK(alg={self.algorithm!r}, kid={self.kid!r})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("PrivateJWK cannot be pickled (private key material)")
