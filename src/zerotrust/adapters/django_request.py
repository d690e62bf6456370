"""What zerotrust reads of a Django request, and where it records its decision.

* the request view -- Django's WSGI ``request.META`` *is* the WSGI environ, so a WSGI request is
  described by :class:`~zerotrust.adapters.wsgi.WSGIRequestView` (the direct mTLS peer and chain
  zerotrust's gunicorn workers put in the environ, or the conventional ``SSL_CLIENT_CERT`` PEM
  key with ``SSL_CLIENT_CERT_CHAIN_<n>``); an ASGI request by its scope
  (:class:`~zerotrust.adapters._asgi_view.ScopeView`: the ASGI TLS extension's
  ``client_cert_chain``, and the peer verified during the handshake when zerotrust's server
  integration filled it in). Forwarded certificate *headers* are left to the authenticator,
  which believes them only from trusted proxies.
* ``route`` -- the resolver match's route in the neutral template form: ``path("orders/<int:
  order_id>/")`` is ``/orders/{order_id}`` (the trailing slash is dropped, as in every adapter,
  so one policy file serves every framework); a simple ``re_path()`` converts the same way
  (``^orders/(?P<order_id>[0-9]+)/$``), any other regular expression is used as Django reports
  it in ``request.resolver_match.route``. The language prefix of ``i18n_patterns()`` is no
  part of it (``/fr/orders/7/`` is ``/orders/{order_id}``). ``None`` when no URL pattern
  matched.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from django.conf import settings
from django.urls import LocalePrefixPattern
from django.utils.translation import get_language

from zerotrust.adapters._asgi_view import ScopeView
from zerotrust.adapters._common import route_template
from zerotrust.adapters.wsgi import WSGIRequestView
from zerotrust.authn.request import RequestView
from zerotrust.authz.policy import Requirement
from zerotrust.pipeline import Outcome

__all__ = ["STATE_ATTRIBUTE", "RequestState", "request_view", "route_of", "state_of"]

#: Where the decision is kept on the ``HttpRequest`` (private to zerotrust).
STATE_ATTRIBUTE = "_zerotrust"

_templates: dict[str, str] = {}


@dataclass(frozen=True, slots=True)
class RequestState:
    """What zerotrust decided for a request (``outcome`` is ``None`` for an exempt request)."""

    outcome: Outcome | None
    requirement: Requirement | None


def state_of(request: Any) -> RequestState | None:
    """The decision recorded on a Django ``HttpRequest``, if zerotrust made one."""
    state = request.__dict__.get(STATE_ATTRIBUTE)
    return state if isinstance(state, RequestState) else None


def request_view(request: Any, match: Any = None, *, method: str | None = None) -> RequestView:
    """The :class:`~zerotrust.RequestView` of a Django request (WSGI or ASGI), with the route of
    ``match`` (default: ``request.resolver_match``); ``method`` describes the same request made
    with another method (what DRF asks about a request it clones)."""
    route = route_of(match if match is not None else request.resolver_match)
    scope = getattr(request, "scope", None)
    if isinstance(scope, Mapping):
        return ScopeView(scope if method is None else {**scope, "method": method}, route)
    meta = request.META
    return WSGIRequestView(meta if method is None else {**meta, "REQUEST_METHOD": method}, route)


def route_of(match: Any) -> str | None:
    """The neutral route template of a ``ResolverMatch`` (``None`` without one)."""
    if match is None:
        return None
    route = match.route
    if not isinstance(route, str):
        return None
    route = _without_format_suffix(_without_language_prefix(route, match), match)
    template = _templates.get(route)
    if template is None:
        converted = route_template(route)  # without Django's customary trailing slash
        template = route if converted is None else converted
        if len(_templates) < 4096:  # routes are finite; the bound only guards against misuse
            _templates[route] = template
    return template


#: The suffix Django REST framework's ``format_suffix_patterns()`` (and ``DefaultRouter``) puts
#: after a ``re_path()`` route: ``\.(?P<format>[a-z0-9]+)/?$``, or with allowed formats
#: ``\.(?P<format>(?:json|html))/?$``.
_REGEX_FORMAT_SUFFIX: Final = re.compile(
    r"\\\.\(\?P<(?P<kw>[A-Za-z_]\w*)>(?:[^()]|\([^()]*\))*\)/\?\$$"
)
#: The same after a ``path()`` route: ``<drf_format_suffix:format>``, or
#: ``<drf_format_suffix_json_html:format>``.
_PATH_FORMAT_SUFFIX: Final = re.compile(r"<drf_format_suffix(?:_\w+)?:(?P<kw>[A-Za-z_]\w*)>$")


def _without_format_suffix(route: str, match: Any) -> str:
    """``route`` without the format suffix DRF appends to it (``/orders/7.json`` reaches the
    view of ``/orders/7/``: one template, so a rule on ``/orders/{pk}`` covers both). Only a
    suffix whose keyword the match carries is one."""
    kwargs = getattr(match, "kwargs", None) or {}
    for pattern, end in ((_REGEX_FORMAT_SUFFIX, "$"), (_PATH_FORMAT_SUFFIX, "")):
        found = pattern.search(route)
        if found is not None and found.group("kw") in kwargs:
            return route[: found.start()] + end
    return route


def _without_language_prefix(route: str, match: Any) -> str:
    """``route`` without the language prefix ``i18n_patterns()`` puts before it (``fr/``):
    ``/fr/orders/7/`` and ``/orders/7/`` reach the same view, so they have one template, and
    a rule on ``/orders/{order_id}`` covers every language's URL. The prefix is a language of
    ``settings.LANGUAGES`` (the ones ``LocaleMiddleware`` activates): most routes are told
    apart by their first segment alone, without the active language's lookup. Only a match
    made through ``i18n_patterns()`` loses it: a route of its own that starts with a segment
    named like a language (``path("fr/reports/", ...)``) keeps it."""
    head, slash, _ = route.partition("/")
    if not slash or head not in _language_codes():
        return route
    language = get_language()
    if not language or not route.startswith(f"{language}/"):
        return route
    if not _through_language_prefix(match):
        return route
    return route[len(language) + 1 :]


def _through_language_prefix(match: Any) -> bool:
    """Whether ``match`` was resolved through the language prefix of ``i18n_patterns()``: the
    patterns that matched (the last list of ``ResolverMatch.tried``) start with its resolver
    (Django allows ``i18n_patterns()`` in the root URLconf only)."""
    tried = getattr(match, "tried", None)
    if not tried or not tried[-1]:
        return False
    return isinstance(getattr(tried[-1][0], "pattern", None), LocalePrefixPattern)


_languages: tuple[object, frozenset[str]] = (None, frozenset())


def _language_codes() -> frozenset[str]:
    """The codes of ``settings.LANGUAGES``, worked out again when the setting changes."""
    global _languages  # noqa: PLW0603 - one memo of the setting's value
    configured = settings.LANGUAGES
    source, codes = _languages
    if source is not configured:
        codes = frozenset(code.lower() for code, *_ in configured if isinstance(code, str))
        _languages = (configured, codes)
    return codes
