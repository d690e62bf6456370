"""uvicorn serving direct mTLS with a zerotrust SSL context, the verified peer in every scope.

uvicorn builds its ``SSLContext`` from files and leaves ``scope["extensions"]["tls"]`` empty.
:class:`ZeroTrustUvicornConfig` is a ``uvicorn.Config`` that

* serves with the given :class:`~zerotrust.ZeroTrustSSLContext` (through uvicorn's
  ``ssl_context_factory``, with ALPN set to the HTTP protocol's: h2 and http/1.1 with
  ``http2=True``), so every handshake requires and authorizes a client X509-SVID and a
  rotated SVID is loaded before each new connection;
* swaps the configured HTTP and websocket protocol classes (h11, httptools, ``auto``, or your
  own) for subclasses made by :func:`with_tls_extension`, which fill in the ASGI TLS extension
  of every request from the connection's ``ssl_object``: ``client_cert_chain`` (PEM),
  ``tls_version``, ``cipher_suite`` and the handshake's :class:`~zerotrust.VerifiedPeer`;
* turns ``proxy_headers`` off by default: a direct-TLS server has no proxy in front, and
  uvicorn would otherwise rewrite the client address from ``X-Forwarded-For``.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import inspect
import ssl
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

from zerotrust.errors import ConfigurationError, MissingDependencyError

try:
    import uvicorn
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError("uvicorn", "uvicorn", error=exc) from exc

from zerotrust.adapters._tls_scope import add_tls_extension, tls_extension

__all__ = ["ZeroTrustUvicornConfig", "with_tls_extension"]

_SSL_OPTIONS: Final = (
    "ssl_keyfile",
    "ssl_certfile",
    "ssl_keyfile_password",
    "ssl_version",
    "ssl_cert_reqs",
    "ssl_ca_certs",
    "ssl_ciphers",
    "ssl_context_factory",
)

ASGI3 = Callable[[MutableMapping[str, Any], Any, Any], Awaitable[None]]


class _WithTls:
    """The connection's application: adds the TLS extension, then calls uvicorn's app."""

    __slots__ = ("app", "tls")

    def __init__(self, app: ASGI3, tls: dict[str, Any]) -> None:
        self.app = app
        self.tls = tls

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        add_tls_extension(scope, self.tls)
        await self.app(scope, receive, send)


class _TlsExtensionMixin:
    app: Any

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        protocol = getattr(transport, "get_protocol", lambda: self)
        before = protocol()
        super().connection_made(transport)  # type: ignore[misc]
        _read_through_the_tls_close(transport)
        tls = tls_extension(transport.get_extra_info("ssl_object"))
        if tls is None:
            return
        # uvicorn's HTTP/2 protocol (http2=True) hands the connection to its HTTP/1.1 or
        # HTTP/2 protocol once ALPN has chosen: that one serves the requests
        after = protocol()
        serving: Any = self if after is before else after
        serving.app = _WithTls(serving.app, tls)

    def shutdown(self) -> None:
        # A connection whose transport is already closing has nothing left to shut down.
        # Over TLS it stays among the server's connections until the TLS close completes,
        # and uvicorn's websocket protocols would still send it a close frame: websockets
        # and wsproto refuse that past the closing handshake, and the exception ends
        # uvicorn's shutdown before the other connections and the lifespan shutdown.
        transport = getattr(self, "transport", None)
        if transport is not None and transport.is_closing():
            return
        super().shutdown()  # type: ignore[misc]


def _read_through_the_tls_close(transport: asyncio.BaseTransport) -> None:
    """On Python 3.10, make closing a TLS transport resume reading.

    uvicorn's websocket protocols pause reading while the application has a message to take,
    and close the transport without resuming. Python 3.10's TLS transport pauses the socket
    itself, so it never reads the peer's TLS close (or end of stream) and the connection is
    never released. Later Pythons (and uvloop) keep reading the socket during a TLS close.
    """
    if _LEGACY_TLS_TRANSPORT is None or type(transport) is not _LEGACY_TLS_TRANSPORT:
        return
    close = transport.close

    def close_and_read() -> None:
        vars(transport).pop("close", None)  # once is enough, and no cycle is left behind
        close()
        # a protocol also closes its transport once the connection is lost: nothing to read
        if getattr(getattr(transport, "_ssl_protocol", None), "_transport", None) is not None:
            transport.resume_reading()  # type: ignore[attr-defined]

    transport.close = close_and_read  # type: ignore[method-assign]


#: Python 3.10's asyncio TLS transport (None on later Pythons, whose transport needs no help).
_LEGACY_TLS_TRANSPORT: Final = (
    getattr(asyncio.sslproto, "_SSLProtocolTransport", None) if sys.version_info < (3, 11) else None
)

_subclasses: dict[type[Any], type[Any]] = {}


def with_tls_extension(protocol_class: type[asyncio.Protocol]) -> type[asyncio.Protocol]:
    """A subclass of a uvicorn HTTP or websocket protocol class that fills in
    ``scope["extensions"]["tls"]`` for every request on a TLS connection."""
    if issubclass(protocol_class, _TlsExtensionMixin):
        return protocol_class
    found = _subclasses.get(protocol_class)
    if found is None:
        name = f"ZeroTrust{protocol_class.__name__}"
        found = type(name, (_TlsExtensionMixin, protocol_class), {"__module__": __name__})
        _subclasses[protocol_class] = found
    return found


class ZeroTrustUvicornConfig(uvicorn.Config):
    """A ``uvicorn.Config`` serving TLS with ``ssl_context`` and publishing the verified peer.

    Takes every ``uvicorn.Config`` argument except the ``ssl_*`` ones (the context replaces
    them). One process: ``workers`` and ``reload`` would pickle the context into children.
    """

    def __init__(self, app: Any, *, ssl_context: ssl.SSLContext, **options: Any) -> None:
        if not isinstance(ssl_context, ssl.SSLContext):
            raise ConfigurationError("ssl_context must be an ssl.SSLContext (server_ssl_context)")
        clashing = sorted(set(options) & set(_SSL_OPTIONS))
        if clashing:
            raise ConfigurationError(f"ssl_context replaces {', '.join(clashing)}")
        if "ssl_context_factory" not in inspect.signature(uvicorn.Config).parameters:
            raise ConfigurationError("serving a zerotrust SSL context needs uvicorn >= 0.47")
        if (options.get("workers") or 1) > 1 or options.get("reload"):
            raise ConfigurationError("run one process per context: workers/reload unsupported")
        options.setdefault("proxy_headers", False)
        self.zerotrust_ssl_context = ssl_context
        super().__init__(app, ssl_context_factory=_factory(ssl_context), **options)

    def load(self) -> None:
        """uvicorn hook: load as usual, then make the protocol classes fill in the TLS extension."""
        super().load()
        self.http_protocol_class = with_tls_extension(self.http_protocol_class)
        if self.ws_protocol_class is not None:
            self.ws_protocol_class = with_tls_extension(self.ws_protocol_class)


def _factory(context: ssl.SSLContext) -> Callable[[Any, Any], ssl.SSLContext]:
    def factory(config: Any, default: Any) -> ssl.SSLContext:
        # uvicorn sets the ALPN protocols of its HTTP protocol class (h2 and http/1.1 with
        # http2=True) only on contexts it builds itself: without them on this one, no client
        # could ever negotiate HTTP/2
        alpn = getattr(getattr(config, "http_protocol_class", None), "alpn_protocols", None)
        if alpn:
            context.set_alpn_protocols(list(alpn))
        return context

    return factory
