"""The parts of a Guard built from settings: stores, key sources, certificates, API keys, audit."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import subprocess
import sys
import urllib.parse
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests._https import HttpsServer, json_route
from tests.config.helpers import (
    API_KEY,
    AUD,
    HMAC,
    ISS,
    KEY,
    PASSWORD,
    PSEUDONYM_KEY,
    WEB,
    base,
    get,
    secret_env,
    write,
)
from zerotrust import FixedClock, Guard
from zerotrust.audit import MemorySink
from zerotrust.config import Settings
from zerotrust.dev import DevCA
from zerotrust.errors import ConfigurationError, MissingDependencyError
from zerotrust.stores import MemoryStore, RedisStore, ResilientStore
from zerotrust.tokens import PrivateJWK, SecretKey, TokenIssuer, TokenVerifier
from zerotrust.tokens._b64 import b64url_encode

# --- the parts a Guard is built from ---------------------------------------------------------


def test_redis_url_builds_a_redis_store_without_connecting(
    files: Path, issuer: TokenIssuer
) -> None:
    env = secret_env(files) | {"ZEROTRUST_STORE__REVOCATION": "closed"}
    env["ZEROTRUST_STORE__USERNAME"] = "app"
    del env["ZEROTRUST_AUDIT__PSEUDONYMIZE"], env["ZEROTRUST_AUDIT__PSEUDONYM_KEY"]
    settings = Settings.from_dict(base(files), env=env)
    guard = settings.build_guard(audit=MemorySink())  # nothing listens on port 1: no connection
    store = guard.store
    assert isinstance(store, ResilientStore) and isinstance(store.store, RedisStore)
    redis_store = store.store
    try:
        kwargs = redis_store._client.connection_pool.connection_kwargs  # type: ignore[union-attr]
        assert kwargs["password"] == PASSWORD and kwargs["username"] == "app"
        assert kwargs["host"] == "127.0.0.1" and kwargs["port"] == 1
        assert PASSWORD not in repr(store)
        token = issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"])
        refused = guard.evaluate(get(token))  # revocation fails closed: the store is down
        assert refused.status == 503 and refused.error is not None
        open_guard = dataclasses.replace(
            settings, store=dataclasses.replace(settings.store, revocation="open")
        ).build_guard(audit=MemorySink())
        try:
            assert open_guard.evaluate(get(token)).allowed
        finally:
            open_guard.store.store.close()  # type: ignore[attr-defined]
            asyncio.run(open_guard.store.store.aclose())  # type: ignore[attr-defined]
    finally:
        redis_store.close()
        asyncio.run(redis_store.aclose())


def test_a_store_fails_closed_unless_a_setting_opens_one_check(files: Path) -> None:
    settings = Settings.from_dict(base(files, store={"url": "redis://127.0.0.1:1/0"}))
    store = settings.store
    assert (store.revocation, store.replay, store.rate_limit) == ("closed",) * 3
    assert store.check_revocation
    for opened in ("revocation", "replay", "rate_limit"):
        env = {f"ZEROTRUST_STORE__{opened.upper()}": "open"}
        built = Settings.from_dict(settings.to_dict(), env=env).build_guard(audit=MemorySink())
        try:
            assert isinstance(built.store, ResilientStore)
            kinds = ("revocation", "replay", "rate_limit")
            policies = {k: "open" if k == opened else "closed" for k in kinds}
            shown = ", ".join(f"{k}={v!r}" for k, v in policies.items())
            assert repr(built.store).endswith(f", {shown})"), repr(built.store)
        finally:
            built.store.store.close()  # type: ignore[attr-defined]
            asyncio.run(built.store.store.aclose())  # type: ignore[attr-defined]


def test_the_memory_store_runs_on_the_clock_given_to_build_guard(files: Path) -> None:
    clock = FixedClock()
    store = Settings.from_dict(base(files)).build_guard(audit=MemorySink(), clock=clock).store
    assert isinstance(store, MemoryStore)
    assert store.acquire("caller", rate=1, burst=1).allowed
    assert not store.acquire("caller", rate=1, burst=1).allowed
    clock.advance(1)  # one token back after one second of that clock
    assert store.acquire("caller", rate=1, burst=1).allowed


def test_explicit_objects_override_the_settings(files: Path) -> None:
    settings = Settings.from_dict(base(files, store={"url": "redis://127.0.0.1:1/0"}))
    store, sink = MemoryStore(), MemorySink()
    guard = settings.build_guard(store=store, audit=sink)
    assert guard.store is store and guard.audit.sinks == (sink,)


def test_a_pem_key_file_verifies_the_rsa_algorithm_the_settings_allow(files: Path) -> None:
    key = PrivateJWK.generate("PS256")
    public = key.public().public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    pem = write(files / "issuer.pub", public.decode())
    doc = base(files, tokens={"jwks_file": str(pem), "algorithms": ["PS256"]})
    guard = Settings.from_dict(doc).build_guard(audit=MemorySink())
    token = TokenIssuer(key, issuer=ISS).issue(subject=WEB, audience=AUD, scopes=["orders:read"])
    assert guard.evaluate(get(token)).allowed


def test_remote_key_sources_are_lazy(files: Path) -> None:
    doc = base(files)
    del doc["tokens"]["jwks_file"]
    for key, url in (("jwks_url", f"{ISS}/jwks.json"), ("oidc_issuer", ISS)):
        doc["tokens"] = {
            k: v for k, v in doc["tokens"].items() if k not in ("jwks_url", "oidc_issuer")
        }
        doc["tokens"][key] = url
        guard = Settings.from_dict(doc).build_guard(audit=MemorySink())
        assert guard.authenticator.tokens is not None
        source: Any = guard.authenticator.tokens.signature_verifier.source
        assert type(source).__name__ == "RemoteJWKSource"
        assert source.status().fetch_count == 0
        # an issuer's keys are found by its discovery document; a JWKS URL is fetched as is
        assert source.oidc_issuer == (ISS if key == "oidc_issuer" else None)
        source.close()


def test_keys_of_another_openid_issuer_are_refused_when_loaded(files: Path) -> None:
    """The keys an issuer's discovery finds are that issuer's: an ``oidc_issuer`` other than
    ``issuer`` contradicts it, found by config check rather than when the service starts."""
    doc = base(files)
    del doc["tokens"]["jwks_file"]
    doc["tokens"]["oidc_issuer"] = "https://login.partner.example"
    with pytest.raises(ConfigurationError) as refused:
        Settings.from_dict(doc)
    assert str(refused.value).startswith(
        "<dict>: tokens.issuer: the key source holds the keys of the OpenID issuer"
        " 'https://login.partner.example'"
    ), refused.value
    doc["tokens"]["oidc_issuer"] = ISS
    assert Settings.from_dict(doc).tokens is not None


def test_a_key_server_ca_file_without_certificates_is_refused_when_loaded(
    files: Path, ca: DevCA
) -> None:
    """The CA file is read when the settings are loaded, as the bundles are: config check
    finds one that holds no certificate, rather than the service when it starts."""
    doc = base(files)
    del doc["tokens"]["jwks_file"]
    doc["tokens"] |= {"jwks_url": f"{ISS}/jwks.json", "remote": {"ca_file": "ca.pem"}}
    (files / "ca.pem").write_text("# the certificates go here\n")
    path = write(files / "zerotrust.json", json.dumps({"zerotrust": doc}))
    with pytest.raises(ConfigurationError) as refused:
        Settings.load(path, env={})
    assert str(refused.value) == (
        f"{path}: tokens.remote.ca_file: the CA file for verify= holds no PEM certificate"
    )
    (files / "ca.pem").write_bytes(ca.bundle.to_pem())
    settings = Settings.load(path, env={})
    assert settings.tokens is not None and settings.tokens.remote.ca_file == str(files / "ca.pem")


@pytest.mark.network
def test_remote_keys_are_fetched_over_tls_checked_by_default(
    files: Path, ca: DevCA, issuer: TokenIssuer
) -> None:
    """Without tokens.remote.ca_file the system's authorities check the key server (never no
    check at all); with it, that file's."""
    (files / "ca.pem").write_bytes(ca.bundle.to_pem())
    token = issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"])
    doc = base(files)
    del doc["tokens"]["jwks_file"]
    with HttpsServer(ca) as server:
        server.route("/jwks", json_route(issuer.jwks()))
        doc["tokens"]["jwks_url"] = server.url("/jwks")
        outcomes = []
        for remote in ({}, {"ca_file": str(files / "ca.pem")}):
            doc["tokens"]["remote"] = remote
            guard = Settings.from_dict(doc).build_guard(audit=MemorySink())
            assert guard.authenticator.tokens is not None
            source: Any = guard.authenticator.tokens.signature_verifier.source
            with source:
                outcomes.append(guard.evaluate(get(token)))
    untrusted, trusted = outcomes
    assert not untrusted.allowed and untrusted.status == 503, untrusted
    assert trusted.allowed, trusted


