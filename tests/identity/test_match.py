"""Matchers: every factory matched and unmatched, reason codes, combinators, fail-closed edges."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

import zerotrust.match as public_match
from zerotrust import match
from zerotrust.errors import ConfigurationError, InvalidSpiffeId, InvalidTrustDomain
from zerotrust.identity import Matcher, MatchResult, SpiffeId, TrustDomain
from zerotrust.identity import match as identity_match

PROD_API = SpiffeId.parse("spiffe://example.org/ns/prod/sa/api")
PROD_WEB = SpiffeId.parse("spiffe://example.org/ns/prod/sa/web")
PRODUCTION = SpiffeId.parse("spiffe://example.org/ns/production/sa/api")
PROD_EXACT = SpiffeId.parse("spiffe://example.org/ns/prod")
ROOT = SpiffeId.parse("spiffe://example.org")
OTHER_TD = SpiffeId.parse("spiffe://other.org/ns/prod/sa/api")


def _assert(result: MatchResult, matched: bool, reason: str) -> None:
    assert type(result) is MatchResult
    assert bool(result) is matched
    assert result.matched is matched
    assert result.reason == reason
    assert result.detail


# --- MatchResult / facade ----------------------------------------------------------------


def test_match_result_is_frozen_and_truthy_only_when_matched() -> None:
    yes = MatchResult(True, "matched", "ok")
    no = MatchResult(False, "id_not_allowed", "nope")
    assert yes
    assert not no
    with pytest.raises(dataclasses.FrozenInstanceError):
        yes.matched = False  # type: ignore[misc]
    assert not hasattr(yes, "__dict__")


def test_public_facade_re_exports_identity_match() -> None:
    assert public_match.__all__ == sorted(public_match.__all__, key=lambda n: (n[0].islower(), n))
    assert set(public_match.__all__) == set(identity_match.__all__)
    for name in public_match.__all__:
        assert getattr(public_match, name) is getattr(identity_match, name)
    assert public_match.Matcher is Matcher
    assert public_match.MatchResult is MatchResult


def test_matchers_satisfy_the_protocol() -> None:
    matchers: list[Matcher] = [
        match.any(),
        match.exact(PROD_API),
        match.one_of(PROD_API),
        match.member_of("example.org"),
        match.path_prefix("example.org", "/ns"),
        match.path_glob("example.org", "/ns/*"),
        match.all_of(match.any()),
        match.any_of(match.any()),
        match.not_(match.any()),
    ]
    for matcher in matchers:
        assert isinstance(matcher, Matcher)
        fields = dataclasses.fields(matcher)  # type: ignore[arg-type]
        for field in fields:
            with pytest.raises(dataclasses.FrozenInstanceError):
                setattr(matcher, field.name, None)
        # Unknown attributes are refused too (TypeError on some Python versions).
        with pytest.raises((AttributeError, TypeError)):
            matcher.extra = 1  # type: ignore[attr-defined]


# --- leaf matchers ------------------------------------------------------------------------


def test_any() -> None:
    for spiffe_id in (PROD_API, ROOT, OTHER_TD):
        _assert(match.any()(spiffe_id), True, "matched")
    assert repr(match.any()) == "any()"


def test_exact() -> None:
    matcher = match.exact("spiffe://example.org/ns/prod/sa/api")
    _assert(matcher(PROD_API), True, "matched")
    result = matcher(PROD_WEB)
    _assert(result, False, "id_not_allowed")
    assert str(PROD_WEB) in result.detail
    assert str(PROD_API) in result.detail
    _assert(matcher(OTHER_TD), False, "id_not_allowed")
    assert match.exact(PROD_API)(PROD_API)
    assert repr(matcher) == "exact('spiffe://example.org/ns/prod/sa/api')"


def test_one_of() -> None:
    matcher = match.one_of(PROD_API, "spiffe://example.org/ns/prod/sa/web")
    _assert(matcher(PROD_API), True, "matched")
    _assert(matcher(PROD_WEB), True, "matched")
    _assert(matcher(PRODUCTION), False, "id_not_allowed")
    assert repr(matcher) == (
        "one_of('spiffe://example.org/ns/prod/sa/api', 'spiffe://example.org/ns/prod/sa/web')"
    )


def test_one_of_requires_an_id() -> None:
    with pytest.raises(ConfigurationError):
        match.one_of()


def test_member_of() -> None:
    matcher = match.member_of("example.org")
    for spiffe_id in (PROD_API, ROOT, PRODUCTION):
        _assert(matcher(spiffe_id), True, "matched")
    result = matcher(OTHER_TD)
    _assert(result, False, "not_member_of_trust_domain")
    assert "example.org" in result.detail
    assert match.member_of(TrustDomain("other.org"))(OTHER_TD)
    assert match.member_of("spiffe://other.org")(OTHER_TD)
    assert repr(matcher) == "member_of('example.org')"


def test_path_prefix_is_segment_aware() -> None:
    matcher = match.path_prefix("example.org", "/ns/prod")
    _assert(matcher(PROD_EXACT), True, "matched")
    _assert(matcher(PROD_API), True, "matched")
    # The classic trap: a string prefix would let "/ns/production" through.
    _assert(matcher(PRODUCTION), False, "path_prefix_mismatch")
    _assert(matcher(SpiffeId.parse("spiffe://example.org/ns/prod2")), False, "path_prefix_mismatch")
    _assert(matcher(SpiffeId.parse("spiffe://example.org/ns")), False, "path_prefix_mismatch")
    _assert(matcher(ROOT), False, "path_prefix_mismatch")
    _assert(matcher(OTHER_TD), False, "not_member_of_trust_domain")
    assert repr(matcher) == "path_prefix('example.org', '/ns/prod')"


def test_path_prefix_is_case_sensitive() -> None:
    matcher = match.path_prefix("example.org", "/ns/prod")
    _assert(matcher(SpiffeId.parse("spiffe://example.org/ns/Prod")), False, "path_prefix_mismatch")


@pytest.mark.parametrize(
    ("prefix", "rule"),
    [
        ("ns/prod", "no_leading_slash"),
        ("/ns/prod/", "trailing_slash"),
        ("/", "trailing_slash"),
        ("/ns//prod", "empty_segment"),
        ("/ns/../prod", "dot_segment"),
        ("/ns/pr*d", "path_char"),
        ("/ns/prod%2F", "percent_encoding"),
    ],
)
def test_path_prefix_validates_the_prefix(prefix: str, rule: str) -> None:
    with pytest.raises(InvalidSpiffeId) as info:
        match.path_prefix("example.org", prefix)
    assert info.value.rule == rule


def test_path_prefix_refuses_an_empty_prefix() -> None:
    with pytest.raises(ConfigurationError, match="member_of"):
        match.path_prefix("example.org", "")


GLOB_CASES = [
    ("/ns/*/sa/api", "/ns/prod/sa/api", True),
    ("/ns/*/sa/api", "/ns/staging/sa/api", True),
    ("/ns/*/sa/api", "/ns/prod/sa/web", False),
    ("/ns/*/sa/api", "/ns/prod/extra/sa/api", False),
    ("/ns/*/sa/api", "/ns/prod/sa/api/x", False),
    ("/ns/*", "/ns/prod", True),
    ("/ns/*", "/ns", False),
    ("/ns/*", "/ns/prod/sa", False),
    ("/ns/prod/**", "/ns/prod/sa", True),
    ("/ns/prod/**", "/ns/prod/sa/api/v1", True),
    ("/ns/prod/**", "/ns/prod", False),  # "**" needs at least one segment
    ("/ns/prod/**", "/ns/production/sa", False),
    ("/*/prod/**", "/ns/prod/sa/api", True),
    ("/*/prod/**", "/ns/stage/sa/api", False),
    ("/**", "/anything", True),
    ("/**", "/a/b/c", True),
    ("/**", "", False),
    ("/*", "", False),
    ("/ns/prod", "/ns/prod", True),
    ("/ns/prod", "/ns/prod/x", False),
    ("/ns/Prod", "/ns/prod", False),
]


@pytest.mark.parametrize(("pattern", "path", "expected"), GLOB_CASES)
def test_path_glob(pattern: str, path: str, expected: bool) -> None:
    matcher = match.path_glob("example.org", pattern)
    result = matcher(SpiffeId.from_path("example.org", path))
    _assert(result, expected, "matched" if expected else "path_glob_mismatch")
    assert repr(matcher) == f"path_glob('example.org', {pattern!r})"


def test_path_glob_checks_the_trust_domain() -> None:
    result = match.path_glob("example.org", "/**")(OTHER_TD)
    _assert(result, False, "not_member_of_trust_domain")


@pytest.mark.parametrize(
    "pattern",
    [
        "",
        "ns/*",
        "/",
        "/ns/",
        "/ns//x",
        "/ns/**/sa",  # "**" only at the end
        "/**/x",
        "/ns/pr*d",  # no partial wildcards
        "/ns/*prod",
        "/ns/***",
        "/ns/?",
        "/ns/[ab]",
        "/ns/..",
        "/ns/a b",
    ],
)
def test_path_glob_rejects_invalid_patterns(pattern: str) -> None:
    with pytest.raises(ConfigurationError):
        match.path_glob("example.org", pattern)


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("/ns/**/sa", "only allowed as the last segment"),
        ("/**/**", "only allowed as the last segment"),
        ("/ns/pr*d", "is not a wildcard"),
        ("/ns/***", "is not a wildcard"),
    ],
)
def test_path_glob_explains_misplaced_wildcards(pattern: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        match.path_glob("example.org", pattern)


def test_path_glob_rejects_non_string_pattern() -> None:
    with pytest.raises(ConfigurationError):
        match.path_glob("example.org", None)  # type: ignore[arg-type]


# --- argument validation --------------------------------------------------------------------


@pytest.mark.parametrize(
    "factory",
    [match.exact, match.one_of],
)
def test_bad_ids_fail_at_construction(factory: object) -> None:
    with pytest.raises(InvalidSpiffeId) as info:
        factory("spiffe://Example.org/a")  # type: ignore[operator]
    assert info.value.rule == "trust_domain_char"


@pytest.mark.parametrize(
    ("trust_domain", "rule"),
    [
        ("Example.org", "trust_domain_char"),
        ("", "empty"),
        ("spiffe://example.org/ns/prod", "unexpected_path"),
    ],
)
def test_bad_trust_domains_fail_at_construction(trust_domain: str, rule: str) -> None:
    builders: list[Callable[[], Matcher]] = [
        lambda: match.member_of(trust_domain),
        lambda: match.path_prefix(trust_domain, "/ns"),
        lambda: match.path_glob(trust_domain, "/ns/*"),
    ]
    for build in builders:
        with pytest.raises(InvalidTrustDomain) as info:
            build()
        assert info.value.rule == rule


@pytest.mark.parametrize("value", ["spiffe://example.org/ns/prod/sa/api", 42, None])
def test_matchers_refuse_non_spiffe_id_input(value: object) -> None:
    # A str must never be compared as "not equal" and then negated into a match.
    for matcher in (
        match.any(),
        match.exact(PROD_API),
        match.one_of(PROD_API),
        match.member_of("example.org"),
        match.path_prefix("example.org", "/ns"),
        match.path_glob("example.org", "/**"),
        match.not_(match.exact(PROD_API)),
        match.all_of(match.any()),
        match.any_of(match.any()),
    ):
        with pytest.raises(TypeError):
            matcher(value)  # type: ignore[arg-type]


def test_combinators_refuse_non_spiffe_id_before_a_custom_matcher_sees_it() -> None:
    # A custom matcher need not check its input: a str compared "not equal" must not become a
    # match through not_(), nor reach any matcher through all_of()/any_of().
    seen: list[object] = []

    def is_prod_api(spiffe_id: SpiffeId) -> MatchResult:
        seen.append(spiffe_id)
        return MatchResult(spiffe_id == PROD_API, "custom", "compared by equality")

    for matcher in (match.not_(is_prod_api), match.all_of(is_prod_api), match.any_of(is_prod_api)):
        with pytest.raises(TypeError, match="SpiffeId"):
            matcher(str(PROD_WEB))  # type: ignore[arg-type]
    assert seen == []


# --- combinators --------------------------------------------------------------------------


def test_all_of_reports_the_first_failure() -> None:
    matcher = match.all_of(
        match.member_of("example.org"),
        match.path_prefix("example.org", "/ns/prod"),
        match.not_(match.exact(PROD_WEB)),
    )
    _assert(matcher(PROD_API), True, "matched")
    _assert(matcher(OTHER_TD), False, "not_member_of_trust_domain")
    _assert(matcher(PRODUCTION), False, "path_prefix_mismatch")
    _assert(matcher(PROD_WEB), False, "negated_match")


def test_all_of_short_circuits() -> None:
    calls: list[str] = []

    def spy(spiffe_id: SpiffeId) -> MatchResult:
        calls.append(str(spiffe_id))
        return MatchResult(True, "matched", "spy")

    match.all_of(match.member_of("example.org"), spy)(OTHER_TD)
    assert calls == []


def test_any_of_lists_every_failure() -> None:
    matcher = match.any_of(match.exact(PROD_WEB), match.path_prefix("example.org", "/ns/prod"))
    _assert(matcher(PROD_API), True, "matched")
    _assert(matcher(PROD_WEB), True, "matched")
    result = matcher(PRODUCTION)
    _assert(result, False, "no_matcher_matched")
    assert "id_not_allowed" in result.detail
    assert "path_prefix_mismatch" in result.detail
    assert repr(matcher) == (
        "any_of(exact('spiffe://example.org/ns/prod/sa/web'),"
        " path_prefix('example.org', '/ns/prod'))"
    )


def test_not() -> None:
    matcher = match.not_(match.member_of("evil.org"))
    _assert(matcher(PROD_API), True, "matched")
    _assert(matcher(SpiffeId.parse("spiffe://evil.org/x")), False, "negated_match")
    assert repr(matcher) == "not_(member_of('evil.org'))"


def test_combinator_reprs_nest() -> None:
    matcher = match.all_of(match.member_of("example.org"), match.any_of(match.exact(PROD_API)))
    assert repr(matcher) == (
        "all_of(member_of('example.org'), any_of(exact('spiffe://example.org/ns/prod/sa/api')))"
    )


_API, _WEB = "spiffe://example.org/ns/prod/sa/api", "spiffe://example.org/ns/prod/sa/web"


@pytest.mark.parametrize(
    ("matcher", "spiffe_id", "detail"),
    [
        (match.any(), PROD_API, "any SPIFFE ID is allowed"),
        (match.exact(PROD_API), PROD_API, f"{_API} is the expected ID"),
        (match.exact(PROD_API), PROD_WEB, f"{_WEB} is not {_API}"),
        (match.one_of(PROD_API), PROD_API, f"{_API} is an allowed ID"),
        (match.one_of(PROD_API, PROD_WEB), PRODUCTION, f"{PRODUCTION} is not one of 2 allowed IDs"),
        (match.member_of("example.org"), PROD_API, f"{_API} is a member of example.org"),
        (
            match.member_of("example.org"),
            OTHER_TD,
            f"{OTHER_TD} is not a member of trust domain example.org",
        ),
        (match.path_prefix("example.org", "/ns/prod"), PROD_API, f"{_API} is under /ns/prod"),
        (
            match.path_prefix("example.org", "/ns/dev"),
            PROD_API,
            f"{_API} is not at or below /ns/dev",
        ),
        (match.path_glob("example.org", "/ns/*/sa/api"), PROD_API, f"{_API} matches /ns/*/sa/api"),
        (
            match.path_glob("example.org", "/ns/*/sa/api"),
            PROD_WEB,
            f"{_WEB} does not match /ns/*/sa/api",
        ),
        (
            match.all_of(match.any(), match.member_of("example.org")),
            PROD_API,
            f"{_API} matched all 2 matchers",
        ),
        (
            match.any_of(match.exact(PROD_WEB), match.member_of("other.org")),
            PROD_API,
            f"{_API} matched none of 2 matchers: id_not_allowed: {_API} is not {_WEB};"
            f" not_member_of_trust_domain: {_API} is not a member of trust domain other.org",
        ),
        (
            match.not_(match.exact(PROD_WEB)),
            PROD_API,
            f"{_API} did not match exact('{_WEB}') (id_not_allowed)",
        ),
        (
            match.not_(match.exact(PROD_API)),
            PROD_API,
            f"{_API} matched negated exact('{_API}')",
        ),
    ],
)
def test_details_say_what_was_compared(matcher: Matcher, spiffe_id: SpiffeId, detail: str) -> None:
    assert matcher(spiffe_id).detail == detail


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (match.all_of, "all_of() needs at least one matcher"),
        (match.any_of, "any_of() needs at least one matcher"),
        (lambda: match.all_of("x"), "all_of() got str, not a matcher"),  # type: ignore[arg-type]
        (lambda: match.any_of("x"), "any_of() got str, not a matcher"),  # type: ignore[arg-type]
        (lambda: match.not_(5), "not_() got int, not a matcher"),  # type: ignore[arg-type]
        (match.one_of, "one_of() needs at least one SPIFFE ID"),
        (
            lambda: match.path_prefix("example.org", ""),
            "path_prefix() needs a non-empty path such as '/ns/prod';"
            " use member_of() to allow a whole trust domain",
        ),
        (
            lambda: match.path_glob("example.org", "ns"),
            "path_glob() pattern must start with '/': 'ns'",
        ),
        (
            lambda: match.path_glob("example.org", "/ns/**/x"),
            "path_glob() pattern '/ns/**/x': '**' is only allowed as the last segment",
        ),
        (
            lambda: match.path_glob("example.org", "/ns/a*"),
            "path_glob() pattern '/ns/a*': 'a*' is not a wildcard; use '*' for one whole"
            " segment or a final '**' for the rest",
        ),
        (
            lambda: match.path_glob("example.org", "/ns//x"),
            "path_glob() pattern '/ns//x': path segments must not be empty",
        ),
    ],
)
def test_configuration_errors_say_what_is_wrong(build: Callable[[], object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=f"^{re.escape(message)}$"):
        build()


def test_type_errors_say_what_was_given() -> None:
    expected = "matchers take a SpiffeId, not str; use SpiffeId.parse() on strings first"
    with pytest.raises(TypeError, match=f"^{re.escape(expected)}$"):
        match.any()(_API)  # type: ignore[arg-type]

    def sloppy(spiffe_id: SpiffeId) -> MatchResult:
        return False  # type: ignore[return-value]

    with pytest.raises(
        TypeError, match=f"^matcher {re.escape(repr(sloppy))} returned bool, not MatchResult$"
    ):
        match.not_(sloppy)(PROD_API)


def test_an_async_matcher_inside_a_combinator_is_refused_and_its_coroutine_closed() -> None:
    """An async function's answer is a coroutine, no decision: refused, and closed (left
    alone, it would warn that it was never awaited, where warnings are errors: here)."""
    import gc

    async def later(spiffe_id: SpiffeId) -> MatchResult:  # pragma: no cover - never run
        return MatchResult(True, "matched", "")

    for combinator in (match.not_, match.any_of, match.all_of):
        with pytest.raises(TypeError, match="returned coroutine, not MatchResult"):
            combinator(later)(PROD_API)  # type: ignore[no-untyped-call]
        gc.collect()


@pytest.mark.parametrize("combinator", [match.all_of, match.any_of])
def test_empty_combinators_fail_closed(combinator: object) -> None:
    with pytest.raises(ConfigurationError):
        combinator()  # type: ignore[operator]


@pytest.mark.parametrize("combinator", [match.all_of, match.any_of, match.not_])
def test_combinators_reject_non_matchers(combinator: object) -> None:
    with pytest.raises(ConfigurationError):
        combinator("spiffe://example.org/a")  # type: ignore[operator]


def test_custom_matchers_must_return_match_result() -> None:
    def sloppy(spiffe_id: SpiffeId) -> MatchResult:
        return False  # type: ignore[return-value]

    for matcher in (match.not_(sloppy), match.all_of(sloppy), match.any_of(sloppy)):
        with pytest.raises(TypeError, match="MatchResult"):
            matcher(PROD_API)


def test_custom_matchers_compose() -> None:
    def service_account_api(spiffe_id: SpiffeId) -> MatchResult:
        if spiffe_id.segments[-2:] == ("sa", "api"):
            return MatchResult(True, "matched", "is the api service account")
        return MatchResult(False, "not_api", f"{spiffe_id} is not the api service account")

    matcher = match.all_of(match.member_of("example.org"), service_account_api)
    _assert(matcher(PROD_API), True, "matched")
    _assert(matcher(PROD_WEB), False, "not_api")


# --- properties ---------------------------------------------------------------------------

SEGMENT = st.sampled_from(["ns", "prod", "production", "sa", "api", "web", "x", "Prod"])
PATHS = st.lists(SEGMENT, max_size=5).map(lambda segs: "".join("/" + s for s in segs))
TDS = st.sampled_from(["example.org", "other.org"])


@given(TDS, PATHS, PATHS.filter(bool))
def test_path_prefix_agrees_with_segment_comparison(td: str, path: str, prefix: str) -> None:
    spiffe_id = SpiffeId.from_path(td, path)
    expected = td == "example.org" and spiffe_id.segments[: prefix.count("/")] == tuple(
        prefix[1:].split("/")
    )
    assert bool(match.path_prefix("example.org", prefix)(spiffe_id)) is expected


@given(TDS, PATHS)
def test_not_inverts_and_any_of_all_of_agree(td: str, path: str) -> None:
    spiffe_id = SpiffeId.from_path(td, path)
    a = match.path_prefix("example.org", "/ns")
    b = match.path_glob("example.org", "/*/prod/**")
    assert bool(match.not_(a)(spiffe_id)) is not bool(a(spiffe_id))
    assert bool(match.all_of(a, b)(spiffe_id)) is (bool(a(spiffe_id)) and bool(b(spiffe_id)))
    assert bool(match.any_of(a, b)(spiffe_id)) is (bool(a(spiffe_id)) or bool(b(spiffe_id)))
