"""Step 2 of verification: validate the claims of a token whose signature verified.

Rules (each failure raises a :class:`~zerotrust.errors.TokenError` with a stable code):

* ``iss`` is required and must equal the configured issuer exactly (no prefix, substring or
  case folding).
* ``aud`` is required: a string or a non-empty array of strings, at least one of which is a
  configured audience.
* ``exp`` is required; ``nbf`` and ``iat`` are honoured; all three allow ``leeway`` seconds
  of clock skew. ``iat`` in the future (beyond the leeway) is refused. Numeric dates must be
  JSON numbers (not booleans or strings) in the range of ``datetime`` (years 1 to 9999).
* ``max_lifetime`` bounds ``exp - iat`` (or ``exp - nbf`` without ``iat``; a token with
  neither is refused when a bound is set).
* Registered claims have their registered types (``sub``, ``jti``, ``client_id``, ``azp``,
  ``acr`` and ``scope`` strings, ``scp`` a string or array of strings, ``amr`` an array of
  strings, ``auth_time`` a NumericDate, ``cnf`` and ``act`` objects).
* ``required_claims`` must be present.
* Profiles: ``"jwt-svid"`` requires ``sub`` to be a workload's SPIFFE ID (not the trust
  domain's own) in the expected trust domain; ``"at+jwt"`` (RFC 9068) requires ``sub``,
  ``client_id``, ``iat`` and ``jti``.
* Given a :class:`~zerotrust.tokens.VerifiedSignature` (step 2 on its own), the profile's
  header rules are applied again: its ``typ``, and RS/ES/PS algorithms only for JWT-SVIDs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

from zerotrust._clock import Clock, SystemClock
from zerotrust.errors import (
    ConfigurationError,
    InvalidAudience,
    InvalidClaim,
    InvalidIssuer,
    InvalidSpiffeId,
    MissingClaim,
    TokenExpired,
    TokenLifetimeTooLong,
    TokenNotYetValid,
)
from zerotrust.identity import SpiffeId, TrustDomain
from zerotrust.tokens._header import check_profile
from zerotrust.tokens._profiles import AT_JWT, JWT_SVID, string_tuple
from zerotrust.tokens.verified import VerifiedSignature, VerifiedToken

__all__ = ["ClaimsValidator", "validate_claims"]

_MAX_LEEWAY: Final = 600.0
_STRING_CLAIMS: Final = ("sub", "jti", "client_id", "scope", "azp", "acr")
_REGISTERED_CLAIMS: Final = (
    *("iss", "sub", "aud", "exp", "nbf", "iat", "jti"),  # RFC 7519 4.1
    *("client_id", "scope", "scp", "cnf", "act", "azp", "auth_time", "acr", "amr"),
)
_PROFILE_REQUIRED: Final[dict[str | None, tuple[str, ...]]] = {
    None: (),
    JWT_SVID: ("sub",),
    AT_JWT: ("sub", "client_id", "iat", "jti"),
}


def clock_function(clock: Clock | None) -> Callable[[], float]:
    """A ``now()`` returning POSIX seconds: ``time.time`` itself for the system clock."""
    if clock is None or isinstance(clock, SystemClock):
        return time.time
    if not callable(getattr(clock, "now", None)):
        raise ConfigurationError("clock must have a now() method returning an aware datetime")
    now = clock.now
    return lambda: now().timestamp()


# NumericDates are bounded to what ``datetime`` holds (years 1 to 9999), so the dates of a
# VerifiedToken are always readable
_DATE_MIN: Final = -62_135_596_800  # 0001-01-01T00:00:00Z
_DATE_MAX: Final = 253_402_300_800  # 10000-01-01T00:00:00Z, excluded


def numeric_date(value: object) -> float | None:
    """``value`` as a NumericDate within ``datetime``'s range, or ``None`` when it is not one."""
    try:
        return _date(value, "date")
    except InvalidClaim:
        return None


def _date(value: object, name: str) -> float | None:
    if value is None:
        return None
    if type(value) is not int and type(value) is not float:  # bool and str are refused
        raise InvalidClaim(f"claim {name!r} must be a number of seconds")
    if not _DATE_MIN <= value < _DATE_MAX:  # also refuses NaN and infinities
        raise InvalidClaim(f"claim {name!r} is out of range")
    return float(value)


