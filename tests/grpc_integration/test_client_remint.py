"""A token the server refuses (``UNAUTHENTICATED``, ``error="invalid_token"``) is dropped by
zerotrust's gRPC channels, from the token source too: a unary-unary call is made once more
with a new token, other calls fail and the next call carries a new token (sync and aio, real
mTLS servers with zerotrust's interceptor)."""

from __future__ import annotations

import asyncio
import time
from concurrent import futures
from typing import Any

import grpc
import grpc.aio
import pytest

from tests.grpc_integration._support import (
    CLIENT_ID,
    EXCLUSIVE_PORT,
    SERVICE,
    World,
    aio_server,
    sync_server,
)
from tests.grpc_integration._support import client_options as options
from zerotrust import SelfIssuedTokenSource, StaticTokenSource
from zerotrust.client._grpc_interceptors import REFUSAL_TASK
from zerotrust.grpc import aio_secure_channel, secure_channel, server_credentials

ECHOED = f"{CLIENT_ID}|hi".encode()


def _revoke_last(world: World, guard: Any) -> str:
    """Revoke the token of the last decision's caller; its jti."""
    jti = world.sink.events[-1].token_jti
    assert jti is not None
    guard.store.revoke_token(jti, expires_at=time.time() + 600)
    return jti


def _decisions(world: World) -> list[tuple[str, str | None, str | None]]:
    return [(e.decision, e.reason, e.token_jti) for e in world.sink.events]


@pytest.mark.parametrize("retry", ["default", "none"])
def test_a_revoked_cached_token_is_replaced_and_the_unary_call_made_again(
    world: World, retry: str
) -> None:
    """The server refuses the channel's cached token (revoked): the call succeeds with a new
    one, whatever the retry policy; the refused token is never sent again."""
    guard = world.guard()
    extra = {} if retry == "default" else {"retry": None}
    target = options(world, **extra)
    with (
        sync_server(world, guard) as port,
        secure_channel(f"localhost:{port}", **target) as channel,
    ):
        unary = channel.unary_unary(f"/{SERVICE}/Unary")
        assert unary(b"hi", timeout=10) == ECHOED
        first = _revoke_last(world, guard)
        assert unary(b"hi", timeout=10) == ECHOED
        assert unary(b"hi", timeout=10) == ECHOED
    decisions = _decisions(world)
    assert decisions[:3] == [
        ("allow", decisions[0][1], first),
        ("deny", "token_revoked", first),
        ("allow", decisions[2][1], decisions[2][2]),
    ]
    second = decisions[2][2]
    assert second not in (None, first) and decisions[3][2] == second and len(decisions) == 4


def test_a_refused_streaming_call_fails_and_the_next_call_has_a_new_token(world: World) -> None:
    """A streaming call is not made again (its messages may be gone): it fails
    ``UNAUTHENTICATED``, and the next call carries a new token."""
    guard = world.guard()
    with (
        sync_server(world, guard) as port,
        secure_channel(f"localhost:{port}", **options(world)) as channel,
    ):
        stream = channel.unary_stream(f"/{SERVICE}/ServerStream")
        assert list(stream(b"hi", timeout=10))
        first = _revoke_last(world, guard)
        with pytest.raises(grpc.RpcError) as refused:
            list(stream(b"hi", timeout=10))
        assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert list(stream(b"hi", timeout=10))
    decisions = _decisions(world)
    assert [d[:2] for d in decisions[1:]] == [("deny", "token_revoked"), ("allow", decisions[2][1])]
    assert decisions[2][2] not in (None, first)


def test_aio_a_revoked_cached_token_is_replaced(world: World) -> None:
    guard = world.guard()

    async def run() -> None:
        async with (
            aio_server(world, guard) as port,
            aio_secure_channel(f"localhost:{port}", **options(world)) as channel,
        ):
            unary = channel.unary_unary(f"/{SERVICE}/Unary")
            assert await unary(b"hi", timeout=10) == ECHOED
            _revoke_last(world, guard)
            assert await unary(b"hi", timeout=10) == ECHOED
            stream = channel.unary_stream(f"/{SERVICE}/ServerStream")
            _revoke_last(world, guard)
            call = stream(b"hi", timeout=10)
            with pytest.raises(grpc.RpcError):
                async for _ in call:
                    pass
            assert await call.code() is grpc.StatusCode.UNAUTHENTICATED
            # the stream's end is read by a task of its own, made when its status came
            await asyncio.gather(*(t for t in asyncio.all_tasks() if t.get_name() == REFUSAL_TASK))
            assert await unary(b"hi", timeout=10) == ECHOED

    asyncio.run(run())
    decisions = _decisions(world)
    assert [d[:2] for d in decisions] == [
        ("allow", decisions[0][1]),
        ("deny", "token_revoked"),
        ("allow", decisions[0][1]),
        ("deny", "token_revoked"),
        ("allow", decisions[0][1]),
    ]
    jtis = [d[2] for d in decisions]
    assert jtis[0] == jtis[1] != jtis[2] == jtis[3] != jtis[4]


