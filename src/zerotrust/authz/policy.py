"""Policies: Istio's evaluation order in process, with per-handler requirements.

Evaluation order: CUSTOM rules (an external decision hook; an error or timeout denies), then
DENY rules, then ALLOW rules. When ALLOW rules exist and none matches, the request is denied;
when there are none, ``default`` decides, and the default is deny (zero trust). Dry-run rules and
policies decide and are recorded but not enforced.

Evaluation is written once as a sans-IO generator that yields :class:`HookCall` for CUSTOM
hooks; :meth:`Policy.evaluate` and :meth:`Policy.evaluate_async` drive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal, TypeVar

from zerotrust._aio import wait_for
from zerotrust._sansio import drive, drive_async
from zerotrust.authn._trusted import FORWARDED_CERT_HEADERS
from zerotrust.authn.principal import Principal
from zerotrust.authn.request import RequestView
from zerotrust.authz.decision import Decision
from zerotrust.authz.rules import (
    _PROVEN_BY,
    Callers,
    Operation,
    Operations,
    Pattern,
    Rule,
    ScopeRule,
    _check_methods,
    _check_spiffe_ids,
    _strings,
)
from zerotrust.errors import ConfigurationError
from zerotrust.identity.match import Matcher, decide
from zerotrust.stores._logic import check_rate

__all__ = ["HookCall", "Policy", "RateLimit", "Requirement", "operation_of", "require"]

_T = TypeVar("_T")


def _parts(values: object, kind: type[_T], what: str) -> tuple[_T, ...]:
    """``values`` as a tuple of ``kind`` objects, or a :class:`ConfigurationError` (a string
    iterated would be one part per character, a mapping its keys)."""
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Iterable):
        raise ConfigurationError(f"{what} must be a list")
    items = tuple(values)
    if not all(isinstance(item, kind) for item in items):
        raise ConfigurationError(f"{what} must hold {kind.__name__} objects")
    return items


#: Blocking hooks running at once, in threads of their own, those still running past their
#: timeout included (a decision service that hangs keeps its calls). Beyond it a CUSTOM rule
#: is refused at once instead of starting another thread.
MAX_RUNNING_HOOKS: Final = 256
_running_hooks = threading.BoundedSemaphore(MAX_RUNNING_HOOKS)


def _after_fork_in_child() -> None:
    # The hooks running at the fork were the parent's threads: none of them runs here, and
    # none would ever give its slot back (each fork would cost the child the parent's count).
    global _running_hooks  # noqa: PLW0603 - one process-wide bound, made anew in a child
    _running_hooks = threading.BoundedSemaphore(MAX_RUNNING_HOOKS)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _start_hook(
    hook: Callable[..., Any],
    principal: Principal | None,
    op: Operation,
    rule: Rule,
    done: Callable[[bool, object], None],
) -> None:
    """Run a blocking ``hook`` in a thread of its own, then ``done(ok, result or error)``.

    A thread per call, not a shared pool: a hook's ``hook_timeout`` is its own running time,
    never time spent queued behind other requests' hooks, and hooks stuck in a decision
    service that does not answer hold no worker another rule (or another Guard) needs."""
    slots = _running_hooks
    if not slots.acquire(blocking=False):
        raise TimeoutError(
            f"hook of rule {rule.id!r} not started: {MAX_RUNNING_HOOKS} hooks are still running"
        )

    def run() -> None:
        ok, value = False, None
        try:
            value, ok = _run_hook(hook, principal, op), True
        except Exception as exc:  # handed to the caller, which denies
            value = exc
        finally:
            slots.release()
            if not ok and value is None:  # interrupted (SystemExit, ...): denied all the same
                value = RuntimeError(f"hook of rule {rule.id!r} was interrupted")
            done(ok, value)

    threading.Thread(target=run, name="zerotrust-hook", daemon=True).start()


def operation_of(view: RequestView) -> Operation:
    """The :class:`Operation` a request describes."""
    return Operation(method=view.method, route=view.route, kind=view.kind, path=view.path)


@dataclass(frozen=True, slots=True)
class HookCall:
    """Sans-IO request for a CUSTOM rule's hook; answer with ``True`` (allow) or ``False``."""

    rule: Rule
    principal: Principal | None
    operation: Operation

    def fulfil(self) -> bool:
        """Run the hook in a worker thread with the rule's ``hook_timeout``; return its verdict.

        An async hook runs to completion on an event loop of its own in that thread (it must
        not use objects bound to another loop). Raises :class:`TimeoutError` on timeout and
        :class:`TypeError` if the hook returns no ``bool``; the policy denies on any error
        (fail closed)."""
        hook = self.rule.hook
        assert hook is not None
        finished = threading.Event()
        outcome: list[tuple[bool, object]] = []

        def done(ok: bool, value: object) -> None:
            outcome.append((ok, value))
            finished.set()

        _start_hook(hook, self.principal, self.operation, self.rule, done)
        if not finished.wait(self.rule.hook_timeout):
            raise TimeoutError(f"hook of rule {self.rule.id!r} timed out")
        ok, value = outcome[0]
        if not ok:
            raise value  # type: ignore[misc]
        return _hook_verdict(self.rule, value)

    async def fulfil_async(self) -> bool:
        """Await the hook (a blocking one runs in a thread) with the rule's ``hook_timeout``.

        Returns its verdict. A timeout, or a result that is not a ``bool`` (:class:`TypeError`),
        raises; the policy denies on any error (fail closed)."""
        hook = self.rule.hook
        assert hook is not None
        timeout = self.rule.hook_timeout
        if inspect.iscoroutinefunction(hook):
            called = _own_outcome(hook(self.principal, self.operation))
            result = await wait_for(called, timeout)
        else:  # a blocking hook must not stall the event loop: a thread of its own
            loop = asyncio.get_running_loop()
            future: asyncio.Future[object] = loop.create_future()
            hook_id = self.rule.id

            def settle(ok: bool, value: object) -> None:
                if future.done():
                    return
                if ok:
                    future.set_result(value)
                elif isinstance(value, StopIteration):  # which a future cannot hold
                    future.set_exception(RuntimeError(f"hook of rule {hook_id!r} raised it"))
                else:
                    future.set_exception(value)  # type: ignore[arg-type]

            def done(ok: bool, value: object) -> None:
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    loop.call_soon_threadsafe(settle, ok, value)

            _start_hook(hook, self.principal, self.operation, self.rule, done)
            result = await wait_for(future, timeout)
        return _hook_verdict(self.rule, result)