def test_importing_the_settings_does_not_import_httpx_or_redis() -> None:
    code = "import sys, zerotrust.config; assert not {'httpx', 'redis', 'yaml'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_mtls_and_forwarded_certificates(files: Path, bundle_file: Path, ca: DevCA) -> None:
    doc = base(files, tokens=None) | {
        "mtls": {"bundles": {"example.org": bundle_file}, "require": True},
        "proxies": {"addresses": ["10.0.0.0/8"], "spiffe_ids": ["spiffe://example.org"]},
        "policy": {"rules": [{"id": "web", "from": [{"spiffe_ids": [WEB]}]}]},
    }
    guard = Settings.from_dict(doc).build_guard(audit=MemorySink())
    svid = ca.issue_svid(WEB)
    chain = [c.public_bytes(Encoding.DER) for c in svid.cert_chain]
    direct = guard.evaluate(get(peer_chain=chain))
    assert direct.allowed and direct.principal is not None and direct.principal.proven_by == "mtls"
    assert guard.evaluate(get()).status == 401  # mtls.require
    pem = urllib.parse.quote(svid.leaf.public_bytes(Encoding.PEM).decode(), safe="")
    proxy = ca.issue_svid("spiffe://example.org/ns/mesh/sa/ingress")
    proxy_chain = [c.public_bytes(Encoding.DER) for c in proxy.cert_chain]
    forwarded = get(
        headers={"x-forwarded-client-cert": f'Cert="{pem}"'},
        remote_addr="10.1.2.3",
        peer_chain=proxy_chain,
    )
    outcome = guard.evaluate(forwarded)
    assert outcome.allowed and outcome.principal is not None
    assert outcome.principal.proven_by == "proxy-mtls" and str(outcome.principal.spiffe_id) == WEB


