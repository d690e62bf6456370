"""The client's server identity check against servers that die, are replaced, or stall:
every attempt of a call (retries included) goes out only over a connection a check verified,
and on an aio channel the check uses no thread and keeps to each call's deadline."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import grpc.aio
import pytest

from tests._sockets import close_listener
from tests.grpc_integration._support import (
    CLIENT_ID,
    SERVER_ID,
    SERVICE,
    Recorded,
    Relay,
    World,
    bare_server,
    sync_server,
)
from tests.grpc_integration._support import (
    client_options as options,
)
from zerotrust import client_ssl_context, match
from zerotrust.client._grpc_check import ServerCheck
from zerotrust.grpc import RetryPolicy, ServerIdentityError, aio_secure_channel, secure_channel

IMPOSTOR = "spiffe://example.org/impostor"
READY, IDLE = grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.IDLE
SHUTDOWN = grpc.ChannelConnectivity.SHUTDOWN
TRANSIENT_FAILURE = grpc.ChannelConnectivity.TRANSIENT_FAILURE
DEFAULT = RetryPolicy()


def _outcome(call: Any) -> Any:
    """The call's result, or the exception it raised."""
    try:
        return call()
    except Exception as exc:
        return exc


@pytest.mark.parametrize("retry", [DEFAULT, None], ids=["default-retry", "no-retry"])
@pytest.mark.parametrize("kind", ["sync", "aio"])
def test_a_replaced_server_gets_no_attempt_of_a_call(
    world: World, kind: str, retry: RetryPolicy | None
) -> None:
    """The server dies with a call in flight, and another workload of the trust domain, with
    the same DNS name, has taken its address. With retries, the call's next attempt waits for
    a check of the new connection, which refuses it (grpc's own retries sent the call, token
    included, to the new server); without, the next call is refused the same way, however
    soon it follows the failure (grpc reports the lost connection only later)."""
    impostor = world.ca.issue_svid(IMPOSTOR, dns_names=["localhost"])
    entered, release = threading.Event(), threading.Event()

    def slow(request: bytes, context: Any) -> bytes:
        entered.set()
        release.wait(20)
        return b"legit"

    @contextlib.contextmanager
    def replaced(relay: Relay) -> Iterator[Recorded]:
        """The impostor listens on the address, then the real server dies."""
        relay.stop_listening()
        with bare_server(impostor, world.ca.bundle, bind=f"localhost:{relay.port}") as (
            port,
            recorded,
        ):
            assert port == relay.port
            relay.die()
            yield recorded

    def sync(target: str, relay: Relay) -> tuple[Any, Any, Recorded]:
        with secure_channel(target, **options(world), retry=retry) as channel:
            call = channel.unary_unary(f"/{SERVICE}/Unary")
            first = call.future(b"secret", timeout=20)
            assert entered.wait(10)
            seconds: futures.Future[Any] = futures.Future()

            def follow(_first: Any) -> None:  # at once, on a thread of its own
                threading.Thread(
                    target=lambda: seconds.set_result(_outcome(lambda: call(b"secret", timeout=10)))
                ).start()

            with replaced(relay) as recorded:
                first.add_done_callback(follow)
                error = first.exception()
                second = seconds.result(timeout=30)
        return error, second, recorded

    async def aio(target: str, relay: Relay) -> tuple[Any, Any, Recorded]:
        async with aio_secure_channel(target, **options(world), retry=retry) as channel:
            call = channel.unary_unary(f"/{SERVICE}/Unary")
            first = asyncio.ensure_future(call(b"secret", timeout=20))
            assert await asyncio.to_thread(entered.wait, 10)
            with replaced(relay) as recorded:
                (error,) = await asyncio.gather(first, return_exceptions=True)
                (second,) = await asyncio.gather(  # at once
                    call(b"secret", timeout=10), return_exceptions=True
                )
        return error, second, recorded

    with bare_server(world.server_svid, world.ca.bundle, slow) as (port, _):
        relay = Relay(port)
        target = f"localhost:{relay.port}"
        try:
            if kind == "sync":
                error, second, recorded = sync(target, relay)
            else:
                error, second, recorded = asyncio.run(aio(target, relay))
        finally:
            release.set()
            relay.die()
    assert recorded.calls == []  # no attempt, no token reached the impostor
    assert isinstance(second, ServerIdentityError), second
    assert second.code() == grpc.StatusCode.UNAUTHENTICATED
    assert isinstance(error, grpc.RpcError), error
    if retry is not None:  # the retried attempt was refused by the check
        assert isinstance(error, ServerIdentityError), error
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    else:
        assert error.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("dns_name", ["localhost", "impostor.test"])
