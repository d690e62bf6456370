"""ZeroTrustMiddleware end to end with Django's test clients (WSGI and ASGI handlers)."""

from __future__ import annotations

import asyncio
import json
import socket
import types
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from asgiref.sync import SyncToAsync, iscoroutinefunction
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.wsgi import WSGIHandler
from django.http import HttpRequest, HttpResponse
from django.test import AsyncClient, Client
from django.test.utils import override_settings
from django.utils.decorators import async_only_middleware

from tests._werkzeug import werkzeug_serving
from tests.adapters.django.conftest import INTRUDER, STRANGER, WEB, Harness, Installer, policy
from tests.adapters.django.project import views
from zerotrust import Callers, Guard, Operations, Policy, RateLimit, Rule
from zerotrust.adapters.django import ZeroTrustMiddleware
from zerotrust.adapters.django_config import ZeroTrustImproperlyConfigured
from zerotrust.errors import ConfigurationError, public_code
from zerotrust.sources.jwks_http import RemoteJWKSource

CLIENTS = ["sync", "async"]
ROUTE = "/orders/{order_id}"


def call(kind: str, path: str, headers: dict[str, str] | None = None, method: str = "get") -> Any:
    """One request through Django's sync (WSGI-style) or async (ASGI-style) test handler."""
    if kind == "sync":
        return getattr(Client(), method)(path, headers=headers or {})

    async def go() -> Any:
        return await getattr(AsyncClient(), method)(path, headers=headers or {})

    return asyncio.run(go())


def body(response: Any) -> dict[str, Any]:
    assert response["Content-Type"].startswith("application/json")
    data: dict[str, Any] = json.loads(response.content)
    return data


def assert_refused(response: Any, status: int, challenge: str | None, code: str) -> None:
    assert response.status_code == status
    assert response.get("WWW-Authenticate") == challenge
    assert response["Cache-Control"] == "no-store"
    assert response["Content-Length"] == str(len(response.content))
    data = body(response)
    assert set(data) == {"error", "error_description"}
    assert data["error"] == public_code(code)


# --- refusals: every outcome, both handler kinds ------------------------------------------------

REFUSALS = {
    "no credentials": (401, 'Bearer realm="orders"', "missing_credentials"),
    "bad token": (401, 'Bearer realm="orders", error="invalid_token"', "malformed_token"),
    "expired": (401, 'Bearer realm="orders", error="invalid_token"', "token_expired"),
    "wrong audience": (401, 'Bearer realm="orders", error="invalid_token"', "invalid_audience"),
    "insufficient scope": (
        403,
        'Bearer realm="orders", error="insufficient_scope", scope="orders:read"',
        "insufficient_scope",
    ),
    "caller not allowed": (403, None, "access_denied"),
    "deny rule": (403, None, "access_denied"),
    "method not allowed by policy": (403, None, "access_denied"),
}


@pytest.mark.parametrize("kind", CLIENTS)
@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusals(zt: Harness, kind: str, case: str) -> None:
    headers = {
        "no credentials": {},
        "bad token": zt.auth("not-a-jwt"),
        "expired": zt.auth(ttl=1),
        "wrong audience": zt.auth(audience="billing"),
        "insufficient scope": zt.auth(scopes=()),
        "caller not allowed": zt.auth(subject=STRANGER),
        "deny rule": zt.auth(subject=INTRUDER),
        "method not allowed by policy": zt.auth(),
    }[case]
    if case == "expired":
        zt.clock.advance(120)
    method = "post" if case == "method not allowed by policy" else "get"
    response = call(kind, "/orders/7/", headers, method)
    status, challenge, code = REFUSALS[case]
    assert_refused(response, status, challenge, code)
    [event] = zt.sink.events  # one decision, one audit event
    assert (event.decision, event.status, event.route) == ("deny", status, ROUTE)
    assert event.method == method.upper()


@pytest.mark.parametrize("kind", CLIENTS)
def test_rate_limited(install: Any, kind: str) -> None:
    zt = install(pol=policy(rate_limits=[RateLimit("per-caller", rate=1, burst=1)]))
    headers = zt.auth()
    assert call(kind, "/orders/7/", headers).status_code == 200
    response = call(kind, "/orders/7/", headers)
    assert_refused(response, 429, None, "rate_limited")
    assert response["Retry-After"] == "1"
    assert zt.sink.last.reason == "rate_limited"


