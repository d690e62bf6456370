from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from zerotrust import SpiffeId
from zerotrust.authn.principal import Principal
from zerotrust.authz import Operation, load_policy, policy_from_dict
from zerotrust.errors import ConfigurationError

TOML = """
id = "orders"
default = "deny"

[[rules]]
id = "block-partner-writes"
action = "DENY"
[[rules.from]]
trust_domains = ["partner.org"]
[[rules.to]]
methods = ["POST", "DELETE"]

[[rules]]
id = "web-reads"
action = "ALLOW"
scopes = ["orders:read"]
[[rules.from]]
spiffe_ids = ["spiffe://example.org/ns/shop/*"]
[[rules.to]]
methods = ["GET"]
routes = ["/orders/{order_id}"]
[[rules.when]]
key = "claims.tenant"
values = ["acme"]

[[rules]]
id = "opa"
action = "CUSTOM"
hook = "opa"
hook_timeout = 0.5

[[rate_limits]]
id = "per-caller"
rate = 5.0
burst = 10
"""


def web(**kw: object) -> Principal:
    return Principal(
        proven_by="mtls", spiffe_id=SpiffeId.parse("spiffe://example.org/ns/shop/sa/web"), **kw
    )  # type: ignore[arg-type]


def test_toml_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(TOML)
    policy = load_policy(path, hooks={"opa": lambda p, o: True})
    assert policy.id == "orders"
    assert [r.id for r in policy.rules] == ["block-partner-writes", "web-reads", "opa"]
    assert policy.rate_limits[0].burst == 10
    assert policy.rules[2].hook_timeout == 0.5
    ok = policy.evaluate(
        web(scopes={"orders:read"}, claims={"tenant": "acme"}),
        Operation("GET", "/orders/{order_id}"),
    )
    assert ok.allowed and ok.rule_id == "web-reads"
    short = policy.evaluate(web(claims={"tenant": "acme"}), Operation("GET", "/orders/{order_id}"))
    assert short.reason == "insufficient_scope"


def test_yaml_and_json(tmp_path: Path) -> None:
    import yaml

    doc = {"id": "p", "rules": [{"id": "r", "from": [{"spiffe_ids": ["*"]}]}]}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(doc))
    (tmp_path / "p.json").write_text(json.dumps(doc))
    assert load_policy(tmp_path / "p.yaml") == load_policy(tmp_path / "p.json")


@pytest.mark.parametrize(
    ("doc", "where"),
    [
        ({"rulez": []}, "rulez: unknown key"),
        (
            {"rules": [{"id": "r", "from": [{"spife_ids": ["x"]}]}]},
            "rules[0].from[0].spife_ids: unknown key",
        ),
        (
            {"rules": [{"id": "r", "to": [{"routes": ["/a/*/b/*"]}]}]},
            "rules[0].to[0]: invalid pattern",
        ),
        ({"rules": [{"id": "r", "action": "PERMIT"}]}, "rules[0]: rule 'r': action must be"),
        ({"rules": [{"id": "r", "dry_run": "yes"}]}, "rules[0].dry_run: must be true or false"),
        (
            {"rules": [{"id": "r", "action": "CUSTOM", "hook": "nope"}]},
            "rules[0].hook: unknown hook 'nope'",
        ),
        ({"rules": [{"id": "r", "when": [{"key": "claims.x"}]}]}, "rules[0].when[0]"),
        ({"rules": {"id": "r"}}, "rules: must be a list"),
        ({"rules": None}, "rules: must be a list"),
        ({"rules": [{"id": "r", "from": None}]}, "rules[0].from: must be a list"),
        ({"rules": [{"id": "r", "to": None}]}, "rules[0].to: must be a list"),
        ({"rules": [{"id": "r", "when": None}]}, "rules[0].when: must be a list"),
        (
            {"rules": [{"id": "r", "from": [{"subjects": {"alice": "x"}}]}]},
            "rules[0].from[0]: subjects must be a list of strings, not a mapping",
        ),
        (
            {"rules": [{"id": "r", "to": [{"methods": {"GET": 1}}]}]},
            "rules[0].to[0]: methods must be a list of strings",
        ),
        ({"rate_limits": [{"id": "x", "rate": "fast", "burst": 1}]}, "rate_limits[0]"),
        ({"rules": [{"id": "r", "scopes": "a b"}]}, "rules[0].scopes"),
        ({"rules": [[]]}, "rules[0]: must be a table/object"),
        ({"rules": [{"id": "r", "to": [{"routes": 5}]}]}, "rules[0].to[0]: invalid value"),
        (
            {"rules": [{"id": "r", "action": "CUSTOM", "hook": ["opa"]}]},
            "rules[0].hook: unknown hook ['opa']",
        ),
    ],
)
def test_errors_name_the_source_and_key(doc: dict, where: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigurationError) as info:
        policy_from_dict(doc, source="policy.toml")
    assert str(info.value).startswith("policy.toml: ")
    assert where in str(info.value)


