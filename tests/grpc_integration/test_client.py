"""zerotrust's gRPC channels against real mTLS servers: identity check, tokens, trace context,
retries and rebuilds on client SVID rotation (sync and aio)."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import fields
from typing import Any

import grpc
import grpc.aio
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests._sockets import close_listener
from tests.grpc_integration._support import (
    CLIENT_ID,
    EXCLUSIVE_PORT,
    INTRUDER,
    METHODS,
    SERVER_ID,
    SERVICE,
    Seen,
    World,
    acall_all,
    aio_server,
    bare_server,
    call_all,
    make_world,
    sync_server,
)
from tests.grpc_integration._support import (
    client_options as options,
)
from zerotrust import (
    BundleSet,
    RotatingSvidSource,
    SelfIssuedTokenSource,
    TrustBundle,
    match,
    server_ssl_context,
)
from zerotrust.dev import DevCA
from zerotrust.errors import ConfigurationError
from zerotrust.grpc import (
    RetryPolicy,
    ServerIdentityError,
    aio_secure_channel,
    secure_channel,
    server_credentials,
)

WRONG_ID = "spiffe://example.org/not-the-echo"


def test_sync_channel_all_arities(world: World) -> None:
    seen = Seen()
    with (
        sync_server(world, seen=seen) as port,
        secure_channel(f"localhost:{port}", **options(world)) as channel,
    ):
        results = call_all(channel, [])
        assert channel.server_peer is not None
        assert str(channel.server_peer.spiffe_id) == SERVER_ID
    assert all(not isinstance(r, grpc.RpcError) for r in results.values()), results
    assert {m for m, _ in seen.calls} == set(METHODS)
    event = world.sink.last
    assert event is not None and event.proven_by == "mtls+jwt" and event.decision == "allow"


def test_refused_calls_of_every_arity_raise_the_refusal(world: World) -> None:
    """The server refuses the caller (a DENY rule): each arity, and the single-response
    kinds (unary, client stream) called with ``with_call`` and ``future``, end with grpc's
    RpcError carrying PERMISSION_DENIED (grpc hands a failed blocking stream-unary call to
    the interceptor as that error, which takes no done-callback)."""
    intruder = SelfIssuedTokenSource(world.issuer, subject=INTRUDER)
    seen = Seen()
    with (
        sync_server(world, seen=seen) as port,
        secure_channel(f"localhost:{port}", **options(world, token_source=intruder)) as channel,
    ):
        results = call_all(channel, [])
        unary = channel.unary_unary(f"/{SERVICE}/Unary")
        client_stream = channel.stream_unary(f"/{SERVICE}/ClientStream")
        for name, call, request in (("Unary", unary, b"a"), ("ClientStream", client_stream, None)):
            with pytest.raises(grpc.RpcError) as info:
                call.with_call(request or iter([b"a"]), timeout=10)
            results[f"{name}.with_call"] = info.value
            future = call.future(request or iter([b"a"]), timeout=10)
            results[f"{name}.future"] = future.exception(timeout=10)
    for name, error in results.items():
        assert isinstance(error, grpc.RpcError), name
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED, name
    assert seen.calls == []
    assert [event.decision for event in world.sink.events] == ["deny"] * 8


class _IntermediateAuthorityWorld(World):
    """example.org's bundle holds its intermediate CA, not its root."""

    @property
    def bundles(self) -> BundleSet:
        authority = self.server_svid.cert_chain[1]
        return BundleSet([TrustBundle("example.org", [authority]), self.other_ca.bundle])


def test_an_intermediate_as_the_bundle_authority(
    ca_with_intermediate: DevCA, other_ca: DevCA
) -> None:
    # X509-SVID §6.1: bundle certificates SHOULD (not must) be self-signed
    base = make_world(ca_with_intermediate, other_ca)
    world = _IntermediateAuthorityWorld(**{f.name: getattr(base, f.name) for f in fields(base)})
    seen = Seen()
    with (
        sync_server(world, seen=seen) as port,
        secure_channel(f"localhost:{port}", **options(world, bundles=world.bundles)) as channel,
    ):
        assert (
            channel.unary_unary(f"/{SERVICE}/Unary")(b"x", timeout=10) == CLIENT_ID.encode() + b"|x"
        )
    assert world.sink.last is not None and world.sink.last.proven_by == "mtls+jwt"


def test_aio_channel_all_arities(world: World) -> None:
    seen = Seen()

    async def run() -> dict[str, Any]:
        async with (
            aio_server(world, seen=seen) as port,
            aio_secure_channel(f"localhost:{port}", **options(world)) as channel,
        ):
            results = await acall_all(channel, [])
            assert channel.server_peer is not None
            return results

    results = asyncio.run(run())
    assert all(isinstance(r, (bytes, list)) for r in results.values()), results
    assert {p for _, p in seen.calls} == {CLIENT_ID.encode()}


def test_wrong_server_id_is_refused_before_sending(world: World) -> None:
    seen = Seen()
    with (
        sync_server(world, seen=seen) as port,
        secure_channel(f"localhost:{port}", **options(world, server_id=WRONG_ID)) as channel,
    ):
        results = call_all(channel, [])
        for method in METHODS:
            error = results[method]
            assert isinstance(error, ServerIdentityError), method
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED
            assert error.__cause__ is not None
            assert getattr(error.__cause__, "reason", None) == "peer_not_authorized"
    assert seen.calls == [] and world.sink.events == []  # no RPC ever reached the server


