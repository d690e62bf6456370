"""Rules that could never match are refused when they are built.

A DENY rule whose pattern can never match a caller denies nothing, silently; an ALLOW rule's
fails closed, but just as silently. Each is a ConfigurationError naming the pattern.
"""

from __future__ import annotations

import dataclasses
import string
from typing import Any

import pytest

from zerotrust import Callers, Operations, Policy, Principal, Rule, SpiffeId, require
from zerotrust.authz import Condition, Operation, ScopeRule
from zerotrust.errors import ConfigurationError

PARTNER = Principal(proven_by="mtls", spiffe_id=SpiffeId.parse("spiffe://partner.org/ns/a/sa/b"))


@pytest.mark.parametrize(
    ("field", "pattern", "message"),
    [
        ("trust_domains", "spiffe://partner.org", "trust domains are names: 'partner.org'"),
        ("trust_domains", "Partner.org", "lower-case"),
        ("trust_domains", "partner.org/ns", "lower-case"),
        ("not_trust_domains", "*.Example.org", "lower-case"),
        ("trust_domains", "a" * 256, "can never match"),
        ("spiffe_ids", "spiffe://PARTNER.org/ns/a/*", "can never match"),
        ("spiffe_ids", "partner.org/ns/a/*", "a prefix must name a trust domain"),
        ("spiffe_ids", "spiffe://partner.org*", "spiffe://example.org.evil.example"),
        ("not_spiffe_ids", "spiffe://partner.org/ns/a b/*", "letters, digits"),
        ("spiffe_ids", "spiffe://partner.org/ns/a/", "can never match"),
        ("spiffe_ids", "spiffe://partner.org/ns//*", "no empty, '.' or '..' segment"),
        ("spiffe_ids", "spiffe://partner.org//*", "no empty, '.' or '..' segment"),
        ("not_spiffe_ids", "spiffe://partner.org/ns/../*", "no empty, '.' or '..' segment"),
        ("spiffe_ids", "spiffe://partner.org/./*", "no empty, '.' or '..' segment"),
        ("spiffe_ids", "*/sa/b/", "does not end in '/'"),
        ("spiffe_ids", "*/", "does not end in '/'"),
        ("not_spiffe_ids", "*/a//sa/b", "no empty, '.' or '..' segment"),
        ("spiffe_ids", "*a/../sa/b", "no empty, '.' or '..' segment"),
        ("spiffe_ids", "*///partner.org/ns/a", "no trust domain"),
        ("spiffe_ids", "*//Partner.org/ns/a", "can never match"),
        ("spiffe_ids", "*/sa/b?", "ends in letters"),
        ("proven_by", "mTLS", "proven_by is one of"),
        ("not_proven_by", "*token", "proven_by is one of"),
    ],
)
def test_caller_patterns_that_can_never_match_are_refused(
    field: str, pattern: str, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message) as info:
        Callers(**{field: [pattern]})
    assert field in str(info.value)


def test_a_trust_domain_pattern_is_lower_case_letters_digits_dots_dashes_and_underscores() -> None:
    every = string.ascii_lowercase + string.digits + ".-_"
    Callers(trust_domains=[f"*.{every}"])  # all of them at once
    for letter in string.ascii_uppercase:
        with pytest.raises(ConfigurationError, match="lower-case"):
            Callers(trust_domains=[f"*.{letter}.example"])


@pytest.mark.parametrize(
    ("field", "pattern", "other"),
    [
        ("trust_domains", "partner.org*", "partner.org.evil.example"),
        ("trust_domains", "prod-*", "prod-.evil.example"),
        ("trust_domains", "*partner.org", "evilpartner.org"),
        ("not_trust_domains", "*partner.org", "evilpartner.org"),
        ("spiffe_ids", "*partner.org/ns/pay/sa/admin", "spiffe://evilpartner.org/ns/pay/sa/admin"),
        ("spiffe_ids", "*web/sa/b", "spiffe://evilweb/sa/b"),
    ],
)
def test_patterns_whose_star_crosses_into_another_owner_s_name_are_refused(
    field: str, pattern: str, other: str
) -> None:
    """``*`` is any text: unless a trust domain pattern ends (prefix) or starts (suffix) at a
    '.', and a SPIFFE ID suffix at a '/', it also matches names someone else holds, the
    hazard for which ``spiffe://partner.org*`` is refused."""
    with pytest.raises(ConfigurationError, match="another owner's name") as info:
        Callers(**{field: [pattern]})
    assert other in str(info.value)
    with pytest.raises(ConfigurationError, match="another owner's name"):
        Condition(field.removeprefix("not_").rstrip("s"), values=[pattern])