@pytest.mark.parametrize("document", [[], "rules", None])
def test_a_document_that_is_no_table_is_named_as_the_source(document: Any) -> None:
    with pytest.raises(ConfigurationError) as info:
        policy_from_dict(document, source="policy.json")
    assert str(info.value) == "policy.json: must be a table/object"


def test_document_settings_are_read() -> None:
    assert policy_from_dict({}).id == "default"
    everyone = policy_from_dict({"default": "allow"})
    assert everyone.default == "allow"
    assert everyone.evaluate(None, Operation("GET", "/orders")).allowed
    assert policy_from_dict({"dry_run": True}).dry_run is True
    assert policy_from_dict({}).dry_run is False


def test_any_scopes_alone_are_required() -> None:
    policy = policy_from_dict({"rules": [{"id": "r", "any_scopes": ["orders:read", "orders:all"]}]})
    op = Operation("GET", "/orders/{order_id}")
    refused = policy.evaluate(web(scopes={"orders:write"}), op)
    assert not refused.allowed and refused.reason == "insufficient_scope"
    assert policy.evaluate(web(scopes={"orders:all"}), op).allowed


def test_rate_limits_keep_their_callers_and_operations() -> None:
    doc = {
        "rate_limits": [
            {
                "id": "shop-writes",
                "rate": 1.0,
                "burst": 5,
                "from": [{"trust_domains": ["example.org"]}],
                "to": [{"methods": ["POST"]}],
            }
        ]
    }
    policy = policy_from_dict(doc)
    post, get = Operation("POST", "/orders"), Operation("GET", "/orders")
    assert [r.id for r in policy.rate_limits_for(web(), post)] == ["shop-writes"]
    assert policy.rate_limits_for(web(), get) == ()
    partner = Principal(proven_by="mtls", spiffe_id=SpiffeId.parse("spiffe://partner.org/x"))
    assert policy.rate_limits_for(partner, post) == ()


def test_a_custom_rule_without_hook_timeout_keeps_the_default() -> None:
    from zerotrust.authz import Rule

    def hook(principal: object, op: object) -> bool:
        return True

    policy = policy_from_dict(
        {"rules": [{"id": "ext", "action": "CUSTOM", "hook": "h"}]}, hooks={"h": hook}
    )
    default = Rule(id="ext", action="CUSTOM", hook=hook).hook_timeout
    assert policy.rules[0].hook_timeout == default


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_policy(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("id = ")
    with pytest.raises(ConfigurationError, match="not valid TOML"):
        load_policy(tmp_path / "bad.toml")
    (tmp_path / "p.ini").write_text("")
    with pytest.raises(ConfigurationError, match="unknown format"):
        load_policy(tmp_path / "p.ini")


@pytest.mark.parametrize(
    ("name", "text", "key"),
    [
        ("p.json", '{"rules": [{"id": "block", "action": "DENY", "action": "ALLOW"}]}', "action"),
        (
            "p.yaml",
            "rules:\n  - id: no-writes\n    action: DENY\n    to:\n      - methods: [POST]\n"
            "    to:\n      - routes: ['/public/*']\n",
            "to",
        ),
        ("p.yml", "id: a\nid: b\n", "id"),
    ],
)
def test_a_key_named_twice_fails_at_load_time(
    tmp_path: Path, name: str, text: str, key: str
) -> None:
    # JSON and YAML parsers keep the last value: a second "action" would make a DENY rule an
    # ALLOW one, a second "to" would narrow what it denies (TOML refuses it by itself)
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigurationError, match=f"duplicate key '{key}'"):
        load_policy(path)


