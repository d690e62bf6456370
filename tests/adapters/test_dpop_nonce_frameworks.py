"""Server-provided DPoP nonces through the framework adapters: the ``use_dpop_nonce`` refusal
reaches the client with its ``DPoP-Nonce`` header whichever framework answers it (the
uvicorn + httpx round trip is in tests/client/test_httpx_against_uvicorn.py, gRPC's trailing
metadata in tests/grpc_integration/test_server_sync.py, Django's in
tests/adapters/django/test_dpop_nonce.py)."""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

import pytest
from fastapi import FastAPI, Security, WebSocket
from flask import Flask
from starlette.websockets import WebSocketDisconnect

from tests.adapters.asgi._support import client as asgi_client
from zerotrust import (
    Authenticator,
    Callers,
    DPoPConfig,
    DPoPNonces,
    FixedClock,
    Guard,
    MemorySink,
    Policy,
    Principal,
    Rule,
    TokenIssuer,
    TokenVerifier,
)
from zerotrust.fastapi import ZeroTrust as FastAPIZeroTrust
from zerotrust.flask import RequestRefused
from zerotrust.flask import ZeroTrust as FlaskZeroTrust
from zerotrust.httpx import dpop_proof
from zerotrust.tokens import PrivateJWK

ORIGIN = "https://api.example"
CHALLENGE = 'DPoP realm="orders", algs="ES256", error="use_dpop_nonce"'


class Service:
    def __init__(self) -> None:
        self.clock = FixedClock(dt.datetime.now(dt.timezone.utc))
        self.nonces = DPoPNonces(secrets.token_bytes(32))
        self.issuer = TokenIssuer(
            PrivateJWK.generate("ES256"), issuer="https://issuer.example", clock=self.clock
        )
        self.holder = PrivateJWK.generate("ES256")
        self.sink = MemorySink()
        verifier = TokenVerifier(
            issuer="https://issuer.example",
            audience="orders",
            keys=self.issuer.jwks(),
            algorithms=["ES256"],
            clock=self.clock,
        )
        dpop = DPoPConfig(algorithms=["ES256"], origins=[ORIGIN], nonces=self.nonces)
        self.guard = Guard(
            authenticator=Authenticator(tokens=verifier, dpop=dpop, clock=self.clock),
            policy=Policy([Rule(id="any", callers=[Callers(subjects=["*"])])]),
            audit=self.sink,
            service="orders",
            clock=self.clock,
        )
        self.token = self.issuer.issue(
            subject="svc-a",
            audience="orders",
            ttl=600,
            extra_claims={"cnf": {"jkt": self.holder.thumbprint()}},
        )

    def headers(self, nonce: str | None) -> dict[str, str]:
        proof = dpop_proof(
            self.holder,
            method="GET",
            url=f"{ORIGIN}/orders/7",
            access_token=self.token,
            nonce=nonce,
            clock=self.clock,
        )
        return {"Authorization": f"DPoP {self.token}", "DPoP": proof}


def flask_client(service: Service) -> Any:
    app = Flask("orders")
    FlaskZeroTrust(app, guard=service.guard)

    @app.get("/orders/<int:order_id>")
    def order(order_id: int) -> dict[str, Any]:
        return {"order": order_id}

    return app.test_client()


def _guarded_route(app: FastAPI, zt: FastAPIZeroTrust) -> Any:
    """``app`` with ``GET /orders/{order_id}`` behind the ``zt`` dependency, as a test client."""

    @app.get("/orders/{order_id}")
    async def order(
        order_id: int,
        caller: Principal = Security(zt),  # noqa: B008
    ) -> dict[str, Any]:
        return {"order": order_id}

    return asgi_client(app)


def fastapi_client(service: Service) -> Any:
    app = FastAPI(exception_handlers=FastAPIZeroTrust.exception_handlers)
    return _guarded_route(app, FastAPIZeroTrust(service.guard))


def fastapi_middleware_client(service: Service) -> Any:
    app = FastAPI()
    FastAPIZeroTrust(service.guard).install(app)

    @app.get("/orders/{order_id}")
    async def order(order_id: int) -> dict[str, Any]:
        return {"order": order_id}

    return asgi_client(app)


@pytest.mark.parametrize(
    "client_for",
    [flask_client, fastapi_client, fastapi_middleware_client],
    ids=["flask", "fastapi dependency", "fastapi middleware"],
)
def test_the_challenge_carries_the_nonce(client_for: Any) -> None:
    service = Service()
    client = client_for(service)
    refused = client.get("/orders/7", headers=service.headers(None))
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"] == CHALLENGE
    assert refused.headers["Cache-Control"] == "no-store"
    body = refused.json() if callable(refused.json) else refused.json  # starlette, flask
    assert body == {
        "error": "use_dpop_nonce",
        "error_description": "resource server requires nonce in DPoP proof",
    }
    nonce = refused.headers["DPoP-Nonce"]
    allowed = client.get("/orders/7", headers=service.headers(nonce))
    assert allowed.status_code == 200
    assert "DPoP-Nonce" not in allowed.headers
    assert [e.reason for e in service.sink.events] == ["use_dpop_nonce", "allowed_by_rule"]


