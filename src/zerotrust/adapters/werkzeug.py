"""werkzeug's server with zerotrust's mTLS: the handshake's verified peer reaches the app.

werkzeug's ``make_server(..., ssl_context=server_ssl_context(...))`` already performs zerotrust's
peer check on every handshake, but passes the app only the leaf certificate
(``SSL_CLIENT_CERT``): with an intermediate CA the chain cannot be verified again from it.
:class:`PeerRequestHandler` hands the app the peer the handshake verified instead (the same
environ keys the gunicorn workers set), so no chain is verified twice.

werkzeug's server is for development and tests; serve production traffic with gunicorn and
:mod:`zerotrust.adapters.gunicorn`.
"""

from __future__ import annotations

from typing import Any

from zerotrust.adapters.wsgi import CHAIN_ENVIRON_KEY, PEER_ENVIRON_KEY
from zerotrust.errors import ConfigurationError, MissingDependencyError

try:
    from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
except ImportError as exc:  # pragma: no cover - werkzeug comes with flask
    raise MissingDependencyError("werkzeug", "flask", error=exc) from exc

from zerotrust.x509.peer import verified_chain_der
from zerotrust.x509.sslcontext import ZeroTrustSSLContext

__all__ = ["PeerRequestHandler", "serve_werkzeug"]


class PeerRequestHandler(WSGIRequestHandler):
    """Puts the peer zerotrust verified during the handshake into every request's environ."""

    def make_environ(self) -> dict[str, Any]:
        """werkzeug's environ, plus the verified peer and its chain (DER) under
        ``PEER_ENVIRON_KEY`` / ``CHAIN_ENVIRON_KEY`` when the connection presented one."""
        environ: dict[str, Any] = super().make_environ()
        peer = getattr(self.connection, "zerotrust_peer", None)
        if peer is not None:
            environ[PEER_ENVIRON_KEY] = peer
            environ[CHAIN_ENVIRON_KEY] = tuple(verified_chain_der(self.connection))
        return environ


def serve_werkzeug(
    app: Any,
    *,
    ssl_context: ZeroTrustSSLContext,
    host: str = "127.0.0.1",
    port: int = 0,
    threaded: bool = True,
) -> BaseWSGIServer:
    """A werkzeug server for ``app`` over zerotrust's mTLS (call ``serve_forever()`` on it).

    Each connection's handshake runs in the thread that serves it (with ``threaded``), under
    the context's handshake deadline: werkzeug would run it in ``accept()``, so one client
    that stalls mid-handshake would hold every other one back.
    """
    if not isinstance(ssl_context, ZeroTrustSSLContext):
        raise ConfigurationError("serve_werkzeug needs a context from server_ssl_context(...)")
    server = make_server(host, port, app, threaded=threaded, request_handler=PeerRequestHandler)
    # the handshake happens on the first read, which zerotrust's sockets finish (peer check
    # included) before any byte moves
    server.socket = ssl_context.wrap_socket(
        server.socket, server_side=True, do_handshake_on_connect=False
    )
    server.ssl_context = ssl_context  # requests are https
    return server
