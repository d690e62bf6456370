"""The pieces behind the channels and interceptors: token call credentials, the identity
re-check after reconnection, peer strings, and optional-dependency hygiene."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest

from tests._sockets import close_listener
from tests.grpc_integration._support import CLIENT_ID, SERVER_ID, SERVICE, World, sync_server
from zerotrust import client_ssl_context, match
from zerotrust.adapters._grpc_tls import remote_address
from zerotrust.client._grpc_check import ServerCheck, split_target
from zerotrust.errors import ConfigurationError
from zerotrust.grpc import ServerIdentityError, secure_channel
from zerotrust.tokens.outgoing import CachedTokenSource

READY, IDLE = grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.IDLE
TRANSIENT_FAILURE = grpc.ChannelConnectivity.TRANSIENT_FAILURE


def test_token_source_is_consulted_off_the_call_path(world: World) -> None:
    mints: list[str] = []

    def mint(audience: str) -> str:
        mints.append(audience)
        return world.issuer.issue(subject=CLIENT_ID, audience=audience, ttl=300)

    source = CachedTokenSource(mint)
    with (
        sync_server(world) as port,
        secure_channel(
            f"localhost:{port}",
            svid=world.client_svid,
            bundles=world.ca.bundle,
            server_id=SERVER_ID,
            token_source=source,
        ) as channel,
    ):
        call = channel.unary_unary(f"/{SERVICE}/Unary")
        for _ in range(5):
            assert call(b"x", timeout=10) == CLIENT_ID.encode() + b"|x"
    assert mints == [SERVER_ID]  # the audience defaults to the server's SPIFFE ID


def test_an_opaque_token_is_not_used_after_its_source_moved_on() -> None:
    """Without a readable exp only the source knows the expiry: the plugin re-reads it after
    opaque_lifetime, so a call after a pause sends the source's current token."""
    from zerotrust.client._grpc_creds import TokenPlugin

    tokens = iter(["opaque-1", "opaque-2", "opaque-3"])
    current = [next(tokens)]

    class Source:
        def token(self, audience: str) -> str:
            return current[0]

    plugin = TokenPlugin(Source(), "api")  # type: ignore[arg-type]
    object.__setattr__(plugin, "opaque_lifetime", 0.2)  # the class default, shortened
    sent: list[str] = []
    done = threading.Event()

    def callback(metadata: object, error: object) -> None:
        assert error is None
        sent.append(dict(metadata)["authorization"])  # type: ignore[call-overload]
        done.set()

    try:
        for wait in (0, 0.3):
            time.sleep(wait)
            done.clear()
            plugin(None, callback)
            assert done.wait(5)
            current[0] = next(tokens)  # the source refreshed (e.g. its token expired)
    finally:
        plugin.close()
    assert sent == ["Bearer opaque-1", "Bearer opaque-2"]


def test_a_slow_token_source_cannot_hold_a_call_past_its_deadline(world: World) -> None:
    release = threading.Event()

    def mint(audience: str) -> str:
        release.wait(30)
        return world.issuer.issue(subject=CLIENT_ID, audience=audience, ttl=300)

    try:
        with (
            sync_server(world) as port,
            secure_channel(
                f"localhost:{port}",
                svid=world.client_svid,
                bundles=world.ca.bundle,
                server_id=SERVER_ID,
                token_source=CachedTokenSource(mint),
                retry=None,
            ) as channel,
            pytest.raises(grpc.RpcError) as info,
        ):
            channel.unary_unary(f"/{SERVICE}/Unary")(b"x", timeout=0.5)
    finally:
        release.set()
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_a_failing_token_source_fails_the_call(world: World) -> None:
    def mint(audience: str) -> str:
        raise ConfigurationError("no credentials for the token endpoint")

    with (
        sync_server(world) as port,
        secure_channel(
            f"localhost:{port}",
            svid=world.client_svid,
            bundles=world.ca.bundle,
            server_id=SERVER_ID,
            token_source=CachedTokenSource(mint),
            retry=None,
        ) as channel,
        pytest.raises(grpc.RpcError) as info,
    ):
        channel.unary_unary(f"/{SERVICE}/Unary")(b"x", timeout=10)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert world.sink.events == []  # nothing reached the server's guard


