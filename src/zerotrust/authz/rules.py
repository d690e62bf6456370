"""Rule building blocks, with Istio AuthorizationPolicy semantics.

A rule matches when **all** of its parts match: one of its ``callers`` entries (``from``), one
of its ``operations`` entries (``to``), and every ``when`` condition. Inside an entry every
given field must match, a field matches when any of its values does, and ``not_*`` fields
match when none of their values does. Patterns are exact, ``prefix*``, ``*suffix`` or ``*``
(any value but the empty string, as in Istio).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, get_args

from zerotrust._scopes import check_scope_tokens
from zerotrust.authn.principal import Principal, ProvenBy
from zerotrust.errors import ConfigurationError, InvalidSpiffeId
from zerotrust.identity import SpiffeId, TrustDomain

__all__ = [
    "Action",
    "Callers",
    "Condition",
    "Operation",
    "Operations",
    "Pattern",
    "Rule",
    "ScopeRule",
]

Action = Literal["ALLOW", "DENY", "CUSTOM"]
_MAX_HOOK_TIMEOUT = 300.0
_KINDS = frozenset({"http", "grpc", "websocket"})


class Pattern:
    """``exact``, ``prefix*``, ``*suffix`` or ``*`` (Istio string match): ``*`` alone is
    Istio's presence match, any value but the empty string."""

    __slots__ = ("_kind", "_text", "text")

    def __init__(self, text: str) -> None:
        if not isinstance(text, str) or not text:
            raise ConfigurationError(f"invalid pattern {text!r}: must be a non-empty string")
        stars = text.count("*")
        if text == "*":
            kind, core = "any", ""
        elif stars == 0:
            kind, core = "exact", text
        elif stars == 1 and text.endswith("*"):
            kind, core = "prefix", text[:-1]
        elif stars == 1 and text.startswith("*"):
            kind, core = "suffix", text[1:]
        else:
            raise ConfigurationError(
                f"invalid pattern {text!r}: '*' may only be the whole pattern,"
                " its first or its last character"
            )
        self.text = text
        self._kind = kind
        self._text = core

    def __call__(self, value: str | None) -> bool:
        if value is None:
            return False
        kind = self._kind
        if kind == "exact":
            return value == self._text
        if kind == "prefix":
            return value.startswith(self._text)
        if kind == "suffix":
            return value.endswith(self._text)
        return value != ""  # presence: an empty claim or subject is no value

    def __repr__(self) -> str:
        return f"Pattern({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pattern) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)


def _patterns(values: Iterable[str] | str, what: str) -> tuple[Pattern, ...]:
    if isinstance(values, str):
        raise ConfigurationError(f"{what} must be a list of strings, not a single string")
    if isinstance(values, Mapping):  # iterating one would read its keys as the patterns
        raise ConfigurationError(f"{what} must be a list of strings, not a mapping")
    return tuple(Pattern(v) for v in values)


# --- patterns that could never match: a DENY rule holding one would deny nothing ---------------

_TD_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-_")
_ID_CHARS: Final = _TD_CHARS | frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ/")
#: An HTTP method is a token (RFC 9110 §9.1), compared in upper case.
_METHOD: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Z-]+")
_PROVEN_BY: Final = frozenset(get_args(ProvenBy))


def _never(what: str, pattern: Pattern, why: str) -> ConfigurationError:
    return ConfigurationError(f"{what}: {pattern.text!r} can never match: {why}")


def _check_trust_domains(patterns: tuple[Pattern, ...], what: str) -> None:
    for pattern in patterns:
        core = pattern._text
        if pattern.text.startswith("spiffe://"):
            raise _never(what, pattern, f"trust domains are names: {core[9:].rstrip('/')!r}")
        if not set(core) <= _TD_CHARS:
            raise _never(what, pattern, "a trust domain name is lower-case letters, digits, '.',"
                         " '-' and '_'")  # fmt: skip
        if pattern._kind == "exact":
            try:
                TrustDomain.parse(core)
            except InvalidSpiffeId as exc:
                raise _never(what, pattern, exc.detail) from None
        elif pattern._kind == "prefix" and not core.endswith("."):
            raise _crossing(what, pattern, f"{core}.evil.example", f"end it at a '.': '{core}.*'")
        elif pattern._kind == "suffix" and not core.startswith("."):
            raise _crossing(what, pattern, f"evil{core}", f"start it at a '.': '*.{core}'")


