"""Retries by the client transports, against a real server: what is retried, when, how often."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import socket
import ssl
import threading
import time
from email.utils import formatdate
from typing import Any

import httpx
import pytest

from tests._wait import eventually
from tests._zt_https import Recorded, Reply, ZtHttpsServer
from tests.client.conftest import Mode, send, tls
from zerotrust import X509Svid
from zerotrust.client._httpx_retry import parse_retry_after
from zerotrust.dev import DevCA
from zerotrust.errors import ConfigurationError
from zerotrust.httpx import RETRY_EXTENSION, AsyncClient, Client, RetryEvent, RetryPolicy

pytestmark = pytest.mark.network

UNAVAILABLE = Reply(503, {"Retry-After": "0"}, b"busy")


class Events(list[RetryEvent]):
    def __call__(self, event: RetryEvent) -> None:
        self.append(event)


def fast(events: Events | None = None, **overrides: Any) -> RetryPolicy:
    """A Retry-After above 0.05 s is not waited for; backoff is immediate."""
    settings: dict[str, Any] = {"backoff": 0, "max_retry_after": 0.05, "on_retry": events}
    return RetryPolicy(**{**settings, **overrides})


def options(ca: DevCA, client_svid: X509Svid, policy: RetryPolicy | None) -> dict[str, Any]:
    return {**tls(ca, client_svid), "retry": policy}


def test_get_is_retried_after_503_honouring_retry_after(
    mode: Mode, server: ZtHttpsServer, ca: DevCA, client_svid: X509Svid
) -> None:
    events = Events()
    server.script("/", UNAVAILABLE, Reply(200, body=b"ok"))
    [response] = send(mode, [("GET", server.url("/"))], **options(ca, client_svid, fast(events)))
    assert response.status_code == 200 and response.text == "ok"
    assert server.count() == 2
    [event] = events
    assert (event.status, event.attempt, event.retry_after, event.delay) == (503, 1, 0.0, 0.0)
    assert event.method == "GET" and event.error is None
    assert server.handshakes == 1  # the failed response was drained and closed: connection reused
    assert event.url == server.url("/")


def test_retry_events_name_the_url_without_what_may_hold_secrets(
    mode: Mode, server: ZtHttpsServer, ca: DevCA, client_svid: X509Svid
) -> None:
    events = Events()
    server.script("/charges", UNAVAILABLE, Reply(200))
    url = server.url("/charges?api_key=s3cret#frag").replace("https://", "https://u:pw@")
    send(mode, [("GET", url)], **options(ca, client_svid, fast(events)))
    [event] = events
    assert event.url == server.url("/charges")  # no user information, query or fragment


def test_post_is_not_retried(
    mode: Mode, server: ZtHttpsServer, ca: DevCA, client_svid: X509Svid
) -> None:
    server.script("/", UNAVAILABLE, Reply(200))
    [response] = send(
        mode, [("POST", server.url("/"), {"json": {}})], **options(ca, client_svid, fast())
    )
    assert response.status_code == 503 and response.text == "busy"
    assert server.count() == 1


@pytest.mark.parametrize(
    "marker",
    [{"extensions": {RETRY_EXTENSION: True}}, {"headers": {"Idempotency-Key": "order-7"}}],
    ids=["extension", "idempotency-key"],
)
def test_post_marked_safe_is_retried(
    mode: Mode, server: ZtHttpsServer, ca: DevCA, client_svid: X509Svid, marker: dict[str, Any]
) -> None:
    server.script("/", UNAVAILABLE, Reply(201))
    call = ("POST", server.url("/"), {"content": b"payload", **marker})
    [response] = send(mode, [call], **options(ca, client_svid, fast()))
    assert response.status_code == 201
    assert [r.body for r in server.requests()] == [b"payload", b"payload"]


def test_get_marked_unsafe_is_not_retried(
    mode: Mode, server: ZtHttpsServer, ca: DevCA, client_svid: X509Svid
) -> None:
    server.script("/", UNAVAILABLE, Reply(200))
    call = ("GET", server.url("/"), {"extensions": {RETRY_EXTENSION: False}})
    [response] = send(mode, [call], **options(ca, client_svid, fast()))
    assert response.status_code == 503 and server.count() == 1


@pytest.mark.parametrize("status", [429, 502, 504])
def test_other_retryable_statuses(
    mode: Mode, server: ZtHttpsServer, ca: DevCA, client_svid: X509Svid, status: int
) -> None:
    events = Events()
    server.script("/", Reply(status, {"Retry-After": "0"}), Reply(200))
    [response] = send(mode, [("PUT", server.url("/"))], **options(ca, client_svid, fast(events)))
    assert response.status_code == 200 and server.count() == 2
    assert events[0].retry_after == 0.0 and events[0].delay == 0.0
    with pytest.raises(dataclasses.FrozenInstanceError):  # one callback cannot alter another's
        events[0].delay = 0  # type: ignore[misc]


@pytest.mark.parametrize("status", [401, 403, 404, 500])
def test_other_statuses_are_not_retried(
    mode: Mode, server: ZtHttpsServer, ca: DevCA, client_svid: X509Svid, status: int
) -> None:
    server.script("/", Reply(status), Reply(200))
    [response] = send(mode, [("GET", server.url("/"))], **options(ca, client_svid, fast()))
    assert response.status_code == status and server.count() == 1


def test_attempts_are_bounded_and_the_last_response_is_returned(
    mode: Mode, server: ZtHttpsServer, ca: DevCA, client_svid: X509Svid
) -> None:
    events = Events()
    server.script("/", UNAVAILABLE)
    policy = fast(events, attempts=4)
    [response] = send(mode, [("GET", server.url("/"))], **options(ca, client_svid, policy))
    assert response.status_code == 503 and response.text == "busy"
    assert server.count() == 4 and [e.attempt for e in events] == [1, 2, 3]


def test_a_wait_past_max_elapsed_is_not_started(
    mode: Mode, server: ZtHttpsServer, ca: DevCA, client_svid: X509Svid
) -> None:
    server.script("/", Reply(503, {"Retry-After": "120"}), Reply(200))
    policy = RetryPolicy(max_retry_after=600, max_elapsed=5)
    [response] = send(mode, [("GET", server.url("/"))], **options(ca, client_svid, policy))
    assert response.status_code == 503 and server.count() == 1


def test_http_date_retry_after(
    mode: Mode, server: ZtHttpsServer, ca: DevCA, client_svid: X509Svid
) -> None:
    events = Events()
    server.script(
        "/",
        Reply(503, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}),
        Reply(200),
    )
    [response] = send(mode, [("GET", server.url("/"))], **options(ca, client_svid, fast(events)))
    assert response.status_code == 200
    [past] = events
    assert past.retry_after == 0.0 and past.delay == 0.0


@pytest.mark.parametrize("when", ["in-seconds", "as-a-date"])
def test_a_retry_after_above_max_retry_after_is_returned_not_retried_early(
    mode: Mode, server: ZtHttpsServer, ca: DevCA, client_svid: X509Svid, when: str
) -> None:
    """The server said when it may be asked again: a request is never sent before that, and
    a wait longer than max_retry_after is left to the caller (urllib3 does the same)."""
    events = Events()
    later = "3600" if when == "in-seconds" else formatdate(time.time() + 3600, usegmt=True)
    server.script("/", Reply(503, {"Retry-After": later}, b"busy"), Reply(200))
    policy = fast(events, max_retry_after=1, max_elapsed=30)
    [response] = send(mode, [("GET", server.url("/"))], **options(ca, client_svid, policy))
    assert response.status_code == 503 and response.text == "busy"
    assert server.count() == 1 and events == []


def test_the_wait_is_the_retry_after_the_server_named() -> None:
    policy = RetryPolicy(max_retry_after=5)
    for value, retried in (("2", True), ("5", True), ("6", False)):
        response = httpx.Response(503, headers={"Retry-After": value})
        assert policy.retries_response(httpx.Request("GET", "https://api/"), response) is retried
        assert policy.delay(1, response, jitter=0.5) == float(value)


@pytest.mark.parametrize("value", ["10000000000", "0" + "9" * 30])
def test_a_retry_after_too_long_to_read_is_not_retried_early(value: str) -> None:
    """delay-seconds of more than ten digits ask for centuries: the answer is returned, never
    sent again at once as if the server had named no wait."""
    policy = RetryPolicy(attempts=5, backoff=0)
    response = httpx.Response(503, headers={"Retry-After": value})
    assert policy.retries_response(httpx.Request("GET", "https://api/"), response) is False

    from zerotrust.httpx import AsyncZeroTrustTransport, ZeroTrustTransport

    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(503, headers={"Retry-After": value})

    async def run() -> httpx.Response:
        transport = AsyncZeroTrustTransport(httpx.MockTransport(answer), retry=policy)
        async with httpx.AsyncClient(transport=transport) as client:
            return await client.get("https://api.example/")

    with httpx.Client(transport=ZeroTrustTransport(httpx.MockTransport(answer), retry=policy)) as c:
        assert c.get("https://api.example/").status_code == 503
    assert asyncio.run(run()).status_code == 503
    assert len(seen) == 2  # one attempt each


def test_dropped_connection_is_retried_for_get_only(
    mode: Mode, server: ZtHttpsServer, ca: DevCA, client_svid: X509Svid
) -> None:
    events = Events()
    server.script("/get", Reply(drop=True), Reply(200))
    server.script("/post", Reply(drop=True), Reply(200))
    opts = options(ca, client_svid, fast(events))
    [response] = send(mode, [("GET", server.url("/get"))], **opts)
    assert response.status_code == 200 and server.count("/get") == 2
    assert isinstance(events[0].error, httpx.RemoteProtocolError)
    with pytest.raises(httpx.RemoteProtocolError):
        send(mode, [("POST", server.url("/post"), {"content": b"x"})], **opts)
    assert server.count("/post") == 1


@pytest.mark.parametrize(
    ("trickle", "max_elapsed"),
    [(0.3, 30.0), (0.3, 0.3), (2.0, 30.0)],
    ids=["trickled", "trickled-short-max-elapsed", "stalled"],
)
def test_a_slow_failed_answer_is_not_drained_for_long(
    mode: Mode,
    server: ZtHttpsServer,
    ca: DevCA,
    client_svid: X509Svid,
    trickle: float,
    max_elapsed: float,
) -> None:
    """A failed attempt's body is read to keep its connection, but for a second at most and
    never past max_elapsed (the bound itself: the drain-time test below): a server trickling
    a byte every 0.3 s, or stalling before the first, costs a new connection, and the client
    leaves long before the body's end."""
    busy = Reply(503, {"Retry-After": "0"}, b"x" * 20, trickle=trickle)  # 6 s or more in full
    server.script("/", busy, Reply(200, body=b"ok"))
    policy = fast(max_elapsed=max_elapsed)
    [response] = send(mode, [("GET", server.url("/"))], **options(ca, client_svid, policy))
    assert response.status_code == 200 and response.text == "ok"
    assert server.count() == 2
    assert server.handshakes == 2  # the trickling connection was closed, not kept
    eventually(lambda: server.trickled)  # the server notices at its next byte
    [(sent, whole)] = server.trickled
    assert sent < whole // 2
    # the request's own read timeout is back for the attempts after the drain
    assert response.request.extensions["timeout"]["read"] == 5.0


