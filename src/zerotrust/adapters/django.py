"""Django integration: one middleware, sync and async, deciding on every request.

.. code-block:: python

    MIDDLEWARE = [
        "django.middleware.security.SecurityMiddleware",
        "zerotrust.django.ZeroTrustMiddleware",
        ...
    ]
    ZEROTRUST = {"GUARD": "myproject.security.guard", "EXEMPT": ["healthz"]}

Django resolves the URL after the middleware's ``__call__`` starts, so the decision is made in
``process_view``, where the route template and the view's own requirement are known: one
Guard call per request, with both. The verified :class:`~zerotrust.Principal` is then
``request.principal`` and :func:`zerotrust.django.current_principal` for the view.
A request that never reaches ``process_view`` (no URL pattern matched, an earlier view
middleware answered, or a later middleware answered before the URL was resolved, as
``FetchFromCacheMiddleware`` does with a cached page) is decided when the response comes back,
on the route template, requirement and URL name its URL resolves to, as ``process_view``
would have; every request gets exactly one decision and one audit event, and a refusal
replaces whatever response was produced.

The middleware is sync and async capable without adaptation: with an async handler chain
(ASGI) it is a coroutine function and its ``process_view`` awaits
:meth:`~zerotrust.Guard.aevaluate`; with a sync chain (WSGI) both are plain functions calling
:meth:`~zerotrust.Guard.evaluate`. Refusals use the same table as every other framework
(:mod:`zerotrust.adapters._status`).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import Any

from zerotrust._text import escaped
from zerotrust.adapters._common import forwarded_headers_to_strip
from zerotrust.adapters._context import reset_principal, set_principal
from zerotrust.adapters._status import refusal
from zerotrust.adapters.django_config import DjangoConfig, get_config
from zerotrust.adapters.django_request import (
    STATE_ATTRIBUTE,
    RequestState,
    request_view,
    route_of,
    state_of,
)
from zerotrust.adapters.django_require import view_requirement
from zerotrust.adapters.wsgi import environ_keys
from zerotrust.authn.principal import Principal
from zerotrust.authn.request import RequestView
from zerotrust.authz.policy import Requirement
from zerotrust.errors import ConfigurationError, MissingDependencyError
from zerotrust.pipeline import Guard, Outcome

try:
    from asgiref.sync import iscoroutinefunction, markcoroutinefunction
    from django.http import HttpResponse  # type: ignore[import-untyped, unused-ignore]
    from django.urls import Resolver404, get_resolver  # type: ignore[import-untyped, unused-ignore]
except ImportError as exc:  # pragma: no cover - exercised without Django installed
    raise MissingDependencyError("django", "django", error=exc) from exc

__all__ = [
    "ZeroTrustMiddleware",
    "finish",
    "prepare",
    "prepare_match",
    "prepare_unreached",
    "refusal_response",
]

Prepared = tuple[RequestView, Requirement | None]

_log = logging.getLogger("zerotrust")


def refusal_response(outcome: Outcome) -> Any:
    """The ``HttpResponse`` for a refused request (status, headers and JSON body)."""
    status, headers, body = refusal(outcome)
    response = HttpResponse(body, status=status, content_type="application/json")
    for name, value in headers:
        if name != "content-type":
            response[name] = value
    return response


def prepare(
    request: Any, view_func: Any, config: DjangoConfig
) -> Prepared | ConfigurationError | None:
    """The request view and requirement to decide on, or ``None`` for an exempt request.

    A view that carries a requirement is always decided, even if ``EXEMPT`` lists it. A
    requirement written wrong (``as_view(required_scopes="a b")``) is the
    :class:`~zerotrust.errors.ConfigurationError` to refuse the request with.
    """
    match = request.resolver_match
    if view_func is None and match is not None:
        view_func = match.func
    try:
        requirement = view_requirement(view_func) if view_func is not None else None
    except ConfigurationError as exc:
        return exc
    return prepare_match(request, match, requirement, config)


def prepare_match(
    request: Any, match: Any, requirement: Requirement | None, config: DjangoConfig
) -> Prepared | None:
    """:func:`prepare` for a request whose ``ResolverMatch`` (``None``: no URL pattern matched)
    and requirement are known."""
    if requirement is None and config.is_exempt(
        request.path_info, match.view_name if match is not None else None
    ):
        request.__dict__[STATE_ATTRIBUTE] = RequestState(None, None)
        request.principal = None
        _strip_forwarded(request, None, config.guard)  # nothing accepted: none reach the view
        return None
    return request_view(request, match), requirement


def prepare_unreached(request: Any, config: DjangoConfig) -> Prepared | ConfigurationError | None:
    """:func:`prepare` for a request that never reached ``process_view``.

    Its response came from a middleware: one after this one that answered before the URL was
    resolved (``FetchFromCacheMiddleware`` serving a cached page), or a view middleware before
    it. The URL is resolved as Django would have (``request.urlconf`` if set, against
    ``request.path_info``), so the decision has the route template, the view's requirement and
    its URL name, as in ``process_view``. No URL pattern matching is a request without a route;
    a URL that cannot be resolved, or a match without a route template, is the
    :class:`~zerotrust.errors.ConfigurationError` to refuse it with (fail closed).
    """
    match = request.resolver_match
    if match is None:
        try:
            match = get_resolver(getattr(request, "urlconf", None)).resolve(request.path_info)
        except Resolver404:
            match = None
        except Exception as exc:  # the request is refused; the cause stays in the log
            return ConfigurationError(  # the resolver's text may quote the request's path
                f"the URL could not be resolved ({type(exc).__name__}: {escaped(str(exc), 200)})"
            )
    if match is None:
        return prepare_match(request, None, None, config)
    if route_of(match) is None:
        return ConfigurationError(f"the route template of {match.view_name!r} is unknown")
    try:
        requirement = view_requirement(match.func)
    except ConfigurationError as exc:
        return exc
    return prepare_match(request, match, requirement, config)


def finish(
    request: Any,
    outcome: Outcome,
    requirement: Requirement | None,
    guard: Guard,
    *,
    bind: bool = True,
) -> Any:
    """Record the decision on the request; ``None`` when allowed, else the refusal response.

    An allowed request loses the forwarded-certificate headers the application must not
    believe (spoofed copies from untrusted peers). With ``bind`` the principal is also set in
    the context variable for the view (the middleware resets it when the response is done).
    """
    request.__dict__[STATE_ATTRIBUTE] = RequestState(outcome, requirement)
    if not outcome.allowed:
        request.principal = None
        return refusal_response(outcome)
    request.principal = outcome.principal
    _strip_forwarded(request, outcome, guard)
    if bind:
        set_principal(outcome.principal)
    return None


def _strip_forwarded(request: Any, outcome: Outcome | None, guard: Guard) -> None:
    meta = request.META
    proxies = guard.authenticator.trusted_proxies
    every = forwarded_headers_to_strip(None, proxies)
    for key in environ_keys(every):
        if key in meta:
            break
    else:  # the common case: no forwarded-certificate header, nothing to strip
        return
    names = forwarded_headers_to_strip(outcome, proxies)
    kept = () if len(names) == len(every) else tuple(n for n in every if n not in names)
    if kept and _lookalike_sent(request, kept):  # only when a trusted proxy's header stays
        # The trusted proxy's header would stay, but the request also carries a spelling of it
        # with '_' (x_forwarded_client_cert): Django before 4.2.30 / 5.2.13 files both under
        # one META key, the client's value joined to the proxy's. None of it can be believed.
        names = every
    for key in environ_keys(names):
        if meta.pop(key, None) is not None:
            request.__dict__.pop("headers", None)  # HttpRequest.headers is cached from META


def _lookalike_sent(request: Any, names: tuple[str, ...]) -> bool:
    """Whether the ASGI request has a header naming one of ``names`` with '_' for '-'."""
    scope = getattr(request, "scope", None)
    headers = scope.get("headers") if isinstance(scope, Mapping) else None
    if not headers:
        return False
    wanted = {name.encode("latin-1") for name in names}
    return any(b"_" in raw and raw.lower().replace(b"_", b"-") in wanted for raw, _ in headers)


class ZeroTrustMiddleware:
    """Authenticate, authorize and audit every request with the ``ZEROTRUST["GUARD"]``.

    The ``ZEROTRUST`` setting is validated when Django loads the middleware (start-up).
    """

    sync_capable = True
    async_capable = True

    process_view: Callable[[Any, Any, Any, Any], Any]

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        self.config = get_config()
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)
            self.process_view = self._process_view_async
        else:
            self.process_view = self._process_view_sync

    # --- sync (WSGI) --------------------------------------------------------------------------

    def __call__(self, request: Any) -> Any:
        if self._async:
            return self._acall(request)
        token = set_principal(None)
        try:
            response = self.get_response(request)
            if state_of(request) is None:  # the view was never reached: decide now
                prepared = prepare_unreached(request, self.config)
                if prepared is not None:
                    guard = self.config.guard
                    if isinstance(prepared, ConfigurationError):
                        outcome, requirement = _unresolved(request, guard, prepared), None
                    else:
                        outcome, requirement = guard.evaluate(*prepared), prepared[1]
                    refused = finish(request, outcome, requirement, guard, bind=False)
                    response = _replace(response, refused)
            _bind_stream(request, response)
            _pass_on(request, response)
        finally:
            reset_principal(token)
        return response

    def _process_view_sync(self, request: Any, view_func: Any, args: Any, kwargs: Any) -> Any:
        prepared = prepare(request, view_func, self.config)
        if prepared is None:
            return None
        guard = self.config.guard
        if isinstance(prepared, ConfigurationError):
            return finish(request, _unresolved(request, guard, prepared), None, guard)
        return finish(request, guard.evaluate(*prepared), prepared[1], guard)

    # --- async (ASGI) -------------------------------------------------------------------------

    async def _acall(self, request: Any) -> Any:
        token = set_principal(None)
        try:
            response = await self.get_response(request)
            if state_of(request) is None:  # the view was never reached: decide now
                prepared = prepare_unreached(request, self.config)
                if prepared is not None:
                    guard = self.config.guard
                    if isinstance(prepared, ConfigurationError):
                        outcome, requirement = _unresolved(request, guard, prepared), None
                    else:
                        outcome, requirement = await guard.aevaluate(*prepared), prepared[1]
                    refused = finish(request, outcome, requirement, guard, bind=False)
                    response = _replace(response, refused)
            _bind_stream(request, response)
            _pass_on(request, response)
        finally:
            reset_principal(token)
        return response

    async def _process_view_async(
        self, request: Any, view_func: Any, args: Any, kwargs: Any
    ) -> Any:
        prepared = prepare(request, view_func, self.config)
        if prepared is None:
            return None
        guard = self.config.guard
        if isinstance(prepared, ConfigurationError):
            return finish(request, _unresolved(request, guard, prepared), None, guard)
        return finish(request, await guard.aevaluate(*prepared), prepared[1], guard)


def _unresolved(request: Any, guard: Guard, error: ConfigurationError) -> Outcome:
    """The audited refusal (500 ``configuration_error``) of a request whose route, or whose
    view's requirement, could not be determined."""
    _log.error("zerotrust: request refused: %s", error)
    return guard.refuse(request_view(request), error)


