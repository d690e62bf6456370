"""Guard steps that several adapters share, with no framework imports.

* :func:`refine` checks a per-handler requirement against a request the Guard has already
  decided (by middleware). Running the Guard a second time would take a second rate-limit
  token and see its own DPoP proof as a replay; only the requirement is checked, and a refusal
  is audited like any other decision.
* :func:`refuse` turns an error found before the Guard could run (too many header lines) into
  an audited :class:`~zerotrust.Outcome`, with the same status and challenge the Guard gives.
* :func:`presents_credentials` tells whether a request carries anything to authenticate, for
  optional authentication.

Challenges and audit events are built by the Guard's own helpers, so every path answers and
records identically.
"""

from __future__ import annotations

from dataclasses import replace

from zerotrust.authn._trusted import FORWARDED_CERT_HEADERS
from zerotrust.authn.authenticate import Authenticator, AuthResult
from zerotrust.authn.credentials import Credentials
from zerotrust.authn.request import RequestView
from zerotrust.authz.decision import Decision
from zerotrust.authz.policy import Requirement, operation_of
from zerotrust.errors import AuditError, ZeroTrustError
from zerotrust.pipeline import Guard, Outcome, _refusal

__all__ = ["REQUIREMENT_NOTE", "presents_credentials", "refine", "refuse"]

#: Audit note on events recorded for a per-handler requirement checked after the middleware.
REQUIREMENT_NOTE = "handler_requirement"


def _record(
    guard: Guard,
    view: RequestView,
    auth: AuthResult | None,
    decision: Decision | None,
    error: ZeroTrustError,
) -> Outcome:
    outcome = guard._outcome(view, auth, decision, error)
    event = guard._event(view, auth, outcome)
    try:
        guard.audit.emit(event)
    except AuditError as exc:  # audit is required and failed: 503, as in the Guard
        return replace(guard._outcome(view, auth, decision, exc), event=event)
    return replace(outcome, event=event)


def refine(guard: Guard, view: RequestView, outcome: Outcome, requirement: Requirement) -> Outcome:
    """``outcome`` when ``requirement`` holds for its principal, else an audited refusal."""
    if not outcome.allowed:
        return outcome
    refused = requirement.check(outcome.principal, operation_of(view))
    if refused is None:
        return outcome
    prior = outcome.decision
    decision = replace(refused, policy_id=prior.policy_id if prior is not None else None)
    error = _refusal(decision, outcome.principal)
    assert error is not None  # a refused decision always has an error
    notes = outcome.event.notes if outcome.event is not None else ()
    auth = AuthResult(outcome.principal, Credentials(), notes=(*notes, REQUIREMENT_NOTE))
    return _record(guard, view, auth, decision, error)


def refuse(guard: Guard, view: RequestView, error: ZeroTrustError) -> Outcome:
    """An audited refusal of ``view`` for ``error``, found before authentication ran."""
    return _record(guard, view, None, None, error)


def presents_credentials(view: RequestView, authenticator: Authenticator) -> bool:
    """Whether ``view`` carries a token, a client certificate, an API key or a forwarded
    certificate (nothing here is verified)."""
    if view.verified_peer is not None or view.header("authorization") or view.header("dpop"):
        return True
    keys = authenticator.api_keys
    if keys is not None and view.header(keys.header):
        return True
    if any(view.header(name) for name in FORWARDED_CERT_HEADERS):
        return True
    try:
        return bool(view.peer_chain)
    except ZeroTrustError:  # present but malformed: let authentication say so
        return True
