"""Request messages and method names reach nothing before the Guard decided, on real sync and
aio servers: a unary request's deserializer runs only for an admitted call (grpc would run it
first), and any well-formed method name is decided, served or not."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
import pytest

from tests.grpc_integration._support import (
    EXCLUSIVE_PORT,
    HEALTH,
    SERVICE,
    World,
    add_services,
    bearer,
    raw_credentials,
)
from zerotrust.grpc import AioServerInterceptor, server_credentials

BAD = b"\xffSECRET"  # a message the application's parser refuses
BAD_DETAILS = "Exception deserializing request!"  # what grpc sends for such a message
LONG = "GetCustomerOrderHistoryIncludingArchivedAndPendingShipmentsForRegion"  # 68 characters


@dataclass
class Parser:
    """A request deserializer that counts its calls; ``BAD`` fails with a message quoting it."""

    calls: list[bytes] = field(default_factory=list)

    def __call__(self, raw: bytes) -> tuple[str, bytes]:
        self.calls.append(raw)
        if raw.startswith(b"\xff"):
            raise ValueError(f"malformed message {raw!r}")
        return ("parsed", raw)


def serialize(response: tuple[str, bytes]) -> bytes:
    return response[0].encode() + b":" + response[1]


@dataclass
class App:
    parser: Parser = field(default_factory=Parser)
    ran: list[str] = field(default_factory=list)

    def services(self, *, asynchronous: bool) -> dict[str, dict[str, Any]]:
        ran, parser = self.ran, self.parser
        if asynchronous:

            async def unary(request: Any, context: Any) -> Any:
                ran.append("Unary")
                return request

            async def server_stream(request: Any, context: Any) -> AsyncIterator[Any]:
                ran.append("ServerStream")
                yield request
                yield request

            async def client_stream(requests: AsyncIterator[Any], context: Any) -> Any:
                ran.append("ClientStream")
                return ("parsed", b"%d" % len([r async for r in requests]))

            async def raw(request: bytes, context: Any) -> bytes:
                ran.append("Raw")
                return b"raw|" + request

        else:

            def unary(request: Any, context: Any) -> Any:
                ran.append("Unary")
                return request

            def server_stream(request: Any, context: Any) -> Iterator[Any]:
                ran.append("ServerStream")
                yield request
                yield request

            def client_stream(requests: Iterator[Any], context: Any) -> Any:
                ran.append("ClientStream")
                return ("parsed", b"%d" % sum(1 for _ in requests))

            def raw(request: bytes, context: Any) -> bytes:
                ran.append("Raw")
                return b"raw|" + request

        codec = {"request_deserializer": parser, "response_serializer": serialize}
        return {
            SERVICE: {
                "Unary": grpc.unary_unary_rpc_method_handler(unary, **codec),
                "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream, **codec),
                "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream, **codec),
                "Raw": grpc.unary_unary_rpc_method_handler(raw),
                LONG: grpc.unary_unary_rpc_method_handler(raw),
            }
        }


@contextmanager
def sync_serving(world: World, services: dict[str, dict[str, Any]]) -> Iterator[int]:
    pool = futures.ThreadPoolExecutor(max_workers=4)
    from zerotrust.grpc import ServerInterceptor

    server = grpc.server(
        pool,
        interceptors=[ServerInterceptor(world.guard(), exempt={HEALTH})],
        options=EXCLUSIVE_PORT,
    )
    add_services(server, services, registered=False)
    port = server.add_secure_port(
        "localhost:0", server_credentials(world.server_svid, world.bundles)
    )
    server.start()
    try:
        yield port
    finally:
        server.stop(None).wait(10)
        pool.shutdown(wait=True)


async def start_aio(
    world: World,
    interceptor: AioServerInterceptor,
    services: dict[str, dict[str, Any]],
    pool: futures.ThreadPoolExecutor,
) -> tuple[Any, int]:
    """A started grpc.aio server with mTLS, on the running loop, and its port."""
    server = grpc.aio.server(
        migration_thread_pool=pool, interceptors=[interceptor], options=EXCLUSIVE_PORT
    )
    add_services(server, services, registered=False)
    creds = server_credentials(world.server_svid, world.bundles)
    port = server.add_secure_port("localhost:0", creds)
    await server.start()
    return server, port


@contextmanager
def aio_serving(world: World, services: dict[str, dict[str, Any]]) -> Iterator[int]:
    """A grpc.aio server on an event loop of its own thread, for the same sync client."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    pool = futures.ThreadPoolExecutor(max_workers=4)
    interceptor = AioServerInterceptor(world.guard(), exempt={HEALTH})
    started = start_aio(world, interceptor, services, pool)
    server, port = asyncio.run_coroutine_threadsafe(started, loop).result(10)
    try:
        yield port
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(None), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        pool.shutdown(wait=True)