def svid_bundle(files: Path, ca: DevCA) -> tuple[PrivateJWK, dict[str, Any]]:
    """A JWT authority in the bundle of ``ca``'s trust domain, and settings reading it."""
    from zerotrust import TrustBundle

    key = PrivateJWK.generate("ES256", kid="svid-key")
    authority = {**key.public().to_public_dict(), "use": "jwt-svid"}
    bundle = TrustBundle(
        ca.trust_domain, ca.bundle.x509_authorities, jwt_authorities={"svid-key": authority}
    )
    write(files / "bundle.json", json.dumps(bundle.to_jwks()))
    return key, base(files) | {"mtls": {"bundles": {"example.org": str(files / "bundle.json")}}}


def test_jwt_svids_verified_with_the_bundles_jwt_authorities(files: Path, ca: DevCA) -> None:
    key, doc = svid_bundle(files, ca)
    doc["tokens"] = {
        "issuer": "spiffe://example.org",
        "audience": AUD,
        "algorithms": ["ES256"],
        "spiffe_trust_domain": "example.org",
    }
    guard = Settings.from_dict(doc).build_guard(audit=MemorySink())
    verifier = guard.authenticator.tokens
    assert verifier is not None and verifier.claims_validator.trust_domain is not None
    token = TokenIssuer(key, issuer="spiffe://example.org").issue(
        subject=WEB, audience=AUD, scopes=["orders:read"]
    )
    outcome = guard.evaluate(get(token))
    assert outcome.allowed and str(outcome.principal.spiffe_id) == WEB  # type: ignore[union-attr]