@pytest.fixture
def unreachable_jwks() -> Any:
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    source = RemoteJWKSource(
        f"http://127.0.0.1:{port}/jwks", allow_http_loopback=True, timeout=5, retry_interval=0.01
    )
    try:
        yield source
    finally:
        source.close()


def test_keys_unavailable_is_503(install: Any, unreachable_jwks: Any) -> None:
    zt = install(keys=unreachable_jwks)
    response = call("sync", "/orders/7/", zt.auth())
    assert_refused(response, 503, None, "keys_unavailable")
    assert zt.sink.last.status == 503


def test_keys_unavailable_is_503_async(install: Any, unreachable_jwks: Any) -> None:
    zt = install(keys=unreachable_jwks)
    assert_refused(call("async", "/orders/7/", zt.auth()), 503, None, "keys_unavailable")


@pytest.mark.parametrize("kind", CLIENTS)
def test_dry_run_is_recorded_not_enforced(install: Any, kind: str) -> None:
    zt = install(pol=policy(dry_run=True))
    response = call(kind, "/orders/7/", zt.auth(scopes=()))
    assert response.status_code == 200
    event = zt.sink.last
    assert event.decision == "allow" and event.dry_run and event.would_decide == "deny"


# --- success: the principal reaches every kind of view -----------------------------------------

VIEWS = {
    "/orders/7/": "sync",
    "/async/orders/7/": "async",
    "/cbv/orders/7/": "sync",
    "/cbv-async/orders/7/": "async",
}


@pytest.mark.parametrize("kind", CLIENTS)
@pytest.mark.parametrize("path", list(VIEWS))
def test_principal_reaches_the_view(zt: Harness, kind: str, path: str) -> None:
    response = call(kind, path, zt.auth())
    assert response.status_code == 200, response.content
    assert body(response) == {"principal": WEB, "context": WEB, "order_id": 7, "mode": VIEWS[path]}
    [event] = zt.sink.events
    assert event.decision == "allow" and event.spiffe_id == WEB
    assert event.route == path.replace("7/", "{order_id}").rstrip("/")


@pytest.mark.parametrize("kind", CLIENTS)
def test_principal_context_is_reset_after_the_request(zt: Harness, kind: str) -> None:
    from zerotrust.django import current_principal

    assert call(kind, "/orders/7/", zt.auth()).status_code == 200
    assert current_principal() is None


@pytest.mark.parametrize("kind", CLIENTS)
@pytest.mark.parametrize(
    "path", ["/admin-only/", "/async-admin/", "/decorated-class/", "/method-decorated/"]
)
def test_view_requirement_combines_with_policy(zt: Harness, kind: str, path: str) -> None:
    refused = call(kind, path, zt.auth())
    assert_refused(
        refused,
        403,
        'Bearer realm="orders", error="insufficient_scope", scope="orders:admin"',
        "insufficient_scope",
    )
    assert call(kind, path, zt.auth(scopes=["orders:read", "orders:admin"])).status_code == 200
    # the app-wide policy still applies: an admin scope alone does not satisfy "shop-read"
    assert call(kind, path, zt.auth(scopes=["orders:admin"])).status_code == 403
    assert len(zt.sink.events) == 3


@pytest.mark.parametrize("kind", CLIENTS)
def test_a_route_may_ask_more_of_a_class_based_view(zt: Harness, kind: str) -> None:
    """``View.as_view(required_scopes=...)`` gives one route its own requirement: the
    middleware enforces it, and the mixin's check in dispatch agrees."""
    assert call(kind, "/cbv/orders/7/", zt.auth()).status_code == 200  # the class's own
    assert_refused(
        call(kind, "/cbv/admin/7/", zt.auth()),
        403,
        'Bearer realm="orders", error="insufficient_scope", scope="orders:admin"',
        "insufficient_scope",
    )
    assert (
        call(kind, "/cbv/admin/7/", zt.auth(scopes=["orders:read", "orders:admin"])).status_code
        == 200
    )
    assert [e.decision for e in zt.sink.events] == ["allow", "deny", "allow"]


