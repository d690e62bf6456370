"""The sync server interceptor on a real grpc.server with mTLS: every arity, every refusal."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc
import grpc.aio
import pytest

from tests.grpc_integration._support import (
    AUD,
    CLIENT_ID,
    HEALTH,
    INTRUDER,
    ISS,
    METHODS,
    SERVICE,
    Seen,
    World,
    aio_server,
    async_handlers,
    bare_server,
    bearer,
    call_all,
    make_world,
    raw_credentials,
    sync_handlers,
    sync_server,
)
from zerotrust import DPoPNonces, FixedClock
from zerotrust.audit import AuditPipeline
from zerotrust.dev import DevCA
from zerotrust.httpx import dpop_proof
from zerotrust.tokens import PrivateJWK, TokenIssuer

EXPECTED = {
    "Unary": CLIENT_ID.encode() + b"|hi",
    "ServerStream": [CLIENT_ID.encode() + b"|%d" % i for i in range(3)],
    "ClientStream": CLIENT_ID.encode() + b"|2",
    "Bidi": [CLIENT_ID.encode() + b"|a", CLIENT_ID.encode() + b"|b"],
}


@pytest.mark.parametrize("registered", [False, True], ids=["generic", "registered"])
def test_all_arities_allowed_and_principal_visible(world: World, registered: bool) -> None:
    seen = Seen()
    with (
        sync_server(world, seen=seen, registered=registered) as port,
        grpc.secure_channel(f"localhost:{port}", raw_credentials(world)) as channel,
    ):
        results = call_all(channel, bearer(world.token()))
    assert results == EXPECTED
    assert {m for m, _ in seen.calls} == set(METHODS)
    assert {p for _, p in seen.calls} == {CLIENT_ID.encode()}
    event = world.sink.last
    assert event is not None and event.decision == "allow" and event.kind == "grpc"
    assert (
        event.route == f"/{SERVICE}/Bidi" and event.method == f"/{SERVICE}/Bidi"
    )  # the full RPC name (docs/audit.md)
    assert event.proven_by == "mtls+jwt" and event.spiffe_id == CLIENT_ID
    assert event.remote_addr in {"127.0.0.1", "::1"}


@pytest.mark.parametrize(
    ("case", "code", "details"),
    [
        ("no token", grpc.StatusCode.UNAUTHENTICATED, "missing_credentials"),
        ("bad token", grpc.StatusCode.UNAUTHENTICATED, "invalid_token"),
        ("intruder", grpc.StatusCode.PERMISSION_DENIED, "access_denied"),
    ],
)
def test_all_arities_refused_before_the_handler(
    world: World, case: str, code: grpc.StatusCode, details: str
) -> None:
    metadata = {
        "no token": [],
        "bad token": bearer("not-a-jwt"),
        "intruder": bearer(world.token(subject=INTRUDER)),
    }[case]
    seen = Seen()
    with (
        sync_server(world, seen=seen) as port,
        grpc.secure_channel(f"localhost:{port}", raw_credentials(world)) as channel,
    ):
        results = call_all(channel, metadata)
    for method in METHODS:
        error = results[method]
        assert isinstance(error, grpc.RpcError), method
        assert error.code() == code, method
        assert error.details() == details, method
    assert seen.calls == []  # no handler ran: no message consumed or produced
    assert {e.decision for e in world.sink.events} == {"deny"}


def test_dpop_needs_the_service_origins(world: World) -> None:
    """An RPC names no host: its proofs are checked against configured origins, never against
    an invented one (docs/grpc.md)."""
    holder = PrivateJWK.generate("ES256")
    token = world.issuer.issue(
        subject=CLIENT_ID, audience=AUD, extra_claims={"cnf": {"jkt": holder.thumbprint()}}
    )
    method = f"/{SERVICE}/Unary"

    def metadata(origin: str) -> list[tuple[str, str]]:
        proof = dpop_proof(holder, method="POST", url=origin + method, access_token=token)
        return [("authorization", f"DPoP {token}"), ("dpop", proof)]

    with (
        sync_server(world) as port,
        grpc.secure_channel(f"localhost:{port}", raw_credentials(world)) as channel,
        pytest.raises(grpc.RpcError) as info,
    ):
        channel.unary_unary(method)(b"hi", metadata=metadata("https://localhost"), timeout=10)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert info.value.details() == "invalid_token"
    event = world.sink.last
    assert event is not None and event.reason == "dpop_origin_unknown"

    guard = world.guard(dpop_origins=("https://echo.internal",))
    with (
        sync_server(world, guard) as port,
        grpc.secure_channel(f"localhost:{port}", raw_credentials(world)) as channel,
    ):
        rpc = channel.unary_unary(method)
        assert rpc(b"hi", metadata=metadata("https://echo.internal"), timeout=10) == (
            CLIENT_ID.encode() + b"|hi"
        )
        with pytest.raises(grpc.RpcError) as info:
            rpc(b"hi", metadata=metadata("https://localhost"), timeout=10)
    assert info.value.details() == "invalid_dpop_proof"  # RFC 9449 7.1
    event = world.sink.last
    assert event is not None and event.reason == "invalid_dpop_proof"
    assert [e.proven_by for e in world.sink.events if e.decision == "allow"] == ["dpop"]


def test_dpop_nonce_challenge_in_trailing_metadata(world: World) -> None:
    """With server-provided nonces, a proof without one is refused UNAUTHENTICATED with
    ``use_dpop_nonce``, the challenge and the nonce in the trailing metadata; a proof signed
    with that nonce is admitted."""
    holder = PrivateJWK.generate("ES256")
    token = world.issuer.issue(
        subject=CLIENT_ID, audience=AUD, extra_claims={"cnf": {"jkt": holder.thumbprint()}}
    )
    origin, method = "https://echo.internal", f"/{SERVICE}/Unary"

    def metadata(nonce: str | None) -> list[tuple[str, str]]:
        proof = dpop_proof(
            holder, method="POST", url=origin + method, access_token=token, nonce=nonce
        )
        return [("authorization", f"DPoP {token}"), ("dpop", proof)]

    nonces = DPoPNonces(bytes(32))
    guard = world.guard(dpop_origins=(origin,), dpop_nonces=nonces)
    with (
        sync_server(world, guard) as port,
        grpc.secure_channel(f"localhost:{port}", raw_credentials(world)) as channel,
    ):
        rpc = channel.unary_unary(method)
        with pytest.raises(grpc.RpcError) as info:
            rpc(b"hi", metadata=metadata(None), timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert info.value.details() == "use_dpop_nonce"
        trailing = dict(tuple(info.value.trailing_metadata()))
        assert trailing["www-authenticate"].endswith('error="use_dpop_nonce"')
        nonce = trailing["dpop-nonce"]
        assert nonces.accepts(nonce, dt.datetime.now(dt.timezone.utc).timestamp())
        assert rpc(b"hi", metadata=metadata(nonce), timeout=10) == CLIENT_ID.encode() + b"|hi"
    assert [e.reason for e in world.sink.events] == ["use_dpop_nonce", "allowed_by_rule"]


@pytest.mark.parametrize("kind", ["sync", "aio", "aio, sync handlers"])
def test_an_admitted_call_with_an_earlier_nonce_gets_the_current_one(
    world: World, kind: str
) -> None:
    """RFC 9449 8.2: a call whose proof carried the previous window's nonce is admitted and
    answered with the current nonce in its trailing metadata; with the current one, none."""
    clock = FixedClock(dt.datetime.now(dt.timezone.utc))
    holder = PrivateJWK.generate("ES256")
    token = world.issuer.issue(
        subject=CLIENT_ID, audience=AUD, extra_claims={"cnf": {"jkt": holder.thumbprint()}}
    )
    origin, method = "https://echo.internal", f"/{SERVICE}/Unary"
    nonces = DPoPNonces(bytes(32))
    guard = world.guard(dpop_origins=(origin,), dpop_nonces=nonces, clock=clock)
    earlier = nonces.issue(clock.now().timestamp() - nonces.lifetime)
    current = nonces.issue(clock.now().timestamp())

    def metadata(nonce: str) -> list[tuple[str, str]]:
        proof = dpop_proof(
            holder, method="POST", url=origin + method, access_token=token, nonce=nonce, clock=clock
        )
        return [("authorization", f"DPoP {token}"), ("dpop", proof)]

    def trailing_sync() -> list[dict[str, str]]:
        with (
            sync_server(world, guard) as port,
            grpc.secure_channel(f"localhost:{port}", raw_credentials(world)) as channel,
        ):
            rpc = channel.unary_unary(method)
            calls = [
                rpc.with_call(b"hi", metadata=metadata(n), timeout=10) for n in (earlier, current)
            ]
        return [dict(tuple(call.trailing_metadata() or ())) for _, call in calls]

    async def trailing_aio() -> list[dict[str, str]]:
        async with (
            aio_server(
                world, guard, handlers=sync_handlers if "sync" in kind else async_handlers
            ) as port,
            grpc.aio.secure_channel(f"localhost:{port}", raw_credentials(world)) as channel,
        ):
            rpc = channel.unary_unary(method)
            found = []
            for nonce in (earlier, current):
                call = rpc(b"hi", metadata=metadata(nonce), timeout=10)
                assert await call == CLIENT_ID.encode() + b"|hi"
                found.append(dict(tuple(await call.trailing_metadata() or ())))
            return found

    found = trailing_sync() if kind == "sync" else asyncio.run(trailing_aio())
    assert [t.get("dpop-nonce") for t in found] == [current, None]
    assert [e.decision for e in world.sink.events] == ["allow", "allow"]


def _an_earlier_nonce(world: World) -> tuple[Any, str, Callable[[str], list[tuple[str, str]]]]:
    """A Guard handing out DPoP nonces, the current nonce, and a method's metadata: a
    DPoP-bound token with a proof that carries the previous window's nonce."""
    clock = FixedClock(dt.datetime.now(dt.timezone.utc))
    holder = PrivateJWK.generate("ES256")
    token = world.issuer.issue(
        subject=CLIENT_ID, audience=AUD, extra_claims={"cnf": {"jkt": holder.thumbprint()}}
    )
    origin = "https://echo.internal"
    nonces = DPoPNonces(bytes(32))
    guard = world.guard(dpop_origins=(origin,), dpop_nonces=nonces, clock=clock)
    earlier = nonces.issue(clock.now().timestamp() - nonces.lifetime)

    def metadata(name: str) -> list[tuple[str, str]]:
        url = f"{origin}/{SERVICE}/{name}"
        proof = dpop_proof(
            holder, method="POST", url=url, access_token=token, nonce=earlier, clock=clock
        )
        return [("authorization", f"DPoP {token}"), ("dpop", proof)]

    return guard, nonces.issue(clock.now().timestamp()), metadata


