"""What the core may read of a request: the neutral view every adapter builds.

Adapters (ASGI, WSGI, Django, gRPC, or your own) describe each incoming request or RPC as a
:class:`RequestView`. :class:`Request` is a plain implementation for tests and custom
integrations.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal, Protocol, runtime_checkable
from urllib.parse import quote

if TYPE_CHECKING:
    from zerotrust.x509.verify import VerifiedPeer

__all__ = ["Kind", "Request", "RequestView", "encode_path", "normalize_headers"]

Kind = Literal["http", "grpc", "websocket"]

#: Requests with more header lines than this are refused before any parsing.
MAX_HEADER_LINES = 256

#: What a rebuilt path leaves unescaped: RFC 3986 ``pchar`` and ``/``.
_PATH_SAFE: Final = "/!$&'()*+,;=:@-._~"


def encode_path(decoded: bytes) -> str:
    """A request path rebuilt from the bytes a server decoded it to (when it does not keep the
    path as sent), percent-encoded again: a decoded ``?``, ``#`` or ``%`` is data, never read
    as a delimiter or an escape. A decoded ``/`` cannot be told from a separator and stays one
    (where the server keeps the path as sent, the adapters read that instead)."""
    return quote(decoded, safe=_PATH_SAFE) or "/"


@runtime_checkable
class RequestView(Protocol):
    """The read-only view of a request that authentication and policy work on.

    ``route`` is the framework's route *template* (``/orders/{order_id}``) or the gRPC full
    method (``/pkg.Service/Method``); policies match on it, never on the raw path alone.
    ``peer_chain`` is the certificate chain the immediate peer presented over mTLS (DER, leaf
    first) and ``verified_peer`` the result when the TLS layer already verified it (zerotrust's
    own SSL contexts do). ``remote_addr`` is the immediate peer's IP address, used to decide
    whether forwarded client-certificate headers come from a trusted proxy.
    """

    @property
    def kind(self) -> Kind:
        """What the request is: ``"http"``, ``"grpc"`` or ``"websocket"`` (rules may match it)."""
        ...

    @property
    def method(self) -> str:
        """The HTTP method as sent (``"GET"``; rules compare it in upper case); gRPC gives
        ``"POST"``."""
        ...

    @property
    def route(self) -> str | None:
        """The route template that matched (``/orders/{order_id}``) or the gRPC full method;
        ``None`` when the adapter cannot know it (it then matches no ``routes`` pattern)."""
        ...

    @property
    def path(self) -> str:
        """The request path as sent, still percent-encoded and without the query (for gRPC, the
        full method). DPoP proofs are checked against it; policies match :attr:`route` instead."""
        ...

    @property
    def scheme(self) -> str:
        """``"https"`` or ``"http"`` (websocket schemes as their HTTP twins): with :attr:`host`
        and :attr:`path`, the URL a DPoP proof must name."""
        ...

    @property
    def host(self) -> str | None:
        """The ``Host`` header (``host[:port]``, else the server address), or ``None`` when the
        request names none (gRPC); DPoP then needs the service's origins configured."""
        ...

    @property
    def remote_addr(self) -> str | None:
        """The immediate peer's IP address (the socket peer, never one from a forwarded header),
        or ``None``. Forwarded client certificates are believed only from trusted proxies."""
        ...

    @property
    def peer_chain(self) -> Sequence[bytes] | None:
        """The certificate chain the immediate peer presented over mTLS (DER, leaf first), or
        ``None``; when :attr:`verified_peer` is ``None``, it is verified against the bundles."""
        ...

    @property
    def verified_peer(self) -> VerifiedPeer | None:
        """The peer the TLS handshake verified (zerotrust's SSL contexts record it), or ``None``.
        Never give an unverified chain here: it is trusted as is, re-checked per request only for
        expiry and for authorities removed from the bundles."""
        ...

    def header(self, name: str) -> list[str]:
        """Every value of header ``name`` (case-insensitive), in order; ``[]`` if absent."""
        ...


HeadersLike = Mapping[str, "str | Sequence[str]"] | Iterable[tuple[str, str]]


def normalize_headers(headers: HeadersLike) -> dict[str, tuple[str, ...]]:
    """Lower-cased header names mapped to every value, in order."""
    out: dict[str, list[str]] = {}
    items: Iterable[tuple[str, str | Sequence[str]]]
    items = headers.items() if isinstance(headers, Mapping) else headers
    for name, value in items:
        values = [value] if isinstance(value, str) else list(value)
        out.setdefault(name.lower(), []).extend(values)
    return {k: tuple(v) for k, v in out.items()}


@dataclass(frozen=True, slots=True)
class Request:
    """A plain :class:`RequestView` for tests and hand-written integrations.

    ``remote_addr`` is ``None`` unless given: a request whose immediate peer is not named
    comes from no trusted proxy, so no forwarded client certificate of it is believed.
    """

    method: str = "GET"
    route: str | None = None
    path: str = "/"
    #: Lower-case names mapped to every value, in order (given as a mapping whose values may
    #: be one string or several, or as ``(name, value)`` pairs).
    headers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    kind: Kind = "http"
    scheme: str = "https"
    host: str | None = None
    remote_addr: str | None = None
    peer_chain: Sequence[bytes] | None = None
    verified_peer: VerifiedPeer | None = None

    if TYPE_CHECKING:  # what the constructor accepts; __post_init__ normalizes ``headers``

        def __init__(  # noqa: PLR0917 - the dataclass's own positional fields
            self,
            method: str = "GET",
            route: str | None = None,
            path: str = "/",
            headers: HeadersLike = ...,
            kind: Kind = "http",
            scheme: str = "https",
            host: str | None = None,
            remote_addr: str | None = None,
            peer_chain: Sequence[bytes] | None = None,
            verified_peer: VerifiedPeer | None = None,
        ) -> None: ...

    def __post_init__(self) -> None:
        object.__setattr__(self, "headers", normalize_headers(self.headers))
        if self.route is None and self.kind == "grpc":
            object.__setattr__(self, "route", self.path)

    def header(self, name: str) -> list[str]:
        """Every value of header ``name`` (case-insensitive), in order; ``[]`` if absent."""
        return list(self.headers.get(name.lower(), ()))

    def __repr__(self) -> str:  # header values may be credentials: names only
        return (
            f"Request(method={self.method!r}, route={self.route!r}, path={self.path!r},"
            f" headers=<{', '.join(self.headers)}>, kind={self.kind!r},"
            f" remote_addr={self.remote_addr!r})"
        )
