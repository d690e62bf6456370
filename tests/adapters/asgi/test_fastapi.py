"""The FastAPI dependencies on their own (no middleware), OpenAPI, mounts and fallbacks."""

import asyncio
import logging
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Request, Security
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.websockets import WebSocketDisconnect

from tests.adapters.asgi._support import (
    ADMIN,
    AUD,
    OTHER,
    WEB,
    bearer,
    call_asgi,
    client,
    make_app,
    make_guard,
    make_policy,
)
from zerotrust import (
    Callers,
    Guard,
    Operations,
    Policy,
    Principal,
    PrivateJWK,
    Rule,
    TokenIssuer,
    match,
)
from zerotrust.errors import ConfigurationError
from zerotrust.fastapi import ZeroTrust, ZeroTrustMiddleware


@pytest.fixture(scope="module")
def issuer() -> TokenIssuer:
    return TokenIssuer(PrivateJWK.generate("ES256", kid="k1"), issuer="https://issuer.example")


def token(issuer: TokenIssuer, subject: str = WEB, **kw: Any) -> str:
    return issuer.issue(subject=subject, audience=AUD, **kw)


@pytest.fixture
def bare(issuer: TokenIssuer) -> Any:
    """The app without the middleware: the dependencies run the Guard themselves."""
    guard, sink = make_guard(issuer)
    with client(make_app(ZeroTrust(guard), middleware=False)) as http:
        yield http, sink, guard


def test_dependency_alone_decides_once(bare: Any, issuer: TokenIssuer) -> None:
    http, sink, _ = bare
    response = http.get("/orders/7", headers=bearer(token(issuer, scopes=["orders:read"])))
    assert response.json() == {"order": 7, "dependency": WEB, "state": WEB, "context": WEB}
    assert len(sink) == 1 and sink.last.route == "/orders/{order_id}"
    response = http.get("/orders/7", headers=bearer(token(issuer)))
    assert response.status_code == 403
    assert response.headers["www-authenticate"].endswith('scope="orders:read"')
    assert len(sink) == 2 and sink.last.reason == "insufficient_scope"  # one event each


def test_dependency_alone_refusals(bare: Any, issuer: TokenIssuer) -> None:
    http, _, _ = bare
    assert http.get("/orders/7").json()["error"] == "missing_credentials"
    assert http.get("/orders/7", headers=bearer("x.y.z")).status_code == 401
    assert http.post("/admin", headers=bearer(token(issuer))).status_code == 403
    assert http.post("/admin", headers=bearer(token(issuer, ADMIN))).status_code == 200
    other = bearer(token(issuer, OTHER, scopes=["orders:read"]))
    assert http.get("/orders/7", headers=other).json()["error"] == "access_denied"
    headers = bearer(token(issuer))
    assert http.get("/limited/a", headers=headers).status_code == 200
    assert http.get("/limited/a", headers=headers).status_code == 429


def test_dependency_alone_optional(bare: Any, issuer: TokenIssuer) -> None:
    http, sink, _ = bare
    assert http.get("/public").json() == {"who": None}
    assert sink.last.decision == "allow"  # the policy admits anonymous callers on /public
    assert http.get("/public", headers=bearer(token(issuer))).json() == {"who": WEB}
    response = http.get("/public", headers=bearer("x.y.z"))  # bad credentials still refused
    assert response.status_code == 401 and response.json()["error"] == "invalid_token"


def _sharing_state(app: Any, state: dict[str, Any]) -> Any:
    """``app`` behind a harness that hands every request the lifespan state itself, not a copy
    of it (asgi-lifespan's ``LifespanManager``, used with ``httpx.ASGITransport`` in tests)."""

    async def shared(scope: Any, receive: Any, send: Any) -> None:
        scope["state"] = state
        await app(scope, receive, send)

    return shared


def _get_all(app: Any, *requests: tuple[str, dict[str, str]]) -> list[httpx.Response]:
    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://orders") as http:
            return [await http.get(path, headers=headers) for path, headers in requests]

    return asyncio.run(run())


