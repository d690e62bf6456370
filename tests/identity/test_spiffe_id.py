"""SpiffeId and TrustDomain: the SPIFFE-ID specification rules, value semantics, fuzzing."""

from __future__ import annotations

import copy
import operator
import pickle
import re
import timeit

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from zerotrust.errors import IdentityError, InvalidSpiffeId, InvalidTrustDomain
from zerotrust.identity import SpiffeId, TrustDomain
from zerotrust.identity import spiffe_id as spiffe_id_module
from zerotrust.identity.spiffe_id import MAX_ID_BYTES, MAX_TRUST_DOMAIN_BYTES

TD_255 = "a" * 251 + ".org"
TD_256 = "a" * 252 + ".org"
# "spiffe://example.org" is 20 bytes; pad the path up to exactly 2048 bytes.
ID_2048 = "spiffe://example.org/" + "a" * (MAX_ID_BYTES - 21)
ID_2049 = ID_2048 + "b"

VALID_IDS = [
    "spiffe://trust-domain-name/path",  # the spec's own example
    "spiffe://example.org",  # a trust domain's root ID
    "spiffe://example.org/ns/prod/sa/api",
    "spiffe://a",
    "spiffe://0",
    "spiffe://under_score.example-1.org/x",
    "spiffe://1.2.3.4/ip-like-but-only-allowed-characters",
    "spiffe://example.org/UPPER/lower/Mixed",
    "spiffe://example.org/a-b_c.d",
    "spiffe://example.org/...",  # only "." and ".." are dot segments
    "spiffe://example.org/.hidden/a./..b/b..",
    "spiffe://example.org/-/_/0",
    "spiffe://xn--bcher-kva.example/x",  # punycode is plain ASCII
    "spiffe://" + TD_255,
    "spiffe://" + TD_255 + "/path",
    ID_2048,
]

INVALID_IDS = [
    ("", "empty"),
    ("spiffe://", "missing_trust_domain"),
    ("spiffe:///path", "missing_trust_domain"),
    ("http://example.org", "wrong_scheme"),
    ("https://example.org/path", "wrong_scheme"),
    ("SPIFFE://example.org", "wrong_scheme"),
    ("Spiffe://example.org", "wrong_scheme"),
    ("spiffe:/example.org", "wrong_scheme"),
    ("spiffe:example.org", "wrong_scheme"),
    ("spiffe//example.org", "wrong_scheme"),
    ("//example.org/path", "wrong_scheme"),
    ("example.org", "wrong_scheme"),
    (" spiffe://example.org", "wrong_scheme"),
    ("spiffe://Example.org", "trust_domain_char"),
    ("spiffe://EXAMPLE.ORG/path", "trust_domain_char"),
    ("spiffe://exa mple.org", "trust_domain_char"),
    ("spiffe://example.org\n", "trust_domain_char"),
    ("spiffe://example.org ", "trust_domain_char"),
    ("spiffe://ex\x00ample.org", "trust_domain_char"),
    ("spiffe://\u0435xample.org", "trust_domain_char"),  # Cyrillic small ie
    ("spiffe://\uff45xample.org", "trust_domain_char"),  # fullwidth small e
    ("spiffe://example\u3002org", "trust_domain_char"),  # ideographic full stop
    ("spiffe://[::1]/path", "trust_domain_char"),
    ("spiffe://example.org\\path", "trust_domain_char"),
    ("spiffe://" + TD_256, "trust_domain_too_long"),
    ("spiffe://" + TD_256 + "/path", "trust_domain_too_long"),
    ("spiffe://user@example.org/path", "userinfo"),
    ("spiffe://user:password@example.org", "userinfo"),
    ("spiffe://@example.org", "userinfo"),
    ("spiffe://example.org:8443/path", "port"),
    ("spiffe://example.org:", "port"),
    ("spiffe://example.org?x=1", "query"),
    ("spiffe://example.org/path?x=1", "query"),
    ("spiffe://example.org/path?", "query"),
    ("spiffe://?x", "query"),
    ("spiffe://example.org#frag", "fragment"),
    ("spiffe://example.org/path#frag", "fragment"),
    ("spiffe://example.org/a#b?c", "fragment"),
    ("spiffe://EXAMPLE.org/a?b", "query"),  # a query or fragment is named before other faults
    ("spiffe://exa mple.org/a#b", "fragment"),
    ("spiffe://example%2Eorg/path", "percent_encoding"),
    ("spiffe://example.org/a%20b", "percent_encoding"),
    ("spiffe://example.org/%2e%2e", "percent_encoding"),
    ("spiffe://example.org/a b", "path_char"),
    ("spiffe://example.org/a@b", "path_char"),
    ("spiffe://example.org/a:b", "path_char"),
    ("spiffe://example.org/a\\b", "path_char"),
    ("spiffe://example.org/caf\u00e9", "path_char"),
    ("spiffe://example.org/path\n", "path_char"),
    ("spiffe://example.org/\x00", "path_char"),
    ("spiffe://example.org/\ud800", "path_char"),  # lone surrogate
    ("spiffe://example.org/\u0430dmin", "path_char"),  # Cyrillic small a
    ("spiffe://example.org//path", "empty_segment"),
    ("spiffe://example.org/a//b", "empty_segment"),
    ("spiffe://example.org//", "empty_segment"),
    ("spiffe://example.org/.", "dot_segment"),
    ("spiffe://example.org/..", "dot_segment"),
    ("spiffe://example.org/a/./b", "dot_segment"),
    ("spiffe://example.org/a/../b", "dot_segment"),
    ("spiffe://example.org/", "trailing_slash"),
    ("spiffe://example.org/path/", "trailing_slash"),
    (ID_2049, "too_long"),
    ("spiffe://example.org/" + "\u00e9" * 1100, "too_long"),  # 1121 chars, 2221 bytes
    ("spiffe://example.org/" + "a" * 10_000_000, "too_long"),
]


