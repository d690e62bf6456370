"""Matchers: decide whether a SPIFFE ID is allowed, and say why when it is not.

A matcher is any callable taking a :class:`~zerotrust.identity.SpiffeId` and returning
a :class:`MatchResult`. The factories below build the common ones; every argument is
validated when the matcher is built, so a typo fails at start-up, not on a request.

Reason codes (``MatchResult.reason``) are stable: ``matched``, ``id_not_allowed``,
``not_member_of_trust_domain``, ``path_prefix_mismatch``, ``path_glob_mismatch``,
``negated_match`` and ``no_matcher_matched``.

Note that this module defines a function named ``any``; import it as ``match.any``
or under another name if the builtin matters to you.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Protocol, final, runtime_checkable

from zerotrust.errors import ConfigurationError, InvalidSpiffeId
from zerotrust.identity.spiffe_id import (
    SpiffeId,
    TrustDomain,
    _coerce_spiffe_id,
    _coerce_trust_domain,
)

__all__ = [
    "MatchResult",
    "Matcher",
    "all_of",
    "any",
    "any_of",
    "exact",
    "member_of",
    "not_",
    "one_of",
    "path_glob",
    "path_prefix",
]


@final
@dataclass(frozen=True, slots=True)
class MatchResult:
    """The outcome of a matcher; truthy only when ``matched``.

    ``reason`` is a stable snake_case code, ``detail`` a human-readable explanation
    (it may name the SPIFFE ID and the expectation, so treat it as log material).
    """

    matched: bool
    reason: str
    detail: str

    def __bool__(self) -> bool:
        return self.matched


@runtime_checkable
class Matcher(Protocol):
    """Anything that can be called with a :class:`SpiffeId` and returns a :class:`MatchResult`."""

    def __call__(self, spiffe_id: SpiffeId, /) -> MatchResult: ...


def _require_id(value: object) -> None:
    # Fail closed on a str (or anything else): equality with a str is always False,
    # which ``not_`` would otherwise turn into a match.
    if type(value) is not SpiffeId:
        raise TypeError(
            f"matchers take a SpiffeId, not {type(value).__name__}; "
            "use SpiffeId.parse() on strings first"
        )


def _answer(matcher: Matcher, spiffe_id: SpiffeId, error: type[Exception]) -> MatchResult:
    result: object = matcher(spiffe_id)
    if type(result) is not MatchResult:
        # the coroutine of an async function, a bool, a string: no decision, however truthy
        if inspect.iscoroutine(result):
            result.close()  # never awaited: closed, not left to warn
        raise error(f"matcher {matcher!r} returned {type(result).__name__}, not MatchResult")
    return result


def _run(matcher: Matcher, spiffe_id: SpiffeId) -> MatchResult:
    return _answer(matcher, spiffe_id, TypeError)


def decide(matcher: Matcher, spiffe_id: SpiffeId) -> MatchResult:
    """What ``matcher`` answers for ``spiffe_id``, where an authorizer or a requirement
    decides: anything but a :class:`MatchResult` (an ``async`` function's coroutine, ``True``)
    is a :class:`~zerotrust.errors.ConfigurationError`, so it refuses, never admits."""
    return _answer(matcher, spiffe_id, ConfigurationError)


def _matched(detail: str) -> MatchResult:
    return MatchResult(True, "matched", detail)


def _no(reason: str, detail: str) -> MatchResult:
    return MatchResult(False, reason, detail)


@dataclass(frozen=True, slots=True, repr=False)
class _Any:
    def __call__(self, spiffe_id: SpiffeId, /) -> MatchResult:
        _require_id(spiffe_id)
        return _matched("any SPIFFE ID is allowed")

    def __repr__(self) -> str:
        return "any()"


@dataclass(frozen=True, slots=True, repr=False)
class _Exact:
    expected: SpiffeId

    def __call__(self, spiffe_id: SpiffeId, /) -> MatchResult:
        _require_id(spiffe_id)
        if spiffe_id == self.expected:
            return _matched(f"{spiffe_id} is the expected ID")
        return _no("id_not_allowed", f"{spiffe_id} is not {self.expected}")

    def __repr__(self) -> str:
        return f"exact({str(self.expected)!r})"


@dataclass(frozen=True, slots=True, repr=False)
class _OneOf:
    allowed: frozenset[SpiffeId]

    def __call__(self, spiffe_id: SpiffeId, /) -> MatchResult:
        _require_id(spiffe_id)
        if spiffe_id in self.allowed:
            return _matched(f"{spiffe_id} is an allowed ID")
        return _no("id_not_allowed", f"{spiffe_id} is not one of {len(self.allowed)} allowed IDs")

    def __repr__(self) -> str:
        return "one_of({})".format(", ".join(repr(str(i)) for i in sorted(self.allowed)))


@dataclass(frozen=True, slots=True, repr=False)
class _MemberOf:
    trust_domain: TrustDomain

    def __call__(self, spiffe_id: SpiffeId, /) -> MatchResult:
        _require_id(spiffe_id)
        if spiffe_id.trust_domain == self.trust_domain:
            return _matched(f"{spiffe_id} is a member of {self.trust_domain}")
        return _not_member(spiffe_id, self.trust_domain)

    def __repr__(self) -> str:
        return f"member_of({self.trust_domain.name!r})"


def _not_member(spiffe_id: SpiffeId, trust_domain: TrustDomain) -> MatchResult:
    detail = f"{spiffe_id} is not a member of trust domain {trust_domain}"
    return _no("not_member_of_trust_domain", detail)


@dataclass(frozen=True, slots=True, repr=False)
class _PathPrefix:
    trust_domain: TrustDomain
    prefix: str

    def __call__(self, spiffe_id: SpiffeId, /) -> MatchResult:
        _require_id(spiffe_id)
        if spiffe_id.trust_domain != self.trust_domain:
            return _not_member(spiffe_id, self.trust_domain)
        path = spiffe_id.path
        # Segment-aware: "/ns/prod" covers "/ns/prod" and "/ns/prod/...", not "/ns/production".
        if path == self.prefix or path.startswith(self.prefix + "/"):
            return _matched(f"{spiffe_id} is under {self.prefix}")
        return _no("path_prefix_mismatch", f"{spiffe_id} is not at or below {self.prefix}")

    def __repr__(self) -> str:
        return f"path_prefix({self.trust_domain.name!r}, {self.prefix!r})"


@dataclass(frozen=True, slots=True, repr=False)
class _PathGlob:
    trust_domain: TrustDomain
    pattern: str
    parts: tuple[str, ...]  # fixed segments: a literal or "*"
    rest: bool  # the pattern ends in "**"

    def __call__(self, spiffe_id: SpiffeId, /) -> MatchResult:
        _require_id(spiffe_id)
        if spiffe_id.trust_domain != self.trust_domain:
            return _not_member(spiffe_id, self.trust_domain)
        segments = spiffe_id.segments
        fixed = len(self.parts)
        if (len(segments) > fixed if self.rest else len(segments) == fixed) and all(
            part in ("*", segment) for part, segment in zip(self.parts, segments, strict=False)
        ):
            return _matched(f"{spiffe_id} matches {self.pattern}")
        return _no("path_glob_mismatch", f"{spiffe_id} does not match {self.pattern}")

    def __repr__(self) -> str:
        return f"path_glob({self.trust_domain.name!r}, {self.pattern!r})"


@dataclass(frozen=True, slots=True, repr=False)
class _AllOf:
    matchers: tuple[Matcher, ...]

    def __call__(self, spiffe_id: SpiffeId, /) -> MatchResult:
        _require_id(spiffe_id)
        for matcher in self.matchers:
            result = _run(matcher, spiffe_id)
            if not result.matched:
                return result
        return _matched(f"{spiffe_id} matched all {len(self.matchers)} matchers")

    def __repr__(self) -> str:
        return "all_of({})".format(", ".join(map(repr, self.matchers)))


@dataclass(frozen=True, slots=True, repr=False)
class _AnyOf:
    matchers: tuple[Matcher, ...]

    def __call__(self, spiffe_id: SpiffeId, /) -> MatchResult:
        _require_id(spiffe_id)
        failures: list[str] = []
        for matcher in self.matchers:
            result = _run(matcher, spiffe_id)
            if result.matched:
                return result
            failures.append(f"{result.reason}: {result.detail}")
        detail = f"{spiffe_id} matched none of {len(failures)} matchers: {'; '.join(failures)}"
        return _no("no_matcher_matched", detail)

    def __repr__(self) -> str:
        return "any_of({})".format(", ".join(map(repr, self.matchers)))


@dataclass(frozen=True, slots=True, repr=False)
class _Not:
    matcher: Matcher

    def __call__(self, spiffe_id: SpiffeId, /) -> MatchResult:
        _require_id(spiffe_id)
        result = _run(self.matcher, spiffe_id)
        if result.matched:
            return _no("negated_match", f"{spiffe_id} matched negated {self.matcher!r}")
        return _matched(f"{spiffe_id} did not match {self.matcher!r} ({result.reason})")

    def __repr__(self) -> str:
        return f"not_({self.matcher!r})"


def _check_matchers(name: str, matchers: tuple[object, ...]) -> None:
    if not matchers:
        raise ConfigurationError(f"{name}() needs at least one matcher")
    for matcher in matchers:
        if not callable(matcher):
            raise ConfigurationError(f"{name}() got {type(matcher).__name__}, not a matcher")


def any() -> Matcher:
    """Match every SPIFFE ID. Use only where the trust domain is checked elsewhere."""
    return _Any()


def exact(spiffe_id: SpiffeId | str) -> Matcher:
    """Match exactly one SPIFFE ID."""
    return _Exact(_coerce_spiffe_id(spiffe_id))


def one_of(*spiffe_ids: SpiffeId | str) -> Matcher:
    """Match any of the given SPIFFE IDs (at least one is required)."""
    if not spiffe_ids:
        raise ConfigurationError("one_of() needs at least one SPIFFE ID")
    return _OneOf(frozenset(_coerce_spiffe_id(i) for i in spiffe_ids))


def member_of(trust_domain: TrustDomain | str) -> Matcher:
    """Match every SPIFFE ID in ``trust_domain`` (a name or ``spiffe://name``)."""
    return _MemberOf(_coerce_trust_domain(trust_domain))


def path_prefix(trust_domain: TrustDomain | str, prefix: str) -> Matcher:
    """Match IDs in ``trust_domain`` whose path is ``prefix`` or lies below it.

    The comparison is by whole segments: ``/ns/prod`` matches ``/ns/prod`` and
    ``/ns/prod/sa/api`` but not ``/ns/production``. ``prefix`` must be a valid,
    non-empty path (use :func:`member_of` for a whole trust domain).
    """
    td = _coerce_trust_domain(trust_domain)
    if prefix == "":
        raise ConfigurationError(
            "path_prefix() needs a non-empty path such as '/ns/prod'; "
            "use member_of() to allow a whole trust domain"
        )
    return _PathPrefix(td, SpiffeId.from_path(td, prefix).path)


def path_glob(trust_domain: TrustDomain | str, pattern: str) -> Matcher:
    """Match IDs in ``trust_domain`` whose path fits a segment-wise ``pattern``.

    ``*`` stands for exactly one whole segment; a final ``**`` for one or more
    remaining segments. Every other segment is compared literally. For example
    ``/ns/*/sa/api`` matches ``/ns/prod/sa/api``, and ``/ns/prod/**`` matches
    ``/ns/prod/x`` and ``/ns/prod/x/y`` but not ``/ns/prod`` itself.
    Invalid patterns raise :class:`~zerotrust.errors.ConfigurationError`.
    """
    td = _coerce_trust_domain(trust_domain)
    if not isinstance(pattern, str) or not pattern.startswith("/"):
        raise ConfigurationError(f"path_glob() pattern must start with '/': {pattern!r}")
    parts = tuple(pattern[1:].split("/"))
    rest = parts[-1] == "**"
    fixed = parts[:-1] if rest else parts
    for part in fixed:
        if part == "**":
            raise ConfigurationError(
                f"path_glob() pattern {pattern!r}: '**' is only allowed as the last segment"
            )
        if "*" in part and part != "*":
            raise ConfigurationError(
                f"path_glob() pattern {pattern!r}: {part!r} is not a wildcard; use '*' for one "
                "whole segment or a final '**' for the rest"
            )
    # Validate the literal segments (and the shape) as an ordinary SPIFFE ID path.
    literal = "".join("/" + ("x" if part == "*" else part) for part in fixed)
    try:
        SpiffeId.from_path(td, literal)
    except InvalidSpiffeId as exc:
        raise ConfigurationError(f"path_glob() pattern {pattern!r}: {exc}") from exc
    return _PathGlob(td, pattern, fixed, rest)


def all_of(*matchers: Matcher) -> Matcher:
    """Match when every matcher matches; a failure reports the first failing result."""
    _check_matchers("all_of", matchers)
    return _AllOf(matchers)


def any_of(*matchers: Matcher) -> Matcher:
    """Match when at least one matcher matches (reason ``no_matcher_matched`` otherwise)."""
    _check_matchers("any_of", matchers)
    return _AnyOf(matchers)


def not_(matcher: Matcher) -> Matcher:
    """Match exactly when ``matcher`` does not (reason ``negated_match`` otherwise)."""
    _check_matchers("not_", (matcher,))
    return _Not(matcher)
