"""W3C trace context reaches the server: the caller's trace id, from a local SDK provider."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from opentelemetry import baggage, propagate, trace
from opentelemetry import context as otel_context
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from tests._zt_https import Reply, ZtHttpsServer
from tests.client.conftest import Mode, send, tls
from zerotrust import X509Svid
from zerotrust.audit.trace import parse_traceparent
from zerotrust.dev import DevCA
from zerotrust.httpx import AsyncClient, RetryPolicy

pytestmark = pytest.mark.network


def test_traceparent_carries_the_client_span(
    mode: Mode, server: ZtHttpsServer, ca: DevCA, client_svid: X509Svid
) -> None:
    tracer = TracerProvider().get_tracer("test")
    server.script("/", Reply(503), Reply(200))
    with tracer.start_as_current_span("checkout") as span:
        context = span.get_span_context()
        [response] = send(
            mode, [("GET", server.url("/"))], **tls(ca, client_svid), retry=RetryPolicy(backoff=0)
        )
    assert response.status_code == 200
    for record in server.requests():  # the retry carries it too
        parent = parse_traceparent(record.headers["traceparent"])
        assert parent is not None
        assert parent.trace_id == format(context.trace_id, "032x")
        assert parent.parent_id == format(context.span_id, "016x")


def test_no_span_no_traceparent(
    mode: Mode, server: ZtHttpsServer, ca: DevCA, client_svid: X509Svid
) -> None:
    server.script("/", Reply(200))
    send(mode, [("GET", server.url("/"))], **tls(ca, client_svid))
    assert "traceparent" not in server.requests()[0].headers


def test_injection_can_be_turned_off(
    mode: Mode, server: ZtHttpsServer, ca: DevCA, client_svid: X509Svid
) -> None:
    tracer = TracerProvider().get_tracer("test")
    server.script("/", Reply(200))
    with tracer.start_as_current_span("quiet"):
        send(mode, [("GET", server.url("/"))], **tls(ca, client_svid), trace_context=False)
    assert "traceparent" not in server.requests()[0].headers


CALLER_PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.mark.parametrize(
    ("ours", "expected"),
    [(None, None), ("ours=1", "ours=1")],
    ids=["span-without-tracestate", "span-with-tracestate"],
)
def test_a_replaced_traceparent_does_not_keep_the_callers_tracestate(
    mode: Mode,
    server: ZtHttpsServer,
    ca: DevCA,
    client_svid: X509Svid,
    ours: str | None,
    expected: str | None,
) -> None:
    """The caller's tracestate belongs to the caller's traceparent (W3C Trace Context §3.3):
    when the client's context replaces the traceparent, it goes too, unless the client's
    context brings a tracestate of its own."""
    context = SpanContext(
        trace_id=0x4BF92F3577B34DA6A3CE929D0E0E4736,
        span_id=0x00F067AA0BA902B7,
        is_remote=False,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState.from_header([ours]) if ours else TraceState(),
    )
    server.script("/", Reply(200))
    caller = {"headers": {"traceparent": CALLER_PARENT, "tracestate": "theirs=old"}}
    with trace.use_span(NonRecordingSpan(context)):
        send(mode, [("GET", server.url("/"), caller)], **tls(ca, client_svid))
    [record] = server.requests()
    parent = parse_traceparent(record.headers["traceparent"])
    assert parent is not None and parent.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert record.headers.get("tracestate") == expected


def test_without_a_span_the_callers_trace_headers_are_kept(
    mode: Mode, server: ZtHttpsServer, ca: DevCA, client_svid: X509Svid
) -> None:
    server.script("/", Reply(200))
    caller = {"headers": {"traceparent": CALLER_PARENT, "tracestate": "theirs=old"}}
    send(mode, [("GET", server.url("/"), caller)], **tls(ca, client_svid))
    [record] = server.requests()
    assert record.headers["traceparent"] == CALLER_PARENT
    assert record.headers["tracestate"] == "theirs=old"


def test_concurrent_tasks_keep_their_own_trace(
    server: ZtHttpsServer, ca: DevCA, client_svid: X509Svid
) -> None:
    tracer = TracerProvider().get_tracer("test")
    server.script("/", Reply(200))

    async def run() -> set[str]:
        async with AsyncClient(**tls(ca, client_svid)) as client:

            async def one(name: str) -> str:
                with tracer.start_as_current_span(name) as span:
                    response: httpx.Response = await client.get(
                        server.url("/"),
                        params={"trace": format(span.get_span_context().trace_id, "032x")},
                    )
                    assert response.status_code == 200
                    return format(span.get_span_context().trace_id, "032x")

            return set(await asyncio.gather(*(one(f"task-{i}") for i in range(5))))

    expected = asyncio.run(run())
    seen = {r.query.removeprefix("trace="): r.headers["traceparent"] for r in server.requests()}
    assert set(seen) == expected
    for trace_id, header in seen.items():
        parent = parse_traceparent(header)
        assert parent is not None and parent.trace_id == trace_id


def test_a_sampled_out_span_still_propagates(
    mode: Mode, server: ZtHttpsServer, ca: DevCA, client_svid: X509Svid
) -> None:
    """The server joins the caller's trace whether or not the caller records it: the
    traceparent of a span sampled out carries its ids with the sampled flag clear."""
    tracer = TracerProvider(sampler=ALWAYS_OFF).get_tracer("test")
    server.script("/", Reply(200))
    with tracer.start_as_current_span("unsampled") as span:
        context = span.get_span_context()
        send(mode, [("GET", server.url("/"))], **tls(ca, client_svid))
    assert not context.trace_flags.sampled
    parent = parse_traceparent(server.requests()[0].headers["traceparent"])
    assert parent is not None
    assert parent.trace_id == format(context.trace_id, "032x")
    assert parent.parent_id == format(context.span_id, "016x")
    assert not parent.sampled


def test_every_attempt_carries_what_the_global_propagator_injects(
    mode: Mode,
    server: ZtHttpsServer,
    ca: DevCA,
    client_svid: X509Svid,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The propagator is the globally configured one (here trace context and baggage), and
    each attempt of a retried request carries what it injects."""
    monkeypatch.setattr(
        propagate,
        "_HTTP_TEXT_FORMAT",
        CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()]),
    )
    tracer = TracerProvider().get_tracer("test")
    server.script("/", Reply(503), Reply(200))
    token = otel_context.attach(baggage.set_baggage("tenant", "acme"))
    try:
        with tracer.start_as_current_span("checkout") as span:
            trace_id = format(span.get_span_context().trace_id, "032x")
            send(
                mode,
                [("GET", server.url("/"), {"headers": {"baggage": "stale=1"}})],
                **tls(ca, client_svid),
                retry=RetryPolicy(backoff=0),
            )
    finally:
        otel_context.detach(token)
    records = server.requests()
    assert len(records) == 2
    for record in records:
        parent = parse_traceparent(record.headers["traceparent"])
        assert parent is not None and parent.trace_id == trace_id
        assert record.headers["baggage"] == "tenant=acme"
