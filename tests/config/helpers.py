"""Helpers shared by tests/test_config.py and tests/config/ (fixtures are in their conftest
and in tests/test_config.py, built from the functions here)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from zerotrust.authn.request import Request
from zerotrust.config import Settings
from zerotrust.dev import DevCA
from zerotrust.errors import ConfigurationError
from zerotrust.tokens import PrivateJWK, TokenIssuer

ISS = "https://issuer.example"
AUD = "orders-api"
WEB = "spiffe://example.org/ns/shop/sa/web"
ROUTE = "/orders/{order_id}"
POLICY = """
id = "orders"
[[rules]]
id = "read-orders"
scopes = ["orders:read"]
[[rules.to]]
methods = ["GET"]
routes = ["/orders/{order_id}"]
"""
KEY = PrivateJWK.generate("ES256", kid="k1")
PSEUDONYM_KEY = "5e" * 32  # a distinctive secret: must never show up anywhere
PASSWORD = "s3cr3t-Pa55/word@x"


def make_issuer() -> TokenIssuer:
    return TokenIssuer(KEY, issuer=ISS)


def make_files(directory: Path, issuer: TokenIssuer) -> Path:
    """A directory with jwks.json and policy.toml, the usual neighbours of a settings file."""
    (directory / "jwks.json").write_text(json.dumps(issuer.jwks()))
    (directory / "policy.toml").write_text(POLICY)
    return directory


def base(files: Path, **sections: Any) -> dict[str, Any]:
    """A minimal valid ``zerotrust`` table for from_dict, with sections replaced."""
    doc: dict[str, Any] = {
        "service": "orders",
        "tokens": {
            "issuer": ISS,
            "audience": [AUD],
            "algorithms": ["ES256"],
            "jwks_file": str(files / "jwks.json"),
        },
        "policy": {"file": str(files / "policy.toml")},
    }
    for name, value in sections.items():
        if value is None:
            doc.pop(name, None)
        else:
            doc[name] = {**doc.get(name, {}), **value}
    return doc


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def get(token: str | None = None, **kw: Any) -> Request:
    headers = dict(kw.pop("headers", {}))
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return Request(route=kw.pop("route", ROUTE), path="/orders/7", headers=headers, **kw)


def error_of(call: Any, *args: Any, **kw: Any) -> str:
    with pytest.raises(ConfigurationError) as info:
        call(*args, **kw)
    return str(info.value)


TOML = """
[zerotrust]
service = "orders"
[zerotrust.tokens]
issuer = "https://issuer.example"
audience = ["orders-api"]
algorithms = ["ES256"]
jwks_file = "jwks.json"
leeway = 30
[zerotrust.policy]
file = "policy.toml"
[zerotrust.store]
url = "memory://"
revocation = "closed"
[zerotrust.audit]
sinks = ["logging"]
on_error = "closed"

[other_app]   # tables of other applications are left alone
anything = 1
"""


def make_bundle_file(files: Path, ca: DevCA) -> Path:
    return write(files / "bundle.pem", ca.bundle.to_pem().decode())


def with_context(files: Path, bundle_file: Path, context: str) -> dict[str, Any]:
    doc = base(files)
    if context in ("mtls", "proxies"):
        doc["mtls"] = {"bundles": {"example.org": str(bundle_file)}}
    if context == "proxies":
        doc["proxies"] = {"addresses": ["10.0.0.0/8"]}
    if context == "inline":
        doc["policy"] = {}
    if context == "spiffe":
        doc["mtls"] = {"bundles": {"example.org": str(bundle_file)}}
        del doc["tokens"]["jwks_file"]
    if context == "remote":
        del doc["tokens"]["jwks_file"]
        doc["tokens"]["jwks_url"] = "https://issuer.example/jwks.json"
    return doc


def set_path(doc: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    *parents, last = dotted.split(".")
    table = doc
    for part in parents:
        table = table.setdefault(part, {})
    table[last] = value
    return doc


def env_var(dotted: str) -> str:
    return "ZEROTRUST_" + dotted.upper().replace(".", "__")


def value_at(settings: Settings, dotted: str) -> Any:
    value: Any = settings
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


API_KEY = "ci-key-0123456789abcdef0123456789"
HMAC = bytes(range(32))


def secret_env(files: Path) -> dict[str, str]:
    (files / "redis-password").write_text(PASSWORD + "\n")
    return {
        "ZEROTRUST_AUDIT__PSEUDONYMIZE": "subject,actor",
        "ZEROTRUST_AUDIT__PSEUDONYM_KEY": PSEUDONYM_KEY,
        "ZEROTRUST_API_KEYS__HASHES": f"ci={hashlib.sha256(API_KEY.encode()).hexdigest()}",
        "ZEROTRUST_STORE__URL": "redis://127.0.0.1:1/0",
        "ZEROTRUST_STORE__PASSWORD_FILE": str(files / "redis-password"),
    }
