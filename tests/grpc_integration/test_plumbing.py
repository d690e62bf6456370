"""The pieces behind the channels and interceptors: token call credentials, the identity
re-check after reconnection, peer strings, and optional-dependency hygiene."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests._sockets import close_listener
from tests.grpc_integration._support import (
    CLIENT_ID,
    SERVER_ID,
    SERVICE,
    World,
    bare_server,
    sync_server,
)
from zerotrust import (
    Authenticator,
    BundleSet,
    RotatingBundleSource,
    TrustBundle,
    X509Svid,
    client_ssl_context,
    match,
)
from zerotrust.adapters._grpc_tls import remote_address
from zerotrust.client._grpc_check import ServerCheck, split_target
from zerotrust.client._grpc_creds import channel_credentials
from zerotrust.errors import ConfigurationError, SourceError
from zerotrust.grpc import ServerIdentityError, secure_channel
from zerotrust.identity import TrustDomain
from zerotrust.tokens.outgoing import CachedTokenSource

DER = serialization.Encoding.DER
READY, IDLE = grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.IDLE
TRANSIENT_FAILURE = grpc.ChannelConnectivity.TRANSIENT_FAILURE


class Answers:
    """The callback grpc hands a call-credentials plugin: keeps each ``(metadata, error)``
    answer, in order, and lets the test wait for the next one."""

    def __init__(self) -> None:
        self.answers: list[tuple[Any, Any]] = []
        self._answered = threading.Semaphore(0)

    def __call__(self, metadata: object, error: object) -> None:
        self.answers.append((metadata, error))
        self._answered.release()

    def wait(self, timeout: float = 10) -> None:
        assert self._answered.acquire(timeout=timeout)

    def ask(self, plugin: Any) -> None:
        """One call of ``plugin``, waiting for its answer."""
        plugin(None, self)
        self.wait()

    @property
    def errors(self) -> list[Any]:
        return [error for _, error in self.answers]

    @property
    def sent(self) -> list[object]:
        """The Authorization value of each answer, or its error."""
        return [error or dict(metadata)["authorization"] for metadata, error in self.answers]


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


class Blocking:
    """A token source whose fetch blocks until ``release`` is set: ``entered`` is set once a
    fetch is inside it, ``fetches`` lists the audiences asked for."""

    def __init__(self, token: str) -> None:
        self.entered, self.release = threading.Event(), threading.Event()
        self.fetches: list[str] = []
        self._token = token

    def token(self, audience: str) -> str:
        self.fetches.append(audience)
        self.entered.set()
        self.release.wait(30)
        return self._token


class Clocks:
    """The two clocks a token plugin reads, moved by the test: ``wall`` (POSIX seconds, what a
    token's exp is read against) and ``mono`` (monotonic seconds, for everything else)."""

    def __init__(self) -> None:
        self.wall = 1_700_000_000.0
        self.mono = 500.0

    def plugin(self, source: object, **lengthened: float) -> Any:
        """A TokenPlugin on these clocks; ``lengthened`` overrides class defaults."""
        from zerotrust.client._grpc_creds import TokenPlugin

        plugin = TokenPlugin(
            source,  # type: ignore[arg-type]
            "api",
            wall=lambda: self.wall,
            monotonic=lambda: self.mono,
        )
        for name, value in lengthened.items():
            object.__setattr__(plugin, name, value)
        return plugin


def test_an_opaque_token_is_not_used_after_its_source_moved_on() -> None:
    """Without a readable exp only the source knows the expiry: the plugin re-reads it
    opaque_lifetime (2 s) after the source handed it out, so a call after a pause sends the
    source's current token."""
    clocks = Clocks()
    tokens = iter(["opaque-1", "opaque-2", "opaque-3"])
    current = [next(tokens)]
    fetches: list[str] = []

    class Source:
        def token(self, audience: str) -> str:
            fetches.append(current[0])
            return current[0]

    plugin = clocks.plugin(Source(), poll_interval=3600.0)
    callback = Answers()
    try:
        callback.ask(plugin)
        current[0] = next(tokens)  # the source refreshed (e.g. its token expired)
        clocks.mono += 1.999
        callback.ask(plugin)  # answered from the memo
        clocks.mono += 0.001
        callback.ask(plugin)
    finally:
        plugin.close()
    assert fetches == ["opaque-1", "opaque-2"]
    assert callback.sent == ["Bearer opaque-1", "Bearer opaque-1", "Bearer opaque-2"]


def test_an_opaque_token_is_never_used_past_the_expiry_its_source_tells() -> None:
    """A source whose refresh fails hands its token out until the token's last instant: the
    memo must not stretch that by opaque_lifetime. It ends where a readable exp would."""
    clocks = Clocks()
    handed: list[str] = []

    class Source:
        def token(self, audience: str) -> str:
            handed.append("opaque")
            return "opaque"

        def expires_at(self, audience: str, token: str) -> dt.datetime:
            assert (audience, token) == ("api", "opaque")
            return dt.datetime.fromtimestamp(clocks.wall + 1.0, dt.timezone.utc)

    plugin = clocks.plugin(Source(), poll_interval=3600.0)
    callback = Answers()
    start = clocks.mono
    try:
        callback.ask(plugin)
        clocks.mono = start + 0.899  # a second left: used until a tenth of it before
        clocks.wall += 0.899
        callback.ask(plugin)
        assert handed == ["opaque"]
        clocks.mono = start + 0.9
        clocks.wall += 0.001
        callback.ask(plugin)
        assert len(handed) == 2
    finally:
        plugin.close()


@pytest.mark.parametrize(
    ("lifetime", "usable_for"),
    [(3600, 3595.0), (50, 45.0), (40, 36.0), (20, 18.0), (1, 0.9)],
    ids=["hour", "margin", "tenth", "short", "second"],
)
def test_a_memoized_token_is_used_until_its_margin(lifetime: int, usable_for: float) -> None:
    """A token is used until ``margin`` (5 s) before its exp, or a tenth of the life it had
    left when handed out if that is shorter: up to the instant before, never at it."""
    clocks = Clocks()
    handed: list[str] = []

    class Source:
        def token(self, audience: str) -> str:
            handed.append(_unsigned_jwt(int(clocks.wall) + lifetime))
            return handed[-1]

    plugin = clocks.plugin(Source(), poll_interval=10_000.0)
    callback = Answers()
    start = clocks.mono
    try:
        callback.ask(plugin)
        clocks.mono = start + usable_for - 0.001
        callback.ask(plugin)  # answered from the memo
        assert len(handed) == 1
        clocks.mono = start + usable_for
        callback.ask(plugin)  # the memo is spent: the source is asked again
    finally:
        plugin.close()
    assert len(handed) == 2
    assert callback.sent == [f"Bearer {handed[0]}"] * 2 + [f"Bearer {handed[1]}"]


def test_the_source_is_polled_poll_interval_after_the_last_fetch() -> None:
    clocks = Clocks()
    polled = threading.Semaphore(0)
    handed: list[str] = []

    class Source:
        def token(self, audience: str) -> str:
            handed.append(_unsigned_jwt(int(clocks.wall) + 3600 + len(handed)))
            polled.release()
            return handed[-1]

    plugin = clocks.plugin(Source())
    callback = Answers()
    start = clocks.mono
    try:
        callback.ask(plugin)
        assert polled.acquire(timeout=10)
        clocks.mono = start + 0.999
        callback.ask(plugin)  # from the memo, no poll due
        clocks.mono = start + 1.0
        callback.ask(plugin)  # from the memo, and the source is consulted behind it
        assert polled.acquire(timeout=10)
        for thread in [t for t in threading.enumerate() if t.name == "zerotrust-grpc-token"]:
            thread.join(10)
    finally:
        plugin.close()
    assert len(handed) == 2
    assert callback.sent == [f"Bearer {handed[0]}"] * 3


def test_a_call_waits_only_for_what_is_left_of_the_fetch_timeout() -> None:
    """A background refresh hangs in the source; once the memo's token is spent, a call waits
    for that fetch only until fetch_timeout (30 s) after it started, not 30 s from now."""
    clocks = Clocks()
    entered, release = threading.Event(), threading.Event()
    handed: list[str] = []

    class Source:
        def token(self, audience: str) -> str:
            if handed:  # the refresh hangs until released
                entered.set()
                release.wait(30)
            handed.append(_unsigned_jwt(int(clocks.wall) + 20))
            return handed[-1]

    plugin = clocks.plugin(Source())
    callback = Answers()
    start = clocks.mono
    try:
        callback.ask(plugin)
        clocks.mono = start + 1.0
        callback.ask(plugin)  # from the memo; starts the refresh, which hangs
        assert entered.wait(10)
        clocks.mono = start + 20.0  # the token's margin passed (18 s): the call must wait
        plugin(None, callback)
        timer = plugin._fetch.timer
        assert timer is not None
        assert timer.interval == 11.0  # 30 s from the refresh's start at 1 s
        release.set()
        callback.wait()
    finally:
        release.set()
        plugin.close()
    assert callback.sent == [f"Bearer {handed[0]}"] * 2 + [f"Bearer {handed[1]}"]


def _unsigned_jwt(exp: int) -> str:
    """A compact JWT with ``exp`` (the plugin reads it without verifying: only to schedule)."""

    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'ES256', 'typ': 'JWT'})}.{part({'exp': exp})}.c2ln"


