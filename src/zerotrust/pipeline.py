"""The Guard: one pipeline for every request, whatever the framework.

``RequestView -> credentials -> Principal -> Decision -> AuditEvent``, written once as a
sans-IO generator (:meth:`Guard.flow`). :meth:`Guard.evaluate` drives it synchronously and
:meth:`Guard.aevaluate` on the event loop: JWKS fetches, store lookups and CUSTOM policy hooks
are awaited, never run blocking on the loop. Adapters only translate the :class:`Outcome`.

Fail closed: any error while deciding is a refusal. Missing credentials give 401 without an
error code (RFC 6750 §3.1), a rejected token 401 ``invalid_token``, missing scopes 403
``insufficient_scope``, a policy denial 403, a rate limit 429 with ``Retry-After`` and
unavailable keys or stores 503.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, NoReturn

from zerotrust._clock import SYSTEM_CLOCK, Clock
from zerotrust._sansio import drive, drive_async
from zerotrust.audit.event import TRUNCATION_MARKER, AuditEvent
from zerotrust.audit.otel import OTelSink
from zerotrust.audit.sinks import AuditPipeline, AuditSink, LoggingSink
from zerotrust.audit.trace import trace_ids_for_audit
from zerotrust.authn.authenticate import Authenticator, AuthResult
from zerotrust.authn.binding import DPoPConfig
from zerotrust.authn.credentials import Credentials
from zerotrust.authn.principal import Principal
from zerotrust.authn.request import RequestView
from zerotrust.authz.decision import Decision
from zerotrust.authz.policy import Policy, Requirement, operation_of
from zerotrust.authz.rules import Operation
from zerotrust.errors import (
    AccessDenied,
    AuditError,
    AuthenticationError,
    ConfigurationError,
    DPoPProofReplayed,
    InsufficientScope,
    InvalidDPoPProof,
    MissingCredentials,
    PeerNotAuthorized,
    RateLimited,
    SourceError,
    TokenError,
    TokenRevoked,
    UseDPoPNonce,
    ZeroTrustError,
)
from zerotrust.stores._logic import OwnedListener
from zerotrust.stores.base import Revocation, Store
from zerotrust.stores.memory import MemoryStore
from zerotrust.tokens.verified import VerifiedToken
from zerotrust.x509.sslcontext import HandshakeRefusal
from zerotrust.x509.verify import VerifiedPeer

__all__ = ["REQUIREMENT_NOTE", "SUPERSEDES_NOTE", "Call", "Guard", "Outcome"]

#: Audit note on events recorded for a per-handler requirement checked after the middleware.
REQUIREMENT_NOTE = "handler_requirement"
#: Audit note prefix (followed by an event id) on the refusal recorded when a required audit
#: sink failed after other sinks had recorded the decision that was then not enforced.
SUPERSEDES_NOTE = "supersedes:"

_log = logging.getLogger("zerotrust")
_REALM: Final = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]+")


@dataclass(frozen=True, slots=True)
class Call:
    """A sans-IO request for a store operation (sync and async twins of the same call)."""

    sync: Callable[[], Any]
    async_: Callable[[], Awaitable[Any]]

    def fulfil(self) -> Any:
        return self.sync()

    async def fulfil_async(self) -> Any:
        return await self.async_()


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the Guard decided, in the terms every adapter needs."""

    allowed: bool
    principal: Principal | None
    decision: Decision | None
    error: ZeroTrustError | None
    status: int
    grpc_status: str
    #: Response headers: a refusal's ``WWW-Authenticate`` / ``Retry-After`` / ``DPoP-Nonce``;
    #: on an allowed request, the service's current ``DPoP-Nonce`` when the proof carried an
    #: earlier one (RFC 9449 8.2), which the adapters add to the application's response.
    headers: tuple[tuple[str, str], ...] = ()
    event: AuditEvent | None = None
    #: What authentication noted (e.g. ``forwarded_cert_xfcc``), whether or not an audit event
    #: was written.
    notes: tuple[str, ...] = ()

    @property
    def www_authenticate(self) -> str | None:
        """The value of the first ``WWW-Authenticate`` header in :attr:`headers`, or ``None``."""
        for name, value in self.headers:
            if name == "WWW-Authenticate":
                return value
        return None

    def body(self) -> dict[str, str] | None:
        """The JSON error body for a refusal (code and terse description only)."""
        if self.error is None:
            return None
        return self.error.to_dict()


_REPLAY_SKEW_MARGIN: Final = 10.0
_UNAVAILABLE_LOG_INTERVAL: Final = 10.0


def dpop_replay_window(dpop: DPoPConfig) -> float:
    """How long after its ``iat`` a DPoP proof's replay entry must be kept: its acceptance
    window (``max_age + leeway``) plus a margin for replicas whose clocks differ."""
    return dpop.max_age + dpop.leeway + max(2 * dpop.leeway, _REPLAY_SKEW_MARGIN)


