"""ZeroTrustAuth against a real mTLS server: audiences, caching, re-mint on invalid_token."""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import json
import threading
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from tests._https import HttpsServer, Route
from tests._https import Recorded as HttpRecorded
from tests._zt_https import Recorded, Reply, ZtHttpsServer
from tests.client.conftest import Call, CountingSource, Mode, send, streamed, tls
from zerotrust import FixedClock, SpiffeId, StaticTokenSource, X509Svid
from zerotrust.client._rejections import IN_FLIGHT_SECONDS, Rejections
from zerotrust.dev import DevCA
from zerotrust.errors import ConfigurationError, SourceError
from zerotrust.httpx import AsyncClient, Client, SupportsInvalidate, ZeroTrustAuth
from zerotrust.sources import TokenExchangeTokenSource
from zerotrust.tokens.outgoing import CachedTokenSource, MintedToken

pytestmark = pytest.mark.network

INVALID = Reply(401, {"WWW-Authenticate": 'Bearer realm="api", error="invalid_token"'})


def bearer(record: Recorded) -> str:
    scheme, _, token = record.headers.get("authorization", "").partition(" ")
    assert scheme == "Bearer", record.headers
    return token


@pytest.fixture
def tokens() -> CountingSource:
    return CountingSource()


def auth_options(
    ca: DevCA, client_svid: X509Svid, tokens: CountingSource, audience: object = "orders"
) -> dict[str, Any]:
    return {**tls(ca, client_svid), "token_source": tokens.source, "audience": audience}


def test_token_is_attached_and_cached(
    mode: Mode, server: ZtHttpsServer, ca: DevCA, client_svid: X509Svid, tokens: CountingSource
) -> None:
    server.script("/orders", Reply(200))
    calls = [("GET", server.url("/orders"))] * 5
    responses = send(mode, calls, **auth_options(ca, client_svid, tokens))
    assert [r.status_code for r in responses] == [200] * 5
    assert tokens.minted == ["orders"]  # asked once for five requests
    assert {bearer(r) for r in server.requests()} == {"token-1-for-orders"}