def test_a_failure_while_the_body_is_read_reaches_the_caller(
    mode: Mode, server: ZtHttpsServer, ca: DevCA, client_svid: X509Svid
) -> None:
    """Retries cover failures before the response headers arrive; the body is streamed to the
    caller, never buffered by the transport, so a connection lost in the middle of it is the
    caller's error (a GET too), not a retry."""
    events = Events()
    server.script("/", Reply(200, body=b"0123456789", cut_after=4), Reply(200, body=b"whole"))
    opts = options(ca, client_svid, fast(events))
    with pytest.raises(httpx.RemoteProtocolError):
        send(mode, [("GET", server.url("/"))], **opts)
    assert server.count() == 1 and events == []

    def streamed() -> tuple[int, bytes]:
        got = bytearray()
        with Client(**opts) as client, client.stream("GET", server.url("/")) as response:
            try:
                for chunk in response.iter_raw():
                    got += chunk
            except httpx.RemoteProtocolError:
                return response.status_code, bytes(got)
        raise AssertionError("the body was read in full")

    async def astreamed() -> tuple[int, bytes]:
        got = bytearray()
        async with AsyncClient(**opts) as client, client.stream("GET", server.url("/")) as response:
            try:
                async for chunk in response.aiter_raw():
                    got += chunk
            except httpx.RemoteProtocolError:
                return response.status_code, bytes(got)
        raise AssertionError("the body was read in full")

    server.script("/", Reply(200, body=b"0123456789", cut_after=4), Reply(200, body=b"whole"))
    # streamed: the status and the first bytes reached the caller before the failure
    assert (streamed() if mode == "sync" else asyncio.run(astreamed())) == (200, b"0123")
    assert server.count() == 2 and events == []


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_connection_refused_then_server_up(
    mode: Mode, ca: DevCA, client_svid: X509Svid, server_svid: X509Svid
) -> None:
    port = _free_port()
    started: list[ZtHttpsServer] = []

    def start_server(event: RetryEvent) -> None:
        assert isinstance(event.error, httpx.ConnectError)
        if not started:
            late = ZtHttpsServer(server_svid, ca.bundle, port=port)
            late.script("/", Reply(200, body=b"late"))
            started.append(late.__enter__())

    policy = fast(on_retry=start_server)
    try:
        url = f"https://localhost:{port}/"
        # POST too: a connection that was never opened carried nothing, so it is retried.
        call = ("POST", url, {"content": b"x"})
        [response] = send(mode, [call], **options(ca, client_svid, policy))
        assert response.status_code == 200 and response.text == "late"
        assert started[0].count() == 1
    finally:
        for late in started:
            late.stop()


