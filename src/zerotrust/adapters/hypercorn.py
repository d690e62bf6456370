"""hypercorn serving direct mTLS with a zerotrust SSL context, the verified peer in every scope.

hypercorn 0.18 builds its ``SSLContext`` from files in ``Config.create_ssl_context()`` and
fills in no TLS extension (its connection server reads the ``ssl_object`` only for ALPN).

* :class:`ZeroTrustHypercornConfig` is a ``hypercorn.config.Config`` whose
  ``create_ssl_context()`` returns the given :class:`~zerotrust.ZeroTrustSSLContext` (ALPN set
  to the config's ``alpn_protocols``: HTTP/2 and HTTP/1.1). With hypercorn's own ``serve()``
  it enforces mTLS at the handshake, but the application cannot see who connected.
* :func:`serve_hypercorn` runs hypercorn's HTTP/1.1, HTTP/2 and websocket machinery (its
  connection server, lifespan and graceful shutdown) behind a listener of its own that adds
  the ASGI TLS extension -- ``client_cert_chain`` (PEM), ``tls_version``, ``cipher_suite`` and
  the handshake's :class:`~zerotrust.VerifiedPeer` -- to the scope of every request of each
  connection. TLS listeners only (no plain-text binds, no QUIC).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

from zerotrust.errors import ConfigurationError, MissingDependencyError

try:
    from hypercorn.app_wrappers import ASGIWrapper
    from hypercorn.asyncio.lifespan import Lifespan
    from hypercorn.asyncio.tcp_server import TCPServer
    from hypercorn.asyncio.worker_context import WorkerContext
    from hypercorn.config import Config
    from hypercorn.utils import repr_socket_addr
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError("hypercorn", "hypercorn", error=exc) from exc

from zerotrust.adapters._tls_scope import add_tls_extension, tls_extension

_log = logging.getLogger("zerotrust")

__all__ = ["ZeroTrustHypercornConfig", "serve_hypercorn"]

#: hypercorn's settings for the TLS context it would build itself.
_TLS_SETTINGS: Final = (
    "certfile",
    "keyfile",
    "keyfile_password",
    "ca_certs",
    "ciphers",
    "verify_mode",
    "verify_flags",
)


class ZeroTrustHypercornConfig(Config):
    """A hypercorn ``Config`` whose TLS context is ``ssl_context`` (set ``bind`` as usual)."""

    def __init__(self, ssl_context: ssl.SSLContext) -> None:
        if not isinstance(ssl_context, ssl.SSLContext):
            raise ConfigurationError("ssl_context must be an ssl.SSLContext (server_ssl_context)")
        super().__init__()
        self.zerotrust_ssl_context = ssl_context

    def _check_tls_settings(self) -> None:
        """Raise ``ConfigurationError`` if one of hypercorn's own TLS settings was given: the
        zerotrust context replaces the one they would configure."""
        defaults = Config()
        ignored = [name for name in _TLS_SETTINGS if getattr(self, name) != getattr(defaults, name)]
        if ignored:
            raise ConfigurationError(
                "ZeroTrustHypercornConfig serves with its ssl_context: hypercorn's"
                f" {', '.join(ignored)} would be ignored; remove them"
            )

    @property
    def ssl_enabled(self) -> bool:
        """Always ``True``: hypercorn serves TLS with the context of :meth:`create_ssl_context`."""
        return True

    def create_ssl_context(self) -> ssl.SSLContext:
        """hypercorn hook: the given zerotrust context, with ALPN set to ``alpn_protocols``.
        hypercorn's own TLS settings (``certfile``, ``ca_certs``, ``ciphers``, ...) would be
        silently ignored, so a value set for one of them raises ``ConfigurationError``."""
        self._check_tls_settings()
        context = self.zerotrust_ssl_context
        context.set_alpn_protocols(self.alpn_protocols)
        return context


class _ConnectionApp:
    """hypercorn's application wrapper for one connection: adds the TLS extension."""

    __slots__ = ("app", "tls")

    def __init__(self, app: Any, tls: dict[str, Any] | None) -> None:
        self.app = app
        self.tls = tls

    async def __call__(
        self, scope: MutableMapping[str, Any], receive: Any, send: Any, *spawn: Any
    ) -> None:
        if self.tls is not None:
            add_tls_extension(scope, self.tls)
        await self.app(scope, receive, send, *spawn)


