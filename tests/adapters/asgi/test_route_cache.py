"""The middleware remembers route templates per path, but never past a change of the routes."""

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from tests.adapters.asgi._support import client
from zerotrust.adapters.asgi import _router_resolver


def _ok(request: object) -> PlainTextResponse:
    return PlainTextResponse("ok")


def scope(path: str, host: bytes = b"example.org", method: str = "GET") -> dict[str, object]:
    return {
        "type": "http",
        "method": method,
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


def test_routes_changed_anywhere_in_the_tree_refresh_the_cache() -> None:
    from fastapi import APIRouter, FastAPI
    from starlette.routing import Mount, Router

    sub = Router(routes=[Route("/items/{item_id}", _ok)])
    app = Starlette(routes=[Mount("/api", app=sub), Route("/old", _ok)])
    resolve = _router_resolver(app)
    assert resolve is not None
    assert resolve(scope("/api/admin")) is None
    sub.routes.append(Route("/admin", _ok))  # a route added to a mounted router
    assert resolve(scope("/api/admin")) == "/api/admin"
    assert resolve(scope("/old")) == "/old"
    app.router.routes[1] = Route("/old/{thing}", _ok)  # replaced in place: same count
    assert resolve(scope("/old")) is None
    nested = Router(routes=[Route("/deep", _ok)])
    sub.routes.append(Mount("/nested", app=nested))  # a new mount, watched from now on
    assert resolve(scope("/api/nested/deep")) == "/api/nested/deep"
    nested.routes.append(Route("/deeper", _ok))
    assert resolve(scope("/api/nested/deeper")) == "/api/nested/deeper"
    sub.routes = [Route("/items/{item_id}", _ok)]  # the list itself replaced
    assert resolve(scope("/api/admin")) is None

    fast = FastAPI()
    router = APIRouter(prefix="/v1")

    @router.get("/orders/{order_id}")
    async def order(order_id: int) -> None:  # pragma: no cover
        pass

    fast.include_router(router)
    resolve = _router_resolver(fast)
    assert resolve is not None
    assert resolve(scope("/v1/orders/7")) == "/v1/orders/{order_id}"
    assert resolve(scope("/v1/admin")) is None

    @router.get("/admin")
    async def admin() -> None:
        pass

    # An included router's new route, as the application routes it: recent FastAPI releases
    # serve the included router itself; older ones (0.110 among them) copied its routes when
    # it was included, and answer the new one with 404: then no route is right.
    with client(fast) as http:
        served = http.get("/v1/admin").status_code != 404
    assert resolve(scope("/v1/admin")) == ("/v1/admin" if served else None)


def test_frontend_routes_added_after_start_refresh_the_cache(tmp_path: object) -> None:
    import pytest
    from fastapi import FastAPI

    if not hasattr(FastAPI, "frontend"):
        pytest.skip("this FastAPI has no frontend routes")
    from pathlib import Path

    directory = Path(str(tmp_path))
    (directory / "index.html").write_text("<p>ui</p>")
    fast = FastAPI()
    resolve = _router_resolver(fast)
    assert resolve is not None
    assert resolve(scope("/ui/index.html")) is None
    fast.frontend("/ui", directory=str(directory))  # kept in a list of its own
    assert resolve(scope("/ui/index.html")) == "/ui/{path}"


def _cache_of(resolve: object) -> dict[object, object]:
    cells = getattr(resolve, "__closure__", None) or ()
    return next(c.cell_contents for c in cells if isinstance(c.cell_contents, dict))


def test_the_cache_keeps_no_long_paths_hosts_or_methods() -> None:
    # paths, Host headers and methods are the client's: long ones are resolved, never kept, so
    # the cache's memory does not depend on what clients send (4096 entries of 100 KB would be
    # 400 MB per worker; h11 takes a method as long as the request head, 16 KiB)
    app = Starlette(routes=[Route("/items/{rest:path}", _ok)])
    resolve = _router_resolver(app)
    assert resolve is not None
    long = "a" * 600
    for n in range(50):
        assert resolve(scope(f"/items/{n}-{long}")) == "/items/{rest}"
        assert resolve(scope(f"/items/{n}", host=b"h" * 600)) == "/items/{rest}"
        # another method matches the route's path: the router answers 405 for it
        assert resolve(scope("/items/short", method=f"M{n}" + "X" * 600)) == "/items/{rest}"
    assert resolve(scope("/items/short")) == "/items/{rest}"
    cache = _cache_of(resolve)
    assert len(cache) == 1
    assert sum(len(str(key)) for key in cache) < 1024


def test_the_cache_holds_a_bounded_number_of_paths() -> None:
    from zerotrust.adapters.asgi import _MAX_CACHED_ROUTES

    app = Starlette(routes=[Route("/items/{item_id}", _ok)])
    resolve = _router_resolver(app)
    assert resolve is not None
    for n in range(_MAX_CACHED_ROUTES + 10):
        assert resolve(scope(f"/items/{n}")) == "/items/{item_id}"
    assert 0 < len(_cache_of(resolve)) <= _MAX_CACHED_ROUTES


def test_a_request_without_a_host_header_is_resolved() -> None:
    # HTTP/1.0 clients may send no Host header
    app = Starlette(routes=[Route("/items/{item_id}", _ok)])
    resolve = _router_resolver(app)
    assert resolve is not None
    hostless = {**scope("/items/7"), "headers": [(b"accept", b"*/*")]}
    assert resolve(hostless) == "/items/{item_id}"
    assert resolve(hostless) == "/items/{item_id}"  # from the cache


def test_the_cache_tells_hosts_apart_wherever_the_host_header_is() -> None:
    from starlette.routing import Host, Router

    app = Starlette(
        routes=[
            Host("admin.example", app=Router(routes=[Route("/panel/{section}", _ok)])),
            Host("shop.example", app=Router(routes=[Route("/panel/{item}", _ok)])),
        ]
    )
    resolve = _router_resolver(app)
    assert resolve is not None

    def at(host: bytes) -> dict[str, object]:
        return {**scope("/panel/x"), "headers": [(b"accept", b"*/*"), (b"host", host)]}

    assert resolve(at(b"admin.example")) == "/panel/{section}"
    assert resolve(at(b"shop.example")) == "/panel/{item}"  # not the cached admin template
    assert resolve(at(b"admin.example")) == "/panel/{section}"
    # two Host headers: Starlette routes on the first, and so is the template remembered
    twice = {
        **scope("/panel/y"),
        "headers": [(b"host", b"admin.example"), (b"host", b"shop.example")],
    }
    assert resolve(twice) == "/panel/{section}"
    assert (
        resolve({**scope("/panel/y"), "headers": [(b"host", b"shop.example")]}) == "/panel/{item}"
    )


def test_the_cache_tells_methods_and_root_paths_apart() -> None:
    app = Starlette(
        routes=[
            Route("/items/special", _ok, methods=["GET"]),
            Route("/items/{name}", _ok, methods=["POST"]),
        ]
    )
    resolve = _router_resolver(app)
    assert resolve is not None
    assert resolve(scope("/items/special")) == "/items/special"
    assert resolve({**scope("/items/special"), "method": "POST"}) == "/items/{name}"
    assert resolve(scope("/items/special")) == "/items/special"
    # served below a root path, the same path is another route (or none)
    below = {**scope("/api/items/special"), "root_path": "/api"}
    assert resolve(below) == "/items/special"
    assert resolve(scope("/api/items/special")) is None


def test_the_watch_reports_a_change_once() -> None:
    """Unchanged routes are no change (the cache is kept); a change is reported once, then
    the routes as they now are become the reference."""
    from zerotrust.adapters._routes import RoutingWatch

    app = Starlette(routes=[Route("/orders/{order_id}", _ok)])
    watch = RoutingWatch(app)
    assert watch.changed() is False
    assert watch.changed() is False
    app.router.routes.append(Route("/admin", _ok))
    assert watch.changed() is True
    assert watch.changed() is False


def test_a_mount_with_middleware_is_watched_through_its_router() -> None:
    from starlette.middleware import Middleware
    from starlette.routing import Mount

    class Passthrough:
        def __init__(self, app: object) -> None:
            self.app = app

        async def __call__(self, scope: object, receive: object, send: object) -> None:
            raise AssertionError("never called")  # pragma: no cover

    mount = Mount("/api", routes=[Route("/items", _ok)], middleware=[Middleware(Passthrough)])
    app = Starlette(routes=[mount])
    resolve = _router_resolver(app)
    assert resolve is not None
    assert resolve(scope("/api/admin")) is None
    mount.routes.append(Route("/admin", _ok))  # the mount's router, behind its middleware
    assert resolve(scope("/api/admin")) == "/api/admin"


def test_routes_added_behind_a_mounted_applications_middleware_refresh_the_cache() -> None:
    """A mount or host whose application is wrapped in middleware is watched through the
    router the middleware wraps, as the router dispatches to it."""
    from fastapi import FastAPI
    from starlette.middleware.gzip import GZipMiddleware
    from starlette.routing import Host, Mount, Router

    from zerotrust.adapters._routes import route_containers

    mounted = Router(routes=[Route("/items", _ok)])
    hosted = FastAPI()
    app = Starlette(
        routes=[
            Mount("/api", app=GZipMiddleware(mounted)),
            Host("admin.example", app=GZipMiddleware(hosted)),
        ]
    )
    assert set(map(id, route_containers(app))) == {id(app), id(mounted), id(hosted)}
    resolve = _router_resolver(app)
    assert resolve is not None
    assert resolve(scope("/api/admin")) is None
    assert resolve(scope("/panel", host=b"admin.example")) is None
    mounted.routes.append(Route("/admin", _ok))
    assert resolve(scope("/api/admin")) == "/api/admin"
    hosted.add_api_route("/panel", _ok)
    assert resolve(scope("/panel", host=b"admin.example")) == "/panel"


def test_a_router_that_mounts_itself_is_watched_once() -> None:
    from starlette.routing import Mount, Router

    from zerotrust.adapters._routes import route_containers

    router = Router(routes=[Route("/leaf", _ok)])
    router.routes.append(Mount("/again", app=router))
    assert route_containers(router) == (router,)


def test_a_second_frontend_route_added_after_start_refreshes_the_cache(tmp_path: object) -> None:
    import pytest
    from fastapi import FastAPI

    if not hasattr(FastAPI, "frontend"):
        pytest.skip("this FastAPI has no frontend routes")
    from pathlib import Path

    directory = Path(str(tmp_path))
    (directory / "index.html").write_text("<p>ui</p>")
    fast = FastAPI()
    fast.frontend("/ui", directory=str(directory))
    resolve = _router_resolver(fast)
    assert resolve is not None
    assert resolve(scope("/docs-site/index.html")) is None
    fast.frontend("/docs-site", directory=str(directory))  # joins the existing group
    assert resolve(scope("/docs-site/index.html")) == "/docs-site/{path}"
