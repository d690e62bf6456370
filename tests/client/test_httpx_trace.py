"""W3C trace context reaches the server: the caller's trace id, from a local SDK provider."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider

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