class _OneMethodSource:
    """A token source of an application's own, with the protocol's one method only."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def token(self, audience: str) -> str:
        self.asked.append(audience)
        return f"own-{len(self.asked)}"


def test_a_token_source_with_only_token_serves_sync_and_async_clients(
    mode: Mode, server: ZtHttpsServer, ca: DevCA, client_svid: X509Svid
) -> None:
    # TokenSource is one method, token(audience): the async client runs it in a worker thread
    server.script("/orders", Reply(200))
    source = _OneMethodSource()
    options = {**tls(ca, client_svid), "token_source": source, "audience": "orders"}
    responses = send(mode, [("GET", server.url("/orders"))], **options)
    assert [r.status_code for r in responses] == [200]
    assert source.asked == ["orders"]
    assert [bearer(r) for r in server.requests()] == ["own-1"]


def test_audience_derived_per_host(
    mode: Mode, server: ZtHttpsServer, ca: DevCA, client_svid: X509Svid, tokens: CountingSource
) -> None:
    server.script("/", Reply(200))
    audience = {
        "localhost": "spiffe://example.org/api",
        "127.0.0.1": SpiffeId.parse("spiffe://example.org/api-by-ip"),
    }
    calls = [
        ("GET", server.url("/")),
        ("GET", server.url("/", host="127.0.0.1")),
        ("GET", server.url("/")),
    ]
    send(mode, calls, **auth_options(ca, client_svid, tokens, audience))
    assert tokens.minted == ["spiffe://example.org/api", "spiffe://example.org/api-by-ip"]
    seen = [bearer(r) for r in server.requests()]
    assert seen == [
        "token-1-for-spiffe~//example.org/api",
        "token-2-for-spiffe~//example.org/api-by-ip",
        "token-1-for-spiffe~//example.org/api",
    ]


def test_host_port_mapping_wins_and_unknown_hosts_are_refused(
    mode: Mode, server: ZtHttpsServer, ca: DevCA, client_svid: X509Svid, tokens: CountingSource
) -> None:
    server.script("/", Reply(200))
    audience = {f"localhost:{server.port}": "exact", "localhost": "host-only"}
    send(mode, [("GET", server.url("/"))], **auth_options(ca, client_svid, tokens, audience))
    assert tokens.minted == ["exact"]
    with pytest.raises(ConfigurationError, match="no audience is configured"):
        send(
            mode,
            [("GET", server.url("/", host="127.0.0.1"))],
            **auth_options(ca, client_svid, tokens, audience),
        )
    assert server.count() == 1  # the unmapped request was never sent


def test_audience_callable_may_skip_the_token(
    mode: Mode, server: ZtHttpsServer, ca: DevCA, client_svid: X509Svid, tokens: CountingSource
) -> None:
    server.script("/", Reply(200))
    server.script("/public", Reply(200))

    def audience(request: httpx.Request) -> str | None:
        return None if request.url.path == "/public" else f"aud-{request.url.path}"

    calls = [("GET", server.url("/public")), ("GET", server.url("/"))]
    send(mode, calls, **auth_options(ca, client_svid, tokens, audience))
    public, private = server.requests()
    assert "authorization" not in public.headers
    assert bearer(private) == "token-1-for-aud-/"


def test_invalid_token_re_mints_once_and_retries(
    mode: Mode, server: ZtHttpsServer, ca: DevCA, client_svid: X509Svid, tokens: CountingSource
) -> None:
    server.script("/", INVALID, Reply(200))
    body = {"json": {"item": 7}}
    [response] = send(
        mode, [("POST", server.url("/"), body)], **auth_options(ca, client_svid, tokens)
    )
    assert response.status_code == 200
    assert tokens.minted == ["orders", "orders"]
    first, second = server.requests()
    assert bearer(first) == "token-1-for-orders" and bearer(second) == "token-2-for-orders"
    assert first.body == second.body and json.loads(second.body) == {"item": 7}


def test_second_invalid_token_is_returned_as_is(
    mode: Mode, server: ZtHttpsServer, ca: DevCA, client_svid: X509Svid, tokens: CountingSource
) -> None:
    server.script("/", INVALID)
    [response] = send(mode, [("GET", server.url("/"))], **auth_options(ca, client_svid, tokens))
    assert response.status_code == 401 and "invalid_token" in response.headers["www-authenticate"]
    assert server.count() == 2 and len(tokens.minted) == 2


@pytest.mark.parametrize(
    "reply",
    [
        Reply(401, {"WWW-Authenticate": 'Bearer realm="api"'}),
        Reply(401, {"WWW-Authenticate": 'Bearer error="invalid_request"'}),
        Reply(401, {"WWW-Authenticate": 'Bearer error_description="invalid_token"'}),
        Reply(401),
        Reply(403, {"WWW-Authenticate": 'Bearer error="invalid_token"'}),
        Reply(403, {"WWW-Authenticate": 'Bearer error="insufficient_scope"'}),
    ],
    ids=["no-error", "invalid-request", "description-only", "no-challenge", "403-token", "403"],
)
def test_other_refusals_are_never_retried(
    mode: Mode,
    server: ZtHttpsServer,
    ca: DevCA,
    client_svid: X509Svid,
    tokens: CountingSource,
    reply: Reply,
) -> None:
    server.script("/", reply, Reply(200))
    [response] = send(mode, [("GET", server.url("/"))], **auth_options(ca, client_svid, tokens))
    assert response.status_code == reply.status
    assert server.count() == 1 and tokens.minted == ["orders"]


def test_streamed_body_is_not_replayed_but_its_rejected_token_is_dropped(
    mode: Mode, server: ZtHttpsServer, ca: DevCA, client_svid: X509Svid, tokens: CountingSource
) -> None:
    server.script("/", INVALID, Reply(200))
    calls: list[Call] = [("POST", server.url("/"), {"content": streamed(mode, b"part")})]
    calls.append(("GET", server.url("/")))
    rejected, after = send(mode, calls, **auth_options(ca, client_svid, tokens))
    assert rejected.status_code == 401 and after.status_code == 200
    assert server.count() == 2  # the upload was not sent again
    first, second = server.requests()
    assert first.body == b"part"
    assert bearer(first) == "token-1-for-orders" and bearer(second) == "token-2-for-orders"
    assert tokens.minted == ["orders", "orders"]


class InvalidatingSource:
    """A token source with the optional invalidate hook as it was first written: without
    the ``token`` keyword."""

    def __init__(self) -> None:
        self.counting = CountingSource()
        self.invalidated: list[str] = []

    def token(self, audience: str) -> str:
        return self.counting.source.token(audience)

    async def token_async(self, audience: str) -> str:
        return await self.counting.source.token_async(audience)

    def invalidate(self, audience: str) -> None:
        self.invalidated.append(audience)
        self.counting.source.clear()


def test_invalidate_hook_is_preferred(
    mode: Mode, server: ZtHttpsServer, ca: DevCA, client_svid: X509Svid
) -> None:
    source = InvalidatingSource()
    assert isinstance(source, SupportsInvalidate)
    server.script("/", INVALID, Reply(200))
    options = {**tls(ca, client_svid), "token_source": source, "audience": "orders"}
    [response] = send(mode, [("GET", server.url("/"))], **options)
    assert response.status_code == 200 and source.invalidated == ["orders"]


class TokenInvalidatingSource(InvalidatingSource):
    """A token source whose invalidate hook takes the refused token."""

    def invalidate(self, audience: str, *, token: str | None = None) -> None:
        self.invalidated.append(f"{audience} {token}")
        self.counting.source.invalidate(audience, token=token)


def test_the_invalidate_hook_is_given_the_refused_token(
    mode: Mode, server: ZtHttpsServer, ca: DevCA, client_svid: X509Svid
) -> None:
    source = TokenInvalidatingSource()
    server.script("/", INVALID, Reply(200))
    options = {**tls(ca, client_svid), "token_source": source, "audience": "orders"}
    [response] = send(mode, [("GET", server.url("/"))], **options)
    assert response.status_code == 200
    assert source.invalidated == ["orders token-1-for-orders"]


def test_a_late_refusal_of_a_replaced_token_leaves_its_successor_alone(
    mode: Mode, server: ZtHttpsServer, ca: DevCA, client_svid: X509Svid
) -> None:
    """The answer refusing token 1 comes after the source refreshed it to token 2 (here the
    server makes the refresh happen while it answers): token 2, which nobody refused, is not
    dropped but used to send the request once more."""
    clock = FixedClock(datetime(2030, 1, 1, tzinfo=timezone.utc))
    minted: list[str] = []

    def mint(audience: str) -> MintedToken:
        minted.append(audience)
        return MintedToken(f"token-{len(minted)}", clock.now() + timedelta(seconds=100))

    source = CachedTokenSource(mint, clock=clock)

    def handler(record: Recorded) -> Reply:
        if bearer(record) != "token-1":
            return Reply(200)
        clock.advance(85)  # token 1's refresh is due: another request gets token 2
        assert source.token("orders") == "token-2"
        return INVALID

    server.handle("/", handler)
    options = {**tls(ca, client_svid), "token_source": source, "audience": "orders"}
    calls = [("GET", server.url("/"))] * 2
    responses = send(mode, calls, **options)
    assert [r.status_code for r in responses] == [200, 200]
    assert minted == ["orders", "orders"]
    assert [bearer(r) for r in server.requests()] == ["token-1", "token-2", "token-2"]


def test_one_subjects_refused_exchanged_token_leaves_the_others_cached(
    mode: Mode, server: ZtHttpsServer, ca: DevCA, client_svid: X509Svid
) -> None:
    """Token exchange caches a token per subject: the audience refusing one subject's token
    drops that one, not every subject's token for the audience."""
    exchanged = itertools.count(1)

    def issue(record: HttpRecorded) -> tuple[int, dict[str, str], bytes]:
        subject = record.form["subject_token"]
        document = {
            "access_token": f"{subject}.{next(exchanged)}",
            "token_type": "Bearer",
            "expires_in": 600,
            "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
        }
        return 200, {"Content-Type": "application/json"}, json.dumps(document).encode()

    def api(record: Recorded) -> Reply:
        return INVALID if bearer(record) == "mallory.3" else Reply(200)

    server.handle("/", api)
    caller: contextvars.ContextVar[str] = contextvars.ContextVar("caller")
    with HttpsServer(None) as sts:
        sts.route("/token", Route(handler=issue))
        exchange = TokenExchangeTokenSource(
            sts.url("/token", host="127.0.0.1"),
            subject_token=caller.get,
            client_id="gateway",
            allow_http_loopback=True,
        )
        options = {**tls(ca, client_svid), "token_source": exchange, "audience": "orders"}
        with exchange:
            if mode == "sync":
                with Client(**options) as client:

                    def call(subject: str) -> int:
                        caller.set(subject)
                        return client.get(server.url("/")).status_code

                    statuses = [call(s) for s in ("alice", "bob", "mallory", "alice", "bob")]
            else:

                async def run() -> list[int]:
                    async with AsyncClient(**options) as client:

                        async def call(subject: str) -> int:
                            caller.set(subject)
                            return (await client.get(server.url("/"))).status_code

                        return [await call(s) for s in ("alice", "bob", "mallory", "alice", "bob")]

                statuses = asyncio.run(run())
        assert statuses == [200, 200, 200, 200, 200]
        assert [r.form["subject_token"] for r in sts.requests("/token")] == [
            "alice",
            "bob",
            "mallory",
            "mallory",
        ]
    assert [bearer(r) for r in server.requests()] == [
        "alice.1",
        "bob.2",
        "mallory.3",
        "mallory.4",
        "alice.1",
        "bob.2",
    ]


