"""The services behind the gateway: inventory (a grpc.aio server) and payments (a Flask app on
werkzeug's threaded server), both serving direct mTLS and guarded by zerotrust.

No protobuf: inventory's one method takes and returns JSON through grpc's generic handlers.
werkzeug puts the client certificate of the TLS connection in the WSGI environ
(``SSL_CLIENT_CERT``); zerotrust's WSGI view reads it and verifies it as an X509-SVID of the
shop's trust domain.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from typing import Any

import grpc
from flask import Flask, request
from werkzeug.serving import BaseWSGIServer, make_server

from zerotrust import Callers, Operations, Policy, Rule, ScopeRule, match, server_ssl_context
from zerotrust.adapters.werkzeug import PeerRequestHandler
from zerotrust.demo._gateway import decode, encode
from zerotrust.demo._shop import BACKOFFICE, GATEWAY, TRUST_DOMAIN, Service, Shop
from zerotrust.flask import ZeroTrust, current_principal
from zerotrust.grpc import AioServerInterceptor, server_credentials
from zerotrust.grpc import current_principal as rpc_principal


def inventory_policy() -> Policy:
    return Policy(
        [
            Rule(
                id="gateway-reserves-stock",
                callers=[Callers(spiffe_ids=[GATEWAY])],
                operations=[Operations(routes=["/shop.Inventory/*"])],
                scopes=ScopeRule(all=["inventory:reserve"]),
            )
        ],
        id="inventory",
    )


def payments_policy() -> Policy:
    return Policy(
        [
            Rule(
                id="refunds-only-from-backoffice",
                action="DENY",
                callers=[Callers(not_spiffe_ids=[BACKOFFICE])],
                operations=[Operations(routes=["/refunds"])],
            ),
            Rule(
                id="gateway-charges",
                callers=[Callers(spiffe_ids=[GATEWAY])],
                operations=[Operations(methods=["POST"], routes=["/charges"])],
                scopes=ScopeRule(all=["payments:charge"]),
            ),
            Rule(
                id="backoffice-refunds",
                callers=[Callers(spiffe_ids=[BACKOFFICE])],
                operations=[Operations(methods=["POST"], routes=["/refunds"])],
            ),
        ],
        id="payments",
    )


# --- inventory: gRPC ----------------------------------------------------------------------


class Stock:
    """Inventory's state: units left per SKU (one event loop serves it, no lock needed)."""

    def __init__(self, units: int = 100) -> None:
        self._units = units
        self._left: dict[str, int] = {}

    async def reserve(self, message: dict[str, Any], context: grpc.aio.ServicerContext) -> Any:
        sku, quantity = str(message["sku"]), int(message["quantity"])
        left = self._left.get(sku, self._units) - quantity
        self._left[sku] = left
        caller = rpc_principal()
        return {"sku": sku, "reserved": quantity, "left": left, "for": caller and caller.id}


async def start_inventory(service: Service, shop: Shop) -> grpc.aio.Server:
    """Start the inventory gRPC server on ``localhost`` (an ephemeral port); call it on the
    event loop that will serve it."""
    stock = Stock()
    # an ephemeral port of its own: grpc binds with SO_REUSEPORT, so port 0 could be shared
    # with another grpc server of this user, which would then get some of the connections
    server = grpc.aio.server(
        interceptors=[AioServerInterceptor(service.guard)], options=[("grpc.so_reuseport", 0)]
    )
    handler = grpc.unary_unary_rpc_method_handler(
        stock.reserve, request_deserializer=decode, response_serializer=encode
    )
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("shop.Inventory", {"Reserve": handler})]
    )
    credentials = server_credentials(shop.svid(service.spiffe_id), shop.ca.bundle)
    port = server.add_secure_port("localhost:0", credentials)
    await server.start()
    service.address = f"localhost:{port}"
    return server


# --- payments: Flask on werkzeug ----------------------------------------------------------


def payments_app(service: Service) -> Flask:
    app = Flask(__name__)
    ZeroTrust(app, guard=service.guard)
    numbers = itertools.count(1)

    @app.post("/charges")
    def charge() -> Any:
        body = request.get_json()
        return {
            "charge": f"ch_{next(numbers):04d}",
            "order": body["order"],
            "amount": body["amount"],
            "by": str(current_principal.spiffe_id),
        }

    @app.post("/refunds")
    def refund() -> Any:
        return {"refund": f"re_{next(numbers):04d}", "order": request.get_json()["order"]}

    return app


class _QuietHandler(PeerRequestHandler):
    """No access log lines on the demo's output (the audit trail says who called what)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


def join(thread: threading.Thread) -> None:
    """Join ``thread`` even if Ctrl-C comes meanwhile: the demo is stopping already, and a
    join it interrupted would leave the thread behind, with its port, for Python's exit to
    wait on for ever."""
    while thread.is_alive():
        with contextlib.suppress(KeyboardInterrupt):
            thread.join()


class PaymentsServer:
    """Payments on werkzeug's threaded server with zerotrust's mTLS server context."""

    def __init__(self, service: Service, shop: Shop) -> None:
        context = server_ssl_context(
            shop.svid(service.spiffe_id),
            shop.ca.bundle,
            authorizer=match.member_of(TRUST_DOMAIN),
        )
        self._server: BaseWSGIServer = make_server(
            "127.0.0.1",
            0,
            payments_app(service),
            threaded=True,
            request_handler=_QuietHandler,
            ssl_context=context,
        )
        # Join the connection threads on close (werkzeug makes them daemons by default).
        self._server.daemon_threads = False  # type: ignore[attr-defined]
        self._server.block_on_close = True  # type: ignore[attr-defined]
        service.address = f"https://localhost:{self._server.server_port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="zerotrust-demo-payments",
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            with contextlib.suppress(KeyboardInterrupt):  # asked to stop already: it stops
                self._server.shutdown()
            join(self._thread)
        self._server.server_close()