def _run_hook(hook: Callable[..., Any], principal: Principal | None, op: Operation) -> object:
    """Call ``hook`` in a worker thread; an awaitable it returns is run there to completion."""
    result = hook(principal, op)
    if inspect.isawaitable(result):
        return asyncio.run(_own_outcome(result))
    return result


async def _own_outcome(awaitable: Awaitable[object]) -> object:
    """What an async hook answers; a ``CancelledError`` of its own (a future it awaits that
    something else cancelled) is an error like any other, which the policy denies on. Only
    the cancellation of the call itself (its timeout, or the request's end) stays one: the
    request is then cancelled, not decided."""
    try:
        return await awaitable
    except asyncio.CancelledError:
        cancelling = getattr(asyncio.current_task(), "cancelling", None)
        if cancelling is not None and cancelling():  # Python 3.11+: this call was cancelled
            raise
        # (before 3.11, the awaiting side sees its own cancellation, whatever this raises)
        raise RuntimeError("the hook raised CancelledError") from None


def _hook_verdict(rule: Rule, result: object) -> bool:
    if not isinstance(result, bool):
        raise TypeError(f"hook of rule {rule.id!r} returned {type(result).__name__}, not bool")
    return result


@dataclass(frozen=True)
class RateLimit:
    """A token bucket per principal: ``rate`` tokens per second, bursts of ``burst``."""

    id: str
    rate: float
    burst: int
    callers: Sequence[Callers] = ()
    operations: Sequence[Operations] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ConfigurationError("a rate limit needs a non-empty string id")
        try:  # the stores' own bounds, checked now rather than on every request
            check_rate(self.rate, self.burst, 1)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"rate limit {self.id!r}: {exc}") from None
        callers = _parts(self.callers, Callers, f"rate limit {self.id!r}: callers")
        operations = _parts(self.operations, Operations, f"rate limit {self.id!r}: operations")
        if any(c.anonymous for c in callers):
            raise ConfigurationError(
                f"rate limit {self.id!r}: buckets are per principal; a request without"
                " credentials has none (limit anonymous traffic in front of the service)"
            )
        object.__setattr__(self, "callers", callers)
        object.__setattr__(self, "operations", operations)

    def applies(self, principal: Principal, op: Operation) -> bool:
        """Whether this limit covers the request: ``principal`` matches one of ``callers`` and
        ``op`` one of ``operations`` (an empty list matches everything)."""
        if self.callers and not any(c.matches(principal) for c in self.callers):
            return False
        return not self.operations or any(o.matches(op) for o in self.operations)

    def key(self, principal: Principal) -> str:
        """The bucket key of ``principal`` under this limit: ``"<len(id)>:<id>:<principal.id>"``
        (the length keeps limits ``a`` and ``a:b`` from sharing a bucket whatever the ids)."""
        return f"{len(self.id)}:{self.id}:{principal.id}"