def test_federated_jwt_svids_each_verified_with_their_trust_domains_keys(
    files: Path, ca: DevCA, other_ca: DevCA
) -> None:
    from zerotrust import TrustBundle

    docs = {}
    keys = {}
    for authority_ca in (ca, other_ca):
        key = PrivateJWK.generate("ES256", kid="svid-key")  # one kid in both domains
        keys[authority_ca.trust_domain.name] = key
        bundle = TrustBundle(
            authority_ca.trust_domain,
            authority_ca.bundle.x509_authorities,
            jwt_authorities={"svid-key": {**key.public().to_public_dict(), "use": "jwt-svid"}},
        )
        path = write(files / f"{authority_ca.trust_domain.name}.json", json.dumps(bundle.to_jwks()))
        docs[authority_ca.trust_domain.name] = str(path)
    doc = base(files) | {"mtls": {"bundles": docs}}
    doc["tokens"] = {
        "issuer": ISS,
        "audience": AUD,
        "algorithms": ["ES256"],
        "spiffe_trust_domains": ["example.org", "other.org"],
    }
    doc["policy"] = {"rules": [{"id": "any", "from": [{"spiffe_ids": ["*"]}]}]}
    guard = Settings.from_dict(doc).build_guard(audit=MemorySink())
    verifier = guard.authenticator.tokens
    assert verifier is not None and verifier.claims_validator.any_trust_domain
    partner = "spiffe://other.org/billing"
    for domain, subject, allowed in (
        ("example.org", WEB, True),
        ("other.org", partner, True),
        ("example.org", partner, False),  # a key of one domain, a workload of the other
    ):
        token = TokenIssuer(keys[domain], issuer=ISS).issue(
            subject=subject, audience=AUD, token_type="jwt-svid"
        )
        outcome = guard.evaluate(get(token))
        assert outcome.allowed is allowed
        if allowed:
            assert str(outcome.principal.spiffe_id) == subject  # type: ignore[union-attr]
        else:
            assert outcome.status == 401


def svid_without_iss(key: PrivateJWK, subject: str) -> str:
    """A JWT-SVID as SPIRE issues it by default: no ``iss`` claim."""
    now = int(__import__("time").time())
    header = {"alg": "ES256", "kid": key.kid, "typ": "JWT"}
    claims = {"sub": subject, "aud": AUD, "iat": now, "exp": now + 300}
    signing_input = ".".join(b64url_encode(json.dumps(part).encode()) for part in (header, claims))
    return f"{signing_input}.{b64url_encode(key.sign(signing_input.encode()))}"


@pytest.mark.parametrize("federated", [False, True], ids=["one domain", "federation"])
def test_jwt_svids_without_iss_when_the_issuer_is_left_out(
    files: Path, ca: DevCA, federated: bool
) -> None:
    key, doc = svid_bundle(files, ca)
    source = (
        {"spiffe_trust_domains": ["example.org"]}
        if federated
        else {"spiffe_trust_domain": "example.org"}
    )
    doc["tokens"] = {"audience": AUD, "algorithms": ["ES256"], **source}
    doc["policy"] = {"rules": [{"id": "any", "from": [{"spiffe_ids": ["*"]}]}]}
    guard = Settings.from_dict(doc).build_guard(audit=MemorySink())
    verifier = guard.authenticator.tokens
    assert verifier is not None and verifier.claims_validator.issuer is None
    outcome = guard.evaluate(get(svid_without_iss(key, WEB)))
    assert outcome.allowed and outcome.principal is not None
    assert str(outcome.principal.spiffe_id) == WEB and outcome.principal.issuer is None
    # any iss is then accepted, as go-spiffe does; the workload's trust domain still decides
    named = TokenIssuer(key, issuer="https://spire.example").issue(
        subject=WEB, audience=AUD, token_type="jwt-svid"
    )
    assert guard.evaluate(get(named)).allowed
    elsewhere = guard.evaluate(get(svid_without_iss(key, "spiffe://other.org/billing")))
    assert not elsewhere.allowed and elsewhere.status == 401
    # a store with I/O is asked about the token too: with an empty issuer, never None
    with_io = Guard(
        authenticator=guard.authenticator,
        policy=guard.policy,
        audit=MemorySink(),
        store=ResilientStore(MemoryStore()),
    )
    assert with_io.evaluate(get(svid_without_iss(key, WEB))).allowed


