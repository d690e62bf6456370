"""A view whose ``@zt.require`` the check could not see (a decorator without functools.wraps in
between) is refused (500) after the check's allow: the audit trail gets that refusal too, on a
real server with a real client."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from flask import Flask

from tests._werkzeug import werkzeug_serving
from tests.adapters.flask._support import AUD, ISS, WEB, bearer, make_guard
from zerotrust import FixedClock, PrivateJWK, TokenIssuer
from zerotrust.flask import ZeroTrust
from zerotrust.pipeline import REQUIREMENT_NOTE

pytestmark = pytest.mark.network


def forgetful(view: Callable[..., Any]) -> Callable[..., Any]:
    """A decorator that drops what ``@zt.require`` put on the view (no functools.wraps)."""

    def inner(*args: Any, **kwargs: Any) -> Any:
        return view(*args, **kwargs)

    return inner


def test_the_refusal_of_an_unenforced_requirement_follows_the_allow() -> None:
    clock = FixedClock(dt.datetime.now(dt.timezone.utc))
    issuer = TokenIssuer(PrivateJWK.generate("ES256", kid="k1"), issuer=ISS, clock=clock)
    guard, sink = make_guard(issuer, clock)
    app = Flask("hidden")
    zt = ZeroTrust(app, guard=guard)

    @app.get("/api/<int:order_id>")
    @forgetful
    @zt.require(scopes=["orders:admin"])
    def admin(order_id: int) -> str:
        return "served"

    token = issuer.issue(subject=WEB, audience=AUD, scopes=["orders:admin"])
    with werkzeug_serving(app) as port, httpx.Client(base_url=f"http://127.0.0.1:{port}") as c:
        response = c.get("/api/7", headers=bearer(token))
    assert response.status_code == 500
    allow, deny = sink.events
    assert (allow.decision, allow.status, allow.route) == ("allow", 200, "/api/{order_id}")
    assert (deny.decision, deny.reason, deny.status, deny.route) == (
        "deny",
        "configuration_error",
        500,
        "/api/{order_id}",
    )
    assert deny.spiffe_id == WEB and REQUIREMENT_NOTE in deny.notes
