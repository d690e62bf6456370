"""With OpenTelemetry's Flask instrumentation, each decision lands on the server span."""

from __future__ import annotations

from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from zerotrust import FixedClock, MemorySink, OTelSink, TokenIssuer
from zerotrust.flask import ZeroTrust
from zerotrust.tokens import PrivateJWK

from ._support import AUD, ISS, WEB, bearer, make_app, make_guard


def test_decision_is_recorded_on_the_flask_server_span(
    clock: FixedClock, own_tracer: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, spans = own_tracer
    issuer = TokenIssuer(PrivateJWK.generate("ES256"), issuer=ISS, clock=clock)
    sink = MemorySink()
    guard, _ = make_guard(issuer, clock, audit=[sink, OTelSink()])
    zt = ZeroTrust()
    app = make_app(zt)
    FlaskInstrumentor().instrument_app(app, tracer_provider=provider)  # before zerotrust
    try:
        zt.init_app(app, guard=guard)
        client = app.test_client()
        token = issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"])
        assert client.get("/orders/7", headers=bearer(token)).status_code == 200
        assert client.get("/orders/8").status_code == 401
    finally:
        FlaskInstrumentor().uninstrument_app(app)
    server = [s for s in spans.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert len(server) == 2
    allowed, refused = server
    assert allowed.attributes is not None and refused.attributes is not None
    assert allowed.attributes["zerotrust.decision"] == "allow"
    assert allowed.attributes["zerotrust.route"] == "/orders/{order_id}"
    assert allowed.attributes["zerotrust.spiffe_id"] == WEB
    assert refused.attributes["zerotrust.decision"] == "deny"
    assert refused.attributes["zerotrust.status"] == 401
    status = refused.attributes.get("http.response.status_code")  # new HTTP semconv
    assert 401 in (status, refused.attributes.get("http.status_code"))
    for span, event in zip(server, sink.events, strict=True):
        assert event.trace_id == format(span.context.trace_id, "032x")
        assert event.span_id == format(span.context.span_id, "016x")
        assert event.trace_trusted
        assert [e.name for e in span.events] == ["zerotrust.decision"]
