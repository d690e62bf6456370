"""WSGI: the request view every WSGI framework shares, and a plain WSGI middleware.

:class:`WSGIRequestView` describes a WSGI ``environ`` to the :class:`~zerotrust.Guard`. It
reads the client certificate of a direct mTLS connection from the environ keys zerotrust's
gunicorn workers set (:data:`PEER_ENVIRON_KEY`, :data:`CHAIN_ENVIRON_KEY`, see
:mod:`zerotrust.adapters.gunicorn`) or from the conventional ``SSL_CLIENT_CERT`` PEM key (with
``SSL_CLIENT_CERT_CHAIN_<n>``) that servers such as Apache mod_wsgi set.

:class:`ZeroTrustMiddleware` guards any WSGI application. It sees no route template (routing
happens inside the application), so requests are evaluated with ``route=None`` unless a
``route`` function is given; prefer a framework integration (``zerotrust.flask``) that knows
the template. Because route-scoped rules cannot be applied faithfully without a route, the
middleware refuses to start with a policy that a route-less request would partly escape (see
:func:`~zerotrust.adapters._common.routeless_hazards`).
"""

from __future__ import annotations

import http
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Final, Literal

from zerotrust.adapters._common import forwarded_headers_to_strip, pem_chain_der, routeless_hazards
from zerotrust.adapters._context import reset_principal, set_principal
from zerotrust.adapters._status import refusal, wsgi_adding_headers
from zerotrust.authn.principal import Principal
from zerotrust.authn.request import MAX_HEADER_LINES, encode_path
from zerotrust.authz.rules import normalize_route
from zerotrust.errors import ConfigurationError, MalformedCredentials
from zerotrust.pipeline import Guard, Outcome
from zerotrust.x509.verify import VerifiedPeer

__all__ = [
    "CHAIN_ENVIRON_KEY",
    "PEER_ENVIRON_KEY",
    "PRINCIPAL_ENVIRON_KEY",
    "WSGIRequestView",
    "ZeroTrustMiddleware",
    "environ_key",
    "refuse",
    "strip_forwarded_headers",
]

#: Environ key holding the :class:`~zerotrust.VerifiedPeer` of a direct mTLS connection.
PEER_ENVIRON_KEY: Final = "zerotrust.peer"
#: Environ key holding the peer's certificate chain (DER, leaf first) of a direct mTLS connection.
CHAIN_ENVIRON_KEY: Final = "zerotrust.peer_chain"
#: Environ key where the middleware puts the request's :class:`~zerotrust.Principal`.
PRINCIPAL_ENVIRON_KEY: Final = "zerotrust.principal"

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

_SPECIAL: Final = {"content-type": "CONTENT_TYPE", "content-length": "CONTENT_LENGTH"}
_MAX_CHAIN_KEYS: Final = 10
_keys: dict[str, str] = {}
_key_sets: dict[tuple[str, ...] | frozenset[str], tuple[str, ...]] = {}


def environ_key(name: str) -> str:
    """The environ key of HTTP header ``name`` (``x-request-id`` -> ``HTTP_X_REQUEST_ID``)."""
    key = _keys.get(name)
    if key is None:
        lowered = name.lower()
        key = _SPECIAL.get(lowered) or "HTTP_" + lowered.upper().replace("-", "_")
        if len(_keys) < 1024:  # the names zerotrust asks for are few; bound misuse
            _keys[name] = key
    return key


def environ_keys(names: tuple[str, ...] | frozenset[str]) -> tuple[str, ...]:
    """The environ keys of header ``names``; remembered, as zerotrust asks for a few fixed
    sets (the headers a plain Bearer request lacks, the forwarded-certificate headers)."""
    keys = _key_sets.get(names)
    if keys is None:
        keys = tuple(environ_key(name) for name in names)
        if len(_key_sets) < 64:  # one or two sets per configuration; bound misuse
            _key_sets[names] = keys
    return keys