class ClearingSource:
    """A token source without invalidate(audience) but with clear(): it is cleared instead."""

    def __init__(self) -> None:
        self.generation = 0

    def token(self, audience: str) -> str:
        return f"{audience}-{self.generation}"

    async def token_async(self, audience: str) -> str:
        return self.token(audience)

    def clear(self) -> None:
        self.generation += 1


def test_a_source_without_invalidate_is_cleared() -> None:
    source = ClearingSource()
    assert not isinstance(source, SupportsInvalidate)
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["authorization"])
        if request.headers["authorization"].endswith("-0"):
            return httpx.Response(401, headers=dict(INVALID.headers))
        return httpx.Response(200)

    auth = ZeroTrustAuth(source, audience="orders")
    with httpx.Client(transport=httpx.MockTransport(answer), auth=auth) as client:
        assert client.get("https://api.internal/x").status_code == 200
    assert seen == ["Bearer orders-0", "Bearer orders-1"] and source.generation == 1


def test_an_invalidate_hook_gets_the_token_if_its_signature_takes_it() -> None:
    """``token`` is passed to a hook that names it (keyword-only or not) or takes any keyword;
    a hook that takes none of them is called with the audience alone (the clients'
    ``Rejections``, which both ZeroTrustAuth and the gRPC channels use)."""
    calls: list[tuple[object, ...]] = []

    class Source(ClearingSource):
        pass

    class KeywordOnly(Source):
        def invalidate(self, audience: str, *, token: str | None = None) -> None:
            calls.append(("keyword-only", audience, token))

    class Positional(Source):
        def invalidate(self, audience: str, token: str | None = None) -> None:
            calls.append(("positional", audience, token))

    class AnyKeyword(Source):
        def invalidate(self, audience: str, **options: object) -> None:
            calls.append(("any", audience, options))

    class AudienceOnly(Source):
        def invalidate(self, audience: str, *more: object) -> None:
            calls.append(("audience", audience, *more))

    for source in (KeywordOnly(), Positional(), AnyKeyword(), AudienceOnly()):
        Rejections(source).reject("a", "t0")
        assert source.generation == 0  # never cleared when it has invalidate
    assert calls == [
        ("keyword-only", "a", "t0"),
        ("positional", "a", "t0"),
        ("any", "a", {"token": "t0"}),
        ("audience", "a"),
    ]