@pytest.mark.parametrize(
    ("key", "pattern", "message"),
    [
        ("trust_domain", "spiffe://partner.org", "trust domains are names"),
        ("trust_domain", "Partner.org", "lower-case"),
        ("spiffe_id", "spiffe://partner.org*", "spiffe://example.org.evil.example"),
        ("spiffe_id", "spiffe://PARTNER.org/ns/a/sa/b", "can never match"),
        ("spiffe_id", "spiffe://partner.org/ns//*", "no empty, '.' or '..' segment"),
        ("spiffe_id", "*/sa/b/", "does not end in '/'"),
        ("proven_by", "JWT", "proven_by is one of"),
    ],
)
@pytest.mark.parametrize("side", ["values", "not_values"])
def test_conditions_on_the_same_attributes_are_checked_alike(
    key: str, pattern: str, message: str, side: str
) -> None:
    # a `when` condition on trust_domain / spiffe_id / proven_by is the Callers field by
    # another name: a DENY rule holding a pattern that never matches would deny nothing
    with pytest.raises(ConfigurationError, match=message) as info:
        Condition(key, **{side: [pattern]})  # type: ignore[arg-type]
    assert f"condition {key!r} {side}" in str(info.value)
    Condition("claims.tenant", **{side: [pattern]})  # a claim may hold any text


@pytest.mark.parametrize(
    ("field", "pattern"),
    [
        ("trust_domains", "partner.org"),
        ("trust_domains", "*.partner.org"),
        ("trust_domains", "partner.*"),
        ("trust_domains", "*"),
        ("spiffe_ids", "spiffe://partner.org/ns/a/sa/b"),
        ("spiffe_ids", "spiffe://partner.org/*"),
        ("spiffe_ids", "spiffe://partner.org/ns/a*"),
        ("spiffe_ids", "spiffe://partner.org/ns/.*"),  # the segment ".a" is one
        ("spiffe_ids", "spiffe://partner.org/ns/..*"),
        ("spiffe_ids", "*//partner.org/ns/a"),  # the scheme's "//"
        ("spiffe_ids", "*/partner.org/ns/a"),
        ("spiffe_ids", "*.."),  # the segment "a.." is one
        ("spiffe_ids", "*/..a"),
        ("spiffe_ids", "*/sa/b"),
        ("spiffe_ids", "*"),
        ("spiffe_ids", "spiffe://*"),
        ("not_spiffe_ids", "spiffe://*"),
        ("proven_by", "mtls"),
        ("proven_by", "*jwt"),
        ("not_proven_by", "api-key"),
    ],
)
def test_patterns_that_can_match_are_accepted(field: str, pattern: str) -> None:
    Callers(**{field: [pattern]})


@pytest.mark.parametrize(
    ("pattern", "spiffe_id"),
    [
        ("spiffe://partner.org/ns/.*", "spiffe://partner.org/ns/.a/sa/b"),
        ("spiffe://partner.org/ns/..*", "spiffe://partner.org/ns/..a/sa/b"),
        ("*//partner.org/ns/a", "spiffe://partner.org/ns/a"),
        ("*/partner.org/ns/a", "spiffe://partner.org/ns/a"),
        ("*..", "spiffe://partner.org/ns/a.."),
        ("*/..a", "spiffe://partner.org/ns/..a"),
    ],
)
def test_spiffe_id_patterns_with_dots_and_slashes_that_can_match_do(
    pattern: str, spiffe_id: str
) -> None:
    caller = Principal(proven_by="mtls", spiffe_id=SpiffeId.parse(spiffe_id))
    assert Callers(spiffe_ids=[pattern]).matches(caller)


