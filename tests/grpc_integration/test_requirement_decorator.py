"""``@require`` on servicer methods holds whatever other interceptors the server runs.

The interceptor reads the requirement from the handler it is given; an interceptor placed
after zerotrust (OpenTelemetry's, a logger) hands it a replacement handler instead, which
hides it. The decorated method then checks it itself before it runs.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from typing import Any

import grpc
import grpc.aio
import pytest

from tests.grpc_integration._support import CLIENT_ID, EXCLUSIVE_PORT, World
from zerotrust.grpc import AioServerInterceptor, ServerInterceptor, current_principal, require

SERVICE = "test.Echo"  # what the test policy admits: /test.Echo/*
METHOD = f"/{SERVICE}/Create"


class Rewrapping(grpc.ServerInterceptor):  # type: ignore[misc]
    """Replaces every unary-request handler with its own (as tracing and logging interceptors
    do)."""

    def intercept_service(self, continuation: Callable[..., Any], details: Any) -> Any:
        handler = continuation(details)
        if handler.response_streaming:
            streaming = handler.unary_stream

            def stream(request: Any, context: Any) -> Iterator[Any]:
                yield from streaming(request, context)

            return grpc.unary_stream_rpc_method_handler(stream)
        inner = handler.unary_unary

        def behavior(request: Any, context: Any) -> Any:  # a new function, as wrappers make
            return inner(request, context)

        return grpc.unary_unary_rpc_method_handler(behavior)


class AioRewrapping(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    async def intercept_service(self, continuation: Callable[..., Any], details: Any) -> Any:
        handler = await continuation(details)
        if handler.response_streaming:
            streaming = handler.unary_stream

            async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
                async for item in streaming(request, context):
                    yield item

            return grpc.unary_stream_rpc_method_handler(stream)
        inner = handler.unary_unary

        async def behavior(request: Any, context: Any) -> Any:
            return await inner(request, context)

        return grpc.unary_unary_rpc_method_handler(behavior)


class AioAdapting(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Serves every unary-request handler as an async one, calling a sync method itself on the
    event loop with grpc's aio context (iterating a sync generator in place), as interceptors
    that adapt sync handlers do."""

    async def intercept_service(self, continuation: Callable[..., Any], details: Any) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None
        if handler.response_streaming:
            streaming = handler.unary_stream

            async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
                result = streaming(request, context)
                if inspect.isasyncgen(result):
                    async for item in result:
                        yield item
                else:
                    for item in result:
                        yield item

            return grpc.unary_stream_rpc_method_handler(stream)
        inner = handler.unary_unary

        async def behavior(request: Any, context: Any) -> Any:
            result = inner(request, context)
            return await result if inspect.isawaitable(result) else result

        return grpc.unary_unary_rpc_method_handler(behavior)


class Orders:
    def __init__(self) -> None:
        self.ran: list[str] = []  # the methods whose body ran

    @require(scopes=["orders:write"])
    def Create(self, request: bytes, context: Any) -> bytes:
        self.ran.append("Create")
        principal = current_principal()
        return b"created by " + str(principal.spiffe_id if principal else None).encode()

    @require(scopes=["orders:write"])
    def Watch(self, request: bytes, context: Any) -> Iterator[bytes]:
        self.ran.append("Watch")
        principal = current_principal()
        yield b"watched by " + str(principal.spiffe_id if principal else None).encode()
        yield b"done"


