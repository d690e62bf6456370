"""FastAPI dependencies: a typed :class:`~zerotrust.Principal`, scopes through ``Security``.

One object per application::

    zt = ZeroTrust(guard)
    zt.install(app)                                    # refusal bodies + the middleware

    @app.get("/orders/{order_id}")
    async def order(order_id: int, principal: Principal = Security(zt, scopes=["orders:read"])):
        ...

    @app.post("/admin", dependencies=[Depends(zt.require(callers=match.member_of("example.org")))])

* ``Security(zt, scopes=[...])`` -- the scopes FastAPI collects along the dependency chain
  (``SecurityScopes``) become a ``require(scopes=...)`` requirement evaluated by the Guard.
* ``Depends(zt.require(scopes=..., callers=..., methods=..., proven_by=...))`` -- any other
  per-handler requirement; it may be combined with ``Security(..., scopes=...)`` as well.
* With the middleware installed the request was already decided: the dependency reuses that
  outcome and checks only its own requirement (no second verification, rate-limit token or
  DPoP replay entry). Without the middleware the dependency runs the Guard itself.
* ``ZeroTrust(guard, auto_error=False)`` -- optional authentication: a request with no
  credentials at all gets ``None`` (when the application policy admits anonymous callers on
  that route); credentials that are present are verified and refused when bad.
* The OpenAPI document gets an HTTP bearer security scheme (the description mentions mTLS).

Refusals raise :class:`ZeroTrustHTTPException` (an ``HTTPException``); with :meth:`ZeroTrust.
install` (or ``exception_handlers=ZeroTrust.exception_handlers``) its response is the shared
refusal table's ``{"error", "error_description"}`` body. A websocket is refused with
``WebSocketException(1008)``.
"""

import logging
import re
from collections.abc import Iterable, Mapping, MutableMapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Final

from opentelemetry import trace as otel_trace

from zerotrust.errors import ConfigurationError, MissingDependencyError

try:
    from fastapi.exceptions import HTTPException, WebSocketException
    from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
    from fastapi.security import SecurityScopes
    from fastapi.security.base import SecurityBase
    from starlette.applications import Starlette
    from starlette.requests import HTTPConnection, Request
    from starlette.responses import Response
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError("fastapi", "fastapi", error=exc) from exc

from zerotrust.adapters._asgi_view import ScopeView, strip_scope_headers
from zerotrust.adapters._common import forwarded_headers_to_strip, routeless_hazards
from zerotrust.adapters._context import current_principal, set_principal
from zerotrust.adapters._routes import find_routes_owner, route_template_for
from zerotrust.adapters._status import WEBSOCKET_POLICY_VIOLATION, refusal
from zerotrust.adapters.asgi import (
    ZeroTrustMiddleware,
    _exempt_routes,
    publish,
    published,
    published_route,
)
from zerotrust.authn.principal import Principal
from zerotrust.authz.policy import Requirement, require
from zerotrust.authz.rules import normalize_route
from zerotrust.identity.match import Matcher
from zerotrust.pipeline import Guard, Outcome

__all__ = [
    "DEFAULT_DESCRIPTION",
    "RequireDependency",
    "ZeroTrust",
    "ZeroTrustHTTPException",
    "current_principal",
    "refusal_response",
]

#: The OpenAPI security scheme's description.
DEFAULT_DESCRIPTION: Final = (
    "Bearer token (JWT) verified by zerotrust. Workloads may present an X.509-SVID client"
    " certificate over mutual TLS instead of, or together with, a token."
)
_log = logging.getLogger("zerotrust")
_BODY_HEADERS: Final = frozenset({"content-type", "content-length"})
_MAX_SCOPE_SETS: Final = 1024
#: OpenAPI 3.1 section 4.8.7.1: the keys of ``components`` (a security scheme's name among them).
_COMPONENT_NAME: Final = re.compile(r"[a-zA-Z0-9.\-_]+")
_ASGI_KEYS: Final = (
    "type", "asgi", "http_version", "method", "scheme", "path", "raw_path", "query_string",
    "root_path", "headers", "client", "server", "extensions",
)  # fmt: skip


class ZeroTrustHTTPException(HTTPException):
    """A refusal; ``outcome`` is the Guard's :class:`~zerotrust.Outcome`."""

    def __init__(self, outcome: Outcome) -> None:
        status, headers, _ = refusal(outcome)
        detail = outcome.body() or {}
        super().__init__(
            status_code=status,
            detail=detail.get("error_description", "access denied"),
            headers={name: value for name, value in headers if name not in _BODY_HEADERS},
        )
        self.outcome = outcome


async def refusal_response(request: Request, exc: Exception) -> Response:
    """Exception handler answering :class:`ZeroTrustHTTPException` with the refusal table."""
    if not isinstance(exc, ZeroTrustHTTPException):  # pragma: no cover - registration bug
        raise exc
    status, headers, body = refusal(exc.outcome)
    return Response(content=body, status_code=status, headers=dict(headers))


