"""Every setting, valid and invalid, from a mapping and from an environment variable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.config.helpers import (
    WEB,
    base,
    env_var,
    error_of,
    set_path,
    value_at,
    with_context,
)
from zerotrust.audit import MemorySink
from zerotrust.config import Settings

VALID = [
    # (setting, value in a file/dict, the same as an environment variable, expected, context)
    ("service", "orders-2", "orders-2", "orders-2", ""),
    ("tokens.audience", ["a", "b"], "a, b", ("a", "b"), ""),
    ("tokens.audience", "a", '["a"]', ("a",), ""),
    ("tokens.algorithms", ["ES256", "EdDSA"], "ES256,EdDSA", ("ES256", "EdDSA"), ""),
    ("tokens.leeway", 0, "0", 0.0, ""),
    ("tokens.leeway", 2.5, "2.5", 2.5, ""),
    ("tokens.token_type", "at+jwt", "at+jwt", "at+jwt", ""),
    ("tokens.max_lifetime", 600, "600", 600.0, ""),
    ("tokens.required_claims", ["jti", "iat"], "jti,iat", ("jti", "iat"), ""),
    ("tokens.max_token_size", 4096, "4096", 4096, ""),
    ("tokens.cache_size", 0, "0", 0, ""),
    ("tokens.max_delegation_depth", 1, "1", 1, ""),
    ("tokens.require", True, "yes", True, ""),
    ("tokens.require", False, "off", False, ""),
    ("tokens.remote.timeout", 1, "1", 1.0, "remote"),
    ("tokens.remote.min_ttl", 10, "10", 10.0, "remote"),
    ("tokens.remote.max_ttl", 600, "600", 600.0, "remote"),
    ("tokens.remote.default_ttl", 0, "0", 0.0, "remote"),
    ("tokens.remote.max_stale", 60, "60", 60.0, "remote"),
    ("tokens.remote.allow_http_loopback", True, "true", True, "remote"),
    ("mtls.bundle_format", "pem", "pem", "pem", "mtls"),
    ("mtls.require", True, "1", True, "mtls"),
    ("mtls.token_must_match_peer", True, "TRUE", True, "mtls"),
    ("mtls.check_interval", 5, "5", 5.0, "mtls"),
    ("proxies.addresses", ["10.0.0.1", "fd00::/8"], "10.0.0.1,fd00::/8", None, "proxies"),
    ("proxies.spiffe_ids", [WEB, "spiffe://example.org/ns/*/sa/x"], f"{WEB}", None, "proxies"),
    ("proxies.header", "client-cert", "client-cert", "client-cert", "proxies"),
    ("proxies.header_name", "x-client-cert", "x-client-cert", "x-client-cert", "proxies"),
    ("proxies.hop", "first", "first", "first", "proxies"),
    ("proxies.max_header_bytes", 4096, "4096", 4096, "proxies"),
    ("dpop.enabled", True, "on", True, ""),
    ("dpop.algorithms", ["ES256"], "ES256", ("ES256",), ""),
    ("dpop.max_age", 60, "60", 60.0, ""),
    ("dpop.leeway", 0, "0", 0.0, ""),
    (
        "dpop.origins",
        ["https://api.example", "https://api.example:8443"],
        "https://api.example,https://api.example:8443",
        ("https://api.example", "https://api.example:8443"),
        "",
    ),
    ("dpop.origins", "https://a.example", '["https://a.example"]', ("https://a.example",), ""),
    ("store.prefix", "app:", "app:", "app:", ""),
    ("store.socket_timeout", 2, "2", 2.0, ""),
    ("store.max_connections", 400, "400", 400, ""),
    ("store.replay_max_ttl", 600, "600", 600.0, ""),
    ("store.revocation", "open", "open", "open", ""),
    ("store.replay", "open", "open", "open", ""),
    ("store.rate_limit", "open", "open", "open", ""),
    ("store.check_revocation", False, "0", False, ""),
    ("audit.sinks", ["otel", "logging"], "otel,logging", ("otel", "logging"), ""),
    ("audit.on_error", "closed", "closed", "closed", ""),
    ("audit.logger", "app.audit", "app.audit", "app.audit", ""),
    ("audit.level", "DEBUG", "DEBUG", "DEBUG", ""),
    # the edges of the bounds, and a single string where a list is read
    ("tokens.algorithms", "ES256", '["ES256"]', ("ES256",), ""),
    ("tokens.max_delegation_depth", 0, "0", 0, ""),
    ("tokens.remote.min_ttl", 0.5, "0.5", 0.5, "remote"),
    ("tokens.remote.max_stale", 0, "0", 0.0, "remote"),
    ("dpop.max_age", 0.5, "0.5", 0.5, ""),
    ("dpop.max_age", 3600, "3600", 3600.0, ""),
    ("dpop.leeway", 300, "300", 300.0, ""),
    ("tokens.leeway", 600, "600", 600.0, ""),
    ("tokens.remote.timeout", 600, "600", 600.0, "remote"),
    ("store.max_connections", 1, "1", 1, ""),
    ("store.max_connections", 100_000, "100000", 100_000, ""),
]


@pytest.mark.parametrize(("dotted", "value", "text", "expected", "context"), VALID)
def test_valid_setting(
    files: Path,
    bundle_file: Path,
    dotted: str,
    value: Any,
    text: str,
    expected: Any,
    context: str,
) -> None:
    from_dict = Settings.from_dict(
        set_path(with_context(files, bundle_file, context), dotted, value)
    )
    from_env = Settings.from_dict(
        with_context(files, bundle_file, context), env={env_var(dotted): text}
    )
    if expected is not None:
        assert value_at(from_dict, dotted) == expected
        assert value_at(from_env, dotted) == expected
    assert from_dict.origins[dotted] == f"<dict>: {dotted}"
    assert from_env.origins[dotted] == env_var(dotted)
    assert from_dict.build_guard(audit=MemorySink()).service


INVALID_IN_DICT = [
    # (setting, value, message; the label is "<dict>: <setting>" unless given, context)
    ("service", 'a"b', "must be a non-empty name without quotes", None, ""),
    ("service", "a\\b", "must be a non-empty name without quotes", None, ""),
    ("service", 7, "must be a string", None, ""),
    # the realm of every challenge: what the Guard refuses is refused when the settings load
    ("service", "caf\u00e9", "without quotes or backslashes, in printable ASCII", None, ""),
    ("service", "orders\tapi", "without quotes or backslashes, in printable ASCII", None, ""),
    ("tokens", "x", "must be a table/mapping", None, ""),
    ("tokens.issuer", "", "must not be empty", None, ""),
    ("tokens.issuer", None, "required", None, ""),
    ("tokens.audience", [1], "must be a list of strings", None, ""),
    ("tokens.audience", ["a", "a"], "lists a value twice", None, ""),
    ("tokens.audience", ["a", ""], "has an empty item", None, ""),
    ("tokens.algorithms", ["none"], "'none'", "<dict>: tokens", ""),
    ("tokens.leeway", "60", "must be a number", None, ""),
    ("tokens.leeway", True, "must be a number", None, ""),
    ("tokens.leeway", -1, "must be at least 0", None, ""),
    ("tokens.leeway", float("nan"), "must be a finite number", None, ""),
    ("tokens.max_token_size", 1.5, "must be an integer", None, ""),
    ("tokens.cache_size", "10", "must be an integer", None, ""),
    ("tokens.required_claims", "jti", "must be a list of strings", None, ""),  # not a "many"
    ("tokens.max_token_size", 10, "max_token_size", "<dict>: tokens.max_token_size", ""),
    ("tokens.max_lifetime", 0, "must be greater than 0", None, ""),
    ("tokens.require", "yes", "must be true or false", None, ""),
    ("tokens.token_type", "jwt", "must be one of 'jwt-svid', 'at+jwt' (got 'jwt')", None, ""),
    ("tokens.trust_domain", "example.org", "trust_domain", "<dict>: tokens.trust_domain", ""),
    ("tokens.remote", 5, "must be a table/mapping", None, "remote"),
    ("tokens.remote.timeout", 601, "must be at most 600", None, "remote"),
    ("tokens.remote.min_ttl", 100000, "min_ttl", "<dict>: tokens.remote", "remote"),
    ("tokens.jwks_url", "http://issuer.example/jwks", "plain http is refused", None, "remote"),
    # plain http even to a loopback host only when tokens.remote.allow_http_loopback says so
    ("tokens.jwks_url", "http://127.0.0.1:8080/jwks", "needs allow_http_loopback", None, "remote"),
    ("mtls.bundle_format", "der", "must be one of", None, "mtls"),
    ("mtls.bundles", {}, "must not be empty", None, "mtls"),
    (
        "mtls.bundles",
        {"example.org": 5},
        "must be a file path",
        "<dict>: mtls.bundles['example.org']",
        "mtls",
    ),
    ("mtls.bundles", "x.pem", "must be a table/mapping", None, "mtls"),
    ("proxies.addresses", ["not-an-ip"], "not an IP address or CIDR", "<dict>: proxies", "proxies"),
    ("proxies.spiffe_ids", ["spiffe://example.org/a/**/b"], "'**'", "<dict>: proxies", "proxies"),
    ("proxies.hop", "first", "xfcc", "<dict>: proxies", "nginx"),
    ("dpop.algorithms", ["HS256"], "asymmetric", "<dict>: dpop", ""),
    ("dpop.max_age", 7200, "must be at most 3600", None, ""),
    ("dpop.leeway", 301, "must be at most 300", None, ""),
    ("tokens.leeway", 601, "must be at most 600", None, ""),
    ("dpop.origins", ["https://api.example/v1?x"], "not an http(s) base URL", "<dict>: dpop", ""),
    ("dpop.origins", ["api.example"], "not an http(s) base URL", "<dict>: dpop", ""),
    ("dpop.origins", [5], "must be a list of strings", None, ""),
    ("store.url", "http://cache:6379", "must be 'memory://', or a redis://", None, ""),
    ("store.url", "memory://x", "the in-memory store is 'memory://'", None, ""),
    ("store.revocation", "maybe", "must be one of 'closed', 'open'", None, ""),
    ("store.socket_timeout", 0, "must be greater than 0", None, ""),
    ("store.max_connections", 0, "at least 1", None, ""),
    ("store.max_connections", 100_001, "must be at most 100000", None, ""),
    ("store.replay_max_ttl", 0.5, "must be at least 1", None, ""),
    ("audit.sinks", ["kafka"], "'kafka' is not one of 'logging', 'otel'", None, ""),
    ("audit.sinks", [], "needs at least one sink", None, ""),
    ("audit.level", "LOUD", "must be one of", None, ""),
    ("audit.pseudonymize", ["email"], "is not one of", None, ""),
    ("policy", [], "must be a table/mapping", None, ""),
    ("policy.default", "maybe", "must be one of 'deny', 'allow'", None, ""),
    ("policy.rules", "x", "rules: must be a list", "<dict>: policy", "inline"),
    ("mtls.bundles", {1: "x.pem"}, "keys must be non-empty strings", None, "mtls"),
    ("mtls.bundles", {"": "x.pem"}, "keys must be non-empty strings", None, "mtls"),
    ("tokens.jwks_file", "", "must be a file path", None, ""),
    ("store.url", "redis://cache:99999/0", "is not a valid URL", None, ""),
    ("store.password", 5, "must be a non-empty string (value not shown)", None, ""),
    ("audit.pseudonym_key", 5, "must be hex or base64 text (value not shown)", None, ""),
    ("api_keys.hashes", {"ci": 5}, "must map key ids to SHA-256 hex digests", None, ""),
    ("api_keys.hashes", {1: "5e" * 32}, "must map key ids to SHA-256 hex digests", None, ""),
    ("api_keys.hashes", 5, "must map key ids to SHA-256 hex digests", None, ""),
    ("store.password", "", "must be a non-empty string (value not shown)", None, ""),
    ("tokens.spiffe_trust_domain", "Not A Domain", "trust domain", None, "spiffe"),
    # numbers too large for a float, and paths no file can have: refused, never untyped errors
    ("tokens.leeway", 10**400, "is out of range", None, ""),
    ("tokens.cache_size", 10**400, "is out of range", None, ""),
    ("policy.file", "a\x00b", "must be a file path", None, ""),
    ("policy.file", "\ud800.toml", "must be a file path", None, ""),
]


@pytest.mark.parametrize(("dotted", "value", "message", "label", "context"), INVALID_IN_DICT)
def test_invalid_setting(
    files: Path,
    bundle_file: Path,
    dotted: str,
    value: Any,
    message: str,
    label: str | None,
    context: str,
) -> None:
    doc = with_context(files, bundle_file, "proxies" if context == "nginx" else context)
    if context == "nginx":
        doc["proxies"]["header"] = "nginx"
    found = error_of(Settings.from_dict, set_path(doc, dotted, value))
    assert found.startswith(f"{label or f'<dict>: {dotted}'}: "), found
    assert message in found, found


INVALID_IN_ENV = [
    ("tokens.leeway", "sixty", "not a number"),
    ("tokens.leeway", "inf", "must be a finite number"),
    ("tokens.max_token_size", "4k", "not an integer"),
    ("tokens.require", "maybe", "not a boolean (use true or false)"),
    ("tokens.audience", '["a", 1]', "must be a list of strings"),
    ("tokens.audience", '["a"', "not valid JSON"),
    ("tokens.audience", "a,,b", "has an empty item"),
    ("tokens.issuer", "", "must not be empty"),
    # an empty list variable is an empty list: never "any audience" or "any algorithm"
    ("tokens.audience", "", "audience must be a non-empty string or list of them"),
    ("tokens.algorithms", "", "algorithms must not be empty"),
    ("dpop.algorithms", "", "DPoP proofs need asymmetric algorithms"),
    ("tokens.token_type", "jwt", "must be one of"),
    ("policy.rules", "[{", "not valid JSON"),
    ("mtls.bundles", "example.org", "'example.org' is not name=value"),
    ("mtls.bundles", "x" * 100, f"{'x' * 60!r} is not name=value"),  # shown cut short
    # a name given twice: refused as in a JSON object, never the last one silently
    ("mtls.bundles", "example.org=/a.pem, example.org=/b.pem", "'example.org': a name given twice"),
    ("mtls.bundles", '{"example.org": "/nowhere/bundle.pem"}', "cannot read '/nowhere/bundle.pem'"),
    ("store.url", "ftp://cache", "must be 'memory://', or a redis://"),
    ("api_keys.hashes", '{"ci": 5', "not valid JSON (at position"),
    ("api_keys.hashes", '["ci"]', "item 1 is not name=value"),
    ("mtls.bundles", "", "must not be empty"),
    ("api_keys.hashes", "{}", "must map key ids to SHA-256 hex digests"),
    # nested past any parser's stack, or past the bound: refused, never a RecursionError
    ("policy.rules", "[" * 50_000 + "]" * 50_000, "nested deeper than 32 levels"),
    ("policy.rules", "[" * 40 + "]" * 40, "nested deeper than 32 levels"),
    ("mtls.bundles", '{"a":' * 50_000 + "1" + "}" * 50_000, "nested deeper than 32 levels"),
    ("policy.rules", "[" + "9" * 5000 + "]", "a number too long"),
    ("policy.file", "a\x00b", "must be a file path"),
]


@pytest.mark.parametrize(("dotted", "text", "message"), INVALID_IN_ENV)
def test_invalid_variable(files: Path, dotted: str, text: str, message: str) -> None:
    found = error_of(Settings.from_dict, base(files), env={env_var(dotted): text})
    assert found.startswith(f"{env_var(dotted)}"), found
    assert message in found, found


def test_dpop_origins_reach_the_guard(files: Path) -> None:
    settings = Settings.from_dict(
        set_path(base(files), "dpop.origins", ["HTTPS://API.example:443"])
    )
    dpop = settings.build_guard(audit=MemorySink()).authenticator.dpop
    assert dpop is not None and dpop.origins == ("https://api.example",)


def test_json_in_a_variable_may_nest_32_levels_and_no_more(files: Path) -> None:
    def error(depth: int) -> str:
        nested = "[" * depth + "]" * depth
        env = {"ZEROTRUST_POLICY__FILE": "", "ZEROTRUST_POLICY__RATE_LIMITS": nested}
        return error_of(Settings.from_dict, base(files), env=env)

    # 32 levels are read (the policy then refuses the list it holds), 33 are not
    assert error(32) == "<dict>: policy: rate_limits[0]: must be a table/object"
    assert error(33) == "ZEROTRUST_POLICY__RATE_LIMITS: is nested deeper than 32 levels"


def test_a_section_or_setting_set_to_null_is_not_set(files: Path) -> None:
    doc = base(files) | {"mtls": None, "proxies": None, "api_keys": None}
    doc["tokens"] |= {"leeway": None, "required_claims": None, "max_lifetime": None}
    settings = Settings.from_dict(doc)
    assert (settings.mtls, settings.proxies, settings.api_keys) == (None, None, None)
    assert settings.tokens is not None
    assert (settings.tokens.leeway, settings.tokens.required_claims) == (60.0, ())


def test_many_values_without_aliases_are_read(files: Path) -> None:
    """The bound on values is for documents whose aliases repeat parts of them; a plain
    document is bounded by its size."""
    many = "[" + ",".join(["[" + "0," * 99 + "0]"] * 2_000) + "]"  # 202,001 values
    env = {"ZEROTRUST_POLICY__FILE": "", "ZEROTRUST_POLICY__RATE_LIMITS": many}
    found = error_of(Settings.from_dict, base(files), env=env)
    assert found == "<dict>: policy: rate_limits[0]: must be a table/object"


def test_a_section_opened_by_variables_is_named_by_the_first_of_them(files: Path) -> None:
    doc = base(files, tokens=None)
    env = {"ZEROTRUST_TOKENS__LEEWAY": "5", "ZEROTRUST_TOKENS__AUDIENCE": "a"}
    assert error_of(Settings.from_dict, doc, env=env) == (
        "ZEROTRUST_TOKENS__ALGORITHMS: required (ZEROTRUST_TOKENS__AUDIENCE configures tokens)"
    )


@pytest.mark.parametrize(
    "env",
    [
        {"ZEROTRUST_STORE__CHECK_REVOCATION": "true", "ZEROTRUST_store__check_revocation": "false"},
        {
            "ZEROTRUST_STORE__CHECK_REVOCATION": "false",
            "ZEROTRUST_Store__Check_Revocation": "false",
        },
    ],
)
def test_two_variables_for_one_setting_are_refused(files: Path, env: dict[str, str]) -> None:
    """Variable names are read case-insensitively; two that name one setting would leave it
    to the order of the environment which one wins, so both are named and refused."""
    first, second = sorted(env)
    assert error_of(Settings.from_dict, base(files), env=env) == (
        f"{second}: sets store.check_revocation, as {first} does: set it with one variable"
    )
    # one variable per setting, in any case: fine
    only = {second: env[second]}
    assert Settings.from_dict(base(files), env=only).store.check_revocation is False
    # a secret and its _file form are different settings, refused as such elsewhere
    secret_env = {"ZEROTRUST_STORE__PASSWORD": "x", "ZEROTRUST_STORE__PASSWORD_FILE": "/nope"}
    assert "sets store.password" not in error_of(Settings.from_dict, base(files), env=secret_env)


def test_values_from_variables_are_trimmed_and_kept_read_only(
    files: Path, bundle_file: Path
) -> None:
    env = {
        "ZEROTRUST_MTLS__BUNDLES": f" example.org = {bundle_file} ",
        "ZEROTRUST_POLICY__FILE": "",
        "ZEROTRUST_POLICY__RULES": '[{"id": "read", "scopes": ["orders:read"]}]',
    }
    settings = Settings.from_dict(base(files), env=env)
    assert settings.mtls is not None
    assert dict(settings.mtls.bundles) == {"example.org": str(bundle_file)}
    rules = settings.policy.rules
    assert isinstance(rules, tuple) and rules[0]["id"] == "read"
    with pytest.raises(TypeError):
        rules[0]["action"] = "DENY"