@pytest.mark.parametrize("kind", CLIENTS)
def test_a_requirement_written_wrong_is_an_audited_refusal(zt: Harness, kind: str) -> None:
    """``as_view(required_scopes="orders:read")`` (a string, not a list) is found when a
    request reaches the route: it was a plain 500 from Django's handler, and no audit event."""
    for headers in (zt.auth(), None):
        assert_refused(call(kind, "/cbv/typo/7/", headers), 500, None, "configuration_error")
        assert (zt.sink.last.decision, zt.sink.last.reason) == ("deny", "configuration_error")
        assert zt.sink.last.route == "/cbv/typo/{order_id}"
    assert len(zt.sink.events) == 2


@pytest.mark.parametrize("kind", CLIENTS)
@pytest.mark.parametrize("path", ["/probe/", "/bare-probe/"], ids=["require()", "bare"])
def test_require_without_arguments_wants_an_authenticated_caller(
    zt: Harness, kind: str, path: str
) -> None:
    # the policy lets anonymous callers reach both; the view's @require() or @require does not
    assert_refused(call(kind, path), 401, 'Bearer realm="orders"', "missing_credentials")
    assert body(call(kind, path, zt.auth()))["principal"] == WEB


def test_require_takes_its_arguments_by_keyword() -> None:
    from zerotrust.django import require

    with pytest.raises(ConfigurationError, match="by keyword"):
        require(["orders:read"])  # type: ignore[call-overload]


def test_stacked_requirements_all_hold(zt: Harness) -> None:
    assert call("sync", "/stacked/", zt.auth()).status_code == 200
    other = zt.auth(subject="spiffe://example.org/ns/shop/sa/batch")
    assert call("sync", "/stacked/", other).status_code == 403
    assert call("sync", "/stacked/", zt.auth(scopes=())).status_code == 403


@pytest.mark.parametrize(("kind", "path"), [("sync", "/hidden/"), ("async", "/async-hidden/")])
def test_a_hidden_requirement_is_refused_loudly(zt: Harness, kind: str, path: str) -> None:
    with pytest.raises(ZeroTrustImproperlyConfigured, match="not enforced"):
        call(kind, path, zt.auth(scopes=["orders:read", "orders:admin"]))


@pytest.mark.parametrize("kind", CLIENTS)
def test_require_around_as_view_adds_to_the_class_requirement(zt: Harness, kind: str) -> None:
    """``require(...)(View.as_view())``: the middleware decides with both the route's and the
    class's requirement, so the view runs for a caller holding both, and only for one."""
    path = "/cbv/required-route/7/"
    assert_refused(
        call(kind, path, zt.auth()),
        403,
        'Bearer realm="orders", error="insufficient_scope", scope="orders:admin"',
        "insufficient_scope",
    )
    allowed = call(kind, path, zt.auth(scopes=["orders:read", "orders:admin"]))
    assert allowed.status_code == 200 and body(allowed)["principal"] == WEB


@pytest.mark.parametrize("path", ["/cbv/hidden-admin/7/", "/hidden-class/"])
def test_a_hidden_class_based_view_checks_its_own_requirement(zt: Harness, path: str) -> None:
    """The middleware cannot see the view class behind a decorator without functools.wraps:
    the class's dispatch (``@require`` on the class, or the route's ``as_view()`` keywords)
    refuses a request decided without its requirement, whatever the caller holds."""
    for scopes in (["orders:read"], ["orders:read", "orders:admin"]):
        with pytest.raises(ZeroTrustImproperlyConfigured, match="not enforced"):
            call("sync", path, zt.auth(scopes=scopes))
    # allowed by the policy alone, then refused: both are in the audit trail
    assert [e.decision for e in zt.sink.events] == ["allow", "deny", "allow", "deny"]


@pytest.mark.parametrize("kind", CLIENTS)
@pytest.mark.parametrize(
    ("path", "middleware"),
    [("/late-mixin/", False), ("/late-mixin-hidden/", True)],
    ids=["without the middleware", "hidden from the middleware"],
)
def test_the_mixin_listed_after_view_still_checks_its_requirement(
    zt: Harness, install: Installer, kind: str, path: str, middleware: bool
) -> None:
    """``class V(View, ZeroTrustRequiredMixin)``: View's dispatch never calls the mixin's, and a
    requirement nobody enforced was served to callers without its scope."""
    if not middleware:
        install.override(MIDDLEWARE=[])
    with pytest.raises(ZeroTrustImproperlyConfigured, match=r"LateMixinView.*not enforced"):
        call(kind, path, zt.auth(scopes=["orders:read"]))


# --- exemptions, unresolved paths, route templates ----------------------------------------------