@pytest.mark.parametrize(
    "text",
    [
        # merged twice: the later merge would win
        "rules:\n  - id: block\n    <<: {action: DENY}\n    <<: {action: ALLOW}\n",
        # merged and written: the written one would win
        "base: &b {action: DENY}\nrules:\n  - id: block\n    <<: *b\n    action: ALLOW\n",
        # two merged mappings naming one key
        "rules:\n  - id: block\n    <<: [{action: DENY}, {action: ALLOW}]\n",
    ],
)
def test_yaml_merge_keys_name_no_key_twice(tmp_path: Path, text: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(ConfigurationError, match="duplicate key 'action'"):
        load_policy(path)


def test_yaml_merge_keys_that_name_each_key_once_are_read(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "rules:\n  - &base {id: reads, action: DENY}\n  - <<: {action: DENY}\n    id: w\n"
    )
    assert [(rule.id, rule.action) for rule in load_policy(path).rules] == [
        ("reads", "DENY"),
        ("w", "DENY"),
    ]


def test_a_string_where_a_boolean_belongs_fails_at_load_time(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    rule = {"id": "ops", "from": [{"anonymous": "false"}], "to": [{"routes": ["/admin"]}]}
    path.write_text(json.dumps({"rules": [rule]}))
    with pytest.raises(ConfigurationError, match=r"rules\[0\]\.from\[0\].*anonymous"):
        load_policy(path)


def test_policy_files_are_bounded(tmp_path: Path) -> None:
    from zerotrust.authz.loader import MAX_POLICY_BYTES

    path = tmp_path / "policy.json"
    path.write_text('{"rules": [], "id": "' + "a" * MAX_POLICY_BYTES + '"}')
    with pytest.raises(ConfigurationError, match="larger than"):
        load_policy(path)
    path.write_bytes(b'{"id": "\xff"}')
    with pytest.raises(ConfigurationError, match="UTF-8"):
        load_policy(path)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        # nested far deeper than any parser's stack: a typed refusal, not a RecursionError
        ("deep.json", '{"rules": ' + "[" * 50_000 + "]" * 50_000 + "}"),
        ("deep.toml", "rules = " + "[" * 50_000 + "]" * 50_000),
        ("deep.yaml", "rules: " + "[" * 50_000 + "]" * 50_000),
        ("nested.json", '{"rules": ' + "[" * 40 + "]" * 40 + "}"),
        # aliases: ten references to ten references ... a billion values once copied
        (
            "laughs.yaml",
            "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
            + "".join(
                f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n"
                for p, c in zip("abcdefgh", "bcdefghi", strict=True)
            )
            + "rules: *i\n",
        ),
    ],
)
def test_documents_are_bounded_in_depth_and_values(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigurationError, match=r"nested deeper|more than 100000 values"):
        load_policy(path)


@pytest.mark.parametrize("key", [1, ["claims.x"], None])
def test_a_condition_key_that_is_not_a_string_fails_at_load_time(key: object) -> None:
    doc = {"rules": [{"id": "r", "when": [{"key": key, "values": ["a"]}]}]}
    with pytest.raises(ConfigurationError, match="key"):
        policy_from_dict(doc)


def test_documents_without_aliases_are_bounded_by_their_size_alone() -> None:
    """Only shared parts (YAML aliases) count against the value bound: a large plain
    document (up to the 1 MiB file bound) is read as before."""
    from zerotrust._config_sources import MAX_VALUES, check_document

    plain = {"rules": [{"id": f"r{n}"} for n in range(MAX_VALUES)]}  # 2 values a rule
    assert check_document(plain, "doc") is plain
    part = list(range(1000))
    shared = {"a": [part] * 200}  # the same list 200 times: 200,000 values once copied
    with pytest.raises(ConfigurationError, match="once its aliases are used"):
        check_document(shared, "doc")


@pytest.mark.parametrize(
    ("entry", "what"),
    [
        ({"from": [{"spiffe_ids": []}]}, "callers entry that names nothing"),
        ({"from": [{}]}, "callers entry that names nothing"),
        ({"to": [{"routes": [], "methods": []}]}, "operations entry that names nothing"),
        ({"from": []}, "from: an empty list would admit every caller"),
        ({"to": []}, "to: an empty list would admit every operation"),
        ({"from": [], "action": "CUSTOM", "hook": "h"}, "empty list would admit every caller"),
    ],
)
def test_an_allow_entry_emptied_of_every_value_fails_at_load_time(
    entry: dict[str, object], what: str
) -> None:
    """Istio refuses an empty source or operation: here an ALLOW entry whose only list was
    emptied would admit every caller or operation, as a ``null`` would."""
    doc = {"rules": [{"id": "r", **entry}]}
    with pytest.raises(ConfigurationError, match=f"rules\\[0\\].*{what}"):
        policy_from_dict(doc, hooks={"h": lambda principal, op: True})
    deny = {**entry, "action": "DENY"}
    deny.pop("hook", None)
    assert policy_from_dict({"rules": [{"id": "r", **deny}]}).rules
