"""Hostile-input hardening across the core: no secret material in any output, bounded memory.

Every failure path of the Guard is driven once; every log record (with tracebacks) and every
audit event is then scanned for tokens, private keys and PEM blocks. Separately, 100,000
distinct bogus tokens are pushed through a verifier, a Guard and the stores, and every cache is
checked to stay within its configured bound.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
import secrets
import urllib.parse

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from zerotrust import (
    ApiKeys,
    Authenticator,
    Callers,
    FixedClock,
    Guard,
    LoggingSink,
    MemorySink,
    MemoryStore,
    Operations,
    Policy,
    RateLimit,
    Request,
    Rule,
    ScopeRule,
    TokenIssuer,
    TokenVerifier,
    TrustedProxies,
)
from zerotrust.audit import AuditPipeline
from zerotrust.dev import DevCA
from zerotrust.errors import KeysUnavailable, StoreUnavailable, ZeroTrustError
from zerotrust.tokens import PrivateJWK
from zerotrust.tokens._b64 import b64url_encode

ISS = "https://issuer.example"
AUD = "api"
JWT_LIKE = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.")
FORBIDDEN = ("-----BEGIN", "PRIVATE KEY")


class _DownKeys:
    def get_keys(self, *, missing_kid: str | None = None) -> object:
        raise KeysUnavailable("keys down")

    async def get_keys_async(self, *, missing_kid: str | None = None) -> object:
        raise KeysUnavailable("keys down")


class _DownStore(MemoryStore):
    def is_revoked(self, **kw: object) -> bool:  # type: ignore[override]
        raise StoreUnavailable("store down")


def _secret_hook(principal: object, op: object) -> bool:
    raise RuntimeError("hook failed")


@pytest.fixture
def world() -> dict[str, object]:
    clock = FixedClock(dt.datetime.now(dt.timezone.utc))
    ca = DevCA.create("example.org")
    key = PrivateJWK.generate("ES256", kid="k1")
    issuer = TokenIssuer(key, issuer=ISS, clock=clock)
    return {"clock": clock, "ca": ca, "key": key, "issuer": issuer}


def _guard(world: dict[str, object], sinks: list[object], **kw: object) -> Guard:
    clock = world["clock"]
    issuer = world["issuer"]
    keys = kw.pop("keys", issuer.jwks())  # type: ignore[attr-defined]
    verifier = TokenVerifier(issuer=ISS, audience=AUD, keys=keys, algorithms=["ES256"], clock=clock)  # type: ignore[arg-type]
    authn = Authenticator(
        tokens=verifier,
        bundles=world["ca"].bundle,  # type: ignore[attr-defined]
        trusted_proxies=TrustedProxies(["10.0.0.0/8"], header="xfcc"),
        api_keys=ApiKeys({"ci": ApiKeys.hash("the-real-api-key-value-0123456789")}),
        clock=clock,  # type: ignore[arg-type]
    )
    policy = kw.pop(
        "policy",
        Policy(
            [
                Rule(id="deny-bad", action="DENY", callers=[Callers(subjects=["bad"])]),
                Rule(
                    id="read",
                    operations=[Operations(routes=["/r", "/limited"])],
                    scopes=ScopeRule(all=["read"]),
                ),
            ],
            rate_limits=[
                RateLimit("rl", rate=0.001, burst=1, operations=[Operations(routes=["/limited"])])
            ],
        ),
    )
    store = kw.pop("store", MemoryStore(clock=clock))  # type: ignore[arg-type]
    return Guard(
        authenticator=authn, policy=policy, audit=AuditPipeline(sinks), store=store, clock=clock
    )  # type: ignore[arg-type]


def test_no_failure_path_leaks_credentials(
    world: dict[str, object], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    memory = MemorySink()
    sinks = [memory, LoggingSink(level=logging.WARNING)]
    issuer: TokenIssuer = world["issuer"]  # type: ignore[assignment]
    clock: FixedClock = world["clock"]  # type: ignore[assignment]
    ca: DevCA = world["ca"]  # type: ignore[assignment]
    guard = _guard(world, sinks)
    secrets_seen: list[str] = ["the-real-api-key-value-0123456789"]

    def token(**kw: object) -> str:
        kw.setdefault("subject", "svc")
        kw.setdefault("audience", AUD)
        value = issuer.issue(**kw)  # type: ignore[arg-type]
        secrets_seen.append(value)
        return value

    def bearer(value: str, route: str = "/r", **kw: object) -> Request:
        return Request(
            route=route, headers={"authorization": f"Bearer {value}", **kw.pop("headers", {})}, **kw
        )  # type: ignore[arg-type, dict-item]

    forged = PrivateJWK.generate("ES256", kid="k1")
    forged_token = TokenIssuer(forged, issuer=ISS, clock=clock).issue(subject="svc", audience=AUD)
    secrets_seen.append(forged_token)
    svid = ca.issue_svid("spiffe://example.org/x")
    stranger = DevCA.create("example.org").issue_svid("spiffe://example.org/x")
    pem = svid.leaf.public_bytes(Encoding.PEM).decode()
    xfcc = f'Cert="{urllib.parse.quote(pem, safe="")}"'
    holder = PrivateJWK.generate("ES256")
    dpop_bound = token(extra_claims={"cnf": {"jkt": holder.public().thumbprint()}})
    expired = token(ttl=1)
    views = [
        Request(route="/r"),  # missing credentials
        Request(route="/r", headers={"authorization": "Basic dXNlcjpwYXNz"}),
        Request(route="/r", headers=[("authorization", "Bearer a"), ("authorization", "Bearer b")]),
        bearer("not.a.token"),
        bearer("x" * 20_000),
        bearer(forged_token),
        bearer(token(audience="other")),
        bearer(token(subject="bad", scopes=["read"])),
        bearer(token()),  # insufficient scope
        bearer(token(scopes=["read"]), route="/elsewhere"),
        bearer(dpop_bound),  # DPoP-bound presented as Bearer
        bearer(token(bind_cert=svid.leaf)),  # bound without the certificate
        Request(route="/r", peer_chain=[c.public_bytes(Encoding.DER) for c in stranger.cert_chain]),
        Request(route="/r", headers={"x-forwarded-client-cert": xfcc}, remote_addr="203.0.113.7"),
        Request(
            route="/r", headers={"x-forwarded-client-cert": 'Cert="%ZZ"'}, remote_addr="10.0.0.1"
        ),
        Request(route="/r", headers={"x-api-key": "wrong-key-value"}),
        Request(route="/r", headers={"x-api-key": "the-real-api-key-value-0123456789"}),
        Request(
            route="/r", headers={"authorization": f"DPoP {dpop_bound}", "dpop": "e30.e30.AAAA"}
        ),
    ]
    clock.advance(0)
    for view in views:
        outcome = guard.evaluate(view)
        assert not outcome.allowed
    clock.advance(120)
    assert not guard.evaluate(bearer(expired)).allowed
    limited = token(scopes=["read"])
    statuses = [guard.evaluate(bearer(limited, route="/limited")).status for _ in range(2)]
    assert statuses == [200, 429]
    revoked = token(scopes=["read"])
    first = guard.evaluate(bearer(revoked))
    guard.store.revoke_token(first.principal.token_jti, expires_at=clock.now().timestamp() + 60)  # type: ignore[union-attr]
    assert guard.evaluate(bearer(revoked)).error.code == "token_revoked"  # type: ignore[union-attr]
    for broken in (
        _guard(world, sinks, keys=_DownKeys()),
        _guard(world, sinks, store=_DownStore(clock=clock)),
        _guard(
            world,
            sinks,
            policy=Policy([Rule(id="ext", action="CUSTOM", hook=_secret_hook), Rule(id="all")]),
        ),
    ):
        outcome = broken.evaluate(bearer(token(scopes=["read"])))
        assert not outcome.allowed
        body = json.dumps(outcome.body())
        assert all(s not in body for s in secrets_seen)

    outputs = [record.getMessage() for record in caplog.records]
    outputs += [caplog.text]
    outputs += [event.to_json() for event in memory.events]
    outputs += [repr(event) for event in memory.events]
    blob = "\n".join(outputs)
    assert len(memory.events) >= len(views)
    for value in secrets_seen:
        assert value not in blob
        if value.count(".") == 2:
            assert value.split(".")[2] not in blob  # not even the signature segment
    assert not JWT_LIKE.search(blob)
    for marker in FORBIDDEN:
        assert marker not in blob
    assert svid.private_key_pem().decode().splitlines()[1] not in blob
    assert hashlib.sha256(b"the-real-api-key-value-0123456789").hexdigest() not in blob


def test_error_strings_never_echo_input() -> None:
    key = PrivateJWK.generate("ES256")
    verifier = TokenVerifier(issuer=ISS, audience=AUD, keys=key.public(), algorithms=["ES256"])
    probes = [
        "eyJhbGciOiJub25lIn0." + b64url_encode(b'{"sub":"attacker-marker"}') + ".",
        "attacker-marker" * 1000,
        b64url_encode(b'{"alg":"ES256","kid":"attacker-marker"}') + ".e30.AAAA",
    ]
    for probe in probes:
        with pytest.raises(ZeroTrustError) as info:
            verifier.verify(probe)
        assert "attacker-marker" not in str(info.value)
        assert "attacker-marker" not in repr(info.value)


def test_caches_stay_bounded_under_100k_bogus_tokens(world: dict[str, object]) -> None:
    clock: FixedClock = world["clock"]  # type: ignore[assignment]
    issuer: TokenIssuer = world["issuer"]  # type: ignore[assignment]
    sink = MemorySink(max_events=1000)
    policy = Policy(
        [Rule(id="all", callers=[Callers(subjects=["*"])])],
        rate_limits=[RateLimit("rl", rate=1, burst=5)],
    )
    guard = _guard(world, [sink], policy=policy)
    verifier = guard.authenticator.tokens
    assert verifier is not None
    store = guard.store
    assert isinstance(store, MemoryStore)
    for i in range(100_000):
        kid = secrets.token_hex(8)
        header = b64url_encode(json.dumps({"alg": "ES256", "kid": kid, "typ": "JWT"}).encode())
        bogus = f"{header}.{b64url_encode(b'{}')}.{b64url_encode(secrets.token_bytes(64))}"
        outcome = guard.evaluate(Request(route="/x", headers={"authorization": f"Bearer {bogus}"}))
        assert outcome.status == 401
        if i % 10_000 == 0:  # and some valid, distinct principals for the rate limiter
            good = issuer.issue(subject=f"svc-{i}", audience=AUD)
            assert guard.evaluate(
                Request(route="/x", headers={"authorization": f"Bearer {good}"})
            ).allowed
    assert len(verifier.signature_verifier._headers) <= 256
    cache = verifier.cache
    assert cache is not None and len(cache) <= cache.max_entries
    assert len(sink.events) <= 1000
    clock.advance(1)