@pytest.mark.parametrize(
    ("exp_in", "fetches"), [(3600, 1), (-60, 2), (None, 1)], ids=["valid", "expired", "opaque"]
)
def test_the_token_memo_answers_only_before_the_token_expires(
    exp_in: int | None, fetches: int
) -> None:
    """Two calls in a row (no refresh is due: poll_interval is raised): a token an hour from
    its exp, or an opaque token within opaque_lifetime (raised too), answers the second call
    from the memo; a token the source handed out already expired is never answered from it,
    the source is asked again."""
    from zerotrust.client._grpc_creds import TokenPlugin

    handed: list[str] = []

    class Source:
        def token(self, audience: str) -> str:
            opaque = f"opaque-{len(handed)}"
            handed.append(opaque if exp_in is None else _unsigned_jwt(int(time.time()) + exp_in))
            return handed[-1]

    plugin = TokenPlugin(Source(), "api")  # type: ignore[arg-type]
    object.__setattr__(plugin, "poll_interval", 3600.0)  # the class defaults, lengthened
    object.__setattr__(plugin, "opaque_lifetime", 3600.0)
    callback = Answers()
    try:
        for _ in range(2):
            plugin(None, callback)
            callback.wait()
    finally:
        plugin.close()
    assert len(handed) == fetches
    assert callback.sent == [f"Bearer {handed[0]}", f"Bearer {handed[-1]}"]


