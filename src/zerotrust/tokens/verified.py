"""What verification returns: :class:`VerifiedSignature` (step 1) and :class:`VerifiedToken`."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any, final

from zerotrust.errors import MalformedToken
from zerotrust.tokens._frozen import Frozen
from zerotrust.tokens._json import JSONError, loads_object, thaw
from zerotrust.tokens.keys import JWK
from zerotrust.tokens.secret import SecretKey

__all__ = ["VerifiedSignature", "VerifiedToken"]


@final
class VerifiedSignature(Frozen):
    """A token whose signature verified with a trusted key; its claims are NOT validated yet.

    ``claims`` parses the payload on first access (raising
    :class:`~zerotrust.errors.MalformedToken` if it is not a JSON object). Pass this object to
    :meth:`ClaimsValidator.validate` before trusting anything in it.
    """

    __slots__ = ("_claims", "algorithm", "header", "key", "key_id", "payload")
    header: Mapping[str, Any]
    payload: bytes
    key: JWK | SecretKey
    algorithm: str
    key_id: str | None
    _claims: Mapping[str, Any] | None

    def __init__(
        self,
        header: Mapping[str, Any],
        payload: bytes,
        key: JWK | SecretKey,
        algorithm: str,
        key_id: str | None,
    ) -> None:
        init = object.__setattr__
        init(self, "header", header)
        init(self, "payload", payload)
        init(self, "key", key)
        init(self, "algorithm", algorithm)
        init(self, "key_id", key_id)
        init(self, "_claims", None)

    @property
    def claims(self) -> Mapping[str, Any]:
        """The payload as a read-only JSON object (unvalidated claims)."""
        claims = self._claims
        if claims is None:
            try:
                claims = loads_object(self.payload)
            except JSONError as exc:
                raise MalformedToken(f"payload {exc}") from None
            object.__setattr__(self, "_claims", claims)
        return claims

    def __repr__(self) -> str:
        return f"VerifiedSignature(alg={self.algorithm!r}, kid={self.key_id!r})"


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_NO_SCOPE = frozenset({""})


def utc_datetime(value: Any) -> datetime | None:
    """A NumericDate (within ``datetime``'s range, as claims validation keeps them) as an aware
    UTC datetime; the epoch plus a timedelta does not depend on the platform's ``gmtime()``,
    which may refuse dates before 1970."""
    if value is None:
        return None
    return _EPOCH + timedelta(seconds=value)


@final
class VerifiedToken(Frozen):
    """A token whose signature and claims were verified. Immutable; safe to share.

    ``claims`` is a read-only mapping (nested objects are read-only mappings, arrays are
    tuples); the properties are typed views of the registered claims, checked during
    validation.
    """

    __slots__ = ("algorithm", "claims", "header", "key_id")
    header: Mapping[str, Any]
    claims: Mapping[str, Any]
    key_id: str | None
    algorithm: str

    def __init__(
        self,
        header: Mapping[str, Any],
        claims: Mapping[str, Any],
        key_id: str | None,
        algorithm: str,
    ) -> None:
        init = object.__setattr__
        init(self, "header", header)
        init(self, "claims", claims)
        init(self, "key_id", key_id)
        init(self, "algorithm", algorithm)

    @property
    def subject(self) -> str | None:
        """``sub``."""
        return self.claims.get("sub")

    @property
    def issuer(self) -> str | None:
        """``iss`` (matched exactly; absent only for JWT-SVIDs verified without an issuer)."""
        return self.claims.get("iss")

    @property
    def audience(self) -> tuple[str, ...]:
        """``aud`` as a tuple (a single string becomes a 1-tuple)."""
        aud = self.claims["aud"]
        return (aud,) if isinstance(aud, str) else tuple(aud)

    @property
    def scopes(self) -> frozenset[str]:
        """Scopes from a space-delimited ``scope`` string and/or an ``scp`` list or string."""
        claims = self.claims
        scope = claims.get("scope")
        if type(scope) is str and claims.get("scp") is None:  # the common case: one string
            granted = frozenset(scope.split(" "))
            return granted - _NO_SCOPE if "" in granted else granted
        found: set[str] = set()
        for name in ("scope", "scp"):
            value = self.claims.get(name)
            if isinstance(value, str):
                found.update(value.split(" "))
            elif value is not None:
                found.update(value)
        found.discard("")
        return frozenset(found)

    @property
    def jti(self) -> str | None:
        """``jti``, the token's unique id."""
        return self.claims.get("jti")

    @property
    def client_id(self) -> str | None:
        """``client_id`` (RFC 9068 access tokens)."""
        return self.claims.get("client_id")

    @property
    def expires_at(self) -> datetime:
        """``exp`` as an aware UTC datetime."""
        return utc_datetime(self.claims["exp"])  # type: ignore[return-value]

    @property
    def issued_at(self) -> datetime | None:
        """``iat`` as an aware UTC datetime, if present."""
        return utc_datetime(self.claims.get("iat"))

    @property
    def not_before(self) -> datetime | None:
        """``nbf`` as an aware UTC datetime, if present."""
        return utc_datetime(self.claims.get("nbf"))

    @property
    def cnf(self) -> Mapping[str, Any] | None:
        """The confirmation (``cnf``, RFC 7800/8705) object, if present."""
        return self.claims.get("cnf")

    @property
    def act(self) -> tuple[Mapping[str, Any], ...]:
        """The delegation chain (RFC 8693 ``act``), outermost (current) actor first.

        Each entry is that actor's claims without its nested ``act``.
        """
        node = self.claims.get("act")
        if node is None:  # no delegation, as for most tokens
            return ()
        chain: list[Mapping[str, Any]] = []
        while isinstance(node, Mapping):
            chain.append(MappingProxyType({k: v for k, v in node.items() if k != "act"}))
            node = node.get("act")
        return tuple(chain)

    def claims_dict(self) -> dict[str, Any]:
        """A mutable deep copy of the claims (plain dicts and lists, e.g. for ``json.dumps``)."""
        return thaw(self.claims)  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return (
            f"VerifiedToken(iss={self.claims.get('iss')!r}, sub={self.subject!r}, "
            f"jti={self.jti!r}, alg={self.algorithm!r}, kid={self.key_id!r})"
        )
