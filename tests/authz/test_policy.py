"""Table-driven policy tests: every rule kind, evaluation order, dry-run, requirements."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests._fork import in_child
from zerotrust import SpiffeId, match
from zerotrust.authn.principal import Principal
from zerotrust.authn.request import Request
from zerotrust.authz import (
    Callers,
    Condition,
    Operation,
    Operations,
    Policy,
    RateLimit,
    Rule,
    ScopeRule,
    require,
)
from zerotrust.authz.rules import normalize_route
from zerotrust.errors import ConfigurationError

WEB = "spiffe://example.org/ns/shop/sa/web"
ADMIN = "spiffe://example.org/ns/ops/sa/admin"
PARTNER = "spiffe://partner.org/ns/x/sa/y"
GET_ORDER = Operation("GET", "/orders/{order_id}")
DELETE_ORDER = Operation("DELETE", "/orders/{order_id}")
HEALTH = Operation("GET", "/healthz")


def who(
    spiffe_id: str | None = WEB,
    *,
    scopes: tuple[str, ...] = (),
    proven_by: str = "mtls",
    **kw: object,
) -> Principal:
    sid = SpiffeId.parse(spiffe_id) if spiffe_id else None
    return Principal(proven_by=proven_by, spiffe_id=sid, scopes=frozenset(scopes), **kw)  # type: ignore[arg-type]


def allow(rule_id: str = "allow", **kw: object) -> Rule:
    return Rule(id=rule_id, action="ALLOW", **kw)  # type: ignore[arg-type]


def deny(rule_id: str = "deny", **kw: object) -> Rule:
    return Rule(id=rule_id, action="DENY", **kw)  # type: ignore[arg-type]


CASES = [
    # (id, rules, principal, operation, allowed, reason, rule_id)
    ("no rules denies", [], who(), GET_ORDER, False, "no_rules", None),
    (
        "allow by exact id",
        [allow(callers=[Callers(spiffe_ids=[WEB])])],
        who(),
        GET_ORDER,
        True,
        "allowed_by_rule",
        "allow",
    ),
    (
        "allow by id prefix",
        [allow(callers=[Callers(spiffe_ids=["spiffe://example.org/ns/shop/*"])])],
        who(),
        GET_ORDER,
        True,
        "allowed_by_rule",
        "allow",
    ),
    (
        "allow by id suffix",
        [allow(callers=[Callers(spiffe_ids=["*/sa/web"])])],
        who(),
        GET_ORDER,
        True,
        "allowed_by_rule",
        "allow",
    ),
    (
        "other id not allowed",
        [allow(callers=[Callers(spiffe_ids=[ADMIN])])],
        who(),
        GET_ORDER,
        False,
        "no_allow_rule_matched",
        None,
    ),
    (
        "not_spiffe_ids",
        [allow(callers=[Callers(not_spiffe_ids=[WEB])])],
        who(),
        GET_ORDER,
        False,
        "no_allow_rule_matched",
        None,
    ),
    (
        "trust domain",
        [allow(callers=[Callers(trust_domains=["example.org"])])],
        who(),
        GET_ORDER,
        True,
        "allowed_by_rule",
        "allow",
    ),
    (
        "not trust domain",
        [allow(callers=[Callers(not_trust_domains=["partner.org"])])],
        who(PARTNER),
        GET_ORDER,
        False,
        "no_allow_rule_matched",
        None,
    ),
    (
        "issuer exact",
        [allow(callers=[Callers(issuers=["https://idp"])])],
        who(None, proven_by="jwt", issuer="https://idp", subject="u1"),
        GET_ORDER,
        True,
        "allowed_by_rule",
        "allow",
    ),
    (
        "issuer is not a prefix match",
        [allow(callers=[Callers(issuers=["https://idp"])])],
        who(None, proven_by="jwt", issuer="https://idp.evil", subject="u1"),
        GET_ORDER,
        False,
        "no_allow_rule_matched",
        None,
    ),
    (
        "subject pattern",
        [allow(callers=[Callers(subjects=["user-*"])])],
        who(None, proven_by="jwt", subject="user-7"),
        GET_ORDER,
        True,
        "allowed_by_rule",
        "allow",
    ),
    (
        "proven_by refuses api keys",
        [allow(callers=[Callers(not_proven_by=["api-key"])])],
        who(None, proven_by="api-key", api_key_id="k"),
        GET_ORDER,
        False,
        "no_allow_rule_matched",
        None,
    ),
    (
        "method + route template",
        [allow(operations=[Operations(methods=["get"], routes=["/orders/{order_id}"])])],
        who(),
        GET_ORDER,
        True,
        "allowed_by_rule",
        "allow",
    ),
    (
        "method mismatch",
        [allow(operations=[Operations(methods=["GET"])])],
        who(),
        DELETE_ORDER,
        False,
        "no_allow_rule_matched",
        None,
    ),
    (
        "not_methods",
        [allow(operations=[Operations(not_methods=["DELETE"])])],
        who(),
        DELETE_ORDER,
        False,
        "no_allow_rule_matched",
        None,
    ),
    (
        "route prefix",
        [allow(operations=[Operations(routes=["/orders/*"])])],
        who(),
        GET_ORDER,
        True,
        "allowed_by_rule",
        "allow",
    ),
    (
        "not_routes",
        [allow(operations=[Operations(not_routes=["/orders/*"])])],
        who(),
        GET_ORDER,
        False,
        "no_allow_rule_matched",
        None,
    ),
    (
        "grpc method",
        [allow(operations=[Operations(routes=["/shop.Orders/*"], kinds=["grpc"])])],
        who(),
        Operation("POST", "/shop.Orders/Get", kind="grpc"),
        True,
        "allowed_by_rule",
        "allow",
    ),
    (
        "condition on claim",
        [allow(when=[Condition("claims.tenant", values=["acme"])])],
        who(claims={"tenant": "acme"}),
        GET_ORDER,
        True,
        "allowed_by_rule",
        "allow",
    ),
    (
        "condition on nested list claim",
        [allow(when=[Condition("claims.org.teams", values=["blue"])])],
        who(claims={"org": {"teams": ["red", "blue"]}}),
        GET_ORDER,
        True,
        "allowed_by_rule",
        "allow",
    ),
    (
        "condition not_values",
        [allow(when=[Condition("claims.tenant", not_values=["evil"])])],
        who(claims={"tenant": "evil"}),
        GET_ORDER,
        False,
        "no_allow_rule_matched",
        None,
    ),
    (
        "missing claim never matches values",
        [allow(when=[Condition("claims.tenant", values=["*"])])],
        who(),
        GET_ORDER,
        False,
        "no_allow_rule_matched",
        None,
    ),
    (
        "actor condition",
        [allow(when=[Condition("actor", values=[ADMIN])])],
        who(actor=ADMIN),
        GET_ORDER,
        True,
        "allowed_by_rule",
        "allow",
    ),
    (
        "issuer condition",
        [allow(when=[Condition("issuer", values=["https://idp.example"])])],
        who(issuer="https://idp.example"),
        GET_ORDER,
        True,
        "allowed_by_rule",
        "allow",
    ),
    (
        "client_id condition",
        [allow(when=[Condition("client_id", not_values=["legacy-*"])])],
        who(client_id="legacy-batch"),
        GET_ORDER,
        False,
        "no_allow_rule_matched",
        None,
    ),
    (
        "scopes satisfied",
        [allow(scopes=ScopeRule(all=["orders:read"]))],
        who(scopes=("orders:read",)),
        GET_ORDER,
        True,
        "allowed_by_rule",
        "allow",
    ),
    (
        "scopes missing",
        [allow(scopes=ScopeRule(all=["orders:read", "orders:list"]))],
        who(scopes=("orders:read",)),
        GET_ORDER,
        False,
        "insufficient_scope",
        "allow",
    ),
    (
        "any scopes",
        [allow(scopes=ScopeRule(any=["a", "b"]))],
        who(scopes=("b",)),
        GET_ORDER,
        True,
        "allowed_by_rule",
        "allow",
    ),
    (
        "deny beats allow",
        [allow(), deny(callers=[Callers(spiffe_ids=[WEB])])],
        who(),
        GET_ORDER,
        False,
        "denied_by_rule",
        "deny",
    ),
    (
        "deny without callers hits anonymous",
        [
            allow("pub", callers=[Callers(anonymous=True)]),
            deny(operations=[Operations(methods=["DELETE"])]),
        ],
        None,
        DELETE_ORDER,
        False,
        "denied_by_rule",
        "deny",
    ),
    (
        "anonymous allowed explicitly",
        [allow(callers=[Callers(anonymous=True)], operations=[Operations(routes=["/healthz"])])],
        None,
        HEALTH,
        True,
        "allowed_by_rule",
        "allow",
    ),
    (
        "allow without callers needs a principal",
        [allow()],
        None,
        GET_ORDER,
        False,
        "no_allow_rule_matched",
        None,
    ),
    (
        "anonymous rule does not match principals",
        [allow(callers=[Callers(anonymous=True)])],
        who(),
        GET_ORDER,
        False,
        "no_allow_rule_matched",
        None,
    ),
    (
        "only deny rules: default deny",
        [deny(callers=[Callers(spiffe_ids=[ADMIN])])],
        who(),
        GET_ORDER,
        False,
        "no_allow_rule_matched",
        None,
    ),
]


@pytest.mark.parametrize(
    ("rules", "principal", "op", "allowed", "reason", "rule_id"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_table(
    rules: list[Rule],
    principal: Principal | None,
    op: Operation,
    allowed: bool,
    reason: str,
    rule_id: str | None,
) -> None:
    policy = Policy(rules, id="p")
    decision = policy.evaluate(principal, op)
    assert (decision.allowed, decision.reason, decision.rule_id) == (allowed, reason, rule_id)
    assert decision.policy_id == "p"
    if not any(rule.action == "CUSTOM" for rule in rules):
        assert policy.decide_without_hooks(principal, op) == decision


def test_insufficient_scope_names_the_missing_scopes() -> None:
    policy = Policy([allow(scopes=ScopeRule(all=["orders:read", "orders:list"]))])
    decision = policy.evaluate(who(scopes=("orders:read",)), GET_ORDER)
    assert decision.required_scopes == ("orders:list",)


def test_default_allow_is_explicit_and_yields_to_allow_rules() -> None:
    by_default = Policy(default="allow").evaluate(who(), GET_ORDER)
    assert (by_default.allowed, by_default.reason) == (True, "allowed_by_default")
    only_admin = Policy([allow(callers=[Callers(spiffe_ids=[ADMIN])])], default="allow")
    assert not only_admin.evaluate(who(), GET_ORDER).allowed  # ALLOW rules exist: no fallback


def test_custom_runs_first_and_can_deny() -> None:
    calls: list[str] = []

    def hook(principal: Principal | None, op: Operation) -> bool:
        calls.append(op.method)
        return op.method == "GET"

    policy = Policy([allow(), Rule(id="opa", action="CUSTOM", hook=hook)])
    assert policy.evaluate(who(), GET_ORDER).allowed
    denied = policy.evaluate(who(), DELETE_ORDER)
    assert (denied.allowed, denied.reason, denied.rule_id) == (False, "denied_by_custom", "opa")
    assert calls == ["GET", "DELETE"]


@pytest.mark.parametrize(
    ("hook", "detail"),
    [
        (lambda p, o: (_ for _ in ()).throw(RuntimeError("boom")), "RuntimeError: boom"),
        (lambda p, o: "yes", "TypeError: "),  # not a bool
        (lambda p, o: time.sleep(0.5) or True, "TimeoutError: "),  # too slow
    ],
    ids=["raises", "not-bool", "timeout"],
)
def test_custom_failure_denies(hook: object, detail: str) -> None:
    policy = Policy([allow(), Rule(id="ext", action="CUSTOM", hook=hook, hook_timeout=0.05)])  # type: ignore[arg-type]
    decision = policy.evaluate(who(), GET_ORDER)
    assert (decision.allowed, decision.reason) == (False, "custom_error")
    assert decision.detail.startswith(detail), decision.detail  # what the audit trail says
    decision = asyncio.run(policy.evaluate_async(who(), GET_ORDER))  # the hook in a thread
    assert (decision.allowed, decision.reason) == (False, "custom_error")
    assert decision.detail.startswith(detail), decision.detail


def test_custom_blocking_hook_in_async_evaluation() -> None:
    """A plain function runs in a worker thread, off the event loop; one that hands back an
    awaitable (a coroutine made by a wrapper) has that awaited, within the same timeout."""
    threads: list[str] = []

    def hook(principal: Principal | None, op: Operation) -> bool:
        threads.append(threading.current_thread().name)
        return op.method == "GET"

    policy = Policy([allow(), Rule(id="ext", action="CUSTOM", hook=hook)])
    assert asyncio.run(policy.evaluate_async(who(), GET_ORDER)).allowed
    denied = asyncio.run(policy.evaluate_async(who(), DELETE_ORDER))
    assert (denied.allowed, denied.reason) == (False, "denied_by_custom")
    assert threading.main_thread().name not in threads and len(threads) == 2

    async def verdict(allowed: bool, delay: float) -> bool:
        await asyncio.sleep(delay)
        return allowed

    def wrapped(principal: Principal | None, op: Operation) -> Any:
        return verdict(op.method == "GET", 0)

    def wrapped_slow(principal: Principal | None, op: Operation) -> Any:
        return verdict(True, 1)

    deferred = Policy([allow(), Rule(id="ext", action="CUSTOM", hook=wrapped)])
    assert asyncio.run(deferred.evaluate_async(who(), GET_ORDER)).allowed
    assert not asyncio.run(deferred.evaluate_async(who(), DELETE_ORDER)).allowed
    slow = Policy([allow(), Rule(id="ext", action="CUSTOM", hook=wrapped_slow, hook_timeout=0.05)])
    assert asyncio.run(slow.evaluate_async(who(), GET_ORDER)).reason == "custom_error"


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_blocking_hooks_of_concurrent_requests_run_at_once(driver: str) -> None:
    """A hook's timeout is its own running time: 32 requests at once, each hook waiting for
    all 32 to be running, are all decided by their hooks. (A shared pool of 8 threads left 24
    queued, and time queued counted against hook_timeout: refused, custom_error.)"""
    together = threading.Barrier(32)

    def hook(principal: Principal | None, op: Operation) -> bool:
        together.wait(timeout=30)  # broken (raises) unless all 32 run at once
        return True

    policy = Policy([allow(), Rule(id="pdp", action="CUSTOM", hook=hook, hook_timeout=60)])
    if driver == "sync":
        with concurrent.futures.ThreadPoolExecutor(32) as callers:
            decisions = list(callers.map(lambda _: policy.evaluate(who(), GET_ORDER), range(32)))
    else:

        async def all_at_once() -> list[Any]:
            asked = [policy.evaluate_async(who(), GET_ORDER) for _ in range(32)]
            return list(await asyncio.gather(*asked))

        decisions = asyncio.run(all_at_once())
    assert [d.reason for d in decisions] == ["allowed_by_rule"] * 32


def _a_hanging_and_a_quick_hook() -> tuple[threading.Event, Policy, Policy]:
    """A policy whose CUSTOM hook hangs (in a decision service, until the event is set) and
    one whose hook answers at once."""
    release = threading.Event()

    def hanging(principal: Principal | None, op: Operation) -> bool:
        release.wait(30)
        return True

    stuck = Policy([allow(), Rule(id="down", action="CUSTOM", hook=hanging, hook_timeout=0.01)])
    quick = Policy([allow(), Rule(id="up", action="CUSTOM", hook=lambda p, o: True)])
    return release, stuck, quick


def test_hooks_stuck_in_a_decision_service_hold_nothing_another_rule_needs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Timed-out hooks of a service that hangs keep running: they no longer hold a worker of
    a pool every Guard shares (after 8 of them, every CUSTOM rule of the process was refused).
    Their number is bounded: past it a rule is refused at once, no thread started."""
    from zerotrust.authz import policy as policy_module

    monkeypatch.setattr(policy_module, "_running_hooks", threading.BoundedSemaphore(12))
    release, stuck, quick = _a_hanging_and_a_quick_hook()
    try:
        for _ in range(10):
            assert stuck.evaluate(who(), GET_ORDER).reason == "custom_error"
        assert quick.evaluate(who(), GET_ORDER).allowed  # another rule's hook still runs
        assert asyncio.run(quick.evaluate_async(who(), GET_ORDER)).allowed
        for _ in range(2):  # the bound reached: refused without starting another thread
            assert stuck.evaluate(who(), GET_ORDER).reason == "custom_error"
        refused = quick.evaluate(who(), GET_ORDER)
        assert refused.reason == "custom_error" and "hooks are still running" in refused.detail
    finally:
        release.set()


