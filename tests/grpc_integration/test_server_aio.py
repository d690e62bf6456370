"""The aio server interceptor on a real grpc.aio.server with mTLS: async handlers (coroutines,
async generators, the reader/writer API) and sync handlers run in grpc's thread pool."""

from __future__ import annotations

import asyncio
import logging

import grpc
import grpc.aio
import pytest

from tests.grpc_integration._support import (
    AUD,
    CLIENT_ID,
    HEALTH,
    INTRUDER,
    METHODS,
    SERVICE,
    Seen,
    World,
    acall_all,
    aio_server,
    async_handlers,
    bearer,
    raw_credentials,
    sync_handlers,
)
from zerotrust import DPoPNonces
from zerotrust.audit import AuditPipeline
from zerotrust.httpx import dpop_proof
from zerotrust.tokens import PrivateJWK

EXPECTED = {
    "Unary": CLIENT_ID.encode() + b"|hi",
    "ServerStream": [CLIENT_ID.encode() + b"|%d" % i for i in range(3)],
    "ClientStream": CLIENT_ID.encode() + b"|2",
    "Bidi": [CLIENT_ID.encode() + b"|a", CLIENT_ID.encode() + b"|b"],
}


_GRPC = tuple(int(p) for p in grpc.__version__.split(".")[:2])
_NO_AIO_REGISTERED = pytest.mark.skipif(
    _GRPC < (1, 84), reason="grpc.aio < 1.84 answers UNIMPLEMENTED for registered method handlers"
)


@pytest.mark.parametrize(
    "registered",
    [False, pytest.param(True, marks=_NO_AIO_REGISTERED)],
    ids=["generic", "registered"],
)
@pytest.mark.parametrize("handlers", [async_handlers, sync_handlers], ids=["async", "sync"])
def test_all_arities_allowed_with_the_principal(
    world: World, handlers: object, registered: bool
) -> None:
    seen = Seen()

    async def run() -> dict[str, object]:
        async with (
            aio_server(world, seen=seen, handlers=handlers, registered=registered) as port,  # type: ignore[arg-type]
            grpc.aio.secure_channel(f"localhost:{port}", raw_credentials(world)) as channel,
        ):
            return await acall_all(channel, bearer(world.token()))

    assert asyncio.run(run()) == EXPECTED
    # sync handlers ran on grpc's pool threads, and still saw the caller
    assert {p for _, p in seen.calls} == {CLIENT_ID.encode()}
    assert {m for m, _ in seen.calls} == set(METHODS)


@pytest.mark.parametrize("handlers", [async_handlers, sync_handlers], ids=["async", "sync"])
@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("no token", grpc.StatusCode.UNAUTHENTICATED),
        ("intruder", grpc.StatusCode.PERMISSION_DENIED),
        ("keys down", grpc.StatusCode.UNAVAILABLE),
    ],
)
def test_all_arities_refused_before_the_handler(
    world: World, handlers: object, case: str, code: grpc.StatusCode
) -> None:
    seen = Seen()
    token = world.token(subject=INTRUDER if case == "intruder" else CLIENT_ID)
    metadata = [] if case == "no token" else bearer(token)

    async def run() -> dict[str, object]:
        guard = world.guard(keys_down=case == "keys down")
        async with (
            aio_server(world, guard, seen=seen, handlers=handlers) as port,  # type: ignore[arg-type]
            grpc.aio.secure_channel(f"localhost:{port}", raw_credentials(world)) as channel,
        ):
            return await acall_all(channel, metadata, refused=True)

    results = asyncio.run(run())
    for method in METHODS:
        assert results[method].code() == code, method
    assert seen.calls == []


@pytest.mark.parametrize("handlers", [async_handlers, sync_handlers], ids=["async", "sync"])
def test_requirements_rate_limits_and_exemptions(world: World, handlers: object) -> None:
    async def run() -> None:
        async with (
            aio_server(world, handlers=handlers) as port,  # type: ignore[arg-type]
            grpc.aio.secure_channel(f"localhost:{port}", raw_credentials(world)) as channel,
        ):
            plain = grpc.aio.Metadata(*bearer(world.token()))
            for name, scope in (("Admin", "admin"), ("Mapped", "mapped")):
                call = channel.unary_unary(f"/{SERVICE}/{name}")
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await call(b"x", metadata=plain, timeout=10)
                assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
                assert info.value.details() == "insufficient_scope"
                challenge = dict(tuple(info.value.trailing_metadata()))["www-authenticate"]
                assert f'scope="{scope}"' in challenge
                scoped = grpc.aio.Metadata(*bearer(world.token(scopes=(scope,))))
                assert await call(b"x", metadata=scoped, timeout=10) == CLIENT_ID.encode()
            limited = channel.unary_unary(f"/{SERVICE}/Limited")
            assert await limited(b"x", metadata=plain, timeout=10)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await limited(b"x", metadata=plain, timeout=10)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert int(dict(tuple(info.value.trailing_metadata()))["retry-after"]) >= 1
            stream = channel.unary_stream(f"/{SERVICE}/ServerStream")(b"x", timeout=10)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                _ = [item async for item in stream]
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            challenge = dict(tuple(info.value.trailing_metadata()))["www-authenticate"]
            assert challenge == 'Bearer realm="echo"'
            assert await channel.unary_unary(HEALTH)(b"", timeout=10) == b"SERVING:anonymous"

    asyncio.run(run())


