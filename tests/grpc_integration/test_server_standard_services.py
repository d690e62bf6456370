"""grpc's own health and reflection services behind the interceptors, exempted explicitly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import grpc
import grpc.aio
import pytest

from tests.grpc_integration._support import (
    EXCLUSIVE_PORT,
    SERVICE,
    Seen,
    World,
    add_services,
    async_handlers,
    bearer,
    raw_credentials,
    sync_handlers,
)
from zerotrust.grpc import AioServerInterceptor, ServerInterceptor, server_credentials

health = pytest.importorskip("grpc_health.v1.health")
health_aio = pytest.importorskip("grpc_health.v1._async")
health_pb2 = pytest.importorskip("grpc_health.v1.health_pb2")
health_pb2_grpc = pytest.importorskip("grpc_health.v1.health_pb2_grpc")
reflection = pytest.importorskip("grpc_reflection.v1alpha.reflection")
reflection_pb2 = pytest.importorskip("grpc_reflection.v1alpha.reflection_pb2")
reflection_pb2_grpc = pytest.importorskip("grpc_reflection.v1alpha.reflection_pb2_grpc")

CHECK = "/grpc.health.v1.Health/Check"
WATCH = "/grpc.health.v1.Health/Watch"
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
EXEMPT = frozenset({CHECK, WATCH, REFLECTION})
#: The health service's method that is not exempt, called by name with an empty request (a
#: HealthListRequest): grpcio-health-checking 1.60 has neither the method nor its stub, and
#: the call must be refused all the same.
LIST = "/grpc.health.v1.Health/List"
#: A service whose name and methods resemble the exempt ones.
LOOKALIKE = "grpc.health.v1.HealthCheck"


def _lookalike(request: bytes, context: Any) -> bytes:
    return b"lookalike"


def _services(server: Any, servicer: Any, handlers: Any) -> None:
    services = handlers(Seen())
    del services["grpc.health.v1.Health"]  # the real service instead
    services[LOOKALIKE] = {
        "Check": grpc.unary_unary_rpc_method_handler(_lookalike),
        "Watch": grpc.unary_unary_rpc_method_handler(_lookalike),
    }
    add_services(server, services, registered=False)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    reflection.enable_server_reflection(
        [SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )


@contextmanager
def _sync_server(world: World, exempt: frozenset[str]) -> Iterator[tuple[int, Any]]:
    pool = futures.ThreadPoolExecutor(max_workers=8)
    interceptor = ServerInterceptor(world.guard(), exempt=exempt)
    server = grpc.server(pool, interceptors=[interceptor], options=EXCLUSIVE_PORT)
    servicer = health.HealthServicer()
    _services(server, servicer, sync_handlers)
    port = server.add_secure_port(
        "localhost:0", server_credentials(world.server_svid, world.bundles)
    )
    server.start()
    try:
        yield port, servicer
    finally:
        servicer.enter_graceful_shutdown()
        server.stop(None).wait(10)
        pool.shutdown(wait=True)


@asynccontextmanager
async def _aio_server(world: World, exempt: frozenset[str]) -> AsyncIterator[tuple[int, Any]]:
    interceptor = AioServerInterceptor(world.guard(), exempt=exempt)
    server = grpc.aio.server(interceptors=[interceptor], options=EXCLUSIVE_PORT)
    servicer = health_aio.HealthServicer()
    _services(server, servicer, async_handlers)
    port = server.add_secure_port(
        "localhost:0", server_credentials(world.server_svid, world.bundles)
    )
    await server.start()
    try:
        yield port, servicer
    finally:
        await servicer.enter_graceful_shutdown()
        await server.stop(None)


def _list_services(stub: Any, metadata: Any = None) -> list[str]:
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    responses = stub.ServerReflectionInfo(iter([request]), metadata=metadata, timeout=10)
    return sorted(s.name for r in responses for s in r.list_services_response.service)


def _code(call: Any, *args: Any, **kwargs: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, **kwargs)
    return caught.value.code()


def test_sync_exempt_health_and_reflection_answer_anyone_and_nothing_else_does(
    world: World,
) -> None:
    with (
        _sync_server(world, EXEMPT) as (port, servicer),
        grpc.secure_channel(f"localhost:{port}", raw_credentials(world)) as channel,
    ):
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service="")
        assert stub.Check(request, timeout=10).status == health_pb2.HealthCheckResponse.SERVING
        watch = stub.Watch(request, timeout=10)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        watch.cancel()
        assert _list_services(reflection_pb2_grpc.ServerReflectionStub(channel)) == sorted(
            [SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME]
        )
        # the health service's other method, the look-alike service: checked
        assert _code(channel.unary_unary(LIST), b"", timeout=10) is (
            grpc.StatusCode.UNAUTHENTICATED
        )
        for method in ("Check", "Watch"):
            lookalike = channel.unary_unary(f"/{LOOKALIKE}/{method}")
            assert _code(lookalike, b"", timeout=10) is grpc.StatusCode.UNAUTHENTICATED
            # the policy admits example.org's workloads to test.Echo only
            md = bearer(world.token())
            assert _code(lookalike, b"", metadata=md, timeout=10) is (
                grpc.StatusCode.PERMISSION_DENIED
            )
    # exempt methods write no audit event
    assert [(e.method, e.decision) for e in world.sink.events] == [
        (LIST, "deny"),
        (f"/{LOOKALIKE}/Check", "deny"),
        (f"/{LOOKALIKE}/Check", "deny"),
        (f"/{LOOKALIKE}/Watch", "deny"),
        (f"/{LOOKALIKE}/Watch", "deny"),
    ]


def test_sync_health_and_reflection_not_exempt_are_checked_and_served_to_callers(
    world: World,
) -> None:
    with (
        _sync_server(world, frozenset()) as (port, _),
        grpc.secure_channel(f"localhost:{port}", raw_credentials(world)) as channel,
    ):
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service="")
        reflector = reflection_pb2_grpc.ServerReflectionStub(channel)
        assert _code(lambda: stub.Check(request, timeout=10)) is grpc.StatusCode.UNAUTHENTICATED
        assert _code(lambda: next(stub.Watch(request, timeout=10))) is (
            grpc.StatusCode.UNAUTHENTICATED
        )
        assert _code(lambda: _list_services(reflector)) is grpc.StatusCode.UNAUTHENTICATED
        # the policy admits example.org's workloads to test.Echo only
        md = bearer(world.token())
        assert _code(lambda: stub.Check(request, metadata=md, timeout=10)) is (
            grpc.StatusCode.PERMISSION_DENIED
        )
        assert {e.decision for e in world.sink.events} == {"deny"}
        assert len(world.sink.events) == 4


def test_aio_exempt_health_and_reflection_answer_anyone_and_nothing_else_does(
    world: World,
) -> None:
    async def main() -> None:
        async with (
            _aio_server(world, EXEMPT) as (port, servicer),
            grpc.aio.secure_channel(f"localhost:{port}", raw_credentials(world)) as channel,
        ):
            stub = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service="")
            serving = health_pb2.HealthCheckResponse.SERVING
            assert (await stub.Check(request, timeout=10)).status == serving
            watch = stub.Watch(request, timeout=10)
            assert (await watch.read()).status == serving
            await servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
            watch.cancel()
            reflector = reflection_pb2_grpc.ServerReflectionStub(channel)
            call = reflector.ServerReflectionInfo(timeout=10)
            await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
            await call.done_writing()
            names = sorted(s.name for s in (await call.read()).list_services_response.service)
            assert names == sorted([SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME])
            with pytest.raises(grpc.RpcError) as caught:
                await channel.unary_unary(LIST)(b"", timeout=10)
            assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
            for method in ("Check", "Watch"):
                with pytest.raises(grpc.RpcError) as caught:
                    await channel.unary_unary(f"/{LOOKALIKE}/{method}")(b"", timeout=10)
                assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED

    asyncio.run(main())
    assert [(e.method, e.decision) for e in world.sink.events] == [
        (LIST, "deny"),
        (f"/{LOOKALIKE}/Check", "deny"),
        (f"/{LOOKALIKE}/Watch", "deny"),
    ]
