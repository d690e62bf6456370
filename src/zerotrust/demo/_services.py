"""Start and stop the shop's three services in this process, on loopback ephemeral ports.

* payments: werkzeug's threaded server, in its own thread;
* inventory (grpc.aio) and the gateway (FastAPI on uvicorn) share one event loop, run by
  ``asyncio.run`` in a second thread; the gateway's outgoing gRPC channel and httpx client
  live on that loop too.

:meth:`Services.stop` shuts everything down in order (gateway, its clients, inventory,
payments) and joins every thread it started; the listening sockets are closed with them.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterable

import grpc
import uvicorn
from opentelemetry import trace

from zerotrust import match, server_ssl_context
from zerotrust.asgi import ZeroTrustUvicornConfig
from zerotrust.audit import AuditSink
from zerotrust.demo._backends import (
    PaymentsServer,
    inventory_policy,
    join,
    payments_policy,
    start_inventory,
)
from zerotrust.demo._gateway import Downstream, gateway_app, gateway_policy
from zerotrust.demo._shop import (
    GATEWAY,
    INVENTORY,
    PAYMENTS,
    TRUST_DOMAIN,
    Service,
    Shop,
    make_service,
)
from zerotrust.errors import ZeroTrustError
from zerotrust.fastapi import ZeroTrust

_START_TIMEOUT = 30.0


class DemoError(ZeroTrustError):
    """The demo could not start its services."""

    code = "demo_failed"


class Services:
    """The gateway, inventory and payments services, each with its own Guard and audit sink."""

    def __init__(self, shop: Shop, tracer: trace.Tracer, sinks: Iterable[AuditSink] = ()) -> None:
        extra = list(sinks)
        self.shop = shop
        self.gateway = make_service(shop, "gateway", GATEWAY, gateway_policy(), extra)
        self.inventory = make_service(shop, "inventory", INVENTORY, inventory_policy(), extra)
        self.payments = make_service(shop, "payments", PAYMENTS, payments_policy(), extra)
        self._tracer = tracer
        self._payments = PaymentsServer(self.payments, shop)
        self._thread = threading.Thread(target=self._run, name="zerotrust-demo-services")
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    @property
    def all(self) -> tuple[Service, Service, Service]:
        return (self.gateway, self.inventory, self.payments)

    def start(self) -> None:
        """Start the services; returns once all three accept connections."""
        self._payments.start()
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT):
            self.stop()
            raise DemoError("the services did not start in time")
        if self._error is not None:
            error = self._error
            self.stop()
            raise DemoError(f"the services could not start: {error!r}") from error

    def stop(self) -> None:
        """Stop everything that was started (idempotent)."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and self._thread.is_alive():
            loop.call_soon_threadsafe(stop.set)
        try:
            if self._thread.ident is not None:
                join(self._thread)
        finally:
            self._payments.stop()

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        inventory: grpc.aio.Server | None = None
        downstream: Downstream | None = None
        gateway: uvicorn.Server | None = None
        serving: asyncio.Task[None] | None = None
        try:
            inventory = await start_inventory(self.inventory, self.shop)
            downstream = Downstream(self.shop, self.inventory.address, self.payments.address)
            gateway, serving = await self._start_gateway(downstream)
        except BaseException as exc:  # reported to start() in the main thread
            self._error = exc
        self._ready.set()
        try:
            if self._error is None:
                await self._stop.wait()
        finally:
            if gateway is not None and serving is not None:
                gateway.should_exit = True
                await serving
            if downstream is not None:
                await downstream.aclose()
            if inventory is not None:
                await inventory.stop(1.0)

    async def _start_gateway(
        self, downstream: Downstream
    ) -> tuple[uvicorn.Server, asyncio.Task[None]]:
        app = gateway_app(ZeroTrust(self.gateway.guard), downstream, self._tracer)
        context = server_ssl_context(
            self.shop.svid(GATEWAY),
            self.shop.ca.bundle,
            authorizer=match.member_of(TRUST_DOMAIN),
            on_refusal=self.gateway.guard.audit_handshake,  # refused handshakes are audited
        )
        listener = socket.create_server(("127.0.0.1", 0))
        self.gateway.address = f"https://localhost:{listener.getsockname()[1]}"
        config = ZeroTrustUvicornConfig(
            app,
            ssl_context=context,
            http="h11",
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve(sockets=[listener]))
        while not server.started:
            if serving.done():
                listener.close()
                serving.result()  # raises what stopped it
                raise DemoError("the gateway stopped while starting")
            await asyncio.sleep(0.01)
        return server, serving
