"""With OpenTelemetry's aio server interceptor listed before zerotrust's, each decision on a
``grpc.aio`` server lands on the server span of its RPC, and the audit event carries that
span's ids (docs/grpc.md)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
from opentelemetry.instrumentation.grpc import aio_server_interceptor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.grpc_integration._support import (
    METHODS,
    SERVICE,
    Failure,
    Seen,
    World,
    acall_all,
    aio_server,
    async_handlers,
    bearer,
    raw_credentials,
)
from zerotrust import OTelSink


def _generator_handlers(seen: Seen) -> dict[str, dict[str, Any]]:
    """The async handlers, with a Bidi that is an async generator: OpenTelemetry's aio
    interceptor iterates streamed responses, so it cannot serve the reader/writer API."""
    handlers = async_handlers(seen)

    async def bidi(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        async for request in requests:
            yield seen.note("Bidi") + b"|" + request

    handlers[SERVICE]["Bidi"] = grpc.stream_stream_rpc_method_handler(bidi)
    return handlers


def test_every_arity_has_its_decision_on_its_span(
    world: World, own_tracer: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, spans = own_tracer
    guard = world.guard(audit=[world.sink, OTelSink()])

    async def run() -> tuple[dict[str, object], dict[str, object]]:
        otel = aio_server_interceptor(tracer_provider=provider)
        async with (
            aio_server(world, guard, handlers=_generator_handlers, before=(otel,)) as port,
            grpc.aio.secure_channel(f"localhost:{port}", raw_credentials(world)) as channel,
        ):
            allowed = await acall_all(channel, bearer(world.token()))
            refused = await acall_all(channel, [], refused=True)
        return allowed, refused

    allowed, refused = asyncio.run(run())
    assert not any(isinstance(r, Failure) for r in allowed.values()), allowed
    assert {r.code() for r in refused.values()} == {grpc.StatusCode.UNAUTHENTICATED}  # type: ignore[attr-defined]
    server = [s for s in spans.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert sorted(s.name for s in server) == sorted([f"/{SERVICE}/{m}" for m in METHODS] * 2)
    events = world.sink.events
    assert [e.decision for e in events].count("deny") == 4
    by_id = {e.event_id: e for e in events}
    for span in server:
        attributes = span.attributes
        assert attributes is not None
        event = by_id[str(attributes["zerotrust.event_id"])]
        assert attributes["zerotrust.decision"] == event.decision
        assert attributes["zerotrust.method"] == span.name
        assert [e.name for e in span.events][:1] == ["zerotrust.decision"]
        assert (event.trace_id, event.span_id, event.trace_trusted) == (
            format(span.context.trace_id, "032x"),
            format(span.context.span_id, "016x"),
            True,
        )
