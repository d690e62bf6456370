"""Server certificate rotation through grpc's dynamic credentials, mid-traffic."""

from __future__ import annotations

import asyncio
import socket
import threading
from concurrent import futures

import grpc
import grpc.aio
import pytest

from tests.grpc_integration._support import (
    CLIENT_ID,
    EXCLUSIVE_PORT,
    HEALTH,
    SERVER_ID,
    SERVICE,
    World,
    aio_server,
    async_handlers,
    bearer,
    raw_credentials,
    sync_server,
)
from zerotrust import (
    Authenticator,
    BundleSet,
    Callers,
    Guard,
    MemorySink,
    Policy,
    RotatingBundleSource,
    RotatingSvidSource,
    Rule,
    TrustBundle,
    X509Svid,
    client_ssl_context,
    match,
)
from zerotrust.dev import DevCA
from zerotrust.errors import ConfigurationError
from zerotrust.grpc import (
    ServerIdentityError,
    ServerInterceptor,
    aio_secure_channel,
    secure_channel,
    server_credentials,
)


def server_fingerprint(world: World, port: int) -> str:
    """A fresh TLS connection's verified server certificate (zerotrust's own client)."""
    context = client_ssl_context(world.client_svid, world.ca.bundle, authorizer=match.any())
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("localhost", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        return tls.zerotrust_peer.fingerprint  # type: ignore[attr-defined,no-any-return]


def test_rotation_mid_traffic(world: World) -> None:
    source = RotatingSvidSource(world.server_svid)
    rotated = world.ca.issue_svid(SERVER_ID, dns_names=["localhost"])
    errors: list[BaseException] = []
    done = threading.Event()
    rotated_now = threading.Event()
    counts = {"before": 0, "after": 0}

    with (
        sync_server(world, svid=source) as port,
        grpc.secure_channel(f"localhost:{port}", raw_credentials(world)) as channel,
    ):
        assert server_fingerprint(world, port) == world.server_svid.fingerprint
        call = channel.unary_unary(f"/{SERVICE}/Unary")
        metadata = bearer(world.token())

        def traffic() -> None:
            while not done.is_set():
                try:
                    call(b"x", metadata=metadata, timeout=10)
                except grpc.RpcError as exc:
                    errors.append(exc)
                    return
                counts["after" if rotated_now.is_set() else "before"] += 1

        worker = threading.Thread(target=traffic)
        worker.start()
        try:
            for _ in range(200):  # bounded: wait until some calls went through
                if counts["before"] >= 5:
                    break
                threading.Event().wait(0.01)
            source.set(rotated)
            rotated_now.set()
            new_fp = server_fingerprint(world, port)  # a new connection: the new certificate
            for _ in range(500):
                if counts["after"] >= 5 or errors:
                    break
                threading.Event().wait(0.01)
        finally:
            done.set()
            worker.join(30)
        # a brand-new channel handshakes with the rotated certificate and works
        with grpc.secure_channel(f"localhost:{port}", raw_credentials(world)) as fresh:
            assert fresh.unary_unary(f"/{SERVICE}/Unary")(b"y", metadata=metadata, timeout=10)
    assert errors == []
    assert counts["before"] >= 5 and counts["after"] >= 5
    assert new_fp == rotated.fingerprint != world.server_svid.fingerprint


def _other_domain_guard(world: World) -> tuple[X509Svid, RotatingBundleSource, Guard]:
    """A client of another trust domain, the rotating bundles of both, and a Guard admitting
    that domain's workloads."""
    other = DevCA.create("other.org")
    client = other.issue_svid("spiffe://other.org/client")
    bundles = RotatingBundleSource(BundleSet([world.ca.bundle, other.bundle]))
    guard = Guard(
        authenticator=Authenticator(bundles=bundles),
        policy=Policy([Rule(id="all", callers=[Callers(trust_domains=["other.org"])])]),
        audit=MemorySink(),
        service="echo",
    )
    return client, bundles, guard


def test_withdrawing_every_authority_refuses_new_connections_even_to_exempt_methods(
    world: World,
) -> None:
    """grpc checks clients against the merged roots first, and exempt methods get no other
    check. Once every authority is withdrawn, grpc is given a root nobody chains to, so no new
    connection is accepted, exempt methods included (a server cannot start that way)."""
    client, bundles, guard = _other_domain_guard(world)
    pool = futures.ThreadPoolExecutor(2)
    server = grpc.server(
        pool, interceptors=[ServerInterceptor(guard, exempt=(HEALTH,))], options=EXCLUSIVE_PORT
    )
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "grpc.health.v1.Health",
                {"Check": grpc.unary_unary_rpc_method_handler(lambda r, c: b"SERVING")},
            )
        ]
    )
    port = server.add_secure_port("localhost:0", server_credentials(world.server_svid, bundles))
    server.start()

    def check() -> object:
        creds = grpc.ssl_channel_credentials(
            world.ca.bundle.to_pem(), client.private_key_pem(), client.cert_chain_pem()
        )
        with grpc.secure_channel(f"localhost:{port}", creds) as channel:
            try:
                return channel.unary_unary(HEALTH)(b"", timeout=5)
            except grpc.RpcError as exc:
                return exc.code()

    try:
        assert check() == b"SERVING"
        bundles.set(BundleSet([TrustBundle("example.org"), TrustBundle("other.org")]))
        assert check() == grpc.StatusCode.UNAVAILABLE  # the handshake itself is refused
    finally:
        server.stop(None).wait(5)
        pool.shutdown()
    with pytest.raises(ConfigurationError, match=r"no X\.509 authorities"):
        server_credentials(world.server_svid, TrustBundle(world.ca.trust_domain))