def test_a_rejected_token_is_dropped_once_and_1024_are_remembered() -> None:
    """A source that can only drop whatever it holds is told once of the refusals of the
    requests in flight with a token (a late one must not drop a new token), and again once
    they are over; the rejected tokens remembered for that are bounded (the least recently
    rejected go)."""
    source = ClearingSource()
    now = [100.0]
    rejections = Rejections(source, now=lambda: now[0])
    rejections.reject("a", "t0")
    now[0] += IN_FLIGHT_SECONDS - 0.1
    rejections.reject("a", "t0")  # a concurrent request had it dropped already
    assert source.generation == 1
    now[0] += 0.1  # handed out again since, and refused again: dropped again
    rejections.reject("a", "t0")
    assert source.generation == 2
    source.generation = 1
    rejections.reject("a", "t1")
    assert source.generation == 2
    for n in range(1024):
        rejections.reject(f"b{n}", "t")
    assert source.generation == 1026 and len(rejections._last) == 1024
    rejections.reject("b1023", "t")  # remembered
    assert source.generation == 1026
    rejections.reject("a", "t1")  # the oldest, forgotten: dropped again
    assert source.generation == 1027


def test_a_source_that_drops_the_refused_token_only_is_told_of_every_refusal() -> None:
    """It keeps a token minted meanwhile by itself, and one that handed a refused token out
    again (a sidecar still serving its cache) must hear of the next refusal too."""
    calls: list[tuple[str, str | None]] = []

    class Precise(ClearingSource):
        def invalidate(self, audience: str, *, token: str | None = None) -> None:
            calls.append((audience, token))

    rejections = Rejections(Precise(), now=lambda: 0.0)
    for _ in range(3):
        rejections.reject("a", "t0")
    assert calls == [("a", "t0")] * 3


def test_a_new_token_refused_too_is_dropped_and_not_sent_again(
    mode: Mode, server: ZtHttpsServer, ca: DevCA, client_svid: X509Svid, tokens: CountingSource
) -> None:
    """The answer to the request sent again with a new token is read: refused as well, that
    token is dropped, so the next request (whose body may not be replayable) gets another."""

    def handler(record: Recorded) -> Reply:
        return INVALID if bearer(record).startswith(("token-1-", "token-2-")) else Reply(200)

    server.handle("/", handler)
    calls: list[Call] = [("GET", server.url("/")), ("GET", server.url("/"))]
    responses = send(mode, calls, **auth_options(ca, client_svid, tokens))
    assert [r.status_code for r in responses] == [401, 200]
    assert [bearer(r) for r in server.requests()] == [
        "token-1-for-orders",
        "token-2-for-orders",  # re-minted once, refused too: the 401 stands
        "token-3-for-orders",
    ]


def test_a_source_that_cannot_re_mint_is_not_retried(
    mode: Mode, server: ZtHttpsServer, ca: DevCA, client_svid: X509Svid
) -> None:
    server.script("/", INVALID, Reply(200))
    options = {**tls(ca, client_svid), "token_source": StaticTokenSource("t"), "audience": "a"}
    [response] = send(mode, [("GET", server.url("/"))], **options)
    assert response.status_code == 401 and server.count() == 1