@pytest.mark.parametrize("kind", ["sync", "aio", "aio, sync handlers"])
def test_every_arity_with_an_earlier_nonce_gets_the_current_one(world: World, kind: str) -> None:
    """RFC 9449 8.2 in every arity: the trailing metadata of a streamed response, or of a
    response to a stream, carries the current nonce too."""
    guard, current, metadata = _an_earlier_nonce(world)

    def trailing_sync() -> dict[str, Any]:
        with (
            sync_server(world, guard) as port,
            grpc.secure_channel(f"localhost:{port}", raw_credentials(world)) as channel,
        ):
            _, unary = channel.unary_unary(f"/{SERVICE}/Unary").with_call(
                b"hi", metadata=metadata("Unary"), timeout=10
            )
            server_stream = channel.unary_stream(f"/{SERVICE}/ServerStream")(
                b"hi", metadata=metadata("ServerStream"), timeout=10
            )
            assert len(list(server_stream)) == 3
            _, client_stream = channel.stream_unary(f"/{SERVICE}/ClientStream").with_call(
                iter([b"a", b"b"]), metadata=metadata("ClientStream"), timeout=10
            )
            bidi = channel.stream_stream(f"/{SERVICE}/Bidi")(
                iter([b"a", b"b"]), metadata=metadata("Bidi"), timeout=10
            )
            assert len(list(bidi)) == 2
            calls = (unary, server_stream, client_stream, bidi)
            return {m: c.trailing_metadata() for m, c in zip(METHODS, calls, strict=True)}

    async def trailing_aio() -> dict[str, Any]:
        handlers = sync_handlers if "sync" in kind else async_handlers
        async with (
            aio_server(world, guard, handlers=handlers) as port,
            grpc.aio.secure_channel(f"localhost:{port}", raw_credentials(world)) as channel,
        ):
            unary = channel.unary_unary(f"/{SERVICE}/Unary")(
                b"hi", metadata=metadata("Unary"), timeout=10
            )
            await unary
            server_stream = channel.unary_stream(f"/{SERVICE}/ServerStream")(
                b"hi", metadata=metadata("ServerStream"), timeout=10
            )
            assert len([item async for item in server_stream]) == 3
            client_stream = channel.stream_unary(f"/{SERVICE}/ClientStream")(
                metadata=metadata("ClientStream"), timeout=10
            )
            bidi = channel.stream_stream(f"/{SERVICE}/Bidi")(metadata=metadata("Bidi"), timeout=10)
            for call in (client_stream, bidi):
                for item in (b"a", b"b"):
                    await call.write(item)
                await call.done_writing()
            await client_stream
            while await bidi.read() is not grpc.aio.EOF:
                pass
            calls = (unary, server_stream, client_stream, bidi)
            return {m: await c.trailing_metadata() for m, c in zip(METHODS, calls, strict=True)}

    found = trailing_sync() if kind == "sync" else asyncio.run(trailing_aio())
    assert {m: dict(tuple(t or ())).get("dpop-nonce") for m, t in found.items()} == dict.fromkeys(
        METHODS, current
    )
    assert [e.decision for e in world.sink.events] == ["allow"] * 4