def _crossing(what: str, pattern: Pattern, other: str, advice: str) -> ConfigurationError:
    """A pattern whose ``*`` (any text) may cross the boundary of the name it means."""
    return ConfigurationError(
        f"{what}: {pattern.text!r} would also match {other!r}, another owner's name: {advice}"
    )


def _check_spiffe_ids(patterns: tuple[Pattern, ...], what: str) -> None:
    for pattern in patterns:
        kind, core = pattern._kind, pattern._text
        if kind == "exact":
            try:
                SpiffeId.parse(core)
            except InvalidSpiffeId as exc:
                raise _never(what, pattern, exc.detail) from None
        elif kind == "prefix" and core != "spiffe://":  # spiffe://* is every SPIFFE ID
            domain, slash, path = core.removeprefix("spiffe://").partition("/")
            if not core.startswith("spiffe://") or not slash:
                raise _never(what, pattern, "a prefix must name a trust domain and a '/'"
                             " (spiffe://example.org/*); raw text would also match"
                             " spiffe://example.org.evil.example/...")  # fmt: skip
            try:
                TrustDomain.parse(domain)
            except InvalidSpiffeId as exc:
                raise _never(what, pattern, exc.detail) from None
            if not set(path) <= _ID_CHARS:
                raise _never(what, pattern, "a SPIFFE ID path is letters, digits, '.', '-', '_'")
            if not _whole_segments(path.split("/")[:-1]):  # the last one may go on
                raise _never(what, pattern, _SEGMENTS)
        elif kind == "suffix":
            if not set(core) <= _ID_CHARS:
                raise _never(what, pattern, "a SPIFFE ID ends in letters, digits, '.', '-', '_'")
            if core.startswith("//"):  # the scheme's: the rest of the ID follows
                try:
                    SpiffeId.parse(f"spiffe:{core}")
                except InvalidSpiffeId as exc:
                    raise _never(what, pattern, exc.detail) from None
            elif not _whole_segments(core.split("/")[1:]):  # the first one may start earlier
                raise _never(what, pattern, _SEGMENTS)
            if "/" in core and not core.startswith("/"):
                # its first part may end the trust domain's name as well as a path segment
                path = core.partition("/")[2]
                raise _crossing(
                    what,
                    pattern,
                    f"spiffe://evil{core}",
                    f"start it at a '/' ('*/{path}') or name the whole ID ('*//{core}')",
                )


_SEGMENTS: Final = "a SPIFFE ID path has no empty, '.' or '..' segment and does not end in '/'"


def _whole_segments(segments: list[str]) -> bool:
    """Whether every one of ``segments`` could be a whole segment of a SPIFFE ID path."""
    return not any(segment in ("", ".", "..") for segment in segments)


def _check_methods(patterns: tuple[Pattern, ...], what: str) -> None:
    for pattern in patterns:
        if not _METHOD.fullmatch(pattern.text):
            raise _never(what, pattern, "an HTTP method is a token (RFC 9110 §9.1)")


def _check_proven_by(patterns: tuple[Pattern, ...], what: str) -> None:
    for pattern in patterns:
        if not any(pattern(value) for value in _PROVEN_BY):
            raise _never(what, pattern, f"proven_by is one of {', '.join(sorted(_PROVEN_BY))}")


def _any(patterns: tuple[Pattern, ...], value: str | None) -> bool:
    for pattern in patterns:  # noqa: SIM110 - a plain loop is cheaper on every request
        if pattern(value):
            return True
    return False


