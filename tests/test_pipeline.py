"""The Guard end to end: every outcome, with real tokens and certificates (no mocks)."""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import hashlib
import json
import logging
import urllib.parse

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from zerotrust import FixedClock, match
from zerotrust.audit import MemorySink
from zerotrust.audit.event import TRUNCATION_MARKER
from zerotrust.authn.authenticate import Authenticator
from zerotrust.authn.credentials import ApiKeys
from zerotrust.authn.proxy import TrustedProxies
from zerotrust.authn.request import Request
from zerotrust.authz import Callers, Operations, Policy, RateLimit, Rule, ScopeRule, require
from zerotrust.dev import DevCA
from zerotrust.errors import (
    ConfigurationError,
    InvalidDPoPProof,
    KeysUnavailable,
    StoreUnavailable,
    TokenReplayed,
)
from zerotrust.pipeline import Guard, Outcome
from zerotrust.stores import MemoryStore, RateLimitResult, ResilientStore, Store
from zerotrust.tokens import PrivateJWK, TokenIssuer, TokenVerifier
from zerotrust.tokens._b64 import b64url_encode
from zerotrust.tokens.verified import VerifiedToken

ISS = "https://issuer.example"
AUD = "orders-api"
WEB = "spiffe://example.org/ns/shop/sa/web"
ROUTE = "/orders/{order_id}"
API_KEY = "s3cret-key-value-0123456789abcdef"


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(dt.datetime.now(dt.timezone.utc))


@pytest.fixture(scope="module")
def key() -> PrivateJWK:
    return PrivateJWK.generate("ES256", kid="k1")


@pytest.fixture
def issuer(key: PrivateJWK, clock: FixedClock) -> TokenIssuer:
    return TokenIssuer(key, issuer=ISS, clock=clock)


def policy(**kw: object) -> Policy:
    rules = [
        Rule(id="deny-intruder", action="DENY", callers=[Callers(subjects=["intruder"])]),
        Rule(
            id="read-orders",
            callers=[Callers(not_subjects=["nobody"])],
            operations=[Operations(methods=["GET"], routes=[ROUTE])],
            scopes=ScopeRule(all=["orders:read"]),
        ),
        Rule(
            id="health",
            callers=[Callers(anonymous=True)],
            operations=[Operations(routes=["/healthz"])],
        ),
    ]
    return Policy(rules, id="orders", **kw)  # type: ignore[arg-type]


def make_guard(
    issuer: TokenIssuer,
    clock: FixedClock,
    *,
    pol: Policy | None = None,
    store: Store | None = None,
    **authn: object,
) -> tuple[Guard, MemorySink]:
    sink = MemorySink()
    verifier = TokenVerifier(
        issuer=ISS, audience=AUD, keys=issuer.jwks(), algorithms=["ES256"], clock=clock
    )
    authenticator = Authenticator(tokens=verifier, clock=clock, **authn)  # type: ignore[arg-type]
    store = store if store is not None else MemoryStore(clock=clock)
    return Guard(
        authenticator=authenticator,
        policy=pol or policy(),
        audit=sink,
        store=store,
        service="orders",
        clock=clock,
    ), sink


def hand_signed(key: PrivateJWK, header: dict[str, object], claims: dict[str, object]) -> str:
    """A JWS of ``claims`` signed by ``key`` as written, without the issuer's checks."""
    signing_input = ".".join(b64url_encode(json.dumps(part).encode()) for part in (header, claims))
    return f"{signing_input}.{b64url_encode(key.sign(signing_input.encode()))}"


def get(token: str | None = None, route: str = ROUTE, method: str = "GET", **kw: object) -> Request:
    headers = dict(kw.pop("headers", {}))  # type: ignore[call-overload]
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return Request(
        method=method, route=route, path="/orders/7", headers=headers, host="api.example", **kw
    )  # type: ignore[arg-type]


def test_success_exposes_the_principal(issuer: TokenIssuer, clock: FixedClock) -> None:
    guard, sink = make_guard(issuer, clock)
    token = issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"])
    outcome = guard.evaluate(get(token))
    assert outcome.allowed and outcome.status == 200 and outcome.grpc_status == "OK"
    assert outcome.body() is None and outcome.headers == ()
    with pytest.raises(AttributeError):  # frozen: an outcome is shared, never changed
        outcome.allowed = False  # type: ignore[misc]
    assert outcome.principal is not None
    assert str(outcome.principal.spiffe_id) == WEB
    assert outcome.principal.proven_by == "jwt"
    assert outcome.decision is not None and outcome.decision.rule_id == "read-orders"
    event = sink.last
    assert event is not None and event.decision == "allow" and event.route == ROUTE
    assert event.token_jti == outcome.principal.token_jti
    assert token not in event.to_json()


def test_the_audit_event_names_the_caller_as_the_principal_does(
    issuer: TokenIssuer, clock: FixedClock
) -> None:
    guard, sink = make_guard(issuer, clock)
    token = issuer.issue(
        subject=WEB,
        audience=AUD,
        scopes=["orders:read"],
        extra_claims={"client_id": "web-app"},
        act={"sub": "spiffe://example.org/ns/gw/sa/gw"},
    )
    outcome = guard.evaluate(get(token))
    principal, event = outcome.principal, sink.last
    assert outcome.allowed and principal is not None and event is not None
    assert (event.spiffe_id, event.subject, event.issuer) == (WEB, WEB, ISS)
    assert (event.proven_by, event.client_id) == ("jwt", "web-app")
    assert event.actor == principal.actor == "spiffe://example.org/ns/gw/sa/gw"
    assert (event.method, event.route, event.kind) == ("GET", ROUTE, "http")
    # a refusal before anyone was authenticated names no one
    guard.evaluate(get(None))
    refused = sink.last
    assert refused is not None and refused.decision == "deny"
    assert (refused.spiffe_id, refused.subject, refused.issuer, refused.proven_by) == (None,) * 4
    assert (refused.client_id, refused.actor, refused.cert_fingerprint) == (None,) * 3


def test_a_grpc_event_names_the_full_method(issuer: TokenIssuer, clock: FixedClock) -> None:
    method = "/shop.Orders/Get"
    rule = Rule(id="grpc", operations=[Operations(routes=[method], kinds=["grpc"])])
    guard, sink = make_guard(issuer, clock, pol=Policy([rule]))
    token = issuer.issue(subject=WEB, audience=AUD)
    view = Request(method="POST", route=method, path=method, kind="grpc",
                   headers={"authorization": f"Bearer {token}"})  # fmt: skip
    assert guard.evaluate(view).allowed
    assert sink.last is not None and (sink.last.method, sink.last.kind) == (method, "grpc")


def test_only_an_rpc_s_event_records_a_grpc_status(issuer: TokenIssuer, clock: FixedClock) -> None:
    """``grpc_status`` is the status as sent: an HTTP request is sent none, so its events
    record ``None``, allowed or refused; an RPC's record the code its caller got."""
    method = "/shop.Orders/Get"
    rule = Rule(id="grpc", operations=[Operations(routes=[method], kinds=["grpc"])])
    guard, sink = make_guard(issuer, clock, pol=Policy([*policy().rules, rule]))
    token = issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"])
    seen = []
    for view in (get(token), get(None), get(token, route="/admin")):
        outcome = guard.evaluate(view)
        assert sink.last is not None and outcome.grpc_status is not None  # the adapters' own
        seen.append((sink.last.status, sink.last.grpc_status))
    assert seen == [(200, None), (401, None), (403, None)]
    for headers, code in (({"authorization": f"Bearer {token}"}, "OK"), ({}, "UNAUTHENTICATED")):
        view = Request(method="POST", route=method, path=method, kind="grpc", headers=headers)
        guard.evaluate(view)
        assert sink.last is not None and sink.last.grpc_status == code