def _check_order(exp: float, nbf: float | None, iat: float | None) -> None:
    """A token whose ``exp`` is before its ``nbf`` or ``iat`` is valid at no time: only the
    leeways on both ends would let it pass."""
    for name, start in (("nbf", nbf), ("iat", iat)):
        if start is not None and exp < start:
            raise InvalidClaim(f"exp is before {name}")


class ClaimsValidator:
    """Validates claims against one issuer, its audiences and a profile (see module docs).

    ``trust_domain`` is used by the ``"jwt-svid"`` profile only: the trust domain ``sub`` must
    belong to. It defaults to the issuer's when the issuer is itself a ``spiffe://`` ID and
    is required otherwise. ``any_trust_domain=True`` (``"jwt-svid"`` only, without
    ``trust_domain`` or a ``spiffe://`` issuer) accepts a workload of any trust domain: only
    for tokens whose signature step verified them with their own domain's keys (a
    :class:`~zerotrust.tokens.TokenVerifier` given a
    :class:`~zerotrust.tokens.TrustDomainKeySource` sets it; on its own it would let one
    domain's keys vouch for another's workloads).
    """

    __slots__ = (
        "_any_domain",
        "_audiences",
        "_issuer",
        "_leeway",
        "_max_lifetime",
        "_now",
        "_required",
        "_trust_domain",
        "_type",
    )

    def __init__(
        self,
        *,
        issuer: str | None,
        audience: str | Sequence[str],
        leeway: float = 60,
        token_type: str | None = None,
        required_claims: Sequence[str] = (),
        max_lifetime: float | None = None,
        clock: Clock | None = None,
        trust_domain: str | TrustDomain | None = None,
        any_trust_domain: bool = False,
    ) -> None:
        if any_trust_domain is not False:
            if any_trust_domain is not True:
                raise ConfigurationError("any_trust_domain must be True or False")
            if token_type != JWT_SVID or trust_domain is not None:
                raise ConfigurationError(
                    "any_trust_domain is for JWT-SVIDs (token_type='jwt-svid') without trust_domain"
                )
            if isinstance(issuer, str) and issuer.startswith("spiffe://"):
                raise ConfigurationError(
                    "any_trust_domain cannot be used with a spiffe:// issuer (one trust domain)"
                )
        if issuer is None:
            if token_type != JWT_SVID or (trust_domain is None and not any_trust_domain):
                raise ConfigurationError(
                    "issuer is required; only JWT-SVIDs checked against trust_domain= may omit it"
                )
        elif not isinstance(issuer, str) or not issuer:
            raise ConfigurationError("issuer must be a non-empty string")
        audiences = string_tuple(audience, "audience")
        if isinstance(leeway, bool) or not isinstance(leeway, (int, float)):
            raise ConfigurationError("leeway must be a number of seconds")
        if not (0 <= leeway <= _MAX_LEEWAY):
            raise ConfigurationError(f"leeway must be between 0 and {_MAX_LEEWAY:g} seconds")
        if max_lifetime is not None and (
            isinstance(max_lifetime, bool)
            or not isinstance(max_lifetime, (int, float))
            or not (0 < max_lifetime < math.inf)
        ):
            raise ConfigurationError("max_lifetime must be a positive number of seconds")
        if token_type not in _PROFILE_REQUIRED:
            raise ConfigurationError("token_type must be None, 'jwt-svid' or 'at+jwt'")
        if isinstance(required_claims, str) or not isinstance(required_claims, Iterable):
            raise ConfigurationError("required_claims must be a list of claim names")
        required = tuple(required_claims)  # read once: a one-shot iterator would be empty after
        if not all(isinstance(name, str) and name for name in required):
            raise ConfigurationError("required_claims must be a list of claim names")
        self._issuer = issuer
        self._audiences = frozenset(audiences)
        self._leeway = float(leeway)
        self._max_lifetime = None if max_lifetime is None else float(max_lifetime)
        self._type = token_type
        self._required = tuple(dict.fromkeys((*_PROFILE_REQUIRED[token_type], *required)))
        self._any_domain = any_trust_domain
        self._trust_domain = (
            None if any_trust_domain else _expected_trust_domain(issuer, token_type, trust_domain)
        )
        self._now = clock_function(clock)

    @property
    def issuer(self) -> str | None:
        """The accepted ``iss`` (``None``: JWT-SVIDs of ``trust_domain`` with any or no ``iss``)."""
        return self._issuer

    @property
    def audiences(self) -> frozenset[str]:
        """The accepted ``aud`` values."""
        return self._audiences

    @property
    def trust_domain(self) -> TrustDomain | None:
        """The trust domain JWT-SVID subjects must belong to (``jwt-svid`` profile only;
        ``None`` with :attr:`any_trust_domain`)."""
        return self._trust_domain

    @property
    def any_trust_domain(self) -> bool:
        """Whether JWT-SVID subjects may belong to any trust domain (each checked by the key
        source against its own domain's keys)."""
        return self._any_domain

    def validate(self, signed: VerifiedSignature) -> VerifiedToken:
        """Validate the claims of a signature-verified token; returns the verified token."""
        return self.validate_at(signed, self._now())[0]

    def validate_at(
        self, signed: VerifiedSignature, now: float
    ) -> tuple[VerifiedToken, float, float]:
        """Apply the profile's header rules to ``signed`` and validate its claims at POSIX time
        ``now``; also returns the window ``[from, until)`` in which the time-dependent rules
        keep holding (used by the verified-token cache)."""
        check_profile(signed.header, signed.algorithm, self._type)
        claims = signed.claims
        valid_from, valid_until = self.check(claims, now)
        token = VerifiedToken(signed.header, claims, signed.key_id, signed.algorithm)
        return token, valid_from, valid_until

    def check(self, claims: Mapping[str, Any], now: float) -> tuple[float, float]:
        """Apply every rule to ``claims`` at POSIX time ``now``; returns the valid window."""
        get = claims.get
        iss = get("iss")
        if self._issuer is None:  # JWT-SVID bound to a trust domain: iss is optional
            if iss is not None and type(iss) is not str:
                raise InvalidClaim("claim 'iss' must be a string")
        elif iss is None:
            raise MissingClaim("claim 'iss' is missing")
        elif type(iss) is not str or iss != self._issuer:
            raise InvalidIssuer("issuer does not match")
        aud = get("aud")
        if type(aud) is not str or aud not in self._audiences:
            self._check_audience(aud)
        exp = get("exp")
        if type(exp) is not int or not _DATE_MIN <= exp < _DATE_MAX:
            exp = _date(exp, "exp")
            if exp is None:
                raise MissingClaim("claim 'exp' is missing")
        leeway = self._leeway
        if now >= exp + leeway:
            raise TokenExpired("token has expired")
        valid_from = -math.inf
        nbf = get("nbf")
        if type(nbf) is not int or not _DATE_MIN <= nbf < _DATE_MAX:
            nbf = _date(nbf, "nbf")
        if nbf is not None:
            valid_from = nbf - leeway
            if now < valid_from:
                raise TokenNotYetValid("token is not valid yet (nbf)")
        iat = get("iat")
        if type(iat) is not int or not _DATE_MIN <= iat < _DATE_MAX:
            iat = _date(iat, "iat")
        if iat is not None:
            if now < iat - leeway:
                raise TokenNotYetValid("token was issued in the future (iat)")
            valid_from = max(valid_from, iat - leeway)
        _check_order(exp, nbf, iat)
        if self._max_lifetime is not None:
            start = iat if iat is not None else nbf
            if start is None:
                raise MissingClaim("claim 'iat' is needed to bound the token lifetime")
            if exp - start > self._max_lifetime:
                raise TokenLifetimeTooLong("token lifetime exceeds the configured maximum")
        _check_types(claims)
        for name in self._required:
            if get(name) is None:  # null is no value (RFC 7519 4.1: every type excludes it)
                raise MissingClaim(f"claim {name!r} is missing")
        if self._trust_domain is not None or self._any_domain:
            self._check_svid_subject(get("sub"))
        return valid_from, exp

    def _check_audience(self, aud: object) -> None:
        if aud is None:
            raise MissingClaim("claim 'aud' is missing")
        if type(aud) is str:
            if aud not in self._audiences:
                raise InvalidAudience("audience does not match")
            return
        if not _strings(aud) or not aud:
            raise InvalidClaim("claim 'aud' must be a string or a non-empty array of strings")
        if self._audiences.isdisjoint(aud):  # type: ignore[arg-type]
            raise InvalidAudience("audience does not match")

    def _check_svid_subject(self, sub: object) -> None:
        try:
            spiffe_id = SpiffeId.parse(sub)  # type: ignore[arg-type]
        except InvalidSpiffeId:
            raise InvalidClaim("JWT-SVID 'sub' is not a valid SPIFFE ID") from None
        if not spiffe_id.path:  # as for X509-SVIDs: a trust domain's own ID is no workload
            raise InvalidClaim("JWT-SVID 'sub' is a trust domain ID, not a workload's")
        if self._trust_domain is not None and spiffe_id.trust_domain != self._trust_domain:
            raise InvalidClaim("JWT-SVID 'sub' is not in the expected trust domain")


