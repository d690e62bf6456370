"""Contradictory settings are refused, naming the settings involved."""

from __future__ import annotations

import hashlib
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from tests.config.helpers import (
    ISS,
    PASSWORD,
    PSEUDONYM_KEY,
    base,
    error_of,
    write,
)
from zerotrust.config import Settings
from zerotrust.dev import DevCA

# --- contradictions --------------------------------------------------------------------------


def contradiction(files: Path, bundle_file: Path, case: str) -> str:
    doc = base(files)
    env: dict[str, str] = {}
    mtls = {"bundles": {"example.org": str(bundle_file)}}
    if case == "two key sources":
        doc["tokens"]["jwks_url"] = "https://issuer.example/jwks.json"
    elif case == "two key sources in the environment":
        env = {"ZEROTRUST_TOKENS__JWKS_URL": ISS, "ZEROTRUST_TOKENS__OIDC_ISSUER": ISS}
    elif case == "no key source":
        del doc["tokens"]["jwks_file"]
    elif case == "require_token without tokens":
        del doc["tokens"]
        doc["mtls"] = mtls
        env = {"ZEROTRUST_TOKENS__REQUIRE": "true"}
    elif case == "nothing to authenticate with":
        del doc["tokens"]
    elif case == "proxies without mtls":
        doc["proxies"] = {"addresses": ["10.0.0.0/8"]}
    elif case == "token_must_match_peer without tokens":
        del doc["tokens"]
        doc["mtls"] = {**mtls, "token_must_match_peer": True}
    elif case == "spiffe keys without mtls":
        doc["tokens"] = {**doc["tokens"], "jwks_file": None, "spiffe_trust_domain": "example.org"}
    elif case == "spiffe keys of another trust domain":
        doc["tokens"] = {**doc["tokens"], "jwks_file": None, "spiffe_trust_domain": "other.org"}
        doc["mtls"] = mtls
    elif case == "spiffe keys vouching for another trust domain":
        doc["tokens"] = {**doc["tokens"], "jwks_file": None, "spiffe_trust_domain": "example.org"}
        doc["tokens"]["trust_domain"] = "partner.example"
        doc["mtls"] = mtls
    elif case == "spiffe keys for access tokens":
        doc["tokens"] = {**doc["tokens"], "jwks_file": None, "spiffe_trust_domain": "example.org"}
        doc["tokens"]["token_type"] = "at+jwt"
        doc["mtls"] = mtls
    elif case == "federated spiffe keys of a trust domain without a bundle":
        doc["tokens"] = {**doc["tokens"], "jwks_file": None}
        doc["tokens"]["spiffe_trust_domains"] = ["example.org", "partner.example"]
        doc["mtls"] = mtls
    elif case == "federated spiffe keys bound to one trust domain":
        doc["tokens"] = {**doc["tokens"], "jwks_file": None, "trust_domain": "example.org"}
        doc["tokens"]["spiffe_trust_domains"] = ["example.org"]
        doc["mtls"] = mtls
    elif case == "federated spiffe keys without mtls":
        doc["tokens"] = {**doc["tokens"], "jwks_file": None, "spiffe_trust_domains": ["a.org"]}
    elif case == "no issuer":
        del doc["tokens"]["issuer"]
    elif case == "no issuer for JWT-SVIDs of no trust domain":
        del doc["tokens"]["issuer"]
        doc["tokens"]["token_type"] = "jwt-svid"
    elif case == "no issuer for access tokens of a trust domain":
        del doc["tokens"]["issuer"]
        doc["tokens"] |= {"token_type": "at+jwt", "trust_domain": "example.org"}
    elif case == "remote options for a local key file":
        doc["tokens"]["remote"] = {"timeout": 1}
    elif case == "HMAC algorithm without a secret":
        doc["tokens"]["algorithms"] = ["HS256"]
    elif case == "HMAC secret with ES256":
        del doc["tokens"]["jwks_file"]
        doc["tokens"]["hmac_secret"] = "ab" * 32
    elif case == "HMAC secret with two HMAC algorithms":
        del doc["tokens"]["jwks_file"]
        doc["tokens"]["hmac_secret"] = "ab" * 32
        doc["tokens"]["algorithms"] = ["HS256", "HS384"]
    elif case == "secret twice":
        doc["audit"] = {"pseudonymize": ["subject"]}
        env = {
            "ZEROTRUST_AUDIT__PSEUDONYM_KEY": PSEUDONYM_KEY,
            "ZEROTRUST_AUDIT__PSEUDONYM_KEY_FILE": str(files / "policy.toml"),
        }
    elif case == "policy file and inline rules":
        doc["policy"]["rules"] = []
    elif case == "policy file and inline options":
        doc["policy"]["dry_run"] = True
    elif case == "no policy":
        del doc["policy"]
    elif case == "password for the memory store":
        env = {"ZEROTRUST_STORE__PASSWORD": PASSWORD}
    elif case == "password in the Redis URL":
        doc["store"] = {"url": f"redis://app:{urllib.parse.quote(PASSWORD, safe='')}@cache/0"}
    elif case == "bad store prefix":
        doc["store"] = {"url": "redis://cache:6379/0", "prefix": "bad prefix!"}
    elif case == "user name twice":
        doc["store"] = {"url": "redis://app@cache:6379/0", "username": "other"}
    elif case == "pseudonymize without a key":
        doc["audit"] = {"pseudonymize": ["subject"]}
    elif case == "pseudonym key without fields":
        env = {"ZEROTRUST_AUDIT__PSEUDONYM_KEY": PSEUDONYM_KEY}
    elif case == "personal data without otel":
        doc["audit"] = {"include_personal_data": True}
    elif case == "dpop options while disabled":
        doc["dpop"] = {"enabled": False, "max_age": 30}
    return error_of(Settings.from_dict, doc, env=env)