@pytest.mark.parametrize("text", VALID_IDS)
def test_valid_ids_round_trip(text: str) -> None:
    spiffe_id = SpiffeId.parse(text)
    assert str(spiffe_id) == text
    assert SpiffeId.parse(str(spiffe_id)) == spiffe_id
    assert SpiffeId(text) == spiffe_id
    assert spiffe_id.trust_domain.id_string() + spiffe_id.path == text
    built = SpiffeId(text)
    assert (built.trust_domain, built.path) == (spiffe_id.trust_domain, spiffe_id.path)


@pytest.mark.parametrize(("text", "rule"), INVALID_IDS)
def test_invalid_ids_name_the_rule(text: str, rule: str) -> None:
    with pytest.raises(InvalidSpiffeId) as info:
        SpiffeId.parse(text)
    assert info.value.rule == rule
    assert type(info.value) is InvalidSpiffeId
    assert info.value.code == "invalid_spiffe_id"
    assert len(str(info.value)) < 300  # hostile input is never echoed in full


@pytest.mark.parametrize(("text", "rule"), INVALID_IDS)
def test_constructor_validates_like_parse(text: str, rule: str) -> None:
    with pytest.raises(InvalidSpiffeId) as info:
        SpiffeId(text)
    assert info.value.rule == rule


@pytest.mark.parametrize("value", [None, 42, b"spiffe://example.org", ["spiffe://x"], object()])
def test_non_strings_are_rejected(value: object) -> None:
    with pytest.raises(InvalidSpiffeId) as info:
        SpiffeId.parse(value)  # type: ignore[arg-type]
    assert info.value.rule == "not_a_string"
    with pytest.raises(InvalidTrustDomain) as td_info:
        TrustDomain.parse(value)  # type: ignore[arg-type]
    assert td_info.value.rule == "not_a_string"


def test_str_subclass_is_accepted_as_plain_str() -> None:
    class Tricky(str):
        def __eq__(self, other: object) -> bool:
            return True

        __hash__ = str.__hash__

    spiffe_id = SpiffeId.parse(Tricky("spiffe://example.org/a"))
    assert type(str(spiffe_id)) is str
    assert spiffe_id != SpiffeId.parse("spiffe://example.org/b")


def test_errors_are_identity_errors_and_value_errors() -> None:
    with pytest.raises(ValueError, match="scheme"):
        SpiffeId.parse("http://example.org")
    with pytest.raises(IdentityError):
        SpiffeId.parse("spiffe://Example.org")