_OWN = ("x-handler", "own")


def _sets_its_own_trailers(sync: bool) -> Any:
    """Handlers of every arity that set their own trailing metadata (which replaces the whole
    set in grpc), and one that sets it and aborts."""

    def services(seen: Seen) -> dict[str, dict[str, Any]]:
        def unary(request: bytes, context: Any) -> bytes:
            context.set_trailing_metadata((_OWN,))
            assert dict(context.invocation_metadata())["authorization"].startswith("DPoP ")
            return b"ok"

        def server_stream(request: bytes, context: Any) -> Iterator[bytes]:
            yield b"a"
            context.set_trailing_metadata((_OWN,))
            yield b"b"

        def client_stream(requests: Iterator[bytes], context: Any) -> bytes:
            context.set_trailing_metadata((_OWN,))
            return b"%d" % sum(1 for _ in requests)

        def bidi(requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
            yield from requests
            context.set_trailing_metadata([list(_OWN)])  # any sequence of pairs

        def aborts(request: bytes, context: Any) -> bytes:
            context.set_trailing_metadata((_OWN,))
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "not now")
            raise AssertionError("abort() returned")

        async def aunary(request: bytes, context: Any) -> bytes:
            return unary(request, context)

        async def aserver_stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
            for item in server_stream(request, context):
                yield item

        async def aclient_stream(requests: AsyncIterator[bytes], context: Any) -> bytes:
            count = len([r async for r in requests])
            context.set_trailing_metadata((_OWN,))
            return b"%d" % count

        async def abidi(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
            async for request in requests:
                yield request
            context.set_trailing_metadata((_OWN,))

        async def aaborts(request: bytes, context: Any) -> bytes:
            context.set_trailing_metadata((_OWN,))
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "not now")
            raise AssertionError("abort() returned")

        handlers = (
            (unary, server_stream, client_stream, bidi, aborts)
            if sync
            else (aunary, aserver_stream, aclient_stream, abidi, aaborts)
        )
        kinds = (
            grpc.unary_unary_rpc_method_handler,
            grpc.unary_stream_rpc_method_handler,
            grpc.stream_unary_rpc_method_handler,
            grpc.stream_stream_rpc_method_handler,
            grpc.unary_unary_rpc_method_handler,
        )
        names = (*METHODS, "Aborts")
        return {
            SERVICE: {n: k(h) for n, k, h in zip(names, kinds, handlers, strict=True)},
        }

    return services


