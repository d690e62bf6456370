"""Audit: one :class:`AuditEvent` per access decision, sent to sinks under a failure policy.

Sinks write JSON lines through :mod:`logging` (:class:`LoggingSink`), annotate the current
OpenTelemetry span and count decisions (:class:`OTelSink`), keep events in memory for tests
(:class:`MemorySink`) or hand them to any callable (:class:`CallableSink`).
:class:`AuditPipeline` decides what a failing sink means: keep serving, or refuse.
"""

from zerotrust.audit.event import AuditEvent, Verdict
from zerotrust.audit.otel import OTelSink
from zerotrust.audit.pseudonym import Pseudonymizer
from zerotrust.audit.sinks import (
    AuditPipeline,
    AuditSink,
    CallableSink,
    LoggingSink,
    MemorySink,
    MultiSink,
)
from zerotrust.audit.trace import (
    TraceIds,
    TraceParent,
    current_trace_ids,
    parse_traceparent,
    trace_ids_for_audit,
)

__all__ = [
    "AuditEvent",
    "AuditPipeline",
    "AuditSink",
    "CallableSink",
    "LoggingSink",
    "MemorySink",
    "MultiSink",
    "OTelSink",
    "Pseudonymizer",
    "TraceIds",
    "TraceParent",
    "Verdict",
    "current_trace_ids",
    "parse_traceparent",
    "trace_ids_for_audit",
]
