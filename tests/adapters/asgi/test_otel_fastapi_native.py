"""FastAPI's own OpenTelemetry support (FastAPI 0.142 and later, on by default since 0.162):
each decision lands on the request's server span, whether the middleware or a dependency
decides, and the audit event carries that span's ids.

FastAPI runs dependencies inside a ``fastapi.dependencies`` span of their own; the decision
belongs to the server span all the same, where the middleware's decision lands and where
OpenTelemetry's FastAPI instrumentation puts it (tests/adapters/asgi/test_otel.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import SpanKind
from starlette.websockets import WebSocketDisconnect

from tests.adapters.asgi._support import (
    ADMIN,
    AUD,
    WEB,
    audited_guard,
    bearer,
    client,
    make_app,
)
from zerotrust import (
    MemorySink,
    TokenIssuer,
)
from zerotrust.audit.otel import SPAN_EVENT_NAME
from zerotrust.fastapi import ZeroTrust

pytest.importorskip("fastapi.telemetry", reason="FastAPI before 0.142 has no telemetry of its own")

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@dataclass
class Traced:
    http: Any
    exporter: InMemorySpanExporter
    memory: MemorySink
    issuer: TokenIssuer

    def token(self, subject: str = WEB, scopes: tuple[str, ...] = ("orders:read",)) -> str:
        return self.issuer.issue(subject=subject, audience=AUD, scopes=list(scopes))

    def spans(self, kind: SpanKind) -> list[Any]:
        return [s for s in self.exporter.get_finished_spans() if s.kind is kind]

    def server_span(self) -> Any:
        [span] = self.spans(SpanKind.SERVER)
        return span


@contextmanager
def traced_app(
    *, middleware: bool, prepare: Callable[[FastAPI], None] | None = None, **telemetry: Any
) -> Iterator[Traced]:
    """The test application with FastAPI's telemetry on (operation spans included, its
    default, unless ``telemetry`` says otherwise), decided by the middleware or, without it,
    by the dependencies; ``prepare`` may add to it before it starts."""
    issuer, guard, memory = audited_guard()
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(ALWAYS_ON))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = {"tracer_provider": provider, "metrics": False, "logs": False, **telemetry}
    app = make_app(ZeroTrust(guard), middleware=middleware, telemetry=settings)
    if prepare is not None:
        prepare(app)
    try:
        with client(app) as http:
            yield Traced(http, exporter, memory, issuer)
    finally:
        provider.shutdown()


@pytest.fixture(params=["middleware", "dependency"])
def traced(request: pytest.FixtureRequest) -> Iterator[Traced]:
    with traced_app(middleware=request.param == "middleware") as traced:
        yield traced


def decisions(span: Any) -> list[Any]:
    return [e for e in span.events if e.name == SPAN_EVENT_NAME]


def assert_on_server_span_only(traced: Traced) -> Any:
    """The one decision recorded is on the server span, and on no span FastAPI opened
    inside it (its dependencies, endpoint and serialization spans)."""
    span = traced.server_span()
    for inner in traced.spans(SpanKind.INTERNAL):
        assert "zerotrust.decision" not in inner.attributes, inner.name
        assert decisions(inner) == [], inner.name
    [event] = decisions(span)
    assert event.attributes["zerotrust.event_id"] == traced.memory.last.event_id
    return span


def test_an_allowed_decision_lands_on_the_server_span(traced: Traced) -> None:
    assert traced.http.get("/orders/7", headers=bearer(traced.token())).status_code == 200
    span = assert_on_server_span_only(traced)
    assert span.name == "GET /orders/{order_id}"
    assert span.attributes["zerotrust.decision"] == "allow"
    assert span.attributes["zerotrust.route"] == "/orders/{order_id}"
    assert span.attributes["zerotrust.spiffe_id"] == WEB
    assert span.attributes["zerotrust.status"] == 200
    assert traced.spans(SpanKind.INTERNAL)  # FastAPI's operation spans were there
    event = traced.memory.last
    assert event.trace_id == format(span.context.trace_id, "032x")
    assert event.span_id == format(span.context.span_id, "016x")
    assert event.trace_trusted


def test_a_refusal_lands_on_the_server_span_of_the_continued_trace(traced: Traced) -> None:
    traceparent = {"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"}
    assert traced.http.get("/orders/7", headers=traceparent).status_code == 401
    span = assert_on_server_span_only(traced)
    assert span.attributes["zerotrust.decision"] == "deny"
    assert span.attributes["zerotrust.reason"] == "no_allow_rule_matched"
    assert span.attributes["zerotrust.status"] == 401
    assert span.attributes["http.response.status_code"] == 401
    event = traced.memory.last
    assert event.trace_id == CALLER_TRACE == format(span.context.trace_id, "032x")
    assert event.span_id == format(span.context.span_id, "016x")


def test_a_handler_requirement_refusal_is_the_server_span_s_last_word(traced: Traced) -> None:
    """The route's dependency asks for a scope the caller lacks: with the middleware, the
    middleware's allow is recorded first and the dependency's refusal after it, on the same
    span, so the span ends saying what the caller got."""
    response = traced.http.get("/orders/7", headers=bearer(traced.token(scopes=())))
    assert response.status_code == 403
    span = traced.server_span()
    for inner in traced.spans(SpanKind.INTERNAL):
        assert "zerotrust.decision" not in inner.attributes, inner.name
    assert decisions(span)[-1].attributes["zerotrust.event_id"] == traced.memory.last.event_id
    assert span.attributes["zerotrust.decision"] == "deny"
    assert span.attributes["zerotrust.status"] == 403
    assert span.attributes["zerotrust.reason"] == traced.memory.last.reason
    assert traced.memory.last.status == 403


def test_a_require_dependency_refusal_lands_on_the_server_span(traced: Traced) -> None:
    assert traced.http.post("/admin", headers=bearer(traced.token())).status_code == 403
    span = traced.server_span()
    for inner in traced.spans(SpanKind.INTERNAL):
        assert "zerotrust.decision" not in inner.attributes, inner.name
    assert span.attributes["zerotrust.decision"] == "deny"
    assert span.attributes["zerotrust.status"] == 403
    assert traced.http.post("/admin", headers=bearer(traced.token(ADMIN))).status_code == 200


def test_a_sync_handler_s_dependency_decides_on_the_server_span(traced: Traced) -> None:
    """``/reports`` is a sync handler (its dependency still runs on the event loop)."""
    assert traced.http.get("/reports", headers=bearer(traced.token())).status_code == 200
    span = assert_on_server_span_only(traced)
    assert span.attributes["zerotrust.route"] == "/reports"
    assert span.attributes["zerotrust.dry_run"] is True  # the dry-run DENY rule matched


def test_without_operation_spans_the_decision_is_on_the_server_span() -> None:
    """With ``operation_spans`` off, FastAPI opens no span inside the server span: the
    dependency's decision lands there as it always did."""
    with traced_app(middleware=False, operation_spans=False) as traced:
        assert traced.http.get("/orders/7", headers=bearer(traced.token())).status_code == 200
    [span] = traced.exporter.get_finished_spans()
    assert span.kind is SpanKind.SERVER
    assert span.attributes["zerotrust.decision"] == "allow"
    assert traced.memory.last.span_id == format(span.context.span_id, "016x")