def test_concurrent_rejections_re_mint_once(
    mode: Mode, server: ZtHttpsServer, ca: DevCA, client_svid: X509Svid, tokens: CountingSource
) -> None:
    def handler(record: Recorded) -> Reply:
        return INVALID if bearer(record) == "token-1-for-orders" else Reply(200)

    server.handle("/", handler)
    tokens.source.token("orders")  # every request starts with the token the server rejects
    statuses: list[int] = []
    if mode == "sync":
        with Client(**auth_options(ca, client_svid, tokens)) as client:

            def one() -> None:
                statuses.append(client.get(server.url("/")).status_code)

            threads = [threading.Thread(target=one) for _ in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
    else:

        async def run() -> None:
            async with AsyncClient(**auth_options(ca, client_svid, tokens)) as client:
                calls = (client.get(server.url("/")) for _ in range(8))
                statuses.extend(r.status_code for r in await asyncio.gather(*calls))

        asyncio.run(run())
    assert statuses == [200] * 8
    assert tokens.minted == ["orders", "orders"]
    rejected = [r for r in server.requests() if bearer(r) == "token-1-for-orders"]
    assert len(rejected) + 8 == server.count()


def test_a_request_given_up_on_never_fails_the_others_waiting_for_its_token(
    server: ZtHttpsServer, ca: DevCA, client_svid: X509Svid
) -> None:
    """A deadline around the request whose token fetch the others share cancels that request
    only: the fetch goes on and the other requests are sent with its token."""
    server.script("/", Reply(200))
    minted: list[str] = []

    async def slow_mint(audience: str) -> str:
        minted.append(audience)
        await asyncio.sleep(0.3)
        return f"token-{len(minted)}"

    source = CachedTokenSource(lambda audience: "unused", mint_async=slow_mint)

    async def run() -> tuple[list[BaseException | httpx.Response], list[httpx.Response]]:
        options = {**tls(ca, client_svid), "token_source": source, "audience": "orders"}
        async with AsyncClient(**options) as client:
            hurried = asyncio.ensure_future(asyncio.wait_for(client.get(server.url("/")), 0.1))
            while not minted:  # its token fetch is the one the others wait for
                await asyncio.sleep(0.005)
            others = await asyncio.gather(*(client.get(server.url("/")) for _ in range(10)))
            return await asyncio.gather(hurried, return_exceptions=True), others

    [hurried], others = asyncio.run(run())
    assert isinstance(hurried, asyncio.TimeoutError)
    assert [r.status_code for r in others] == [200] * 10
    assert minted == ["orders"]
    assert [bearer(r) for r in server.requests()] == ["token-1"] * 10


def test_token_source_errors_propagate(
    mode: Mode, server: ZtHttpsServer, ca: DevCA, client_svid: X509Svid
) -> None:
    class Broken:
        def token(self, audience: str) -> str:
            return "has space"

        async def token_async(self, audience: str) -> str:
            return "has space"

    options = {**tls(ca, client_svid), "token_source": Broken(), "audience": "a"}
    with pytest.raises(SourceError, match="invalid characters"):
        send(mode, [("GET", server.url("/"))], **options)
    assert server.count() == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((object(),), "token_source"),
        ((StaticTokenSource("t"),), "audience"),
    ],
)
def test_auth_configuration_errors(args: tuple[object, ...], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        ZeroTrustAuth(*args, audience={})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "audience", ["", 7, {"": "x"}, {"h/x": "x"}, {"h": ""}, {"h": 7}, {7: "x"}, {None: "x"}]
)
def test_bad_audiences_are_refused(audience: object) -> None:
    with pytest.raises(ConfigurationError):
        ZeroTrustAuth(StaticTokenSource("t"), audience=audience)  # type: ignore[arg-type]


def test_auth_works_on_a_plain_httpx_client(
    server: ZtHttpsServer, ca: DevCA, client_svid: X509Svid, tokens: CountingSource
) -> None:
    from zerotrust import match
    from zerotrust.x509.sslcontext import client_ssl_context

    server.script("/", Reply(200))
    context = client_ssl_context(client_svid, ca.bundle, authorizer=match.member_of("example.org"))
    auth = ZeroTrustAuth(tokens.source, audience="plain")
    with httpx.Client(verify=context, auth=auth) as client:
        assert client.get(server.url("/")).status_code == 200
    assert bearer(server.requests()[0]) == "token-1-for-plain"