def test_a_decision_is_never_reused_for_another_request_sharing_the_state(
    issuer: TokenIssuer,
) -> None:
    """The dependencies reused the decision found in ``scope["state"]``: where every request
    shares that namespace, an anonymous request was served as the previous caller, unaudited."""
    guard, sink = make_guard(issuer)
    app = _sharing_state(make_app(ZeroTrust(guard), middleware=False), {})
    allowed, anonymous, other = _get_all(
        app,
        ("/orders/7", bearer(token(issuer, scopes=["orders:read"]))),
        ("/orders/7", {}),
        ("/orders/7", bearer(token(issuer, OTHER, scopes=["orders:read"]))),
    )
    assert allowed.json()["dependency"] == WEB
    assert anonymous.status_code == 401 and anonymous.json()["error"] == "missing_credentials"
    assert other.status_code == 403 and other.json()["error"] == "access_denied"
    assert [event.decision for event in sink] == ["allow", "deny", "deny"]


def test_an_exempt_request_sees_no_principal_another_request_left_in_a_shared_state(
    issuer: TokenIssuer,
) -> None:
    """docs/fastapi.md: handlers of exempt routes see no principal. Where every request shares
    ``scope["state"]``, the middleware's previous request's principal was there."""
    guard, _ = make_guard(issuer)
    state = {"pool": "from the lifespan"}
    app = _sharing_state(make_app(ZeroTrust(guard)), state)
    allowed, exempt = _get_all(
        app, ("/orders/7", bearer(token(issuer, scopes=["orders:read"]))), ("/healthz", {})
    )
    assert allowed.json()["state"] == WEB
    assert exempt.json() == {"ok": True, "principal": None}
    assert state["pool"] == "from the lifespan"  # the lifespan's own entries are the same


def test_concurrent_requests_sharing_the_state_keep_their_own_principal(
    issuer: TokenIssuer,
) -> None:
    """Where every request shares ``scope["state"]``, the second of two concurrent requests
    replaced the first one's principal in ``request.state`` while its handler ran."""
    guard, _ = make_guard(issuer)
    app = make_app(ZeroTrust(guard))
    arrived: list[str] = []
    both_in = asyncio.Event()

    @app.get("/whoami")
    async def whoami(request: Request) -> dict[str, Any]:
        arrived.append(request.state.zerotrust_principal.id)
        if len(arrived) == 2:
            both_in.set()
        await both_in.wait()  # both requests are in their handlers: both decided
        return {"state": request.state.zerotrust_principal.id}

    async def run() -> list[Any]:
        transport = httpx.ASGITransport(app=_sharing_state(app, {}))
        async with httpx.AsyncClient(transport=transport, base_url="http://orders") as http:
            return await asyncio.gather(
                *(http.get("/whoami", headers=bearer(token(issuer, who))) for who in (WEB, ADMIN))
            )

    web, admin = asyncio.run(run())
    assert web.json() == {"state": WEB} and admin.json() == {"state": ADMIN}


@pytest.mark.parametrize(
    "header",
    [
        ("x-forwarded-client-cert", "Hash=abc;URI=spiffe://example.org/web"),  # not a proxy's
        ("dpop", "x.y.z"),  # a proof without a DPoP token
        ("client-cert", ":YWJj:"),
    ],
    ids=["untrusted-xfcc", "dpop-alone", "client-cert"],
)
@pytest.mark.parametrize("middleware", [True, False], ids=["middleware", "dependency-alone"])
def test_optional_answers_nobody_beside_headers_the_service_ignores(
    issuer: TokenIssuer, header: tuple[str, str], middleware: bool
) -> None:
    """Behind a sidecar that adds XFCC to every request but is no trusted proxy, an anonymous
    call to an optional endpoint was refused 401 (requirement_not_met) without the middleware,
    and served with it: the header made the dependency ask for "an authenticated caller"."""
    public = Rule(
        id="public",
        callers=[Callers(anonymous=True), Callers(trust_domains=["example.org"])],
        operations=[Operations(routes=["/public"])],
    )
    guard, sink = make_guard(issuer, policy=Policy([public]))
    with client(make_app(ZeroTrust(guard), middleware=middleware)) as http:
        response = http.get("/public", headers=dict([header]))
        assert response.status_code == 200 and response.json() == {"who": None}
        assert sink.last.decision == "allow" and sink.last.reason == "allowed_by_rule"
        assert http.get("/public", headers=bearer(token(issuer))).json() == {"who": WEB}
        assert http.get("/public", headers=bearer("x.y.z")).status_code == 401


