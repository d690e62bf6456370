"""Flask: every request authenticated, authorized and audited before its view runs.

``ZeroTrust(app, guard=guard)`` (or ``zt.init_app(app, guard=guard)`` in an application
factory) registers a ``before_request`` check that evaluates the Guard **once** per request,
with the route template of the matched rule (``/orders/<int:order_id>`` is matched as
``/orders/{order_id}``, see :func:`~zerotrust.adapters._common.route_template`) and the view's
own requirement from :meth:`ZeroTrust.require`. A refusal is answered by the handler
registered for :class:`RequestRefused` nearest the view (a blueprint's, else the
application's; the default answers with the refusal table every zerotrust adapter shares):
register your own to change the body. Other error handlers never see refusals. The
principal is in :data:`current_principal`, in ``flask.g.zerotrust_principal`` and in
:func:`zerotrust.wsgi.current_principal`.
"""

from __future__ import annotations

import functools
import inspect
import logging
import operator
from collections.abc import Callable, Iterable
from contextvars import Token
from typing import Any, Final, TypeVar, cast, overload

from zerotrust.errors import ConfigurationError, MissingDependencyError

try:
    from flask import Flask, Response, after_this_request, current_app, g, request
    from werkzeug.exceptions import HTTPException, MethodNotAllowed
    from werkzeug.local import LocalProxy
except ImportError as exc:
    raise MissingDependencyError("flask", "flask", error=exc) from exc

from zerotrust.adapters._common import route_template
from zerotrust.adapters._context import reset_principal, set_principal
from zerotrust.adapters._status import refusal
from zerotrust.adapters.wsgi import WSGIRequestView, _PrincipalBody, strip_forwarded_headers
from zerotrust.authn.principal import Principal
from zerotrust.authz.policy import Requirement, require
from zerotrust.authz.rules import normalize_route
from zerotrust.identity.match import Matcher
from zerotrust.pipeline import Guard, Outcome

__all__ = ["RequestRefused", "ZeroTrust", "current_principal"]

F = TypeVar("F", bound=Callable[..., Any])

#: ``app.extensions`` key under which each app's settings are kept.
EXTENSION_KEY: Final = "zerotrust"
_REQUIREMENT: Final = "__zerotrust_requirement__"
_PARTS: Final = "__zerotrust_parts__"
_EXEMPT: Final = "__zerotrust_exempt__"
_log = logging.getLogger("zerotrust")
_WRAPPED: Final = "__zerotrust_wrapped__"
_ENFORCED: Final = "_zerotrust_enforced"
_RESET: Final = "_zerotrust_context"
#: ``flask.g`` key of the allowed outcome of the request's check.
_OUTCOME: Final = "_zerotrust_outcome"
#: The WSGI environ key of the principal of a streamed response, for :class:`_PrincipalScope`.
_ENVIRON_PRINCIPAL: Final = "zerotrust.flask.principal"


def _principal() -> Principal | None:
    return cast("Principal | None", g.get("zerotrust_principal"))


#: The verified principal of the current request (a werkzeug ``LocalProxy`` over
#: ``flask.g.zerotrust_principal``). On exempt or anonymous requests it proxies ``None`` and
#: is falsy: test it with ``if current_principal:``, not ``is None``.
current_principal: Principal = cast("Principal", LocalProxy(_principal))


class RequestRefused(Exception):
    """A refusal by the Guard, handed to the handler registered for this class.

    ``outcome`` is the Guard's :class:`~zerotrust.Outcome`. The default handler returns
    :meth:`response`; an application can register its own handler
    (``@app.errorhandler(RequestRefused)``) to change the body. A handler that raises (even
    ``abort(...)``) or returns nothing (``None`` or an empty value), or a response whose status
    is not an error (a body without a status is Flask's 200), is answered with
    :meth:`response`; the refusal's
    ``WWW-Authenticate`` / ``Retry-After`` and ``Cache-Control: no-store`` are added to a
    handler's response that does not set them: the view never runs for a refused request, and
    a refusal never looks like a success.
    """

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(f"request refused with status {outcome.status}")
        self.outcome = outcome

    @property
    def status(self) -> int:
        """The HTTP status of the refusal: the outcome's ``status`` (400, 401, 403, 429 or 503)."""
        return self.outcome.status

    @property
    def headers(self) -> list[tuple[str, str]]:
        """``WWW-Authenticate`` / ``Retry-After`` as the refusal table sets them."""
        return [(name, value) for name, value in self.outcome.headers]

    def response(self) -> Response:
        """The standard refusal: status, headers and the JSON error body."""
        status, headers, body = refusal(self.outcome)
        return Response(body, status=status, headers=headers)


def _default_handler(exc: RequestRefused) -> Response:
    return exc.response()