def test_a_forked_child_runs_hooks_though_its_parent_s_hooks_hung() -> None:
    """A fork while blocking hooks run (a worker forked from a process that served): their
    threads stay in the parent, so the child must not count them against the bound (with
    the parent's 256 stuck, every CUSTOM rule of the child was refused, for good)."""
    from zerotrust.authz.policy import MAX_RUNNING_HOOKS

    release, stuck, quick = _a_hanging_and_a_quick_hook()

    async def fill() -> list[Any]:
        asked = [stuck.evaluate_async(who(), GET_ORDER) for _ in range(MAX_RUNNING_HOOKS)]
        return list(await asyncio.gather(*asked))

    def in_the_child() -> str:
        decision = quick.evaluate(who(), GET_ORDER)
        return f"{decision.reason} {decision.detail or ''}".strip()

    try:
        assert {d.reason for d in asyncio.run(fill())} == {"custom_error"}
        assert "hooks are still running" in quick.evaluate(who(), GET_ORDER).detail
        assert in_child(in_the_child) == "allowed_by_rule"
    finally:
        release.set()


def test_custom_async_hook_in_async_evaluation() -> None:
    async def hook(principal: Principal | None, op: Operation) -> bool:
        await asyncio.sleep(0)
        return principal is not None and principal.spiffe_id == SpiffeId.parse(WEB)

    async def slow(principal: Principal | None, op: Operation) -> bool:
        await asyncio.sleep(1)
        return True

    policy = Policy([allow(), Rule(id="ext", action="CUSTOM", hook=hook)])
    assert asyncio.run(policy.evaluate_async(who(), GET_ORDER)).allowed
    assert not asyncio.run(policy.evaluate_async(who(ADMIN), GET_ORDER)).allowed
    # the sync driver runs an async hook to completion in its worker thread, on a loop there
    assert policy.evaluate(who(), GET_ORDER).allowed
    assert not policy.evaluate(who(ADMIN), GET_ORDER).allowed
    timeout = Policy([allow(), Rule(id="slow", action="CUSTOM", hook=slow, hook_timeout=0.05)])
    assert asyncio.run(timeout.evaluate_async(who(), GET_ORDER)).reason == "custom_error"
    assert timeout.evaluate(who(), GET_ORDER).reason == "custom_error"  # timed out: denied

    async def broken(principal: Principal | None, op: Operation) -> bool:
        raise RuntimeError("the decision service is down")

    failing = Policy([allow(), Rule(id="broken", action="CUSTOM", hook=broken)])
    assert failing.evaluate(who(), GET_ORDER).reason == "custom_error"
    assert asyncio.run(failing.evaluate_async(who(), GET_ORDER)).reason == "custom_error"