def test_refused_connection_exhausts_attempts(mode: Mode, ca: DevCA, client_svid: X509Svid) -> None:
    events = Events()
    url = f"https://localhost:{_free_port()}/"
    with pytest.raises(httpx.ConnectError):
        send(mode, [("GET", url)], **options(ca, client_svid, fast(events, attempts=3)))
    assert len(events) == 2


def test_a_request_marked_not_to_retry_is_tried_once_even_unsent(
    mode: Mode, ca: DevCA, client_svid: X509Svid
) -> None:
    """``{"zerotrust_retry": False}`` turns every retry off, those of a connection that could
    not be opened (nothing sent, retried for any other request) included."""
    events = Events()
    call = ("GET", f"https://localhost:{_free_port()}/", {"extensions": {RETRY_EXTENSION: False}})
    with pytest.raises(httpx.ConnectError):
        send(mode, [call], **options(ca, client_svid, fast(events, attempts=3)))
    assert events == []


def test_refused_identity_is_not_retried(
    mode: Mode, server: ZtHttpsServer, ca: DevCA, client_svid: X509Svid
) -> None:
    events = Events()
    opts = {**options(ca, client_svid, fast(events)), "server_id": "spiffe://example.org/other"}
    with pytest.raises(httpx.ConnectError):
        send(mode, [("GET", server.url("/"))], **opts)
    assert events == [] and server.connection_attempts() == 1