@pytest.mark.parametrize("kind", ["sync", "aio", "aio, sync handlers"])
def test_a_handler_that_sets_trailing_metadata_keeps_the_nonce(world: World, kind: str) -> None:
    """grpc's ``set_trailing_metadata`` replaces the whole set: the current nonce (RFC 9449
    8.2) is put back beside the handler's own entries, in every arity. A handler that aborts
    keeps it too, except on the aio server with an async handler: grpc.aio sends the status
    at once, with what the handler gave."""
    guard, current, metadata = _an_earlier_nonce(world)
    handlers = _sets_its_own_trailers(sync=kind != "aio")

    def trailing_sync() -> dict[str, Any]:
        with (
            sync_server(world, guard, handlers=handlers) as port,
            grpc.secure_channel(f"localhost:{port}", raw_credentials(world)) as channel,
        ):
            _, unary = channel.unary_unary(f"/{SERVICE}/Unary").with_call(
                b"hi", metadata=metadata("Unary"), timeout=10
            )
            server_stream = channel.unary_stream(f"/{SERVICE}/ServerStream")(
                b"hi", metadata=metadata("ServerStream"), timeout=10
            )
            assert list(server_stream) == [b"a", b"b"]
            _, client_stream = channel.stream_unary(f"/{SERVICE}/ClientStream").with_call(
                iter([b"a", b"b"]), metadata=metadata("ClientStream"), timeout=10
            )
            bidi = channel.stream_stream(f"/{SERVICE}/Bidi")(
                iter([b"a", b"b"]), metadata=metadata("Bidi"), timeout=10
            )
            assert list(bidi) == [b"a", b"b"]
            with pytest.raises(grpc.RpcError) as aborted:
                channel.unary_unary(f"/{SERVICE}/Aborts")(
                    b"hi", metadata=metadata("Aborts"), timeout=10
                )
            assert aborted.value.code() is grpc.StatusCode.FAILED_PRECONDITION
            calls = (unary, server_stream, client_stream, bidi, aborted.value)
            return {
                m: c.trailing_metadata() for m, c in zip((*METHODS, "Aborts"), calls, strict=True)
            }

    async def trailing_aio() -> dict[str, Any]:
        async with (
            aio_server(world, guard, handlers=handlers) as port,
            grpc.aio.secure_channel(f"localhost:{port}", raw_credentials(world)) as channel,
        ):
            unary = channel.unary_unary(f"/{SERVICE}/Unary")(
                b"hi", metadata=metadata("Unary"), timeout=10
            )
            assert await unary == b"ok"
            server_stream = channel.unary_stream(f"/{SERVICE}/ServerStream")(
                b"hi", metadata=metadata("ServerStream"), timeout=10
            )
            assert [item async for item in server_stream] == [b"a", b"b"]
            client_stream = channel.stream_unary(f"/{SERVICE}/ClientStream")(
                iter([b"a", b"b"]), metadata=metadata("ClientStream"), timeout=10
            )
            assert await client_stream == b"2"
            bidi = channel.stream_stream(f"/{SERVICE}/Bidi")(
                iter([b"a", b"b"]), metadata=metadata("Bidi"), timeout=10
            )
            assert [item async for item in bidi] == [b"a", b"b"]
            aborted = channel.unary_unary(f"/{SERVICE}/Aborts")(
                b"hi", metadata=metadata("Aborts"), timeout=10
            )
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await aborted
            assert failure.value.code() is grpc.StatusCode.FAILED_PRECONDITION
            calls = (unary, server_stream, client_stream, bidi, aborted)
            names = (*METHODS, "Aborts")
            return {m: await c.trailing_metadata() for m, c in zip(names, calls, strict=True)}

    found = trailing_sync() if kind == "sync" else asyncio.run(trailing_aio())
    got = {m: dict(tuple(t or ())) for m, t in found.items()}
    kept = {"x-handler": "own", "dpop-nonce": current}
    expected = dict.fromkeys(METHODS, kept) | {
        "Aborts": {"x-handler": "own"} if kind == "aio" else kept
    }
    assert {m: {k: t.get(k) for k in kept if k in t} for m, t in got.items()} == expected