def _check_types(claims: Mapping[str, Any]) -> None:
    """Registered claims that are present must have their registered JSON types (``null``
    is none of them: a null ``jti`` would also slip past revocation by jti)."""
    get = claims.get
    if None in claims.values():
        for name in _REGISTERED_CLAIMS:
            if name in claims and claims[name] is None:
                raise InvalidClaim(f"claim {name!r} must not be null")
    for name in _STRING_CLAIMS:
        value = get(name)
        if value is not None and type(value) is not str:
            raise InvalidClaim(f"claim {name!r} must be a string")
    scp = get("scp")
    if scp is not None and type(scp) is not str and not _strings(scp):
        raise InvalidClaim("claim 'scp' must be a string or an array of strings")
    _date(get("auth_time"), "auth_time")  # RFC 9068 2.2.1, OpenID Connect Core 2
    amr = get("amr")
    if amr is not None and not _strings(amr):
        raise InvalidClaim("claim 'amr' must be an array of strings")
    cnf = get("cnf")
    if cnf is not None and not isinstance(cnf, Mapping):
        raise InvalidClaim("claim 'cnf' must be an object")
    act = get("act")
    while act is not None:
        if not isinstance(act, Mapping):
            raise InvalidClaim("claim 'act' must be an object")
        act = act.get("act")


