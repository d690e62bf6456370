"""Route templates for Starlette and FastAPI applications, resolved the way the router will.

Policies match the template of the route that will handle a request (``/orders/{order_id}``),
never the raw path. The template is found by asking the application's routes whether they
match, in the router's own order and with the routes' own matching code: the first full match,
else the first partial match (a known path with another method, answered 405). Mounts, hosts
and FastAPI's included routers are followed, their parts joined (``/api`` +
``/orders/{order_id}``), and FastAPI's low-priority (frontend) routes are tried last, as the
router does. A mounted application wrapped in middleware (``Mount("/api",
app=GZipMiddleware(router))``) is looked into through the middleware's ``.app``, as the
application itself is. Templates are written without converters (``/items/{item_id}`` for
``/items/{item_id:int}``), the form FastAPI reports as ``http.route`` and the other zerotrust
adapters use; a mount of an application without a router (static files, a plain ASGI
application) is ``/static/{path}``, a host's is ``/{path}``.

* nothing matches -> ``None``: the router answers 404 or a trailing-slash redirect and no
  handler runs; a policy sees no route, so no path trick (``/orders/7/../admin``,
  ``//admin``) can borrow another route's template. A router given a fallback application
  (``Router(routes, default=app)``) is the exception: that application serves what no route
  matches, and its requests have no route either (:func:`fallback_routers` finds such
  routers; the middleware then treats the application as one without a router);
* something matches whose template cannot be determined -> :class:`ConfigurationError`: the
  request is refused rather than evaluated without its route (a DENY rule scoped to that route
  would be skipped).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, MutableMapping, Sequence
from typing import Any, Final

from starlette.routing import Host, Match, Mount

from zerotrust._text import escaped
from zerotrust.errors import ConfigurationError

#: A Starlette path parameter with its converter: ``{name:int}``.
_CONVERTER: Final = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*):[^{}]*\}")

_fastapi_routing: Any
_FastAPI: Any
try:  # recent FastAPI routes included routers and frontend routes itself
    from fastapi import FastAPI as _FastAPI
    from fastapi import routing as _fastapi_routing
except ImportError:  # pragma: no cover - Starlette alone
    _fastapi_routing = _FastAPI = None

_IncludedRouter: Any = getattr(_fastapi_routing, "_IncludedRouter", None)
_FrontendRoute: Any = getattr(_fastapi_routing, "_FrontendRoute", None)
_FrontendRouteGroup: Any = getattr(_fastapi_routing, "_FrontendRouteGroup", None)

__all__ = ["fallback_routers", "find_routes_owner", "route_template_for"]

Scope = MutableMapping[str, Any]
_MAX_WRAPPERS = 32
_MAX_DEPTH = 16
_MAX_CONTAINERS = 1024  # routers whose lists the route cache watches


def find_routes_owner(app: Any) -> Any | None:
    """The application or router whose ``routes`` requests are dispatched through, found
    through middleware ``.app`` attributes (``None`` for an application without a router)."""
    for _ in range(_MAX_WRAPPERS):
        if app is None:
            return None
        routes = getattr(app, "routes", None)
        if isinstance(routes, Sequence) and not isinstance(routes, (str, bytes)):
            return app
        app = getattr(app, "app", None)
    return None


def route_containers(owner: Any) -> tuple[Any, ...]:
    """Every object of ``owner``'s routing tree that holds a ``routes`` list: the owner, and
    the routers of its mounts, hosts and included routers (each once)."""
    return _unique(container for container, _ in _tree(owner))


def fallback_routers(owner: Any) -> tuple[Any, ...]:
    """The routers of ``owner``'s routing tree that hand what no route matches to a fallback
    application (``Router(routes, default=app)``, a ``default`` other than the router's own
    ``not_found``): the owner's and its mounts' and hosts' routers. An included FastAPI
    router's ``default`` is never used (the including router answers), so it is not one."""
    return _unique(
        container for container, dispatches in _tree(owner) if dispatches and _falls_back(container)
    )


def _falls_back(container: Any) -> bool:
    router = getattr(container, "router", container)
    default = getattr(router, "default", None)
    return default is not None and default != getattr(router, "not_found", None)


def _unique(containers: Iterable[Any]) -> tuple[Any, ...]:
    """``containers`` in order, each once (by identity: routers need not be hashable)."""
    return tuple({id(container): container for container in containers}.values())


