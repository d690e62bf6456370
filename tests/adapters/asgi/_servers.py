"""Real uvicorn and hypercorn servers on loopback ephemeral ports, each in its own thread.

Each context manager binds a listening socket first (so the port is known and connections
queue until the server accepts), starts the server with zerotrust's SSL context, waits for it
to be ready with bounded polling, and always stops it and joins the thread.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import uvicorn

from zerotrust.asgi import (
    ZeroTrustHypercornConfig,
    ZeroTrustUvicornConfig,
    serve_hypercorn,
)

READY_TIMEOUT = 30.0  # generous: the machine is shared


def needs_uvicorn_http2() -> None:
    """Skip unless uvicorn serves HTTP/2 here (``http2=True`` with the zttp protocol): the
    oldest uvicorn zerotrust supports has neither."""
    pytest.importorskip("zttp")
    if "http2" not in inspect.signature(uvicorn.Config).parameters:
        pytest.skip(f"uvicorn {uvicorn.__version__} has no http2 option")


def _listener() -> tuple[socket.socket, int]:
    sock = socket.create_server(("127.0.0.1", 0))
    return sock, sock.getsockname()[1]


@contextmanager
def uvicorn_server(
    app: Any, ssl_context: Any, http: Any, ws: Any = "websockets-sansio", **options: Any
) -> Iterator[int]:
    """``http``: a uvicorn HTTP protocol name or class, ``ws`` a websocket one; ``options`` go
    to the config."""
    sock, port = _listener()
    config = ZeroTrustUvicornConfig(
        app,
        ssl_context=ssl_context,
        http=http,
        ws=ws,
        loop="uvloop" if http == "httptools" else "asyncio",
        lifespan="on",
        log_config=None,  # leave the test process's logging alone
        access_log=False,
        **options,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while not server.started:
            assert thread.is_alive(), "uvicorn stopped while starting"
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        yield port
    finally:
        server.should_exit = True
        thread.join(READY_TIMEOUT)
        sock.close()
        assert not thread.is_alive(), "uvicorn did not stop"


@contextmanager
def hypercorn_server(app: Any, ssl_context: Any, graceful_timeout: float = 5) -> Iterator[int]:
    sock, port = _listener()
    config = ZeroTrustHypercornConfig(ssl_context)
    config.graceful_timeout = graceful_timeout
    ready = threading.Event()
    control: dict[str, Any] = {}

    async def main() -> None:
        control["loop"] = asyncio.get_running_loop()
        control["stop"] = stop = asyncio.Event()
        ready.set()
        await serve_hypercorn(app, config, shutdown_trigger=stop.wait, sockets=[sock])

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # reported by the test, not lost in the thread
            control["error"] = exc
        finally:
            ready.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        assert ready.wait(READY_TIMEOUT), "hypercorn did not start"
        assert "error" not in control, control.get("error")
        yield port
    finally:
        if "loop" in control and "stop" in control:
            control["loop"].call_soon_threadsafe(control["stop"].set)
        thread.join(READY_TIMEOUT)
        sock.close()
        assert not thread.is_alive(), "hypercorn did not stop"
        assert "error" not in control, control.get("error")


@contextmanager
def serve(kind: str, app: Any, ssl_context: Any) -> Iterator[int]:
    """``kind``: ``uvicorn-h11``, ``uvicorn-httptools`` or ``hypercorn``."""
    if kind == "hypercorn":
        with hypercorn_server(app, ssl_context) as port:
            yield port
    else:
        with uvicorn_server(app, ssl_context, kind.split("-", 1)[1]) as port:
            yield port