CONTRADICTIONS = {
    "two key sources": (
        "<dict>: tokens.jwks_file: conflicts with <dict>: tokens.jwks_url: set exactly one"
    ),
    "two key sources in the environment": (
        "ZEROTRUST_TOKENS__OIDC_ISSUER: conflicts with ZEROTRUST_TOKENS__JWKS_URL"
    ),
    "no key source": "<dict>: tokens: needs a key source: set one of tokens.jwks_url, ",
    "require_token without tokens": (
        "ZEROTRUST_TOKENS__AUDIENCE: required (ZEROTRUST_TOKENS__REQUIRE configures tokens)"
    ),
    "nothing to authenticate with": "<dict>: no way to authenticate callers",
    "proxies without mtls": "<dict>: proxies: forwarded certificates are verified against mtls",
    "token_must_match_peer without tokens": "<dict>: mtls.token_must_match_peer: needs tokens",
    "spiffe keys without mtls": "<dict>: tokens.spiffe_trust_domain: reads the JWT authorities",
    "spiffe keys of another trust domain": (
        "<dict>: tokens.spiffe_trust_domain: mtls.bundles has no bundle for 'other.org'"
    ),
    "spiffe keys vouching for another trust domain": (
        "<dict>: tokens.trust_domain: must be 'example.org': the JWT authorities of one trust"
    ),
    "spiffe keys for access tokens": "<dict>: tokens.token_type: keys from a SPIFFE bundle",
    "federated spiffe keys of a trust domain without a bundle": (
        "<dict>: tokens.spiffe_trust_domains: mtls.bundles has no bundle for 'partner.example'"
    ),
    "federated spiffe keys bound to one trust domain": (
        "<dict>: tokens.trust_domain: conflicts with tokens.spiffe_trust_domains: each JWT-SVID"
    ),
    "federated spiffe keys without mtls": (
        "<dict>: tokens.spiffe_trust_domains: reads the JWT authorities of mtls.bundles"
    ),
    "no issuer": "<dict>: tokens.issuer: required: only JWT-SVIDs checked against a trust",
    "no issuer for JWT-SVIDs of no trust domain": "<dict>: tokens.issuer: required: only",
    "no issuer for access tokens of a trust domain": "<dict>: tokens.issuer: required: only",
    "remote options for a local key file": (
        "<dict>: tokens.remote.timeout: applies to tokens.jwks_url and tokens.oidc_issuer only"
    ),
    "HMAC algorithm without a secret": "<dict>: tokens.algorithms: HS256 needs tokens.hmac_secret",
    "HMAC secret with ES256": "<dict>: tokens.algorithms: an HMAC secret is used with exactly one",
    "HMAC secret with two HMAC algorithms": (
        "<dict>: tokens.algorithms: an HMAC secret is used with exactly one algorithm"
    ),
    "secret twice": (
        "ZEROTRUST_AUDIT__PSEUDONYM_KEY: conflicts with ZEROTRUST_AUDIT__PSEUDONYM_KEY_FILE"
    ),
    "policy file and inline rules": "<dict>: policy.rules: is part of an inline policy, but",
    "policy file and inline options": (
        "<dict>: policy.dry_run: is part of an inline policy, but <dict>: policy.file is set"
    ),
    "no policy": "<dict>: policy: required: set policy.file (ZEROTRUST_POLICY__FILE) or",
    "password for the memory store": "ZEROTRUST_STORE__PASSWORD: applies to a Redis store only",
    "bad store prefix": "<dict>: store.prefix: prefix must be 1-64 characters",
    "password in the Redis URL": "<dict>: store.url: must not hold a password",
    "user name twice": "<dict>: store.username: conflicts with the user name in <dict>: store.url",
    "pseudonymize without a key": "<dict>: audit.pseudonymize: needs audit.pseudonym_key",
    "pseudonym key without fields": "ZEROTRUST_AUDIT__PSEUDONYM_KEY: is set but audit.pseudonymize",
    "personal data without otel": "<dict>: audit.include_personal_data: applies to the 'otel'",
    "dpop options while disabled": "<dict>: dpop.max_age: is set but dpop.enabled is false",
}