def test_a_jwt_svid_key_file_without_issuer_needs_a_trust_domain(files: Path) -> None:
    doc = base(files)
    del doc["tokens"]["issuer"]
    doc["tokens"] |= {"token_type": "jwt-svid", "trust_domain": "example.org"}
    doc["policy"] = {"rules": [{"id": "any", "from": [{"spiffe_ids": ["*"]}]}]}
    guard = Settings.from_dict(doc).build_guard(audit=MemorySink())
    verifier = guard.authenticator.tokens
    assert verifier is not None and verifier.claims_validator.issuer is None
    assert verifier.claims_validator.trust_domain is not None
    assert verifier.claims_validator.trust_domain.name == "example.org"
    outcome = guard.evaluate(get(svid_without_iss(KEY, WEB)))
    assert outcome.allowed and str(outcome.principal.spiffe_id) == WEB  # type: ignore[union-attr]


def test_a_replay_cache_too_short_for_dpop_names_its_setting(files: Path) -> None:
    # refused when the settings are loaded (config check), not when the service starts
    doc = base(files) | {"store": {"replay_max_ttl": 60}}
    with pytest.raises(ConfigurationError) as refused:
        Settings.from_dict(doc)
    assert str(refused.value).startswith(
        "<dict>: store.replay_max_ttl: the store keeps replay entries at most 60 s"
    )
    env = {"ZEROTRUST_DPOP__MAX_AGE": "600"}  # the other setting of the contradiction
    longer = base(files) | {"store": {"replay_max_ttl": 600}}
    with pytest.raises(ConfigurationError, match="at most 600 s, but DPoP proofs need 620 s"):
        Settings.from_dict(longer, env=env)
    assert Settings.from_dict(longer).store.replay_max_ttl == 600
    with pytest.raises(ConfigurationError, match=r"^ZEROTRUST_STORE__REPLAY_MAX_TTL: the store"):
        Settings.from_dict(base(files), env={"ZEROTRUST_STORE__REPLAY_MAX_TTL": "300"})
    Settings.from_dict(doc | {"dpop": {"enabled": False}}).build_guard(audit=MemorySink())
    # a store given by code is checked by the Guard, which cannot name a setting
    with pytest.raises(ConfigurationError, match="raise its replay_max_ttl"):
        Settings.from_dict(base(files)).build_guard(
            audit=MemorySink(), store=MemoryStore(replay_max_ttl=60)
        )


def test_api_keys_and_hmac_tokens(files: Path) -> None:
    doc = base(files, tokens=None) | {
        "tokens": {"issuer": ISS, "audience": AUD, "algorithms": ["HS256"]},
        "api_keys": {"header": "X-Api-Key"},
        "policy": {"rules": [{"id": "any", "from": [{"subjects": ["*"]}]}]},
    }
    env = {
        "ZEROTRUST_API_KEYS__HASHES": f"ci={hashlib.sha256(API_KEY.encode()).hexdigest()}",
        "ZEROTRUST_TOKENS__HMAC_SECRET": HMAC.hex(),
    }
    guard = Settings.from_dict(doc, env=env).build_guard(audit=MemorySink())
    by_key = guard.evaluate(get(headers={"x-api-key": API_KEY}))
    assert by_key.allowed and by_key.principal is not None
    assert by_key.principal.subject == "api-key:ci"
    assert guard.evaluate(get(headers={"x-api-key": "wrong"})).status == 401
    header = b64url_encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    now = int(__import__("time").time())
    claims = {"iss": ISS, "aud": AUD, "sub": "svc", "iat": now, "exp": now + 60}
    signing_input = f"{header}.{b64url_encode(json.dumps(claims).encode())}"
    signature = b64url_encode(SecretKey(HMAC).sign(signing_input.encode()))
    outcome = guard.evaluate(get(f"{signing_input}.{signature}"))
    assert outcome.allowed and outcome.principal is not None and outcome.principal.subject == "svc"
    assert isinstance(guard.authenticator.tokens, TokenVerifier)