@dataclass(frozen=True)
class Requirement:
    """A per-handler requirement that must hold in addition to the app-wide policy."""

    scopes: tuple[str, ...] = ()
    any_scopes: tuple[str, ...] = ()
    callers: Matcher | tuple[Pattern, ...] | None = None
    methods: tuple[str, ...] = ()
    proven_by: tuple[str, ...] = ()
    #: More "one of these" groups, from combining requirements (each group needs one scope).
    more_any_scopes: tuple[tuple[str, ...], ...] = ()

    @property
    def any_scope_groups(self) -> frozenset[frozenset[str]]:
        """Every "at least one of" group this requirement holds."""
        groups = (self.any_scopes, *self.more_any_scopes) if self.any_scopes else ()
        return frozenset(frozenset(group) for group in groups if group)

    def check(self, principal: Principal | None, op: Operation) -> Decision | None:
        """``None`` when satisfied, else the denying :class:`Decision`."""
        method = op.method.upper()
        if (
            self.methods
            and method not in self.methods
            and not (method == "HEAD" and "GET" in self.methods)  # HEAD is GET without content
        ):
            return Decision(
                False, "requirement_not_met", detail=f"method {op.method} not allowed here"
            )
        if principal is None:
            return Decision(False, "requirement_not_met", detail="authentication required")
        if self.callers is not None and not self._caller_ok(principal):
            return Decision(
                False, "requirement_not_met", detail=f"caller {principal.id} not allowed here"
            )
        if self.proven_by and principal.proven_by not in self.proven_by:
            return Decision(
                False, "requirement_not_met", detail=f"{principal.proven_by} not accepted here"
            )
        missing = ScopeRule(self.scopes, self.any_scopes).missing(principal.scopes)
        for group in self.more_any_scopes:
            if principal.scopes.isdisjoint(group):
                missing += tuple(s for s in group if s not in missing)
        if missing:
            return Decision(
                False, "insufficient_scope", required_scopes=missing, detail="missing scopes"
            )
        return None

    def _caller_ok(self, principal: Principal) -> bool:
        if isinstance(self.callers, tuple):
            spiffe_id = str(principal.spiffe_id) if principal.spiffe_id is not None else None
            other = spiffe_id if spiffe_id is not None else principal.subject
            # a SPIFFE ID pattern never reads a subject that is no valid SPIFFE ID
            return any(p(spiffe_id if _names_spiffe_id(p) else other) for p in self.callers)
        if principal.spiffe_id is None or self.callers is None:
            return False
        # anything but a MatchResult is an error, which the pipeline refuses the request over
        return bool(decide(self.callers, principal.spiffe_id))

    def __and__(self, other: Requirement) -> Requirement:
        """Both requirements (scopes accumulate, as along a FastAPI dependency chain)."""
        if self.callers is not None and other.callers is not None and self.callers != other.callers:
            raise ConfigurationError("two different caller requirements cannot be combined")
        # "one of A" and "one of B" is not "one of A or B": every group is kept as a group
        groups = tuple(
            dict.fromkeys(
                tuple(group)
                for requirement in (self, other)
                for group in (requirement.any_scopes, *requirement.more_any_scopes)
                if group
            )
        )
        return Requirement(
            scopes=tuple(dict.fromkeys(self.scopes + other.scopes)),
            any_scopes=groups[0] if groups else (),
            callers=self.callers if self.callers is not None else other.callers,
            methods=_intersect(self.methods, other.methods, methods=True),
            proven_by=_intersect(self.proven_by, other.proven_by),
            more_any_scopes=groups[1:],
        )