@pytest.mark.parametrize("method", ["Unary", "ServerStream"])
def test_dpop_nonce_challenge_in_trailing_metadata(world: World, method: str) -> None:
    """As on the sync server: a proof without the service's nonce is refused UNAUTHENTICATED
    with the ``use_dpop_nonce`` challenge and the nonce in the trailing metadata, before the
    handler; a proof signed with that nonce is admitted."""
    holder = PrivateJWK.generate("ES256")
    token = world.issuer.issue(
        subject=CLIENT_ID, audience=AUD, extra_claims={"cnf": {"jkt": holder.thumbprint()}}
    )
    origin, path = "https://echo.internal", f"/{SERVICE}/{method}"
    nonces = DPoPNonces(bytes(32))
    seen = Seen()

    def metadata(nonce: str | None) -> grpc.aio.Metadata:
        proof = dpop_proof(
            holder, method="POST", url=origin + path, access_token=token, nonce=nonce
        )
        return grpc.aio.Metadata(("authorization", f"DPoP {token}"), ("dpop", proof))

    async def call(channel: grpc.aio.Channel, nonce: str | None) -> object:
        if method == "Unary":
            return await channel.unary_unary(path)(b"hi", metadata=metadata(nonce), timeout=10)
        stream = channel.unary_stream(path)(b"hi", metadata=metadata(nonce), timeout=10)
        return [item async for item in stream]

    async def run() -> tuple[grpc.aio.AioRpcError, object]:
        guard = world.guard(dpop_origins=(origin,), dpop_nonces=nonces)
        async with (
            aio_server(world, guard, seen=seen) as port,
            grpc.aio.secure_channel(f"localhost:{port}", raw_credentials(world)) as channel,
        ):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call(channel, None)
            nonce = dict(tuple(info.value.trailing_metadata()))["dpop-nonce"]
            assert isinstance(nonce, str)
            return info.value, await call(channel, nonce)

    refused, answer = asyncio.run(run())
    assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
    assert refused.details() == "use_dpop_nonce"
    trailing = dict(tuple(refused.trailing_metadata()))
    assert trailing["www-authenticate"].endswith('error="use_dpop_nonce"')
    assert answer == EXPECTED[method]
    assert {m for m, _ in seen.calls} == {method}
    assert [e.reason for e in world.sink.events] == ["use_dpop_nonce", "allowed_by_rule"]


def test_forged_cross_domain_certificate_is_unauthenticated(world: World) -> None:
    async def run() -> grpc.aio.AioRpcError:
        forged = raw_credentials(world, cert=world.forged_client())
        async with (
            aio_server(world) as port,
            grpc.aio.secure_channel(f"localhost:{port}", forged) as channel,
        ):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await channel.unary_unary(f"/{SERVICE}/Unary")(
                    b"x", metadata=grpc.aio.Metadata(*bearer(world.token())), timeout=10
                )
            return info.value

    error = asyncio.run(run())
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error.details() == "invalid_certificate"  # the precise reason stays internal


def test_unknown_methods_are_decided_before_unimplemented(world: World) -> None:
    async def run() -> list[object]:
        async with (
            aio_server(world) as port,
            grpc.aio.secure_channel(f"localhost:{port}", raw_credentials(world)) as channel,
        ):
            nope = channel.unary_unary(f"/{SERVICE}/Nope")
            calls = (bearer(world.token()), (), bearer(world.token(subject=INTRUDER)))
            return [await _outcome(nope(b"", metadata=m, timeout=10)) for m in calls]

    assert asyncio.run(run()) == [
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
    ]
    assert [e.decision for e in world.sink.events] == ["allow", "deny", "deny"]