class AsyncOrders:
    @require(scopes=["orders:write"])
    async def Create(self, request: bytes, context: Any) -> bytes:
        principal = current_principal()
        return b"created by " + str(principal.spiffe_id if principal else None).encode()

    @require(scopes=["orders:write"])
    async def Watch(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        principal = current_principal()
        yield b"watched by " + str(principal.spiffe_id if principal else None).encode()
        yield b"done"


WATCHED = [b"watched by " + CLIENT_ID.encode(), b"done"]


def _handlers(servicer: Any) -> Any:
    methods = {"Create": grpc.unary_unary_rpc_method_handler(servicer.Create)}
    if hasattr(servicer, "Watch"):
        methods["Watch"] = grpc.unary_stream_rpc_method_handler(servicer.Watch)
    return grpc.method_handlers_generic_handler(SERVICE, methods)


@contextmanager
def _server(interceptors: list[Any]) -> Iterator[int]:
    pool = futures.ThreadPoolExecutor(max_workers=4)
    server = grpc.server(pool, interceptors=interceptors, options=EXCLUSIVE_PORT)
    server.add_generic_rpc_handlers([_handlers(Orders())])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port
    finally:
        server.stop(None).wait(10)
        pool.shutdown(wait=True)


def _call(port: int, token: str) -> bytes | grpc.StatusCode:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply: bytes = channel.unary_unary(METHOD)(
                b"", metadata=[("authorization", f"Bearer {token}")], timeout=10
            )
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[no-any-return]
        return reply


def _watch(port: int, token: str) -> list[bytes] | grpc.StatusCode:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            return list(
                channel.unary_stream(f"/{SERVICE}/Watch")(
                    b"", metadata=[("authorization", f"Bearer {token}")], timeout=10
                )
            )
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[no-any-return]


def _refused(port: int, token: str) -> grpc.RpcError:
    with (
        grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
        pytest.raises(grpc.RpcError) as info,
    ):
        channel.unary_unary(METHOD)(
            b"", metadata=[("authorization", f"Bearer {token}")], timeout=10
        )
    return info.value


def _ordered(zerotrust: ServerInterceptor, order: str) -> list[Any]:
    """zerotrust's interceptor alone, or before or after one that wraps handlers anew."""
    return {
        "zerotrust only": [zerotrust],
        "zerotrust first": [zerotrust, Rewrapping()],
        "zerotrust last": [Rewrapping(), zerotrust],
    }[order]


@pytest.mark.parametrize("order", ["zerotrust only", "zerotrust first", "zerotrust last"])
def test_a_method_requirement_holds_in_any_interceptor_order(world: World, order: str) -> None:
    with _server(_ordered(ServerInterceptor(world.guard()), order)) as port:
        assert _call(port, world.token()) == grpc.StatusCode.PERMISSION_DENIED
        refused = world.sink.last
        assert refused is not None and refused.reason == "insufficient_scope"
        reply = _call(port, world.token(scopes=("orders:write",)))
    assert reply == b"created by " + CLIENT_ID.encode()


@pytest.mark.parametrize("order", ["zerotrust only", "zerotrust first", "zerotrust last"])
def test_a_streaming_method_requirement_holds_in_any_interceptor_order(
    world: World, order: str
) -> None:
    with _server(_ordered(ServerInterceptor(world.guard()), order)) as port:
        assert _watch(port, world.token()) == grpc.StatusCode.PERMISSION_DENIED
        assert _watch(port, world.token(scopes=("orders:write",))) == WATCHED
    with _server([]) as port:  # no zerotrust interceptor: the method refuses to run undecided
        assert _watch(port, world.token(scopes=("orders:write",))) == grpc.StatusCode.INTERNAL


@pytest.mark.parametrize("order", ["zerotrust only", "zerotrust first"])
def test_a_refusal_by_the_method_carries_the_challenge(world: World, order: str) -> None:
    """Whether the interceptor or the decorated method refuses (an interceptor after zerotrust
    hid the requirement), the caller gets the same status, details and challenge; the call is
    refused in one audited decision when the interceptor saw the requirement."""
    zerotrust = ServerInterceptor(world.guard())
    chain = [zerotrust] if order == "zerotrust only" else [zerotrust, Rewrapping()]
    with _server(chain) as port:
        error = _refused(port, world.token())
    assert (error.code(), error.details()) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "insufficient_scope",
    )
    challenge = dict(tuple(error.trailing_metadata()))["www-authenticate"]
    assert 'error="insufficient_scope"' in challenge and 'scope="orders:write"' in challenge
    decisions = [e.decision for e in world.sink.events]
    assert decisions == (["deny"] if order == "zerotrust only" else ["allow", "deny"])