def test_an_attacker_relaying_the_probe_is_stopped_only_by_grpcs_handshake(
    world: World, dns_name: str
) -> None:
    """What docs/grpc.md says of an attacker on the path holding an SVID of the server's trust
    domain: it takes grpc's connection (the first) and passes every later one (the probe)
    through to the genuine server. With the DNS name dialled in its SVID, grpc's handshake
    accepts it, the probe verifies the genuine server, and the call, token included, reaches
    the attacker: the probe does not detect a relay. When only the server's SVID carries that
    name, grpc's handshake refuses the attacker and nothing is sent."""
    impostor = world.ca.issue_svid(IMPOSTOR, dns_names=[dns_name])
    with (
        sync_server(world) as genuine,
        bare_server(impostor, world.ca.bundle, bind="127.0.0.1:0") as (taken, recorded),
    ):
        relay = Relay(genuine, route=lambda n: taken if n == 1 else genuine)
        try:
            with secure_channel(f"localhost:{relay.port}", **options(world), retry=None) as ch:
                outcome = _outcome(lambda: ch.unary_unary(f"/{SERVICE}/Unary")(b"x", timeout=10))
                verified = ch.server_peer
        finally:
            relay.die()
    if dns_name == "localhost":
        assert outcome == b"bare|x"
        assert verified is not None and str(verified.spiffe_id) == SERVER_ID
        [(metadata, request)] = recorded.calls
        assert request == b"x" and metadata["authorization"].startswith("Bearer ")
    else:
        assert isinstance(outcome, grpc.RpcError), outcome
        assert outcome.code() == grpc.StatusCode.UNAVAILABLE
        assert verified is None and recorded.calls == []


def test_aio_checks_use_no_thread_and_keep_to_each_deadline(world: World) -> None:
    """A server that stalls every handshake, and 14 concurrent calls with 1 s deadlines: each
    ends at its deadline, and the loop's default executor (two threads here) stays free. The
    checks ran in that executor and queued there: calls ended after 1, 2, 3... seconds, and
    ``asyncio.to_thread`` work waited behind them."""
    with bare_server(world.server_svid, world.ca.bundle) as (port, _):
        relay = Relay(port, stall=lambda _n: True)

        async def run() -> tuple[list[tuple[str, float]], float]:
            asyncio.get_running_loop().set_default_executor(
                futures.ThreadPoolExecutor(max_workers=2)
            )
            async with aio_secure_channel(
                f"localhost:{relay.port}", **options(world), retry=None
            ) as channel:

                async def one() -> tuple[str, float]:
                    started = time.monotonic()
                    with pytest.raises(grpc.RpcError) as info:
                        await channel.unary_unary(f"/{SERVICE}/Unary")(b"x", timeout=1.0)
                    return info.value.code().name, time.monotonic() - started

                async def other_work() -> float:
                    await asyncio.sleep(0.3)  # while every call is being checked
                    started = time.monotonic()
                    await asyncio.to_thread(lambda: None)
                    return time.monotonic() - started

                calls = asyncio.gather(*(one() for _ in range(14)))
                waited = await other_work()
                return await calls, waited

        try:
            outcomes, waited = asyncio.run(run())
        finally:
            relay.die()
    assert {code for code, _ in outcomes} == {"DEADLINE_EXCEEDED"}
    assert max(elapsed for _, elapsed in outcomes) < 1.6
    assert waited < 0.5