def test_an_async_hook_raising_cancelled_error_denies() -> None:
    """A hook awaiting something another task cancelled (a shared lookup whose first caller
    went away) raises ``CancelledError``: that is the hook failing, which denies, audited, as
    any other error does; the request's own cancellation is still a cancellation."""
    from tests.tokens.conftest import AUDIENCE, ISSUER, NOW, claims, mint
    from zerotrust import Authenticator, FixedClock, Guard, MemorySink, PrivateJWK, TokenVerifier

    async def cancelled_elsewhere(principal: Principal | None, op: Operation) -> bool:
        shared: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        shared.cancel()
        return await shared

    policy = Policy([Rule(id="opa", action="CUSTOM", hook=cancelled_elsewhere), allow()])
    decision = asyncio.run(policy.evaluate_async(who(), GET_ORDER))
    assert (decision.allowed, decision.reason, decision.rule_id) == (False, "custom_error", "opa")
    assert policy.evaluate(who(), GET_ORDER).reason == "custom_error"
    # through a Guard, on a real token: a typed refusal, and an audit event
    key = PrivateJWK.generate("ES256", kid="k1")
    verifier = TokenVerifier(
        issuer=ISSUER,
        audience=AUDIENCE,
        keys={"keys": [key.public().to_public_dict()]},
        algorithms=["ES256"],
        clock=FixedClock(NOW),
    )
    sink = MemorySink()
    guard = Guard(
        authenticator=Authenticator(tokens=verifier),
        policy=Policy([Rule(id="opa", action="CUSTOM", hook=cancelled_elsewhere), allow("any")]),
        audit=sink,
    )
    view = Request(
        method="GET",
        route="/orders/{order_id}",
        headers=[("authorization", f"Bearer {mint(key, claims())}")],
    )
    outcome = asyncio.run(guard.aevaluate(view))
    assert (outcome.allowed, outcome.status) == (False, 403)
    assert outcome.decision is not None and outcome.decision.reason == "custom_error"
    assert [(event.decision, event.reason) for event in sink.events] == [("deny", "custom_error")]

    async def cancel_the_request() -> bool:
        asked = asyncio.Event()

        async def waits(principal: Principal | None, op: Operation) -> bool:
            asked.set()
            await asyncio.Event().wait()
            return True

        waiting = Policy([Rule(id="opa", action="CUSTOM", hook=waits, hook_timeout=60), allow()])
        task = asyncio.ensure_future(waiting.evaluate_async(who(), GET_ORDER))
        await asked.wait()
        task.cancel()
        await asyncio.wait((task,))
        return task.cancelled()

    assert asyncio.run(cancel_the_request())


def test_dry_run_rule_is_recorded_not_enforced() -> None:
    policy = Policy([allow(), deny("new-deny", callers=[Callers(spiffe_ids=[WEB])], dry_run=True)])
    decision = policy.evaluate(who(), GET_ORDER)
    assert decision.allowed
    assert decision.dry_run
    assert (decision.would_allow, decision.would_rule_id, decision.would_reason) == (
        False,
        "new-deny",
        "denied_by_rule",
    )
    other = policy.evaluate(who(ADMIN), GET_ORDER)
    assert other.allowed and not other.dry_run


def test_dry_run_policy_allows_and_records() -> None:
    policy = Policy([allow(callers=[Callers(spiffe_ids=[ADMIN])])], dry_run=True)
    decision = policy.evaluate(who(), GET_ORDER)
    assert decision.allowed and decision.dry_run and decision.would_allow is False
    assert policy.evaluate(who(ADMIN), GET_ORDER).reason == "allowed_by_rule"


def test_explain_accepts_views() -> None:
    policy = Policy(
        [allow(callers=[Callers(anonymous=True)], operations=[Operations(routes=["/healthz"])])]
    )
    view = Request(method="GET", route="/healthz", path="/healthz")
    assert policy.explain(view).allowed
    assert not policy.explain(who(), view).allowed
    with pytest.raises(ConfigurationError):
        policy.explain(who())


@pytest.mark.parametrize(
    "headers",
    [
        {"authorization": "Bearer abc.def.ghi"},
        {"dpop": "x.y.z"},
        {"x-forwarded-client-cert": 'Cert="..."'},
        {"client-cert": ":MIIB:"},
        {"x-ssl-client-cert": "-----BEGIN%20CERTIFICATE-----"},
    ],
    ids=["bearer", "dpop", "xfcc", "rfc9440", "nginx"],
)
def test_explain_never_reads_a_view_with_credentials_as_anonymous(
    headers: dict[str, str],
) -> None:
    # the policy cannot authenticate: its "why" for an anonymous caller would be wrong
    policy = Policy([allow(callers=[Callers(subjects=["svc"])])])
    view = Request(method="GET", route="/orders", headers=headers)
    with pytest.raises(ConfigurationError, match=r"Guard\.explain"):
        policy.explain(view)
    with pytest.raises(ConfigurationError, match=r"Guard\.explain"):
        policy.explain(view, GET_ORDER)
    assert not policy.explain(who(), view).allowed  # the view only names the operation
    chain = Request(method="GET", route="/orders", peer_chain=[b"\x30\x00"])
    with pytest.raises(ConfigurationError, match=r"Guard\.explain"):
        policy.explain(chain)
    # a certificate verified in the handshake, with no chain handed over, is a credential too
    from zerotrust.dev import DevCA
    from zerotrust.x509.verify import verify_x509_svid

    ca = DevCA.create("example.org")
    peer = verify_x509_svid(ca.issue_svid(WEB).cert_chain, ca.bundle, role="client")
    verified = Request(method="GET", route="/orders", verified_peer=peer)
    with pytest.raises(ConfigurationError, match=r"verified client certificate: use Guard"):
        policy.explain(verified)


@pytest.mark.parametrize(
    "build",
    [
        lambda: Rule(id="", action="ALLOW"),
        lambda: Rule(id="x", action="MAYBE"),  # type: ignore[arg-type]
        lambda: Rule(id="x", action="CUSTOM"),
        lambda: Rule(id="x", action="ALLOW", hook=lambda p, o: True),
        lambda: Rule(id="x", action="DENY", scopes=ScopeRule(all=["a"])),
        lambda: Policy([allow("a"), allow("a")]),
        lambda: Policy(default="maybe"),  # type: ignore[arg-type]
        lambda: Callers(spiffe_ids=["spiffe://*/x/*"]),
        lambda: Callers(spiffe_ids="spiffe://example.org/a"),  # type: ignore[arg-type]
        lambda: Callers(anonymous=True, spiffe_ids=[WEB]),
        lambda: Condition("claims.", values=["x"]),
        lambda: Condition("password", values=["x"]),
        lambda: Condition("claims.a"),
        lambda: RateLimit("r", rate=0, burst=1),
        lambda: RateLimit("", rate=1, burst=1),
        lambda: RateLimit(5, rate=1, burst=1),  # type: ignore[arg-type]
        lambda: require(scopes="orders:read"),  # type: ignore[arg-type]
        lambda: require(callers=[]),
        lambda: require(methods=["GET"]) & require(methods=["POST"]),
    ],
)
def test_bad_configuration_fails_at_build_time(build: object) -> None:
    with pytest.raises(ConfigurationError):
        build()  # type: ignore[operator]