def test_uppercase_trust_domain_message_explains_case() -> None:
    with pytest.raises(InvalidSpiffeId, match="lowercase"):
        SpiffeId.parse("spiffe://Example.org")
    with pytest.raises(InvalidSpiffeId, match="lowercase"):
        SpiffeId.parse("SPIFFE://example.org")
    for upper in ("A", "Z"):  # both ends of the range
        with pytest.raises(InvalidSpiffeId, match="lowercase"):
            SpiffeId.parse(f"spiffe://example{upper}.org")
    # a path may hold upper case: a refused path character is not explained by case
    assert SpiffeId.parse("spiffe://example.org/Web").path == "/Web"
    with pytest.raises(InvalidSpiffeId) as info:
        SpiffeId.parse("spiffe://example.org/W!b")
    assert "lowercase" not in str(info.value)
    with pytest.raises(InvalidSpiffeId) as info:
        SpiffeId.parse("spiffe://exa!mple.org")  # not a letter: no case to explain
    assert "lowercase" not in str(info.value)


def test_an_invalid_value_is_shown_cut_to_64_characters() -> None:
    # messages reach logs and audit events: a huge value is shown by its start only
    value = "http://" + "x" * 200
    with pytest.raises(InvalidSpiffeId) as info:
        SpiffeId.parse(value)
    assert repr(value[:64]) + "..." in str(info.value)
    assert "x" * 58 not in str(info.value)
    short = "http://" + "x" * 57  # 64 characters: shown whole
    with pytest.raises(InvalidSpiffeId) as info:
        SpiffeId.parse(short)
    assert repr(short) in str(info.value) and "..." not in str(info.value)


def test_length_limits_are_exact() -> None:
    # the SPIFFE ID specification's limits (section 2.3 and 2.4)
    assert (MAX_ID_BYTES, MAX_TRUST_DOMAIN_BYTES) == (2048, 255)
    assert len(TD_255) == MAX_TRUST_DOMAIN_BYTES
    assert len(ID_2048.encode()) == MAX_ID_BYTES
    assert TrustDomain(TD_255).name == TD_255
    assert str(SpiffeId.parse(ID_2048)) == ID_2048
    with pytest.raises(InvalidTrustDomain) as info:
        TrustDomain(TD_256)
    assert info.value.rule == "trust_domain_too_long"


def test_length_limits_count_utf8_bytes_before_characters() -> None:
    # 128 characters but 256 bytes: too long, whatever its characters
    with pytest.raises(InvalidTrustDomain) as info:
        TrustDomain("\u00e9" * 128)
    assert info.value.rule == "trust_domain_too_long"
    with pytest.raises(InvalidSpiffeId) as id_info:
        SpiffeId.parse("spiffe://" + "\u00e9" * 128)
    assert id_info.value.rule == "trust_domain_too_long"
    # 1101 characters but 2201 bytes: over the whole ID's limit, checked before the characters
    with pytest.raises(InvalidSpiffeId) as path_info:
        SpiffeId.from_path("example.org", "/" + "\u00e9" * 1100)
    assert path_info.value.rule == "too_long"
    with pytest.raises(InvalidSpiffeId) as segment_info:
        SpiffeId.from_segments("example.org", "\u00e9" * 1100)
    assert segment_info.value.rule == "too_long"


def test_huge_input_is_rejected_quickly() -> None:
    huge = "spiffe://example.org/" + "a/" * 5_000_000
    seconds = timeit.timeit(lambda: _rule_of(huge), number=10) / 10
    assert _rule_of(huge) == "too_long"
    assert seconds < 0.01
    huge_td = "a" * 10_000_000
    with pytest.raises(InvalidTrustDomain) as info:
        TrustDomain.parse(huge_td)
    assert info.value.rule == "trust_domain_too_long"


def test_parse_is_fast() -> None:
    text = "spiffe://example.org/ns/prod/sa/api"
    best = min(timeit.repeat(lambda: SpiffeId.parse(text), number=2_000, repeat=5)) / 2_000
    assert best < 20e-6  # a few microseconds normally; generous for slow CI machines


def _rule_of(text: object) -> str | None:
    try:
        SpiffeId.parse(text)  # type: ignore[arg-type]
    except InvalidSpiffeId as exc:
        return exc.rule
    return None


# --- accessors ----------------------------------------------------------------------------


def test_accessors() -> None:
    spiffe_id = SpiffeId.parse("spiffe://example.org/ns/prod/sa/api")
    assert spiffe_id.trust_domain == TrustDomain("example.org")
    assert spiffe_id.path == "/ns/prod/sa/api"
    assert spiffe_id.segments == ("ns", "prod", "sa", "api")
    assert repr(spiffe_id) == "SpiffeId('spiffe://example.org/ns/prod/sa/api')"
    assert spiffe_id.is_member_of(TrustDomain("example.org"))
    assert not spiffe_id.is_member_of(TrustDomain("example.com"))