@pytest.mark.parametrize("middleware", [True, False], ids=["middleware", "dependency-alone"])
def test_scopes_written_wrong_are_an_audited_refusal(issuer: TokenIssuer, middleware: bool) -> None:
    """``Security(zt, scopes=["orders read"])`` (no scope holds a space) is found when a request
    reaches the handler: it was a plain 500 outside zerotrust, unaudited (and audited as an
    allow by the middleware)."""
    everything = Rule(id="shop", callers=[Callers(trust_domains=["example.org"])])
    guard, sink = make_guard(issuer, policy=Policy([everything]))
    zt = ZeroTrust(guard)
    app = make_app(zt, middleware=middleware)

    @app.get("/orders/{order_id}/typo")
    async def typo(who: Annotated[Principal, Security(zt, scopes=["orders read"])]) -> Any:
        return {"who": who.id}  # pragma: no cover - refused

    callers = [bearer(token(issuer, scopes=["orders:read"]))]
    if not middleware:
        callers.append({})  # (the middleware refuses an anonymous caller first)
    with client(app) as http:
        for headers in callers:
            response = http.get("/orders/7/typo", headers=headers)
            assert response.status_code == 500
            assert response.json()["error"] == "configuration_error"
            assert (sink.last.decision, sink.last.reason) == ("deny", "configuration_error")
            if middleware:
                assert sink.last.route == "/orders/{order_id}/typo"


def test_optional_with_a_malformed_certificate_is_refused(bare: Any) -> None:
    http, sink, _ = bare
    tls = {"tls": {"client_cert_chain": ["not a certificate"]}}
    status, body = call_asgi(http.app, "/public", [], extensions=tls)
    assert status == 401 and b"invalid_certificate" in body  # the precise code stays internal
    assert sink.last.reason == "malformed_certificate"


def test_optional_needs_the_policy_to_admit_anonymous(bare: Any) -> None:
    http, _, guard = bare
    maybe = ZeroTrust(guard, auto_error=False)

    @http.app.get("/orders-preview")
    async def preview(principal: Annotated[Principal | None, Security(maybe)]) -> Any:
        return {"who": principal}  # pragma: no cover - the policy refuses anonymous callers

    assert http.get("/orders-preview").status_code == 401


def test_the_bare_dependency_needs_a_caller_unless_auto_error_is_off(bare: Any) -> None:
    """The policy admits anonymous callers on /public; only ``auto_error=False`` turns the bare
    dependency into "who, if anyone?"."""
    http, _, guard = bare
    strict = ZeroTrust(guard)

    @http.app.post("/public")
    async def publish(principal: Annotated[Principal, Depends(strict)]) -> Any:
        return {"who": principal}  # pragma: no cover - an anonymous caller is refused

    response = http.post("/public")
    assert response.status_code == 401 and response.json()["error"] == "missing_credentials"
    assert http.get("/public").json() == {"who": None}  # the auto_error=False dependency


def test_dependency_alone_on_a_server_without_request_state(bare: Any, issuer: TokenIssuer) -> None:
    """ASGI servers without lifespan state put no ``state`` in the scope."""
    import asyncio

    http, sink, _ = bare
    headers = [(b"host", b"testserver"), (b"authorization", f"Bearer {token(issuer)}".encode())]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": "/limited/a", "raw_path": b"/limited/a", "query_string": b"",
        "root_path": "", "headers": headers, "client": ("127.0.0.1", 1), "server": ("t", 80),
    }  # fmt: skip
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(http.app(scope, receive, send))
    assert sent[0]["status"] == 200 and sink.last.decision == "allow"