def _tree(owner: Any) -> list[tuple[Any, bool]]:
    """The objects of ``owner``'s routing tree that hold a ``routes`` list, each with whether
    it dispatches requests itself (the owner and the routers of mounts and hosts) or only
    lends its routes (an included FastAPI router)."""
    found: dict[tuple[int, bool], tuple[Any, bool]] = {}
    pending = [(owner, True)]
    while pending and len(found) < _MAX_CONTAINERS:
        container, dispatches = pending.pop()
        if (id(container), dispatches) in found:
            continue
        found[(id(container), dispatches)] = (container, dispatches)
        for route in _routes_of(container):
            if isinstance(route, (Mount, Host)):
                child, child_dispatches = _mounted(route), True
            elif _IncludedRouter is not None and isinstance(route, _IncludedRouter):
                child, child_dispatches = getattr(route, "original_router", None), False
            else:
                continue
            if child is not None and isinstance(_routes_of(child), list):
                pending.append((child, child_dispatches))
    return list(found.values())


class RoutingWatch:
    """Tells whether any router of ``owner``'s routing tree changed since the last look: a
    route added, removed or replaced in any of their lists, their ``default`` application
    replaced, or (FastAPI) their own change count moved (frontend routes live in a list of
    their own). It keeps copies of the lists and compares them element by element, by
    identity first, in C: nothing is allocated while nothing changes."""

    __slots__ = ("_owner", "_watched")

    def __init__(self, owner: Any) -> None:
        self._owner = owner
        self._watched = self._snapshot()

    def _snapshot(self) -> tuple[tuple[Any, Any, object, Any, object], ...]:
        taken = []
        for container in route_containers(self._owner):
            router = getattr(container, "router", container)
            low = getattr(router, "_low_priority_routes", None)
            taken.append(
                (
                    container,
                    _copy(_routes_of(container)),
                    getattr(router, "_routes_version", None),
                    _copy(low) if low is not None else None,
                    getattr(router, "default", None),
                )
            )
        return tuple(taken)

    def changed(self) -> bool:
        """Whether the tree changed since the last call (or since it was built)."""
        for container, routes, version, low, default in self._watched:
            router = getattr(container, "router", container)
            now_low = getattr(router, "_low_priority_routes", None)
            if (
                _routes_of(container) != routes
                or getattr(router, "_routes_version", None) != version
                or (now_low != low if now_low is not None else low is not None)
                or getattr(router, "default", None) is not default
            ):
                self._watched = self._snapshot()  # new mounts or included routers too
                return True
        return False


def _copy(routes: Any) -> Any:
    """A copy that compares equal to ``routes`` while it holds the same routes (a list to a
    list, a tuple to a tuple)."""
    return list(routes) if isinstance(routes, list) else tuple(routes)


def _routes_of(container: Any) -> Any:
    router = getattr(container, "router", container)
    routes = getattr(router, "routes", None)
    return routes if routes is not None else getattr(container, "routes", ())


def route_template_for(owner: Any, scope: Scope) -> str | None:
    """The template of the route ``owner``'s router will dispatch ``scope`` to, or ``None``
    when no route matches; raises :class:`ConfigurationError` for a route it cannot describe,
    and when matching fails (a router zerotrust does not know, or a framework release whose
    internals differ): the request is then refused and audited, never served unchecked.
    """
    try:
        return _router(owner, dict(scope), "", 0)  # a copy: matching may add keys
    except ConfigurationError:
        raise
    except Exception as exc:  # the adapters log the refusal; the cause stays chained
        raise ConfigurationError(  # the text is the router's: it may quote the request
            "the route template could not be determined"
            f" ({type(exc).__name__}: {escaped(str(exc), 200)})"
        ) from exc


