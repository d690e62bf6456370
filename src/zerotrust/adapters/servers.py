"""One entry point to serve an ASGI application over direct mTLS: uvicorn or hypercorn.

``serve(app, svid=..., bundles=..., authorizer=...)`` builds the server context with
:func:`~zerotrust.server_ssl_context` (or takes ``ssl_context=``), starts the chosen server
with it, and every request's scope carries the ASGI TLS extension with the verified peer, so
:class:`~zerotrust.asgi.ZeroTrustMiddleware` sees who connected. Blocks until the server
stops (SIGINT / SIGTERM).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import ssl
import threading
from collections.abc import Iterator
from typing import Any, Literal

from zerotrust.errors import ConfigurationError
from zerotrust.identity.match import Matcher
from zerotrust.x509.bundle import BundleSet, TrustBundle
from zerotrust.x509.sources import X509BundleSource, X509SvidSource
from zerotrust.x509.sslcontext import RefusalListener, ZeroTrustSSLContext, server_ssl_context
from zerotrust.x509.svid import X509Svid

__all__ = ["serve"]


def _context(
    ssl_context: ssl.SSLContext | None,
    svid: X509SvidSource | X509Svid | None,
    bundles: X509BundleSource | TrustBundle | BundleSet | None,
    authorizer: Matcher | None,
    on_refusal: RefusalListener | None,
) -> ssl.SSLContext:
    if ssl_context is not None:
        if svid is not None or bundles is not None or authorizer is not None:
            raise ConfigurationError("pass ssl_context= or svid/bundles/authorizer, not both")
        if on_refusal is not None:
            if not isinstance(ssl_context, ZeroTrustSSLContext):
                raise ConfigurationError("on_refusal= needs a zerotrust server_ssl_context")
            ssl_context.add_refusal_listener(on_refusal)
        return ssl_context
    if svid is None or bundles is None or authorizer is None:
        raise ConfigurationError("serve() needs svid=, bundles= and authorizer= (or ssl_context=)")
    return server_ssl_context(svid, bundles, authorizer=authorizer, on_refusal=on_refusal)


def serve(
    app: Any,
    *,
    svid: X509SvidSource | X509Svid | None = None,
    bundles: X509BundleSource | TrustBundle | BundleSet | None = None,
    authorizer: Matcher | None = None,
    ssl_context: ssl.SSLContext | None = None,
    host: str = "127.0.0.1",
    port: int = 8443,
    server: Literal["uvicorn", "hypercorn"] = "uvicorn",
    on_refusal: RefusalListener | None = None,
    **options: Any,
) -> None:
    """Serve ``app`` over mTLS on ``host:port`` until interrupted.

    ``on_refusal`` receives every handshake refused over the client's certificate (pass
    ``guard.audit_handshake`` to audit them). ``options`` go to ``uvicorn.Config`` (e.g.
    ``http="httptools"``, ``loop="uvloop"``, ``log_level``) or are set on the hypercorn
    ``Config`` (e.g. ``keep_alive_timeout``).
    """
    context = _context(ssl_context, svid, bundles, authorizer, on_refusal)
    if server == "uvicorn":
        from zerotrust.adapters.uvicorn import ZeroTrustUvicornConfig

        config = ZeroTrustUvicornConfig(app, ssl_context=context, host=host, port=port, **options)
        _returning_server_class()(config).run()
    elif server == "hypercorn":
        asyncio.run(_hypercorn(app, context, host, port, options))
    else:
        raise ConfigurationError(f"unknown server {server!r}: 'uvicorn' or 'hypercorn'")


def _returning_server_class() -> type:
    import uvicorn

    class ReturningServer(uvicorn.Server):
        """uvicorn re-raises the signal that stopped it once it has shut down (a
        KeyboardInterrupt, or death by SIGTERM that skips the caller's cleanup): forget it, so
        ``serve()`` simply returns after a graceful shutdown."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            with super().capture_signals():
                try:
                    yield
                finally:
                    self._captured_signals.clear()

    return ReturningServer


def _ReturningServer(config: Any) -> Any:
    return _returning_server_class()(config)


async def _hypercorn(
    app: Any, context: ssl.SSLContext, host: str, port: int, options: dict[str, Any]
) -> None:
    from zerotrust.adapters.hypercorn import ZeroTrustHypercornConfig, serve_hypercorn

    config = ZeroTrustHypercornConfig(context)
    for name, value in options.items():
        if not hasattr(config, name):
            raise ConfigurationError(f"hypercorn has no setting {name!r}")
        setattr(config, name, value)
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    stop = asyncio.Event()
    if threading.current_thread() is threading.main_thread():
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
    await serve_hypercorn(app, config, shutdown_trigger=stop.wait)
