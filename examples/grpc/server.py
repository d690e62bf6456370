"""An orders service on grpc.aio: ``AioServerInterceptor`` decides on every RPC, ``@require``
adds the scopes a method needs, ``server_credentials`` serves the SVID over mTLS. Messages are
JSON through grpc's generic handlers, so there is no protobuf code to generate.

    python examples/grpc/server.py            # self-check: one allowed call, one refused call
    python examples/grpc/server.py --serve    # keep serving on localhost:8443
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import grpc

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
)
from zerotrust.dev import DevCA
from zerotrust.grpc import (
    AioServerInterceptor,
    aio_secure_channel,
    current_principal,
    require,
    server_credentials,
)
from zerotrust.tokens import PrivateJWK

TRUST_DOMAIN = "example.org"
ORDERS = "spiffe://example.org/ns/shop/sa/orders"  # this service
WEB = "spiffe://example.org/ns/shop/sa/web"  # the workload that calls it

# Development identities, made in memory: a CA for the trust domain and a token issuer. In
# production the SVIDs come from SPIRE (or files) and the tokens from your identity provider.
ca = DevCA.create(TRUST_DOMAIN)
issuer = TokenIssuer(PrivateJWK.generate("ES256"), issuer="https://issuer.example.org")
orders_svid = ca.issue_svid(ORDERS, dns_names=["localhost"])  # grpc checks the DNS name

events = MemorySink()
guard = Guard(
    authenticator=Authenticator(
        tokens=TokenVerifier(
            issuer="https://issuer.example.org",
            audience=ORDERS,  # the client channel asks for a token for the server's SPIFFE ID
            keys=issuer.jwks(),
            algorithms=["ES256"],
        ),
        bundles=ca.bundle,  # client certificates are re-verified against their trust domain
        require_mtls=True,
    ),
    policy=Policy(
        [
            Rule(
                id="shop-calls-orders",
                callers=[Callers(spiffe_ids=["spiffe://example.org/ns/shop/*"])],
                operations=[Operations(routes=["/shop.Orders/*"])],  # the full method names
            )
        ]
    ),
    audit=[events, LoggingSink()],  # kept in memory for the self-check, and JSON lines
    service="orders",
)


@require(scopes=["orders:read"])
async def get_order(request: dict[str, Any], context: grpc.aio.ServicerContext) -> dict[str, Any]:
    caller = current_principal()
    return {"order": request["id"], "caller": caller.id, "proven_by": caller.proven_by}


@require(scopes=["orders:write"])
async def cancel_order(
    request: dict[str, Any], context: grpc.aio.ServicerContext
) -> dict[str, Any]:
    return {"cancelled": request["id"], "by": current_principal().id}


def to_json(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode()


orders_service = grpc.method_handlers_generic_handler(
    "shop.Orders",
    {
        name: grpc.unary_unary_rpc_method_handler(
            handler, request_deserializer=json.loads, response_serializer=to_json
        )
        for name, handler in {"Get": get_order, "Cancel": cancel_order}.items()
    },
)


async def start_server(port: int) -> tuple[grpc.aio.Server, int]:
    # grpc binds with SO_REUSEPORT by default: switched off, the port is this server's alone
    server = grpc.aio.server(
        interceptors=[AioServerInterceptor(guard)], options=[("grpc.so_reuseport", 0)]
    )
    server.add_generic_rpc_handlers([orders_service])
    port = server.add_secure_port(f"localhost:{port}", server_credentials(orders_svid, ca.bundle))
    await server.start()
    return server, port


async def run_server(port: int) -> None:
    """Serve until Ctrl-C, and say how to call the service with examples/grpc/client.py."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # audit events as JSON lines
    with tempfile.TemporaryDirectory(prefix="zerotrust-grpc-") as tmp:
        folder = Path(tmp)
        (folder / "bundle.pem").write_bytes(ca.bundle.to_pem())
        ca.issue_svid(WEB).save(folder / "web.pem", folder / "web.key")
        token = issuer.issue(subject=WEB, audience=ORDERS, scopes=["orders:read"], ttl=3600)
        (folder / "token").write_text(token)
        server, port = await start_server(port)
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(signum, stop.set)
        print(f"orders serves localhost:{port} over mTLS; call it as {WEB}:")
        print(f"  python {Path(__file__).with_name('client.py')} localhost:{port} {folder}")
        sys.stdout.flush()
        await stop.wait()
        await server.stop(grace=1.0)


async def self_check() -> int:
    """Call the service once with the right scope and once without; print what happened."""
    server, port = await start_server(0)
    try:
        async with aio_secure_channel(
            f"localhost:{port}",
            svid=ca.issue_svid(WEB),
            bundles=ca.bundle,
            server_id=ORDERS,  # the server must present exactly this SPIFFE ID
            token_source=SelfIssuedTokenSource(issuer, subject=WEB, scopes=["orders:read"]),
        ) as channel:
            get = channel.unary_unary(
                "/shop.Orders/Get", request_serializer=to_json, response_deserializer=json.loads
            )
            cancel = channel.unary_unary(
                "/shop.Orders/Cancel", request_serializer=to_json, response_deserializer=json.loads
            )
            reply = await get({"id": 7}, timeout=10)
            print(f"allowed: /shop.Orders/Get -> OK {reply}")
            try:
                await cancel({"id": 7}, timeout=10)
            except grpc.aio.AioRpcError as exc:
                refused = exc.code()
                print(f"refused: /shop.Orders/Cancel -> {refused.name} {exc.details()}")
            else:
                refused = grpc.StatusCode.OK
                print("refused: /shop.Orders/Cancel -> OK (it should not have been allowed)")
    finally:
        await server.stop(grace=1.0)
    print("audit events:")
    for event in events.events:
        print(
            f"  {event.decision:<5} {event.reason:<19} {event.route}"
            f" caller={event.spiffe_id} proven_by={event.proven_by}"
        )
    return 0 if refused == grpc.StatusCode.PERMISSION_DENIED else 1


def main() -> int:
    parser = argparse.ArgumentParser(description="An orders service on grpc.aio, over mTLS.")
    parser.add_argument("--serve", action="store_true", help="keep serving until Ctrl-C")
    parser.add_argument("--port", type=int, default=8443)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(run_server(args.port))
        return 0
    return asyncio.run(self_check())


if __name__ == "__main__":
    sys.exit(main())