def _router(owner: Any, scope: Scope, prefix: str, depth: int) -> str | None:
    if depth > _MAX_DEPTH:
        raise ConfigurationError("routes nested too deeply to resolve a template")
    if _FastAPI is not None and isinstance(owner, _FastAPI) and owner.root_path:
        # FastAPI(root_path=...) puts it in every scope it is called with, before routing: a
        # route is matched on the path without it (/api/admin reaches /admin)
        scope = {**scope, "root_path": owner.root_path}
    router = getattr(owner, "router", owner)
    routes = getattr(router, "routes", None) or getattr(owner, "routes", None) or []
    partial: tuple[Any, Scope] | None = None
    for route in routes:
        match, child = route.matches(scope)
        if match is Match.FULL:
            return _describe(route, {**scope, **child}, prefix, depth)
        if match is Match.PARTIAL and partial is None:
            partial = (route, child)
    if partial is not None:
        return _describe(partial[0], {**scope, **partial[1]}, prefix, depth)
    if _redirects(router, routes, scope):
        return None  # the router answers with a redirect; no handler runs
    low_priority = getattr(router, "_match_low_priority", None)
    if callable(low_priority):  # FastAPI frontend routes, tried after everything else
        match, child, route, context = low_priority(scope)
        if match is not Match.NONE and route is not None:
            target = route if context is None else _effective(context, route)
            return _describe(target, {**scope, **child}, prefix, depth)
    return None


def _mounted(route: Mount | Host) -> Any | None:
    """The application or router a mount or host dispatches into, found through middleware
    as :func:`find_routes_owner` finds the application's own (``None``: an application without
    a router, such as static files)."""
    base = getattr(route, "_base_app", None) if isinstance(route, Mount) else None
    return find_routes_owner(base if base is not None else route.app)


def _route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root) and path != root and path[len(root)] == "/":
        return path[len(root) :]
    return "" if root and path == root else path


def _redirects(router: Any, routes: Sequence[Any], scope: Scope) -> bool:
    path = _route_path(scope)
    if scope["type"] != "http" or not getattr(router, "redirect_slashes", False) or path == "/":
        return False
    other = dict(scope)
    other["path"] = scope["path"].rstrip("/") if path.endswith("/") else scope["path"] + "/"
    return any(route.matches(other)[0] is not Match.NONE for route in routes)


def _effective(context: Any, route: Any) -> Any:
    """What FastAPI dispatches to for an included route: the prefixed copy of a Starlette
    route, or the route context (which carries the prefixed template)."""
    starlette_route = getattr(context, "starlette_route", None)
    if starlette_route is not None:
        return starlette_route
    original = getattr(context, "original_route", None)
    if _FrontendRouteGroup is not None and isinstance(original, _FrontendRouteGroup):
        return _PrefixedFrontend(original, getattr(context, "frontend_prefix", ""))
    return context


class _PrefixedFrontend:
    def __init__(self, group: Any, prefix: str) -> None:
        self.group = group
        self.prefix = prefix


def _frontend(group: Any, scope: Scope, included: str, prefix: str) -> str | None:
    _, _, route = group._match(scope, prefix=included)
    if route is None:
        return None
    path = (
        route.path if not included else (included if route.path == "/" else included + route.path)
    )
    return f"{prefix}{_plain(path).rstrip('/')}/{{path}}"


def _plain(path: str) -> str:
    """A Starlette path without its converters: ``/t/{tid:int}`` is ``/t/{tid}``."""
    return _CONVERTER.sub(r"{\1}", path)


def _describe(route: Any, scope: Scope, prefix: str, depth: int) -> str | None:
    if isinstance(route, Mount):
        mounted = _plain(route.path)
        inner = _mounted(route)
        if inner is not None:
            return _router(inner, scope, prefix + mounted, depth + 1)
        return f"{prefix}{mounted}/{{path}}"
    if isinstance(route, Host):
        inner = _mounted(route)
        if inner is not None:
            return _router(inner, scope, prefix, depth + 1)
        return f"{prefix}/{{path}}"
    if _IncludedRouter is not None and isinstance(route, _IncludedRouter):
        match, child, inner, context = route._match(scope)
        if match is Match.NONE or inner is None:
            raise ConfigurationError("an included router matched but chose no route")
        target = inner if context is None else _effective(context, inner)
        return _describe(target, {**scope, **child}, prefix, depth + 1)
    if isinstance(route, _PrefixedFrontend):
        return _frontend(route.group, scope, route.prefix, prefix)
    if _FrontendRouteGroup is not None and isinstance(route, _FrontendRouteGroup):
        return _frontend(route, scope, "", prefix)
    if _FrontendRoute is not None and isinstance(route, _FrontendRoute):
        return f"{prefix}{_plain(route.path).rstrip('/')}/{{path}}"
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    if isinstance(template, str) and template.startswith("/"):
        return prefix + template
    raise ConfigurationError(f"cannot determine the route template of {type(route).__name__}")