def test_unauthenticated_carries_the_challenge(world: World) -> None:
    with (
        sync_server(world) as port,
        grpc.secure_channel(f"localhost:{port}", raw_credentials(world)) as channel,
        pytest.raises(grpc.RpcError) as info,
    ):
        channel.unary_unary(f"/{SERVICE}/Unary")(b"x", timeout=10)
    trailing = dict(tuple(info.value.trailing_metadata()))
    assert trailing["www-authenticate"] == 'Bearer realm="echo"'


def test_cert_from_another_trust_domain_ca_is_unauthenticated(world: World) -> None:
    """grpc accepts the chain (its root store merges every trust domain); zerotrust does not."""
    seen = Seen()
    forged = raw_credentials(world, cert=world.forged_client())
    with (
        sync_server(world, seen=seen) as port,
        grpc.secure_channel(f"localhost:{port}", forged) as channel,
        pytest.raises(grpc.RpcError) as info,
    ):
        channel.unary_unary(f"/{SERVICE}/Unary")(b"x", metadata=bearer(world.token()))
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert info.value.details() == "invalid_certificate"
    assert seen.calls == []
    event = world.sink.last
    assert event is not None and event.reason == "untrusted_certificate"


def test_without_client_auth_grpc_asks_for_no_certificate(world: World) -> None:
    """require_client_auth=False is not optional mTLS: grpc does not ask for a certificate, so
    the client's is never sent and callers are token-only (docs/grpc.md)."""
    with (
        sync_server(world, require_client_auth=False) as port,
        grpc.secure_channel(f"localhost:{port}", raw_credentials(world)) as channel,
    ):
        unary = channel.unary_unary(f"/{SERVICE}/Unary")
        assert unary(b"x", metadata=bearer(world.token()), timeout=10) == CLIENT_ID.encode() + b"|x"
        with pytest.raises(grpc.RpcError) as info:
            unary(b"x", timeout=10)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    allowed = world.sink.events[0]
    assert allowed.proven_by == "jwt" and allowed.cert_fingerprint is None