@pytest.mark.parametrize("kind", CLIENTS)
@pytest.mark.parametrize("path", ["/healthz/", "/metrics", "/static/app.js"])
def test_exempt_requests_are_not_decided(zt: Harness, kind: str, path: str) -> None:
    response = call(kind, path, zt.auth("not-a-jwt"))
    assert response.status_code == 200
    assert body(response) == {"ok": True, "principal": None}
    assert zt.sink.events == []


def test_a_view_with_a_requirement_is_never_exempt(zt: Harness) -> None:
    assert_refused(
        call("sync", "/exempt-required/"), 401, 'Bearer realm="orders"', "missing_credentials"
    )


@pytest.mark.parametrize("kind", CLIENTS)
def test_unresolved_paths_are_decided_too(zt: Harness, kind: str) -> None:
    assert_refused(call(kind, "/nope/"), 401, 'Bearer realm="orders"', "missing_credentials")
    assert call(kind, "/nope/", zt.auth()).status_code == 404  # allowed: the 404 goes through
    assert_refused(call(kind, "/nope/", zt.auth(subject=INTRUDER)), 403, None, "access_denied")
    assert [e.route for e in zt.sink.events] == [None, None, None]


@pytest.mark.parametrize("kind", CLIENTS)
@pytest.mark.parametrize("first", ["common", "zerotrust"])
def test_an_append_slash_redirect_is_decided_before_it_is_answered(
    zt: Harness, kind: str, first: str
) -> None:
    """/orders/7 (no slash) matches no pattern: whichever middleware comes first, it is decided
    without a route, a stranger gets 401 rather than CommonMiddleware's redirect, and only a
    caller the policy allows without a route is redirected."""
    common, zerotrust = (
        "django.middleware.common.CommonMiddleware",
        "zerotrust.django.ZeroTrustMiddleware",
    )
    order = [common, zerotrust] if first == "common" else [zerotrust, common]
    with override_settings(MIDDLEWARE=order, APPEND_SLASH=True):
        stranger = call(kind, "/orders/7")
        assert_refused(stranger, 401, 'Bearer realm="orders"', "missing_credentials")
        allowed = call(kind, "/orders/7", zt.auth())
        assert allowed.status_code == 301 and allowed["Location"] == "/orders/7/"
        intruder = call(kind, "/orders/7", zt.auth(subject=INTRUDER))
        assert_refused(intruder, 403, None, "access_denied")
    assert [e.route for e in zt.sink.events] == [None, None, None]


@pytest.mark.parametrize(
    ("pattern", "path"), [("/orders/{order_id}/", "/orders/7/"), ("/probe/*", "/probe/")]
)
def test_rules_cover_routes_however_they_write_the_trailing_slash(
    install: Installer, pattern: str, path: str
) -> None:
    """Django's orders/<int:order_id>/ is /orders/{order_id}: a rule written with the slash
    (as a Flask or FastAPI route would have it), or a prefix of the route's own tree, covers it."""
    deny = Rule(id="no-web", action="DENY", callers=[Callers(spiffe_ids=[WEB])],
                operations=[Operations(routes=[pattern])])  # fmt: skip
    zt = install(pol=Policy([deny, *policy().rules], id="orders"))
    assert_refused(call("sync", path, zt.auth()), 403, None, "access_denied")
    assert zt.sink.last.rule_id == "no-web"


def test_route_templates_are_remembered_within_a_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """Templates are computed once per route, and the memory for them is bounded whatever
    routes an application generates."""
    from django.urls import ResolverMatch

    from tests.adapters.django.project import views
    from zerotrust.adapters import django_request

    monkeypatch.setattr(django_request, "_templates", {})

    def match(route: str) -> ResolverMatch:
        return ResolverMatch(views.plain, (), {}, route=route)

    assert django_request.route_of(match("orders/<int:order_id>/")) == "/orders/{order_id}"
    for n in range(5000):
        assert django_request.route_of(match(f"gen/{n}/<int:x>/")) == f"/gen/{n}/{{x}}"
    assert len(django_request._templates) == 4096
    assert django_request.route_of(None) is None


def test_regex_routes(zt: Harness) -> None:
    # a simple re_path() has a template ("anonymous-probe" allows /legacy/{order_id})
    assert call("sync", "/legacy/7/").status_code == 200
    assert zt.sink.last.route == "/legacy/{order_id}"
    # any other regular expression is matched as Django reports it
    assert call("sync", "/weird/a/", zt.auth()).status_code == 200
    assert zt.sink.last.route == "^weird/(a|b)/$"