class Refusing:
    """A bare server that answers ``test.Refusing/Call`` with ``UNAUTHENTICATED`` and the
    challenge given, recording each attempt's ``authorization``."""

    def __init__(self, world: World, challenge: str | None) -> None:
        self.seen: list[str] = []
        self._challenge = challenge
        self._pool = futures.ThreadPoolExecutor(max_workers=4)
        self._server = grpc.server(self._pool, options=EXCLUSIVE_PORT)
        handler = grpc.unary_unary_rpc_method_handler(self._call)
        self._server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler("test.Refusing", {"Call": handler})]
        )
        self.port = self._server.add_secure_port(
            "localhost:0", server_credentials(world.server_svid, world.ca.bundle)
        )
        self._server.start()

    def _call(self, request: bytes, context: Any) -> bytes:
        self.seen.append(dict(context.invocation_metadata())["authorization"])
        if self._challenge is not None:
            context.set_trailing_metadata((("www-authenticate", self._challenge),))
        context.abort(grpc.StatusCode.UNAUTHENTICATED, "refused")

    def close(self) -> None:
        self._server.stop(None).wait(10)
        self._pool.shutdown(wait=True)


@pytest.mark.parametrize("aio", [False, True], ids=["sync", "aio"])
@pytest.mark.parametrize(
    ("challenge", "source", "sent"),
    [
        # a new token, refused too: the refusal stands after one more attempt
        ('Bearer realm="x", error="invalid_token"', "minting", 2),
        ("Bearer error=invalid_token", "minting", 2),
        # a source that cannot re-mint: nothing is sent again
        ('Bearer error="invalid_token"', "static", 1),
        # not a refusal of the token: not sent again, the token stays
        ('Bearer realm="x"', "minting", 1),
        ('Bearer error="insufficient_scope"', "minting", 1),
        ('Bearer realm="a,error=invalid_token,b"', "minting", 1),  # inside a quoted-string
        (None, "minting", 1),
    ],
)
def test_one_more_attempt_only_with_another_token_after_invalid_token(
    world: World, aio: bool, challenge: str | None, source: str, sent: int
) -> None:
    server = Refusing(world, challenge)
    tokens = (
        StaticTokenSource("opaque")
        if source == "static"
        else SelfIssuedTokenSource(world.issuer, subject=CLIENT_ID)
    )
    target = f"localhost:{server.port}"
    try:
        if aio:
            error = asyncio.run(_refused_aio(world, target, tokens))
        else:
            with secure_channel(target, **options(world, token_source=tokens)) as channel:
                with pytest.raises(grpc.RpcError) as refused:
                    channel.unary_unary("/test.Refusing/Call")(b"", timeout=10)
                error = refused.value
        assert error.code() is grpc.StatusCode.UNAUTHENTICATED
        assert len(server.seen) == sent
        assert len(set(server.seen)) == sent  # a second attempt has another token
    finally:
        server.close()


class _CannotDrop(SelfIssuedTokenSource):
    """A source whose ``invalidate`` fails (its cache is out of reach, say)."""

    def invalidate(self, audience: str, *, token: str | None = None) -> None:
        raise ConnectionError("token cache unreachable")


@pytest.mark.parametrize("how", ["blocking", "future", "stream", "aio"])
def test_a_source_that_cannot_drop_a_refused_token_leaves_the_call_its_refusal(
    world: World, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The server refuses the token (``invalid_token``) and the source raises when told to
    drop it: the call ends with the refusal, as a ``grpc.RpcError``. The source's exception
    escaped from the channel's callback: a ``future()`` never ended (past its deadline), and
    blocking and aio calls raised the source's exception instead of the call's status."""
    server = Refusing(world, 'Bearer error="invalid_token"')
    target = f"localhost:{server.port}"
    tokens = _CannotDrop(world.issuer, subject=CLIENT_ID)
    try:
        if how == "aio":
            error = asyncio.run(_refused_aio(world, target, tokens))
        else:
            with secure_channel(target, **options(world, token_source=tokens)) as channel:
                unary = channel.unary_unary("/test.Refusing/Call")
                calls = {
                    "blocking": lambda: unary(b"", timeout=10),
                    "future": lambda: unary.future(b"", timeout=10).result(timeout=10),
                    "stream": lambda: list(
                        channel.unary_stream("/test.Refusing/Call")(b"", timeout=10)
                    ),
                }
                with pytest.raises(grpc.RpcError) as refused:
                    calls[how]()
                error = refused.value
        assert error.code() is grpc.StatusCode.UNAUTHENTICATED
        assert len(server.seen) == 1  # the source handed out the same token: not sent again
    finally:
        server.close()
    assert "could not drop a refused token" in caplog.text
    assert "ConnectionError" in caplog.text and "unreachable" not in caplog.text


async def _refused_aio(world: Any, target: str, tokens: Any) -> Any:
    """The error of one aio call to the refusing method with ``tokens``' token."""
    async with aio_secure_channel(target, **options(world, token_source=tokens)) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            await channel.unary_unary("/test.Refusing/Call")(b"", timeout=10)
        return refused.value