def test_a_refused_server_gives_its_status_to_futures_and_streams_too(world: World) -> None:
    """Not only to blocking calls: raised from the interceptor, the refusal reached future()
    callers and streams as grpc's own INTERNAL "Exception raised while intercepting"."""
    seen = Seen()
    with (
        sync_server(world, seen=seen) as port,
        secure_channel(f"localhost:{port}", **options(world, server_id=WRONG_ID)) as channel,
    ):
        calls = {
            "unary future": channel.unary_unary(f"/{SERVICE}/Unary").future(b"x", timeout=10),
            "stream-unary future": channel.stream_unary(f"/{SERVICE}/ClientStream").future(
                iter([b"x"]), timeout=10
            ),
            "unary-stream": channel.unary_stream(f"/{SERVICE}/ServerStream")(b"x", timeout=10),
            "stream-stream": channel.stream_stream(f"/{SERVICE}/Bidi")(iter([b"x"]), timeout=10),
        }
        for name, call in calls.items():
            assert call.code() == grpc.StatusCode.UNAUTHENTICATED, name
            assert call.details() == "server identity rejected", name
            assert isinstance(call.exception(), ServerIdentityError), name
            assert call.done() and not call.is_active(), name
            ended: list[object] = []
            call.add_done_callback(lambda c: ended.append(c.code()))  # noqa: B023
            assert ended == [grpc.StatusCode.UNAUTHENTICATED], name
            with pytest.raises(ServerIdentityError):
                call.result()
        for name in ("unary-stream", "stream-stream"):
            with pytest.raises(ServerIdentityError):
                next(iter(calls[name]))
    assert seen.calls == [] and world.sink.events == []


def test_a_cancelled_future_is_cancelled_and_done_at_once(world: World) -> None:
    """grpc.Future: after a successful cancel(), cancelled() and done() hold at once (they
    held only once the attempt's own end arrived, on another thread)."""
    from tests.grpc_integration._support import sync_handlers

    entered, release = threading.Event(), threading.Event()

    def handlers(seen: Seen) -> dict[str, dict[str, Any]]:
        table = sync_handlers(seen)

        def waits(request: bytes, context: Any) -> bytes:
            entered.set()
            release.wait(30)
            return b"late"

        table[SERVICE]["Unary"] = grpc.unary_unary_rpc_method_handler(waits)
        return table

    with (
        sync_server(world, handlers=handlers) as port,
        secure_channel(f"localhost:{port}", **options(world)) as channel,
    ):
        future = channel.unary_unary(f"/{SERVICE}/Unary").future(b"x", timeout=30)
        assert entered.wait(10)
        ended: list[object] = []
        future.add_done_callback(lambda f: ended.append(f.cancelled()))
        try:
            assert future.cancel()
            assert future.cancelled() and future.done() and ended == [True]
            assert future.code() == grpc.StatusCode.CANCELLED
            with pytest.raises(grpc.FutureCancelledError):
                future.result()
        finally:
            release.set()


