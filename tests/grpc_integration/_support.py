"""Real grpc servers on loopback with mTLS, for the interceptor and channel tests.

No protobuf codegen: the test service ``test.Echo`` is registered with grpc's generic handlers
and raw ``bytes`` messages. Servers bind ``localhost:0`` and clients dial ``localhost:PORT``:
the server SVIDs carry the DNS SAN ``localhost``, which grpc's client checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import socket
import struct
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent import futures
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
import pytest
from cryptography.hazmat.primitives import serialization

from tests._sockets import close_listener
from zerotrust import (
    Authenticator,
    BundleSet,
    Callers,
    Clock,
    DPoPConfig,
    DPoPNonces,
    Guard,
    MemorySink,
    Operations,
    Policy,
    RateLimit,
    Rule,
    X509Svid,
)
from zerotrust._clock import SYSTEM_CLOCK
from zerotrust.authz import Requirement
from zerotrust.dev import DevCA
from zerotrust.errors import KeysUnavailable
from zerotrust.grpc import (
    AioServerInterceptor,
    ServerInterceptor,
    current_principal,
    require,
    server_credentials,
)
from zerotrust.tokens import PrivateJWK, TokenIssuer, TokenVerifier

ISS = "https://issuer.test"
AUD = "spiffe://example.org/echo"
SERVER_ID = "spiffe://example.org/echo"
CLIENT_ID = "spiffe://example.org/client"
INTRUDER = "spiffe://example.org/intruder"
SERVICE = "test.Echo"
METHODS = ("Unary", "ServerStream", "ClientStream", "Bidi")
HEALTH = "/grpc.health.v1.Health/Check"
#: Server options for a port of the server's own: grpc binds with SO_REUSEPORT by default, and
#: a server on port 0 may then share its port with another test's server (crosstalk).
EXCLUSIVE_PORT: list[tuple[str, Any]] = [("grpc.so_reuseport", 0)]


def who() -> bytes:
    principal = current_principal()
    if principal is None:
        return b"anonymous"
    return str(principal.spiffe_id or principal.subject).encode()


# --- handlers: sync, and async (coroutines, async generators, reader/writer) --------------------


@dataclass
class Seen:
    """What the handlers saw: (method, principal id) per invocation."""

    calls: list[tuple[str, bytes]] = field(default_factory=list)

    def note(self, method: str) -> bytes:
        principal = who()
        self.calls.append((method, principal))
        return principal


def sync_handlers(seen: Seen) -> dict[str, dict[str, Any]]:
    def unary(request: bytes, context: Any) -> bytes:
        return seen.note("Unary") + b"|" + request

    def server_stream(request: bytes, context: Any) -> Iterator[bytes]:
        for i in range(3):
            yield seen.note("ServerStream") + b"|%d" % i

    def client_stream(requests: Iterator[bytes], context: Any) -> bytes:
        count = sum(1 for _ in requests)
        return seen.note("ClientStream") + b"|%d" % count

    def bidi(requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
        for request in requests:
            yield seen.note("Bidi") + b"|" + request

    @require(scopes=["admin"])
    def admin(request: bytes, context: Any) -> bytes:
        return seen.note("Admin")

    def mapped(request: bytes, context: Any) -> bytes:
        return seen.note("Mapped")

    return _generic(unary, server_stream, client_stream, bidi, admin, mapped, seen)


def async_handlers(seen: Seen) -> dict[str, dict[str, Any]]:
    async def unary(request: bytes, context: Any) -> bytes:
        return seen.note("Unary") + b"|" + request

    async def server_stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
        for i in range(3):
            yield seen.note("ServerStream") + b"|%d" % i

    async def client_stream(requests: AsyncIterator[bytes], context: Any) -> bytes:
        count = 0
        async for _ in requests:
            count += 1
        return seen.note("ClientStream") + b"|%d" % count

    async def bidi(requests: Any, context: Any) -> None:  # the reader/writer API
        while True:
            request = await context.read()
            if request is grpc.aio.EOF:
                return
            await context.write(seen.note("Bidi") + b"|" + request)

    @require(scopes=["admin"])
    async def admin(request: bytes, context: Any) -> bytes:
        return seen.note("Admin")

    async def mapped(request: bytes, context: Any) -> bytes:
        return seen.note("Mapped")

    return _generic(unary, server_stream, client_stream, bidi, admin, mapped, seen)


def _generic(
    unary: Any,
    server_stream: Any,
    client_stream: Any,
    bidi: Any,
    admin: Any,
    mapped: Any,
    seen: Seen,
) -> dict[str, dict[str, Any]]:
    def check(request: bytes, context: Any) -> bytes:
        return b"SERVING:" + who()

    return {
        SERVICE: {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
            "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
            "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
            "Admin": grpc.unary_unary_rpc_method_handler(admin),
            "Mapped": grpc.unary_unary_rpc_method_handler(mapped),
            "Limited": grpc.unary_unary_rpc_method_handler(unary),
        },
        "grpc.health.v1.Health": {"Check": grpc.unary_unary_rpc_method_handler(check)},
    }


def add_services(server: Any, services: dict[str, dict[str, Any]], *, registered: bool) -> None:
    """Generic handlers, or registered method handlers (what generated code uses)."""
    for name, methods in services.items():
        if registered:
            if not hasattr(server, "add_registered_method_handlers"):
                pytest.skip("this grpcio has no registered method handlers (generated code's)")
            server.add_registered_method_handlers(name, methods)
        else:
            server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(name, methods)])


# --- identities, tokens, the guard -------------------------------------------------------------


class DownKeys:
    def get_keys(self, *, missing_kid: str | None = None) -> object:
        raise KeysUnavailable("jwks endpoint down")

    async def get_keys_async(self, *, missing_kid: str | None = None) -> object:
        raise KeysUnavailable("jwks endpoint down")


@dataclass
class World:
    ca: DevCA
    other_ca: DevCA
    server_svid: X509Svid
    client_svid: X509Svid
    issuer: TokenIssuer
    sink: MemorySink = field(default_factory=MemorySink)

    @property
    def bundles(self) -> BundleSet:
        return BundleSet([self.ca.bundle, self.other_ca.bundle])

    def token(self, subject: str = CLIENT_ID, scopes: tuple[str, ...] = ()) -> str:
        return self.issuer.issue(subject=subject, audience=AUD, scopes=list(scopes), ttl=300)

    def guard(
        self,
        *,
        keys_down: bool = False,
        dpop_origins: tuple[str, ...] = (),
        dpop_nonces: DPoPNonces | None = None,
        clock: Clock = SYSTEM_CLOCK,
        audit: Any = None,
        keys: Any = None,
    ) -> Guard:
        if keys is None:
            keys = DownKeys() if keys_down else self.issuer.jwks()
        verifier = TokenVerifier(
            issuer=ISS,
            audience=AUD,
            keys=keys,
            algorithms=["ES256"],
            clock=clock,
        )
        policy = Policy(
            [
                Rule(id="no-intruders", action="DENY", callers=[Callers(subjects=[INTRUDER])]),
                Rule(
                    id="echo",
                    callers=[Callers(trust_domains=["example.org"])],
                    operations=[Operations(routes=[f"/{SERVICE}/*"], kinds=["grpc"])],
                ),
            ],
            id="echo-policy",
            rate_limits=[
                RateLimit(
                    id="limited",
                    rate=0.001,
                    burst=1,
                    operations=[Operations(routes=[f"/{SERVICE}/Limited"])],
                )
            ],
        )
        authenticator = Authenticator(
            tokens=verifier,
            bundles=self.bundles,
            require_token=True,
            dpop=DPoPConfig(origins=dpop_origins, nonces=dpop_nonces),
            clock=clock,
        )
        return Guard(
            authenticator=authenticator,
            policy=policy,
            audit=self.sink if audit is None else audit,
            service="echo",
            clock=clock,
        )

    def forged_client(self) -> tuple[bytes, bytes]:
        """A certificate for an example.org SPIFFE ID, signed by the *other.org* CA: grpc's
        merged root store accepts it, zerotrust's per-trust-domain check must not."""
        now = dt.datetime.now(dt.timezone.utc)
        chain, key = self.other_ca.issue_unchecked_leaf(
            uri_sans=[CLIENT_ID],
            not_before=now - dt.timedelta(minutes=1),
            not_after=now + dt.timedelta(hours=1),
        )
        pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return pem, key_pem