@pytest.mark.parametrize(
    ("case", "status", "challenge", "code"),
    [
        ("no credentials", 401, 'Bearer realm="orders"', "missing_credentials"),
        ("garbage token", 401, 'Bearer realm="orders", error="invalid_token"', "malformed_token"),
        ("expired", 401, 'Bearer realm="orders", error="invalid_token"', "token_expired"),
        ("wrong audience", 401, 'Bearer realm="orders", error="invalid_token"', "invalid_audience"),
        (
            "insufficient scope",
            403,
            'Bearer realm="orders", error="insufficient_scope", scope="orders:read"',
            "insufficient_scope",
        ),
        ("deny rule", 403, None, "access_denied"),
        ("no rule for route", 403, None, "access_denied"),
        (
            "two authorization headers",
            400,
            'Bearer realm="orders", error="invalid_request"',
            "malformed_credentials",
        ),
    ],
)
def test_refusals(
    issuer: TokenIssuer, clock: FixedClock, case: str, status: int, challenge: str | None, code: str
) -> None:
    guard, sink = make_guard(issuer, clock)
    good = issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"])
    view = {
        "no credentials": get(),
        "garbage token": get("abc.def.ghi"),
        "expired": get(issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"], ttl=1)),
        "wrong audience": get(
            issuer.issue(subject=WEB, audience="billing", scopes=["orders:read"])
        ),
        "insufficient scope": get(issuer.issue(subject=WEB, audience=AUD)),
        "deny rule": get(issuer.issue(subject="intruder", audience=AUD, scopes=["orders:read"])),
        "no rule for route": get(good, route="/admin"),
        "two authorization headers": Request(
            route=ROUTE,
            headers=[("authorization", f"Bearer {good}"), ("authorization", f"Bearer {good}")],
        ),
    }[case]
    if case == "expired":
        clock.advance(120)
    outcome = guard.evaluate(view)
    assert not outcome.allowed
    assert outcome.status == status
    assert outcome.www_authenticate == challenge
    assert outcome.error is not None and outcome.error.code == code
    body = outcome.body()
    assert body is not None and set(body) == {"error", "error_description"}
    assert good not in json.dumps(body)
    assert sink.last is not None and sink.last.decision == "deny" and sink.last.status == status
    # the event's reason is the policy's where the policy refused, else the error's code
    policy_reasons = {
        "no credentials": "no_allow_rule_matched",
        "deny rule": "denied_by_rule",
        "no rule for route": "no_allow_rule_matched",
    }
    assert sink.last.reason == policy_reasons.get(case, code)
    assert outcome.grpc_status in {"UNAUTHENTICATED", "PERMISSION_DENIED"}


@pytest.mark.parametrize(
    ("value", "status", "code"),
    [
        ("Basic dXNlcjpwYXNz", 401, "unsupported_scheme"),  # RFC 6750 3.1: no error code
        ("\x1cBearer {t}", 401, "unsupported_scheme"),  # only SP and HTAB are trimmed
        ("\xa0Bearer {t}", 401, "unsupported_scheme"),
        ("Bearer {t}\x85", 400, "malformed_credentials"),
        ("Bearer\t{t}", 400, "malformed_credentials"),  # "Bearer" 1*SP b64token
        ("Bearer", 400, "malformed_credentials"),
        ("\t Bearer {t} \t", 200, None),  # optional whitespace around the field value
        ("bearer  {t}", 200, None),  # the scheme is case-insensitive, then 1*SP
    ],
)
def test_authorization_header_grammar(
    issuer: TokenIssuer, clock: FixedClock, value: str, status: int, code: str | None
) -> None:
    guard, _ = make_guard(issuer, clock)
    token = issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"])
    outcome = guard.evaluate(Request(route=ROUTE, headers={"authorization": value.format(t=token)}))
    assert outcome.status == status
    if code is None:
        assert outcome.allowed
    else:
        assert outcome.error is not None and outcome.error.code == code
    if status == 401:
        assert outcome.www_authenticate == 'Bearer realm="orders"'
        assert outcome.body() == {
            "error": "missing_credentials",
            "error_description": "authentication required",
        }


def test_a_malformed_credential_is_answered_with_its_error_s_own_http_status(
    issuer: TokenIssuer, clock: FixedClock
) -> None:
    """``http_status`` is how the integrations answer (docs/errors.md): an application or a
    custom adapter rendering ``outcome.error`` itself sends what the built-in ones send."""
    guard, _ = make_guard(issuer, clock)
    token = issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"])
    for headers in (
        [("authorization", f"Bearer {token}"), ("authorization", f"Bearer {token}")],
        [("authorization", "Bearer")],
    ):
        outcome = guard.evaluate(Request(route=ROUTE, headers=headers))
        assert outcome.error is not None and outcome.error.code == "malformed_credentials"
        assert outcome.status == outcome.error.http_status == 400  # RFC 6750 3.1
        assert outcome.grpc_status == outcome.error.grpc_status == "UNAUTHENTICATED"


def test_missing_scopes_of_a_caller_without_a_token_are_challenged_without_an_error_code(
    issuer: TokenIssuer, clock: FixedClock, ca: DevCA
) -> None:
    """RFC 6750 3.1: ``insufficient_scope`` is about the access token presented; a caller
    authenticated otherwise (a client certificate, an API key) is told the scopes only."""
    keys = ApiKeys({"ci": ApiKeys.hash(API_KEY)}, header="x-api-key")
    guard, _ = make_guard(issuer, clock, bundles=ca.bundle, api_keys=keys)
    svid = ca.issue_svid(WEB)
    by_certificate = get(peer_chain=[c.public_bytes(Encoding.DER) for c in svid.cert_chain])
    for view in (by_certificate, get(headers={"x-api-key": API_KEY})):
        outcome = guard.evaluate(view)
        assert outcome.status == 403 and outcome.error is not None
        assert outcome.error.code == "insufficient_scope"
        assert outcome.www_authenticate == 'Bearer realm="orders", scope="orders:read"'
    with_token = guard.evaluate(get(issuer.issue(subject=WEB, audience=AUD)))
    assert with_token.www_authenticate == (
        'Bearer realm="orders", error="insufficient_scope", scope="orders:read"'
    )


def test_anonymous_route(issuer: TokenIssuer, clock: FixedClock) -> None:
    guard, _ = make_guard(issuer, clock)
    outcome = guard.evaluate(get(route="/healthz"))
    assert outcome.allowed and outcome.principal is None
    assert not guard.evaluate(
        get("not-a-jwt", route="/healthz")
    ).allowed  # bad credentials never fall back


def test_dry_run_is_recorded_not_enforced(issuer: TokenIssuer, clock: FixedClock) -> None:
    guard, sink = make_guard(issuer, clock, pol=policy(dry_run=True))
    outcome = guard.evaluate(get(issuer.issue(subject=WEB, audience=AUD), route="/admin"))
    assert outcome.allowed
    event = sink.last
    assert event is not None and event.dry_run and event.would_decide == "deny"
    # the audit trail names what would have refused it, not only that something would
    assert event.would_reason == outcome.decision.would_reason  # type: ignore[union-attr]
    assert event.would_reason is not None
    assert event.would_rule_id == outcome.decision.would_rule_id  # type: ignore[union-attr]


def test_a_dry_run_allow_rule_records_whom_it_would_admit(
    issuer: TokenIssuer, clock: FixedClock
) -> None:
    """The other direction: a rule tried out before it is enforced. The request is refused as
    the enforced rules say, and the event says the new rule would have allowed it."""
    trial = Rule(
        id="admin-trial",
        callers=[Callers(spiffe_ids=[WEB])],
        operations=[Operations(routes=["/admin"])],
        dry_run=True,
    )
    guard, sink = make_guard(issuer, clock, pol=Policy([*policy().rules, trial]))
    outcome = guard.evaluate(get(issuer.issue(subject=WEB, audience=AUD), route="/admin"))
    assert not outcome.allowed and outcome.status == 403
    event = sink.last
    assert event is not None and event.decision == "deny"
    assert event.dry_run and event.would_decide == "allow"
    assert event.would_rule_id == "admin-trial"
    # where the trial rule changes nothing, the event reports no dry run
    guard.evaluate(get(issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"])))
    assert sink.last is not None and sink.last.decision == "allow"
    assert not sink.last.dry_run and sink.last.would_decide is None


def test_rate_limited(issuer: TokenIssuer, clock: FixedClock) -> None:
    limited = policy(rate_limits=[RateLimit("per-caller", rate=1, burst=2)])
    guard, sink = make_guard(issuer, clock, pol=limited)
    token = issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"])
    assert [guard.evaluate(get(token)).status for _ in range(3)] == [200, 200, 429]
    refused = guard.evaluate(get(token))
    assert refused.headers == (("Retry-After", "1"),)
    assert refused.www_authenticate is None  # a rate limit is no challenge
    # the decision handed to the adapter says the same as the outcome, and why
    assert refused.decision is not None and not refused.decision.allowed
    assert (refused.decision.reason, refused.decision.rule_id) == ("rate_limited", "per-caller")
    assert sink.last is not None and sink.last.decision == "deny"
    assert refused.grpc_status == "RESOURCE_EXHAUSTED"
    assert (
        sink.last is not None
        and sink.last.reason == "rate_limited"
        and sink.last.rule_id == "per-caller"
    )
    clock.advance(1)
    assert guard.evaluate(get(token)).allowed


class RefusingAtOnce(MemoryStore):
    """A store refusing with a wait shorter than any whole second (a bucket refilling now)."""

    def acquire(self, key: str, **kwargs: object) -> RateLimitResult:  # type: ignore[override]
        return RateLimitResult(allowed=False, remaining=0, retry_after=0.0)


def test_retry_after_is_at_least_one_second(issuer: TokenIssuer, clock: FixedClock) -> None:
    limited = policy(rate_limits=[RateLimit("per-caller", rate=1, burst=2)])
    guard, _ = make_guard(issuer, clock, pol=limited, store=RefusingAtOnce(clock=clock))
    token = issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"])
    refused = guard.evaluate(get(token))
    assert refused.status == 429 and refused.headers == (("Retry-After", "1"),)


def test_several_rate_limits_each_count_and_the_one_that_refuses_is_named(
    issuer: TokenIssuer, clock: FixedClock
) -> None:
    """Every limit that applies takes from its own bucket, per caller; the refusal names the
    limit that refused, and its ``Retry-After`` is that bucket's wait rounded up to a whole
    second (never down: a client retrying then would be refused again)."""
    limits = [
        RateLimit("reads", rate=0.4, burst=1, operations=[Operations(methods=["GET"])]),
        RateLimit("all-calls", rate=0.001, burst=100),
    ]
    guard, sink = make_guard(issuer, clock, pol=policy(rate_limits=limits))
    web = issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"])
    other = issuer.issue(subject="spiffe://example.org/ns/shop/sa/batch", audience=AUD,
                         scopes=["orders:read"])  # fmt: skip
    assert guard.evaluate(get(web)).allowed
    refused = guard.evaluate(get(web))
    assert refused.status == 429 and refused.headers == (("Retry-After", "3"),)  # 2.5 s
    assert refused.decision is not None and refused.decision.rule_id == "reads"
    assert sink.last is not None and sink.last.rule_id == "reads"
    assert guard.evaluate(get(other)).allowed  # another caller, other buckets
    clock.advance(2)
    assert guard.evaluate(get(web)).status == 429  # 0.5 s early
    clock.advance(0.5)
    assert guard.evaluate(get(web)).allowed
    # the wide limit counted the two calls of this caller that were served, and only them
    bucket = f"{len('all-calls')}:all-calls:{WEB}"  # RateLimit.key
    left = guard.store.acquire(bucket, rate=0.001, burst=100).remaining
    assert left == 100 - 2 - 1


def test_rate_limits_count_only_allowed_requests(issuer: TokenIssuer, clock: FixedClock) -> None:
    # a refusal stays the policy's (403, not 429) and takes nothing from the caller's bucket;
    # anonymous requests have no bucket to take from
    limited = policy(rate_limits=[RateLimit("per-caller", rate=0.001, burst=1)])
    guard, sink = make_guard(issuer, clock, pol=limited)
    intruder = issuer.issue(subject="intruder", audience=AUD, scopes=["orders:read"])
    for _ in range(3):
        refused = guard.evaluate(get(intruder))
        assert refused.status == 403 and refused.error is not None
        assert refused.error.code == "access_denied"
        assert sink.last is not None and sink.last.rule_id == "deny-intruder"
    assert [guard.evaluate(get(route="/healthz")).status for _ in range(3)] == [200] * 3


def test_tokens_without_sub_get_a_bucket_of_their_client(
    key: PrivateJWK, issuer: TokenIssuer, clock: FixedClock
) -> None:
    """A token without ``sub`` (client credentials) is named by its client_id (or azp): two
    clients never share one rate-limit bucket (they all shared "api-key:")."""
    open_rule = Rule(id="any-token", callers=[Callers(issuers=[ISS])])
    limited = Policy([open_rule], rate_limits=[RateLimit("per-caller", rate=0.001, burst=1)])
    guard, _ = make_guard(issuer, clock, pol=limited)

    def subless(**claims: object) -> str:
        now = int(clock.now().timestamp())
        header = {"alg": "ES256", "kid": "k1", "typ": "JWT"}
        body = {"iss": ISS, "aud": AUD, "iat": now, "exp": now + 300, **claims}
        return hand_signed(key, header, body)

    tenant_a, tenant_b = subless(client_id="tenant-a"), subless(azp="tenant-b")
    first = guard.evaluate(get(tenant_a))
    assert first.allowed and first.principal is not None
    assert first.principal.id == f"{ISS}#client_id:tenant-a"
    assert guard.evaluate(get(tenant_a)).status == 429  # its own bucket is empty
    assert guard.evaluate(get(tenant_b)).allowed  # another client, another bucket
    nameless = guard.evaluate(get(subless(jti="t-1")))
    assert nameless.allowed and nameless.principal is not None
    assert nameless.principal.id == f"{ISS}#jti:t-1"


def test_a_dry_run_policy_records_its_rate_limits_without_enforcing_them(
    issuer: TokenIssuer, clock: FixedClock
) -> None:
    shadow = policy(rate_limits=[RateLimit("per-caller", rate=1, burst=2)], dry_run=True)
    guard, sink = make_guard(issuer, clock, pol=shadow)
    token = issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"])
    assert [guard.evaluate(get(token)).status for _ in range(3)] == [200, 200, 200]
    event = sink.last
    assert event is not None and event.decision == "allow" and event.dry_run
    assert event.would_decide == "deny"
    assert (event.would_rule_id, event.would_reason) == ("per-caller", "rate_limited")
    assert sink.events[0].would_decide is None  # within the bucket: nothing to report
    assert sink.events[0].would_rule_id is None and sink.events[0].would_reason is None


def test_a_dry_run_rule_refusal_is_not_overwritten_by_a_rate_limit(
    issuer: TokenIssuer, clock: FixedClock
) -> None:
    rules = [
        Rule(id="everyone", callers=[Callers(trust_domains=["example.org"])]),
        Rule(id="new-deny", action="DENY", callers=[Callers(spiffe_ids=[WEB])], dry_run=True),
    ]
    shadow = Policy(rules, rate_limits=[RateLimit("one", rate=0.001, burst=1)], dry_run=True)
    guard, _ = make_guard(issuer, clock, pol=shadow)
    token = issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"])
    for _ in range(2):
        outcome = guard.evaluate(get(token))
        assert outcome.allowed and outcome.decision is not None
        assert outcome.decision.would_rule_id == "new-deny"  # the rule, not the rate limit
        assert outcome.decision.would_allow is False


class DownKeys:
    def get_keys(self, *, missing_kid: str | None = None) -> object:
        raise KeysUnavailable("jwks endpoint down")

    async def get_keys_async(self, *, missing_kid: str | None = None) -> object:
        raise KeysUnavailable("jwks endpoint down")


def test_keys_unavailable_is_503(issuer: TokenIssuer, clock: FixedClock) -> None:
    verifier = TokenVerifier(
        issuer=ISS, audience=AUD, keys=DownKeys(), algorithms=["ES256"], clock=clock
    )
    guard = Guard(
        authenticator=Authenticator(tokens=verifier, clock=clock),
        policy=policy(),
        audit=MemorySink(),
        clock=clock,
    )
    outcome = guard.evaluate(get(issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"])))
    assert (outcome.allowed, outcome.status, outcome.grpc_status) == (False, 503, "UNAVAILABLE")
    assert asyncio.run(guard.aevaluate(get(issuer.issue(subject=WEB, audience=AUD)))).status == 503


class DownStore(MemoryStore):
    def is_revoked(self, **kw: object) -> bool:  # type: ignore[override]
        raise StoreUnavailable("redis down")


def test_store_unavailable_fails_closed(issuer: TokenIssuer, clock: FixedClock) -> None:
    guard, _ = make_guard(issuer, clock)
    guard = Guard(
        authenticator=guard.authenticator,
        policy=guard.policy,
        audit=MemorySink(),
        store=DownStore(clock=clock),
        clock=clock,
    )
    outcome = guard.evaluate(get(issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"])))
    assert (outcome.allowed, outcome.status) == (False, 503)


def test_a_guard_leaves_no_listener_on_a_store_that_outlives_it(
    issuer: TokenIssuer, clock: FixedClock
) -> None:
    # Guards rebuilt on one long-lived store (a configuration reload) are not kept alive by
    # it: their verifiers and caches go with them, and a revocation reaches live Guards only
    import gc
    import weakref

    store = MemoryStore(clock=clock)

    def build() -> Guard:
        verifier = TokenVerifier(
            issuer=ISS, audience=AUD, keys=issuer.jwks(), algorithms=["ES256"], clock=clock
        )
        authenticator = Authenticator(tokens=verifier, clock=clock)
        return Guard(authenticator=authenticator, policy=policy(), store=store, clock=clock)

    gone = [weakref.ref(build()) for _ in range(20)]
    gc.collect()
    assert all(ref() is None for ref in gone)  # the store kept none of them alive
    guard = build()
    assert len(store._listeners._callbacks) == 1  # the live Guard's only
    token = issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"])
    first = guard.evaluate(get(token))
    assert first.allowed and first.principal is not None and first.principal.token_jti
    store.revoke_token(first.principal.token_jti, expires_at=clock.now().timestamp() + 300)
    assert not guard.evaluate(get(token)).allowed  # its listener still works


def test_a_revocation_empties_the_token_cache_of_every_guard_on_the_store(
    issuer: TokenIssuer, clock: FixedClock
) -> None:
    store = MemoryStore(clock=clock)
    verifiers = [
        TokenVerifier(
            issuer=ISS, audience=AUD, keys=issuer.jwks(), algorithms=["ES256"], clock=clock
        )
        for _ in range(2)
    ]
    guards = [
        Guard(
            authenticator=Authenticator(tokens=v, clock=clock),
            policy=policy(),
            store=store,
            clock=clock,
        )
        for v in verifiers
    ]
    token = issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"])
    other = issuer.issue(subject="spiffe://example.org/ns/shop/sa/other", audience=AUD)
    for guard in guards:
        assert guard.evaluate(get(token)).allowed
        guard.evaluate(get(other))
    assert [len(v.cache or ()) for v in verifiers] == [2, 2]
    jti = verifiers[0].verify(token).jti
    assert jti is not None
    store.revoke_token(jti, expires_at=clock.now().timestamp() + 300)
    assert [len(v.cache or ()) for v in verifiers] == [1, 1]  # that token only
    store.revoke_subject(WEB, issuer=ISS, until=clock.now().timestamp() + 300)
    assert [len(v.cache or ()) for v in verifiers] == [0, 0]  # whom it concerns is not cached


def test_revocation_evicts_and_refuses(issuer: TokenIssuer, clock: FixedClock) -> None:
    guard, _sink = make_guard(issuer, clock)
    token = issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"])
    first = guard.evaluate(get(token))
    assert first.allowed and first.principal is not None and first.principal.token_jti
    guard.store.revoke_token(first.principal.token_jti, expires_at=clock.now().timestamp() + 300)
    again = guard.evaluate(get(token))
    assert (again.allowed, again.status, again.error.code if again.error else None) == (
        False,
        401,
        "token_revoked",
    )
    guard.store.revoke_subject(WEB, issuer=ISS, until=clock.now().timestamp() + 600)
    other = issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"])
    assert not guard.evaluate(get(other)).allowed


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("kind", ["memory", "store with I/O"])
def test_revocation_cutoffs_judge_each_tokens_iat(
    issuer: TokenIssuer, clock: FixedClock, kind: str, asynchronous: bool
) -> None:
    # In-process stores are asked directly, others through the driver (awaited by aevaluate):
    # both refuse what is revoked, and pass the token's iat so that a subject's cut-off does
    # not also refuse the tokens issued after it.
    memory = MemoryStore(clock=clock)
    store = memory if kind == "memory" else ResilientStore(memory)
    built, _ = make_guard(issuer, clock)
    guard = Guard(authenticator=built.authenticator, policy=built.policy, store=store, clock=clock)

    def evaluate(token: str) -> tuple[int, str | None]:
        if asynchronous:
            outcome = asyncio.run(guard.aevaluate(get(token)))
        else:
            outcome = guard.evaluate(get(token))
        return outcome.status, outcome.error.code if outcome.error else None

    before = issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"])
    assert evaluate(before) == (200, None)
    memory.revoke_subject(WEB, issuer=ISS, until=clock.now().timestamp() + 600)
    assert evaluate(before) == (401, "token_revoked")
    clock.advance(2)
    after = issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"])
    assert evaluate(after) == (200, None)  # issued after the cut-off
    principal = guard.evaluate(get(after)).principal
    assert principal is not None and principal.token_jti is not None
    memory.revoke_token(principal.token_jti, expires_at=clock.now().timestamp() + 300)
    assert evaluate(after) == (401, "token_revoked")


def test_revocation_checks_can_be_turned_off(issuer: TokenIssuer, clock: FixedClock) -> None:
    memory = MemoryStore(clock=clock)
    built, _ = make_guard(issuer, clock)
    token = issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"])
    memory.revoke_subject(WEB, issuer=ISS, until=clock.now().timestamp() + 600)
    for store in (memory, ResilientStore(memory)):
        guard = Guard(
            authenticator=built.authenticator,
            policy=built.policy,
            store=store,
            clock=clock,
            check_revocation=False,
        )
        assert guard.evaluate(get(token)).allowed


class NoBlockingStore(ResilientStore):
    """A store with I/O whose blocking calls must never be made on the event loop."""

    def is_revoked(
        self, *, jti: str | None, subject: str | None, issuer: str, issued_at: float | None
    ) -> bool:
        raise AssertionError("a blocking store call on the event loop")


def test_a_store_with_io_is_awaited_and_asked_about_tokens_only(
    issuer: TokenIssuer, clock: FixedClock
) -> None:
    guard, _ = make_guard(issuer, clock, store=NoBlockingStore(MemoryStore(clock=clock)))
    token = issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"])
    assert asyncio.run(guard.aevaluate(get(token))).allowed
    # a request without a token has nothing to look up (anonymous, certificate, API key)
    assert guard.evaluate(get(None, route="/healthz")).allowed
    assert asyncio.run(guard.aevaluate(get(None, route="/healthz"))).allowed


def test_unexpected_errors_fail_closed(
    issuer: TokenIssuer, clock: FixedClock, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(principal: object, op: object) -> bool:
        raise RuntimeError("secret internals")

    pol = Policy([Rule(id="ext", action="CUSTOM", hook=broken), Rule(id="all")])
    guard, _ = make_guard(issuer, clock, pol=pol)
    outcome = guard.evaluate(get(issuer.issue(subject=WEB, audience=AUD)))
    assert not outcome.allowed and outcome.status == 403
    assert "secret internals" not in json.dumps(outcome.body())


def test_requirement_combines_with_policy(issuer: TokenIssuer, clock: FixedClock) -> None:
    guard, _ = make_guard(issuer, clock)
    token = issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"])
    assert guard.evaluate(get(token), require(callers=match.member_of("example.org"))).allowed
    refused = guard.evaluate(get(token), require(scopes=["orders:write"]))
    assert refused.status == 403
    assert (
        refused.www_authenticate
        == 'Bearer realm="orders", error="insufficient_scope", scope="orders:write"'
    )
    # RFC 6750 3: the scope attribute is a space-delimited list
    both = guard.evaluate(get(token), require(scopes=["orders:write", "orders:admin"]))
    assert both.www_authenticate is not None
    assert both.www_authenticate.endswith('scope="orders:write orders:admin"')
    assert guard.evaluate(get(token), require(callers=match.member_of("other.org"))).status == 403
    # a policy refusal is not replaced by the requirement's: it names the rule that refused
    intruder = issuer.issue(subject="intruder", audience=AUD, scopes=["orders:read"])
    denied = guard.evaluate(get(intruder), require(scopes=["orders:write"]))
    assert denied.status == 403 and denied.www_authenticate is None
    assert denied.decision is not None and denied.decision.rule_id == "deny-intruder"


def test_an_adapter_refusal_is_answered_and_audited_like_any_other(
    issuer: TokenIssuer, clock: FixedClock
) -> None:
    from zerotrust.errors import MalformedCredentials

    guard, sink = make_guard(issuer, clock)
    outcome = guard.refuse(get(None), MalformedCredentials("more than 100 header lines"))
    assert (outcome.allowed, outcome.status) == (False, 400)
    assert outcome.www_authenticate == 'Bearer realm="orders", error="invalid_request"'
    assert outcome.event is sink.last and sink.last is not None
    assert (sink.last.decision, sink.last.reason) == ("deny", "malformed_credentials")


def test_refine_checks_a_handler_requirement_after_the_policy(
    issuer: TokenIssuer, clock: FixedClock
) -> None:
    guard, sink = make_guard(issuer, clock)
    view = get(issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"]))
    allowed = guard.evaluate(view)
    assert guard.refine(view, allowed, require(scopes=["orders:read"])) is allowed
    refused = guard.refine(view, allowed, require(scopes=["orders:write"]))
    assert refused.status == 403 and refused.error is not None
    assert refused.error.code == "insufficient_scope"
    assert refused.decision is not None and refused.decision.policy_id == "orders"
    assert sink.last is refused.event and sink.last is not None
    assert sink.last.notes == ("handler_requirement",) and sink.last.policy_id == "orders"
    intruder = get(issuer.issue(subject="intruder", audience=AUD, scopes=["orders:read"]))
    denied = guard.evaluate(intruder)
    assert guard.refine(intruder, denied, require(scopes=["orders:write"])) is denied


def test_refine_fails_closed_and_audits_a_requirement_that_errs(
    issuer: TokenIssuer, clock: FixedClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A requirement's matcher that raises (a directory that is down), or answers something
    else than a MatchResult, made refine() raise: the framework's own 500, and an audit trail
    holding only the middleware's allow. It is refused and audited, as evaluate() does."""

    def directory(spiffe_id: object) -> object:
        raise KeyError("directory down")

    guard, sink = make_guard(issuer, clock)
    view = get(issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"]))
    allowed = guard.evaluate(view)
    with caplog.at_level(logging.ERROR, logger="zerotrust"):
        refused = guard.refine(view, allowed, require(callers=directory))
    assert (refused.allowed, refused.status) == (False, 500)
    assert refused.error is not None and "directory" not in str(refused.error)
    assert sink.last is refused.event and sink.last is not None
    assert (sink.last.decision, sink.last.notes) == ("deny", ("handler_requirement",))
    assert any("requirement" in r.getMessage() for r in caplog.records)
    wrong = guard.refine(view, allowed, require(callers=lambda spiffe_id: True))
    assert (wrong.allowed, wrong.status) == (False, 500) and sink.last is wrong.event
    assert wrong.error is not None and wrong.error.code == "configuration_error"


def test_explain_has_no_side_effects(issuer: TokenIssuer, clock: FixedClock) -> None:
    limited = policy(rate_limits=[RateLimit("one", rate=0.001, burst=1)])
    guard, sink = make_guard(issuer, clock, pol=limited)
    token = issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"])
    for _ in range(3):
        assert guard.explain(get(token)).allowed
    assert len(sink.events) == 0
    assert guard.evaluate(get(token)).allowed


# --- certificates -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> DevCA:
    return DevCA.create("example.org")


def cert_policy() -> Policy:
    return Policy(
        [Rule(id="shop", callers=[Callers(spiffe_ids=["spiffe://example.org/ns/shop/*"])])]
    )


def test_direct_mtls_peer_chain(issuer: TokenIssuer, clock: FixedClock, ca: DevCA) -> None:
    guard, sink = make_guard(issuer, clock, pol=cert_policy(), bundles=ca.bundle)
    svid = ca.issue_svid(WEB)
    der = [c.public_bytes(Encoding.DER) for c in svid.cert_chain]
    outcome = guard.evaluate(get(peer_chain=der))
    assert outcome.allowed and outcome.principal is not None
    assert (
        outcome.principal.proven_by == "mtls"
        and outcome.principal.cert_fingerprint == svid.fingerprint
    )
    event = sink.last  # the certificate's fingerprint, never the certificate
    assert event is not None and event.cert_fingerprint == svid.fingerprint
    assert (event.proven_by, event.spiffe_id) == ("mtls", WEB)
    stranger = DevCA.create("example.org").issue_svid(WEB)
    refused = guard.evaluate(
        get(peer_chain=[c.public_bytes(Encoding.DER) for c in stranger.cert_chain])
    )
    assert (
        refused.status == 401
        and refused.error is not None
        and refused.error.code == "untrusted_certificate"
    )


def xfcc_for(pem: bytes) -> str:
    return (
        'By=spiffe://example.org/ns/mesh/sa/proxy;Cert="'
        + urllib.parse.quote(pem.decode(), safe="")
        + '"'
    )


def test_forwarded_cert_only_from_trusted_proxy(
    issuer: TokenIssuer, clock: FixedClock, ca: DevCA
) -> None:
    proxies = TrustedProxies(["10.0.0.0/8"], header="xfcc")
    guard, sink = make_guard(
        issuer, clock, pol=cert_policy(), bundles=ca.bundle, trusted_proxies=proxies
    )
    svid = ca.issue_svid(WEB)
    header = {"x-forwarded-client-cert": xfcc_for(svid.leaf.public_bytes(Encoding.PEM))}
    via_proxy = guard.evaluate(get(headers=header, remote_addr="10.1.2.3"))
    assert (
        via_proxy.allowed
        and via_proxy.principal is not None
        and via_proxy.principal.proven_by == "proxy-mtls"
    )
    assert sink.last is not None and "forwarded_cert_xfcc" in sink.last.notes
    spoofed = guard.evaluate(get(headers=header, remote_addr="203.0.113.9"))
    assert spoofed.status == 401
    assert sink.last is not None and "forwarded_cert_ignored_untrusted_peer" in sink.last.notes
    # a chain the proxy forwarded and verification refused is recorded as forwarded too
    stranger = DevCA.create("example.org").issue_svid(WEB)
    untrusted = {"x-forwarded-client-cert": xfcc_for(stranger.leaf.public_bytes(Encoding.PEM))}
    refused = guard.evaluate(get(headers=untrusted, remote_addr="10.1.2.3"))
    assert refused.status == 401 and refused.error is not None
    assert sink.last is not None and "forwarded_cert_xfcc" in sink.last.notes


# --- sender-constrained tokens ------------------------------------------------------------


def test_certificate_bound_token(issuer: TokenIssuer, clock: FixedClock, ca: DevCA) -> None:
    guard, _ = make_guard(issuer, clock, bundles=ca.bundle)
    svid, other = ca.issue_svid(WEB), ca.issue_svid(WEB)
    token = issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"], bind_cert=svid.leaf)

    def with_cert(s: object) -> Request:
        return get(token, peer_chain=[c.public_bytes(Encoding.DER) for c in s.cert_chain])  # type: ignore[attr-defined]

    ok = guard.evaluate(with_cert(svid))
    assert ok.allowed and ok.principal is not None and ok.principal.proven_by == "mtls+bound-jwt"
    for view in (with_cert(other), get(token)):
        refused = guard.evaluate(view)
        assert (
            refused.status == 401
            and refused.error is not None
            and refused.error.code == "token_binding_mismatch"
        )


def test_a_policy_names_a_certificate_bound_token_as_mtls_plus_bound_jwt(
    issuer: TokenIssuer, clock: FixedClock, ca: DevCA
) -> None:
    # the design's "how it was proven" vocabulary: mtls, jwt, mtls+bound-jwt
    only_bound = Policy([Rule(id="bound", callers=[Callers(proven_by=["mtls+bound-jwt"])])])
    guard, sink = make_guard(issuer, clock, pol=only_bound, bundles=ca.bundle)
    svid = ca.issue_svid(WEB)
    chain = [c.public_bytes(Encoding.DER) for c in svid.cert_chain]
    bound = issuer.issue(subject=WEB, audience=AUD, bind_cert=svid.leaf)
    ok = guard.evaluate(get(bound, peer_chain=chain))
    assert ok.allowed and ok.principal is not None
    assert ok.principal.proven_by == "mtls+bound-jwt"
    assert sink.last is not None and sink.last.proven_by == "mtls+bound-jwt"
    plain = issuer.issue(subject=WEB, audience=AUD)
    refused = guard.evaluate(get(plain, peer_chain=chain))
    assert refused.status == 403 and refused.principal is not None
    assert refused.principal.proven_by == "mtls+jwt"


def test_a_rule_for_certificate_bound_tokens_never_admits_a_forwarded_certificate(
    issuer: TokenIssuer, clock: FixedClock, ca: DevCA
) -> None:
    # mtls+bound-jwt: the certificate was presented on the caller's own connection; a
    # certificate a proxy forwarded is the proxy's word, token or not (proxy-mtls)
    only_bound = Policy([Rule(id="bound", callers=[Callers(proven_by=["mtls+bound-jwt"])])])
    proxies = TrustedProxies(["10.0.0.0/8"], header="xfcc")
    guard, sink = make_guard(
        issuer, clock, pol=only_bound, bundles=ca.bundle, trusted_proxies=proxies
    )
    svid = ca.issue_svid(WEB)
    bound = issuer.issue(subject=WEB, audience=AUD, bind_cert=svid.leaf)
    forwarded = {"x-forwarded-client-cert": xfcc_for(svid.leaf.public_bytes(Encoding.PEM))}
    refused = guard.evaluate(get(bound, headers=forwarded, remote_addr="10.1.2.3"))
    assert refused.status == 403 and refused.principal is not None
    assert refused.principal.proven_by == "proxy-mtls"
    assert sink.last is not None and sink.last.proven_by == "proxy-mtls"
    chain = [c.public_bytes(Encoding.DER) for c in svid.cert_chain]
    assert guard.evaluate(get(bound, peer_chain=chain)).allowed  # its own connection's


def test_a_certificate_bound_token_through_a_trusted_proxy(
    issuer: TokenIssuer, clock: FixedClock, ca: DevCA
) -> None:
    # RFC 8705 3: the certificate the proxy forwards is the one the token must be bound to;
    # the proxy's own certificate never stands for the caller
    proxy_id = "spiffe://example.org/ns/mesh/sa/proxy"
    proxies = TrustedProxies(["10.0.0.0/8"], spiffe_ids=match.exact(proxy_id), header="xfcc")
    guard, _ = make_guard(issuer, clock, bundles=ca.bundle, trusted_proxies=proxies)
    svid, other, proxy = ca.issue_svid(WEB), ca.issue_svid(WEB), ca.issue_svid(proxy_id)
    proxy_chain = [c.public_bytes(Encoding.DER) for c in proxy.cert_chain]

    def via_proxy(token: str, forwarded: object | None, remote: str = "10.1.2.3") -> Request:
        headers = {}
        if forwarded is not None:
            pem = forwarded.leaf.public_bytes(Encoding.PEM)  # type: ignore[attr-defined]
            headers["x-forwarded-client-cert"] = xfcc_for(pem)
        return get(token, headers=headers, remote_addr=remote, peer_chain=proxy_chain)

    token = issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"], bind_cert=svid.leaf)
    ok = guard.evaluate(via_proxy(token, svid))
    # the certificate, and so the binding, is the proxy's word: not the caller's own mTLS
    assert ok.allowed and ok.principal is not None and ok.principal.proven_by == "proxy-mtls"
    to_proxy = issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"], bind_cert=proxy.leaf)
    for view in (
        via_proxy(token, other),  # another client's certificate
        via_proxy(token, None),  # none forwarded: the proxy's own does not count
        via_proxy(to_proxy, None),  # a token bound to the proxy itself
        via_proxy(token, svid, remote="203.0.113.9"),  # forwarded by an untrusted peer
    ):
        refused = guard.evaluate(view)
        assert refused.status == 401 and refused.error is not None
        assert refused.error.code == "token_binding_mismatch"


def dpop_proof(
    key: PrivateJWK, *, method: str, url: str, token: str, iat: float, jti: str = "p1"
) -> str:
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": key.public().to_public_dict()}
    claims = {
        "jti": jti,
        "htm": method,
        "htu": url,
        "iat": int(iat),
        "ath": b64url_encode(hashlib.sha256(token.encode()).digest()),
    }
    segs = [b64url_encode(json.dumps(x).encode()) for x in (header, claims)]
    signing_input = ".".join(segs).encode()
    return ".".join([*segs, b64url_encode(key.sign(signing_input))])


def proof_now(holder: PrivateJWK, token: str, clock: FixedClock, jti: str = "p1") -> str:
    """A proof for ``GET https://api.example/orders/7`` (what :func:`get` asks), made now."""
    return dpop_proof(
        holder,
        method="GET",
        url="https://api.example/orders/7",
        token=token,
        iat=clock.now().timestamp(),
        jti=jti,
    )


def bound_token(issuer: TokenIssuer, holder: PrivateJWK, ttl: int = 300) -> str:
    """An ``orders:read`` token for WEB bound to ``holder``'s key (``cnf.jkt``)."""
    return issuer.issue(
        subject=WEB,
        audience=AUD,
        scopes=["orders:read"],
        ttl=ttl,
        extra_claims={"cnf": {"jkt": holder.public().thumbprint()}},
    )


class OneFeatureDown(MemoryStore):
    """A store that cannot answer one feature (``down``), sync or async, and serves the rest."""

    __slots__ = ("down",)

    def __init__(self, down: str, clock: FixedClock) -> None:
        super().__init__(clock=clock)
        self.down = down

    def _check(self, feature: str) -> None:
        if feature == self.down:
            raise StoreUnavailable(f"shared store unavailable: {feature}")

    def is_revoked(self, **kwargs: object) -> bool:  # type: ignore[override]
        self._check("revocation")
        return super().is_revoked(**kwargs)  # type: ignore[arg-type]

    async def is_revoked_async(self, **kwargs: object) -> bool:  # type: ignore[override]
        self._check("revocation")
        return super().is_revoked(**kwargs)  # type: ignore[arg-type]

    def check_and_store(self, key: str, *, expires_at: float) -> bool:
        self._check("replay")
        return super().check_and_store(key, expires_at=expires_at)

    async def check_and_store_async(self, key: str, *, expires_at: float) -> bool:
        self._check("replay")
        return super().check_and_store(key, expires_at=expires_at)

    def acquire(self, key: str, **kwargs: object) -> RateLimitResult:  # type: ignore[override]
        self._check("rate_limit")
        return super().acquire(key, **kwargs)  # type: ignore[arg-type]

    async def acquire_async(self, key: str, **kwargs: object) -> RateLimitResult:  # type: ignore[override]
        self._check("rate_limit")
        return super().acquire(key, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_dry_run_policy_s_rate_limits_refuse_nothing_while_the_store_is_down(
    issuer: TokenIssuer, clock: FixedClock, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A dry-run policy is recorded, not enforced: a store that cannot count its rate limits
    serves the request (and says so in the log) rather than refusing it with 503, which the
    same limits refuse when they are enforced."""
    limits = [RateLimit("per-caller", rate=1, burst=5)]
    token = issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"])
    for dry_run, expected in ((True, 200), (False, 503)):
        pol = policy(rate_limits=limits, dry_run=dry_run)
        guard, sink = make_guard(issuer, clock, pol=pol, store=OneFeatureDown("rate_limit", clock))
        with caplog.at_level(logging.WARNING, logger="zerotrust"):
            outcome = (
                guard.evaluate(get(token))
                if mode == "sync"
                else asyncio.run(guard.aevaluate(get(token)))
            )
        assert outcome.status == expected
        assert sink.last is not None and sink.last.decision == ("allow" if dry_run else "deny")
        logged = [r.getMessage() for r in caplog.records if r.name == "zerotrust"]
        assert len(logged) == 1, logged
        what = "dry-run rate limits not counted" if dry_run else "requests refused with 503"
        assert f"service orders: {what}: store_unavailable" in logged[0], logged
        caplog.clear()


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("down", ["revocation", "replay", "rate_limit"])
def test_a_feature_the_store_cannot_answer_fails_closed(
    issuer: TokenIssuer, clock: FixedClock, down: str, mode: str
) -> None:
    verifier = TokenVerifier(
        issuer=ISS, audience=AUD, keys=issuer.jwks(), algorithms=["ES256"], clock=clock
    )
    limited = policy(rate_limits=[RateLimit("per-caller", rate=1, burst=5)])
    sink = MemorySink()
    guard = Guard(
        authenticator=Authenticator(tokens=verifier, clock=clock),
        policy=limited,
        audit=sink,
        store=(store := OneFeatureDown(down, clock)),
        clock=clock,
    )
    holder = PrivateJWK.generate("ES256")
    token = bound_token(issuer, holder)
    now = clock.now().timestamp()
    url = "https://api.example/orders/7"

    def view(jti: str) -> Request:
        proof = dpop_proof(holder, method="GET", url=url, token=token, iat=now, jti=jti)
        headers = {"authorization": f"DPoP {token}", "dpop": proof}
        return Request(route=ROUTE, path="/orders/7", host="api.example", headers=headers)

    first = view("p1")
    outcome = guard.evaluate(first) if mode == "sync" else asyncio.run(guard.aevaluate(first))
    assert (outcome.allowed, outcome.status, outcome.grpc_status) == (False, 503, "UNAVAILABLE")
    assert sink.last is not None and sink.last.decision == "deny"
    assert sink.last.reason == "store_unavailable"  # the policy allowed it: the store refused
    store.down = ""  # once the store answers, the same request (a new proof) is allowed
    assert guard.evaluate(view("p2")).allowed


def test_dpop(issuer: TokenIssuer, clock: FixedClock) -> None:
    guard, _ = make_guard(issuer, clock)
    holder = PrivateJWK.generate("ES256")
    token = bound_token(issuer, holder)
    now = clock.now().timestamp()
    url = "https://api.example/orders/7"

    def view(proof: str, scheme: str = "DPoP") -> Request:
        return Request(
            route=ROUTE,
            path="/orders/7",
            host="api.example",
            headers={"authorization": f"{scheme} {token}", "dpop": proof},
        )

    ok = guard.evaluate(view(dpop_proof(holder, method="GET", url=url, token=token, iat=now)))
    assert ok.allowed and ok.principal is not None and ok.principal.proven_by == "dpop"
    cases = {
        "replayed": view(dpop_proof(holder, method="GET", url=url, token=token, iat=now)),
        "as bearer": view(
            dpop_proof(holder, method="GET", url=url, token=token, iat=now, jti="p2"),
            scheme="Bearer",
        ),
        "wrong method": view(
            dpop_proof(holder, method="POST", url=url, token=token, iat=now, jti="p3")
        ),
        "wrong url": view(
            dpop_proof(
                holder,
                method="GET",
                url="https://api.example/other",
                token=token,
                iat=now,
                jti="p4",
            )
        ),
        "too old": view(
            dpop_proof(holder, method="GET", url=url, token=token, iat=now - 3600, jti="p5")
        ),
        "other key": view(
            dpop_proof(
                PrivateJWK.generate("ES256"), method="GET", url=url, token=token, iat=now, jti="p6"
            )
        ),
    }
    # RFC 9449 7.1: a defective proof is invalid_dpop_proof, a token that does not fit its
    # proof's key (or its scheme) invalid_token; DPoP challenges name the accepted algorithms
    algs = 'algs="ES256 ES384 EdDSA PS256 RS256"'
    expected = {
        "replayed": (
            "dpop_proof_replayed",
            f'DPoP realm="orders", {algs}, error="invalid_dpop_proof"',
        ),
        "as bearer": ("token_binding_mismatch", 'Bearer realm="orders", error="invalid_token"'),
        "wrong method": (
            "invalid_dpop_proof",
            f'DPoP realm="orders", {algs}, error="invalid_dpop_proof"',
        ),
        "wrong url": (
            "invalid_dpop_proof",
            f'DPoP realm="orders", {algs}, error="invalid_dpop_proof"',
        ),
        "too old": (
            "invalid_dpop_proof",
            f'DPoP realm="orders", {algs}, error="invalid_dpop_proof"',
        ),
        "other key": (
            "token_binding_mismatch",
            f'DPoP realm="orders", {algs}, error="invalid_token"',
        ),
    }
    for name, request in cases.items():
        outcome = guard.evaluate(request)
        assert outcome.status == 401, name
        assert outcome.error is not None
        assert (outcome.error.code, outcome.www_authenticate) == expected[name], name
        public = "invalid_dpop_proof" if "dpop_proof" in expected[name][1] else "invalid_token"
        assert outcome.body() == {
            "error": public,
            "error_description": "invalid DPoP proof"
            if public != "invalid_token"
            else "invalid token",
        }, name
    # a DPoP-bound token without its proof: the proof is what is missing
    missing = Request(
        route=ROUTE,
        path="/orders/7",
        host="api.example",
        headers={"authorization": f"DPoP {token}"},
    )
    refused = guard.evaluate(missing)
    assert refused.error is not None and refused.error.code == "invalid_dpop_proof"
    assert refused.www_authenticate == f'DPoP realm="orders", {algs}, error="invalid_dpop_proof"'


@pytest.mark.parametrize(
    ("leeway", "skew"), [(5.0, 8.0), (0.0, 3.0)], ids=["default-leeway", "no-leeway"]
)
def test_a_dpop_proof_is_refused_by_a_replica_whose_clock_is_behind(
    issuer: TokenIssuer, clock: FixedClock, leeway: float, skew: float
) -> None:
    """Each replica accepts a proof until iat + max_age + leeway on its own clock; the shared
    replay entry outlives that by twice the leeway (at least 10 s), so a replica less far
    behind never takes a proof another replica already took."""
    from zerotrust.authn.binding import DPoPConfig

    config = DPoPConfig(max_age=60, leeway=leeway)
    replica_a, _ = make_guard(issuer, clock, dpop=config)
    dpop = replica_a.authenticator.dpop
    assert dpop is config
    behind = FixedClock(clock.now() - dt.timedelta(seconds=skew))
    verifier = TokenVerifier(
        issuer=ISS, audience=AUD, keys=issuer.jwks(), algorithms=["ES256"], clock=behind
    )
    replica_b = Guard(
        authenticator=Authenticator(tokens=verifier, clock=behind, dpop=config),
        policy=policy(),
        audit=MemorySink(),
        store=replica_a.store,  # one shared store (its own clock: the true time)
        service="orders",
        clock=behind,
    )
    holder = PrivateJWK.generate("ES256")
    token = bound_token(issuer, holder, ttl=7200)
    iat = clock.now().timestamp()
    url = "https://api.example/orders/7"
    request = Request(
        route=ROUTE,
        path="/orders/7",
        host="api.example",
        headers={
            "authorization": f"DPoP {token}",
            "dpop": dpop_proof(holder, method="GET", url=url, token=token, iat=iat),
        },
    )
    assert replica_a.evaluate(request).allowed
    # the proof's window has closed for replica A, not yet for replica B
    step = dt.timedelta(seconds=dpop.max_age + dpop.leeway + 1)
    clock.advance(step.total_seconds())
    behind.advance(step.total_seconds())
    again = replica_b.evaluate(request)
    assert not again.allowed and again.error is not None
    assert again.error.code == "dpop_proof_replayed"
    assert isinstance(again.error, TokenReplayed) and isinstance(again.error, InvalidDPoPProof)


@pytest.mark.parametrize(
    "cnf", [{"jwk": {"kty": "OKP", "crv": "Ed25519", "x": "x"}}, {"kid": "k"}, {"x5t#s256": "t"}]
)
def test_a_token_bound_by_a_method_not_checked_here_is_no_bearer_token(
    issuer: TokenIssuer, clock: FixedClock, cnf: dict[str, object]
) -> None:
    guard, sink = make_guard(issuer, clock)
    token = issuer.issue(
        subject=WEB, audience=AUD, scopes=["orders:read"], extra_claims={"cnf": cnf}
    )
    for _ in range(2):  # and no repeat is admitted from a cache either
        outcome = guard.evaluate(get(token))
        assert not outcome.allowed and outcome.status == 401
        assert outcome.error is not None and outcome.error.code == "token_binding_mismatch"
        assert ("WWW-Authenticate", 'Bearer realm="orders", error="invalid_token"') in (
            outcome.headers
        )
    assert [event.reason for event in sink.events] == ["token_binding_mismatch"] * 2


def test_a_caller_filling_the_replay_table_cannot_replay_a_captured_proof(
    issuer: TokenIssuer, clock: FixedClock
) -> None:
    """Proofs are remembered for their whole window: with the table full of live proofs, a
    new proof is refused (503, fail closed), never admitted by forgetting an older one."""
    guard, _ = make_guard(issuer, clock)
    guard = Guard(
        authenticator=guard.authenticator,
        policy=guard.policy,
        audit=MemorySink(),
        store=MemoryStore(clock=clock, max_replay_entries=3),
        service="orders",
        clock=clock,
    )

    def request(holder: PrivateJWK, token: str, jti: str) -> Request:
        proof = proof_now(holder, token, clock, jti)
        return get(None, headers={"authorization": f"DPoP {token}", "dpop": proof})

    victim = PrivateJWK.generate("ES256")
    victim_token = bound_token(issuer, victim)
    captured = request(victim, victim_token, "victim")
    assert guard.evaluate(captured).allowed
    attacker = PrivateJWK.generate("ES256")
    attacker_token = bound_token(issuer, attacker)
    assert guard.evaluate(request(attacker, attacker_token, "a1")).allowed
    assert guard.evaluate(request(attacker, attacker_token, "a2")).allowed
    full = guard.evaluate(request(attacker, attacker_token, "a3"))
    assert not full.allowed and full.status == 503
    assert full.error is not None and full.error.code == "store_full"
    replayed = guard.evaluate(captured)
    assert not replayed.allowed
    assert replayed.error is not None and replayed.error.code == "dpop_proof_replayed"


# An Ed25519 key of small order (here the neutral point): with it, R = neutral, S = 0 is a
# valid RFC 8032 signature of every message, so a proof "signed" by it proves nothing.
_NEUTRAL = (1).to_bytes(32, "little")


def test_explain_takes_no_dpop_replay_entry(issuer: TokenIssuer, clock: FixedClock) -> None:
    guard, _ = make_guard(issuer, clock)
    holder = PrivateJWK.generate("ES256")
    token = bound_token(issuer, holder)
    proof = proof_now(holder, token, clock)
    view = get(None, headers={"authorization": f"DPoP {token}", "dpop": proof})
    assert guard.explain(view).allowed
    assert guard.evaluate(view).allowed  # the proof's first use
    replayed = guard.evaluate(view)
    assert replayed.error is not None and replayed.error.code == "dpop_proof_replayed"


@pytest.mark.parametrize("prefix", ["DPoP ", " DPoP ", "\tdpop "])
def test_a_dpop_token_is_challenged_with_dpop_however_the_header_is_spaced(
    issuer: TokenIssuer, clock: FixedClock, prefix: str
) -> None:
    # RFC 9449 7.1: a refused DPoP request gets the DPoP challenge. Optional whitespace before
    # the scheme is not part of it (RFC 9110 5.5): the credentials are read without it, and
    # so is the scheme the challenge answers.
    guard, _ = make_guard(issuer, clock)
    holder = PrivateJWK.generate("ES256")
    token = bound_token(issuer, holder, ttl=60)
    clock.advance(600)
    proof = proof_now(holder, token, clock)
    view = get(None, headers={"authorization": prefix + token, "dpop": proof})
    outcome = guard.evaluate(view)
    assert outcome.error is not None and outcome.error.code == "token_expired"
    algs = 'algs="ES256 ES384 EdDSA PS256 RS256"'
    assert outcome.www_authenticate == f'DPoP realm="orders", {algs}, error="invalid_token"'


def test_a_service_without_dpop_challenges_with_bearer_only(
    issuer: TokenIssuer, clock: FixedClock
) -> None:
    # RFC 6750 3 / RFC 9449 7.1: a challenge names the schemes the service accepts
    guard, _ = make_guard(issuer, clock, dpop=None)
    holder = PrivateJWK.generate("ES256")
    token = issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"])
    proof = proof_now(holder, token, clock)
    outcome = guard.evaluate(get(None, headers={"authorization": f"DPoP {token}", "dpop": proof}))
    # the DPoP scheme is one it does not accept: refused before the token is even read
    assert outcome.status == 401
    assert outcome.error is not None and outcome.error.code == "unsupported_scheme"
    assert outcome.www_authenticate == 'Bearer realm="orders"'
    bound = bound_token(issuer, holder)
    for headers in ({"authorization": f"DPoP {bound}"}, {"authorization": f"dpop {bound}"}):
        outcome = guard.evaluate(get(None, headers=headers))
        assert outcome.error is not None and outcome.error.code == "unsupported_scheme"
        assert outcome.www_authenticate == 'Bearer realm="orders"'
    # a bound token presented as Bearer is still refused: its binding is not dropped
    outcome = guard.evaluate(get(bound, headers={"dpop": proof}))
    assert outcome.error is not None and outcome.error.code == "token_binding_mismatch"
    assert outcome.www_authenticate == 'Bearer realm="orders", error="invalid_token"'
    # a Bearer request with a stray DPoP header of any shape: the header is not read
    for stray in (proof, "not a proof", [proof, proof]):
        assert guard.evaluate(get(token, headers={"dpop": stray})).allowed


def test_a_malformed_dpop_header_is_an_invalid_proof(
    issuer: TokenIssuer, clock: FixedClock
) -> None:
    # RFC 9449 4.3 checks 1 and 2: one DPoP header, one well-formed JWT; else 401
    # invalid_dpop_proof with the DPoP challenge, like any other invalid proof
    guard, _ = make_guard(issuer, clock)
    holder = PrivateJWK.generate("ES256")
    token = bound_token(issuer, holder)
    proof = proof_now(holder, token, clock)
    cases: list[tuple[dict[str, str], str | list[str]]] = [
        ({"authorization": f"DPoP {token}"}, "a.b")  # no JWT: refused when it is verified
    ]
    # a header that is no single JWT is refused however the request is authorized
    for authorization in (f"DPoP {token}", f"Bearer {token}", None):
        sent = {} if authorization is None else {"authorization": authorization}
        cases += [(sent, [proof, proof]), (sent, "not a proof")]
    for sent, dpop in cases:
        headers = {**sent, "dpop": dpop}
        outcome = guard.evaluate(get(None, headers=headers))
        assert outcome.status == 401, (sent, dpop)
        assert outcome.error is not None and outcome.error.public_code == "invalid_dpop_proof"
        assert outcome.www_authenticate is not None
        assert outcome.www_authenticate.startswith('DPoP realm="orders", algs="')
        assert outcome.www_authenticate.endswith(', error="invalid_dpop_proof"')


def test_the_replay_window_outlives_a_proofs_acceptance_by_two_leeways() -> None:
    from zerotrust.authn.binding import DPoPConfig
    from zerotrust.pipeline import dpop_replay_window

    assert dpop_replay_window(DPoPConfig(max_age=60, leeway=30)) == 60 + 30 + 60
    assert dpop_replay_window(DPoPConfig(max_age=60, leeway=1)) == 60 + 1 + 10  # at least 10 s


class UncappedStore(MemoryStore):
    """A store that does not say how long it keeps replay entries."""

    @property
    def replay_max_ttl(self) -> None:  # type: ignore[override]
        return None


def test_a_store_without_a_replay_cap_is_taken_as_is(
    issuer: TokenIssuer, clock: FixedClock
) -> None:
    built, _ = make_guard(issuer, clock)
    guard = Guard(
        authenticator=built.authenticator,
        policy=built.policy,
        store=UncappedStore(clock=clock),
        clock=clock,
    )
    token = issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"])
    assert guard.evaluate(get(token)).allowed


def test_dpop_refuses_a_keyless_proof_key(issuer: TokenIssuer, clock: FixedClock) -> None:
    guard, _ = make_guard(issuer, clock)
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(_NEUTRAL)}
    thumbprint = b64url_encode(
        hashlib.sha256(json.dumps(jwk, separators=(",", ":"), sort_keys=True).encode()).digest()
    )
    token = issuer.issue(
        subject=WEB, audience=AUD, scopes=["orders:read"], extra_claims={"cnf": {"jkt": thumbprint}}
    )
    url = "https://api.example/orders/7"
    claims = {
        "jti": "forged",
        "htm": "GET",
        "htu": url,
        "iat": int(clock.now().timestamp()),
        "ath": b64url_encode(hashlib.sha256(token.encode()).digest()),
    }
    header = {"typ": "dpop+jwt", "alg": "EdDSA", "jwk": jwk}
    segs = [b64url_encode(json.dumps(x).encode()) for x in (header, claims)]
    proof = ".".join([*segs, b64url_encode(_NEUTRAL + bytes(32))])
    request = Request(
        route=ROUTE,
        path="/orders/7",
        host="api.example",
        headers={"authorization": f"DPoP {token}", "dpop": proof},
    )
    outcome = guard.evaluate(request)
    assert not outcome.allowed and outcome.status == 401


def test_api_keys(issuer: TokenIssuer, clock: FixedClock) -> None:
    keys = ApiKeys({"ci": ApiKeys.hash(API_KEY)})
    pol = Policy(
        [
            Rule(
                id="keys",
                callers=[Callers(proven_by=["api-key"])],
                operations=[Operations(routes=["/metrics"])],
            )
        ]
    )
    guard, _ = make_guard(issuer, clock, pol=pol, api_keys=keys)
    ok = guard.evaluate(get(route="/metrics", headers={"x-api-key": API_KEY}))
    assert ok.allowed and ok.principal is not None and ok.principal.api_key_id == "ci"
    # the name a policy's Callers(subjects=[...]) matches
    assert (ok.principal.subject, ok.principal.proven_by) == ("api-key:ci", "api-key")
    assert guard.evaluate(get(route="/metrics", headers={"x-api-key": "wrong"})).status == 401
    assert guard.evaluate(get(route="/other", headers={"x-api-key": API_KEY})).status == 403


def test_an_api_key_that_comes_with_a_token_must_be_valid_too(
    issuer: TokenIssuer, clock: FixedClock
) -> None:
    """Credentials that are present but invalid are an error: a wrong API key is refused even
    beside a valid token. With a valid key, the token names the caller."""
    keys = ApiKeys({"ci": ApiKeys.hash(API_KEY)})
    guard, sink = make_guard(issuer, clock, api_keys=keys)
    token = issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"])
    for attempt in range(2):  # the second time, the token comes from the verified cache
        refused = guard.evaluate(get(token, headers={"x-api-key": "wrong"}))
        assert (refused.allowed, refused.status) == (False, 401), attempt
        assert refused.www_authenticate == 'Bearer realm="orders"'
        assert sink.last is not None and sink.last.reason == "unauthenticated"
        assert guard.evaluate(get(token)).allowed
    both = guard.evaluate(get(token, headers={"x-api-key": API_KEY}))
    assert both.allowed and both.principal is not None
    assert (both.principal.subject, both.principal.proven_by) == (WEB, "jwt")


def test_an_api_key_beside_a_client_certificate_leaves_the_certificate_the_caller(
    issuer: TokenIssuer, clock: FixedClock, ca: DevCA
) -> None:
    """An API key beside a verified certificate replaced the certificate's identity: a
    workload a DENY rule names by its SPIFFE ID got past it by adding any valid key, even
    with require_mtls. The key must be valid, and the certificate names the caller, as it
    does beside a token."""
    denied = "spiffe://example.org/ns/legacy/sa/batch"
    keys = ApiKeys({"ci": ApiKeys.hash(API_KEY)})
    pol = Policy(
        [
            Rule(id="deny-legacy", action="DENY", callers=[Callers(spiffe_ids=[denied])]),
            Rule(id="anyone", callers=[Callers(subjects=["*"])]),
        ]
    )
    guard, sink = make_guard(
        issuer, clock, pol=pol, bundles=ca.bundle, api_keys=keys, require_mtls=True
    )
    chain = [c.public_bytes(Encoding.DER) for c in ca.issue_svid(denied).cert_chain]
    for headers in ({}, {"x-api-key": API_KEY}):
        outcome = guard.evaluate(get(peer_chain=chain, headers=headers))
        assert outcome.status == 403, headers
        assert sink.last is not None and sink.last.rule_id == "deny-legacy"
        assert sink.last.spiffe_id == denied and sink.last.cert_fingerprint is not None
    wrong = guard.evaluate(get(peer_chain=chain, headers={"x-api-key": "wrong"}))
    assert wrong.status == 401  # present but invalid: an error, as beside a token
    web = [c.public_bytes(Encoding.DER) for c in ca.issue_svid(WEB).cert_chain]
    allowed = guard.evaluate(get(peer_chain=web, headers={"x-api-key": API_KEY}))
    assert allowed.allowed and allowed.principal is not None
    assert (allowed.principal.proven_by, str(allowed.principal.spiffe_id)) == ("mtls", WEB)


# --- the async driver ---------------------------------------------------------------------


def test_async_driver_does_not_block_the_loop(issuer: TokenIssuer, clock: FixedClock) -> None:
    in_flight = peak = 0

    async def slow_hook(principal: object, op: object) -> bool:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return True

    pol = Policy([Rule(id="ext", action="CUSTOM", hook=slow_hook), Rule(id="all")])
    guard, sink = make_guard(issuer, clock, pol=pol)
    token = issuer.issue(subject=WEB, audience=AUD)

    async def main() -> None:
        outcomes = await asyncio.gather(*(guard.aevaluate(get(token)) for _ in range(50)))
        assert all(o.allowed for o in outcomes)

    asyncio.run(main())
    assert peak == 50  # every evaluation was waiting on its hook at once: the loop never blocked
    assert len(sink.events) == 50


def test_an_evaluation_cancelled_as_its_hook_answers_is_cancelled(
    issuer: TokenIssuer, clock: FixedClock
) -> None:
    """A request cancelled (its client gone, the server shutting down) in the same turn of the
    event loop as its CUSTOM hook answers ends with CancelledError: the hook's answer never
    carries it on to an outcome (``asyncio.wait_for`` of Python 3.10 and 3.11 returned it)."""
    started = asyncio.Event()
    answer: asyncio.Future[bool] | None = None

    async def hook(principal: object, op: object) -> bool:
        assert answer is not None
        started.set()
        return await answer

    pol = Policy([Rule(id="ext", action="CUSTOM", hook=hook), Rule(id="all")])
    guard, sink = make_guard(issuer, clock, pol=pol)
    token = issuer.issue(subject=WEB, audience=AUD)

    async def main() -> None:
        nonlocal answer
        answer = asyncio.get_running_loop().create_future()
        evaluation = asyncio.ensure_future(guard.aevaluate(get(token)))
        await started.wait()
        answer.set_result(True)  # the hook answers ...
        evaluation.cancel()  # ... as the request is cancelled
        with pytest.raises(asyncio.CancelledError):
            await evaluation

    asyncio.run(main())
    assert sink.events == []  # nothing was decided


def test_a_cancelled_evaluation_ends_after_its_hook_cleaned_up(
    issuer: TokenIssuer, clock: FixedClock
) -> None:
    """A request cancelled while its CUSTOM hook is still at work cancels the hook, and its
    CancelledError reaches the caller only once the hook's own cleanup has run (as
    ``asyncio.wait_for`` does): nothing of the request is still running when it is gone."""
    started, cleaned = asyncio.Event(), []

    async def hook(principal: object, op: object) -> bool:
        started.set()
        try:
            await asyncio.Event().wait()  # never answers
        finally:
            await asyncio.sleep(0)  # cleanup that needs the loop (closing a connection)
            cleaned.append(True)
        return True  # pragma: no cover - cancelled above

    pol = Policy([Rule(id="ext", action="CUSTOM", hook=hook), Rule(id="all")])
    guard, sink = make_guard(issuer, clock, pol=pol)
    token = issuer.issue(subject=WEB, audience=AUD)

    async def main() -> None:
        evaluation = asyncio.ensure_future(guard.aevaluate(get(token)))
        await started.wait()
        evaluation.cancel()
        with pytest.raises(asyncio.CancelledError):
            await evaluation
        assert cleaned == [True]

    asyncio.run(main())
    assert sink.events == []


def test_decisions_are_memoized_per_principal_and_route_only(
    issuer: TokenIssuer, clock: FixedClock
) -> None:
    calls: list[str] = []

    class CountingPolicy(Policy):
        def decide(self, principal, op):  # type: ignore[no-untyped-def, override]
            calls.append(op.route or "")
            return (yield from super().decide(principal, op))

    pol = CountingPolicy(policy().rules, id="orders")
    guard, _ = make_guard(issuer, clock, pol=pol)
    reader = issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"])
    other = issuer.issue(subject="intruder", audience=AUD, scopes=["orders:read"])
    for _ in range(3):
        assert guard.evaluate(get(reader)).allowed
        assert not guard.evaluate(get(other)).allowed  # never the reader's memoized decision
    assert guard.evaluate(get(reader, route="/admin")).status == 403
    assert calls == [ROUTE, ROUTE, "/admin"]  # one evaluation per principal and route
    hooked = Policy([Rule(id="ext", action="CUSTOM", hook=lambda p, o: True), Rule(id="all")])
    hook_guard, _ = make_guard(issuer, clock, pol=hooked)
    assert not hook_guard._memo_decisions  # hooks may answer differently each time


def test_a_policy_subclass_is_asked_whatever_it_overrides(
    issuer: TokenIssuer, clock: FixedClock
) -> None:
    from zerotrust.authz import Decision

    class Refusing(Policy):
        def _flow(self, principal, op, results, *, enforced_only):  # type: ignore[no-untyped-def]
            if principal is not None and principal.subject == WEB:
                return Decision(False, "denied_by_rule", "subclass", self.id)
            return (yield from super()._flow(principal, op, results, enforced_only=enforced_only))

    guard, _ = make_guard(issuer, clock, pol=Refusing(policy().rules, id="orders"))
    token = issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"])
    for _ in range(2):  # and never remembered as an allow for the repeat
        outcome = guard.evaluate(get(token))
        assert outcome.status == 403
        assert outcome.decision is not None and outcome.decision.rule_id == "subclass"


def test_guard_builds_its_authenticator_from_parts(issuer: TokenIssuer, clock: FixedClock) -> None:
    from zerotrust.errors import ConfigurationError

    verifier = TokenVerifier(
        issuer=ISS, audience=AUD, keys=issuer.jwks(), algorithms=["ES256"], clock=clock
    )
    store = MemoryStore(clock=clock)
    guard = Guard(tokens=verifier, policy=policy(), stores=store, audit=MemorySink(), clock=clock)
    assert guard.store is store
    assert guard.authenticator.tokens is verifier
    token = issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"])
    assert guard.evaluate(get(token)).allowed
    for bad in (
        {"policy": policy()},
        {"policy": policy(), "tokens": verifier, "authenticator": guard.authenticator},
        {"policy": policy(), "tokens": verifier, "store": store, "stores": store},
        {"policy": policy(), "tokens": verifier, "no_such_part": 1},
    ):
        with pytest.raises(ConfigurationError):
            Guard(**bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"Guard needs authenticator= or its parts"):
        Guard(policy=policy())
    for wrong in (
        {"authenticator": object(), "policy": policy()},
        {"authenticator": guard.authenticator, "policy": list(policy().rules)},
        {"authenticator": guard.authenticator, "policy": None},
    ):
        with pytest.raises(ConfigurationError, match="Guard needs an Authenticator and a Policy"):
            Guard(**wrong)  # type: ignore[arg-type]


def test_an_outcome_cannot_be_changed(issuer: TokenIssuer, clock: FixedClock) -> None:
    """Adapters read the outcome the Guard gave: none of them can turn a refusal into an allow."""
    import dataclasses

    guard, _ = make_guard(issuer, clock)
    refused = guard.evaluate(get(None))
    assert not refused.allowed
    for field, value in (("allowed", True), ("status", 200), ("error", None)):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(refused, field, value)
    assert not refused.allowed and refused.status == 401


def test_settings_cannot_be_reassigned_once_built(issuer: TokenIssuer, clock: FixedClock) -> None:
    """What a Guard and its Authenticator derive from their settings when built (the one-pass
    header set, memos, fast paths) would not follow a reassignment: it is refused, and the
    Guard keeps deciding as built."""
    guard, _ = make_guard(issuer, clock)
    authenticator = guard.authenticator
    token = issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"])
    keys = ApiKeys({"ci": ApiKeys.hash(API_KEY)})
    for name, value in (
        ("api_keys", keys),
        ("trusted_proxies", None),
        ("tokens", None),
        ("bundles", None),
        ("dpop", None),
        ("require_mtls", True),
        ("require_token", True),
        ("token_must_match_peer", True),
        ("max_delegation_depth", 32),
        ("clock", clock),
    ):
        with pytest.raises(AttributeError, match=f"Authenticator.{name} cannot change"):
            setattr(authenticator, name, value)
    for name, value in (
        ("authenticator", authenticator),
        ("policy", Policy([])),
        ("audit", MemorySink()),
        ("store", MemoryStore()),
        ("service", "x"),
        ("check_revocation", False),
        ("clock", clock),
    ):
        with pytest.raises(AttributeError, match=f"Guard.{name} cannot change"):
            setattr(guard, name, value)
    assert authenticator.api_keys is None and guard.service == "orders"
    assert guard.evaluate(get(token)).allowed

    class Tagged(Guard):  # a subclass keeps attributes of its own
        def __init__(self, **kw: object) -> None:
            super().__init__(**kw)  # type: ignore[arg-type]
            self.tag = "a"
            self.tag = "b"

    tagged = Tagged(authenticator=authenticator, policy=policy(), audit=MemorySink())
    assert tagged.tag == "b"

    class TaggedAuthenticator(Authenticator):
        def __init__(self, **kw: object) -> None:
            super().__init__(**kw)  # type: ignore[arg-type]
            self.tag = "a"
            self.tag = "b"

    assert TaggedAuthenticator(tokens=authenticator.tokens).tag == "b"


@pytest.mark.parametrize("change", ["authority removed", "trust domain gone"])
def test_keep_alive_peer_loses_access_when_its_bundle_changes(
    clock: FixedClock, ca: DevCA, change: str
) -> None:
    from zerotrust import RotatingBundleSource, verify_x509_svid

    bundles = RotatingBundleSource(ca.bundle)
    guard = Guard(
        authenticator=Authenticator(bundles=bundles, clock=clock),
        policy=cert_policy(),
        audit=MemorySink(),
        clock=clock,
    )
    peer = verify_x509_svid(ca.issue_svid(WEB).cert_chain, ca.bundle)  # as the handshake did
    view = Request(route=ROUTE, verified_peer=peer)
    assert guard.evaluate(view).allowed
    assert guard.evaluate(view).allowed  # checked once per bundle snapshot
    if change == "authority removed":
        other_root = DevCA.create("example.org").root_certificate
        bundles.set(ca.bundle.with_x509_authorities([other_root]))
    else:
        bundles.set(DevCA.create("other.example").bundle)  # no bundle for example.org any more
    refused = guard.evaluate(view)  # the same connection, after the change
    assert refused.status == 401 and refused.error is not None
    assert refused.error.code == "untrusted_certificate"


def test_keep_alive_peer_loses_access_when_a_certificate_of_its_chain_expires(
    clock: FixedClock,
) -> None:
    """RFC 5280 6.1.3: every certificate of the path must be valid. A leaf outliving the CA
    that issued it stops authenticating when that CA expires, on open connections too."""
    from zerotrust import verify_x509_svid

    short = DevCA.create("example.org", intermediate=True, ttl=3600, clock=clock)
    now = clock.now()
    chain, _ = short.issue_unchecked_leaf(
        uri_sans=[WEB],
        not_before=now - dt.timedelta(seconds=30),
        not_after=now + dt.timedelta(hours=3),  # past its issuers' end
    )
    peer = verify_x509_svid(chain, short.bundle, now=now, role="client")  # the handshake
    guard = Guard(
        authenticator=Authenticator(bundles=short.bundle, clock=clock),
        policy=cert_policy(),
        audit=MemorySink(),
        clock=clock,
    )
    view = Request(route=ROUTE, verified_peer=peer)
    assert guard.evaluate(view).allowed
    clock.advance(3700)  # the CAs have expired; the leaf has two hours left
    refused = guard.evaluate(view)
    assert refused.status == 401 and refused.error is not None
    assert refused.error.code == "certificate_expired"


def test_mtls_and_token_must_name_the_same_workload_when_required(
    issuer: TokenIssuer, clock: FixedClock, ca: DevCA
) -> None:
    """token_must_match_peer: the token's sub, azp or client_id must be the peer's SPIFFE ID."""
    guard, _ = make_guard(issuer, clock, bundles=ca.bundle, token_must_match_peer=True)
    lax, _ = make_guard(issuer, clock, bundles=ca.bundle)
    svid = ca.issue_svid(WEB)
    chain = [c.public_bytes(Encoding.DER) for c in svid.cert_chain]
    other = "spiffe://example.org/ns/shop/sa/cart"

    def call(g: Guard, subject: str, **extra: str) -> Outcome:
        token = issuer.issue(
            subject=subject, audience=AUD, scopes=["orders:read"], extra_claims=extra or None
        )
        return g.evaluate(get(token, peer_chain=chain))

    for subject, extra in ((WEB, {}), (other, {"azp": WEB}), (other, {"client_id": WEB})):
        outcome = call(guard, subject, **extra)
        assert outcome.allowed and outcome.principal is not None, (subject, extra)
        assert outcome.principal.proven_by == "mtls+jwt"
        assert str(outcome.principal.spiffe_id) == WEB
        assert outcome.principal.cert_fingerprint == svid.fingerprint
        assert outcome.principal.client_id == extra.get("azp", extra.get("client_id"))
    for extra in ({}, {"azp": other}, {"client_id": other}):
        refused = call(guard, other, **extra)
        assert refused.status == 401 and refused.error is not None
        assert refused.error.code == "token_binding_mismatch", extra
    # Without a certificate there is no workload to match: the token alone decides.
    alone = guard.evaluate(get(issuer.issue(subject=other, audience=AUD, scopes=["orders:read"])))
    assert alone.allowed and alone.principal is not None and alone.principal.proven_by == "jwt"
    # Off by default: the peer's certificate is the identity, the token another workload's.
    allowed = call(lax, other)
    assert allowed.allowed and allowed.principal is not None
    assert str(allowed.principal.spiffe_id) == WEB
    assert allowed.principal.subject == other


@pytest.mark.parametrize("depth", [0, 2])
def test_delegation_chains_deeper_than_the_limit_are_refused(
    issuer: TokenIssuer, clock: FixedClock, depth: int
) -> None:
    guard, _ = make_guard(issuer, clock, max_delegation_depth=depth)

    def chain_of(n: int) -> dict[str, object] | None:
        act: dict[str, object] | None = None
        for i in range(n):
            act = {"sub": f"spiffe://example.org/hop{i}", **({"act": act} if act else {})}
        return act

    at_limit = issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"], act=chain_of(depth))
    outcome = guard.evaluate(get(at_limit))
    assert outcome.allowed and outcome.principal is not None
    assert len(outcome.principal.delegation) == depth
    assert outcome.principal.actor == (f"spiffe://example.org/hop{depth - 1}" if depth else None)
    deeper = issuer.issue(
        subject=WEB, audience=AUD, scopes=["orders:read"], act=chain_of(depth + 1)
    )
    refused = guard.evaluate(get(deeper))
    assert refused.status == 401 and refused.error is not None
    assert refused.error.code == "invalid_claim" and "delegation" in str(refused.error)


def test_the_default_delegation_depth_is_four(issuer: TokenIssuer, clock: FixedClock) -> None:
    guard, _ = make_guard(issuer, clock)
    act: dict[str, object] | None = None
    for hop in range(5):
        act = {"sub": f"spiffe://example.org/hop{hop}", **({"act": act} if act else {})}
        token = issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"], act=act)
        outcome = guard.evaluate(get(token))
        assert outcome.allowed == (hop < 4), hop
    assert outcome.error is not None and outcome.error.code == "invalid_claim"


def test_what_the_authenticator_remembers_of_peers_and_subjects_is_bounded(
    issuer: TokenIssuer, clock: FixedClock, ca: DevCA
) -> None:
    """One entry per TLS connection's peer, per SPIFFE-ID token subject and per cached token:
    bounded tables."""
    import dataclasses

    from zerotrust import verify_x509_svid
    from zerotrust._sansio import drive
    from zerotrust.authn import authenticate

    authenticator = Authenticator(bundles=ca.bundle, clock=clock)
    peer = verify_x509_svid(ca.issue_svid(WEB).cert_chain, ca.bundle, now=clock.now())
    for n in range(4097):
        authenticator.recheck_peer(dataclasses.replace(peer, fingerprint=f"{n:064x}"))
        assert len(authenticator._trusted) <= 4096
    authenticator._peers.update((object(), None) for _ in range(4096))  # type: ignore[misc]
    by_peer = drive(authenticator.flow(Request(route=ROUTE, verified_peer=peer)))
    assert by_peer.principal is not None and len(authenticator._peers) == 1
    for n in range(4097):
        subject = f"spiffe://example.org/w{n}"
        assert str(authenticate._spiffe_subject(subject)) == subject
        assert len(authenticate._subjects) <= 4096
    # ... and per cached token: a full table makes room for the next one
    verifier = TokenVerifier(
        issuer=ISS, audience=AUD, keys=issuer.jwks(), algorithms=["ES256"], clock=clock
    )
    by_token = Authenticator(tokens=verifier, clock=clock)
    by_token._principals.update((object(), None) for _ in range(4096))  # type: ignore[misc]
    token = issuer.issue(subject=WEB, audience=AUD)
    result = drive(by_token.flow(get(token)))
    assert result.principal is not None and len(by_token._principals) == 1
    assert drive(by_token.flow(get(token))).principal is result.principal  # reused


def test_a_keep_alive_peer_is_accepted_up_to_its_not_after(clock: FixedClock, ca: DevCA) -> None:
    """RFC 5280 4.1.2.5: the validity period includes notAfter itself."""
    from zerotrust import verify_x509_svid

    peer = verify_x509_svid(ca.issue_svid(WEB).cert_chain, ca.bundle, now=clock.now())
    guard = Guard(
        authenticator=Authenticator(bundles=ca.bundle, clock=clock),
        policy=cert_policy(),
        audit=MemorySink(),
        clock=clock,
    )
    view = Request(route=ROUTE, verified_peer=peer)
    clock.set(peer.not_after)
    assert guard.evaluate(view).allowed
    clock.advance(1)
    refused = guard.evaluate(view)
    assert refused.error is not None and refused.error.code == "certificate_expired"


def test_a_keep_alive_peer_is_refused_once_the_clock_goes_back_before_its_not_before(
    issuer: TokenIssuer, clock: FixedClock, ca: DevCA
) -> None:
    """RFC 5280 6.1.3 (a)(2): the current time must be within the validity period of every
    certificate of the path, its start included. A clock stepped back (NTP) before a
    handshake-verified peer's notBefore refuses its connection's requests, as verifying the
    chain afresh would, whether alone or with a token answered from the repeat path."""
    from zerotrust import verify_x509_svid

    peer = verify_x509_svid(ca.issue_svid(WEB).cert_chain, ca.bundle, now=clock.now())
    guard, _ = make_guard(issuer, clock, pol=cert_policy(), bundles=ca.bundle)
    alone = get(verified_peer=peer)
    token = issuer.issue(subject=WEB, audience=AUD, ttl=3600)
    with_token = get(token, verified_peer=peer)
    assert guard.evaluate(alone).allowed
    assert guard.evaluate(with_token).allowed and guard.evaluate(with_token).allowed
    valid_from = max(cert.not_valid_before_utc for cert in peer.chain)
    clock.set(valid_from)
    assert guard.evaluate(alone).allowed
    clock.set(valid_from - dt.timedelta(seconds=1))
    for view in (alone, with_token):
        refused = guard.evaluate(view)
        assert refused.status == 401 and refused.error is not None
        assert refused.error.code == "certificate_not_yet_valid"


def test_a_service_without_a_token_verifier_refuses_bearer_tokens(
    issuer: TokenIssuer, clock: FixedClock, ca: DevCA
) -> None:
    guard = Guard(
        authenticator=Authenticator(bundles=ca.bundle, clock=clock),
        policy=policy(),
        audit=MemorySink(),
        clock=clock,
    )
    refused = guard.evaluate(get(issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"])))
    assert refused.status == 401 and refused.error is not None
    assert refused.error.code == "unauthenticated"
    # without a verifier's bound, the header is still read within the default one
    assert guard.evaluate(get("a" * 8192)).status == 401
    assert guard.evaluate(get("a" * 8193)).status == 400


def test_a_handshake_verified_peer_needs_no_bundles_of_the_service(
    issuer: TokenIssuer, clock: FixedClock, ca: DevCA
) -> None:
    """The TLS layer verified the peer: a token-only Authenticator still takes it (and checks
    its expiry), but a chain the server hands over unverified cannot be checked without bundles."""
    from zerotrust import verify_x509_svid

    guard, _ = make_guard(issuer, clock, pol=cert_policy())
    svid = ca.issue_svid(WEB)
    peer = verify_x509_svid(svid.cert_chain, ca.bundle, now=clock.now())
    outcome = guard.evaluate(Request(route=ROUTE, verified_peer=peer))
    assert outcome.allowed and outcome.principal is not None
    assert outcome.principal.proven_by == "mtls"
    unverified = guard.evaluate(
        get(peer_chain=[c.public_bytes(Encoding.DER) for c in svid.cert_chain])
    )
    assert unverified.status == 500 and unverified.error is not None
    assert unverified.error.code == "configuration_error"


def test_the_flow_can_be_driven_without_a_notes_list(
    issuer: TokenIssuer, clock: FixedClock
) -> None:
    verifier = TokenVerifier(
        issuer=ISS, audience=AUD, keys=issuer.jwks(), algorithms=["ES256"], clock=clock
    )
    flow = Authenticator(tokens=verifier, clock=clock).flow(
        get(issuer.issue(subject=WEB, audience=AUD))
    )
    with pytest.raises(StopIteration) as done:  # static keys: nothing to fetch
        next(flow)
    result = done.value.value
    assert result.principal is not None and result.principal.subject == WEB
    assert result.notes == ()
    with pytest.raises(AttributeError):  # frozen: the Guard decides on what was established
        result.principal = None


def test_the_verifiers_token_size_bound_applies_to_the_authorization_header(
    issuer: TokenIssuer, clock: FixedClock
) -> None:
    verifier = TokenVerifier(
        issuer=ISS,
        audience=AUD,
        keys=issuer.jwks(),
        algorithms=["ES256"],
        clock=clock,
        max_token_size=16384,
    )
    guard = Guard(
        authenticator=Authenticator(tokens=verifier, clock=clock),
        policy=policy(),
        audit=MemorySink(),
        clock=clock,
    )
    token = issuer.issue(
        subject=WEB, audience=AUD, scopes=["orders:read"], extra_claims={"pad": "x" * 10000}
    )
    assert 8192 < len(token) <= 16384
    assert guard.evaluate(get(token)).allowed


def test_require_mtls_and_require_token(issuer: TokenIssuer, clock: FixedClock, ca: DevCA) -> None:
    chain = [c.public_bytes(Encoding.DER) for c in ca.issue_svid(WEB).cert_chain]
    token = issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"])
    mtls, _ = make_guard(issuer, clock, bundles=ca.bundle, require_mtls=True)
    assert mtls.evaluate(get(token, peer_chain=chain)).allowed
    needs_token, _ = make_guard(issuer, clock, bundles=ca.bundle, require_token=True)
    assert needs_token.evaluate(get(token, peer_chain=chain)).allowed
    for guard, view in ((mtls, get(token)), (needs_token, get(peer_chain=chain))):
        refused = guard.evaluate(view)
        assert refused.status == 401 and refused.error is not None
        assert refused.error.code == "missing_credentials"


def test_a_dpop_proof_without_a_token_is_noted(issuer: TokenIssuer, clock: FixedClock) -> None:
    guard, sink = make_guard(issuer, clock)
    outcome = guard.evaluate(get(route="/healthz", headers={"DPoP": "a.b.c"}))
    assert outcome.allowed and outcome.principal is None
    assert sink.last is not None and sink.last.notes == ("dpop_proof_without_token",)
    guard.evaluate(get(route="/healthz"))
    assert sink.last is not None and sink.last.notes == ()


def test_a_cached_token_presented_with_the_dpop_scheme_is_checked_again(
    issuer: TokenIssuer, clock: FixedClock
) -> None:
    guard, _ = make_guard(issuer, clock)
    token = issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"])
    assert guard.evaluate(get(token)).allowed  # its principal is remembered for Bearer use
    refused = guard.evaluate(get(headers={"Authorization": f"DPoP {token}"}))
    assert refused.status == 401 and refused.error is not None
    assert refused.error.code == "token_binding_mismatch"


def test_a_spiffe_looking_subject_that_is_no_spiffe_id_names_no_workload(
    issuer: TokenIssuer, clock: FixedClock
) -> None:
    guard, sink = make_guard(issuer, clock)
    for subject in ("spiffe://example.org/a//b", "spiffe://EXAMPLE.org/web"):
        token = issuer.issue(subject=subject, audience=AUD, scopes=["orders:read"])
        outcome = guard.evaluate(get(token))
        assert outcome.allowed and outcome.principal is not None
        assert outcome.principal.spiffe_id is None and outcome.principal.subject == subject
        # ... and the audit event names none either
        assert sink.last is not None and sink.last.spiffe_id is None


def test_one_certificate_direct_and_forwarded_is_proven_each_way(
    issuer: TokenIssuer, clock: FixedClock, ca: DevCA
) -> None:
    proxies = TrustedProxies(["10.0.0.0/8"], header="xfcc")
    guard, _ = make_guard(
        issuer, clock, pol=cert_policy(), bundles=ca.bundle, trusted_proxies=proxies
    )
    svid = ca.issue_svid(WEB)
    direct = get(
        peer_chain=[c.public_bytes(Encoding.DER) for c in svid.cert_chain],
        remote_addr="203.0.113.9",
    )
    header = {"x-forwarded-client-cert": xfcc_for(svid.leaf.public_bytes(Encoding.PEM))}
    forwarded = get(headers=header, remote_addr="10.1.2.3")
    for view, proven_by in ((direct, "mtls"), (forwarded, "proxy-mtls"), (direct, "mtls")):
        outcome = guard.evaluate(view)
        assert outcome.allowed and outcome.principal is not None
        assert outcome.principal.proven_by == proven_by
        assert outcome.principal.cert_fingerprint == svid.fingerprint


def test_a_token_beside_a_forwarded_certificate_leaves_it_proven_by_the_proxy(
    issuer: TokenIssuer, clock: FixedClock, ca: DevCA
) -> None:
    """``mtls+jwt`` means the connection's own certificate: a caller behind a proxy cannot
    pass a rule for direct connections by adding a token (of any subject) to its request,
    nor stop matching a rule for proxied ones."""
    proxies = TrustedProxies(["10.0.0.0/8"], header="xfcc")
    guard, _ = make_guard(
        issuer, clock, pol=cert_policy(), bundles=ca.bundle, trusted_proxies=proxies
    )
    svid = ca.issue_svid(WEB)
    token = issuer.issue(subject="someone-else", audience=AUD, scopes=["orders:read"])
    header = {"x-forwarded-client-cert": xfcc_for(svid.leaf.public_bytes(Encoding.PEM))}
    forwarded = get(token, headers=header, remote_addr="10.1.2.3")
    direct = get(
        token,
        peer_chain=[c.public_bytes(Encoding.DER) for c in svid.cert_chain],
        remote_addr="203.0.113.9",
    )
    direct_only, proxied_only = (
        require(proven_by=["mtls", "mtls+jwt"]),
        require(proven_by=["proxy-mtls"]),
    )
    for _ in range(2):  # the second time from the repeated-request path
        outcome = guard.evaluate(forwarded)
        assert outcome.allowed and outcome.principal is not None
        assert outcome.principal.proven_by == "proxy-mtls"
        assert outcome.principal.subject == "someone-else"
        assert outcome.principal.cert_fingerprint == svid.fingerprint
        assert guard.evaluate(forwarded, direct_only).status == 403
        assert guard.evaluate(forwarded, proxied_only).allowed
        assert guard.evaluate(direct).principal.proven_by == "mtls+jwt"  # type: ignore[union-attr]
        assert guard.evaluate(direct, direct_only).allowed


def test_a_method_no_real_request_has_is_cut_in_the_audit_event(
    issuer: TokenIssuer, clock: FixedClock
) -> None:
    """The caller writes the method (h11 and werkzeug take any token of any length): the
    event keeps its first 64 characters, and the checks of the event never read the rest."""
    guard, sink = make_guard(issuer, clock)
    method = "EXTENSION" * 2000
    outcome = guard.evaluate(get(method=method))
    assert outcome.status == 401
    assert sink.last is not None
    assert sink.last.method == method[:64] + TRUNCATION_MARKER
    guard.evaluate(get(method="PROPFIND"))
    assert sink.last.method == "PROPFIND"


@pytest.mark.parametrize(
    "service", ["", 'a"b', "a\\b", "a\r\nX-Injected: 1", "caf\u00e9", "a\x00", 5, None, b"orders"]
)
def test_the_service_name_is_a_realm_without_escapes(issuer: TokenIssuer, service: object) -> None:
    """It is the realm of every challenge (RFC 9110 11.2): printable ASCII, no quote or
    backslash, so nothing ever needs escaping and no header can be injected."""
    verifier = TokenVerifier(issuer=ISS, audience=AUD, keys=issuer.jwks(), algorithms=["ES256"])
    with pytest.raises(ConfigurationError, match="service"):
        Guard(authenticator=Authenticator(tokens=verifier), policy=policy(), service=service)
    guard = Guard(
        authenticator=Authenticator(tokens=verifier), policy=policy(), service="orders api"
    )
    assert guard.evaluate(get()).www_authenticate == 'Bearer realm="orders api"'


TRACEPARENT = "00-11111111111111111111111111111111-2222222222222222-01"


def test_a_revoked_tokens_trace_context_is_recorded_untrusted(
    issuer: TokenIssuer, clock: FixedClock
) -> None:
    """The trace id is trusted from authenticated callers only: a token refused after it was
    verified (revoked here) does not make its caller one."""
    guard, sink = make_guard(issuer, clock)
    token = issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"])
    allowed = guard.evaluate(get(token, headers={"traceparent": TRACEPARENT}))
    assert allowed.allowed and sink.last is not None and sink.last.trace_trusted
    assert allowed.principal is not None and allowed.principal.token_jti
    guard.store.revoke_token(allowed.principal.token_jti, expires_at=clock.now().timestamp() + 60)
    refused = guard.evaluate(get(token, headers={"traceparent": TRACEPARENT}))
    assert refused.status == 401 and sink.last.reason == "token_revoked"
    assert sink.last.trace_id == "11111111111111111111111111111111"
    assert not sink.last.trace_trusted


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_an_unchecked_replay_leaves_the_trace_context_untrusted(
    issuer: TokenIssuer, clock: FixedClock, mode: str
) -> None:
    """A caller whose DPoP proof could not be checked for replay (the store's replay table is
    full: 503) is no more authenticated than one whose proof was found replayed: its trace id
    is recorded, untrusted (fail closed)."""
    store = MemoryStore(clock=clock, max_replay_entries=1)
    guard, sink = make_guard(issuer, clock, store=store)
    holder = PrivateJWK.generate("ES256")
    token = bound_token(issuer, holder)

    def evaluate(jti: str) -> Outcome:
        headers = {
            "authorization": f"DPoP {token}",
            "dpop": proof_now(holder, token, clock, jti=jti),
            "traceparent": TRACEPARENT,
        }
        if mode == "sync":
            return guard.evaluate(get(headers=headers))
        return asyncio.run(guard.aevaluate(get(headers=headers)))

    assert evaluate("p1").allowed and sink.last is not None and sink.last.trace_trusted
    replayed = evaluate("p1")
    assert replayed.status == 401 and sink.last.reason == "dpop_proof_replayed"
    assert not sink.last.trace_trusted
    unchecked = evaluate("p2")  # the one replay entry is taken: this proof cannot be checked
    assert unchecked.status == 503 and unchecked.principal is not None
    assert sink.last.reason == "store_full"
    assert sink.last.trace_id == "11111111111111111111111111111111"
    assert not sink.last.trace_trusted


def test_an_anonymous_caller_s_trace_context_is_recorded_untrusted(
    issuer: TokenIssuer, clock: FixedClock
) -> None:
    """A public route admits callers nobody authenticated: their trace id is kept for
    correlation, never trusted."""
    guard, sink = make_guard(issuer, clock)
    allowed = guard.evaluate(get(route="/healthz", headers={"traceparent": TRACEPARENT}))
    assert allowed.allowed and allowed.principal is None
    assert sink.last is not None and sink.last.trace_id == "11111111111111111111111111111111"
    assert not sink.last.trace_trusted


def test_a_failed_required_sink_leaves_the_refusal_on_record(
    issuer: TokenIssuer, clock: FixedClock
) -> None:
    """Fail closed: the caller gets 503; the sinks that recorded the allow before another one
    failed also get the refusal that was enforced, naming the event it replaces."""
    from zerotrust.audit import AuditPipeline, CallableSink
    from zerotrust.pipeline import SUPERSEDES_NOTE

    def broken(event: object) -> None:
        raise OSError("disk full")

    recorded = MemorySink()
    audit = AuditPipeline([CallableSink(broken), recorded], on_error="closed")
    base, _ = make_guard(issuer, clock)
    guard = Guard(
        authenticator=base.authenticator, policy=base.policy, audit=audit, store=base.store,
        service="orders", clock=clock,
    )  # fmt: skip
    outcome = guard.evaluate(get(issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"])))
    assert (outcome.allowed, outcome.status) == (False, 503)
    first, last = recorded.events
    assert (first.decision, first.status) == ("allow", 200)
    assert (last.decision, last.status, last.reason) == ("deny", 503, "audit_error")
    assert f"supersedes:{first.event_id}" in last.notes  # the documented form of the note
    assert SUPERSEDES_NOTE == "supersedes:"
    assert outcome.event is last
    # a denied request too: the event enforced is the audit failure's, not the policy's
    denied = guard.evaluate(get(issuer.issue(subject=WEB, audience=AUD)))  # no scope
    refused = recorded.events[-1]
    assert (denied.status, refused.reason, refused.status) == (503, "audit_error", 503)
    assert recorded.events[-2].reason == "insufficient_scope"


def test_notes_survive_a_failed_authentication(issuer: TokenIssuer, clock: FixedClock) -> None:
    """A spoofed forwarded certificate is noted in the audit event whether or not the token
    that came with it was good."""
    guard, sink = make_guard(issuer, clock)
    spoofed = {"x-forwarded-client-cert": "By=spiffe://x;URI=spiffe://example.org/admin"}
    for token in (None, "not.a.token"):
        outcome = guard.evaluate(get(token, headers=spoofed, remote_addr="203.0.113.9"))
        assert outcome.status in (400, 401)
        assert sink.last is not None
        assert "forwarded_cert_ignored_untrusted_peer" in sink.last.notes


def test_requests_print_without_their_credentials() -> None:
    request = Request(headers={"authorization": "Bearer secret.token.value", "x-api-key": "k3y"})
    shown = repr(request)
    assert "secret.token.value" not in shown and "k3y" not in shown
    assert "authorization" in shown and "x-api-key" in shown


# --- inputs found by fuzzing: each was a 500 ("internal error while deciding") -----------------


def _proof(key: PrivateJWK, claims: dict[str, object]) -> str:
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": key.public().to_public_dict()}
    segs = [b64url_encode(json.dumps(x).encode()) for x in (header, claims)]
    return ".".join([*segs, b64url_encode(key.sign(".".join(segs).encode()))])


@pytest.mark.parametrize(
    "claims",
    [
        {"jti": "a", "htm": "GET", "htu": "https://api.example/orders/7", "iat": 10**400},
        {
            "jti": "b",
            "htm": "GET",
            "htu": "https://api.example/orders/7",
            "iat": "NOW",
            "ath": "\ud800",
        },
    ],
    ids=["huge iat", "lone surrogate in ath"],
)
def test_hostile_dpop_proofs_are_refused_not_crashed_on(
    issuer: TokenIssuer, clock: FixedClock, claims: dict[str, object]
) -> None:
    guard, sink = make_guard(issuer, clock)
    if claims.get("iat") == "NOW":
        claims = {**claims, "iat": int(clock.now().timestamp())}
    token = issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"])
    proof = _proof(PrivateJWK.generate("ES256"), claims)
    outcome = guard.evaluate(
        Request(route=ROUTE, path="/orders/7", host="api.example",
                headers={"authorization": f"DPoP {token}", "dpop": proof})
    )  # fmt: skip
    assert outcome.status == 401 and sink.last is not None and sink.last.decision == "deny"


def test_hostile_binding_claims_are_refused_not_crashed_on(
    issuer: TokenIssuer, key: PrivateJWK, clock: FixedClock, ca: DevCA
) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    from zerotrust.tokens._b64 import b64url_decode

    guard, _ = make_guard(issuer, clock, bundles=ca.bundle, token_must_match_peer=True)
    chain = [c.public_bytes(Encoding.DER) for c in ca.issue_svid(WEB).cert_chain]
    for extra in ({"cnf": {"x5t#S256": "\ud800"}}, {"azp": {"x": 1}}, {"cnf": {"jkt": "\ud800"}}):
        # signed by hand: the issuer refuses to write a lone surrogate, a hostile one does not
        issued = issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"])
        header, payload = (json.loads(b64url_decode(part)) for part in issued.split(".")[:2])
        token = hand_signed(key, header, {**payload, **extra})
        view = Request(route=ROUTE, headers={"authorization": f"Bearer {token}"}, peer_chain=chain)
        assert guard.evaluate(view).status == 401, extra


def test_a_certificate_with_a_duplicated_extension_is_malformed(
    issuer: TokenIssuer, clock: FixedClock
) -> None:
    """cryptography refuses to read any extension of such a certificate (DuplicateExtension,
    not a ValueError): a direct peer and a forwarded one are both refused as malformed."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import NameOID, ObjectIdentifier

    from zerotrust.authn.proxy import parse_xfcc
    from zerotrust.errors import MalformedCredentials

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])
    san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(WEB)])
    now = clock.now()
    der = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(san, False)
        .add_extension(
            x509.UnrecognizedExtension(ObjectIdentifier("2.5.29.99"), san.public_bytes()), False
        )
        .sign(key, hashes.SHA256())
        .public_bytes(Encoding.DER)
    ).replace(b"\x06\x03\x55\x1d\x63", b"\x06\x03\x55\x1d\x11")  # a second SAN extension
    dev = DevCA.create("example.org")
    guard, _ = make_guard(issuer, clock, bundles=dev.bundle)
    assert guard.evaluate(Request(route=ROUTE, peer_chain=[der])).status == 401
    pem = x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM).decode()
    with pytest.raises(MalformedCredentials):
        parse_xfcc(f'URI={WEB};Cert="{urllib.parse.quote(pem, safe="")}"')[0].der_chain()


def test_an_unavailable_store_is_logged_with_its_cause_once_per_interval(
    issuer: TokenIssuer,
    clock: FixedClock,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import types

    from zerotrust.errors import StoreUnavailable

    monotonic = [1000.0]
    monkeypatch.setattr(
        "zerotrust.pipeline.time", types.SimpleNamespace(monotonic=lambda: monotonic[0])
    )

    class Down(MemoryStore):
        def is_revoked(self, **kwargs: object) -> bool:  # type: ignore[override]
            raise StoreUnavailable("shared store unavailable: AuthenticationError (WRONGPASS)")

    verifier = TokenVerifier(
        issuer=ISS, audience=AUD, keys=issuer.jwks(), algorithms=["ES256"], clock=clock
    )
    guard = Guard(
        authenticator=Authenticator(tokens=verifier, clock=clock),
        policy=policy(),
        audit=MemorySink(),
        store=Down(clock=clock),
        clock=clock,
    )
    token = issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"])
    caplog.set_level(logging.WARNING, logger="zerotrust")
    outcomes = [guard.evaluate(get(token)) for _ in range(5)]
    assert [o.status for o in outcomes] == [503] * 5
    assert all(
        o.body()
        == {"error": "temporarily_unavailable", "error_description": "temporarily unavailable"}
        for o in outcomes
    )
    lines = [r for r in caplog.records if "refused with 503" in r.getMessage()]
    assert [r.getMessage() for r in lines] == [
        "zerotrust: service zerotrust: requests refused with 503: store_unavailable:"
        " shared store unavailable: AuthenticationError (WRONGPASS)"
    ]
    assert lines[0].name == "zerotrust"
    # the interval is 10 seconds
    for step, logged in ((9.5, 1), (0.5, 2), (9.5, 2), (0.5, 3)):
        monotonic[0] += step
        assert guard.evaluate(get(token)).status == 503
        assert sum("refused with 503" in r.getMessage() for r in caplog.records) == logged


def test_authenticator_configurations_that_could_never_authenticate_are_refused(
    key: PrivateJWK, ca: DevCA
) -> None:
    verifier = TokenVerifier(issuer=ISS, audience=AUD, keys=key.public(), algorithms=["ES256"])
    with pytest.raises(ConfigurationError, match="needs tokens=, bundles= or api_keys="):
        Authenticator()
    with pytest.raises(ConfigurationError, match="require_token=True needs a token verifier"):
        Authenticator(bundles=ca.bundle, require_token=True)
    with pytest.raises(ConfigurationError, match="forwarded certificates need bundles="):
        Authenticator(tokens=verifier, trusted_proxies=TrustedProxies(["10.0.0.0/8"]))
    for depth in (-1, 33):
        with pytest.raises(ConfigurationError, match="between 0 and 32"):
            Authenticator(tokens=verifier, max_delegation_depth=depth)
    for depth in (0, 32):
        assert (
            Authenticator(tokens=verifier, max_delegation_depth=depth).max_delegation_depth == depth
        )
    Authenticator(api_keys=ApiKeys({"ci": ApiKeys.hash(API_KEY)}))


class _BrokenView(Request):
    """A request view whose header reading breaks, as a buggy framework adapter might."""

    def header(self, name: str) -> list[str]:
        raise RuntimeError("connection string postgres://app:hunter2@db/internal")


def test_an_unexpected_error_while_deciding_refuses_and_shows_nothing(
    issuer: TokenIssuer, clock: FixedClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Fail closed: an exception that is no ZeroTrustError is a refusal (500), logged with its
    traceback for the operator, while the caller and the audit trail see only that deciding
    failed."""
    guard, sink = make_guard(issuer, clock)
    token = issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"])
    view = _BrokenView(
        method="GET", route=ROUTE, path="/orders/7", headers={"Authorization": f"Bearer {token}"}
    )
    with caplog.at_level(logging.ERROR, logger="zerotrust"):
        outcomes = [guard.evaluate(view), asyncio.run(guard.aevaluate(view))]
    for outcome in outcomes:
        assert not outcome.allowed and outcome.principal is None
        assert (outcome.status, outcome.grpc_status) == (500, "INTERNAL")
        assert outcome.body() == {"error": "zerotrust_error", "error_description": "request failed"}
        assert outcome.www_authenticate is None  # no authentication failed
        assert "hunter2" not in json.dumps(outcome.body())
    assert [e.decision for e in sink.events] == ["deny", "deny"]
    assert all("hunter2" not in event.to_json() for event in sink.events)
    logged = [r for r in caplog.records if "unexpected error while deciding" in r.getMessage()]
    assert len(logged) == 2 and all(r.exc_info is not None for r in logged)


def test_a_stream_of_new_tokens_keeps_no_more_of_them_than_the_cache_size(
    issuer: TokenIssuer, clock: FixedClock
) -> None:
    """Tokens seen once each (rotating callers) leave the verified-token cache at its
    ``cache_size``; the Guard's memos of principals, decisions and repeats must not keep
    them alive beyond it (they kept up to 8192 verified tokens with their claims, whatever
    the cache size: over 100 MB for tokens with a few KB of claims)."""
    cache_size = 8
    verifier = TokenVerifier(
        issuer=ISS,
        audience=AUD,
        keys=issuer.jwks(),
        algorithms=["ES256"],
        clock=clock,
        cache_size=cache_size,
    )
    guard = Guard(
        authenticator=Authenticator(tokens=verifier, clock=clock),
        policy=policy(),
        audit=MemorySink(max_events=1),
        store=MemoryStore(clock=clock),
        clock=clock,
    )
    marker = "stream-of-new-tokens"
    for n in range(300):
        token = issuer.issue(
            subject=f"{WEB}-{n}",
            audience=AUD,
            scopes=["orders:read"],
            extra_claims={"marker": marker},
        )
        assert guard.evaluate(get(token)).allowed
        assert guard.evaluate(get(token)).allowed  # a repeat: what the memos are for
    gc.collect()
    alive = [
        obj
        for obj in gc.get_objects()
        if type(obj) is VerifiedToken and obj.claims.get("marker") == marker
    ]
    assert len(verifier.cache) == cache_size
    # the cache's own, and each memo's (principals, decisions, repeats) at most as many
    assert len(alive) <= 4 * cache_size, len(alive)
