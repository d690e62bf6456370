"""Secrets: from variables or secret files, never from the settings file, never shown."""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
from pathlib import Path
from typing import Any

import pytest

from tests.config.helpers import (
    API_KEY,
    AUD,
    PASSWORD,
    PSEUDONYM_KEY,
    TOML,
    base,
    error_of,
    get,
    secret_env,
    write,
)
from zerotrust.config import Secret, Settings
from zerotrust.tokens import TokenIssuer
from zerotrust.tokens._b64 import b64url_encode


def test_secrets_are_never_shown(files: Path) -> None:
    settings = Settings.from_dict(base(files), env=secret_env(files))
    digest = hashlib.sha256(API_KEY.encode()).hexdigest()
    assert settings.store.password is not None
    assert settings.store.password.reveal() == PASSWORD
    assert settings.audit.pseudonym_key == Secret(bytes.fromhex(PSEUDONYM_KEY))
    assert settings.api_keys is not None and dict(settings.api_keys.hashes.reveal()) == {
        "ci": digest
    }
    shown = [repr(settings), str(settings), json.dumps(settings.to_dict()), repr(settings.store)]
    for text in shown:
        for secret in (PASSWORD, PSEUDONYM_KEY, digest):
            assert secret not in text
    assert settings.to_dict()["store"]["password"] == "<redacted>"
    assert settings.to_dict()["api_keys"] == {"hashes": "<redacted>", "header": "x-api-key"}
    assert str(settings.store.password) == "Secret('<redacted>')"
    with pytest.raises(TypeError):
        pickle.dumps(settings.store.password)
    with pytest.raises(AttributeError):
        settings.store.password._value = "x"  # type: ignore[misc]
    guard = settings.build_guard()
    assert PASSWORD not in repr(guard.store)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("ZEROTRUST_AUDIT__PSEUDONYM_KEY", "5e" * 16, "at least 32 bytes"),
        ("ZEROTRUST_AUDIT__PSEUDONYM_KEY", "not*base64-5e5e5e5e5e", "must be hex or base64"),
        ("ZEROTRUST_TOKENS__HMAC_SECRET", "5e" * 8, "at least 32 bytes"),
        ("ZEROTRUST_API_KEYS__HASHES", "ci=5e5e5e5e5e5e5e5e", "store the SHA-256 hex digest"),
        ("ZEROTRUST_API_KEYS__HASHES", "ci:5e5e5e5e5e5e5e5e", "item 1 is not name=value"),
        # a name without a value, a value without a name: the item is counted, never shown
        ("ZEROTRUST_API_KEYS__HASHES", f"ci={'5e' * 32},deploy=", "item 2 is not name=value"),
        ("ZEROTRUST_API_KEYS__HASHES", f"ci={'5e' * 32}\n={'5e' * 32}", "item 2 is not name="),
        # a key id given twice: refused (the first digest was dropped silently), not shown
        ("ZEROTRUST_API_KEYS__HASHES", f"ci={'5e' * 32},ci={'6f' * 32}", "item 2: a name given"),
        # JSON nested past any parser's stack: a refusal, not a RecursionError
        ("ZEROTRUST_API_KEYS__HASHES", '{"a":' * 50_000 + "1" + "}" * 50_000, "nested deeper"),
    ],
)
def test_bad_secrets_are_refused_without_being_shown(
    files: Path, variable: str, value: str, message: str
) -> None:
    doc = base(files)
    if "HMAC" in variable:
        doc["tokens"] = {**doc["tokens"], "algorithms": ["HS256"]}
        del doc["tokens"]["jwks_file"]
    if "PSEUDONYM" in variable:
        doc["audit"] = {"pseudonymize": ["subject"]}
    found = error_of(Settings.from_dict, doc, env={variable: value})
    assert found.startswith(f"{variable}: ") and message in found, found
    assert value not in found and "5e5e5e5e" not in found


def test_secrets_in_the_settings_file_are_refused(files: Path) -> None:
    text = TOML + "\n".join(["", "[zerotrust.store]", f'password = "{PASSWORD}"'])
    text = text.replace('[zerotrust.store]\nurl = "memory://"\nrevocation = "closed"\n', "")
    path = write(files / "zerotrust.toml", text)
    found = error_of(Settings.load, path, env={})
    assert found.startswith(f"{path}: store.password: secrets are not read from configuration")
    assert "ZEROTRUST_STORE__PASSWORD or password_file" in found and PASSWORD not in found
    broken = write(files / "zerotrust.yaml", f"zerotrust:\n  store: {{password: {PASSWORD}\n")
    found = error_of(Settings.load, broken, env={})
    assert "is not valid YAML (" in found and PASSWORD not in found
    # a file naming a secret file is fine: the path is not the secret
    (files / "key").write_text(PSEUDONYM_KEY)
    ok = TOML.replace(
        'on_error = "closed"', 'pseudonymize = ["subject"]\npseudonym_key_file = "key"'
    )
    settings = Settings.load(write(files / "ok.toml", ok), env={})
    assert settings.audit.pseudonym_key == Secret(bytes.fromhex(PSEUDONYM_KEY))


