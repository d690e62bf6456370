"""OTelSink against the OpenTelemetry SDK, with local providers only (no global state)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from tests.audit import make_event
from zerotrust.audit import OTelSink
from zerotrust.audit.otel import DECISIONS_METRIC, SPAN_EVENT_NAME

METRIC_KEYS = {
    "zerotrust.decision",
    "zerotrust.reason",
    "zerotrust.rule_id",
    "zerotrust.dry_run",
    "zerotrust.kind",
}


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer_provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    provider.shutdown()


@pytest.fixture
def tracer(tracer_provider: TracerProvider) -> trace.Tracer:
    return tracer_provider.get_tracer("tests.audit")


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def sink(reader: InMemoryMetricReader) -> Iterator[OTelSink]:
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    yield OTelSink(meter_provider=provider)
    provider.shutdown()


def one_span(exporter: InMemorySpanExporter) -> ReadableSpan:
    [span] = exporter.get_finished_spans()
    return span


def counts(reader: InMemoryMetricReader) -> dict[frozenset[tuple[str, Any]], int]:
    """The decision counter's points, keyed by their attribute sets."""
    data = reader.get_metrics_data()
    found: dict[frozenset[tuple[str, Any]], int] = {}
    if data is None:
        return found
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            assert scope_metrics.scope.name == "zerotrust"
            for metric in scope_metrics.metrics:
                assert metric.name == DECISIONS_METRIC
                assert metric.unit == "{decision}"
                for point in metric.data.data_points:
                    assert isinstance(point, NumberDataPoint)
                    assert isinstance(point.value, int)
                    found[frozenset(dict(point.attributes or {}).items())] = point.value
    return found


def test_decision_lands_on_the_active_span(
    sink: OTelSink, tracer: trace.Tracer, exporter: InMemorySpanExporter
) -> None:
    event = make_event(decision="deny", dry_run=True, would_decide="allow", reason="denied")
    with tracer.start_as_current_span("request"):
        sink.emit(event)
    span = one_span(exporter)
    attributes = dict(span.attributes or {})
    assert attributes["zerotrust.decision"] == "deny"
    assert attributes["zerotrust.reason"] == "denied"
    assert attributes["zerotrust.rule_id"] == "callers-in-prod"
    assert attributes["zerotrust.spiffe_id"] == "spiffe://example.org/ns/prod/sa/billing"
    assert attributes["zerotrust.proven_by"] == "mtls+bound-jwt"
    assert attributes["zerotrust.dry_run"] is True
    assert attributes["zerotrust.would_decide"] == "allow"
    assert attributes["zerotrust.status"] == 200
    assert attributes["zerotrust.event_id"] == event.event_id
    assert attributes["zerotrust.notes"] == ("forwarded_cert_ignored_untrusted_peer",)
    # Personal data, absent values and the span's own ids/time are not copied.
    for absent in ("subject", "actor", "remote_addr", "grpc_status", "time", "trace_id", "span_id"):
        assert f"zerotrust.{absent}" not in attributes
    [span_event] = span.events
    assert span_event.name == SPAN_EVENT_NAME
    assert dict(span_event.attributes or {}) == attributes


def test_personal_data_only_on_request(
    reader: InMemoryMetricReader, tracer: trace.Tracer, exporter: InMemorySpanExporter
) -> None:
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    sink = OTelSink(meter_provider=provider, include_personal_data=True)
    with tracer.start_as_current_span("request"):
        sink.emit(make_event())
    attributes = dict(one_span(exporter).attributes or {})
    assert attributes["zerotrust.subject"] == "user-42"
    assert attributes["zerotrust.actor"] == "spiffe://example.org/ns/prod/sa/gateway"
    assert attributes["zerotrust.remote_addr"] == "10.1.2.3"
    provider.shutdown()


def test_empty_notes_are_not_recorded(
    sink: OTelSink, tracer: trace.Tracer, exporter: InMemorySpanExporter
) -> None:
    with tracer.start_as_current_span("request"):
        sink.emit(make_event(notes=()))
    assert "zerotrust.notes" not in (one_span(exporter).attributes or {})


def test_without_a_span_nothing_is_recorded_and_nothing_fails(
    sink: OTelSink, exporter: InMemorySpanExporter, reader: InMemoryMetricReader
) -> None:
    assert not trace.get_current_span().is_recording()
    sink.emit(make_event())
    assert exporter.get_finished_spans() == ()
    assert sum(counts(reader).values()) == 1  # the decision is still counted


def test_a_non_recording_span_is_left_alone(sink: OTelSink, exporter: InMemorySpanExporter) -> None:
    provider = TracerProvider(sampler=ALWAYS_OFF, shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("tests.audit").start_as_current_span("request") as span:
        assert not span.is_recording()
        sink.emit(make_event())
    assert exporter.get_finished_spans() == ()
    provider.shutdown()


def test_counter_uses_only_bounded_attributes(sink: OTelSink, reader: InMemoryMetricReader) -> None:
    sink.emit(make_event())
    sink.emit(make_event(subject="someone-else", spiffe_id="spiffe://example.org/other"))
    sink.emit(make_event(decision="deny", reason="no_rule_matched", rule_id=None, kind="grpc"))
    found = counts(reader)
    allowed = frozenset(
        {
            ("zerotrust.decision", "allow"),
            ("zerotrust.reason", "allowed"),
            ("zerotrust.rule_id", "callers-in-prod"),
            ("zerotrust.dry_run", False),
            ("zerotrust.kind", "http"),
        }
    )
    denied = frozenset(
        {
            ("zerotrust.decision", "deny"),
            ("zerotrust.reason", "no_rule_matched"),
            ("zerotrust.dry_run", False),
            ("zerotrust.kind", "grpc"),
        }
    )
    assert found == {allowed: 2, denied: 1}
    for attributes in found:
        assert {key for key, _ in attributes} <= METRIC_KEYS


def test_default_meter_provider_is_the_global_one() -> None:
    OTelSink().emit(make_event())  # the API proxy: a no-op until an SDK is installed
    assert repr(OTelSink()) == "OTelSink()"
    assert repr(OTelSink(include_personal_data=True)) == "OTelSink(include_personal_data=True)"


def test_enabled_only_when_something_records() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider

    from zerotrust.audit import OTelSink

    idle = OTelSink()
    tracer = TracerProvider().get_tracer("t")
    if type(__import__("opentelemetry").metrics.get_meter_provider()).__name__ in (
        "_ProxyMeterProvider",
        "NoOpMeterProvider",
    ):
        assert not idle.enabled  # no span, no metrics backend: nothing to record
    with tracer.start_as_current_span("request"):
        assert idle.enabled
    metered = OTelSink(meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]))
    assert metered.enabled


def test_a_span_that_fails_to_answer_never_silences_the_audit() -> None:
    from zerotrust.audit import AuditPipeline, LoggingSink

    class Broken(trace.NonRecordingSpan):
        def is_recording(self) -> bool:
            raise RuntimeError("broken span")

    pipeline = AuditPipeline([LoggingSink(), OTelSink()])
    broken = Broken(trace.INVALID_SPAN_CONTEXT)
    with trace.use_span(broken, end_on_exit=False):
        assert OTelSink().enabled  # the property and the pipeline's flag agree
        assert pipeline.enabled
