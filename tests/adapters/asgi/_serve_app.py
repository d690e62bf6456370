"""Run by test_serve.py in a subprocess: ``zerotrust.asgi.serve`` with a FastAPI app.

Usage: ``python _serve_app.py <dev CA directory> <uvicorn|hypercorn>``; serves on an ephemeral
loopback port (logged by the server) until SIGTERM.
"""

import sys
from typing import Any

from fastapi import FastAPI, Request

from zerotrust import Authenticator, Callers, Guard, MemorySink, Policy, Rule, match
from zerotrust.asgi import ZeroTrustMiddleware, serve
from zerotrust.dev import DevCA

ca = DevCA.load(sys.argv[1])
policy = Policy([Rule(id="mesh", callers=[Callers(trust_domains=["example.org"])])])
guard = Guard(authenticator=Authenticator(bundles=ca.bundle), policy=policy, audit=MemorySink())
app = FastAPI()
app.add_middleware(ZeroTrustMiddleware, guard=guard)


@app.get("/whoami")
async def whoami(request: Request) -> Any:
    return {"id": request.state.zerotrust_principal.id}


serve(
    app,
    svid=ca.issue_svid("spiffe://example.org/ns/shop/sa/orders", dns_names=["localhost"]),
    bundles=ca.bundle,
    authorizer=match.member_of("example.org"),
    host="127.0.0.1",
    port=0,
    server=sys.argv[2],  # type: ignore[arg-type]
)
