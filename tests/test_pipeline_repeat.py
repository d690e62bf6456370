"""Repeated requests: the Guard answers them from what the pipeline established, and must never
answer differently from the pipeline.

Every test runs the same request sequence through a Guard (which reuses its earlier allows) and
checks the outcome against a fresh Guard that has never seen the token, so a stale reuse shows
up as a difference. Everything that can change between two requests is changed here: the clock
(token and certificate expiry), revocations, the key set, the bundle, audit sinks, the request's
other credential headers, the route and the requirement.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from zerotrust import FixedClock, RotatingBundleSource, verify_x509_svid
from zerotrust.audit import AuditPipeline, CallableSink, LoggingSink, MemorySink
from zerotrust.authn.authenticate import Authenticator
from zerotrust.authn.request import Request
from zerotrust.authz import Callers, Operations, Policy, RateLimit, Rule, ScopeRule, require
from zerotrust.dev import DevCA
from zerotrust.errors import KeysUnavailable
from zerotrust.httpx import DPoPSigner
from zerotrust.pipeline import Guard, Outcome
from zerotrust.stores import MemoryStore, ResilientStore
from zerotrust.tokens import JWKSet, PrivateJWK, TokenIssuer, TokenVerifier

ISS = "https://issuer.example"
AUD = "orders-api"
WEB = "spiffe://example.org/ns/shop/sa/web"
ROUTE = "/orders/{order_id}"


class SwappableKeys:
    """A changing key source (as a JWKS endpoint is): the keys can be swapped or withdrawn."""

    def __init__(self, keys: JWKSet) -> None:
        self.keys: JWKSet | None = keys

    def get_keys(self, *, missing_kid: str | None = None) -> JWKSet:
        if self.keys is None:
            raise KeysUnavailable("key source is down")
        return self.keys

    async def get_keys_async(self, *, missing_kid: str | None = None) -> JWKSet:
        return self.get_keys(missing_kid=missing_kid)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(dt.datetime.now(dt.timezone.utc))


@pytest.fixture(scope="module")
def key() -> PrivateJWK:
    return PrivateJWK.generate("ES256", kid="k1")


@pytest.fixture
def issuer(key: PrivateJWK, clock: FixedClock) -> TokenIssuer:
    return TokenIssuer(key, issuer=ISS, clock=clock)


@pytest.fixture(scope="module")
def ca() -> DevCA:
    return DevCA.create("example.org")


def rules() -> list[Rule]:
    return [
        Rule(id="deny-intruder", action="DENY", callers=[Callers(subjects=["intruder"])]),
        Rule(
            id="read-orders",
            callers=[Callers(trust_domains=["example.org"])],
            operations=[Operations(methods=["GET"], routes=[ROUTE])],
            scopes=ScopeRule(all=["orders:read"]),
        ),
        Rule(
            id="audit-only",
            callers=[Callers(trust_domains=["example.org"])],
            operations=[Operations(routes=["/dry"])],
            action="DENY",
            dry_run=True,
        ),
        Rule(id="dry-allow", operations=[Operations(routes=["/dry"])]),
    ]


class World:
    """A Guard that reuses allows, and a factory of fresh Guards (the reference)."""

    def __init__(
        self,
        issuer: TokenIssuer,
        clock: FixedClock,
        *,
        keys: Any = None,
        store: Any = None,
        pol: Policy | None = None,
        audit: Any = None,
        **authn: Any,
    ) -> None:
        self.issuer, self.clock = issuer, clock
        self.keys = keys if keys is not None else issuer.jwks()
        self.store = store if store is not None else MemoryStore(clock=clock)
        self.policy = pol or Policy(rules(), id="orders")
        self.authn = authn
        self.sink = MemorySink()
        self.guard = self.build(audit=audit if audit is not None else self.sink)
        self.pipeline_runs = 0
        flow = self.guard.authenticator.flow

        def counting(view: Any, notes: Any = None) -> Any:
            self.pipeline_runs += 1
            return (yield from flow(view, notes))

        self.guard.authenticator.flow = counting  # type: ignore[method-assign]

    def build(self, *, audit: Any = None) -> Guard:
        verifier = TokenVerifier(
            issuer=ISS, audience=AUD, keys=self.keys, algorithms=["ES256"], clock=self.clock
        )
        return Guard(
            authenticator=Authenticator(tokens=verifier, clock=self.clock, **self.authn),
            policy=self.policy,
            audit=audit if audit is not None else MemorySink(),
            store=self.store,
            service="orders",
            clock=self.clock,
        )

    def check(self, view: Request, *, asynchronous: bool = False, **kw: Any) -> Outcome:
        """Evaluate ``view`` with the reusing Guard and with a fresh one; they must agree."""
        if asynchronous:
            outcome = asyncio.run(self.guard.aevaluate(view, **kw))
        else:
            outcome = self.guard.evaluate(view, **kw)
        reference = self.build().evaluate(view, **kw)
        assert summary(outcome) == summary(reference)
        if outcome.event is not None or reference.event is not None:
            assert event_fields(outcome) == event_fields(reference)  # the same record
        return outcome


def event_fields(outcome: Outcome) -> dict[str, Any]:
    assert outcome.event is not None
    fields = outcome.event.to_dict()
    del fields["time"], fields["event_id"]  # the only fields two records of a request differ in
    return fields


def summary(outcome: Outcome) -> tuple[Any, ...]:
    error = outcome.error.code if outcome.error is not None else None
    principal = outcome.principal
    decision = outcome.decision
    return (
        outcome.allowed,
        outcome.status,
        outcome.grpc_status,
        outcome.headers,
        error,
        principal.id if principal else None,
        principal.proven_by if principal else None,
        principal.scopes if principal else None,
        principal.cert_fingerprint if principal else None,
        decision.rule_id if decision else None,
        decision.reason if decision else None,
        decision.dry_run if decision else None,
    )


def get(
    token: str | None, route: str = ROUTE, *, authorization: str | None = None, **kw: Any
) -> Request:
    headers = dict(kw.pop("headers", {}))
    if authorization is not None:
        headers["authorization"] = authorization
    elif token is not None:
        headers["authorization"] = f"Bearer {token}"
    kw.setdefault("path", "/orders/7")
    return Request(method="GET", route=route, headers=headers, host="api.example", **kw)


def read_token(issuer: TokenIssuer, ttl: float = 300, subject: str = WEB) -> str:
    return issuer.issue(subject=subject, audience=AUD, scopes=["orders:read"], ttl=ttl)


@pytest.fixture(params=[False, True], ids=["sync", "async"])
def asynchronous(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def test_a_repeated_allow_skips_the_pipeline_and_is_audited_every_time(
    issuer: TokenIssuer, clock: FixedClock, asynchronous: bool
) -> None:
    world = World(issuer, clock)
    token = read_token(issuer)
    parents = [f"00-{n:032x}-{n:016x}-01" for n in range(1, 4)]
    outcomes = [
        world.check(get(token, headers={"traceparent": p}), asynchronous=asynchronous)
        for p in parents
    ]
    assert all(o.allowed for o in outcomes)
    assert world.pipeline_runs == 1  # the second and third requests were repeats
    events = world.sink.events
    assert [e.decision for e in events] == ["allow"] * 3  # one event per request
    assert [e.trace_id for e in events] == [p[3:35] for p in parents]  # each its own trace
    assert {e.token_jti for e in events} == {outcomes[0].principal.token_jti}  # type: ignore[union-attr]
    assert all(o.event is e for o, e in zip(outcomes, events, strict=True))


def test_repeated_audit_events_are_whole_records_of_their_own_request(
    issuer: TokenIssuer, clock: FixedClock, asynchronous: bool
) -> None:
    world = World(issuer, clock)
    token = read_token(issuer)
    views = [
        get(token, headers={"traceparent": f"00-{n:032x}-{n:016x}-01"}, remote_addr=f"10.0.0.{n}")
        for n in range(1, 5)
    ] + [get(token), get(token, remote_addr="eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.")]
    for view in views:
        clock.advance(1)
        world.check(view, asynchronous=asynchronous)  # compares every field with a fresh Guard
    assert world.pipeline_runs == 1
    events = world.sink.events
    assert len({e.event_id for e in events}) == len(views)
    assert [e.time for e in events] == sorted({e.time for e in events})
    assert events[-2].trace_id is None and events[-2].remote_addr is None
    assert events[-1].remote_addr == "[redacted]"  # cleaned like any other event field


def test_an_expired_token_is_refused_on_repeat(
    issuer: TokenIssuer, clock: FixedClock, asynchronous: bool
) -> None:
    world = World(issuer, clock)
    token = read_token(issuer, ttl=60)
    assert world.check(get(token), asynchronous=asynchronous).allowed
    clock.advance(60 + 120)  # past exp and any leeway
    refused = world.check(get(token), asynchronous=asynchronous)
    assert refused.status == 401 and refused.error is not None
    assert refused.error.code == "token_expired"


@pytest.mark.parametrize("how", ["token", "subject", "issued_before"])
def test_a_revoked_token_is_refused_on_repeat(
    issuer: TokenIssuer, clock: FixedClock, asynchronous: bool, how: str
) -> None:
    world = World(issuer, clock)
    token = read_token(issuer)
    other = read_token(issuer, subject="spiffe://example.org/ns/shop/sa/other")
    assert world.check(get(token), asynchronous=asynchronous).allowed
    assert world.check(get(other), asynchronous=asynchronous).allowed
    jti = world.guard.evaluate(get(token)).principal.token_jti  # type: ignore[union-attr]
    until = clock.now().timestamp() + 3600
    if how == "token":
        world.store.revoke_token(jti, expires_at=until)
    elif how == "subject":
        world.store.revoke_subject(WEB, issuer=ISS, until=until)
    else:
        clock.advance(1)
        world.store.revoke_issued_before(ISS, before=clock.now().timestamp(), until=until)
    refused = world.check(get(token), asynchronous=asynchronous)
    assert refused.status == 401 and refused.error is not None
    assert refused.error.code == "token_revoked"
    # a revocation elsewhere in the store costs the other caller its shortcut, not its access
    assert world.check(get(other), asynchronous=asynchronous).allowed is (how != "issued_before")


class LaggingVerifier(TokenVerifier):
    """A verifier whose cache has not caught up with a revocation yet, as for a request that
    found its token in the cache just before the revocation landed."""

    def evict(self, jti: str) -> int:
        return 0

    def clear_cache(self) -> None:
        pass


@pytest.mark.parametrize("how", ["token", "subject"])
def test_a_repeat_is_checked_against_the_store_before_the_cache_forgets_the_token(
    issuer: TokenIssuer, clock: FixedClock, asynchronous: bool, how: str
) -> None:
    store = MemoryStore(clock=clock)
    verifier = LaggingVerifier(
        issuer=ISS, audience=AUD, keys=issuer.jwks(), algorithms=["ES256"], clock=clock
    )
    guard = Guard(
        authenticator=Authenticator(tokens=verifier, clock=clock),
        policy=Policy(rules(), id="orders"),
        audit=MemorySink(),
        store=store,
        clock=clock,
    )

    def evaluate(view: Request) -> Outcome:
        return asyncio.run(guard.aevaluate(view)) if asynchronous else guard.evaluate(view)

    token = read_token(issuer)
    allowed = evaluate(get(token))
    assert allowed.allowed and allowed.principal is not None and guard._repeats
    until = clock.now().timestamp() + 3600
    if how == "token":
        store.revoke_token(allowed.principal.token_jti or "", expires_at=until)
    else:
        store.revoke_subject(WEB, issuer=ISS, until=until)
    for _ in range(2):
        refused = evaluate(get(token))
        assert refused.error is not None and refused.error.code == "token_revoked"


def test_a_withdrawn_or_unavailable_key_ends_repeats(
    issuer: TokenIssuer, clock: FixedClock, asynchronous: bool
) -> None:
    source = SwappableKeys(JWKSet.from_dict(issuer.jwks()))
    world = World(issuer, clock, keys=source)
    token = read_token(issuer)
    assert world.check(get(token), asynchronous=asynchronous).allowed
    assert world.check(get(token), asynchronous=asynchronous).allowed
    assert world.pipeline_runs == 1
    source.keys = None  # the JWKS endpoint fails closed
    down = world.guard.evaluate(get(token))
    assert down.status == 503 and down.error is not None
    assert down.error.code == "keys_unavailable"
    source.keys = JWKSet.from_dict(
        TokenIssuer(PrivateJWK.generate("ES256", kid="k2"), issuer=ISS).jwks()
    )  # rotated: k1 withdrawn
    refused = world.check(get(token), asynchronous=asynchronous)
    assert refused.status == 401 and not refused.allowed


@pytest.mark.parametrize(
    ("variant", "expected"),
    [
        ("lower-case scheme", (True, 200)),
        ("extra spaces", (True, 200)),
        ("two authorization headers", (False, 400)),
        ("dpop header", (True, 200)),  # ignored with the Bearer scheme, by the pipeline
        ("forwarded certificate from nobody", (True, 200)),
        ("another route", (False, 403)),
        ("another method", (False, 403)),
        ("no token", (False, 401)),
    ],
)
def test_any_other_shape_of_request_takes_the_pipeline(
    issuer: TokenIssuer, clock: FixedClock, variant: str, expected: tuple[bool, int]
) -> None:
    world = World(issuer, clock)
    token = read_token(issuer)
    assert world.check(get(token)).allowed  # remembered
    runs = world.pipeline_runs
    view = {
        "lower-case scheme": get(None, authorization=f"bearer {token}"),
        "extra spaces": get(None, authorization=f"Bearer   {token}  "),
        "two authorization headers": Request(
            method="GET",
            route=ROUTE,
            headers=[("authorization", f"Bearer {token}")] * 2,
        ),
        "dpop header": get(token, headers={"dpop": "e30.e30.sig"}),
        "forwarded certificate from nobody": get(
            token, headers={"x-forwarded-client-cert": "Hash=abc"}
        ),
        "another route": get(token, route="/admin"),
        "another method": Request(
            method="DELETE", route=ROUTE, headers={"authorization": f"Bearer {token}"}
        ),
        "no token": get(None),
    }[variant]
    outcome = world.check(view)
    assert (outcome.allowed, outcome.status) == expected
    assert world.pipeline_runs == runs + 1  # decided by the pipeline, not repeated
    if variant == "forwarded certificate from nobody":
        assert world.sink.last is not None
        assert "forwarded_cert_ignored_untrusted_peer" in world.sink.last.notes


def test_an_allowed_dpop_request_is_never_repeated_for_its_token_as_bearer(
    issuer: TokenIssuer, clock: FixedClock, asynchronous: bool
) -> None:
    # RFC 9449 7.1: a DPoP-bound token is refused under the Bearer scheme. An allow given to
    # the token with its proof must not answer the same token presented without one.
    world = World(issuer, clock)
    holder = DPoPSigner(PrivateJWK.generate("ES256"), clock=clock)
    token = issuer.issue(
        subject=WEB,
        audience=AUD,
        scopes=["orders:read"],
        extra_claims={"cnf": {"jkt": holder.thumbprint}},
    )
    for _ in range(2):
        proof = holder.proof("GET", "https://api.example/orders/7", token)
        bound = world.guard.evaluate(
            get(None, authorization=f"DPoP {token}", headers={"dpop": proof})
        )
        assert bound.allowed and bound.principal is not None
        assert bound.principal.proven_by == "dpop"
        refused = world.check(get(token), asynchronous=asynchronous)
        assert refused.status == 401 and refused.error is not None
        assert refused.error.code == "token_binding_mismatch"
    assert not world.guard._repeats


@pytest.mark.parametrize("chain", ["untrusted", "trusted"])
def test_a_presented_certificate_chain_takes_the_pipeline(
    issuer: TokenIssuer, clock: FixedClock, ca: DevCA, chain: str
) -> None:
    # The allow of a token alone says nothing of a request that also presents a certificate
    # chain (not verified in a handshake): the pipeline verifies it, and decides on both.
    world = World(issuer, clock, bundles=ca.bundle)
    token = read_token(issuer)
    assert world.check(get(token)).allowed  # remembered
    authority = ca if chain == "trusted" else DevCA.create("example.org")
    svid = authority.issue_svid(WEB)
    der = [c.public_bytes(Encoding.DER) for c in svid.cert_chain]
    runs = world.pipeline_runs
    outcome = world.check(get(token, peer_chain=der))
    assert world.pipeline_runs == runs + 1
    if chain == "trusted":
        assert outcome.allowed and outcome.principal is not None
        assert outcome.principal.proven_by == "mtls+jwt"
    else:
        assert outcome.status == 401 and outcome.error is not None
        assert outcome.error.code == "untrusted_certificate"


def test_requirements_are_part_of_what_is_repeated(
    issuer: TokenIssuer, clock: FixedClock, asynchronous: bool
) -> None:
    world = World(issuer, clock)
    token = read_token(issuer)
    reads, writes = require(scopes=["orders:read"]), require(scopes=["orders:write"])
    for _ in range(2):
        assert world.check(get(token), asynchronous=asynchronous, requirement=reads).allowed
        refused = world.check(get(token), asynchronous=asynchronous, requirement=writes)
        assert refused.status == 403 and refused.error is not None
        assert refused.error.code == "insufficient_scope"
    assert world.pipeline_runs == 3  # reads repeated once; refusals are never remembered


def test_a_requirement_s_own_matcher_is_asked_on_every_repeat(
    issuer: TokenIssuer, clock: FixedClock, asynchronous: bool
) -> None:
    """An application's matcher may answer otherwise now (its caller was taken off a list):
    a repeat asks it again, and so does the check of a Requirement subclass."""
    from zerotrust import MatchResult
    from zerotrust.authz.decision import Decision
    from zerotrust.authz.policy import Requirement

    listed = {WEB}

    def on_the_list(spiffe_id: object) -> MatchResult:
        ok = str(spiffe_id) in listed
        return MatchResult(ok, "listed" if ok else "not_listed", "")

    class OpenHours(Requirement):
        open = True

        def check(self, principal: Any, op: Any) -> Decision | None:
            if not OpenHours.open:
                return Decision(False, "requirement_not_met", detail="closed")
            return super().check(principal, op)

    world = World(issuer, clock)
    token = read_token(issuer)
    listed_only, hours = require(callers=on_the_list), OpenHours()
    for requirement in (listed_only, hours):
        for _ in range(2):
            assert world.check(
                get(token), asynchronous=asynchronous, requirement=requirement
            ).allowed
    assert world.pipeline_runs == 2  # one run each, then repeats
    listed.clear()
    OpenHours.open = False
    for requirement in (listed_only, hours):
        refused = world.check(get(token), asynchronous=asynchronous, requirement=requirement)
        assert refused.status == 403 and refused.decision is not None
        assert refused.decision.reason == "requirement_not_met"


def test_dry_run_decisions_are_audited_on_repeat(issuer: TokenIssuer, clock: FixedClock) -> None:
    world = World(issuer, clock)
    token = read_token(issuer)
    for _ in range(3):
        assert world.check(get(token, route="/dry")).allowed
    assert world.pipeline_runs == 1
    assert [e.dry_run for e in world.sink.events] == [True] * 3
    assert {e.would_decide for e in world.sink.events} == {"deny"}


def test_a_handshake_peer_is_rechecked_on_every_repeat(
    issuer: TokenIssuer, clock: FixedClock, ca: DevCA, asynchronous: bool
) -> None:
    bundles = RotatingBundleSource(ca.bundle)
    world = World(issuer, clock, bundles=bundles)
    svid = ca.issue_svid(WEB, ttl=dt.timedelta(minutes=10))
    peer = verify_x509_svid(svid.cert_chain, ca.bundle, now=clock.now())  # as the handshake did
    token = read_token(issuer, ttl=3600)
    for _ in range(2):
        outcome = world.check(get(token, verified_peer=peer), asynchronous=asynchronous)
        assert outcome.allowed and outcome.principal is not None
        assert outcome.principal.proven_by == "mtls+jwt"
    assert world.pipeline_runs == 1
    # another connection of the same workload (another peer object) is decided afresh
    again = verify_x509_svid(svid.cert_chain, ca.bundle, now=clock.now())
    assert world.check(get(token, verified_peer=again), asynchronous=asynchronous).allowed
    assert world.pipeline_runs == 2
    # the authority is removed from the bundle: the open connection loses access
    bundles.set(ca.bundle.with_x509_authorities([DevCA.create("example.org").root_certificate]))
    refused = world.guard.evaluate(get(token, verified_peer=peer))
    assert refused.error is not None and refused.error.code == "untrusted_certificate"
    bundles.set(ca.bundle)
    assert world.check(get(token, verified_peer=peer), asynchronous=asynchronous).allowed
    # the certificate expires while the connection (and the token) live on
    clock.advance(11 * 60)
    expired = world.check(get(token, verified_peer=peer), asynchronous=asynchronous)
    assert expired.error is not None and expired.error.code == "certificate_expired"


def test_the_same_peer_from_a_proxy_address_only_relays_on_repeat(
    issuer: TokenIssuer, clock: FixedClock, ca: DevCA, asynchronous: bool
) -> None:
    # One verified peer object can stand for several connections (gRPC shares one per
    # certificate chain). From a trusted proxy's address that certificate is the proxy's, and
    # it relays only: a repeat of an allow made from another address must not lend it.
    from zerotrust.authn.proxy import TrustedProxies

    mtls_only = Policy([Rule(id="mtls", callers=[Callers(proven_by=["mtls+jwt"])])], id="orders")
    proxies = TrustedProxies(["10.0.0.5"])
    world = World(issuer, clock, pol=mtls_only, bundles=ca.bundle, trusted_proxies=proxies)
    svid = ca.issue_svid(WEB, ttl=dt.timedelta(minutes=10))
    peer = verify_x509_svid(svid.cert_chain, ca.bundle, now=clock.now())
    token = read_token(issuer, ttl=3600)
    direct = world.check(get(token, verified_peer=peer, remote_addr="10.0.0.9"))
    assert direct.allowed and direct.principal is not None
    assert direct.principal.proven_by == "mtls+jwt"
    runs = world.pipeline_runs
    again = world.check(get(token, verified_peer=peer, remote_addr="10.0.0.9"))
    assert again.allowed and world.pipeline_runs == runs  # same address: a repeat
    relayed = world.check(
        get(token, verified_peer=peer, remote_addr="10.0.0.5"), asynchronous=asynchronous
    )
    assert not relayed.allowed and relayed.notes == ("peer_is_proxy",)


def test_a_failing_closed_audit_sink_refuses_repeats_too(
    issuer: TokenIssuer, clock: FixedClock
) -> None:
    failing = [False]

    def record(event: object) -> None:
        if failing[0]:
            raise OSError("disk full")

    world = World(issuer, clock, audit=AuditPipeline([CallableSink(record)], on_error="closed"))
    token = read_token(issuer)
    assert world.guard.evaluate(get(token)).allowed
    failing[0] = True
    refused = world.guard.evaluate(get(token))
    assert not refused.allowed and refused.status == 503
    assert refused.error is not None and refused.error.code == "audit_error"
    assert world.pipeline_runs == 1  # the repeat itself refused: it audits like the pipeline


def test_a_refused_repeat_is_not_the_record_later_repeats_copy(
    issuer: TokenIssuer, clock: FixedClock
) -> None:
    # The first audited repeat builds the event later repeats copy: if a required sink failed
    # on it, the refusal recorded then must not stand for the allows that follow.
    failing = [False]
    sink = MemorySink()

    def record(event: object) -> None:
        if failing[0]:
            raise OSError("disk full")

    world = World(
        issuer, clock, audit=AuditPipeline([sink, CallableSink(record)], on_error="closed")
    )
    token = read_token(issuer)
    assert world.guard.evaluate(get(token)).allowed
    failing[0] = True
    assert world.guard.evaluate(get(token)).status == 503
    failing[0] = False
    repeats = [world.guard.evaluate(get(token)) for _ in range(2)]
    assert all(o.allowed for o in repeats)
    assert world.pipeline_runs == 1
    assert [e.decision for e in sink.events[-2:]] == ["allow", "allow"]
    assert [e.reason for e in sink.events[-2:]] == ["allowed_by_rule"] * 2
    assert not any(n.startswith("supersedes:") for e in sink.events[-2:] for n in e.notes)


def test_events_are_built_again_as_soon_as_a_sink_listens(
    issuer: TokenIssuer, clock: FixedClock, caplog: pytest.LogCaptureFixture
) -> None:
    world = World(issuer, clock, audit=AuditPipeline([LoggingSink()]))
    token = read_token(issuer)
    with caplog.at_level(logging.WARNING, logger="zerotrust.audit"):
        assert world.guard.evaluate(get(token)).event is None  # nobody listens
        assert world.guard.evaluate(get(token)).event is None
    with caplog.at_level(logging.INFO, logger="zerotrust.audit"):
        repeated = world.guard.evaluate(get(token))
    assert repeated.event is not None and repeated.event.decision == "allow"
    assert world.pipeline_runs == 1
    assert [r.name for r in caplog.records] == ["zerotrust.audit"]


@pytest.mark.parametrize("reason", ["custom hook", "rate limit", "store with I/O", "no cache"])
def test_no_repeats_where_a_request_can_decide_differently(
    issuer: TokenIssuer, clock: FixedClock, reason: str
) -> None:
    kwargs: dict[str, Any] = {}
    if reason == "custom hook":
        answers = iter([True, False])
        kwargs["pol"] = Policy(
            [Rule(id="ext", action="CUSTOM", hook=lambda p, o: next(answers)), Rule(id="all")]
        )
    elif reason == "rate limit":
        kwargs["pol"] = Policy(
            rules(),
            rate_limits=[
                RateLimit(id="slow", rate=0.001, burst=1, operations=[Operations(routes=[ROUTE])])
            ],
        )
    elif reason == "store with I/O":
        kwargs["store"] = ResilientStore(MemoryStore(clock=clock))
    world = World(issuer, clock, **kwargs)
    if reason == "no cache":
        verifier = TokenVerifier(
            issuer=ISS, audience=AUD, keys=issuer.jwks(), algorithms=["ES256"], cache_size=0
        )
        world.guard = Guard(
            authenticator=Authenticator(tokens=verifier, clock=clock),
            policy=world.policy,
            audit=world.sink,
            clock=clock,
        )
    token = read_token(issuer)
    first, second = world.guard.evaluate(get(token)), world.guard.evaluate(get(token))
    assert first.allowed
    if reason in ("custom hook", "rate limit"):
        assert not second.allowed  # the hook said no / the bucket is empty: never repeated
    else:
        assert second.allowed
    assert not world.guard._repeats


def test_repeats_are_bounded(issuer: TokenIssuer, clock: FixedClock) -> None:
    from zerotrust import pipeline

    world = World(issuer, clock, pol=Policy([Rule(id="all")]))
    token = read_token(issuer)
    for n in range(pipeline._MAX_REPEATS + 5):
        assert world.guard.evaluate(get(token, route=f"/r{n}")).allowed
        assert len(world.guard._repeats) <= pipeline._MAX_REPEATS
    assert world.guard.evaluate(get(token, route="/r1")).allowed


def test_many_callers_concurrently_never_get_each_others_answers(
    issuer: TokenIssuer, clock: FixedClock
) -> None:
    world = World(issuer, clock)
    readers = [
        read_token(issuer, subject=f"spiffe://example.org/ns/shop/sa/w{n}") for n in range(8)
    ]
    intruder = issuer.issue(subject="intruder", audience=AUD, scopes=["orders:read"])
    no_scope = issuer.issue(subject=WEB, audience=AUD)

    async def main() -> list[tuple[str, Outcome]]:
        views: list[tuple[str, str]] = [(t, "reader") for t in readers] * 5
        views += [(intruder, "intruder"), (no_scope, "no_scope")] * 10
        outcomes = await asyncio.gather(*(world.guard.aevaluate(get(t)) for t, _ in views))
        return [(kind, o) for (_, kind), o in zip(views, outcomes, strict=True)]

    for kind, outcome in asyncio.run(main()) + asyncio.run(main()):
        assert outcome.allowed is (kind == "reader"), kind
        if kind == "intruder":
            assert outcome.decision is not None and outcome.decision.rule_id == "deny-intruder"


def test_what_is_remembered_stays_within_bounds(issuer: TokenIssuer, clock: FixedClock) -> None:
    """Routes come from requests (a gRPC method name from the caller itself): the decisions and
    allows remembered per route must not grow without end."""
    every_route = Policy([Rule(id="mesh", callers=[Callers(trust_domains=["example.org"])])])
    world = World(issuer, clock, pol=every_route, audit=LoggingSink())  # quiet: no event built
    guard, token = world.guard, read_token(issuer)
    for n in range(10_000):
        assert guard.evaluate(get(token, route=f"/orders/{n}")).allowed
        assert len(guard._decisions) <= 8192 and len(guard._repeats) <= 8192
    assert guard.evaluate(get(token, route="/orders/9999")).allowed


def test_a_method_no_real_request_has_is_never_remembered(
    issuer: TokenIssuer, clock: FixedClock
) -> None:
    """The method is the caller's string (h11 takes one as long as the request head): entries
    keyed by long ones would each hold one, so the bounded tables would not bound memory."""
    every_method = Policy([Rule(id="mesh", callers=[Callers(trust_domains=["example.org"])])])
    world = World(issuer, clock, pol=every_method, audit=LoggingSink())
    guard, token = world.guard, read_token(issuer)
    headers = {"authorization": f"Bearer {token}"}
    for n in range(50):
        method = f"M{n}".ljust(10_000, "X")
        view = Request(method=method, route=ROUTE, path="/orders/7", headers=headers)
        assert guard.evaluate(view).allowed
        assert guard.evaluate(view).allowed  # a repeat: decided again, as the pipeline would
    assert not guard._decisions and not guard._repeats
    # real methods, custom ones included, are remembered as before
    for method in ("GET", "PROPFIND", "BASELINE-CONTROL"):
        view = Request(method=method, route=ROUTE, path="/orders/7", headers=headers)
        assert guard.evaluate(view).allowed
    assert len(guard._decisions) == 3 and len(guard._repeats) == 3
    # the bound: up to 64 characters
    for method in ("X" * 64, "X" * 65):
        view = Request(method=method, route=ROUTE, path="/orders/7", headers=headers)
        assert guard.evaluate(view).allowed
    assert len(guard._decisions) == 4 and len(guard._repeats) == 4