def test_requirements() -> None:
    req = require(scopes=["orders:read"], callers=match.member_of("example.org"), methods=["GET"])
    assert req.check(who(scopes=("orders:read",)), GET_ORDER) is None
    assert req.check(who(scopes=()), GET_ORDER).reason == "insufficient_scope"  # type: ignore[union-attr]
    assert (
        req.check(who(PARTNER, scopes=("orders:read",)), GET_ORDER).reason == "requirement_not_met"
    )  # type: ignore[union-attr]
    assert req.check(who(scopes=("orders:read",)), DELETE_ORDER).reason == "requirement_not_met"  # type: ignore[union-attr]
    assert req.check(None, GET_ORDER).reason == "requirement_not_met"  # type: ignore[union-attr]
    patterns = require(callers=["spiffe://example.org/ns/shop/*"], proven_by=["mtls"])
    assert patterns.check(who(), GET_ORDER) is None
    assert patterns.check(who(proven_by="jwt"), GET_ORDER) is not None
    combined = require(scopes=["a"]) & require(scopes=["b"], any_scopes=["c"])
    assert combined.scopes == ("a", "b")
    assert combined.check(who(scopes=("a", "b")), GET_ORDER).required_scopes == ("c",)  # type: ignore[union-attr]


def test_a_callers_matcher_that_gives_no_match_result_admits_nobody() -> None:
    """Only a ``MatchResult`` decides: an async function (whose answer is a coroutine), or a
    callable answering ``True`` or a string, admitted every caller by its truthiness."""

    async def asynchronous(spiffe_id: SpiffeId) -> bool:  # pragma: no cover - never awaited
        return False

    with pytest.raises(ConfigurationError, match="not async"):
        require(callers=asynchronous)  # type: ignore[arg-type]
    for answer in (True, "no", asynchronous(SpiffeId.parse(WEB))):
        req = require(callers=lambda _id, a=answer: a)  # type: ignore[misc]
        with pytest.raises(ConfigurationError, match="not MatchResult"):
            req.check(who(), GET_ORDER)
    declined = require(callers=lambda _id: match.MatchResult(False, "no_match", "declined"))
    assert declined.check(who(), GET_ORDER).reason == "requirement_not_met"  # type: ignore[union-attr]


def test_a_requirement_that_names_nothing_leaves_the_other_side_as_it_is() -> None:
    """Combining with a requirement silent on methods or proofs keeps the other's: "no
    constraint" is not "nothing allowed"."""
    methods = require(methods=["GET"]) & require(scopes=["orders:read"])
    assert methods.methods == ("GET",) and methods.scopes == ("orders:read",)
    assert (require(scopes=["a"]) & require(methods=["POST"])).methods == ("POST",)
    proofs = require(proven_by=["mtls"]) & require()
    assert proofs.proven_by == ("mtls",)
    assert (require() & require(proven_by=["jwt", "mtls"])).proven_by == ("jwt", "mtls")
    assert (require() & require()).methods == ()


@pytest.mark.parametrize("field", ["scopes", "any_scopes", "callers"])
def test_a_requirement_takes_lists_not_a_single_string(field: str) -> None:
    # iterated, "spiffe://example.org/x" would be one caller pattern per character
    with pytest.raises(ConfigurationError, match="take lists, not a single string"):
        require(**{field: "spiffe://example.org/x"})  # type: ignore[arg-type]


class _CountedId(str):
    """A rule id that counts how often it is compared for equality."""

    comparisons = 0

    def __eq__(self, other: object) -> bool:
        type(self).comparisons += 1
        return str.__eq__(self, other)

    __hash__ = str.__hash__


def test_duplicate_rule_ids_are_found_without_comparing_every_pair() -> None:
    """A policy file within its size bound holds tens of thousands of rules: comparing every
    id with every other one would take minutes to load it."""
    rules = [allow(_CountedId(f"r{i}")) for i in range(1000)] + [allow(_CountedId("r7"))]
    _CountedId.comparisons = 0
    with pytest.raises(ConfigurationError, match=r"duplicate rule ids \['r7'\]"):
        Policy(rules)
    assert _CountedId.comparisons < 10 * len(rules)


def test_a_policy_keeps_its_own_copies_and_knows_when_it_is_dry_run() -> None:
    rules, limits = (
        [deny("no-intruder", callers=[Callers(subjects=["intruder"])]), allow()],
        [RateLimit("r", rate=1, burst=1)],
    )
    policy = Policy(rules, rate_limits=limits)
    rules.clear()
    limits.clear()
    assert [r.id for r in policy.rules] == ["no-intruder", "allow"]
    assert [r.id for r in policy.rate_limits] == ["r"]
    assert policy.explain(who(), GET_ORDER).allowed
    assert not policy.has_dry_run
    assert Policy([allow()], dry_run=True).has_dry_run
    assert Policy([allow(), deny("d", dry_run=True)]).has_dry_run
    for flag in ("false", 0, None):
        with pytest.raises(ConfigurationError, match="dry_run must be true or false"):
            Policy([allow()], dry_run=flag)  # type: ignore[arg-type]


def test_rate_limits_select_by_caller_and_operation() -> None:
    limit = RateLimit("writes", rate=1, burst=2, operations=[Operations(methods=["DELETE"])])
    policy = Policy([allow()], rate_limits=[limit])
    assert policy.rate_limits_for(who(), DELETE_ORDER) == (limit,)
    assert policy.rate_limits_for(who(), GET_ORDER) == ()
    assert limit.key(who()) == f"6:writes:{WEB}"
    # limits "a" and "a:b" never share a bucket, whatever the principals' ids
    nested = RateLimit("a:b", rate=1, burst=2)
    crafted = Principal(subject="s", issuer="b:x", proven_by="jwt")  # id "b:x|s"
    plain = Principal(subject="s", issuer="x", proven_by="jwt")  # id "x|s"
    assert RateLimit("a", rate=1, burst=2).key(crafted) != nested.key(plain)
    for huge in (10**400, -(10**400)):
        with pytest.raises(ConfigurationError, match="finite"):
            RateLimit("huge", rate=huge, burst=1)
    partners = RateLimit(
        "partners",
        rate=1,
        burst=2,
        callers=[Callers(spiffe_ids=[ADMIN]), Callers(trust_domains=["partner.org"])],
        operations=[Operations(methods=["POST"]), Operations(methods=["GET"])],
    )
    scoped = Policy([allow()], rate_limits=[partners])
    assert scoped.rate_limits_for(who(PARTNER), GET_ORDER) == (partners,)
    assert scoped.rate_limits_for(who(), GET_ORDER) == ()
    # a limit keeps its own copies: emptying the lists it was built from widens nothing
    callers, operations = [Callers(spiffe_ids=[ADMIN])], [Operations(methods=["POST"])]
    own = RateLimit("own", rate=1, burst=2, callers=callers, operations=operations)
    callers.clear()
    operations.clear()
    assert own.callers == (Callers(spiffe_ids=[ADMIN]),)
    assert own.operations == (Operations(methods=["POST"]),)
    assert not own.applies(who(), Operation("POST", "/x"))


identities = st.sampled_from([WEB, ADMIN, PARTNER, None])
ops = st.sampled_from([GET_ORDER, DELETE_ORDER, HEALTH, Operation("POST", "/x", kind="grpc")])
rule_parts = st.fixed_dictionaries(
    {
        "callers": st.lists(
            st.builds(
                Callers,
                spiffe_ids=st.lists(  # an ALLOW entry names something, as in Istio
                    st.sampled_from([WEB, ADMIN, "*", "spiffe://example.org/*"]),
                    min_size=1,
                    max_size=2,
                ),
            ),
            max_size=2,
        ),
        "operations": st.lists(
            st.builds(
                Operations,
                methods=st.lists(
                    st.sampled_from(["GET", "DELETE", "POST"]), min_size=1, max_size=2
                ),
            ),
            max_size=2,
        ),
        "dry_run": st.booleans(),
    }
)


@settings(max_examples=300, deadline=None)
@given(
    allows=st.lists(rule_parts, max_size=4),
    denies=st.lists(rule_parts, min_size=1, max_size=3),
    sid=identities,
    op=ops,
)
def test_no_input_is_allowed_when_an_enforced_deny_matches(
    allows: list[dict], denies: list[dict], sid: str | None, op: Operation
) -> None:  # type: ignore[type-arg]
    rules = [Rule(id=f"a{i}", action="ALLOW", **parts) for i, parts in enumerate(allows)]
    rules += [Rule(id=f"d{i}", action="DENY", **parts) for i, parts in enumerate(denies)]
    policy = Policy(rules, default="allow")
    principal = who(sid) if sid else None
    decision = policy.evaluate(principal, op)
    if any(r.matches(principal, op) for r in rules if r.action == "DENY" and not r.dry_run):
        assert not decision.allowed
    if any(r.matches(principal, op) for r in rules if r.action == "DENY"):
        # with dry-run rules enforced, the verdict is deny: either enforced, or recorded
        assert not decision.allowed or (decision.dry_run and decision.would_allow is False)


