"""Pure ASGI middleware: every HTTP request and websocket through the Guard.

``ZeroTrustMiddleware(app, guard=guard)`` (or ``app.add_middleware(ZeroTrustMiddleware,
guard=guard)`` in Starlette and FastAPI) is stateless per request and works on ``http`` and
``websocket`` scopes; ``lifespan`` and anything else pass straight through. For each request:

1. the route template is resolved the way the application's router will resolve it
   (``/orders/{order_id}``; ``None`` when no route matches) -- or by ``route_template=`` for
   applications without a Starlette router;
2. a :class:`~zerotrust.RequestView` is built from the scope (method, raw path, scheme, host,
   client address, at most 256 header lines, the ASGI TLS extension's client certificate
   chain and the peer verified by a zerotrust SSL context during the handshake);
3. ``await guard.aevaluate(view)`` decides (never the blocking ``evaluate``);
4. on success the principal is stored in ``scope["state"]["zerotrust_principal"]`` (so
   ``request.state.zerotrust_principal`` works), the outcome in
   ``scope["state"]["zerotrust_outcome"]``, :func:`current_principal` returns it while the
   application runs, and forwarded-certificate headers the Guard did not accept are removed;
5. a refusal is answered with :func:`~zerotrust.adapters._status.refusal` (HTTP) or by closing
   the websocket with code 1008 before it is accepted.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, Final

from zerotrust.adapters._asgi_view import ScopeView, strip_scope_headers
from zerotrust.adapters._common import forwarded_headers_to_strip, routeless_hazards
from zerotrust.adapters._context import _current, current_principal
from zerotrust.adapters._status import (
    WEBSOCKET_POLICY_VIOLATION,
    asgi_adding_headers,
    refusal,
)
from zerotrust.authn._trusted import FORWARDED_CERT_HEADERS
from zerotrust.authz.rules import Pattern, _check_methods, normalize_route
from zerotrust.errors import ConfigurationError
from zerotrust.pipeline import Guard, Outcome

__all__ = [
    "STATE_OUTCOME",
    "STATE_PRINCIPAL",
    "DropUnderscoreHeaders",
    "ZeroTrustMiddleware",
    "current_principal",
    "publish",
    "send_refusal",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
RouteResolver = Callable[[Scope], "str | None"]

_log = logging.getLogger("zerotrust")

#: ``scope["state"]`` key of the authenticated :class:`~zerotrust.Principal` (or ``None``).
STATE_PRINCIPAL: Final = "zerotrust_principal"
#: ``scope["state"]`` key of the Guard's :class:`~zerotrust.Outcome` for this request.
STATE_OUTCOME: Final = "zerotrust_outcome"
#: Where the Guard that decided :data:`STATE_OUTCOME` is kept.
STATE_GUARD: Final = "zerotrust_guard"
# The scope key of the request's own decision: (outcome, Guard, route template). Kept in the
# request's scope, never read back from ``scope["state"]``: that namespace may be shared by
# every request (a harness that hands each request the lifespan state itself rather than a
# copy, such as asgi-lifespan's LifespanManager), and another request's decision is not this
# one's. The route is there because the outcome's audit event may not have been built.
_SCOPE_DECISION: Final = "zerotrust.decision"


def publish(scope: Scope, outcome: Outcome, guard: Guard, route: str | None) -> None:
    """Store an allowed outcome, its principal and the Guard that decided it in
    ``scope["state"]``, and the decision (with its route template) in the request's scope."""
    state = scope.get("state")
    if state is None:
        state = scope["state"] = {}
    state[STATE_PRINCIPAL] = outcome.principal
    state[STATE_OUTCOME] = outcome
    state[STATE_GUARD] = guard
    scope[_SCOPE_DECISION] = (outcome, guard, route)


def _decision(scope: Scope) -> tuple[Outcome, Guard, str | None] | None:
    decision: tuple[Outcome, Guard, str | None] | None = scope.get(_SCOPE_DECISION)
    return decision


