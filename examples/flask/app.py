"""An orders API on Flask: the zerotrust extension decides on every request, ``@zt.require``
adds the scopes each view needs, and werkzeug's server serves it over direct mTLS.

    python examples/flask/app.py            # self-check: one allowed call, one refused call
    python examples/flask/app.py --serve    # keep serving on https://localhost:8443

werkzeug's server is Flask's development server; in production serve the same app with
gunicorn and ``zerotrust.adapters.gunicorn`` (see docs/flask.md).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flask import Flask
from werkzeug.serving import make_server

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
    ZeroTrustSSLContext,
    match,
    server_ssl_context,
)
from zerotrust.adapters.werkzeug import PeerRequestHandler
from zerotrust.dev import DevCA
from zerotrust.flask import ZeroTrust, current_principal
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

app = Flask("orders")
zt = ZeroTrust(app, guard=guard)


@app.get("/orders/<int:order_id>")
@zt.require(scopes=["orders:read"])  # below the route decorator
def get_order(order_id: int) -> dict[str, object]:
    return {
        "order": order_id,
        "caller": current_principal.id,
        "proven_by": current_principal.proven_by,
    }


@app.post("/orders/<int:order_id>/cancel")
@zt.require(scopes=["orders:write"])
def cancel_order(order_id: int) -> dict[str, object]:
    return {"cancelled": order_id, "by": current_principal.id}


def server_context() -> ZeroTrustSSLContext:
    """zerotrust's server context: every handshake needs an SVID of the trust domain."""
    return server_ssl_context(orders_svid, ca.bundle, authorizer=match.member_of(TRUST_DOMAIN))


def run_server(port: int) -> None:
    """Serve until Ctrl-C, and say how to call the service with curl."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # audit events as JSON lines
    # stop on Ctrl-C or SIGTERM, even if started with SIGINT ignored (as a background job)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.default_int_handler)
    with tempfile.TemporaryDirectory(prefix="zerotrust-flask-") as tmp:
        folder = Path(tmp)
        (folder / "bundle.pem").write_bytes(ca.bundle.to_pem())
        ca.issue_svid(WEB).save(folder / "web.pem", folder / "web.key")
        token = issuer.issue(subject=WEB, audience=ORDERS, scopes=["orders:read"], ttl=3600)
        (folder / "token").write_text(token)
        server = make_server(
            "127.0.0.1",
            port,
            app,
            threaded=True,
            request_handler=PeerRequestHandler,
            ssl_context=server_context(),
        )
        print(f"orders serves https://localhost:{port} over mTLS; call it as {WEB}:")
        print(
            f"  curl --cacert {folder}/bundle.pem --cert {folder}/web.pem --key {folder}/web.key"
            f' -H "Authorization: Bearer $(cat {folder}/token)" https://localhost:{port}/orders/7',
            flush=True,
        )
        server.serve_forever()  # returns on Ctrl-C or SIGTERM


@contextmanager
def running_in_background() -> Iterator[int]:
    """werkzeug's threaded server on a free loopback port, in a thread."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no access log in the self-check
    server = make_server(
        "127.0.0.1",
        0,
        app,
        threaded=True,
        request_handler=PeerRequestHandler,
        ssl_context=server_context(),
    )
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


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
    parser = argparse.ArgumentParser(description="An orders API on Flask, over mTLS.")
    parser.add_argument("--serve", action="store_true", help="keep serving until Ctrl-C")
    parser.add_argument("--port", type=int, default=8443)
    args = parser.parse_args()
    if args.serve:
        run_server(args.port)
        return 0
    return self_check()


if __name__ == "__main__":
    sys.exit(main())