class _Route:
    """What the check needs to know about one URL rule, worked out on its first request."""

    __slots__ = ("exempt", "misplaced", "parts", "requirement", "template")

    def __init__(self, view: Any, template: str | None, exempt: bool) -> None:
        self.template = template
        self.exempt = exempt or bool(getattr(view, _EXEMPT, False))
        self.requirement: Requirement | None = getattr(view, _REQUIREMENT, None)
        self.parts: tuple[Requirement, ...] = getattr(view, _PARTS, ())
        self.misplaced = bool(getattr(view, _WRAPPED, False)) and self.requirement is None


_UNMATCHED: Final = _Route(None, None, False)


class _AppState:
    __slots__ = ("exempt", "guard", "routes")

    def __init__(self, guard: Guard, exempt: frozenset[str]) -> None:
        self.guard = guard
        self.exempt = exempt
        self.routes: dict[tuple[str, str], _Route] = {}

    def route(self, app: Flask, rule: Any) -> _Route:
        key = (rule.endpoint, rule.rule)
        found = self.routes.get(key)
        if found is None:
            view = app.view_functions.get(rule.endpoint)
            template = route_template(rule.rule, regex=False) or normalize_route(rule.rule)
            found = _Route(view, template, rule.endpoint in self.exempt)
            if len(self.routes) < 65536:  # one entry per URL rule
                self.routes[key] = found
        return found


def _template_of_refused_method(app: Any, req: Any) -> str | None:
    """The route template of the rule matching the URL of a request refused for its method."""
    error = req.routing_exception
    methods = getattr(error, "valid_methods", None)
    if not isinstance(error, MethodNotAllowed) or not methods:
        return None
    try:
        rule, _ = app.url_map.bind_to_environ(req.environ).match(
            method=next(iter(methods)), return_rule=True
        )
    except HTTPException:
        return None
    return route_template(rule.rule, regex=False) or normalize_route(rule.rule)


def _refuse(app: Any, req: Any, outcome: Outcome) -> Any:
    """The response to a refusal: the handler registered for :class:`RequestRefused` nearest
    the view (a blueprint's, else the application's), else the standard one. Answered here,
    not raised: a blueprint's catch-all ``errorhandler(Exception)`` would come before an
    application's ``RequestRefused`` handler and turn a 401 into its own 500.

    Never ``None``: Flask runs the view when a ``before_request`` function returns ``None``, so
    a handler that answers nothing (or an empty value) gets the standard refusal instead."""
    exc = RequestRefused(outcome)
    for name in (*req.blueprints, None):
        handler = app.error_handler_spec.get(name, {}).get(None, {}).get(RequestRefused)
        if handler is not None:
            shown = getattr(handler, "__qualname__", repr(handler))
            try:
                answer = app.ensure_sync(handler)(exc)
                response = app.make_response(answer) if answer else None
            except Exception as error:  # raised from a before_request function, it would
                # reach the app's other error handlers: a 401 without its challenge, or a 200
                _log.error(
                    "zerotrust: the RequestRefused handler %s raised %s;"
                    " the standard refusal answers",
                    shown,
                    type(error).__name__,
                )
                return exc.response()
            if response is None:  # None, "", {}...: Flask would run the view, or answer 200
                _log.error(
                    "zerotrust: the RequestRefused handler %s returned no response;"
                    " the standard refusal answers",
                    shown,
                )
                return exc.response()
            if response.status_code < 400:  # a body without its status: Flask's 200
                _log.error(
                    "zerotrust: the RequestRefused handler %s answered %d;"
                    " the standard refusal answers",
                    shown,
                    response.status_code,
                )
                return exc.response()
            # the challenge (WWW-Authenticate, Retry-After) and no-store, unless it set its own
            for header, value in _refusal_headers(outcome):
                if header not in response.headers:
                    response.headers[header] = value
            return response
    return exc.response()


def _refusal_headers(outcome: Outcome) -> list[tuple[str, str]]:
    return [("Cache-Control", "no-store"), *outcome.headers]