def test_retries_can_be_turned_off(
    mode: Mode, server: ZtHttpsServer, ca: DevCA, client_svid: X509Svid
) -> None:
    server.script("/", UNAVAILABLE, Reply(200))
    [response] = send(mode, [("GET", server.url("/"))], **options(ca, client_svid, None))
    assert response.status_code == 503 and server.count() == 1


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0.0),
        ("120", 120.0),
        (" 7 ", 7.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
        ("Thu, 01 Jan 1970 00:01:40 GMT", 0.0),
        ("-1", None),
        ("1.5", None),
        ("soon", None),
        ("", None),
        ("99999999999999999999", math.inf),
        ("9999999999", 9999999999.0),  # ten digits are read (and capped by the policy)
        ("10000000000", math.inf),  # eleven are longer than any wait
        ("١٢", None),  # non-ASCII digits
    ],
)
def test_parse_retry_after(value: str, expected: float | None) -> None:
    assert parse_retry_after(value, now=2_000_000_000.0) == expected


def test_parse_retry_after_date_in_the_future() -> None:
    assert parse_retry_after("Thu, 01 Jan 1970 00:01:40 GMT", now=40.0) == 60.0
    assert parse_retry_after("Thu, 01 Jan 1970 00:01:40", now=40.0) == 60.0  # taken as GMT


