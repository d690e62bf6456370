"""Settings: files, environment variables and their precedence, names that are not settings,
files that cannot be read, and the settings object itself. (More in tests/config/.)"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.config.helpers import (
    AUD,
    ISS,
    POLICY,
    TOML,
    WEB,
    base,
    error_of,
    get,
    make_bundle_file,
    make_files,
    make_issuer,
    value_at,
    with_context,
    write,
)
from zerotrust.audit import MemorySink
from zerotrust.config import Settings
from zerotrust.dev import DevCA
from zerotrust.errors import MissingDependencyError
from zerotrust.stores import MemoryStore
from zerotrust.tokens import TokenIssuer


@pytest.fixture
def issuer() -> TokenIssuer:
    return make_issuer()


@pytest.fixture
def files(tmp_path: Path, issuer: TokenIssuer) -> Path:
    return make_files(tmp_path, issuer)


@pytest.fixture
def bundle_file(files: Path, ca: DevCA) -> Path:
    return make_bundle_file(files, ca)


# --- files and environment -------------------------------------------------------------------


def test_toml_file_builds_a_working_guard(files: Path, issuer: TokenIssuer) -> None:
    settings = Settings.load(write(files / "zerotrust.toml", TOML), env={})
    assert settings.service == "orders" and settings.sources == (str(files / "zerotrust.toml"),)
    assert settings.tokens is not None and settings.tokens.leeway == 30.0
    assert settings.tokens.jwks_file == str(files / "jwks.json")  # relative to the file
    sink = MemorySink()
    guard = settings.build_guard(audit=sink)
    assert guard.service == "orders" and isinstance(guard.store, MemoryStore)
    token = issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"])
    outcome = guard.evaluate(get(token))
    assert outcome.allowed and outcome.principal is not None
    assert str(outcome.principal.spiffe_id) == WEB
    assert outcome.decision is not None and outcome.decision.policy_id == "orders"
    assert guard.evaluate(get(issuer.issue(subject=WEB, audience=AUD))).status == 403
    assert guard.evaluate(get()).status == 401
    assert guard.evaluate(get(issuer.issue(subject=WEB, audience="billing"))).status == 401
    assert sink.last is not None and sink.last.service == "orders"
    assert asyncio.run(guard.aevaluate(get(token))).allowed


def test_environment_alone(files: Path, issuer: TokenIssuer) -> None:
    env = {
        "ZEROTRUST_SERVICE": "billing",
        "ZEROTRUST_TOKENS__ISSUER": ISS,
        "ZEROTRUST_TOKENS__AUDIENCE": f"{AUD}, billing-api",
        "ZEROTRUST_TOKENS__ALGORITHMS": "ES256",
        "ZEROTRUST_TOKENS__JWKS_FILE": str(files / "jwks.json"),
        "ZEROTRUST_POLICY__FILE": str(files / "policy.toml"),
        "HOME": "/elsewhere",  # other variables are none of our business
    }
    settings = Settings.load(env=env)
    assert settings.sources == ("environment",) and settings.service == "billing"
    assert settings.tokens is not None and settings.tokens.audience == (AUD, "billing-api")
    guard = settings.build_guard(audit=MemorySink())
    for audience in (AUD, "billing-api"):
        token = issuer.issue(subject=WEB, audience=audience, scopes=["orders:read"])
        assert guard.evaluate(get(token)).allowed


def test_environment_overrides_the_file(files: Path) -> None:
    path = write(files / "zerotrust.toml", TOML)
    env = {
        "ZEROTRUST_SERVICE": "orders-canary",
        "ZEROTRUST_TOKENS__LEEWAY": "5",
        "ZEROTRUST_AUDIT__SINKS": "logging,otel",
        "ZEROTRUST_TOKENS__JWKS_URL": "https://issuer.example/jwks.json",
    }
    settings = Settings.load(path, env=env)
    assert settings.sources == (str(path), "environment")
    assert settings.service == "orders-canary"
    tokens = settings.tokens
    assert tokens is not None and tokens.leeway == 5.0 and tokens.issuer == ISS
    # one key source replaces the other: the file's jwks_file is dropped, not a conflict
    assert tokens.jwks_url == "https://issuer.example/jwks.json" and tokens.jwks_file is None
    assert settings.audit.sinks == ("logging", "otel") and settings.audit.on_error == "closed"
    assert settings.origins["tokens.leeway"] == "ZEROTRUST_TOKENS__LEEWAY"
    assert settings.origins["tokens.issuer"] == f"{path}: tokens.issuer"


def test_variables_without_the_prefix_are_not_settings(files: Path) -> None:
    env = {"PATH": "/usr/bin", "ZEROTRUSTED_SERVICE": "x", "MY_ZEROTRUST_SERVICE": "x"}
    settings = Settings.from_dict(base(files), env=env)
    assert settings.service == "orders" and settings.sources == ("<dict>",)
    assert Settings.load(write(files / "zerotrust.toml", TOML), env=env).sources == (
        str(files / "zerotrust.toml"),
    )


def test_load_reads_the_process_environment_and_from_dict_does_not(
    files: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZEROTRUST_SERVICE", "from-the-environment")
    monkeypatch.delenv("ZEROTRUST_CONFIG", raising=False)
    path = write(files / "zerotrust.toml", TOML)
    assert Settings.load(path).service == "from-the-environment"
    assert Settings.load(path, env={}).service == "orders"
    assert Settings.from_dict(base(files)).service == "orders"


def test_the_gunicorn_adapters_variables_are_not_settings(files: Path, bundle_file: Path) -> None:
    """A gunicorn deployment names its SVID files for ``ZeroTrustTLS.from_env`` and loads
    its settings in the same process: those variables are read there, not refused here."""
    from zerotrust.adapters.gunicorn import ZeroTrustTLS

    svid = {
        "ZEROTRUST_SVID_CERT": str(files / "svid.pem"),
        "ZEROTRUST_SVID_KEY": str(files / "svid.key"),
        "ZEROTRUST_BUNDLE": str(bundle_file),
        "ZEROTRUST_TRUST_DOMAIN": "example.org",
    }
    missing = error_of(ZeroTrustTLS.from_env, {})
    assert all(name in missing for name in svid), missing  # the names from_env reads
    settings = Settings.load(write(files / "zerotrust.toml", TOML), env=svid)
    assert settings.service == "orders" and settings.sources == (str(files / "zerotrust.toml"),)
    assert Settings.from_dict(base(files), env=svid).service == "orders"
    found = error_of(Settings.from_dict, base(files), env={"ZEROTRUST_SVID_CERTS": "x"})
    assert found.startswith("ZEROTRUST_SVID_CERTS: unknown setting"), found


def test_an_empty_variable_unsets_an_optional_setting(files: Path) -> None:
    doc = base(files, tokens={"max_lifetime": 600, "required_claims": ["jti"]})
    settings = Settings.from_dict(
        doc,
        env={"ZEROTRUST_TOKENS__MAX_LIFETIME": "", "ZEROTRUST_TOKENS__REQUIRED_CLAIMS": ""},
    )
    assert settings.tokens is not None
    assert settings.tokens.max_lifetime is None and settings.tokens.required_claims == ()
    assert Settings.from_dict(doc).tokens.max_lifetime == 600.0  # type: ignore[union-attr]


def test_zerotrust_config_names_the_file(files: Path) -> None:
    path = write(files / "zerotrust.toml", TOML)
    env = {"ZEROTRUST_CONFIG": str(path)}
    assert Settings.load(env=env).sources == (str(path),)
    # ZEROTRUST_CONFIG wins over the path the code passes
    assert Settings.load(files / "not-there.toml", env=env).service == "orders"
    message = error_of(Settings.load, env={"ZEROTRUST_CONFIG": str(files / "nope.toml")})
    assert message.startswith("ZEROTRUST_CONFIG: cannot read")
    assert "nope.toml" in message and "No such file" in message


def test_yaml_and_json_files(files: Path) -> None:
    yaml_text = """