def test_calls_waiting_for_a_token_share_one_fetch() -> None:
    """Three calls arrive while the source is busy with the first one's fetch: none starts a
    fetch of its own, all get the token of that one."""
    from zerotrust.client._grpc_creds import TokenPlugin

    busy = Blocking("tok")
    plugin = TokenPlugin(busy, "api")  # type: ignore[arg-type]
    callback = Answers()
    try:
        plugin(None, callback)
        assert busy.entered.wait(10)
        plugin(None, callback)
        plugin(None, callback)
        busy.release.set()
        for _ in range(3):
            callback.wait()
    finally:
        busy.release.set()
        plugin.close()
    assert busy.fetches == ["api"]
    assert callback.sent == ["Bearer tok"] * 3


def test_the_token_plugin_needs_a_source_and_an_audience() -> None:
    from zerotrust.client._grpc_creds import TokenPlugin

    class Source:
        def token(self, audience: str) -> str:
            return "tok"

    for source, audience in ((object(), "api"), (Source(), ""), (Source(), b"api")):
        with pytest.raises(ConfigurationError):
            TokenPlugin(source, audience)  # type: ignore[arg-type]


def test_a_token_that_arrives_after_close_is_never_sent() -> None:
    """The channel closes while the source is fetching: the waiting call fails, and the token
    the fetch brings afterwards is not kept for later calls, which fail too."""
    from zerotrust.client._grpc_creds import TokenPlugin

    slow = Blocking("late-token")
    plugin = TokenPlugin(slow, "api")  # type: ignore[arg-type]
    callback = Answers()
    try:
        plugin(None, callback)
        assert slow.entered.wait(10)
        fetching = [t for t in threading.enumerate() if t.name == "zerotrust-grpc-token"]
        plugin.close()
        callback.wait()
    finally:
        slow.release.set()
    for thread in fetching:  # the fetch ends: its token is in hand
        thread.join(10)
    plugin(None, callback)
    callback.wait()
    unused = TokenPlugin(Blocking("late-token"), "api")  # type: ignore[arg-type]
    unused.close()  # before any fetch
    unused(None, callback)
    callback.wait()
    assert [metadata for metadata, _ in callback.answers] == [None, None, None]
    assert all("closed" in str(error) for error in callback.errors)


def test_a_closed_plugin_forgets_its_token() -> None:
    from zerotrust.client._grpc_creds import TokenPlugin

    class Source:
        def token(self, audience: str) -> str:
            return _unsigned_jwt(int(time.time()) + 3600)

    plugin = TokenPlugin(Source(), "api")  # type: ignore[arg-type]
    callback = Answers()
    plugin(None, callback)
    callback.wait()
    plugin.close()
    plugin(None, callback)  # the token in the memo is valid for an hour
    callback.wait()
    (first, none), (metadata, error) = callback.answers
    assert dict(first)["authorization"].startswith("Bearer ")  # type: ignore[call-overload]
    assert none is None
    assert metadata is None
    assert "closed" in str(error)


def test_a_valid_token_is_refreshed_off_the_call_path() -> None:
    """While the memo's token is valid a call is answered from it at once and, poll_interval
    after the last fetch, the source is consulted in the background: the next call sends
    what the source handed out then (e.g. a token it refreshed ahead of expiry). More
    refreshes than max_fetches: only fetches under way count against it."""
    from zerotrust.client._grpc_creds import TokenPlugin

    base = int(time.time()) + 3600
    handed: list[str] = []

    class Source:
        def token(self, audience: str) -> str:
            handed.append(_unsigned_jwt(base + len(handed)))
            return handed[-1]

    plugin = TokenPlugin(Source(), "api")  # type: ignore[arg-type]
    object.__setattr__(plugin, "poll_interval", 0.0)  # the class default, shortened
    callback = Answers()
    try:
        for _ in range(6):
            fetching = [t for t in threading.enumerate() if t.name == "zerotrust-grpc-token"]
            for thread in fetching:  # a refresh started by the previous call has ended
                thread.join(10)
            plugin(None, callback)
            callback.wait()
    finally:
        plugin.close()
    sent = callback.sent
    # the second call is answered from the memo, each later one with the token fetched in
    # the background after the call before it (every fetch ended: none is left counted)
    assert sent == [f"Bearer {token}" for token in handed[:1] + handed[:5]]


def test_a_failing_source_fails_the_call_with_its_error() -> None:
    from zerotrust.client._grpc_creds import TokenPlugin

    failure = ConfigurationError("no credentials for the token endpoint")

    class Failing:
        def token(self, audience: str) -> str:
            raise failure

    plugin = TokenPlugin(Failing(), "api")  # type: ignore[arg-type]
    callback = Answers()
    try:
        plugin(None, callback)
        callback.wait()
    finally:
        plugin.close()
    assert callback.answers == [(None, failure)]


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