def test_a_deny_rule_built_from_a_refused_spelling_never_silently_admits() -> None:
    # before: every one of these DENY rules was accepted and denied nothing
    with pytest.raises(ConfigurationError):
        Rule(id="deny", action="DENY", callers=[Callers(trust_domains=["spiffe://partner.org"])])
    policy = Policy(
        [
            Rule(id="deny", action="DENY", callers=[Callers(trust_domains=["partner.org"])]),
            Rule(id="all"),
        ]
    )
    assert not policy.explain(PARTNER, Operation("GET", "/x")).allowed


@pytest.mark.parametrize("method", [" GET", "GE T", "GET\n", "", "G\u00c9T"])
def test_methods_are_http_tokens(method: str) -> None:
    with pytest.raises(ConfigurationError):
        Operations(methods=[method])
    with pytest.raises(ConfigurationError):
        Operations(not_methods=[method])
    with pytest.raises(ConfigurationError):
        require(methods=[method])


@pytest.mark.parametrize("field", ["methods", "not_methods"])
def test_a_method_that_is_no_token_is_refused_naming_its_field(field: str) -> None:
    with pytest.raises(ConfigurationError, match=f"^operations.{field}: 'GE T' can never match"):
        Operations(**{field: ["GE T"]})  # type: ignore[arg-type]


def test_dry_run_must_be_a_boolean() -> None:
    with pytest.raises(ConfigurationError, match="dry_run must be true or false"):
        Rule(id="deny-legacy", action="DENY", dry_run="false")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="dry_run"):
        Rule(id="r", dry_run=1)  # type: ignore[arg-type]
    assert Rule(id="r", dry_run=True).dry_run is True


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"callers": ["spiffe://partner.org/ns/a/sa/b"]}, "callers must hold Callers"),
        ({"callers": Callers(subjects=["x"])}, "callers must be a list"),
        ({"operations": [{"methods": ["GET"]}]}, "operations must hold Operations"),
        ({"when": "abc"}, "when must be a list"),
        ({"when": [("subject", "x")]}, "when must hold Condition"),
        ({"scopes": ["orders:read"]}, "scopes must be a ScopeRule"),
        ({"action": "CUSTOM", "hook": "opa"}, "hook must be callable"),
    ],
)
def test_rule_parts_are_type_checked(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Rule(id="r", **kwargs)


def test_rule_parts_of_the_right_types_are_kept_as_tuples() -> None:
    rule = Rule(
        id="r",
        callers=[Callers(subjects=["x"])],
        operations=[Operations(methods=["GET"])],
        when=[Condition("subject", values=["x"])],
        scopes=ScopeRule(all=["a"]),
    )
    assert isinstance(rule.callers, tuple) and isinstance(rule.when, tuple)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"methods": "POST"}, "methods must be a list of strings"),
        ({"methods": [1]}, "methods must be a list of strings"),
        ({"proven_by": "mtls"}, "proven_by must be a list of strings"),
        ({"proven_by": [1]}, "proven_by must be a list of strings"),
        ({"proven_by": ["mTLS"]}, "unknown values"),
    ],
)
def test_require_checks_methods_and_proofs(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        require(**kwargs)


def test_combining_requirements_keeps_head_with_get() -> None:
    # what require(methods=["GET"]) says of GET it says of HEAD, combined or not
    both = require(methods=["GET"]) & require(methods=["HEAD"])
    assert both.methods == ("HEAD",)
    assert both.check(PARTNER, Operation("HEAD", "/x")) is None
    assert both.check(PARTNER, Operation("GET", "/x")) is not None
    assert (require(methods=["GET", "POST"]) & require(methods=["GET"])).methods == ("GET",)
    with pytest.raises(ConfigurationError, match="never both hold"):
        require(methods=["HEAD"]) & require(methods=["POST"])


@pytest.mark.parametrize("field", ["routes", "not_routes"])
@pytest.mark.parametrize("pattern", ["*/", "*//"])
def test_a_route_suffix_of_slashes_alone_is_refused(field: str, pattern: str) -> None:
    # routes compare without regard to a trailing slash, so "*/" would match every route
    with pytest.raises(ConfigurationError, match="would match every route"):
        Operations(**{field: [pattern]})  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["routes", "not_routes"])
