"""The Flask extension with the Flask test client: every outcome, real tokens, no mocks."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from flask import Blueprint, Flask, jsonify

from zerotrust import FixedClock, Guard, Operations, Policy, RateLimit, Request, Rule, TokenIssuer
from zerotrust.errors import ConfigurationError
from zerotrust.flask import RequestRefused, ZeroTrust, current_principal
from zerotrust.tokens import PrivateJWK
from zerotrust.wsgi import current_principal as context_principal

from ._support import (
    AUD,
    ISS,
    OTHER,
    WEB,
    DownKeys,
    bearer,
    expected_refusal,
    make_app,
    make_guard,
    make_policy,
)


@pytest.fixture(scope="module")
def key() -> PrivateJWK:
    return PrivateJWK.generate("ES256", kid="k1")


@pytest.fixture
def issuer(key: PrivateJWK, clock: FixedClock) -> TokenIssuer:
    return TokenIssuer(key, issuer=ISS, clock=clock)


def installed(issuer: TokenIssuer, clock: FixedClock, **kw: Any) -> tuple[Flask, Any]:
    guard, sink = make_guard(issuer, clock, **kw)
    zt = ZeroTrust()
    app = make_app(zt)
    zt.init_app(app, guard=guard)
    return app, sink


def test_success_principal_visible_everywhere(issuer: TokenIssuer, clock: FixedClock) -> None:
    app, sink = installed(issuer, clock)
    token = issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"])
    response = app.test_client().get("/orders/7", headers=bearer(token))
    assert response.status_code == 200
    assert response.json == {
        "order_id": 7,
        "spiffe_id": WEB,
        "proven_by": "jwt",
        "same_in_g": True,
        "same_in_context": True,
    }
    event = sink.last
    assert (event.decision, event.status, event.route) == ("allow", 200, "/orders/{order_id}")
    assert event.rule_id == "read-orders" and event.method == "GET"
    assert len(sink) == 1  # one evaluation per request
    assert context_principal() is None  # reset after the request


REFUSALS = [
    "no credentials",
    "garbage token",
    "expired",
    "wrong audience",
    "insufficient scope",
    "deny rule",
    "caller not allowed",
    "decorator scope missing",
    "decorator method",
    "two authorization headers",
]


@pytest.mark.parametrize("case", REFUSALS)
def test_refusals_match_the_shared_table(issuer: TokenIssuer, clock: FixedClock, case: str) -> None:
    app, sink = installed(issuer, clock)
    good = issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"])
    method, path, route, headers = {
        "no credentials": ("GET", "/orders/7", "/orders/{order_id}", {}),
        "garbage token": ("GET", "/orders/7", "/orders/{order_id}", bearer("abc.def.ghi")),
        "expired": (
            "GET",
            "/orders/7",
            "/orders/{order_id}",
            bearer(issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"], ttl=1)),
        ),
        "wrong audience": (
            "GET",
            "/orders/7",
            "/orders/{order_id}",
            bearer(issuer.issue(subject=WEB, audience="billing", scopes=["orders:read"])),
        ),
        "insufficient scope": (
            "GET",
            "/orders/7",
            "/orders/{order_id}",
            bearer(issuer.issue(subject=WEB, audience=AUD)),
        ),
        "deny rule": (
            "GET",
            "/orders/7",
            "/orders/{order_id}",
            bearer(issuer.issue(subject="intruder", audience=AUD, scopes=["orders:read"])),
        ),
        "caller not allowed": (
            "POST",
            "/orders/7/refund",
            "/orders/{order_id}/refund",
            bearer(issuer.issue(subject=OTHER, audience=AUD, scopes=["orders:refund"])),
        ),
        "decorator scope missing": (
            "POST",
            "/orders/7/refund",
            "/orders/{order_id}/refund",
            bearer(good),
        ),
        "decorator method": (
            "GET",
            "/orders/7/refund",
            "/orders/{order_id}/refund",
            bearer(issuer.issue(subject=WEB, audience=AUD, scopes=["orders:refund"])),
        ),
        "two authorization headers": (
            "GET",
            "/orders/7",
            "/orders/{order_id}",
            [("Authorization", f"Bearer {good}"), ("Authorization", f"Bearer {good}")],
        ),
    }[case]
    if case == "expired":
        clock.advance(120)
    guard = app.extensions["zerotrust"].guard
    view = app.view_functions["refund" if "refund" in path else "order"]
    joined = {}
    for name, value in headers.items() if isinstance(headers, dict) else headers:
        joined[name] = f"{joined[name]},{value}" if name in joined else value  # as WSGI joins
    status, expected_headers, expected_body = expected_refusal(
        guard,
        Request(method=method, route=route, path=path, headers=joined, host="localhost"),
        getattr(view, "__zerotrust_requirement__", None),
    )
    response = app.test_client().open(path, method=method, headers=headers)
    assert response.status_code == status
    assert response.json == expected_body
    for name, value in expected_headers.items():
        assert response.headers[name] == value
    assert response.headers["Cache-Control"] == "no-store"
    assert good not in response.get_data(as_text=True)
    assert "Traceback" not in response.get_data(as_text=True)
    event = sink.last
    assert (event.decision, event.status, event.route) == ("deny", status, route)
    assert len(sink) == 1


def test_specific_refusal_details(issuer: TokenIssuer, clock: FixedClock) -> None:
    app, sink = installed(issuer, clock)
    client = app.test_client()
    anonymous = client.get("/orders/7")
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"] == 'Bearer realm="orders"'
    assert anonymous.json == {
        "error": "missing_credentials",
        "error_description": "authentication required",
    }
    token = issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"])
    refund = client.post("/orders/7/refund", headers=bearer(token))
    assert refund.status_code == 403
    assert refund.headers["WWW-Authenticate"] == (
        'Bearer realm="orders", error="insufficient_scope", scope="orders:refund"'
    )
    ok = client.post(
        "/orders/7/refund",
        headers=bearer(issuer.issue(subject=WEB, audience=AUD, scopes=["orders:refund"])),
    )
    assert ok.status_code == 200 and ok.json == {"refunded": 7}
    assert sink.last.route == "/orders/{order_id}/refund"


def test_dry_run_records_and_lets_through(issuer: TokenIssuer, clock: FixedClock) -> None:
    app, sink = installed(issuer, clock, policy=make_policy(dry_run=True))
    token = issuer.issue(subject=WEB, audience=AUD)  # lacks orders:read
    response = app.test_client().get("/orders/7", headers=bearer(token))
    assert response.status_code == 200 and response.json["spiffe_id"] == WEB
    assert sink.last.dry_run and sink.last.would_decide == "deny"


def test_rate_limited(issuer: TokenIssuer, clock: FixedClock) -> None:
    policy = make_policy(rate_limits=[RateLimit("per-caller", rate=1, burst=2)])
    app, sink = installed(issuer, clock, policy=policy)
    client = app.test_client()
    token = issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"])
    codes = [client.get("/orders/7", headers=bearer(token)).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    limited = client.get("/orders/7", headers=bearer(token))
    assert limited.headers["Retry-After"] == "1"
    assert limited.json == {"error": "rate_limited", "error_description": "too many requests"}
    assert sink.last.reason == "rate_limited"
    clock.advance(1)
    assert client.get("/orders/7", headers=bearer(token)).status_code == 200


def test_keys_unavailable_is_503(issuer: TokenIssuer, clock: FixedClock) -> None:
    app, sink = installed(issuer, clock, keys=DownKeys())
    token = issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"])
    response = app.test_client().get("/orders/7", headers=bearer(token))
    assert response.status_code == 503
    assert response.json is not None and response.json["error"] == "temporarily_unavailable"
    assert "jwks endpoint down" not in response.get_data(as_text=True)
    assert sink.last.status == 503


def test_bare_decorator_requires_an_authenticated_caller(
    issuer: TokenIssuer, clock: FixedClock
) -> None:
    app, sink = installed(issuer, clock)
    client = app.test_client()
    assert client.get("/healthz").status_code == 200  # public by policy
    refused = client.get("/public/x")  # public by policy, but the view requires a caller
    assert refused.status_code == 401
    assert sink.last.reason == "requirement_not_met"
    token = issuer.issue(subject=WEB, audience=AUD)
    me = client.get("/me", headers=bearer(token))
    assert me.status_code == 200 and me.json["spiffe_id"] == WEB
    assert client.get("/me").status_code == 401


def test_stacked_requirements_combine(issuer: TokenIssuer, clock: FixedClock) -> None:
    guard, sink = make_guard(issuer, clock)
    zt = ZeroTrust()
    app = Flask("stacked")

    @app.get("/api/report")
    @zt.require(scopes=["reports:read"])
    @zt.require(callers=["spiffe://example.org/*"])
    def report() -> Any:
        return jsonify(ok=True)

    zt.init_app(app, guard=guard)
    client = app.test_client()
    both = issuer.issue(subject=WEB, audience=AUD, scopes=["reports:read"])
    assert client.get("/api/report", headers=bearer(both)).status_code == 200
    no_scope = issuer.issue(subject=WEB, audience=AUD)
    assert client.get("/api/report", headers=bearer(no_scope)).status_code == 403
    other = issuer.issue(subject=OTHER, audience=AUD, scopes=["reports:read"])
    assert client.get("/api/report", headers=bearer(other)).status_code == 403
    assert len(sink) == 3


def test_async_view(issuer: TokenIssuer, clock: FixedClock) -> None:
    app, _ = installed(issuer, clock)
    token = issuer.issue(subject=WEB, audience=AUD)
    response = app.test_client().get("/async", headers=bearer(token))
    assert response.status_code == 200 and response.json["spiffe_id"] == WEB


def test_init_app_factory_with_one_extension_and_two_apps(
    issuer: TokenIssuer, clock: FixedClock
) -> None:
    zt = ZeroTrust()
    bp = Blueprint("items", __name__, url_prefix="/api/v1")

    @bp.get("/items/<uuid:item_id>")
    @zt.require(scopes=["items:read"])
    def item(item_id: Any) -> Any:
        return jsonify(item=str(item_id), caller=str(current_principal.spiffe_id))

    def create_app(guard: Any) -> Flask:
        app = Flask("factory")
        app.register_blueprint(bp)
        zt.init_app(app, guard=guard)
        return app

    allow_all = Policy([Rule(id="all")])
    guard_a, sink_a = make_guard(issuer, clock, policy=allow_all)
    guard_b, sink_b = make_guard(issuer, clock, policy=Policy([]))
    app_a, app_b = create_app(guard_a), create_app(guard_b)
    token = issuer.issue(subject=WEB, audience=AUD, scopes=["items:read"])
    path = "/api/v1/items/12345678-1234-5678-1234-567812345678"
    assert app_a.test_client().get(path, headers=bearer(token)).status_code == 200
    assert app_b.test_client().get(path, headers=bearer(token)).status_code == 403
    assert sink_a.last.route == sink_b.last.route == "/api/v1/items/{item_id}"
    with pytest.raises(ConfigurationError, match="already installed"):
        zt.init_app(app_a, guard=guard_a)
    with pytest.raises(ConfigurationError, match="guard"):
        ZeroTrust().init_app(Flask("no-guard"))


def test_custom_error_handler(issuer: TokenIssuer, clock: FixedClock) -> None:
    guard, _ = make_guard(issuer, clock)
    zt = ZeroTrust()
    app = make_app(zt)

    @app.errorhandler(RequestRefused)
    def refused(exc: RequestRefused) -> Any:  # registered before init_app: kept
        body = {"message": "no entry", "code": exc.outcome.error.code}  # type: ignore[union-attr]
        return jsonify(body), exc.status, exc.headers

    zt.init_app(app, guard=guard)
    response = app.test_client().get("/orders/7")
    assert response.status_code == 401
    assert response.json == {"message": "no entry", "code": "missing_credentials"}
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="orders"'
    assert response.headers["Cache-Control"] == "no-store"  # exc.headers left it out


def test_a_handler_answer_without_the_challenge_gets_it(
    issuer: TokenIssuer, clock: FixedClock
) -> None:
    guard, _ = make_guard(issuer, clock)
    zt = ZeroTrust()
    app = make_app(zt)

    @app.errorhandler(RequestRefused)
    def refused(exc: RequestRefused) -> Any:
        return jsonify(problem=exc.outcome.error.code), exc.status, {"Cache-Control": "private"}  # type: ignore[union-attr]

    zt.init_app(app, guard=guard)
    response = app.test_client().get("/orders/7")
    assert response.status_code == 401 and response.json == {"problem": "missing_credentials"}
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="orders"'
    assert response.headers["Cache-Control"] == "private"  # the handler's own is kept


@pytest.mark.parametrize("status", [None, 200, 302], ids=["no-status", "200", "302"])
def test_a_handler_answer_that_is_no_error_is_replaced(
    issuer: TokenIssuer, clock: FixedClock, caplog: pytest.LogCaptureFixture, status: Any
) -> None:
    """A body returned without its status is Flask's 200: a refusal must never look like a
    success to clients, proxies and caches."""
    guard, sink = make_guard(issuer, clock)
    zt = ZeroTrust()
    app = make_app(zt)

    @app.errorhandler(RequestRefused)
    def refused(exc: RequestRefused) -> Any:
        body = jsonify(problem="missing_credentials")
        return body if status is None else (body, status)

    zt.init_app(app, guard=guard)
    with caplog.at_level(logging.ERROR, logger="zerotrust"):
        response = app.test_client().get("/orders/7")
    assert response.status_code == 401
    assert response.json == {
        "error": "missing_credentials",
        "error_description": "authentication required",
    }
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="orders"'
    assert response.headers["Cache-Control"] == "no-store"
    assert sink.last.decision == "deny"
    assert f"answered {status or 200}" in caplog.text


@pytest.mark.parametrize("answer", [None, ""], ids=["none", "empty"])
def test_a_handler_that_answers_nothing_never_runs_the_view(
    issuer: TokenIssuer, clock: FixedClock, caplog: pytest.LogCaptureFixture, answer: Any
) -> None:
    """Flask runs the view when a before_request function returns None: a RequestRefused
    handler that only logs (or answers an empty body) must not let the refused request in."""
    guard, sink = make_guard(issuer, clock)
    zt = ZeroTrust()
    app = make_app(zt)

    @app.errorhandler(RequestRefused)
    def refused(exc: RequestRefused) -> Any:
        return answer  # no response: a handler that forgot its return

    zt.init_app(app, guard=guard)
    with caplog.at_level(logging.ERROR, logger="zerotrust"):
        response = app.test_client().get("/orders/7")
    assert response.status_code == 401
    assert response.json == {
        "error": "missing_credentials",
        "error_description": "authentication required",
    }
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="orders"'
    assert sink.last.decision == "deny"
    assert "returned no response" in caplog.text


def test_default_answer_survives_generic_http_handlers(
    issuer: TokenIssuer, clock: FixedClock
) -> None:
    guard, _ = make_guard(issuer, clock)
    zt = ZeroTrust()
    app = make_app(zt)

    @app.errorhandler(401)
    def html_401(exc: Exception) -> Any:
        return "<h1>log in</h1>", 401

    zt.init_app(app, guard=guard)
    response = app.test_client().get("/orders/7")
    assert response.status_code == 401 and response.json is not None
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="orders"'


def test_a_blueprints_catch_all_handler_cannot_swallow_a_refusal(
    issuer: TokenIssuer, clock: FixedClock
) -> None:
    """Flask asks a blueprint's handlers before the application's: a catch-all
    ``@bp.errorhandler(Exception)`` came before the RequestRefused handler and answered a
    401 with its own 500. Refusals are answered by the RequestRefused handler nearest the
    view (a blueprint's own comes first), else the standard one."""
    from flask import Blueprint

    guard, _ = make_guard(issuer, clock)
    zt = ZeroTrust()
    app = Flask("blueprints")
    api = Blueprint("api", __name__, url_prefix="/api")
    custom = Blueprint("custom", __name__, url_prefix="/custom")

    @api.errorhandler(Exception)
    def catch_all(exc: Exception) -> Any:  # pragma: no cover - must not see refusals
        return jsonify({"error": "internal"}), 500

    @api.get("/orders/<int:order_id>")
    def api_order(order_id: int) -> Any:  # pragma: no cover - refused
        return {"order": order_id}

    @custom.errorhandler(RequestRefused)
    def custom_refusal(exc: RequestRefused) -> Any:
        return jsonify({"custom": exc.outcome.error.code}), exc.status, exc.headers  # type: ignore[union-attr]

    @custom.errorhandler(Exception)
    def custom_catch_all(exc: Exception) -> Any:  # pragma: no cover - must not see refusals
        return jsonify({"error": "internal"}), 500

    @custom.get("/orders/<int:order_id>")
    def custom_order(order_id: int) -> Any:  # pragma: no cover - refused
        return {"order": order_id}

    app.register_blueprint(api)
    app.register_blueprint(custom)
    zt.init_app(app, guard=guard)
    client = app.test_client()
    response = client.get("/api/orders/7")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="orders"'
    assert response.json == {
        "error": "missing_credentials",
        "error_description": "authentication required",
    }
    response = client.get("/custom/orders/7")
    assert response.status_code == 401 and response.json == {"custom": "missing_credentials"}
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="orders"'


def test_exempt_views_and_endpoints(issuer: TokenIssuer, clock: FixedClock) -> None:
    guard, sink = make_guard(issuer, clock)
    zt = ZeroTrust(exempt=["healthz"])
    app = make_app(zt)
    zt.init_app(app, guard=guard)
    client = app.test_client()
    assert client.get("/livez").json == {"ok": True, "principal": False}
    assert client.get("/healthz").json == {"ok": True, "principal": False}
    assert len(sink) == 0  # no decision, no audit event
    with pytest.raises(ConfigurationError):
        zt.require(zt.exempt(lambda: None))
    with pytest.raises(ConfigurationError):
        zt.exempt(zt.require(lambda: None))
    with pytest.raises(ConfigurationError):
        ZeroTrust(exempt="static")


def test_unmatched_urls_are_decided_without_a_route(issuer: TokenIssuer, clock: FixedClock) -> None:
    app, sink = installed(issuer, clock)
    client = app.test_client()
    assert client.get("/nowhere").status_code == 401  # the URL map is not shown to strangers
    assert sink.last.route is None
    token = issuer.issue(subject=WEB, audience=AUD)
    assert client.get("/nowhere", headers=bearer(token)).status_code == 403
    allow_all, _ = make_guard(issuer, clock, policy=Policy([Rule(id="all")]))
    app2 = make_app(ZeroTrust())
    ZeroTrust(app2, guard=allow_all)
    assert app2.test_client().get("/nowhere", headers=bearer(token)).status_code == 404


def test_a_slash_redirect_is_decided_before_flask_answers_it(
    issuer: TokenIssuer, clock: FixedClock
) -> None:
    """/api/reports for a /api/reports/ rule is Flask's 308 redirect (strict slashes): it is
    decided without a route first, so a stranger gets 401 rather than learning where the URL
    is, and only a caller the policy allows without a route is redirected."""
    app, sink = installed(issuer, clock)

    @app.get("/api/reports/")
    def reports() -> Any:
        return jsonify(ok=True)

    client = app.test_client()
    anonymous = client.get("/api/reports")
    assert anonymous.status_code == 401 and "Location" not in anonymous.headers
    assert sink.last.route is None
    token = issuer.issue(subject=WEB, audience=AUD)
    assert client.get("/api/reports", headers=bearer(token)).status_code == 403  # route rules only
    assert client.get("/api/reports/", headers=bearer(token)).status_code == 200
    allow_all, everything = make_guard(issuer, clock, policy=Policy([Rule(id="all")]))
    app2 = make_app(ZeroTrust())
    app2.add_url_rule("/api/reports/", "reports", reports)
    ZeroTrust(app2, guard=allow_all)
    redirected = app2.test_client().get("/api/reports", headers=bearer(token))
    assert redirected.status_code == 308
    assert redirected.headers["Location"].endswith("/api/reports/")
    assert everything.last.route is None and everything.last.decision == "allow"


def test_a_method_the_rule_refuses_keeps_its_route(issuer: TokenIssuer, clock: FixedClock) -> None:
    """A DELETE to /orders/7 (a GET-only rule) is decided and audited with the rule's
    template, as FastAPI and Django do; an allowed one is then answered 405 by Flask."""
    app, sink = installed(issuer, clock)
    token = issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"])
    assert app.test_client().delete("/orders/7").status_code == 401
    assert sink.last.route == "/orders/{order_id}"
    allow_all, everything = make_guard(issuer, clock, policy=Policy([Rule(id="all")]))
    app2 = make_app(ZeroTrust())
    ZeroTrust(app2, guard=allow_all)
    assert app2.test_client().delete("/orders/7", headers=bearer(token)).status_code == 405
    assert everything.last.route == "/orders/{order_id}"


def test_misplaced_or_missing_extension_fails_closed(
    issuer: TokenIssuer, clock: FixedClock, caplog: pytest.LogCaptureFixture
) -> None:
    guard, sink = make_guard(issuer, clock, policy=Policy([Rule(id="all")]))
    zt = ZeroTrust()
    app = Flask("misplaced")
    app.testing = True

    @zt.require(scopes=["admin"])  # above @app.route: the route registered the bare view
    @app.get("/api/admin")
    def admin() -> Any:
        return "secret"

    zt.init_app(app, guard=guard)
    token = issuer.issue(subject=WEB, audience=AUD)
    with caplog.at_level(logging.ERROR, logger="zerotrust"):
        response = app.test_client().get("/api/admin", headers=bearer(token))
    assert response.status_code == 500 and response.json is not None
    assert response.json["error"] == "configuration_error"
    assert "@app.route" not in response.get_data(as_text=True)  # the caller learns nothing
    assert "below @app.route" in caplog.text  # the operator is told what to fix
    assert sink.last is not None and sink.last.decision == "deny"  # refused, and audited
    assert sink.last.reason == "configuration_error"

    bare = make_app(ZeroTrust())  # the extension never installed
    bare.testing = True
    with pytest.raises(ConfigurationError, match="without the zerotrust check"):
        bare.test_client().get("/me")
    with pytest.raises(ConfigurationError, match="without the zerotrust check"):
        bare.test_client().get("/async")  # an async view refuses the same way


def test_spoofed_forwarded_headers_are_stripped(issuer: TokenIssuer, clock: FixedClock) -> None:
    guard, sink = make_guard(issuer, clock)
    zt = ZeroTrust()
    app = Flask("strip")

    @app.get("/me")
    def me() -> Any:
        from flask import request

        return jsonify(sorted(k for k, _ in request.headers.items() if "Cert" in k))

    zt.init_app(app, guard=guard)
    token = issuer.issue(subject=WEB, audience=AUD)
    headers = {**bearer(token), "X-Forwarded-Client-Cert": "By=x;Hash=y", "Client-Cert": ":AA:"}
    response = app.test_client().get("/me", headers=headers)
    assert response.status_code == 200 and response.json == []
    assert "forwarded_cert_ignored_untrusted_peer" in sink.last.notes


def test_exempt_views_see_no_forwarded_certificate(issuer: TokenIssuer, clock: FixedClock) -> None:
    guard, sink = make_guard(issuer, clock)
    zt = ZeroTrust(exempt=["healthz"])
    app = Flask("exempt-strip")

    @app.get("/healthz")
    def healthz() -> Any:
        from flask import request

        return jsonify(sorted(k for k, _ in request.headers.items() if "Cert" in k))

    zt.init_app(app, guard=guard)
    headers = {"X-Forwarded-Client-Cert": "By=x;Hash=y", "Client-Cert": ":AA:"}
    response = app.test_client().get("/healthz", headers=headers)
    assert response.status_code == 200 and response.json == []
    assert len(sink) == 0  # exempt: no decision


def test_traceparent_is_recorded_without_opentelemetry(
    issuer: TokenIssuer, clock: FixedClock
) -> None:
    app, sink = installed(issuer, clock)
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    token = issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"])
    headers = {**bearer(token), "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
    assert app.test_client().get("/orders/7", headers=headers).status_code == 200
    assert sink.last.trace_id == trace_id and sink.last.trace_trusted
    app.test_client().get("/orders/7", headers={"traceparent": headers["traceparent"]})
    assert sink.last.trace_id == trace_id and not sink.last.trace_trusted


def test_principal_does_not_leak_between_requests(issuer: TokenIssuer, clock: FixedClock) -> None:
    app, _ = installed(issuer, clock)
    token = issuer.issue(subject=WEB, audience=AUD)
    with app.app_context():  # requests then share one app context (and flask.g)
        client = app.test_client()
        assert client.get("/me", headers=bearer(token)).status_code == 200
        assert client.get("/healthz").json == {"ok": True, "principal": False}
    assert context_principal() is None


def test_malformed_credentials_are_400_invalid_request(
    issuer: TokenIssuer, clock: FixedClock
) -> None:
    app, sink = installed(issuer, clock)
    response = app.test_client().get("/orders/7", headers={"Authorization": "Bearer\tabc"})
    assert response.status_code == 400
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="orders", error="invalid_request"'
    assert response.json == {
        "error": "invalid_request",
        "error_description": "malformed credentials",
    }
    assert sink.last.reason == "malformed_credentials"


def test_an_unsupported_scheme_is_challenged_without_an_error_code(
    issuer: TokenIssuer, clock: FixedClock
) -> None:
    """RFC 6750 3.1: a request using an unsupported authentication method SHOULD NOT get an
    error code; the audit keeps the precise reason."""
    app, sink = installed(issuer, clock)
    response = app.test_client().get("/orders/7", headers={"Authorization": "Basic Zm9vOmJhcg=="})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="orders"'
    assert response.json == {
        "error": "missing_credentials",
        "error_description": "authentication required",
    }
    assert sink.last.reason == "unsupported_scheme"


@pytest.mark.parametrize("pattern", ["/reports", "/reports/", "/reports/*"])
def test_a_route_with_a_trailing_slash_is_covered_however_a_rule_writes_it(
    issuer: TokenIssuer, clock: FixedClock, pattern: str
) -> None:
    """Flask keeps the slash a rule is written with; Django drops it. One policy file must
    cover both: the template has no trailing slash and rules compare without one."""
    deny = Rule(id="no-reports", action="DENY", operations=[Operations(routes=[pattern])])
    guard, sink = make_guard(issuer, clock, policy=Policy([deny, Rule(id="all")]))
    app = Flask("slashes")
    ZeroTrust(app, guard=guard)

    @app.get("/reports/")
    def reports() -> Any:  # pragma: no cover - refused
        return {"reports": []}

    token = issuer.issue(subject=WEB, audience=AUD)
    assert app.test_client().get("/reports/", headers=bearer(token)).status_code == 403
    assert (sink.last.route, sink.last.rule_id) == ("/reports", "no-reports")


def test_blueprints_registered_after_init_app_see_only_checked_requests(
    issuer: TokenIssuer, clock: FixedClock
) -> None:
    """The documented factory order: init_app, then register_blueprint. A blueprint's
    before_app_request function then runs after the check, sees the principal, and never
    sees a refused request."""
    guard, _ = make_guard(issuer, clock, policy=Policy([Rule(id="all")]))
    zt = ZeroTrust()
    api = Blueprint("api", __name__, url_prefix="/api")
    seen: list[str | None] = []

    @api.before_app_request
    def load_account() -> None:
        seen.append(current_principal.subject if current_principal else None)

    @api.get("/me")
    def me() -> Any:
        return {"subject": current_principal.subject}

    app = Flask("factory")
    zt.init_app(app, guard=guard)
    app.register_blueprint(api)
    client = app.test_client()
    assert client.get("/api/me").status_code == 401
    token = issuer.issue(subject=WEB, audience=AUD)
    assert client.get("/api/me", headers=bearer(token)).json == {"subject": WEB}
    assert seen == [WEB]


def test_a_failing_teardown_function_leaves_no_principal_behind(
    issuer: TokenIssuer, clock: FixedClock
) -> None:
    """Flask stops at the first teardown function that raises: zerotrust's may never run, and
    the next request on the thread must still start without the previous caller."""
    import threading

    from flask import request

    guard, _ = make_guard(issuer, clock)
    zt = ZeroTrust(exempt=["anyone"])
    app = make_app(zt)
    zt.init_app(app, guard=guard)

    @app.teardown_request
    def failing(exc: BaseException | None) -> None:  # runs before zerotrust's, and raises
        if request.path == "/me":
            raise RuntimeError("closing the database session failed")

    @app.get("/anyone")
    def anyone() -> Any:
        principal = context_principal()
        return jsonify(seen=principal.id if principal is not None else None)

    token = issuer.issue(subject=WEB, audience=AUD)
    seen: list[Any] = []

    def thread() -> None:  # one server thread, two requests in turn
        client = app.test_client()
        with pytest.raises(RuntimeError):
            client.get("/me", headers=bearer(token))
        seen.append(context_principal())  # left as it was found, before the next request
        seen.append(client.get("/anyone").json)
        seen.append(context_principal())

    worker = threading.Thread(target=thread)
    worker.start()
    worker.join()
    assert seen == [None, {"seen": None}, None]


def test_the_principal_is_there_while_a_streamed_body_is_produced(
    issuer: TokenIssuer, clock: FixedClock
) -> None:
    """Flask tears the request down before a streamed body is produced: the principal stays in
    g and the context variable while it is."""
    from flask import g, stream_with_context

    app, _ = installed(issuer, clock)

    @app.get("/api/lines")
    def lines() -> Any:
        def produce() -> Any:
            yield f"{current_principal.id if current_principal else None} "
            principal = context_principal()
            yield f"{principal.id if principal is not None else None} "
            yield str(g.zerotrust_principal is not None)

        return app.response_class(stream_with_context(produce()))

    @app.get("/api/plain-lines")
    def plain_lines() -> Any:
        def produce() -> Any:  # without the request context: the context variable only
            principal = context_principal()
            yield f"{principal.id if principal is not None else None}"

        return app.response_class(produce())

    token = issuer.issue(subject=WEB, audience=AUD)
    client = app.test_client()
    streamed = client.get("/api/lines", headers=bearer(token))
    assert streamed.get_data(as_text=True) == f"{WEB} {WEB} True"
    plain = client.get("/api/plain-lines", headers=bearer(token))
    assert plain.get_data(as_text=True) == WEB
    assert client.get("/api/plain-lines").status_code == 401
    assert context_principal() is None


def test_an_app_context_shared_by_requests_keeps_no_caller_between_them(
    issuer: TokenIssuer, clock: FixedClock
) -> None:
    """With one app context pushed around several requests (a common test fixture) they share
    one ``g``: a hook that runs before zerotrust's check must not see the previous caller,
    after a plain response or after a streamed one."""
    from flask import g, stream_with_context

    guard, _ = make_guard(issuer, clock)
    zt = ZeroTrust(exempt=["anyone"])
    app = make_app(zt)
    seen: list[Any] = []

    @app.before_request
    def early() -> None:  # registered before init_app: runs before the check
        seen.append((g.get("zerotrust_principal"), g.get("_zerotrust_enforced")))

    zt.init_app(app, guard=guard)

    @app.get("/anyone")
    def anyone() -> Any:
        return jsonify(ok=True)

    @app.get("/api/stream")
    def streamed() -> Any:
        return app.response_class(stream_with_context(iter(["a", "b"])))

    token = issuer.issue(subject=WEB, audience=AUD)
    client = app.test_client()
    with app.app_context():
        assert client.get("/me", headers=bearer(token)).status_code == 200
        assert client.get("/anyone").status_code == 200
        with client.get("/api/stream", headers=bearer(token)) as response:  # closed, as servers do
            assert response.get_data(as_text=True) == "ab"
        assert client.get("/anyone").status_code == 200
    assert seen == [(None, None)] * 4


def test_g_holds_no_principal_on_exempt_views_and_refusals(
    issuer: TokenIssuer, clock: FixedClock
) -> None:
    """``flask.g.zerotrust_principal`` is documented as the principal: it is always set,
    ``None`` on an exempt view and in the handler of a refused request."""
    from flask import g

    guard, _ = make_guard(issuer, clock)
    zt = ZeroTrust(exempt=["healthz"])
    app = Flask("g-principal")

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify(principal=repr(g.zerotrust_principal))

    @app.get("/me")
    def me() -> Any:
        return "never"

    @app.errorhandler(RequestRefused)
    def refused(exc: RequestRefused) -> Any:
        return jsonify(principal=repr(g.zerotrust_principal)), exc.status, exc.headers

    zt.init_app(app, guard=guard)
    client = app.test_client()
    assert client.get("/healthz").json == {"principal": "None"}
    response = client.get("/me")
    assert response.status_code == 401 and response.json == {"principal": "None"}


def test_a_required_view_reused_under_a_stricter_requirement_serves_both_routes(
    issuer: TokenIssuer, clock: FixedClock
) -> None:
    """A view registered with its requirement, then wrapped again for another route, is not
    a misplaced decorator: each route is decided with its own requirement."""
    guard, _ = make_guard(issuer, clock)
    zt = ZeroTrust()
    app = Flask("reused")

    @app.get("/api/report")
    @zt.require
    def report() -> Any:
        return jsonify(ok=True)

    app.add_url_rule(
        "/api/admin-report", "admin_report", zt.require(scopes=["reports:admin"])(report)
    )
    zt.init_app(app, guard=guard)
    client = app.test_client()
    plain = issuer.issue(subject=WEB, audience=AUD)
    assert client.get("/api/report", headers=bearer(plain)).status_code == 200
    assert client.get("/api/admin-report", headers=bearer(plain)).status_code == 403
    admin = issuer.issue(subject=WEB, audience=AUD, scopes=["reports:admin"])
    assert client.get("/api/admin-report", headers=bearer(admin)).status_code == 200


def test_closing_a_streamed_body_closes_the_applications_response(
    issuer: TokenIssuer, clock: FixedClock
) -> None:
    """The body zerotrust wraps around a streamed response still closes the application's
    (its ``call_on_close`` functions release what the response holds)."""
    app, _ = installed(issuer, clock)
    closed: list[bool] = []

    @app.get("/api/stream")
    def stream() -> Any:
        response = app.response_class(iter(["a", "b"]))
        response.call_on_close(lambda: closed.append(True))
        return response

    token = issuer.issue(subject=WEB, audience=AUD)
    response = app.test_client().get("/api/stream", headers=bearer(token))
    assert response.get_data(as_text=True) == "ab"
    response.close()
    assert closed == [True]


def test_init_app_exempt_replaces_the_extensions_list(
    issuer: TokenIssuer, clock: FixedClock
) -> None:
    guard, sink = make_guard(issuer, clock)
    zt = ZeroTrust(exempt=["order"])
    app = make_app(zt)
    zt.init_app(app, guard=guard, exempt=["healthz"])
    client = app.test_client()
    assert client.get("/healthz").json == {"ok": True, "principal": False}
    assert len(sink) == 0  # exempt on this app: no decision
    assert client.get("/orders/7").status_code == 401  # the extension's list is not used
    assert sink.last.decision == "deny"


def app_of(guard: Guard, *rules: str) -> Flask:
    """A Flask app under ``guard`` answering GET on each of ``rules`` (taken as written)."""
    app = Flask("rules")
    for index, rule in enumerate(rules):
        app.add_url_rule(rule, f"view{index}", lambda: jsonify(ok=True), methods=["GET"])
    ZeroTrust().init_app(app, guard=guard)
    return app


def test_a_rule_that_looks_like_a_regular_expression_keeps_its_route(
    issuer: TokenIssuer, clock: FixedClock
) -> None:
    """A werkzeug rule is never a regular expression: ``/api/cost.csv$`` (which the neutral
    template conversion gives up on) is decided and audited on its rule as written, for its
    own method and for one the rule refuses, so a DENY rule scoped to it applies."""
    deny = Rule(id="no-csv", action="DENY", operations=[Operations(routes=["/api/cost.csv$"])])
    guard, sink = make_guard(issuer, clock, policy=Policy([deny, Rule(id="all")]))
    client = app_of(guard, "/api/cost.csv$").test_client()
    token = issuer.issue(subject=WEB, audience=AUD)
    for method in ("get", "delete"):
        response = getattr(client, method)("/api/cost.csv$", headers=bearer(token))
        assert response.status_code == 403, method
        assert (sink.last.route, sink.last.rule_id) == ("/api/cost.csv$", "no-csv")


def test_a_rule_ending_in_a_dollar_is_not_another_rule_without_it(
    issuer: TokenIssuer, clock: FixedClock
) -> None:
    """``/api/cost$`` is its own literal route in werkzeug, not an anchored ``/api/cost``: a
    rule admitting ``/api/cost`` does not admit it (nor the other way round)."""
    allow = Rule(id="cost", operations=[Operations(routes=["/api/cost"])])
    guard, sink = make_guard(issuer, clock, policy=Policy([allow]))
    client = app_of(guard, "/api/cost", "/api/cost$").test_client()
    token = issuer.issue(subject=WEB, audience=AUD)
    assert client.get("/api/cost", headers=bearer(token)).status_code == 200
    assert client.get("/api/cost$", headers=bearer(token)).status_code == 403
    assert sink.last.route == "/api/cost$"


def test_a_sent_file_keeps_the_servers_file_wrapper(issuer: TokenIssuer, clock: FixedClock) -> None:
    """``send_file`` answers with the server's ``wsgi.file_wrapper`` (gunicorn sends it with
    sendfile); no application code runs while it is sent, so it reaches the server as it is,
    and the request leaves no principal behind."""
    import io

    from flask import g, send_file
    from werkzeug.test import EnvironBuilder
    from werkzeug.wsgi import FileWrapper

    app, _ = installed(issuer, clock)

    @app.get("/api/file")
    def file() -> Any:
        return send_file(io.BytesIO(b"content"), mimetype="text/plain")

    token = issuer.issue(subject=WEB, audience=AUD)
    environ = EnvironBuilder(path="/api/file", headers=bearer(token)).get_environ()
    environ["wsgi.file_wrapper"] = FileWrapper
    with app.app_context():  # one g around the request, as a test fixture pushes it
        body = app.wsgi_app(environ, lambda status, headers, exc_info=None: None)
        assert isinstance(body, FileWrapper)
        assert b"".join(body) == b"content"
        body.close()
        assert g.get("zerotrust_principal") is None
    assert context_principal() is None


@pytest.mark.parametrize("raised", ["abort", "bug"])
def test_a_handler_that_raises_gets_the_standard_refusal(
    issuer: TokenIssuer, clock: FixedClock, caplog: pytest.LogCaptureFixture, raised: str
) -> None:
    """The handler runs inside the before_request check: what it raises went to the
    application's other error handlers, a 401 without its challenge or, through a catch-all
    errorhandler(Exception) answering a body, a 200."""
    from flask import abort
    from werkzeug.exceptions import HTTPException

    guard, sink = make_guard(issuer, clock)
    zt = ZeroTrust()
    app = make_app(zt)

    @app.errorhandler(RequestRefused)
    def refused(exc: RequestRefused) -> Any:
        if raised == "abort":
            abort(exc.status)
        raise LookupError("a bug in the handler")

    @app.errorhandler(Exception)
    def catch_all(exc: Exception) -> Any:  # pragma: no cover - must not see the handler's error
        if isinstance(exc, HTTPException):
            return jsonify(error=exc.name), exc.code
        return jsonify(ok=False)

    zt.init_app(app, guard=guard)
    with caplog.at_level(logging.ERROR, logger="zerotrust"):
        response = app.test_client().get("/orders/7")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="orders"'
    assert response.json == {
        "error": "missing_credentials",
        "error_description": "authentication required",
    }
    assert sink.last.decision == "deny"
    assert "refused raised" in caplog.text


def test_a_misplaced_requirement_on_an_exempt_endpoint_fails_closed(
    issuer: TokenIssuer, clock: FixedClock
) -> None:
    """@zt.require above @app.route on an endpoint also listed as exempt: the view ran, with
    no check, its requirement skipped without a word. It is refused (500) as elsewhere."""
    guard, sink = make_guard(issuer, clock)
    zt = ZeroTrust(exempt=["admin"])
    app = Flask("misplaced-exempt")

    @zt.require(scopes=["orders:admin"])
    @app.get("/admin")
    def admin() -> Any:  # pragma: no cover - must not run
        return jsonify(secret=True)

    zt.init_app(app, guard=guard)
    response = app.test_client().get("/admin")
    assert response.status_code == 500 and "secret" not in response.get_data(as_text=True)
    assert sink.last.decision == "deny" and sink.last.route == "/admin"
