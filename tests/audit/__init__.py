"""Tests for zerotrust.audit; ``make_event`` builds a complete, valid event to vary."""

from __future__ import annotations

import datetime as dt
from typing import Any

from zerotrust.audit import AuditEvent

WHEN = dt.datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=dt.timezone.utc)


def make_event(**overrides: Any) -> AuditEvent:
    fields: dict[str, Any] = {
        "time": WHEN,
        "service": "orders",
        "decision": "allow",
        "reason": "allowed",
        "rule_id": "callers-in-prod",
        "policy_id": "orders-policy",
        "status": 200,
        "kind": "http",
        "method": "GET",
        "route": "/orders/{id}",
        "remote_addr": "10.1.2.3",
        "spiffe_id": "spiffe://example.org/ns/prod/sa/billing",
        "subject": "user-42",
        "issuer": "https://issuer.example.org",
        "proven_by": "mtls+bound-jwt",
        "client_id": "billing",
        "actor": "spiffe://example.org/ns/prod/sa/gateway",
        "cert_fingerprint": "ab" * 32,
        "token_jti": "jti-7",
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "span_id": "00f067aa0ba902b7",
        "trace_trusted": True,
        "notes": ("forwarded_cert_ignored_untrusted_peer",),
        "event_id": "0123456789abcdef0123456789abcdef",
    }
    fields.update(overrides)
    return AuditEvent(**fields)