def test_dependency_after_the_middleware_with_audit_logging_off(
    issuer: TokenIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    """With no audit event built, the dependency still refines the middleware's decision."""
    from tests.adapters.asgi._support import ISS, make_policy
    from zerotrust import Authenticator, Guard, TokenVerifier
    from zerotrust.audit import LoggingSink

    verifier = TokenVerifier(issuer=ISS, audience=AUD, keys=issuer.jwks(), algorithms=["ES256"])
    guard = Guard(
        authenticator=Authenticator(tokens=verifier), policy=make_policy(), audit=LoggingSink()
    )
    with (
        caplog.at_level(logging.WARNING, logger="zerotrust.audit"),
        client(make_app(ZeroTrust(guard))) as http,
    ):
        allowed = http.get("/orders/7", headers=bearer(token(issuer, scopes=["orders:read"])))
        assert allowed.status_code == 200 and allowed.json()["dependency"] == WEB
        refused = http.get("/orders/7", headers=bearer(token(issuer)))
        assert refused.status_code == 403 and refused.json()["error"] == "insufficient_scope"
    assert not [r for r in caplog.records if r.name == "zerotrust.audit"]


@pytest.mark.parametrize("middleware", [True, False], ids=["middleware", "dependency-alone"])
def test_optional_never_waives_a_requirement(issuer: TokenIssuer, middleware: bool) -> None:
    """``auto_error=False`` answers "who, if anyone?" for the bare dependency; one that asks
    more (scopes along the chain, ``require(...)``, even ``require()`` with no arguments: "an
    authenticated caller") cannot be met by nobody: an anonymous request is refused with 401
    as in Flask and Django, even where the policy admits it."""
    public = Rule(
        id="public",
        callers=[Callers(anonymous=True), Callers(trust_domains=["example.org"])],
        operations=[Operations(routes=["/public", "/public/*"])],
    )
    guard, sink = make_guard(issuer, policy=Policy([public]))
    maybe = ZeroTrust(guard, auto_error=False)
    app = make_app(ZeroTrust(guard), middleware=middleware)
    admin = maybe.require(scopes=["catalog:admin"], callers=match.exact(ADMIN))

    @app.post("/public/purge", dependencies=[Security(admin)])
    async def purge() -> Any:
        return {"purged": True}

    @app.get("/public/scoped")
    async def scoped(who: Annotated[Principal | None, Security(maybe, scopes=["x:read"])]) -> Any:
        return {"who": who.id if who else None}

    @app.get("/public/signed-in")
    async def signed_in(who: Annotated[Principal | None, Depends(maybe.require())]) -> Any:
        return {"who": who.id if who else None}

    with client(app) as http:
        paths = (("POST", "/public/purge"), ("GET", "/public/scoped"), ("GET", "/public/signed-in"))
        for method, path in paths:
            response = http.request(method, path)
            assert response.status_code == 401, path
            assert response.headers["www-authenticate"] == 'Bearer realm="orders"'
            assert sink.last.decision == "deny" and sink.last.route == path
        allowed = bearer(token(issuer, ADMIN, scopes=["catalog:admin"]))
        assert http.post("/public/purge", headers=allowed).json() == {"purged": True}
        assert http.post("/public/purge", headers=bearer(token(issuer))).status_code == 403
        reader = bearer(token(issuer, scopes=["x:read"]))
        assert http.get("/public/scoped", headers=reader).json() == {"who": WEB}
        assert http.get("/public/signed-in", headers=reader).json() == {"who": WEB}
        assert http.get("/public").json() == {"who": None}  # the bare dependency: optional


def test_websocket_dependency_refuses_with_1008(bare: Any, issuer: TokenIssuer) -> None:
    http, _, _ = bare
    with http.websocket_connect("/ws/a", headers=bearer(token(issuer))) as ws:
        assert ws.receive_json()["who"] == WEB
    with pytest.raises(WebSocketDisconnect) as refused, http.websocket_connect("/ws/a"):
        pass  # pragma: no cover
    assert refused.value.code == 1008


def test_openapi_security_scheme(bare: Any) -> None:
    http, _, _ = bare
    schema = http.get("/openapi.json").json()
    scheme = schema["components"]["securitySchemes"]["zerotrust"]
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    assert scheme["bearerFormat"] == "JWT" and "mutual TLS" in scheme["description"]
    operation = schema["paths"]["/orders/{order_id}"]["get"]
    # FastAPI < 0.123 lists scopes for OAuth2 / OpenID Connect schemes only (OpenAPI 3.0)
    import fastapi

    listed = tuple(int(p) for p in fastapi.__version__.split(".")[:2]) >= (0, 123)
    assert operation["security"] == [{"zerotrust": ["orders:read"] if listed else []}]
    assert schema["paths"]["/admin"]["post"]["security"] == [{"zerotrust": []}]
    assert "security" not in schema["paths"]["/healthz"]["get"]
    params = {p["name"] for p in operation.get("parameters", [])}
    assert params == {"order_id"}  # the dependency adds no query or header parameters


@pytest.mark.parametrize("name", ["zero trust", "", "zerotrust\n", "jwt/mtls", "zt\u00e9"])
def test_a_scheme_name_that_is_no_openapi_component_name_is_refused(
    issuer: TokenIssuer, name: str
) -> None:
    """OpenAPI 3.1 4.8.7.1: the keys of components (securitySchemes) match
    ^[a-zA-Z0-9.\\-_]+$; another name made every document the application serves invalid."""
    guard, _ = make_guard(issuer)
    with pytest.raises(ConfigurationError, match="scheme_name"):
        ZeroTrust(guard, scheme_name=name)
    zt = ZeroTrust(guard, scheme_name="zero-trust_v1.2")
    app = FastAPI()

    @app.get("/orders")
    async def orders(caller: Annotated[Principal, Security(zt, scopes=["orders:read"])]) -> None:
        return None  # pragma: no cover - only the document is read

    schema = app.openapi()
    assert list(schema["components"]["securitySchemes"]) == ["zero-trust_v1.2"]
    [requirement] = schema["paths"]["/orders"]["get"]["security"]
    assert list(requirement) == ["zero-trust_v1.2"]


def test_without_install_fastapi_answers_in_its_own_format(issuer: TokenIssuer) -> None:
    guard, _ = make_guard(issuer)
    zt = ZeroTrust(guard)
    app = FastAPI()

    @app.get("/orders/{order_id}")
    async def order(principal: Annotated[Principal, Security(zt, scopes=["orders:read"])]) -> Any:
        return {}  # pragma: no cover

    with client(app) as http:
        response = http.get("/orders/1")
    assert response.status_code == 401
    assert response.json() == {"detail": "authentication required"}
    assert response.headers["www-authenticate"] == 'Bearer realm="orders"'


def test_exception_handlers_for_app_factories(issuer: TokenIssuer) -> None:
    guard, _ = make_guard(issuer)
    zt = ZeroTrust(guard)
    app = FastAPI(exception_handlers=ZeroTrust.exception_handlers)

    @app.get("/orders/{order_id}")
    async def order(principal: Annotated[Principal, Security(zt)]) -> Any:
        return {}  # pragma: no cover

    with client(app) as http:
        assert http.get("/orders/1").json()["error"] == "missing_credentials"


def _orders_app(guard: Guard) -> FastAPI:
    """An application of one route checked by the dependency alone (to be mounted)."""
    inner = FastAPI()
    zt = ZeroTrust(guard)
    inner.add_exception_handler(*next(iter(ZeroTrust.exception_handlers.items())))

    @inner.get("/orders/{order_id}")
    async def order(principal: Annotated[Principal, Security(zt)]) -> Any:
        return {"who": principal.id}

    return inner


def test_mounted_app_template_includes_the_mount(issuer: TokenIssuer) -> None:
    guard, sink = make_guard(issuer)
    inner = _orders_app(guard)
    outer = Starlette(routes=[Mount("/api", app=inner)])
    outer.add_middleware(ZeroTrustMiddleware, guard=guard)
    headers = bearer(token(issuer))
    with client(outer) as http:
        assert http.get("/api/orders/7", headers=headers).status_code == 403
    assert sink.last.route == "/api/orders/{order_id}"  # not in the policy: refused
    # the dependency alone inside a mount cannot know the full template: with rules and rate
    # limits scoped to routes (which the request would escape) it refuses every request
    sink.clear()
    with client(Starlette(routes=[Mount("/orders-api", app=inner)])) as http:
        refused = http.get("/orders-api/orders/7", headers=headers)
    assert refused.status_code == 500 and refused.json()["error"] == "configuration_error"
    assert sink.last.route is None and sink.last.reason == "configuration_error"


def test_a_mounted_dependency_alone_refuses_what_a_deny_rule_on_its_route_would(
    issuer: TokenIssuer,
) -> None:
    """Without a route, a DENY rule scoped to routes never matches: a request to a mounted
    application checked by the dependencies alone would pass it, and the ALLOW beside it
    admit the request. It is refused instead, as the middleware refuses to start; without
    such rules, the routeless request is decided as before."""
    deny = Rule(
        id="no-orders-api",
        action="DENY",
        operations=[Operations(routes=["/orders-api/*"])],
    )
    allow = Rule(id="mesh", callers=[Callers(trust_domains=["example.org"])])
    headers = bearer(token(issuer))
    for rules, status in (([deny, allow], 500), ([allow], 200)):
        guard, sink = make_guard(issuer, policy=Policy(rules))
        inner = _orders_app(guard)
        with client(Starlette(routes=[Mount("/orders-api", app=inner)])) as http:
            assert http.get("/orders-api/orders/7", headers=headers).status_code == status
        assert sink.last.route is None


def test_configuration_errors(issuer: TokenIssuer) -> None:
    with pytest.raises(ConfigurationError):
        ZeroTrust(object())  # type: ignore[arg-type]
    guard, _ = make_guard(issuer)
    with pytest.raises(ConfigurationError):
        ZeroTrust(guard).require(scopes="orders:read")
    assert repr(ZeroTrust(guard).require(callers=match.exact(ADMIN))).startswith(
        "RequireDependency("
    )


def test_dependency_alone_bounds_header_lines(bare: Any) -> None:
    http, sink, _ = bare
    response = http.get("/orders/7", headers=[(f"x-filler-{i}", "1") for i in range(260)])
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"
    assert sink.last.reason == "malformed_credentials"


def test_dependency_alone_hides_spoofed_forwarded_certificates(issuer: TokenIssuer) -> None:
    """As the middleware does: an allowed request's application never sees a forwarded
    certificate no trusted proxy vouched for, even with the headers already read (a body)."""
    from fastapi import Request
    from pydantic import BaseModel

    class Order(BaseModel):
        item: str

    from zerotrust import Callers, Policy, Rule

    open_to_web = Policy([Rule(id="web", callers=[Callers(spiffe_ids=[WEB])])])
    guard, sink = make_guard(issuer, policy=open_to_web)
    zt = ZeroTrust(guard)
    app = FastAPI()
    zt.install(app, middleware=False)

    @app.post("/orders")
    async def create(
        order: Order, request: Request, who: Annotated[Principal, Security(zt)]
    ) -> Any:
        spellings = [k for k in request.headers if k.replace("_", "-") == "x-forwarded-client-cert"]
        return {"xfcc": spellings or None, "item": order.item}

    spoofed = {"X-Forwarded-Client-Cert": "By=spiffe://evil;URI=spiffe://example.org/admin"}
    with client(app) as http:
        response = http.post(
            "/orders",
            json={"item": "a"},
            headers={**bearer(issuer.issue(subject=WEB, audience=AUD)), **spoofed},
        )
        assert response.json() == {"xfcc": None, "item": "a"}
        assert "forwarded_cert_ignored_untrusted_peer" in sink.last.notes
        # the underscore spelling a WSGI application below would read as the same header
        lookalike = {"X_Forwarded_Client_Cert": spoofed["X-Forwarded-Client-Cert"]}
        response = http.post(
            "/orders",
            json={"item": "b"},
            headers={**bearer(issuer.issue(subject=WEB, audience=AUD)), **lookalike},
        )
        assert response.json() == {"xfcc": None, "item": "b"}


def test_a_spiffe_id_caller_pattern_never_admits_a_subject_that_is_no_spiffe_id(
    issuer: TokenIssuer,
) -> None:
    """A token whose ``sub`` looks like an ops SPIFFE ID but is not a valid one (a trailing
    '/') has no SPIFFE ID: ``zt.require(callers=["spiffe://.../ops/*"])`` refuses it."""
    everyone = Policy([Rule(id="any-caller", callers=[Callers(subjects=["*"])])])
    guard, sink = make_guard(issuer, policy=everyone)
    zt = ZeroTrust(guard)
    app = FastAPI()
    zt.install(app)
    ops = zt.require(callers=["spiffe://example.org/ns/ops/*"])

    @app.post("/admin", dependencies=[Depends(ops)])
    async def admin() -> Any:
        return {"admin": True}

    with client(app) as http:
        refused = http.post("/admin", headers=bearer(token(issuer, ADMIN + "/")))
        assert refused.status_code == 403
        assert (sink.last.reason, sink.last.spiffe_id) == ("requirement_not_met", None)
        assert sink.last.subject == ADMIN + "/"
        assert http.post("/admin", headers=bearer(token(issuer, ADMIN))).json() == {"admin": True}


def test_a_dependency_of_another_guard_decides_with_its_own_policy(issuer: TokenIssuer) -> None:
    """The middleware runs one Guard, the dependencies another (another policy): the
    dependencies' Guard decides for itself instead of reusing the middleware's decision, so
    its DENY rule holds (a second decision, a second audit event)."""
    outer, outer_sink = make_guard(issuer)
    strict = Policy(
        [
            Rule(id="no-admin", action="DENY", operations=[Operations(routes=["/admin"])]),
            *make_policy().rules,
        ],
        id="strict",
    )
    inner, inner_sink = make_guard(issuer, policy=strict)
    app = make_app(ZeroTrust(inner), middleware=False)
    app.add_middleware(ZeroTrustMiddleware, guard=outer)
    with client(app) as http:
        admin = bearer(token(issuer, ADMIN))
        assert http.post("/admin", headers=admin).status_code == 403
        assert outer_sink.last.decision == "allow"
        assert (inner_sink.last.decision, inner_sink.last.rule_id) == ("deny", "no-admin")
        response = http.get("/orders/7", headers=bearer(token(issuer, scopes=["orders:read"])))
        assert response.status_code == 200 and len(inner_sink) == 2
    same, sink = make_guard(issuer)  # one Guard for both: one decision, reused
    with client(make_app(ZeroTrust(same))) as http:
        response = http.get("/orders/7", headers=bearer(token(issuer, scopes=["orders:read"])))
        assert response.status_code == 200 and len(sink) == 1


def test_cors_preflights_are_refused_unless_cors_middleware_runs_first(
    issuer: TokenIssuer,
) -> None:
    """As docs/fastapi.md says: zerotrust outermost refuses a preflight (no credentials);
    ``CORSMiddleware`` added after ``install()`` answers it first, and every other request
    is still decided."""
    from starlette.middleware.cors import CORSMiddleware

    preflight = {
        "Origin": "https://shop.example",
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization",
    }
    guard, sink = make_guard(issuer)
    with client(make_app(ZeroTrust(guard))) as http:
        assert http.options("/orders/7", headers=preflight).status_code == 401
        assert sink.last.method == "OPTIONS" and sink.last.decision == "deny"
    guard, sink = make_guard(issuer)
    app = make_app(ZeroTrust(guard))
    app.add_middleware(CORSMiddleware, allow_origins=["https://shop.example"], allow_headers=["*"])
    with client(app) as http:
        answered = http.options("/orders/7", headers=preflight)
        assert answered.status_code == 200
        assert answered.headers["access-control-allow-origin"] == "https://shop.example"
        assert len(sink) == 0  # answered before zerotrust: neither decided nor audited
        origin = {"Origin": "https://shop.example"}
        assert http.get("/orders/7", headers=origin).status_code == 401
        allowed = http.get(
            "/orders/7", headers={**origin, **bearer(token(issuer, scopes=["orders:read"]))}
        )
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://shop.example"
        assert [event.decision for event in sink] == ["deny", "allow"]
