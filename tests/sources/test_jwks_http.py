"""RemoteJWKSource against a real loopback HTTPS server, with a fixed clock."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import gc
import gzip
import json
import logging
import secrets
import ssl
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests._fork import in_child
from tests._https import HttpsServer, Route, json_route
from tests._sockets import close_listener
from zerotrust import FixedClock, match
from zerotrust.dev import DevCA
from zerotrust.errors import ConfigurationError, KeysUnavailable, UnknownKey
from zerotrust.sources.jwks_http import RemoteJWKSource
from zerotrust.tokens import JWKSEndpoint, KeyRing, PrivateJWK, TokenIssuer, TokenVerifier
from zerotrust.x509 import client_ssl_context

pytestmark = pytest.mark.network

KEY_A = PrivateJWK.generate("ES256", kid="a")
KEY_B = PrivateJWK.generate("ES256", kid="b")
GOOD_BODY = b'{"keys": [' + json.dumps(KEY_A.public().to_public_dict()).encode() + b"]}"


def jwks(*keys: PrivateJWK) -> dict[str, Any]:
    return {"keys": [key.public().to_public_dict() for key in keys]}


@pytest.fixture
def server(ca: DevCA) -> Iterator[HttpsServer]:
    with HttpsServer(ca) as running:
        running.route("/jwks", json_route(jwks(KEY_A)))
        yield running


def make(server: HttpsServer, clock: FixedClock, **options: Any) -> RemoteJWKSource:
    return RemoteJWKSource(
        server.url("/jwks"), verify=server.client_context, clock=clock, **options
    )


def test_constructor_does_no_io_and_first_use_fetches(
    server: HttpsServer, clock: FixedClock
) -> None:
    with make(server, clock) as source:
        assert server.count() == 0
        keys = source.get_keys()
        assert keys.get("a") == KEY_A.public()
        assert source.get_keys() is keys
        assert server.count("/jwks") == 1
        request = server.requests("/jwks")[0]
        assert "json" in request.headers["accept"]


def test_prefetch(server: HttpsServer, clock: FixedClock) -> None:
    with make(server, clock) as source:
        assert "a" in source.prefetch()
        assert server.count() == 1


@pytest.mark.parametrize(
    ("headers", "ttl"),
    [
        ({}, 300),
        ({"Cache-Control": "public, max-age=600"}, 600),
        ({"Cache-Control": "max-age=600", "Age": "100"}, 500),
        ({"Cache-Control": "max-age=5"}, 60),
        ({"Cache-Control": "max-age=99999999"}, 86400),
        # RFC 9111 1.2.2: a delta-seconds too large to hold is 2147483648, not unreadable
        ({"Cache-Control": "max-age=99999999999"}, 86400),
        ({"Cache-Control": "max-age=" + "9" * 60}, 86400),
        ({"Cache-Control": "max-age=0000000000000600"}, 600),
        ({"Cache-Control": "max-age=600", "Age": "99999999999"}, 60),
        ({"Cache-Control": "max-age=-600"}, 60),
        ({"Cache-Control": "max-age=6e9"}, 60),
        ({"Cache-Control": "no-store"}, 60),
        ({"Cache-Control": "no-cache, max-age=600"}, 60),
        ({"Cache-Control": "max-age=soon"}, 60),
        ({"Expires": "0"}, 60),
        # RFC 9111 4.2.1: a directive given twice with different values makes the response
        # stale (a proxy appending its own line must not stretch a 60 s set to a day)
        ({"Cache-Control": "max-age=60, max-age=31536000"}, 60),
        ({"Cache-Control": "max-age=600, max-age=600"}, 600),
        # a year no calendar holds: unreadable, not a crash (the source failed on every call)
        ({"Expires": "Mon, 01 Jan 99999999999999999999 00:00:00 GMT"}, 60),
    ],
)
def test_cache_control_ttl_is_clamped(
    server: HttpsServer, clock: FixedClock, headers: dict[str, str], ttl: int
) -> None:
    server.route("/jwks", json_route(jwks(KEY_A), headers=headers))
    with make(server, clock) as source:
        source.get_keys()
        status = source.status()
        assert status.expires_at is not None and status.last_success is not None
        assert (status.expires_at - status.last_success).total_seconds() == ttl


def test_expires_header_is_relative_to_the_server_date(
    server: HttpsServer, clock: FixedClock
) -> None:
    expires = email.utils.formatdate(time.time() + 900, usegmt=True)
    server.route("/jwks", json_route(jwks(KEY_A), headers={"Expires": expires}))
    with make(server, clock) as source:
        source.get_keys()
        status = source.status()
        assert status.expires_at is not None and status.last_success is not None
        assert 897 <= (status.expires_at - status.last_success).total_seconds() <= 901


def test_refetches_after_expiry_and_keeps_the_same_set_object(
    server: HttpsServer, clock: FixedClock
) -> None:
    with make(server, clock, refresh_ahead=0) as source:
        first = source.get_keys()
        clock.advance(299)
        assert source.get_keys() is first
        assert server.count() == 1
        clock.advance(2)
        assert source.get_keys() is first  # expired: served while one refresh runs behind
        wait_for_fetches(source, 2)
        assert source.get_keys() is first  # unchanged keys: same object
        assert server.count() == 2
        server.route("/jwks", json_route(jwks(KEY_A, KEY_B)))
        clock.advance(301)
        assert source.get_keys() is first
        wait_for_fetches(source, 3)
        assert set(source.get_keys()) == {KEY_A.public(), KEY_B.public()}


def test_rotation_is_picked_up_on_unknown_kid(server: HttpsServer, clock: FixedClock) -> None:
    issuer = TokenIssuer(KEY_B, issuer="https://issuer.example", clock=clock)
    with make(server, clock) as source:
        verifier = TokenVerifier(
            issuer="https://issuer.example",
            audience="api",
            keys=source,
            algorithms=["ES256"],
            clock=clock,
        )
        source.get_keys()
        server.route("/jwks", json_route(jwks(KEY_A, KEY_B)))
        token = issuer.issue(subject="svc", audience="api")
        assert verifier.verify(token).subject == "svc"
        assert server.count() == 2


def test_cve_2026_48524_unknown_kid_flood_costs_one_request_per_cooldown(
    server: HttpsServer, clock: FixedClock
) -> None:
    with make(server, clock, unknown_kid_cooldown=30) as source:
        known = source.get_keys()
        assert server.count() == 1
        for _ in range(1000):
            assert source.get_keys(missing_kid=secrets.token_hex(8)) is known
        assert server.count() == 2  # one refetch for the whole flood
        clock.advance(29)
        for _ in range(100):
            source.get_keys(missing_kid=secrets.token_hex(8))
        assert server.count() == 2
        clock.advance(2)
        for _ in range(1000):
            source.get_keys(missing_kid=secrets.token_hex(8))
        assert server.count() == 3  # exactly one more once the cooldown has passed


def test_cve_2026_48524_unknown_kid_flood_through_the_verifier(
    server: HttpsServer, clock: FixedClock
) -> None:
    with make(server, clock) as source:
        verifier = TokenVerifier(
            issuer="https://issuer.example",
            audience="api",
            keys=source,
            algorithms=["ES256"],
            clock=clock,
        )
        for index in range(200):
            rogue = TokenIssuer(
                KEY_B.with_kid(f"rogue-{index}"), issuer="https://issuer.example", clock=clock
            )
            with pytest.raises(UnknownKey):
                verifier.verify(rogue.issue(subject="x", audience="api"))
        assert server.count() == 2  # the first fetch, plus one refetch per cooldown


def test_negative_cache_stops_refetching_for_a_kid_until_it_expires(
    server: HttpsServer, clock: FixedClock
) -> None:
    with make(server, clock, unknown_kid_cooldown=1, negative_cache_ttl=100) as source:
        source.get_keys()
        source.get_keys(missing_kid="ghost")
        assert server.count() == 2
        clock.advance(50)
        source.get_keys(missing_kid="ghost")  # cooldown over, but remembered as missing
        assert server.count() == 2
        clock.advance(51)
        source.get_keys(missing_kid="ghost")
        assert server.count() == 3


def test_cve_2026_48524_fetch_failure_does_not_wipe_cache(
    server: HttpsServer, clock: FixedClock
) -> None:
    with make(server, clock, unknown_kid_cooldown=0, retry_interval=0) as source:
        keys = source.get_keys()
        server.route("/jwks", Route(status=500, body=b"upstream exploded"))
        # A refetch for an unknown kid fails: the known keys keep working.
        assert source.get_keys(missing_kid="new") is keys
        # So does a refresh after expiry.
        clock.advance(301)
        assert source.get_keys() is keys
        wait_for_fetches(source, 3)
        assert server.count() == 3
        status = source.status()
        assert status.key_ids == ("a",) and status.stale
        assert status.last_error == "JWKS: HTTP 500"


FAILURES = {
    "http-500": Route(status=500, body=b"secret internal detail"),
    "timeout": Route(body=GOOD_BODY, delay=2.0),
    "garbage-json": Route(body=b"{not json secret internal detail"),
    "not-an-object": Route(body=b"[1, 2, 3]"),
    "oversized": Route(body=b'{"keys": []}' + b" " * (1 << 20)),
    "oversized-stream": Route(stream_bytes=4 << 20),
    "redirect": Route(redirect="https://localhost:1/jwks"),
    "only-oct-keys": json_route({"keys": [{"kty": "oct", "k": "c2VjcmV0c2VjcmV0", "kid": "s"}]}),
    "no-keys": json_route({"keys": []}),
}


@pytest.mark.parametrize("failure", sorted(FAILURES))
def test_failures_serve_stale_keys_then_keys_unavailable_after_max_stale(
    server: HttpsServer, clock: FixedClock, failure: str
) -> None:
    with make(server, clock, timeout=0.3, max_stale=600, retry_interval=10) as source:
        keys = source.get_keys()
        server.route("/jwks", FAILURES[failure])
        clock.advance(301)  # expired: served while a background refresh fails
        assert source.get_keys() is keys
        wait_for_fetches(source, 2)
        assert source.get_keys() is keys
        status = source.status()
        assert status.stale and status.last_error is not None
        assert "secret" not in status.last_error and "internal" not in status.last_error
        clock.advance(5)  # within retry_interval: no new request
        assert source.get_keys() is keys
        assert server.count() == 2
        clock.advance(600)  # 305 s past expiry + 600 max_stale
        with pytest.raises(KeysUnavailable) as caught:
            source.get_keys()
        assert server.count() == 3
        assert "secret" not in str(caught.value)


def test_oct_keys_are_dropped_from_a_mixed_set(server: HttpsServer, clock: FixedClock) -> None:
    mixed = jwks(KEY_A)
    mixed["keys"].append({"kty": "oct", "k": "c2VjcmV0c2VjcmV0c2VjcmV0", "kid": "hmac"})
    server.route("/jwks", json_route(mixed))
    with make(server, clock) as source:
        keys = source.get_keys()
        assert len(keys) == 1 and "hmac" not in keys
        assert "oct" in keys.skipped[0].reason


def rsa_jwk(bits: int, e: int, kid: str) -> dict[str, str]:
    """An RSA JWK of numbers alone: the modulus 2**(bits-1) + 1 (no key is generated)."""
    n, size = (1 << (bits - 1)) | 1, (bits + 7) // 8
    e_bytes = e.to_bytes((e.bit_length() + 7) // 8, "big")
    encode = lambda raw: base64.urlsafe_b64encode(raw).rstrip(b"=").decode()  # noqa: E731
    return {"kty": "RSA", "kid": kid, "n": encode(n.to_bytes(size, "big")), "e": encode(e_bytes)}


def test_rsa_keys_out_of_bounds_are_dropped_from_a_set(
    server: HttpsServer, clock: FixedClock
) -> None:
    """Over 8192 bits or with an exponent over 2**32, a published RSA key is unusable: it is
    skipped as any other, and a set of nothing else is no key set."""
    mixed = jwks(KEY_A)
    mixed["keys"] += [rsa_jwk(8193, 65537, "large"), rsa_jwk(2048, (1 << 64) - 1, "exponent")]
    server.route("/jwks", json_route(mixed))
    with make(server, clock) as source:
        keys = source.get_keys()
        assert [key.kid for key in keys] == ["a"]
        assert [s.kid for s in keys.skipped] == ["large", "exponent"]
    server.route("/jwks", json_route({"keys": mixed["keys"][1:]}))
    with make(server, clock) as source, pytest.raises(KeysUnavailable, match="no usable keys"):
        source.get_keys()


def test_cold_cache_failure_raises_and_backs_off(server: HttpsServer, clock: FixedClock) -> None:
    server.route("/jwks", Route(status=503))
    with make(server, clock, retry_interval=5) as source:
        with pytest.raises(KeysUnavailable, match="HTTP 503"):
            source.get_keys()
        with pytest.raises(KeysUnavailable):
            source.get_keys()
        assert server.count() == 1
        server.route("/jwks", json_route(jwks(KEY_A)))
        clock.advance(5)
        assert "a" in source.get_keys()
        assert source.status().last_error is None


def test_verify_accepts_a_ca_file(
    server: HttpsServer, clock: FixedClock, ca: DevCA, tmp_path: Path
) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(ca.bundle.to_pem())
    with RemoteJWKSource(server.url("/jwks"), verify=str(bundle), clock=clock) as source:
        assert "a" in source.get_keys()
    # distributions' bundles name each authority in a comment, not always in ASCII
    commented = tmp_path / "commented.pem"
    commented.write_bytes("# Főtanúsítvány\n".encode() + ca.bundle.to_pem())
    with RemoteJWKSource(server.url("/jwks"), verify=str(commented), clock=clock) as source:
        assert "a" in source.get_keys()
    with pytest.raises(ConfigurationError, match="CA file"):
        RemoteJWKSource(server.url("/jwks"), verify=str(tmp_path / "missing.pem"))
    (tmp_path / "empty.pem").write_text("# nothing here\n")
    with pytest.raises(ConfigurationError, match="no PEM certificate"):
        RemoteJWKSource(server.url("/jwks"), verify=str(tmp_path / "empty.pem"))


def test_a_zerotrust_client_context_checks_the_key_server_s_spiffe_id(
    server: HttpsServer, clock: FixedClock, ca: DevCA
) -> None:
    # it checks no host name (check_hostname is off) but the server's SPIFFE ID, after the
    # handshake: taken as verify=, and it decides
    def context(expected: str) -> ssl.SSLContext:
        return client_ssl_context(None, ca.bundle, authorizer=match.exact(expected))

    right = context("spiffe://example.org/test-server")
    assert right.check_hostname is False
    with RemoteJWKSource(server.url("/jwks"), verify=right, clock=clock) as source:
        assert "a" in source.get_keys()
    wrong = context("spiffe://example.org/other")
    with (
        RemoteJWKSource(server.url("/jwks"), verify=wrong, clock=clock) as source,
        pytest.raises(KeysUnavailable),
    ):
        source.get_keys()
    with (
        RemoteJWKSource(server.url("/jwks"), verify=wrong, clock=clock) as source,
        pytest.raises(KeysUnavailable),
    ):
        asyncio.run(source.get_keys_async())
    with RemoteJWKSource(server.url("/jwks"), verify=right, clock=clock) as source:
        assert "a" in asyncio.run(source.get_keys_async())
    assert server.count() == 2  # one fetch each from the right server, sync and async


def test_a_finished_fetch_leaves_no_deadline_timer_behind(
    server: HttpsServer, clock: FixedClock
) -> None:
    # the whole-exchange deadline is a timer thread; one left running per fetch would live
    # for twice the timeout (a minute here) after every refresh
    before = set(threading.enumerate())
    with make(server, clock, timeout=30) as source:
        assert "a" in source.get_keys()
        started = [thread for thread in threading.enumerate() if thread not in before]
    for thread in started:
        thread.join(timeout=10)
    assert [thread for thread in started if thread.is_alive()] == []


def test_async_callers_are_not_blocked_by_a_sync_fetch(
    server: HttpsServer, clock: FixedClock
) -> None:
    server.route("/jwks", json_route(jwks(KEY_A), delay=0.5))
    with make(server, clock) as source:
        fetching = threading.Thread(target=source.get_keys)
        fetching.start()
        wait_for(lambda: server.count() == 1)

        async def main() -> float:
            task = asyncio.create_task(source.get_keys_async())
            started = time.monotonic()
            await asyncio.sleep(0.05)
            elapsed = time.monotonic() - started
            await task
            return elapsed

        assert asyncio.run(main()) < 0.3  # the loop kept running while the sync fetch ran
        fetching.join(5)


def test_untrusted_server_certificate(server: HttpsServer, clock: FixedClock) -> None:
    stranger = DevCA.create("stranger.org")
    trusts_stranger = ssl.create_default_context(cadata=stranger.bundle.to_pem().decode())
    source = RemoteJWKSource(server.url("/jwks"), verify=trusts_stranger)
    with source, pytest.raises(KeysUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        source.get_keys()


def test_100_concurrent_threads_on_a_cold_cache_cost_one_request(
    server: HttpsServer, clock: FixedClock
) -> None:
    server.route("/jwks", json_route(jwks(KEY_A), delay=0.3))
    results: list[object] = []
    with make(server, clock) as source:
        barrier = threading.Barrier(100)

        def verify() -> None:
            barrier.wait()
            results.append(source.get_keys())

        threads = [threading.Thread(target=verify) for _ in range(100)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    assert server.count() == 1
    assert len(results) == 100 and all(r is results[0] for r in results)


def test_100_concurrent_tasks_on_a_cold_cache_cost_one_request(
    server: HttpsServer, clock: FixedClock
) -> None:
    server.route("/jwks", json_route(jwks(KEY_A), delay=0.3))
    source = make(server, clock)

    async def main() -> list[object]:
        return list(await asyncio.gather(*(source.get_keys_async() for _ in range(100))))

    results = asyncio.run(main())
    assert server.count() == 1
    assert all(r is results[0] for r in results)


def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def wait_for_fetches(source: RemoteJWKSource, count: int) -> None:
    """Until ``count`` fetches have ended (a background refresh has recorded its outcome)."""
    wait_for(lambda: source.status().fetch_count >= count)
    assert source.status().fetch_count == count


def test_refresh_ahead_happens_in_the_background(server: HttpsServer, clock: FixedClock) -> None:
    with make(server, clock, refresh_ahead=0.1) as source:
        old = source.get_keys()
        server.route("/jwks", json_route(jwks(KEY_A, KEY_B), delay=0.5))
        clock.advance(269)  # 300 s TTL: the last 30 s are the refresh window
        assert source.get_keys() is old
        assert server.count() == 1
        clock.advance(2)
        started = time.monotonic()
        for _ in range(50):
            assert source.get_keys() is old  # nobody waits for the refresh
        assert time.monotonic() - started < 0.3
        wait_for(lambda: source.status().fetch_count == 2)
        assert "b" in source.get_keys()
        assert server.count() == 2  # one background refresh, not fifty


def test_refresh_ahead_in_the_background_async(server: HttpsServer, clock: FixedClock) -> None:
    source = make(server, clock)

    async def main() -> None:
        old = await source.get_keys_async()
        server.route("/jwks", json_route(jwks(KEY_A, KEY_B), delay=0.3))
        clock.advance(271)
        started = time.monotonic()
        assert await source.get_keys_async() is old
        assert time.monotonic() - started < 0.2
        for _ in range(100):
            await asyncio.sleep(0.01)
            if source.status().fetch_count == 2:
                break
        assert "b" in await source.get_keys_async()

    asyncio.run(main())
    assert server.count() == 2


class _Stall:
    """A route whose answers wait until the test releases them (a stalled endpoint)."""

    def __init__(self, *keys: PrivateJWK) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.body = json.dumps(jwks(*keys)).encode()

    def route(self) -> Route:
        def answer(request: Any) -> tuple[int, dict[str, str], bytes]:
            self.entered.set()
            self.release.wait(10)
            return 200, {"Content-Type": "application/json"}, self.body

        return Route(handler=answer)


def _refresh_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "zerotrust-jwks-refresh"]


def _refreshes(task: asyncio.Task[Any]) -> bool:
    return getattr(task.get_coro(), "__name__", "") == "_refresh_async"


def test_an_expired_set_is_served_while_a_stalled_refresh_runs_in_the_background(
    server: HttpsServer, clock: FixedClock
) -> None:
    """RFC 5861 stale-while-revalidate: within max_stale, callers get the expired set at once
    and one background refresh waits for the endpoint; no caller waits for it (the endpoint
    answers only when the test says so, after the callers have returned)."""
    issuer = TokenIssuer(KEY_A, issuer="https://issuer.example", clock=clock)
    stall = _Stall(KEY_B)  # the refresh brings a rotated set: KEY_A withdrawn
    with make(server, clock, refresh_ahead=0, timeout=5.0) as source:
        verifier = TokenVerifier(
            issuer="https://issuer.example",
            audience="api",
            keys=source,
            algorithms=["ES256"],
            clock=clock,
        )
        token = issuer.issue(subject="svc", audience="api", ttl=3600)
        assert verifier.verify(token).subject == "svc"  # the first fetch; cached token
        keys = source.get_keys()
        server.route("/jwks", stall.route())
        clock.advance(301)  # expired; max_stale (3600 s) allows serving it
        try:
            served: list[object] = []
            verified: list[str] = []

            def call() -> None:
                served.append(source.get_keys())
                verified.append(
                    verifier.verify(issuer.issue(subject="new", audience="api")).subject
                )

            callers = [threading.Thread(target=call) for _ in range(8)]
            for caller in callers:
                caller.start()
            for caller in callers:
                caller.join(10)
            assert stall.entered.wait(5)  # the refresh is at the endpoint, which holds it
            assert not any(caller.is_alive() for caller in callers)
            assert len(served) == 8 and all(r is keys for r in served)
            assert verified == ["new"] * 8
            assert verifier.verify(token).subject == "svc"
            # nobody's call ended the fetch: it is still in flight, and it is the only one
            status = source.status()
            assert status.fetch_count == 1 and status.stale
            assert server.count() == 2
            refreshing = _refresh_threads()
            assert len(refreshing) == 1 and refreshing[0].daemon
        finally:
            stall.release.set()
        wait_for_fetches(source, 2)
        wait_for(lambda: not _refresh_threads())
        assert set(source.get_keys()) == {KEY_B.public()}
        # the changed set emptied the verified-token cache: the withdrawn key's token fails
        with pytest.raises(UnknownKey):
            verifier.verify(token)


def test_a_stale_set_is_served_while_a_stalled_refresh_runs_in_a_task(
    server: HttpsServer, clock: FixedClock
) -> None:
    stall = _Stall(KEY_A, KEY_B)
    source = make(server, clock, refresh_ahead=0, timeout=5.0)

    async def main() -> None:
        keys = await source.get_keys_async()
        server.route("/jwks", stall.route())
        clock.advance(301)
        try:
            results = await asyncio.gather(*(source.get_keys_async() for _ in range(50)))
            assert all(r is keys for r in results)
            for _ in range(500):  # the loop runs on: the refresh task reaches the endpoint
                if stall.entered.is_set():
                    break
                await asyncio.sleep(0.01)
            assert stall.entered.is_set()
            assert await source.get_keys_async() is keys
            assert source.status().fetch_count == 1 and server.count() == 2
            refreshing = [t for t in asyncio.all_tasks() if _refreshes(t)]
            assert len(refreshing) == 1  # one refresh task for the 51 callers
        finally:
            stall.release.set()
        for _ in range(500):
            if source.status().fetch_count == 2:
                break
            await asyncio.sleep(0.01)
        assert "b" in await source.get_keys_async()
        for _ in range(500):  # the refresh task ends (closing its client) and is not kept
            if asyncio.all_tasks() == {asyncio.current_task()}:
                break
            await asyncio.sleep(0.01)
        assert asyncio.all_tasks() == {asyncio.current_task()}

    asyncio.run(main())
    assert server.count() == 2
    source.close()


def test_an_unknown_kid_that_waited_for_a_refresh_sent_before_it_still_gets_its_refetch(
    server: HttpsServer, clock: FixedClock
) -> None:
    """A token of a new key that arrives while a background refresh is out waits for that
    refresh, whose request went out before the kid was seen: its answer cannot say whether
    the issuer publishes the kid, so the kid's refetch is still made (and the kid is not
    remembered as missing for negative_cache_ttl on the strength of the older answer)."""
    stall = _Stall(KEY_A)  # the refresh under way answers with the set it was asked for
    source = make(server, clock, refresh_ahead=0)

    async def main() -> None:
        keys = await source.get_keys_async()
        server.route("/jwks", stall.route())
        clock.advance(301)
        assert await source.get_keys_async() is keys  # stale: a refresh task starts
        await asyncio.to_thread(stall.entered.wait, 30)
        server.route("/jwks", json_route(jwks(KEY_A, KEY_B)))  # the issuer publishes b
        looking = asyncio.ensure_future(source.get_keys_async(missing_kid="b"))
        for _ in range(20):
            await asyncio.sleep(0)
        assert not looking.done()  # it waits for the refresh under way
        stall.release.set()
        assert "b" in await looking

    try:
        asyncio.run(main())
    finally:
        stall.release.set()
    assert server.count("/jwks") == 3
    source.close()


def test_a_refresh_task_cancelled_with_its_loop_makes_the_next_caller_fetch(
    server: HttpsServer, clock: FixedClock
) -> None:
    """A loop per call (``asyncio.run`` around each): the background refresh is cancelled
    when its loop closes, so the next caller fetches itself rather than serving the stale
    set until max_stale."""
    with make(server, clock, refresh_ahead=0) as source:
        assert set(asyncio.run(source.get_keys_async())) == {KEY_A.public()}
        server.route("/jwks", json_route(jwks(KEY_A, KEY_B), delay=0.3))
        clock.advance(301)
        assert set(asyncio.run(source.get_keys_async())) == {KEY_A.public()}  # stale
        assert source.status().fetch_count == 1  # the refresh was cancelled, not recorded
        assert set(asyncio.run(source.get_keys_async())) == {KEY_A.public(), KEY_B.public()}
        assert source.status().fetch_count == 2


def test_async_parity(server: HttpsServer, clock: FixedClock) -> None:
    source = make(server, clock, retry_interval=0, max_stale=100)

    async def main() -> None:
        keys = await source.get_keys_async()
        assert await source.prefetch_async() is keys
        for _ in range(500):
            assert await source.get_keys_async(missing_kid=secrets.token_hex(4)) is keys
        assert server.count() == 2
        server.route("/jwks", Route(status=500))
        clock.advance(301)
        assert await source.get_keys_async() is keys  # the refresh runs in a task
        for _ in range(500):
            if source.status().fetch_count == 3:
                break
            await asyncio.sleep(0.01)
        assert source.status().last_error is not None
        clock.advance(100)
        with pytest.raises(KeysUnavailable):
            await source.get_keys_async()

    asyncio.run(main())
    assert server.count() == 4


def test_async_client_is_used_when_given(server: HttpsServer, clock: FixedClock) -> None:
    import httpx

    async def main() -> None:
        async with httpx.AsyncClient(verify=server.client_context) as client:
            source = RemoteJWKSource(server.url("/jwks"), async_client=client, clock=clock)
            assert "a" in await source.get_keys_async()

    asyncio.run(main())


def test_sync_client_is_used_when_given(server: HttpsServer, clock: FixedClock) -> None:
    import httpx

    # the server's CA is this client's alone: a client the source built would refuse it
    with httpx.Client(verify=server.client_context) as client:
        source = RemoteJWKSource(server.url("/jwks"), client=client, clock=clock)
        assert "a" in source.get_keys()
        source.close()
        assert not client.is_closed  # the caller's client stays the caller's to close


def test_a_content_length_past_max_bytes_is_refused_before_the_body(
    server: HttpsServer, clock: FixedClock
) -> None:
    # two bytes of the announced gigabyte arrive, then the server goes away: the refusal
    # comes from the header, not from a cut body
    big = Route(headers={"Content-Length": str(1 << 30)}, stream_prefix=b"{", stream_bytes=1)
    server.route("/jwks", big)
    with make(server, clock) as source:
        with pytest.raises(KeysUnavailable, match=r"response is larger than \d+ bytes"):
            source.get_keys()
        with pytest.raises(KeysUnavailable, match=r"response is larger than \d+ bytes"):
            asyncio.run(source.get_keys_async())


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_max_bytes_is_the_largest_body_taken_as_sent_and_as_inflated(
    server: HttpsServer, clock: FixedClock, mode: str
) -> None:
    document = json.dumps(jwks(KEY_A)).encode() + b" "
    size = len(document)
    # sent without Content-Length (read to the end of the connection), then compressed
    served = {
        "plain": Route(stream_prefix=document[:-1], stream_chunk=b" ", stream_bytes=1),
        "gzip": Route(headers={"Content-Encoding": "gzip"}, body=gzip.compress(document)),
    }
    for route in served.values():
        server.route("/jwks", route)
        for max_bytes, taken in ((size, True), (size - 1, False)):
            with make(server, clock, max_bytes=max_bytes) as source:
                fetch = (
                    source.get_keys
                    if mode == "sync"
                    else lambda source=source: asyncio.run(source.get_keys_async())
                )
                if taken:
                    assert "a" in fetch()
                else:
                    with pytest.raises(KeysUnavailable, match=f"larger than {size - 1} bytes"):
                        fetch()


def test_status(server: HttpsServer, clock: FixedClock) -> None:
    server.route("/jwks", json_route(jwks(KEY_A, KEY_B), headers={"Cache-Control": "max-age=120"}))
    with make(server, clock) as source:
        empty = source.status()
        assert empty.last_success is None and empty.key_ids == () and not empty.stale
        assert empty.fetch_count == 0 and empty.expires_at is None
        source.get_keys()
        status = source.status()
        assert status.url == server.url("/jwks")
        assert status.last_success == clock.now()
        assert status.expires_at == clock.now() + timedelta(seconds=120)
        assert status.key_ids == ("a", "b")
        assert status.fetch_count == 1 and not status.stale
        assert status.last_error is None and status.last_error_at is None
        with pytest.raises(AttributeError):
            status.stale = True  # type: ignore[misc]


def test_failures_are_logged_once_per_change_without_bodies(
    server: HttpsServer, clock: FixedClock, caplog: pytest.LogCaptureFixture
) -> None:
    with make(server, clock, retry_interval=0) as source:
        source.get_keys()
        server.route("/jwks", Route(status=500, body=b"body-text-never-logged"))
        with caplog.at_level(logging.INFO, logger="zerotrust.sources"):
            for fetches in range(2, 5):
                clock.advance(301)
                source.get_keys()  # stale: refreshed in the background
                wait_for_fetches(source, fetches)
            server.route("/jwks", Route(status=502))
            clock.advance(1)
            source.get_keys()
            wait_for_fetches(source, 5)
            server.route("/jwks", json_route(jwks(KEY_A)))
            clock.advance(1)
            source.get_keys()
            wait_for_fetches(source, 6)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [("HTTP 500" in r.getMessage(), "HTTP 502" in r.getMessage()) for r in warnings] == [
        (True, False),
        (False, True),
    ]
    assert any("recovered" in r.getMessage() for r in caplog.records)
    assert not any("body-text" in r.getMessage() for r in caplog.records)
    assert not any('"x"' in r.getMessage() for r in caplog.records)  # no key material


def test_oidc_discovery(server: HttpsServer, clock: FixedClock) -> None:
    issuer = server.url("/realm")
    server.route(
        "/realm/.well-known/openid-configuration",
        json_route({"issuer": issuer, "jwks_uri": server.url("/jwks")}),
    )
    source = RemoteJWKSource.from_oidc_issuer(
        issuer, verify=server.client_context, clock=clock, min_ttl=10
    )
    with source:
        assert server.count() == 0
        assert "a" in source.get_keys()
        assert [r.path for r in server.requests()] == [
            "/realm/.well-known/openid-configuration",
            "/jwks",
        ]
        clock.advance(301)
        source.get_keys()
        wait_for_fetches(source, 2)
        assert server.count() == 3  # the discovered URL is reused


def test_oidc_discovery_with_trailing_slash_issuer(server: HttpsServer, clock: FixedClock) -> None:
    issuer = server.url("/realm/")
    server.route(
        "/realm/.well-known/openid-configuration",
        json_route({"issuer": issuer, "jwks_uri": server.url("/jwks")}),
    )
    with RemoteJWKSource.from_oidc_issuer(issuer, verify=server.client_context) as source:
        assert "a" in source.get_keys()


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ({"issuer": "https://evil.example", "jwks_uri": "JWKS"}, "different issuer"),
        ({"issuer": "ISSUER/", "jwks_uri": "JWKS"}, "different issuer"),
        ({"issuer": "ISSUER", "jwks_uri": "http://localhost/jwks"}, "jwks_uri refused"),
        ({"issuer": "ISSUER", "jwks_uri": "http://keys.example/jwks"}, "jwks_uri refused"),
        ({"issuer": "ISSUER"}, "jwks_uri refused"),
    ],
)
def test_oidc_discovery_rejects_bad_documents(
    server: HttpsServer, clock: FixedClock, document: dict[str, str], reason: str
) -> None:
    issuer = server.url("/realm")
    fixed = {
        k: v.replace("ISSUER", issuer).replace("JWKS", server.url("/jwks"))
        for k, v in document.items()
    }
    server.route("/realm/.well-known/openid-configuration", json_route(fixed))
    source = RemoteJWKSource.from_oidc_issuer(issuer, verify=server.client_context, clock=clock)
    with source, pytest.raises(KeysUnavailable, match=reason):
        source.get_keys()
    assert server.count("/jwks") == 0


def test_oidc_discovery_rejects_unknown_options() -> None:
    with pytest.raises(TypeError):
        RemoteJWKSource.from_oidc_issuer("https://issuer.example", ttl=5)


@pytest.mark.parametrize(
    ("url", "options"),
    [
        ("http://keys.example/jwks", {}),
        ("http://keys.example/jwks", {"allow_http_loopback": True}),
        ("http://127.0.0.1/jwks", {}),
        ("http://localhost/jwks", {}),
        ("ftp://keys.example/jwks", {}),
        ("https://user:pw@keys.example/jwks", {}),
        ("https:///jwks", {}),
        ("https://keys.example/jwks", {"verify": False}),
        ("https://keys.example/jwks", {"min_ttl": 0}),
        ("https://keys.example/jwks", {"min_ttl": 100, "max_ttl": 50}),
        ("https://keys.example/jwks", {"refresh_ahead": 1.0}),
        ("https://keys.example/jwks", {"max_stale": -1}),
        ("https://keys.example/jwks", {"timeout": 0}),
        ("https://keys.example/jwks", {"max_bytes": 0}),
        ("https://keys.example/jwks", {"unknown_kid_cooldown": True}),
        # a truthy non-bool must not open plain http ("no" is truthy)
        ("http://127.0.0.1/jwks", {"allow_http_loopback": "no"}),
        ("http://127.0.0.1/jwks", {"allow_http_loopback": 1}),
        ("https://keys.example/jwks", {"clock": object()}),
        ("https://keys.example/jwks", {"min_ttl": "60"}),
        ("https://keys.example/jwks", {"max_stale": float("nan")}),
        ("https://keys.example/jwks", {"max_ttl": float("inf")}),
    ],
)
def test_bad_configuration_is_refused(url: str, options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        RemoteJWKSource(url, **options)


def test_a_refused_url_is_named_for_what_it_is() -> None:
    with pytest.raises(ConfigurationError, match=r"^JWKS URL refused: "):
        RemoteJWKSource("http://keys.example/jwks")
    with pytest.raises(ConfigurationError, match=r"^issuer refused: "):
        RemoteJWKSource.from_oidc_issuer("http://issuer.example")


def test_plain_http_only_to_loopback_with_opt_in(clock: FixedClock) -> None:
    with HttpsServer(None) as plain:
        plain.route("/jwks", json_route(jwks(KEY_A)))
        for host in ("127.0.0.1", "localhost"):
            with pytest.raises(ConfigurationError, match="allow_http_loopback"):
                RemoteJWKSource(plain.url("/jwks", host=host))
            with RemoteJWKSource(
                plain.url("/jwks", host=host), allow_http_loopback=True, clock=clock
            ) as source:
                assert "a" in source.get_keys()


class _Trickler:
    """A TLS server that answers every request with headers sent a byte at a time (then
    ``body``, if any, at once)."""

    def __init__(
        self, ca: DevCA | None, pause: float, response: bytes | None = None, body: bytes = b""
    ) -> None:
        import socket

        self.context: ssl.SSLContext | None = None
        self.client_context = ssl.create_default_context()
        if ca is not None:  # otherwise plain http
            svid = ca.issue_svid(f"spiffe://{ca.trust_domain}/slow", dns_names=["localhost"])
            self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            with tempfile.TemporaryDirectory() as tmp:
                pem = Path(tmp) / "svid.pem"
                pem.write_bytes(svid.cert_chain_pem() + svid.private_key_pem())
                self.context.load_cert_chain(pem)
            self.client_context = ssl.create_default_context(cadata=ca.bundle.to_pem().decode())
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)  # so that the accept loop sees stop
        self.port = self.listener.getsockname()[1]
        self.pause = pause
        self.response = response or b"HTTP/1.1 200 OK\r\n" + b"X-Slow: " + b"a" * 200
        self.body = body
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                raw, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            raw.settimeout(5)
            threading.Thread(target=self._trickle, args=(raw,), daemon=True).start()

    def _trickle(self, raw: Any) -> None:
        try:
            conn = raw if self.context is None else self.context.wrap_socket(raw, server_side=True)
            with conn:
                conn.recv(4096)
                for byte in self.response:
                    if self.stop.is_set():
                        return
                    conn.sendall(bytes([byte]))
                    time.sleep(self.pause)
                if self.body:
                    conn.sendall(self.body)
        except OSError:
            pass

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.listener.close()


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_headers_trickled_a_byte_at_a_time_are_bounded_by_the_timeout(
    ca: DevCA, clock: FixedClock, mode: str
) -> None:
    # every read completes well within the timeout, so only a deadline for the whole
    # exchange stops it (the source would otherwise wait as long as the server trickles)
    slow = _Trickler(ca, pause=0.05)
    try:
        source = RemoteJWKSource(
            f"https://localhost:{slow.port}/jwks",
            verify=slow.client_context,
            clock=clock,
            timeout=0.5,
        )
        fetch = source.get_keys if mode == "sync" else lambda: asyncio.run(source.get_keys_async())
        started = time.monotonic()
        with pytest.raises(KeysUnavailable, match="timed out"):
            fetch()
        assert time.monotonic() - started < 3.0  # twice the timeout, and slack; not ~11 s
        source.close()
    finally:
        slow.close()


def test_a_sync_client_of_ones_own_is_not_held_to_the_whole_exchange_deadline(
    ca: DevCA, clock: FixedClock
) -> None:
    """The deadline for a whole exchange applies to the clients a source builds: a client of
    one's own gets the per-operation timeouts only (cutting its connection could cut other
    requests sharing it). An exchange of such a client that outlasted twice the timeout,
    every read in time, was waited for to the end and then thrown away as timed out."""
    import httpx

    document = json.dumps(jwks(KEY_A)).encode()
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Pad: %s\r\n\r\n" % (
        len(document),
        b"p" * 8,
    )
    slow = _Trickler(ca, pause=0.02, response=head, body=document)  # 1.2 s of headers
    try:
        with httpx.Client(verify=slow.client_context) as client:
            source = RemoteJWKSource(
                f"https://localhost:{slow.port}/jwks", client=client, clock=clock, timeout=0.25
            )
            assert "a" in source.get_keys()
    finally:
        slow.close()


class _TricklerToTheEnd(_Trickler):
    """A :class:`_Trickler` that notes when it is about to send the last byte of its headers,
    then sends it with the body (a client that ends its fetch only after that byte has waited
    for the whole answer)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.last_byte_sent = threading.Event()
        super().__init__(*args, **kwargs)

    def _trickle(self, raw: Any) -> None:
        try:
            conn = raw if self.context is None else self.context.wrap_socket(raw, server_side=True)
            with conn:
                conn.recv(4096)
                for byte in self.response[:-1]:
                    conn.sendall(bytes([byte]))
                    time.sleep(self.pause)
                self.last_byte_sent.set()
                conn.sendall(self.response[-1:] + self.body)
        except OSError:
            pass