def normalize_route(route: str) -> str:
    """``route`` without its trailing slash (``/orders/`` is ``/orders``); ``/`` stays ``/``.

    Frameworks disagree on trailing slashes (Django routes conventionally end with one, Flask
    and FastAPI routes as their authors wrote them), so the adapters give route templates in
    this form, and :class:`Operations` compares routes and ``routes`` patterns without it.
    """
    stripped = route.rstrip("/")
    return stripped or route[:1]


def _compared_route(route: str) -> str:
    """The form routes and ``routes`` patterns are compared in: one trailing slash, always
    (``/orders`` and ``/orders/`` are both ``/orders/``), so a prefix pattern ``/orders/*``
    also covers the route ``/orders``."""
    return route.rstrip("/") + "/"


_ROUTE_KEYS: dict[str, str] = {}  # route -> its compared form; routes are few, bounded anyway


def _route_key(route: str | None) -> str | None:
    if route is None:
        return None
    key = _ROUTE_KEYS.get(route)
    if key is None:
        key = _compared_route(route)
        if len(_ROUTE_KEYS) >= 4096:
            _ROUTE_KEYS.clear()
        _ROUTE_KEYS[route] = key
    return key


def _verbatim_regex(route: str) -> bool:
    """Whether ``route`` could be a Django ``re_path()`` expression the adapter keeps as
    written for want of a template form (``^files/(a|b)/$``): every other template starts with
    ``/``."""
    text = route.rstrip("/")
    return text.startswith("^") or text.endswith("$") or "(?P<" in text


#: A parameter written with its converter, as a framework's route is (Flask and Django
#: ``<int:order_id>``, ``<order_id>``; Starlette ``{order_id:int}``): route templates never hold
#: one, the adapters write ``{order_id}``.
_CONVERTER: Final = re.compile(
    r"<(?:[A-Za-z_]\w*(?:\([^()]*\))?:)?(?P<a>[A-Za-z_]\w*)>|\{(?P<b>[A-Za-z_]\w*):[A-Za-z_]\w*\}"
)


def _route_pattern(pattern: Pattern, what: str) -> Pattern:
    """``pattern`` as it applies to routes in their compared form (:func:`_compared_route`)."""
    kind, core = pattern._kind, pattern._text
    if kind == "exact" and not core.startswith("/") and not _verbatim_regex(core):
        raise _never(what, pattern, "a route template starts with '/' (/orders/{order_id});"
                     " only a Django regular expression kept as written does not")  # fmt: skip
    if _CONVERTER.search(core) and not _verbatim_regex(core):
        neutral = _CONVERTER.sub(lambda m: f"{{{m.group('a') or m.group('b')}}}", pattern.text)
        raise _never(what, pattern, "route templates name parameters without converters"
                     f" ({neutral!r})")  # fmt: skip
    if kind == "exact":
        return Pattern(_compared_route(core))
    if kind == "suffix":
        if not core.strip("/"):  # "*/": every route ends in "/" as routes are compared
            raise ConfigurationError(
                f"routes: {pattern.text!r} would match every route (routes compare without"
                " regard to a trailing slash): write '*' if that is meant"
            )
        return Pattern("*" + _compared_route(core))
    return pattern  # a prefix applies as written; "*" matches every route


@dataclass(frozen=True, slots=True)
class Operation:
    """What is being called: the neutral description of a request for policy matching."""

    method: str
    route: str | None
    kind: str = "http"
    path: str = ""


_CALLER_FIELDS = (
    "spiffe_ids",
    "not_spiffe_ids",
    "trust_domains",
    "not_trust_domains",
    "issuers",
    "not_issuers",
    "subjects",
    "not_subjects",
    "proven_by",
    "not_proven_by",
)


def _spiffe_value(p: Principal) -> str | None:
    return str(p.spiffe_id) if p.spiffe_id is not None else None


def _domain_value(p: Principal) -> str | None:
    return p.spiffe_id.trust_domain.name if p.spiffe_id is not None else None


_CALLER_VALUES: tuple[Callable[[Principal], str | None], ...] = (
    _spiffe_value,
    _domain_value,
    lambda p: p.issuer,
    lambda p: p.subject,
    lambda p: p.proven_by,
)


