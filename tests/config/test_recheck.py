"""Settings built or replaced by code are checked like read ones; paths are fixed at load time;
a setting's error names the setting and where it came from."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.config.helpers import AUD, ISS, base, get, write
from zerotrust import OTelSink
from zerotrust.authn.proxy import TrustedProxies
from zerotrust.config import (
    AuditSettings,
    DPoPSettings,
    MtlsSettings,
    PolicySettings,
    RemoteKeySettings,
    Secret,
    Settings,
    StoreSettings,
    TokenSettings,
)
from zerotrust.dev import DevCA
from zerotrust.errors import ConfigurationError
from zerotrust.tokens import PrivateJWK, TokenIssuer


@pytest.mark.parametrize(
    ("section", "replacement", "message"),
    [
        (
            "audit",
            AuditSettings(sinks=("logging", "otel"), include_personal_data="false"),  # type: ignore[arg-type]
            "audit.include_personal_data: must be true or false",
        ),
        ("store", StoreSettings(revocation="opn"), "store.revocation: must be one of"),  # type: ignore[arg-type]
        ("store", StoreSettings(check_revocation="false"), "must be true or false"),  # type: ignore[arg-type]
        ("store", StoreSettings(socket_timeout=-1), "must be greater than 0"),
        # checked by nothing else: a memory store has no connections, a level is looked up
        ("store", StoreSettings(max_connections=0), r"store\.max_connections: must be at least 1"),
        ("audit", AuditSettings(level="LOUD"), r"audit\.level: must be one of"),  # type: ignore[arg-type]
        ("dpop", DPoPSettings(max_age=7200), r"dpop\.max_age: must be at most 3600"),
        ("audit", {"sinks": ("logging",)}, "audit: must be a AuditSettings"),
        # lists and strings too: "logging" is no list of sinks (each letter would be one), and
        # an unknown sink would be built as an OTel sink, the audit log left unwritten
        ("audit", AuditSettings(sinks="logging"), r"audit\.sinks: must be a list of strings"),  # type: ignore[arg-type]
        ("audit", AuditSettings(sinks=("logging", "syslog")), r"audit\.sinks: 'syslog' is not"),  # type: ignore[arg-type]
        ("audit", AuditSettings(logger=""), r"audit\.logger: must not be empty"),
        ("store", StoreSettings(url=5), r"store\.url: must be a string"),  # type: ignore[arg-type]
    ],
)
def test_sections_replaced_by_code_are_checked_again(
    files: Path, section: str, replacement: Any, message: str
) -> None:
    settings = Settings.from_dict(base(files))
    with pytest.raises(ConfigurationError, match=message):
        dataclasses.replace(settings, **{section: replacement})


REDIS = "redis://cache:6379/0"


def test_secrets_of_sections_built_by_code_are_secrets(files: Path) -> None:
    """A plain value where a secret belongs was shown by repr and to_dict(), and failed with
    AttributeError where it was used (``.reveal()``)."""
    settings = Settings.from_dict(base(files))
    for section, replacement, where in (
        ("store", StoreSettings(url=REDIS, password="hunter2"), "store.password"),  # type: ignore[arg-type]
        ("audit", AuditSettings(pseudonym_key=b"k" * 32), "audit.pseudonym_key"),  # type: ignore[arg-type]
    ):
        with pytest.raises(ConfigurationError, match=f"{where}: must be a zerotrust.config.Secret"):
            dataclasses.replace(settings, **{section: replacement})
    tokens = settings.tokens
    assert tokens is not None
    with pytest.raises(ConfigurationError, match=r"tokens\.hmac_secret: must be a .*Secret"):
        dataclasses.replace(
            settings, tokens=dataclasses.replace(tokens, jwks_file=None, hmac_secret="x" * 40)
        )
    # a Secret's content is checked as a read one is
    with pytest.raises(ConfigurationError, match=r"store\.password: must be a non-empty string"):
        dataclasses.replace(settings, store=StoreSettings(url=REDIS, password=Secret("")))
    stored = dataclasses.replace(
        settings, store=StoreSettings(url=REDIS, password=Secret("hunter2"))
    )
    assert "hunter2" not in repr(stored) and "hunter2" not in str(stored.to_dict())


def test_url_query_values_are_hidden_by_repr_as_by_to_dict(files: Path) -> None:
    doc = base(files)
    doc["tokens"].pop("jwks_file")
    doc["tokens"]["jwks_url"] = "https://issuer.example/jwks?api_key=SECRETQ"
    settings = Settings.from_dict(doc)
    for text in (repr(settings), repr(settings.tokens), str(settings.to_dict())):
        assert "SECRETQ" not in text
        assert "jwks?api_key=<redacted>" in text


def test_nested_sections_are_checked_again(files: Path) -> None:
    doc = base(files, tokens={"jwks_file": None})
    doc["tokens"].pop("jwks_file")
    doc["tokens"]["jwks_url"] = "https://issuer.example/jwks"
    settings = Settings.from_dict(doc)
    tokens = settings.tokens
    assert tokens is not None
    remote = RemoteKeySettings(allow_http_loopback="false")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"tokens\.remote\.allow_http_loopback"):
        dataclasses.replace(settings, tokens=dataclasses.replace(tokens, remote=remote))


def test_booleans_of_sinks_and_proxies_are_booleans() -> None:
    with pytest.raises(ConfigurationError, match="include_personal_data"):
        OTelSink(include_personal_data="false")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="allow_unescaped_pem"):
        TrustedProxies(["127.0.0.1"], header="nginx", allow_unescaped_pem="false")  # type: ignore[arg-type]
    assert repr(OTelSink(include_personal_data=False)) == "OTelSink()"


def test_relative_paths_are_fixed_when_the_settings_are_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = TokenIssuer(PrivateJWK.generate("ES256", kid="good"), issuer=ISS)
    evil = TokenIssuer(PrivateJWK.generate("ES256", kid="evil"), issuer=ISS)
    for name, issuer in (("d1", good), ("d2", evil)):
        (tmp_path / name).mkdir()
        write(tmp_path / name / "jwks.json", json.dumps(issuer.jwks()))
    doc = {
        "tokens": {"issuer": ISS, "audience": [AUD], "algorithms": ["ES256"]},
        "policy": {"rules": [{"id": "any"}]},
    }
    monkeypatch.chdir(tmp_path / "d1")
    settings = Settings.from_dict(doc, env={"ZEROTRUST_TOKENS__JWKS_FILE": "jwks.json"})
    assert settings.tokens is not None
    assert settings.tokens.jwks_file == os.path.join(tmp_path, "d1", "jwks.json")
    monkeypatch.chdir(tmp_path / "d2")  # the file checked is the file used
    guard = settings.build_guard()
    token = evil.issue(subject="x", audience=AUD)
    assert not guard.evaluate(get(token, route="/x")).allowed
    assert guard.evaluate(get(good.issue(subject="x", audience=AUD), route="/x")).allowed


def test_relative_paths_of_sections_built_by_code_are_fixed_when_the_settings_are_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ca: DevCA
) -> None:
    """A section built by code is checked when a Settings is made with it: its relative paths
    are made absolute then, as a file's or a variable's are. They were kept relative, so the
    Guard built after a change of working directory read other key and bundle files than the
    ones checked, and trusted keys nobody had checked."""
    good = TokenIssuer(PrivateJWK.generate("ES256", kid="good"), issuer=ISS)
    evil = TokenIssuer(PrivateJWK.generate("ES256", kid="evil"), issuer=ISS)
    for name, issuer in (("d1", good), ("d2", evil)):
        (tmp_path / name).mkdir()
        write(tmp_path / name / "jwks.json", json.dumps(issuer.jwks()))
        (tmp_path / name / "bundle.pem").write_bytes(ca.bundle.to_pem())
    monkeypatch.chdir(tmp_path / "d1")
    tokens = TokenSettings(
        issuer=ISS, audience=(AUD,), algorithms=("ES256",), jwks_file="jwks.json"
    )
    mtls = MtlsSettings(bundles={"example.org": "bundle.pem"})
    settings = Settings(tokens=tokens, mtls=mtls, policy=PolicySettings(rules=[{"id": "any"}]))
    assert settings.tokens is not None and settings.mtls is not None
    assert settings.tokens.jwks_file == os.path.join(tmp_path, "d1", "jwks.json")
    assert dict(settings.mtls.bundles) == {
        "example.org": os.path.join(tmp_path, "d1", "bundle.pem")
    }
    monkeypatch.chdir(tmp_path / "d2")  # the file checked is the file used
    guard = settings.build_guard()
    assert not guard.evaluate(get(evil.issue(subject="x", audience=AUD), route="/x")).allowed
    assert guard.evaluate(get(good.issue(subject="x", audience=AUD), route="/x")).allowed
    replaced = dataclasses.replace(settings, service="other")  # checked again: as it was
    assert replaced.tokens == settings.tokens


def test_an_error_inside_a_file_section_names_the_file(tmp_path: Path, files: Path) -> None:
    # the environment completing a section opened by the file does not take its name
    settings_file = write(
        tmp_path / "s.toml",
        f"""
