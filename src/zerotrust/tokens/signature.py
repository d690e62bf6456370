"""Step 1 of verification: parse a JWS compact token and verify its signature.

:class:`SignatureVerifier` applies, in this order: input bounds (type, ASCII, size), exactly
three segments (five is JWE: refused), the header rules of :mod:`._header`, canonical
base64url for the other segments, key selection by ``kid`` from the key source, the key's
algorithm equal to the header's, and the signature. Only then is the payload decoded. No
claim is read here: :class:`~zerotrust.tokens.ClaimsValidator` is step 2. (The one exception
is a :class:`~zerotrust.tokens.TrustDomainKeySource`, the JWT authorities of several
SPIFFE trust domains: the trust domain of a JWT-SVID's ``sub`` is read first, from the bounded
payload, to pick that domain's keys.)

The logic is a sans-IO generator (:meth:`SignatureVerifier.flow`) that yields a
:class:`~zerotrust.tokens.KeyRequest` when it needs keys; :meth:`~SignatureVerifier.verify`
and :meth:`~SignatureVerifier.verify_async` are thin drivers around it.
"""

from __future__ import annotations

from binascii import Error as BinasciiError
from binascii import a2b_base64
from collections.abc import Callable, Collection, Generator, Mapping, Sequence
from typing import Any, Final, TypeVar, cast

from zerotrust._sansio import drive, drive_async
from zerotrust.errors import (
    AlgorithmNotAllowed,
    ConfigurationError,
    InvalidClaim,
    InvalidSignature,
    InvalidSpiffeId,
    KeysUnavailable,
    MalformedToken,
    MissingClaim,
    TokenTooLarge,
    UnknownKey,
    UnsupportedTokenFeature,
)
from zerotrust.identity import SpiffeId, TrustDomain
from zerotrust.tokens._b64 import ALPHABET, PADDING, TO_STANDARD, tail_ok
from zerotrust.tokens._header import REGISTERED_HEADERS, HeaderInfo, parse_header
from zerotrust.tokens._json import JSONError, loads_dict
from zerotrust.tokens._profiles import JWT_SVID, TYP_RULES
from zerotrust.tokens.algorithms import HMAC_ALGORITHMS, JWT_SVID_ALGORITHMS, check_allowlist
from zerotrust.tokens.jwks import JWKSet
from zerotrust.tokens.keys import JWK
from zerotrust.tokens.secret import SecretKey, SecretKeySet
from zerotrust.tokens.sources import (
    KeyRequest,
    KeySet,
    KeysLike,
    StaticKeySource,
    TrustDomainKeySource,
    as_key_source,
)
from zerotrust.tokens.verified import VerifiedSignature

__all__ = ["DEFAULT_MAX_TOKEN_SIZE", "SignatureVerifier", "verify_signature"]

DEFAULT_MAX_TOKEN_SIZE: Final = 8192
_MIN_TOKEN_SIZE: Final = 256
_MAX_TOKEN_SIZE: Final = 1 << 20
_HEADER_CACHE_SIZE: Final = 256
_KEY_SET_TYPES: Final = (JWKSet, SecretKeySet)

T = TypeVar("T")
Flow = Generator[KeyRequest, KeySet, T]
Signed = tuple[Mapping[str, Any], bytes, JWK | SecretKey, str, str | None]


def ascii_token(token: object, max_size: int) -> bytes:
    """``token`` as ASCII bytes, after the type and size bounds (the input is never echoed)."""
    if isinstance(token, str):
        if len(token) > max_size:
            raise TokenTooLarge(f"token is longer than {max_size} bytes")
        if not token.isascii():  # no UnicodeEncodeError, whose repr holds the whole token
            raise MalformedToken("token is not ASCII")
        raw = token.encode("ascii")
    elif isinstance(token, (bytes, bytearray, memoryview)):
        # a memoryview's len() counts items, not bytes
        if (token.nbytes if isinstance(token, memoryview) else len(token)) > max_size:
            raise TokenTooLarge(f"token is longer than {max_size} bytes")
        raw = bytes(token)
        if not raw.isascii():
            raise MalformedToken("token is not ASCII")
    else:
        raise MalformedToken("token must be str or bytes")
    if not raw:
        raise MalformedToken("token is empty")
    return raw