def test_grpc_keeps_only_the_last_traceparent(world: World) -> None:
    """grpc's C core merges repeated traceparent entries into the last one, so the "several
    are ambiguous" rule cannot apply over gRPC (docs/grpc.md, docs/audit.md). Older grpcio
    releases hand both on: then the rule applies, and no caller's trace id is recorded."""
    first, last = "0af7651916cd43dd8448eb211c80319c", "1af7651916cd43dd8448eb211c80319c"
    metadata = [
        *bearer(world.token()),
        ("traceparent", f"00-{first}-b7ad6b7169203331-01"),
        ("traceparent", f"00-{last}-b7ad6b7169203331-01"),
    ]
    delivered: list[str] = []

    def note(request: bytes, context: Any) -> bytes:
        delivered.extend(v for k, v in context.invocation_metadata() if k == "traceparent")
        return request

    with (
        bare_server(world.server_svid, world.bundles, note) as (port, _),
        grpc.secure_channel(f"localhost:{port}", raw_credentials(world)) as channel,
    ):
        channel.unary_unary(f"/{SERVICE}/Unary")(b"x", metadata=metadata, timeout=10)
    with (
        sync_server(world) as port,
        grpc.secure_channel(f"localhost:{port}", raw_credentials(world)) as channel,
    ):
        assert channel.unary_unary(f"/{SERVICE}/Unary")(b"x", metadata=metadata, timeout=10)
    event = world.sink.last
    assert event is not None
    if len(delivered) == 1:  # merged into the last one
        assert delivered[0].split("-")[1] == last
        assert (event.trace_id, event.trace_trusted) == (last, True)
    else:  # both: ambiguous, so the trace id is not the caller's
        assert [value.split("-")[1] for value in delivered] == [first, last]
        assert event.trace_id not in (first, last)


def test_scope_decorator_and_method_map(world: World) -> None:
    seen = Seen()
    with (
        sync_server(world, seen=seen) as port,
        grpc.secure_channel(f"localhost:{port}", raw_credentials(world)) as channel,
    ):
        admin = channel.unary_unary(f"/{SERVICE}/Admin")
        mapped = channel.unary_unary(f"/{SERVICE}/Mapped")
        for call, scope in ((admin, "admin"), (mapped, "mapped")):
            with pytest.raises(grpc.RpcError) as info:
                call(b"x", metadata=bearer(world.token(scopes=("other",))), timeout=10)
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert info.value.details() == "insufficient_scope"
            challenge = dict(tuple(info.value.trailing_metadata()))["www-authenticate"]
            assert f'scope="{scope}"' in challenge
            assert call(b"x", metadata=bearer(world.token(scopes=(scope,))), timeout=10)
    assert [m for m, _ in seen.calls] == ["Admin", "Mapped"]


def test_rate_limit_is_resource_exhausted(world: World) -> None:
    with (
        sync_server(world) as port,
        grpc.secure_channel(f"localhost:{port}", raw_credentials(world)) as channel,
    ):
        limited = channel.unary_unary(f"/{SERVICE}/Limited")
        token = world.token()
        assert limited(b"x", metadata=bearer(token), timeout=10)
        with pytest.raises(grpc.RpcError) as info:
            limited(b"x", metadata=bearer(token), timeout=10)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert info.value.details() == "rate_limited"
    assert int(dict(tuple(info.value.trailing_metadata()))["retry-after"]) >= 1


def test_keys_unavailable_is_unavailable(world: World) -> None:
    with (
        sync_server(world, world.guard(keys_down=True)) as port,
        grpc.secure_channel(f"localhost:{port}", raw_credentials(world)) as channel,
    ):
        results = call_all(channel, bearer(world.token()))
    for method in METHODS:
        assert results[method].code() == grpc.StatusCode.UNAVAILABLE, method
        assert results[method].details() == "temporarily_unavailable"


def test_exempt_methods_skip_the_guard_and_nothing_else_does(world: World) -> None:
    with (
        sync_server(world) as port,
        grpc.secure_channel(f"localhost:{port}", raw_credentials(world)) as channel,
    ):
        assert channel.unary_unary(HEALTH)(b"", timeout=10) == b"SERVING:anonymous"
    assert world.sink.events == []
    with (
        sync_server(world, exempt=()) as port,
        grpc.secure_channel(f"localhost:{port}", raw_credentials(world)) as channel,
        pytest.raises(grpc.RpcError) as info,
    ):
        channel.unary_unary(HEALTH)(b"", timeout=10)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("kind", ["unary_unary", "stream_stream"])