class WSGIRequestView:
    """A :class:`~zerotrust.RequestView` over a WSGI environ.

    ``remote_addr`` is the socket peer: when werkzeug's ``ProxyFix`` rewrote ``REMOTE_ADDR``
    from ``X-Forwarded-For``, the original address is used, so a client cannot make itself look
    like a trusted proxy. A request with more than ``MAX_HEADER_LINES`` headers shows no
    headers and fails authentication as malformed (400).
    """

    __slots__ = ("_chain", "_environ", "_loaded", "_overflow", "_verified", "route")

    kind: Final[Literal["http"]] = "http"

    def __init__(self, environ: Environ, route: str | None = None) -> None:
        self._environ = environ
        self.route = route
        self._loaded = False
        self._chain: tuple[bytes, ...] | None = None
        self._verified: VerifiedPeer | None = None
        self._overflow = (
            len(environ) > MAX_HEADER_LINES
            and sum(1 for key in environ if key.startswith("HTTP_")) > MAX_HEADER_LINES
        )

    @property
    def method(self) -> str:
        """``REQUEST_METHOD`` (``"GET"`` when missing)."""
        return str(self._environ.get("REQUEST_METHOD") or "GET")

    @property
    def path(self) -> str:
        """The request path as sent (percent-encoded), without the query string."""
        environ = self._environ
        raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
        if isinstance(raw, str) and raw.startswith("/"):
            return raw.partition("?")[0]
        decoded = str(environ.get("SCRIPT_NAME", "")) + str(environ.get("PATH_INFO", ""))
        return encode_path(decoded.encode("latin-1", "replace"))

    @property
    def scheme(self) -> str:
        """``wsgi.url_scheme`` (``"http"`` when missing)."""
        return str(self._environ.get("wsgi.url_scheme") or "http")

    @property
    def host(self) -> str | None:
        """The ``Host`` header, else ``SERVER_NAME`` (with ``SERVER_PORT`` unless it is the scheme's
        default); ``None`` without either."""
        environ = self._environ
        host = environ.get("HTTP_HOST")
        if host:
            return str(host)
        name = environ.get("SERVER_NAME")
        if not name:
            return None
        port = str(environ.get("SERVER_PORT") or "")
        default = "443" if self.scheme == "https" else "80"
        return f"{name}:{port}" if port and port != default else str(name)

    @property
    def remote_addr(self) -> str | None:
        """The socket peer's ``REMOTE_ADDR`` (the original one when werkzeug's ``ProxyFix``
        rewrote it, even an empty one: a unix socket's peer has no address), or ``None``."""
        environ = self._environ
        original = environ.get("werkzeug.proxy_fix.orig")
        addr = (
            original.get("REMOTE_ADDR")
            if isinstance(original, dict)
            else environ.get("REMOTE_ADDR")
        )
        return str(addr) if addr else None

    @property
    def peer_chain(self) -> Sequence[bytes] | None:
        """The client's chain (DER, leaf first) from :data:`CHAIN_ENVIRON_KEY`, else from
        ``SSL_CLIENT_CERT`` and ``SSL_CLIENT_CERT_CHAIN_<n>``; ``None`` without one. Malformed PEM
        raises :class:`~zerotrust.errors.MalformedCredentials`."""
        if not self._loaded:
            self._load_peer()
        return self._chain

    @property
    def verified_peer(self) -> VerifiedPeer | None:
        """The :class:`~zerotrust.VerifiedPeer` in :data:`PEER_ENVIRON_KEY` (set by zerotrust's
        gunicorn workers), or ``None``. Raises :class:`~zerotrust.errors.MalformedCredentials`
        for a request with too many header lines or a malformed client certificate."""
        if self._overflow:  # read inside the Guard's flow: the refusal is audited
            raise MalformedCredentials(f"more than {MAX_HEADER_LINES} header lines")
        if not self._loaded:
            self._load_peer()
        return self._verified

    def header(self, name: str) -> list[str]:
        """The environ value of header ``name`` as a one-item list (WSGI servers join repeated
        headers), or ``[]``; always ``[]`` when the request has too many header lines."""
        if self._overflow:
            return []
        value = self._environ.get(environ_key(name))
        return [] if value is None else [str(value)]

    def bearer_alone(self, absent: frozenset[str]) -> str | None:
        """The token of an ``Authorization: Bearer`` header when none of the headers
        ``absent`` is present; ``None`` otherwise."""
        environ = self._environ
        value = environ.get("HTTP_AUTHORIZATION")
        if self._overflow or not isinstance(value, str) or value[:7] != "Bearer ":
            return None
        for key in environ_keys(absent):
            if key in environ:
                return None
        return value[7:]

    def _load_peer(self) -> None:
        self._loaded = True  # a malformed chain raises once, inside the Guard's flow
        environ = self._environ
        verified = environ.get(PEER_ENVIRON_KEY)
        if isinstance(verified, VerifiedPeer):
            self._verified = verified
        chain = environ.get(CHAIN_ENVIRON_KEY)
        if chain:
            self._chain = tuple(chain)
            return
        pem = environ.get("SSL_CLIENT_CERT")
        if pem:
            pems = [pem]
            for index in range(_MAX_CHAIN_KEYS):
                extra = environ.get(f"SSL_CLIENT_CERT_CHAIN_{index}")
                if not extra:
                    break
                pems.append(extra)
            self._chain = pem_chain_der(pems, "SSL_CLIENT_CERT")


