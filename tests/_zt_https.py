"""A loopback mTLS HTTP/1.1 server for client tests, secured by zerotrust's own server context.

``with ZtHttpsServer(svid, bundles) as server:`` listens on ``https://localhost:<port>`` (an
ephemeral port unless ``port=`` is given) and wraps every accepted connection with
:func:`zerotrust.server_ssl_context`, so it requires a client X509-SVID, verifies it against
the bundles and applies ``authorizer`` (default: the server's own trust domain).

Responses are scripted per path: ``server.script("/x", Reply(503, {"Retry-After": "1"}),
Reply(200))`` answers the first request with 503, the second and later ones with 200 (the last
reply repeats). ``server.handle("/x", fn)`` computes the reply from the :class:`Recorded`
request. Unscripted paths answer 404. Connections are kept alive (HTTP/1.1) unless a reply
says ``Connection: close``; ``Reply(drop=True)`` closes the connection without an answer,
``Reply(cut_after=n)`` after the headers and ``n`` bytes of the body, and
``Reply(trickle=s)`` writes the body one byte every ``s`` seconds (:attr:`trickled` says how
much of it was written before the client left).

Every request is recorded (method, path, query, headers, body, the verified client SPIFFE ID
and leaf fingerprint, and which connection carried it); :attr:`handshakes` counts completed
TLS handshakes (one per new connection) and :attr:`handshake_errors` the failed ones.
Stopping the server closes every open connection and joins its threads.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from zerotrust import (
    BundleSet,
    Matcher,
    TrustBundle,
    VerifiedPeer,
    X509Svid,
    X509SvidSource,
    match,
)
from zerotrust.x509.sslcontext import server_ssl_context


@dataclass(frozen=True)
class Reply:
    """A scripted response."""

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    #: Close the connection without answering (the client sees a dropped connection).
    drop: bool = False
    #: Write the body one byte at a time, pausing this many seconds before each (a server
    #: that trickles its answer).
    trickle: float = 0.0
    #: Close the connection after this many bytes of the body, its full length announced
    #: (the client sees the body cut short).
    cut_after: int | None = None


@dataclass(frozen=True)
class Recorded:
    """One request as the server saw it (header names in lower case)."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes
    client_id: str | None
    client_fingerprint: str | None
    connection: int
    peer: VerifiedPeer | None = field(default=None, repr=False, compare=False)

    @property
    def url(self) -> str:
        """The request URL as the server sees it (without the query)."""
        return f"https://{self.headers.get('host', 'localhost')}{self.path}"


Handler = Callable[[Recorded], Reply]


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins every connection thread
    block_on_close = True
    owner: ZtHttpsServer

    def finish_request(self, request: Any, client_address: Any) -> None:
        self.owner._serve_connection(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that go away are expected


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes
    connection_number = 0

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_DELETE = do_HEAD = do_OPTIONS = do_PATCH = do_GET

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if not size:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size + 2)[:size])
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _serve(self) -> None:
        body = self._read_body()
        parts = urlsplit(self.path)
        peer = getattr(self.connection, "zerotrust_peer", None)
        record = Recorded(
            method=self.command,
            path=parts.path,
            query=parts.query,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            client_id=None if peer is None else str(peer.spiffe_id),
            client_fingerprint=None if peer is None else peer.fingerprint,
            connection=self.connection_number,
            peer=peer,
        )
        reply = self.server.owner._reply_for(record)
        if reply.drop:
            self.close_connection = True
            return
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if self.command == "HEAD":
            return
        body = reply.body if reply.cut_after is None else reply.body[: reply.cut_after]
        if reply.trickle:
            sent = 0
            try:
                for offset in range(len(body)):
                    time.sleep(reply.trickle)
                    self.wfile.write(body[offset : offset + 1])
                    sent += 1
            finally:
                self.server.owner.trickled.append((sent, len(body)))
        else:
            self.wfile.write(body)
        if reply.cut_after is not None:
            self.close_connection = True


class ZtHttpsServer:
    """See the module documentation."""

    def __init__(
        self,
        svid: X509Svid | X509SvidSource,
        bundles: TrustBundle | BundleSet,
        *,
        authorizer: Matcher | None = None,
        port: int = 0,
    ) -> None:
        if authorizer is None:
            authorizer = match.member_of(svid.get_x509_svid().spiffe_id.trust_domain)
        self.context = server_ssl_context(svid, bundles, authorizer=authorizer)
        self._lock = threading.Lock()
        self._scripts: dict[str, list[Reply]] = {}
        self._handlers: dict[str, Handler] = {}
        self._requests: list[Recorded] = []
        self._open: set[ssl.SSLSocket] = set()
        self.handshakes = 0
        self.handshake_errors: list[BaseException] = []
        #: per trickled reply: (bytes written before it ended or the client left, body length)
        self.trickled: list[tuple[int, int]] = []
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.owner = self
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    # -- configuration ----------------------------------------------------------------------

    def script(self, path: str, *replies: Reply) -> None:
        """Answer requests to ``path`` with ``replies`` in order; the last one repeats."""
        assert replies, "script() needs at least one reply"
        with self._lock:
            self._scripts[path] = list(replies)
            self._handlers.pop(path, None)

    def handle(self, path: str, handler: Handler) -> None:
        """Answer requests to ``path`` with ``handler(recorded)``."""
        with self._lock:
            self._handlers[path] = handler
            self._scripts.pop(path, None)

    # -- inspection -------------------------------------------------------------------------

    def url(self, path: str = "/", *, host: str = "localhost") -> str:
        return f"https://{host}:{self.port}{path}"

    def requests(self, path: str | None = None) -> list[Recorded]:
        with self._lock:
            return [r for r in self._requests if path is None or r.path == path]

    def count(self, path: str | None = None) -> int:
        return len(self.requests(path))

    def connection_attempts(self, *, at_least: int = 1, timeout: float = 10.0) -> int:
        """Handshakes plus failed handshakes, once at least ``at_least`` have been seen (the
        server thread may still be finishing a handshake the client already gave up on)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                seen = self.handshakes + len(self.handshake_errors)
            if seen >= at_least or time.monotonic() > deadline:
                return seen
            time.sleep(0.01)

    # -- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> ZtHttpsServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(10)
        with self._lock:
            open_connections = list(self._open)
        for conn in open_connections:  # wake handlers blocked on idle keep-alive connections
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._server.server_close()  # joins the connection threads (block_on_close)

    # -- internals --------------------------------------------------------------------------

    def _reply_for(self, record: Recorded) -> Reply:
        with self._lock:
            self._requests.append(record)
            handler = self._handlers.get(record.path)
            script = self._scripts.get(record.path)
            if handler is None and script:
                return script.pop(0) if len(script) > 1 else script[0]
        return handler(record) if handler is not None else Reply(404)

    def _serve_connection(self, raw: socket.socket, client_address: Any) -> None:
        raw.settimeout(10)
        try:
            conn = self.context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            with self._lock:
                self.handshake_errors.append(exc)
            return
        with self._lock:
            self.handshakes += 1
            number = self.handshakes
            self._open.add(conn)
        try:
            handler = type("_Numbered", (_Handler,), {"connection_number": number})
            handler(conn, client_address, self._server)
        except (ssl.SSLError, OSError):
            pass
        finally:
            with self._lock:
                self._open.discard(conn)
            conn.close()
