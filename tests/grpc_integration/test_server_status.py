"""What a caller receives, on real sync and aio servers (async and sync handlers): every
refusal's status, terse details and trailing metadata, and a handler's own failure."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
import grpc.aio
import pytest

from tests.grpc_integration._support import (
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

Row = tuple[str, Callable[[World], list[tuple[str, str]]], grpc.StatusCode, str, dict[str, str]]
REALM = 'Bearer realm="echo"'
ROWS: list[Row] = [
    ("Unary", lambda w: [], grpc.StatusCode.UNAUTHENTICATED, "missing_credentials",
     {"www-authenticate": REALM}),
    ("Unary", lambda w: [("authorization", "Basic abc")], grpc.StatusCode.UNAUTHENTICATED,
     "missing_credentials", {"www-authenticate": REALM}),
    ("Unary", lambda w: [("authorization", "Bearer")], grpc.StatusCode.UNAUTHENTICATED,
     "invalid_request", {"www-authenticate": REALM + ', error="invalid_request"'}),
    ("Unary", lambda w: bearer(w.token()[:-4]), grpc.StatusCode.UNAUTHENTICATED,
     "invalid_token", {"www-authenticate": REALM + ', error="invalid_token"'}),
    ("Unary", lambda w: bearer(w.token(INTRUDER)), grpc.StatusCode.PERMISSION_DENIED,
     "access_denied", {}),
    ("Admin", lambda w: bearer(w.token()), grpc.StatusCode.PERMISSION_DENIED,
     "insufficient_scope",
     {"www-authenticate": REALM + ', error="insufficient_scope", scope="admin"'}),
    ("Limited", lambda w: bearer(w.token()), grpc.StatusCode.RESOURCE_EXHAUSTED,
     "rate_limited", {"retry-after": "1000"}),
]  # fmt: skip


def _boom(seen: Seen, asynchronous: bool) -> dict[str, dict[str, Any]]:
    services = (async_handlers if asynchronous else sync_handlers)(seen)

    def boom(request: bytes, context: Any) -> bytes:
        raise RuntimeError("the handler failed")

    async def aboom(request: bytes, context: Any) -> bytes:
        raise RuntimeError("the handler failed")

    handler = aboom if asynchronous else boom
    services[SERVICE]["Boom"] = grpc.unary_unary_rpc_method_handler(handler)
    return services


@pytest.mark.parametrize("server", ["sync", "aio-async", "aio-sync"])
def test_each_refusal_and_a_failing_handler_reach_the_caller_as_documented(
    world: World, server: str
) -> None:
    async def run(port: int) -> list[tuple[Any, str, dict[str, str]]]:
        out = []
        async with grpc.aio.secure_channel(f"localhost:{port}", raw_credentials(world)) as ch:
            # the rate limit's first call passes
            await ch.unary_unary(f"/{SERVICE}/Limited")(
                b"x", metadata=bearer(world.token()), timeout=10
            )
            calls = [(m, md(world)) for m, md, *_ in ROWS] + [("Boom", bearer(world.token()))]
            for method, md in calls:
                call = ch.unary_unary(f"/{SERVICE}/{method}")(b"x", metadata=md, timeout=10)
                with pytest.raises(grpc.RpcError):
                    await call
                trailing = dict(tuple(await call.trailing_metadata() or ()))
                out.append((await call.code(), await call.details(), trailing))
        return out

    if server == "sync":
        with sync_server(world, handlers=lambda seen: _boom(seen, False)) as port:
            got = asyncio.run(run(port))
    else:

        async def main() -> list[tuple[Any, str, dict[str, str]]]:
            asynchronous = server == "aio-async"
            handlers = lambda seen: _boom(seen, asynchronous)  # noqa: E731
            async with aio_server(world, handlers=handlers) as port:
                return await run(port)

        got = asyncio.run(main())
    assert got[:-1] == [(code, details, trailing) for _, _, code, details, trailing in ROWS]
    # a handler's failure after admission is the handler's, not a refusal
    code, _, trailing = got[-1]
    assert code is grpc.StatusCode.UNKNOWN
    assert "www-authenticate" not in trailing and "retry-after" not in trailing
    decisions = [(e.method, e.decision) for e in world.sink.events]
    assert decisions[-1] == (f"/{SERVICE}/Boom", "allow")
    assert [d for _, d in decisions].count("allow") == 2  # Limited's first call, and Boom