def _replace(response: Any, refused: Any) -> Any:
    if refused is None:
        return response
    response.close()  # the view's response is discarded: release what it holds
    return refused


def _pass_on(request: Any, response: Any) -> None:
    """An allowed request's response headers from the Guard (a fresh ``DPoP-Nonce``)."""
    state = request.__dict__.get(STATE_ATTRIBUTE)
    outcome = state.outcome if state is not None else None
    if outcome is not None and outcome.allowed and outcome.headers:
        for name, value in outcome.headers:
            response[name] = value


def _bind_stream(request: Any, response: Any) -> None:
    """Keep the principal in the context variable while a streamed body is produced, and
    while the server closes it (a client that left: the body's own cleanup runs then). A
    ``FileResponse`` of a file runs no application code while it is sent: it keeps its file,
    which Django's WSGI handler hands to the server's ``wsgi.file_wrapper`` (sendfile)."""
    if not getattr(response, "streaming", False):
        return
    if getattr(response, "file_to_stream", None) is not None:
        return
    principal = request.__dict__.get("principal")
    if principal is None:
        return
    if response.is_async:
        response.streaming_content = _abound(response.streaming_content, principal)
    else:
        response.streaming_content = _bound(response.streaming_content, principal)
        # Django closes the view's iterator itself in response.close(), before the wrapper
        response.close = _closing_with(response, principal)


def _closing_with(response: Any, principal: Principal) -> Callable[[], None]:
    """``response.close`` with ``principal`` bound. The response is held weakly: a closure
    holding it, kept on the response itself, would make a reference cycle, freed only by the
    garbage collector with the whole body."""
    own = response.__dict__.get("close")  # an instance's own close, set before (kept)
    close_of = type(response).close
    ref = weakref.ref(response)

    def closing() -> None:
        token = set_principal(principal)
        try:
            if own is not None:
                own()
            else:
                alive = ref()
                if alive is not None:
                    close_of(alive)
        finally:
            reset_principal(token)

    return closing


def _bound(content: Iterable[Any], principal: Principal) -> Iterator[Any]:
    iterator = iter(content)
    while True:
        token = set_principal(principal)
        try:
            part = next(iterator)
        except StopIteration:
            return
        finally:
            reset_principal(token)
        yield part


async def _abound(content: AsyncIterator[Any], principal: Principal) -> AsyncIterator[Any]:
    while True:
        token = set_principal(principal)
        try:
            part = await anext(content)
        except StopAsyncIteration:
            return
        finally:
            reset_principal(token)
        yield part