def test_a_flask_refusal_handler_of_its_own_still_sends_the_nonce() -> None:
    """An application's ``RequestRefused`` handler writes its own body: the challenge and the
    nonce are added to its answer, or the client could never satisfy the refusal."""
    service = Service()
    app = Flask("orders")
    FlaskZeroTrust(app, guard=service.guard)

    @app.errorhandler(RequestRefused)
    def refused_as_we_like(exc: RequestRefused) -> tuple[dict[str, Any], int]:
        return {"denied": exc.outcome.error.code if exc.outcome.error else None}, exc.status

    @app.get("/orders/<int:order_id>")
    def order(order_id: int) -> dict[str, Any]:
        return {"order": order_id}

    client = app.test_client()
    refused = client.get("/orders/7", headers=service.headers(None))
    assert refused.status_code == 401 and refused.json == {"denied": "use_dpop_nonce"}
    assert refused.headers["WWW-Authenticate"] == CHALLENGE
    nonce = refused.headers["DPoP-Nonce"]
    assert client.get("/orders/7", headers=service.headers(nonce)).status_code == 200


@pytest.mark.parametrize("install", ["middleware", "dependency"])
def test_a_websocket_handshake_is_closed_with_the_reason(install: str) -> None:
    """A handshake carries no header back: it is closed with 1008 and the reason
    ``use_dpop_nonce``, before the endpoint runs."""
    service = Service()
    zt = FastAPIZeroTrust(service.guard)
    app = FastAPI()
    if install == "middleware":
        zt.install(app)

        @app.websocket("/orders/7")
        async def feed(ws: WebSocket) -> None:  # pragma: no cover - never reached
            await ws.accept()
    else:

        @app.websocket("/orders/7")
        async def feed_dep(
            ws: WebSocket,
            caller: Principal = Security(zt),  # noqa: B008
        ) -> None:  # pragma: no cover - never reached
            await ws.accept()

    headers = service.headers(None)  # the handshake is a GET
    with (
        pytest.raises(WebSocketDisconnect) as closed,
        asgi_client(app).websocket_connect("/orders/7", headers=headers),
    ):
        pass  # pragma: no cover
    assert (closed.value.code, closed.value.reason) == (1008, "use_dpop_nonce")
    assert [e.reason for e in service.sink.events] == ["use_dpop_nonce"]


def fastapi_both_client(service: Service) -> Any:
    """The middleware decides, the dependency reuses its decision: the nonce is sent once."""
    zt = FastAPIZeroTrust(service.guard)
    app = FastAPI()
    zt.install(app)
    return _guarded_route(app, zt)


def wsgi_client(service: Service) -> Any:
    """A plain WSGI application behind zerotrust's WSGI middleware (werkzeug's test client)."""
    from werkzeug.test import Client

    from zerotrust.wsgi import ZeroTrustMiddleware

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    return Client(ZeroTrustMiddleware(app, guard=service.guard))


@pytest.mark.parametrize(
    "client_for",
    [flask_client, fastapi_client, fastapi_middleware_client, fastapi_both_client, wsgi_client],
    ids=["flask", "fastapi dependency", "fastapi middleware", "fastapi both", "wsgi"],
)
def test_a_success_brings_the_next_nonce(client_for: Any) -> None:
    """RFC 9449 8.2: a proof with the previous window's nonce is accepted, and the response
    carries the current nonce; a proof with the current one gets none."""
    service = Service()
    client = client_for(service)
    nonce = service.nonces.issue(service.clock.now().timestamp())
    current = client.get("/orders/7", headers=service.headers(nonce))
    assert current.status_code == 200 and "DPoP-Nonce" not in current.headers
    service.clock.advance(service.nonces.lifetime)
    earlier = client.get("/orders/7", headers=service.headers(nonce))
    assert earlier.status_code == 200
    fresh = earlier.headers["DPoP-Nonce"]
    assert fresh == service.nonces.issue(service.clock.now().timestamp()) != nonce
    headers = earlier.headers
    listed = headers.getlist if hasattr(headers, "getlist") else headers.get_list  # werkzeug
    assert listed("DPoP-Nonce") == [fresh]  # once, also with the middleware and a dependency
    again = client.get("/orders/7", headers=service.headers(fresh))
    assert again.status_code == 200 and "DPoP-Nonce" not in again.headers
    assert {e.decision for e in service.sink.events} == {"allow"}