def _check(state: _AppState) -> Any:
    # One context lookup per proxy: they cost more than the attribute reads behind them.
    req: Any = request._get_current_object()  # type: ignore[attr-defined]
    ctx_g: Any = g._get_current_object()
    ctx_g.zerotrust_principal = None
    rule = req.url_rule
    app: Any = current_app._get_current_object()  # type: ignore[attr-defined]
    if rule is None:
        # a URL whose rule refuses the method (405) still has a template: the audit trail
        # and the policy see it, as they do in the other frameworks
        template = _template_of_refused_method(app, req)
        route = _UNMATCHED if template is None else _Route(None, template, False)
    else:
        route = state.route(app, rule)
        if route.misplaced:  # refused (500) and audited, like an unresolvable route elsewhere;
            # an exempt endpoint too: its view would run without the requirement
            error = ConfigurationError(
                f"view {rule.endpoint!r} was registered without its @zt.require wrapper:"
                " put @zt.require below @app.route"
            )
            _log.error("zerotrust: request refused: %s", error)
            view = WSGIRequestView(req.environ, route.template)
            return _refuse(app, req, state.guard.refuse(view, error))
        if route.exempt:  # nothing accepted: no forwarded certificate reaches the view
            strip_forwarded_headers(req.environ, None, state.guard)
            return None
    environ = req.environ
    outcome = state.guard.evaluate(WSGIRequestView(environ, route.template), route.requirement)
    if not outcome.allowed:
        return _refuse(app, req, outcome)
    strip_forwarded_headers(environ, outcome, state.guard)
    if outcome.headers:  # a fresh DPoP-Nonce for the response
        after_this_request(functools.partial(_add_headers, outcome.headers))
    principal = outcome.principal
    ctx_g.zerotrust_principal = principal
    setattr(ctx_g, _ENFORCED, route.parts)
    setattr(ctx_g, _OUTCOME, outcome)
    setattr(ctx_g, _RESET, set_principal(principal))
    return None


def _add_headers(headers: tuple[tuple[str, str], ...], response: Response) -> Response:
    for name, value in headers:
        response.headers[name] = value
    return response


def _teardown(exc: BaseException | None) -> None:
    ctx_g: Any = g._get_current_object()
    token: Token[Principal | None] | None = ctx_g.pop(_RESET, None)
    if _ENVIRON_PRINCIPAL not in request.environ:  # a streamed body keeps them until it closes
        _forget(ctx_g)
    if token is not None:
        try:
            reset_principal(token)
        except ValueError:  # torn down in another context (streamed response)
            set_principal(None)


def _forget(ctx_g: Any) -> None:
    """Drop the request's principal from ``g`` (an app context pushed around several
    requests keeps one ``g`` for all of them)."""
    ctx_g.pop("zerotrust_principal", None)
    ctx_g.pop(_ENFORCED, None)
    ctx_g.pop(_OUTCOME, None)


def _mark_streamed(response: Response) -> Response:
    """Hand the principal of a streamed response to :class:`_PrincipalScope` (only those are
    produced after the request is torn down). A file the server sends itself
    (``send_file``'s ``wsgi.file_wrapper``) runs no application code: it is left to the
    server's sendfile path."""
    if response.is_streamed and not _sent_by_server(response):
        ctx_g: Any = g._get_current_object()
        principal = ctx_g.get("zerotrust_principal")
        if principal is not None:
            request.environ[_ENVIRON_PRINCIPAL] = (principal, ctx_g)
    return response


def _sent_by_server(response: Response) -> bool:
    file_wrapper = request.environ.get("wsgi.file_wrapper")
    return (
        response.direct_passthrough
        and isinstance(file_wrapper, type)
        and isinstance(response.response, file_wrapper)
    )


class _PrincipalScope:
    """Wraps ``app.wsgi_app``: each request starts without a principal and leaves the context
    variable as it found it, whatever the application's teardown functions do (Flask stops
    at the first that raises, and zerotrust's may be after it); a streamed body is produced
    with the request's principal (Flask tears the request down before it)."""

    __slots__ = ("wsgi_app",)

    def __init__(self, wsgi_app: Callable[..., Any]) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        token = set_principal(None)
        try:
            result = self.wsgi_app(environ, start_response)
        finally:
            reset_principal(token)
        streamed = environ.get(_ENVIRON_PRINCIPAL)
        return result if streamed is None else _StreamedBody(result, *streamed)


class _StreamedBody(_PrincipalBody):
    """A streamed body, produced with the request's principal, which then leaves ``g``."""

    __slots__ = ("_g",)

    def __init__(self, result: Iterable[bytes], principal: Principal, ctx_g: Any) -> None:
        super().__init__(result, principal)
        self._g = ctx_g

    def close(self) -> None:
        try:
            super().close()
        finally:
            _forget(self._g)


