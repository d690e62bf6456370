"""RFC 9449 DPoP proofs for outgoing requests.

A proof is a JWS signed by the client's DPoP key, fresh for every request: ``typ: dpop+jwt``,
the public key in the ``jwk`` header, a random ``jti``, the request method (``htm``) and URL
without query and fragment (``htu``), ``iat`` and, with an access token, ``ath`` =
base64url(SHA-256(token)). The receiving side checks it with
:func:`zerotrust.authn.binding.verify_dpop_proof`.
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa

from zerotrust._clock import SYSTEM_CLOCK, Clock
from zerotrust.errors import ConfigurationError
from zerotrust.tokens._b64 import b64url_encode
from zerotrust.tokens.algorithms import MAX_DPOP_RSA_BITS
from zerotrust.tokens.keys import PrivateJWK

__all__ = ["DPoPSigner", "dpop_proof"]

#: The public members of a JWK that identify the key (RFC 7638); nothing else is sent.
_KEY_MEMBERS: Final = ("kty", "crv", "x", "y", "n", "e")


def _segment(value: dict[str, Any]) -> str:
    return b64url_encode(json.dumps(value, separators=(",", ":")).encode("ascii"))


def _htu(url: str) -> str:
    # the target URI as it is sent (RFC 9449 4.2): an IRI's host in A-labels and its other
    # characters percent-encoded (RFC 3987 3.1), as httpx writes them on the request line
    try:
        url = str(httpx.URL(url))
    except (httpx.InvalidURL, TypeError):
        raise ConfigurationError("a DPoP proof needs an absolute http(s) URL") from None
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]  # never user information
    if parts.scheme not in ("http", "https") or not netloc:
        raise ConfigurationError("a DPoP proof needs an absolute http(s) URL")
    return urlunsplit((parts.scheme, netloc, parts.path or "/", "", ""))


class DPoPSigner:
    """Makes DPoP proofs with one key; the encoded header is computed once.

    ``clock`` sets ``iat`` (tests pass a fixed clock).
    """

    __slots__ = ("_clock", "_header", "_key")

    def __init__(self, key: PrivateJWK, *, clock: Clock | None = None) -> None:
        if not isinstance(key, PrivateJWK):
            raise ConfigurationError("dpop_key must be a PrivateJWK")
        public_key = key.public().public_key
        if isinstance(public_key, rsa.RSAPublicKey) and public_key.key_size > MAX_DPOP_RSA_BITS:
            raise ConfigurationError(
                f"dpop_key: servers refuse proofs by RSA keys of more than {MAX_DPOP_RSA_BITS} bits"
            )
        public = key.public().to_public_dict()
        jwk = {name: public[name] for name in _KEY_MEMBERS if name in public}
        self._key = key
        self._header = _segment({"typ": "dpop+jwt", "alg": key.algorithm, "jwk": jwk})
        self._clock = clock or SYSTEM_CLOCK

    @property
    def thumbprint(self) -> str:
        """The key's RFC 7638 thumbprint: the ``cnf.jkt`` of tokens bound to it."""
        return self._key.thumbprint()

    def proof(
        self, method: str, url: str, access_token: str | None = None, nonce: str | None = None
    ) -> str:
        """A fresh proof for one request (``url`` may carry a query: it is dropped)."""
        claims: dict[str, Any] = {
            "jti": secrets.token_urlsafe(16),
            "htm": method.upper(),
            "htu": _htu(url),
            "iat": math.floor(self._clock.now().timestamp()),
        }
        if access_token is not None:
            claims["ath"] = b64url_encode(hashlib.sha256(access_token.encode("ascii")).digest())
        if nonce is not None:
            claims["nonce"] = nonce
        signing_input = f"{self._header}.{_segment(claims)}"
        signature = self._key.sign(signing_input.encode("ascii"))
        return f"{signing_input}.{b64url_encode(signature)}"

    def __repr__(self) -> str:
        return f"DPoPSigner({self._key!r})"


def dpop_proof(
    key: PrivateJWK,
    *,
    method: str,
    url: str,
    access_token: str | None = None,
    nonce: str | None = None,
    clock: Clock | None = None,
) -> str:
    """A DPoP proof JWT for one request made with ``key`` (see the module documentation)."""
    return DPoPSigner(key, clock=clock).proof(method, url, access_token, nonce)