def test_wrong_server_id_is_refused_aio(world: World) -> None:
    seen = Seen()

    async def run() -> None:
        async with (
            aio_server(world, seen=seen) as port,
            aio_secure_channel(f"localhost:{port}", **options(world, server_id=WRONG_ID)) as ch,
        ):
            with pytest.raises(ServerIdentityError) as info:
                await ch.unary_unary(f"/{SERVICE}/Unary")(b"x", timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED

    asyncio.run(run())
    assert seen.calls == [] and world.sink.events == []


def test_an_impostor_behind_the_same_address_is_caught_on_reconnection(world: World) -> None:
    """The server is replaced by another workload of the same trust domain with the same DNS
    name (grpc's own checks pass): the channel re-checks before reconnecting."""
    impostor = world.ca.issue_svid("spiffe://example.org/impostor", dns_names=["localhost"])
    states: list[grpc.ChannelConnectivity] = []
    changed = threading.Condition()

    def watch(state: grpc.ChannelConnectivity) -> None:
        with changed:
            states.append(state)
            changed.notify_all()

    with sync_server(world) as port:
        channel = secure_channel(f"localhost:{port}", **options(world), retry=None)
        assert channel.unary_unary(f"/{SERVICE}/Unary")(b"x", timeout=10)
        channel.subscribe(watch)
    try:
        with changed:  # the old server is gone: wait until the channel saw it
            assert changed.wait_for(
                lambda: states and states[-1] != grpc.ChannelConnectivity.READY, timeout=30
            )
        seen = Seen()
        with sync_server(world, seen=seen, svid=impostor, bind=f"localhost:{port}"):
            with pytest.raises(ServerIdentityError) as info:
                channel.unary_unary(f"/{SERVICE}/Unary")(b"secret", timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert seen.calls == []
        assert len(world.sink.events) == 1  # only the first call, on the real server
    finally:
        channel.unsubscribe(watch)
        channel.close()


def test_authorizer_and_unreachable_server(world: World) -> None:
    with sync_server(world) as port:
        accepted = options(world, server_id=None, authorizer=match.member_of("example.org"))
        accepted["audience"] = SERVER_ID
        with secure_channel(f"localhost:{port}", **accepted) as channel:
            assert channel.unary_unary(f"/{SERVICE}/Unary")(b"x", timeout=10)
    # the server is gone: the identity check cannot run, nothing is sent
    with (
        secure_channel(f"localhost:{port}", **options(world), retry=None) as channel,
        pytest.raises(ServerIdentityError) as info,
    ):
        channel.unary_unary(f"/{SERVICE}/Unary")(b"x", timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_trace_context_reaches_the_server_audit_event(world: World) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("client")
    with (
        sync_server(world) as port,
        secure_channel(f"localhost:{port}", **options(world)) as channel,
        tracer.start_as_current_span("call-echo") as span,
    ):
        channel.unary_unary(f"/{SERVICE}/Unary")(b"x", timeout=10)
        trace_id = format(span.get_span_context().trace_id, "032x")
    provider.shutdown()
    event = world.sink.last
    assert event is not None and event.trace_id == trace_id and event.trace_trusted
    assert exporter.get_finished_spans()[0].name == "call-echo"


def test_trace_context_aio(world: World) -> None:
    provider = TracerProvider()
    tracer = provider.get_tracer("client")

    async def run() -> str:
        async with (
            aio_server(world) as port,
            aio_secure_channel(f"localhost:{port}", **options(world)) as channel,
        ):
            with tracer.start_as_current_span("call-echo") as span:
                await channel.unary_unary(f"/{SERVICE}/Unary")(b"x", timeout=10)
                return format(span.get_span_context().trace_id, "032x")

    trace_id = asyncio.run(run())
    provider.shutdown()
    assert world.sink.last is not None and world.sink.last.trace_id == trace_id


CALLERS_TRACEPARENT = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"


@pytest.mark.parametrize("kind", ["sync", "aio"])
def test_trace_context_replaces_the_callers(world: World, kind: str) -> None:
    """A traceparent the caller put in the metadata is replaced by the active span's, and the
    caller's tracestate (of the replaced trace) is dropped; without an active span both pass
    unchanged. Both traceparents were sent, and the tracestate kept."""

    def seen(request: bytes, context: Any) -> bytes:
        names = ("traceparent", "tracestate")
        entries = [f"{k}={v}" for k, v in context.invocation_metadata() if k in names]
        return "\n".join(entries).encode()

    metadata = [("traceparent", CALLERS_TRACEPARENT), ("tracestate", "vendor=of-that-trace")]
    tracer = TracerProvider().get_tracer("client")
    with bare_server(world.server_svid, world.ca.bundle, seen) as (port, _):
        target = f"localhost:{port}"
        if kind == "sync":
            with secure_channel(target, **options(world)) as channel:
                call = channel.unary_unary(f"/{SERVICE}/Unary")
                untouched = call(b"", metadata=metadata, timeout=10)
                with tracer.start_as_current_span("call") as span:
                    replaced = call(b"", metadata=metadata, timeout=10)
        else:

            async def run() -> tuple[bytes, bytes, Any]:
                async with aio_secure_channel(target, **options(world)) as channel:
                    call = channel.unary_unary(f"/{SERVICE}/Unary")
                    md = grpc.aio.Metadata(*metadata)
                    untouched = await call(b"", metadata=md, timeout=10)
                    with tracer.start_as_current_span("call") as span:
                        replaced = await call(b"", metadata=md, timeout=10)
                    return untouched, replaced, span

            untouched, replaced, span = asyncio.run(run())
    context = span.get_span_context()
    (sent,) = replaced.decode().splitlines()  # one traceparent, no tracestate
    assert sent.startswith(f"traceparent=00-{context.trace_id:032x}-{context.span_id:016x}-")
    assert untouched.decode().splitlines() == [
        f"traceparent={CALLERS_TRACEPARENT}",
        "tracestate=vendor=of-that-trace",
    ]


def test_client_svid_rotation_rebuilds_without_failing_in_flight_calls(world: World) -> None:
    source = RotatingSvidSource(world.client_svid)
    rotated = world.ca.issue_svid(CLIENT_ID)
    requests: queue.Queue[bytes | None] = queue.Queue()

    def outgoing() -> Iterator[bytes]:
        while (item := requests.get(timeout=30)) is not None:
            yield item

    with (
        sync_server(world) as port,
        secure_channel(f"localhost:{port}", **options(world, svid=source)) as channel,
    ):
        stream = channel.stream_stream(f"/{SERVICE}/Bidi")(outgoing(), timeout=30)
        requests.put(b"1")
        assert next(stream).endswith(b"|1")  # in flight on the first channel
        source.set(rotated)
        assert channel.unary_unary(f"/{SERVICE}/Unary")(b"new", timeout=10)  # new channel
        assert channel.rebuilds == 1
        requests.put(b"2")
        assert next(stream).endswith(b"|2")  # the old channel still carries the stream
        requests.put(None)
        assert list(stream) == []
        assert stream.code() == grpc.StatusCode.OK
    fingerprints = [e.cert_fingerprint for e in world.sink.events]
    assert fingerprints == [world.client_svid.fingerprint, rotated.fingerprint]


def test_a_call_that_read_the_svid_before_a_rotation_does_not_bring_it_back(
    world: World,
) -> None:
    """A call reads the SVID, and before it leases a generation the SVID rotates and another
    call builds the new generation: the first call uses the new one too. It rebuilt the
    channel with the SVID it had read (retiring the new generation), and the next call rebuilt
    it once more."""
    rotated = world.ca.issue_svid(CLIENT_ID)
    read, resume = threading.Event(), threading.Event()

    class PausingOnce(RotatingSvidSource):
        """Holds the thread named ``paused`` after its first read, until ``resume``."""

        def get_x509_svid(self) -> Any:
            svid = super().get_x509_svid()
            if threading.current_thread().name == "paused" and not read.is_set():
                read.set()
                assert resume.wait(30)
            return svid

    source = PausingOnce(world.client_svid)
    with (
        sync_server(world) as port,
        secure_channel(f"localhost:{port}", **options(world, svid=source)) as channel,
    ):
        unary = channel.unary_unary(f"/{SERVICE}/Unary")
        assert unary(b"first", timeout=10)
        replies: list[bytes] = []
        paused = threading.Thread(
            target=lambda: replies.append(unary(b"paused", timeout=10)), name="paused"
        )
        paused.start()
        try:
            assert read.wait(30)  # it holds the SVID of before the rotation
            source.set(rotated)
            assert unary(b"rotated", timeout=10)  # builds the new generation
        finally:
            resume.set()
            paused.join(30)
        assert replies and unary(b"after", timeout=10)
        assert channel.rebuilds == 1
    fingerprints = [e.cert_fingerprint for e in world.sink.events]
    assert fingerprints == [world.client_svid.fingerprint] + [rotated.fingerprint] * 3


def test_client_svid_rotation_aio(world: World) -> None:
    source = RotatingSvidSource(world.client_svid)
    rotated = world.ca.issue_svid(CLIENT_ID)

    async def run() -> int:
        async with (
            aio_server(world) as port,
            aio_secure_channel(f"localhost:{port}", **options(world, svid=source)) as channel,
        ):
            stream = channel.stream_stream(f"/{SERVICE}/Bidi")(timeout=30)
            await stream.write(b"1")
            assert (await stream.read()).endswith(b"|1")
            source.set(rotated)
            assert await channel.unary_unary(f"/{SERVICE}/Unary")(b"new", timeout=10)
            await stream.write(b"2")
            assert (await stream.read()).endswith(b"|2")
            await stream.done_writing()
            assert await stream.code() == grpc.StatusCode.OK
            return channel.rebuilds

    assert asyncio.run(run()) == 1
    fingerprints = [e.cert_fingerprint for e in world.sink.events]
    assert fingerprints == [world.client_svid.fingerprint, rotated.fingerprint]


class Flaky:
    """A bare server whose ``test.Flaky/Call`` fails with ``code`` the first ``failures``
    times (after sending response metadata, with ``headers``)."""

    def __init__(self, world: World, failures: int, *, headers: bool = False) -> None:
        self.attempts: list[dict[str, str]] = []
        self.entries: list[list[tuple[str, str]]] = []  # each attempt's metadata, as sent
        self._failures, self._headers = failures, headers
        self._pool = futures.ThreadPoolExecutor(max_workers=4)
        self._server = grpc.server(self._pool, options=EXCLUSIVE_PORT)
        self._server.add_generic_rpc_handlers(
            [
                grpc.method_handlers_generic_handler(
                    "test.Flaky", {"Call": grpc.unary_unary_rpc_method_handler(self._call)}
                )
            ]
        )
        self.port = self._server.add_secure_port(
            "localhost:0", server_credentials(world.server_svid, world.ca.bundle)
        )
        self._server.start()

    def _call(self, request: bytes, context: Any) -> bytes:
        self.attempts.append(dict(context.invocation_metadata()))
        self.entries.append([(k, v) for k, v in context.invocation_metadata()])
        if len(self.attempts) <= self._failures:
            if self._headers:
                context.send_initial_metadata((("x-answered", "1"),))
            context.abort(grpc.StatusCode.UNAVAILABLE, "try again")
        return b"ok"

    def close(self) -> None:
        self._server.stop(None).wait(10)
        self._pool.shutdown(wait=True)


FAST = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.05)


@pytest.mark.parametrize("how", ["call", "with_call", "future", "aio"])
def test_retries_are_made_by_the_channel_through_the_check(world: World, how: str) -> None:
    """grpc's own retries are off: the channel's interceptors make each attempt, a new call
    with the token and the trace context, after the identity check."""
    flaky = Flaky(world, failures=2)
    target = f"localhost:{flaky.port}"
    try:
        if how == "aio":

            async def run() -> bytes:
                async with aio_secure_channel(target, **options(world), retry=FAST) as channel:
                    reply: bytes = await channel.unary_unary("/test.Flaky/Call")(b"", timeout=10)
                    return reply

            assert asyncio.run(run()) == b"ok"
        else:
            with secure_channel(target, **options(world), retry=FAST) as channel:
                call = channel.unary_unary("/test.Flaky/Call")
                if how == "call":
                    assert call(b"", timeout=10) == b"ok"
                elif how == "with_call":
                    reply, outcome = call.with_call(b"", timeout=10)
                    assert reply == b"ok" and outcome.code() == grpc.StatusCode.OK
                else:
                    future = call.future(b"", timeout=10)
                    assert future.result(timeout=10) == b"ok"
                    assert future.done() and future.code() == grpc.StatusCode.OK
        assert len(flaky.attempts) == 3
        assert all(a["authorization"].startswith("Bearer ") for a in flaky.attempts)
    finally:
        flaky.close()


@pytest.mark.parametrize("how", ["call", "future", "aio"])
def test_each_retried_attempt_carries_one_trace_context_and_one_token(
    world: World, how: str
) -> None:
    """Every attempt of a retried call is built from the call's own metadata: one traceparent
    (the active span's, replacing the caller's), none of the caller's tracestate, and one
    authorization; nothing accumulates from one attempt to the next."""
    flaky = Flaky(world, failures=2)
    target = f"localhost:{flaky.port}"
    given = [("traceparent", CALLERS_TRACEPARENT), ("tracestate", "vendor=of-that-trace")]
    tracer = TracerProvider().get_tracer("client")
    try:
        if how == "aio":

            async def run() -> Any:
                async with aio_secure_channel(target, **options(world), retry=FAST) as channel:
                    call = channel.unary_unary("/test.Flaky/Call")
                    with tracer.start_as_current_span("retried") as span:
                        reply = await call(b"", metadata=grpc.aio.Metadata(*given), timeout=10)
                    assert reply == b"ok"
                    return span

            span = asyncio.run(run())
        else:
            with secure_channel(target, **options(world), retry=FAST) as channel:
                call = channel.unary_unary("/test.Flaky/Call")
                with tracer.start_as_current_span("retried") as span:
                    if how == "call":
                        assert call(b"", metadata=given, timeout=10) == b"ok"
                    else:
                        assert call.future(b"", metadata=given, timeout=10).result(10) == b"ok"
        context = span.get_span_context()
        expected = f"00-{context.trace_id:032x}-{context.span_id:016x}-"
        assert len(flaky.entries) == 3
        for entries in flaky.entries:
            names = [name for name, _ in entries]
            assert names.count("traceparent") == 1 and "tracestate" not in names
            assert names.count("authorization") == 1
            assert dict(entries)["traceparent"].startswith(expected)
    finally:
        flaky.close()


def test_retries_stop_at_the_policy_the_deadline_and_the_server_answer(world: World) -> None:
    flaky = Flaky(world, failures=10)
    target = f"localhost:{flaky.port}"
    try:
        with secure_channel(target, **options(world), retry=FAST) as channel:
            call = channel.unary_unary("/test.Flaky/Call")
            with pytest.raises(grpc.RpcError) as info:
                call(b"", timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert len(flaky.attempts) == 3  # max_attempts
        flaky.attempts.clear()
        slow = RetryPolicy(max_attempts=5, initial_backoff=5, max_backoff=5)
        with secure_channel(target, **options(world), retry=slow) as channel:
            started = time.monotonic()
            with pytest.raises(grpc.RpcError):
                channel.unary_unary("/test.Flaky/Call")(b"", timeout=1.0)
            assert time.monotonic() - started < 1.5  # no wait runs past the deadline
        flaky.attempts.clear()
        with secure_channel(target, **options(world), retry=None) as channel:
            with pytest.raises(grpc.RpcError):
                channel.unary_unary("/test.Flaky/Call")(b"", timeout=10)
            assert len(flaky.attempts) == 1
    finally:
        flaky.close()
    answered = Flaky(world, failures=1, headers=True)  # the server answered: not again
    try:
        with (
            secure_channel(f"localhost:{answered.port}", **options(world), retry=FAST) as ch,
            pytest.raises(grpc.RpcError),
        ):
            ch.unary_unary("/test.Flaky/Call")(b"", timeout=10)
        assert len(answered.attempts) == 1
    finally:
        answered.close()


def test_a_retrying_future_can_be_cancelled_between_attempts(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from zerotrust import _jitter

    # the wait is jittered, uniform in [0, 5 s]: take its longest value, so the cancel below
    # always falls between the first two attempts
    monkeypatch.setattr(_jitter, "fraction", lambda: 1.0)
    flaky = Flaky(world, failures=10)
    slow = RetryPolicy(max_attempts=5, initial_backoff=5, max_backoff=5)
    try:
        with secure_channel(f"localhost:{flaky.port}", **options(world), retry=slow) as channel:
            future = channel.unary_unary("/test.Flaky/Call").future(b"", timeout=60)
            done = threading.Event()
            future.add_done_callback(lambda _f: done.set())
            deadline = time.monotonic() + 10
            while not flaky.attempts and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.1)  # the first attempt failed; waiting for the next
            assert future.cancel()
            assert done.wait(5) and future.cancelled()
            assert future.code() == grpc.StatusCode.CANCELLED
            with pytest.raises(grpc.FutureCancelledError):
                future.result()
        assert len(flaky.attempts) == 1
    finally:
        flaky.close()


def test_retry_policy_service_config() -> None:
    import json

    config = json.loads(RetryPolicy().service_config())
    policy = config["methodConfig"][0]["retryPolicy"]
    assert policy["maxAttempts"] == 3 and policy["retryableStatusCodes"] == ["UNAVAILABLE"]
    for bad in (
        {"max_attempts": 1},
        {"max_attempts": 9},
        {"initial_backoff": 0},
        {"max_backoff": 0.01},
        {"retryable_status_codes": ("NOPE",)},
        {"retryable_status_codes": "UNAVAILABLE"},
    ):
        with pytest.raises(ConfigurationError):
            RetryPolicy(**bad)  # type: ignore[arg-type]
    for refusal in ("UNAUTHENTICATED", "PERMISSION_DENIED"):  # a refusal stands
        with pytest.raises(ConfigurationError, match="never retried"):
            RetryPolicy(retryable_status_codes=("UNAVAILABLE", refusal))
    assert RetryPolicy(retryable_status_codes=("UNAVAILABLE", "RESOURCE_EXHAUSTED"))


def test_retry_policy_bounds() -> None:
    """max_attempts is an int from 2 to 5 (grpc's bounds); backoffs and the multiplier are
    positive finite numbers, not bools; max_backoff may equal initial_backoff; the codes are
    a non-empty tuple of grpc's code names other than OK."""
    for fine in (
        {"max_attempts": 2},
        {"max_attempts": 5},
        {"initial_backoff": 1, "max_backoff": 1},
        {"backoff_multiplier": 0.5},
        {"retryable_status_codes": ("UNAVAILABLE", "ABORTED")},
    ):
        policy = RetryPolicy(**fine)  # type: ignore[arg-type]
        assert all(getattr(policy, name) == value for name, value in fine.items())
    for bad in (
        {"max_attempts": True},
        {"max_attempts": 3.0},
        {"max_attempts": 6},
        {"backoff_multiplier": 0},
        {"backoff_multiplier": -2.0},
        {"backoff_multiplier": float("nan")},
        {"backoff_multiplier": float("inf")},
        {"backoff_multiplier": True},
        {"initial_backoff": "0.1"},
        {"max_backoff": float("inf")},
        {"retryable_status_codes": ()},
        {"retryable_status_codes": ("OK",)},
        {"retryable_status_codes": ["UNAVAILABLE"]},
    ):
        with pytest.raises(ConfigurationError):
            RetryPolicy(**bad)  # type: ignore[arg-type]
    import json

    [method] = json.loads(RetryPolicy().service_config())["methodConfig"]
    assert method["name"] == [{}]  # every method


def test_retry_policy_values_are_those_grpc_accepts(world: World) -> None:
    """Backoffs are those a grpc service config takes: from 1 ms (grpc counts whole
    milliseconds: initial_backoff=0.0004 was accepted and written "0.000s", which grpc refuses,
    failing every call with INVALID_ARGUMENT) to grpc's longest duration (max_backoff=1e12 was
    accepted and refused by grpc the same way), written with nine decimals."""
    import json

    for bad in (
        {"initial_backoff": 0.0004, "max_backoff": 0.0004},
        {"initial_backoff": 0.0009},
        {"max_backoff": 1e12},
    ):
        with pytest.raises(ConfigurationError, match="seconds"):
            RetryPolicy(**bad)
    fine = RetryPolicy(initial_backoff=0.0015, max_backoff=0.0015)
    policy = json.loads(fine.service_config())["methodConfig"][0]["retryPolicy"]
    assert policy["initialBackoff"] == policy["maxBackoff"] == "0.001500000s"
    extremes = RetryPolicy(initial_backoff=0.001, max_backoff=315_576_000_000)
    credentials = grpc.ssl_channel_credentials(
        world.ca.bundle.to_pem(),
        world.client_svid.private_key_pem(),
        world.client_svid.cert_chain_pem(),
    )
    with bare_server(world.server_svid, world.ca.bundle) as (port, _):
        for retry in (fine, extremes):  # grpc takes the service config
            config = [("grpc.service_config", retry.service_config())]
            with grpc.secure_channel(f"localhost:{port}", credentials, config) as plain:
                assert plain.unary_unary(f"/{SERVICE}/Unary")(b"x", timeout=10) == b"bare|x"
    flaky = Flaky(world, failures=1)
    try:
        with secure_channel(  # and a zerotrust channel retries with the policy
            f"localhost:{flaky.port}", **options(world), retry=extremes
        ) as channel:
            assert channel.unary_unary("/test.Flaky/Call")(b"", timeout=10) == b"ok"
        assert len(flaky.attempts) == 2
    finally:
        flaky.close()


@pytest.mark.parametrize("kind", ["sync", "aio"])
def test_the_longest_check_timeout_works_for_calls_without_a_deadline(
    world: World, kind: str
) -> None:
    """A day is the longest check_timeout: with it, a call without a deadline is checked and
    sent (the sync check waits on locks and timers, which refuse waits of centuries)."""
    with bare_server(world.server_svid, world.ca.bundle) as (port, recorded):
        target = f"localhost:{port}"
        if kind == "sync":
            with secure_channel(target, **options(world), check_timeout=86400) as channel:
                assert channel.unary_unary(f"/{SERVICE}/Unary")(b"x") == b"bare|x"
        else:

            async def call() -> bytes:
                async with aio_secure_channel(
                    target, **options(world), check_timeout=86400
                ) as channel:
                    reply: bytes = await channel.unary_unary(f"/{SERVICE}/Unary")(b"x")
                    return reply

            assert asyncio.run(call()) == b"bare|x"
    assert len(recorded.calls) == 1


def test_configuration_is_checked_up_front(world: World) -> None:
    base = options(world)
    with pytest.raises(ConfigurationError, match="server's identity"):
        secure_channel("localhost:1", **{**base, "server_id": None})
    with pytest.raises(ConfigurationError, match="one of them"):
        secure_channel("localhost:1", **base, authorizer=match.any())
    with pytest.raises(ConfigurationError, match="use server_name="):
        secure_channel("localhost:1", **base, options=[("grpc.ssl_target_name_override", "x")])
    with pytest.raises(ConfigurationError, match="use retry="):
        secure_channel("localhost:1", **base, options=[("grpc.enable_retries", 1)])
    with pytest.raises(ConfigurationError, match="host:port"):
        secure_channel("unix:///tmp/sock", **base)
    with pytest.raises(ConfigurationError, match="host:port"):
        secure_channel("unix:50051", **base)  # a Unix socket to grpc, not the host "unix"
    with pytest.raises(ConfigurationError, match="audience"):
        secure_channel("localhost:1", **{**base, "server_id": None, "authorizer": match.any()})
    with pytest.raises(ConfigurationError, match=r"no X\.509 authorities"):
        secure_channel("localhost:1", **{**base, "server_id": "spiffe://other.org/echo"})
    for target in ("", None, b"localhost:1"):
        with pytest.raises(ConfigurationError, match="target must be 'host:port'"):
            secure_channel(target, **base)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="svid must be"):
        secure_channel("localhost:1", **{**base, "svid": world.client_svid.cert_chain_pem()})
    with pytest.raises(ConfigurationError, match="bundles must be"):
        secure_channel("localhost:1", **{**base, "bundles": world.ca.bundle.to_pem()})
    with pytest.raises(ConfigurationError, match="retry must be a RetryPolicy"):
        secure_channel("localhost:1", **base, retry=3)  # type: ignore[arg-type]
    for check_timeout in (0, -1, "5", None, True, float("nan"), float("inf"), 86400.5, 1e10):
        with pytest.raises(ConfigurationError, match="check_timeout must be a positive"):
            secure_channel("localhost:1", **base, check_timeout=check_timeout)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="audience needs a token_source"):
        secure_channel("localhost:1", **{**base, "token_source": None}, audience="x")
    with pytest.raises(ConfigurationError, match="target must be"):
        aio_secure_channel("", **base)


@pytest.mark.parametrize(
    "option",
    [
        ("grpc.ssl_target_name_override", "echo.internal"),
        (b"grpc.ssl_target_name_override", "echo.internal"),
        ("grpc.default_authority", "echo.internal"),
        (b"grpc.default_authority", b"echo.internal"),
        ("grpc.default_authority\x00x", "echo.internal"),
        (b"grpc.enable_retries", 1),
        ("grpc.lb_policy_name", "round_robin"),
        ("grpc.service_config_disable_resolution", 0),
    ],
)
def test_options_that_weaken_the_checks_are_refused(world: World, option: tuple[Any, Any]) -> None:
    """The server's certificate names echo.internal, not the dialled localhost: grpc's host
    name check refuses it, unless an option changes the name checked, whatever its spelling."""
    svid = world.ca.issue_svid(SERVER_ID, dns_names=["echo.internal"])
    with bare_server(svid, world.ca.bundle) as (port, recorded):
        with secure_channel(f"localhost:{port}", **options(world)) as channel:
            with pytest.raises(grpc.RpcError) as info:
                channel.unary_unary(f"/{SERVICE}/Unary")(b"x", timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(ConfigurationError):
            secure_channel(f"localhost:{port}", **options(world), options=[option])
    assert recorded.calls == []


def _retry_config(codes: list[str], kind: str = "retryPolicy") -> str:
    import json

    if kind == "hedgingPolicy":
        policy: dict[str, Any] = {"maxAttempts": 3, "nonFatalStatusCodes": codes}
    else:
        policy = {
            "maxAttempts": 5,
            "initialBackoff": "0.01s",
            "maxBackoff": "0.01s",
            "backoffMultiplier": 1,
            "retryableStatusCodes": codes,
        }
    return json.dumps({"methodConfig": [{"name": [{}], kind: policy}]})


@pytest.mark.parametrize(
    "config",
    [
        _retry_config(["UNAUTHENTICATED", "PERMISSION_DENIED"]),
        _retry_config(["UNAUTHENTICATED"], "hedgingPolicy"),
        _retry_config(["UNAVAILABLE"]),  # grpc's retries are off, whatever the codes
        _retry_config(["UNAUTHENTICATED"]).encode(),
        # a key named twice: one reader would see the retries, the other not
        '{"methodConfig": [{"name": [{}], "retryPolicy": {}}], "methodConfig": []}',
        '{"retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1}}',
        '{"loadBalancingConfig": [{"round_robin": {}}]}',
        '{"loadBalancingPolicy": "round_robin"}',
        '{"methodConfig": {}}',
        "[]",
        "{" * 100_000,
        '{"a": ' * 10_000,  # nested deeper than a parser's recursion
    ],
)
def test_a_service_config_with_retries_or_balancing_is_refused(world: World, config: Any) -> None:
    """A refusal stands: a service config cannot make UNAUTHENTICATED or PERMISSION_DENIED
    retryable (grpc sent the call five times), nor bring back grpc's own retries."""

    def refuse(request: bytes, context: Any) -> bytes:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid_token")

    with bare_server(world.server_svid, world.ca.bundle, refuse) as (port, recorded):
        with pytest.raises(ConfigurationError):
            secure_channel(
                f"localhost:{port}",
                **options(world),
                options=[("grpc.service_config", config)],
            )
        allowed = '{"methodConfig": [{"name": [{}], "timeout": "5s"}],'
        allowed += ' "loadBalancingConfig": [{"pick_first": {}}]}'
        with (
            secure_channel(
                f"localhost:{port}", **options(world), options=[("grpc.service_config", allowed)]
            ) as channel,
            pytest.raises(grpc.RpcError) as info,
        ):
            channel.unary_unary(f"/{SERVICE}/Unary")(b"x", timeout=10)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert len(recorded.calls) == 1


def test_server_name_override(world: World) -> None:
    """A server certificate without the dialled host name: ``server_name`` names the SAN."""
    svid = world.ca.issue_svid(SERVER_ID, dns_names=["echo.internal"])
    with sync_server(world, svid=svid) as port:
        with secure_channel(f"127.0.0.1:{port}", **options(world)) as channel:
            with pytest.raises(grpc.RpcError) as info:  # grpc's hostname check fails
                channel.unary_unary(f"/{SERVICE}/Unary")(b"x", timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        with secure_channel(
            f"127.0.0.1:{port}", **options(world), server_name="echo.internal"
        ) as channel:
            assert channel.unary_unary(f"/{SERVICE}/Unary")(b"x", timeout=10)


def test_an_ipv4_scheme_target_is_dialled_and_probed(world: World) -> None:
    """grpc's ``ipv4:`` scheme names one address: the probe connects to it too."""
    svid = world.ca.issue_svid(SERVER_ID, dns_names=["echo.internal"])
    with (
        sync_server(world, svid=svid) as port,
        secure_channel(
            f"ipv4:127.0.0.1:{port}", **options(world), server_name="echo.internal"
        ) as channel,
    ):
        assert channel.unary_unary(f"/{SERVICE}/Unary")(b"x", timeout=10)


def test_plain_tls_server_without_grpc_is_checked_too(world: World) -> None:
    """The identity probe is an ordinary mTLS handshake with zerotrust's client context."""
    import socket
    import threading

    context = server_ssl_context(world.server_svid, world.ca.bundle, authorizer=match.any())
    listener = socket.create_server(("localhost", 0))
    port = listener.getsockname()[1]

    def accept() -> None:
        try:
            raw, _ = listener.accept()
            with context.wrap_socket(raw, server_side=True):
                pass
        except OSError:
            pass

    thread = threading.Thread(target=accept)
    thread.start()
    try:
        with (
            secure_channel(f"localhost:{port}", **options(world, server_id=WRONG_ID)) as ch,
            pytest.raises(ServerIdentityError),
        ):
            ch.unary_unary(f"/{SERVICE}/Unary")(b"x", timeout=10)
    finally:
        close_listener(listener)  # the thread may still be in accept(): this ends it
        thread.join(10)


class SlowProxy:
    """A TCP relay on loopback that waits ``delay`` seconds before connecting each client."""

    def __init__(self, port: int, delay: float) -> None:
        import socket

        self._target, self._delay = port, delay
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closing = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket

        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            time.sleep(self._delay)
            try:
                upstream = socket.create_connection(("127.0.0.1", self._target))
            except OSError:
                client.close()
                continue
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: Any, sink: Any) -> None:
        with contextlib.suppress(OSError), source, sink:
            while data := source.recv(65536):
                sink.sendall(data)

    def close(self) -> None:
        self._closing.set()
        close_listener(self._listener)


@pytest.mark.parametrize("kind", ["sync", "aio"])
def test_the_identity_check_counts_against_the_call_deadline(world: World, kind: str) -> None:
    """A call's timeout bounds the whole call, the server identity check included: a check that
    takes most of it leaves the RPC only the rest (grpc starts its deadline when handed it)."""
    with sync_server(world) as port:
        proxy = SlowProxy(port, delay=0.7)
        try:
            started = time.monotonic()
            if kind == "sync":
                with (
                    secure_channel(
                        f"localhost:{proxy.port}", **options(world), retry=None
                    ) as channel,
                    pytest.raises(grpc.RpcError) as info,
                ):
                    channel.unary_unary(f"/{SERVICE}/Unary")(b"x", timeout=1.0)
                code = info.value.code()
            else:

                async def run() -> grpc.StatusCode:
                    async with aio_secure_channel(
                        f"localhost:{proxy.port}", **options(world), retry=None
                    ) as channel:
                        try:
                            await channel.unary_unary(f"/{SERVICE}/Unary")(b"x", timeout=1.0)
                        except grpc.aio.AioRpcError as exc:
                            return exc.code()
                    raise AssertionError("the call outlived its deadline")

                code = asyncio.run(run())
            elapsed = time.monotonic() - started
        finally:
            proxy.close()
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert elapsed < 1.4  # the check (0.7 s) and the RPC share the one second


def test_calls_without_a_deadline(world: World) -> None:
    """No timeout and no span to inject: the first attempt's details go to grpc as given."""
    unary = f"/{SERVICE}/Unary"
    with (
        sync_server(world) as port,
        secure_channel(f"localhost:{port}", **options(world)) as channel,
    ):
        assert channel.unary_unary(unary)(b"x") == CLIENT_ID.encode() + b"|x"

    async def run() -> bytes:
        async with (
            aio_server(world) as port,
            aio_secure_channel(f"localhost:{port}", **options(world)) as channel,
        ):
            return await channel.unary_unary(unary)(b"y")  # type: ignore[no-any-return]

    assert asyncio.run(run()) == CLIENT_ID.encode() + b"|y"


@contextlib.contextmanager
def _plain_grpc_server(world: World) -> Iterator[int]:
    """A grpc server with grpc's own mTLS credentials (no zerotrust on the server side)."""
    pool = futures.ThreadPoolExecutor(max_workers=2)
    server = grpc.server(pool, options=EXCLUSIVE_PORT)
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                SERVICE,
                {"Unary": grpc.unary_unary_rpc_method_handler(lambda req, ctx: b"plain|" + req)},
            )
        ]
    )
    credentials = grpc.ssl_server_credentials(
        [(world.server_svid.private_key_pem(), world.server_svid.cert_chain_pem())],
        root_certificates=world.ca.bundle.to_pem(),
        require_client_auth=True,
    )
    port = server.add_secure_port("localhost:0", credentials)
    server.start()
    try:
        yield port
    finally:
        server.stop(None).wait()
        pool.shutdown()


def test_a_channel_reaches_a_server_with_grpcs_own_credentials(world: World) -> None:
    """A server built with ``grpc.ssl_server_credentials`` (as one written without zerotrust,
    in any language): the channel presents its SVID, checks the server's SPIFFE ID and calls;
    a server_id the server does not prove is refused before anything is sent."""
    with _plain_grpc_server(world) as port:
        target = f"localhost:{port}"
        with secure_channel(target, **options(world, token_source=None)) as channel:
            assert channel.unary_unary(f"/{SERVICE}/Unary")(b"x", timeout=10) == b"plain|x"
        other = "spiffe://example.org/ns/shop/sa/other"
        with (
            secure_channel(target, **options(world, token_source=None, server_id=other)) as ch,
            pytest.raises(grpc.RpcError) as refused,
        ):
            ch.unary_unary(f"/{SERVICE}/Unary")(b"x", timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