_CALLER_CHECKS: Final[dict[str, Callable[[tuple[Pattern, ...], str], None]]] = {
    "spiffe_ids": _check_spiffe_ids,
    "trust_domains": _check_trust_domains,
    "proven_by": _check_proven_by,
}


@dataclass(frozen=True)
class Callers:
    """Who may match (Istio ``source``). Empty fields match anything."""

    spiffe_ids: Sequence[str] = ()
    not_spiffe_ids: Sequence[str] = ()
    trust_domains: Sequence[str] = ()
    not_trust_domains: Sequence[str] = ()
    issuers: Sequence[str] = ()
    not_issuers: Sequence[str] = ()
    subjects: Sequence[str] = ()
    not_subjects: Sequence[str] = ()
    proven_by: Sequence[str] = ()
    not_proven_by: Sequence[str] = ()
    #: Match requests that carry no credentials at all (health checks, public routes).
    anonymous: bool = False
    _checks: tuple[
        tuple[tuple[Pattern, ...], tuple[Pattern, ...], Callable[[Principal], str | None]], ...
    ] = field(init=False, repr=False, compare=False)
    _positive: bool = field(init=False, repr=False, compare=False, default=False)

    def __post_init__(self) -> None:
        if not isinstance(self.anonymous, bool):  # "false" from a file must never read as true
            raise ConfigurationError("callers: anonymous must be true or false")
        names = _CALLER_FIELDS
        compiled = tuple(_patterns(getattr(self, n), n) for n in names)
        for name, patterns in zip(names, compiled, strict=True):
            check = _CALLER_CHECKS.get(name.removeprefix("not_"))
            if check is not None:
                check(patterns, f"callers.{name}")
        if self.anonymous and any(compiled):
            raise ConfigurationError("callers with anonymous=true cannot also constrain identities")
        object.__setattr__(self, "_positive", any(compiled[0::2]))
        # only the fields that constrain anything are checked per request
        pairs = zip(compiled[0::2], compiled[1::2], _CALLER_VALUES, strict=True)
        object.__setattr__(self, "_checks", tuple(c for c in pairs if c[0] or c[1]))

    def matches(self, principal: Principal | None, *, deny: bool = False) -> bool:
        """Whether ``principal`` is one of these callers. A request without credentials has
        no identity: it satisfies every ``not_*`` field and no positive one. A DENY entry
        without positive fields therefore covers it (Istio: ``notRequestPrincipals: ["*"]``
        denies unauthenticated requests); an ALLOW or CUSTOM entry only with
        ``anonymous=True``, so that nothing admits anonymous callers by omission."""
        if principal is None:
            return self.anonymous or (deny and not self._positive)
        if self.anonymous:
            return False
        for positive, negative, get in self._checks:
            value = get(principal)
            if positive and not _any(positive, value):
                return False
            if negative and _any(negative, value):
                return False
        return True