def _names_spiffe_id(pattern: Pattern) -> bool:
    """Whether a caller pattern of :func:`require` is written for SPIFFE IDs (it starts with
    the scheme, in any case)."""
    return pattern.text[:7].lower() == "spiffe:"


def _intersect(a: tuple[str, ...], b: tuple[str, ...], *, methods: bool = False) -> tuple[str, ...]:
    if not a or not b:
        return a or b

    def admitted(values: tuple[str, ...]) -> tuple[str, ...]:
        # what a requirement says of GET it says of HEAD (see Requirement.check)
        return (*values, "HEAD") if methods and "GET" in values else values

    wider = admitted(b)
    both = tuple(dict.fromkeys(x for x in admitted(a) if x in wider))
    if methods and "GET" in both:
        both = tuple(x for x in both if x != "HEAD")  # implied by GET
    if not both:
        raise ConfigurationError(f"requirements {a} and {b} can never both hold")
    return both


def require(
    *,
    scopes: Iterable[str] = (),
    any_scopes: Iterable[str] = (),
    callers: Matcher | Iterable[str] | None = None,
    methods: Iterable[str] = (),
    proven_by: Iterable[str] = (),
) -> Requirement:
    """Build a :class:`Requirement`. ``callers`` is a matcher or SPIFFE ID / subject patterns.

    A pattern that starts with ``spiffe:`` is checked as ``Callers(spiffe_ids=...)`` checks
    its patterns (``spiffe://example.org*``, which would also match
    ``spiffe://example.org.evil.example/...``, is a :class:`~zerotrust.errors.ConfigurationError`)
    and is compared with the caller's SPIFFE ID only: a token whose ``sub`` is not a valid SPIFFE
    ID never matches it. Any other pattern (``user-*``, ``*``) is compared with the caller's
    SPIFFE ID, or with the token's subject when the caller has none.
    """
    if isinstance(scopes, str) or isinstance(any_scopes, str) or isinstance(callers, str):
        raise ConfigurationError("scopes, any_scopes and callers take lists, not a single string")
    caller_req: Matcher | tuple[Pattern, ...] | None
    if callers is None or callable(callers):
        if inspect.iscoroutinefunction(callers):  # its answer would be a coroutine, not a match
            raise ConfigurationError("callers must be a matcher of zerotrust.match, not async")
        caller_req = callers
    else:
        caller_req = tuple(Pattern(str(c)) for c in callers)
        if not caller_req:
            raise ConfigurationError(
                "callers=[] would refuse everyone: pass None for no constraint"
            )
        _check_spiffe_ids(tuple(p for p in caller_req if _names_spiffe_id(p)), "callers")
    rule = ScopeRule(tuple(scopes), tuple(any_scopes))  # validates the scope lists
    method_names = tuple(m.upper() for m in _strings(methods, "methods"))
    _check_methods(tuple(Pattern(m) for m in method_names), "methods")
    proofs = _strings(proven_by, "proven_by")
    unknown = sorted(set(proofs) - _PROVEN_BY)
    if unknown:  # compared exactly: a misspelt one would refuse every request
        raise ConfigurationError(f"proven_by: unknown values {unknown}")
    return Requirement(
        scopes=tuple(rule.all),
        any_scopes=tuple(rule.any),
        callers=caller_req,
        methods=method_names,
        proven_by=proofs,
    )


Flow = Generator[HookCall, bool, Decision]


