"""The gateway: a FastAPI application behind zerotrust's middleware, calling inventory (gRPC)
and payments (HTTP) with its own SVID and a token minted for each of them.

The middleware only lets authenticated, authorized callers reach a handler; a handler then
continues the caller's trace (the caller is authenticated by then) so that the calls it makes
carry the same trace id, and the inventory and payments audit events join the request's trace.
"""

# No ``from __future__ import annotations``: FastAPI resolves the handlers' annotations,
# and ``caller_dependency`` is local to gateway_app().

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import grpc
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from opentelemetry import propagate, trace

from zerotrust import Callers, Operations, Policy, Principal, Rule, ScopeRule
from zerotrust.demo._shop import FRONTEND, GATEWAY, INVENTORY, PAYMENTS, Shop
from zerotrust.fastapi import ZeroTrust
from zerotrust.grpc import AioManagedChannel, aio_secure_channel
from zerotrust.httpx import AsyncClient

RESERVE = "/shop.Inventory/Reserve"
GATEWAY_SCOPES = ("inventory:reserve", "payments:charge", "payments:refund")


def gateway_policy() -> Policy:
    """Who may call the gateway: the frontend only, each route with its own scope."""
    frontend = [Callers(spiffe_ids=[FRONTEND])]
    return Policy(
        [
            Rule(
                id="frontend-reads-orders",
                callers=frontend,
                operations=[Operations(methods=["GET"], routes=["/orders/{id}"])],
                scopes=ScopeRule(all=["orders:read"]),
            ),
            Rule(
                id="frontend-refunds-orders",
                callers=frontend,
                operations=[Operations(methods=["POST"], routes=["/orders/{id}/refund"])],
                scopes=ScopeRule(all=["orders:refund"]),
            ),
            Rule(
                id="frontend-reads-reports",
                callers=frontend,
                operations=[Operations(methods=["GET"], routes=["/reports/{name}"])],
            ),
            # Being rolled out: reports are moving to another service. Dry-run first.
            Rule(
                id="reports-move-to-analytics",
                action="DENY",
                dry_run=True,
                callers=frontend,
                operations=[Operations(routes=["/reports/{name}"])],
            ),
        ],
        id="gateway",
    )


def encode(message: Any) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode()


def decode(data: bytes) -> Any:
    return json.loads(data)


class Downstream:
    """The gateway's outgoing connections: a gRPC channel to inventory, an httpx client to
    payments. Both present the gateway's SVID, check the server's SPIFFE ID and attach a token
    for that server's audience; both inject the current trace context."""

    def __init__(self, shop: Shop, inventory_target: str, payments_url: str) -> None:
        tokens = shop.token_source(GATEWAY, GATEWAY_SCOPES)
        svid, bundle = shop.svid(GATEWAY), shop.ca.bundle
        self.inventory: AioManagedChannel = aio_secure_channel(
            inventory_target, svid=svid, bundles=bundle, server_id=INVENTORY, token_source=tokens
        )
        self.reserve = self.inventory.unary_unary(
            RESERVE, request_serializer=encode, response_deserializer=decode
        )
        self.payments = AsyncClient(
            svid=svid,
            bundles=bundle,
            server_id=PAYMENTS,
            token_source=tokens,
            audience=PAYMENTS,
            base_url=payments_url,
            timeout=10.0,
        )

    async def aclose(self) -> None:
        await self.payments.aclose()
        await self.inventory.close(None)


@contextmanager
def continue_trace(tracer: trace.Tracer, request: Request, name: str) -> Iterator[None]:
    """Continue the caller's trace. Only handlers call this: the middleware has already
    authenticated and authorized the caller, so its trace context may be our parent."""
    parent = propagate.extract(request.headers)
    with tracer.start_as_current_span(name, context=parent, kind=trace.SpanKind.SERVER):
        yield


def _upstream_refusal(service: str, status: int | str, error: str | None) -> JSONResponse:
    body = {"error": f"{service}_refused", "upstream_status": status, "upstream_error": error}
    return JSONResponse(body, status_code=502)


def _error_code(response: Any) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("error") if isinstance(body, dict) else None


def gateway_app(zt: ZeroTrust, downstream: Downstream, tracer: trace.Tracer) -> FastAPI:
    """The gateway's routes; ``zt`` protects all of them (middleware and dependencies)."""
    app = FastAPI(title="gateway", openapi_url=None, docs_url=None, redoc_url=None)
    zt.install(app)
    caller_dependency = Annotated[Principal, Depends(zt)]

    @app.get("/orders/{id}")
    async def get_order(id: int, request: Request, caller: caller_dependency) -> Any:
        with continue_trace(tracer, request, "GET /orders/{id}"):
            try:
                stock = await downstream.reserve({"sku": f"sku-{id}", "quantity": 1}, timeout=10)
            except grpc.aio.AioRpcError as exc:
                return _upstream_refusal("inventory", exc.code().name, exc.details())
            charge = await downstream.payments.post(
                "/charges", json={"order": id, "amount": "19.99"}
            )
        if charge.status_code != 200:
            return _upstream_refusal("payments", charge.status_code, _error_code(charge))
        return {"order": id, "caller": caller.id, "stock": stock, "payment": charge.json()}

    @app.post("/orders/{id}/refund")
    async def refund_order(id: int, request: Request) -> Any:
        with continue_trace(tracer, request, "POST /orders/{id}/refund"):
            refund = await downstream.payments.post("/refunds", json={"order": id})
        if refund.status_code != 200:
            return _upstream_refusal("payments", refund.status_code, _error_code(refund))
        return refund.json()

    @app.get("/reports/{name}")
    async def report(name: str, caller: caller_dependency) -> Any:
        return {"report": name, "orders": 1, "for": caller.id}

    return app