def test_root_id() -> None:
    root = SpiffeId.parse("spiffe://example.org")
    assert root.path == ""
    assert root.segments == ()
    assert str(root) == root.trust_domain.id_string()


def test_from_segments_and_from_path() -> None:
    expected = SpiffeId.parse("spiffe://example.org/ns/prod")
    assert SpiffeId.from_segments("example.org", "ns", "prod") == expected
    assert SpiffeId.from_segments(TrustDomain("example.org"), "ns", "prod") == expected
    assert SpiffeId.from_path("example.org", "/ns/prod") == expected
    assert SpiffeId.from_path("spiffe://example.org", "/ns/prod") == expected
    assert SpiffeId.from_path("example.org", "") == SpiffeId.parse("spiffe://example.org")
    assert SpiffeId.from_segments("example.org") == SpiffeId.parse("spiffe://example.org")


def test_builders_accept_exactly_the_longest_id() -> None:
    path = ID_2048[len("spiffe://example.org") :]
    assert str(SpiffeId.from_path("example.org", path)) == ID_2048
    assert str(SpiffeId.from_segments("example.org", path[1:])) == ID_2048


@pytest.mark.parametrize(
    ("segments", "rule"),
    [
        (("",), "empty_segment"),
        (("a", ""), "empty_segment"),
        ((".",), "dot_segment"),
        (("..",), "dot_segment"),
        (("a/b",), "path_char"),
        (("a b",), "path_char"),
        (("a%2F",), "percent_encoding"),
        (("a?",), "query"),
        (("#a",), "fragment"),
        ((3,), "not_a_string"),
        (("a" * 2040,), "too_long"),
    ],
)
def test_from_segments_validates_each_segment(segments: tuple[str, ...], rule: str) -> None:
    with pytest.raises(InvalidSpiffeId) as info:
        SpiffeId.from_segments("example.org", *segments)
    assert info.value.rule == rule


@pytest.mark.parametrize(
    ("path", "rule"),
    [
        ("ns/prod", "no_leading_slash"),
        ("/", "trailing_slash"),
        ("/a/", "trailing_slash"),
        ("//a", "empty_segment"),
        ("/a/../b", "dot_segment"),
        ("/a b", "path_char"),
        ("/a%20", "percent_encoding"),
        ("/a?b", "query"),
        ("/a#b", "fragment"),
        ("/" + "a" * 2040, "too_long"),
        (None, "not_a_string"),
    ],
)
def test_from_path_validates_the_path(path: str, rule: str) -> None:
    with pytest.raises(InvalidSpiffeId) as info:
        SpiffeId.from_path("example.org", path)
    assert info.value.rule == rule


@pytest.mark.parametrize(
    ("trust_domain", "rule"),
    [
        ("Example.org", "trust_domain_char"),
        ("", "empty"),
        ("spiffe://example.org/ns/prod", "unexpected_path"),
        ("spiffe://Example.org", "trust_domain_char"),
    ],
)
def test_builders_validate_the_trust_domain(trust_domain: str, rule: str) -> None:
    with pytest.raises(InvalidTrustDomain) as info:
        SpiffeId.from_path(trust_domain, "/a")
    assert info.value.rule == rule
    with pytest.raises(InvalidTrustDomain):
        SpiffeId.from_segments(trust_domain, "a")


# --- value semantics ----------------------------------------------------------------------


def test_immutable() -> None:
    spiffe_id = SpiffeId.parse("spiffe://example.org/a")
    trust_domain = spiffe_id.trust_domain
    with pytest.raises(AttributeError):
        spiffe_id._s = "spiffe://evil.org/a"
    with pytest.raises(AttributeError):
        spiffe_id.path = "/b"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del spiffe_id._td
    with pytest.raises(AttributeError):
        trust_domain._s = "evil.org"
    with pytest.raises(AttributeError):
        trust_domain.extra = 1
    assert str(spiffe_id) == "spiffe://example.org/a"
    assert not hasattr(spiffe_id, "__dict__")


def test_cannot_be_subclassed() -> None:
    with pytest.raises(TypeError):
        type("Sub", (SpiffeId,), {})
    with pytest.raises(TypeError):
        type("Sub", (TrustDomain,), {})