@settings(max_examples=300, deadline=None)
@given(
    allows=st.lists(rule_parts, max_size=4),
    denies=st.lists(rule_parts, max_size=3),
    scoped=st.lists(st.sampled_from(["orders:read", "orders:write"]), max_size=2),
    granted=st.lists(st.sampled_from(["orders:read", "orders:write"]), max_size=2),
    dry_run=st.booleans(),
    default=st.sampled_from(["deny", "allow"]),
    sid=identities,
    op=ops,
)
def test_a_policy_without_hooks_decides_the_same_without_a_generator(
    allows: list[dict],  # type: ignore[type-arg]
    denies: list[dict],  # type: ignore[type-arg]
    scoped: list[str],
    granted: list[str],
    dry_run: bool,
    default: str,
    sid: str | None,
    op: Operation,
) -> None:
    rules = [
        Rule(id=f"a{i}", action="ALLOW", scopes=ScopeRule(all=scoped) if i % 2 else None, **parts)
        for i, parts in enumerate(allows)
    ]
    rules += [Rule(id=f"d{i}", action="DENY", **parts) for i, parts in enumerate(denies)]
    policy = Policy(rules, default=default, dry_run=dry_run)  # type: ignore[arg-type]
    principal = who(sid, scopes=tuple(granted)) if sid else None
    assert policy.decide_without_hooks(principal, op) == policy.evaluate(principal, op)


def test_a_policy_with_hooks_is_never_decided_without_them() -> None:
    hooked = Policy([allow(), Rule(id="ext", action="CUSTOM", hook=lambda p, o: False)])
    with pytest.raises(ConfigurationError):
        hooked.decide_without_hooks(who(), GET_ORDER)
    assert not hooked.evaluate(who(), GET_ORDER).allowed


@pytest.mark.parametrize(
    "scope", ['orders"read', "a\\b", "two words", "", "lecture:日本", "x\r\ny"]
)
def test_required_scopes_are_scope_tokens(scope: str) -> None:
    """RFC 6749 3.3: what a token's scope claim can hold, and what an RFC 6750 challenge can
    name without escaping."""
    with pytest.raises(ConfigurationError, match="scope-token"):
        ScopeRule(all=[scope])
    with pytest.raises(ConfigurationError, match="scope-token"):
        ScopeRule(any=[scope])
    with pytest.raises(ConfigurationError, match="scope-token"):
        require(scopes=[scope])


def test_scope_tokens_cover_the_printable_range() -> None:
    ScopeRule(all=["orders:read", "https://api.example/.default", "User.Read", "a!#$%&'()*+,-./"])


def test_a_decision_is_truthy_when_allowed_and_cannot_be_changed() -> None:
    import dataclasses

    from zerotrust.authz import Decision

    allowed, denied = Decision(True, "allowed_by_rule"), Decision(False, "denied_by_rule")
    assert bool(allowed) is True and bool(denied) is False
    assert (allowed.verdict, denied.verdict) == ("allow", "deny")
    with pytest.raises(dataclasses.FrozenInstanceError):
        denied.allowed = True  # type: ignore[misc]


@pytest.mark.parametrize(
    ("built", "field"),
    [
        (Callers(spiffe_ids=[WEB]), "spiffe_ids"),
        (Operations(routes=["/orders/*"]), "routes"),
        (Condition("subject", values=["x"]), "values"),
        (ScopeRule(all=["orders:read"]), "all"),
        (allow(), "action"),
        (Operation("GET", "/orders"), "method"),
        (RateLimit("per-caller", rate=1.0, burst=1), "rate"),
        (require(scopes=["orders:read"]), "scopes"),
        (next(Policy([Rule(id="ext", action="CUSTOM", hook=bool)]).decide(who(), HEALTH)), "rule"),
    ],
)
def test_a_policy_s_parts_cannot_be_changed_once_built(built: object, field: str) -> None:
    """A rule changed after its policy was built would decide with half-checked patterns."""
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(built, field, ["*"])


def test_a_policy_cannot_be_changed_once_built() -> None:
    import dataclasses

    policy = Policy([deny("no-intruder", callers=[Callers(subjects=["intruder"])])])
    for field, value in (("rules", ()), ("default", "allow"), ("dry_run", True)):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(policy, field, value)
    assert not policy.explain(who(), GET_ORDER).allowed
    # what the policy compiles its rules into is no part of how it prints
    assert repr(Policy([], id="p")) == (
        "Policy(rules=(), id='p', default='deny', dry_run=False, rate_limits=())"
    )


@pytest.mark.parametrize("rule_id", [5, None, b"allow", ""])
def test_a_rule_id_is_a_non_empty_string(rule_id: object) -> None:
    with pytest.raises(ConfigurationError, match="every rule needs a non-empty string id"):
        Rule(id=rule_id, action="ALLOW")  # type: ignore[arg-type]


@pytest.mark.parametrize("values", [None, 5, "orders:read", b"orders:read", {"orders:read": 1}])
def test_scopes_that_are_no_list_are_a_configuration_error(values: Any) -> None:
    # not a TypeError from deep inside, and never a string or mapping taken apart
    from zerotrust._scopes import check_scope_tokens, scope_string

    with pytest.raises(ConfigurationError, match="list of RFC 6749 scope-tokens"):
        check_scope_tokens(values)
    if not isinstance(values, str):  # a string is a space-separated scope value here
        with pytest.raises(ConfigurationError, match="list of RFC 6749 scope-tokens"):
            scope_string(values)


# --- requests without credentials, and values that must fail at build time ----------------------


@pytest.mark.parametrize(
    "entry",
    [
        Callers(not_subjects=["*"]),  # Istio notRequestPrincipals: ["*"]
        Callers(not_issuers=["https://issuer.example"]),
        Callers(),
    ],
)
def test_a_deny_of_only_not_fields_covers_requests_without_credentials(entry: Callers) -> None:
    """An absent identity satisfies every not_* field: DENY entries without positive fields
    deny anonymous requests, fail closed."""
    policy = Policy([deny(callers=[entry]), allow(callers=[Callers(anonymous=True)])])
    decision = policy.explain(None, GET_ORDER)
    assert not decision.allowed and decision.rule_id == "deny"
    positive = Policy(
        [deny(callers=[Callers(issuers=["*"])]), allow(callers=[Callers(anonymous=True)])]
    )
    assert positive.explain(None, GET_ORDER).allowed  # a positive field needs an identity


def test_allow_entries_admit_anonymous_requests_only_by_name() -> None:
    negative_only = Policy([allow(callers=[Callers(not_subjects=["spiffe://evil/*"])])])
    assert not negative_only.explain(None, GET_ORDER).allowed
    assert negative_only.explain(who(), GET_ORDER).allowed


def test_conditions_see_no_values_for_requests_without_credentials() -> None:
    tenant = Condition("claims.tenant", not_values=["acme"])
    denying = Policy(
        [deny(when=[tenant]), allow(callers=[Callers(anonymous=True)])], default="deny"
    )
    assert denying.explain(None, GET_ORDER).rule_id == "deny"
    # ALLOW (and CUSTOM) rules: no condition holds without credentials, nothing admits by omission
    admitted = Policy([allow(callers=[Callers(anonymous=True)], when=[tenant])])
    assert not admitted.explain(None, GET_ORDER).allowed
    assert Policy([allow(callers=[Callers(anonymous=True)])]).explain(None, GET_ORDER).allowed
    named = Policy(
        [
            allow(
                callers=[Callers(anonymous=True)],
                when=[Condition("claims.tenant", values=["acme"])],
            )
        ]
    )
    assert not named.explain(None, GET_ORDER).allowed


@pytest.mark.parametrize("claim", [True, [True], [False, True], ("x", True)])
def test_booleans_match_as_json_spells_them_alone_and_in_lists(claim: object) -> None:
    policy = Policy([allow(when=[Condition("claims.admin", values=["true"])])])
    assert policy.explain(who(claims={"admin": claim}), GET_ORDER).allowed


@pytest.mark.parametrize("value", ["false", "true", 0, 1, None])
def test_anonymous_is_a_boolean(value: object) -> None:
    with pytest.raises(ConfigurationError, match="anonymous"):
        Callers(anonymous=value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("rate", "burst"),
    [(1e-10, 5), (True, 5), (float("nan"), 5), (float("inf"), 5), (1.0, 2_000_000_000), (1.0, 2.5)],
)
def test_rate_limits_are_checked_against_the_stores_bounds(rate: float, burst: int) -> None:
    with pytest.raises(ConfigurationError, match="rate limit 'rl'"):
        RateLimit(id="rl", rate=rate, burst=burst)


def test_rate_limits_cannot_name_anonymous_callers() -> None:
    with pytest.raises(ConfigurationError, match="per principal"):
        RateLimit(id="rl", rate=1, burst=1, callers=[Callers(anonymous=True)])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"operations": "GET"}, "operations must be a list"),
        ({"operations": Operations(methods=["GET"])}, "operations must be a list"),
        ({"operations": [{"methods": ["GET"]}]}, "operations must hold Operations"),
        ({"callers": "spiffe://example.org/ns/shop/sa/web"}, "callers must be a list"),
        ({"callers": {"spiffe_ids": [WEB]}}, "callers must be a list"),
        ({"callers": [WEB]}, "callers must hold Callers"),
    ],
)
def test_rate_limit_parts_are_type_checked(kwargs: dict[str, Any], message: str) -> None:
    # "GET" iterated would be the operations "G", "E", "T": a limit failing every request
    with pytest.raises(ConfigurationError, match=f"rate limit 'rl': {message}"):
        RateLimit(id="rl", rate=1, burst=1, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rules": "allow"}, "rules must be a list"),
        ({"rules": allow()}, "rules must be a list"),
        ({"rules": [{"id": "allow"}]}, "rules must hold Rule"),
        ({"rate_limits": RateLimit(id="rl", rate=1, burst=1)}, "rate_limits must be a list"),
        ({"rate_limits": [{"id": "rl", "rate": 1, "burst": 1}]}, "rate_limits must hold RateLimit"),
    ],
)
def test_policy_parts_are_type_checked(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=f"policy 'p': {message}"):
        Policy(id="p", **kwargs)


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf"), 301, True, "1"])
def test_hook_timeouts_are_bounded_numbers(timeout: object) -> None:
    with pytest.raises(ConfigurationError, match="hook_timeout"):
        Rule(id="c", action="CUSTOM", hook=lambda p, o: True, hook_timeout=timeout)  # type: ignore[arg-type]


