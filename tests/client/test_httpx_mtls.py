"""Client/AsyncClient over real mTLS: server authorization, keep-alive, rotation, build errors."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import httpx
import pytest

from tests._zt_https import Reply, ZtHttpsServer
from tests.client.conftest import CLIENT_ID, SERVER_ID, CountingSource, Mode, send, tls
from zerotrust import PeerRejected, RotatingSvidSource, X509Svid, match, server_ssl_context
from zerotrust.dev import DevCA
from zerotrust.errors import ConfigurationError
from zerotrust.httpx import AsyncClient, Client, RetryPolicy, identity_refusal
from zerotrust.x509.sslcontext import client_ssl_context

pytestmark = pytest.mark.network


def test_right_server_is_accepted(
    mode: Mode, server: ZtHttpsServer, ca: DevCA, client_svid: X509Svid
) -> None:
    server.script("/hello", Reply(200, {"Content-Type": "text/plain"}, b"hi"))
    [response] = send(mode, [("GET", server.url("/hello"))], **tls(ca, client_svid))
    assert response.status_code == 200 and response.text == "hi"
    [seen] = server.requests("/hello")
    assert seen.client_id == CLIENT_ID


def test_authorizer_matcher_is_accepted(
    mode: Mode, server: ZtHttpsServer, ca: DevCA, client_svid: X509Svid
) -> None:
    server.script("/", Reply(204))
    [response] = send(
        mode,
        [("GET", server.url("/"))],
        svid=client_svid,
        bundles=ca.bundle,
        authorizer=match.path_prefix("example.org", "/ns/shop"),
    )
    assert response.status_code == 204


def test_wrong_server_identity_is_refused(
    mode: Mode, server: ZtHttpsServer, ca: DevCA, client_svid: X509Svid
) -> None:
    server.script("/", Reply(200))
    options = {**tls(ca, client_svid), "server_id": "spiffe://example.org/ns/shop/sa/payments"}
    with pytest.raises(httpx.ConnectError) as caught:
        send(mode, [("GET", server.url("/"))], **options)
    rejected = identity_refusal(caught.value)
    assert isinstance(rejected, PeerRejected)
    assert rejected.reason == "peer_not_authorized"
    assert server.count() == 0  # nothing was sent, and a refused identity is not retried


def test_other_errors_are_not_identity_refusals(
    mode: Mode, ca: DevCA, client_svid: X509Svid
) -> None:
    with ZtHttpsServer(ca.issue_svid(SERVER_ID), ca.bundle) as gone:
        url = gone.url("/")
    with pytest.raises(httpx.ConnectError) as caught:
        send(mode, [("GET", url)], retry=None, **tls(ca, client_svid))
    assert identity_refusal(caught.value) is None


def test_server_from_another_trust_domain_is_refused(
    mode: Mode, ca: DevCA, other_ca: DevCA, client_svid: X509Svid
) -> None:
    foreign = other_ca.issue_svid("spiffe://other.org/ns/shop/sa/api")
    bundles = ca.bundle.get_bundle_set().with_bundle(other_ca.bundle)
    with (
        ZtHttpsServer(foreign, bundles, authorizer=match.member_of("example.org")) as server,
        pytest.raises(httpx.ConnectError) as caught,
    ):
        send(mode, [("GET", server.url("/"))], **tls(ca, client_svid))
    refusal = identity_refusal(caught.value)
    assert refusal is not None and not isinstance(refusal, PeerRejected)  # untrusted chain


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "server's identity must be checked"),
        ({"server_id": SERVER_ID, "authorizer": match.any()}, "not both"),
        ({"server_id": SERVER_ID, "svid": None}, "svid and bundles"),
        ({"server_id": SERVER_ID, "verify": False}, "verify"),
        ({"server_id": SERVER_ID, "transport": httpx.HTTPTransport()}, "transport"),
        ({"server_id": SERVER_ID, "audience": "x"}, "need a token_source"),
        ({"server_id": SERVER_ID, "retry": 3}, "RetryPolicy"),
    ],
)
def test_build_time_configuration_errors(
    ca: DevCA, client_svid: X509Svid, options: dict[str, object], message: str
) -> None:
    for factory in (Client, AsyncClient):
        kwargs = {"svid": client_svid, "bundles": ca.bundle, **options}
        with pytest.raises(ConfigurationError, match=message):
            factory(**kwargs)  # type: ignore[arg-type]
    transport = options.get("transport")
    if isinstance(transport, httpx.HTTPTransport):
        transport.close()


def test_ssl_context_may_be_shared(
    mode: Mode, server: ZtHttpsServer, ca: DevCA, client_svid: X509Svid
) -> None:
    context = client_ssl_context(client_svid, ca.bundle, authorizer=match.exact(SERVER_ID))
    server.script("/", Reply(200))
    [response] = send(mode, [("GET", server.url("/"))], ssl_context=context)
    assert response.status_code == 200
    with pytest.raises(ConfigurationError, match="either ssl_context"):
        Client(ssl_context=context, server_id=SERVER_ID)


def test_connections_are_kept_alive(
    mode: Mode, server: ZtHttpsServer, ca: DevCA, client_svid: X509Svid
) -> None:
    server.script("/ping", Reply(200, body=b"pong"))
    responses = send(mode, [("GET", server.url("/ping"))] * 20, **tls(ca, client_svid))
    assert all(r.status_code == 200 for r in responses)
    assert server.handshakes == 1
    assert {r.connection for r in server.requests("/ping")} == {1}


def test_rotated_client_svid_reaches_the_next_connection(
    mode: Mode, server: ZtHttpsServer, ca: DevCA
) -> None:
    first = ca.issue_svid(CLIENT_ID)
    second = ca.issue_svid(CLIENT_ID)
    source = RotatingSvidSource(first)
    # The server closes the connection after each reply, so every request opens a new one.
    server.script("/", Reply(200, {"Connection": "close"}))
    options: dict[str, Any] = {"svid": source, "bundles": ca.bundle, "server_id": SERVER_ID}

    if mode == "sync":
        with Client(**options) as client:
            assert client.get(server.url("/")).status_code == 200
            source.set(second)
            assert client.get(server.url("/")).status_code == 200
    else:

        async def run() -> None:
            async with AsyncClient(**options) as client:
                assert (await client.get(server.url("/"))).status_code == 200
                source.set(second)
                assert (await client.get(server.url("/"))).status_code == 200

        asyncio.run(run())
    seen = server.requests("/")
    assert [r.client_fingerprint for r in seen] == [first.fingerprint, second.fingerprint]
    assert server.handshakes == 2


def test_concurrent_requests_share_a_small_pool(
    server: ZtHttpsServer, ca: DevCA, client_svid: X509Svid
) -> None:
    server.script("/", Reply(200))
    errors: list[BaseException] = []
    with Client(**tls(ca, client_svid), limits=httpx.Limits(max_connections=4)) as client:

        def worker() -> None:
            try:
                for _ in range(10):
                    assert client.get(server.url("/")).status_code == 200
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert not errors
    assert server.count("/") == 40
    assert server.handshakes <= 4


def test_nothing_is_sent_in_clear(
    mode: Mode, server: ZtHttpsServer, ca: DevCA, client_svid: X509Svid
) -> None:
    """A zero-trust client speaks https only: an http:// URL, given (loopback or not) or a
    redirect's (a 307 would carry the POST body on), fails with one error before anything is
    sent to it, and a URL given is refused before the token source is asked for a token."""
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    plain = f"http://127.0.0.1:{listener.getsockname()[1]}/charges"
    server.script("/moved", Reply(307, {"Location": plain}))
    tokens = CountingSource()
    options = {
        **tls(ca, client_svid),
        "token_source": tokens.source,
        "audience": "payments",
        "follow_redirects": True,
    }
    try:
        for url in (plain, "http://payments.internal/charges"):
            with pytest.raises(httpx.UnsupportedProtocol, match="https only"):
                send(mode, [("POST", url, {"json": {"amount": 5}})], **options)
        assert tokens.minted == []
        with pytest.raises(httpx.UnsupportedProtocol, match="https only"):
            send(mode, [("POST", server.url("/moved"), {"json": {"amount": 5}})], **options)
        with pytest.raises(TimeoutError):
            listener.accept()  # nobody connected
    finally:
        listener.close()
    assert len(server.requests("/moved")) == 1


@pytest.mark.parametrize("keep_alive", [False, True], ids=["new-connection", "pooled"])
def test_the_servers_identity_is_checked_on_every_new_connection(
    mode: Mode, ca: DevCA, client_svid: X509Svid, keep_alive: bool
) -> None:
    """A server accepted once is checked again on the next connection: one that rotated to
    another SPIFFE ID is refused there, while a connection opened before keeps working
    until it closes."""
    source = RotatingSvidSource(ca.issue_svid(SERVER_ID, dns_names=["localhost"]))
    with ZtHttpsServer(source, ca.bundle) as server:
        server.script("/", Reply(200, {} if keep_alive else {"Connection": "close"}))
        other = ca.issue_svid("spiffe://example.org/ns/shop/sa/impostor", dns_names=["localhost"])

        outcomes: list[int | BaseException] = []
        if mode == "sync":
            with Client(**tls(ca, client_svid)) as client:
                outcomes.append(client.get(server.url("/")).status_code)
                source.set(other)
                try:
                    outcomes.append(client.get(server.url("/")).status_code)
                except httpx.ConnectError as exc:
                    outcomes.append(exc)
        else:

            async def run() -> None:
                async with AsyncClient(**tls(ca, client_svid)) as client:
                    outcomes.append((await client.get(server.url("/"))).status_code)
                    source.set(other)
                    try:
                        outcomes.append((await client.get(server.url("/"))).status_code)
                    except httpx.ConnectError as exc:
                        outcomes.append(exc)

            asyncio.run(run())
        first, second = outcomes
        assert first == 200
        if keep_alive:
            assert second == 200 and server.handshakes == 1
        else:
            assert isinstance(second, httpx.ConnectError)
            refusal = identity_refusal(second)
            assert isinstance(refusal, PeerRejected) and refusal.reason == "peer_not_authorized"
            assert server.count() == 1  # nothing reached the impostor, and it was not retried


def test_proxy_settings_of_the_environment_are_never_used(
    mode: Mode,
    server: ZtHttpsServer,
    ca: DevCA,
    client_svid: X509Svid,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A proxy would end the mTLS session short of the server: even with trust_env=True,
    HTTPS_PROXY and ALL_PROXY are ignored and the client connects straight to the server."""
    with socket.create_server(("127.0.0.1", 0)) as proxy:
        address = f"http://127.0.0.1:{proxy.getsockname()[1]}"
        for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.setenv(name, address)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        server.script("/", Reply(200))
        [response] = send(mode, [("GET", server.url("/"))], **tls(ca, client_svid), trust_env=True)
        assert response.status_code == 200 and server.count() == 1
        proxy.setblocking(False)
        with pytest.raises(BlockingIOError):  # no connection ever reached the proxy
            proxy.accept()