@pytest.mark.parametrize("attempts", [3, 1], ids=["default-retry", "no-retry"])
def test_each_attempt_of_a_call_waits_for_a_token_fetch_of_its_own(
    world: World, monkeypatch: pytest.MonkeyPatch, attempts: int
) -> None:
    """What docs/grpc.md says of a token source that never answers: grpc reports the failed
    fetch as UNAVAILABLE, which the default RetryPolicy retries, and each attempt starts a
    fetch and waits fetch_timeout for it (a call without a deadline: up to max_attempts of
    them); one attempt without retries."""
    from zerotrust.client._grpc_creds import TokenPlugin
    from zerotrust.grpc import RetryPolicy

    monkeypatch.setattr(TokenPlugin, "fetch_timeout", 0.2)
    release = threading.Event()
    fetches: list[str] = []

    class Hung:
        def token(self, audience: str) -> str:
            fetches.append(audience)
            release.wait(60)
            return "never-used"

    retry = RetryPolicy(initial_backoff=0.001, max_backoff=0.001) if attempts > 1 else None
    try:
        with (
            sync_server(world) as port,
            secure_channel(
                f"localhost:{port}",
                svid=world.client_svid,
                bundles=world.ca.bundle,
                server_id=SERVER_ID,
                token_source=Hung(),  # type: ignore[arg-type]
                retry=retry,
            ) as channel,
            pytest.raises(grpc.RpcError) as info,
        ):
            channel.unary_unary(f"/{SERVICE}/Unary")(b"x")  # no deadline
    finally:
        release.set()
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "no token after 0.2 s" in info.value.details()
    assert len(fetches) == attempts
    assert world.sink.events == []  # no attempt reached the server's guard


def test_fetches_stuck_in_the_token_source_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from zerotrust.client._grpc_creds import TokenPlugin

    monkeypatch.setattr(TokenPlugin, "fetch_timeout", 0.1)
    release = threading.Event()
    fetches: list[str] = []

    class Stuck:
        def token(self, audience: str) -> str:
            fetches.append(audience)
            release.wait(60)
            return "never-used"

    plugin = TokenPlugin(Stuck(), "api")  # type: ignore[arg-type]
    callback = Answers()
    try:
        for _ in range(TokenPlugin.max_fetches + 2):
            plugin(None, callback)
            callback.wait(5)
        assert all(isinstance(e, SourceError) for e in callback.errors)
        assert len(fetches) == TokenPlugin.max_fetches  # then calls fail without a fetch
        plugin.close()
        plugin(None, callback)
        callback.wait(5)
        assert "closed" in str(callback.errors[-1])
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


def test_grpc_trusts_only_the_authorities_of_the_server_trust_domain(world: World) -> None:
    """The server presents an example.org SPIFFE ID issued by other.org's CA, and the client
    holds both bundles: grpc's handshake (one root store for every trust domain) accepts it
    with every authority as roots, and refuses it with those of the server's trust domain."""
    now = dt.datetime.now(dt.timezone.utc)
    chain, key = world.other_ca.issue_unchecked_leaf(
        uri_sans=[SERVER_ID],
        dns_names=["localhost"],
        not_before=now - dt.timedelta(minutes=1),
        not_after=now + dt.timedelta(hours=1),
    )
    with bare_server(X509Svid(chain, key), world.bundles) as (port, recorded):

        def call(trust_domain: TrustDomain | None) -> bytes:
            creds = channel_credentials(world.client_svid, world.bundles, trust_domain)
            with grpc.secure_channel(f"localhost:{port}", creds) as channel:
                return channel.unary_unary(f"/{SERVICE}/Unary")(b"x", timeout=10)  # type: ignore[no-any-return]

        assert call(None) == b"bare|x"
        with pytest.raises(grpc.RpcError) as info:
            call(TrustDomain("example.org"))
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert len(recorded.calls) == 1  # only the call made with every authority as roots


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