def test_a_mapped_and_a_decorated_requirement_must_both_hold(world: World) -> None:
    """``requirements={method: ...}`` on the interceptor and ``@require`` on the method: the
    call needs what each asks for (neither replaces the other)."""
    from zerotrust import require as requirement

    mapped = {METHOD: requirement(scopes=["orders:audit"])}
    with _server([ServerInterceptor(world.guard(), requirements=mapped)]) as port:
        only_decorated = _call(port, world.token(scopes=("orders:write",)))
        only_mapped = _call(port, world.token(scopes=("orders:audit",)))
        both = _call(port, world.token(scopes=("orders:write", "orders:audit")))
    assert only_decorated == only_mapped == grpc.StatusCode.PERMISSION_DENIED
    assert both == b"created by " + CLIENT_ID.encode()
    # the interceptor decided on both requirements at once: one audited decision per call
    assert [e.decision for e in world.sink.events] == ["deny", "deny", "allow"]


@pytest.mark.parametrize("server", ["sync", "aio"])
def test_a_mapped_requirement_holds_for_a_method_the_server_does_not_serve(
    world: World, server: str
) -> None:
    """A name in ``requirements=`` that this server does not serve (yet, or any longer) is
    decided with its requirement: a caller it refuses is refused and audited as such, and only
    a caller it admits learns that the method is not served here."""
    from zerotrust import require as requirement

    missing = f"/{SERVICE}/Cancel"
    mapped = {missing: requirement(scopes=["orders:admin"])}

    async def calls(port: int) -> list[grpc.StatusCode]:
        codes = []
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            for scopes in (("orders:write",), ("orders:admin",)):
                token = world.token(scopes=scopes)
                with pytest.raises(grpc.RpcError) as info:
                    await channel.unary_unary(missing)(
                        b"", metadata=[("authorization", f"Bearer {token}")], timeout=10
                    )
                codes.append(info.value.code())
        return codes

    async def aio() -> list[grpc.StatusCode]:
        interceptor = AioServerInterceptor(world.guard(), requirements=mapped)
        aio_server = grpc.aio.server(interceptors=[interceptor], options=EXCLUSIVE_PORT)
        aio_server.add_generic_rpc_handlers([_handlers(AsyncOrders())])
        port = aio_server.add_insecure_port("127.0.0.1:0")
        await aio_server.start()
        try:
            return await calls(port)
        finally:
            await aio_server.stop(None)

    if server == "sync":
        with _server([ServerInterceptor(world.guard(), requirements=mapped)]) as port:
            codes = asyncio.run(calls(port))
    else:
        codes = asyncio.run(aio())
    assert codes == [grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNIMPLEMENTED]
    assert [(e.method, e.decision, e.reason) for e in world.sink.events] == [
        (missing, "deny", "insufficient_scope"),
        (missing, "allow", "allowed_by_rule"),
    ]


def test_interceptor_requirements_and_exemptions_are_checked(world: World) -> None:
    from zerotrust import require as requirement
    from zerotrust.errors import ConfigurationError

    guard, scoped = world.guard(), requirement(scopes=["orders:write"])
    for bad in (
        {"test.Echo/Create": scoped},
        {METHOD: "orders:write"},
        {None: scoped},  # names that are no str: refused as configuration, like exempt's
        {METHOD.encode(): scoped},
    ):
        with pytest.raises(ConfigurationError, match="requirements maps"):
            ServerInterceptor(guard, requirements=bad)  # type: ignore[arg-type]
    for exempt in (["test.Echo/Create"], [None]):
        with pytest.raises(ConfigurationError, match="full method names"):
            ServerInterceptor(guard, exempt=exempt)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="collection of full method names"):
        ServerInterceptor(guard, exempt=METHOD)
    with pytest.raises(ConfigurationError, match="guard must be"):
        ServerInterceptor(object())  # type: ignore[arg-type]