def check_replay_cap(store: object, authenticator: Authenticator) -> None:
    """A store that forgets replay entries before a proof's window ends lets it be replayed.
    A proof's ``iat`` may lie ``leeway`` ahead, so its entry is asked to outlive the window
    by that much from now. ``store``: a store, or anything with the ``replay_max_ttl`` of the
    store it describes."""
    cap = getattr(store, "replay_max_ttl", None)
    dpop = authenticator.dpop
    if dpop is None or isinstance(cap, bool) or not isinstance(cap, (int, float)):
        return
    needed = dpop_replay_window(dpop) + dpop.leeway
    if cap < needed:
        raise ConfigurationError(
            f"the store keeps replay entries at most {cap:g} s, but DPoP proofs need"
            f" {needed:g} s (max_age + leeway + margin, from an iat up to leeway ahead):"
            " raise its replay_max_ttl"
        )


#: The Guard's configuration: set once, by its constructor.
_SETTINGS: Final = frozenset(
    {"authenticator", "policy", "audit", "store", "service", "check_revocation", "clock"}
)


def _evict(guard: Guard, revocation: Revocation) -> None:
    """A revocation made through the Guard's store: drop what its verifier cached of it."""
    verifier = guard.authenticator.tokens
    if verifier is None:  # pragma: no cover - registered only with a verifier
        return
    if revocation.jti is not None:
        verifier.evict(revocation.jti)
    else:
        verifier.clear_cache()