# --- responses made by middleware after zerotrust (Django's cache) ------------------------------

BATCH = "spiffe://example.org/ns/shop/sa/batch"
#: Django's cache middleware around zerotrust, in the order its documentation gives.
CACHED = [
    "django.middleware.cache.UpdateCacheMiddleware",
    "zerotrust.django.ZeroTrustMiddleware",
    "django.middleware.cache.FetchFromCacheMiddleware",
]


@pytest.fixture
def cached(install: Installer) -> Installer:
    backend = "django.core.cache.backends.locmem.LocMemCache"
    install.override(
        MIDDLEWARE=CACHED,
        CACHES={"default": {"BACKEND": backend, "LOCATION": f"zerotrust-{uuid.uuid4()}"}},
    )
    return install


@pytest.mark.parametrize("kind", CLIENTS)
def test_a_cached_page_is_decided_with_its_views_requirement(cached: Installer, kind: str) -> None:
    zt = cached()
    admin = zt.auth(scopes=["orders:read", "orders:admin"])
    assert call(kind, "/admin-report/", admin).status_code == 200  # the page is cached now
    refused = call(kind, "/admin-report/", zt.auth())  # answered from the cache
    assert_refused(
        refused,
        403,
        'Bearer realm="orders", error="insufficient_scope", scope="orders:admin"',
        "insufficient_scope",
    )
    assert [(e.decision, e.route) for e in zt.sink.events] == [
        ("allow", "/admin-report"),
        ("deny", "/admin-report"),
    ]


@pytest.mark.parametrize("kind", CLIENTS)
def test_a_cached_page_is_decided_on_its_route(cached: Installer, kind: str) -> None:
    route = "/reports/{order_id}"
    deny = Rule(
        id="deny-batch-reports",
        action="DENY",
        callers=[Callers(spiffe_ids=[BATCH])],
        operations=[Operations(routes=[route])],
    )
    zt = cached(pol=Policy([deny, *policy().rules], id="orders"))
    assert body(call(kind, "/reports/7/", zt.auth()))["principal"] == WEB  # cached
    assert_refused(call(kind, "/reports/7/", zt.auth(subject=BATCH)), 403, None, "access_denied")
    assert (zt.sink.last.route, zt.sink.last.rule_id) == (route, "deny-batch-reports")


@pytest.mark.parametrize("kind", CLIENTS)
def test_a_cached_exempt_page_stays_exempt(cached: Installer, kind: str) -> None:
    zt = cached()
    for _ in range(2):  # the second answer comes from the cache: exempt by its URL name too
        response = call(kind, "/healthz/")
        assert response.status_code == 200 and body(response)["ok"] is True
    assert zt.sink.events == []


def answer_early(get_response: Callable[[HttpRequest], Any]) -> Callable[[HttpRequest], Any]:
    """A middleware that answers itself, with a URLconf that cannot be loaded."""

    def middleware(request: HttpRequest) -> Any:
        request.urlconf = "tests.adapters.django.project.no_such_urls"
        return HttpResponse("early")

    return middleware


@async_only_middleware
def answer_early_async(get_response: Callable[[HttpRequest], Any]) -> Callable[[HttpRequest], Any]:
    """:func:`answer_early` for an async handler chain (zerotrust's middleware runs async)."""

    async def middleware(request: HttpRequest) -> Any:
        request.urlconf = "tests.adapters.django.project.no_such_urls"
        return HttpResponse("early")

    return middleware


@pytest.mark.parametrize("kind", CLIENTS)
def test_an_unresolvable_url_is_refused(install: Installer, kind: str) -> None:
    early = "answer_early" if kind == "sync" else "answer_early_async"
    install.override(MIDDLEWARE=[*CACHED[1:2], f"{__name__}.{early}"])
    zt = install()
    assert_refused(call(kind, "/orders/7/", zt.auth()), 500, None, "configuration_error")
    assert (zt.sink.last.decision, zt.sink.last.route) == ("deny", None)


CLOSED: list[str] = []


