"""Django REST framework: an authentication class and a permission class.

.. code-block:: python

    class OrderList(APIView):
        authentication_classes = [ZeroTrustAuthentication]
        permission_classes = [ZeroTrustPermission]
        required_scopes = ["orders:read"]

Both use the Guard of the ``ZEROTRUST`` setting and share one decision per request: the one
:class:`~zerotrust.django.ZeroTrustMiddleware` already made when it is installed, else one Guard
call made by whichever class runs first, with the view's ``required_scopes``,
``required_any_scopes``, ``required_callers`` and ``required_proven_by`` combined with the
app-wide policy.

* :class:`ZeroTrustAuthentication` sets ``request.user`` to a :class:`ZeroTrustUser` and
  ``request.auth`` to the :class:`~zerotrust.Principal`. Authentication failures are 401 with
  the ``WWW-Authenticate`` challenge (``authenticate_header``), 429 and 503 are raised here
  too. A policy refusal is left to :class:`ZeroTrustPermission` (403); when the view does not
  list that class the authentication class raises it itself, so a forgotten permission class
  never lets a refused request through.
* :class:`ZeroTrustPermission` raises every refusal it sees.

Status codes, ``WWW-Authenticate``, ``Retry-After`` and the JSON body are those of every other
framework (:mod:`zerotrust.adapters._status`), rendered by DRF's exception handler as JSON
whatever the ``Accept`` header asks for (a browser never gets DRF's HTML page for a refusal).
Refusals also carry ``Cache-Control: no-store`` and a ``use_dpop_nonce`` refusal its
``DPoP-Nonce``, through the view's response headers, whatever exception handler DRF uses.
DRF answers an ``Accept`` header it cannot satisfy with 406 before
any authentication runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from django.urls import Resolver404, get_resolver

from zerotrust.adapters._status import refusal
from zerotrust.adapters.django import _unresolved, finish, prepare_match
from zerotrust.adapters.django_config import get_config
from zerotrust.adapters.django_request import request_view, state_of
from zerotrust.adapters.django_require import (
    covers,
    ensure_checked,
    instance_requirement,
    view_requirement,
)
from zerotrust.authn.principal import Principal
from zerotrust.errors import ConfigurationError, MissingDependencyError
from zerotrust.pipeline import Outcome

try:
    from rest_framework.authentication import BaseAuthentication  # type: ignore[import-untyped, unused-ignore]
    from rest_framework.exceptions import APIException  # type: ignore[import-untyped, unused-ignore]
    from rest_framework.permissions import BasePermission  # type: ignore[import-untyped, unused-ignore]
except ImportError as exc:  # pragma: no cover - exercised without DRF installed
    raise MissingDependencyError("djangorestframework", "drf", error=exc) from exc

__all__ = [
    "ZeroTrustAuthentication",
    "ZeroTrustPermission",
    "ZeroTrustRefusal",
    "ZeroTrustUser",
    "exception_handler",
]


class ZeroTrustUser:
    """``request.user`` for a caller authenticated by zerotrust: a workload, not a database user.

    ``username`` is the principal's id (its SPIFFE ID when it has one), and so are ``pk`` and
    ``id``: DRF keys per-user throttles on ``pk``, so each workload gets a bucket of its own. It
    holds no Django permissions and no database row; authorize with zerotrust policies and
    requirements instead.
    """

    __slots__ = ("principal",)

    is_active = True
    is_staff = False
    is_superuser = False
    is_anonymous = False
    is_authenticated = True

    def __init__(self, principal: Principal) -> None:
        self.principal = principal

    @property
    def pk(self) -> str:
        """The principal's id (its SPIFFE ID when it has one): DRF keys per-user throttles on it."""
        return self.principal.id

    @property
    def id(self) -> str:
        """The principal's id, as :attr:`pk`."""
        return self.principal.id

    @property
    def username(self) -> str:
        """The principal's id, as :attr:`pk`."""
        return self.principal.id

    def get_username(self) -> str:
        """Django user API: the principal's id."""
        return self.principal.id

    def has_perm(self, perm: str, obj: object = None) -> bool:
        """Django user API: always ``False`` (authorize with zerotrust policies instead)."""
        return False

    def has_perms(self, perm_list: object, obj: object = None) -> bool:
        """Django user API: always ``False`` (authorize with zerotrust policies instead)."""
        return False

    def has_module_perms(self, app_label: str) -> bool:
        """Django user API: always ``False`` (authorize with zerotrust policies instead)."""
        return False

    def get_all_permissions(self, obj: object = None) -> set[str]:
        """Django user API: always an empty set (a workload holds no Django permissions)."""
        return set()

    def __str__(self) -> str:
        return self.principal.id

    def __repr__(self) -> str:
        return f"ZeroTrustUser({self.principal.id!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ZeroTrustUser) and other.principal == self.principal

    def __hash__(self) -> int:
        return hash(self.principal.id)