class Guard:
    """Authenticate, authorize and audit every request. Immutable once built (its settings
    cannot be reassigned).

    >>> guard = Guard(authenticator=Authenticator(tokens=verifier), policy=policy)  # doctest: +SKIP
    >>> outcome = guard.evaluate(request_view)  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        policy: Policy,
        authenticator: Authenticator | None = None,
        audit: AuditSink | Sequence[AuditSink] | AuditPipeline | None = None,
        store: Store | None = None,
        stores: Store | None = None,
        service: str = "zerotrust",
        check_revocation: bool = True,
        clock: Clock = SYSTEM_CLOCK,
        **authenticator_parts: Any,
    ) -> None:
        if authenticator is None:
            # Guard(tokens=..., bundles=..., trusted_proxies=..., policy=...) builds the
            # Authenticator from its parts (see Authenticator for the keywords).
            if not authenticator_parts:
                raise ConfigurationError(
                    "Guard needs authenticator= or its parts (tokens=, bundles=, ...)"
                )
            try:
                authenticator = Authenticator(clock=clock, **authenticator_parts)
            except TypeError as exc:
                raise ConfigurationError(f"Guard: {exc}") from None
        elif authenticator_parts:
            parts = ", ".join(sorted(authenticator_parts))
            raise ConfigurationError(f"pass authenticator= or its parts, not both ({parts})")
        if store is not None and stores is not None:
            raise ConfigurationError("pass store= or stores=, not both")
        store = store if store is not None else stores
        if not isinstance(authenticator, Authenticator) or not isinstance(policy, Policy):
            raise ConfigurationError("Guard needs an Authenticator and a Policy")
        if not isinstance(service, str) or not _REALM.fullmatch(service):
            # it is the realm of every challenge: printable ASCII, nothing to escape
            raise ConfigurationError(
                "service must be a non-empty name of printable ASCII, without quotes or '\\'"
            )
        if audit is None:  # JSON lines on the "zerotrust.audit" logger, and OpenTelemetry
            audit = AuditPipeline([LoggingSink(), OTelSink()])
        elif not isinstance(audit, AuditPipeline):
            audit = AuditPipeline(list(audit) if isinstance(audit, Sequence) else [audit])
        self.authenticator = authenticator
        self.policy = policy
        self.audit = audit
        self.store: Store = store if store is not None else MemoryStore(clock=clock)
        check_replay_cap(self.store, authenticator)
        self.service = service
        self.check_revocation = check_revocation
        self.clock = clock
        # An in-process store does no I/O: it is called directly instead of through a yield.
        self._local_store = type(self.store) is MemoryStore
        # Decisions depend only on the principal and the operation when no CUSTOM hook takes
        # part; principals of cached tokens and of TLS connections are reused objects, so the
        # decision for the next request of the same caller on the same route is a lookup.
        self._decisions: dict[tuple[int, str, str | None, str], tuple[Principal, Decision]] = {}
        self._memo_decisions = not any(rule.action == "CUSTOM" for rule in policy.rules)
        # ... and without them the policy decides without a generator to drive (a subclass
        # may decide in its own way: it is asked through decide())
        self._plain_policy = self._memo_decisions and type(policy) is Policy
        # Repeated requests (see _repeat): plain bearer tokens from the verifier's cache.
        tokens = authenticator.tokens
        # Without a verified-token cache every request's token (and principal) is a new object.
        self._token_principals_repeat = tokens is not None and tokens.cache is not None
        self._reusable = (
            self._memo_decisions
            and self._local_store
            and tokens is not None
            and tokens.cache is not None
        )
        # The memos below hold verified tokens (and their principals) by identity: an entry
        # can be hit again only while the verifier's cache hands that token back. They keep no
        # more entries than the cache does, so its cache_size bounds what they hold too.
        cache = tokens.cache if tokens is not None else None
        self._memo_size = (
            min(_MAX_REPEATS, cache.max_entries) if cache is not None else _MAX_REPEATS
        )
        self._absent = authenticator._plain_absent  # the set its one-pass reading uses
        self._unavailable_logged: dict[str, float] = {}  # error code -> when last logged
        self._repeats: dict[tuple[int, int, str, str, str | None, int], _Repeat] = {}
        if authenticator.tokens is not None:
            # revocations made through this store take effect in the local cache at once;
            # other replicas see them on their next lookup (the cache is never consulted alone).
            # The listener lives as long as this Guard, not as long as the store.
            self.store.add_revocation_listener(OwnedListener(self, _evict))

    def __setattr__(self, name: str, value: object) -> None:
        # What __init__ derived from the configuration (memos, fast paths, the store listener)
        # would not follow a reassignment: refuse it instead of deciding with half of each.
        if name in _SETTINGS and name in self.__dict__:
            raise AttributeError(f"Guard.{name} cannot change once built: build a new Guard")
        object.__setattr__(self, name, value)

    # --- drivers ------------------------------------------------------------------------------

    def evaluate(self, view: RequestView, requirement: Requirement | None = None) -> Outcome:
        """Decide on ``view`` (blocking on keys, stores and hooks when they need I/O)."""
        if self._reusable:
            tokens: Any = self.authenticator.tokens
            try:
                if not tokens._static_keys:
                    tokens._confirm_keys()
                outcome = self._repeat(view, requirement)
            except Exception:  # the pipeline below decides, and reports, what is wrong
                outcome = None
            if outcome is not None:
                return outcome
        return drive(self.flow(view, requirement))

    async def aevaluate(self, view: RequestView, requirement: Requirement | None = None) -> Outcome:
        """Decide on ``view`` without blocking the event loop."""
        if self._reusable:
            tokens: Any = self.authenticator.tokens
            try:
                if not tokens._static_keys:
                    await tokens._aconfirm_keys()
                outcome = self._repeat(view, requirement)
            except Exception:  # the pipeline below decides, and reports, what is wrong
                outcome = None
            if outcome is not None:
                return outcome
        return await drive_async(self.flow(view, requirement))

    def explain(self, view: RequestView, requirement: Requirement | None = None) -> Outcome:
        """Would this request be allowed, and why? Consumes no rate limit or replay entry and
        writes no audit event."""
        return drive(self.flow(view, requirement, dry=True))

    # --- the pipeline -------------------------------------------------------------------------

    def flow(
        self, view: RequestView, requirement: Requirement | None = None, *, dry: bool = False
    ) -> Generator[Any, Any, Outcome]:
        """The sans-IO pipeline (see the module documentation)."""
        auth: AuthResult | None = None
        decision: Decision | None = None
        error: ZeroTrustError | None = None
        notes: list[str] = []  # kept for the audit event when authentication fails
        try:
            auth = yield from self.authenticator.flow(view, notes)
            if self._local_store and auth.dpop_proof is None:  # no I/O, nothing to yield
                self._check_revoked_locally(auth.token)
            else:
                yield from self._stateful_checks(auth, dry)
            op = operation_of(view)
            principal = auth.principal
            memo = self._memo_key(principal, op, auth.token is not None)
            known = self._decisions.get(memo) if memo is not None else None
            if known is not None and known[0] is principal:  # an id counts with its object
                decision = known[1]
            else:
                if self._plain_policy:  # no CUSTOM rule: nothing to yield
                    decision = self.policy.decide_without_hooks(principal, op)
                else:
                    decision = yield from self.policy.decide(principal, op)
                if memo is not None and principal is not None:
                    if len(self._decisions) >= self._memo_size:
                        self._decisions.clear()
                    self._decisions[memo] = (principal, decision)
            if decision.allowed and requirement is not None:
                refused = requirement.check(auth.principal, op)
                if refused is not None:
                    decision = replace(refused, policy_id=decision.policy_id)
            retry_after = None
            if (
                decision.allowed
                and auth.principal is not None
                and not dry
                and self.policy.rate_limits
            ):
                decision, retry_after = yield from self._rate_limits(auth.principal, op, decision)
            if retry_after is not None:
                error = RateLimited("rate limit exceeded", retry_after=retry_after)
            else:
                error = _refusal(decision, auth.principal)
        except SourceError as exc:  # keys or stores out of reach: the operator must know why
            error = exc
            self._log_unavailable(exc)
        except ZeroTrustError as exc:
            error = exc
        except Exception:  # fail closed, and never show the caller what broke
            _log.exception("zerotrust: unexpected error while deciding; request refused")
            error = ZeroTrustError("internal error while deciding")
        if auth is None and notes:  # authentication failed after noting something
            auth = AuthResult(None, Credentials(), notes=tuple(notes))
        if error is None and not dry and auth is not None and auth.reusable:
            self._remember(view, requirement, auth, decision)
        # no decision: the pipeline stopped before the policy, maybe before the revocation and
        # replay checks of the caller's credentials ran to the end (a store outage)
        return self._finish(
            view, auth, decision, error, audit=not dry, checked=decision is not None
        )

    # --- repeated requests ----------------------------------------------------------------------
    #
    # A service sees the same caller present the same token for the same operation again and
    # again. Once the pipeline has allowed such a request, the next one is answered from what
    # it established, and only what can change between two requests is checked again: the
    # token's cached verification (its time window; the key source's current keys), the
    # handshake-verified peer (expiry; its authority still in the current bundle), revocation,
    # and the audit event, which is written for every request. Only allows are remembered and
    # anything else (a miss, an error, a revoked token) runs the whole pipeline, so this path
    # can only repeat an allow the pipeline itself gave for the same credentials and operation.
    # A requirement's own matcher is asked again too. It never applies with CUSTOM hooks, rate
    # limits, DPoP, API keys, forwarded certificates or a store that needs I/O.

    def _repeat(self, view: RequestView, requirement: Requirement | None) -> Outcome | None:
        """The outcome of a repeated request, or ``None`` when the pipeline must decide.

        Kept to one short function: it runs on every request, mostly with cold CPU caches."""
        alone = getattr(view, "bearer_alone", None)  # the adapters' views answer in one pass
        if alone is not None:
            raw = alone(self._absent)
        else:
            values = view.header("authorization")
            raw = values[0][7:] if len(values) == 1 and values[0][:7] == "Bearer " else None
            if any(view.header(name) for name in self._absent):
                return None
        if raw is None:
            return None  # the canonical form only; any other spelling takes the pipeline
        peer = view.verified_peer
        if peer is None and view.peer_chain:
            return None
        authenticator = self.authenticator
        token = authenticator.tokens._cached(raw)  # type: ignore[union-attr]
        if token is None:
            return None
        entry = self._repeats.get(
            (id(token), id(peer), view.kind, view.method, view.route, id(requirement))
        )
        if (
            entry is None
            or entry.token is not token  # ids are only trusted together with their objects
            or entry.peer is not peer
            or entry.requirement is not requirement
            or entry.policy is not self.policy
            or entry.authenticator is not authenticator
        ):
            return None
        if (
            requirement is not None
            # a matcher (or a check) of the application's own may answer otherwise now (a
            # caller taken off a list): asked again; the rest of a requirement is the same
            # function of the same principal and operation
            and (callable(requirement.callers) or type(requirement).check is not Requirement.check)
            and requirement.check(entry.auth.principal, operation_of(view)) is not None
        ):
            return None
        if peer is not None:
            if view.remote_addr != entry.remote_addr and authenticator.trusted_proxies is not None:
                # one peer object can serve several connections (gRPC's peer cache): from
                # another address the same certificate may be a proxy's, which only relays
                # (peer_is_proxy), so the pipeline decides
                return None
            authenticator.recheck_peer(peer)
        if self.check_revocation:
            store = self.store
            if type(store) is not MemoryStore:  # a store that needs I/O: the pipeline asks it
                return None
            if store.has_revocations:
                iat = token.claims.get("iat")  # validated: the pipeline checked this token
                if store.is_revoked(
                    jti=token.jti,
                    subject=token.subject,
                    issuer=token.issuer or "",
                    issued_at=float(iat) if iat is not None else None,
                ):
                    return None
        if not self.audit.enabled:
            return entry.outcome
        template = entry.events[0] if entry.events else None
        if template is None:  # the first audited repeat builds the event the others copy
            outcome = self._finish(view, entry.auth, entry.decision, None)
            if outcome.allowed and outcome.event is not None:
                entry.events.append(outcome.event)
            return outcome
        trace = trace_ids_for_audit(view.header("traceparent"), caller_authenticated=True)
        event = template._again(
            time=self.clock.now(),
            remote_addr=view.remote_addr,
            trace_id=trace.trace_id,
            span_id=trace.span_id,
            trace_trusted=trace.trusted,
        )
        return self._finish(view, entry.auth, entry.decision, None, event=event)

    def _remember(
        self,
        view: RequestView,
        requirement: Requirement | None,
        auth: AuthResult,
        decision: Decision | None,
    ) -> None:
        token, principal = auth.token, auth.principal
        if (
            not self._reusable
            or token is None
            or principal is None
            or decision is None
            or auth.notes
            or len(view.method) > _MAX_REMEMBERED_METHOD
            or self.policy.rate_limits_for(principal, operation_of(view))
        ):
            return
        peer = auth.peer
        key = (id(token), id(peer), view.kind, view.method, view.route, id(requirement))
        entry = _Repeat(
            token=token,
            peer=peer,
            requirement=requirement,
            policy=self.policy,
            authenticator=self.authenticator,
            auth=auth,
            decision=decision,
            outcome=self._outcome(view, auth, decision, None),
            remote_addr=view.remote_addr,
        )
        if len(self._repeats) >= self._memo_size:
            self._repeats.clear()
        self._repeats[key] = entry

    def refine(self, view: RequestView, outcome: Outcome, requirement: Requirement) -> Outcome:
        """Check a per-handler ``requirement`` against a request this Guard already decided
        (e.g. in middleware). Running the whole pipeline again would take a second rate-limit
        token and see its own DPoP proof as a replay; only the requirement is checked, and a
        refusal is audited like any other decision (noted ``handler_requirement``)."""
        if not outcome.allowed:
            return outcome
        notes = (*outcome.notes, REQUIREMENT_NOTE)
        auth = AuthResult(outcome.principal, Credentials(), notes=notes)
        try:
            refused = requirement.check(outcome.principal, operation_of(view))
        except ZeroTrustError as exc:  # a matcher that answered something else, say
            return self._finish(view, auth, None, exc)
        except Exception:  # fail closed, as the pipeline does, and audited
            _log.exception("zerotrust: unexpected error while checking a requirement; refused")
            return self._finish(view, auth, None, ZeroTrustError("internal error while deciding"))
        if refused is None:
            return outcome
        prior = outcome.decision
        decision = replace(refused, policy_id=prior.policy_id if prior is not None else None)
        return self._finish(view, auth, decision, _refusal(decision, outcome.principal))

    def _log_unavailable(self, error: SourceError, *, refused: bool = True) -> None:
        """One warning per kind of unavailability every few seconds (an outage refuses every
        request; the log needs its cause, not a line per request). ``refused=False``: the
        rate limits of a dry-run policy went uncounted, and the requests were served."""
        now = time.monotonic()
        logged = self._unavailable_logged
        kind = error.code if refused else f"uncounted:{error.code}"
        if now - logged.get(kind, -math.inf) < _UNAVAILABLE_LOG_INTERVAL:
            return
        logged[kind] = now
        _log.warning(
            "zerotrust: service %s: %s: %s: %s",
            self.service,
            "requests refused with 503" if refused else "dry-run rate limits not counted",
            error.code,
            error,
        )

    def audit_handshake(self, refusal: HandshakeRefusal) -> None:
        """Write the audit event of a TLS handshake refused over the peer's certificate: pass
        it as ``server_ssl_context(..., on_refusal=guard.audit_handshake)``. Such a refusal
        happens before any request exists, so the event has kind ``tls`` and method
        ``HANDSHAKE``, and names the client by address and certificate fingerprint, and by
        SPIFFE ID only when its chain was verified (an authorizer refused it): the ID of a
        chain that did not verify is a claim nobody proved, and the event's ``spiffe_id``
        names a caller. A failing sink changes nothing: the connection is refused."""
        if not self.audit.enabled:
            return
        proven = isinstance(refusal.error, PeerNotAuthorized)
        event = AuditEvent(
            time=self.clock.now(),
            service=self.service,
            decision="deny",
            reason=refusal.error.code,
            kind="tls",
            method="HANDSHAKE",
            remote_addr=refusal.remote_addr,
            spiffe_id=refusal.spiffe_id if proven else None,
            cert_fingerprint=refusal.cert_fingerprint,
            notes=(f"tls_{refusal.role}_refused",),
        )
        with contextlib.suppress(AuditError):
            self.audit.emit(event)

    def refuse(
        self, view: RequestView, error: ZeroTrustError, *, prior: Outcome | None = None
    ) -> Outcome:
        """An audited refusal of ``view`` for an ``error`` an adapter found before the pipeline
        could run (too many header lines, an undescribable route), answered like any other.
        ``prior``: the allow this Guard gave the same request, which the refusal overrides (a
        handler's requirement found not enforced): as for :meth:`refine`, its event names that
        caller and is noted ``handler_requirement``, after the allow's."""
        if prior is None or not prior.allowed:
            return self._finish(view, None, None, error)
        notes = (*prior.notes, REQUIREMENT_NOTE)
        return self._finish(
            view, AuthResult(prior.principal, Credentials(), notes=notes), None, error
        )

    def _finish(
        self,
        view: RequestView,
        auth: AuthResult | None,
        decision: Decision | None,
        error: ZeroTrustError | None,
        *,
        audit: bool = True,
        event: AuditEvent | None = None,
        checked: bool = True,
    ) -> Outcome:
        """The outcome, audited: every decision, whichever path made it, ends here (``event``:
        one already built for it; ``checked``: false when the caller's credentials may not have
        been checked to the end, as when the revocation or replay check failed)."""
        outcome = self._outcome(view, auth, decision, error)
        if not audit or not self.audit.enabled:  # nobody listens (e.g. audit logging disabled)
            return outcome
        if event is None:
            event = self._event(view, auth, outcome, checked)
        try:
            self.audit.emit(event)
        except AuditError as exc:  # audit is required and failed: refuse
            outcome = self._outcome(view, auth, decision, exc)
            # The sinks that did record the event hold a decision that was not enforced:
            # they also get the refusal that was, naming the event it replaces.
            refused = self._event(view, auth, outcome, checked)
            event = replace(  # the reason is the failed audit, whatever the policy said
                refused,
                reason=exc.code,
                notes=(*refused.notes, f"{SUPERSEDES_NOTE}{event.event_id}"),
            )
            with contextlib.suppress(AuditError):  # the failing sink fails again: known
                self.audit.emit(event)
        object.__setattr__(outcome, "event", event)  # set once, before the outcome is shared
        return outcome

    def _memo_key(
        self, principal: Principal | None, op: Operation, by_token: bool
    ) -> tuple[int, str, str | None, str] | None:
        """Where the decision for ``principal`` on ``op`` is remembered, if it is: decisions
        depend on nothing else without CUSTOM hooks, and principals of cached tokens and of
        TLS connections are reused objects."""
        if (
            not self._memo_decisions
            or principal is None
            or (by_token and not self._token_principals_repeat)
        ):  # a principal that will not be seen again: remembering it would only churn memory
            return None
        if len(op.method) > _MAX_REMEMBERED_METHOD:  # the caller's string: not kept
            return None
        return (id(principal), op.method, op.route, op.kind)

    def _check_revoked_locally(self, token: VerifiedToken | None) -> None:
        """Revocation against the in-process store (no I/O: no need to go through a driver)."""
        if token is None or not self.check_revocation:
            return
        raw_iat = token.claims.get("iat")  # a number: the claims were validated
        if self.store.is_revoked(
            jti=token.jti,
            subject=token.subject,
            issuer=token.issuer or "",
            issued_at=float(raw_iat) if raw_iat is not None else None,
        ):
            self._revoked(token)

    def _revoked(self, token: VerifiedToken) -> NoReturn:
        if token.jti is not None and self.authenticator.tokens is not None:
            self.authenticator.tokens.evict(token.jti)
        raise TokenRevoked("token has been revoked")

    def _stateful_checks(self, auth: AuthResult, dry: bool) -> Generator[Any, Any, None]:
        token, store = auth.token, self.store
        if token is not None and self.check_revocation:
            jti, sub, iss = token.jti, token.subject, token.issuer or ""
            raw_iat = token.claims.get("iat")  # a number: the claims were validated
            iat = float(raw_iat) if raw_iat is not None else None
            if self._local_store:
                revoked = store.is_revoked(jti=jti, subject=sub, issuer=iss, issued_at=iat)
            else:

                def check() -> bool:
                    return store.is_revoked(jti=jti, subject=sub, issuer=iss, issued_at=iat)

                async def acheck() -> bool:
                    return await store.is_revoked_async(
                        jti=jti, subject=sub, issuer=iss, issued_at=iat
                    )

                revoked = yield Call(check, acheck)
            if revoked:
                self._revoked(token)
        proof = auth.dpop_proof
        if proof is not None and not dry:
            dpop = self.authenticator.dpop
            assert dpop is not None
            # a proof is accepted until iat + max_age + leeway on each replica's own clock:
            # its entry outlives that by a margin (two leeways, at least 10 s), so replicas
            # whose clocks differ by less cannot take the same proof once the entry lapses
            key, until = proof.replay_key(), proof.iat + dpop_replay_window(dpop)
            first = yield Call(
                lambda: store.check_and_store(key, expires_at=until),
                lambda: store.check_and_store_async(key, expires_at=until),
            )
            if not first:
                raise DPoPProofReplayed("DPoP proof was already used")

    def _rate_limits(
        self, principal: Principal, op: Operation, decision: Decision
    ) -> Generator[Any, Any, tuple[Decision, int | None]]:
        store = self.store
        for limit in self.policy.rate_limits_for(principal, op):
            key = limit.key(principal)
            try:
                result = yield Call(
                    lambda k=key, lim=limit: store.acquire(k, rate=lim.rate, burst=lim.burst),  # type: ignore[misc]
                    lambda k=key, lim=limit: store.acquire_async(k, rate=lim.rate, burst=lim.burst),  # type: ignore[misc]
                )
            except SourceError as exc:
                if not self.policy.dry_run:
                    raise
                # a dry-run policy refuses nothing: a store that cannot count its requests
                # now is no reason to refuse them (503); they are served, uncounted
                self._log_unavailable(exc, refused=False)
                return decision, None
            if not result.allowed:
                if self.policy.dry_run:  # recorded, not enforced: the buckets still count
                    if decision.would_allow is False:  # a rule would already refuse it
                        return decision, None
                    would = replace(
                        decision,
                        dry_run=True,
                        would_allow=False,
                        would_rule_id=limit.id,
                        would_reason="rate_limited",
                    )
                    return would, None
                limited = replace(decision, allowed=False, reason="rate_limited", rule_id=limit.id)
                return limited, max(1, math.ceil(result.retry_after))
        return decision, None

    # --- translation --------------------------------------------------------------------------

    def _outcome(
        self,
        view: RequestView,
        auth: AuthResult | None,
        decision: Decision | None,
        error: ZeroTrustError | None,
    ) -> Outcome:
        principal, notes = (auth.principal, auth.notes) if auth is not None else (None, ())
        if error is None:
            proof = auth.dpop_proof if auth is not None else None
            headers = self._next_nonce(proof.nonce) if proof is not None and proof.nonce else ()
            return Outcome(True, principal, decision, None, 200, "OK", headers, notes=notes)
        status = error.http_status
        headers = self._challenge(view, error, status)
        return Outcome(
            False, principal, decision, error, status, error.grpc_status, headers, notes=notes
        )

    def _next_nonce(self, presented: str) -> tuple[tuple[str, str], ...]:
        """RFC 9449 8.2: an allowed request whose proof carried the nonce of an earlier window
        (still accepted) is answered with the current one, so the client's next proofs never
        go stale."""
        dpop = self.authenticator.dpop
        nonces = dpop.nonces if dpop is not None else None
        if nonces is None:
            return ()
        try:
            renewed = nonces.renewal(presented, self.authenticator.clock.now().timestamp())
        except ConfigurationError:  # pragma: no cover - renewal names a window issue can
            return ()
        return () if renewed is None else (("DPoP-Nonce", renewed),)

    def _challenge(
        self, view: RequestView, error: ZeroTrustError, status: int
    ) -> tuple[tuple[str, str], ...]:
        if isinstance(error, RateLimited):
            return (("Retry-After", str(error.retry_after)),)
        presented = _header_read_safely(view, "authorization")
        dpop = self.authenticator.dpop
        if (
            dpop is not None
            and (
                isinstance(error, InvalidDPoPProof)
                # the scheme as the credentials were read: after optional whitespace (SP, HTAB)
                or (presented and presented[0].lstrip(" \t")[:5].lower() == "dpop ")
            )
        ):
            # RFC 9449 7.1: the DPoP scheme, with the proof algorithms this service accepts
            realm = f'DPoP realm="{self.service}", algs="{" ".join(dpop.algorithms)}"'
        else:  # a service without DPoP names no scheme it does not accept (RFC 9110 11.6.1)
            realm = f'Bearer realm="{self.service}"'
        if status == 400:
            return (("WWW-Authenticate", f'{realm}, error="invalid_request"'),)
        if isinstance(error, UseDPoPNonce):
            # RFC 9449 9: the nonce to sign the next proof with comes with the challenge, by
            # the clock that judges it (the Authenticator's); none for a clock no nonce can
            # name, and the challenge says what the body says
            challenge = ("WWW-Authenticate", f'{realm}, error="use_dpop_nonce"')
            nonces = dpop.nonces if dpop is not None else None
            if nonces is not None:
                with contextlib.suppress(ConfigurationError):
                    nonce = nonces.issue(self.authenticator.clock.now().timestamp())
                    return (challenge, ("DPoP-Nonce", nonce))
            return (challenge,)
        if isinstance(error, InvalidDPoPProof):
            return (("WWW-Authenticate", f'{realm}, error="invalid_dpop_proof"'),)
        if isinstance(error, TokenError):
            return (("WWW-Authenticate", f'{realm}, error="invalid_token"'),)
        if isinstance(error, AuthenticationError):
            return (("WWW-Authenticate", realm),)
        if isinstance(error, InsufficientScope):
            scope = " ".join(error.required)
            if not presented:
                # RFC 6750 3.1: insufficient_scope speaks of the access token, and a caller
                # that sent none (a certificate, an API key) gets no error code: the scopes only
                return (("WWW-Authenticate", f'{realm}, scope="{scope}"'),)
            return (("WWW-Authenticate", f'{realm}, error="insufficient_scope", scope="{scope}"'),)
        return ()

    def _event(
        self, view: RequestView, auth: AuthResult | None, outcome: Outcome, checked: bool = True
    ) -> AuditEvent:
        principal = outcome.principal
        decision = outcome.decision
        error = outcome.error
        reason = decision.reason if decision is not None else "allowed"
        if error is not None and (decision is None or decision.allowed):
            reason = error.code
        trace = trace_ids_for_audit(  # a caller refused as unauthenticated is not trusted,
            _header_read_safely(view, "traceparent"),  # nor one whose credentials' revocation
            caller_authenticated=checked  # or replay could not be checked (a store outage)
            and principal is not None
            and not isinstance(error, AuthenticationError),
        )
        dry_run = bool(
            decision is not None and decision.dry_run and decision.would_allow is not None
        )
        would = would_rule_id = would_reason = None
        if dry_run and decision is not None and decision.would_allow is not None:
            would = "allow" if decision.would_allow else "deny"
            if (would == "allow") == outcome.allowed:
                dry_run, would = False, None
            else:
                would_rule_id, would_reason = decision.would_rule_id, decision.would_reason
        return AuditEvent(
            time=self.clock.now(),
            service=self.service,
            decision="allow" if outcome.allowed else "deny",
            dry_run=dry_run,
            would_decide=would,  # type: ignore[arg-type]
            would_rule_id=would_rule_id,
            would_reason=would_reason,
            reason=reason,
            rule_id=decision.rule_id if decision is not None else None,
            policy_id=decision.policy_id if decision is not None else None,
            # a websocket refused before it was accepted is answered 403 by every ASGI server,
            # whatever the refusal (the ASGI spec: a close before the accept), and the event
            # records the status sent; the reason keeps what the refusal was
            status=_WEBSOCKET_REFUSED
            if view.kind == "websocket" and not outcome.allowed
            else outcome.status,
            # an HTTP or websocket refusal sends no gRPC status: the event records none
            grpc_status=outcome.grpc_status if view.kind == "grpc" else None,
            kind=view.kind,
            # an RPC's method is its full name (policies see POST, the audit trail the RPC)
            method=(view.route or view.path) if view.kind == "grpc" else _shown_method(view.method),
            route=view.route,
            remote_addr=view.remote_addr,
            spiffe_id=str(principal.spiffe_id) if principal and principal.spiffe_id else None,
            subject=principal.subject if principal else None,
            issuer=principal.issuer if principal else None,
            proven_by=principal.proven_by if principal else None,
            client_id=principal.client_id if principal else None,
            actor=principal.actor if principal else None,
            cert_fingerprint=principal.cert_fingerprint if principal else None,
            token_jti=principal.token_jti if principal else None,
            trace_id=trace.trace_id,
            span_id=trace.span_id,
            trace_trusted=trace.trusted,
            notes=auth.notes if auth is not None else (),
        )


def _header_read_safely(view: RequestView, name: str) -> list[str]:
    """``view.header(name)`` for an outcome's challenge and audit event, ``[]`` if it fails:
    reading the request may be what failed while deciding (an error logged there), and the
    refusal must still be answered and audited."""
    try:
        return view.header(name)
    except Exception:
        return []


#: The HTTP status a client gets for a websocket refused before it was accepted.
_WEBSOCKET_REFUSED: Final = 403

_MAX_REPEATS = 8192
# The methods a request may have are the caller's choice (h11 takes one as long as the request
# head, 16 KiB); those longer than any real method are never kept in the decision memo or the
# repeat table, whose entries would otherwise each hold one.
_MAX_REMEMBERED_METHOD = 64


def _shown_method(method: str) -> str:
    """An HTTP method for the audit event: the caller wrote it, and no real one is longer
    than :data:`_MAX_REMEMBERED_METHOD` characters; a longer one is cut before the event's
    checks read it."""
    if len(method) <= _MAX_REMEMBERED_METHOD:
        return method
    return method[:_MAX_REMEMBERED_METHOD] + TRUNCATION_MARKER


@dataclass(frozen=True, slots=True)
class _Repeat:
    """An allow the pipeline gave, and everything it depended on (see ``Guard._repeat``)."""

    token: VerifiedToken
    peer: VerifiedPeer | None
    requirement: Requirement | None
    policy: Policy
    authenticator: Authenticator
    auth: AuthResult
    decision: Decision
    outcome: Outcome
    #: The address the allow was given to (the trusted-proxy rule depends on it).
    remote_addr: str | None
    #: The audit event of the first audited repeat, which later repeats copy.
    events: list[AuditEvent] = field(default_factory=list)


def _refusal(decision: Decision, principal: Principal | None) -> ZeroTrustError | None:
    if decision.allowed:
        return None
    if principal is None:
        return MissingCredentials("authentication required")
    if decision.reason == "insufficient_scope":
        return InsufficientScope(
            "missing scopes", required=decision.required_scopes, decision=decision
        )
    return AccessDenied(f"{decision.reason} ({decision.rule_id or 'no rule'})", decision=decision)