class ZeroTrust:
    """The Flask extension. See the module documentation.

    * ``guard`` -- the :class:`~zerotrust.Guard` deciding every request (may be given later,
      to :meth:`init_app`);
    * ``exempt`` -- endpoint names served without any check or audit event (``"static"``,
      health probes); :meth:`exempt` marks a single view.
    """

    def __init__(
        self, app: Flask | None = None, *, guard: Guard | None = None, exempt: Iterable[str] = ()
    ) -> None:
        self.guard = guard
        self._exempt = _endpoints(exempt)
        if app is not None:
            self.init_app(app)

    def init_app(
        self, app: Flask, *, guard: Guard | None = None, exempt: Iterable[str] | None = None
    ) -> None:
        """Install the checks on ``app`` (the application-factory pattern).

        The check runs among the application's ``before_request`` functions in the order they
        were registered: call this before ``register_blueprint`` when a blueprint's
        ``before_app_request`` functions should see only checked requests."""
        guard = guard if guard is not None else self.guard
        if not isinstance(guard, Guard):
            raise ConfigurationError("ZeroTrust needs guard=Guard(...) (here or in init_app)")
        if EXTENSION_KEY in app.extensions:
            raise ConfigurationError(f"zerotrust is already installed on app {app.name!r}")
        state = _AppState(guard, self._exempt if exempt is None else _endpoints(exempt))
        app.extensions[EXTENSION_KEY] = state
        app.before_request(functools.partial(_check, state))
        app.after_request(_mark_streamed)
        app.teardown_request(_teardown)
        app.wsgi_app = _PrincipalScope(app.wsgi_app)  # type: ignore[method-assign]
        if RequestRefused not in app.error_handler_spec[None][None]:
            app.register_error_handler(RequestRefused, _default_handler)

    @overload
    def require(self, view: F, /) -> F: ...
    @overload
    def require(
        self,
        view: None = None,
        /,
        *,
        scopes: Iterable[str] = (),
        any_scopes: Iterable[str] = (),
        callers: Matcher | Iterable[str] | None = None,
        methods: Iterable[str] = (),
        proven_by: Iterable[str] = (),
    ) -> Callable[[F], F]: ...

    def require(
        self,
        view: F | None = None,
        /,
        *,
        scopes: Iterable[str] = (),
        any_scopes: Iterable[str] = (),
        callers: Matcher | Iterable[str] | None = None,
        methods: Iterable[str] = (),
        proven_by: Iterable[str] = (),
    ) -> F | Callable[[F], F]:
        """A per-view requirement on top of the app-wide policy.

        Bare (``@zt.require``) it asks for an authenticated caller; with arguments it builds
        :func:`zerotrust.require`. Place it *below* ``@app.route`` so the route registers the
        decorated view; stacked requirements combine. The view refuses to run (500) when the
        check did not happen, e.g. on an app without the extension.
        """
        requirement = require(
            scopes=scopes,
            any_scopes=any_scopes,
            callers=callers,
            methods=methods,
            proven_by=proven_by,
        )

        def decorate(fn: F) -> F:
            if getattr(fn, _EXEMPT, False):
                raise ConfigurationError(f"{fn.__name__} is exempt; it cannot also require")
            parts: tuple[Requirement, ...] = (requirement, *getattr(fn, _PARTS, ()))
            combined = functools.reduce(operator.and_, parts)  # raises if contradictory
            wrapper = _guarded(fn, requirement)
            setattr(wrapper, _REQUIREMENT, combined)
            setattr(wrapper, _PARTS, parts)
            setattr(fn, _WRAPPED, True)  # registering fn itself would skip the requirement
            return cast("F", wrapper)

        return decorate(view) if view is not None else decorate

    def exempt(self, view: F) -> F:
        """Serve this view without any check or audit event."""
        if getattr(view, _REQUIREMENT, None) is not None:
            raise ConfigurationError(f"{view.__name__} has a requirement; it cannot be exempt")
        setattr(view, _EXEMPT, True)
        return view


def _endpoints(exempt: Iterable[str]) -> frozenset[str]:
    if isinstance(exempt, str):
        raise ConfigurationError("exempt must be a list of endpoint names, not one string")
    return frozenset(exempt)


def _enforced(requirement: Requirement) -> None:
    if not any(part is requirement for part in g.get(_ENFORCED, ())):
        error = ConfigurationError(
            "a view with @zt.require ran without the zerotrust check: install ZeroTrust on"
            " this app and put @zt.require below @app.route"
        )
        outcome = g.get(_OUTCOME)
        state = current_app.extensions.get(EXTENSION_KEY)
        if isinstance(outcome, Outcome) and isinstance(state, _AppState):
            # the check allowed the request without this requirement, and that allow is in
            # the audit trail: so is the refusal that overrides it
            app: Any = current_app._get_current_object()  # type: ignore[attr-defined]
            rule = request.url_rule
            template = state.route(app, rule).template if rule is not None else None
            view = WSGIRequestView(request.environ, template)
            state.guard.refuse(view, error, prior=outcome)
        raise error


def _guarded(fn: Callable[..., Any], requirement: Requirement) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            _enforced(requirement)
            return await fn(*args, **kwargs)

        return async_wrapper

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _enforced(requirement)
        return fn(*args, **kwargs)

    return wrapper
