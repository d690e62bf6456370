"""zerotrust's httpx clients against a real zerotrust server: FastAPI behind the zerotrust
middleware, served by uvicorn with direct mTLS (the step-4 server), over loopback.

What the other client tests check against a small stdlib server is checked here end to end:
the token attached and verified by the Guard, one re-mint after the server refuses a revoked
token, retries of 503 + Retry-After for a GET and none for a POST, and the trace id of the
client's span in the server's audit event.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from starlette.requests import Request

from tests.adapters.asgi._servers import uvicorn_server
from tests.client.conftest import CLIENT_ID, SERVER_ID
from zerotrust import (
    Authenticator,
    Callers,
    DPoPConfig,
    DPoPNonces,
    Guard,
    MemorySink,
    MemoryStore,
    Policy,
    Rule,
    SelfIssuedTokenSource,
    StaticTokenSource,
    TokenVerifier,
    X509Svid,
    match,
    server_ssl_context,
)
from zerotrust.dev import DevCA
from zerotrust.fastapi import ZeroTrust, current_principal
from zerotrust.httpx import AsyncClient, Client, RetryPolicy
from zerotrust.tokens import PrivateJWK, TokenIssuer

pytestmark = pytest.mark.network

ISSUER = "https://issuer.example"
AUDIENCE = "spiffe://example.org/ns/shop/sa/api"


class World:
    """The server side: the Guard, its store and audit trail, and the 503 counters."""

    def __init__(self, ca: DevCA, dpop: DPoPConfig | None = None) -> None:
        self.issuer = TokenIssuer(PrivateJWK.generate("ES256"), issuer=ISSUER)
        self.store = MemoryStore()
        self.sink = MemorySink()
        verifier = TokenVerifier(
            issuer=ISSUER, audience=AUDIENCE, keys=self.issuer.jwks(), algorithms=["ES256"]
        )
        policy = Policy([Rule(id="shop", callers=[Callers(trust_domains=["example.org"])])])
        self.guard = Guard(
            authenticator=Authenticator(
                tokens=verifier, bundles=ca.bundle, dpop=dpop if dpop is not None else DPoPConfig()
            ),
            policy=policy,
            store=self.store,
            audit=self.sink,
            service="api",
        )
        self.busy: dict[str, int] = {"GET": 0, "POST": 0}
        self.lock = threading.Lock()

    def app(self) -> FastAPI:
        app = FastAPI()
        ZeroTrust(self.guard).install(app)

        @app.get("/whoami")
        async def whoami() -> dict[str, Any]:
            principal = current_principal()
            assert principal is not None
            return {
                "id": principal.id,
                "proven_by": principal.proven_by,
                "jti": principal.token_jti,
            }

        @app.api_route("/busy", methods=["GET", "POST"])
        async def busy(request: Request) -> JSONResponse:
            with self.lock:
                self.busy[request.method] += 1
                calls = self.busy[request.method]
            if request.method == "POST" or calls < 3:
                return JSONResponse({"busy": True}, status_code=503, headers={"Retry-After": "0"})
            return JSONResponse({"calls": calls})

        return app


@pytest.fixture
def world(ca: DevCA) -> World:
    return World(ca)


@pytest.fixture
def port(world: World, ca: DevCA, server_svid: X509Svid) -> Iterator[int]:
    context = server_ssl_context(server_svid, ca.bundle, authorizer=match.member_of("example.org"))
    with uvicorn_server(world.app(), context, "h11") as bound:
        yield bound


def options(world: World, ca: DevCA, client_svid: X509Svid) -> dict[str, Any]:
    return {
        "svid": client_svid,
        "bundles": ca.bundle,
        "server_id": SERVER_ID,
        "token_source": SelfIssuedTokenSource(world.issuer, subject=CLIENT_ID),
        "audience": AUDIENCE,
        "retry": RetryPolicy(attempts=3, backoff=0.001, max_backoff=0.01),
        "timeout": 30,
    }


def test_token_attached_revoked_and_re_minted_once(
    world: World, ca: DevCA, client_svid: X509Svid, port: int
) -> None:
    base = f"https://localhost:{port}"
    with Client(**options(world, ca, client_svid)) as client:
        first = client.get(f"{base}/whoami")
        assert first.status_code == 200
        assert first.json()["id"] == CLIENT_ID and first.json()["proven_by"] == "mtls+jwt"
        jti = first.json()["jti"]
        world.store.revoke_token(jti, expires_at=2**31)
        again = client.get(f"{base}/whoami")  # 401 invalid_token, a new token, sent once more
    assert again.status_code == 200 and again.json()["jti"] != jti
    decisions = [(e.decision, e.reason) for e in world.sink.events]
    assert decisions == [
        ("allow", "allowed_by_rule"),
        ("deny", "token_revoked"),
        ("allow", "allowed_by_rule"),
    ]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_503_retried_for_get_never_for_post(
    world: World, ca: DevCA, client_svid: X509Svid, port: int, mode: str
) -> None:
    base = f"https://localhost:{port}"

    def run_sync() -> tuple[httpx.Response, httpx.Response]:
        with Client(**options(world, ca, client_svid)) as client:
            return client.get(f"{base}/busy"), client.post(f"{base}/busy", json={"x": 1})

    async def run_async() -> tuple[httpx.Response, httpx.Response]:
        async with AsyncClient(**options(world, ca, client_svid)) as client:
            return await client.get(f"{base}/busy"), await client.post(f"{base}/busy", json={})

    got, posted = run_sync() if mode == "sync" else asyncio.run(run_async())
    assert got.status_code == 200 and got.json() == {"calls": 3}  # two 503s, then an answer
    assert posted.status_code == 503 and world.busy["POST"] == 1  # not idempotent: sent once


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_server_nonce_is_asked_for_once_then_used(
    ca: DevCA, client_svid: X509Svid, server_svid: X509Svid, mode: str
) -> None:
    """RFC 9449 §9 end to end: the Guard refuses the first proof (no nonce) with
    ``use_dpop_nonce`` and a ``DPoP-Nonce``; the client signs a new proof with it and sends the
    request once more, and puts the nonce in its next proofs without being asked again."""
    world = World(ca, dpop=DPoPConfig(nonces=DPoPNonces(secrets.token_bytes(32))))
    holder = PrivateJWK.generate("ES256")
    bound = world.issuer.issue(
        subject=CLIENT_ID,
        audience=AUDIENCE,
        ttl=600,
        extra_claims={"cnf": {"jkt": holder.thumbprint()}},
    )
    settings = options(world, ca, client_svid) | {
        "token_source": StaticTokenSource(bound),
        "dpop_key": holder,
    }
    context = server_ssl_context(server_svid, ca.bundle, authorizer=match.member_of("example.org"))

    def run_sync(base: str) -> list[httpx.Response]:
        with Client(**settings) as client:
            return [client.get(f"{base}/whoami") for _ in range(3)]

    async def run_async(base: str) -> list[httpx.Response]:
        async with AsyncClient(**settings) as client:
            return [await client.get(f"{base}/whoami") for _ in range(3)]

    with uvicorn_server(world.app(), context, "h11") as port:
        base = f"https://localhost:{port}"
        answers = run_sync(base) if mode == "sync" else asyncio.run(run_async(base))
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert {a.json()["proven_by"] for a in answers} == {"dpop"}
    assert [(e.decision, e.reason) for e in world.sink.events] == [
        ("deny", "use_dpop_nonce"),
        ("allow", "allowed_by_rule"),
        ("allow", "allowed_by_rule"),
        ("allow", "allowed_by_rule"),
    ]


def test_one_trace_id_from_the_client_span_to_the_server_audit_event(
    world: World, ca: DevCA, client_svid: X509Svid, port: int
) -> None:
    tracer = TracerProvider().get_tracer("client")
    with Client(**options(world, ca, client_svid)) as client, tracer.start_as_current_span("call"):
        response = client.get(f"https://localhost:{port}/whoami")
        trace_id = format(trace.get_current_span().get_span_context().trace_id, "032x")
    assert response.status_code == 200
    event = world.sink.last
    assert event is not None and event.trace_id == trace_id and event.trace_trusted
