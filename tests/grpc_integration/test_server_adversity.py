"""The server interceptors under adverse calls: deadlines that pass while the Guard decides."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import grpc.aio
import pytest

from tests.grpc_integration._ended import AioEndWatcher, EndWatcher
from tests.grpc_integration._support import (
    CLIENT_ID,
    INTRUDER,
    SERVICE,
    Seen,
    World,
    aio_server,
    async_handlers,
    bearer,
    raw_credentials,
    sync_handlers,
    sync_server,
)
from zerotrust.tokens import JWKSet


class SlowKeys:
    """A key source that answers only once released; ``entered`` is set when first asked."""

    def __init__(self, keys: JWKSet) -> None:
        self._keys = keys
        self.entered = threading.Event()
        self.release = threading.Event()

    def get_keys(self, *, missing_kid: str | None = None) -> JWKSet:
        self.entered.set()
        self.release.wait(30)
        return self._keys

    async def get_keys_async(self, *, missing_kid: str | None = None) -> JWKSet:
        self.entered.set()
        await asyncio.to_thread(self.release.wait, 30)
        return self._keys


def _slow_guard(world: World) -> tuple[Any, SlowKeys]:
    keys = SlowKeys(JWKSet.from_dict(world.issuer.jwks()))
    return world.guard(keys=keys), keys


async def _ended_while_deciding(
    world: World, port: int, keys: SlowKeys, token: str, end: str, ended: threading.Event
) -> grpc.StatusCode:
    """A unary call that ends (its deadline passes, or the client cancels it) while the Guard
    waits for the key source; the source is released once the server saw the call end."""
    async with grpc.aio.secure_channel(f"localhost:{port}", raw_credentials(world)) as channel:
        call = channel.unary_unary(f"/{SERVICE}/Unary")(
            b"hi", metadata=bearer(token), timeout=1 if end == "deadline" else 30
        )
        assert await asyncio.to_thread(keys.entered.wait, 10)
        if end == "cancel":
            call.cancel()
        with contextlib.suppress(grpc.RpcError, asyncio.CancelledError):
            await call
        code = await call.code()
        assert await asyncio.to_thread(ended.wait, 10)
    keys.release.set()
    return code


@pytest.mark.parametrize("end", ["deadline", "cancel"])
@pytest.mark.parametrize("caller", [CLIENT_ID, INTRUDER], ids=["allowed", "refused"])
def test_aio_a_sync_handler_call_that_ends_while_the_guard_decides_is_decided_safely(
    world: World, end: str, caller: str
) -> None:
    # grpc.aio releases a call that ended: the Guard, deciding on the event loop for the
    # sync handler's thread, must not read that call's context once it resumes (it did, and
    # the process died of a segmentation fault)
    guard, keys = _slow_guard(world)
    seen = Seen()

    async def main() -> grpc.StatusCode:
        watcher = AioEndWatcher()
        async with aio_server(
            world, guard, seen=seen, handlers=sync_handlers, before=(watcher,)
        ) as port:
            token = world.token(caller)
            return await _ended_while_deciding(world, port, keys, token, end, watcher.ended)
        # leaving the server waited for its pool: the decision has been made

    code = asyncio.run(main())
    assert code is (
        grpc.StatusCode.DEADLINE_EXCEEDED if end == "deadline" else grpc.StatusCode.CANCELLED
    )
    assert [e.decision for e in world.sink.events] == ["allow" if caller == CLIENT_ID else "deny"]
    if end == "deadline":  # a sync handler's context on grpc.aio tells of no cancellation
        assert seen.calls == []


@pytest.mark.parametrize("end", ["deadline", "cancel"])
@pytest.mark.parametrize("kind", ["Unary", "ServerStream", "ClientStream", "Bidi"])
def test_sync_a_call_that_ends_while_the_guard_decides_never_reaches_its_handler(
    world: World, end: str, kind: str
) -> None:
    guard, keys = _slow_guard(world)
    seen = Seen()
    watcher = EndWatcher()
    with (
        sync_server(world, guard, seen=seen, before=(watcher,)) as port,
        grpc.secure_channel(f"localhost:{port}", raw_credentials(world)) as channel,
    ):
        method = f"/{SERVICE}/{kind}"
        request: Any = iter([b"a", b"b"]) if kind in ("ClientStream", "Bidi") else b"hi"
        options = {"metadata": bearer(world.token()), "timeout": 1 if end == "deadline" else 30}
        if kind == "Unary":
            call: Any = channel.unary_unary(method).future(request, **options)
        elif kind == "ClientStream":
            call = channel.stream_unary(method).future(request, **options)
        elif kind == "ServerStream":
            call = channel.unary_stream(method)(request, **options)
        else:
            call = channel.stream_stream(method)(request, **options)
        assert keys.entered.wait(10)
        if end == "cancel":
            call.cancel()
        with pytest.raises((grpc.RpcError, grpc.FutureCancelledError)):
            call.result() if kind in ("Unary", "ClientStream") else list(call)
        assert call.code() is (
            grpc.StatusCode.DEADLINE_EXCEEDED if end == "deadline" else grpc.StatusCode.CANCELLED
        )
        assert watcher.ended.wait(10)  # the server saw the call end too
        keys.release.set()
    # leaving the server waited for its pool: the decision has been made, the wrapper is done
    assert [e.decision for e in world.sink.events] == ["allow"]
    assert seen.calls == []


@pytest.mark.parametrize("end", ["deadline", "cancel"])
def test_aio_an_async_handler_call_that_ends_while_the_guard_decides_is_dropped(
    world: World, end: str
) -> None:
    # the call's task is cancelled with the call: the decision with it, so no audit event,
    # and the handler never runs (no task is left pending: warnings are errors here)
    guard, keys = _slow_guard(world)
    seen = Seen()

    async def main() -> grpc.StatusCode:
        watcher = AioEndWatcher()
        async with aio_server(
            world, guard, seen=seen, handlers=async_handlers, before=(watcher,)
        ) as port:
            return await _ended_while_deciding(world, port, keys, world.token(), end, watcher.ended)

    code = asyncio.run(main())
    assert code is (
        grpc.StatusCode.DEADLINE_EXCEEDED if end == "deadline" else grpc.StatusCode.CANCELLED
    )
    assert seen.calls == []
    assert world.sink.events == []


def _streams(closed: threading.Event, seen: Seen) -> Any:
    """A response stream that never ends by itself, noting its caller as it closes."""

    def forever(request: bytes, context: Any) -> Iterator[bytes]:
        try:
            while True:
                yield seen.note("Stream")
        finally:
            seen.note("closed")
            closed.set()

    async def aforever(request: bytes, context: Any) -> AsyncIterator[bytes]:
        try:
            while True:
                yield seen.note("Stream")
                await asyncio.sleep(0)
        finally:
            seen.note("closed")
            closed.set()

    def services(asynchronous: bool) -> Any:
        def make(_: Seen) -> dict[str, dict[str, Any]]:
            handler = aforever if asynchronous else forever
            return {SERVICE: {"Forever": grpc.unary_stream_rpc_method_handler(handler)}}

        return make

    return services


# not a sync handler on grpc.aio: grpc itself never closes its response stream once the
# client cancelled (the handler's thread stays blocked, with or without the interceptor)
@pytest.mark.parametrize("server", ["sync", "aio"])
def test_a_stream_the_client_cancels_midway_closes_in_its_callers_context(
    world: World, server: str
) -> None:
    closed = threading.Event()
    seen = Seen()
    services = _streams(closed, seen)

    async def consume(port: int) -> None:
        async with grpc.aio.secure_channel(f"localhost:{port}", raw_credentials(world)) as ch:
            call = ch.unary_stream(f"/{SERVICE}/Forever")(
                b"", metadata=bearer(world.token()), timeout=30
            )
            assert await call.read() == CLIENT_ID.encode()
            assert await call.read() == CLIENT_ID.encode()
            call.cancel()
            assert await call.code() is grpc.StatusCode.CANCELLED
            assert await asyncio.to_thread(closed.wait, 10)

    if server == "sync":
        with sync_server(world, handlers=services(False)) as port:
            asyncio.run(consume(port))
    else:

        async def main() -> None:
            handlers = services(True)
            async with aio_server(world, handlers=handlers) as port:
                await consume(port)

        asyncio.run(main())
    assert seen.calls[-1] == ("closed", CLIENT_ID.encode())
    assert [e.decision for e in world.sink.events] == ["allow"]