def test_aio_concurrent_calls_share_one_probe(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """grpc's connection is forwarded, every later connection (the probes) stalls: the calls
    wait for one probe, each until its own deadline, and the probe is stopped when the
    channel closes."""
    with bare_server(world.server_svid, world.ca.bundle) as (port, _):
        relay = Relay(port, stall=lambda n: n > 1)

        async def run() -> list[tuple[str, float]]:
            async with aio_secure_channel(
                f"localhost:{relay.port}", **options(world), retry=None
            ) as channel:

                async def one(timeout: float) -> tuple[str, float]:
                    started = time.monotonic()
                    with pytest.raises(grpc.RpcError) as info:
                        await channel.unary_unary(f"/{SERVICE}/Unary")(b"x", timeout=timeout)
                    return info.value.code().name, time.monotonic() - started

                return await asyncio.gather(*(one(0.5 + i / 10) for i in range(10)))

        try:
            outcomes = asyncio.run(run())
        finally:
            relay.die()
    assert {code for code, _ in outcomes} == {"DEADLINE_EXCEEDED"}
    # the probe was stopped with the channel, before its own timeout: nothing failed
    assert not [r for r in caplog.records if r.name == "zerotrust.grpc"]
    for i, (_, elapsed) in enumerate(outcomes):
        assert 0.5 + i / 10 - 0.05 < elapsed < 0.5 + i / 10 + 0.4
    assert relay.accepted == 2  # grpc's connection and one probe


#: A policy that retries no status a call can end with here: a check that could not run
#: (nothing sent) is tried again all the same.
OTHER_CODES = RetryPolicy(retryable_status_codes=("ABORTED",))


@pytest.mark.parametrize(
    "retry", [DEFAULT, OTHER_CODES, None], ids=["default-retry", "aborted-only", "no-retry"]
)
@pytest.mark.parametrize("method", ["Unary", "Bidi"])
@pytest.mark.parametrize("kind", ["sync", "aio"])
def test_a_check_that_could_not_run_is_tried_again_for_every_arity(
    world: World,
    kind: str,
    method: str,
    retry: RetryPolicy | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """grpc's connection is forwarded, the first probe's connection is dropped: the call's
    first attempt cannot be checked (nothing is sent), the next one is checked and sent,
    whatever status codes the policy names as retryable."""
    with sync_server(world) as port:
        relay = Relay(port, drop=lambda n: n == 2)
        target = f"localhost:{relay.port}"
        try:
            if kind == "sync":
                with secure_channel(target, **options(world), retry=retry) as channel:
                    outcome = _outcome(lambda: _call(channel, method))
            else:

                async def run() -> Any:
                    async with aio_secure_channel(target, **options(world), retry=retry) as ch:
                        try:
                            return await _acall(ch, method)
                        except grpc.RpcError as exc:
                            return exc

                outcome = asyncio.run(run())
        finally:
            relay.die()
    if retry is None:
        assert isinstance(outcome, grpc.RpcError), outcome
        assert outcome.code() == grpc.StatusCode.UNAVAILABLE
        assert outcome.details() == "server identity could not be checked"
    else:
        reply = CLIENT_ID.encode() + b"|x"
        assert outcome == (reply if method == "Unary" else [reply])
        assert relay.accepted == 3  # grpc's connection, the dropped probe, the next one
    # the failed check is logged, naming the server it reached (the sync probe connects first)
    [logged] = [r.getMessage() for r in caplog.records if r.name == "zerotrust.grpc"]
    reached = f" (connected to 127.0.0.1:{relay.port})" if kind == "sync" else ""
    assert logged.startswith(f"zerotrust: the server identity check of {target}{reached} failed:")


def test_a_failed_check_names_an_ipv6_address_in_brackets(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    context = client_ssl_context(world.client_svid, world.ca.bundle, authorizer=match.any())
    check = ServerCheck("echo.internal:8443", context)
    check._log_failure(("2001:db8::7", 8443, 0, 0), "took too long")
    check._log_failure(("10.0.0.7", 8443), "ConnectionResetError")
    check._log_failure(None, "took too long")
    assert [r.getMessage() for r in caplog.records] == [
        "zerotrust: the server identity check of echo.internal:8443"
        " (connected to [2001:db8::7]:8443) failed: took too long",
        "zerotrust: the server identity check of echo.internal:8443"
        " (connected to 10.0.0.7:8443) failed: ConnectionResetError",
        "zerotrust: the server identity check of echo.internal:8443 failed: took too long",
    ]


@contextlib.contextmanager
def tls_server(world: World, on_accept: Callable[[int], None] = lambda _n: None) -> Iterator[Any]:
    """A plain mTLS server on 127.0.0.1 presenting the server SVID (what a probe needs):
    yields ``(port, names)``, the SNI of each handshake; ``on_accept(n)`` runs for the n-th
    connection (from 1) before its handshake."""
    from zerotrust import server_ssl_context

    context = server_ssl_context(world.server_svid, world.ca.bundle, authorizer=match.any())
    names: list[str | None] = []
    context.sni_callback = lambda _sock, name, _ctx: names.append(name)  # type: ignore[assignment,func-returns-value]
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        accepted = 0
        while True:
            try:
                raw, _ = listener.accept()
            except OSError:
                return
            accepted += 1
            on_accept(accepted)
            with contextlib.suppress(OSError), context.wrap_socket(raw, server_side=True):
                pass

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        yield listener.getsockname()[1], names
    finally:
        close_listener(listener)
        thread.join(10)


def _client_context(world: World) -> Any:
    return client_ssl_context(world.client_svid, world.ca.bundle, authorizer=match.any())


@pytest.mark.parametrize("kind", ["sync", "aio"])
def test_the_probe_sends_the_server_name_grpc_sends(world: World, kind: str) -> None:
    """The probe's SNI is the one grpc's handshake sends (a server may choose its certificate
    by it): ``server_name`` if given, else the target's host name, and none for an address."""
    with tls_server(world) as (port, names):
        for target, server_name in [
            (f"localhost:{port}", None),
            (f"127.0.0.1:{port}", None),
            (f"127.0.0.1:{port}", "echo.internal"),
            (f"localhost:{port}", "echo.internal"),
        ]:
            check = ServerCheck(target, _client_context(world), server_name=server_name)
            check.attach(lambda _try_to_connect: READY)
            peer = check.verify(10) if kind == "sync" else asyncio.run(check.averify(10))
            assert str(peer.spiffe_id) == SERVER_ID
    assert names == ["localhost", None, "echo.internal", "echo.internal"]


@pytest.mark.parametrize("how", ["read", "reported"])
def test_a_check_counts_only_for_the_connection_it_was_made_for(world: World, how: str) -> None:
    """grpc's connection is replaced while the probe runs: the state read after the probe is
    IDLE then READY again, or grpc reported IDLE and READY meanwhile (the state read stays
    READY). The probe's success is not taken for the new connection: that one is probed too,
    and the call goes on only once it is verified."""
    states = [READY, IDLE, READY] if how == "read" else []  # then READY from now on
    check: ServerCheck | None = None

    def reconnected(n: int) -> None:  # while the first probe waits for its handshake
        if how == "reported" and n == 1:
            assert check is not None
            check.on_state(IDLE)
            check.on_state(READY)

    with tls_server(world, reconnected) as (port, names):
        check = ServerCheck(f"127.0.0.1:{port}", _client_context(world))
        check.attach(lambda _try_to_connect: states.pop(0) if states else READY)
        assert str(check.verify(10).spiffe_id) == SERVER_ID
        assert not check.needed  # the channel is on the connection the check verified
        assert check.verify(10) is check.peer  # that connection is not probed again
    assert len(names) == 2  # two probes


@pytest.mark.parametrize("kind", ["sync", "aio"])
def test_the_check_timeout_bounds_a_check_within_a_longer_deadline(world: World, kind: str) -> None:
    """A server that stalls every handshake, a check timeout of 0.3 s and a call deadline of
    60 s: the check gives up at its own timeout (UNAVAILABLE: not checked in time, which a
    retry policy may try again), not at the call's deadline."""
    with bare_server(world.server_svid, world.ca.bundle) as (port, _):
        relay = Relay(port, stall=lambda _n: True)
        try:
            check = ServerCheck(f"localhost:{relay.port}", _client_context(world), timeout=0.3)
            check.attach(lambda _try_to_connect: READY)

            def verify() -> Any:
                if kind == "sync":
                    return check.verify(60)
                return asyncio.run(check.averify(60))

            with pytest.raises(ServerIdentityError) as info:
                verify()
        finally:
            relay.die()
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert info.value.details() == "server identity could not be checked in time"


def _stalling_probes(probing: threading.Event) -> Callable[[int], bool]:
    """A relay's ``stall``: grpc's own connection (the first) passes, every later one (the
    identity probes) stalls, and ``probing`` is set when one does."""

    def stall(number: int) -> bool:
        if number >= 2:
            probing.set()
            return True
        return False

    return stall


def test_closing_the_channel_ends_a_call_waiting_for_the_probe(world: World) -> None:
    """grpc's connection is up and the probe's handshake stalls: closing the channel ends the
    call waiting for that probe at once, CANCELLED as grpc ends a closed channel's calls. It
    waited for the check's timeout, then ended UNAVAILABLE."""
    probing = threading.Event()

    stall = _stalling_probes(probing)

    outcome: list[Any] = []
    with sync_server(world) as port:
        relay = Relay(port, stall=stall)
        try:
            channel = secure_channel(
                f"localhost:{relay.port}", **options(world), retry=None, check_timeout=30
            )
            unary = channel.unary_unary(f"/{SERVICE}/Unary")
            caller = threading.Thread(
                target=lambda: outcome.append(_outcome(lambda: unary(b"x", timeout=60)))
            )
            caller.start()
            try:
                assert probing.wait(10)
            finally:
                channel.close()
                caller.join(10)
            assert not caller.is_alive()
        finally:
            relay.die()
    [error] = outcome
    assert isinstance(error, ServerIdentityError), error
    assert error.code() == grpc.StatusCode.CANCELLED


@pytest.mark.parametrize("kind", ["unary_unary", "stream_unary"])
def test_a_future_returns_while_its_identity_check_runs_and_can_be_cancelled(
    world: World, kind: str
) -> None:
    """future() invokes the call asynchronously, as grpc's does: it returns while the probe's
    handshake stalls, and cancelling it ends the call there, unsent. It returned only once the
    check had failed, at the call's deadline, already done."""
    probing = threading.Event()

    stall = _stalling_probes(probing)

    with sync_server(world) as port:
        relay = Relay(port, stall=stall)
        try:
            with secure_channel(
                f"localhost:{relay.port}", **options(world), retry=None, check_timeout=30
            ) as channel:
                if kind == "unary_unary":
                    call = channel.unary_unary(f"/{SERVICE}/Unary")
                    future = call.future(b"x", timeout=5)
                else:
                    call = channel.stream_unary(f"/{SERVICE}/ClientStream")
                    future = call.future(iter([b"x"]), timeout=5)
                assert probing.wait(10)
                assert not future.done()
                ended: list[Any] = []
                future.add_done_callback(ended.append)
                assert future.cancel()
                assert future.done() and future.cancelled() and ended == [future]
                assert future.code() == grpc.StatusCode.CANCELLED
                with pytest.raises(grpc.FutureCancelledError):
                    future.result()
        finally:
            relay.die()
    assert world.sink.events == []  # nothing reached the server


def test_a_call_that_cannot_connect_fails_as_grpc_fails_it(world: World) -> None:
    """A closed channel fails the check at once (CANCELLED, not at the deadline); a channel
    that could not connect fails it at once (UNAVAILABLE) unless the call waits for ready,
    which then waits until its deadline. Nothing is probed (no server listens)."""
    channel = [SHUTDOWN]
    check = ServerCheck("localhost:1", _client_context(world), timeout=30)
    check.attach(lambda _try_to_connect: channel[0])

    def codes(timeout: float, wait_for_ready: bool) -> list[Any]:
        out = []
        with pytest.raises(ServerIdentityError) as info:
            check.verify(timeout, wait_for_ready=wait_for_ready)
        out.append(info.value.code())
        with pytest.raises(ServerIdentityError) as info:
            asyncio.run(check.averify(timeout, wait_for_ready=wait_for_ready))
        out.append(info.value.code())
        return out

    for wait_for_ready in (False, True):
        assert codes(30, wait_for_ready) == [grpc.StatusCode.CANCELLED] * 2
    channel[0] = TRANSIENT_FAILURE
    assert codes(30, False) == [grpc.StatusCode.UNAVAILABLE] * 2
    assert codes(0.2, True) == [grpc.StatusCode.DEADLINE_EXCEEDED] * 2


def test_a_server_trickling_its_handshake_is_cut_at_the_check_timeout(world: World) -> None:
    """The server's handshake comes 16 bytes at a time (each piece would reset a socket
    timeout; all of it takes several seconds): the probe's connection is cut at the check's
    timeout, and the check fails (not checked in time) instead of waiting for the end."""
    with bare_server(world.server_svid, world.ca.bundle) as (port, _):
        relay = Relay(port, trickle=0.05)
        try:
            check = ServerCheck(f"localhost:{relay.port}", _client_context(world), timeout=1.0)
            check.attach(lambda _try_to_connect: READY)
            with pytest.raises(ServerIdentityError) as info:
                check.verify()
        finally:
            relay.die()
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert info.value.details() == "server identity could not be checked in time"


def _call(channel: Any, method: str) -> object:
    """One call of ``method`` of the test service, to its end."""
    path = f"/{SERVICE}/{method}"
    if method == "Unary":
        return channel.unary_unary(path)(b"x", timeout=10)
    if method == "ServerStream":
        return list(channel.unary_stream(path)(b"x", timeout=10))
    if method == "ClientStream":
        return channel.stream_unary(path)(iter([b"x"]), timeout=10)
    return list(channel.stream_stream(path)(iter([b"x"]), timeout=10))


async def _acall(channel: Any, method: str) -> object:
    """The same on a grpc.aio channel."""
    path = f"/{SERVICE}/{method}"
    if method == "Unary":
        return await channel.unary_unary(path)(b"x", timeout=10)
    if method == "ClientStream":
        return await channel.stream_unary(path)(iter([b"x"]), timeout=10)
    if method == "ServerStream":
        call = channel.unary_stream(path)(b"x", timeout=10)
    else:
        call = channel.stream_stream(path)(iter([b"x"]), timeout=10)
    return [item async for item in call]


@pytest.mark.parametrize("method", ["Unary", "ServerStream", "ClientStream", "Bidi"])
@pytest.mark.parametrize("kind", ["sync", "aio"])
def test_a_call_that_ended_unavailable_leaves_the_connection_unverified(
    world: World, kind: str, method: str
) -> None:
    """grpc ends the calls of a lost connection with UNAVAILABLE, possibly before its state
    shows the loss. Here the state reads READY throughout: after a call of any arity that
    ended UNAVAILABLE the next one must wait for a check again; after one that ended with
    another code it need not."""
    from zerotrust.client._grpc_creds import channel_credentials
    from zerotrust.client._grpc_interceptors import ClientInterceptor, aio_interceptors

    codes = iter([grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND])

    def fail(request: bytes, context: Any) -> bytes:
        context.abort(next(codes), "failed")

    needed: list[bool] = []
    with bare_server(world.server_svid, world.ca.bundle, fail) as (port, recorded):
        target = f"localhost:{port}"
        credentials = channel_credentials(world.client_svid, world.bundles, None)
        check = ServerCheck(target, _client_context(world))
        check.attach(lambda _try_to_connect: READY)  # grpc shows no loss
        if kind == "sync":
            with grpc.secure_channel(target, credentials) as raw:
                channel = grpc.intercept_channel(raw, ClientInterceptor(check, retry=None))
                for _ in range(2):
                    with pytest.raises(grpc.RpcError):
                        _call(channel, method)
                    needed.append(check.needed)
        else:

            async def run() -> None:
                interceptors = aio_interceptors(check, retry=None)
                async with grpc.aio.secure_channel(
                    target, credentials, interceptors=interceptors
                ) as channel:
                    for _ in range(2):
                        with pytest.raises(grpc.RpcError):
                            await _acall(channel, method)
                        await asyncio.sleep(0)  # the call's done callbacks run on the loop
                        needed.append(check.needed)

            asyncio.run(run())
    assert len(recorded.calls) == 2
    assert needed == [True, False]


class _StuckResolver:
    """Stands in for ``socket.getaddrinfo``: a DNS server that does not answer cannot be
    produced here, and grpc resolves with its own resolver, not Python's, so only the probe
    sees this one. Names in ``stuck`` get no answer until :attr:`answer` is set (or 10 s
    passed); the others resolve as 127.0.0.1."""

    def __init__(self, *stuck: str) -> None:
        self.stuck = set(stuck)
        self.answer = threading.Event()
        self.asked: list[str] = []
        self.gave_up: list[str] = []  # stuck names whose wait ended without an answer
        self._real = socket.getaddrinfo

    def __call__(self, host: str, port: Any, *args: Any) -> Any:
        self.asked.append(host)
        if host in self.stuck and not self.answer.wait(10):
            self.gave_up.append(host)
        return self._real("127.0.0.1", port, *args)


def _resolving() -> int:
    return sum(t.name == "zerotrust-grpc-resolve" for t in threading.enumerate())


def test_a_resolver_that_does_not_answer_holds_no_call_past_its_deadline(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sync probe resolves the target's name with the system resolver, which cannot be
    interrupted: a call fails at its deadline (or at the check timeout without one) while the
    resolution is still stuck, and the calls after it wait for that resolution instead of
    starting another (one thread, not one per call). Once the resolver answers, calls go."""
    resolver = _StuckResolver("localhost")
    with (
        sync_server(world) as port,
        secure_channel(
            f"localhost:{port}", **options(world), retry=None, check_timeout=0.5
        ) as channel,
    ):
        unary = channel.unary_unary(f"/{SERVICE}/Unary")
        monkeypatch.setattr(socket, "getaddrinfo", resolver)
        try:
            outcomes = [_outcome(lambda t=t: unary(b"x", timeout=t)) for t in (0.3, None, 0.3)]
            assert resolver.gave_up == []  # every call returned while the resolver was stuck
            assert resolver.asked == ["localhost"]
            assert _resolving() == 1
        finally:
            resolver.answer.set()
        assert unary(b"x", timeout=10) == CLIENT_ID.encode() + b"|x"
    assert [(o.code(), o.details()) for o in outcomes] == [
        (
            grpc.StatusCode.DEADLINE_EXCEEDED,
            "deadline exceeded while the server identity was checked",
        ),
        (grpc.StatusCode.UNAVAILABLE, "server identity could not be checked in time"),
        (
            grpc.StatusCode.DEADLINE_EXCEEDED,
            "deadline exceeded while the server identity was checked",
        ),
    ]
    assert all(isinstance(o, ServerIdentityError) for o in outcomes)


def test_names_resolved_at_once_for_sync_probes_are_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At most ``limit`` names are resolved at once: with every slot held by a stuck name, a
    probe for another name waits for a slot until its deadline and asks nothing; once one is
    free, it resolves."""
    from zerotrust.client._grpc_check import _Resolver

    resolver = _StuckResolver("a.test", "b.test")
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    names = _Resolver(2)
    soon = time.monotonic() + 0.2
    try:
        for name in ("a.test", "b.test", "c.test"):
            with pytest.raises(TimeoutError):
                names.resolve(name, 443, soon)
        assert resolver.asked == ["a.test", "b.test"]  # c.test never started
        assert names.resolve("127.0.0.1", 443, soon)  # an address needs no resolver
    finally:
        resolver.answer.set()
    [(*_, address)] = names.resolve("c.test", 443, time.monotonic() + 10)
    assert address == ("127.0.0.1", 443)
    assert resolver.gave_up == []