zerotrust:
  service: orders
  tokens:
    issuer: https://issuer.example
    audience: orders-api          # one string is a one-item list
    algorithms: [ES256]
    jwks_file: jwks.json
  policy:
    rules:
      - id: read-orders
        scopes: [orders:read]
"""
    settings = Settings.load(write(files / "zerotrust.yaml", yaml_text), env={})
    assert settings.tokens is not None and settings.tokens.audience == (AUD,)
    assert settings.policy.rules[0]["id"] == "read-orders"
    document = {"zerotrust": base(files)}
    from_json = Settings.load(write(files / "zerotrust.json", json.dumps(document)), env={})
    assert from_json.tokens == Settings.from_dict(base(files)).tokens


def test_yaml_needs_pyyaml(files: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(files / "zerotrust.yml", "zerotrust: {}\n")
    monkeypatch.setitem(sys.modules, "yaml", None)  # as if PyYAML were not installed
    with pytest.raises(MissingDependencyError) as info:
        Settings.load(path, env={})
    assert info.value.extra == "yaml" and info.value.package == "pyyaml"


def test_inline_policy_and_hooks(files: Path, issuer: TokenIssuer) -> None:
    rules = [
        {"id": "opa", "action": "CUSTOM", "hook": "opa"},
        {"id": "read", "scopes": ["orders:read"]},
    ]
    settings = Settings.from_dict(base(files, policy=None) | {"policy": {"rules": rules}})
    assert "CUSTOM hook 'opa' was not passed to build_guard" in error_of(settings.build_guard)
    assert error_of(settings.build_guard).endswith("(given: none)")
    given = error_of(settings.build_guard, hooks={"b": print, "a": print})
    assert given.endswith("(given: a, b)")
    asked: list[str] = []

    def opa(principal: Any, operation: Any) -> bool:
        asked.append(principal.subject)
        return principal.subject != "intruder"

    guard = settings.build_guard(hooks={"opa": opa}, audit=MemorySink())
    token = issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"])
    assert guard.evaluate(get(token)).allowed and asked == [WEB]
    refused = guard.evaluate(get(issuer.issue(subject="intruder", audience=AUD)))
    assert refused.status == 403 and asked[-1] == "intruder"


# --- unknown names ---------------------------------------------------------------------------


def test_unknown_key_in_a_file_is_named_with_a_suggestion(files: Path) -> None:
    path = write(files / "zerotrust.toml", TOML.replace("audience =", "audiance ="))
    message = error_of(Settings.load, path, env={})
    assert message == f"{path}: tokens.audiance: unknown setting (did you mean 'audience'?)"
    misplaced = write(files / "b.toml", TOML.replace('service = "orders"', 'issuer = "x"'))
    assert error_of(Settings.load, misplaced, env={}).endswith(
        "issuer: unknown setting (did you mean 'tokens.issuer'?)"
    )
    typo = write(files / "c.toml", TOML + "\n[zerotrst.tokens]\nleeway = 1\n")
    assert error_of(Settings.load, typo, env={}) == (
        f"{typo}: zerotrst: unknown table (did you mean 'zerotrust'?)"
    )
    missing = write(files / "d.toml", "[other]\nx = 1\n")
    assert "has no 'zerotrust' table" in error_of(Settings.load, missing, env={})
    nothing = error_of(Settings.from_dict, {"tokens": {"issuer": ISS, "jwks_fil": "x"}})
    assert nothing == "<dict>: tokens.jwks_fil: unknown setting (did you mean 'jwks_file'?)"


def test_only_secrets_have_a_file_form(files: Path) -> None:
    """``<setting>_file`` names a file holding a secret; no other setting is read from a file
    that way (``tokens.issuer_file`` would otherwise set the issuer to a path)."""
    (files / "issuer").write_text(ISS)
    doc = base(files)
    doc["tokens"]["issuer_file"] = str(files / "issuer")
    assert error_of(Settings.from_dict, doc) == (
        "<dict>: tokens.issuer_file: unknown setting (did you mean 'issuer'?)"
    )
    found = error_of(
        Settings.from_dict, base(files), env={"ZEROTRUST_SERVICE_FILE": str(files / "issuer")}
    )
    assert found.startswith("ZEROTRUST_SERVICE_FILE: unknown setting"), found
    doc = base(files)
    doc["tokens"]["nothing_file"] = "x"  # the file form of no setting at all
    assert error_of(Settings.from_dict, doc) == "<dict>: tokens.nothing_file: unknown setting"


def test_a_key_that_is_not_a_string_is_unknown(files: Path) -> None:
    doc = base(files)
    doc["tokens"][("issuer",)] = ISS  # a YAML complex key
    assert error_of(Settings.from_dict, doc) == (
        "<dict>: tokens.('issuer',): unknown setting (did you mean 'issuer'?)"
    )


@pytest.mark.parametrize(
    ("variable", "message"),
    [
        (
            "ZEROTRUST_TOKENS__AUDIANCE",
            "unknown setting (did you mean ZEROTRUST_TOKENS__AUDIENCE?)",
        ),
        ("ZEROTRUST_TOKEN__ISSUER", "unknown setting (did you mean ZEROTRUST_TOKENS__ISSUER?)"),
        ("ZEROTRUST_CONFIGG", "unknown setting (did you mean ZEROTRUST_CONFIG?)"),
        ("ZEROTRUST_NOTHING_LIKE_IT", "unknown setting"),
        ("ZEROTRUST_TOKENS", "tokens is a table: set ZEROTRUST_TOKENS__<SETTING>"),
        ("ZEROTRUST_SERVICE__NAME", "unknown setting (did you mean ZEROTRUST_SERVICE?)"),
        ("ZEROTRUST_", "unknown setting (did you mean ZEROTRUST_CONFIG?)"),
        ("ZEROTRUST_TOKENS____ISSUER", "unknown setting (did you mean ZEROTRUST_TOKENS__ISSUER?)"),
        (  # a setting has no settings under it
            "ZEROTRUST_TOKENS__ISSUER__AUDIENCE",
            "unknown setting (did you mean ZEROTRUST_TOKENS__AUDIENCE?)",
        ),
        (
            "ZEROTRUST_TOKENS__NOTHING_FILE",
            "unknown setting (did you mean ZEROTRUST_TOKENS__JWKS_FILE?)",
        ),
    ],
)
def test_unknown_variable_is_named(files: Path, variable: str, message: str) -> None:
    found = error_of(Settings.from_dict, base(files), env={variable: "x"})
    assert found == f"{variable}: {message}"


# --- files that cannot be read ---------------------------------------------------------------


def test_missing_and_unreadable_files_are_named(files: Path, bundle_file: Path) -> None:
    message = error_of(Settings.load, files / "missing.toml", env={})
    assert message == (
        f"settings file: cannot read '{files / 'missing.toml'}' (No such file or directory)"
    )
    cases = {
        "tokens.jwks_file": {"tokens": {"jwks_file": str(files / "nope.json")}},
        "policy.file": {"policy": {"file": str(files / "nope.toml")}},
        "mtls.bundles['example.org']": {"mtls": {"bundles": {"example.org": str(files)}}},
        "tokens.remote.ca_file": {
            "tokens": {"jwks_file": None, "jwks_url": ISS, "remote": {"ca_file": "ca.pem"}}
        },
        "audit.pseudonym_key_file": {
            "audit": {"pseudonymize": ["subject"], "pseudonym_key_file": str(files / "k")}
        },
    }
    for dotted, change in cases.items():
        doc = base(files)
        for section, values in change.items():
            doc.setdefault(section, {}).update(values)
        doc["tokens"] = {k: v for k, v in doc["tokens"].items() if v is not None}
        found = error_of(Settings.from_dict, doc)
        assert found.startswith(f"<dict>: {dotted}: cannot read '"), found
        assert "(No such file or directory)" in found or "(Is a directory)" in found, found


def test_files_that_do_not_parse_are_named(files: Path) -> None:
    bad_toml = write(files / "zerotrust.toml", "[zerotrust\n")
    assert "is not valid TOML (" in error_of(Settings.load, bad_toml, env={})
    bad_json = write(files / "zerotrust.json", "{")
    assert "is not valid JSON (line 1, column 2)" in error_of(Settings.load, bad_json, env={})
    other = write(files / "zerotrust.ini", "[zerotrust]\n")
    assert "unknown format (use .toml, .yaml, .yml or .json)" in error_of(
        Settings.load, other, env={}
    )
    not_text = files / "zerotrust.toml"
    not_text.write_bytes(b"\xff\xfe[zerotrust]")
    assert "is not UTF-8 text" in error_of(Settings.load, not_text, env={})
    (files / "jwks.json").write_text('{"keys": []}')
    assert error_of(Settings.from_dict, base(files)).startswith("<dict>: tokens.jwks_file: ")
    write(files / "bundle.pem", "not a certificate")
    doc = base(files, mtls={"bundles": {"example.org": str(files / "bundle.pem")}})
    assert error_of(Settings.from_dict, doc).startswith("<dict>: mtls.bundles: ")
    write(files / "policy.toml", POLICY.replace("[[rules.to]]", "[[rules.too]]"))
    assert error_of(Settings.from_dict, base(files)) == (
        f"{files / 'policy.toml'}: rules[0].too: unknown key"
    )
    inline = base(files, policy=None) | {"policy": {"rules": [{"id": "x", "form": []}]}}
    assert error_of(Settings.from_dict, inline) == "<dict>: policy: rules[0].form: unknown key"


def test_a_settings_or_policy_file_of_the_limit_is_read_and_one_byte_more_is_not(
    files: Path,
) -> None:
    limit = 1 << 20
    policy = files / "policy.toml"
    padded = POLICY + "#" * (limit - len(POLICY.encode()) - 1) + "\n"
    policy.write_text(padded)
    assert policy.stat().st_size == limit
    settings = Settings.from_dict(base(files))
    assert settings.policy.document["id"] == "orders"
    policy.write_text(padded + "\n")
    assert error_of(Settings.from_dict, base(files)) == (
        f"<dict>: policy.file: {str(policy)!r} is larger than {limit} bytes"
    )
    policy.write_text(POLICY)
    settings_file = write(files / "zerotrust.toml", TOML + "#" * (limit - len(TOML) - 1) + "\n")
    assert Settings.load(settings_file, env={}).service == "orders"
    settings_file.write_text(settings_file.read_text() + "\n")
    assert "is larger than 1048576 bytes" in error_of(Settings.load, settings_file, env={})


def test_the_policy_document_read_is_read_only(files: Path) -> None:
    settings = Settings.from_dict(base(files))
    document = settings.policy.document
    with pytest.raises(TypeError):
        document["default"] = "allow"  # type: ignore[index]
    rules = document["rules"]
    assert isinstance(rules, tuple)
    with pytest.raises(TypeError):
        rules[0]["action"] = "allow"


# --- the settings object ---------------------------------------------------------------------


def test_settings_are_immutable_and_revalidated(files: Path) -> None:
    settings = Settings.from_dict(base(files))
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.service = "x"  # type: ignore[misc]
    assert settings.tokens is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.tokens.issuer = "x"  # type: ignore[misc]
    assert "no way to authenticate" in error_of(dataclasses.replace, settings, tokens=None)
    assert dataclasses.replace(settings, service="other").service == "other"


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ("tokens", "leeway"),
        ("tokens.remote", "allow_http_loopback"),
        ("mtls", "require"),
        ("proxies", "hop"),
        ("api_keys", "header"),
        ("dpop", "enabled"),
        ("policy", "default"),
        ("store", "revocation"),
        ("audit", "on_error"),
    ],
)
def test_every_section_is_immutable(
    files: Path, bundle_file: Path, section: str, field: str
) -> None:
    """Checked once, changed never: a section changed in place would skip every check."""
    doc = with_context(files, bundle_file, "proxies")
    doc["api_keys"] = {"hashes": {"ci": "5e" * 32}}
    settings = Settings.from_dict(doc, env={})
    part = value_at(settings, section)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(part, field, getattr(part, field))


def test_token_bounds_default_to_the_library_defaults(files: Path) -> None:
    """Four delegation hops and a cache of 10,000 verified tokens, as Authenticator and
    TokenVerifier have them."""
    settings = Settings.from_dict(base(files))
    assert settings.tokens is not None
    assert (settings.tokens.max_delegation_depth, settings.tokens.cache_size) == (4, 10_000)
    guard = settings.build_guard(audit=MemorySink())
    assert guard.authenticator.max_delegation_depth == 4


def test_to_dict_round_trips(files: Path, bundle_file: Path) -> None:
    doc = with_context(files, bundle_file, "proxies")
    doc["policy"] = {"rules": [{"id": "a", "scopes": ["x"]}], "default": "deny"}
    settings = Settings.from_dict(doc)
    plain = settings.to_dict()
    assert plain["policy"]["rules"] == [{"id": "a", "scopes": ["x"]}]
    assert plain["mtls"]["bundles"] == {"example.org": str(bundle_file)}
    assert Settings.from_dict(json.loads(json.dumps(plain))) == settings


def test_documents_that_are_not_tables(files: Path) -> None:
    assert (
        error_of(Settings.from_dict, []) == "<dict>: the zerotrust settings must be a table/mapping"
    )
    listed = write(files / "zerotrust.yaml", "- zerotrust\n")
    assert error_of(Settings.load, listed, env={}) == f"{listed}: must hold a 'zerotrust' table"
    scalar = write(files / "zerotrust.toml", "zerotrust = 5\n")
    assert "must be a table/mapping" in error_of(Settings.load, scalar, env={})