def test_a_closed_managed_channel_waits_for_every_retiring_channel() -> None:
    """Retired channels are closed on threads of their own, started from whichever grpc
    callback thread released their last call; many such releases at once must each leave a
    closer that ``close()`` then waits for (none lost, none dropped before it started)."""
    from zerotrust.client._grpc_generations import Generation
    from zerotrust.client._grpc_managed import ManagedChannel

    release, closed = threading.Event(), []

    class Channel:
        def close(self) -> None:
            assert release.wait(10)
            closed.append(self)

    class Check:
        def close(self) -> None:
            pass

    class Source:
        def get_x509_svid(self) -> object:
            return "svid"

        def get_bundle_set(self) -> object:
            return "bundles"

    def build(svid: object, bundles: object) -> Generation[Any]:
        return Generation(Channel(), (svid, bundles), Check())  # type: ignore[arg-type]

    channel = ManagedChannel(build, Source(), Source())  # type: ignore[arg-type]
    threads, per_thread = 8, 25
    start = threading.Barrier(threads)

    def retire_many() -> None:
        start.wait()
        for _ in range(per_thread):
            channel._close_later([build("svid", "bundles")])

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        workers = [threading.Thread(target=retire_many) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    finally:
        sys.setswitchinterval(old)
    try:
        closers = {t for t in threading.enumerate() if t.name == "zerotrust-grpc-retire"}
        assert len(closers) == threads * per_thread  # every one still waiting to close
        assert closers <= set(channel._closers)  # ... and every one known to close()
    finally:
        release.set()
    channel.close()
    assert not any(closer.is_alive() for closer in closers)
    assert len(closed) == threads * per_thread + 1  # and the channel's current one


@pytest.mark.parametrize(
    ("peer", "address"),
    [
        ("ipv4:127.0.0.1:5000", "127.0.0.1"),
        ("ipv6:[::1]:5000", "::1"),
        ("ipv6:%5B::1%5D:5000", "::1"),
        ("ipv6:%5Bfe80::1%25eth0%5D:5000", "fe80::1%eth0"),
        ("unix:/tmp/sock", None),
        ("unix:[::1]/sock", None),  # a socket path is no address, brackets or not
        ("ipv6:::1", None),
        ("ipv6:[::1", None),
        ("ipv6:[]:5000", None),
        ("ipv4:", None),
        ("garbage", None),
    ],
)
def test_remote_address(peer: str, address: str | None) -> None:
    assert remote_address(peer) == address


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _auth_context(svid: X509Svid) -> dict[str, list[bytes]]:
    """What grpc's server-side auth context holds for a client's chain."""
    leaf, *intermediates = svid.cert_chain
    return {
        "transport_security_type": [b"ssl"],
        "x509_pem_cert": [_pem(leaf)],
        "x509_pem_cert_chain": [_pem(c) for c in intermediates],
    }


def test_the_peer_cache_reads_only_a_parseable_leaf(world: World) -> None:
    from zerotrust.adapters._grpc_tls import PeerCache

    peers = PeerCache(world.guard().authenticator)
    assert peers.lookup({"transport_security_type": [b"ssl"]}) == (None, None)
    # not a certificate: a chain nothing verifies, refused by the Guard as malformed
    assert peers.lookup({"x509_pem_cert": [b"not a certificate"]}) == ([b""], None)
    broken = b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n"
    assert peers.lookup({"x509_pem_cert": [broken]}) == ([b""], None)
    # a chain grpc accepted (its root store merges every trust domain), zerotrust does not
    forged, _ = world.forged_client()
    chain, peer = peers.lookup({"x509_pem_cert": [forged]})
    assert peer is None and chain is not None and len(chain) == 1
    # without bundles nothing is verified here: the Authenticator decides
    tokens_only = Authenticator(tokens=world.guard().authenticator.tokens)
    chain, peer = PeerCache(tokens_only).lookup(_auth_context(world.client_svid))
    assert peer is None and chain == [world.client_svid.cert_chain[0].public_bytes(DER)]


def test_the_peer_cache_verifies_again_for_new_bundles(world: World) -> None:
    from zerotrust.adapters._grpc_tls import PeerCache

    bundles = RotatingBundleSource(world.bundles)
    peers = PeerCache(Authenticator(bundles=bundles))
    auth = _auth_context(world.client_svid)
    chain, first = peers.lookup(auth)
    assert first is not None and str(first.spiffe_id) == CLIENT_ID
    assert chain == [c.public_bytes(DER) for c in world.client_svid.cert_chain]
    assert peers.lookup(auth) == (chain, first) and peers.lookup(auth)[1] is first  # cached
    bundles.set(world.bundles)  # a new snapshot, same authorities: verified again
    again = peers.lookup(auth)[1]
    assert again == first and again is not first
    bundles.set(BundleSet([TrustBundle("example.org"), world.other_ca.bundle]))
    assert peers.lookup(auth) == (chain, None)  # the authority was withdrawn


def test_methods_a_catch_all_handler_serves_are_kept_only_with_names_a_method_can_have(
    world: World,
) -> None:
    """A generic handler that serves any name (a proxy's catch-all) is handed the names
    callers choose, before the Guard decides: a wrapped handler is kept for a name of up to
    256 characters, as a served method's, never for a longer one (4096 names of 12 KB each
    would hold about 50 MB for callers who were never admitted)."""
    from zerotrust.grpc import ServerInterceptor

    interceptor = ServerInterceptor(world.guard())
    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: request)

    class Details:
        def __init__(self, method: str) -> None:
            self.method = method

    def serve(method: str) -> Any:
        return interceptor.intercept_service(lambda details: handler, Details(method))

    short = "/a.B/" + "c" * 251
    assert len(short) == 256 and serve(short) is serve(short)  # kept, and used again
    long = "/a.B/" + "c" * 12_000
    first = serve(long)
    assert first is not None and serve(long) is not first  # wrapped again on each call
    assert list(interceptor._wrapped) == [short]


