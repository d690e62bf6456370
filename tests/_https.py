"""A scriptable loopback HTTP(S) server for integration tests of remote sources.

``with HttpsServer(ca) as server:`` serves on ``https://localhost:<ephemeral port>`` with a
certificate issued by the dev CA (``dns_names=["localhost"]``); ``HttpsServer(None)`` serves
plain http. Each path gets a scripted :class:`Route` (status, headers, body, delay, redirect,
a streamed body of ``stream_bytes`` without Content-Length (``stream_prefix``, then copies of
``stream_chunk``), or a ``handler`` computing the response from the request); every request is
recorded. Clients trust the server through :attr:`HttpsServer.client_context`. ``client_ca``
makes the server require a client certificate issued by that CA (for mTLS client
authentication).
"""

from __future__ import annotations

import json
import ssl
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from zerotrust.dev import DevCA


@dataclass(frozen=True)
class Recorded:
    """One request as the server saw it."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes
    peer_cert: bytes | None = None

    @property
    def form(self) -> dict[str, str]:
        pairs = parse_qsl(self.body.decode("ascii"), keep_blank_values=True, strict_parsing=True)
        names = [name for name, _ in pairs]
        assert len(names) == len(set(names)), "repeated form parameter"
        return dict(pairs)


@dataclass
class Route:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0
    redirect: str | None = None
    stream_bytes: int = 0
    stream_prefix: bytes = b""
    stream_chunk: bytes = b" " * 65536
    handler: Callable[[Recorded], tuple[int, dict[str, str], bytes]] | None = None


def json_route(document: Any, *, status: int = 200, **options: Any) -> Route:
    headers = {"Content-Type": "application/json", **options.pop("headers", {})}
    return Route(status=status, headers=headers, body=json.dumps(document).encode(), **options)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    owner: HttpsServer

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(10)
        ctx = self.owner.server_context
        conn = request
        if ctx is not None:
            try:
                conn = ctx.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                return
        try:
            self.RequestHandlerClass(conn, client_address, self)  # type: ignore[arg-type]
        except (ssl.SSLError, OSError):
            pass
        finally:
            if conn is not request:
                conn.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that abort (oversized bodies, timeouts) are expected


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        owner = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        peer = None
        if isinstance(self.connection, ssl.SSLSocket):
            peer = self.connection.getpeercert(binary_form=True)
        record = Recorded(
            self.command,
            parts.path,
            parts.query,
            {k.lower(): v for k, v in self.headers.items()},
            body,
            peer,
        )
        route = owner.record(record)
        if route.delay:
            owner.stopping.wait(route.delay)
        if route.redirect is not None:
            self._reply(302, {"Location": route.redirect}, b"")
        elif route.handler is not None:
            self._reply(*route.handler(record))
        elif route.stream_bytes:
            self.send_response(route.status)
            for name, value in route.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(route.stream_prefix)
            chunk = route.stream_chunk
            sent = 0
            while sent < route.stream_bytes and not owner.stopping.is_set():
                self.wfile.write(chunk)
                sent += len(chunk)
        else:
            self._reply(route.status, route.headers, route.body)

    def _reply(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class HttpsServer:
    """See the module documentation."""

    def __init__(self, ca: DevCA | None, *, client_ca: DevCA | None = None) -> None:
        self._lock = threading.Lock()
        self._routes: dict[str, Route] = {}
        self._requests: list[Recorded] = []
        self.stopping = threading.Event()
        self.server_context: ssl.SSLContext | None = None
        self.client_context = ssl.create_default_context()  # trusts this server if it has TLS
        if ca is not None:
            svid = ca.issue_svid(f"spiffe://{ca.trust_domain}/test-server", dns_names=["localhost"])
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            with tempfile.TemporaryDirectory() as tmp:
                cert, key = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
                cert.write_bytes(svid.cert_chain_pem())
                key.write_bytes(svid.private_key_pem())
                ctx.load_cert_chain(cert, key)
            if client_ca is not None:
                ctx.verify_mode = ssl.CERT_REQUIRED
                ctx.load_verify_locations(cadata=client_ca.bundle.to_pem().decode())
            self.server_context = ctx
            self.client_context = ssl.create_default_context(cadata=ca.bundle.to_pem().decode())
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self.port = self._server.server_address[1]
        self.scheme = "https" if ca is not None else "http"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    def __enter__(self) -> HttpsServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def url(self, path: str, *, host: str = "localhost") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def route(self, path: str, route: Route) -> None:
        with self._lock:
            self._routes[path] = route

    def record(self, request: Recorded) -> Route:
        with self._lock:
            self._requests.append(request)
            return self._routes.get(request.path, Route(status=404))

    def requests(self, path: str | None = None) -> list[Recorded]:
        with self._lock:
            return [r for r in self._requests if path is None or r.path == path]

    def count(self, path: str | None = None) -> int:
        return len(self.requests(path))