@pytest.mark.parametrize("policy_id", [5, "", None])
def test_policy_ids_are_strings(policy_id: object) -> None:
    with pytest.raises(ConfigurationError, match="policy id"):
        Policy([], id=policy_id)  # type: ignore[arg-type]
    assert Policy([]).explain(who(), GET_ORDER).policy_id == "default"  # when none is given


def test_combined_one_of_groups_each_need_one_of_their_scopes() -> None:
    """``one of A`` and ``one of B`` is not ``one of A or B``."""
    both = require(any_scopes=["orders:write"]) & require(any_scopes=["orders:admin"])
    op = GET_ORDER
    refused = both.check(who(scopes=("orders:write",)), op)
    assert refused is not None and refused.reason == "insufficient_scope"
    assert "orders:admin" in refused.required_scopes
    assert both.check(who(scopes=("orders:admin",)), op) is not None
    assert both.check(who(scopes=("orders:write", "orders:admin")), op) is None
    assert both.any_scope_groups == {frozenset({"orders:write"}), frozenset({"orders:admin"})}
    same = require(any_scopes=["a", "b"]) & require(any_scopes=["a", "b"])
    assert same.more_any_scopes == () and same.any_scopes == ("a", "b")


@pytest.mark.parametrize("kinds", [["grcp"], ["HTTP2"], ["*"]])
def test_unknown_kinds_fail_at_build_time(kinds: list[str]) -> None:
    """A DENY rule with a misspelt kind would never match: refused when built."""
    with pytest.raises(ConfigurationError, match="unknown request kinds"):
        Operations(kinds=kinds)


def test_kinds_are_compared_without_regard_to_case() -> None:
    deny_grpc = Rule(id="no-grpc", action="DENY", operations=[Operations(kinds=["GRPC"])])
    policy = Policy([deny_grpc, allow(callers=[Callers(trust_domains=["example.org"])])])
    decision = policy.explain(who(), Operation("POST", "/shop.Orders/Get", kind="grpc"))
    assert not decision.allowed and decision.rule_id == "no-grpc"
    # on the request's side too, as methods are: a request view of its own may spell it so
    decision = policy.explain(who(), Operation("POST", "/shop.Orders/Get", kind="gRPC"))
    assert not decision.allowed and decision.rule_id == "no-grpc"
    assert Operations(kinds=["http"]).matches(Operation("GET", "/x", kind="HTTP"))


def test_the_compared_forms_of_routes_are_remembered_within_a_bound() -> None:
    """A gRPC method name comes from the caller: remembering the compared form of every route
    ever seen must not grow without end."""
    from zerotrust.authz import rules

    every = Operations(routes=["/shop.Orders/*"])
    rules._ROUTE_KEYS.clear()
    for route in ("/shop.Orders/A", "/shop.Orders/B/"):
        assert every.matches(Operation("POST", route, kind="grpc"))
    # each route's compared form is worked out once, then remembered
    assert rules._ROUTE_KEYS == {
        "/shop.Orders/A": "/shop.Orders/A/",
        "/shop.Orders/B/": "/shop.Orders/B/",
    }
    for n in range(10_000):
        assert every.matches(Operation("POST", f"/shop.Orders/M{n}", kind="grpc"))
        assert len(rules._ROUTE_KEYS) <= 4096
    assert not every.matches(Operation("POST", "/shop.Other/M", kind="grpc"))


def test_kinds_restrict_what_a_rule_covers() -> None:
    http_only = Policy([allow(operations=[Operations(kinds=["http"])])])
    assert http_only.explain(who(), GET_ORDER).allowed  # an operation is HTTP unless it says
    assert not http_only.explain(who(), Operation("GET", "/orders/{order_id}", kind="grpc")).allowed
    grpc_only = Policy([allow(operations=[Operations(kinds=["grpc"])])])
    assert grpc_only.explain(who(), Operation("POST", "/shop.Orders/Get", kind="grpc")).allowed
    for kind in ("http", "websocket"):
        refused = grpc_only.explain(who(), Operation("GET", "/shop.Orders/Get", kind=kind))
        assert not refused.allowed and refused.reason == "no_allow_rule_matched"
    no_websockets = Policy(
        [deny("no-ws", operations=[Operations(kinds=["websocket"])]), allow()],
    )
    assert no_websockets.explain(who(), GET_ORDER).allowed
    refused = no_websockets.explain(who(), Operation("GET", "/orders/{order_id}", kind="websocket"))
    assert refused.rule_id == "no-ws"


@pytest.mark.parametrize(
    ("pattern", "near_miss", "hit"),
    [
        ("*/sa/web", "spiffe://example.org/ns/shop/visa/web", WEB),
        ("spiffe://example.org/ns/shop/*", "spiffe://example.org/ns/shopping/sa/web", WEB),
        ("spiffe://example.org/ns/shop/sa/web", WEB + "x", WEB),
    ],
)
def test_patterns_match_to_the_character(pattern: str, near_miss: str, hit: str) -> None:
    """Every character of a pattern counts, its separators included: ``*/sa/web`` is not
    ``*sa/web``."""
    callers = Callers(spiffe_ids=[pattern])
    assert callers.matches(who(hit))
    assert not callers.matches(who(near_miss))
    assert Callers(not_spiffe_ids=[pattern]).matches(who(near_miss))


@pytest.mark.parametrize("field", ["spiffe_ids", "trust_domains"])
def test_a_wildcard_identity_needs_a_spiffe_id(field: str) -> None:
    """``spiffe_ids: ["*"]`` is any workload with a SPIFFE ID, not any caller: a bearer token
    naming no SPIFFE ID does not match it, and ``not_spiffe_ids: ["*"]`` matches exactly such
    callers (Istio's ``notPrincipals: ["*"]``)."""
    token_only = who(None, proven_by="jwt", subject="user-7")
    callers = Callers(**{field: ["*"]})
    assert callers.matches(who()) and not callers.matches(token_only)
    assert not Callers(**{f"not_{field}": ["*"]}).matches(who())
    assert Callers(**{f"not_{field}": ["*"]}).matches(token_only)


def test_what_a_rule_says_of_get_it_says_of_head() -> None:
    """Flask, Django and Starlette answer HEAD with the GET handler: a DENY of GET must cover
    HEAD (or it reads the denied resource's headers), and HEAD is allowed where GET is."""
    head = Operation("HEAD", "/orders/{order_id}")
    everyone = Callers(trust_domains=["example.org"])
    policy = Policy(
        [
            deny(
                "no-reads",
                callers=[Callers(spiffe_ids=[PARTNER])],
                operations=[Operations(methods=["GET"])],
            ),
            deny(
                "writes-only",
                callers=[Callers(spiffe_ids=[ADMIN])],
                operations=[Operations(not_methods=["GET"])],
            ),
            allow(callers=[everyone, Callers(trust_domains=["partner.org"])]),
        ]
    )
    refused = policy.explain(who(PARTNER), head)
    assert not refused.allowed and refused.rule_id == "no-reads"
    assert policy.explain(who(ADMIN), head).allowed  # not_methods=[GET] leaves HEAD out too
    assert not policy.explain(who(ADMIN), DELETE_ORDER).allowed
    assert policy.explain(who(), head).allowed
    only_get = Policy([allow(callers=[everyone], operations=[Operations(methods=["GET"])])])
    assert only_get.explain(who(), head).allowed
    assert not only_get.explain(who(), Operation("OPTIONS", "/orders/{order_id}")).allowed
    only_head = Policy([allow(callers=[everyone], operations=[Operations(methods=["HEAD"])])])
    assert not only_head.explain(who(), GET_ORDER).allowed  # HEAD does not cover GET
    assert require(methods=["GET"]).check(who(), head) is None
    assert require(methods=["HEAD"]).check(who(), GET_ORDER) is not None