def requirements() -> dict[str, Requirement]:
    from zerotrust import require as requirement

    return {f"/{SERVICE}/Mapped": requirement(scopes=["mapped"])}


def raw_credentials(world: World, *, cert: tuple[bytes, bytes] | None = None) -> Any:
    """Plain grpc channel credentials (no zerotrust client), for the server tests."""
    chain, key = cert or (world.client_svid.cert_chain_pem(), world.client_svid.private_key_pem())
    return grpc.ssl_channel_credentials(world.ca.bundle.to_pem(), key, chain)


# --- servers -------------------------------------------------------------------------------------


@contextmanager
def sync_server(
    world: World,
    guard: Guard | None = None,
    *,
    seen: Seen | None = None,
    svid: Any = None,
    exempt: tuple[str, ...] = (HEALTH,),
    interceptor: bool = True,
    registered: bool = False,
    bind: str = "localhost:0",
    require_client_auth: bool = True,
    workers: int = 8,
    handlers: Callable[[Seen], dict[str, dict[str, Any]]] = sync_handlers,
    before: tuple[Any, ...] = (),
) -> Iterator[int]:
    """A ``grpc.server`` with the interceptor (after those ``before``), serving ``test.Echo``;
    yields the port."""
    pool = futures.ThreadPoolExecutor(max_workers=workers)
    interceptors = [*before] + (
        [ServerInterceptor(guard or world.guard(), requirements=requirements(), exempt=exempt)]
        if interceptor
        else []
    )
    server = grpc.server(pool, interceptors=interceptors, options=EXCLUSIVE_PORT)
    add_services(server, handlers(seen or Seen()), registered=registered)
    creds = server_credentials(
        svid or world.server_svid, world.bundles, require_client_auth=require_client_auth
    )
    port = server.add_secure_port(bind, creds)
    assert port, f"could not bind {bind}"
    server.start()
    try:
        yield port
    finally:
        server.stop(None).wait(10)
        pool.shutdown(wait=True)