@pytest.mark.skipif(not hasattr(time, "tzset"), reason="needs time.tzset (POSIX)")
def test_a_date_without_a_zone_is_gmt_whatever_the_local_zone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """HTTP dates are GMT (RFC 9110 5.6.7), the obsolete asctime form included, which names
    no zone: a server in another zone reads them as GMT, never as its local time."""
    monkeypatch.setenv("TZ", "ZZZ+05")  # five hours west of UTC
    time.tzset()
    try:
        assert parse_retry_after("Thu Jan  1 00:01:40 1970", now=40.0) == 60.0
        assert parse_retry_after("Thu, 01 Jan 1970 00:01:40 -0000", now=40.0) == 60.0
        assert parse_retry_after("Thu, 01 Jan 1970 00:01:40 GMT", now=40.0) == 60.0
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize(
    "settings",
    [
        {"attempts": 0},
        {"attempts": 2.5},
        {"max_elapsed": 0},
        {"backoff": -1},
        {"max_backoff": float("inf")},
        # a wait is at most a day (time.sleep refuses waits of centuries)
        {"max_backoff": 86400.5},
        {"max_retry_after": 1e12, "max_elapsed": 1e12},
        {"max_retry_after": "1"},
        {"max_elapsed": True},
        {"statuses": {401}},
        {"statuses": {403, 503}},
        {"statuses": {200}},
        {"statuses": {399}},
        {"statuses": {600}},
        {"statuses": {"503"}},
        {"statuses": {503.0}},
        {"on_retry": "log"},
    ],
)
def test_policy_validation(settings: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        RetryPolicy(**settings)


def test_the_longest_waits_are_accepted() -> None:
    policy = RetryPolicy(max_backoff=86400, max_retry_after=86400, max_elapsed=1e12)
    assert (policy.max_backoff, policy.max_retry_after) == (86400.0, 86400.0)
    # a Retry-After past the longest wait is returned, never slept on
    response = httpx.Response(503, headers={"Retry-After": "9999999999"})
    assert policy.retries_response(httpx.Request("GET", "https://api/"), response) is False


def test_policy_defaults_and_frozen_choices() -> None:
    """The documented defaults; the statuses and methods it checked cannot change later (a
    set given stays the caller's: 401 added to it afterwards is not retried)."""
    policy = RetryPolicy()
    assert (policy.attempts, policy.max_elapsed, policy.backoff) == (3, 30.0, 0.1)
    assert (policy.max_backoff, policy.max_retry_after) == (5.0, 30.0)
    assert policy.statuses == {429, 502, 503, 504}
    assert policy.methods == {"GET", "HEAD", "OPTIONS", "PUT", "DELETE"}
    statuses = {503}
    given = RetryPolicy(statuses=statuses)  # type: ignore[arg-type]
    statuses.add(401)
    assert type(given.statuses) is frozenset and given.statuses == {503}
    assert type(given.methods) is frozenset
    with pytest.raises(dataclasses.FrozenInstanceError):
        given.attempts = 10  # type: ignore[misc]
    # the callback is not part of what a policy is: policies differing only in it are equal
    assert RetryPolicy(on_retry=lambda event: None) == RetryPolicy()
    assert RetryPolicy(attempts=1).attempts == 1 and RetryPolicy(attempts=100).attempts == 100
    assert RetryPolicy(statuses=frozenset({400, 599})).statuses == {400, 599}
    with pytest.raises(ConfigurationError, match="attempts must be an int from 1 to 100"):
        RetryPolicy(attempts=101)
    # a wait that ends exactly at max_elapsed is still started; one that ends later is not
    assert policy.give_up(1, 29.0, 1.0) is False
    assert policy.give_up(1, 29.0, 1.5) is True
    assert policy.give_up(3, 0.0, 0.0) is True  # the third attempt was the last


def test_a_cause_chain_that_loops_is_read_once() -> None:
    """Exceptions can be made to name each other as cause and context; such a chain is
    walked once (no hang), and a certificate failure anywhere in it still stops retries."""
    request = httpx.Request("GET", "https://api.example/")
    first, second = httpx.ConnectError("one"), httpx.ConnectError("two")
    first.__cause__, second.__cause__ = second, first
    assert RetryPolicy().retries_error(request, first)
    refused = ssl.SSLCertVerificationError("refused")
    second.__context__ = refused
    refused.__context__ = first
    second.__cause__ = None
    assert RetryPolicy().retries_error(request, first) is False


def test_what_is_retried_after_it_may_have_reached_the_server() -> None:
    """Only transport failures that may be transient are tried again, and only for a request
    whose body can be sent again: a body streamed from an iterator is gone after one try."""
    policy = RetryPolicy()
    get = httpx.Request("GET", "https://api.example/")
    transients = (httpx.ReadError("r"), httpx.WriteTimeout("w"), httpx.RemoteProtocolError("p"))
    for transient in transients:
        assert policy.retries_error(get, transient) is True
    for lasting in (httpx.LocalProtocolError("l"), httpx.UnsupportedProtocol("u"), ValueError()):
        assert policy.retries_error(get, lasting) is False
    unavailable = httpx.Response(503)
    replayable = httpx.Request("PUT", "https://api.example/", content=b"order")
    streamed = httpx.Request("PUT", "https://api.example/", content=iter([b"or", b"der"]))
    assert policy.retries_response(replayable, unavailable) is True
    assert policy.retries_response(streamed, unavailable) is False
    assert policy.retries_error(streamed, httpx.ReadError("r")) is False
    assert policy.retries_error(streamed, httpx.ConnectError("c")) is True  # nothing was sent


def test_policy_backoff_is_bounded() -> None:
    policy = RetryPolicy(backoff=0.5, max_backoff=3)
    assert policy.delay(1, None, 0.999) < 0.5
    assert policy.delay(2, None, 1.0) == 1.0
    assert policy.delay(10, None, 1.0) == 3.0
    assert policy.delay(1000, None, 0.5) == 1.5
    assert RetryPolicy(methods=frozenset({"get"})).methods == {"GET"}
    # durations given as ints are kept as seconds in floats; zero where zero is allowed
    given = RetryPolicy(max_elapsed=7, backoff=0, max_backoff=0, max_retry_after=0)
    kept = (given.max_elapsed, given.backoff, given.max_backoff, given.max_retry_after)
    assert kept == (7.0, 0.0, 0.0, 0.0) and {type(value) for value in kept} == {float}
    assert RetryPolicy(max_backoff=2).max_backoff == 2.0
    with pytest.raises(ConfigurationError, match="max_elapsed must be finite and > 0"):
        RetryPolicy(max_elapsed=0)
    with pytest.raises(ConfigurationError, match="max_backoff must be finite and >= 0"):
        RetryPolicy(max_backoff=-0.5)


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_retries_over_a_transport_that_already_read_the_response(status: int) -> None:
    # httpx.MockTransport (as in most test suites) hands back responses already read: a retry
    # has no body left to drain before the next attempt
    from zerotrust.httpx import AsyncZeroTrustTransport, ZeroTrustTransport

    policy = RetryPolicy(attempts=3, backoff=0.001, max_backoff=0.001)
    seen: list[int] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(len(seen) + 1)
        ok = len(seen) == 3
        return httpx.Response(200 if ok else status, content=b"ok" if ok else b"busy")

    with httpx.Client(transport=ZeroTrustTransport(httpx.MockTransport(answer), retry=policy)) as c:
        response = c.get("https://api.example/")
    assert response.status_code == 200 and response.content == b"ok" and seen == [1, 2, 3]

    async def answer_async(request: httpx.Request) -> httpx.Response:
        return answer(request)

    async def run() -> httpx.Response:
        inner = httpx.MockTransport(answer_async)
        transport = AsyncZeroTrustTransport(inner, retry=policy)
        async with httpx.AsyncClient(transport=transport) as client:
            return await client.get("https://api.example/")

    seen.clear()
    response = asyncio.run(run())
    assert response.status_code == 200 and response.content == b"ok" and seen == [1, 2, 3]


Outcome = int | Exception


def through_both_transports(
    outcomes: list[Outcome],
    *,
    method: str = "GET",
    url: str = "https://api.example/",
    policy: RetryPolicy | None = None,
    **transport_options: Any,
) -> list[tuple[httpx.Response | Exception, int]]:
    """Send one request through ZeroTrustTransport and AsyncZeroTrustTransport around a mock
    transport answering ``outcomes`` in order (a status, or an error it raises); for each,
    what the caller got and how many attempts the mock saw."""
    return [
        _through(mode, outcomes, method, url, policy, transport_options)
        for mode in ("sync", "async")
    ]


def _through(
    mode: Mode,
    outcomes: list[Outcome],
    method: str,
    url: str,
    policy: RetryPolicy | None,
    transport_options: dict[str, Any],
) -> tuple[httpx.Response | Exception, int]:
    from zerotrust.httpx import AsyncZeroTrustTransport, ZeroTrustTransport

    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        outcome = outcomes[min(len(seen), len(outcomes)) - 1]
        if isinstance(outcome, Exception):
            raise outcome
        return httpx.Response(outcome)

    async def run() -> httpx.Response:
        inner = httpx.MockTransport(answer)
        transport = AsyncZeroTrustTransport(inner, retry=policy, **transport_options)
        async with httpx.AsyncClient(transport=transport) as client:
            return await client.request(method, url, content=b"x")

    got: httpx.Response | Exception
    try:
        if mode == "sync":
            inner = httpx.MockTransport(answer)
            transport = ZeroTrustTransport(inner, retry=policy, **transport_options)
            with httpx.Client(transport=transport) as client:
                got = client.request(method, url, content=b"x")
        else:
            got = asyncio.run(run())
    except Exception as exc:  # what the caller gets is the result
        got = exc
    return got, len(seen)


def test_a_retry_that_may_have_reached_the_server_is_not_retried_again() -> None:
    """Every attempt's outcome is judged on its own: a POST whose connection was never opened
    is tried again, but when that attempt fails after it may have been sent (a read timeout),
    it is not sent a third time."""
    policy = RetryPolicy(attempts=5, backoff=0)
    outcomes: list[Outcome] = [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), 200]
    for got, attempts in through_both_transports(outcomes, method="POST", policy=policy):
        assert isinstance(got, httpx.ReadTimeout) and attempts == 2
    # a GET may be sent again after a read timeout
    for got, attempts in through_both_transports(outcomes, method="GET", policy=policy):
        assert isinstance(got, httpx.Response) and got.status_code == 200 and attempts == 3