@pytest.mark.parametrize("middleware", [True, False], ids=["middleware", "dependency"])
def test_a_sampled_out_server_span_still_gives_the_audit_event_its_ids(middleware: bool) -> None:
    """A caller's unsampled traceparent: FastAPI's server span does not record, nothing is
    exported, and the audit event carries the continued trace id and the server span's own
    id, whether the middleware or the dependency decides."""
    unsampled = {"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-00"}
    seen: list[str] = []

    def note_server_span(app: FastAPI) -> None:
        @app.middleware("http")
        async def server_span_id(request: Any, call_next: Any) -> Any:
            seen.append(format(trace.get_current_span().get_span_context().span_id, "016x"))
            return await call_next(request)

    with traced_app(middleware=middleware, prepare=note_server_span) as traced:
        http = traced.http
        assert http.get("/orders/7", headers=bearer(traced.token()) | unsampled).status_code == 200
        assert http.get("/orders/7", headers=unsampled).status_code == 401
    assert traced.exporter.get_finished_spans() == ()
    allowed, refused = traced.memory.events
    assert (allowed.decision, refused.decision) == ("allow", "deny")
    assert [allowed.span_id, refused.span_id] == seen  # the server span's, not a child's
    for event in (allowed, refused):
        assert event.trace_id == CALLER_TRACE and event.trace_trusted
        assert event.span_id != CALLER_SPAN


def test_websocket_decisions_land_on_the_connection_s_server_span(traced: Traced) -> None:
    with traced.http.websocket_connect("/ws/lobby", headers=bearer(traced.token())) as socket:
        assert socket.receive_json()["who"] == WEB
    with (
        pytest.raises(WebSocketDisconnect) as refused,
        traced.http.websocket_connect("/ws/lobby") as socket,
    ):
        socket.receive_json()
    assert refused.value.code == 1008
    allowed_span, refused_span = traced.spans(SpanKind.SERVER)
    for inner in traced.spans(SpanKind.INTERNAL):
        assert "zerotrust.decision" not in inner.attributes, inner.name
    assert allowed_span.attributes["zerotrust.decision"] == "allow"
    assert refused_span.attributes["zerotrust.decision"] == "deny"
    allowed, refused_event = traced.memory.events
    assert allowed.span_id == format(allowed_span.context.span_id, "016x")
    assert refused_event.span_id == format(refused_span.context.span_id, "016x")