def test_host_mapping_resolution() -> None:
    from zerotrust.client._httpx_auth import _resolver

    resolve = _resolver({"api.internal:443": "tls-default", "api.internal": "any", "[::1]": "v6"})
    assert resolve(httpx.Request("GET", "https://api.internal/x")) == "tls-default"
    assert resolve(httpx.Request("GET", "https://API.internal:443/x")) == "tls-default"
    assert resolve(httpx.Request("GET", "https://api.internal:8443/x")) == "any"
    assert resolve(httpx.Request("GET", "http://api.internal/x")) == "any"
    assert resolve(httpx.Request("GET", "https://[::1]:8443/x")) == "v6"
    with pytest.raises(ConfigurationError, match=r"host 'api\.internal\.evil\.example'"):
        resolve(httpx.Request("GET", "https://api.internal.evil.example/x"))
    # IPv6 keys keep their brackets: [2001:db8::1]:8443 is not the address 2001:db8::1:8443
    ported = _resolver({"[2001:db8::1]:8443": "v6-port", "[2001:DB8:0::2]": "v6-any"})
    assert ported(httpx.Request("GET", "https://[2001:db8::1]:8443/x")) == "v6-port"
    assert ported(httpx.Request("GET", "https://[2001:db8::2]:9/x")) == "v6-any"
    for elsewhere in ("https://[2001:db8::1:8443]/x", "https://[2001:db8::1:8443]:8443/x"):
        with pytest.raises(ConfigurationError, match="no audience"):
            ported(httpx.Request("GET", elsewhere))
    bad_keys = ("2001:db8::1:8443", "[not-ip]", "api.internal:port", "a/b", "", "[::1]x")
    # brackets hold an IPv6 address and nothing else (RFC 3986 3.2.2)
    for key in (*bad_keys, "[1:2]", "[abc]", "[1.2.3.4]"):
        with pytest.raises(ConfigurationError, match="mapping key"):
            _resolver({key: "x"})


@pytest.mark.parametrize(
    "key",
    ["café.example", "CAFÉ.Example", "xn--caf-dma.example", "XN--CAF-DMA.example"],
    ids=["unicode", "unicode-upper", "a-labels", "a-labels-upper"],
)
def test_an_internationalized_host_matches_its_key_in_either_form(key: str) -> None:
    """Host names compare as DNS compares them: without regard to case, and an IDNA name in
    Unicode or as A-labels (httpx shows some hosts one way and some the other)."""
    from zerotrust.client._httpx_auth import _resolver

    resolve = _resolver({key: "cafe", f"www.{key}:8443": "www-cafe"})
    for url in ("https://café.example/", "https://xn--caf-dma.example/", "https://CAFÉ.example/"):
        assert resolve(httpx.Request("GET", url)) == "cafe"
    for url in ("https://www.café.example:8443/", "https://www.xn--caf-dma.example:8443/"):
        assert resolve(httpx.Request("GET", url)) == "www-cafe"
    with pytest.raises(ConfigurationError, match="no audience"):
        resolve(httpx.Request("GET", "https://cafe.example/"))  # another name


def test_a_mapping_key_that_is_no_host_name_is_refused() -> None:
    from zerotrust.client._httpx_auth import _resolver

    for key in ("☃", "999.1.1.1", "xn--café.example"):
        with pytest.raises(ConfigurationError, match="not a valid host"):
            _resolver({key: "x"})


def test_a_token_is_never_sent_in_clear_but_to_a_loopback_sidecar() -> None:
    """RFC 6750 5.3: bearer tokens travel over TLS; a plain-http loopback sidecar (which
    carries the call on over mTLS) is the one exception. (A mock transport: what is decided
    here is whether the token is attached, before any connection.)"""
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200)

    auth = ZeroTrustAuth(StaticTokenSource("t0k"), audience="api")
    with httpx.Client(transport=httpx.MockTransport(answer), auth=auth) as client:
        for url in ("http://api.internal/x", "http://10.0.0.7/x", "http://[2001:db8::1]/x"):
            with pytest.raises(ConfigurationError, match="never sent over http"):
                client.get(url)
        for url in ("http://localhost:15001/x", "http://127.0.0.1/x", "http://[::1]/x"):
            assert client.get(url).status_code == 200
        for url in ("https://api.internal/x", "https://10.0.0.7:8443/x", "https://[2001:db8::1]/x"):
            assert client.get(url).status_code == 200  # over TLS, to any host
    assert [r.headers["authorization"] for r in sent] == ["Bearer t0k"] * 6


def test_invalid_token_challenge_parsing() -> None:
    from zerotrust.client._httpx_auth import invalid_token_challenge

    def check(status: int, *values: str) -> bool:
        headers = [("WWW-Authenticate", v) for v in values]
        return invalid_token_challenge(httpx.Response(status, headers=headers))

    assert check(401, 'Bearer error="invalid_token"')
    assert check(401, "Bearer realm=x, error=invalid_token")
    assert check(401, 'DPoP algs="ES256", error="invalid_token", error_description="x"')
    assert check(401, 'Basic realm="a"', 'Bearer error="invalid_token"')
    assert check(401, 'Bearer ERROR = "invalid_token"')
    assert not check(401, 'Bearer error="invalid_token_x"')
    assert not check(401, 'Bearer xerror="invalid_token"')
    assert not check(401, 'Bearer error_description="error=invalid_token"')
    assert not check(403, 'Bearer error="invalid_token"')
    assert not check(401)