@dataclass(frozen=True)
class Operations:
    """What may match (Istio ``operation``): methods and route templates / gRPC methods."""

    methods: Sequence[str] = ()
    not_methods: Sequence[str] = ()
    routes: Sequence[str] = ()
    not_routes: Sequence[str] = ()
    kinds: Sequence[str] = ()
    _compiled: tuple[tuple[Pattern, ...], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("methods", "not_methods"):
            object.__setattr__(
                self, name, tuple(m.upper() for m in _strings(getattr(self, name), name))
            )
        kinds = tuple(k.lower() for k in _strings(self.kinds, "kinds"))
        unknown = [k for k in kinds if k not in _KINDS]
        if unknown:  # a DENY rule with a misspelt kind would never match anything
            raise ConfigurationError(
                f"unknown request kinds {unknown}: use {', '.join(sorted(_KINDS))}"
            )
        object.__setattr__(self, "kinds", kinds)
        compiled = tuple(
            _patterns(getattr(self, n), n)
            for n in ("methods", "not_methods", "routes", "not_routes", "kinds")
        )
        # routes compare without regard to a trailing slash (see normalize_route)
        compiled = (
            *compiled[:2],
            tuple(_route_pattern(p, "operations.routes") for p in compiled[2]),
            tuple(_route_pattern(p, "operations.not_routes") for p in compiled[3]),
            compiled[4],
        )
        _check_methods(compiled[0], "operations.methods")
        _check_methods(compiled[1], "operations.not_methods")
        object.__setattr__(self, "_compiled", compiled)

    def matches(self, op: Operation) -> bool:
        """Whether ``op`` matches every given field. Methods compare in upper case (kinds in
        lower case), and what a field says of ``GET`` it says of ``HEAD``; routes compare
        without regard to a trailing slash (``/orders/`` is ``/orders``, and ``/orders/*``
        covers it); a request without a route template matches no ``routes`` pattern."""
        methods, not_methods, routes, not_routes, kinds = self._compiled
        method = op.method.upper()
        # Frameworks answer HEAD with the GET handler (RFC 9110 9.3.2: GET without content),
        # so what a rule says of GET it says of HEAD: a DENY of GET cannot be sidestepped
        head = method == "HEAD"
        if methods and not (_any(methods, method) or (head and _any(methods, "GET"))):
            return False
        if not_methods and (_any(not_methods, method) or (head and _any(not_methods, "GET"))):
            return False
        if routes and not _any(routes, _route_key(op.route)):
            return False
        if not_routes and _any(not_routes, _route_key(op.route)):
            return False
        return not (kinds and not _any(kinds, op.kind.lower()))


_CONDITION_KEYS = (
    "spiffe_id",
    "trust_domain",
    "subject",
    "issuer",
    "client_id",
    "actor",
    "proven_by",
)
#: Conditions on these keys are checked as the Callers fields on the same attributes are.
_CONDITION_CHECKS: Final[dict[str, Callable[[tuple[Pattern, ...], str], None]]] = {
    "spiffe_id": _check_spiffe_ids,
    "trust_domain": _check_trust_domains,
    "proven_by": _check_proven_by,
}


def _strings(values: Any, what: str) -> tuple[str, ...]:
    if isinstance(values, (str, Mapping)) or not isinstance(values, Iterable):
        raise ConfigurationError(f"{what} must be a list of strings")
    out = tuple(values)
    if not all(isinstance(v, str) for v in out):
        raise ConfigurationError(f"{what} must be a list of strings")
    return out


@dataclass(frozen=True)
class Condition:
    """``key`` is one of the principal's fields or ``claims.<name>[.<nested>]``.

    A claim that is a list matches when any element matches (an object, a list or null in
    it is no value); so does the space-delimited string of a ``scope`` or ``scp`` claim, one
    scope at a time (RFC 8693 section 4.2, as Istio reads ``scope``). A missing value never
    matches ``values`` (and so always satisfies ``not_values``).
    """

    key: str
    values: Sequence[str] = ()
    not_values: Sequence[str] = ()
    _get: Callable[[Principal], Any] = field(init=False, repr=False, compare=False)
    _pos: tuple[Pattern, ...] = field(init=False, repr=False, compare=False)
    _neg: tuple[Pattern, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.values and not self.not_values:
            raise ConfigurationError(f"condition on {self.key!r} needs values or not_values")
        object.__setattr__(self, "_get", _getter(self.key))
        object.__setattr__(self, "_pos", _patterns(self.values, f"condition {self.key!r} values"))
        object.__setattr__(
            self, "_neg", _patterns(self.not_values, f"condition {self.key!r} not_values")
        )
        # the checks of the same attributes in Callers: a pattern that can never match would
        # leave a DENY rule denying nothing (or an ALLOW admitting look-alikes)
        check = _CONDITION_CHECKS.get(self.key)
        if check is not None:
            check(self._pos, f"condition {self.key!r} values")
            check(self._neg, f"condition {self.key!r} not_values")

    def matches(self, principal: Principal | None, *, deny: bool = False) -> bool:
        """Whether the condition holds. A request without credentials has no values: in a
        DENY rule it satisfies ``not_values`` (and never ``values``); in ALLOW and CUSTOM
        rules no condition holds for it, so that nothing admits it by omission."""
        if principal is None and not deny:
            return False
        raw = self._get(principal) if principal is not None else None
        if raw is None:
            values: list[str] = []
        elif isinstance(raw, (list, tuple)):  # an object, a list or null in one is no value
            values = [_text(v) for v in raw if isinstance(v, (str, int, float))]
        else:
            values = [_text(raw)]
        if self._pos and not any(_any(self._pos, v) for v in values):
            return False
        return not (self._neg and any(_any(self._neg, v) for v in values))


def _text(value: object) -> str:
    """A claim value as conditions compare it (JSON's spelling of booleans, alone or in lists)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


#: Claims whose string is a space-delimited list of scopes (RFC 8693 section 4.2; ``scp`` as
#: tokens read it for ``Principal.scopes``): conditions compare each scope, as Istio does.
_SPACE_DELIMITED: Final = frozenset({("scope",), ("scp",)})

#: ``claims[name]`` segments (Istio's form, for names with dots: ``claims[https://x.io/roles]``).
_BRACKETED: Final = re.compile(r"\[([^\[\]]+)\]")


def _claim_path(key: str) -> tuple[str, ...] | None:
    """The claim names of a ``claims.<name>[.<nested>]`` or ``claims[<name>][<nested>]`` key;
    ``None`` for another key. A dotted key whose names look like a URL (a claim named
    ``https://example.com/roles`` would be read as nested names, and never match) is refused:
    such names are written in brackets."""
    if key.startswith("claims[") and key.endswith("]"):
        rest = key[6:]
        parts = _BRACKETED.findall(rest)
        if parts and "".join(f"[{part}]" for part in parts) == rest:
            return tuple(parts)
        raise ConfigurationError(
            f"condition key {key!r}: write claim names in brackets, claims[<name>][<nested>]"
        )
    if not key.startswith("claims.") or len(key) <= 7:
        return None
    parts = key[7:].split(".")
    if "" in parts:
        return None
    if "://" in key or "/" in key:
        raise ConfigurationError(
            f"condition key {key!r}: a claim name with dots or slashes is written in brackets,"
            " claims[https://example.com/roles]"
        )
    return tuple(parts)


def _getter(key: str) -> Callable[[Principal], Any]:
    if not isinstance(key, str):
        raise ConfigurationError(f"a condition key must be a string, not {type(key).__name__}")
    if key == "trust_domain":
        return lambda p: p.spiffe_id.trust_domain.name if p.spiffe_id is not None else None
    if key == "spiffe_id":
        return lambda p: str(p.spiffe_id) if p.spiffe_id is not None else None
    if key in _CONDITION_KEYS:
        return lambda p: getattr(p, key)
    path = _claim_path(key)
    if path is not None:
        split = path in _SPACE_DELIMITED

        def get(p: Principal) -> Any:
            node: Any = p.claims
            for part in path:
                if not isinstance(node, Mapping) or part not in node:
                    return None
                node = node[part]
            if isinstance(node, str) and split:  # "read admin" holds "admin"
                return [scope for scope in node.split(" ") if scope]
            return node if isinstance(node, (str, int, float, bool, list, tuple)) else None

        return get
    raise ConfigurationError(
        f"unknown condition key {key!r}: use one of {', '.join(_CONDITION_KEYS)},"
        " claims.<name> or claims[<name>]"
    )


@dataclass(frozen=True)
class ScopeRule:
    """Scopes a rule requires: ``all`` of them, and at least one of ``any`` (when given)."""

    all: Sequence[str] = ()
    any: Sequence[str] = ()

    def __post_init__(self) -> None:
        scopes, any_scopes = _strings(self.all, "scopes"), _strings(self.any, "any_scopes")
        # what a token's scope claim can hold, and an RFC 6750 challenge can name unescaped
        check_scope_tokens((*scopes, *any_scopes), "required scope")
        object.__setattr__(self, "all", scopes)
        object.__setattr__(self, "any", any_scopes)

    def missing(self, granted: frozenset[str]) -> tuple[str, ...]:
        """Scopes still needed (empty when satisfied)."""
        need = tuple(s for s in self.all if s not in granted)
        if self.any and granted.isdisjoint(self.any):
            need += tuple(self.any)
        return need

    def __bool__(self) -> bool:
        return bool(self.all or self.any)


@dataclass(frozen=True)
class Rule:
    """One rule of a policy; see the module documentation for matching semantics."""

    id: str
    action: Action = "ALLOW"
    callers: Sequence[Callers] = ()
    operations: Sequence[Operations] = ()
    when: Sequence[Condition] = ()
    scopes: ScopeRule | None = None
    dry_run: bool = False
    #: For CUSTOM rules: called with the principal and operation, returns allow (True) or deny.
    hook: Callable[..., Any] | None = None
    hook_timeout: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ConfigurationError("every rule needs a non-empty string id")
        if self.action not in ("ALLOW", "DENY", "CUSTOM"):
            raise ConfigurationError(f"rule {self.id!r}: action must be ALLOW, DENY or CUSTOM")
        if (self.action == "CUSTOM") != (self.hook is not None):
            raise ConfigurationError(
                f"rule {self.id!r}: a hook is required for CUSTOM rules and only for them"
            )
        if self.scopes and self.action != "ALLOW":
            raise ConfigurationError(f"rule {self.id!r}: scopes apply to ALLOW rules only")
        if not isinstance(self.dry_run, bool):  # "false" from a file must never read as true
            raise ConfigurationError(f"rule {self.id!r}: dry_run must be true or false")
        if self.hook is not None and not callable(self.hook):
            raise ConfigurationError(f"rule {self.id!r}: hook must be callable")
        if self.scopes is not None and not isinstance(self.scopes, ScopeRule):
            raise ConfigurationError(f"rule {self.id!r}: scopes must be a ScopeRule")
        timeout = self.hook_timeout
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not 0 < timeout <= _MAX_HOOK_TIMEOUT
        ):
            raise ConfigurationError(
                f"rule {self.id!r}: hook_timeout must be a number of seconds in"
                f" (0, {_MAX_HOOK_TIMEOUT:g}]"
            )
        for name, kind in (("callers", Callers), ("operations", Operations), ("when", Condition)):
            values = getattr(self, name)
            if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Iterable):
                raise ConfigurationError(f"rule {self.id!r}: {name} must be a list")
            items = tuple(values)
            if not all(isinstance(item, kind) for item in items):
                raise ConfigurationError(
                    f"rule {self.id!r}: {name} must hold {kind.__name__} objects"
                )
            object.__setattr__(self, name, items)
        if self.action == "ALLOW":
            # Istio refuses an empty source or operation; here one would admit more than the
            # rule's other entries (an emptied `spiffe_ids = []` would read as "any caller")
            if any(not c.anonymous and not c._checks for c in self.callers):
                raise ConfigurationError(
                    f"rule {self.id!r}: a callers entry that names nothing would admit every"
                    " authenticated caller: leave callers out to say that"
                )
            if any(not any(o._compiled) for o in self.operations):
                raise ConfigurationError(
                    f"rule {self.id!r}: an operations entry that names nothing would match every"
                    " operation: leave operations out to say that"
                )

    def matches(self, principal: Principal | None, op: Operation) -> bool:
        """Whether callers, operations and conditions match (scopes are checked separately)."""
        # plain loops rather than any()/all() over generators: this runs on every request
        deny = self.action == "DENY"
        if self.callers:
            for callers in self.callers:
                if callers.matches(principal, deny=deny):
                    break
            else:
                return False
        elif principal is None and not deny:
            return False  # ALLOW/CUSTOM rules without callers match authenticated callers only
        if self.operations:
            for operations in self.operations:
                if operations.matches(op):
                    break
            else:
                return False
        for condition in self.when:  # noqa: SIM110 - no generator per request
            if not condition.matches(principal, deny=deny):
                return False
        return True