_STATE_KEYS: Final = (STATE_PRINCIPAL, STATE_OUTCOME, STATE_GUARD)


def _forget_others(scope: Scope) -> None:
    """Give the request a ``scope["state"]`` of its own, without the entries of another
    request's decision, when its namespace holds some: one shared by every request (the ASGI
    lifespan specification has servers hand each request a shallow copy; this is that copy)."""
    state = scope.get("state")
    if state and _decision(scope) is None and any(key in state for key in _STATE_KEYS):
        scope["state"] = {k: v for k, v in state.items() if k not in _STATE_KEYS}


def published_route(scope: Scope) -> str | None:
    """The route template :func:`publish` stored with the request's outcome."""
    decision = _decision(scope)
    return decision[2] if decision is not None else None


def published(scope: Scope, guard: Guard) -> Outcome | None:
    """The outcome :func:`publish` stored for this request if ``guard`` decided it (a decision
    of another Guard, with another policy, is not this one's, nor is one another request left
    in a shared ``scope["state"]``)."""
    decision = _decision(scope)
    if decision is not None and decision[1] is guard:
        return decision[0]
    return None


async def send_refusal(scope: Scope, receive: Receive, send: Send, outcome: Outcome) -> None:
    """Answer a refused request: the shared refusal table for HTTP, close code 1008 for a
    websocket that was not accepted."""
    if scope["type"] == "websocket":
        message = await receive()  # "websocket.connect"; a client that left needs nothing
        if message.get("type") == "websocket.connect":
            public = outcome.body()
            code = public["error"] if public else "access_denied"
            await send(
                {"type": "websocket.close", "code": WEBSOCKET_POLICY_VIOLATION, "reason": code}
            )
        return
    status, headers, body = refusal(outcome)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