def _route_of(scope: MutableMapping[str, Any], guard: Guard) -> str | None:
    """The route template, resolved from the application as the middleware would have.

    Raises :class:`ConfigurationError` where it cannot be known (inside a ``Mount``, or an
    application without a router) while the policy has rules a request without a route would
    escape: the request is refused, as the middleware refuses to start in that case."""
    if "app_root_path" in scope:
        # inside a Mount: the mount's part of the template is only known to the outer app
        # (install the middleware there); without it the route is unknown
        _check_routeless(guard, "inside a Mount")
        return None
    owner = find_routes_owner(scope.get("app"))
    if owner is None:
        _check_routeless(guard, "in an application without a Starlette router")
        return None
    fresh = {key: scope[key] for key in _ASGI_KEYS if key in scope}  # as before routing
    template = route_template_for(owner, fresh)
    return normalize_route(template) if template is not None else None


_hazards: tuple[object, tuple[str, ...]] = (None, ())  # (policy, its routeless hazards)


def _check_routeless(guard: Guard, where: str) -> None:
    """Raise :class:`ConfigurationError` when the policy has rules a request without a route
    would escape."""
    global _hazards  # noqa: PLW0603 - a one-entry cache, replaced whole
    policy = guard.policy
    known = _hazards
    if known[0] is not policy:
        known = _hazards = (policy, routeless_hazards(policy))
    if known[1]:
        raise ConfigurationError(
            f"the dependency runs {where}, where requests have no route template, so rules"
            f" {list(known[1])} would not apply to them: install the middleware on the"
            " outermost application"
        )


#: Where FastAPI's own telemetry (FastAPI 0.142 and later) keeps the request's state.
_FASTAPI_TELEMETRY: Final = "fastapi.telemetry"
_NOT_TRACED: Final = nullcontext()


def _on_server_span(scope: Mapping[str, Any]) -> AbstractContextManager[object]:
    """Make FastAPI's own server span current while the Guard decides, when FastAPI's
    telemetry recorded one for this request.

    FastAPI runs dependencies inside a ``fastapi.dependencies`` span of their own, so the
    decision (``OTelSink``'s attributes and event) and the audit event's span id would belong
    to that child span rather than to the request's server span, where the middleware's
    decision and every other instrumentation's land. Nothing of that span is changed here but
    which span is current; any other telemetry, or none, leaves the current span as it is."""
    span = getattr(scope.get(_FASTAPI_TELEMETRY), "span", None)
    if not isinstance(span, otel_trace.Span) or not span.get_span_context().is_valid:
        return _NOT_TRACED
    return otel_trace.use_span(
        span, end_on_exit=False, record_exception=False, set_status_on_exception=False
    )


async def _authorize(
    guard: Guard,
    connection: HTTPConnection,
    requirement: Requirement | ConfigurationError,
    optional: bool,
    response: Response | None = None,
) -> Principal | None:
    scope = connection.scope
    with _on_server_span(scope):
        outcome = await _decide(guard, connection, requirement, optional, response)
    if not outcome.allowed:
        if scope["type"] == "websocket":
            body = outcome.body()
            code = body["error"] if body else "access_denied"
            raise WebSocketException(code=WEBSOCKET_POLICY_VIOLATION, reason=code)
        raise ZeroTrustHTTPException(outcome)
    return outcome.principal


async def _decide(
    guard: Guard,
    connection: HTTPConnection,
    requirement: Requirement | ConfigurationError,
    optional: bool,
    response: Response | None,
) -> Outcome:
    """The request's outcome for this dependency (``allowed`` with no principal: an optional
    dependency's anonymous caller). A requirement that could not be built (scopes written
    wrong) refuses the request, audited, as a route that cannot be known does."""
    scope = connection.scope
    prior = published(scope, guard)
    if isinstance(requirement, ConfigurationError):
        _log.error("zerotrust: request refused: %s", requirement)
        route = published_route(scope) if prior is not None else None
        return guard.refuse(ScopeView(scope, route), requirement)
    if prior is not None:  # decided by the middleware or an earlier dependency, same Guard
        if prior.principal is None and optional:
            return prior
        view = ScopeView(scope, published_route(scope))
        outcome = guard.refine(view, prior, requirement)
    else:
        try:
            route, unresolved = _route_of(scope, guard), None
        except ConfigurationError as exc:  # a route matched but its template is unknown
            route, unresolved = None, exc
            _log.error("zerotrust: request refused: %s", exc)
        view = ScopeView(scope, route)
        if unresolved is not None:
            outcome = guard.refuse(view, unresolved)
        elif optional:
            # as the middleware decides: the policy's answer, anonymous or not (credentials
            # present but invalid are refused there); a caller it names must meet the rest
            outcome = await guard.aevaluate(view)
            if outcome.principal is not None:
                outcome = guard.refine(view, outcome, requirement)
        else:
            outcome = await guard.aevaluate(view, requirement)
        if outcome.allowed:
            # as the middleware does: forwarded certificates the app must not believe go
            proxies = guard.authenticator.trusted_proxies
            every = forwarded_headers_to_strip(None, proxies)
            if view.has_any(every) or view.underscored:  # rare: perhaps something to strip
                names = forwarded_headers_to_strip(outcome, proxies)
                if strip_scope_headers(scope, names, every):
                    connection.__dict__.pop("_headers", None)  # Starlette caches the headers
            publish(scope, outcome, guard, view.route)
            set_principal(outcome.principal)  # the request's own task: gone with it
            if outcome.headers and response is not None:
                # a fresh DPoP-Nonce: FastAPI adds a dependency's response headers to the
                # response of a handler that returns data (not one returning a Response)
                for name, value in outcome.headers:
                    response.headers[name] = value
    return outcome