@pytest.mark.parametrize("pattern", ["orders/{order_id}", "orders/<int:order_id>/", "healthz"])
def test_a_route_pattern_that_is_no_path_is_refused(field: str, pattern: str) -> None:
    # every route template starts with "/" (a gRPC method too) but the Django expressions
    # kept as written: a DENY rule holding a Django-style "orders/..." would deny nothing
    with pytest.raises(ConfigurationError, match="can never match: a route template starts"):
        Operations(**{field: [pattern]})  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=field):
        Operations(**{field: [pattern]})  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["routes", "not_routes"])
@pytest.mark.parametrize(
    ("pattern", "template"),
    [
        # Flask and Django rules, Starlette and FastAPI paths, as the application writes them
        ("/admin/<int:user_id>", "/admin/{user_id}"),
        ("/admin/<user_id>", "/admin/{user_id}"),
        ("/files/<path:name>", "/files/{name}"),
        ("/a/<string(length=2):code>/b", "/a/{code}/b"),
        ("/items/{item_id:int}", "/items/{item_id}"),
        ("/admin/<int:user_id>/*", "/admin/{user_id}/*"),
        ("*/{item_id:int}/edit", "*/{item_id}/edit"),
    ],
)
def test_a_route_pattern_with_a_converter_is_refused(
    field: str, pattern: str, template: str
) -> None:
    # every adapter drops converters from the templates it gives (/admin/{user_id}): a DENY
    # rule written as the route is in the application's code would deny nothing
    with pytest.raises(ConfigurationError, match=f"{field}: .*can never match") as refused:
        Operations(**{field: [pattern]})  # type: ignore[arg-type]
    assert repr(template) in str(refused.value)
    Operations(**{field: [template]})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "pattern",
    [
        "/orders/{order_id}",
        "/orders/*",
        "*/edit",
        "*",
        "/*",
        # Django re_path() expressions without a template form are the routes' templates
        "^files/(a|b)/$",
        "api/^orders/(?P<pk>[^/.]+)/$",
        "files/(a|b)$",
        "^api/*",
        "api/*",
    ],
)
def test_route_patterns_that_can_match_a_template_are_accepted(pattern: str) -> None:
    operations = Operations(routes=[pattern], not_routes=[pattern])
    if "*" not in pattern:
        assert Operations(routes=[pattern]).matches(Operation("GET", pattern))
        assert not operations.matches(Operation("GET", pattern))


# every list a Callers or an Operations takes
CALLER_FIELDS = tuple(
    f.name for f in dataclasses.fields(Callers) if f.init and f.name != "anonymous"
)
OPERATION_FIELDS = tuple(f.name for f in dataclasses.fields(Operations) if f.init)


@pytest.mark.parametrize(
    ("build", "field"),
    [(Callers, name) for name in CALLER_FIELDS] + [(Operations, n) for n in OPERATION_FIELDS],
)
def test_a_single_string_or_a_mapping_is_no_list_of_patterns(build: Any, field: str) -> None:
    # iterated, "spiffe://evil.example/x" would be one pattern per character (and a mapping
    # its keys): a DENY rule holding them would deny nothing
    with pytest.raises(ConfigurationError, match=f"^{field} must be a list of strings"):
        build(**{field: "spiffe://evil.example/x"})
    with pytest.raises(ConfigurationError, match=f"^{field} must be a list of strings"):
        build(**{field: {"spiffe://evil.example/x": True}})


def test_a_condition_s_values_are_a_list_too() -> None:
    with pytest.raises(ConfigurationError, match="condition 'subject' values must be a list"):
        Condition("subject", values="spiffe://evil.example/x")
    with pytest.raises(ConfigurationError, match="condition 'subject' not_values must be a list"):
        Condition("subject", not_values="spiffe://evil.example/x")