def test_a_same_origin_redirect_answering_invalid_token_re_mints_and_re_sends(
    mode: Mode, server: ZtHttpsServer, ca: DevCA, client_svid: X509Svid, tokens: CountingSource
) -> None:
    """A redirect within the origin carried the token: its invalid_token is this origin's."""
    server.script("/start", Reply(307, {"Location": "/target"}))
    server.script("/target", INVALID, Reply(200))
    options = {**auth_options(ca, client_svid, tokens), "follow_redirects": True}
    [response] = send(mode, [("GET", server.url("/start"))], **options)
    assert response.status_code == 200
    assert tokens.minted == ["orders", "orders"]
    assert [bearer(r) for r in server.requests("/target")] == [
        "token-1-for-orders",
        "token-2-for-orders",
    ]
    assert server.count("/start") == 2


@pytest.mark.parametrize(("method", "status"), [("POST", 307), ("POST", 308), ("GET", 303)])
def test_a_redirect_that_kept_the_method_and_body_is_followed_again_with_a_new_token(
    mode: Mode,
    server: ZtHttpsServer,
    ca: DevCA,
    client_svid: X509Svid,
    tokens: CountingSource,
    method: str,
    status: int,
) -> None:
    """307 and 308 (and any redirect of a GET) send the same request on: its invalid_token is
    this request's, so the request is sent once more, with its body, and redirected again."""
    server.script("/start", Reply(status, {"Location": "/target"}))
    server.script("/target", INVALID, Reply(200))
    options = {**auth_options(ca, client_svid, tokens), "follow_redirects": True}
    [response] = send(mode, [(method, server.url("/start"), {"json": [7]})], **options)
    assert response.status_code == 200
    assert [(r.method, r.path, bearer(r), r.body) for r in server.requests()] == [
        (method, path, f"token-{n}-for-orders", b"[7]")
        for n in (1, 2)
        for path in ("/start", "/target")
    ]


@pytest.mark.parametrize("status", [301, 302, 303])
def test_a_post_a_redirect_turned_into_a_get_is_never_sent_again(
    mode: Mode,
    server: ZtHttpsServer,
    ca: DevCA,
    client_svid: X509Svid,
    tokens: CountingSource,
    status: int,
) -> None:
    """httpx follows a POST answered 301, 302 or 303 with a GET: the POST was processed, so
    the GET's invalid_token is returned as it is. The token it carried was refused all the
    same: the next request gets a new one."""
    server.script("/charges", Reply(status, {"Location": "/charges/1"}))
    server.script("/charges/1", INVALID, Reply(200))
    options = {**auth_options(ca, client_svid, tokens), "follow_redirects": True}
    calls: list[Call] = [
        ("POST", server.url("/charges"), {"json": {"amount": 100}}),
        ("GET", server.url("/charges/1")),
    ]
    rejected, after = send(mode, calls, **options)
    assert rejected.status_code == 401 and after.status_code == 200
    assert [(r.method, r.path, bearer(r)) for r in server.requests()] == [
        ("POST", "/charges", "token-1-for-orders"),
        ("GET", "/charges/1", "token-1-for-orders"),
        ("GET", "/charges/1", "token-2-for-orders"),
    ]


def test_a_round_trip_through_another_origin_leaves_the_token_alone(
    mode: Mode, server: ZtHttpsServer, ca: DevCA, client_svid: X509Svid, tokens: CountingSource
) -> None:
    """A -> B -> A: httpx dropped the token on the way to B and never puts it back, so A's
    invalid_token answers a request without it and says nothing about the token."""
    server.script("/start", Reply(302, {"Location": server.url("/bounce", host="127.0.0.1")}))
    server.script("/bounce", Reply(302, {"Location": server.url("/final")}))
    server.script("/final", INVALID)
    server.script("/again", Reply(200))
    options = {**auth_options(ca, client_svid, tokens), "follow_redirects": True}
    calls = [("GET", server.url("/start")), ("GET", server.url("/again"))]
    first, second = send(mode, calls, **options)
    assert first.status_code == 401 and second.status_code == 200
    assert tokens.minted == ["orders"]
    assert [(r.path, r.headers.get("authorization")) for r in server.requests()] == [
        ("/start", "Bearer token-1-for-orders"),
        ("/bounce", None),
        ("/final", None),
        ("/again", "Bearer token-1-for-orders"),
    ]


class OnlyAsync:
    async def token_async(self, audience: str) -> str:
        return "t"


def test_a_source_needs_the_token_method() -> None:
    with pytest.raises(ConfigurationError, match="token_source"):
        ZeroTrustAuth(OnlyAsync(), audience="a")  # type: ignore[arg-type]


def test_a_derived_audience_must_be_a_string() -> None:
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200)

    auth = ZeroTrustAuth(StaticTokenSource("t"), audience=lambda request: 7)  # type: ignore[arg-type,return-value]
    with (
        httpx.Client(transport=httpx.MockTransport(answer), auth=auth) as client,
        pytest.raises(ConfigurationError, match="derived audience"),
    ):
        client.get("https://api.internal/x")
    assert sent == []