class _Dependency(SecurityBase):
    def __init__(self, owner: "ZeroTrust", requirement: Requirement) -> None:
        self.owner = owner
        self.requirement = requirement
        self.model = owner.model
        self.scheme_name = owner.scheme_name
        self._scoped: dict[tuple[str, ...], Requirement] = {}

    def _requirement(self, scopes: list[str]) -> Requirement:
        if not scopes:
            return self.requirement
        key = tuple(scopes)
        found = self._scoped.get(key)
        if found is None:
            found = self.requirement & require(scopes=key)
            if len(self._scoped) < _MAX_SCOPE_SETS:  # scope lists come from code: few
                self._scoped[key] = found
        return found

    async def __call__(
        self, security_scopes: SecurityScopes, connection: HTTPConnection, response: Response
    ) -> Principal | None:
        requirement: Requirement | ConfigurationError
        try:
            requirement = self._requirement(security_scopes.scopes)
        except ConfigurationError as exc:  # refused in _decide, where it is audited
            requirement = exc
        owner = self.owner
        # Optional authentication answers "who, if anyone?": only the bare dependency asks
        # that. One that asks more (scopes along the chain, any require(...), even one with
        # no arguments: "an authenticated caller") cannot be met by nobody.
        optional = not owner.auto_error and self is owner and not security_scopes.scopes
        return await _authorize(owner.guard, connection, requirement, optional, response)


class RequireDependency(_Dependency):
    """A per-handler requirement as a FastAPI dependency (made by :meth:`ZeroTrust.require`);
    returns the :class:`~zerotrust.Principal`."""

    def __repr__(self) -> str:
        return f"RequireDependency({self.requirement!r})"


class ZeroTrust(_Dependency):
    """The FastAPI integration: a security dependency returning the verified Principal.

    ``Security(zt, scopes=[...])`` or ``Depends(zt)``; :meth:`require` for other requirements;
    :meth:`install` adds the refusal exception handler and the middleware to an application.
    """

    #: Pass as ``FastAPI(exception_handlers=ZeroTrust.exception_handlers)``.
    exception_handlers: Final = {ZeroTrustHTTPException: refusal_response}

    def __init__(
        self,
        guard: Guard,
        *,
        auto_error: bool = True,
        scheme_name: str = "zerotrust",
        description: str = DEFAULT_DESCRIPTION,
    ) -> None:
        if not isinstance(guard, Guard):
            raise ConfigurationError("ZeroTrust needs a Guard")
        if not isinstance(scheme_name, str) or not _COMPONENT_NAME.fullmatch(scheme_name):
            # the key of components.securitySchemes: any other makes the document invalid
            raise ConfigurationError(
                "scheme_name must be a non-empty OpenAPI component name (letters, digits, '.',"
                " '-' and '_')"
            )
        self.guard = guard
        self.auto_error = auto_error
        self.model = HTTPBearerModel(bearerFormat="JWT", description=description)
        self.scheme_name = scheme_name
        super().__init__(self, Requirement())

    def require(
        self,
        *,
        scopes: Iterable[str] = (),
        any_scopes: Iterable[str] = (),
        callers: Matcher | Iterable[str] | None = None,
        methods: Iterable[str] = (),
        proven_by: Iterable[str] = (),
    ) -> RequireDependency:
        """A dependency enforcing a :func:`~zerotrust.require` requirement for one handler."""
        requirement = require(
            scopes=scopes,
            any_scopes=any_scopes,
            callers=callers,
            methods=methods,
            proven_by=proven_by,
        )
        return RequireDependency(self, requirement)

    def install(
        self, app: Starlette, *, middleware: bool = True, exempt: Iterable[str] = ()
    ) -> None:
        """Register the refusal exception handler and (unless ``middleware=False``) the
        :class:`~zerotrust.asgi.ZeroTrustMiddleware` with ``exempt`` route templates
        (``"/healthz"``: every method at that path; ``"GET /status"``: that method only)."""
        if isinstance(exempt, str):
            raise ConfigurationError("exempt takes a list of route templates, not a string")
        exempt = tuple(exempt)
        # checked now: Starlette builds the middleware on the first request, after the server
        # started (uvicorn then answers every request 500)
        _exempt_routes(exempt)
        app.add_exception_handler(ZeroTrustHTTPException, refusal_response)
        if middleware:
            app.add_middleware(ZeroTrustMiddleware, guard=self.guard, exempt=exempt)

    def __repr__(self) -> str:
        return f"ZeroTrust(scheme_name={self.scheme_name!r}, auto_error={self.auto_error})"
