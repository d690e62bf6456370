"""One trace id across hops: the httpx client's span, a FastAPI service under OpenTelemetry's
instrumentation that calls a gRPC service with zerotrust's gRPC client from its handler, and
that gRPC server under OpenTelemetry's server interceptor. Both services' audit events and
server spans carry the client's trace id, and each hop's span is the next one's parent."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from fastapi import FastAPI
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.grpc import server_interceptor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.adapters.asgi._servers import uvicorn_server
from tests.client.conftest import CLIENT_ID, SERVER_ID
from zerotrust import (
    Authenticator,
    Callers,
    Guard,
    MemorySink,
    OTelSink,
    Policy,
    Rule,
    SelfIssuedTokenSource,
    TokenVerifier,
    X509Svid,
    match,
    server_ssl_context,
)
from zerotrust.dev import DevCA
from zerotrust.fastapi import ZeroTrust
from zerotrust.grpc import ServerInterceptor, secure_channel, server_credentials
from zerotrust.httpx import Client
from zerotrust.tokens import PrivateJWK, TokenIssuer

pytestmark = pytest.mark.network

ISSUER = "https://issuer.example"
AUDIENCE = "spiffe://example.org/ns/shop/sa/api"
RESERVE = "/hop.Inventory/Reserve"


def _guard(ca: DevCA, issuer: TokenIssuer, sink: MemorySink, service: str) -> Guard:
    verifier = TokenVerifier(
        issuer=ISSUER, audience=AUDIENCE, keys=issuer.jwks(), algorithms=["ES256"]
    )
    return Guard(
        authenticator=Authenticator(tokens=verifier, bundles=ca.bundle),
        policy=Policy([Rule(id="shop", callers=[Callers(trust_domains=["example.org"])])]),
        audit=[sink, OTelSink()],
        service=service,
    )


@pytest.fixture
def inventory() -> tuple[TokenIssuer, MemorySink]:
    return TokenIssuer(PrivateJWK.generate("ES256"), issuer=ISSUER), MemorySink()


@pytest.fixture
def grpc_port(
    ca: DevCA,
    server_svid: X509Svid,
    own_tracer: tuple[TracerProvider, InMemorySpanExporter],
    inventory: tuple[TokenIssuer, MemorySink],
) -> Iterator[int]:
    issuer, sink = inventory

    def reserve(request: bytes, context: Any) -> bytes:
        return b"reserved"

    pool = futures.ThreadPoolExecutor(max_workers=2)
    server = grpc.server(
        pool,
        interceptors=[
            server_interceptor(tracer_provider=own_tracer[0]),
            ServerInterceptor(_guard(ca, issuer, sink, "inventory")),
        ],
        options=[("grpc.so_reuseport", 0)],
    )
    handlers = {"Reserve": grpc.unary_unary_rpc_method_handler(reserve)}
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("hop.Inventory", handlers)]
    )
    port = server.add_secure_port("localhost:0", server_credentials(server_svid, ca.bundle))
    server.start()
    try:
        yield port
    finally:
        server.stop(None).wait(10)
        pool.shutdown(wait=True)


def test_one_trace_id_in_every_hop_s_audit_event_and_server_span(
    ca: DevCA,
    server_svid: X509Svid,
    client_svid: X509Svid,
    own_tracer: tuple[TracerProvider, InMemorySpanExporter],
    inventory: tuple[TokenIssuer, MemorySink],
    grpc_port: int,
) -> None:
    provider, spans = own_tracer
    inventory_issuer, inventory_sink = inventory
    issuer = TokenIssuer(PrivateJWK.generate("ES256"), issuer=ISSUER)
    gateway_sink = MemorySink()
    app = FastAPI()
    ZeroTrust(_guard(ca, issuer, gateway_sink, "gateway")).install(app)

    @app.get("/orders/{order_id}")
    def order(order_id: str) -> dict[str, str]:  # a sync handler: in a worker thread
        with secure_channel(
            f"localhost:{grpc_port}",
            svid=server_svid,
            bundles=ca.bundle,
            server_id=SERVER_ID,
            token_source=SelfIssuedTokenSource(inventory_issuer, subject=SERVER_ID),
            audience=AUDIENCE,
        ) as channel:
            reply = channel.unary_unary(RESERVE)(b"1", timeout=10)
        return {"inventory": reply.decode()}

    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
    context = server_ssl_context(server_svid, ca.bundle, authorizer=match.member_of("example.org"))
    tracer = provider.get_tracer("frontend")
    try:
        with (
            uvicorn_server(app, context, "h11") as port,
            Client(
                svid=client_svid,
                bundles=ca.bundle,
                server_id=SERVER_ID,
                token_source=SelfIssuedTokenSource(issuer, subject=CLIENT_ID),
                audience=AUDIENCE,
                timeout=30,
            ) as client,
            tracer.start_as_current_span("checkout", kind=SpanKind.CLIENT) as span,
        ):
            response = client.get(f"https://localhost:{port}/orders/7")
            caller = span.get_span_context()
    finally:
        FastAPIInstrumentor.uninstrument_app(app)
    assert response.status_code == 200 and response.json() == {"inventory": "reserved"}
    trace_id = format(caller.trace_id, "032x")
    servers = {s.name: s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER}
    http_span, grpc_span = servers["GET /orders/{order_id}"], servers[RESERVE]
    assert http_span.parent is not None and http_span.parent.span_id == caller.span_id
    assert grpc_span.parent is not None and grpc_span.parent.span_id == http_span.context.span_id
    for sink, server in ((gateway_sink, http_span), (inventory_sink, grpc_span)):
        [event] = sink.events
        assert event.decision == "allow"
        assert (event.trace_id, event.span_id, event.trace_trusted) == (
            trace_id,
            format(server.context.span_id, "016x"),
            True,
        )
        assert server.attributes is not None
        assert server.attributes["zerotrust.event_id"] == event.event_id
