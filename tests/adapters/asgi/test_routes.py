"""Route templates are resolved as the router will dispatch: Starlette and FastAPI routing."""

from pathlib import Path
from typing import Annotated, Any

import pytest
from fastapi import APIRouter, FastAPI, Security
from fastapi import routing as fastapi_routing
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Host, Mount, Route, Router, WebSocketRoute

from tests.adapters.asgi._support import AUD, WEB, bearer, call_asgi, client
from zerotrust import (
    Authenticator,
    Callers,
    Guard,
    MemorySink,
    Operations,
    Policy,
    Principal,
    PrivateJWK,
    Rule,
    TokenIssuer,
    TokenVerifier,
)
from zerotrust.adapters import _routes as routes_module
from zerotrust.adapters._routes import route_template_for
from zerotrust.errors import ConfigurationError
from zerotrust.fastapi import ZeroTrust, ZeroTrustMiddleware


def scope(path: str, method: str = "GET", kind: str = "http", **extra: Any) -> dict[str, Any]:
    return {
        "type": kind, "method": method, "path": path, "root_path": "",
        "headers": [(b"host", b"api.example")], **extra,
    }  # fmt: skip


async def endpoint(request: Any) -> PlainTextResponse:  # pragma: no cover - never called
    return PlainTextResponse("")