def test_a_refused_identity_on_a_retry_ends_the_retries() -> None:
    policy = RetryPolicy(attempts=5, backoff=0)
    refused = httpx.ConnectError("certificate verify failed")
    refused.__cause__ = ssl.SSLCertVerificationError("the server is not who it should be")
    for got, attempts in through_both_transports([503, refused, 200], policy=policy):
        assert got is refused and attempts == 2


def test_https_only_refuses_plain_http_before_the_wrapped_transport_sees_it() -> None:
    url = "http://127.0.0.1:15001/x"
    for got, attempts in through_both_transports([200], url=url, https_only=True):
        assert isinstance(got, httpx.UnsupportedProtocol) and attempts == 0
    # the transports alone (a loopback sidecar) are not https-only unless told so
    for got, attempts in through_both_transports([200], url=url):
        assert isinstance(got, httpx.Response) and attempts == 1


def test_the_transports_inject_trace_context_unless_told_not_to() -> None:
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("test")
    cases: list[tuple[dict[str, Any], bool]] = [({}, True), ({"trace_context": False}, False)]
    for options, expected in cases:
        with tracer.start_as_current_span("call"):
            results = through_both_transports([200], **options)
        for got, _ in results:
            assert isinstance(got, httpx.Response)
            assert ("traceparent" in got.request.headers) is expected