def strip_forwarded_headers(environ: Environ, outcome: Outcome | None, guard: Guard) -> None:
    """Remove forwarded-certificate headers the application must not believe (all of them for
    an exempt request, ``outcome=None``)."""
    proxies = guard.authenticator.trusted_proxies
    for key in environ_keys(forwarded_headers_to_strip(outcome, proxies)):
        environ.pop(key, None)


def refuse(outcome: Outcome, start_response: StartResponse) -> list[bytes]:
    """Answer a refused request with the shared refusal table."""
    status, headers, body = refusal(outcome)
    start_response(f"{status} {http.HTTPStatus(status).phrase}", headers)
    return [body]


class _PrincipalBody:
    """Keeps the principal context variable set while a streamed body is produced."""

    __slots__ = ("_iterator", "_principal", "_result")

    def __init__(self, result: Iterable[bytes], principal: Principal) -> None:
        self._result = result
        self._principal = principal
        self._iterator: Iterator[bytes] | None = None

    def __iter__(self) -> _PrincipalBody:
        return self

    def __next__(self) -> bytes:
        token = set_principal(self._principal)
        try:
            if self._iterator is None:
                self._iterator = iter(self._result)
            return next(self._iterator)
        finally:
            reset_principal(token)

    def close(self) -> None:
        close = getattr(self._result, "close", None)
        if close is not None:
            token = set_principal(self._principal)
            try:
                close()
            finally:
                reset_principal(token)


class ZeroTrustMiddleware:
    """Authenticate, authorize and audit every request before a WSGI application sees it.

    * ``guard`` -- the :class:`~zerotrust.Guard` deciding each request;
    * ``exempt`` -- exact ``PATH_INFO`` values served without any check or audit event
      (health probes); the principal is then ``None``;
    * ``route`` -- optional ``route(environ) -> template | None`` for applications that can
      name the route template before dispatch. Without it requests carry no route, only
      route-less rules can match, and a policy with rules a route-less request would escape
      is refused with :class:`~zerotrust.errors.ConfigurationError`.

    Allowed requests reach the application with the principal in
    ``environ["zerotrust.principal"]`` and in :func:`zerotrust.current_principal` (also while a
    streamed body is produced); refusals get the status, headers and JSON body every zerotrust
    adapter uses. Forwarded-certificate headers not sent by a trusted proxy are removed.
    """

    __slots__ = ("_exempt", "_route", "app", "guard")

    def __init__(
        self,
        app: WSGIApp,
        *,
        guard: Guard,
        exempt: Iterable[str] = (),
        route: Callable[[Environ], str | None] | None = None,
    ) -> None:
        if not isinstance(guard, Guard):
            raise ConfigurationError("ZeroTrustMiddleware needs guard=Guard(...)")
        if isinstance(exempt, str):
            raise ConfigurationError("exempt must be a list of paths, not one string")
        paths = frozenset(exempt)
        bad = sorted(p for p in paths if not isinstance(p, str) or not p.startswith("/"))
        if bad:
            raise ConfigurationError(f"exempt paths must start with '/': {bad!r}")
        if route is None:
            hazards = routeless_hazards(guard.policy)
            if hazards:
                raise ConfigurationError(
                    "plain WSGI middleware sees no route template, so these route-scoped rules"
                    f" could not be applied faithfully: {', '.join(hazards)}; use the framework"
                    " integration (zerotrust.flask) or pass route=..."
                )
        self.app = app
        self.guard = guard
        self._exempt = paths
        self._route = route

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "") in self._exempt:
            strip_forwarded_headers(environ, None, self.guard)  # nothing accepted: none reach it
            environ[PRINCIPAL_ENVIRON_KEY] = None
            return self.app(environ, start_response)
        route = self._route(environ) if self._route is not None else None
        if route is not None:
            route = normalize_route(route)
        outcome = self.guard.evaluate(WSGIRequestView(environ, route))
        if not outcome.allowed:
            return refuse(outcome, start_response)
        strip_forwarded_headers(environ, outcome, self.guard)
        if outcome.headers:  # a fresh DPoP-Nonce for the response
            start_response = wsgi_adding_headers(start_response, outcome.headers)
        principal = outcome.principal
        environ[PRINCIPAL_ENVIRON_KEY] = principal
        token = set_principal(principal)
        try:
            result = self.app(environ, start_response)
        finally:
            reset_principal(token)
        if principal is None or isinstance(result, (list, tuple)):
            return result
        file_wrapper = environ.get("wsgi.file_wrapper")
        if isinstance(file_wrapper, type) and isinstance(result, file_wrapper):
            return result  # keep the server's sendfile path
        return _PrincipalBody(result, principal)
