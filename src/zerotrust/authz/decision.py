"""The outcome of authorization: allowed or not, by which rule, and why."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Decision", "Reason"]

#: Stable reason codes carried by decisions (and audit events).
Reason = Literal[
    "allowed_by_rule",
    "allowed_by_default",
    "denied_by_rule",
    "denied_by_custom",
    "custom_error",
    "no_allow_rule_matched",
    "no_rules",
    "insufficient_scope",
    "requirement_not_met",
    "rate_limited",
    "dry_run",
]


@dataclass(frozen=True, slots=True)
class Decision:
    """An authorization decision.

    ``allowed`` is the verdict that is enforced. When dry-run rules or policies took part and
    would have decided differently, ``dry_run`` is true and ``would_allow`` / ``would_rule_id``
    / ``would_reason`` tell what enforcing them would have done: the request is served (or
    refused) as ``allowed`` says, and the audit trail records the difference.
    """

    allowed: bool
    reason: str
    rule_id: str | None = None
    policy_id: str | None = None
    detail: str = ""
    required_scopes: tuple[str, ...] = ()
    dry_run: bool = False
    would_allow: bool | None = None
    would_rule_id: str | None = None
    would_reason: str | None = None

    def __bool__(self) -> bool:
        return self.allowed

    @property
    def verdict(self) -> Literal["allow", "deny"]:
        """``"allow"`` or ``"deny"``, as :attr:`allowed` says (the form of an audit event's
        ``decision``)."""
        return "allow" if self.allowed else "deny"