@asynccontextmanager
async def aio_server(
    world: World,
    guard: Guard | None = None,
    *,
    seen: Seen | None = None,
    handlers: Callable[[Seen], dict[str, dict[str, Any]]] = async_handlers,
    registered: bool = False,
    workers: int = 4,
    before: tuple[Any, ...] = (),
    svid: Any = None,
) -> AsyncIterator[int]:
    """A ``grpc.aio.server`` with the aio interceptor (after those ``before``); sync handlers
    run in its thread pool."""
    pool = futures.ThreadPoolExecutor(max_workers=workers)
    interceptor = AioServerInterceptor(
        guard or world.guard(), requirements=requirements(), exempt={HEALTH}
    )
    server = grpc.aio.server(
        migration_thread_pool=pool, interceptors=[*before, interceptor], options=EXCLUSIVE_PORT
    )
    add_services(server, handlers(seen or Seen()), registered=registered)
    port = server.add_secure_port(
        "localhost:0", server_credentials(svid or world.server_svid, world.bundles)
    )
    await server.start()
    try:
        yield port
    finally:
        await server.stop(None)
        await asyncio.to_thread(pool.shutdown, True)


# --- calling all four arities with a plain channel -----------------------------------------------


def call_all(channel: Any, metadata: list[tuple[str, str]], timeout: float = 10) -> dict[str, Any]:
    """Each arity once; the result or the ``grpc.RpcError`` per method."""
    out: dict[str, Any] = {}
    calls: dict[str, Callable[[], Any]] = {
        "Unary": lambda: channel.unary_unary(f"/{SERVICE}/Unary")(
            b"hi", metadata=metadata, timeout=timeout
        ),
        "ServerStream": lambda: list(
            channel.unary_stream(f"/{SERVICE}/ServerStream")(
                b"hi", metadata=metadata, timeout=timeout
            )
        ),
        "ClientStream": lambda: channel.stream_unary(f"/{SERVICE}/ClientStream")(
            iter([b"a", b"b"]), metadata=metadata, timeout=timeout
        ),
        "Bidi": lambda: list(
            channel.stream_stream(f"/{SERVICE}/Bidi")(
                iter([b"a", b"b"]), metadata=metadata, timeout=timeout
            )
        ),
    }
    for name, call in calls.items():
        out[name] = _outcome(call)
    return out