class SignatureVerifier:
    """Verifies the signature of JWS compact tokens against keys from a key source.

    ``algorithms`` is required: the allowlist of JWS algorithms (never ``none``; HMAC only
    with a :class:`~zerotrust.tokens.SecretKey`, never mixed with public-key algorithms).
    ``token_type`` selects the ``typ`` header rule (``None``: generic JWT, ``"jwt-svid"``,
    ``"at+jwt"``); ``critical`` names the ``crit`` header parameters the caller processes
    itself (none by default, so any ``crit`` is refused).
    """

    __slots__ = (
        "_allowed",
        "_by_domain",
        "_critical",
        "_first",
        "_headers",
        "_max_size",
        "_source",
        "_static",
        "_type",
    )

    def __init__(
        self,
        *,
        keys: KeysLike,
        algorithms: Sequence[str],
        max_token_size: int = DEFAULT_MAX_TOKEN_SIZE,
        token_type: str | None = None,
        critical: Collection[str] = (),
    ) -> None:
        self._allowed = check_allowlist(algorithms)
        if token_type not in TYP_RULES:
            raise ConfigurationError("token_type must be None, 'jwt-svid' or 'at+jwt'")
        if token_type == JWT_SVID and not self._allowed <= JWT_SVID_ALGORITHMS:
            raise ConfigurationError("JWT-SVIDs are signed with RS*, ES* or PS* algorithms only")
        if type(max_token_size) is not int or not (
            _MIN_TOKEN_SIZE <= max_token_size <= _MAX_TOKEN_SIZE
        ):
            raise ConfigurationError(
                f"max_token_size must be an int from {_MIN_TOKEN_SIZE} to {_MAX_TOKEN_SIZE}"
            )
        if isinstance(critical, str) or not all(isinstance(c, str) for c in critical):
            raise ConfigurationError("critical must be a collection of header parameter names")
        if set(critical) & (REGISTERED_HEADERS | {"b64"}):
            raise ConfigurationError("critical may not name registered parameters or 'b64'")
        if critical and token_type == JWT_SVID:
            raise ConfigurationError("a JWT-SVID header holds no 'crit': critical must be empty")
        self._source = as_key_source(keys)
        # the JWT authorities of several trust domains: each token's own domain's keys only
        self._by_domain = self._source if isinstance(self._source, TrustDomainKeySource) else None
        if self._by_domain is not None and token_type != JWT_SVID:
            raise ConfigurationError(
                "keys of several trust domains verify JWT-SVIDs only: token_type='jwt-svid'"
            )
        # A fixed key set is used directly: asking a driver for it would cost every token a
        # round trip through each flow that delegates to this one. Only StaticKeySource
        # itself: a subclass may answer get_keys() in its own way, so it is asked.
        self._static: KeySet | None = None
        if isinstance(self._source, StaticKeySource):
            _check_static_keys(self._source.keys, self._allowed)
            if type(self._source) is StaticKeySource:
                self._static = self._source.keys
        self._type = token_type
        self._critical = frozenset(critical)
        self._max_size = max_token_size
        self._first = KeyRequest(self._source)
        self._headers: dict[bytes, HeaderInfo] = {}

    @property
    def algorithms(self) -> frozenset[str]:
        """The algorithm allowlist."""
        return self._allowed

    @property
    def max_token_size(self) -> int:
        """The longest token accepted, in bytes."""
        return self._max_size

    @property
    def source(self) -> object:
        """The key source consulted for keys."""
        return self._source

    def verify(self, token: str | bytes) -> VerifiedSignature:
        """Verify ``token``'s signature (blocking on the key source if it needs to)."""
        return drive(self.flow(token))

    async def verify_async(self, token: str | bytes) -> VerifiedSignature:
        """Verify ``token``'s signature, awaiting the key source."""
        return await drive_async(self.flow(token))

    def flow(
        self, token: str | bytes, *, on_keys: Callable[[KeySet], object] | None = None
    ) -> Flow[VerifiedSignature]:
        """The sans-IO verification: yields :class:`KeyRequest`, is sent a :data:`KeySet`.

        ``on_keys`` is called with every key set received (the token verifier uses it to
        notice key rotation).
        """
        signed = yield from self._flow(ascii_token(token, self._max_size), on_keys)
        return VerifiedSignature(*signed)

    def _flow(self, raw: bytes, on_keys: Callable[[KeySet], object] | None) -> Flow[Signed]:
        """The logic of :meth:`flow`, returning a plain tuple (no per-call object)."""
        separators = raw.translate(None, ALPHABET)  # what is left besides base64url
        if separators != b"..":
            if separators == b"....":
                raise UnsupportedTokenFeature("JWE (encrypted) tokens are refused: expected a JWS")
            if separators.strip(b"."):
                raise MalformedToken("token is not base64url")
            raise MalformedToken("a JWS has exactly three dot-separated segments")
        head, payload, signature = raw.split(b".")
        if not (tail_ok(payload) and tail_ok(signature)):
            raise MalformedToken("payload or signature is not canonical base64url")
        info = self._headers.get(head)
        if info is None:
            info = parse_header(
                head, allowed=self._allowed, token_type=self._type, critical=self._critical
            )
            if len(self._headers) >= _HEADER_CACHE_SIZE:
                self._headers.clear()
            self._headers[head] = info
        header, alg, kid = info

        by_domain = self._by_domain
        # several trust domains: the one the token's sub names picks the keys (never the kid)
        pick = None if by_domain is None else (by_domain, svid_trust_domain(payload))
        keys = self._static
        if keys is None:
            keys = _received((yield self._first), on_keys, pick)
        key = keys.select(kid)
        if key is None:
            if kid is None:
                raise UnknownKey("token has no kid and the key set does not hold exactly one key")
            keys = _received((yield KeyRequest(self._source, kid)), on_keys, pick)
            key = keys.select(kid)
            if key is None:
                if keys.is_ambiguous(kid):
                    raise UnknownKey("kid names several different keys in the key set")
                raise UnknownKey("kid not found in the key set")
        verify = key._verify if key._alg == alg else key._verifier_for(alg)
        if verify is None:
            raise AlgorithmNotAllowed("header alg is not an algorithm of the key")
        sig = a2b_base64(signature.translate(TO_STANDARD) + PADDING[len(signature) & 3])
        if not verify(sig, raw[: len(head) + 1 + len(payload)]):
            raise InvalidSignature("signature verification failed")
        data = a2b_base64(payload.translate(TO_STANDARD) + PADDING[len(payload) & 3])
        return header, data, key, alg, kid if kid is not None else key._kid