def _strings(value: object) -> bool:
    return isinstance(value, (tuple, list)) and all(type(item) is str for item in value)


def _expected_trust_domain(
    issuer: str | None, token_type: str | None, trust_domain: str | TrustDomain | None
) -> TrustDomain | None:
    if token_type != JWT_SVID:
        if trust_domain is not None:
            raise ConfigurationError("trust_domain is only used with token_type='jwt-svid'")
        return None
    expected: TrustDomain | None = None
    if issuer is not None and issuer.startswith("spiffe://"):
        try:
            expected = SpiffeId.parse(issuer).trust_domain
        except InvalidSpiffeId:
            raise ConfigurationError("issuer looks like a SPIFFE ID but is not valid") from None
    if trust_domain is not None:
        try:
            given = (
                trust_domain
                if isinstance(trust_domain, TrustDomain)
                else TrustDomain.parse(trust_domain)
            )
        except InvalidSpiffeId as exc:
            raise ConfigurationError(f"invalid trust_domain: {exc}") from None
        if expected is not None and given != expected:
            raise ConfigurationError("trust_domain differs from the issuer's trust domain")
        expected = given
    if expected is None:
        raise ConfigurationError(
            "token_type='jwt-svid' needs trust_domain= when the issuer is not a spiffe:// ID"
        )
    return expected


def validate_claims(
    signed: VerifiedSignature,
    *,
    issuer: str | None,
    audience: str | Sequence[str],
    leeway: float = 60,
    token_type: str | None = None,
    required_claims: Sequence[str] = (),
    max_lifetime: float | None = None,
    clock: Clock | None = None,
    trust_domain: str | TrustDomain | None = None,
) -> VerifiedToken:
    """One-shot step 2 (see :class:`ClaimsValidator`)."""
    return ClaimsValidator(
        issuer=issuer,
        audience=audience,
        leeway=leeway,
        token_type=token_type,
        required_claims=required_claims,
        max_lifetime=max_lifetime,
        clock=clock,
        trust_domain=trust_domain,
    ).validate(signed)
