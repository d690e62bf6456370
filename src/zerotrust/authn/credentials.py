"""Extracting credentials from a request, strictly and within bounds.

* ``Authorization: Bearer <token>`` / ``Authorization: DPoP <token>`` (RFC 6750 §2.1,
  RFC 9449 §7.1): exactly one ``Authorization`` header, one scheme, ``b64token`` syntax, a size
  bound. Tokens in query strings or form bodies are never read.
* ``DPoP: <proof>``: exactly one header (RFC 9449 4.3), read only where DPoP is accepted; a
  service that does not accept DPoP refuses the ``DPoP`` scheme as any unsupported scheme and
  ignores the header, as a Bearer-only server does.
* API keys (lower assurance, opt-in): one header line (a value holding a comma is several
  lines a WSGI server joined), compared against stored hashes in constant time. Only random
  keys of at least :data:`MIN_API_KEY_LENGTH` characters are accepted: a fast unsalted hash
  protects a high-entropy key, never a short or chosen one.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from zerotrust.authn._trusted import CREDENTIAL_HEADERS, FORWARDED_CERT_HEADERS
from zerotrust.authn.request import RequestView
from zerotrust.errors import (
    ConfigurationError,
    InvalidDPoPProof,
    MalformedCredentials,
    UnsupportedScheme,
)
from zerotrust.tokens._b64 import B64TOKEN

__all__ = ["B64TOKEN", "MIN_API_KEY_LENGTH", "ApiKeys", "Credentials", "extract_credentials"]

#: RFC 6750 ``b64token``.
_SCHEMES = {"bearer": "Bearer", "dpop": "DPoP"}
DEFAULT_MAX_TOKEN_BYTES = 8192
#: The shortest API key accepted (``secrets.token_urlsafe(32)`` or ``openssl rand -hex 32`` make
#: good keys): only a key too random to guess may be stored as a plain SHA-256 digest, which
#: anyone holding the digest can test guesses against offline (NIST SP 800-63B 5.1.2.2).
MIN_API_KEY_LENGTH = 32
#: RFC 9110 field names (``token``), lower case.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+", re.ASCII)


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a request presented (nothing here is verified yet)."""

    token: str | None = None
    scheme: Literal["Bearer", "DPoP"] | None = None
    dpop_proof: str | None = None
    api_key: str | None = None

    def __repr__(self) -> str:  # never show credential values
        parts = [f"scheme={self.scheme!r}"] if self.scheme else []
        parts += [f"{n}=<present>" for n in ("token", "dpop_proof", "api_key") if getattr(self, n)]
        return f"Credentials({', '.join(parts)})"


def _single(view: RequestView, name: str) -> str | None:
    values = view.header(name)
    if not values:
        return None
    if len(values) != 1:
        raise MalformedCredentials(f"{len(values)} {name} headers; exactly one is allowed")
    return values[0]


def extract_credentials(
    view: RequestView,
    *,
    max_token_bytes: int = DEFAULT_MAX_TOKEN_BYTES,
    api_key_header: str | None = None,
    dpop: bool = True,
) -> Credentials:
    """Read the credentials a request carries; raises :class:`MalformedCredentials` (a
    malformed ``Authorization`` or API key header), :class:`UnsupportedScheme`, or
    :class:`InvalidDPoPProof` (several ``DPoP`` headers, or one that is no ``token68``).

    ``dpop=False`` (a service that does not accept DPoP): the ``DPoP`` authorization scheme is
    an :class:`UnsupportedScheme` and the ``DPoP`` header is not read."""
    token = scheme = None
    authorization = _single(view, "authorization")
    if authorization is not None:
        if len(authorization) > max_token_bytes + 16:
            raise MalformedCredentials("authorization header is too large")
        # only optional whitespace (SP, HTAB: RFC 9110 5.5) is trimmed, as every proxy does
        text = authorization.strip(" \t")
        cut = min((i for i in (text.find(" "), text.find("\t")) if i >= 0), default=len(text))
        canonical = _SCHEMES.get(text[:cut].lower())
        if canonical is None or (canonical == "DPoP" and not dpop):
            raise UnsupportedScheme("unsupported authorization scheme")
        if text[cut : cut + 1] != " ":  # RFC 6750 2.1: the scheme, 1*SP, the token
            raise MalformedCredentials(f"malformed {canonical} credentials")
        value = text[cut + 1 :].strip(" ")
        if not value or not B64TOKEN.fullmatch(value):
            raise MalformedCredentials(f"malformed {canonical} credentials")
        if len(value) > max_token_bytes:  # the header bound above leaves room for the scheme
            raise MalformedCredentials(f"{canonical} token is too large")
        token, scheme = value, canonical
    proof = None
    if dpop:
        # RFC 9449 4.3: one DPoP header holding one JWT; else the proof is invalid (401)
        proofs = view.header("dpop")
        if len(proofs) > 1:
            raise InvalidDPoPProof(f"{len(proofs)} DPoP headers; exactly one is allowed")
        proof = proofs[0] if proofs else None
        if proof is not None and (len(proof) > max_token_bytes or not B64TOKEN.fullmatch(proof)):
            raise InvalidDPoPProof("malformed DPoP proof header")
    api_key = None
    if api_key_header:
        api_key = _single(view, api_key_header)
        if api_key is not None and not (1 <= len(api_key) <= 512):
            raise MalformedCredentials("malformed API key")
        if api_key is not None and "," in api_key:
            # a key holds no comma (ApiKeys.hash): this is several header lines, which a WSGI
            # server joined with commas (an ASGI server or gRPC hands them over apart)
            raise MalformedCredentials(f"several {api_key_header} headers; exactly one is allowed")
    return Credentials(token=token, scheme=scheme, dpop_proof=proof, api_key=api_key)  # type: ignore[arg-type]