class ZeroTrustRefusal(APIException):  # type: ignore[misc, unused-ignore]
    """A refusal, as DRF renders it: zerotrust's status, challenge, ``Retry-After`` and body."""

    def __init__(self, outcome: Outcome) -> None:
        status, headers, body = refusal(outcome)
        super().__init__(detail=json.loads(body))
        self.status_code = status
        self.outcome = outcome
        self.auth_header = outcome.www_authenticate
        retry = dict(headers).get("retry-after")
        self.wait = int(retry) if retry is not None else None


def exception_handler(exc: Exception, context: dict[str, Any]) -> Any:
    """DRF's own exception handler, plus ``Cache-Control: no-store`` on zerotrust refusals, as
    every other adapter sends it, and the refusal's other headers that DRF does not set itself
    (``DPoP-Nonce``). DRF adds them from the view's response headers anyway; this handler
    also writes them on the response it makes, for handlers that build on it
    (``REST_FRAMEWORK["EXCEPTION_HANDLER"] = "zerotrust.django.drf_exception_handler"``)."""
    from rest_framework.views import exception_handler as drf_exception_handler  # type: ignore[import-untyped, unused-ignore]

    response = drf_exception_handler(exc, context)
    if response is not None and isinstance(exc, ZeroTrustRefusal):
        response["Cache-Control"] = "no-store"
        for name, value in exc.outcome.headers:
            if name.lower() not in _SET_BY_DRF:
                response[name] = value
    return response


def decide(request: Any, view: Any) -> Outcome | None:
    """The decision for a DRF request (``None`` when ``EXEMPT``), made at most once.

    The view's own requirement is read from the view instance (its class's ``required_*``
    attributes, with those its route or ``@action`` gave it), so a decorator around
    ``as_view()`` that hides the view class cannot drop it: made here, the decision includes
    it; made earlier (by the middleware) without it, the request is refused with
    ``ImproperlyConfigured`` rather than served.
    """
    django_request = getattr(request, "_request", request)
    state = state_of(django_request)
    if state is None:
        config = get_config()
        match = django_request.resolver_match
        if match is None:  # a view called directly (APIRequestFactory): resolve its URL
            match = _resolve(django_request)
        try:
            needed = instance_requirement(view) if view is not None else None
            requirement = view_requirement(match.func) if match is not None else None
            if needed is not None and not covers(requirement, needed):
                requirement = needed if requirement is None else requirement & needed
        except ConfigurationError as exc:  # written wrong: an audited refusal, as the middleware's
            refused = _unresolved(django_request, config.guard, exc)
            finish(django_request, refused, None, config.guard, bind=False)
            return refused
        prepared = prepare_match(django_request, match, requirement, config)
        if prepared is None:
            return None
        decided = config.guard.evaluate(*prepared)
        finish(django_request, decided, prepared[1], config.guard, bind=False)
        return decided
    outcome = state.outcome
    needed = instance_requirement(view) if view is not None else None
    if needed is not None and (outcome is None or outcome.allowed):
        ensure_checked(django_request, needed, type(view).__qualname__)
    return outcome


class ZeroTrustAuthentication(BaseAuthentication):  # type: ignore[misc, unused-ignore]
    """DRF authentication by the zerotrust Guard (see the module documentation)."""

    def authenticate(self, request: Any) -> tuple[ZeroTrustUser, Principal] | None:
        """DRF hook: the Guard's principal as ``(user, auth)``; raises :class:`ZeroTrustRefusal`."""
        view = (getattr(request, "parser_context", None) or {}).get("view")
        outcome = decide(request, view)
        if outcome is None:
            return None
        principal = outcome.principal
        if outcome.allowed:
            if outcome.headers:  # a fresh DPoP-Nonce for the response
                _to_response(request, view, outcome.headers)
            return None if principal is None else (ZeroTrustUser(principal), principal)
        if outcome.status == 403 and principal is not None and _checks_permission(request, view):
            return ZeroTrustUser(principal), principal
        raise _refusal(request, outcome, view)

    def authenticate_header(self, request: Any) -> str:
        """DRF hook: the ``WWW-Authenticate`` challenge of a 401 (the Guard's, else ``Bearer``)."""
        state = state_of(getattr(request, "_request", request))
        if state is not None and state.outcome is not None:
            challenge = state.outcome.www_authenticate
            if challenge is not None:
                return challenge
        return f'Bearer realm="{get_config().guard.service}"'