def _outcome(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except grpc.RpcError as exc:
        return exc


@dataclass
class Failure:
    """The final status of an aio call that failed (the shape of ``grpc.RpcError``)."""

    status: Any
    text: str

    def code(self) -> Any:
        return self.status

    def details(self) -> str:
        return self.text


async def _streaming(call: Any, writes: tuple[bytes, ...]) -> Any:
    """Write with the reader/writer API."""
    try:
        for item in writes:
            await call.write(item)
        await call.done_writing()
        if hasattr(call, "read"):
            out = []
            while (item := await call.read()) is not grpc.aio.EOF:
                out.append(item)
            return out
        return await call
    except (grpc.RpcError, asyncio.InvalidStateError):
        return Failure(await call.code(), await call.details())


async def acall_all(
    channel: Any, metadata: list[tuple[str, str]], timeout: float = 10, *, refused: bool = False
) -> dict[str, Any]:
    """The aio twin of :func:`call_all`. With ``refused``, streaming calls write nothing and
    wait for the status: a write racing the refusal makes grpc's aio client report its own
    failed write (INTERNAL) instead of the server's status."""
    out: dict[str, Any] = {}
    md = grpc.aio.Metadata(*metadata)
    try:
        out["Unary"] = await channel.unary_unary(f"/{SERVICE}/Unary")(
            b"hi", metadata=md, timeout=timeout
        )
    except grpc.RpcError as exc:
        out["Unary"] = exc
    try:
        call = channel.unary_stream(f"/{SERVICE}/ServerStream")(b"hi", metadata=md, timeout=timeout)
        out["ServerStream"] = [item async for item in call]
    except grpc.RpcError as exc:
        out["ServerStream"] = exc
    client_stream = channel.stream_unary(f"/{SERVICE}/ClientStream")(metadata=md, timeout=timeout)
    bidi = channel.stream_stream(f"/{SERVICE}/Bidi")(metadata=md, timeout=timeout)
    for name, call in (("ClientStream", client_stream), ("Bidi", bidi)):
        if refused:
            out[name] = Failure(await call.code(), await call.details())
        else:
            out[name] = await _streaming(call, (b"a", b"b"))
    return out


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def make_world(ca: DevCA, other_ca: DevCA) -> World:
    return World(
        ca=ca,
        other_ca=other_ca,
        server_svid=ca.issue_svid(SERVER_ID, dns_names=["localhost"]),
        client_svid=ca.issue_svid(CLIENT_ID),
        issuer=TokenIssuer(PrivateJWK.generate("ES256", kid="k1"), issuer=ISS),
    )


# --- a relay and a bare server, for the client's identity check ---------------------------------


class Relay:
    """A TCP relay on loopback (127.0.0.1) to ``port``, or to the port ``route`` gives for a
    connection (counted from 1). Connections for which
    ``stall`` is true are accepted and never answered, as by a server stalling its handshake;
    those for which ``drop`` is true are closed at once. With ``trickle``, the server's bytes
    are passed on 16 at a time, ``trickle`` seconds apart, as by a server that keeps a
    handshake alive without finishing it in time. :meth:`die` stops listening and resets every
    connection it carries, as a server that died."""

    def __init__(
        self,
        port: int,
        *,
        stall: Callable[[int], bool] | None = None,
        drop: Callable[[int], bool] | None = None,
        trickle: float | None = None,
        route: Callable[[int], int] | None = None,
    ) -> None:
        self._target = port
        self._route = route
        self._stall = stall
        self._drop = drop
        self._trickle = trickle
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.accepted = 0
        self._sockets: list[socket.socket] = []
        self._dead = False
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                if self._dead:  # accepted just before die() closed the listener
                    client.close()
                    return
                self.accepted += 1
                number = self.accepted
                self._sockets.append(client)
            if self._stall is not None and self._stall(number):
                continue
            if self._drop is not None and self._drop(number):
                client.close()
                continue
            try:
                target = self._target if self._route is None else self._route(number)
                upstream = socket.create_connection(("127.0.0.1", target))
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._dead:  # die() ran meanwhile: it closed the client, not this one
                    upstream.close()
                    return
                self._sockets.append(upstream)
            for a, b, trickle in ((client, upstream, None), (upstream, client, self._trickle)):
                threading.Thread(target=self._pipe, args=(a, b, trickle), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, trickle: float | None) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(16 if trickle else 65536):
                if trickle:
                    with self._lock:
                        if self._dead:
                            return
                    threading.Event().wait(trickle)
                sink.sendall(data)

    def stop_listening(self) -> None:
        close_listener(self._listener)

    def die(self) -> None:
        """Reset every connection (and stop listening, if not done yet)."""
        self.stop_listening()
        with self._lock:  # a connection accepted from now on is closed by the accepting thread
            self._dead = True
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


@dataclass
class Recorded:
    """What a bare server received: (metadata, request) per call."""

    calls: list[tuple[dict[str, Any], bytes]] = field(default_factory=list)


@contextmanager
def bare_server(
    svid: X509Svid,
    bundles: Any,
    handler: Callable[[bytes, Any], bytes] | None = None,
    *,
    bind: str = "localhost:0",
) -> Iterator[tuple[int, Recorded]]:
    """A grpc server without zerotrust's interceptor serving the four methods of ``test.Echo``
    (each answers what ``handler`` returns for the first request message, streams with one
    response), recording every call it receives; yields its port and the record."""
    recorded = Recorded()

    def unary(request: bytes, context: Any) -> bytes:
        recorded.calls.append((dict(context.invocation_metadata()), request))
        return handler(request, context) if handler is not None else b"bare|" + request

    def server_stream(request: bytes, context: Any) -> Iterator[bytes]:
        yield unary(request, context)

    def client_stream(requests: Iterator[bytes], context: Any) -> bytes:
        return unary(next(requests, b""), context)

    def bidi(requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
        yield unary(next(requests, b""), context)

    pool = futures.ThreadPoolExecutor(max_workers=8)
    server = grpc.server(pool, options=EXCLUSIVE_PORT)
    methods = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
    }
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, methods)])
    port = server.add_secure_port(bind, server_credentials(svid, bundles))
    assert port, f"could not bind {bind}"
    server.start()
    try:
        yield port, recorded
    finally:
        server.stop(None).wait(10)
        pool.shutdown(wait=True)


def client_options(world: World, **overrides: Any) -> dict[str, Any]:
    """The arguments of a client channel to the test server, with ``overrides``."""
    from zerotrust import SelfIssuedTokenSource

    base: dict[str, Any] = {
        "svid": world.client_svid,
        "bundles": world.ca.bundle,
        "server_id": SERVER_ID,
        "token_source": SelfIssuedTokenSource(world.issuer, subject=CLIENT_ID),
    }
    return {**base, **overrides}