def test_the_peer_cache_is_bounded(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    from zerotrust.adapters import _grpc_tls

    monkeypatch.setattr(_grpc_tls, "_MAX_CACHED", 2)
    peers = _grpc_tls.PeerCache(world.guard().authenticator)
    a, b, c = (_auth_context(world.ca.issue_svid(f"{CLIENT_ID}/{n}")) for n in "abc")
    first = peers.lookup(a)[1]
    peers.lookup(b)
    assert peers.lookup(a)[1] is first  # two entries fit
    peers.lookup(c)  # a third: the cache starts over
    assert peers.lookup(a)[1] is not first


def test_a_store_between_a_clear_and_its_reset_is_counted(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another pool thread stores a chain while one thread is emptying the full cache: the
    byte count still matches what is held (the two stores take turns)."""
    from zerotrust.adapters import _grpc_tls

    monkeypatch.setattr(_grpc_tls, "_MAX_CACHED", 1)
    peers = _grpc_tls.PeerCache(world.guard().authenticator)
    first, second, third = (
        _auth_context(world.ca.issue_svid(f"{CLIENT_ID}/{n}")) for n in range(3)
    )
    peer = peers.lookup(first)[1]  # the cache is full
    assert peer is not None
    monkeypatch.setattr(_grpc_tls, "verify_x509_svid", lambda *args, **kwargs: peer)
    stored = threading.Event()
    other = threading.Thread(target=lambda: (peers.lookup(third), stored.set()))

    class Entries(dict):  # type: ignore[type-arg]
        def clear(self) -> None:
            super().clear()
            if not other.is_alive() and not stored.is_set():
                other.start()  # the other thread stores now, if it can get in
                stored.wait(timeout=0.5)  # it cannot: this store is not finished

    peers._entries = Entries(peers._entries)
    peers.lookup(second)  # full: clears, then stores
    other.join()
    held = sum(len(key) + sum(map(len, entry[1])) for key, entry in peers._entries.items())
    assert peers._bytes == held


def test_server_credentials_need_an_svid_and_bundles(world: World) -> None:
    from zerotrust.grpc import server_credentials

    with pytest.raises(ConfigurationError, match="svid must be"):
        server_credentials(world.server_svid.cert_chain_pem(), world.bundles)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="bundles must be"):
        server_credentials(world.server_svid, world.ca.bundle.to_pem())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("localhost:50051", ("localhost", 50051)),
        ("dns:///echo.internal:443", ("echo.internal", 443)),
        ("[::1]:8443", ("::1", 8443)),
        ("dns:echo.internal:1", ("echo.internal", 1)),
        ("echo.internal:65535", ("echo.internal", 65535)),
        # grpc's schemes for one address
        ("ipv4:127.0.0.1:50051", ("127.0.0.1", 50051)),
        ("ipv6:[::1]:50051", ("::1", 50051)),
        ("dns:///[2001:db8::1]:443", ("2001:db8::1", 443)),
    ],
)
def test_split_target(target: str, expected: tuple[str, int]) -> None:
    assert split_target(target) == expected


@pytest.mark.parametrize(
    "target",
    [
        "localhost",
        "unix:///tmp/s",
        "a:b",
        "host:0",
        "host:65536",
        "ipv4:1,2",
        ":443",
        "[]:443",
        # grpc dials another host than the one the check would probe: a DNS authority
        # (resolver) and an address list
        "dns://8.8.8.8/echo.internal:443",
        "ipv4:10.0.0.1:443,10.0.0.2:443",
        # an IPv6 address goes in brackets, and only an IPv6 address does (RFC 3986 3.2.2)
        "::1:443",
        "[::1:443",
        "::1]:443",
        "[abc]:443",
        "[127.0.0.1]:443",
        "ho[st:443",
        # an address of another kind than its scheme says
        "ipv4:echo.internal:443",
        "ipv4:[::1]:443",
        "ipv6:127.0.0.1:443",
        "ipv6:echo.internal:443",
        # to grpc, these are Unix sockets and other resolvers' names, not host:port: the check
        # would probe another server than the one grpc reaches
        "unix:50051",
        "UNIX:50051",
        "unix-abstract:50051",
        "unix:grpc:50051",
        "vsock:2:50051",
        "xds:443",
        "google-c2p:443",
        # grpc reads schemes in any case: this is the address 127.0.0.1, not a host name
        "IPV4:127.0.0.1:443",
        "DNS:echo.internal:443",
    ],
)
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


class _TlsContext(_Context):
    def auth_context(self) -> dict[str, list[bytes]]:
        self.reads.append("auth_context")
        return {"transport_security_type": [b"ssl"]}


def test_the_rpc_view_scheme_follows_the_transport(world: World) -> None:
    from zerotrust.adapters.grpc_server import ServerInterceptor

    interceptor = ServerInterceptor(world.guard())
    assert interceptor._view("/pkg.Service/Method", _TlsContext()).scheme == "https"
    assert interceptor._view("/pkg.Service/Method", _Context()).scheme == "http"


@pytest.mark.parametrize("grpc_status", ["OK", "NOT_A_STATUS"])
def test_a_refusal_never_looks_like_success(grpc_status: str) -> None:
    """Whatever status a refusal names, the caller never gets OK (nor an error grpc cannot
    send): PERMISSION_DENIED, with terse details."""
    from zerotrust.adapters.grpc_server import ServerInterceptor
    from zerotrust.pipeline import Outcome

    outcome = Outcome(
        allowed=False,
        principal=None,
        decision=None,
        error=None,
        status=403,
        grpc_status=grpc_status,
        headers=(("WWW-Authenticate", 'Bearer realm="echo"'),),
    )
    assert ServerInterceptor._refusal(outcome) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "access_denied",
        (("www-authenticate", 'Bearer realm="echo"'),),
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

    at_limit = (
        ("authorization", "Bearer abc"),
        *((f"x-{i}", "v") for i in range(MAX_HEADER_LINES - 1)),
    )
    view = _View("/pkg.Service/Method", at_limit, _Context(), None)  # type: ignore[arg-type]
    assert view.header("authorization") == ["Bearer abc"]  # MAX_HEADER_LINES entries are read
    assert view.bearer_alone(frozenset()) == "abc"
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


def test_the_wait_before_another_attempt(monkeypatch: pytest.MonkeyPatch) -> None:
    """No other attempt once the policy's attempts are used up, for a code not named
    retryable (or not a status code), after response metadata arrived, or when the wait
    would reach the deadline; the n-th wait is capped at initial_backoff * multiplier**(n-1),
    at most max_backoff (the jitter drawn here at its cap)."""
    from zerotrust import _jitter
    from zerotrust.client._grpc_interceptors import _Plan
    from zerotrust.grpc import RetryPolicy

    monkeypatch.setattr(_jitter, "fraction", lambda: 1.0)
    policy = RetryPolicy(max_attempts=5, initial_backoff=1, max_backoff=3, backoff_multiplier=2)
    unavailable = grpc.StatusCode.UNAVAILABLE

    def delay(
        attempts: int, code: object = unavailable, metadata: Any = (), timeout: float | None = None
    ) -> float | None:
        plan = _Plan(policy, timeout)
        plan.attempts = attempts  # attempts made so far
        return plan.delay(code, metadata)

    assert [delay(n) for n in range(1, 6)] == [1, 2, 3, 3, None]
    assert delay(1, grpc.StatusCode.INTERNAL) is None
    assert delay(1, "UNAVAILABLE") is None
    assert delay(1, unavailable, metadata=(("server", "answered"),)) is None
    assert delay(1, unavailable, metadata=()) == 1
    assert delay(2, timeout=60) == 2
    assert delay(2, timeout=1.5) is None  # the wait would end past the deadline
    assert _Plan(None, None).delay(unavailable) is None


def test_a_cancel_as_an_attempt_ends_leaves_a_complete_cancelled_call() -> None:
    """cancel() from another thread just as the first attempt ended (before the call decided
    on another attempt) finishes the call with that attempt's outcome: a cancelled call whose
    metadata can be read, not one without any outcome."""
    from zerotrust.client._grpc_interceptors import _Plan, _RetryingCall
    from zerotrust.grpc import RetryPolicy

    class Attempt:
        def __init__(self) -> None:
            self.done: list[Any] = []

        def add_done_callback(self, callback: Any) -> None:
            self.done.append(callback)

        def code(self) -> Any:
            return grpc.StatusCode.UNAVAILABLE

        def initial_metadata(self) -> Any:
            return ()

        def trailing_metadata(self) -> Any:
            return (("retry", "no"),)

    attempts: list[Attempt] = []

    def attempt() -> Attempt:
        attempts.append(Attempt())
        return attempts[-1]

    def cancel_now(code: Any) -> None:  # runs as the attempt's end is handled
        call.cancel()

    call = _RetryingCall(attempt, _Plan(RetryPolicy(), 10.0), cancel_now).start()
    (ended,) = attempts
    ended.done[0](ended)
    assert call.done() and call.cancelled() and len(attempts) == 1
    assert call.code() == grpc.StatusCode.CANCELLED
    assert call.initial_metadata() == () and call.trailing_metadata() == (("retry", "no"),)
    with pytest.raises(grpc.FutureCancelledError):
        call.result()


def test_the_trace_context_replaces_the_callers_entries() -> None:
    """Injected entries replace the caller's of the same names, whatever their case; an
    injected traceparent also drops the caller's tracestate (it belongs to the caller's
    traceparent). Without injection the caller's metadata is sent as given."""
    from zerotrust.client._grpc_interceptors import _with_trace

    given = [("TraceParent", "00-old"), ("tracestate", "a=1"), ("x-id", "7"), (b"bin", b"v")]
    assert _with_trace(given, [("traceparent", "00-new")]) == [
        ("x-id", "7"),
        (b"bin", b"v"),
        ("traceparent", "00-new"),
    ]
    assert _with_trace(given, [("baggage", "k=v")]) == [*given, ("baggage", "k=v")]
    assert _with_trace(given, []) == given
    assert _with_trace(None, []) == []
    assert _with_trace(None, [("traceparent", "00-new")]) == [("traceparent", "00-new")]


def test_channel_options_are_checked_and_followed_by_the_channels_own() -> None:
    from zerotrust.client._grpc_options import channel_options

    assert channel_options([(b"grpc.max_receive_message_length", 1024)], None) == [
        ("grpc.max_receive_message_length", 1024),
        ("grpc.enable_retries", 0),
        ("grpc.service_config_disable_resolution", 1),
    ]
    assert channel_options([("grpc.lb_policy_name", b"pick_first")], "echo.internal") == [
        ("grpc.lb_policy_name", b"pick_first"),
        ("grpc.enable_retries", 0),
        ("grpc.service_config_disable_resolution", 1),
        ("grpc.ssl_target_name_override", "echo.internal"),
    ]
    for bad in (
        [("grpc.max_receive_message_length",)],
        [["grpc.max_receive_message_length", 1024]],
        [(b"grpc.\xff", 1)],
        [(7, 1)],
        [("grpc.lb_policy_name", None)],
        [("grpc.service_config", 7)],
    ):
        with pytest.raises(ConfigurationError):
            channel_options(bad, None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "config",
    [
        '{"methodConfig": [1]}',
        '{"hedgingPolicy": {"maxAttempts": 3}}',
        '{"loadBalancingPolicy": 1}',
        '{"loadBalancingConfig": {"pick_first": {}}}',
        '{"loadBalancingConfig": {}}',
        '{"loadBalancingConfig": [[]]}',
        '{"loadBalancingConfig": ["pick_first"]}',
        '{"loadBalancingConfig": [{"pick_first": {}, "round_robin": {}}]}',
        '{"methodConfig": [], "padding": "%s"}' % ("x" * 65_536),  # valid, but over 64 KiB
    ],
)
def test_a_service_config_is_refused(config: str) -> None:
    from zerotrust.client._grpc_options import check_service_config

    with pytest.raises(ConfigurationError):
        check_service_config(config)


def test_a_service_config_that_keeps_to_one_connection_is_accepted() -> None:
    from zerotrust.client._grpc_options import check_service_config

    for config in (
        '{"loadBalancingPolicy": "PICK_FIRST"}',
        '{"loadBalancingConfig": [{"pick_first": {"shuffleAddressList": true}}]}',
        '{"methodConfig": [{"name": [{}], "timeout": "1s"}], "pad": "%s"}'
        % ("x" * 65_474),  # 64 KiB exactly
    ):
        assert len(config) <= 64 * 1024
        assert check_service_config(config) is None  # not refused


def test_sources_failing_before_handshakes_are_logged_once_per_outage(
    ca: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """grpc asks for the certificate configuration before every new TLS handshake, before
    anyone is authenticated: while the SVID source fails, a traceback per connection would let
    anyone who connects fill the log. One per outage, and a line when it is over."""
    import logging

    from zerotrust.adapters._grpc_tls import _CertificateConfigurations
    from zerotrust.errors import SvidError

    class Flaky:
        def __init__(self) -> None:
            self.svid, self.down = ca.issue_svid("spiffe://example.org/server"), False

        def get_x509_svid(self) -> Any:
            if self.down:
                raise SvidError("the agent is gone")
            return self.svid

    source = Flaky()
    configs = _CertificateConfigurations(source, ca.bundle)  # type: ignore[arg-type]
    with caplog.at_level(logging.DEBUG, logger="zerotrust"):
        for outage in range(2):
            caplog.clear()
            source.down = True
            assert [configs() for _ in range(5)] == [None] * 5  # the current one is kept
            errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
            assert len(errors) == 1 and errors[0].exc_info is not None, outage
            source.down = False
            if outage == 0:
                source.svid = ca.issue_svid("spiffe://example.org/server")
                assert configs() is not None  # the rotated SVID is handed over
            else:
                assert configs() is None
            assert any("load again" in r.getMessage() for r in caplog.records)


def test_the_peer_cache_is_bounded_in_bytes(ca: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client with a valid SVID may pad its chain with certificates of no use to it, each
    padding a new entry of grpc's auth context to cache: the bytes kept are bounded too."""
    from zerotrust import Authenticator
    from zerotrust.adapters import _grpc_tls

    svid = ca.issue_svid("spiffe://example.org/client")
    pem = [c.public_bytes(serialization.Encoding.PEM) for c in svid.cert_chain]
    pads = [
        ca.issue_svid(f"spiffe://example.org/pad{i}").leaf.public_bytes(serialization.Encoding.PEM)
        for i in range(5)
    ]
    one = 2 * (len(pem[0]) + sum(map(len, pads)))  # a key and its DER: less than twice its PEM
    monkeypatch.setattr(_grpc_tls, "_MAX_CACHED_BYTES", 2 * one)
    cache = _grpc_tls.PeerCache(Authenticator(bundles=ca.bundle))
    for k in range(len(pads) + 1):
        auth = {"x509_pem_cert": [pem[0]], "x509_pem_cert_chain": [pem[0], *pads[:k], *pem[1:]]}
        peer = cache.lookup(auth)[1]
        assert peer is not None and str(peer.spiffe_id) == "spiffe://example.org/client"
        assert 0 < cache._bytes <= 2 * one
        assert cache.lookup(auth)[1] is peer  # kept: the next call of the connection
    monkeypatch.setattr(_grpc_tls, "_MAX_CACHED_BYTES", 10)  # no chain fits: none is kept
    cache = _grpc_tls.PeerCache(Authenticator(bundles=ca.bundle))
    assert cache.lookup({"x509_pem_cert": [pem[0]], "x509_pem_cert_chain": pem})[1] is not None
    assert cache._entries == {} and cache._bytes == 0


def test_waiting_for_a_new_token_after_a_refusal_is_bounded() -> None:
    """What the channels wait for before a call is made again with a new token: the source's
    answer, nothing after the time left (a source still busy), and no token from a source that
    failed; the refused token is dropped from the plugin, and the source is told."""
    from zerotrust.client._grpc_creds import TokenPlugin

    busy = Blocking("tok")
    plugin = Clocks().plugin(busy)  # the memo stays fresh whatever time the test takes
    try:
        assert plugin.wait_token(0.01) is None  # busy: nothing within the time left
        assert asyncio.run(plugin.atoken(0.01)) is None
        busy.release.set()
        assert plugin.wait_token(None) == "tok"
        assert asyncio.run(plugin.atoken(None)) == "tok" == plugin.current()
        plugin.refused("another")  # not the memo's token: kept
        assert plugin.current() == "tok"
        plugin.refused("tok")
        assert plugin.current() is None
    finally:
        busy.release.set()
        plugin.close()
    assert busy.fetches == ["api"]

    invalidated: list[tuple[str, str | None]] = []

    class Failing:
        def token(self, audience: str) -> str:
            raise SourceError("down")

        def invalidate(self, audience: str, *, token: str | None = None) -> None:
            invalidated.append((audience, token))

    failing = TokenPlugin(Failing(), "api")  # type: ignore[arg-type]
    try:
        assert failing.wait_token(None) is None
        assert asyncio.run(failing.atoken(None)) is None
        failing.refused("t0")
        failing.refused("t0")  # told of each: it drops that token only, if it still holds it
    finally:
        failing.close()
    assert invalidated == [("api", "t0")] * 2