def svid_trust_domain(payload: bytes) -> TrustDomain:
    """The trust domain of the SPIFFE ID in ``sub`` of a JWT-SVID's (base64url) payload,
    read before its signature is checked: only to choose that domain's keys."""
    try:
        claims = loads_dict(a2b_base64(payload.translate(TO_STANDARD) + PADDING[len(payload) & 3]))
    except (JSONError, BinasciiError) as exc:
        raise MalformedToken(f"payload {exc}") from None
    return subject_trust_domain(claims.get("sub"))


def subject_trust_domain(sub: object) -> TrustDomain:
    """The trust domain of a JWT-SVID's ``sub`` claim (refused as step 2 would refuse it)."""
    if sub is None:
        raise MissingClaim("claim 'sub' is missing")
    if type(sub) is not str:
        raise InvalidClaim("claim 'sub' must be a string")
    try:
        return SpiffeId.parse(sub).trust_domain
    except InvalidSpiffeId:
        raise InvalidClaim("JWT-SVID 'sub' is not a valid SPIFFE ID") from None


def _received(
    keys: object,
    on_keys: Callable[[KeySet], object] | None,
    pick: tuple[TrustDomainKeySource, TrustDomain] | None,
) -> KeySet:
    """The key set a source answered, checked and reported; with several trust domains, the
    keys of the token's own domain (the answer, for all of them, is what is reported)."""
    if type(keys) not in _KEY_SET_TYPES:
        raise KeysUnavailable("key source returned something that is not a key set")
    answer = cast(KeySet, keys)
    if on_keys is not None:
        on_keys(answer)
    if pick is None:
        return answer
    own = pick[0].keys_of(pick[1])
    if type(own) is not JWKSet:
        raise KeysUnavailable("key source returned something that is not a key set")
    return own


def _check_static_keys(keys: KeySet, allowed: frozenset[str]) -> None:
    if isinstance(keys, SecretKeySet):
        if keys.key.algorithm not in allowed:
            raise ConfigurationError(
                "a SecretKey needs its HMAC algorithm in the allowlist (and nothing else)"
            )
        return
    if allowed & HMAC_ALGORITHMS:
        raise ConfigurationError("HMAC algorithms need a SecretKey, not public keys")
    if not any(key.algorithms & allowed for key in keys):
        raise ConfigurationError("no key in the key set uses an allowed algorithm")


def verify_signature(
    token: str | bytes,
    keys: KeysLike,
    *,
    algorithms: Sequence[str],
    max_token_size: int = DEFAULT_MAX_TOKEN_SIZE,
    token_type: str | None = None,
    critical: Collection[str] = (),
) -> VerifiedSignature:
    """One-shot step 1: verify ``token``'s signature with ``keys`` (see SignatureVerifier).

    Build a :class:`SignatureVerifier` (or a :class:`~zerotrust.tokens.TokenVerifier`) once
    instead when verifying many tokens.
    """
    verifier = SignatureVerifier(
        keys=keys,
        algorithms=algorithms,
        max_token_size=max_token_size,
        token_type=token_type,
        critical=critical,
    )
    return verifier.verify(token)
