"""With OpenTelemetry's FastAPI instrumentation active, each decision lands on the server span
and the audit event carries that span's trace id."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import Depends, FastAPI
from opentelemetry import baggage, propagate
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from tests.adapters.asgi._support import (
    ADMIN,
    AUD,
    ISS,
    WEB,
    audited_guard,
    bearer,
    client,
    make_app,
    make_policy,
)
from zerotrust import (
    Authenticator,
    Guard,
    MemorySink,
    TokenIssuer,
    TokenVerifier,
    match,
)
from zerotrust.audit import CallableSink, OTelSink
from zerotrust.audit.otel import SPAN_EVENT_NAME
from zerotrust.fastapi import ZeroTrust
from zerotrust.tokens import PrivateJWK


@pytest.fixture
def traced() -> Iterator[tuple[Any, InMemorySpanExporter, MemorySink, TokenIssuer]]:
    issuer, guard, memory = audited_guard()
    app = make_app(ZeroTrust(guard))
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
    try:
        with client(app) as http:
            yield http, exporter, memory, issuer
    finally:
        FastAPIInstrumentor.uninstrument_app(app)
        provider.shutdown()


def server_span(exporter: InMemorySpanExporter) -> Any:
    [span] = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    return span


def test_allowed_decision_on_the_server_span(traced: Any) -> None:
    http, exporter, memory, issuer = traced
    token = issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"])
    assert http.get("/orders/7", headers=bearer(token)).status_code == 200
    span = server_span(exporter)
    attributes = span.attributes
    assert attributes["zerotrust.decision"] == "allow"
    assert attributes["zerotrust.route"] == "/orders/{order_id}"
    assert attributes["zerotrust.spiffe_id"] == WEB
    assert attributes["zerotrust.status"] == 200
    assert attributes["http.route"] == "/orders/{order_id}"  # the same template OTel uses
    [event] = [e for e in span.events if e.name == SPAN_EVENT_NAME]
    assert event.attributes["zerotrust.event_id"] == memory.last.event_id
    assert memory.last.trace_id == format(span.context.trace_id, "032x")
    assert memory.last.span_id == format(span.context.span_id, "016x")
    assert memory.last.trace_trusted


def test_refusal_on_the_server_span(traced: Any) -> None:
    http, exporter, memory, _ = traced
    caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    traceparent = f"00-{caller_trace}-00f067aa0ba902b7-01"
    response = http.get("/orders/7", headers={"traceparent": traceparent})
    assert response.status_code == 401
    span = server_span(exporter)
    assert span.attributes["zerotrust.decision"] == "deny"
    assert span.attributes["zerotrust.reason"] == "no_allow_rule_matched"
    assert span.attributes["zerotrust.status"] == 401
    assert memory.last.trace_id == format(span.context.trace_id, "032x")
    assert memory.last.trace_id == caller_trace  # the instrumentation continued the trace


def test_a_sampled_out_server_span_still_gives_the_audit_event_its_ids() -> None:
    """A caller's unsampled traceparent makes the instrumentation's span non-recording: nothing
    is exported or annotated, and the audit event still carries the continued trace id with
    the server's own (unexported) span id, trusted as our span's."""
    issuer, guard, memory = audited_guard()
    app = make_app(ZeroTrust(guard))
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(ALWAYS_ON))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
    caller_trace, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    unsampled = {"traceparent": f"00-{caller_trace}-{caller_span}-00"}
    token = issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"])
    try:
        with client(app) as http:
            assert http.get("/orders/7", headers=bearer(token) | unsampled).status_code == 200
            assert http.get("/orders/7", headers=unsampled).status_code == 401
    finally:
        FastAPIInstrumentor.uninstrument_app(app)
        provider.shutdown()
    assert exporter.get_finished_spans() == ()
    allowed, refused = memory.events
    assert (allowed.decision, refused.decision) == ("allow", "deny")
    for event in (allowed, refused):
        assert event.trace_id == caller_trace and event.trace_trusted
        assert event.span_id is not None and event.span_id != caller_span
    assert allowed.span_id != refused.span_id


def test_baggage_never_reaches_the_audit_event_or_the_span_attributes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With a baggage propagator the instrumentation extracts the caller's baggage into the
    request's context; none of it is copied into the audit event or the zerotrust attributes."""
    monkeypatch.setattr(
        propagate,
        "_HTTP_TEXT_FORMAT",
        CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()]),
    )
    seen: list[dict[str, object]] = []
    issuer, guard, memory = audited_guard(
        CallableSink(lambda _: seen.append(dict(baggage.get_all())))
    )
    app = make_app(ZeroTrust(guard))
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
    token = issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"])
    headers = bearer(token) | {"baggage": "user.email=alice%40example.com,tenant=acme-secret"}
    try:
        with client(app) as http:
            assert http.get("/orders/7", headers=headers).status_code == 200
    finally:
        FastAPIInstrumentor.uninstrument_app(app)
        provider.shutdown()
    assert seen == [{"user.email": "alice@example.com", "tenant": "acme-secret"}]  # extracted
    span = server_span(exporter)
    [event] = [e for e in span.events if e.name == SPAN_EVENT_NAME]
    recorded = [memory.last.to_json(), repr(dict(span.attributes)), repr(dict(event.attributes))]
    for text in recorded:
        assert "alice" not in text and "acme-secret" not in text
        assert "baggage" not in text


def test_a_handler_refusal_names_the_route_when_only_the_span_listens() -> None:
    """zerotrust outermost, OpenTelemetry's ASGI middleware inside it, and an audit that listens
    only while a span records: the middleware's allow goes unaudited (no span yet), and the
    handler requirement's refusal, audited on the span, still names the route template."""
    issuer = TokenIssuer(PrivateJWK.generate("ES256"), issuer=ISS)
    verifier = TokenVerifier(issuer=ISS, audience=AUD, keys=issuer.jwks(), algorithms=["ES256"])
    guard = Guard(
        authenticator=Authenticator(tokens=verifier),
        policy=make_policy(),
        audit=[OTelSink()],
        service="orders",
    )
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    zt = ZeroTrust(guard)
    app = FastAPI()
    app.add_middleware(OpenTelemetryMiddleware, tracer_provider=provider)
    zt.install(app)  # after: outermost

    @app.post("/admin", dependencies=[Depends(zt.require(callers=match.exact(ADMIN)))])
    async def admin() -> dict[str, str]:
        return {"admin": "ok"}

    token = issuer.issue(subject=WEB, audience=AUD)
    try:
        with client(app) as http:
            assert http.post("/admin", headers=bearer(token)).status_code == 403
    finally:
        provider.shutdown()
    attributes = server_span(exporter).attributes
    assert attributes["zerotrust.notes"] == ("handler_requirement",)
    assert attributes["zerotrust.route"] == "/admin"
