"""Authorization: Istio-style policies evaluated in process, per-handler requirements."""

from zerotrust.authz.decision import Decision
from zerotrust.authz.loader import load_policy, policy_from_dict
from zerotrust.authz.policy import HookCall, Policy, RateLimit, Requirement, operation_of, require
from zerotrust.authz.rules import Callers, Condition, Operation, Operations, Rule, ScopeRule

__all__ = [
    "Callers",
    "Condition",
    "Decision",
    "HookCall",
    "Operation",
    "Operations",
    "Policy",
    "RateLimit",
    "Requirement",
    "Rule",
    "ScopeRule",
    "load_policy",
    "operation_of",
    "policy_from_dict",
    "require",
]