@pytest.mark.parametrize("case", sorted(CONTRADICTIONS))
def test_contradictory_settings_are_refused(files: Path, bundle_file: Path, case: str) -> None:
    found = contradiction(files, bundle_file, case)
    assert found.startswith(CONTRADICTIONS[case]), found
    assert PASSWORD not in found and urllib.parse.quote(PASSWORD) not in found
    assert PSEUDONYM_KEY not in found


def test_a_trust_domain_given_two_bundles_is_refused(files: Path, bundle_file: Path) -> None:
    """``example.org`` and ``spiffe://example.org`` name one trust domain: two bundle files for
    it contradict each other, as FileBundleSource says of them. The settings kept the last one
    and silently dropped the other."""
    other = DevCA.create("example.org").bundle.to_pem().decode()
    second = write(files / "other.pem", other)
    bundles = {"example.org": str(bundle_file), "spiffe://example.org": str(second)}
    found = error_of(Settings.from_dict, base(files, mtls={"bundles": bundles}))
    assert found == "<dict>: mtls.bundles: two bundles for trust domain example.org", found
    env = {"ZEROTRUST_MTLS__BUNDLES": f"spiffe://example.org={second},example.org={bundle_file}"}
    found = error_of(Settings.from_dict, base(files), env=env)
    assert found == "ZEROTRUST_MTLS__BUNDLES: two bundles for trust domain example.org", found
    one = Settings.from_dict(base(files, mtls={"bundles": {"spiffe://example.org": str(second)}}))
    assert one.mtls is not None and dict(one.mtls.bundles) == {"spiffe://example.org": str(second)}


def test_a_password_in_the_query_of_the_redis_url_is_refused(files: Path) -> None:
    """The Redis client reads ``?password=`` as it reads ``user:password@``: both would put the
    secret in a setting that is shown, so both are refused without showing it."""
    quoted = urllib.parse.quote(PASSWORD, safe="")
    doc = base(files, store={"url": f"redis://cache:6379/0?password={quoted}"})
    found = error_of(Settings.from_dict, doc)
    assert found.startswith("<dict>: store.url: must not hold a password"), found
    assert PASSWORD not in found and quoted not in found
    # other options of the URL are fine
    doc = base(files, store={"url": "redis://cache:6379/0?health_check_interval=5"})
    assert Settings.from_dict(doc).store.url == "redis://cache:6379/0?health_check_interval=5"


