"""With OpenTelemetry's gRPC server interceptor listed before zerotrust's, each decision lands
on the server span of its RPC (docs/grpc.md); listed after, only in the audit event."""

from __future__ import annotations

from concurrent import futures

import grpc
from opentelemetry.instrumentation.grpc import server_interceptor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.grpc_integration._support import (
    EXCLUSIVE_PORT,
    HEALTH,
    METHODS,
    SERVICE,
    Seen,
    World,
    add_services,
    bearer,
    call_all,
    raw_credentials,
    sync_handlers,
)
from zerotrust import OTelSink
from zerotrust.grpc import ServerInterceptor, server_credentials


def _serve_and_call(world: World, provider: TracerProvider, *, otel_first: bool) -> None:
    zerotrust = ServerInterceptor(world.guard(audit=[world.sink, OTelSink()]), exempt={HEALTH})
    otel = server_interceptor(tracer_provider=provider)
    pool = futures.ThreadPoolExecutor(max_workers=4)
    server = grpc.server(
        pool,
        interceptors=[otel, zerotrust] if otel_first else [zerotrust, otel],
        options=EXCLUSIVE_PORT,
    )
    add_services(server, sync_handlers(Seen()), registered=False)
    port = server.add_secure_port(
        "localhost:0", server_credentials(world.server_svid, world.bundles)
    )
    server.start()
    try:
        with grpc.secure_channel(f"localhost:{port}", raw_credentials(world)) as channel:
            assert not any(
                isinstance(r, grpc.RpcError) for r in call_all(channel, bearer(world.token()))
            )
            refused = call_all(channel, [])
            assert {r.code() for r in refused.values()} == {grpc.StatusCode.UNAUTHENTICATED}
    finally:
        server.stop(None).wait(10)
        pool.shutdown(wait=True)


def test_listed_first_every_arity_has_its_decision_on_its_span(
    world: World, own_tracer: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, spans = own_tracer
    _serve_and_call(world, provider, otel_first=True)
    server = [s for s in spans.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert [s.name for s in server] == [f"/{SERVICE}/{m}" for m in METHODS] * 2
    events = world.sink.events
    assert [e.decision for e in events] == ["allow"] * 4 + ["deny"] * 4
    for span, event in zip(server, events, strict=True):
        attributes = span.attributes
        assert attributes is not None
        assert attributes["zerotrust.decision"] == event.decision
        assert attributes["zerotrust.method"] == span.name
        assert attributes["zerotrust.event_id"] == event.event_id
        assert attributes["zerotrust.grpc_status"] == event.grpc_status
        assert [e.name for e in span.events][:1] == ["zerotrust.decision"]
        assert (event.trace_id, event.span_id, event.trace_trusted) == (
            format(span.context.trace_id, "032x"),
            format(span.context.span_id, "016x"),
            True,
        )
    assert {e.grpc_status for e in events[4:]} == {"UNAUTHENTICATED"}


def test_listed_after_the_decision_is_only_in_the_audit_event(
    world: World, own_tracer: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, spans = own_tracer
    _serve_and_call(world, provider, otel_first=False)
    server = [s for s in spans.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert len(server) == 4  # refused calls never reach the interceptor after zerotrust
    for span in server:
        assert span.attributes is not None
        assert not any(key.startswith("zerotrust.") for key in span.attributes)
    assert len(world.sink.events) == 8
    assert all(e.trace_id is None for e in world.sink.events)  # no span when deciding