@dataclass(frozen=True)
class Policy:
    """An ordered set of rules with Istio semantics. Immutable once built."""

    rules: Sequence[Rule] = ()
    id: str = "default"
    default: Literal["deny", "allow"] = "deny"
    dry_run: bool = False
    rate_limits: Sequence[RateLimit] = ()
    _by_action: dict[str, tuple[Rule, ...]] = field(init=False, repr=False, compare=False)
    _enforced: dict[str, tuple[Rule, ...]] = field(init=False, repr=False, compare=False)
    _has_dry_run: bool = field(init=False, repr=False, compare=False)
    _verdicts: dict[str, Decision] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ConfigurationError("a policy id must be a non-empty string")
        if not isinstance(self.dry_run, bool):
            raise ConfigurationError(f"policy {self.id!r}: dry_run must be true or false")
        rules = _parts(self.rules, Rule, f"policy {self.id!r}: rules")
        limits = _parts(self.rate_limits, RateLimit, f"policy {self.id!r}: rate_limits")
        ids = [r.id for r in rules] + [r.id for r in limits]
        dupes = sorted(i for i, n in Counter(ids).items() if n > 1)
        if dupes:
            raise ConfigurationError(f"policy {self.id!r}: duplicate rule ids {dupes}")
        if self.default not in ("deny", "allow"):
            raise ConfigurationError(f"policy {self.id!r}: default must be 'deny' or 'allow'")
        object.__setattr__(self, "rules", rules)
        object.__setattr__(self, "rate_limits", limits)
        by_action = {
            a: tuple(r for r in rules if r.action == a) for a in ("CUSTOM", "DENY", "ALLOW")
        }
        object.__setattr__(self, "_by_action", by_action)
        enforced = {a: tuple(r for r in by_action[a] if not r.dry_run) for a in by_action}
        object.__setattr__(self, "_enforced", enforced)
        object.__setattr__(self, "_has_dry_run", self.dry_run or any(r.dry_run for r in rules))
        # a rule's verdict is a value: built once, not on every request it decides
        verdicts = {r.id: _verdict(r, self.id) for r in rules if r.action != "CUSTOM"}
        object.__setattr__(self, "_verdicts", verdicts)

    @property
    def has_dry_run(self) -> bool:
        """Whether the policy or any of its rules is dry-run (decisions may then carry
        ``would_*``)."""
        return self._has_dry_run

    # --- evaluation (sans-IO) ----------------------------------------------------------------

    def decide(self, principal: Principal | None, op: Operation) -> Flow:
        """The evaluation generator: yields :class:`HookCall`, returns a :class:`Decision`."""
        hook_results: dict[str, bool | BaseException] = {}
        effective = yield from self._flow(principal, op, hook_results, enforced_only=True)
        if not self._has_dry_run:
            return effective
        shadow = yield from self._flow(principal, op, hook_results, enforced_only=False)
        return self._combine(effective, shadow)

    def decide_without_hooks(self, principal: Principal | None, op: Operation) -> Decision:
        """:meth:`decide` of a policy without CUSTOM rules, which has nothing to yield: the
        same decision without driving a generator (what a Guard does on every request)."""
        if self._by_action["CUSTOM"]:
            raise ConfigurationError("a policy with CUSTOM rules is decided with decide()")
        if self.dry_run:
            effective = Decision(True, "dry_run", policy_id=self.id)
        else:
            effective = self._match(principal, op, self._enforced)
        if not self._has_dry_run:
            return effective
        return self._combine(effective, self._match(principal, op, self._by_action))

    def _combine(self, effective: Decision, shadow: Decision) -> Decision:
        """The enforced decision, noting where the dry-run rules (``shadow``) differ."""
        if self.dry_run:
            if shadow.allowed:
                return shadow
            return Decision(True, "dry_run", policy_id=self.id, dry_run=True, would_allow=False,
                            would_rule_id=shadow.rule_id, would_reason=shadow.reason)  # fmt: skip
        if (shadow.allowed, shadow.rule_id) == (effective.allowed, effective.rule_id):
            return effective
        return replace(effective, dry_run=True, would_allow=shadow.allowed,
                       would_rule_id=shadow.rule_id, would_reason=shadow.reason)  # fmt: skip

    def _flow(
        self, principal: Principal | None, op: Operation, results: dict[str, bool | BaseException],
        *, enforced_only: bool,
    ) -> Flow:  # fmt: skip
        pid = self.id
        if enforced_only and self.dry_run:
            return Decision(True, "dry_run", policy_id=pid)
        rules = self._enforced if enforced_only else self._by_action
        for rule in rules["CUSTOM"]:
            if not rule.matches(principal, op):
                continue
            if rule.id not in results:
                try:
                    results[rule.id] = yield HookCall(rule, principal, op)
                except Exception as exc:  # any hook failure denies (fail closed)
                    results[rule.id] = exc
            verdict = results[rule.id]
            if isinstance(verdict, BaseException):
                detail = f"{type(verdict).__name__}: {verdict}"
                return Decision(False, "custom_error", rule.id, pid, detail=detail)
            if not verdict:
                return Decision(False, "denied_by_custom", rule.id, pid)
        return self._match(principal, op, rules)

    def _match(
        self, principal: Principal | None, op: Operation, rules: dict[str, tuple[Rule, ...]]
    ) -> Decision:
        """The DENY, then the ALLOW rules of ``rules`` (after any CUSTOM rule let it pass)."""
        pid = self.id
        verdicts = self._verdicts
        for rule in rules["DENY"]:
            if rule.matches(principal, op):
                return verdicts[rule.id]
        allows = rules["ALLOW"]
        short: tuple[str, tuple[str, ...]] | None = None
        for rule in allows:
            if not rule.matches(principal, op):
                continue
            missing = (
                rule.scopes.missing(principal.scopes if principal else frozenset())
                if rule.scopes
                else ()
            )
            if not missing:
                return verdicts[rule.id]
            short = short or (rule.id, missing)
        if short is not None:
            return Decision(False, "insufficient_scope", short[0], pid, required_scopes=short[1])
        if allows:
            return Decision(False, "no_allow_rule_matched", policy_id=pid)
        if self.default == "allow":
            return Decision(True, "allowed_by_default", policy_id=pid)
        reason = "no_rules" if not self.rules else "no_allow_rule_matched"
        return Decision(False, reason, policy_id=pid)

    # --- drivers -----------------------------------------------------------------------------

    def evaluate(self, principal: Principal | None, op: Operation) -> Decision:
        """Decide synchronously (CUSTOM hooks run in a worker thread with their timeout)."""
        return drive(self.decide(principal, op))

    async def evaluate_async(self, principal: Principal | None, op: Operation) -> Decision:
        """Decide without blocking the event loop."""
        return await drive_async(self.decide(principal, op))

    def explain(
        self,
        subject: Principal | RequestView | None,
        operation: Operation | RequestView | None = None,
    ) -> Decision:
        """Would this be allowed, and why? (no rate limits are consumed).

        ``subject`` is the caller (a :class:`~zerotrust.Principal`, or ``None`` for a request
        without credentials), or a request view, read as an anonymous caller. A policy cannot
        authenticate: a view carrying credentials (a token, a DPoP proof, a client certificate)
        raises :class:`~zerotrust.errors.ConfigurationError`; ask ``Guard.explain(view)``."""
        principal = subject if isinstance(subject, Principal) else None
        if isinstance(subject, RequestView) and not isinstance(subject, Principal):
            _anonymous_view(subject)
        if operation is None:
            if not isinstance(subject, RequestView):
                raise ConfigurationError("explain() needs an operation or a request view")
            operation = subject
        op = operation if isinstance(operation, Operation) else operation_of(operation)
        return self.evaluate(principal, op)

    def rate_limits_for(self, principal: Principal, op: Operation) -> tuple[RateLimit, ...]:
        """The rate limits that apply to ``principal`` calling ``op``, in policy order (nothing
        is consumed)."""
        return tuple(r for r in self.rate_limits if r.applies(principal, op))


def _anonymous_view(view: RequestView) -> None:
    """Refuse to explain a request that carries credentials as if it were anonymous."""
    carried = ("authorization", "dpop", *FORWARDED_CERT_HEADERS)
    if any(view.header(name) for name in carried) or view.peer_chain:
        raise ConfigurationError(
            "this request carries credentials the policy cannot authenticate: use"
            " Guard.explain(view), or pass the Principal to Policy.explain"
        )
    if view.verified_peer is not None:
        raise ConfigurationError(
            "this request has a verified client certificate: use Guard.explain(view)"
        )


def _verdict(rule: Rule, policy_id: str) -> Decision:
    """The decision ``rule`` gives when it matches (ALLOW: with its scopes granted)."""
    if rule.action == "DENY":
        return Decision(False, "denied_by_rule", rule.id, policy_id)
    return Decision(True, "allowed_by_rule", rule.id, policy_id)