def test_equality_and_hashing() -> None:
    a1 = SpiffeId.parse("spiffe://example.org/a")
    a2 = SpiffeId.from_segments("example.org", "a")
    b = SpiffeId.parse("spiffe://example.org/A")  # paths are case-sensitive
    assert a1 == a2
    assert hash(a1) == hash(a2)
    assert a1 != b
    assert len({a1, a2, b}) == 2
    assert a1 != "spiffe://example.org/a"
    assert a1.__eq__("spiffe://example.org/a") is NotImplemented
    assert TrustDomain("example.org") == TrustDomain.parse("spiffe://example.org/x")
    assert TrustDomain("example.org") != "example.org"
    assert TrustDomain("example.org") != SpiffeId.parse("spiffe://example.org")
    assert {TrustDomain("a"): 1}[TrustDomain.parse("a")] == 1


def test_ordering() -> None:
    ids = [SpiffeId.parse(s) for s in ("spiffe://b/x", "spiffe://a/y", "spiffe://a")]
    assert [str(i) for i in sorted(ids)] == ["spiffe://a", "spiffe://a/y", "spiffe://b/x"]
    assert ids[1] < ids[0] <= ids[0]
    assert ids[0] > ids[1] >= ids[2]
    tds = sorted([TrustDomain("c"), TrustDomain("a"), TrustDomain("b")])
    assert [td.name for td in tds] == ["a", "b", "c"]
    with pytest.raises(TypeError):
        _ = ids[0] < "spiffe://c"  # type: ignore[operator]
    with pytest.raises(TypeError):
        _ = TrustDomain("a") < ids[0]  # type: ignore[operator]


@pytest.mark.parametrize(
    ("a", "b", "foreign"),
    [
        (SpiffeId("spiffe://a/x"), SpiffeId("spiffe://b/x"), TrustDomain("a")),
        (TrustDomain("a"), TrustDomain("b"), SpiffeId("spiffe://a")),
    ],
)
def test_ordering_operators_are_exact(a: object, b: object, foreign: object) -> None:
    compares = (operator.lt, operator.le, operator.gt, operator.ge)
    assert [compare(a, b) for compare in compares] == [True, True, False, False]
    assert [compare(a, a) for compare in compares] == [False, True, False, True]
    assert [compare(b, a) for compare in compares] == [False, False, True, True]
    for other in ("a", foreign):
        for compare in compares:
            with pytest.raises(TypeError):
                compare(a, other)


def test_pickle_and_copy() -> None:
    spiffe_id = SpiffeId.parse("spiffe://example.org/a")
    assert pickle.loads(pickle.dumps(spiffe_id)) == spiffe_id
    assert pickle.loads(pickle.dumps(spiffe_id.trust_domain)) == spiffe_id.trust_domain
    assert copy.copy(spiffe_id) == spiffe_id
    assert copy.deepcopy(spiffe_id) == spiffe_id


# --- TrustDomain --------------------------------------------------------------------------


def test_trust_domain_basics() -> None:
    td = TrustDomain("example.org")
    assert td.name == "example.org"
    assert str(td) == "example.org"
    assert td.id_string() == "spiffe://example.org"
    assert repr(td) == "TrustDomain('example.org')"


@pytest.mark.parametrize(
    "text",
    ["example.org", "spiffe://example.org", "spiffe://example.org/path/to/workload"],
)
def test_trust_domain_parse_accepts_names_and_ids(text: str) -> None:
    assert TrustDomain.parse(text) == TrustDomain("example.org")


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("", "empty"),
        ("Example.org", "trust_domain_char"),
        ("example.org/path", "trust_domain_char"),
        ("exa mple.org", "trust_domain_char"),
        ("\u0435xample.org", "trust_domain_char"),
        ("user@example.org", "userinfo"),
        ("example.org:8080", "port"),
        ("example.org?x", "query"),
        ("example.org#x", "fragment"),
        ("example%2Eorg", "percent_encoding"),
        (TD_256, "trust_domain_too_long"),
        ("spiffe://", "missing_trust_domain"),
        ("SPIFFE://example.org", "wrong_scheme"),
        ("http://example.org", "wrong_scheme"),
        ("spiffe://example.org/a//b", "empty_segment"),
        ("spiffe://example.org/", "trailing_slash"),
    ],
)
def test_trust_domain_parse_rejects(text: str, rule: str) -> None:
    with pytest.raises(InvalidTrustDomain) as info:
        TrustDomain.parse(text)
    assert info.value.rule == rule
    assert info.value.code == "invalid_trust_domain"