def test_a_failed_answer_is_drained_for_a_second_at_most_and_never_past_max_elapsed() -> None:
    """The drain before a wait gets what is left of max_elapsed after that wait, capped at a
    second, and nothing when the wait already ends past it."""
    from types import SimpleNamespace

    from zerotrust.client._httpx_transport import _Plan

    request = httpx.Request("GET", "https://api.example/")

    def drain_time(max_elapsed: float, sleep: float) -> float:
        plan = _Plan(RetryPolicy(max_elapsed=max_elapsed), request)
        return plan.drain_time(SimpleNamespace(upcoming_sleep=sleep))  # type: ignore[arg-type]

    assert drain_time(30.0, 0.0) == 1.0
    assert 0.0 < drain_time(30.0, 29.5) <= 0.5
    assert 0.0 < drain_time(0.5, 0.2) <= 0.3
    assert drain_time(0.5, 0.6) == 0.0


def test_a_read_timeout_before_the_headers_is_retried_for_get_only(
    mode: Mode, server: ZtHttpsServer, ca: DevCA, client_svid: X509Svid
) -> None:
    """A server that accepted the request but has not answered within the read timeout: a
    GET is sent again (on a new connection), a POST is not and its caller gets ReadTimeout."""
    release, lock = threading.Event(), threading.Lock()
    seen: dict[str, int] = {}

    def slow_first(record: Recorded) -> Reply:
        with lock:
            seen[record.path] = seen.get(record.path, 0) + 1
            first = seen[record.path] == 1
        if first:
            release.wait(30)  # until the test ends: the client gave up long before
        return Reply(200, body=b"ok")

    server.handle("/get", slow_first)
    server.handle("/post", slow_first)
    events = Events()
    opts = {**options(ca, client_svid, fast(events)), "timeout": httpx.Timeout(5.0, read=1.0)}
    try:
        [response] = send(mode, [("GET", server.url("/get"))], **opts)
        assert response.status_code == 200 and response.text == "ok"
        assert server.count("/get") == 2
        [event] = events
        assert isinstance(event.error, httpx.ReadTimeout) and event.status is None
        with pytest.raises(httpx.ReadTimeout):
            send(mode, [("POST", server.url("/post"), {"content": b"x"})], **opts)
        assert server.count("/post") == 1 and len(events) == 1
    finally:
        release.set()