class ZeroTrustMiddleware:
    """Authenticate, authorize and audit every ``http`` and ``websocket`` request.

    ``exempt`` lists route templates that skip the Guard entirely (health checks, the OpenAPI
    document), trailing slash as the application writes it; only a request the router
    matches to one of them is exempt, never a raw path. A bare template (``"/status"``)
    exempts every method at that path, so every handler the application has there (a
    ``POST /status`` next to a public ``GET /status`` too); ``"GET /status"`` exempts that
    method only (and ``HEAD``, and a websocket handshake, as rules read ``GET``). The Guard
    sees templates without a trailing slash (``/healthz/`` is ``/healthz``), as in every
    adapter.
    ``route_template(scope)`` supplies route templates for applications without a Starlette
    router; without either, building the middleware fails if the policy has rules that a
    request without a route would escape (see ``routeless_hazards``). So does a router that
    hands what no route matches to a fallback application (``Router(routes, default=app)``,
    in the application or a mount): that application's requests have no route.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        guard: Guard,
        exempt: Iterable[str] = (),
        route_template: RouteResolver | None = None,
    ) -> None:
        if not isinstance(guard, Guard):
            raise ConfigurationError("ZeroTrustMiddleware needs guard=Guard(...)")
        if isinstance(exempt, str):
            raise ConfigurationError("exempt takes a list of route templates, not a string")
        self.app = app
        self.guard = guard
        self.exempt = frozenset(exempt)
        self._exempt = _exempt_routes(self.exempt)
        proxies = guard.authenticator.trusted_proxies
        self._forwarded = frozenset(
            proxies.header_names if proxies is not None else FORWARDED_CERT_HEADERS
        )
        hazards = routeless_hazards(guard.policy)
        self._resolve = route_template or _router_resolver(app, hazards)
        if self._resolve is None and (hazards or self.exempt):
            raise ConfigurationError(
                "the application has no Starlette router, so requests have no route"
                f" template; rules {list(hazards)} and exempt routes need"
                " route_template=callable(scope)"
            )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        unresolved: ConfigurationError | None = None
        try:
            route = self._resolve(scope) if self._resolve is not None else None
        except ConfigurationError as exc:  # a route matched but its template is unknown
            route, unresolved = None, exc
            _log.error("zerotrust: request refused: %s", exc)
        if route is not None:
            exempt = self._exempt.get(route)  # the template as the application writes it
            if exempt is not None and (not exempt or _method(scope) in exempt):
                # nothing is accepted on an exempt route: no forwarded certificate reaches it
                strip_scope_headers(scope, self._forwarded, self._forwarded)
                _forget_others(scope)  # no principal: not even another request's
                await self.app(scope, receive, send)
                return
            route = normalize_route(route)  # "/orders/" is "/orders", as in every adapter
        view = ScopeView(scope, route)
        if unresolved is not None:
            outcome = self.guard.refuse(view, unresolved)
        else:  # a request over MAX_HEADER_LINES is refused inside, by its view
            outcome = await self.guard.aevaluate(view)
        if not outcome.allowed:
            await send_refusal(scope, receive, send, outcome)
            return
        if view.has_any(self._forwarded):  # rare: forwarded-certificate headers to judge
            names = forwarded_headers_to_strip(outcome, self.guard.authenticator.trusted_proxies)
            strip_scope_headers(scope, names, self._forwarded)
        elif view.underscored:  # rarer: perhaps one spelled with '_'
            strip_scope_headers(scope, (), self._forwarded)
        _forget_others(scope)  # checked here, after the await: another request may publish
        publish(scope, outcome, self.guard, route)
        if outcome.headers and kind == "http":  # a fresh DPoP-Nonce for the response
            send = asgi_adding_headers(send, outcome.headers)
        token = _current.set(outcome.principal)
        try:
            await self.app(scope, receive, send)
        finally:
            _current.reset(token)


def _exempt_routes(entries: Iterable[str]) -> dict[str, frozenset[str]]:
    """The methods exempt at each template (empty: every method) from ``exempt`` entries:
    ``"/status"``, or ``"GET /status"`` (``GET`` covers ``HEAD``, as in rules)."""
    found: dict[str, frozenset[str]] = {}
    for entry in entries:
        if not isinstance(entry, str) or not entry:
            raise ConfigurationError("exempt takes route templates: non-empty strings")
        method, space, template = entry.partition(" ")
        if entry.startswith("/") or not space:  # a bare template: every method
            found[entry] = frozenset()
            continue
        method = method.upper()
        _check_methods((Pattern(method),), "exempt")
        if not template.startswith("/"):
            raise ConfigurationError(
                f"exempt: {entry!r} is neither a route template nor 'METHOD /template'"
            )
        if found.get(template) == frozenset():
            continue  # the bare template already exempts every method
        methods = {method, "HEAD"} if method == "GET" else {method}
        found[template] = found.get(template, frozenset()) | methods
    return found


def _method(scope: Scope) -> str:
    """The request's method as rules read it (a websocket handshake is a ``GET``)."""
    return "GET" if scope["type"] == "websocket" else str(scope["method"]).upper()


class DropUnderscoreHeaders:
    """Host a WSGI application under an ASGI server without headers spelled with ``_``.

    A WSGI environ cannot tell ``X-Forwarded-Client-Cert`` from ``X_Forwarded_Client_Cert``:
    both are ``HTTP_X_FORWARDED_CLIENT_CERT``. gunicorn (``header_map = "drop"``) and werkzeug
    drop header names with ``_``; the WSGI shims of ASGI servers (uvicorn ``--interface wsgi``,
    hypercorn given a WSGI application, asgiref's ``WsgiToAsgi``, a2wsgi) do not: they file
    both spellings under that key, joined by a comma. Behind a proxy that passes such names on
    (Envoy does unless ``headers_with_underscores_action`` says otherwise) and replaces only
    the hyphenated header, a client without a certificate could then send
    ``X_Forwarded_Client_Cert: Cert="<any workload's certificate>"`` and be that workload to
    zerotrust's WSGI and Flask integrations, which see the environ only.

    Wrap the shim and serve the result as an ASGI application, for instance
    ``DropUnderscoreHeaders(WsgiToAsgi(app))`` instead of ``uvicorn --interface wsgi``: every
    header whose name holds ``_`` is removed from ``http`` and ``websocket`` scopes before the
    shim builds the environ, as gunicorn does by default, so no proxy-set header (a forwarded
    certificate, ``X-Forwarded-For``, whatever the application trusts) can be supplied
    under another spelling. Other scopes (``lifespan``) pass unchanged; the server's scope is
    not modified (the application gets a copy without those headers).
    """

    __slots__ = ("app",)

    def __init__(self, app: ASGIApp) -> None:
        call = type(app).__call__  # an ASGI application's, a coroutine function
        if not (inspect.iscoroutinefunction(app) or inspect.iscoroutinefunction(call)):
            raise ConfigurationError(
                "DropUnderscoreHeaders wraps an ASGI application (the WSGI application's"
                " shim, such as asgiref's WsgiToAsgi(app)), not the WSGI application itself"
            )
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            headers = scope.get("headers") or ()
            if any(b"_" in name for name, _ in headers):
                kept = [pair for pair in headers if b"_" not in pair[0]]
                scope = {**scope, "headers": kept}
        await self.app(scope, receive, send)