@pytest.mark.parametrize("parameter", ["socket_timeout", "timeout", "retry_on_timeout"])
def test_the_redis_url_cannot_override_the_store_settings(files: Path, parameter: str) -> None:
    """The Redis client lets the URL's query win over ``store.socket_timeout`` and
    ``store.max_connections``: such a URL is refused rather than quietly lifting the bound on
    how long a request waits for a hung Redis."""
    doc = base(files, store={"url": f"redis://cache:6379/0?db=0&{parameter}=30"})
    found = error_of(Settings.from_dict, doc)
    assert found.startswith(f"<dict>: store.url: must not set {parameter} in its query"), found


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://cache:6379/0?sockettimeout=9", "takes no query parameter 'sockettimeout'"),
        ("redis://cache:6379/0?ssl_cert_reqs=none", "takes no query parameter 'ssl_cert_reqs'"),
        ("rediss://cache:6380/0?ssl_cert_reqs=nnone", "refuses a value of its query"),
        ("redis://cache:6379/0?db=zero", "refuses a value of its query"),
    ],
)
def test_a_redis_url_the_client_would_refuse_is_refused_at_load(
    files: Path, url: str, message: str
) -> None:
    """The Redis client reads its URL's query when it opens its first connection: a parameter
    it does not take would refuse every request (or, with a store failing open, skip every
    check) long after the settings were loaded and checked. The value is never shown."""
    doc = base(files, store={"url": url, "revocation": "open"})
    found = error_of(Settings.from_dict, doc)
    assert found.startswith(f"<dict>: store.url: the Redis client {message}"), found
    assert "nnone" not in found and "zero" not in found and "=9" not in found


def test_a_redis_url_whose_password_holds_an_unencoded_slash_is_refused_unshown(
    files: Path,
) -> None:
    """``user:12/secret@host`` reads as host ``user``, port 12 and the path ``/secret@...``:
    no password at all, so the check for one passes, and the Redis client ignores a path that
    is no database number. Such a URL is refused, without what follows the ``/``."""
    for url in (
        "redis://app:12/hunter2@cache:6379/0",
        "rediss://:8/hunter2@cache/1",
        "unix://app:12/hunter2@/run/redis.sock",
    ):
        found = error_of(Settings.from_dict, base(files, store={"url": url}))
        assert found.startswith("<dict>: store.url: "), found
        assert "hunter2" not in found and "12" not in found, found
    for url in ("redis://cache:6379/15", "redis://cache:6379/", "redis://cache", "unix:///r.s"):
        Settings.from_dict(base(files, store={"url": url}))


@pytest.mark.parametrize(
    "parameter", ["ssl_password", "SSL_Password", "password", "Password", "sentinel_password"]
)
def test_any_password_parameter_in_the_redis_url_is_refused(files: Path, parameter: str) -> None:
    """The Redis client hands every query parameter to the connection (``ssl_password`` is
    the passphrase of the client key): any parameter naming a password is refused."""
    quoted = urllib.parse.quote(PASSWORD, safe="")
    for value in (quoted, ""):
        url = f"rediss://cache:6380/0?ssl_cert_reqs=required&{parameter}={value}"
        found = error_of(Settings.from_dict, base(files, store={"url": url}))
        assert found.startswith("<dict>: store.url: must not hold a password"), found
        assert f"query parameter {parameter!r}" in found
        assert PASSWORD not in found and quoted not in found


def test_the_query_of_the_redis_url_is_never_shown(files: Path) -> None:
    """What the query holds is the Redis client's business (a key file's path, a secret under
    a name zerotrust does not know): repr and to_dict show the names only."""
    url = "rediss://cache:6380/0?ssl_keyfile=%2Frun%2Fkey.pem&ssl_ca_certs=/run/ca.pem&client_name=t0k"
    settings = Settings.from_dict(base(files, store={"url": url}))
    assert settings.store.url == url  # the store gets it whole
    shown = (
        "rediss://cache:6380/0?ssl_keyfile=<redacted>&ssl_ca_certs=<redacted>"
        "&client_name=<redacted>"
    )
    assert settings.to_dict()["store"]["url"] == shown
    for text in (repr(settings), repr(settings.store), str(settings)):
        assert f"url='{shown}'" in text
        assert "run" not in text.partition("StoreSettings(")[2].partition(")")[0]
        assert "t0k" not in text
    plain = Settings.from_dict(base(files, store={"url": "redis://cache:6379/0"}))
    assert plain.to_dict()["store"]["url"] == "redis://cache:6379/0"
    assert "url='redis://cache:6379/0'" in repr(plain.store)