class ApiKeys:
    """API keys as a lower-assurance credential: only SHA-256 hashes are kept.

    ``ApiKeys({"key-id": "<sha256 hex of the key>"}, header="x-api-key")``; use
    :meth:`hash` to compute the stored value. Keys are random strings of at least
    :data:`MIN_API_KEY_LENGTH` characters (``secrets.token_urlsafe(32)``): :meth:`hash`
    refuses a shorter one and :meth:`identify` never accepts it. One digest names one key id
    (given to two, it is refused). The header is the key's own:
    ``Authorization``, ``DPoP`` and the forwarded-certificate headers are refused. Lookup
    compares against every stored hash in constant time, so neither timing nor the order of
    keys leaks anything.
    """

    __slots__ = ("_entries", "_header")

    def __init__(self, hashes: Mapping[str, str], *, header: str = "x-api-key") -> None:
        if not hashes:
            raise ConfigurationError("ApiKeys needs at least one key")
        entries: list[tuple[str, bytes]] = []
        for key_id, digest in hashes.items():
            if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
                raise ConfigurationError(
                    f"API key {key_id!r}: store the SHA-256 hex digest (64 lower-case hex"
                    " digits, ApiKeys.hash(key)), not the key"
                )
            stored = bytes.fromhex(digest)
            for other, known in entries:
                if known == stored:  # the key would be the last id's, the other id dead
                    raise ConfigurationError(
                        f"API keys {other!r} and {key_id!r} have the same digest: one key"
                        " names one caller"
                    )
            entries.append((key_id, stored))
        self._entries = tuple(entries)
        name = header.lower() if isinstance(header, str) else ""
        if not _HEADER_NAME.fullmatch(name):
            raise ConfigurationError(f"API key header {header!r} is not a valid header name")
        if name in CREDENTIAL_HEADERS or name in FORWARDED_CERT_HEADERS:
            # a request carrying a token or a certificate would also seem to carry an API key
            raise ConfigurationError(f"API keys need a header of their own, not {header!r}")
        self._header = name

    @property
    def header(self) -> str:
        """The (lower-case) name of the header that carries the key."""
        return self._header

    @staticmethod
    def hash(key: str) -> str:
        """The value to store for ``key``, a random string of at least
        :data:`MIN_API_KEY_LENGTH` characters (a shorter one is a :class:`ConfigurationError`:
        its digest would give it away to a dictionary) without a comma (a WSGI server joins
        repeated header lines with commas, so a request presenting one is refused as several
        API key headers)."""
        if not isinstance(key, str) or len(key) < MIN_API_KEY_LENGTH:
            raise ConfigurationError(
                f"an API key must be a random string of at least {MIN_API_KEY_LENGTH} characters"
                " (secrets.token_urlsafe(32))"
            )
        if "," in key:
            # a WSGI server joins repeated header lines with commas: such a key could not be
            # told from several keys, and is refused when presented
            raise ConfigurationError("an API key must not contain a comma")
        return hashlib.sha256(key.encode("utf-8")).hexdigest()

    def identify(self, presented: str) -> str | None:
        """The id of the presented key, or ``None``; constant time in the number of keys. A key
        shorter than :data:`MIN_API_KEY_LENGTH` is never one (its stored digest, made by other
        means than :meth:`hash`, would not protect it)."""
        if len(presented) < MIN_API_KEY_LENGTH:
            return None
        digest = hashlib.sha256(presented.encode("utf-8", "surrogatepass")).digest()
        found = None
        for key_id, stored in self._entries:
            if hmac.compare_digest(digest, stored):
                found = key_id
        return found