def test_cancelling_a_task_waiting_to_retry_sends_nothing_more(
    server: ZtHttpsServer, ca: DevCA, client_svid: X509Svid
) -> None:
    """A task cancelled while it waits for its next attempt gets CancelledError at once; no
    other attempt is sent, and the failed answer, read before the wait, leaves its connection
    to the next request."""
    server.script("/busy", Reply(503, {"Retry-After": "20"}, b"busy"))
    server.script("/", Reply(200))

    async def run() -> None:
        waiting = asyncio.Event()
        policy = RetryPolicy(on_retry=lambda event: waiting.set())
        async with AsyncClient(**options(ca, client_svid, policy)) as client:
            task = asyncio.create_task(client.get(server.url("/busy")))
            await waiting.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert (await client.get(server.url("/"))).status_code == 200

    asyncio.run(run())
    assert server.count("/busy") == 1
    assert server.handshakes == 1


def test_a_retry_due_after_the_client_closed_is_not_sent(
    server: ZtHttpsServer, ca: DevCA, client_svid: X509Svid
) -> None:
    """Closing the client while a request waited for its retry did not stop the retry: it
    was sent on a new connection, which then stayed open in the closed client's pool."""
    later = Reply(503, {"Retry-After": "1"}, b"busy")  # a wait the closing task runs in
    server.script("/", UNAVAILABLE, later, Reply(200))  # the retries are never sent
    closed: list[Client] = []

    def close_now(event: RetryEvent) -> None:  # while the request waits for its retry
        closed[0].close()

    client = Client(**options(ca, client_svid, fast(on_retry=close_now)))
    closed.append(client)
    with pytest.raises(RuntimeError, match="client has been closed"):
        client.get(server.url("/"))
    assert server.count() == 1

    async def run() -> None:
        waiting = asyncio.Event()
        aclient = AsyncClient(
            **options(
                ca, client_svid, fast(on_retry=lambda event: waiting.set(), max_retry_after=5)
            )
        )

        async def close_when_waiting() -> None:
            await waiting.wait()
            await aclient.aclose()

        closer = asyncio.ensure_future(close_when_waiting())
        with pytest.raises(RuntimeError, match="client has been closed"):
            await aclient.get(server.url("/"))
        await closer

    asyncio.run(run())
    assert server.count() == 2