def test_a_token_source_that_hangs_holds_no_later_call(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first fetch never returns (until the end of the test): the call waiting for it
    fails once it has run fetch_timeout seconds, and the next call fetches again. The one
    worker thread of the plugin stayed stuck, and every later call waited for it."""
    from zerotrust.client._grpc_creds import TokenPlugin

    monkeypatch.setattr(TokenPlugin, "fetch_timeout", 0.5)
    release = threading.Event()
    fetches: list[str] = []

    def mint(audience: str) -> str:
        fetches.append(audience)
        if len(fetches) == 1:
            release.wait(60)
        return world.issuer.issue(subject=CLIENT_ID, audience=audience, ttl=300)

    class Source:
        def token(self, audience: str) -> str:
            return mint(audience)

    try:
        with (
            sync_server(world) as port,
            secure_channel(
                f"localhost:{port}",
                svid=world.client_svid,
                bundles=world.ca.bundle,
                server_id=SERVER_ID,
                token_source=Source(),  # type: ignore[arg-type]
                retry=None,
            ) as channel,
        ):
            call = channel.unary_unary(f"/{SERVICE}/Unary")
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as info:
                call(b"x", timeout=5)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE  # not its deadline
            assert time.monotonic() - started < 3
            assert call(b"x", timeout=5) == CLIENT_ID.encode() + b"|x"
        assert len(fetches) == 2
    finally:
        release.set()


def test_fetches_stuck_in_the_token_source_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from zerotrust.client._grpc_creds import TokenPlugin
    from zerotrust.errors import SourceError

    monkeypatch.setattr(TokenPlugin, "fetch_timeout", 0.1)
    release = threading.Event()
    fetches: list[str] = []

    class Stuck:
        def token(self, audience: str) -> str:
            fetches.append(audience)
            release.wait(60)
            return "never-used"

    plugin = TokenPlugin(Stuck(), "api")  # type: ignore[arg-type]
    errors: list[object] = []
    answered = threading.Semaphore(0)

    def callback(metadata: object, error: object) -> None:
        errors.append(error)
        answered.release()

    try:
        for _ in range(TokenPlugin.max_fetches + 2):
            plugin(None, callback)
            assert answered.acquire(timeout=5)
        assert all(isinstance(e, SourceError) for e in errors)
        assert len(fetches) == TokenPlugin.max_fetches  # then calls fail without a fetch
        plugin.close()
        plugin(None, callback)
        assert answered.acquire(timeout=5) and "closed" in str(errors[-1])
    finally:
        release.set()


HUNG_TOKEN_SOURCE = """
import sys, threading
sys.path.insert(0, sys.argv[1])
import grpc
from tests.grpc_integration._support import SERVER_ID, SERVICE, bare_server, make_world
from zerotrust.dev import DevCA
from zerotrust.grpc import secure_channel

class Hung:
    def token(self, audience):
        threading.Event().wait()

world = make_world(DevCA.create("example.org"), DevCA.create("other.org"))
with bare_server(world.server_svid, world.ca.bundle) as (port, recorded):
    channel = secure_channel(f"localhost:{port}", svid=world.client_svid,
                             bundles=world.ca.bundle, server_id=SERVER_ID, token_source=Hung())
    try:
        channel.unary_unary(f"/{SERVICE}/Unary")(b"x", timeout=1)
    except grpc.RpcError as exc:
        print(exc.code().name)
    channel.close()
print("closed", flush=True)
"""


def test_a_token_source_that_hangs_does_not_keep_the_process_alive() -> None:
    """After close(), the process exits: the fetch stuck in the source is on a daemon thread
    (it was a pool's worker, which the interpreter joins at exit)."""
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", HUNG_TOKEN_SOURCE, str(root)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["DEADLINE_EXCEEDED", "closed"]


def test_identity_is_checked_again_after_a_reconnection(world: World) -> None:
    """A check verifies the connection the channel is on: every new connection (a
    transition to READY, read at call time or reported by grpc) and every call ended with
    UNAVAILABLE (a connection lost before grpc's state shows it) needs a new one."""
    context = client_ssl_context(world.client_svid, world.ca.bundle, authorizer=match.any())
    channel = [IDLE]
    with sync_server(world) as port:
        check = ServerCheck(f"localhost:{port}", context)
        check.attach(lambda try_to_connect: channel[0])
        assert check.needed  # never checked, not connected
        with pytest.raises(ServerIdentityError) as info:  # waits for grpc to connect first
            check.verify(0.2)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        channel[0] = TRANSIENT_FAILURE  # grpc could not connect: fails at once, as grpc does
        with pytest.raises(ServerIdentityError) as info:
            check.verify(5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        channel[0] = READY  # connected: now the server is probed
        assert str(check.verify().spiffe_id) == SERVER_ID
        assert not check.needed
        check.on_state(IDLE)  # grpc reported the connection gone (between two calls)...
        assert check.needed  # ...so READY now is another connection
        check.verify()
        assert not check.needed
        channel[0] = IDLE  # read at call time
        assert check.needed
        channel[0] = READY  # a new connection
        assert check.needed
        check.verify()
        assert not check.needed
        check.note(grpc.StatusCode.UNAVAILABLE)  # grpc may show a lost connection late
        assert check.needed
        check.verify()
        assert not check.needed
        check.note(grpc.StatusCode.NOT_FOUND)
        assert not check.needed


@pytest.mark.parametrize(
    ("peer", "address"),
    [
        ("ipv4:127.0.0.1:5000", "127.0.0.1"),
        ("ipv6:[::1]:5000", "::1"),
        ("ipv6:%5B::1%5D:5000", "::1"),
        ("ipv6:%5Bfe80::1%25eth0%5D:5000", "fe80::1%eth0"),
        ("unix:/tmp/sock", None),
        ("ipv6:::1", None),
        ("garbage", None),
    ],
)
def test_remote_address(peer: str, address: str | None) -> None:
    assert remote_address(peer) == address


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("localhost:50051", ("localhost", 50051)),
        ("dns:///echo.internal:443", ("echo.internal", 443)),
        ("[::1]:8443", ("::1", 8443)),
    ],
)
def test_split_target(target: str, expected: tuple[str, int]) -> None:
    assert split_target(target) == expected


@pytest.mark.parametrize("target", ["localhost", "unix:///tmp/s", "a:b", "host:0", "ipv4:1,2"])
def test_split_target_refuses(target: str) -> None:
    with pytest.raises(ConfigurationError):
        split_target(target)


BLOCK_GRPC = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "grpc" or name.startswith("grpc."):
            raise ImportError(f"No module named {name!r}")
        return None
sys.meta_path.insert(0, Block())
import zerotrust
assert "grpc" not in sys.modules
for module in ("zerotrust.grpc", "zerotrust.adapters.grpc_server",
               "zerotrust.adapters.grpc_aio_server", "zerotrust.client.grpc"):
    try:
        __import__(module)
    except zerotrust.errors.MissingDependencyError as exc:
        assert exc.extra == "grpc", exc
    else:
        raise AssertionError(module + " imported without grpc")
print("ok")
"""


def test_grpc_is_optional() -> None:
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_GRPC], check=False, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


class _Context:
    """What the view reads of a ServicerContext, counting the calls (no server needed)."""

    def __init__(self) -> None:
        self.reads: list[str] = []

    def invocation_metadata(self) -> tuple[tuple[str, object], ...]:
        return (
            ("authorization", "Bearer abc"),
            ("x-trace-bin", b"\x00\x01"),
            ("dpop", b"binary is never a credential"),
            ("x-multi", "a"),
            ("x-multi", "b"),
        )

    def auth_context(self) -> dict[str, list[bytes]]:
        self.reads.append("auth_context")
        return {"transport_security_type": [b"insecure"]}

    def peer(self) -> str:
        self.reads.append("peer")
        return "ipv4:127.0.0.1:5000"


def test_the_rpc_view_reads_only_what_is_asked(world: World) -> None:
    from zerotrust.adapters.grpc_server import ServerInterceptor

    interceptor = ServerInterceptor(world.guard())
    context = _Context()
    view = interceptor._view("/pkg.Service/Method", context)
    assert view.header("Authorization") == ["Bearer abc"]
    assert view.header("x-multi") == ["a", "b"]
    assert view.header("x-trace-bin") == view.header("dpop") == []  # binary values ignored
    # a repeat's one pass: a binary value of a listed key is still a reason to decide afresh
    assert view.bearer_alone(frozenset({"x-forwarded-client-cert"})) == "abc"
    assert view.bearer_alone(frozenset({"dpop"})) is None
    assert context.reads == []  # the peer's identity is read on first use only
    assert view.verified_peer is None and view.peer_chain is None
    assert view.scheme == "http"
    assert context.reads == ["auth_context"]  # once per call
    assert view.remote_addr == "127.0.0.1"
    assert (view.kind, view.method, view.route, view.path) == (
        "grpc",
        "POST",
        "/pkg.Service/Method",
        "/pkg.Service/Method",
    )


@pytest.mark.parametrize(
    "metadata",
    [
        (),
        (("authorization", "Bearer a"), ("authorization", "Bearer a")),  # two: never repeated
        (("authorization", "bearer a"),),  # another spelling takes the pipeline
        (("authorization", "Basic a"),),
        (("authorization", b"Bearer a"),),  # binary is never a credential
        (("authorization", "Bearer a"), ("dpop", "proof")),
    ],
)
def test_the_rpc_view_hands_a_repeat_only_a_lone_bearer_token(
    world: World, metadata: tuple[tuple[str, object], ...]
) -> None:
    from zerotrust.adapters.grpc_server import _View

    view = _View("/pkg.Service/Method", metadata, _Context(), None)  # type: ignore[arg-type]
    assert view.bearer_alone(frozenset({"dpop"})) is None


def test_the_rpc_view_bounds_metadata_entries(world: World) -> None:
    """As every other adapter bounds header lines: nothing is read from an RPC with more than
    MAX_HEADER_LINES metadata entries, and the refusal is raised inside the Guard's flow."""
    from zerotrust.adapters.grpc_server import _View
    from zerotrust.authn.request import MAX_HEADER_LINES
    from zerotrust.errors import MalformedCredentials

    padded = (("authorization", "Bearer abc"), *((f"x-{i}", "v") for i in range(MAX_HEADER_LINES)))
    view = _View("/pkg.Service/Method", padded, _Context(), None)  # type: ignore[arg-type]
    assert view.header("authorization") == [] and view.bearer_alone(frozenset()) is None
    with pytest.raises(MalformedCredentials):
        view.verified_peer  # noqa: B018 - the property raises
    outcome = world.guard().evaluate(view)
    assert (outcome.allowed, outcome.status) == (False, 400)


def test_a_method_cannot_be_both_exempt_and_required(world: World) -> None:
    """An exempt method is served unchecked: a requirement for it would never hold."""
    from zerotrust import require
    from zerotrust.adapters.grpc_aio_server import AioServerInterceptor
    from zerotrust.adapters.grpc_server import ServerInterceptor
    from zerotrust.errors import ConfigurationError

    method = "/pkg.Admin/Purge"
    for kind in (ServerInterceptor, AioServerInterceptor):
        with pytest.raises(ConfigurationError, match="both exempt and with a requirement"):
            kind(world.guard(), requirements={method: require(scopes=["admin"])}, exempt=[method])
        kind(world.guard(), requirements={method: require(scopes=["admin"])}, exempt=["/pkg.X/Y"])


def test_the_server_identity_check_keeps_to_the_call_deadline(world: World) -> None:
    """A server that answers the handshake a byte at a time (each byte resets a socket
    timeout), and a call queued behind another's check, both end at their own deadline: the
    wait for the other check and this one's probe share it. (The bounds below are several
    times what each should take and far below what the old behaviour took.)"""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    stop = threading.Event()

    def trickle() -> None:
        conns = []
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conns.append(conn)

            def drip(c: socket.socket = conn) -> None:
                with c:
                    for byte in b"\x16\x03\x03\x40\x00" + bytes(200):
                        if stop.wait(0.1):
                            return
                        try:
                            c.sendall(bytes([byte]))
                        except OSError:
                            return

            threading.Thread(target=drip, daemon=True).start()

    threading.Thread(target=trickle, daemon=True).start()
    options = {
        "svid": world.client_svid,
        "bundles": world.ca.bundle,
        "server_id": SERVER_ID,
        "retry": None,
    }
    elapsed: list[float] = []
    codes: list[grpc.StatusCode] = []

    def call(channel: grpc.Channel) -> None:
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            channel.unary_unary(f"/{SERVICE}/Unary")(b"x", timeout=2.0)
        elapsed.append(time.monotonic() - started)
        codes.append(info.value.code())

    try:
        with secure_channel(f"localhost:{port}", **options) as channel:
            first = threading.Thread(target=call, args=(channel,))
            first.start()
            time.sleep(0.3)
            call(channel)  # queued behind the first call's check
            first.join()
    finally:
        stop.set()
        close_listener(listener)
    assert set(codes) <= {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
    assert len(elapsed) == 2 and max(elapsed) < 3.2  # the queued call took 3.7 s before