async def plain_app(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover
    pass


def test_starlette_routes_mounts_and_hosts() -> None:
    app = Starlette(
        routes=[
            Route("/items/{item_id:int}", endpoint, methods=["GET"]),
            WebSocketRoute("/ws/{room}", endpoint),
            Mount("/api", routes=[Route("/orders/{order_id}", endpoint)]),
            Mount("/static", app=plain_app),
            Host("admin.example", app=Router(routes=[Route("/panel", endpoint)])),
            Route("/users/", endpoint),
        ]
    )
    assert route_template_for(app, scope("/items/7")) == "/items/{item_id}"
    assert route_template_for(app, scope("/items/7", "POST")) == "/items/{item_id}"  # 405
    assert route_template_for(app, scope("/items/x")) is None
    assert route_template_for(app, scope("/ws/lobby", kind="websocket")) == "/ws/{room}"
    assert route_template_for(app, scope("/ws/lobby")) is None  # not for http
    assert route_template_for(app, scope("/api/orders/7")) == "/api/orders/{order_id}"
    assert route_template_for(app, scope("/api/nothing")) is None
    assert route_template_for(app, scope("/static/css/site.css")) == "/static/{path}"
    assert route_template_for(app, scope("/users")) is None  # redirected to /users/
    host = scope("/panel", headers=[(b"host", b"admin.example")])
    assert route_template_for(app, host) == "/panel"
    assert route_template_for(app, scope("/panel")) is None  # other host


def test_a_host_serving_a_plain_application_covers_every_path_of_that_host() -> None:
    app = Starlette(
        routes=[
            Host("files.example", app=plain_app),
            Host("{tenant}.admin.example", app=Router(routes=[Route("/panel", endpoint)])),
        ]
    )
    files = scope("/a/b.txt", headers=[(b"host", b"files.example")])
    assert route_template_for(app, files) == "/{path}"
    tenant = scope("/panel", headers=[(b"host", b"acme.admin.example")])
    assert route_template_for(app, tenant) == "/panel"
    assert route_template_for(app, scope("/a/b.txt")) is None  # another host


def test_routers_nested_too_deeply_are_a_configuration_error() -> None:
    """Resolution is bounded: a template is never guessed, and never skipped."""

    def nested(depth: int) -> Any:
        inner: Any = Router(routes=[Route("/leaf", endpoint)])
        for _ in range(depth):
            inner = Router(routes=[Mount("/m", app=inner)])
        return inner

    path = "/m" * 16 + "/leaf"
    assert route_template_for(nested(16), scope(path)) == path
    with pytest.raises(ConfigurationError, match="nested too deeply"):
        route_template_for(nested(17), scope("/m" + path))


def test_mount_prefixes_lose_their_converters() -> None:
    # "/items/{item_id:int}" is "/items/{item_id}", in a Mount's own path as well
    sub = FastAPI()

    @sub.get("/items/{item_id}")
    async def item(item_id: int) -> None:  # pragma: no cover
        pass

    app = Starlette(
        routes=[
            Mount("/tenants/{tenant_id:int}", routes=[Route("/admin", endpoint)]),
            Mount("/files/{bucket:str}", app=plain_app),
            Mount("/t/{tid:int}", app=sub),
        ]
    )
    assert route_template_for(app, scope("/tenants/7/admin")) == "/tenants/{tenant_id}/admin"
    assert route_template_for(app, scope("/files/b1/a/b.txt")) == "/files/{bucket}/{path}"
    assert route_template_for(app, scope("/t/3/items/4")) == "/t/{tid}/items/{item_id}"


def test_a_deny_rule_behind_a_mount_with_a_converter_holds() -> None:
    issuer, allowing, sink = allow_all()
    deny = Rule(
        id="no-tenant-admin",
        action="DENY",
        operations=[Operations(routes=["/tenants/{tenant_id}/admin"])],
    )
    policy = Policy([*allowing.policy.rules, deny])
    guard = Guard(authenticator=allowing.authenticator, policy=policy, audit=sink)
    admin = Mount("/tenants/{tenant_id:int}", routes=[Route("/admin", endpoint)])
    app = Starlette(routes=[admin])
    app.add_middleware(ZeroTrustMiddleware, guard=guard)
    with client(app) as http:
        token = issuer.issue(subject=WEB, audience=AUD)
        response = http.get("/tenants/7/admin", headers=bearer(token))
    assert response.status_code == 403
    assert sink.last.route == "/tenants/{tenant_id}/admin"
    assert sink.last.rule_id == "no-tenant-admin"


@pytest.mark.parametrize("pattern", ["/secret", "/secret/", "/secret/*"])
@pytest.mark.parametrize("middleware", [True, False], ids=["middleware", "dependency"])
def test_a_route_with_a_trailing_slash_is_covered_however_a_rule_writes_it(
    middleware: bool, pattern: str
) -> None:
    """FastAPI keeps a route's trailing slash, Django drops it: the template has none, rules
    compare without one, and the exempt list names the route as the application writes it."""
    issuer, allowing, sink = allow_all()
    deny = Rule(id="no-secret", action="DENY", operations=[Operations(routes=[pattern])])
    policy = Policy([deny, *allowing.policy.rules])
    zt = ZeroTrust(Guard(authenticator=allowing.authenticator, policy=policy, audit=sink))
    app = FastAPI()

    @app.get("/secret/")
    async def secret(principal: Annotated[Principal, Security(zt)]) -> Any:
        return {"secret": True}  # pragma: no cover - refused

    @app.get("/healthz/")
    async def healthz() -> Any:
        return {"ok": True}

    zt.install(app, middleware=middleware, exempt=["/healthz/"] if middleware else ())
    with client(app) as http:
        token = issuer.issue(subject=WEB, audience=AUD)
        assert http.get("/secret/", headers=bearer(token)).status_code == 403
        assert (sink.last.route, sink.last.rule_id) == ("/secret", "no-secret")
        if middleware:
            assert http.get("/healthz/").status_code == 200
            assert sink.last.route == "/secret"  # exempt: no event


def test_fastapi_included_routers() -> None:
    app = FastAPI()
    v1 = APIRouter(prefix="/v1")
    admin = APIRouter(prefix="/admin")

    @v1.get("/orders/{order_id}")
    async def order(order_id: int) -> None:  # pragma: no cover
        pass

    @admin.delete("/users/{user_id}")
    async def delete_user(user_id: str) -> None:  # pragma: no cover
        pass

    @v1.websocket("/stream/{topic}")
    async def stream(topic: str) -> None:  # pragma: no cover
        pass

    v1.add_route("/plain/{name}", endpoint)  # Starlette's add_route: no router prefix
    v1.mount("/files", plain_app)
    v1.include_router(admin)
    app.include_router(v1)
    assert route_template_for(app, scope("/v1/orders/7")) == "/v1/orders/{order_id}"
    assert route_template_for(app, scope("/v1/admin/users/3", "DELETE")) == (
        "/v1/admin/users/{user_id}"
    )
    assert route_template_for(app, scope("/v1/admin/users/3")) == "/v1/admin/users/{user_id}"
    assert route_template_for(app, scope("/v1/stream/a", kind="websocket")) == (
        "/v1/stream/{topic}"
    )
    assert route_template_for(app, scope("/plain/x")) == "/plain/{name}"
    # FastAPI < 0.137 drops a mount when including its router: the app answers 404
    mounted = "/files/{path}" if hasattr(fastapi_routing, "_IncludedRouter") else None
    assert route_template_for(app, scope("/files/a/b")) == mounted
    assert route_template_for(app, scope("/v1/plain/x")) is None  # FastAPI answers 404 too
    assert route_template_for(app, scope("/v1/admin/other")) is None
    assert route_template_for(app, scope("/docs")) == "/docs"


@pytest.mark.skipif(not hasattr(APIRouter, "frontend"), reason="FastAPI < 0.138: no frontend()")
def test_fastapi_frontend_routes(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<html></html>")
    app = FastAPI()
    ui = APIRouter(prefix="/ui")
    ui.frontend("/", directory=tmp_path)
    app.include_router(ui)
    app.frontend("/docs-site", directory=tmp_path)

    @app.get("/ui/api/{x}")
    async def api(x: str) -> None:  # pragma: no cover
        pass

    assert route_template_for(app, scope("/ui/api/1")) == "/ui/api/{x}"
    assert route_template_for(app, scope("/ui/settings/profile")) == "/ui/{path}"
    assert route_template_for(app, scope("/docs-site/a.html")) == "/docs-site/{path}"


class Opaque:
    """A route type zerotrust does not know, without a path."""

    def matches(self, scope: Any) -> Any:
        from starlette.routing import Match

        return Match.FULL, {}


def allow_all() -> tuple[TokenIssuer, Guard, MemorySink]:
    """An issuer, and a Guard that lets in every caller of example.org (audited in memory)."""
    issuer = TokenIssuer(PrivateJWK.generate("ES256"), issuer="https://issuer.example")
    verifier = TokenVerifier(
        issuer="https://issuer.example", audience=AUD, keys=issuer.jwks(), algorithms=["ES256"]
    )
    sink = MemorySink()
    everyone = Policy([Rule(id="everyone", callers=[Callers(trust_domains=["example.org"])])])
    guard = Guard(authenticator=Authenticator(tokens=verifier), policy=everyone, audit=sink)
    return issuer, guard, sink


def test_unknown_matching_route_is_refused() -> None:
    app = Starlette(routes=[Route("/known", endpoint)])
    app.router.routes.append(Opaque())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        route_template_for(app, scope("/anything"))
    assert route_template_for(app, scope("/known")) == "/known"
    issuer, guard, sink = allow_all()
    middleware = ZeroTrustMiddleware(app, guard=guard)
    token = issuer.issue(subject=WEB, audience=AUD)
    status, body = call_asgi(middleware, "/anything", list(bearer(token).items()))
    assert status == 500 and b"configuration_error" in body  # refused, never routeless
    assert sink.last.decision == "deny" and sink.last.route is None


@pytest.mark.parametrize("middleware", [True, False], ids=["middleware", "dependency"])
def test_a_route_that_cannot_be_read_is_refused_and_audited(
    middleware: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading the matched route breaks (as it did with FastAPI 0.138.0-0.138.2, whose
    frontend route groups took other arguments): the request is refused and audited, never
    served unchecked nor answered by a bare 500."""
    issuer, guard, sink = allow_all()
    zt = ZeroTrust(guard)
    app = FastAPI()

    @app.get("/known")
    async def known(principal: Annotated[Principal, Security(zt)]) -> dict[str, str]:
        return {"ok": "yes"}

    zt.install(app, middleware=middleware)

    def broken(*args: Any) -> str:
        raise TypeError("_match() got an unexpected keyword argument 'prefix'")

    monkeypatch.setattr(routes_module, "_describe", broken)
    with pytest.raises(ConfigurationError, match="TypeError"):
        route_template_for(app, scope("/known"))
    token = issuer.issue(subject=WEB, audience=AUD)
    status, body = call_asgi(app, "/known", list(bearer(token).items()))
    assert status == 500 and b"configuration_error" in body
    assert sink.last.decision == "deny" and sink.last.reason == "configuration_error"


def test_included_router_template_with_and_without_middleware() -> None:
    """A DENY rule on a prefixed route must hold whichever way zerotrust is installed."""
    issuer = TokenIssuer(PrivateJWK.generate("ES256"), issuer="https://issuer.example")
    verifier = TokenVerifier(
        issuer="https://issuer.example", audience=AUD, keys=issuer.jwks(), algorithms=["ES256"]
    )
    policy = Policy(
        [
            Rule(id="no-admin", action="DENY", operations=[Operations(routes=["/v1/admin/*"])]),
            Rule(id="everyone", callers=[Callers(trust_domains=["example.org"])]),
        ]
    )
    headers = bearer(issuer.issue(subject=WEB, audience=AUD))
    for middleware in (True, False):
        sink = MemorySink()
        guard = Guard(authenticator=Authenticator(tokens=verifier), policy=policy, audit=sink)
        zt = ZeroTrust(guard)
        app = FastAPI()
        zt.install(app, middleware=middleware)
        router = APIRouter(prefix="/v1")

        @router.get("/admin/{thing}")
        async def admin(thing: str, who: Annotated[Principal, Security(zt)]) -> Any:
            return {"thing": thing}  # pragma: no cover - denied

        @router.get("/public/{thing}")
        async def public(thing: str, who: Annotated[Principal, Security(zt)]) -> Any:
            return {"thing": thing}

        app.include_router(router)
        with client(app) as http:
            assert http.get("/v1/admin/x", headers=headers).status_code == 403
            assert sink.last.route == "/v1/admin/{thing}" and sink.last.rule_id == "no-admin"
            assert http.get("/v1/public/x", headers=headers).json() == {"thing": "x"}
            assert sink.last.route == "/v1/public/{thing}"


def test_the_first_route_matching_with_another_method_gives_the_template() -> None:
    """Two routes know the path, neither with this method: the router answers 405 from the
    first, and the request is decided under that route's template, not the last one's."""
    app = Starlette(
        routes=[
            Route("/items/{item_id:int}", endpoint, methods=["GET"]),
            Route("/items/{name}", endpoint, methods=["POST"]),
        ]
    )
    assert route_template_for(app, scope("/items/7", "DELETE")) == "/items/{item_id}"
    assert route_template_for(app, scope("/items/x", "DELETE")) == "/items/{name}"


def test_an_application_without_routes_has_no_template() -> None:
    assert route_template_for(Starlette(), scope("/anything")) is None


def test_a_route_whose_path_is_not_a_template_is_refused() -> None:
    """A route that matches but whose path is not an absolute template is not guessed at."""

    class Relative(Opaque):
        path = "orders/{order_id}"

    app = Starlette(routes=[Route("/known", endpoint)])
    app.router.routes.append(Relative())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="Relative"):
        route_template_for(app, scope("/orders/7"))


def test_hosts_nested_too_deeply_are_a_configuration_error() -> None:
    def nested(depth: int) -> Any:
        inner: Any = Router(routes=[Route("/leaf", endpoint)])
        for _ in range(depth):
            inner = Router(routes=[Host("{name}.example", app=inner)])
        return inner

    host = [(b"host", b"api.example")]
    assert route_template_for(nested(16), scope("/leaf", headers=host)) == "/leaf"
    with pytest.raises(ConfigurationError, match="nested too deeply"):
        route_template_for(nested(17), scope("/leaf", headers=host))


@pytest.mark.skipif(not hasattr(APIRouter, "frontend"), reason="FastAPI < 0.138: no frontend()")
def test_a_trailing_slash_redirect_is_not_taken_for_a_frontend_route(tmp_path: Path) -> None:
    """The router redirects ``/orders/7/`` to ``/orders/7`` before it tries its frontend
    routes: no handler runs, so no route; the frontend's template is not borrowed."""
    (tmp_path / "index.html").write_text("<html></html>")
    for redirect_slashes in (True, False):
        app = FastAPI(redirect_slashes=redirect_slashes)
        app.frontend("/", directory=tmp_path)

        @app.get("/orders/{order_id}")
        async def order(order_id: int) -> None:  # pragma: no cover
            pass

        with client(app) as http:
            status = http.get("/orders/7/", follow_redirects=False).status_code
        assert status == (307 if redirect_slashes else 404)  # 404: the frontend has no such file
        expected = None if redirect_slashes else "/{path}"
        assert route_template_for(app, scope("/orders/7/")) == expected
        assert route_template_for(app, scope("/orders/7")) == "/orders/{order_id}"
        assert route_template_for(app, scope("/settings/profile")) == "/{path}"


@pytest.mark.skipif(not hasattr(APIRouter, "frontend"), reason="FastAPI < 0.138: no frontend()")
def test_frontend_routes_of_a_router_included_with_a_prefix(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<html></html>")
    app = FastAPI()
    root = APIRouter()
    root.frontend("/", directory=tmp_path)
    app.include_router(root, prefix="/app")
    nested = APIRouter(prefix="/ui")
    nested.frontend("/files", directory=tmp_path)
    app.include_router(nested, prefix="/v2")
    assert route_template_for(app, scope("/app/settings/profile")) == "/app/{path}"
    assert route_template_for(app, scope("/v2/ui/files/a.html")) == "/v2/ui/files/{path}"
    assert route_template_for(app, scope("/files/a.html")) is None


def _deny_admin() -> tuple[TokenIssuer, Guard, MemorySink]:
    """A Guard that lets in every caller of example.org except on the routes ``*/admin``."""
    issuer, allowing, sink = allow_all()
    deny = Rule(id="no-admin", action="DENY", operations=[Operations(routes=["*/admin"])])
    policy = Policy([deny, *allowing.policy.rules])
    return issuer, Guard(authenticator=allowing.authenticator, policy=policy, audit=sink), sink


def _wrapped(name: str) -> Any:
    """A sub-application behind middleware serving ``/admin`` and ``/items``: a router, a
    Starlette application or a FastAPI one."""
    from starlette.middleware.cors import CORSMiddleware
    from starlette.middleware.gzip import GZipMiddleware
    from starlette.middleware.trustedhost import TrustedHostMiddleware
    from starlette.requests import Request

    async def served(request: Request) -> PlainTextResponse:
        return PlainTextResponse(request.url.path)

    routes = [Route("/admin", served), Route("/items", served)]
    if name == "router":
        return GZipMiddleware(Router(routes=routes))
    if name == "starlette":
        return CORSMiddleware(Starlette(routes=routes), allow_origins=["*"])
    fast = FastAPI()
    fast.add_api_route("/admin", served)
    fast.add_api_route("/items", served)
    return TrustedHostMiddleware(GZipMiddleware(fast), allowed_hosts=["*"])


@pytest.mark.parametrize("kind", ["mount", "host"])
@pytest.mark.parametrize("name", ["router", "starlette", "fastapi"])
def test_a_mounted_application_behind_middleware_is_routed_into(kind: str, name: str) -> None:
    """A mount or host whose application is wrapped in middleware lists no routes of its own;
    the router still dispatches to the wrapped application's routes, so the template is
    theirs (not ``/api/{path}``), and a DENY rule naming one holds."""
    inner = _wrapped(name)
    if kind == "mount":
        outer, prefix, base = Mount("/api", app=inner), "/api", "http://testserver"
    else:
        outer, prefix, base = Host("api.example", app=inner), "", "http://api.example"
    app = Starlette(routes=[outer])
    issuer, guard, sink = _deny_admin()
    app.add_middleware(ZeroTrustMiddleware, guard=guard)
    headers = bearer(issuer.issue(subject=WEB, audience=AUD))
    with client(app, base_url=base) as http:
        refused = http.get(f"{prefix}/admin", headers=headers)
        assert refused.status_code == 403
        assert (sink.last.route, sink.last.rule_id) == (f"{prefix}/admin", "no-admin")
        served = http.get(f"{prefix}/items", headers=headers)
        assert (served.status_code, sink.last.route) == (200, f"{prefix}/items")
        assert http.get(f"{prefix}/nothing", headers=headers).status_code == 404
        assert sink.last.route is None  # no route: the wrapped router answers 404


def test_a_mount_of_an_application_without_a_router_behind_middleware_covers_its_paths() -> None:
    from starlette.middleware.gzip import GZipMiddleware

    app = Starlette(
        routes=[
            Mount("/static", app=GZipMiddleware(plain_app)),
            Host("files.example", app=GZipMiddleware(plain_app)),
        ]
    )
    assert route_template_for(app, scope("/static/a.css")) == "/static/{path}"
    files = scope("/a/b.txt", headers=[(b"host", b"files.example")])
    assert route_template_for(app, files) == "/{path}"


async def legacy(scope: Any, receive: Any, send: Any) -> None:
    """A fallback application: it serves every path it is given."""
    await PlainTextResponse(f"legacy {scope['path']}")(scope, receive, send)


def test_a_router_with_a_fallback_application_is_refused_like_one_without_a_router() -> None:
    """``Router(routes, default=app)`` hands what no route matches to ``app``: its requests
    have no route, so (as for an application without a router) a policy with rules they
    would escape cannot be installed over it, wherever the router is in the tree."""
    issuer, guard, sink = _deny_admin()
    fallbacks = [
        Router(routes=[Route("/orders", endpoint)], default=legacy),
        Starlette(routes=[Mount("/v1", app=Router(routes=[], default=legacy))]),
        Starlette(routes=[Host("old.example", app=Router(routes=[], default=legacy))]),
    ]
    for app in fallbacks:
        with pytest.raises(ConfigurationError, match=r"fallback application.*\['no-admin'\]"):
            ZeroTrustMiddleware(app, guard=guard)
    starlette_app = Starlette(routes=[Route("/orders", endpoint)])
    starlette_app.router.default = legacy
    starlette_app.add_middleware(ZeroTrustMiddleware, guard=guard)
    with pytest.raises(ConfigurationError, match="fallback application"), client(starlette_app):
        pass  # pragma: no cover - the middleware is built as the application starts

    # an included router's default is never used (the including router answers): no fallback
    included = APIRouter(prefix="/v1", default=legacy)
    included.add_api_route("/orders", endpoint)
    fast = FastAPI()
    fast.include_router(included)
    ZeroTrustMiddleware(fast, guard=guard)

    # the fallback made a route: its requests have the route /{path}, which rules can name
    routed = Starlette(routes=[Route("/orders", endpoint), Mount("", app=legacy)])
    routed.add_middleware(ZeroTrustMiddleware, guard=guard)
    with client(routed) as http:
        served = http.get("/admin/users", headers=bearer(issuer.issue(subject=WEB, audience=AUD)))
    assert (served.text, sink.last.route) == ("legacy /admin/users", "/{path}")


def test_a_fallback_application_without_route_hazards_decides_as_without_a_route() -> None:
    """A policy that no request without a route escapes is installed: the fallback's requests
    are decided without a route, so a rule scoped to routes does not admit them."""
    issuer, allowing, sink = allow_all()
    orders_only = Rule(
        id="orders-only",
        callers=[Callers(trust_domains=["example.org"])],
        operations=[Operations(routes=["/orders"])],
    )
    guard = Guard(authenticator=allowing.authenticator, policy=Policy([orders_only]), audit=sink)
    app = ZeroTrustMiddleware(
        Router(routes=[Route("/orders", endpoint)], default=legacy), guard=guard
    )
    with client(app) as http:
        refused = http.get("/admin/users", headers=bearer(issuer.issue(subject=WEB, audience=AUD)))
    assert refused.status_code == 403
    assert (sink.last.route, sink.last.reason) == (None, "no_allow_rule_matched")


def test_a_fallback_application_added_after_start_is_refused_its_requests() -> None:
    """The middleware was built before the router was given a fallback: the requests no route
    matches are refused and audited (they could reach the fallback with no route); the
    others are decided as before."""
    issuer, guard, sink = _deny_admin()

    async def orders(request: Any) -> PlainTextResponse:
        return PlainTextResponse("orders")

    router = Router(routes=[Route("/orders", orders)])
    app = ZeroTrustMiddleware(router, guard=guard)
    headers = bearer(issuer.issue(subject=WEB, audience=AUD))
    with client(app) as http:
        assert http.get("/admin/users", headers=headers).status_code == 404  # no fallback yet
        router.default = legacy
        refused = http.get("/admin/users", headers=headers)
        assert refused.status_code == 500 and refused.json()["error"] == "configuration_error"
        assert (sink.last.decision, sink.last.route) == ("deny", None)
        assert http.get("/orders", headers=headers).text == "orders"
        nested = Router(routes=[], default=legacy)
        router.default = router.not_found
        assert http.get("/admin/users", headers=headers).status_code == 404
        router.routes.append(Mount("/v1", app=nested))  # a mount's router falls back
        assert http.get("/v1/admin/users", headers=headers).status_code == 500


@pytest.mark.filterwarnings("ignore:The `root_path` parameter is deprecated")
@pytest.mark.parametrize("outside", [True, False], ids=["wrapping", "added"])
def test_a_fastapi_root_path_is_routed_as_fastapi_routes_it(outside: bool) -> None:
    """``FastAPI(root_path="/api")`` sets the scope's root path before its router runs, and the
    router strips it from the path: ``/api/admin`` reaches ``/admin``. Middleware wrapping the
    application sees the scope before that, and must resolve the route as the router will."""
    issuer, guard, sink = _deny_admin()
    app = FastAPI(root_path="/api")

    @app.get("/admin")
    async def admin() -> Any:
        return {"admin": True}  # pragma: no cover - refused

    served: Any = ZeroTrustMiddleware(app, guard=guard) if outside else app
    if not outside:
        app.add_middleware(ZeroTrustMiddleware, guard=guard)
    headers = [("authorization", bearer(issuer.issue(subject=WEB, audience=AUD))["Authorization"])]
    for path in ("/api/admin", "/admin"):
        status, _ = call_asgi(served, path, headers)
        assert status == 403
        assert (sink.last.route, sink.last.rule_id) == ("/admin", "no-admin")


def test_a_router_error_quoting_the_request_cannot_forge_log_lines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A router's (or a path converter's) error text may quote the request's path: it reaches
    the refusal's message escaped and bounded, never as lines of its own."""

    def broken(*args: Any) -> str:
        raise ValueError("bad id 7\nzerotrust: INFO allowed everyone\u2028" + "x" * 500)

    app = FastAPI()

    @app.get("/orders/{order_id}")
    async def order(order_id: int) -> dict[str, int]:  # pragma: no cover - never routed
        return {"order": order_id}

    monkeypatch.setattr(routes_module, "_describe", broken)
    with pytest.raises(ConfigurationError) as refused:
        route_template_for(app, scope("/orders/7"))
    message = str(refused.value)
    assert "\n" not in message and "\u2028" not in message and "\\n" in message
    assert len(message) < 300