def test_unknown_methods_are_decided_before_unimplemented(world: World, kind: str) -> None:
    # an anonymous caller cannot tell which methods exist: it is refused like on any method;
    # a caller the policy admits learns that the method is not served
    def code(metadata: list[tuple[str, str]]) -> grpc.StatusCode:
        call = getattr(channel, kind)(f"/{SERVICE}/Nope")

        def run() -> object:
            if kind == "unary_unary":
                return call(b"", metadata=metadata, timeout=10)
            return list(call(iter([b"a", b"b"]), metadata=metadata, timeout=10))

        with pytest.raises(grpc.RpcError) as info:
            run()
        return info.value.code()  # type: ignore[no-any-return]

    with (
        sync_server(world) as port,
        grpc.secure_channel(f"localhost:{port}", raw_credentials(world)) as channel,
    ):
        assert code(bearer(world.token())) == grpc.StatusCode.UNIMPLEMENTED
        assert code([]) == grpc.StatusCode.UNAUTHENTICATED
        assert code(bearer(world.token(subject=INTRUDER))) == grpc.StatusCode.PERMISSION_DENIED
    events = [(e.route, e.decision) for e in world.sink.events]
    assert events == [(f"/{SERVICE}/Nope", d) for d in ("allow", "deny", "deny")]


def test_a_name_no_method_can_have_is_unimplemented_at_once(world: World) -> None:
    # nothing to learn from it, and nothing to spend a decision or an audit event on
    with (
        sync_server(world) as port,
        grpc.secure_channel(f"localhost:{port}", raw_credentials(world)) as channel,
    ):
        for name in (f"/{SERVICE}/" + "eyJa." * 300, "/x/" + "a" * 500, "/no-dashes/x"):
            with pytest.raises(grpc.RpcError) as info:
                channel.unary_unary(name)(b"", timeout=10)
            assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert world.sink.events == []


def test_a_client_chain_through_an_intermediate_is_verified(
    ca_with_intermediate: DevCA, other_ca: DevCA
) -> None:
    """grpc hands the interceptor the client's leaf and its intermediates separately: both
    reach zerotrust's verification, which needs the intermediate to reach the bundle's root."""
    world = make_world(ca_with_intermediate, other_ca)
    assert len(world.client_svid.cert_chain) == 2  # leaf and intermediate
    with (
        sync_server(world) as port,
        grpc.secure_channel(f"localhost:{port}", raw_credentials(world)) as channel,
    ):
        reply = channel.unary_unary(f"/{SERVICE}/Unary")(
            b"x", metadata=bearer(world.token()), timeout=10
        )
    assert reply == CLIENT_ID.encode() + b"|x"
    event = world.sink.last
    assert event is not None and event.decision == "allow"
    assert event.proven_by == "mtls+jwt" and event.spiffe_id == CLIENT_ID