def test_key_encodings(files: Path) -> None:
    raw = bytes(range(32, 64))
    for text in (raw.hex(), raw.hex().upper(), b64url_encode(raw), b64url_encode(raw) + "="):
        env = {"ZEROTRUST_AUDIT__PSEUDONYMIZE": "subject", "ZEROTRUST_AUDIT__PSEUDONYM_KEY": text}
        settings = Settings.from_dict(base(files), env=env)
        assert settings.audit.pseudonym_key == Secret(raw)
    import base64

    standard = base64.b64encode(raw).decode()
    env = {"ZEROTRUST_AUDIT__PSEUDONYMIZE": "subject", "ZEROTRUST_AUDIT__PSEUDONYM_KEY": standard}
    assert Settings.from_dict(base(files), env=env).audit.pseudonym_key == Secret(raw)
    from_code = base(files, audit={"pseudonymize": ["subject"], "pseudonym_key": raw})
    assert Settings.from_dict(from_code).audit.pseudonym_key == Secret(raw)


def test_pseudonymised_audit_events(files: Path, issuer: TokenIssuer, caplog: Any) -> None:
    env = {
        "ZEROTRUST_AUDIT__PSEUDONYMIZE": "subject",
        "ZEROTRUST_AUDIT__PSEUDONYM_KEY": PSEUDONYM_KEY,
    }
    guard = Settings.from_dict(base(files), env=env).build_guard()
    token = issuer.issue(subject="alice@example.com", audience=AUD, scopes=["orders:read"])
    with caplog.at_level(logging.INFO, logger="zerotrust.audit"):
        assert guard.evaluate(get(token)).allowed
    [record] = [r for r in caplog.records if r.name == "zerotrust.audit"]
    event = record.zerotrust_audit  # type: ignore[attr-defined]
    assert event["subject"].startswith("pseudo:") and "alice" not in record.getMessage()


def test_secret_files_and_forms(files: Path) -> None:
    digest = hashlib.sha256(API_KEY.encode()).hexdigest()
    (files / "hashes").write_text(f"ci={digest}\n\ndeploy={'0' * 64}\n")
    settings = Settings.from_dict(base(files, api_keys={"hashes_file": files / "hashes"}))
    assert settings.api_keys is not None
    assert dict(settings.api_keys.hashes.reveal()) == {"ci": digest, "deploy": "0" * 64}
    as_json = json.dumps({"ci": digest})
    settings = Settings.from_dict(base(files), env={"ZEROTRUST_API_KEYS__HASHES": as_json})
    assert dict(settings.api_keys.hashes.reveal()) == {"ci": digest}  # type: ignore[union-attr]
    big_settings = write(files / "big.toml", "#" * (1 << 20) + "\n")
    assert "is larger than 1048576 bytes" in error_of(Settings.load, big_settings, env={})
    (files / "big").write_text("a" * 70_000)
    (files / "binary").write_bytes(bytes(range(256)))
    (files / "empty").write_text("\n")
    for name, message in [
        ("big", "is larger than"),
        ("binary", "is not UTF-8"),
        ("empty", "is empty"),
    ]:
        env = {"ZEROTRUST_STORE__PASSWORD_FILE": str(files / name)}
        found = error_of(Settings.from_dict, base(files, store={"url": "redis://cache/0"}), env=env)
        assert found.startswith("ZEROTRUST_STORE__PASSWORD_FILE: ") and message in found
    # an empty variable unsets a secret set by a lower layer's file form
    doc = base(files, store={"url": "redis://cache/0", "password_file": str(files / "hashes")})
    unset = Settings.from_dict(doc, env={"ZEROTRUST_STORE__PASSWORD_FILE": ""})
    assert unset.store.password is None


def test_secrets_compare_by_value_and_with_secrets_only(files: Path) -> None:
    assert Secret(b"a" * 32) == Secret(b"a" * 32)
    assert Secret(b"a" * 32) != Secret(b"b" * 32)
    assert Secret(PASSWORD) != PASSWORD  # never equal to the plain value it hides
    with pytest.raises(TypeError):
        hash(Secret(PASSWORD))

    def with_key(key: str) -> Settings:
        env = {"ZEROTRUST_AUDIT__PSEUDONYMIZE": "subject", "ZEROTRUST_AUDIT__PSEUDONYM_KEY": key}
        return Settings.from_dict(base(files), env=env)

    assert with_key(PSEUDONYM_KEY) == with_key(PSEUDONYM_KEY)
    assert with_key(PSEUDONYM_KEY) != with_key("6f" * 32)  # another key: other settings


def test_a_secret_and_its_file_form_together_are_refused(files: Path) -> None:
    (files / "password").write_text(PASSWORD)
    env = {
        "ZEROTRUST_STORE__PASSWORD": "another-" + PASSWORD,
        "ZEROTRUST_STORE__PASSWORD_FILE": str(files / "password"),
    }
    found = error_of(Settings.from_dict, base(files, store={"url": "redis://cache/0"}), env=env)
    assert found == (
        "ZEROTRUST_STORE__PASSWORD: conflicts with ZEROTRUST_STORE__PASSWORD_FILE: set one of them"
    )


def test_secrets_given_by_code_and_the_size_of_a_secret_file(files: Path) -> None:
    digest = hashlib.sha256(API_KEY.encode()).hexdigest()
    settings = Settings.from_dict(base(files, api_keys={"hashes": {"ci": digest}}))
    assert settings.api_keys is not None and dict(settings.api_keys.hashes.reveal()) == {
        "ci": digest
    }
    (files / "largest").write_text("a" * 64 * 1024)  # the limit itself is read
    env = {"ZEROTRUST_STORE__PASSWORD_FILE": str(files / "largest")}
    redis = base(files, store={"url": "redis://cache/0"})
    password = Settings.from_dict(redis, env=env).store.password
    assert password is not None and password.reveal() == "a" * 64 * 1024
