"""Django REST framework: ZeroTrustAuthentication and ZeroTrustPermission, with and without the
middleware, answering exactly like every other framework."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from django.test import AsyncClient, Client

from tests.adapters.django.conftest import INTRUDER, STRANGER, WEB, Harness, Installer, policy
from zerotrust import Callers, Operations, Policy, RateLimit, Rule, ScopeRule
from zerotrust.adapters.django_config import ZeroTrustImproperlyConfigured
from zerotrust.django import ZeroTrustUser
from zerotrust.errors import public_code


@pytest.fixture(params=["standalone", "with middleware"])
def mode(request: pytest.FixtureRequest, install: Installer) -> str:
    if request.param == "standalone":
        install.override(MIDDLEWARE=[])
    return str(request.param)


def get(path: str, headers: dict[str, str] | None = None) -> Any:
    return Client().get(path, headers=headers or {})


def refused(response: Any, status: int, challenge: str | None, code: str) -> None:
    assert response.status_code == status, response.content
    assert response.get("WWW-Authenticate") == challenge
    assert response["Content-Type"] == "application/json"
    data = json.loads(response.content)
    assert data.keys() == {"error", "error_description"} and data["error"] == public_code(code)


def test_success(zt: Harness, mode: str) -> None:
    response = get("/api/orders/", zt.auth())
    assert response.status_code == 200, response.content
    assert json.loads(response.content) == {
        "user": WEB,
        "auth": WEB,
        "principal": WEB,
        "authenticated": True,
    }
    [event] = zt.sink.events  # authentication and permission share one decision
    assert (event.decision, event.route) == ("allow", "/api/orders")


CASES = {
    "no credentials": (401, 'Bearer realm="orders"', "missing_credentials"),
    "bad token": (401, 'Bearer realm="orders", error="invalid_token"', "malformed_token"),
    "expired": (401, 'Bearer realm="orders", error="invalid_token"', "token_expired"),
    "insufficient scope": (
        403,
        'Bearer realm="orders", error="insufficient_scope", scope="orders:read"',
        "insufficient_scope",
    ),
    "caller not allowed": (403, None, "access_denied"),
    "deny rule": (403, None, "access_denied"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_refusals(zt: Harness, mode: str, case: str) -> None:
    headers = {
        "no credentials": {},
        "bad token": zt.auth("x.y.z"),
        "expired": zt.auth(ttl=1),
        "insufficient scope": zt.auth(scopes=()),
        "caller not allowed": zt.auth(subject=STRANGER),
        "deny rule": zt.auth(subject=INTRUDER),
    }[case]
    if case == "expired":
        zt.clock.advance(120)
    refused(get("/api/orders/", headers), *CASES[case])
    [event] = zt.sink.events
    assert event.decision == "deny" and event.status == CASES[case][0]


@pytest.mark.parametrize("accept", ["text/html", "text/html,application/xhtml+xml", "*/*"])
def test_refusals_are_json_whatever_the_client_accepts(zt: Harness, mode: str, accept: str) -> None:
    # DRF's content negotiation would render a browser's refusal with the view's HTML renderer
    anonymous = get("/api/orders-html/", {"Accept": accept})
    refused(anonymous, 401, 'Bearer realm="orders"', "missing_credentials")
    refused(
        get("/api/orders-html/", {**zt.auth(scopes=()), "Accept": accept}),
        403,
        'Bearer realm="orders", error="insufficient_scope", scope="orders:read"',
        "insufficient_scope",
    )


def test_view_required_scopes(zt: Harness, mode: str) -> None:
    # ApiAuthOnly requires orders:admin and has no ZeroTrustPermission: the authentication
    # class refuses by itself rather than let a denied request through
    refused(
        get("/api/auth-only/", zt.auth()),
        403,
        'Bearer realm="orders", error="insufficient_scope", scope="orders:admin"',
        "insufficient_scope",
    )
    assert (
        get("/api/auth-only/", zt.auth(scopes=["orders:read", "orders:admin"])).status_code == 200
    )


def test_a_hidden_view_class_keeps_its_requirement_without_the_middleware(
    install: Installer,
) -> None:
    """A decorator around ``as_view()`` without functools.wraps hides the view class from the
    resolver match; the requirement is read from the view instance, so the decision has it."""
    install.override(MIDDLEWARE=[])
    zt = install()
    refused(
        get("/api/hidden/", zt.auth()),
        403,
        'Bearer realm="orders", error="insufficient_scope", scope="orders:admin"',
        "insufficient_scope",
    )
    allowed = get("/api/hidden/", zt.auth(scopes=["orders:read", "orders:admin"]))
    assert json.loads(allowed.content) == {"principal": WEB}
    assert [e.decision for e in zt.sink.events] == ["deny", "allow"]


def test_a_hidden_view_class_fails_closed_with_the_middleware(zt: Harness) -> None:
    """The middleware decided without the requirement it could not see: refused loudly, as
    the mixin and @require refuse, never served."""
    for scopes in (["orders:read"], ["orders:read", "orders:admin"]):
        with pytest.raises(ZeroTrustImproperlyConfigured, match="not enforced"):
            get("/api/hidden/", zt.auth(scopes=scopes))


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_options_describes_only_the_actions_the_caller_may_perform(
    install: Installer, mode: str, kind: str
) -> None:
    """DRF's OPTIONS metadata asks the permission classes about a copy of the request with
    method POST: that is decided for POST (and not audited), not answered with the OPTIONS
    decision, so a caller who may not POST does not get the POST form (WSGI and ASGI)."""
    zt = install(
        pol=Policy(
            [
                Rule(
                    id="preflight",
                    callers=[Callers(anonymous=True), Callers(trust_domains=["example.org"])],
                    operations=[Operations(methods=["OPTIONS"])],
                ),
                Rule(
                    id="writers",
                    callers=[Callers(trust_domains=["example.org"])],
                    operations=[Operations(methods=["POST"], routes=["/api/create"])],
                    scopes=ScopeRule(all=["orders:write"]),
                ),
            ]
        )
    )

    def actions(headers: dict[str, str]) -> Any:
        if kind == "sync":
            response = Client().options("/api/create/", headers=headers)
        else:
            response = asyncio.run(AsyncClient().options("/api/create/", headers=headers))
        assert response.status_code == 200, response.content
        # the refused POST copy leaves nothing of a refusal on the description
        assert response.get("Cache-Control") is None
        return json.loads(response.content).get("actions")

    assert actions({}) is None
    assert actions(zt.auth(scopes=["orders:read"])) is None
    assert list(actions(zt.auth(scopes=["orders:write"]))["POST"]) == ["item", "quantity"]
    assert [(e.method, e.decision) for e in zt.sink.events] == [("OPTIONS", "allow")] * 3


def test_an_action_may_ask_more_than_its_viewset(zt: Harness, mode: str) -> None:
    """DRF hands ``@action(required_scopes=...)`` to the view of that action only."""
    assert json.loads(get("/api/viewset/", zt.auth()).content) == {"principal": WEB}
    refused(
        get("/api/viewset/purge/", zt.auth()),
        403,
        'Bearer realm="orders", error="insufficient_scope", scope="orders:purge"',
        "insufficient_scope",
    )
    allowed = get("/api/viewset/purge/", zt.auth(scopes=["orders:read", "orders:purge"]))
    assert json.loads(allowed.content) == {"purged": WEB}
    assert [e.decision for e in zt.sink.events] == ["allow", "deny", "allow"]


def test_permission_class_alone(zt: Harness, mode: str) -> None:
    assert json.loads(get("/api/permission-only/", zt.auth()).content) == {"principal": WEB}
    # a 401 stays a 401 with its challenge, even with no authentication class on the view
    refused(get("/api/permission-only/"), 401, 'Bearer realm="orders"', "missing_credentials")


def test_a_requirement_written_wrong_is_an_audited_refusal(zt: Harness, mode: str) -> None:
    """``as_view(required_scopes="orders:read")`` on a DRF route: without the middleware it was
    Django's HTML 500 and no audit event; it is the middleware's audited JSON refusal."""
    for headers in (zt.auth(), None):
        response = Client(raise_request_exception=False).get("/api/typo/", headers=headers or {})
        refused(response, 500, None, "configuration_error")
        assert (zt.sink.last.decision, zt.sink.last.reason) == ("deny", "configuration_error")
        assert zt.sink.last.route == "/api/typo"
    assert len(zt.sink.events) == 2


def test_authenticate_header_drives_drf_401(install: Installer) -> None:
    # zerotrust allows anonymous callers on /api/anon; DRF's IsAuthenticated does not, and DRF
    # answers 401 with the challenge from ZeroTrustAuthentication.authenticate_header
    install.override(MIDDLEWARE=[])
    zt = install()
    response = get("/api/anon/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="orders"'
    assert zt.sink.last.decision == "allow"


def test_an_exempt_drf_view_is_left_to_drf(install: Installer, mode: str) -> None:
    # EXEMPT: zerotrust decides nothing and authenticates nobody; DRF's IsAuthenticated then
    # answers 401 with ZeroTrustAuthentication's default challenge
    zt = install(exempt=["/api/anon/"])
    response = get("/api/anon/", zt.auth())
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="orders"'
    assert zt.sink.events == []


def test_rate_limited(install: Installer, mode: str) -> None:
    zt = install(pol=policy(rate_limits=[RateLimit("per-caller", rate=1, burst=1)]))
    headers = zt.auth()
    assert get("/api/orders/", headers).status_code == 200
    response = get("/api/orders/", headers)
    refused(response, 429, None, "rate_limited")
    assert response["Retry-After"] == "1"


def test_user_object(zt: Harness) -> None:
    from zerotrust import Principal, SpiffeId

    principal = Principal(proven_by="mtls", spiffe_id=SpiffeId.parse(WEB), subject=WEB)
    user = ZeroTrustUser(principal)
    assert user.is_authenticated and not user.is_anonymous and user.is_active
    assert not user.is_staff and not user.is_superuser
    assert user.pk == user.id == WEB  # DRF's per-user throttles key on pk: one bucket each
    assert user.username == user.get_username() == str(user) == WEB
    assert not user.has_perm("orders.view_order") and not user.has_perms(["x"])
    assert not user.has_module_perms("orders") and user.get_all_permissions() == set()
    assert user == ZeroTrustUser(principal) and hash(user) == hash(ZeroTrustUser(principal))
    assert repr(user) == f"ZeroTrustUser({WEB!r})"


def test_refusals_are_no_store_whatever_the_exception_handler(install: Installer) -> None:
    """DRF's own exception handler writes no Cache-Control; a refusal has it all the same, as
    every other adapter sends it (through the view's response headers), with zerotrust's
    handler too, which leaves DRF's other errors alone."""
    install.override(MIDDLEWARE=[])
    zt = install()
    refusal = get("/api/orders/")  # DRF's default handler
    refused(refusal, *CASES["no credentials"])
    assert refusal["Cache-Control"] == "no-store"
    from django.conf import settings

    handler = "zerotrust.django.drf_exception_handler"
    install.override(REST_FRAMEWORK={**settings.REST_FRAMEWORK, "EXCEPTION_HANDLER": handler})
    refusal = get("/api/orders/")
    refused(refusal, *CASES["no credentials"])
    assert refusal["Cache-Control"] == "no-store"
    allowed = get("/api/orders/", zt.auth())
    assert allowed.status_code == 200 and allowed.get("Cache-Control") is None


def test_each_workload_has_its_own_throttle_bucket(install: Installer) -> None:
    from rest_framework.throttling import UserRateThrottle

    from zerotrust import Principal, SpiffeId

    class Request:
        def __init__(self, who: str) -> None:
            self.user = ZeroTrustUser(
                Principal(proven_by="mtls", spiffe_id=SpiffeId.parse(who), subject=who)
            )

    throttle = UserRateThrottle.__new__(UserRateThrottle)
    throttle.scope = "user"
    first = throttle.get_cache_key(Request(WEB), None)
    second = throttle.get_cache_key(Request("spiffe://example.org/ns/shop/sa/other"), None)
    assert first != second and "None" not in first


def test_no_principal_is_left_in_the_context_after_a_standalone_request(
    install: Installer,
) -> None:
    """Without the middleware nothing resets the context variable after the response, so
    DRF's decision never sets it: the next code on the thread sees no caller."""
    from zerotrust.django import current_principal

    install.override(MIDDLEWARE=[])
    zt = install()
    assert get("/api/orders/", zt.auth()).status_code == 200
    assert zt.sink.last.decision == "allow"
    assert current_principal() is None


def test_a_view_called_without_url_resolution_is_decided_on_its_urls_route(
    install: Installer,
) -> None:
    """A DRF view called directly (DRF's APIRequestFactory, as DRF's testing guide does) has
    no resolver match: its URL is resolved as the middleware resolves it, so rules scoped to
    that route apply exactly as they do to the same request through the URLconf."""
    from rest_framework.test import APIRequestFactory

    from tests.adapters.django.project.views import ApiOrders

    install.override(MIDDLEWARE=[])
    zt = install(
        pol=Policy(
            [
                Rule(
                    id="no-intruder-orders",
                    action="DENY",
                    callers=[Callers(spiffe_ids=[INTRUDER])],
                    operations=[Operations(routes=["/api/orders"])],
                ),
                Rule(id="shop", callers=[Callers(trust_domains=["example.org"])]),
            ]
        )
    )
    intruder = zt.auth(subject=INTRUDER)
    refused(get("/api/orders/", intruder), 403, None, "access_denied")
    request = APIRequestFactory().get("/api/orders/", headers=intruder)
    response = ApiOrders.as_view()(request).render()
    refused(response, 403, None, "access_denied")
    assert [(e.route, e.decision) for e in zt.sink.events] == [("/api/orders", "deny")] * 2
    request = APIRequestFactory().get("/api/orders/", headers=zt.auth())
    assert ApiOrders.as_view()(request).status_code == 200
    assert zt.sink.last.route == "/api/orders"


def test_the_route_templates_of_a_routers_urls(install: Installer, mode: str) -> None:
    """A router's list and detail routes are templates like any other, and its format-suffix
    routes (``/orders/7.json``, which reach the same view) have the template of the route
    they suffix: a DENY rule on ``/orders/{pk}`` covers ``/orders/7.json`` too."""
    install.override(ROOT_URLCONF="tests.adapters.django.project.router_urls")
    zt = install()  # its policy lets shop callers GET any route
    for path in (
        "/re/orders/",
        "/re/orders/7/",
        "/re/orders/7.json",
        "/path/orders/7/",
        "/path/orders/7.json",
    ):
        assert get(path, zt.auth()).status_code == 200, path
    assert [e.route for e in zt.sink.events] == [
        "/re/orders",
        "/re/orders/{pk}",
        "/re/orders/{pk}",
        "/path/orders/{pk}",
        "/path/orders/{pk}",
    ]
    deny = Rule(
        id="no-order-details",
        action="DENY",
        operations=[Operations(routes=["/re/orders/{pk}", "/path/orders/{pk}"])],
    )
    denying = install(pol=Policy([deny, *policy().rules], id="orders"))
    for path in ("/re/orders/7/", "/re/orders/7.json", "/path/orders/7/", "/path/orders/7.json"):
        assert get(path, denying.auth()).status_code == 403, path
    assert get("/re/orders/", denying.auth()).status_code == 200


def test_permissions_chosen_by_reading_request_user(install: Installer) -> None:
    """A refused request's permission classes are looked up while DRF authenticates it; a
    view whose get_permissions() reads request.user re-enters authentication, and gets the
    refusal rather than endless recursion (a 500)."""
    install.override(MIDDLEWARE=[])
    zt = install()
    refused(
        get("/api/staff-bypass/", zt.auth(scopes=())),
        403,
        'Bearer realm="orders", error="insufficient_scope", scope="orders:read"',
        "insufficient_scope",
    )
    refused(get("/api/staff-bypass/"), *CASES["no credentials"])
    allowed = get("/api/staff-bypass/", zt.auth())
    assert json.loads(allowed.content) == {"principal": WEB}
    assert [e.decision for e in zt.sink.events] == ["deny", "deny", "allow"]


def test_an_api_view_function(zt: Harness, mode: str) -> None:
    """``@api_view`` with the classes given by DRF's decorators, called with DRF's APIClient:
    one decision per request, the refusals of every other view."""
    from rest_framework.test import APIClient

    client = APIClient()
    refused(client.get("/api/function/"), *CASES["no credentials"])
    client.credentials(HTTP_AUTHORIZATION=zt.auth(scopes=())["Authorization"])
    refused(client.get("/api/function/"), *CASES["insufficient scope"])
    client.credentials(HTTP_AUTHORIZATION=zt.auth()["Authorization"])
    response = client.get("/api/function/")
    assert response.status_code == 200, response.content
    assert response.json() == {"user": WEB, "auth": WEB}
    assert [(e.route, e.decision) for e in zt.sink.events] == [
        ("/api/function", "deny"),
        ("/api/function", "deny"),
        ("/api/function", "allow"),
    ]