def test_a_pool_thread_keeps_no_principal_between_calls(world: World) -> None:
    """One pool thread serves every call: an admitted call's principal is its handler's alone,
    never seen by the next call the thread serves (an exempt method, a refused call)."""
    seen = Seen()
    token = bearer(world.token())
    with (
        sync_server(world, seen=seen, workers=1) as port,
        grpc.secure_channel(f"localhost:{port}", raw_credentials(world)) as channel,
    ):
        unary = channel.unary_unary(f"/{SERVICE}/Unary")
        stream = channel.unary_stream(f"/{SERVICE}/ServerStream")
        health = channel.unary_unary(HEALTH)
        for _ in range(2):
            assert unary(b"hi", metadata=token, timeout=10) == EXPECTED["Unary"]
            assert health(b"", timeout=10) == b"SERVING:anonymous"
            assert list(stream(b"hi", metadata=token, timeout=10)) == EXPECTED["ServerStream"]
            assert health(b"", timeout=10) == b"SERVING:anonymous"
            with pytest.raises(grpc.RpcError) as info:
                unary(b"hi", timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert {p for _, p in seen.calls} == {CLIENT_ID.encode()}
    assert len(seen.calls) == 8  # 2 x (one unary + three stream items)


def test_no_credential_reaches_the_audit_trail_or_the_caller(world: World) -> None:
    """The token, the client certificate and the key appear nowhere in an event nor in what a
    refused caller gets back: the certificate is named by its fingerprint."""
    import base64
    import hashlib

    from cryptography.hazmat.primitives import serialization

    token = world.token()
    _, payload, signature = token.split(".")
    forger = TokenIssuer(PrivateJWK.generate("ES256", kid="k1"), issuer=ISS)  # the same kid
    tampered = forger.issue(subject=CLIENT_ID, audience=AUD, ttl=300)
    leaf = world.client_svid.cert_chain[0].public_bytes(serialization.Encoding.DER)
    secrets = (
        token,
        tampered,
        payload,
        signature,
        base64.b64encode(leaf).decode()[:64],
        world.client_svid.private_key_pem().decode(),
    )
    answers: list[str] = []
    with (
        sync_server(world) as port,
        grpc.secure_channel(f"localhost:{port}", raw_credentials(world)) as channel,
    ):
        unary = channel.unary_unary(f"/{SERVICE}/Unary")
        assert unary(b"x", metadata=bearer(token), timeout=10)
        for metadata in (bearer(tampered), bearer(world.token(subject=INTRUDER)), bearer("a.b")):
            with pytest.raises(grpc.RpcError) as info:
                unary(b"x", metadata=metadata, timeout=10)
            answers.append(f"{info.value.details()} {info.value.trailing_metadata()}")
    events = world.sink.events
    assert [(e.decision, e.reason) for e in events] == [
        ("allow", "allowed_by_rule"),
        ("deny", "invalid_signature"),
        ("deny", "denied_by_rule"),
        ("deny", "malformed_token"),
    ]
    assert events[0].cert_fingerprint == hashlib.sha256(leaf).hexdigest()
    written = " ".join([*answers, *(e.to_json() for e in events)])
    for secret in secrets:
        assert secret not in written


class _BrokenSink:
    def emit(self, event: object, /) -> None:
        raise OSError("disk full")


def test_a_required_audit_that_fails_refuses_every_arity(world: World) -> None:
    """Nothing is served unaudited: UNAVAILABLE before any handler runs; the sinks that did
    record the allow also get the refusal that superseded it (docs/audit.md)."""
    seen = Seen()
    audit = AuditPipeline([_BrokenSink(), world.sink], on_error="closed")
    with (
        sync_server(world, world.guard(audit=audit), seen=seen) as port,
        grpc.secure_channel(f"localhost:{port}", raw_credentials(world)) as channel,
    ):
        results = call_all(channel, bearer(world.token()))
    for method in METHODS:
        assert results[method].code() == grpc.StatusCode.UNAVAILABLE, method
        assert results[method].details() == "temporarily_unavailable", method
        assert not results[method].trailing_metadata(), method
    assert seen.calls == []
    events = world.sink.events
    assert [(e.decision, e.reason, e.grpc_status) for e in events] == [
        ("allow", "allowed_by_rule", "OK"),
        ("deny", "audit_error", "UNAVAILABLE"),
    ] * len(METHODS)
    for allowed, refused in zip(events[::2], events[1::2], strict=True):
        assert refused.notes == (f"supersedes:{allowed.event_id}",)


def test_a_client_certificate_that_expires_during_the_connection_is_refused(
    world: World,
) -> None:
    """The chain verified on the connection's first call is kept (per chain and bundle
    snapshot), but its expiry is checked on every call: the same connection is refused once
    the certificate has expired."""
    from zerotrust import Authenticator, Callers, FixedClock, Guard, Policy, Rule

    clock = FixedClock()
    guard = Guard(
        authenticator=Authenticator(bundles=world.bundles, clock=clock),
        policy=Policy([Rule(id="echo", callers=[Callers(trust_domains=["example.org"])])]),
        audit=world.sink,
        service="echo",
        clock=clock,
    )
    seen = Seen()
    with (
        sync_server(world, guard, seen=seen) as port,
        grpc.secure_channel(f"localhost:{port}", raw_credentials(world)) as channel,
    ):
        unary = channel.unary_unary(f"/{SERVICE}/Unary")
        assert unary(b"x", timeout=10) == CLIENT_ID.encode() + b"|x"
        assert unary(b"x", timeout=10) == CLIENT_ID.encode() + b"|x"
        clock.set(world.client_svid.leaf.not_valid_after_utc + dt.timedelta(seconds=1))
        with pytest.raises(grpc.RpcError) as info:
            unary(b"x", timeout=10)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert info.value.details() == "invalid_certificate"
    assert len(seen.calls) == 2
    assert [(e.decision, e.reason) for e in world.sink.events] == [
        ("allow", "allowed_by_rule"),
        ("allow", "allowed_by_rule"),
        ("deny", "certificate_expired"),
    ]


def test_exempt_names_match_exactly(world: World) -> None:
    """A prefix, another case or a longer name of a served method exempts nothing."""
    seen = Seen()
    near = (f"/{SERVICE}/Unar", f"/{SERVICE.lower()}/Unary", f"/{SERVICE}/Unary/", f"{HEALTH}x")
    with (
        sync_server(world, seen=seen, exempt=near) as port,
        grpc.secure_channel(f"localhost:{port}", raw_credentials(world)) as channel,
    ):
        for name in (f"/{SERVICE}/Unary", HEALTH):
            with pytest.raises(grpc.RpcError) as info:
                channel.unary_unary(name)(b"x", timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, name
    assert seen.calls == []
    assert [(e.method, e.decision) for e in world.sink.events] == [
        (f"/{SERVICE}/Unary", "deny"),
        (HEALTH, "deny"),
    ]