SERVERS = {
    "sync": lambda world, app: sync_serving(world, app.services(asynchronous=False)),
    "aio-async": lambda world, app: aio_serving(world, app.services(asynchronous=True)),
    "aio-sync": lambda world, app: aio_serving(world, app.services(asynchronous=False)),
}
Serve = Callable[[World, App], Any]


def _call(channel: Any, method: str, request: bytes, metadata: list[tuple[str, str]]) -> Any:
    try:
        if method == "ServerStream":
            rpc = channel.unary_stream(f"/{SERVICE}/{method}")
            return list(rpc(request, metadata=metadata, timeout=10))
        if method == "ClientStream":
            rpc = channel.stream_unary(f"/{SERVICE}/{method}")
            return rpc(iter([request, request]), metadata=metadata, timeout=10)
        return channel.unary_unary(f"/{SERVICE}/{method}")(request, metadata=metadata, timeout=10)
    except grpc.RpcError as exc:
        return exc


@pytest.mark.parametrize("server", SERVERS)
def test_messages_are_deserialized_only_for_admitted_calls(
    world: World, server: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = App()
    methods = ("Unary", "ServerStream", "ClientStream")
    with (
        SERVERS[server](world, app) as port,
        grpc.secure_channel(f"localhost:{port}", raw_credentials(world)) as channel,
    ):
        # no credentials: refused and audited like any call, the message never parsed
        for method in methods:
            error = _call(channel, method, BAD, [])
            assert isinstance(error, grpc.RpcError), method
            assert (error.code(), error.details()) == (
                grpc.StatusCode.UNAUTHENTICATED,
                "missing_credentials",
            ), method
        assert app.parser.calls == [] and app.ran == []
        assert [(e.route, e.decision) for e in world.sink.events] == [
            (f"/{SERVICE}/{m}", "deny") for m in methods
        ]

        # admitted: a message the parser refuses ends the call as grpc ends it, no handler run
        token = bearer(world.token())
        with caplog.at_level(logging.WARNING, logger="zerotrust"):
            for method in ("Unary", "ServerStream"):
                error = _call(channel, method, BAD, token)
                assert isinstance(error, grpc.RpcError), method
                assert (error.code(), error.details()) == (
                    grpc.StatusCode.INTERNAL,
                    BAD_DETAILS,
                ), method
        assert app.parser.calls == [BAD, BAD] and app.ran == []
        assert [e.decision for e in world.sink.events[-2:]] == ["allow", "allow"]
        logged = [r for r in caplog.records if "could not be deserialized" in r.getMessage()]
        assert len(logged) == 2 and logged[0].levelno == logging.WARNING
        assert "SECRET" not in caplog.text and "malformed message" not in caplog.text

        # well-formed: deserialized once, after the decision; responses serialized as before
        app.parser.calls.clear()
        assert _call(channel, "Unary", b"hi", token) == b"parsed:hi"
        assert _call(channel, "ServerStream", b"hi", token) == [b"parsed:hi"] * 2
        assert _call(channel, "ClientStream", b"hi", token) == b"parsed:2"
        assert _call(channel, "Raw", b"\xffhi", token) == b"raw|\xffhi"  # no deserializer
        assert app.parser.calls == [b"hi"] * 4
        assert app.ran == ["Unary", "ServerStream", "ClientStream", "Raw"]


@pytest.mark.parametrize("server", SERVERS)
def test_long_well_formed_names_are_decided_served_or_not(world: World, server: str) -> None:
    app = App()
    served, unserved = f"/{SERVICE}/{LONG}", f"/{SERVICE}/{LONG}X"
    long_service = "/" + "a" * 200 + ".Svc/M"  # a service part over 191 characters
    at_limit = "/" + "b" * 251 + ".S/M"  # 256 characters: still a name a method can have
    over_limit = at_limit + "x"
    assert len(at_limit) == 256 and len(long_service) < 256
    with (
        SERVERS[server](world, app) as port,
        grpc.secure_channel(f"localhost:{port}", raw_credentials(world)) as channel,
    ):

        def code(name: str, metadata: list[tuple[str, str]]) -> Any:
            try:
                return channel.unary_unary(name)(b"x", metadata=metadata, timeout=10)
            except grpc.RpcError as exc:
                return exc.code()

        # an anonymous caller cannot tell a served long name from an unserved one
        for name in (served, unserved, long_service, at_limit):
            assert code(name, []) == grpc.StatusCode.UNAUTHENTICATED, name
        assert [(e.route, e.decision) for e in world.sink.events] == [
            (name, "deny") for name in (served, unserved, long_service, at_limit)
        ]
        token = bearer(world.token())
        assert code(served, token) == b"raw|x"
        assert code(unserved, token) == grpc.StatusCode.UNIMPLEMENTED
        assert world.sink.events[-1].route == unserved
        assert world.sink.events[-1].decision == "allow"
        # a name over 256 characters names nothing: answered at once, not audited
        audited = len(world.sink.events)
        assert code(over_limit, []) == grpc.StatusCode.UNIMPLEMENTED
        assert len(world.sink.events) == audited


def test_the_wrapped_handlers_are_cached(world: World) -> None:
    """The per-method wrapper is built once, whatever the deserializer."""
    from zerotrust.grpc import ServerInterceptor

    app = App()
    handler = app.services(asynchronous=False)[SERVICE]["Unary"]
    interceptor = ServerInterceptor(world.guard())

    class Details:
        method = f"/{SERVICE}/Unary"

    first = interceptor.intercept_service(lambda _: handler, Details())
    assert interceptor.intercept_service(lambda _: handler, Details()) is first
    assert first.request_deserializer is None  # the wrapper deserializes, once admitted
    assert first.response_serializer is serialize


def test_a_wrapper_is_reused_only_for_the_same_handler(world: World) -> None:
    """Another handler for the same method (a server re-registered, an interceptor before
    zerotrust building a new one per call) gets its own wrapper, never a stale one."""
    from zerotrust.grpc import ServerInterceptor

    first_app, second_app = App(), App()
    first = first_app.services(asynchronous=False)[SERVICE]["Unary"]
    second = second_app.services(asynchronous=False)[SERVICE]["Raw"]
    interceptor = ServerInterceptor(world.guard())

    class Details:
        method = f"/{SERVICE}/Unary"

    wrapped = interceptor.intercept_service(lambda _: first, Details())
    other = interceptor.intercept_service(lambda _: second, Details())
    assert other is not wrapped
    assert other.response_serializer is None  # the second handler's, not the first's


def test_an_aio_wrapper_is_reused_only_for_the_same_handler(world: World) -> None:
    app = App()
    first = app.services(asynchronous=True)[SERVICE]["Unary"]
    second = app.services(asynchronous=True)[SERVICE]["Raw"]
    interceptor = AioServerInterceptor(world.guard())

    class Details:
        method = f"/{SERVICE}/Unary"

    async def intercept(handler: Any) -> Any:
        async def continuation(details: Any) -> Any:
            return handler

        return await interceptor.intercept_service(continuation, Details())

    async def run() -> tuple[Any, Any, Any]:
        return await intercept(first), await intercept(first), await intercept(second)

    wrapped, again, other = asyncio.run(run())
    assert again is wrapped
    assert other is not wrapped and other.response_serializer is None  # the second handler's


def test_the_sync_interceptor_refuses_async_handlers(world: World) -> None:
    from zerotrust.errors import ConfigurationError
    from zerotrust.grpc import ServerInterceptor

    interceptor = ServerInterceptor(world.guard())
    for name, handler in App().services(asynchronous=True)[SERVICE].items():

        class Details:
            method = f"/{SERVICE}/{name}"

        with pytest.raises(ConfigurationError, match="need the AioServerInterceptor"):
            interceptor.intercept_service(lambda _, h=handler: h, Details())


def test_an_aio_interceptor_serves_a_server_on_another_event_loop(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """A sync handler's wrapper waits for the Guard on the loop it was built for: a server
    started later on another loop with the same interceptor gets wrappers of its own. Run in
    grpc's pool as usual, the handler is not taken for one called on the loop."""
    interceptor = AioServerInterceptor(world.guard(), exempt={HEALTH})
    # the same handler on both servers, under a name no other test serves (the warning about a
    # sync handler run on the loop is logged once per method)
    services = {SERVICE: {"OnEachLoop": App().services(asynchronous=False)[SERVICE]["Raw"]}}

    async def serve_once() -> Any:
        pool = futures.ThreadPoolExecutor(max_workers=2)
        server, port = await start_aio(world, interceptor, services, pool)
        try:
            async with grpc.aio.secure_channel(
                f"localhost:{port}", raw_credentials(world)
            ) as channel:
                rpc = channel.unary_unary(f"/{SERVICE}/OnEachLoop")
                return await rpc(
                    b"x", metadata=grpc.aio.Metadata(*bearer(world.token())), timeout=10
                )
        finally:
            await server.stop(None)
            await asyncio.to_thread(pool.shutdown, True)

    with caplog.at_level(logging.WARNING, logger="zerotrust"):
        assert asyncio.run(serve_once()) == b"raw|x"
        assert asyncio.run(serve_once()) == b"raw|x"
    assert "event loop" not in caplog.text