async def serve_hypercorn(
    app: Any,
    config: ZeroTrustHypercornConfig,
    *,
    shutdown_trigger: Callable[[], Awaitable[object]] | None = None,
    sockets: list[Any] | None = None,
) -> None:
    """Serve the ASGI ``app`` until ``shutdown_trigger()`` returns (default: never).

    Then shut down as hypercorn does: open connections get ``config.graceful_timeout``
    seconds to end, those still open (a long-lived websocket) are cancelled, and the lifespan
    shutdown runs; nothing is served once this returns.

    ``sockets`` are bound listening sockets to serve on; by default the config's ``bind``
    addresses are bound.
    """
    if not isinstance(config, ZeroTrustHypercornConfig):
        raise ConfigurationError("serve_hypercorn needs a ZeroTrustHypercornConfig")
    unserved = [name for name in ("insecure_bind", "quic_bind") if getattr(config, name, None)]
    if unserved:  # hypercorn would bind them (and advertise HTTP/3); nothing would serve them
        raise ConfigurationError(f"serve_hypercorn serves mTLS on bind only, not {unserved}")
    config._check_tls_settings()
    loop = asyncio.get_running_loop()
    wrapped = ASGIWrapper(app)
    state: dict[str, Any] = {}
    lifespan = Lifespan(wrapped, config, loop, state)
    lifespan_task = loop.create_task(lifespan.handle_lifespan())
    await lifespan.wait_for_startup()
    if lifespan_task.done() and lifespan_task.exception() is not None:
        raise lifespan_task.exception()  # type: ignore[misc]
    if sockets is None:
        sockets = config.create_sockets().secure_sockets
    context = WorkerContext(config.max_requests)
    connections: set[asyncio.Task[Any]] = set()
    cut: set[asyncio.Task[Any]] = set()  # connections the shutdown cancelled

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            connections.add(task)
            task.add_done_callback(connections.discard)
        tls = tls_extension(writer.get_extra_info("ssl_object"))
        per_connection: Any = _ConnectionApp(wrapped, tls)
        try:
            await TCPServer(per_connection, loop, config, context, state, reader, writer)
        except (Exception, asyncio.CancelledError) as exc:
            if not (_ended_by_the_connection(exc) or (task in cut and _cancelled(exc))):
                raise
            # hypercorn lets a transport error at the connection's close through (application
            # data after the TLS close, a TLS close the peer never finished), and the shutdown
            # cancels a connection still open after graceful_timeout: the connection's own
            # end, which asyncio would log as the server's unhandled exception
            _log.debug("a connection ended in a transport error or the shutdown: %r", exc)

    ssl_context = config.create_ssl_context()
    servers = [
        await asyncio.start_server(
            on_connection,
            sock=sock,
            ssl=ssl_context,
            backlog=config.backlog,
            ssl_handshake_timeout=config.ssl_handshake_timeout,
        )
        for sock in sockets
    ]
    for sock in sockets:
        bind = repr_socket_addr(sock.family, sock.getsockname())
        await config.log.info(f"Running on https://{bind} (mTLS, zerotrust)")
    try:
        await _until(shutdown_trigger, context)
    finally:
        await context.terminated.set()
        for server in servers:
            server.close()  # no new connection
        # the open ones end first: from Python 3.12, wait_closed() waits for them too
        await _end_connections(connections, cut, config.graceful_timeout)
        for server in servers:
            await server.wait_closed()
        await lifespan.wait_for_shutdown()
        lifespan_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await lifespan_task


async def _end_connections(
    connections: set[asyncio.Task[Any]], cut: set[asyncio.Task[Any]], timeout: float
) -> None:
    """Give the connections ``timeout`` seconds to end, then cancel those still open (a
    long-lived websocket), noted in ``cut``, and wait for them: as hypercorn's own ``serve()``,
    before the lifespan shutdown, so nothing is served once the server has returned."""
    if not connections:
        return
    _, still_open = await asyncio.wait(connections, timeout=timeout)
    if still_open:
        cut.update(still_open)
        for task in still_open:
            task.cancel()
        await asyncio.wait(still_open)


def _cancelled(exc: BaseException) -> bool:
    return isinstance(exc, asyncio.CancelledError)


def _ended_by_the_connection(exc: BaseException) -> bool:
    """``exc`` is a transport error, or a task group's (hypercorn's) made only of them."""
    group = getattr(exc, "exceptions", None)
    if isinstance(group, tuple) and group:
        return all(_ended_by_the_connection(inner) for inner in group)
    return isinstance(exc, OSError)


async def _until(trigger: Callable[[], Awaitable[object]] | None, context: Any) -> None:
    waits = [asyncio.ensure_future(context.terminate.wait())]
    if trigger is not None:
        waits.append(asyncio.ensure_future(trigger()))
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waits:
            waiter.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
