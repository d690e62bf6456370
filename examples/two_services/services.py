"""Two services calling each other: ``shop`` (Flask) takes orders and charges them through
``payments`` (FastAPI) over mTLS, with a token for payments' audience. payments checks both:
the client certificate must be shop's SVID and the token's subject must be that same SPIFFE ID.
One OpenTelemetry trace links the audit events of both services.

    python examples/two_services/services.py            # self-check: one allowed, one refused
    python examples/two_services/services.py --serve    # keep serving shop on localhost:8443
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import httpx
import uvicorn
from fastapi import FastAPI, Security
from flask import Flask
from opentelemetry import trace
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from pydantic import BaseModel
from werkzeug.serving import make_server

from zerotrust import (
    Authenticator,
    Callers,
    Guard,
    LoggingSink,
    MemorySink,
    Operations,
    Policy,
    Principal,
    Rule,
    SelfIssuedTokenSource,
    TokenIssuer,
    TokenVerifier,
    X509Svid,
    ZeroTrustSSLContext,
    match,
    server_ssl_context,
)
from zerotrust.adapters.werkzeug import PeerRequestHandler
from zerotrust.asgi import ZeroTrustUvicornConfig
from zerotrust.dev import DevCA
from zerotrust.fastapi import ZeroTrust as FastAPIZeroTrust
from zerotrust.flask import ZeroTrust as FlaskZeroTrust
from zerotrust.flask import current_principal
from zerotrust.httpx import Client
from zerotrust.tokens import PrivateJWK

TRUST_DOMAIN = "example.org"
SHOP = "spiffe://example.org/ns/shop/sa/shop"  # service A
PAYMENTS = "spiffe://example.org/ns/shop/sa/payments"  # service B
WEB = "spiffe://example.org/ns/shop/sa/web"  # the front end that calls shop

# Development identities, made in memory: one CA for the trust domain, one token issuer that
# both services trust (in production: SPIRE, and your identity provider or JWT-SVIDs).
ca = DevCA.create(TRUST_DOMAIN)
issuer = TokenIssuer(PrivateJWK.generate("ES256"), issuer="https://issuer.example.org")
svids = {name: ca.issue_svid(name, dns_names=["localhost"]) for name in (SHOP, PAYMENTS, WEB)}
# Tracing: shop's Flask instrumentation starts a span per request, zerotrust's client sends its
# context to payments (traceparent), and both audit events record the same trace id.
trace.set_tracer_provider(TracerProvider())  # add an exporter to see the spans themselves


def verifier(audience: str) -> TokenVerifier:
    return TokenVerifier(
        issuer="https://issuer.example.org",
        audience=audience,
        keys=issuer.jwks(),
        algorithms=["ES256"],
    )


# --- service B: payments (FastAPI) -------------------------------------------------------------

payments_events = MemorySink()
payments_guard = Guard(
    authenticator=Authenticator(
        tokens=verifier(PAYMENTS),  # a token meant for payments, not for shop
        bundles=ca.bundle,
        require_mtls=True,
        require_token=True,
        token_must_match_peer=True,  # the token's subject is the certificate's SPIFFE ID
    ),
    policy=Policy(
        [
            Rule(
                id="shop-charges",
                callers=[Callers(spiffe_ids=[SHOP])],  # only shop may charge
                operations=[Operations(methods=["POST"], routes=["/charges"])],
            )
        ]
    ),
    audit=[payments_events, LoggingSink()],  # in memory for the self-check, and JSON lines
    service="payments",
)
payments_zt = FastAPIZeroTrust(payments_guard)
payments_app = FastAPI(title="payments")
payments_zt.install(payments_app)


class Charge(BaseModel):
    amount: int


@payments_app.post("/charges")
async def charge(
    body: Charge, caller: Annotated[Principal, Security(payments_zt)]
) -> dict[str, Any]:
    return {"charged": body.amount, "caller": caller.id, "proven_by": caller.proven_by}


# --- service A: shop (Flask) -------------------------------------------------------------------

shop_events = MemorySink()
shop_guard = Guard(
    authenticator=Authenticator(tokens=verifier(SHOP), bundles=ca.bundle, require_mtls=True),
    policy=Policy(
        [
            Rule(
                id="web-orders",
                callers=[Callers(spiffe_ids=[WEB])],
                operations=[Operations(methods=["POST"], routes=["/orders"])],
            )
        ]
    ),
    audit=[shop_events, LoggingSink()],
    service="shop",
)


def create_shop(payments: httpx.Client) -> Flask:
    """The shop application; ``payments`` is its client for the payments service."""
    app = Flask("shop")
    FlaskInstrumentor().instrument_app(app)  # first: the span is active when zerotrust decides
    FlaskZeroTrust(app, guard=shop_guard)

    @app.post("/orders")
    def place_order() -> tuple[dict[str, Any], int]:
        charged = payments.post("/charges", json={"amount": 42})
        body = {"order": "placed", "caller": current_principal.id, "payment": charged.json()}
        return body, 201 if charged.is_success else 502

    return app


def payments_client(payments_port: int) -> httpx.Client:
    """shop's client for payments: its own SVID, payments' SPIFFE ID, a token for payments."""
    return Client(
        svid=svids[SHOP],
        bundles=ca.bundle,
        server_id=PAYMENTS,
        token_source=SelfIssuedTokenSource(issuer, subject=SHOP),
        audience=PAYMENTS,
        base_url=f"https://localhost:{payments_port}",
    )


# --- running both ------------------------------------------------------------------------------


def server_context(svid: X509Svid) -> ZeroTrustSSLContext:
    return server_ssl_context(svid, ca.bundle, authorizer=match.member_of(TRUST_DOMAIN))


@contextmanager
def payments_running() -> Iterator[int]:
    """payments on uvicorn with zerotrust's server context, on a free port, in a thread."""
    listener = socket.create_server(("127.0.0.1", 0))
    context = server_context(svids[PAYMENTS])
    server = uvicorn.Server(
        ZeroTrustUvicornConfig(payments_app, ssl_context=context, log_config=None)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]})
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("payments did not start")
            time.sleep(0.01)
        yield listener.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join()
        listener.close()