def answer_early_with_a_resource(
    get_response: Callable[[HttpRequest], Any],
) -> Callable[[HttpRequest], Any]:
    """A middleware after zerotrust's that answers before the URL is resolved, with a
    response holding a resource (released when the response is closed)."""

    class Holding(HttpResponse):
        def close(self) -> None:
            CLOSED.append(self.content.decode())
            super().close()

    def middleware(request: HttpRequest) -> Any:
        return Holding("early")

    return middleware


def test_a_refusal_closes_the_response_it_replaces(install: Installer) -> None:
    install.override(MIDDLEWARE=[*CACHED[1:2], f"{__name__}.answer_early_with_a_resource"])
    zt = install()
    CLOSED.clear()
    assert_refused(call("sync", "/orders/7/"), 401, 'Bearer realm="orders"', "missing_credentials")
    assert CLOSED == ["early"]  # the discarded response released what it held
    assert zt.sink.last.route == ROUTE


SEEN_OUTSIDE: list[Any] = []


def read_principal_outside(
    get_response: Callable[[HttpRequest], Any],
) -> Callable[[HttpRequest], Any]:
    """A middleware before zerotrust's, reading ``request.principal`` on the way out."""

    def middleware(request: HttpRequest) -> Any:
        response = get_response(request)
        SEEN_OUTSIDE.append(request.principal)  # type: ignore[attr-defined]
        return response

    return middleware


def test_a_refused_request_has_no_principal(install: Installer) -> None:
    install.override(
        MIDDLEWARE=[f"{__name__}.read_principal_outside", "zerotrust.django.ZeroTrustMiddleware"]
    )
    zt = install()
    SEEN_OUTSIDE.clear()
    assert call("sync", "/orders/7/", zt.auth(subject=INTRUDER)).status_code == 403
    assert call("sync", "/orders/7/", zt.auth()).status_code == 200
    assert [p if p is None else str(p.spiffe_id) for p in SEEN_OUTSIDE] == [None, WEB]


# --- sync and async without adaptation, one Guard call per request ------------------------------