def test_a_user_name_for_the_memory_store_is_refused(files: Path) -> None:
    found = error_of(Settings.from_dict, base(files), env={"ZEROTRUST_STORE__USERNAME": "app"})
    assert found == "ZEROTRUST_STORE__USERNAME: applies to a Redis store only"


def _spiffe(files: Path, bundle_file: Path, **tokens: Any) -> dict[str, Any]:
    doc = base(files, mtls={"bundles": {"example.org": str(bundle_file)}})
    doc["tokens"] = {k: v for k, v in {**doc["tokens"], **tokens}.items() if v is not None}
    return doc


def test_spiffe_trust_domains_from_the_environment_replace_the_files_key_source(
    files: Path, bundle_file: Path
) -> None:
    doc = _spiffe(files, bundle_file)
    doc["mtls"]["bundles"]["other.org"] = str(bundle_file)
    env = {"ZEROTRUST_TOKENS__SPIFFE_TRUST_DOMAINS": "example.org, other.org"}
    tokens = Settings.from_dict(doc, env=env).tokens
    assert tokens is not None and tokens.jwks_file is None
    assert tokens.spiffe_trust_domains == ("example.org", "other.org")
    env = {
        "ZEROTRUST_TOKENS__SPIFFE_TRUST_DOMAIN": "example.org",
        "ZEROTRUST_TOKENS__SPIFFE_TRUST_DOMAINS": "example.org",
    }
    assert error_of(Settings.from_dict, doc, env=env) == (
        "ZEROTRUST_TOKENS__SPIFFE_TRUST_DOMAINS: conflicts with "
        "ZEROTRUST_TOKENS__SPIFFE_TRUST_DOMAIN: set exactly one key source"
    )


def test_spiffe_keys_accept_the_settings_that_agree_with_them(
    files: Path, bundle_file: Path
) -> None:
    for extra in (
        {"token_type": "jwt-svid"},
        {"trust_domain": "example.org"},
        {"trust_domain": "spiffe://example.org"},
    ):
        doc = _spiffe(
            files, bundle_file, jwks_file=None, spiffe_trust_domain="example.org", **extra
        )
        tokens = Settings.from_dict(doc).tokens
        assert tokens is not None and tokens.spiffe_trust_domain == "example.org"
    doc = _spiffe(files, bundle_file, jwks_file=None, spiffe_trust_domains=["example.org"])
    doc["tokens"]["token_type"] = "jwt-svid"
    tokens = Settings.from_dict(doc).tokens
    assert tokens is not None and tokens.spiffe_trust_domains == ("example.org",)


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        (
            {"spiffe_trust_domain": "Not A Domain!"},
            "<dict>: tokens.spiffe_trust_domain: ",
        ),
        (
            {"spiffe_trust_domains": ["example.org", "bad domain"]},
            "<dict>: tokens.spiffe_trust_domains: ",
        ),
        (
            {"spiffe_trust_domain": "example.org", "trust_domain": "not a domain"},
            "<dict>: tokens.trust_domain: ",
        ),
        (
            {"spiffe_trust_domains": ["example.org"], "token_type": "at+jwt"},
            "<dict>: tokens.token_type: keys from a SPIFFE bundle verify JWT-SVIDs only",
        ),
    ],
)
def test_bad_trust_domains_of_spiffe_keys_are_named(
    files: Path, bundle_file: Path, tokens: dict[str, Any], message: str
) -> None:
    doc = _spiffe(files, bundle_file, jwks_file=None, **tokens)
    found = error_of(Settings.from_dict, doc)
    assert found.startswith(message), found


def test_api_keys_alone_are_a_way_to_authenticate(files: Path) -> None:
    digest = hashlib.sha256(b"k" * 32).hexdigest()
    doc = base(files, tokens=None) | {"api_keys": {"hashes": {"ci": digest}}}
    settings = Settings.from_dict(doc)
    assert settings.tokens is None and settings.mtls is None and settings.api_keys is not None


def test_a_rule_that_is_not_a_table_is_named(files: Path) -> None:
    doc = base(files, policy=None) | {"policy": {"rules": ["x", {"id": "a", "hook": "h"}]}}
    assert error_of(Settings.from_dict, doc) == "<dict>: policy: rules[0]: must be a table/object"