def test_redis_urls_and_missing_redis(files: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for url, env, expected in [
        (
            "redis://cache:6380/2",
            {},
            {"host": "cache", "port": 6380, "db": 2, "username": None, "password": None},
        ),
        (
            "rediss://app@cache/0",
            {"ZEROTRUST_STORE__PASSWORD": "p w"},
            {"username": "app", "password": "p w"},
        ),
        (  # a password without a user name (Redis before ACLs): still sent
            "redis://cache/0",
            {"ZEROTRUST_STORE__PASSWORD": "p w"},
            {"username": None, "password": "p w"},
        ),
        (
            "unix:///run/redis.sock",
            {"ZEROTRUST_STORE__USERNAME": "u"},
            {"path": "/run/redis.sock", "username": "u"},
        ),
    ]:
        guard = Settings.from_dict(base(files, store={"url": url}), env=env).build_guard()
        redis_store: Any = guard.store.store  # type: ignore[attr-defined]
        try:
            kwargs = redis_store._client.connection_pool.connection_kwargs
            assert {k: kwargs.get(k) for k in expected} == expected
            assert redis_store._client.connection_pool.max_connections == 100  # the default
        finally:
            redis_store.close()
            asyncio.run(redis_store.aclose())
    monkeypatch.setitem(sys.modules, "redis", None)  # as if redis-py were not installed
    settings = Settings.from_dict(base(files, store={"url": "redis://cache/0"}))
    with pytest.raises(MissingDependencyError) as info:
        settings.build_guard()
    assert info.value.extra == "redis"


def test_audit_sinks_from_settings(files: Path) -> None:
    from zerotrust.audit import LoggingSink, OTelSink

    env = {
        "ZEROTRUST_AUDIT__PSEUDONYMIZE": "subject",
        "ZEROTRUST_AUDIT__PSEUDONYM_KEY": PSEUDONYM_KEY,
    }
    doc = base(files, audit={"sinks": ["logging", "otel"], "include_personal_data": True})
    guard = Settings.from_dict(doc, env=env).build_guard()
    sinks = guard.audit.sinks
    assert len(sinks) == 2 and PSEUDONYM_KEY not in repr(sinks)
    assert (
        repr(sinks[1])
        == "OTelSink(include_personal_data=True) with Pseudonymizer(fields=['subject'])"
    )
    plain = Settings.from_dict(
        base(files, audit={"sinks": ["otel", "logging"], "on_error": "closed"})
    )
    built = plain.build_guard().audit
    assert isinstance(built.sinks[0], OTelSink) and isinstance(built.sinks[1], LoggingSink)


def test_a_bundle_file_in_the_spiffe_format_is_read_as_told(files: Path, ca: DevCA) -> None:
    path = write(files / "bundle.json", json.dumps(ca.bundle.to_jwks()))
    doc = base(files, tokens=None) | {
        "mtls": {"bundles": {"example.org": path}, "bundle_format": "jwks", "require": True},
        "policy": {"rules": [{"id": "web", "from": [{"spiffe_ids": [WEB]}]}]},
    }
    guard = Settings.from_dict(doc).build_guard(audit=MemorySink())
    chain = [c.public_bytes(Encoding.DER) for c in ca.issue_svid(WEB).cert_chain]
    assert guard.evaluate(get(peer_chain=chain)).allowed
    doc["mtls"]["bundle_format"] = "pem"  # the same file read as PEM: refused when loaded
    with pytest.raises(ConfigurationError, match="mtls"):
        Settings.from_dict(doc)


# --- the mTLS and token settings reach the authenticator ---------------------------------------


def both(files: Path, bundle_file: Path, **mtls: Any) -> dict[str, Any]:
    """Tokens from the key file and client certificates of example.org; the policy allows WEB."""
    return base(files) | {
        "mtls": {"bundles": {"example.org": str(bundle_file)}, **mtls},
        "policy": {"rules": [{"id": "web", "from": [{"spiffe_ids": [WEB]}]}]},
    }


def chain_of(ca: DevCA, spiffe_id: str) -> list[bytes]:
    return [c.public_bytes(Encoding.DER) for c in ca.issue_svid(spiffe_id).cert_chain]


def test_mtls_require_refuses_a_token_alone(
    files: Path, bundle_file: Path, issuer: TokenIssuer
) -> None:
    token = issuer.issue(subject=WEB, audience=AUD)
    for require, allowed in ((False, True), (True, False)):
        guard = Settings.from_dict(both(files, bundle_file, require=require)).build_guard(
            audit=MemorySink()
        )
        outcome = guard.evaluate(get(token))
        assert outcome.allowed is allowed, (require, outcome)
        assert guard.authenticator.require_mtls is require


def test_tokens_require_refuses_a_client_certificate_alone(
    files: Path, bundle_file: Path, ca: DevCA
) -> None:
    doc = both(files, bundle_file)
    for require, allowed in ((False, True), (True, False)):
        doc["tokens"]["require"] = require
        guard = Settings.from_dict(doc).build_guard(audit=MemorySink())
        outcome = guard.evaluate(get(peer_chain=chain_of(ca, WEB)))
        assert outcome.allowed is allowed, (require, outcome)
        if not allowed:
            assert outcome.status == 401


def test_token_must_match_peer_refuses_a_token_of_another_workload(
    files: Path, bundle_file: Path, ca: DevCA, issuer: TokenIssuer
) -> None:
    token = issuer.issue(subject=WEB, audience=AUD)
    other = chain_of(ca, "spiffe://example.org/ns/shop/sa/batch")
    for match, allowed in ((False, True), (True, False)):
        doc = both(files, bundle_file, token_must_match_peer=match)
        doc["policy"] = {"rules": [{"id": "any", "from": [{"spiffe_ids": ["*"]}]}]}
        guard = Settings.from_dict(doc).build_guard(audit=MemorySink())
        outcome = guard.evaluate(get(token, peer_chain=other))
        assert outcome.allowed is allowed, (match, outcome)
        if not allowed:
            assert outcome.status == 401
        # the token of the certificate's own workload passes either way
        assert guard.evaluate(get(token, peer_chain=chain_of(ca, WEB))).allowed


def test_max_delegation_depth_bounds_the_act_chain(files: Path, issuer: TokenIssuer) -> None:
    act = {"sub": "spiffe://example.org/a", "act": {"sub": "spiffe://example.org/b"}}
    token = issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"], act=act)
    for depth, allowed in ((2, True), (1, False), (0, False)):
        doc = base(files)
        doc["tokens"]["max_delegation_depth"] = depth
        guard = Settings.from_dict(doc).build_guard(audit=MemorySink())
        outcome = guard.evaluate(get(token))
        assert outcome.allowed is allowed, (depth, outcome)
        if not allowed:
            assert outcome.status == 401


def test_the_clock_given_to_build_guard_checks_client_certificates(
    files: Path, bundle_file: Path, ca: DevCA
) -> None:
    doc = base(files, tokens=None) | {
        "mtls": {"bundles": {"example.org": str(bundle_file)}},
        "policy": {"rules": [{"id": "web", "from": [{"spiffe_ids": [WEB]}]}]},
    }
    svid = ca.issue_svid(WEB)
    chain = [c.public_bytes(Encoding.DER) for c in svid.cert_chain]
    later = FixedClock(svid.leaf.not_valid_after_utc + timedelta(days=1))
    guard = Settings.from_dict(doc).build_guard(audit=MemorySink(), clock=later)
    outcome = guard.evaluate(get(peer_chain=chain))
    assert not outcome.allowed and outcome.status == 401
    now = Settings.from_dict(doc).build_guard(audit=MemorySink())  # the system clock
    assert now.evaluate(get(peer_chain=chain)).allowed


def test_proxies_are_trusted_by_each_listed_spiffe_id_only(
    files: Path, bundle_file: Path, ca: DevCA
) -> None:
    ingress = "spiffe://example.org/ns/mesh/sa/ingress"
    doc = base(files, tokens=None) | {
        "mtls": {"bundles": {"example.org": str(bundle_file)}},
        "proxies": {
            "addresses": ["10.0.0.0/8"],
            "spiffe_ids": [ingress, "spiffe://example.org/ns/*/sa/gateway"],
        },
        "policy": {"rules": [{"id": "web", "from": [{"spiffe_ids": [WEB]}]}]},
    }
    guard = Settings.from_dict(doc).build_guard(audit=MemorySink())
    svid = ca.issue_svid(WEB)
    pem = urllib.parse.quote(svid.leaf.public_bytes(Encoding.PEM).decode(), safe="")
    for proxy, trusted in (
        (ingress, True),
        ("spiffe://example.org/ns/edge/sa/gateway", True),  # the glob
        ("spiffe://example.org/ns/mesh/sa/ingress2", False),
        ("spiffe://example.org/ns/shop/sa/batch", False),
    ):
        forwarded = get(
            headers={"x-forwarded-client-cert": f'Cert="{pem}"'},
            remote_addr="10.1.2.3",
            peer_chain=chain_of(ca, proxy),
        )
        outcome = guard.evaluate(forwarded)
        principal = outcome.principal
        if trusted:
            assert outcome.allowed and principal is not None, (proxy, outcome)
            assert principal.proven_by == "proxy-mtls" and str(principal.spiffe_id) == WEB
        else:
            assert not outcome.allowed, (proxy, outcome)
            assert principal is None or str(principal.spiffe_id) != WEB


@pytest.mark.parametrize("key", ["jwks_url", "oidc_issuer"])
def test_a_plain_http_key_url_names_its_setting(files: Path, key: str) -> None:
    doc = base(files)
    del doc["tokens"]["jwks_file"]
    doc["tokens"][key] = "http://issuer.example/keys"
    with pytest.raises(ConfigurationError) as refused:
        Settings.from_dict(doc)
    assert str(refused.value) == f"<dict>: tokens.{key}: plain http is refused: use https"


def test_a_delegation_depth_over_the_bound_names_the_tokens_table(files: Path) -> None:
    doc = base(files)
    doc["tokens"]["max_delegation_depth"] = 33
    with pytest.raises(ConfigurationError) as refused:
        Settings.from_dict(doc)
    assert str(refused.value) == "<dict>: tokens: max_delegation_depth must be between 0 and 32"


def test_a_store_socket_timeout_is_bounded_when_the_settings_load(files: Path) -> None:
    """A timeout the Redis client cannot set on a socket would pass the check at start-up and
    refuse every request on the first connection: it is refused when the settings load."""
    doc = base(files, store={"url": "redis://127.0.0.1:1/0", "socket_timeout": 1e10})
    with pytest.raises(ConfigurationError) as refused:
        Settings.from_dict(doc)
    assert str(refused.value) == "<dict>: store.socket_timeout: must be at most 600"
    env = {"ZEROTRUST_STORE__SOCKET_TIMEOUT": "601"}
    with pytest.raises(ConfigurationError) as refused:
        Settings.from_dict(base(files, store={"url": "redis://127.0.0.1:1/0"}), env=env)
    assert str(refused.value) == "ZEROTRUST_STORE__SOCKET_TIMEOUT: must be at most 600"
    doc["store"]["socket_timeout"] = 600
    guard = Settings.from_dict(doc).build_guard(audit=MemorySink())  # never connects
    store: Any = guard.store
    try:
        assert store.store._client.connection_pool.connection_kwargs["socket_timeout"] == 600
    finally:
        store.store.close()
        asyncio.run(store.store.aclose())
