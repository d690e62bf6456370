"""zerotrust's httpx clients against a real zerotrust server: FastAPI behind the zerotrust
middleware, served by uvicorn with direct mTLS (the step-4 server), over loopback.

What the other client tests check against a small stdlib server is checked here end to end:
the token attached and verified by the Guard, one re-mint after the server refuses a revoked
token, retries of 503 + Retry-After for a GET and none for a POST, and the trace id of the
client's span in the server's audit event.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import threading
from collections.abc import AsyncIterator, Iterator
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
    Clock,
    DPoPConfig,
    DPoPNonces,
    FixedClock,
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
from zerotrust._clock import SYSTEM_CLOCK
from zerotrust.dev import DevCA
from zerotrust.fastapi import ZeroTrust, current_principal
from zerotrust.httpx import AsyncClient, Client, RetryPolicy
from zerotrust.tokens import PrivateJWK, TokenIssuer

pytestmark = pytest.mark.network

ISSUER = "https://issuer.example"
AUDIENCE = "spiffe://example.org/ns/shop/sa/api"


class World:
    """The server side: the Guard, its store and audit trail, and the 503 counters."""

    def __init__(
        self,
        ca: DevCA,
        dpop: DPoPConfig | None = None,
        *,
        clock: Clock = SYSTEM_CLOCK,
        issuer: TokenIssuer | None = None,
    ) -> None:
        self.issuer = issuer or TokenIssuer(PrivateJWK.generate("ES256"), issuer=ISSUER)
        self.store = MemoryStore()
        self.sink = MemorySink()
        verifier = TokenVerifier(
            issuer=ISSUER, audience=AUDIENCE, keys=self.issuer.jwks(), algorithms=["ES256"]
        )
        policy = Policy([Rule(id="shop", callers=[Callers(trust_domains=["example.org"])])])
        self.guard = Guard(
            authenticator=Authenticator(
                tokens=verifier,
                bundles=ca.bundle,
                dpop=dpop if dpop is not None else DPoPConfig(),
                clock=clock,
            ),
            policy=policy,
            store=self.store,
            audit=self.sink,
            service="api",
            clock=clock,
        )
        self.busy: dict[str, int] = {"GET": 0, "POST": 0}
        self.echoed: list[bytes] = []
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

        @app.post("/echo")
        async def echo(request: Request) -> dict[str, int]:
            body = await request.body()
            with self.lock:
                self.echoed.append(body)
            return {"length": len(body)}

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


def _bound(world: World, ca: DevCA, client_svid: X509Svid) -> dict[str, Any]:
    """Client settings with a token bound to a new DPoP key."""
    holder = PrivateJWK.generate("ES256")
    bound = world.issuer.issue(
        subject=CLIENT_ID,
        audience=AUDIENCE,
        ttl=600,
        extra_claims={"cnf": {"jkt": holder.thumbprint()}},
    )
    return options(world, ca, client_svid) | {
        "token_source": StaticTokenSource(bound),
        "dpop_key": holder,
    }


def _reasons(world: World) -> list[str]:
    return [e.reason for e in world.sink.events]


def _json_body(value: Any) -> bytes:
    """The body httpx sends for ``json=value`` (httpx < 0.28 puts spaces after separators)."""
    return httpx.Request("POST", "https://localhost/", json=value).content


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_nonce_challenge_resends_a_body_only_when_it_can_be_replayed(
    ca: DevCA, client_svid: X509Svid, server_svid: X509Svid, mode: str
) -> None:
    """A POST whose body is bytes is sent once more with the nonce; a streamed body is gone
    after the first attempt: the refusal is returned, the nonce kept for the next request."""
    world = World(ca, dpop=DPoPConfig(nonces=DPoPNonces(secrets.token_bytes(32))))
    settings = _bound(world, ca, client_svid)
    context = server_ssl_context(server_svid, ca.bundle, authorizer=match.member_of("example.org"))

    def chunks() -> Iterator[bytes]:
        yield from (b"a", b"b")

    async def achunks() -> AsyncIterator[bytes]:
        for chunk in (b"a", b"b"):
            yield chunk

    def run_sync(url: str) -> list[httpx.Response]:
        with Client(**settings) as client:
            return [
                client.post(url, content=chunks()),
                client.post(url, content=chunks()),
                client.post(url, json={"x": 1}),
            ]

    async def run_async(url: str) -> list[httpx.Response]:
        async with AsyncClient(**settings) as client:
            return [
                await client.post(url, content=achunks()),
                await client.post(url, content=achunks()),
                await client.post(url, json={"x": 1}),
            ]

    with uvicorn_server(world.app(), context, "h11") as port:
        url = f"https://localhost:{port}/echo"
        answers = run_sync(url) if mode == "sync" else asyncio.run(run_async(url))
    first = answers[0]
    assert first.status_code == 401 and first.json()["error"] == "use_dpop_nonce"
    assert [a.status_code for a in answers[1:]] == [200, 200]
    assert world.echoed == [b"ab", _json_body({"x": 1})]
    assert _reasons(world) == ["use_dpop_nonce", "allowed_by_rule", "allowed_by_rule"]

    # a fresh client, a replayable body first: one challenge, the body sent once more
    seen = len(world.sink.events)
    with uvicorn_server(world.app(), context, "h11") as port, Client(**settings) as client:
        posted = client.post(f"https://localhost:{port}/echo", json={"y": 2})
    assert posted.status_code == 200 and world.echoed[-1] == _json_body({"y": 2})
    assert _reasons(world)[seen:] == ["use_dpop_nonce", "allowed_by_rule"]


def _nonce_world(
    ca: DevCA, client_svid: X509Svid, server_svid: X509Svid
) -> tuple[FixedClock, DPoPNonces, World, dict[str, Any], Any]:
    """A server requiring 60-second nonces on a fixed clock, client settings with a bound
    token, and the server's TLS context."""
    clock = FixedClock()
    nonces = DPoPNonces(secrets.token_bytes(32), lifetime=60)
    world = World(ca, dpop=DPoPConfig(nonces=nonces), clock=clock)
    settings = _bound(world, ca, client_svid)
    context = server_ssl_context(server_svid, ca.bundle, authorizer=match.member_of("example.org"))
    return clock, nonces, world, settings, context