def _earlier_nonce(service: Service, method: str = "GET") -> tuple[dict[str, str], str]:
    """Headers of a request whose proof carries the previous window's nonce, and the nonce
    the response must bring."""
    nonce = service.nonces.issue(service.clock.now().timestamp())
    service.clock.advance(service.nonces.lifetime)
    proof = dpop_proof(
        service.holder,
        method=method,
        url=f"{ORIGIN}/orders/7",
        access_token=service.token,
        nonce=nonce,
        clock=service.clock,
    )
    headers = {"Authorization": f"DPoP {service.token}", "DPoP": proof}
    return headers, service.nonces.issue(service.clock.now().timestamp())


RESPONSES = ["data", "streamed", "file", "raises", "no content"]


def flask_answering(service: Service, answer: str, path: Any) -> Any:
    from flask import Response as FlaskResponse
    from flask import send_file, stream_with_context

    app = Flask("orders")
    FlaskZeroTrust(app, guard=service.guard)

    @app.get("/orders/<int:order_id>")
    def order(order_id: int) -> Any:
        if answer == "streamed":
            return FlaskResponse(stream_with_context(iter(["a", "b"])))
        if answer == "file":
            return send_file(path)
        if answer == "raises":
            raise RuntimeError("the handler failed")
        if answer == "no content":
            return "", 204
        return {"order": order_id}

    return app.test_client()


def starlette_answering(service: Service, answer: str, path: Any) -> Any:
    """A Starlette application mounted in another, behind zerotrust's ASGI middleware."""
    from starlette.applications import Starlette
    from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
    from starlette.routing import Mount, Route

    from zerotrust.asgi import ZeroTrustMiddleware

    async def body() -> Any:
        yield b"a"
        yield b"b"

    async def order(request: Any) -> Response:
        if answer == "streamed":
            return StreamingResponse(body())
        if answer == "file":
            return FileResponse(path)
        if answer == "raises":
            raise RuntimeError("the handler failed")
        if answer == "no content":
            return Response(status_code=204)
        return JSONResponse({"order": 7})

    inner = Starlette(routes=[Route("/{order_id:int}", order)])
    app = Starlette(routes=[Mount("/orders", app=inner)])
    guarded = ZeroTrustMiddleware(app, guard=service.guard)
    return asgi_client(guarded, raise_server_exceptions=False)


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("answer", RESPONSES)
@pytest.mark.parametrize(
    "client_for", [flask_answering, starlette_answering], ids=["flask", "asgi, mounted app"]
)
def test_every_kind_of_response_brings_the_next_nonce(
    client_for: Any, answer: str, method: str, tmp_path: Any
) -> None:
    """The current nonce reaches the client whatever the handler answers: a streamed body, a
    file the server may send itself, a failure (500), no content, and to HEAD too; once."""
    path = tmp_path / "order.txt"
    path.write_bytes(b"order 7")
    service = Service()
    headers, fresh = _earlier_nonce(service, method)
    client = client_for(service, answer, path)
    if hasattr(client, "open"):  # flask
        with client.open("/orders/7", method=method, headers=headers) as response:
            status, nonces = response.status_code, response.headers.getlist("DPoP-Nonce")
    else:
        response = client.request(method, "/orders/7", headers=headers)
        status, nonces = response.status_code, response.headers.get_list("DPoP-Nonce")
    expected = {"raises": 500, "no content": 204}.get(answer, 200)
    assert (status, nonces) == (expected, [fresh])
    assert [e.decision for e in service.sink.events] == ["allow"]


def test_a_websocket_accept_is_left_as_the_application_sends_it() -> None:
    """A handshake whose proof carries the previous window's nonce is admitted; nothing is
    added to the application's ``websocket.accept``."""
    import asyncio

    from zerotrust.asgi import ZeroTrustMiddleware

    service = Service()
    headers, _ = _earlier_nonce(service)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept", "headers": [(b"x-app", b"1")]})
        await send({"type": "websocket.close", "code": 1000})

    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "scheme": "wss",
        "path": "/orders/7",
        "raw_path": b"/orders/7",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"api.example")]
        + [(name.lower().encode(), value.encode()) for name, value in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("api.example", 443),
        "subprotocols": [],
        "state": {},
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(ZeroTrustMiddleware(app, guard=service.guard)(scope, receive, send))
    assert sent == [
        {"type": "websocket.accept", "headers": [(b"x-app", b"1")]},
        {"type": "websocket.close", "code": 1000},
    ]
    assert [e.decision for e in service.sink.events] == ["allow"]
