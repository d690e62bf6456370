"""Small pieces several adapters need, with no framework imports.

* :func:`route_template` turns a framework's route pattern into the neutral template policies
  are written in: the angle-bracket syntax of werkzeug/Flask and Django's ``path()``
  (``/orders/<int:order_id>``) and simple ``re_path()`` regular expressions
  (``^orders/(?P<order_id>[0-9]+)$``) both become ``/orders/{order_id}``, without a trailing
  slash (:func:`~zerotrust.authz.rules.normalize_route`), so one policy file works across
  frameworks.
* :func:`pem_chain_der` reads client certificates that servers hand over as PEM text.
* :func:`routeless_hazards` names the policy rules that would be weakened if requests were
  evaluated without a route template (plain WSGI middleware sees none).
* :func:`forwarded_headers_to_strip` says which forwarded-certificate headers the application
  must not see after a decision (spoofed copies from untrusted peers).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

from zerotrust.authn._pem import pem_certificates
from zerotrust.authn._trusted import FORWARDED_CERT_HEADERS, TrustedProxies
from zerotrust.authz.policy import Policy
from zerotrust.authz.rules import normalize_route
from zerotrust.errors import MalformedCredentials
from zerotrust.pipeline import Outcome
from zerotrust.x509._certs import MAX_CHAIN_LENGTH

__all__ = [
    "forwarded_headers_to_strip",
    "pem_chain_der",
    "route_template",
    "routeless_hazards",
]

# <name>, <converter:name>, <converter(args):name>; arguments may hold quoted strings.
_PLACEHOLDER = re.compile(
    r"<(?:[A-Za-z_][A-Za-z0-9_]*"  # converter
    r"(?:\((?:[^()\"']|\"[^\"]*\"|'[^']*')*\))?"  # optional (arguments)
    r":)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)>"
)
# A named group whose body holds no further groups: (?P<name>[0-9]+), (?P<slug>[-\w]+)
_NAMED_GROUP = re.compile(r"\(\?P<(?P<name>[A-Za-z_][A-Za-z0-9_]*)>(?:[^()\\]|\\.)+\)")
_REGEX_META = re.compile(r"[.^$*+?{}\[\]()|]")
_ESCAPED_LITERAL = re.compile(r"\\([./\-_~])")
_ACCEPTED_NOTES = frozenset(
    {"forwarded_cert_xfcc", "forwarded_cert_nginx", "forwarded_cert_client-cert"}
)


def _looks_like_regex(route: str) -> bool:
    return route.startswith("^") or route.endswith("$") or "(?P<" in route


def _regex_template(route: str) -> str | None:
    body = route.removeprefix("^")
    body = body.removesuffix("\\Z").removesuffix("$")
    body = _NAMED_GROUP.sub(lambda m: "\x00" + m.group("name") + "\x01", body)
    # a path() prefix joined to a re_path() (or the reverse) by include(): its placeholders
    body = _PLACEHOLDER.sub(lambda m: "\x00" + m.group("name") + "\x01", body)
    plain = _ESCAPED_LITERAL.sub("", body)
    if "\\" in plain or _REGEX_META.search(plain):
        return None  # not a simple pattern: there is no faithful template for it
    body = _ESCAPED_LITERAL.sub(lambda m: m.group(1), body)
    return body.replace("\x00", "{").replace("\x01", "}")


@lru_cache(maxsize=4096)
def route_template(route: str, *, regex: bool = True) -> str | None:
    """The neutral route template for a framework's route pattern; ``None`` if there is none.

    * angle brackets (werkzeug/Flask rules, Django ``path()``): converters and their arguments
      are dropped, ``/orders/<int:order_id>`` and ``/orders/<order_id>`` both become
      ``/orders/{order_id}`` and ``/files/<path:name>`` becomes ``/files/{name}``;
    * a simple regular expression (Django ``re_path()``): anchors are dropped and each named
      group becomes a placeholder, ``^orders/(?P<order_id>[0-9]+)/$`` is
      ``/orders/{order_id}/``. Any other regular expression gives ``None``. With
      ``regex=False`` (werkzeug/Flask rules, which are never regular expressions) the route
      is never read as one: ``/api/cost$`` keeps its ``$``.

    The result always starts with ``/`` and has no trailing slash unless it is ``/``
    (:func:`~zerotrust.authz.rules.normalize_route`: ``/orders/`` is ``/orders``, as in every
    adapter); everything else is kept as written.
    """
    looks_like_regex = regex and _looks_like_regex(route)
    template = _regex_template(route) if looks_like_regex else None
    if template is None:
        if looks_like_regex:
            return None
        template = _PLACEHOLDER.sub(lambda m: "{" + m.group("name") + "}", route)
    return normalize_route(template if template.startswith("/") else "/" + template)


def pem_chain_der(pems: Iterable[str | bytes] | str | bytes, what: str) -> tuple[bytes, ...]:
    """DER certificates (leaf first) from PEM text: one document or several (each may hold
    more than one certificate). Bounded; raises :class:`~zerotrust.errors.MalformedCredentials`.
    """
    items = [pems] if isinstance(pems, (str, bytes)) else list(pems)
    chain: list[bytes] = []
    for item in items[: MAX_CHAIN_LENGTH + 1]:
        text = item
        if isinstance(item, bytes):
            try:
                text = item.decode("ascii")
            except UnicodeDecodeError:
                raise MalformedCredentials(f"{what} is not ASCII PEM text") from None
        if not isinstance(text, str):
            raise MalformedCredentials(f"{what} is not PEM text")
        chain.extend(pem_certificates(text, what))
        if len(chain) > MAX_CHAIN_LENGTH:
            raise MalformedCredentials(f"{what} holds more than {MAX_CHAIN_LENGTH} certificates")
    if not chain:
        raise MalformedCredentials(f"{what} holds no certificate")
    return tuple(chain)


def routeless_hazards(policy: Policy) -> tuple[str, ...]:
    """Ids of the rules and rate limits that a request without a route template would escape.

    Without a route, a rule that lists ``routes`` never matches and one that lists
    ``not_routes`` always matches. That only ever *denies* more for ALLOW rules with
    ``routes`` and DENY rules with ``not_routes``; the hazards are the opposite cases: DENY and
    CUSTOM rules scoped with ``routes`` (they would be skipped), ALLOW rules scoped with
    ``not_routes`` (they would allow everywhere) and rate limits scoped with ``routes`` (they
    would not apply).
    """
    found: list[str] = []
    for rule in policy.rules:
        ops = rule.operations
        skipped = rule.action in ("DENY", "CUSTOM") and any(o.routes for o in ops)
        widened = rule.action == "ALLOW" and any(o.not_routes for o in ops)
        if skipped or widened:
            found.append(rule.id)
    found.extend(
        limit.id for limit in policy.rate_limits if any(o.routes for o in limit.operations)
    )
    return tuple(found)


def forwarded_headers_to_strip(
    outcome: Outcome | None, proxies: TrustedProxies | None
) -> tuple[str, ...]:
    """The forwarded-certificate header names (lower case) to remove before the application runs.

    Everything is stripped unless a trusted proxy's certificate was accepted for this request;
    then only the headers of other formats are (the proxy's own sanitized header stays, whole:
    XFCC elements before the chosen one are unverified, and with ``APPEND_FORWARD`` may be the
    client's own).
    ``outcome`` is ``None`` for an exempt request: nothing was accepted, everything goes.
    """
    names = proxies.header_names if proxies is not None else FORWARDED_CERT_HEADERS
    if (
        outcome is not None
        and proxies is not None
        and any(note in _ACCEPTED_NOTES for note in outcome.notes)
    ):
        return tuple(name for name in names if name not in proxies.format_headers)
    return names