def test_trust_domain_constructor_takes_bare_names_only() -> None:
    with pytest.raises(InvalidTrustDomain, match=r"TrustDomain\.parse"):
        TrustDomain("spiffe://example.org")
    with pytest.raises(InvalidTrustDomain) as info:
        TrustDomain(None)  # type: ignore[arg-type]
    assert info.value.rule == "not_a_string"


# --- properties ---------------------------------------------------------------------------

HOSTILE = [*"/.@:?#%[] \n\x00AZ", "\u0435", "\ud800", "\u00e9", "\uff0f"]
SPIFFE_ISH = st.text(alphabet=st.sampled_from([*"spiffe:/abAZ09.-_", *HOSTILE]), max_size=40)
PREFIXED = st.builds(lambda tail: "spiffe://" + tail, SPIFFE_ISH)

TD_NAMES = st.from_regex(re.compile(r"[a-z0-9._-]{1,40}"), fullmatch=True)
SEGMENTS = st.from_regex(re.compile(r"[a-zA-Z0-9._-]{1,20}"), fullmatch=True).filter(
    lambda s: s not in (".", "..")
)
VALID_TEXT = st.builds(
    lambda td, segments: "spiffe://" + td + "".join("/" + s for s in segments),
    TD_NAMES,
    st.lists(SEGMENTS, max_size=5),
)


def _insert(text: str, position: int, char: str) -> str:
    position %= len(text) + 1
    return text[:position] + char + text[position:]


# A valid ID with one hostile character inserted: exercises each rule close to the edge.
NEAR_VALID = st.builds(_insert, VALID_TEXT, st.integers(0, 200), st.sampled_from(HOSTILE))
FUZZ = st.one_of(st.text(), SPIFFE_ISH, PREFIXED, VALID_TEXT, NEAR_VALID)


def _check_parse_contract(text: str) -> None:
    try:
        spiffe_id = SpiffeId.parse(text)
    except InvalidSpiffeId as exc:
        error: InvalidSpiffeId | None = exc
    else:
        error = None
    if error is not None:
        assert error.rule
        assert str(error)
        return
    assert str(spiffe_id) == text
    assert SpiffeId.parse(str(spiffe_id)) == spiffe_id
    assert text.isascii()
    assert len(text) <= MAX_ID_BYTES


@given(st.text())
@example("spiffe://example.org")
@example("spiffe://example.org/\udfff")
def test_parse_any_text_is_accepted_exactly_or_rejected(text: str) -> None:
    _check_parse_contract(text)


@given(st.one_of(SPIFFE_ISH, PREFIXED, VALID_TEXT, NEAR_VALID))
def test_parse_spiffe_ish_text_is_accepted_exactly_or_rejected(text: str) -> None:
    _check_parse_contract(text)


@given(
    st.one_of(FUZZ, TD_NAMES, st.builds(_insert, TD_NAMES, st.integers(), st.sampled_from(HOSTILE)))
)
def test_trust_domain_parse_never_raises_anything_else(text: str) -> None:
    try:
        td = TrustDomain.parse(text)
    except InvalidTrustDomain as exc:
        error: InvalidTrustDomain | None = exc
    else:
        error = None
    if error is not None:
        assert type(error) is InvalidTrustDomain
        assert error.rule
        return
    assert TrustDomain.parse(td.name) == td
    assert TrustDomain(td.name) == td
    assert td.name == text or text.startswith(td.id_string())


@given(TD_NAMES, st.lists(SEGMENTS, max_size=8))
def test_ids_built_from_valid_components_always_parse(td: str, segments: list[str]) -> None:
    text = "spiffe://" + td + "".join("/" + s for s in segments)
    spiffe_id = SpiffeId.parse(text)
    assert spiffe_id.trust_domain.name == td
    assert spiffe_id.segments == tuple(segments)
    assert SpiffeId.from_segments(td, *segments) == spiffe_id
    assert SpiffeId.from_path(td, spiffe_id.path) == spiffe_id


@given(st.one_of(FUZZ, st.sampled_from(VALID_IDS)))
def test_fast_path_and_rule_validator_agree(text: str) -> None:
    # The regex fast path must accept exactly what the rule-by-rule validator accepts.
    match = spiffe_id_module._ID_RE.fullmatch(text)
    fast = match is not None and len(text) <= MAX_ID_BYTES and len(match[1]) <= 255
    try:
        slow = spiffe_id_module._validate_id(text, InvalidSpiffeId)
    except InvalidSpiffeId:
        assert not fast
    else:
        assert fast
        assert match is not None
        assert slow == (text, match[1], match[2])