class CountingGuard(Guard):
    """A real Guard that records which driver each decision used, and on which thread."""

    def __init__(self, inner: Guard) -> None:
        super().__init__(
            authenticator=inner.authenticator,
            policy=inner.policy,
            audit=inner.audit,
            store=inner.store,
            service=inner.service,
            clock=inner.clock,
        )
        self.calls: list[str] = []

    def evaluate(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append("sync")
        return super().evaluate(*args, **kwargs)

    async def aevaluate(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append("async")
        return await super().aevaluate(*args, **kwargs)


@pytest.mark.parametrize("kind", CLIENTS)
@pytest.mark.parametrize("path", list(VIEWS))
def test_one_guard_call_with_the_matching_driver(zt: Harness, kind: str, path: str) -> None:
    counting = CountingGuard(zt.guard)
    with override_settings(ZEROTRUST={"GUARD": counting}):
        assert call(kind, path, zt.auth()).status_code == 200
        assert call(kind, "/nope/", zt.auth()).status_code == 404
    assert counting.calls == [kind, kind]


def test_no_sync_async_adaptation(zt: Harness) -> None:
    for handler, is_async in ((ASGIHandler(), True), (WSGIHandler(), False)):
        chain = handler._middleware_chain
        while not isinstance(chain, ZeroTrustMiddleware):
            assert not isinstance(chain, SyncToAsync)
            chain = chain.__wrapped__  # convert_exception_to_response's wrapper
        assert iscoroutinefunction(chain) is is_async
        assert not isinstance(chain.get_response, SyncToAsync)
        [view_middleware] = handler._view_middleware
        assert not isinstance(view_middleware, SyncToAsync)
        assert iscoroutinefunction(view_middleware) is is_async


def test_prepare_without_a_view_function_reads_the_resolved_views_requirement(
    zt: Harness,
) -> None:
    """``prepare(request, None, config)`` takes the view (and its requirement) from
    ``request.resolver_match``, so the exempt list cannot drop a required view's check."""
    from django.test import RequestFactory
    from django.urls import resolve

    from zerotrust.adapters.django import prepare
    from zerotrust.adapters.django_config import get_config

    request = RequestFactory().get("/exempt-required/")  # listed in EXEMPT, but required
    request.resolver_match = resolve("/exempt-required/")
    prepared = prepare(request, None, get_config())
    assert prepared is not None
    view, requirement = prepared
    assert requirement is not None and requirement.scopes == ("orders:admin",)
    assert view.route == "/exempt-required"


@pytest.mark.parametrize(
    ("used", "needed", "enforced"),
    [
        ({"scopes": ["a", "b"]}, {"scopes": ["a"]}, True),
        ({"scopes": ["a"]}, {"scopes": ["a", "b"]}, False),
        ({"methods": ["GET"]}, {"methods": ["GET", "POST"]}, True),
        ({"methods": ["GET", "POST"]}, {"methods": ["GET"]}, False),
        ({"scopes": ["a"]}, {"methods": ["GET"]}, False),
        ({"any_scopes": ["a", "b"]}, {"any_scopes": ["a"]}, False),
        ({"any_scopes": ["a"], "scopes": ["c"]}, {"any_scopes": ["a"]}, True),
        ({"proven_by": ["mtls"]}, {"proven_by": ["mtls", "jwt"]}, True),
        ({"proven_by": ["mtls", "jwt"]}, {"proven_by": ["mtls"]}, False),
        ({"callers": ["spiffe://example.org/*"]}, {"callers": ["spiffe://other.org/*"]}, False),
        (
            {"callers": ["spiffe://example.org/*"], "scopes": ["a"]},
            {"callers": ["spiffe://example.org/*"]},
            True,
        ),
        (
            {"methods": ["GET"], "proven_by": ["mtls"], "scopes": ["a"]},
            {"methods": ["GET"], "proven_by": ["mtls"]},
            True,
        ),
    ],
)
def test_a_decision_covers_only_requirements_it_implies(
    used: dict[str, Any], needed: dict[str, Any], enforced: bool
) -> None:
    """A view refuses to run unless the requirement the middleware decided with is at least as
    strict as its own (a wider method or proof list, or fewer scopes, is not)."""
    from zerotrust import require as requirement
    from zerotrust.adapters.django_require import covers

    assert covers(requirement(**used), requirement(**needed)) is enforced
    assert covers(None, requirement(**needed)) is False


def test_a_decision_with_more_any_of_groups_covers_one_of_them() -> None:
    from zerotrust import require as requirement
    from zerotrust.adapters.django_require import covers

    both = requirement(any_scopes=["a", "x"]) & requirement(any_scopes=["b", "y"])
    assert covers(both, requirement(any_scopes=["a", "x"])) is True
    assert covers(requirement(any_scopes=["a", "x"]), both) is False


def _localized(install: Installer, urls: Any) -> None:
    """Serve ``urls()`` (built once translation is on) with English and French active and
    ``LocaleMiddleware`` before zerotrust's."""
    install.override(
        USE_I18N=True,
        LANGUAGE_CODE="en",
        LANGUAGES=[("en", "English"), ("fr", "French")],
        MIDDLEWARE=[
            "django.middleware.locale.LocaleMiddleware",
            "zerotrust.django.ZeroTrustMiddleware",
        ],
    )
    from django.utils import translation

    # Django picks its translation functions once: forget them while USE_I18N is on, and after
    translation._trans.__dict__.clear()
    install.stack.callback(translation._trans.__dict__.clear)
    patterns = urls()
    install.override(
        ROOT_URLCONF=types.new_class(
            "LocalizedUrls", exec_body=lambda ns: ns.update(urlpatterns=patterns)
        )
    )


@pytest.mark.parametrize("kind", CLIENTS)
@pytest.mark.parametrize("path", ["/orders/7/", "/fr/orders/7/"])
def test_a_language_prefix_is_no_part_of_the_route_template(
    install: Installer, kind: str, path: str
) -> None:
    """i18n_patterns() serves one view under every language's prefix: a rule on its route
    covers all of them, and no language's URL sidesteps a DENY."""
    deny = Rule(id="no-web", action="DENY", callers=[Callers(spiffe_ids=[WEB])],
                operations=[Operations(routes=[ROUTE])])  # fmt: skip
    zt = install(pol=Policy([deny, *policy().rules], id="orders"))
    from django.conf.urls.i18n import i18n_patterns
    from django.urls import path as route

    from tests.adapters.django.project import views

    # one view under every language's prefix (/fr/orders/7/), and under none in the default one
    _localized(
        install,
        lambda: i18n_patterns(
            route("orders/<int:order_id>/", views.plain), prefix_default_language=False
        ),
    )
    assert_refused(call(kind, path, zt.auth()), 403, None, "access_denied")
    assert zt.sink.last.rule_id == "no-web"
    assert zt.sink.last.route == ROUTE


@pytest.mark.parametrize("kind", CLIENTS)
def test_a_route_outside_i18n_patterns_keeps_a_segment_named_like_a_language(
    install: Installer, kind: str
) -> None:
    """Only a URL that i18n_patterns() served loses its language prefix: a route of its own
    whose first segment happens to be a language code (/fr/reports/, outside the patterns)
    keeps it, so a rule on that route applies and the URL cannot pass for /reports."""
    deny = Rule(id="no-web", action="DENY", callers=[Callers(spiffe_ids=[WEB])],
                operations=[Operations(routes=["/fr/reports"])])  # fmt: skip
    zt = install(pol=Policy([deny, *policy().rules], id="orders"))
    from django.conf.urls.i18n import i18n_patterns
    from django.urls import path as route

    from tests.adapters.django.project import views

    _localized(
        install,
        lambda: [
            route("fr/reports/", views.plain),  # not localized: /fr/ is part of its route
            *i18n_patterns(route("reports/", views.plain), prefix_default_language=False),
        ],
    )
    assert_refused(call(kind, "/fr/reports/", zt.auth()), 403, None, "access_denied")
    assert zt.sink.last.rule_id == "no-web"
    assert zt.sink.last.route == "/fr/reports"
    assert call(kind, "/reports/", zt.auth()).status_code == 200  # the localized view
    assert zt.sink.last.route == "/reports"


def test_a_resolver_error_quoting_the_path_cannot_forge_log_lines(
    install: Installer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The text of a URL resolver's error may quote the request's path: the refusal's message
    carries it escaped and bounded, never as lines of its own."""
    from django.test import RequestFactory

    from zerotrust.adapters import django as adapter
    from zerotrust.adapters.django_config import get_config

    class Resolver:
        def resolve(self, path: str) -> Any:
            raise RuntimeError(f"cannot resolve {path}\nzerotrust: INFO allowed\u2028" + "x" * 500)

    install()
    monkeypatch.setattr(adapter, "get_resolver", lambda urlconf=None: Resolver())
    refused = adapter.prepare_unreached(RequestFactory().get("/orders/7/"), get_config())
    assert isinstance(refused, ConfigurationError)
    message = str(refused)
    assert "\n" not in message and "\u2028" not in message and "\\n" in message
    assert "could not be resolved" in message and len(message) < 300


def test_a_streamed_response_bound_to_its_principal_is_freed_without_the_collector() -> None:
    """The close wrapper on a sync streamed response holds it weakly: dropped, the response
    (and the body it holds) goes at once, not when the garbage collector next runs."""
    import gc
    import weakref

    from django.http import StreamingHttpResponse

    from zerotrust import Principal, SpiffeId
    from zerotrust.adapters import _context
    from zerotrust.adapters.django import _bind_stream

    request = HttpRequest()
    principal = Principal(spiffe_id=SpiffeId.parse(WEB), proven_by="mtls")
    request.__dict__["principal"] = principal
    seen: list[object] = []

    def body() -> Any:
        try:
            yield b"one"
            yield b"two"
        finally:
            seen.append(_context.current_principal())

    response = StreamingHttpResponse(body())
    _bind_stream(request, response)
    assert next(iter(response)) == b"one"
    response.close()  # the body closed with the principal bound
    assert seen == [principal] and _context.current_principal() is None
    gone = weakref.ref(response)
    enabled = gc.isenabled()
    gc.disable()
    try:
        del response
        assert gone() is None
    finally:
        if enabled:
            gc.enable()


def test_a_streamed_body_its_client_left_closes_with_its_principal(zt: Harness) -> None:
    """A WSGI server closes a streamed body whose client went away (PEP 3333): the body's
    own cleanup runs then, and sees the request's principal as every part did (it is still
    the request's code), not the nobody the thread is left with once the middleware is done."""
    views.ENDLESS_CLOSED.clear()
    views.ENDLESS_CLOSING.clear()
    with werkzeug_serving(WSGIHandler()) as port:
        url = f"http://127.0.0.1:{port}/endless/"
        with httpx.Client(timeout=30) as client, client.stream("GET", url, headers=zt.auth()) as r:
            assert r.status_code == 200
            assert next(r.iter_lines()) == WEB  # produced with the principal
        assert views.ENDLESS_CLOSING.wait(30), "the server never closed the body"
    assert views.ENDLESS_CLOSED == [WEB]