def test_a_nonce_gone_stale_between_requests_is_replaced_by_one_challenge(
    ca: DevCA, client_svid: X509Svid, server_svid: X509Svid
) -> None:
    clock, _, world, settings, context = _nonce_world(ca, client_svid, server_svid)
    with uvicorn_server(world.app(), context, "h11") as port, Client(**settings) as client:
        url = f"https://localhost:{port}/echo"
        assert client.post(url, json={"n": 1}).status_code == 200
        clock.advance(120)  # two windows: the nonce the client holds is stale
        assert client.post(url, json={"n": 2}).status_code == 200
        assert client.post(url, json={"n": 3}).status_code == 200
    assert _reasons(world) == [
        "use_dpop_nonce",
        "allowed_by_rule",
        "use_dpop_nonce",
        "allowed_by_rule",
        "allowed_by_rule",
    ]


def test_a_client_that_keeps_calling_is_challenged_once(
    ca: DevCA, client_svid: X509Svid, server_svid: X509Svid
) -> None:
    """RFC 9449 8.2: a success whose proof carried the previous window's nonce brings the
    current one, which the client uses next: a client calling at least once a window is never
    challenged again."""
    clock, nonces, world, settings, context = _nonce_world(ca, client_svid, server_svid)
    with uvicorn_server(world.app(), context, "h11") as port, Client(**settings) as client:
        url = f"https://localhost:{port}/echo"
        statuses = [client.post(url, json={"n": 0}).status_code]
        for n in range(1, 4):
            clock.advance(60)  # one window on: the nonce held is the previous window's
            answer = client.post(url, json={"n": n})
            statuses.append(answer.status_code)
            assert answer.headers["DPoP-Nonce"] == nonces.issue(clock.now().timestamp())
    assert statuses == [200] * 4
    assert _reasons(world) == ["use_dpop_nonce"] + ["allowed_by_rule"] * 4


@pytest.mark.parametrize("shared", [True, False], ids=["same secret", "different secrets"])
def test_replicas_behind_one_origin(
    ca: DevCA, client_svid: X509Svid, server_svid: X509Svid, shared: bool
) -> None:
    """Two replicas take turns answering one origin. With the same secret each accepts the
    other's nonce; with different secrets every request is refused, each sent at most twice
    (the challenge of the other replica is tried once), never in a loop."""
    secret = secrets.token_bytes(32)
    first = World(ca, dpop=DPoPConfig(nonces=DPoPNonces(secret)))
    other = secret if shared else secrets.token_bytes(32)
    second = World(ca, dpop=DPoPConfig(nonces=DPoPNonces(other)), issuer=first.issuer)
    apps = itertools.cycle([first.app(), second.app()])

    async def balancer(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":  # uvicorn's, not a request
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        await next(apps)(scope, receive, send)

    settings = _bound(first, ca, client_svid)
    context = server_ssl_context(server_svid, ca.bundle, authorizer=match.member_of("example.org"))
    with uvicorn_server(balancer, context, "h11") as port, Client(**settings) as client:
        url = f"https://localhost:{port}/echo"
        answers = [client.post(url, json={"n": n}) for n in range(3)]
    if shared:
        assert [a.status_code for a in answers] == [200, 200, 200]
        # the first is refused by one replica, sent again and allowed by the other
        assert _reasons(first) == ["use_dpop_nonce", "allowed_by_rule"]
        assert _reasons(second) == ["allowed_by_rule", "allowed_by_rule"]
    else:
        assert [a.status_code for a in answers] == [401, 401, 401]
        assert {a.json()["error"] for a in answers} == {"use_dpop_nonce"}
        assert _reasons(first) == _reasons(second) == ["use_dpop_nonce"] * 3
        assert first.echoed == second.echoed == []


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