@pytest.mark.parametrize("value", ["", 5, None, b"spiffe://evil.example/x"])
def test_a_pattern_is_a_non_empty_string(value: object) -> None:
    with pytest.raises(ConfigurationError, match=r"invalid pattern .*: must be a non-empty string"):
        Callers(subjects=[value])  # type: ignore[list-item]


def test_patterns_are_values() -> None:
    from zerotrust.authz.rules import Pattern

    assert Pattern("spiffe://a/*") == Pattern("spiffe://a/*")
    assert hash(Pattern("spiffe://a/*")) == hash(Pattern("spiffe://a/*"))
    assert Pattern("spiffe://a/*") != Pattern("spiffe://b/*")
    assert Pattern("x") != "x"
    assert repr(Pattern("*/sa/web")) == "Pattern('*/sa/web')"
    assert not Pattern("*")(None)  # no value never matches, not even "*"


def test_rule_parts_are_values_that_print_as_written() -> None:
    """What a rule compiles its parts into is no part of their value: equal parts are equal,
    and print the fields they were given (never function objects)."""
    condition = Condition("claims.tenant", values=["acme"])
    assert condition == Condition("claims.tenant", values=["acme"])
    assert repr(condition) == "Condition(key='claims.tenant', values=['acme'], not_values=())"
    operations = Operations(methods=["get"], kinds=["grpc"])
    assert operations == Operations(methods=["GET"], kinds=["grpc"])
    assert repr(operations) == (
        "Operations(methods=('GET',), not_methods=(), routes=(), not_routes=(), kinds=('grpc',))"
    )
    callers = Callers(subjects=["x"])
    assert callers == Callers(subjects=["x"])
    assert repr(callers).endswith(
        "subjects=['x'], not_subjects=(), proven_by=(), not_proven_by=(), anonymous=False)"
    )


@pytest.mark.parametrize("value", [5, None, object()])
def test_lists_that_are_no_iterable_are_refused(value: object) -> None:
    with pytest.raises(ConfigurationError, match=r"^methods must be a list of strings"):
        Operations(methods=value)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"^scopes must be a list of strings"):
        ScopeRule(all=value)  # type: ignore[arg-type]


def test_a_scope_rule_keeps_its_own_copy_and_is_false_when_empty() -> None:
    scopes, any_scopes = ["orders:read"], ["a", "b"]
    rule = ScopeRule(all=scopes, any=any_scopes)
    scopes.append("orders:write")
    any_scopes.clear()
    assert rule.all == ("orders:read",) and rule.any == ("a", "b")
    assert rule and ScopeRule(any=["a"]) and not ScopeRule()
    Rule(id="d", action="DENY", scopes=ScopeRule())  # no scopes: fine on a DENY rule
    with pytest.raises(ConfigurationError, match="scopes apply to ALLOW rules only"):
        Rule(id="d", action="DENY", scopes=ScopeRule(all=["a"]))


@pytest.mark.parametrize("text", ["a*b", "**", "*a*", "spiffe://*/x/*", "a**"])
def test_a_star_is_the_whole_pattern_its_first_or_its_last_character(text: str) -> None:
    # taken literally, "a*b" would match only the three characters a, * and b: a DENY rule
    # holding it would deny nothing
    with pytest.raises(ConfigurationError, match="may only be the whole pattern, its first or"):
        Callers(subjects=[text])


@pytest.mark.parametrize("timeout", [0, -1, 300.001, float("nan"), float("inf"), True, "1"])
def test_a_hook_timeout_is_more_than_0_and_at_most_300_seconds(timeout: object) -> None:
    def hook(principal: object, operation: object) -> bool:
        return True

    Rule(id="ext", action="CUSTOM", hook=hook, hook_timeout=300)  # the bound itself
    with pytest.raises(ConfigurationError, match="hook_timeout"):
        Rule(id="ext", action="CUSTOM", hook=hook, hook_timeout=timeout)  # type: ignore[arg-type]
