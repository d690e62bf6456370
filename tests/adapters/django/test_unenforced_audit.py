"""A view whose requirement the middleware could not see is refused (500) after the middleware's
allow: the audit trail gets that refusal too, on a real server with a real client."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from django.core.wsgi import get_wsgi_application

from tests._werkzeug import werkzeug_serving
from tests.adapters.django.conftest import WEB, Harness
from zerotrust.pipeline import REQUIREMENT_NOTE

pytestmark = pytest.mark.network


@pytest.fixture
def served(zt: Harness) -> Iterator[httpx.Client]:
    with (
        werkzeug_serving(get_wsgi_application()) as port,
        httpx.Client(base_url=f"http://127.0.0.1:{port}") as client,
    ):
        yield client


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/hidden/", "/hidden"),  # @require behind a decorator without functools.wraps
        ("/cbv/hidden-admin/7/", "/cbv/hidden-admin/{order_id}"),  # a class-based view's
        ("/api/hidden/", "/api/hidden"),  # a DRF view's required_scopes
    ],
)
def test_the_refusal_of_an_unenforced_requirement_follows_the_allow(
    zt: Harness, served: httpx.Client, path: str, route: str
) -> None:
    response = served.get(path, headers=zt.auth(scopes=["orders:read", "orders:admin"]))
    assert response.status_code == 500
    allow, deny = zt.sink.events
    assert (allow.decision, allow.status, allow.route) == ("allow", 200, route)
    assert (deny.decision, deny.reason, deny.status, deny.route) == (
        "deny",
        "configuration_error",
        500,
        route,
    )
    assert deny.spiffe_id == WEB and REQUIREMENT_NOTE in deny.notes