def test_a_method_with_a_requirement_never_runs_undecided(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """No zerotrust interceptor at all: the method refuses rather than run unchecked, and says
    why in the log once (such calls come from anyone: one line each would let them fill it)."""
    from zerotrust.adapters import grpc_server

    grpc_server._undecided.clear()
    with caplog.at_level("ERROR", logger="zerotrust"), _server([]) as port:
        for _ in range(3):
            assert _call(port, world.token(scopes=("orders:write",))) == grpc.StatusCode.INTERNAL
    said = [r for r in caplog.records if "without the zerotrust interceptor" in r.getMessage()]
    assert len(said) == 1


def test_the_aio_server_holds_it_too(world: World) -> None:
    async def run() -> list[bytes | grpc.StatusCode]:
        server = grpc.aio.server(
            interceptors=[AioServerInterceptor(world.guard()), AioRewrapping()],
            options=EXCLUSIVE_PORT,
        )
        server.add_generic_rpc_handlers([_handlers(AsyncOrders())])
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        results: list[bytes | grpc.StatusCode] = []
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                for scopes in ((), ("orders:write",)):
                    token = world.token(scopes=scopes)
                    try:
                        results.append(
                            await channel.unary_unary(METHOD)(
                                b"", metadata=[("authorization", f"Bearer {token}")], timeout=10
                            )
                        )
                    except grpc.aio.AioRpcError as exc:
                        results.append(exc.code())
        finally:
            await server.stop(None)
        return results

    assert asyncio.run(run()) == [
        grpc.StatusCode.PERMISSION_DENIED,
        b"created by " + CLIENT_ID.encode(),
    ]


def test_an_async_streaming_method_requirement_holds_on_the_aio_server(world: World) -> None:
    async def run(interceptors: list[Any]) -> list[list[bytes] | grpc.StatusCode]:
        server = grpc.aio.server(interceptors=interceptors, options=EXCLUSIVE_PORT)
        server.add_generic_rpc_handlers([_handlers(AsyncOrders())])
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        results: list[list[bytes] | grpc.StatusCode] = []
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                for scopes in ((), ("orders:write",)):
                    token = world.token(scopes=scopes)
                    call = channel.unary_stream(f"/{SERVICE}/Watch")(
                        b"", metadata=[("authorization", f"Bearer {token}")], timeout=10
                    )
                    try:
                        results.append([item async for item in call])
                    except grpc.aio.AioRpcError as exc:
                        results.append(exc.code())
        finally:
            await server.stop(None)
        return results

    for interceptors in (
        [AioServerInterceptor(world.guard())],
        [AioServerInterceptor(world.guard()), AioRewrapping()],
    ):
        assert asyncio.run(run(interceptors)) == [grpc.StatusCode.PERMISSION_DENIED, WATCHED]
    # no zerotrust interceptor: the method refuses to run undecided, whoever calls
    assert asyncio.run(run([])) == [grpc.StatusCode.INTERNAL, grpc.StatusCode.INTERNAL]


def test_a_sync_method_handed_the_aio_context_never_runs_refused(world: World) -> None:
    """A sync method (plain or generator) that an interceptor after zerotrust calls on the
    event loop gets grpc's aio context, whose ``abort`` is a coroutine the method cannot
    await: the refused call ends (``UNKNOWN``: the status cannot be sent from there) and the
    method's body never runs, whether zerotrust decided on the call (and its requirement was
    hidden) or no zerotrust interceptor ran at all. No coroutine is left un-awaited."""

    async def run(interceptors: list[Any], orders: Orders, scopes: tuple[str, ...]) -> list[Any]:
        server = grpc.aio.server(interceptors=interceptors, options=EXCLUSIVE_PORT)
        server.add_generic_rpc_handlers([_handlers(orders)])
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        metadata = [("authorization", f"Bearer {world.token(scopes=scopes)}")]
        results: list[Any] = []
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                try:
                    results.append(
                        await channel.unary_unary(METHOD)(b"", metadata=metadata, timeout=10)
                    )
                except grpc.aio.AioRpcError as exc:
                    results.append(exc.code())
                watch = channel.unary_stream(f"/{SERVICE}/Watch")
                try:
                    results.append([i async for i in watch(b"", metadata=metadata, timeout=10)])
                except grpc.aio.AioRpcError as exc:
                    results.append(exc.code())
        finally:
            await server.stop(None)
        return results

    refused = [grpc.StatusCode.UNKNOWN] * 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        decided, undecided, admitted = Orders(), Orders(), Orders()
        hidden = [AioServerInterceptor(world.guard()), AioAdapting()]
        assert asyncio.run(run(hidden, decided, ())) == refused
        assert asyncio.run(run([AioAdapting()], undecided, ("orders:write",))) == refused
        assert asyncio.run(run(hidden, admitted, ("orders:write",))) == [
            b"created by " + CLIENT_ID.encode(),
            WATCHED,
        ]
        gc.collect()
    assert decided.ran == undecided.ran == []
    assert admitted.ran == ["Create", "Watch"]
    # each refusal by the method is audited, after the interceptor admitted the call
    assert [(e.decision, e.reason) for e in world.sink.events[:4]] == [
        ("allow", "allowed_by_rule"),
        ("deny", "insufficient_scope"),
    ] * 2
    assert [w.message for w in caught if issubclass(w.category, RuntimeWarning)] == []


def test_a_requirement_attribute_that_is_not_a_requirement_is_refused(world: World) -> None:
    from zerotrust.adapters.grpc_server import REQUIREMENT_ATTRIBUTE
    from zerotrust.errors import ConfigurationError

    def create(request: bytes, context: Any) -> bytes:
        return b"created"

    setattr(create, REQUIREMENT_ATTRIBUTE, "orders:write")  # not a Requirement

    class Details:
        method = METHOD

    handler = grpc.unary_unary_rpc_method_handler(create)
    with pytest.raises(ConfigurationError, match="is not a Requirement"):
        ServerInterceptor(world.guard()).intercept_service(lambda _: handler, Details())


def test_stacked_requirements_run_every_decorator_between_them(world: World) -> None:
    """Each ``@require`` wraps what it is given: a decorator of the application's placed
    between two of them still runs, and both requirements hold."""
    import functools

    ran: list[str] = []

    def logged(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            ran.append("logged")
            return fn(*args, **kwargs)

        return wrapper

    class Stacked:
        @require(scopes=["orders:write"])
        @logged
        @require(scopes=["orders:admin"])
        def Create(self, request: bytes, context: Any) -> bytes:
            return b"created"

    pool = futures.ThreadPoolExecutor(max_workers=2)
    server = grpc.server(
        pool,
        interceptors=[ServerInterceptor(world.guard()), Rewrapping()],
        options=EXCLUSIVE_PORT,
    )
    server.add_generic_rpc_handlers([_handlers(Stacked())])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        assert (
            _call(port, world.token(scopes=("orders:write",))) == grpc.StatusCode.PERMISSION_DENIED
        )
        assert _call(port, world.token(scopes=("orders:write", "orders:admin"))) == b"created"
    finally:
        server.stop(None).wait(10)
        pool.shutdown(wait=True)
    assert ran == ["logged"]  # once, for the call that was allowed


def test_require_takes_the_documented_keywords_only() -> None:
    # typed like zerotrust.require, so a type checker catches `scope=` and friends
    import inspect

    parameters = inspect.signature(require).parameters
    assert list(parameters) == ["scopes", "any_scopes", "callers", "proven_by"]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters.values())
    with pytest.raises(TypeError):
        require(scope=["orders:write"])  # type: ignore[call-arg]