@pytest.mark.parametrize(
    ("pattern", "route", "matched"),
    [
        ("/secret", "/secret", True),
        ("/secret", "/secret/", True),  # Flask and FastAPI keep the slash their route has
        ("/secret/", "/secret", True),  # Django's secret/ is /secret
        ("/secret/", "/secret/", True),
        ("/secret", "/secretx", False),
        ("/secret", "/secretX", False),  # only slashes are set aside
        ("/secret/*", "/secret", True),  # the index of a "/secret/..." tree
        ("/secret/*", "/secret/{name}", True),
        ("/secret/*", "/secretx", False),
        ("/secret*", "/secret/", True),
        ("*/edit", "/orders/{id}/edit/", True),
        ("*/edit/", "/orders/{id}/edit", True),
        ("*/edit", "/orders/{id}/editor", False),
        ("*/X", "/exports/X/", True),  # a suffix that is more than slashes
        ("/", "/", True),
        ("/", "/secret", False),
        ("/secret", "/", False),
        ("*", "/", True),
    ],
)
def test_routes_compare_without_regard_to_a_trailing_slash(
    pattern: str, route: str, matched: bool
) -> None:
    """Frameworks disagree on trailing slashes: a rule must cover a route however the
    framework (or the rule) writes it, in both directions."""
    op = Operation("GET", route)
    assert Operations(routes=[pattern]).matches(op) is matched
    assert Operations(not_routes=[pattern]).matches(op) is not matched
    denied = Policy([deny("no-secret", operations=[Operations(routes=[pattern])])])
    assert denied.explain(who(), op).rule_id == ("no-secret" if matched else None)


@pytest.mark.parametrize(
    ("route", "normal"),
    [
        ("/orders/", "/orders"),
        ("/orders//", "/orders"),
        ("/orders", "/orders"),
        ("/", "/"),
        ("//", "/"),
        ("/orders/{id}/", "/orders/{id}"),
        ("/pkg.Service/Method", "/pkg.Service/Method"),
        ("/reports/XLSX/", "/reports/XLSX"),
    ],
)
def test_the_form_adapters_give_route_templates_in(route: str, normal: str) -> None:
    assert normalize_route(route) == normal


@pytest.mark.parametrize("claim", [False, [False], ("x", False)])
def test_a_false_claim_is_never_read_as_true(claim: object) -> None:
    """JSON ``false`` is spelled "false": an ALLOW on ``admin == "true"`` must not admit it."""
    admins = Policy([allow(when=[Condition("claims.admin", values=["true"])])])
    assert not admins.explain(who(claims={"admin": claim}), GET_ORDER).allowed
    not_admins = Policy([allow(when=[Condition("claims.admin", values=["false"])])])
    assert not_admins.explain(who(claims={"admin": claim}), GET_ORDER).allowed


def test_conditions_on_the_callers_trust_domain_and_spiffe_id() -> None:
    jwt_caller = who(None, proven_by="jwt", issuer="https://idp", subject="u1")
    domain = Policy([allow(when=[Condition("trust_domain", values=["example.org"])])])
    assert domain.explain(who(), GET_ORDER).allowed
    assert not domain.explain(who(PARTNER), GET_ORDER).allowed
    assert not domain.explain(jwt_caller, GET_ORDER).allowed
    no_partner = Policy(
        [
            deny(when=[Condition("trust_domain", values=["partner.org"])]),
            allow(callers=[Callers(proven_by=["*"])]),
        ]
    )
    assert no_partner.explain(who(PARTNER), GET_ORDER).rule_id == "deny"
    assert no_partner.explain(who(), GET_ORDER).allowed
    assert no_partner.explain(jwt_caller, GET_ORDER).allowed
    # a caller without a SPIFFE ID has no value: not even "*" matches it
    any_id = Policy([allow(when=[Condition("spiffe_id", values=["*"])])])
    assert any_id.explain(who(), GET_ORDER).allowed
    assert not any_id.explain(jwt_caller, GET_ORDER).allowed
    shop = Policy([allow(when=[Condition("spiffe_id", values=["spiffe://example.org/ns/shop/*"])])])
    assert shop.explain(who(), GET_ORDER).allowed
    assert not shop.explain(who(ADMIN), GET_ORDER).allowed


@pytest.mark.parametrize(
    ("claims", "value"),
    [
        ({"org": {"acme": "x"}}, False),
        ({"org": None}, False),
        ({"org": "acme"}, True),
        ({"org": ["acme"]}, True),
        ({"org": [None]}, False),
        ({"org": [{"acme": "x"}]}, False),
        ({"org": [["acme"]]}, False),
        ({"org": [None, "acme"]}, True),
    ],
)
def test_a_claim_path_reads_scalars_and_lists_only(claims: dict[str, object], value: bool) -> None:
    """An object (or null) at the end of a claim path is no value, nor in a list, and a path
    through a string or a list is no path: neither matches ``*`` (nor raises while a request
    is decided)."""
    anything = Policy([allow(when=[Condition("claims.org", values=["*"])])])
    assert anything.explain(who(claims=claims), GET_ORDER).allowed is value
    through = Policy([allow(when=[Condition("claims.org.acme", values=["*"])])])
    assert through.explain(who(claims=claims), GET_ORDER).allowed is (
        claims["org"] == {"acme": "x"}
    )


def test_a_claim_named_with_dots_or_slashes_is_written_in_brackets() -> None:
    """Namespaced claims (``https://example.com/roles``, as many identity providers add them)
    are read with Istio's bracketed form; the dotted form of such a name would be read as
    nested names and never match, so a DENY rule holding it would deny nothing: refused."""
    roles = "https://example.com/roles"
    claims = {roles: ["admin"], "org": {"a.b": "x"}}
    deny_admins = Policy(
        [
            deny(when=[Condition(f"claims[{roles}]", values=["admin"])]),
            allow(callers=[Callers(proven_by=["*"])]),
        ]
    )
    assert deny_admins.explain(who(claims=claims), GET_ORDER).rule_id == "deny"
    assert deny_admins.explain(who(claims={roles: ["user"]}), GET_ORDER).allowed
    nested = Policy([allow(when=[Condition("claims[org][a.b]", values=["x"])])])
    assert nested.explain(who(claims=claims), GET_ORDER).allowed
    assert not nested.explain(who(claims={"org": {"a": {"b": "x"}}}), GET_ORDER).allowed
    for key in (
        f"claims.{roles}",
        "claims.team/eu",
        "claims[]",
        "claims[a]b",
        "claims[a][",
        "claims[a]]",
    ):
        with pytest.raises(ConfigurationError, match="condition key"):
            Condition(key, values=["x"])


@pytest.mark.parametrize("key", ["claims.org.", "claims.org..team", "claims..org", 5])
def test_condition_keys_with_an_empty_claim_name_are_refused(key: object) -> None:
    # a DENY condition on a claim path that can never be read would deny nothing
    with pytest.raises(ConfigurationError, match="condition key"):
        Condition(key, values=["x"])  # type: ignore[arg-type]
    Condition("claims.x", values=["x"])  # a one-letter claim name is a name


def test_any_scopes_alone_are_required() -> None:
    rule = allow(scopes=ScopeRule(any=["orders:read", "orders:admin"]))
    policy = Policy([rule])
    refused = policy.explain(who(scopes=("orders:write",)), GET_ORDER)
    assert (refused.allowed, refused.reason) == (False, "insufficient_scope")
    assert refused.required_scopes == ("orders:read", "orders:admin")
    assert policy.explain(who(scopes=("orders:admin",)), GET_ORDER).allowed
    with pytest.raises(ConfigurationError, match="ALLOW rules only"):
        deny(scopes=ScopeRule(any=["orders:read"]))


def test_head_is_matched_as_get_and_only_as_get() -> None:
    head = Operation("HEAD", "/orders/{order_id}")
    assert not Operations(methods=["POST"]).matches(head)
    assert Operations(not_methods=["POST"]).matches(head)
    assert not Operations(not_methods=["GET"]).matches(head)
    writes = Policy([allow(operations=[Operations(methods=["POST", "DELETE"])])])
    assert not writes.explain(who(), head).allowed


def test_callers_and_conditions_alone_are_read_as_allow_entries() -> None:
    """Called without ``deny=True`` (as rate limits do), an entry never covers a request
    without credentials, whatever its not_* fields say."""
    assert not Callers(not_subjects=["intruder"]).matches(None)
    assert Callers(not_subjects=["intruder"]).matches(None, deny=True)
    assert not Condition("claims.tenant", not_values=["evil"]).matches(None)
    assert Condition("claims.tenant", not_values=["evil"]).matches(None, deny=True)


def test_a_custom_hook_decides_only_the_requests_its_rule_matches() -> None:
    calls: list[str] = []

    def no_deletes(principal: Principal | None, op: Operation) -> bool:
        calls.append(op.method)
        return False

    hooked = Rule(
        id="ext", action="CUSTOM", hook=no_deletes, operations=[Operations(methods=["DELETE"])]
    )
    policy = Policy([hooked, allow()])
    assert policy.evaluate(who(), GET_ORDER).allowed
    assert calls == []
    assert policy.evaluate(who(), DELETE_ORDER).reason == "denied_by_custom"
    assert calls == ["DELETE"]
    # a CUSTOM rule that does not match leaves the next one to decide
    gets = Rule(
        id="ext-get", action="CUSTOM", hook=no_deletes, operations=[Operations(methods=["GET"])]
    )
    both = Policy([hooked, gets, allow()])
    assert both.evaluate(who(), GET_ORDER).rule_id == "ext-get"