class _OnTheLoop(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """An interceptor placed before zerotrust that calls a sync unary handler itself, on the
    event loop (as OpenTelemetry's aio interceptor does), instead of grpc's thread pool."""

    async def intercept_service(self, continuation: object, details: object) -> object:
        handler = await continuation(details)  # type: ignore[operator]
        if handler is None or handler.request_streaming or handler.response_streaming:
            return handler
        behavior = handler.unary_unary

        async def on_loop(request: object, context: object) -> object:
            return behavior(request, context)

        return grpc.unary_unary_rpc_method_handler(
            on_loop,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


async def _outcome(call: object) -> object:
    try:
        return await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as exc:
        return exc.code()


def test_a_sync_handler_called_on_the_loop_never_hangs_the_server(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    # the sync wrapper waited for the loop from the loop's own thread: every later RPC hung
    from concurrent import futures

    from tests.grpc_integration._support import add_services
    from zerotrust.grpc import AioServerInterceptor, server_credentials

    async def run() -> list[object]:
        pool = futures.ThreadPoolExecutor(max_workers=2)
        server = grpc.aio.server(
            migration_thread_pool=pool,
            interceptors=[_OnTheLoop(), AioServerInterceptor(world.guard(), exempt={HEALTH})],
        )
        add_services(server, sync_handlers(Seen()), registered=False)
        port = server.add_secure_port(
            "localhost:0", server_credentials(world.server_svid, world.bundles)
        )
        await server.start()
        try:
            async with grpc.aio.secure_channel(f"localhost:{port}", raw_credentials(world)) as ch:
                unary = ch.unary_unary(f"/{SERVICE}/Unary")
                calls = (bearer(world.token()), (), bearer(world.token()))
                outcomes = [await _outcome(unary(b"hi", metadata=m, timeout=10)) for m in calls]
        finally:
            await server.stop(None)
            pool.shutdown(wait=True)
        return outcomes

    with caplog.at_level(logging.WARNING, logger="zerotrust"):
        allowed, anonymous, again = asyncio.run(run())
    assert allowed == again == CLIENT_ID.encode() + b"|hi"
    assert anonymous not in (grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED)
    # the operator learns why the loop blocks: once for the method, not once per call
    warned = [r for r in caplog.records if "runs on the server's event loop" in r.getMessage()]
    assert [r.levelno for r in warned] == [logging.WARNING]


@pytest.mark.parametrize("handlers", [async_handlers, sync_handlers], ids=["async", "sync"])
def test_no_principal_outlives_its_call(world: World, handlers: object) -> None:
    """Sync handlers run on grpc's pool threads, which keep their context from one call to the
    next (one thread here serves them all), async ones in a task per call: an admitted call's
    principal is its handler's alone, never seen by a later exempt or refused call."""
    seen = Seen()

    async def run() -> None:
        async with (
            aio_server(world, seen=seen, handlers=handlers, workers=1) as port,  # type: ignore[arg-type]
            grpc.aio.secure_channel(f"localhost:{port}", raw_credentials(world)) as channel,
        ):
            token = grpc.aio.Metadata(*bearer(world.token()))
            unary = channel.unary_unary(f"/{SERVICE}/Unary")
            stream = channel.unary_stream(f"/{SERVICE}/ServerStream")
            health = channel.unary_unary(HEALTH)
            for _ in range(2):
                assert await unary(b"hi", metadata=token, timeout=10) == EXPECTED["Unary"]
                assert await health(b"", timeout=10) == b"SERVING:anonymous"
                items = [item async for item in stream(b"hi", metadata=token, timeout=10)]
                assert items == EXPECTED["ServerStream"]
                assert await health(b"", timeout=10) == b"SERVING:anonymous"
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await unary(b"hi", timeout=10)
                assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED

    asyncio.run(run())
    assert {p for _, p in seen.calls} == {CLIENT_ID.encode()}
    assert len(seen.calls) == 8  # 2 x (one unary + three stream items)


class _BrokenSink:
    def emit(self, event: object, /) -> None:
        raise OSError("disk full")


@pytest.mark.parametrize("handlers", [async_handlers, sync_handlers], ids=["async", "sync"])
def test_a_required_audit_that_fails_refuses_every_arity(world: World, handlers: object) -> None:
    """Decided with aevaluate (async handlers) or from grpc's pool through the loop (sync ones):
    nothing is served unaudited either way."""
    seen = Seen()
    audit = AuditPipeline([_BrokenSink(), world.sink], on_error="closed")

    async def run() -> dict[str, object]:
        guard = world.guard(audit=audit)
        async with (
            aio_server(world, guard, seen=seen, handlers=handlers) as port,  # type: ignore[arg-type]
            grpc.aio.secure_channel(f"localhost:{port}", raw_credentials(world)) as channel,
        ):
            return await acall_all(channel, bearer(world.token()), refused=True)

    results = asyncio.run(run())
    for method in METHODS:
        assert results[method].code() == grpc.StatusCode.UNAVAILABLE, method  # type: ignore[attr-defined]
        assert results[method].details() == "temporarily_unavailable", method  # type: ignore[attr-defined]
    assert seen.calls == []
    reasons = [(e.decision, e.reason) for e in world.sink.events]
    assert reasons == [("allow", "allowed_by_rule"), ("deny", "audit_error")] * len(METHODS)