@contextmanager
def shop_running(app: Flask) -> Iterator[int]:
    """shop on werkzeug's threaded server with zerotrust's server context, in a thread."""
    context = server_context(svids[SHOP])
    server = make_server(
        "127.0.0.1", 0, app, threaded=True, request_handler=PeerRequestHandler, ssl_context=context
    )
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def show(events: MemorySink) -> None:
    for event in events.events:
        print(
            f"  {event.service:<8} {event.decision:<5} {event.reason:<21} {event.method}"
            f" {event.route} caller={event.spiffe_id} proven_by={event.proven_by}"
            f" trace={event.trace_id}"
        )


def self_check() -> int:
    """web orders through shop (allowed), then web calls payments directly (refused)."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no access log
    with (
        payments_running() as payments_port,
        payments_client(payments_port) as payments,
        shop_running(create_shop(payments)) as shop_port,
    ):
        web = SelfIssuedTokenSource(issuer, subject=WEB)  # tokens for whichever audience
        with Client(
            svid=svids[WEB], bundles=ca.bundle, server_id=SHOP, token_source=web, audience=SHOP
        ) as client:
            allowed = client.post(f"https://localhost:{shop_port}/orders")
            print(f"allowed: web -> shop POST /orders -> {allowed.status_code} {allowed.json()}")
        with Client(
            svid=svids[WEB],
            bundles=ca.bundle,
            server_id=PAYMENTS,
            token_source=web,
            audience=PAYMENTS,
        ) as client:
            refused = client.post(f"https://localhost:{payments_port}/charges", json={"amount": 1})
            print(
                f"refused: web -> payments POST /charges -> {refused.status_code} {refused.json()}"
            )
    print("audit events:")
    show(shop_events)
    show(payments_events)
    at_shop, at_payments = shop_events.events[0], payments_events.events[0]  # the order
    print(f"payments saw shop proven by: {at_payments.proven_by}")
    shared = at_shop.trace_id is not None and at_shop.trace_id == at_payments.trace_id
    print(f"one trace id for both hops: {shared} ({at_shop.trace_id})")
    expected = (201, 403, "mtls+jwt", True)
    return (
        0
        if (allowed.status_code, refused.status_code, at_payments.proven_by, shared) == expected
        else 1
    )


def run_server(port: int) -> None:
    """Serve shop on ``port`` (and payments on a free port) until Ctrl-C."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # stop on Ctrl-C or SIGTERM, even if started with SIGINT ignored (as a background job)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.default_int_handler)
    with tempfile.TemporaryDirectory(prefix="zerotrust-two-services-") as tmp:
        folder = Path(tmp)
        (folder / "bundle.pem").write_bytes(ca.bundle.to_pem())
        svids[WEB].save(folder / "web.pem", folder / "web.key")
        (folder / "token").write_text(issuer.issue(subject=WEB, audience=SHOP, ttl=3600))
        with (
            payments_running() as payments_port,
            payments_client(payments_port) as payments,
        ):
            shop = make_server(
                "127.0.0.1",
                port,
                create_shop(payments),
                threaded=True,
                request_handler=PeerRequestHandler,
                ssl_context=server_context(svids[SHOP]),
            )
            print(f"shop serves https://localhost:{port} over mTLS; call it as {WEB}:")
            print(
                f"  curl --cacert {folder}/bundle.pem --cert {folder}/web.pem"
                f" --key {folder}/web.key -X POST"
                f' -H "Authorization: Bearer $(cat {folder}/token)"'
                f" https://localhost:{port}/orders",
                flush=True,
            )
            shop.serve_forever()  # returns on Ctrl-C or SIGTERM


def main() -> int:
    parser = argparse.ArgumentParser(description="shop calls payments, both over mTLS.")
    parser.add_argument("--serve", action="store_true", help="keep serving until Ctrl-C")
    parser.add_argument("--port", type=int, default=8443)
    args = parser.parse_args()
    if args.serve:
        run_server(args.port)
        return 0
    return self_check()


if __name__ == "__main__":
    sys.exit(main())