def test_a_custom_hook_that_lets_a_request_pass_admits_nothing_by_itself() -> None:
    """As in Istio, a CUSTOM rule can only refuse: after its hook answers True, a DENY rule
    still denies, ALLOW rules that do not match still deny, and without ALLOW rules the
    default decides."""
    calls: list[str] = []

    def yes(principal: Principal | None, op: Operation) -> bool:
        calls.append(op.method)
        return True

    ext = Rule(id="ext", action="CUSTOM", hook=yes)
    no_deletes = deny("no-deletes", operations=[Operations(methods=["DELETE"])])
    policy = Policy([ext, no_deletes, allow(callers=[Callers(spiffe_ids=[WEB])])])
    assert policy.evaluate(who(), GET_ORDER).rule_id == "allow"
    denied = policy.evaluate(who(), DELETE_ORDER)
    assert (denied.reason, denied.rule_id) == ("denied_by_rule", "no-deletes")
    assert not denied.allowed
    other = policy.evaluate(who(ADMIN), GET_ORDER)
    assert (other.allowed, other.reason) == (False, "no_allow_rule_matched")
    alone = Policy([ext]).evaluate(who(), GET_ORDER)
    assert (alone.allowed, alone.reason) == (False, "no_allow_rule_matched")
    assert Policy([ext], default="allow").evaluate(who(), GET_ORDER).reason == "allowed_by_default"
    assert calls == ["GET", "DELETE", "GET", "GET", "GET"]


def test_a_custom_hook_runs_once_per_decision_with_dry_run_rules() -> None:
    calls: list[str] = []

    def hook(principal: Principal | None, op: Operation) -> bool:
        calls.append(op.method)
        return True

    rules = [Rule(id="ext", action="CUSTOM", hook=hook), allow(), deny("new", dry_run=True)]
    decision = Policy(rules).evaluate(who(), GET_ORDER)
    assert decision.allowed and decision.would_allow is False
    assert calls == ["GET"]  # the dry-run pass reuses the enforced pass's verdict


def test_a_dry_run_policy_records_a_custom_refusal_without_enforcing_it() -> None:
    calls: list[str] = []

    def refuse(principal: Principal | None, op: Operation) -> bool:
        calls.append(op.method)
        return False

    policy = Policy([Rule(id="ext", action="CUSTOM", hook=refuse), allow()], dry_run=True)
    decision = policy.evaluate(who(), GET_ORDER)
    assert (decision.allowed, decision.reason) == (True, "dry_run")
    assert (decision.would_allow, decision.would_rule_id) == (False, "ext")
    assert calls == ["GET"]


def test_insufficient_scope_names_the_first_rule_that_matched() -> None:
    policy = Policy(
        [
            allow("reads", scopes=ScopeRule(all=["orders:read"])),
            allow("admin", scopes=ScopeRule(all=["orders:admin"])),
        ]
    )
    refused = policy.evaluate(who(), GET_ORDER)
    assert (refused.rule_id, refused.required_scopes) == ("reads", ("orders:read",))


def test_every_requirement_refusal_is_a_refusal() -> None:
    jwt_caller = who(None, proven_by="jwt", subject="user-7", scopes=("a",))
    refusals = [
        require(methods=["POST"]).check(who(), GET_ORDER),
        require(methods=["POST"]).check(who(), Operation("HEAD", "/orders/{order_id}")),
        require(scopes=["a"]).check(None, GET_ORDER),
        require(callers=match.member_of("example.org")).check(who(PARTNER), GET_ORDER),
        # a matcher of SPIFFE IDs never admits a caller that has none
        require(callers=match.member_of("example.org")).check(jwt_caller, GET_ORDER),
        require(proven_by=["mtls"]).check(jwt_caller, GET_ORDER),
        require(scopes=["b"]).check(jwt_caller, GET_ORDER),
    ]
    for refused in refusals:
        assert refused is not None and not refused.allowed
    assert [r.reason for r in refusals if r is not None][-1] == "insufficient_scope"


def test_caller_patterns_of_a_requirement_read_the_subject_without_a_spiffe_id() -> None:
    jwt_caller = who(None, proven_by="jwt", subject="user-7")
    either = require(callers=["spiffe://example.org/ns/ops/*", "user-*"])
    assert either.check(jwt_caller, GET_ORDER) is None
    assert either.check(who(ADMIN), GET_ORDER) is None
    assert either.check(who(), GET_ORDER) is not None
    assert require(callers=["None"]).check(jwt_caller, GET_ORDER) is not None


@pytest.mark.parametrize(
    "pattern",
    [
        "spiffe://example.org*",  # would match spiffe://example.org.evil.example/...
        "spiffe:*",
        "spiffe://example.org/ns/ops?sa=*",
        "spiffe://example.org/ns/ops/sa/admin/",
        "spiffe://Example.org/ns/ops/sa/admin",
        "SPIFFE://example.org/ns/ops/sa/admin",
    ],
)
def test_spiffe_id_caller_patterns_of_a_requirement_are_checked_as_callers_checks_them(
    pattern: str,
) -> None:
    with pytest.raises(ConfigurationError) as callers:
        Callers(spiffe_ids=[pattern])
    with pytest.raises(ConfigurationError) as required:
        require(callers=[pattern])
    assert str(required.value) == str(callers.value).replace("callers.spiffe_ids", "callers")


def test_spiffe_id_caller_patterns_of_a_requirement_match_spiffe_ids_only() -> None:
    """A token whose ``sub`` is no valid SPIFFE ID (here a trailing '/') has no SPIFFE ID: a
    ``spiffe://`` pattern never reads its subject instead, as ``Callers`` never does."""
    odd = who(None, proven_by="jwt", subject="spiffe://example.org/ns/ops/sa/admin/")
    for pattern in ("spiffe://example.org/ns/ops/*", "spiffe://*"):
        assert require(callers=[pattern]).check(odd, GET_ORDER) is not None
        assert not Callers(spiffe_ids=[pattern]).matches(odd)
        assert require(callers=[pattern]).check(who(ADMIN), GET_ORDER) is None
    assert require(callers=["spiffe://*"]).check(who(), GET_ORDER) is None
    # a subject pattern is still compared with the subject of a caller without a SPIFFE ID
    assert require(callers=["spiffe://*", "*/sa/admin/"]).check(odd, GET_ORDER) is None


def test_requirements_combine_one_caller_constraint_only() -> None:
    ops = require(callers=["spiffe://example.org/ns/ops/*"])
    with pytest.raises(ConfigurationError, match="cannot be combined"):
        ops & require(callers=["spiffe://example.org/ns/shop/*"])
    for combined in (ops & require(scopes=["a"]), require(scopes=["a"]) & ops, ops & ops):
        assert combined.callers == ops.callers
        assert combined.check(who(scopes=("a",)), GET_ORDER) is not None  # WEB is not in ops
        assert combined.check(who(ADMIN, scopes=("a",)), GET_ORDER) is None


def test_reason_names_every_reason_a_decision_is_made_with() -> None:
    """``Reason`` is the documented set of decision reasons: every literal reason that the
    library's code builds a ``Decision`` with is one of them."""
    import ast
    import typing
    from pathlib import Path

    import zerotrust
    from zerotrust.authz.decision import Reason

    found: set[str] = set()
    for path in Path(zerotrust.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", None)
            if name == "Decision":  # Decision(allowed, reason, ...)
                given = [*node.args[1:2]]
            elif name != "replace":  # dataclasses.replace(decision, reason=...)
                continue
            else:
                given = []
            given += [k.value for k in node.keywords if k.arg in ("reason", "would_reason")]
            found.update(v.value for v in given if isinstance(v, ast.Constant))
    assert {"allowed_by_rule", "dry_run", "rate_limited"} <= found  # the scan sees them
    assert found <= set(typing.get_args(Reason)), found - set(typing.get_args(Reason))


def test_a_lone_star_is_a_presence_match_that_an_empty_value_does_not_satisfy() -> None:
    """Istio's ``*`` matches any value that is not empty: a token whose ``sub`` or claim is
    the empty string has none, so a DENY of callers without one covers it."""
    anonymous_like = who(None, proven_by="jwt", subject="", claims={"tenant": ""})
    no_subject = Policy([deny(callers=[Callers(not_subjects=["*"])]), allow()])
    assert no_subject.explain(anonymous_like, GET_ORDER).rule_id == "deny"
    no_tenant = Policy([deny(when=[Condition("claims.tenant", not_values=["*"])]), allow()])
    assert no_tenant.explain(anonymous_like, GET_ORDER).rule_id == "deny"
    assert no_tenant.explain(who(claims={"tenant": "acme"}), GET_ORDER).allowed
    with_tenant = Policy([allow(when=[Condition("claims.tenant", values=["*"])])])
    assert not with_tenant.explain(anonymous_like, GET_ORDER).allowed
    assert with_tenant.explain(who(claims={"tenant": ["", "acme"]}), GET_ORDER).allowed
    any_subject = Policy([allow(callers=[Callers(subjects=["*"])])])
    assert not any_subject.explain(anonymous_like, GET_ORDER).allowed
