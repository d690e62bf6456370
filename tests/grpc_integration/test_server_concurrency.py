"""Many concurrent RPCs of different callers on one server: each handler sees its own caller."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import grpc.aio
import pytest

from tests.grpc_integration._support import (
    SERVICE,
    Seen,
    World,
    aio_server,
    bearer,
    raw_credentials,
    sync_server,
)
from zerotrust.grpc import current_principal

CALLS = 200
#: Handlers held at once before any of them reads its principal (below the pools' sizes).
BATCH = 4


def _subject(i: int) -> str:
    return f"spiffe://example.org/caller-{i}"


def _mine(context: Any) -> bytes:
    """The handler's principal, checked against the caller the call's metadata names."""
    expected = dict(context.invocation_metadata())["x-caller"]
    principal = current_principal()
    assert principal is not None and principal.subject == expected
    return expected.encode()


def _services(barrier: threading.Barrier, gate: Any) -> Any:
    def unary(request: bytes, context: Any) -> bytes:
        barrier.wait(30)
        return _mine(context)

    def server_stream(request: bytes, context: Any) -> Iterator[bytes]:
        barrier.wait(30)
        yield _mine(context)
        yield _mine(context)

    async def aunary(request: bytes, context: Any) -> bytes:
        await gate()
        return _mine(context)

    async def astream(request: bytes, context: Any) -> AsyncIterator[bytes]:
        await gate()
        yield _mine(context)
        await asyncio.sleep(0)
        yield _mine(context)

    def services(seen: Seen) -> dict[str, dict[str, Any]]:
        return {
            SERVICE: {
                "Unary": grpc.unary_unary_rpc_method_handler(unary),
                "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
                "AUnary": grpc.unary_unary_rpc_method_handler(aunary),
                "AStream": grpc.unary_stream_rpc_method_handler(astream),
            }
        }

    return services


async def _call(channel: Any, world: World, i: int, methods: tuple[str, ...]) -> bytes:
    method = methods[i % len(methods)]
    md = grpc.aio.Metadata(*bearer(world.token(_subject(i))), ("x-caller", _subject(i)))
    if "Stream" in method:
        call = channel.unary_stream(f"/{SERVICE}/{method}")(b"", metadata=md, timeout=60)
        replies = [reply async for reply in call]
        assert replies[0] == replies[1]
        return bytes(replies[0])
    return bytes(await channel.unary_unary(f"/{SERVICE}/{method}")(b"", metadata=md, timeout=60))


@pytest.mark.parametrize("server", ["sync", "aio"])
def test_concurrent_callers_each_see_their_own_principal(world: World, server: str) -> None:
    barrier = threading.Barrier(BATCH)
    entered = 0
    everyone: asyncio.Event | None = None

    async def gate() -> None:  # every async handler waits until all of them have started
        nonlocal entered
        assert everyone is not None
        entered += 1
        if entered == CALLS // 2:
            everyone.set()
        await everyone.wait()

    services = _services(barrier, gate)

    async def run(port: int, methods: tuple[str, ...]) -> list[bytes]:
        async with grpc.aio.secure_channel(f"localhost:{port}", raw_credentials(world)) as ch:
            return list(await asyncio.gather(*(_call(ch, world, i, methods) for i in range(CALLS))))

    if server == "sync":
        with sync_server(world, handlers=services, workers=BATCH, exempt=()) as port:
            replies = asyncio.run(run(port, ("Unary", "ServerStream")))
    else:

        async def main() -> list[bytes]:
            nonlocal everyone
            everyone = asyncio.Event()
            async with aio_server(world, handlers=services, workers=BATCH) as port:
                return await run(port, ("Unary", "AUnary", "ServerStream", "AStream"))

        replies = asyncio.run(main())
    assert replies == [_subject(i).encode() for i in range(CALLS)]
    assert len(world.sink.events) == CALLS
    assert {e.decision for e in world.sink.events} == {"allow"}
