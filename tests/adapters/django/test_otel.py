"""With OpenTelemetry's Django instrumentation active, each decision lands on the server span and
the audit event carries that span's trace id."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import AsyncClient, Client
from opentelemetry.instrumentation.django import DjangoInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.adapters.django.conftest import STRANGER, WEB
from zerotrust import OTelSink


@pytest.fixture(scope="session")
def exporter() -> Iterator[InMemorySpanExporter]:
    """Django's instrumentation is process-global: installed once, removed at the end."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = DjangoInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        yield exporter
    finally:
        instrumentor.uninstrument()
        provider.shutdown()


@pytest.fixture
def spans(exporter: InMemorySpanExporter) -> InMemorySpanExporter:
    exporter.clear()
    return exporter


def server_span(exporter: InMemorySpanExporter) -> Any:
    [span] = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    return span


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_decision_lands_on_the_server_span(
    install: Any, spans: InMemorySpanExporter, kind: str
) -> None:
    zt = install(audit=[OTelSink()])
    headers = zt.auth()
    if kind == "sync":
        response = Client().get("/orders/7/", headers=headers)
    else:
        response = asyncio.run(AsyncClient().get("/orders/7/", headers=headers))
    assert response.status_code == 200
    span = server_span(spans)
    attributes = span.attributes
    assert attributes["zerotrust.decision"] == "allow"
    assert attributes["zerotrust.route"] == "/orders/{order_id}"
    assert attributes["zerotrust.spiffe_id"] == WEB
    assert attributes["zerotrust.status"] == 200
    event = zt.sink.last
    assert event.trace_id == format(span.context.trace_id, "032x")
    assert event.span_id == format(span.context.span_id, "016x")
    assert event.trace_trusted
    assert [e.name for e in span.events] == ["zerotrust.decision"]


def test_refusal_on_the_server_span(install: Any, spans: InMemorySpanExporter) -> None:
    zt = install(audit=[OTelSink()])
    response = Client().get("/orders/7/", headers=zt.auth(subject=STRANGER))
    assert response.status_code == 403
    span = server_span(spans)
    assert span.attributes["zerotrust.decision"] == "deny"
    assert span.attributes["zerotrust.reason"] == "no_allow_rule_matched"
    assert span.attributes["zerotrust.status"] == 403
    assert zt.sink.last.trace_id == format(span.context.trace_id, "032x")