@pytest.mark.parametrize("max_age", [None, 500], ids=["connections-kept", "max-connection-age"])
def test_a_connection_made_before_a_withdrawal_keeps_reaching_exempt_methods(
    world: World, max_age: int | None
) -> None:
    """grpc applies the bundles at each new handshake: once every authority is withdrawn, new
    connections are refused, but a connection made before keeps reaching exempt methods (no
    other check) until it closes; the interceptor refuses the methods it checks on it. With
    ``grpc.max_connection_age_ms``, grpc closes every connection at that age, and the client's
    next connection is refused."""
    client, bundles, guard = _other_domain_guard(world)
    aged = [] if max_age is None else [("grpc.max_connection_age_ms", max_age)]
    pool = futures.ThreadPoolExecutor(2)
    server = grpc.server(
        pool,
        interceptors=[ServerInterceptor(guard, exempt=(HEALTH,))],
        options=[*EXCLUSIVE_PORT, *aged],
    )
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "grpc.health.v1.Health",
                {"Check": grpc.unary_unary_rpc_method_handler(lambda r, c: b"SERVING")},
            ),
            grpc.method_handlers_generic_handler(
                SERVICE, {"Unary": grpc.unary_unary_rpc_method_handler(lambda r, c: b"checked")}
            ),
        ]
    )
    port = server.add_secure_port("localhost:0", server_credentials(world.server_svid, bundles))
    server.start()
    creds = grpc.ssl_channel_credentials(
        world.ca.bundle.to_pem(), client.private_key_pem(), client.cert_chain_pem()
    )

    def outcome(channel: grpc.Channel, method: str) -> object:
        try:
            return channel.unary_unary(method)(b"", timeout=5)
        except grpc.RpcError as exc:
            return exc.code()

    closed = threading.Event()

    def seen(state: grpc.ChannelConnectivity) -> None:
        if withdrawn.is_set() and state is not grpc.ChannelConnectivity.READY:
            closed.set()

    withdrawn = threading.Event()
    try:
        with grpc.secure_channel(f"localhost:{port}", creds) as established:
            assert outcome(established, HEALTH) == b"SERVING"
            assert outcome(established, f"/{SERVICE}/Unary") == b"checked"
            bundles.set(BundleSet([TrustBundle("example.org"), TrustBundle("other.org")]))
            withdrawn.set()
            with grpc.secure_channel(f"localhost:{port}", creds) as fresh:
                assert outcome(fresh, HEALTH) == grpc.StatusCode.UNAVAILABLE  # the handshake
            if max_age is None:  # (with an age, the connection may be gone by now)
                checked = outcome(established, f"/{SERVICE}/Unary")
                assert checked == grpc.StatusCode.UNAUTHENTICATED
                assert outcome(established, HEALTH) == b"SERVING"  # until the connection closes
            else:
                established.subscribe(seen)
                assert closed.wait(30)  # grpc closed the connection at its age
                established.unsubscribe(seen)
                assert outcome(established, HEALTH) == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop(None).wait(5)
        pool.shutdown()


