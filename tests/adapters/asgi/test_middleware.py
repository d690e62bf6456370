"""ZeroTrustMiddleware on a FastAPI app, driven through the Starlette test client: every outcome."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.websockets import WebSocketDisconnect

from tests.adapters.asgi._support import (
    ADMIN,
    AUD,
    OTHER,
    WEB,
    bearer,
    call_asgi,
    client,
    expired_token,
    make_app,
    make_guard,
)
from zerotrust import PrivateJWK, TokenIssuer
from zerotrust.errors import ConfigurationError, public_code
from zerotrust.fastapi import ZeroTrust
from zerotrust.sources.jwks_http import RemoteJWKSource


@pytest.fixture(scope="module")
def key() -> PrivateJWK:
    return PrivateJWK.generate("ES256", kid="k1")


@pytest.fixture
def issuer(key: PrivateJWK) -> TokenIssuer:
    return TokenIssuer(key, issuer="https://issuer.example")


@pytest.fixture
def env(issuer: TokenIssuer) -> Any:
    guard, sink = make_guard(issuer)
    app = make_app(ZeroTrust(guard))
    with client(app) as http:
        yield http, sink


def token(issuer: TokenIssuer, subject: str = WEB, **kw: Any) -> str:
    kw.setdefault("audience", AUD)
    return issuer.issue(subject=subject, **kw)


def test_success_shows_the_principal_everywhere(env: Any, issuer: TokenIssuer) -> None:
    http, sink = env
    response = http.get("/orders/7", headers=bearer(token(issuer, scopes=["orders:read"])))
    assert response.status_code == 200
    assert response.json() == {"order": 7, "dependency": WEB, "state": WEB, "context": WEB}
    assert len(sink) == 1  # the dependency reused the middleware's decision
    event = sink.last
    assert event.decision == "allow" and event.route == "/orders/{order_id}"
    assert event.status == 200 and event.spiffe_id == WEB and event.proven_by == "jwt"


@pytest.mark.parametrize(
    ("case", "status", "challenge", "code"),
    [
        ("no credentials", 401, 'Bearer realm="orders"', "missing_credentials"),
        ("bad token", 401, 'Bearer realm="orders", error="invalid_token"', "malformed_token"),
        ("expired", 401, 'Bearer realm="orders", error="invalid_token"', "token_expired"),
        ("audience", 401, 'Bearer realm="orders", error="invalid_token"', "invalid_audience"),
        ("deny rule", 403, None, "access_denied"),
        ("other domain", 403, None, "access_denied"),
    ],
)
def test_refusals(
    env: Any, issuer: TokenIssuer, key: PrivateJWK, case: str, status: int, challenge: str | None,
    code: str,
) -> None:  # fmt: skip
    http, sink = env
    headers = {
        "no credentials": {},
        "bad token": bearer("abc.def.ghi"),
        "expired": bearer(expired_token(key, subject=WEB, scopes=["orders:read"])),
        "audience": bearer(token(issuer, audience="billing", scopes=["orders:read"])),
        "deny rule": bearer(token(issuer, "intruder", scopes=["orders:read"])),
        "other domain": bearer(token(issuer, OTHER, scopes=["orders:read"])),
    }[case]
    response = http.get("/orders/7", headers=headers)
    assert response.status_code == status
    assert response.headers.get("www-authenticate") == challenge
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {"error", "error_description"} and body["error"] == public_code(code)
    assert "Traceback" not in response.text
    assert len(sink) == 1 and sink.last.decision == "deny" and sink.last.status == status
    assert sink.last.route == "/orders/{order_id}"


def test_insufficient_scope_from_security_scopes(env: Any, issuer: TokenIssuer) -> None:
    http, sink = env
    response = http.get("/orders/7", headers=bearer(token(issuer, scopes=["orders:list"])))
    assert response.status_code == 403
    assert response.headers["www-authenticate"] == (
        'Bearer realm="orders", error="insufficient_scope", scope="orders:read"'
    )
    assert response.json()["error"] == "insufficient_scope"
    allowed, refused = sink.events  # the app-wide policy allowed; the handler's scopes did not
    assert allowed.decision == "allow" and refused.decision == "deny"
    assert refused.reason == "insufficient_scope" and "handler_requirement" in refused.notes


def test_caller_not_allowed_by_handler_requirement(env: Any, issuer: TokenIssuer) -> None:
    http, sink = env
    assert http.post("/admin", headers=bearer(token(issuer))).status_code == 403
    assert sink.last.reason == "requirement_not_met"
    assert http.post("/admin", headers=bearer(token(issuer, ADMIN))).json() == {"admin": "ok"}


def test_dry_run_rule_is_recorded_not_enforced(env: Any, issuer: TokenIssuer) -> None:
    http, sink = env
    response = http.get("/reports", headers=bearer(token(issuer)))
    assert response.status_code == 200
    assert response.json() == {"who": WEB, "context": WEB}  # a sync handler sees it too
    assert sink.last.dry_run and sink.last.would_decide == "deny"


def test_rate_limited_once_per_request(env: Any, issuer: TokenIssuer) -> None:
    http, sink = env
    headers = bearer(token(issuer))
    assert http.get("/limited/a", headers=headers).status_code == 200  # one token, not two
    assert len(sink) == 1
    response = http.get("/limited/a", headers=headers)
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) >= 1
    assert response.json()["error"] == "rate_limited"


def test_keys_unavailable_is_503(issuer: TokenIssuer) -> None:
    # a real JWKS source pointed at a loopback port where nothing listens
    source = RemoteJWKSource("http://127.0.0.1:9/jwks.json", allow_http_loopback=True, timeout=2)
    try:
        guard, sink = make_guard(issuer, keys=source)
        with client(make_app(ZeroTrust(guard))) as http:
            response = http.get("/orders/7", headers=bearer(token(issuer, scopes=["x"])))
    finally:
        source.close()
    assert response.status_code == 503
    assert response.json()["error"] == "temporarily_unavailable"
    assert "www-authenticate" not in response.headers
    assert sink.last.status == 503


def test_websocket_allowed_and_refused(env: Any, issuer: TokenIssuer) -> None:
    http, sink = env
    with http.websocket_connect("/ws/lobby", headers=bearer(token(issuer))) as ws:
        assert ws.receive_json() == {"room": "lobby", "who": WEB}
    assert sink.last.kind == "websocket" and sink.last.route == "/ws/{room}"
    refused_headers = bearer(token(issuer, OTHER))
    with (
        pytest.raises(WebSocketDisconnect) as refused,
        http.websocket_connect("/ws/lobby", headers=refused_headers),
    ):
        pass  # pragma: no cover - the handshake is refused
    assert refused.value.code == 1008
    assert sink.last.decision == "deny" and sink.last.kind == "websocket"


def test_route_template_not_raw_path(env: Any, issuer: TokenIssuer) -> None:
    http, sink = env
    app = http.app
    good = bearer(token(issuer, scopes=["orders:read"]))
    assert http.get("/orders/123", headers=good).status_code == 200
    assert sink.last.route == "/orders/{order_id}"
    for trick in ["/orders/7/../admin", "//admin", "/orders/7/", "/orders//7", "/admin/."]:
        sink.clear()
        status, body = call_asgi(app, trick, list(good.items()))
        assert status == 403, trick  # no route matched: nothing in the policy applies
        assert b"no_allow_rule_matched" not in body  # terse body, reasons stay in the audit
        assert sink.last.route is None and sink.last.reason == "no_allow_rule_matched"


def test_exempt_routes_skip_the_guard(env: Any) -> None:
    http, sink = env
    assert http.get("/healthz").json() == {"ok": True, "principal": None}
    assert http.get("/openapi.json").status_code == 200
    assert len(sink) == 0
    status, _ = call_asgi(http.app, "//healthz", [])  # only the router's match is exempt
    assert status == 401


def test_an_exempt_template_covers_every_method_unless_the_entry_names_one(
    issuer: TokenIssuer,
) -> None:
    """``"/status"`` exempts every handler at that template, an operator's ``POST /status``
    next to the public ``GET /status`` too; ``"GET /status"`` exempts GET (and HEAD, which
    Starlette answers with the GET handler) and the POST is decided and audited."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from zerotrust.asgi import ZeroTrustMiddleware

    async def status(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"{request.method} served")

    for exempt, post_exempt in ((["/status"], True), (["GET /status"], False)):
        guard, sink = make_guard(issuer)
        routes = [
            Route("/status", status, methods=["GET"]),
            Route("/status", status, methods=["POST"]),
        ]
        app = Starlette(routes=routes)
        app.add_middleware(ZeroTrustMiddleware, guard=guard, exempt=exempt)
        with client(app) as http:
            assert http.get("/status").text == "GET served"
            assert http.head("/status").status_code == 200
            assert len(sink) == 0
            post = http.post("/status")
            if post_exempt:
                assert (post.text, len(sink)) == ("POST served", 0)
            else:
                assert post.status_code == 401
                assert (sink.last.decision, sink.last.method, sink.last.route) == (
                    "deny",
                    "POST",
                    "/status",
                )


