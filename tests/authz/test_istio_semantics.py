"""Istio AuthorizationPolicy semantics, case by case, as docs/policy.md states them.

Each case names the Istio behaviour it checks (or the documented difference from Istio):
the structure of rules (rules OR'd; inside ``from`` / ``to`` the entries OR'd and their fields
AND'd; ``from``, ``to`` and ``when`` AND'd), the ``not*`` fields, the string match forms and
the evaluation order. The same documents, loaded from YAML and JSON, are the same policy.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from zerotrust import SpiffeId, load_policy
from zerotrust.authn.principal import Principal
from zerotrust.authz import Operation, Policy
from zerotrust.authz.loader import policy_from_dict
from zerotrust.errors import ConfigurationError

WEB = "spiffe://example.org/ns/shop/sa/web"
BATCH = "spiffe://example.org/ns/shop/sa/batch"
PARTNER = "spiffe://partner.org/ns/sync/sa/agent"


def caller(spiffe_id: str | None = WEB, **kw: Any) -> Principal:
    sid = SpiffeId.parse(spiffe_id) if spiffe_id else None
    kw.setdefault("proven_by", "mtls")
    return Principal(spiffe_id=sid, **kw)


def jwt(subject: str, issuer: str = "https://idp.example", **kw: Any) -> Principal:
    return Principal(proven_by="jwt", subject=subject, issuer=issuer, **kw)


GET = Operation("GET", "/orders/{order_id}")
POST = Operation("POST", "/orders/{order_id}")
DELETE = Operation("DELETE", "/orders/{order_id}")
HEALTH = Operation("GET", "/healthz")


def rule(rule_id: str, action: str = "ALLOW", **parts: Any) -> dict[str, Any]:
    return {"id": rule_id, "action": action, **parts}


SHOP_FROM = [{"spiffe_ids": ["spiffe://example.org/ns/shop/*"]}]

# (id, policy document, caller, operation, allowed, reason, rule_id)
CASES: list[tuple[str, dict[str, Any], Principal | None, Operation, bool, str, str | None]] = [
    # --- evaluation order ---------------------------------------------------------------------
    (
        "DENY is evaluated before ALLOW",
        {"rules": [rule("allow"), rule("deny", "DENY", to=[{"methods": ["DELETE"]}])]},
        caller(),
        DELETE,
        False,
        "denied_by_rule",
        "deny",
    ),
    (
        "ALLOW rules present and none matches: denied",
        {"rules": [rule("reads", to=[{"methods": ["GET"]}])]},
        caller(),
        POST,
        False,
        "no_allow_rule_matched",
        None,
    ),
    (
        "a policy with no rules allows nothing (the default is deny)",
        {"rules": []},
        caller(),
        GET,
        False,
        "no_rules",
        None,
    ),
    (
        "DENY rules alone refuse the rest by default (Istio would allow it)",
        {"rules": [rule("deny", "DENY", to=[{"methods": ["DELETE"]}])]},
        caller(),
        GET,
        False,
        "no_allow_rule_matched",
        None,
    ),
    (
        "default allow is Istio's no-ALLOW-policy behaviour, asked for by name",
        {"default": "allow", "rules": [rule("deny", "DENY", to=[{"methods": ["DELETE"]}])]},
        caller(),
        GET,
        True,
        "allowed_by_default",
        None,
    ),
    (
        "default allow yields to ALLOW rules that exist",
        {"default": "allow", "rules": [rule("reads", to=[{"methods": ["GET"]}])]},
        caller(),
        POST,
        False,
        "no_allow_rule_matched",
        None,
    ),
    # --- structure: rules OR'd, entries OR'd, fields AND'd, from/to/when AND'd -----------------
    (
        "rules are OR'd: the second rule allows",
        {"rules": [rule("a", to=[{"methods": ["PUT"]}]), rule("b", to=[{"methods": ["POST"]}])]},
        caller(),
        POST,
        True,
        "allowed_by_rule",
        "b",
    ),
    (
        "from entries are OR'd",
        {
            "rules": [
                rule("r", **{"from": [{"spiffe_ids": [PARTNER]}, {"spiffe_ids": [WEB]}]}),
            ]
        },
        caller(),
        GET,
        True,
        "allowed_by_rule",
        "r",
    ),
    (
        "fields inside one from entry are AND'd",
        {
            "rules": [
                rule("r", **{"from": [{"spiffe_ids": [WEB], "proven_by": ["mtls+jwt"]}]}),
            ]
        },
        caller(),
        GET,
        False,
        "no_allow_rule_matched",
        None,
    ),
    (
        "fields split over two from entries are OR'd",
        {"rules": [rule("r", **{"from": [{"spiffe_ids": [WEB]}, {"proven_by": ["mtls+jwt"]}]})]},
        caller(),
        GET,
        True,
        "allowed_by_rule",
        "r",
    ),
    (
        "to entries are OR'd",
        {"rules": [rule("r", to=[{"methods": ["PUT"]}, {"routes": ["/orders/*"]}])]},
        caller(),
        POST,
        True,
        "allowed_by_rule",
        "r",
    ),
    (
        "fields inside one to entry are AND'd",
        {"rules": [rule("r", to=[{"methods": ["PUT"], "routes": ["/orders/*"]}])]},
        caller(),
        POST,
        False,
        "no_allow_rule_matched",
        None,
    ),
    (
        "values inside one field are OR'd",
        {"rules": [rule("r", to=[{"methods": ["PUT", "POST"]}])]},
        caller(),
        POST,
        True,
        "allowed_by_rule",
        "r",
    ),
    (
        "from and to are AND'd",
        {"rules": [rule("r", **{"from": SHOP_FROM}, to=[{"methods": ["GET"]}])]},
        caller(PARTNER),
        GET,
        False,
        "no_allow_rule_matched",
        None,
    ),
    (
        "from, to and when all match",
        {
            "rules": [
                rule(
                    "r",
                    **{"from": SHOP_FROM},
                    to=[{"methods": ["GET"]}],
                    when=[{"key": "claims.tenant", "values": ["acme"]}],
                )
            ]
        },
        caller(claims={"tenant": "acme"}),
        GET,
        True,
        "allowed_by_rule",
        "r",
    ),
    (
        "when conditions are AND'd",
        {
            "rules": [
                rule(
                    "r",
                    when=[
                        {"key": "claims.tenant", "values": ["acme"]},
                        {"key": "claims.tier", "values": ["gold"]},
                    ],
                )
            ]
        },
        caller(claims={"tenant": "acme", "tier": "silver"}),
        GET,
        False,
        "no_allow_rule_matched",
        None,
    ),
    (
        "an empty rule matches every authenticated caller",
        {"rules": [rule("everyone")]},
        caller(PARTNER),
        DELETE,
        True,
        "allowed_by_rule",
        "everyone",
    ),
    (
        "an empty ALLOW rule does not admit requests without credentials (Istio's would)",
        {"rules": [rule("everyone")]},
        None,
        GET,
        False,
        "no_allow_rule_matched",
        None,
    ),
    (
        "an empty DENY rule denies requests without credentials too",
        {"rules": [rule("nobody", "DENY"), rule("health", **{"from": [{"anonymous": True}]})]},
        None,
        HEALTH,
        False,
        "denied_by_rule",
        "nobody",
    ),
    # --- not* fields ---------------------------------------------------------------------------
    (
        "notPrincipals excludes a caller from an ALLOW entry",
        {
            "rules": [
                rule("r", **{"from": [{"trust_domains": ["example.org"], "not_spiffe_ids": [WEB]}]})
            ]
        },
        caller(),
        GET,
        False,
        "no_allow_rule_matched",
        None,
    ),
    (
        "notPrincipals leaves the others in",
        {
            "rules": [
                rule("r", **{"from": [{"trust_domains": ["example.org"], "not_spiffe_ids": [WEB]}]})
            ]
        },
        caller(BATCH),
        GET,
        True,
        "allowed_by_rule",
        "r",
    ),
    (
        "a DENY of notNamespaces-style not_trust_domains denies foreign callers",
        {
            "rules": [
                rule("foreign", "DENY", **{"from": [{"not_trust_domains": ["example.org"]}]}),
                rule("all"),
            ]
        },
        caller(PARTNER),
        GET,
        False,
        "denied_by_rule",
        "foreign",
    ),
    (
        "a DENY of not_trust_domains denies callers without a SPIFFE ID",
        {
            "rules": [
                rule("foreign", "DENY", **{"from": [{"not_trust_domains": ["example.org"]}]}),
                rule("all"),
            ]
        },
        jwt("user-1"),
        GET,
        False,
        "denied_by_rule",
        "foreign",
    ),
    (
        "notMethods: a DENY of everything but GET",
        {"rules": [rule("read-only", "DENY", to=[{"not_methods": ["GET"]}]), rule("all")]},
        caller(),
        POST,
        False,
        "denied_by_rule",
        "read-only",
    ),
    (
        "notMethods: GET passes the DENY",
        {"rules": [rule("read-only", "DENY", to=[{"not_methods": ["GET"]}]), rule("all")]},
        caller(),
        GET,
        True,
        "allowed_by_rule",
        "all",
    ),
    (
        "notPaths: a DENY of every route but the public ones",
        {"rules": [rule("private", "DENY", to=[{"not_routes": ["/healthz"]}]), rule("all")]},
        caller(),
        GET,
        False,
        "denied_by_rule",
        "private",
    ),
    (
        "notPaths: the public route passes",
        {"rules": [rule("private", "DENY", to=[{"not_routes": ["/healthz"]}]), rule("all")]},
        caller(),
        HEALTH,
        True,
        "allowed_by_rule",
        "all",
    ),
    (
        "notValues: a condition holds when no value matches",
        {"rules": [rule("r", when=[{"key": "claims.tier", "not_values": ["free"]}])]},
        caller(claims={"tier": "gold"}),
        GET,
        True,
        "allowed_by_rule",
        "r",
    ),
    (
        "notValues: any element of a list claim that matches fails it",
        {"rules": [rule("r", when=[{"key": "claims.groups", "not_values": ["banned"]}])]},
        caller(claims={"groups": ["staff", "banned"]}),
        GET,
        False,
        "no_allow_rule_matched",
        None,
    ),
    (
        "values: any element of a list claim that matches satisfies it",
        {"rules": [rule("r", when=[{"key": "claims.groups", "values": ["admins"]}])]},
        caller(claims={"groups": ["staff", "admins"]}),
        GET,
        True,
        "allowed_by_rule",
        "r",
    ),
    (
        "requestPrincipals-style: issuer and subject in one entry",
        {
            "rules": [
                rule(
                    "r", **{"from": [{"issuers": ["https://idp.example"], "subjects": ["user-*"]}]}
                )
            ]
        },
        jwt("user-7"),
        GET,
        True,
        "allowed_by_rule",
        "r",
    ),
    (
        "requestPrincipals-style: another issuer's subject does not match",
        {
            "rules": [
                rule(
                    "r", **{"from": [{"issuers": ["https://idp.example"], "subjects": ["user-*"]}]}
                )
            ]
        },
        jwt("user-7", issuer="https://idp.example.evil"),
        GET,
        False,
        "no_allow_rule_matched",
        None,
    ),
    # --- string matching -----------------------------------------------------------------------
    (
        "prefix match",
        {"rules": [rule("r", **{"from": [{"subjects": ["user-*"]}]})]},
        jwt("user-7"),
        GET,
        True,
        "allowed_by_rule",
        "r",
    ),
    (
        "suffix match",
        {"rules": [rule("r", **{"from": [{"spiffe_ids": ["*/sa/web"]}]})]},
        caller(),
        GET,
        True,
        "allowed_by_rule",
        "r",
    ),
    (
        "suffix match misses",
        {"rules": [rule("r", **{"from": [{"spiffe_ids": ["*/sa/web"]}]})]},
        caller(BATCH),
        GET,
        False,
        "no_allow_rule_matched",
        None,
    ),
    (
        "exact match is exact",
        {"rules": [rule("r", **{"from": [{"subjects": ["user"]}]})]},
        jwt("user-7"),
        GET,
        False,
        "no_allow_rule_matched",
        None,
    ),
    (
        "presence match needs a value",
        {"rules": [rule("r", when=[{"key": "claims.tenant", "values": ["*"]}])]},
        caller(claims={}),
        GET,
        False,
        "no_allow_rule_matched",
        None,
    ),
    (
        "presence match with a value",
        {"rules": [rule("r", when=[{"key": "claims.tenant", "values": ["*"]}])]},
        caller(claims={"tenant": "acme"}),
        GET,
        True,
        "allowed_by_rule",
        "r",
    ),
    (
        "route templates are matched, not raw paths",
        {"rules": [rule("r", to=[{"routes": ["/orders/7"]}])]},
        caller(),
        Operation("GET", "/orders/{order_id}", path="/orders/7"),
        False,
        "no_allow_rule_matched",
        None,
    ),
    (
        "routes are case-sensitive",
        {"rules": [rule("r", to=[{"routes": ["/Orders/*"]}])]},
        caller(),
        GET,
        False,
        "no_allow_rule_matched",
        None,
    ),
    (
        "methods compare without regard to case (Istio compares them literally)",
        {"rules": [rule("r", to=[{"methods": ["get"]}])]},
        caller(),
        GET,
        True,
        "allowed_by_rule",
        "r",
    ),
    # --- dry-run -------------------------------------------------------------------------------
    (
        "a dry-run DENY rule is recorded, not enforced",
        {"rules": [rule("d", "DENY", dry_run=True), rule("all")]},
        caller(),
        GET,
        True,
        "allowed_by_rule",
        "all",
    ),
    (
        "a dry-run ALLOW rule admits nothing",
        {"rules": [rule("a", dry_run=True), rule("other", to=[{"methods": ["PUT"]}])]},
        caller(),
        GET,
        False,
        "no_allow_rule_matched",
        None,
    ),
    (
        "a dry-run policy is recorded, not enforced",
        {"dry_run": True, "rules": [rule("d", "DENY")]},
        caller(),
        GET,
        True,
        "dry_run",
        None,
    ),
]


@pytest.mark.parametrize(
    ("document", "principal", "op", "allowed", "reason", "rule_id"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_istio_semantics(
    document: dict[str, Any],
    principal: Principal | None,
    op: Operation,
    allowed: bool,
    reason: str,
    rule_id: str | None,
) -> None:
    policy = policy_from_dict(document)
    decision = policy.evaluate(principal, op)
    assert (decision.allowed, decision.reason, decision.rule_id) == (allowed, reason, rule_id)
    assert policy.decide_without_hooks(principal, op) == decision


@pytest.mark.parametrize(
    "document",
    [case[1] for case in CASES if "dry_run" not in json.dumps(case[1])],
    ids=[case[0] for case in CASES if "dry_run" not in json.dumps(case[1])],
)
def test_the_same_document_in_every_file_format_decides_alike(
    tmp_path: Path, document: dict[str, Any]
) -> None:
    yaml = pytest.importorskip("yaml")
    json_file = tmp_path / "policy.json"
    json_file.write_text(json.dumps(document))
    yaml_file = tmp_path / "policy.yaml"
    yaml_file.write_text(yaml.safe_dump(document))
    direct = policy_from_dict(document)
    for file in (json_file, yaml_file):
        loaded = load_policy(file)
        assert loaded.rules == direct.rules
        assert loaded.default == direct.default


def test_dry_run_records_what_enforcing_would_have_done() -> None:
    policy = policy_from_dict({"rules": [rule("d", "DENY", dry_run=True), rule("all")]})
    decision = policy.evaluate(caller(), GET)
    assert decision.dry_run and decision.would_allow is False
    assert (decision.would_rule_id, decision.would_reason) == ("d", "denied_by_rule")


# --- what a file says must be what it means ---------------------------------------------------

LIST_KEYS = [
    ("from", "spiffe_ids", WEB),
    ("from", "not_spiffe_ids", WEB),
    ("from", "trust_domains", "example.org"),
    ("from", "not_trust_domains", "example.org"),
    ("from", "issuers", "https://idp.example"),
    ("from", "not_issuers", "https://idp.example"),
    ("from", "subjects", "user-1"),
    ("from", "not_subjects", "user-1"),
    ("from", "proven_by", "mtls"),
    ("from", "not_proven_by", "mtls"),
    ("to", "methods", "GET"),
    ("to", "not_methods", "GET"),
    ("to", "routes", "/orders/{order_id}"),
    ("to", "not_routes", "/orders/{order_id}"),
    ("to", "kinds", "http"),
]


@pytest.mark.parametrize("action", ["ALLOW", "DENY"])
@pytest.mark.parametrize(("part", "key", "value"), LIST_KEYS)
def test_a_single_string_where_a_list_belongs_is_refused(
    part: str, key: str, value: str, action: str
) -> None:
    # "GET" must never be read as ["G", "E", "T"]
    document = {"rules": [rule("r", action, **{part: [{key: value}]})]}
    with pytest.raises(ConfigurationError, match=rf"rules\[0\]\.{part}\[0\]: {key} must be a list"):
        policy_from_dict(document)
    document = {"rules": [rule("r", action, **{part: [{key: [value]}]})]}
    policy_from_dict(document)  # the list is fine


@pytest.mark.parametrize("key", ["values", "not_values"])
def test_a_single_string_where_condition_values_belong_is_refused(key: str) -> None:
    document = {"rules": [rule("r", "DENY", when=[{"key": "claims.tier", key: "free"}])]}
    with pytest.raises(ConfigurationError, match=r"rules\[0\]\.when\[0\]: .*must be a list"):
        policy_from_dict(document)


@pytest.mark.parametrize(
    ("entry", "where"),
    [
        ({"principals": [WEB]}, "rules[0].from[0].principals: unknown key"),
        ({"namespaces": ["shop"]}, "rules[0].from[0].namespaces: unknown key"),
        ({"requestPrincipals": ["*"]}, "rules[0].from[0].requestPrincipals: unknown key"),
    ],
)
def test_istio_field_names_are_unknown_keys_not_ignored(entry: dict[str, Any], where: str) -> None:
    # a DENY rule whose source is ignored would deny every caller, an ALLOW admit every one
    with pytest.raises(ConfigurationError, match="^<dict>: " + re.escape(where)):
        policy_from_dict({"rules": [rule("r", "DENY", **{"from": [entry]})]})


@pytest.mark.parametrize(
    ("field", "pattern"),
    [
        ("spiffe_ids", "spiffe://example.org/*/sa/web"),
        ("subjects", "user-*-admin"),
        ("issuers", "https://*.example"),
        ("routes", "/orders/*/items"),
        ("methods", "G*T"),
    ],
)
def test_a_star_inside_a_pattern_is_refused_not_read_literally(field: str, pattern: str) -> None:
    part = "to" if field in ("routes", "methods") else "from"
    with pytest.raises(ConfigurationError, match="'\\*' may only be the whole pattern"):
        policy_from_dict({"rules": [rule("r", "DENY", **{part: [{field: [pattern]}]})]})


@pytest.mark.parametrize(
    "spiffe_id",
    [
        "spiffe://example.org/ns/shop/sa/w\u0435b",  # a Cyrillic "ie" (U+0435)
        "spiffe://\u0435xample.org/ns/shop/sa/web",
        "spiffe://example.org/ns/shop/sa/\uff57eb",  # a fullwidth "w" (NFKC: "w")
        "spiffe://EXAMPLE.org/ns/shop/sa/web",  # trust domains are lower case
        "spiffe://example.org/ns/shop/sa/w%65b",  # percent-encoded "e"
    ],
)
def test_spiffe_id_look_alikes_are_refused_in_patterns(spiffe_id: str) -> None:
    with pytest.raises(ConfigurationError, match="can never match"):
        policy_from_dict({"rules": [rule("r", "DENY", **{"from": [{"spiffe_ids": [spiffe_id]}]})]})


def test_spiffe_id_paths_are_case_sensitive() -> None:
    policy = policy_from_dict(
        {
            "rules": [
                rule("r", **{"from": [{"spiffe_ids": ["spiffe://example.org/ns/shop/sa/Web"]}]})
            ]
        }
    )
    assert not policy.evaluate(caller(), GET).allowed


def test_a_policy_without_rules_allows_nothing_with_or_without_credentials() -> None:
    policy = Policy([], id="empty")
    assert policy.evaluate(caller(), GET).reason == "no_rules"
    assert not policy.evaluate(None, HEALTH).allowed


@pytest.mark.parametrize(
    ("field", "principal"),
    [
        ("spiffe_ids", "cluster.local/ns/default/sa/sleep"),
        ("spiffe_ids", "cluster.local/ns/default/*"),
        ("not_spiffe_ids", "cluster.local/ns/default/sa/sleep"),
    ],
)
def test_istio_principals_are_written_as_spiffe_ids(field: str, principal: str) -> None:
    # Istio's principals leave out the scheme: a DENY rule holding one would deny nothing
    document = {"rules": [rule("r", "DENY", **{"from": [{field: [principal]}]})]}
    with pytest.raises(ConfigurationError, match="can never match"):
        policy_from_dict(document)
    document = {"rules": [rule("r", "DENY", **{"from": [{field: [f"spiffe://{principal}"]}]})]}
    policy_from_dict(document)


@pytest.mark.parametrize("claim", ["scope", "scp"])
@pytest.mark.parametrize("key", ["claims.{}", "claims[{}]"])
def test_a_space_delimited_scope_claim_is_matched_one_scope_at_a_time(claim: str, key: str) -> None:
    """Istio reads the ``scope`` claim as the list RFC 8693 §4.2 makes of it: a DENY rule on
    one scope covers a token granted it among others (decided by a Guard on a real token)."""
    from tests.tokens.conftest import AUDIENCE, ISSUER, NOW, claims, mint
    from zerotrust import Authenticator, FixedClock, Guard, MemoryStore, PrivateJWK, TokenVerifier
    from zerotrust.authn.request import Request

    key_pair = PrivateJWK.generate("ES256", kid="k1")
    verifier = TokenVerifier(
        issuer=ISSUER,
        audience=AUDIENCE,
        keys={"keys": [key_pair.public().to_public_dict()]},
        algorithms=["ES256"],
        clock=FixedClock(NOW),
    )
    policy = policy_from_dict(
        {
            "rules": [
                rule("no-admin", "DENY", when=[{"key": key.format(claim), "values": ["admin"]}]),
                rule(
                    "readers",
                    **{"from": [{"issuers": [ISSUER]}]},
                    when=[{"key": key.format(claim), "not_values": ["banned"]}],
                ),
            ]
        }
    )
    guard = Guard(authenticator=Authenticator(tokens=verifier), policy=policy, store=MemoryStore())

    def decide(scope: str) -> tuple[bool, str | None]:
        token = mint(key_pair, claims(**{claim: scope}))
        view = Request(
            method="GET", route="/orders", headers=[("authorization", f"Bearer {token}")]
        )
        outcome = guard.evaluate(view)
        assert outcome.decision is not None
        return outcome.allowed, outcome.decision.rule_id

    assert decide("orders:read") == (True, "readers")
    assert decide("admin") == (False, "no-admin")
    assert decide("orders:read admin") == (False, "no-admin")
    assert decide("orders:read banned") == (False, None)
    assert decide("administrator orders:read") == (True, "readers")  # whole scopes only