#: Route templates remembered per middleware, and the longest path + root path + Host kept:
#: at most a few MiB, whatever paths and Host headers clients send.
_MAX_CACHED_ROUTES: Final = 4096
_MAX_CACHED_KEY: Final = 512


def _router_resolver(app: Any, hazards: tuple[str, ...] = ()) -> RouteResolver | None:
    """Route templates from ``app``'s Starlette router (``None`` without one). ``hazards``
    are the policy's rules that a request without a route would escape: with any, a router
    that hands unmatched requests to a fallback application is refused, as an application
    without a router is (and, added after start, its unmatched requests are refused)."""
    try:
        from zerotrust.adapters._routes import (
            RoutingWatch,
            fallback_routers,
            find_routes_owner,
            route_template_for,
        )
    except ImportError:  # no Starlette: a plain ASGI application
        return None
    owner = find_routes_owner(app)
    if owner is None:
        return None
    if hazards and fallback_routers(owner):
        raise ConfigurationError(_fallback_refusal(hazards))
    cache: dict[tuple[Any, ...], str | None] = {}
    routing = RoutingWatch(owner)
    falls_back = False  # a fallback application appeared after start (with hazards)

    def resolve(scope: Scope) -> str | None:
        nonlocal falls_back
        # The template depends only on what routing reads, and on the routes: a route added,
        # removed or replaced in any router of the tree (a mount's too) empties the cache.
        # Bounded: unknown paths cost a normal lookup.
        if routing.changed():
            cache.clear()
            falls_back = bool(hazards) and bool(fallback_routers(owner))
        template = lookup(scope)
        if template is None and falls_back:  # it may reach the fallback: never unchecked
            raise ConfigurationError(_fallback_refusal(hazards))
        return template

    def lookup(scope: Scope) -> str | None:
        host = None
        for name, value in scope.get("headers", ()):
            if name == b"host":
                host = value
                break
        path, root_path, method = scope["path"], scope.get("root_path", ""), scope.get("method")
        key = (scope["type"], method, path, root_path, host)
        try:
            return cache[key]
        except KeyError:
            pass
        template = route_template_for(owner, scope)  # raises for an undescribable route
        sent = len(path) + len(root_path) + (len(host) if host else 0) + len(method or "")
        if sent > _MAX_CACHED_KEY:
            return template  # long keys are not kept: the cache's memory stays bounded
        if len(cache) >= _MAX_CACHED_ROUTES:
            cache.clear()
        cache[key] = template
        return template

    return resolve


def _fallback_refusal(hazards: tuple[str, ...]) -> str:
    return (
        "a router hands requests that match no route to a fallback application"
        f" (Router(default=...)): they have no route template, so rules {list(hazards)} would"
        " not apply to them; make the fallback the last route (Mount('', app=...): its requests"
        " have the route /{path}) or pass route_template=callable(scope)"
    )