class ZeroTrustPermission(BasePermission):  # type: ignore[misc, unused-ignore]
    """DRF permission: the zerotrust decision (policy and the view's requirement) must allow."""

    def has_permission(self, request: Any, view: Any) -> bool:
        """DRF hook: ``True`` if the zerotrust decision allows; raises :class:`ZeroTrustRefusal`.

        DRF also asks about a copy of the request with another method (the actions its
        ``OPTIONS`` metadata describes): that method is decided on its own, without an audit
        event, so DRF describes only the actions the caller may perform."""
        outcome = decide(request, view)
        if outcome is not None and outcome.allowed:
            outcome = _for_method(request, outcome)
        if outcome is None:
            return True
        if outcome.allowed:
            if outcome.headers:  # a fresh DPoP-Nonce for the response
                _to_response(request, view, outcome.headers)
            return True
        raise _refusal(request, outcome, view)


def _for_method(request: Any, outcome: Outcome) -> Outcome:
    """``outcome`` if it was decided for ``request``'s method, else what the Guard decides for
    that method (:meth:`~zerotrust.Guard.explain`: nothing is consumed or audited)."""
    django_request = getattr(request, "_request", request)
    method = getattr(request, "method", None)
    if not isinstance(method, str) or method == django_request.method:
        return outcome
    state = state_of(django_request)
    requirement = state.requirement if state is not None else None
    view = request_view(django_request, method=method)
    return get_config().guard.explain(view, requirement)


def _refusal(request: Any, outcome: Outcome, view: Any) -> ZeroTrustRefusal:
    """The refusal to raise, rendered as JSON whatever the client accepts: the same body as
    every other adapter, never DRF's browsable HTML page. ``Cache-Control: no-store`` and the
    refusal's headers that DRF's exception handler does not write (``DPoP-Nonce``) go into
    the view's response headers, which DRF adds to whatever response the exception handler
    makes (not for the copy of a request with another method that DRF's ``OPTIONS``
    description asks about: that refusal is caught, and the response is the description)."""
    from rest_framework.renderers import JSONRenderer  # type: ignore[import-untyped, unused-ignore]

    request.accepted_renderer = JSONRenderer()
    request.accepted_media_type = JSONRenderer.media_type
    _to_response(request, view, (("Cache-Control", "no-store"), *outcome.headers))
    return ZeroTrustRefusal(outcome)


def _to_response(request: Any, view: Any, headers: Iterable[tuple[str, str]]) -> None:
    """Put ``headers`` (but those DRF's exception handler writes) in the view's response
    headers, which DRF adds to the response it sends; not for a copy of the request with
    another method (DRF's ``OPTIONS`` description)."""
    response_headers = getattr(view, "headers", None)
    method = getattr(getattr(request, "_request", request), "method", None)
    if isinstance(response_headers, dict) and getattr(request, "method", None) == method:
        for name, value in headers:
            if name.lower() not in _SET_BY_DRF:
                response_headers[name] = value


def _resolve(request: Any) -> Any:
    """The ``ResolverMatch`` of ``request``'s URL, as the middleware resolves a request that
    has none (``None``: no URL pattern matches it)."""
    try:
        return get_resolver(getattr(request, "urlconf", None)).resolve(request.path_info)
    except Resolver404:
        return None


#: Set on a DRF request while its view's permission classes are looked up.
_CHECKING = "_zerotrust_checking_permissions"
#: Refusal headers DRF writes itself (``authenticate_header``, ``wait``).
_SET_BY_DRF = frozenset({"www-authenticate", "retry-after"})


def _checks_permission(request: Any, view: Any) -> bool:
    """Whether ``view`` lists :class:`ZeroTrustPermission`. Its ``get_permissions()`` may read
    ``request.user``, which authenticates again: that nested call refuses (``False``)."""
    if view is None or request.__dict__.get(_CHECKING):
        return False
    request.__dict__[_CHECKING] = True
    try:
        return any(isinstance(p, ZeroTrustPermission) for p in view.get_permissions())
    finally:
        del request.__dict__[_CHECKING]
