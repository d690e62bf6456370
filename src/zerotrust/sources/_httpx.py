"""The httpx drivers: run a sans-IO :data:`~zerotrust.sources._sansio.Flow` over httpx.

Transport rules applied to every request of a remote source:

* redirects are never followed (a 3xx reaches the flow, which refuses it);
* every network operation has a timeout, the response body must arrive in full within
  ``timeout`` seconds of its headers, and the whole exchange (connect, TLS, request, headers,
  body) within twice ``timeout``: httpx's timeouts apply to each read, so a server trickling
  its headers a byte at a time would otherwise hold a fetch, and the source's lock, for as long
  as it likes (your own sync ``client`` gets ``timeout`` for each operation, as every client
  does, but no whole-exchange deadline: it would have to cut connections the client may share,
  such as HTTP/2 ones); a connection opened once that time is up (after a resolver that
  answered late) is cut as soon as it opens;
* the body is streamed and abandoned as soon as it exceeds ``max_bytes`` (a larger
  ``Content-Length`` is refused before the first byte is read). Requests ask for no content
  coding (``Accept-Encoding: identity``); a server that compresses anyway may use one layer of
  ``gzip`` or ``deflate``, inflated here a bounded piece at a time, so a compressed bomb never
  grows past ``max_bytes`` in memory (other and stacked codings are refused); the body as sent
  is bounded by ``max_bytes`` too, and data after the end of the compressed stream (a second
  gzip member, trailing bytes) is refused;
* clients built here open a connection per exchange (no keep-alive): the deadline above can
  then always cut the connection an exchange uses;
* clients built here ignore proxy and certificate settings from the environment (pass your
  own ``client`` to use them) and verify the server certificate and its host name
  (``verify=False`` is refused, as is a context that would do the same);
* every httpx exception is translated into :class:`FetchError` here and nowhere else, and so
  is the ``RuntimeError`` of a client that cannot send (closed, or an async client used from
  another event loop than the one its connections belong to).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import socket
import ssl
import threading
import time
import zlib
from typing import Any, Final, TypeVar

import httpx

from zerotrust._aio import wait_for
from zerotrust._files import open_regular_file
from zerotrust.errors import ConfigurationError
from zerotrust.sources._sansio import FetchError, Flow, HttpRequest, HttpResponse
from zerotrust.x509.sslcontext import ZeroTrustSSLContext

__all__ = ["HttpxTransport", "ssl_context"]

T = TypeVar("T")
_MAX_BYTES_LIMIT = 64 << 20


def ssl_context(verify: ssl.SSLContext | str | bool) -> ssl.SSLContext:
    """The TLS context for clients built by a source: ``verify`` as httpx understands it."""
    if isinstance(verify, ssl.SSLContext):
        return _verifying(verify)
    if verify is True:  # httpx's default authorities (certifi); not SSL_CERT_FILE / _DIR
        return httpx.create_ssl_context(trust_env=False)
    if verify is False:
        raise ConfigurationError(
            "verify=False is refused: pass an ssl.SSLContext (or a CA file) that trusts the server"
        )
    if isinstance(verify, str):
        try:
            # read once, here (OpenSSL reopening the path would wait on a FIFO swapped in)
            with open_regular_file(verify) as file:
                pem = file.read(_MAX_CA_FILE_BYTES + 1)
            if len(pem) > _MAX_CA_FILE_BYTES:
                raise ConfigurationError("the CA file for verify= is larger than 1 MiB")
            # the certificates alone: bundles carry comments, not always in ASCII
            blocks = _CERTIFICATE.findall(pem)
            if not blocks:
                raise ConfigurationError("the CA file for verify= holds no PEM certificate")
            return ssl.create_default_context(cadata=b"\n".join(blocks).decode("ascii"))
        except (OSError, ssl.SSLError, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"cannot load CA file for verify=: {exc}") from None
    raise ConfigurationError("verify must be an ssl.SSLContext, a CA file path or True")


def _verifying(context: ssl.SSLContext) -> ssl.SSLContext:
    """``context`` if it verifies the server as ``verify=True`` would: a client context that
    checks the certificate and the host name (a zerotrust client context checks the server's
    SPIFFE ID instead of a host name). Anything weaker would be ``verify=False`` by another
    name."""
    if context.protocol == ssl.PROTOCOL_TLS_SERVER:
        raise ConfigurationError("a server-side ssl.SSLContext cannot verify a server")
    if context.verify_mode == ssl.CERT_NONE:
        raise ConfigurationError(
            "an ssl.SSLContext that does not verify the server's certificate (verify_mode"
            " CERT_NONE) is refused"
        )
    if not context.check_hostname and not isinstance(context, ZeroTrustSSLContext):
        raise ConfigurationError(
            "an ssl.SSLContext that does not check the server's host name (check_hostname"
            " False) is refused"
        )
    return context


_MAX_CA_FILE_BYTES = 1 << 20
_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


def _describe(exc: Exception) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, (httpx.ConnectError, OSError)):
        detail = str(exc).strip()[:160]
        return f"connection failed: {detail}" if detail else "connection failed"
    if isinstance(exc, httpx.InvalidURL):
        return "invalid URL"
    if isinstance(exc, RuntimeError):  # a closed client, or an async one of another event loop
        detail = str(exc).strip()[:160]
        return f"client unusable: {detail}" if detail else "client unusable"
    return f"transport error ({type(exc).__name__})"


_TRANSLATED = (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError, OSError, RuntimeError)
_CONNECTED = ("connection.connect_tcp.complete", "connection.start_tls.complete")


class _Deadline:
    """Cuts a blocking exchange's connection when its time is up.

    httpx has no deadline for a whole exchange. The ``trace`` extension hands over each
    connection the exchange opens; when the time is up, a timer shuts the socket down, which
    wakes the read blocked on it at once."""

    __slots__ = ("_done", "_lock", "_sockets", "_timer", "expired")

    def __init__(self, seconds: float) -> None:
        self._sockets: list[Any] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._cut)
        self._timer.daemon = True
        self._done = False
        self.expired = False

    def trace(self, event: str, info: dict[str, Any]) -> None:
        if event in _CONNECTED:
            stream = info.get("return_value")
            sock = stream.get_extra_info("socket") if stream is not None else None
            if sock is not None:
                with self._lock:
                    if not self.expired:
                        self._sockets.append(sock)  # after TLS, the TLS socket: the one in use
                        return
                # the time was up before this connection was opened (a resolver that answered
                # late): the timer cut nothing, so the connection is cut now
                with contextlib.suppress(OSError, ValueError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _cut(self) -> None:
        with self._lock:
            if self._done:  # the exchange ended first: its connection may be back in the pool
                return
            self.expired = True
            sockets = list(self._sockets)
        for sock in reversed(sockets):
            with contextlib.suppress(OSError, ValueError):  # closed or detached already
                sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def finish(self) -> None:
        """The exchange is over: a timer that has not cut yet never will."""
        with self._lock:
            self._done = True
            self._sockets.clear()
        self._timer.cancel()

    def __exit__(self, *exc: object) -> None:
        self.finish()


_DEFLATE_UNDECIDED: Final = object()  # deflate: which format is known from the first bytes
_TRAILING: Final = "response body has data after the end of its compressed stream"


class _Body:
    """Accumulates a streamed body (as sent: ``iter_raw``) within the size and time bounds,
    inflating one layer of ``gzip`` / ``deflate`` a bounded piece at a time. ``max_bytes``
    bounds the body both as sent and as inflated; data after the end of the compressed
    stream (trailing bytes, a second gzip member) is refused."""

    __slots__ = (
        "_chunks",
        "_deadline",
        "_headers",
        "_inflate",
        "_max",
        "_pending",
        "_size",
        "_status",
        "_wire",
    )

    def __init__(self, response: httpx.Response, max_bytes: int, timeout: float) -> None:
        self._status = response.status_code
        self._headers = {
            name.lower(): ", ".join(response.headers.get_list(name)) for name in response.headers
        }
        self._max = max_bytes
        self._deadline = time.monotonic() + timeout
        self._chunks: list[bytes] = []
        self._size = 0  # bytes kept (inflated)
        self._wire = 0  # bytes received (as sent)
        length = self._headers.get("content-length", "")
        if length.isdigit() and int(length) > max_bytes:
            raise FetchError(f"response is larger than {max_bytes} bytes")
        coding = self._headers.get("content-encoding", "").strip().lower()
        self._inflate: Any = None
        self._pending = b""  # deflate: the first byte, until the second tells the format
        if coding in ("gzip", "x-gzip"):
            self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif coding == "deflate":  # RFC 9110 8.4.1.2: the zlib format; some send it raw
            self._inflate = _DEFLATE_UNDECIDED
        elif coding not in ("", "identity") and self.wanted:
            raise FetchError("response content coding is not supported")

    @property
    def wanted(self) -> bool:
        """Whether the body is worth reading (a redirect's body never is)."""
        return not 300 <= self._status < 400

    def add(self, chunk: bytes) -> None:
        if time.monotonic() > self._deadline:
            raise FetchError("timed out reading the response body")
        # as sent, too: a stream that inflates to little or nothing is not read on and on
        self._wire += len(chunk)
        if self._wire > self._max:
            raise FetchError(f"response is larger than {self._max} bytes")
        inflate = self._inflate
        if inflate is None:
            self._keep(chunk)
            return
        if inflate is _DEFLATE_UNDECIDED:  # a zlib header, else raw deflate (as httpx reads)
            chunk, self._pending = self._pending + chunk, b""
            if len(chunk) < 2:  # a header is two bytes: they may come in two pieces
                self._pending = chunk
                return
            wrapped = chunk[0] & 0x0F == 8 and int.from_bytes(chunk[:2], "big") % 31 == 0
            inflate = self._inflate = zlib.decompressobj(
                zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS
            )
        try:
            while chunk:  # never more out than may still be kept, plus one byte to tell
                if inflate.eof:  # zlib would keep whatever follows in unused_data
                    raise FetchError(_TRAILING)
                self._keep(inflate.decompress(chunk, self._max - self._size + 1))
                chunk = inflate.unconsumed_tail
        except zlib.error:
            raise FetchError("response body is not valid compressed data") from None
        if inflate.unused_data:  # the stream ended within this chunk, and more followed
            raise FetchError(_TRAILING)

    def _keep(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self._max:
            raise FetchError(f"response is larger than {self._max} bytes")
        if data:
            self._chunks.append(data)

    def response(self) -> HttpResponse:
        inflate = self._inflate
        if (
            inflate is not None
            and self.wanted
            and (inflate is _DEFLATE_UNDECIDED or not inflate.eof)
        ):
            raise FetchError("response body is not valid compressed data")  # cut short
        return HttpResponse(self._status, self._headers, b"".join(self._chunks))


def _foreign(client: object) -> str:
    """What to do about a client of another HTTP library refused as ``client``."""
    if type(client).__module__.partition(".")[0] == "httpx2":
        return (
            " (this one is httpx2's: an application on httpx2 calls httpx2.alias_httpx()"
            " before anything imports httpx, and zerotrust then uses httpx2 throughout)"
        )
    return ""


class HttpxTransport:
    """Runs flows over a user's httpx client, or over clients it builds itself.

    A built sync client is kept (:meth:`close` closes it), with a new connection per
    exchange; async requests use the user's ``async_client`` or a short-lived client per
    exchange, so a source is not tied to one event loop.
    """

    __slots__ = ("_async_client", "_client", "_lock", "_max_bytes", "_own", "_ssl", "_timeout")

    def __init__(
        self,
        *,
        client: httpx.Client | None,
        async_client: httpx.AsyncClient | None,
        verify: ssl.SSLContext | str | bool,
        timeout: float,
        max_bytes: int,
    ) -> None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise ConfigurationError("timeout must be a number of seconds")
        if not (0 < timeout <= 600 and math.isfinite(timeout)):
            raise ConfigurationError("timeout must be positive and at most 600 seconds")
        if type(max_bytes) is not int or not (0 < max_bytes <= _MAX_BYTES_LIMIT):
            raise ConfigurationError(f"max_bytes must be an int from 1 to {_MAX_BYTES_LIMIT}")
        if client is not None and not isinstance(client, httpx.Client):
            raise ConfigurationError("client must be an httpx.Client" + _foreign(client))
        if async_client is not None and not isinstance(async_client, httpx.AsyncClient):
            raise ConfigurationError(
                "async_client must be an httpx.AsyncClient" + _foreign(async_client)
            )
        if client is not None and async_client is not None:
            if verify is not True:
                raise ConfigurationError("verify applies only to clients the source builds")
            self._ssl: ssl.SSLContext | None = None
        else:
            self._ssl = ssl_context(verify)
        self._client = client
        self._async_client = async_client
        self._own: httpx.Client | None = None
        self._timeout = float(timeout)
        self._max_bytes = max_bytes
        self._lock = threading.Lock()

    def _options(self) -> dict[str, Any]:
        return {
            "verify": self._ssl,
            "timeout": self._timeout,
            "follow_redirects": False,
            "trust_env": False,
            # a connection per exchange: the deadline sees (and can cut) every one it uses
            "limits": httpx.Limits(max_keepalive_connections=0),
        }

    def _sync_client(self) -> httpx.Client:
        if self._client is not None:
            return self._client
        with self._lock:
            if self._own is None:
                self._own = httpx.Client(**self._options())
            return self._own

    def after_fork(self) -> None:
        """In a forked child: the built client's connections are the parent's. It is let go
        unclosed (closing could end the parent's TLS sessions); the next request builds one."""
        self._lock = threading.Lock()
        self._own = None

    def close(self) -> None:
        """Close the sync client this transport built (a user's clients are left open)."""
        with self._lock:
            own, self._own = self._own, None
        if own is not None:
            own.close()

    def _stream_args(self, request: HttpRequest, **extensions: Any) -> dict[str, Any]:
        args: dict[str, Any] = {
            "headers": {"accept-encoding": "identity", **request.headers},
            "timeout": self._timeout,
            "follow_redirects": False,
        }
        if extensions:
            args["extensions"] = extensions
        if request.form is not None:
            args["data"] = dict(request.form)
        return args

    def send(self, request: HttpRequest) -> HttpResponse:
        """Send one request and read the bounded response (raises :class:`FetchError`)."""
        with _Deadline(2 * self._timeout) as deadline:
            cut = False  # whether the deadline holds this exchange: a client built here
            try:
                client = self._sync_client()
                # only connections of a client built here are cut; a user's client keeps its own
                cut = client is self._own
                extensions = {"trace": deadline.trace} if cut else {}
                args = self._stream_args(request, **extensions)
                with client.stream(request.method, request.url, **args) as response:
                    body = _Body(response, self._max_bytes, self._timeout)
                    if body.wanted:
                        for chunk in response.iter_raw():
                            body.add(chunk)
                    deadline.finish()
                    if cut and deadline.expired:  # a cut read ends like a body without a length
                        raise FetchError("timed out")
                    return body.response()
            except _TRANSLATED as exc:  # a cut connection fails its read: the pool drops it
                timed_out = cut and deadline.expired
                raise FetchError("timed out" if timed_out else _describe(exc)) from None

    async def send_async(self, request: HttpRequest) -> HttpResponse:
        """Async twin of :meth:`send`."""
        try:
            return await wait_for(self._send_async(request), 2 * self._timeout)
        except asyncio.TimeoutError:
            raise FetchError("timed out") from None

    async def _send_async(self, request: HttpRequest) -> HttpResponse:
        if self._async_client is not None:
            return await self._send_with(self._async_client, request)
        try:
            async with httpx.AsyncClient(**self._options()) as client:
                return await self._send_with(client, request)
        except _TRANSLATED as exc:
            raise FetchError(_describe(exc)) from None

    async def _send_with(self, client: httpx.AsyncClient, request: HttpRequest) -> HttpResponse:
        try:
            async with client.stream(
                request.method, request.url, **self._stream_args(request)
            ) as response:
                body = _Body(response, self._max_bytes, self._timeout)
                if body.wanted:
                    async for chunk in response.aiter_raw():
                        body.add(chunk)
                return body.response()
        except _TRANSLATED as exc:
            raise FetchError(_describe(exc)) from None

    def _attempt(self, request: HttpRequest) -> HttpResponse | FetchError:
        try:
            return self.send(request)
        except FetchError as exc:
            return exc

    async def _attempt_async(self, request: HttpRequest) -> HttpResponse | FetchError:
        try:
            return await self.send_async(request)
        except FetchError as exc:
            return exc

    def run(self, flow: Flow[T]) -> T:
        """Drive ``flow`` to completion, blocking on each request."""
        try:
            request = next(flow)
            while True:
                outcome = self._attempt(request)
                if isinstance(outcome, FetchError):
                    request = flow.throw(outcome)
                else:
                    request = flow.send(outcome)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    async def run_async(self, flow: Flow[T]) -> T:
        """Drive ``flow`` to completion, awaiting each request."""
        try:
            request = next(flow)
            while True:
                outcome = await self._attempt_async(request)
                if isinstance(outcome, FetchError):
                    request = flow.throw(outcome)
                else:
                    request = flow.send(outcome)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