def test_the_generic_auth_flow_is_the_blocking_one() -> None:
    auth = ZeroTrustAuth(StaticTokenSource("t0k"), audience="api")
    flow = auth.auth_flow(httpx.Request("GET", "https://api.internal/x"))
    request = next(flow)
    assert request.headers["authorization"] == "Bearer t0k"
    with pytest.raises(StopIteration):
        flow.send(httpx.Response(200))


def test_repr_names_the_source_and_dpop_never_a_token() -> None:
    from zerotrust.tokens import PrivateJWK

    source = StaticTokenSource("t0k")
    assert repr(ZeroTrustAuth(source, audience="a")) == "ZeroTrustAuth(StaticTokenSource(<token>))"
    bound = ZeroTrustAuth(source, audience="a", dpop_key=PrivateJWK.generate("ES256"))
    assert repr(bound) == "ZeroTrustAuth(StaticTokenSource(<token>), dpop)"


@pytest.mark.parametrize("key", ["payments.internal", "payments.internal.", "PAYMENTS.internal."])
def test_a_host_name_matches_its_key_with_or_without_the_root_dot(key: str) -> None:
    """``payments.internal.`` is the absolute form of ``payments.internal``: one host, in the
    mapping and in the URL; the root label alone is no host."""
    from zerotrust.client._httpx_auth import _resolver

    resolve = _resolver({key: "payments", f"{key.rstrip('.')}.:8443": "payments-8443"})
    for url in ("https://payments.internal/x", "https://payments.internal./x"):
        assert resolve(httpx.Request("GET", url)) == "payments"
    assert resolve(httpx.Request("GET", "https://payments.internal:8443/")) == "payments-8443"
    with pytest.raises(ConfigurationError, match="no audience"):
        resolve(httpx.Request("GET", "https://payments.internal.evil/"))
    for bad in (".", "..", "payments..internal"):
        with pytest.raises(ConfigurationError, match=r"mapping key|not a valid host"):
            _resolver({bad: "x"})


@pytest.mark.parametrize(
    "other",
    ["PAYMENTS.internal.", "payments.internal:443", "Payments.Internal"],
)
def test_two_keys_for_one_host_with_different_audiences_are_refused(other: str) -> None:
    """Keys that name one host (case, the root dot; not the default port, which is a key of
    its own) cannot map it to two audiences: which one a request meant would be a guess."""
    from zerotrust.client._httpx_auth import _resolver

    if other.endswith(":443"):  # host:port is a key of its own, consulted before the host
        resolve = _resolver({"payments.internal": "a", other: "b"})
        assert resolve(httpx.Request("GET", "https://payments.internal/")) == "b"
        assert resolve(httpx.Request("GET", "http://payments.internal/")) == "a"
        return
    with pytest.raises(ConfigurationError, match="name the same host") as refused:
        _resolver({"payments.internal": "a", other: "b"})
    assert "'payments.internal'" in str(refused.value)
    same = _resolver({"payments.internal": "a", other: "a"})  # one audience: nothing to guess
    assert same(httpx.Request("GET", "https://payments.internal./")) == "a"


class UnreachableCacheSource(InvalidatingSource):
    """A token source whose invalidate hook fails (its shared cache is out of reach)."""

    def invalidate(self, audience: str, *, token: str | None = None) -> None:
        self.invalidated.append(audience)
        raise ConnectionError("the token cache is out of reach")


def test_a_source_that_cannot_drop_a_refused_token_leaves_the_request_its_refusal(
    mode: Mode, server: ZtHttpsServer, ca: DevCA, client_svid: X509Svid
) -> None:
    """The source's failure is logged, not raised from the request: the caller gets the
    server's 401, and the refused token, which the source hands out again, is not re-sent."""
    source = UnreachableCacheSource()
    server.script("/", INVALID, Reply(200))
    options = {**tls(ca, client_svid), "token_source": source, "audience": "orders"}
    [response] = send(mode, [("GET", server.url("/"))], **options)
    assert response.status_code == 401 and source.invalidated == ["orders"]
    assert [bearer(r) for r in server.requests()] == ["token-1-for-orders"]


def test_a_one_method_token_source_raising_stop_iteration_fails_an_async_request(
    server: ZtHttpsServer, ca: DevCA, client_svid: X509Svid
) -> None:
    # run in a worker thread, a StopIteration cannot be set on the future the request awaits:
    # the request would wait for ever (the loop's handler is told of the TypeError instead)
    class Broken:
        def token(self, audience: str) -> str:
            raise StopIteration

    server.script("/orders", Reply(200))
    problems: list[object] = []

    async def run() -> None:
        options = {**tls(ca, client_svid), "token_source": Broken(), "audience": "orders"}
        async with AsyncClient(**options) as client:
            request = asyncio.ensure_future(client.get(server.url("/orders")))

            def stuck(_: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
                problems.append(context.get("exception"))
                request.cancel()

            asyncio.get_running_loop().set_exception_handler(stuck)
            await request

    with pytest.raises(SourceError, match="token source failed"):
        asyncio.run(run())
    assert problems == []
    assert server.requests() == []