def test_a_client_channel_fails_its_calls_once_the_server_domain_is_withdrawn(
    world: World,
) -> None:
    """Withdrawn authorities leave nothing to verify the server with: each call fails as a
    grpc error (UNAUTHENTICATED), not with a configuration error."""
    bundles = RotatingBundleSource(world.ca.bundle)
    with (
        sync_server(world) as port,
        secure_channel(
            f"localhost:{port}", svid=world.client_svid, bundles=bundles, server_id=SERVER_ID
        ) as channel,
    ):
        call = channel.unary_unary(f"/{SERVICE}/Unary")
        assert call(b"x", metadata=bearer(world.token()), timeout=10)
        bundles.set(TrustBundle(world.ca.trust_domain))
        with pytest.raises(grpc.RpcError) as caught:
            call(b"x", metadata=bearer(world.token()), timeout=10)
        assert isinstance(caught.value, ServerIdentityError)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # a future and a stream end with it, as grpc's calls do: never raised at call time
        future = call.future(b"x", metadata=bearer(world.token()), timeout=10)
        stream = channel.unary_stream(f"/{SERVICE}/ServerStream")(b"x", timeout=10)
        for ended in (future, stream):
            assert ended.done() and ended.code() == grpc.StatusCode.UNAUTHENTICATED
            assert isinstance(ended.exception(), ServerIdentityError)
        with pytest.raises(ServerIdentityError):
            next(iter(stream))


def test_an_aio_channel_ends_its_calls_once_the_server_domain_is_withdrawn(
    world: World,
) -> None:
    bundles = RotatingBundleSource(world.ca.bundle)

    async def main() -> None:
        async with (
            aio_server(world, handlers=async_handlers) as port,
            aio_secure_channel(
                f"localhost:{port}", svid=world.client_svid, bundles=bundles, server_id=SERVER_ID
            ) as channel,
        ):
            unary = channel.unary_unary(f"/{SERVICE}/Unary")
            assert await unary(b"x", metadata=bearer(world.token()), timeout=10)
            bundles.set(TrustBundle(world.ca.trust_domain))
            call = unary(b"x", metadata=bearer(world.token()), timeout=10)  # no raise here
            assert await call.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(ServerIdentityError):
                await call
            stream = channel.unary_stream(f"/{SERVICE}/ServerStream")(b"x", timeout=10)
            assert await stream.code() == grpc.StatusCode.UNAUTHENTICATED and stream.done()
            with pytest.raises(ServerIdentityError):
                async for _ in stream:
                    pass

    asyncio.run(main())


@pytest.mark.parametrize("server", ["sync", "aio"])
def test_a_long_lived_stream_outlives_a_rotation_that_new_connections_follow(
    world: World, server: str
) -> None:
    source = RotatingSvidSource(world.server_svid)
    rotated = world.ca.issue_svid(SERVER_ID, dns_names=["localhost"])
    metadata = bearer(world.token())

    async def exercise(port: int) -> list[bytes]:
        async with grpc.aio.secure_channel(f"localhost:{port}", raw_credentials(world)) as ch:
            stream = ch.stream_stream(f"/{SERVICE}/Bidi")(metadata=metadata, timeout=30)
            await stream.write(b"before")
            replies = [await stream.read()]
            source.set(rotated)
            # a new connection is served the rotated certificate ...
            assert await asyncio.to_thread(server_fingerprint, world, port) == rotated.fingerprint
            # ... and the stream opened before carries on, on its connection
            await stream.write(b"after")
            replies.append(await stream.read())
            await stream.done_writing()
            assert await stream.read() is grpc.aio.EOF
            assert await stream.code() is grpc.StatusCode.OK
        return replies

    if server == "sync":
        with sync_server(world, svid=source) as port:
            assert server_fingerprint(world, port) == world.server_svid.fingerprint
            replies = asyncio.run(exercise(port))
    else:

        async def main() -> list[bytes]:
            async with aio_server(world, handlers=async_handlers, svid=source) as port:
                fingerprint = await asyncio.to_thread(server_fingerprint, world, port)
                assert fingerprint == world.server_svid.fingerprint
                return await exercise(port)

        replies = asyncio.run(main())
    assert replies == [CLIENT_ID.encode() + b"|before", CLIENT_ID.encode() + b"|after"]
    assert [e.decision for e in world.sink.events] == ["allow"]
