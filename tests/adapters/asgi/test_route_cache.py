"""The middleware remembers route templates per path, but never past a change of the routes."""

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from zerotrust.adapters.asgi import _router_resolver


def _ok(request: object) -> PlainTextResponse:
    return PlainTextResponse("ok")


def scope(path: str, host: bytes = b"example.org") -> dict[str, object]:
    return {
        "type": "http",
        "method": "GET",
        "path": path,
        "root_path": "",
        "headers": [(b"host", host)],
    }


def test_templates_are_cached_per_path_and_refreshed_when_routes_change() -> None:
    app = Starlette(routes=[Route("/orders/{order_id}", _ok)])
    resolve = _router_resolver(app)
    assert resolve is not None
    assert resolve(scope("/orders/7")) == "/orders/{order_id}"
    assert resolve(scope("/orders/7")) == "/orders/{order_id}"  # from the cache
    assert resolve(scope("/admin")) is None
    app.router.routes.append(Route("/admin", _ok))  # a route added after start-up
    assert resolve(scope("/admin")) == "/admin"  # not the stale "no route"
    for n in range(5000):  # unknown paths never grow the cache without bound
        assert resolve(scope(f"/x/{n}")) is None