def test_a_websocket_handshake_is_exempt_as_a_get(issuer: TokenIssuer) -> None:
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket

    from zerotrust.asgi import ZeroTrustMiddleware

    async def feed(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hello")
        await websocket.close()

    for exempt, admitted in ((["GET /feed"], True), (["POST /feed"], False)):
        guard, sink = make_guard(issuer)
        app = Starlette(routes=[WebSocketRoute("/feed", feed)])
        app.add_middleware(ZeroTrustMiddleware, guard=guard, exempt=exempt)
        with client(app) as http:
            if admitted:
                with http.websocket_connect("/feed") as ws:
                    assert ws.receive_text() == "hello"
                assert len(sink) == 0
            else:
                with pytest.raises(WebSocketDisconnect), http.websocket_connect("/feed"):
                    pass  # pragma: no cover - refused before it is accepted
                assert sink.last.decision == "deny"


@pytest.mark.parametrize(
    ("exempt", "message"),
    [
        (["GET status"], "neither a route template"),
        (["G(T /status"], "HTTP method"),
        ([""], "non-empty strings"),
        ([None], "non-empty strings"),
    ],
)
def test_exempt_entries_that_would_never_apply_are_refused(
    issuer: TokenIssuer, exempt: list[Any], message: str
) -> None:
    from starlette.applications import Starlette

    from zerotrust.asgi import ZeroTrustMiddleware
    from zerotrust.fastapi import ZeroTrust

    guard, _ = make_guard(issuer)
    with pytest.raises(ConfigurationError, match=message):
        ZeroTrustMiddleware(Starlette(), guard=guard, exempt=exempt)
    # refused by install() itself: Starlette builds the middleware on the first request, once
    # the server runs (uvicorn then answers every request 500)
    app = Starlette()
    with pytest.raises(ConfigurationError, match=message):
        ZeroTrust(guard).install(app, exempt=exempt)
    assert app.user_middleware == []


def test_exempt_entries_name_methods_per_template() -> None:
    from zerotrust.adapters.asgi import _exempt_routes

    assert _exempt_routes(["/healthz", "get /status", "DELETE /status", "POST /jobs"]) == {
        "/healthz": frozenset(),
        "/status": frozenset({"GET", "HEAD", "DELETE"}),
        "/jobs": frozenset({"POST"}),
    }
    # a bare template exempts every method, whatever else names it
    assert _exempt_routes(["POST /jobs", "/jobs", "GET /jobs"]) == {"/jobs": frozenset()}


def test_optional_authentication(env: Any, issuer: TokenIssuer) -> None:
    http, sink = env
    assert http.get("/public").json() == {"who": None}
    assert sink.last.decision == "allow" and sink.last.reason == "allowed_by_rule"
    assert http.get("/public", headers=bearer(token(issuer))).json() == {"who": WEB}
    assert http.get("/public", headers=bearer("abc.def.ghi")).status_code == 401


def test_too_many_header_lines(env: Any, issuer: TokenIssuer) -> None:
    http, sink = env
    headers = [(f"x-filler-{i}", "1") for i in range(260)]
    response = http.get("/orders/7", headers=headers)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert response.headers["www-authenticate"] == 'Bearer realm="orders", error="invalid_request"'
    assert sink.last.reason == "malformed_credentials"


def test_dpop_bound_token_checked_once_per_request(env: Any, issuer: TokenIssuer) -> None:
    from zerotrust.httpx import dpop_proof

    http, sink = env
    holder = PrivateJWK.generate("ES256")
    bound = token(
        issuer, scopes=["orders:read"], extra_claims={"cnf": {"jkt": holder.public().thumbprint()}}
    )
    url = "http://testserver/orders/7"  # the request's own scheme, host and path (htu)
    proof = dpop_proof(holder, method="GET", url=url, access_token=bound)
    headers = {"Authorization": f"DPoP {bound}", "DPoP": proof}
    response = http.get("/orders/7", headers=headers)
    assert response.status_code == 200  # the dependency did not replay the proof
    assert sink.last.proven_by == "dpop" and len(sink) == 1
    assert http.get("/orders/7", headers=headers).status_code == 401  # a real replay
    other = dpop_proof(holder, method="GET", url="http://testserver/orders/8", access_token=bound)
    refused = http.get("/orders/7", headers={"Authorization": f"DPoP {bound}", "DPoP": other})
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith('DPoP realm="orders"')