def test_http2_with_the_zerotrust_context(mode: Mode, ca: DevCA, client_svid: X509Svid) -> None:
    """http2=True negotiates HTTP/2 (ALPN) on the zerotrust context: the server sees the
    client's SVID, a 503 is retried, and a server presenting another
    SPIFFE ID is refused before anything is sent."""
    from tests.adapters.asgi._servers import hypercorn_server

    seen: list[tuple[str, str, str]] = []

    async def app(scope: dict[str, Any], receive: Any, send_event: Any) -> None:
        if scope["type"] != "http":
            return
        peer = scope["extensions"]["tls"]["zerotrust_peer"]
        seen.append((scope["path"], scope["http_version"], str(peer.spiffe_id)))
        busy = scope["path"] == "/busy" and len(seen) == 1
        status, headers = (503, [(b"retry-after", b"0")]) if busy else (200, [])
        await send_event({"type": "http.response.start", "status": status, "headers": headers})
        await send_event({"type": "http.response.body", "body": b"ok"})

    context = server_ssl_context(
        ca.issue_svid(SERVER_ID, dns_names=["localhost"]),
        ca.bundle,
        authorizer=match.member_of("example.org"),
    )
    with hypercorn_server(app, context) as port:
        url = f"https://localhost:{port}/busy"
        policy = RetryPolicy(backoff=0)
        [response] = send(mode, [("GET", url)], **tls(ca, client_svid), http2=True, retry=policy)
        assert response.status_code == 200 and response.http_version == "HTTP/2"
        assert seen == [("/busy", "2", CLIENT_ID), ("/busy", "2", CLIENT_ID)]
        wrong = {**tls(ca, client_svid), "server_id": "spiffe://example.org/ns/shop/sa/other"}
        with pytest.raises(httpx.ConnectError) as caught:
            send(mode, [("GET", url)], **wrong, http2=True)
        assert isinstance(identity_refusal(caught.value), PeerRejected)
        assert len(seen) == 2