def test_a_connection_opened_after_the_deadline_is_cut_at_once(
    ca: DevCA, clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole-exchange deadline cuts the connections an exchange opened; when the time was
    up before the connection was even opened (a resolver that answered late), the timer had
    nothing to cut and the exchange was no longer bounded: a server trickling its answer held
    the fetch for as long as it liked. Such a connection is now cut as soon as it opens."""
    import socket

    timeout = 0.2
    document = json.dumps(jwks(KEY_A)).encode()
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Pad: %s\r\n\r\n" % (
        len(document),
        b"p" * 20,
    )
    slow = _TricklerToTheEnd(ca, pause=timeout / 10, response=head, body=document)
    resolve = socket.getaddrinfo

    def late(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "localhost":
            time.sleep(3 * timeout)  # the resolver answers after twice the timeout
        return resolve(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", late)
    try:
        source = RemoteJWKSource(
            f"https://localhost:{slow.port}/jwks",
            verify=slow.client_context,
            clock=clock,
            timeout=timeout,
        )
        with pytest.raises(KeysUnavailable, match="timed out"):
            source.get_keys()
        assert not slow.last_byte_sent.is_set()  # the answer was not waited for to its end
        source.close()
    finally:
        slow.close()


def test_a_sync_client_of_ones_own_without_timeouts_gets_the_sources_timeout(
    ca: DevCA, clock: FixedClock
) -> None:
    """A client of one's own is spared the whole-exchange deadline, not the source's
    ``timeout`` for each read: one built with ``timeout=None`` still gives up on a server that
    stops sending (here after one byte, for longer than the test runs)."""
    import httpx

    slow = _Trickler(ca, pause=30.0)
    try:
        with httpx.Client(verify=slow.client_context, timeout=None) as client:
            source = RemoteJWKSource(
                f"https://localhost:{slow.port}/jwks", client=client, clock=clock, timeout=0.25
            )
            with pytest.raises(KeysUnavailable, match="timed out"):
                source.get_keys()
    finally:
        slow.close()


@pytest.mark.parametrize("scheme", ["http", "https"])
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_body_cut_at_the_deadline_is_not_taken_for_a_whole_one(
    ca: DevCA, clock: FixedClock, mode: str, scheme: str
) -> None:
    # without a length, the end of the connection ends the body: a deadline that cuts the
    # connection must not turn the first part of a key set into the key set
    document = b'{"keys": []}' + b" " * 400
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Pad: " + b"p" * 160
    response = head + b"\r\n\r\n" + document  # headers alone outlast timeout, not 2x timeout
    slow = _Trickler(ca if scheme == "https" else None, pause=0.004, response=response)
    try:
        source = RemoteJWKSource(
            f"{scheme}://localhost:{slow.port}/jwks",
            verify=slow.client_context,
            clock=clock,
            timeout=0.5,
            allow_http_loopback=scheme == "http",
        )
        fetch = source.get_keys if mode == "sync" else lambda: asyncio.run(source.get_keys_async())
        with pytest.raises(KeysUnavailable, match="timed out"):
            fetch()
        source.close()
    finally:
        slow.close()


def test_certificate_settings_from_the_environment_are_ignored(
    server: HttpsServer,
    clock: FixedClock,
    ca: DevCA,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # whoever sets a process's environment does not choose which key server it believes
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(ca.bundle.to_pem())
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))  # would make the test CA trusted
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))
    source = RemoteJWKSource(server.url("/jwks"), clock=clock)  # verify=True: httpx's (certifi)
    with pytest.raises(KeysUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        source.get_keys()
    source.close()
    assert server.count() == 0  # refused in the handshake: no request was sent


def test_a_verifier_checks_the_tokens_of_the_issuer_its_keys_were_discovered_for(
    server: HttpsServer, clock: FixedClock
) -> None:
    issuer = server.url("/realm")
    source = RemoteJWKSource.from_oidc_issuer(issuer, verify=server.client_context, clock=clock)
    assert source.oidc_issuer == issuer
    with pytest.raises(ConfigurationError, match="OpenID issuer"):
        TokenVerifier(
            issuer="https://other.example", audience="api", keys=source, algorithms=["ES256"]
        )
    TokenVerifier(issuer=issuer, audience="api", keys=source, algorithms=["ES256"])
    assert make(server, clock).oidc_issuer is None  # a plain JWKS URL names no issuer
    assert server.count() == 0  # all decided without a fetch
    source.close()


def test_jwt_svid_verifiers_without_an_issuer_may_use_discovered_keys(
    server: HttpsServer, clock: FixedClock
) -> None:
    # SPIRE's OIDC discovery provider publishes the keys of JWT-SVIDs, checked by trust domain
    source = RemoteJWKSource.from_oidc_issuer(
        server.url("/spire"), verify=server.client_context, clock=clock
    )
    TokenVerifier(
        issuer=None,
        audience="api",
        keys=source,
        algorithms=["ES256"],
        token_type="jwt-svid",
        trust_domain="example.org",
    )
    source.close()


# --- content codings -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_compressed_key_set_is_read_and_a_compressed_bomb_never_grows_past_max_bytes(
    server: HttpsServer, clock: FixedClock, mode: str
) -> None:
    """Sources ask for no content coding; a server compressing anyway may use one layer of
    gzip or deflate, inflated a bounded piece at a time: 64 MiB of zeros in a few KB of gzip
    is refused without ever holding them."""
    import tracemalloc
    import zlib

    def fetch(source: RemoteJWKSource) -> Any:
        return source.get_keys() if mode == "sync" else asyncio.run(source.get_keys_async())

    body = json.dumps(jwks(KEY_A)).encode()
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    raw_deflate = raw.compress(body) + raw.flush()  # what some servers send as "deflate"
    for coding, packed in (
        ("gzip", gzip.compress(body)),
        ("deflate", zlib.compress(body)),
        ("deflate", raw_deflate),
    ):
        server.route("/jwks", Route(headers={"Content-Encoding": coding}, body=packed))
        with make(server, clock) as source:
            assert fetch(source).get("a") == KEY_A.public()
    assert {r.headers.get("accept-encoding") for r in server.requests()} == {"identity"}

    bomb = gzip.compress(b"\0" * (64 << 20), compresslevel=9)
    server.route("/jwks", Route(headers={"Content-Encoding": "gzip"}, body=bomb))
    with make(server, clock, max_bytes=1 << 20) as source:
        tracemalloc.start()
        try:
            with pytest.raises(KeysUnavailable, match="larger than"):
                fetch(source)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < 16 << 20  # about max_bytes; not the 64 MiB the body inflates to

    refused = {
        "gzip, gzip": gzip.compress(gzip.compress(body)),  # stacked: refused, not inflated
        "br": body,
        "gzip": gzip.compress(body)[:-8],  # cut short
        "deflate": b"not zlib data",
    }
    for coding, payload in refused.items():
        server.route("/jwks", Route(headers={"Content-Encoding": coding}, body=payload))
        with make(server, clock) as source, pytest.raises(KeysUnavailable):
            fetch(source)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_deflate_body_whose_first_piece_is_one_byte_is_read(
    server: HttpsServer, clock: FixedClock, mode: str
) -> None:
    """Which deflate format a server sent (zlib, or raw as some send it) is told by its first
    two bytes; a body whose first piece held one byte was taken for raw deflate whatever the
    second said, and a zlib stream then refused as invalid."""
    import zlib

    body = json.dumps(jwks(KEY_A)).encode()
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    for packed in (zlib.compress(body), raw.compress(body) + raw.flush()):
        server.route(
            "/jwks",
            Route(
                headers={"Content-Encoding": "deflate"},
                stream_prefix=packed[:1],  # a piece of its own: one TLS record
                stream_chunk=packed[1:],
                stream_bytes=1,
            ),
        )
        with make(server, clock) as source:
            fetch = (
                source.get_keys if mode == "sync" else lambda: asyncio.run(source.get_keys_async())
            )
            assert fetch().get("a") == KEY_A.public()


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_data_after_the_end_of_a_compressed_body_is_refused(
    server: HttpsServer, clock: FixedClock, mode: str
) -> None:
    """zlib keeps whatever follows the end of a stream (unused_data) without a bound: a
    complete gzip member then megabytes of junk was buffered whole, then accepted."""
    import gzip
    import zlib

    def fetch(source: RemoteJWKSource) -> Any:
        return source.get_keys() if mode == "sync" else asyncio.run(source.get_keys_async())

    body = json.dumps(jwks(KEY_A)).encode()
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    raw_deflate = raw.compress(body) + raw.flush()
    routes = {
        "junk streamed after a gzip member": Route(
            headers={"Content-Encoding": "gzip"},
            stream_prefix=gzip.compress(body),
            stream_bytes=4 << 20,
        ),
        "a second gzip member": Route(
            headers={"Content-Encoding": "gzip"}, body=gzip.compress(body) * 2
        ),
        "bytes after a zlib stream": Route(
            headers={"Content-Encoding": "deflate"}, body=zlib.compress(body) + b"x"
        ),
        "bytes after a raw deflate stream": Route(
            headers={"Content-Encoding": "deflate"}, body=raw_deflate + b"x"
        ),
    }
    for name, route in routes.items():
        server.route("/jwks", route)
        with make(server, clock) as source:
            with pytest.raises(KeysUnavailable, match="after the end of its compressed"):
                fetch(source)
            assert source.status().key_ids == (), name


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_compressed_body_is_bounded_as_sent_even_when_it_inflates_to_nothing(
    server: HttpsServer, clock: FixedClock, mode: str
) -> None:
    """max_bytes counted only inflated bytes: empty deflate blocks (5 bytes each, nothing
    out) were read for as long as the server sent them. The body as sent is bounded too."""
    gzip_header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    empty_block = b"\x00\x00\x00\xff\xff"  # a stored block of length 0, not the last one
    server.route(
        "/jwks",
        Route(
            headers={"Content-Encoding": "gzip"},
            stream_prefix=gzip_header,
            stream_chunk=empty_block * 13107,
            stream_bytes=4 << 20,
        ),
    )
    with make(server, clock, max_bytes=64 << 10) as source:
        fetch = source.get_keys if mode == "sync" else lambda: asyncio.run(source.get_keys_async())
        with pytest.raises(KeysUnavailable, match=f"larger than {64 << 10} bytes"):
            fetch()


def test_a_request_on_a_reused_connection_cannot_escape_the_deadline(clock: FixedClock) -> None:
    """httpx's pool hands a later request a kept-alive connection, which the deadline never
    saw open: a server answering the first request of a connection at once and trickling
    the next ones held discovery + JWKS fetches for as long as it trickled. Connections of
    the clients a source builds are not kept alive, so each exchange stays cuttable."""
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    issuer = f"http://127.0.0.1:{port}/realm"
    documents = {
        b"/realm/.well-known/openid-configuration": json.dumps(
            {"issuer": issuer, "jwks_uri": f"http://127.0.0.1:{port}/jwks"}
        ).encode(),
        b"/jwks": json.dumps(jwks(KEY_A)).encode(),
    }
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            served = 0
            pending = b""
            while not stop.is_set():
                while b"\r\n\r\n" not in pending:
                    try:
                        data = conn.recv(4096)
                    except OSError:
                        return
                    if not data:
                        return
                    pending += data
                head, _, pending = pending.partition(b"\r\n\r\n")
                path = head.split(b" ")[1]
                body = documents.get(path, b"{}")
                answer = (
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )
                if served:  # a later request on the same connection: trickled
                    for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"s" * 400:
                        if stop.wait(0.05):
                            return
                        try:
                            conn.sendall(bytes([byte]))
                        except OSError:
                            return
                    return
                conn.sendall(answer)
                served += 1

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        source = RemoteJWKSource.from_oidc_issuer(
            issuer, clock=clock, timeout=0.5, allow_http_loopback=True
        )
        with source:
            assert source.get_keys().get("a") == KEY_A.public()  # each request its own connection
    finally:
        stop.set()
        close_listener(listener)


def test_an_overdue_background_refresh_is_taken_for_lost(clock: FixedClock) -> None:
    """A background refresh that never ends (its event loop closed without running or
    cancelling it) must not keep an expired set in use until max_stale: once it is overdue,
    a caller served that set fetches it itself."""
    from zerotrust.sources._jwks_cache import Action, JWKSCache
    from zerotrust.sources._jwks_policy import CachePolicy
    from zerotrust.tokens import JWKSet

    policy = CachePolicy(
        min_ttl=60,
        max_ttl=3600,
        default_ttl=300,
        refresh_ahead=0,
        max_stale=3600,
        unknown_kid_cooldown=30,
        negative_cache_ttl=60,
        retry_interval=5,
    )
    cache = JWKSCache(
        jwks_url="https://issuer.example/jwks",
        issuer=None,
        policy=policy,
        allow_http_loopback=False,
        max_bytes=65536,
        clock=clock,
        refresh_deadline=21,
    )
    cache._record_success(JWKSet.from_dict(jwks(KEY_A)), {"cache-control": "max-age=300"}, 1)
    clock.advance(301)
    assert cache.plan(None).action is Action.REFRESH  # handed to one background refresh
    clock.advance(20)
    assert cache.plan(None).action is Action.SERVE  # still under way: served, nobody waits
    clock.advance(2)
    assert cache.plan(None).action is Action.FETCH  # overdue: taken for lost
    cache._record_success(JWKSet.from_dict(jwks(KEY_B)), {"cache-control": "max-age=300"}, 2)
    assert cache.plan(None).action is Action.SERVE  # a fetch that ended settles the state
    clock.advance(301)
    assert cache.plan(None).action is Action.REFRESH  # and the next refresh can start


def test_a_forked_child_fetches_for_itself_while_its_parent_s_refresh_holds_the_lock(
    server: HttpsServer, clock: FixedClock
) -> None:
    """A fork while a background refresh waits for the endpoint (a worker forked from a
    process that served requests): the child has the source's lock held and a refresh under
    way, with no thread to end either. Its callers must fetch, not wait forever for them."""
    stall = _Stall(KEY_A)
    with make(server, clock, refresh_ahead=0, timeout=30.0) as source:
        assert set(source.get_keys()) == {KEY_A.public()}
        server.route("/jwks", stall.route())
        clock.advance(301)  # expired: served while one refresh waits for the endpoint
        try:
            source.get_keys()
            assert stall.entered.wait(10)
            server.route("/jwks", json_route(jwks(KEY_B)))  # for the child's own fetch

            def child() -> str:
                clock.advance(3600)  # past max_stale: the child's caller must fetch
                answer: list[str] = []
                done = threading.Event()

                def call() -> None:
                    try:
                        answer.extend(key.kid or "" for key in source.get_keys())
                    except Exception as exc:
                        answer.append(type(exc).__name__)
                    done.set()

                threading.Thread(target=call, daemon=True).start()
                return " ".join(answer) if done.wait(20) else "still waiting"

            assert in_child(child) == "b"
        finally:
            stall.release.set()
        wait_for_fetches(source, 2)  # the parent's refresh ended in the parent


class _KeepAlive(ThreadingHTTPServer):
    """A plain-http loopback key server that keeps its connections open (HTTP/1.1)."""

    daemon_threads = True

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(GOOD_BODY)))
                self.end_headers()
                self.wfile.write(GOOD_BODY)

        super().__init__(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client dropping its connection is expected

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join(10)


def test_a_client_of_ones_own_that_cannot_send_is_a_failed_fetch(clock: FixedClock) -> None:
    """httpx raises RuntimeError for a client that was closed, and asyncio for an async one
    used from another event loop than the one its connections belong to (``asyncio.run``
    twice, a loop per test): the source must fail as for any failed fetch (KeysUnavailable,
    the failure recorded and backed off), never let that RuntimeError out on a request path."""
    import httpx

    server = _KeepAlive()
    url = f"http://127.0.0.1:{server.server_address[1]}/jwks"
    options: dict[str, Any] = {"allow_http_loopback": True, "clock": clock, "max_stale": 0}
    try:
        closed = httpx.Client()
        closed.close()
        with RemoteJWKSource(url, client=closed, **options) as source:
            with pytest.raises(KeysUnavailable, match="client has been closed"):
                source.get_keys()
            status = source.status()
            assert status.fetch_count == 1 and "client has been closed" in str(status.last_error)
            with pytest.raises(KeysUnavailable):
                source.get_keys()  # backed off: no second attempt yet
            assert source.status().fetch_count == 1

        async_client = httpx.AsyncClient()
        source = RemoteJWKSource(url, async_client=async_client, **options)
        assert "a" in asyncio.run(source.get_keys_async())  # its connection stays in the pool
        clock.advance(301)  # expired, max_stale 0: the next caller must fetch
        with pytest.raises(KeysUnavailable, match="Event loop is closed"):
            asyncio.run(source.get_keys_async())  # another loop than the connection's
        assert source.status().fetch_count == 2
        # the client's connection of the first loop can be closed by no loop any more
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            with contextlib.suppress(RuntimeError):
                asyncio.run(async_client.aclose())
            del async_client, source
            gc.collect()
    finally:
        server.close()


def _serving(
    server: HttpsServer,
    ring: KeyRing,
    gate: threading.Event | None = None,
    *,
    held: int | None = None,
    arrived: threading.Event | None = None,
) -> None:
    """Serve ``ring`` on /jwks through a JWKSEndpoint, each answer (only the ``held``-th
    fetch, if given, which sets ``arrived``) held until ``gate`` opens."""
    endpoint = JWKSEndpoint(ring, max_age=300)

    def handler(request: Any) -> tuple[int, dict[str, str], bytes]:
        if gate is not None and (held is None or server.count("/jwks") == held):
            if arrived is not None:
                arrived.set()
            assert gate.wait(10)
        status, headers, body = endpoint.respond(request.method, None)
        return status, dict(headers), body

    server.route("/jwks", Route(handler=handler))


def test_tasks_meeting_a_rotated_kid_at_once_share_one_refetch(
    server: HttpsServer, clock: FixedClock
) -> None:
    ring = KeyRing(PrivateJWK.generate("ES256", kid="k1"))
    _serving(server, ring)
    issuer = TokenIssuer(ring, issuer="https://issuer.test")
    source = make(server, clock)
    verifier = TokenVerifier(
        issuer="https://issuer.test", audience="api", keys=source, algorithms=["ES256"]
    )

    async def main() -> list[object]:
        await source.prefetch_async()
        ring.rotate(PrivateJWK.generate("ES256", kid="k2"))  # not staged: verifiers lack k2
        tokens = [issuer.issue(subject=f"svc-{n}", audience="api") for n in range(20)]
        return await asyncio.gather(*map(verifier.verify_async, tokens), return_exceptions=True)

    with source:
        results = asyncio.run(main())
    assert [r for r in results if isinstance(r, Exception)] == []
    assert server.count("/jwks") == 2  # the first fetch, then one refetch for k2


def test_threads_meeting_a_rotated_kid_at_once_share_one_refetch(
    server: HttpsServer, clock: FixedClock
) -> None:
    ring = KeyRing(PrivateJWK.generate("ES256", kid="k1"))
    gate = threading.Event()
    _serving(server, ring, gate)
    issuer = TokenIssuer(ring, issuer="https://issuer.test")
    source = make(server, clock)
    asked = threading.Semaphore(0)

    class Counted:  # tells the test when each caller is about to ask for the unknown kid
        def get_keys(self, *, missing_kid: str | None = None) -> Any:
            if missing_kid is not None:
                asked.release()
            return source.get_keys(missing_kid=missing_kid)

        async def get_keys_async(self, *, missing_kid: str | None = None) -> Any:
            raise AssertionError("sync only")

    verifier = TokenVerifier(
        issuer="https://issuer.test", audience="api", keys=Counted(), algorithms=["ES256"]
    )
    failures: list[Exception] = []
    with source:
        gate.set()
        source.prefetch()
        gate.clear()
        ring.rotate(PrivateJWK.generate("ES256", kid="k2"))
        tokens = [issuer.issue(subject=f"svc-{n}", audience="api") for n in range(20)]

        def call(token: str) -> None:
            try:
                verifier.verify(token)
            except Exception as exc:
                failures.append(exc)

        threads = [threading.Thread(target=call, args=(token,)) for token in tokens]
        for thread in threads:
            thread.start()
        for _ in tokens:  # every caller has met k2 while the refetch is held at the server
            assert asked.acquire(timeout=10)
        gate.set()
        for thread in threads:
            thread.join(10)
    assert failures == []
    assert server.count("/jwks") == 2


def test_callers_of_other_event_loops_add_no_request_to_a_refetch_under_way(
    server: HttpsServer, clock: FixedClock
) -> None:
    ring = KeyRing(PrivateJWK.generate("ES256", kid="k1"))
    arrived, gate = threading.Event(), threading.Event()

    # the refetch for the first unknown kid is held
    _serving(server, ring, gate, held=2, arrived=arrived)
    source = make(server, clock)
    verifier = TokenVerifier(
        issuer="https://issuer.test", audience="api", keys=source, algorithms=["ES256"]
    )

    def sprayed(kid: str) -> str:
        key = PrivateJWK.generate("ES256", kid=kid)
        return TokenIssuer(key, issuer="https://issuer.test").issue(subject="x", audience="api")

    def verify_in_own_loop(token: str, refused: list[str]) -> None:
        try:
            asyncio.run(verifier.verify_async(token))
        except UnknownKey as exc:
            refused.append(exc.code)

    with source:
        source.prefetch()
        first: list[str] = []
        held = threading.Thread(target=verify_in_own_loop, args=(sprayed("kid-0"), first))
        held.start()
        assert arrived.wait(10)
        refused: list[str] = []
        for n in range(1, 9):  # each in an event loop of its own, as asyncio.run per request
            verify_in_own_loop(sprayed(f"kid-{n}"), refused)
        gate.set()
        held.join(10)
    assert refused == ["unknown_key"] * 8 and first == ["unknown_key"]
    assert server.count("/jwks") == 2  # the first fetch and the one refetch: nothing more


def test_a_caller_of_another_event_loop_adds_no_request_before_the_refetch_begins(
    server: HttpsServer, clock: FixedClock
) -> None:
    """The refetch granted for an unknown kid may wait for its event loop's lock (a background
    refresh of that loop holds it): a caller of another event loop meeting another unknown kid
    meanwhile must not send a request of its own either (the granted one follows anyway)."""
    ring = KeyRing(PrivateJWK.generate("ES256", kid="k1"))
    arrived, gate, waiting = threading.Event(), threading.Event(), threading.Event()

    _serving(server, ring, gate, held=2, arrived=arrived)  # the background refresh is held
    source = make(server, clock)
    granted: list[Any] = []

    async def refresh_then_refetch() -> None:
        await source.prefetch_async()
        clock.advance(280)  # past refresh-ahead, not expired
        await source.get_keys_async()  # starts this loop's background refresh
        await asyncio.to_thread(arrived.wait, 10)
        refetch = asyncio.ensure_future(source.get_keys_async(missing_kid="kid-0"))
        await asyncio.sleep(0)  # its first step: granted, then waits for this loop's lock
        waiting.set()
        granted.append(await refetch)

    with source:
        loop_a = threading.Thread(target=asyncio.run, args=(refresh_then_refetch(),))
        loop_a.start()
        try:
            assert waiting.wait(10)
            keys = asyncio.run(source.get_keys_async(missing_kid="kid-1"))  # another loop
            assert "kid-1" not in keys
            assert server.count("/jwks") == 2  # the first fetch and the refresh: no more
        finally:
            gate.set()
            loop_a.join(10)
    assert len(granted) == 1
    assert server.count("/jwks") == 3  # ... then the refetch granted for kid-0
