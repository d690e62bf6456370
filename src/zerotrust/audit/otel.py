"""OpenTelemetry for audit events: span attributes, a span event and a decision counter.

Only ``opentelemetry-api`` is used. Without a configured SDK every call is a cheap no-op;
with one, decisions show up on the request's span and in the ``zerotrust.decisions``
counter.
"""

from __future__ import annotations

import time
from typing import Final, final

from opentelemetry import metrics, trace
from opentelemetry.util.types import AttributeValue

from zerotrust._version import __version__
from zerotrust.audit.event import AuditEvent
from zerotrust.errors import ConfigurationError

_current_span = trace.get_current_span

__all__ = ["DECISIONS_METRIC", "SPAN_EVENT_NAME", "OTelSink"]

#: Name of the counter incremented once per decision.
DECISIONS_METRIC: Final = "zerotrust.decisions"
#: Name of the span event added for each decision.
SPAN_EVENT_NAME: Final = "zerotrust.decision"

_PREFIX = "zerotrust."
# Every field but time (the span has its own) and trace_id/span_id (the span's own ids).
_SPAN_FIELDS = (
    "service",
    "decision",
    "dry_run",
    "would_decide",
    "would_rule_id",
    "would_reason",
    "reason",
    "rule_id",
    "policy_id",
    "status",
    "grpc_status",
    "kind",
    "method",
    "route",
    "spiffe_id",
    "issuer",
    "proven_by",
    "client_id",
    "cert_fingerprint",
    "token_jti",
    "trace_trusted",
    "notes",
    "event_id",
)
_PERSONAL_FIELDS = ("subject", "actor", "remote_addr")


@final
class OTelSink:
    """Records each decision on the current span and in the ``zerotrust.decisions`` counter.

    When the current span is recording, its attributes gain ``zerotrust.<field>`` for
    each field that is set (``zerotrust.decision``, ``zerotrust.reason``,
    ``zerotrust.rule_id``, ``zerotrust.spiffe_id``, ``zerotrust.proven_by``,
    ``zerotrust.dry_run``, ...) and a ``zerotrust.decision`` span event carries the same
    attributes. Without a recording span nothing is added. ``subject``, ``actor`` and
    ``remote_addr`` are personal data and only recorded with
    ``include_personal_data=True``; ``zerotrust.event_id`` joins the span to the full
    audit record either way.

    The counter's attributes are only ``zerotrust.decision``, ``zerotrust.reason``,
    ``zerotrust.rule_id``, ``zerotrust.dry_run`` and ``zerotrust.kind``: each metric
    attribute combination is a separate time series kept in memory by the SDK and the
    backend, so only values bounded by code and configuration qualify. Subjects, SPIFFE
    IDs, routes and claim values are unbounded (and partly caller-controlled).

    ``meter_provider`` defaults to the global one, resolved lazily by the API.
    """

    __slots__ = (
        "_checked_at",
        "_counter",
        "_explicit_meter",
        "_metrics",
        "_personal",
        "_span_fields",
    )

    def __init__(
        self,
        *,
        meter_provider: metrics.MeterProvider | None = None,
        include_personal_data: bool = False,
    ) -> None:
        if not isinstance(include_personal_data, bool):  # "false" must never read as true
            raise ConfigurationError("include_personal_data must be True or False")
        self._personal = include_personal_data
        names = _SPAN_FIELDS + _PERSONAL_FIELDS if include_personal_data else _SPAN_FIELDS
        self._span_fields = tuple((name, _PREFIX + name) for name in names)
        self._explicit_meter = meter_provider is not None
        self._metrics = meter_provider is not None
        self._checked_at = -1.0
        meter = metrics.get_meter("zerotrust", __version__, meter_provider)
        self._counter = meter.create_counter(
            DECISIONS_METRIC,
            unit="{decision}",
            description="Access decisions made by zerotrust, by verdict and reason.",
        )

    @property
    def enabled(self) -> bool:
        """Whether an event would be recorded now: the current span is recording, or a real
        meter provider is configured (the API's default provider counts nothing)."""
        return self._listening()

    def _listening(self) -> bool:
        """:attr:`enabled` as a method (what an audit pipeline asks on every decision). Never
        raises: a span that fails to answer counts as recording (auditing is never silenced)."""
        if self._metrics:
            return True  # a real provider never goes away
        try:
            if _current_span().is_recording():
                return True
        except Exception:
            return True
        now = time.monotonic()
        if now - self._checked_at >= 1.0:  # the API reads the environment on every lookup
            self._checked_at = now
            provider = metrics.get_meter_provider()
            self._metrics = type(provider).__name__ not in (
                "_ProxyMeterProvider",
                "NoOpMeterProvider",
            )
        return self._metrics

    def emit(self, event: AuditEvent, /) -> None:
        """Annotate the current span (if it is recording) and count the decision."""
        span = trace.get_current_span()
        if span.is_recording():
            attributes = self._span_attributes(event)
            span.set_attributes(attributes)
            span.add_event(SPAN_EVENT_NAME, attributes)
        self._counter.add(1, _metric_attributes(event))

    def _span_attributes(self, event: AuditEvent) -> dict[str, AttributeValue]:
        attributes: dict[str, AttributeValue] = {}
        for name, key in self._span_fields:
            value = getattr(event, name)
            if value is not None and value != ():
                attributes[key] = value
        return attributes

    def __repr__(self) -> str:
        return "OTelSink(include_personal_data=True)" if self._personal else "OTelSink()"


def _metric_attributes(event: AuditEvent) -> dict[str, AttributeValue]:
    # Values bounded by code and configuration, never by what callers send.
    attributes: dict[str, AttributeValue] = {
        "zerotrust.decision": event.decision,
        "zerotrust.reason": event.reason,
        "zerotrust.dry_run": event.dry_run,
        "zerotrust.kind": event.kind,
    }
    if event.rule_id is not None:
        attributes["zerotrust.rule_id"] = event.rule_id
    return attributes
