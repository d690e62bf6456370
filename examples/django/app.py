"""An orders API on Django in one file: zerotrust's middleware decides on every request,
``@require`` adds the scopes each view needs, and uvicorn serves Django's ASGI application over
direct mTLS.

    python examples/django/app.py            # self-check: one allowed call, one refused call
    python examples/django/app.py --serve    # keep serving on https://localhost:8443

In a real project the Guard lives in a module of its own and ``settings.py`` names it:
``ZEROTRUST = {"GUARD": "myproject.security.guard"}`` (see docs/django.md).
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
from contextlib import contextmanager, suppress
from pathlib import Path

import django
import uvicorn
from django.conf import settings
from django.core.asgi import get_asgi_application
from django.http import JsonResponse
from django.urls import path

from zerotrust import (
    Authenticator,
    Callers,
    Guard,
    LoggingSink,
    MemorySink,
    Operations,
    Policy,
    Rule,
    SelfIssuedTokenSource,
    TokenIssuer,
    TokenVerifier,
    match,
    server_ssl_context,
)
from zerotrust.asgi import ZeroTrustUvicornConfig, serve
from zerotrust.dev import DevCA
from zerotrust.django import require
from zerotrust.httpx import Client
from zerotrust.tokens import PrivateJWK

TRUST_DOMAIN = "example.org"
ORDERS = "spiffe://example.org/ns/shop/sa/orders"  # this service
WEB = "spiffe://example.org/ns/shop/sa/web"  # the workload that calls it

# Development identities, made in memory: a CA for the trust domain and a token issuer. In
# production the SVIDs come from SPIRE (or files) and the tokens from your identity provider.
ca = DevCA.create(TRUST_DOMAIN)
issuer = TokenIssuer(PrivateJWK.generate("ES256"), issuer="https://issuer.example.org")
orders_svid = ca.issue_svid(ORDERS, dns_names=["localhost"])

events = MemorySink()
guard = Guard(
    authenticator=Authenticator(
        tokens=TokenVerifier(
            issuer="https://issuer.example.org",
            audience=ORDERS,
            keys=issuer.jwks(),
            algorithms=["ES256"],
        ),
        bundles=ca.bundle,
        require_mtls=True,  # a token alone is not enough: the caller's SVID must be presented
    ),
    policy=Policy(
        [
            Rule(
                id="shop-calls-orders",
                callers=[Callers(spiffe_ids=["spiffe://example.org/ns/shop/*"])],
                operations=[Operations(routes=["/orders/{order_id}", "/orders/{order_id}/cancel"])],
            )
        ]
    ),
    audit=[events, LoggingSink()],  # kept in memory for the self-check, and JSON lines
    service="orders",
)

settings.configure(
    ALLOWED_HOSTS=["localhost", "127.0.0.1"],
    ROOT_URLCONF=__name__,  # the URL patterns below
    MIDDLEWARE=["zerotrust.django.ZeroTrustMiddleware"],
    ZEROTRUST={"GUARD": guard},
)
django.setup()


@require(scopes=["orders:read"])
def get_order(request, order_id):
    caller = request.principal  # the verified caller, set by the middleware
    return JsonResponse({"order": order_id, "caller": caller.id, "proven_by": caller.proven_by})


@require(scopes=["orders:write"])
def cancel_order(request, order_id):
    return JsonResponse({"cancelled": order_id, "by": request.principal.id})


urlpatterns = [
    path("orders/<int:order_id>", get_order),
    path("orders/<int:order_id>/cancel", cancel_order),
]
application = get_asgi_application()


def run_server(port: int) -> None:
    """Serve until Ctrl-C, and say how to call the service with curl."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # audit events as JSON lines
    # stop on Ctrl-C or SIGTERM, even if started with SIGINT ignored (as a background job)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.default_int_handler)
    with tempfile.TemporaryDirectory(prefix="zerotrust-django-") as tmp:
        folder = Path(tmp)
        (folder / "bundle.pem").write_bytes(ca.bundle.to_pem())
        ca.issue_svid(WEB).save(folder / "web.pem", folder / "web.key")
        token = issuer.issue(subject=WEB, audience=ORDERS, scopes=["orders:read"], ttl=3600)
        (folder / "token").write_text(token)
        print(f"orders serves https://localhost:{port} over mTLS; call it as {WEB}:")
        print(
            f"  curl --cacert {folder}/bundle.pem --cert {folder}/web.pem --key {folder}/web.key"
            f' -H "Authorization: Bearer $(cat {folder}/token)" https://localhost:{port}/orders/7',
            flush=True,
        )
        with suppress(KeyboardInterrupt):  # Ctrl-C or SIGTERM, once uvicorn has shut down
            serve(
                application,
                svid=orders_svid,
                bundles=ca.bundle,
                authorizer=match.member_of(TRUST_DOMAIN),  # who may connect at all
                host="127.0.0.1",
                port=port,
                lifespan="off",  # Django's ASGI application has no lifespan events
            )


@contextmanager
def running_in_background() -> Iterator[int]:
    """uvicorn with zerotrust's server context on a free loopback port, in a thread."""
    context = server_ssl_context(orders_svid, ca.bundle, authorizer=match.member_of(TRUST_DOMAIN))
    listener = socket.create_server(("127.0.0.1", 0))
    config = ZeroTrustUvicornConfig(
        application, ssl_context=context, lifespan="off", log_config=None
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]})
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        yield listener.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join()
        listener.close()


def self_check() -> int:
    """Call the service once with the right scope and once without; print what happened."""
    tokens = SelfIssuedTokenSource(issuer, subject=WEB, scopes=["orders:read"])
    with (
        running_in_background() as port,
        Client(
            svid=ca.issue_svid(WEB),
            bundles=ca.bundle,
            server_id=ORDERS,  # the server must present exactly this SPIFFE ID
            token_source=tokens,
            audience=ORDERS,
            base_url=f"https://localhost:{port}",
        ) as client,
    ):
        allowed = client.get("/orders/7")
        print(f"allowed: GET /orders/7 -> {allowed.status_code} {allowed.json()}")
        refused = client.post("/orders/7/cancel")
        print(f"refused: POST /orders/7/cancel -> {refused.status_code} {refused.json()}")
        print(f"         WWW-Authenticate: {refused.headers['www-authenticate']}")
    print("audit events:")
    for event in events.events:
        print(
            f"  {event.decision:<5} {event.reason:<19} {event.method} {event.route}"
            f" caller={event.spiffe_id} proven_by={event.proven_by}"
        )
    return 0 if (allowed.status_code, refused.status_code) == (200, 403) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description="An orders API on Django, over mTLS.")
    parser.add_argument("--serve", action="store_true", help="keep serving until Ctrl-C")
    parser.add_argument("--port", type=int, default=8443)
    args = parser.parse_args()
    if args.serve:
        run_server(args.port)
        return 0
    return self_check()


if __name__ == "__main__":
    sys.exit(main())
