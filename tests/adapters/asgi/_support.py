"""Shared pieces of the ASGI / FastAPI adapter tests: a policy, Guards with real tokens, an app,
the Starlette test client and a raw ASGI driver (for paths a client library would normalize)."""

import asyncio
import datetime as dt
import warnings
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, Security, WebSocket

from zerotrust import (
    Authenticator,
    Callers,
    FixedClock,
    Guard,
    MemorySink,
    MemoryStore,
    Operations,
    OTelSink,
    Policy,
    Principal,
    PrivateJWK,
    RateLimit,
    Rule,
    TokenIssuer,
    TokenVerifier,
    match,
)
from zerotrust.adapters._context import current_principal
from zerotrust.fastapi import ZeroTrust

with warnings.catch_warnings():  # starlette's notice that it prefers httpx2 over httpx
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`", UserWarning)
    from starlette.testclient import TestClient

ISS = "https://issuer.example"
AUD = "orders-api"
WEB = "spiffe://example.org/ns/shop/sa/web"
ADMIN = "spiffe://example.org/ns/ops/sa/admin"
OTHER = "spiffe://other.org/ns/shop/sa/web"
ROUTES = ["/orders/{order_id}", "/admin", "/ws/{room}", "/limited/{item}", "/reports", "/whoami"]


def make_policy(**kw: Any) -> Policy:
    return Policy(
        [
            Rule(id="deny-intruder", action="DENY", callers=[Callers(subjects=["intruder"])]),
            Rule(
                id="no-reports-yet",
                action="DENY",
                operations=[Operations(routes=["/reports"])],
                dry_run=True,
            ),
            Rule(
                id="example-org",
                callers=[Callers(trust_domains=["example.org"])],
                operations=[Operations(routes=ROUTES)],
            ),
            Rule(
                id="public",
                callers=[Callers(anonymous=True), Callers(trust_domains=["example.org"])],
                operations=[Operations(routes=["/public"])],
            ),
        ],
        id="orders",
        rate_limits=[
            RateLimit(
                "one-per-caller",
                rate=0.001,
                burst=1,
                operations=[Operations(routes=["/limited/*"])],
            )
        ],
        **kw,
    )


def make_guard(
    issuer: TokenIssuer, *, policy: Policy | None = None, keys: Any = None, **authn: Any
) -> tuple[Guard, MemorySink]:
    sink = MemorySink()
    verifier = TokenVerifier(
        issuer=ISS, audience=AUD, keys=keys or issuer.jwks(), algorithms=["ES256"]
    )
    guard = Guard(
        authenticator=Authenticator(tokens=verifier, **authn),
        policy=policy or make_policy(),
        audit=sink,
        store=MemoryStore(),
        service="orders",
    )
    return guard, sink


def audited_guard(*sinks: Any) -> tuple[TokenIssuer, Guard, MemorySink]:
    """An ES256 token issuer, and a Guard with the test policy that verifies its tokens and
    audits to ``OTelSink``, a ``MemorySink`` (returned) and ``sinks``."""
    issuer = TokenIssuer(PrivateJWK.generate("ES256", kid="k1"), issuer=ISS)
    verifier = TokenVerifier(issuer=ISS, audience=AUD, keys=issuer.jwks(), algorithms=["ES256"])
    memory = MemorySink()
    guard = Guard(
        authenticator=Authenticator(tokens=verifier),
        policy=make_policy(),
        audit=[OTelSink(), memory, *sinks],
        service="orders",
    )
    return issuer, guard, memory


def expired_token(issuer_key: Any, **claims: Any) -> str:
    past = FixedClock(dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=2))
    return TokenIssuer(issuer_key, issuer=ISS, clock=past).issue(audience=AUD, ttl=60, **claims)


def who(principal: Principal | None) -> str | None:
    return principal.id if principal is not None else None


def make_app(
    zt: ZeroTrust, *, middleware: bool = True, telemetry: dict[str, Any] | None = None
) -> FastAPI:
    """The application every test drives (with or without the middleware; ``telemetry``:
    FastAPI's own OpenTelemetry settings, FastAPI 0.142 and later)."""
    app = FastAPI(**({} if telemetry is None else {"telemetry": telemetry}))
    zt.install(app, middleware=middleware, exempt=["/healthz", "/openapi.json"])
    maybe = ZeroTrust(zt.guard, auto_error=False)
    Caller = Annotated[Principal, Security(zt)]

    @app.get("/orders/{order_id}")
    async def order(
        order_id: int,
        request: Request,
        principal: Annotated[Principal, Security(zt, scopes=["orders:read"])],
    ) -> dict[str, Any]:
        return {
            "order": order_id,
            "dependency": who(principal),
            "state": who(request.state.zerotrust_principal),
            "context": who(current_principal()),
        }

    @app.post("/admin", dependencies=[Depends(zt.require(callers=match.exact(ADMIN)))])
    async def admin() -> dict[str, str]:
        return {"admin": "ok"}

    @app.get("/limited/{item}")
    async def limited(item: str, principal: Caller) -> dict[str, Any]:
        return {"item": item, "who": who(principal)}

    @app.get("/reports")
    def reports(principal: Annotated[Principal, Depends(zt)]) -> dict[str, Any]:  # sync
        return {"who": who(principal), "context": who(current_principal())}

    @app.get("/public")
    async def public(principal: Annotated[Principal | None, Security(maybe)]) -> dict[str, Any]:
        return {"who": who(principal)}

    @app.get("/healthz")
    async def healthz(request: Request) -> dict[str, Any]:
        return {"ok": True, "principal": who(getattr(request.state, "zerotrust_principal", None))}

    @app.websocket("/ws/{room}")
    async def room(websocket: WebSocket, room: str, principal: Caller) -> None:
        await websocket.accept()
        await websocket.send_json({"room": room, "who": who(principal)})
        await websocket.close()

    return app


class _TestClient(TestClient):
    def __enter__(self) -> "_TestClient":
        try:
            return super().__enter__()  # type: ignore[return-value]
        except BaseException:  # the application failed to start: __exit__ never comes
            self._close_streams()
            raise

    def __exit__(self, *args: Any) -> None:
        try:
            super().__exit__(*args)
        finally:
            self._close_streams()

    def _close_streams(self) -> None:
        # Starlette < 0.38.6 leaves its lifespan streams open (anyio >= 4.4 warns)
        for name in ("stream_send", "stream_receive"):
            stapled = self.__dict__.get(name)
            if stapled is not None:
                stapled.send_stream.close()
                stapled.receive_stream.close()


def client(app: Any, **kw: Any) -> TestClient:
    return _TestClient(app, **kw)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def call_asgi(
    app: Any, path: str, headers: list[tuple[str, str]], **extra: Any
) -> tuple[int, bytes]:
    """One HTTP request straight into an ASGI app with the raw path exactly as given, as a
    server that does not normalize paths (uvicorn, hypercorn) would deliver it."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("ascii"),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver")]
        + [(n.lower().encode(), v.encode()) for n, v in headers],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "state": {},
        **extra,
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], body