[zerotrust.tokens]
issuer = "{ISS}"
audience = ["{AUD}"]
algorithms = ["ES256"]
token_type = "jwt-svid"
jwks_file = "{files / "jwks.json"}"

[zerotrust.policy]
rules = [{{ id = "any" }}]
""",
    )
    # a JWT-SVID verifier needs a trust domain: its constructor refuses, naming the setting
    with pytest.raises(ConfigurationError) as info:
        Settings.load(settings_file, env={"ZEROTRUST_TOKENS__LEEWAY": "30"})
    assert str(info.value).startswith(f"{settings_file}: tokens.token_type: "), info.value
    assert "trust_domain" in str(info.value)


def _env(files: Path) -> dict[str, str]:
    """A minimal valid set of settings in environment variables."""
    return {
        "ZEROTRUST_SERVICE": "orders",
        "ZEROTRUST_TOKENS__ISSUER": ISS,
        "ZEROTRUST_TOKENS__AUDIENCE": AUD,
        "ZEROTRUST_TOKENS__ALGORITHMS": "ES256",
        "ZEROTRUST_TOKENS__JWKS_FILE": str(files / "jwks.json"),
        "ZEROTRUST_POLICY__FILE": str(files / "policy.toml"),
    }


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"ZEROTRUST_TOKENS__MAX_TOKEN_SIZE": "-5"}, "ZEROTRUST_TOKENS__MAX_TOKEN_SIZE: "),
        ({"ZEROTRUST_TOKENS__CACHE_SIZE": "-1"}, "ZEROTRUST_TOKENS__CACHE_SIZE: "),
        (
            {"ZEROTRUST_API_KEYS__HASHES": json.dumps({"ops": "0" * 64}),
             "ZEROTRUST_API_KEYS__HEADER": "authorization"},
            "ZEROTRUST_API_KEYS__HEADER: ",
        ),
        (
            {"ZEROTRUST_API_KEYS__HASHES": json.dumps({"ops": "not-a-digest"}),
             "ZEROTRUST_API_KEYS__HEADER": "x-ops-key"},
            "ZEROTRUST_API_KEYS__HASHES: ",
        ),
    ],
)  # fmt: skip
def test_a_constructor_error_names_the_variable_at_fault(
    files: Path, env: dict[str, str], named: str
) -> None:
    # each section is built by one constructor; its error names the setting it is about,
    # not whichever variable of the section was read first
    with pytest.raises(ConfigurationError) as info:
        Settings.load(env={**_env(files), **env})
    assert str(info.value).startswith(named), info.value


def test_a_key_named_twice_in_json_settings_fails(tmp_path: Path, files: Path) -> None:
    digest = "0" * 64
    env = {
        **_env(files),
        "ZEROTRUST_API_KEYS__HASHES": f'{{"ops": "{digest}", "ops": "{"1" * 64}"}}',
    }
    with pytest.raises(ConfigurationError, match="duplicate key 'ops'"):
        Settings.load(env=env)
    settings_file = tmp_path / "s.json"
    settings_file.write_text(json.dumps(base(files))[:-1] + ', "service": "other"}')
    with pytest.raises(ConfigurationError, match="duplicate key 'service'"):
        Settings.load(settings_file, env={})
