"""The decisions of a remote key source (:class:`JWKSCache`), driven without I/O.

Each test runs the cache's sans-IO flow against scripted responses and a fixed clock, and
pins one boundary of when a cached set is served, refreshed, refetched or refused.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterable
from typing import Any

import pytest

from zerotrust import FixedClock
from zerotrust.errors import ConfigurationError, KeysUnavailable
from zerotrust.sources._jwks_cache import Action, JWKSCache, Plan
from zerotrust.sources._jwks_policy import CachePolicy
from zerotrust.sources._sansio import FetchError, HttpRequest, HttpResponse
from zerotrust.tokens import PrivateJWK

KEY_A = PrivateJWK.generate("ES256", kid="a")
KEY_B = PrivateJWK.generate("ES256", kid="b")
ISSUER = "https://issuer.example"
JWKS_URL = "https://issuer.example/jwks"


def jwks_body(*keys: PrivateJWK) -> bytes:
    return json.dumps({"keys": [key.public().to_public_dict() for key in keys]}).encode()


def ok(*keys: PrivateJWK, max_age: int = 300) -> HttpResponse:
    return HttpResponse(200, {"cache-control": f"max-age={max_age}"}, jwks_body(*keys))


def discovery(**fields: Any) -> HttpResponse:
    document = {"issuer": ISSUER, "jwks_uri": JWKS_URL, **fields}
    return HttpResponse(200, {}, json.dumps(document).encode())


def make(clock: FixedClock, *, issuer: str | None = None, **overrides: float) -> JWKSCache:
    timing: dict[str, float] = {
        "min_ttl": 60,
        "max_ttl": 3600,
        "default_ttl": 300,
        "refresh_ahead": 0,
        "max_stale": 600,
        "unknown_kid_cooldown": 30,
        "negative_cache_ttl": 100,
        "retry_interval": 5,
        **overrides,
    }
    return JWKSCache(
        jwks_url=None if issuer else JWKS_URL,
        issuer=issuer,
        policy=CachePolicy(**timing),
        allow_http_loopback=False,
        max_bytes=65536,
        clock=clock,
    )


def fetch(cache: JWKSCache, *answers: HttpResponse | FetchError) -> list[HttpRequest]:
    """Run one refresh flow, answering its requests in order; returns the requests."""
    flow = cache.refresh_flow()
    requests = [next(flow)]
    pending: Iterable[HttpResponse | FetchError] = iter(answers)
    try:
        for answer in pending:
            if isinstance(answer, FetchError):
                requests.append(flow.throw(answer))
            else:
                requests.append(flow.send(answer))
    except StopIteration:
        return requests
    raise AssertionError("the flow asked for more requests than were scripted")


def last_error(cache: JWKSCache) -> str | None:
    return cache.status().last_error


def test_a_set_is_served_until_it_expires_then_refreshed_by_one_caller(clock: FixedClock) -> None:
    cache = make(clock)
    assert cache.plan(None).action is Action.FETCH
    fetch(cache, ok(KEY_A))
    clock.advance(299)
    assert cache.plan(None).action is Action.SERVE
    clock.advance(1)  # expiry is inclusive: at expires_at the set is stale
    assert cache.plan(None).action is Action.REFRESH
    assert cache.plan(None).action is Action.SERVE  # the refresh is under way: single-flight
    cache.end_refresh()
    assert cache.plan(None).action is Action.REFRESH


def test_refresh_ahead_starts_at_its_fraction_of_the_ttl(clock: FixedClock) -> None:
    cache = make(clock, refresh_ahead=0.1)
    fetch(cache, ok(KEY_A))
    clock.advance(269)
    assert cache.plan(None).action is Action.SERVE
    clock.advance(1)  # 300 s TTL: its last 30 s are the refresh window
    plan = cache.plan(None)
    assert plan.action is Action.REFRESH and plan.keys is not None and "a" in plan.keys


def test_max_stale_boundary(clock: FixedClock) -> None:
    """Past expiry the set is served for max_stale seconds (inclusive); beyond, callers fetch
    themselves, and while backing off after a failure they get nothing."""
    cache = make(clock)
    fetch(cache, ok(KEY_A))
    first = cache.plan(None)
    clock.advance(300 + 600)
    assert cache.plan(None).action is Action.REFRESH
    assert "a" in cache.result(first)
    clock.advance(1)
    plan = cache.plan(None)
    assert plan.action is Action.FETCH and plan.generation == cache.generation
    fetch(cache, HttpResponse(503))
    failed = cache.plan(None)
    assert failed.action is Action.FAIL
    assert failed.error is not None and "stale beyond max_stale" in failed.error
    assert "HTTP 503" in failed.error
    with pytest.raises(KeysUnavailable, match="stale beyond max_stale"):
        cache.result(plan)


def test_a_cold_cache_backs_off_for_retry_interval_after_a_failure(clock: FixedClock) -> None:
    cache = make(clock)
    fetch(cache, HttpResponse(500))
    plan = cache.plan(None)
    assert plan.action is Action.FAIL and plan.error is not None and "HTTP 500" in plan.error
    clock.advance(4)
    assert cache.plan(None).action is Action.FAIL
    clock.advance(1)  # retry_interval has passed (inclusive)
    assert cache.plan(None).action is Action.FETCH


def test_a_failure_holds_back_refreshes_and_kid_refetches_not_the_cached_set(
    clock: FixedClock,
) -> None:
    cache = make(clock, unknown_kid_cooldown=0)
    fetch(cache, ok(KEY_A))
    clock.advance(300)
    assert cache.plan(None).action is Action.REFRESH
    fetch(cache, FetchError("connection refused"))
    assert last_error(cache) == "connection refused"
    for kid in (None, "new"):
        plan = cache.plan(kid)
        assert plan.action is Action.SERVE and plan.keys is not None and "a" in plan.keys
    clock.advance(5)
    planned = Plan(Action.FETCH, generation=cache.generation, kid="new", started=2)
    assert cache.plan("new") == planned


def test_unknown_kid_refetches_are_spaced_by_the_cooldown(clock: FixedClock) -> None:
    cache = make(clock)
    fetch(cache, ok(KEY_A))
    assert cache.plan("a").action is Action.SERVE  # a known kid never refetches
    assert cache.plan("x").action is Action.FETCH
    fetch(cache, ok(KEY_A))
    clock.advance(29)
    assert cache.plan("y").action is Action.SERVE
    clock.advance(1)  # the cooldown has passed (inclusive)
    assert cache.plan("y").action is Action.FETCH


def test_callers_with_unknown_kids_share_the_refetch_under_way(clock: FixedClock) -> None:
    cache = make(clock)
    fetch(cache, ok(KEY_A))
    first = cache.plan("b")
    assert first.action is Action.FETCH and first.kid == "b"
    # within the cooldown, while that refetch is under way, callers wait for it ...
    waiting = cache.plan("b")
    assert waiting == Plan(
        Action.FETCH, generation=cache.generation, started=1, shared=True, stand_in=True
    )
    assert cache.fetch_needed(waiting)  # the refetch has not begun: whoever comes first makes it
    flow = cache.refresh_flow()
    next(flow)  # it has begun: a caller that did not wait for it behind a lock makes none
    assert not cache.fetch_needed(waiting)
    with contextlib.suppress(StopIteration):
        flow.send(ok(KEY_A, KEY_B))
    # ... and are answered by it: neither of them fetches again
    assert not cache.fetch_needed(first) and not cache.fetch_needed(waiting)
    assert "b" in cache.result(first) and "b" in cache.result(waiting)
    # once it has ended, the cooldown holds for other kids (no wait, no fetch)
    assert cache.plan("c").action is Action.SERVE


def test_a_kid_still_missing_after_a_refetch_is_remembered_for_negative_cache_ttl(
    clock: FixedClock,
) -> None:
    cache = make(clock)
    fetch(cache, ok(KEY_A))
    plan = cache.plan("ghost")
    assert plan.action is Action.FETCH and plan.kid == "ghost"
    fetch(cache, ok(KEY_A))
    cache.result(plan)
    clock.advance(99)  # the cooldown is over, the kid is still remembered as missing
    assert cache.plan("ghost").action is Action.SERVE
    clock.advance(1)
    assert cache.plan("ghost").action is Action.FETCH


def test_a_clock_set_back_holds_nothing_back_for_as_long_as_its_step(clock: FixedClock) -> None:
    """After the clock is set back an hour (a step of NTP), a set fetched "in the future" is
    an hour older than its TTL says: it is refreshed in the background, not served as fresh
    for another hour (a key the issuer withdrew would be accepted that long). A back-off, a
    kid refetch's cooldown and a missing kid's negative cache recorded before the step end
    too, instead of lasting an hour more."""
    cache = make(clock)
    fetch(cache, ok(KEY_A))
    clock.advance(-3600)
    plan = cache.plan(None)
    assert plan.action is Action.REFRESH and plan.keys is not None and "a" in plan.keys
    assert cache.plan(None).action is Action.SERVE  # single-flight, as ever
    fetch(cache, ok(KEY_A))
    assert cache.plan(None).action is Action.SERVE  # fetched at the new time: fresh

    missing = cache.plan("ghost")
    assert missing.action is Action.FETCH
    fetch(cache, ok(KEY_A))
    cache.result(missing)
    assert cache.plan("ghost").action is Action.SERVE  # remembered as missing
    assert cache.plan("other").action is Action.SERVE  # the cooldown
    clock.advance(-3600)
    assert cache.plan("ghost").action is Action.FETCH

    cold = make(clock)
    fetch(cold, HttpResponse(500))
    assert cold.plan(None).action is Action.FAIL  # backing off
    clock.advance(-3600)
    assert cold.plan(None).action is Action.FETCH


def test_a_kid_found_by_its_refetch_is_not_remembered_as_missing(clock: FixedClock) -> None:
    cache = make(clock, unknown_kid_cooldown=0)
    fetch(cache, ok(KEY_A))
    plan = cache.plan("b")
    fetch(cache, ok(KEY_A, KEY_B))
    assert "b" in cache.result(plan)
    fetch(cache, ok(KEY_A))  # b is gone again: a refetch for it is allowed at once
    assert cache.plan("b").action is Action.FETCH


def test_a_kid_is_looked_for_only_by_a_fetch_begun_after_it_was_asked_for(
    clock: FixedClock,
) -> None:
    cache = make(clock)
    fetch(cache, ok(KEY_A))
    clock.advance(300)
    assert cache.plan(None).action is Action.REFRESH
    refresh = cache.refresh_flow()
    next(refresh)  # the background refresh's request is out
    plan = cache.plan("b")
    assert plan.action is Action.FETCH
    with pytest.raises(StopIteration):
        refresh.send(ok(KEY_A))  # answered as of before "b" was asked for
    cache.end_refresh()
    assert cache.fetch_needed(plan)
    assert "b" not in cache.result(plan)
    clock.advance(30)  # the cooldown: not the negative cache
    assert cache.plan("b").action is Action.FETCH
    fetch(cache, ok(KEY_A))  # begun after: "b" was looked for and is missing
    assert not cache.fetch_needed(plan)
    cache.result(plan)
    clock.advance(30)
    assert cache.plan("b").action is Action.SERVE  # remembered for negative_cache_ttl


def test_the_memory_of_missing_kids_is_bounded_oldest_first(clock: FixedClock) -> None:
    cache = make(clock, unknown_kid_cooldown=0)
    fetch(cache, ok(KEY_A))
    for index in range(1025):
        plan = cache.plan(f"kid-{index}")
        assert plan.action is Action.FETCH
        fetch(cache, ok(KEY_A))
        cache.result(plan)
    assert cache.plan("kid-1").action is Action.SERVE  # still remembered
    assert cache.plan("kid-1024").action is Action.SERVE
    assert cache.plan("kid-0").action is Action.FETCH  # the oldest of 1025 was forgotten


def test_an_abandoned_refresh_makes_the_next_caller_served_a_stale_set_fetch(
    clock: FixedClock,
) -> None:
    cache = make(clock)
    fetch(cache, ok(KEY_A))
    clock.advance(300)
    refresh = cache.plan(None)
    assert refresh.action is Action.REFRESH
    cache.end_refresh(abandoned_at=refresh.generation)
    assert cache.plan(None).action is Action.FETCH


def test_a_refresh_abandoned_after_another_fetch_ended_changes_nothing(
    clock: FixedClock,
) -> None:
    cache = make(clock, unknown_kid_cooldown=0)
    fetch(cache, ok(KEY_A))
    clock.advance(300)
    refresh = cache.plan(None)
    fetch(cache, FetchError("reset"))  # another caller's fetch ended meanwhile
    cache.end_refresh(abandoned_at=refresh.generation)
    clock.advance(5)
    assert cache.plan(None).action is Action.REFRESH  # not FETCH: a fetch has ended since


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (300, "JWKS: redirect refused (HTTP 300)"),
        (302, "JWKS: redirect refused (HTTP 302)"),
        (399, "JWKS: redirect refused (HTTP 399)"),
        (204, "JWKS: HTTP 204"),
        (299, "JWKS: HTTP 299"),
        (400, "JWKS: HTTP 400"),
        (500, "JWKS: HTTP 500"),
    ],
)
def test_only_a_200_is_a_key_set(clock: FixedClock, status: int, error: str) -> None:
    cache = make(clock)
    fetch(cache, HttpResponse(status, {}, jwks_body(KEY_A)))
    assert last_error(cache) == error
    assert cache.status().key_ids == ()


def test_a_set_of_no_usable_key_is_a_failure(clock: FixedClock) -> None:
    cache = make(clock)
    fetch(cache, HttpResponse(200, {}, b'{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}'))
    assert last_error(cache) == "JWKS has no usable keys (1 skipped)"


def test_discovery_then_the_key_set(clock: FixedClock) -> None:
    cache = make(clock, issuer=ISSUER + "/")
    requests = fetch(cache, discovery(issuer=ISSUER + "/"), ok(KEY_A))
    assert [(r.method, r.url) for r in requests[:2]] == [
        ("GET", ISSUER + "/.well-known/openid-configuration"),
        ("GET", JWKS_URL),
    ]
    assert requests[0].headers["accept"] == "application/json"
    assert requests[1].headers["accept"] == "application/jwk-set+json, application/json"
    assert cache.status().key_ids == ("a",)
    clock.advance(300)
    again = fetch(cache, ok(KEY_A))
    assert [r.url for r in again[:1]] == [JWKS_URL]  # the discovered URL is kept


def test_a_failed_key_set_fetch_discovers_again_next_time(clock: FixedClock) -> None:
    cache = make(clock, issuer=ISSUER)
    fetch(cache, discovery(), ok(KEY_A))
    clock.advance(300)
    fetch(cache, HttpResponse(404))
    clock.advance(5)
    requests = fetch(cache, discovery(jwks_uri=ISSUER + "/moved"), ok(KEY_B))
    assert [r.url for r in requests[:2]] == [
        ISSUER + "/.well-known/openid-configuration",
        ISSUER + "/moved",
    ]
    assert cache.status().key_ids == ("b",)


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (discovery(issuer=ISSUER + "/other"), "names a different issuer"),
        (discovery(issuer=None), "names a different issuer"),
        (discovery(jwks_uri="http://issuer.example/jwks"), "jwks_uri refused"),
        (discovery(jwks_uri=None), "jwks_uri refused"),
        (HttpResponse(200, {}, b"[]"), "not acceptable JSON"),
        (HttpResponse(301, {}, b"{}"), "OIDC discovery: redirect refused (HTTP 301)"),
        (HttpResponse(500, {}, b"{}"), "OIDC discovery: HTTP 500"),
    ],
)
def test_unacceptable_discovery_documents(
    clock: FixedClock, answer: HttpResponse, error: str
) -> None:
    cache = make(clock, issuer=ISSUER)
    requests = fetch(cache, answer)
    assert len(requests) == 1  # nothing fetched from a refused document
    assert error in (last_error(cache) or "")


def test_result_after_a_failed_cold_fetch_is_keys_unavailable(clock: FixedClock) -> None:
    cache = make(clock)
    plan = cache.plan(None)
    fetch(cache, HttpResponse(503))
    with pytest.raises(KeysUnavailable, match=r"no keys from https://issuer\.example/jwks: .*503"):
        cache.result(plan)


def test_every_ended_fetch_advances_the_generation_once(clock: FixedClock) -> None:
    """Callers that queued behind a fetch see the generation moved and do not fetch again."""
    cache = make(clock)
    plan = cache.plan(None)
    fetch(cache, HttpResponse(500))
    assert cache.generation == plan.generation + 1
    clock.advance(5)
    fetch(cache, ok(KEY_A))
    assert cache.generation == plan.generation + 2
    assert cache.status().fetch_count == 2


def test_an_older_fetch_that_ends_last_never_replaces_a_newer_key_set(clock: FixedClock) -> None:
    """Fetches of sync callers and of several event loops overlap. The answer of one begun
    before a rotation, arriving after the answer of one begun after it, would have put the
    withdrawn key back for the set's whole lifetime (and its failure, set a back-off)."""
    for older in (ok(KEY_A), HttpResponse(500)):
        cache = make(clock)
        before, after = cache.refresh_flow(), cache.refresh_flow()
        next(before), next(after)  # both requests sent: "a" published, then rotated to "b"
        with contextlib.suppress(StopIteration):
            after.send(ok(KEY_B))
        with contextlib.suppress(StopIteration):
            before.send(older)  # the older answer ends last
        keys = cache.result(cache.plan(None))
        assert [key.kid for key in keys] == ["b"]
        assert cache.status().last_error is None
        assert cache.status().fetch_count == 2


def test_an_abandoned_refresh_ahead_of_expiry_is_retried_in_the_background(
    clock: FixedClock,
) -> None:
    """While the set is still fresh nobody fetches in the foreground, abandoned refresh or
    not: the next caller starts another background refresh."""
    cache = make(clock, refresh_ahead=0.5)
    fetch(cache, ok(KEY_A))
    clock.advance(150)
    refresh = cache.plan(None)
    assert refresh.action is Action.REFRESH
    cache.end_refresh(abandoned_at=refresh.generation)
    assert cache.plan(None).action is Action.REFRESH


def test_an_ended_fetch_settles_an_abandoned_refresh(clock: FixedClock) -> None:
    for outcome, wait in ((ok(KEY_A), 300), (HttpResponse(500), 5)):
        cache = make(clock)
        fetch(cache, ok(KEY_A))
        clock.advance(300)
        refresh = cache.plan(None)
        cache.end_refresh(abandoned_at=refresh.generation)
        assert cache.plan(None).action is Action.FETCH
        fetch(cache, outcome)
        clock.advance(wait)  # the new set's expiry, or the end of the back-off
        assert cache.plan(None).action is Action.REFRESH  # one refresh, in the background


def test_a_failed_background_refresh_lets_another_start_after_retry_interval(
    clock: FixedClock,
) -> None:
    cache = make(clock)
    fetch(cache, ok(KEY_A))
    clock.advance(300)
    assert cache.plan(None).action is Action.REFRESH
    fetch(cache, HttpResponse(500))
    cache_plan = cache.plan(None)
    assert cache_plan.action is Action.SERVE  # backing off
    clock.advance(5)
    assert cache.plan(None).action is Action.REFRESH


def test_a_success_ends_the_back_off_of_an_earlier_failure(clock: FixedClock) -> None:
    cache = make(clock, unknown_kid_cooldown=0)
    fetch(cache, ok(KEY_A))
    fetch(cache, HttpResponse(500))
    assert cache.plan("new").action is Action.SERVE  # backing off
    fetch(cache, ok(KEY_A))  # another caller's fetch succeeded
    assert cache.plan("new").action is Action.FETCH
    assert cache.status().last_error is None and cache.status().last_error_at is None


def test_a_failed_fetch_of_a_plain_jwks_url_retries_the_same_url(clock: FixedClock) -> None:
    cache = make(clock)
    fetch(cache, FetchError("connection refused"))
    clock.advance(5)
    requests = fetch(cache, ok(KEY_A))
    assert [r.url for r in requests[:1]] == [JWKS_URL]
    assert cache.status().key_ids == ("a",)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"{not json", "response is not a usable JWKS"),
        (b'{"keys": {}}', "response is not a usable JWKS"),
        (b"[]", "response is not a usable JWKS"),
    ],
)
def test_a_body_that_is_no_key_set_is_a_failure(clock: FixedClock, body: bytes, error: str) -> None:
    cache = make(clock)
    fetch(cache, HttpResponse(200, {}, body))
    assert error in (last_error(cache) or "")


def test_key_ids_are_logged_escaped_and_cut(
    clock: FixedClock, caplog: pytest.LogCaptureFixture
) -> None:
    # the key server chose them: a kid holding a line break cannot forge a log line
    forged = PrivateJWK.generate("ES256", kid="b\nFORGED LOG LINE: admin login ok")
    long = PrivateJWK.generate("ES256", kid="c" * 1000)
    cache = make(clock, unknown_kid_cooldown=0)
    with caplog.at_level(logging.INFO, logger="zerotrust.sources"):
        fetch(cache, ok(KEY_A))
        fetch(cache, ok(KEY_A, forged, long))
    (message,) = caplog.messages
    assert "\n" not in message and "\\nFORGED LOG LINE" in message
    assert f"'{'c' * 64}'" in message and "c" * 65 not in message


def test_what_is_logged_about_key_set_changes_and_recovery(
    clock: FixedClock, caplog: pytest.LogCaptureFixture
) -> None:
    cache = make(clock, unknown_kid_cooldown=0)
    with caplog.at_level(logging.INFO, logger="zerotrust.sources"):
        fetch(cache, ok(KEY_A))
        fetch(cache, ok(KEY_A))
        assert caplog.messages == []  # the first set, and the same set again: nothing to say
        fetch(cache, ok(KEY_B, KEY_A))
        assert caplog.messages == [
            "key set from https://issuer.example/jwks changed: kids 'a', 'b'"
        ]
        caplog.clear()
        fetch(cache, ok(KEY_A))
        fetch(cache, ok(KEY_A))
        assert caplog.messages == ["key set from https://issuer.example/jwks changed: kids 'a'"]
        caplog.clear()
        fetch(cache, HttpResponse(500))
        fetch(cache, ok(KEY_A))
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.INFO]
    assert caplog.messages[-1] == "key source https://issuer.example/jwks recovered"


def test_a_kid_whose_refetch_failed_is_not_remembered_as_missing(clock: FixedClock) -> None:
    """Only a kid still missing after a refetch is remembered: one whose refetch failed was
    never looked for. A key rotation that met one failed fetch must not have tokens of the
    new key refused for negative_cache_ttl once the issuer answers again (the back-off and
    the cooldown still space the refetches)."""
    cache = make(clock, negative_cache_ttl=300)
    fetch(cache, ok(KEY_A, max_age=3600))
    plan = cache.plan("b")
    assert plan.action is Action.FETCH
    fetch(cache, HttpResponse(503))
    assert "b" not in cache.result(plan)
    clock.advance(29)
    assert cache.plan("b").action is Action.SERVE  # the cooldown still holds
    clock.advance(1)
    assert cache.plan("b") == Plan(Action.FETCH, generation=cache.generation, kid="b", started=2)
    fetch(cache, ok(KEY_A, KEY_B))
    assert "b" in cache.result(plan)


@pytest.mark.parametrize(
    ("headers", "ttl"),
    [
        ({"cache-control": "public"}, 300),  # no max-age: the default
        ({"cache-control": 'Public, MAX-AGE = "600"'}, 600),  # RFC 9111 5.2: case-insensitive
        (
            {"expires": "Fri, 31 Dec 9999 23:59:59 GMT", "date": "Fri, 31 Dec 9999 23:00:00 -1400"},
            60,
        ),
        ({"cache-control": "public", "expires": "Thu, 01 Jan 2037 00:10:00 GMT"}, 600),
        ({"expires": "Thu, 01 Jan 2037 00:10:00 -0000"}, 600),  # read as UTC
        ({"expires": "Sun, 01 Jun 2036 00:10:00 GMT", "date": ""}, 600),  # no Date: now
        ({"expires": "Thu, 01 Jan 2037 01:10:00 +0100"}, 600),  # an offset is kept
        ({"cache-control": "max-age=600", "age": "soon"}, 600),  # an unreadable Age is ignored
        ({"cache-control": "max-age=\u0666\u0660\u0660"}, 60),  # digits, but not ASCII ones
        ({"cache-control": "max-age=600", "age": "\u0661\u0660\u0660"}, 600),
    ],
)
def test_cache_ttl_reads_only_what_rfc_9111_allows(headers: dict[str, str], ttl: float) -> None:
    from datetime import datetime, timezone

    from zerotrust.sources._jwks_policy import cache_ttl

    policy = CachePolicy(
        min_ttl=60,
        max_ttl=86400,
        default_ttl=300,
        refresh_ahead=0,
        max_stale=600,
        unknown_kid_cooldown=30,
        negative_cache_ttl=100,
        retry_interval=5,
    )
    headers = {"date": "Thu, 01 Jan 2037 00:00:00 GMT", **headers}
    now = datetime(2036, 6, 1, tzinfo=timezone.utc)  # the server's Date is what counts
    assert cache_ttl(headers, now, policy) == ttl


def test_a_fixed_ttl_is_a_policy(clock: FixedClock) -> None:
    make(clock, min_ttl=0.5)  # any positive minimum, under a second too
    cache = make(clock, min_ttl=120, max_ttl=120)  # min_ttl == max_ttl: every set for 120 s
    fetch(cache, ok(KEY_A, max_age=5))
    clock.advance(119)
    assert cache.plan(None).action is Action.SERVE
    clock.advance(1)
    assert cache.plan(None).action is Action.REFRESH


@pytest.mark.parametrize(
    "name",
    [
        "max_ttl",
        "default_ttl",
        "max_stale",
        "unknown_kid_cooldown",
        "negative_cache_ttl",
        "retry_interval",
    ],
)
def test_times_no_date_can_hold_are_refused_when_configured(clock: FixedClock, name: str) -> None:
    """A time of 10^12 s (no date 31,000 years on exists) was accepted, and once added to the
    clock raised OverflowError from every verification: the source must raise nothing but
    KeysUnavailable while serving. A century is the most a policy may name, and works."""
    with pytest.raises(ConfigurationError, match=f"{name} must be at most"):
        make(clock, **{name: 1e12})
    century = 100 * 365 * 86400
    cache = make(
        clock, **{name: century, **({"max_ttl": century} if name == "default_ttl" else {})}
    )
    fetch(cache, HttpResponse(200, {}, jwks_body(KEY_A)))
    for _ in range(3):
        plan = cache.plan("b")
        if plan.action is Action.FETCH:
            fetch(cache, HttpResponse(503))
            with contextlib.suppress(KeysUnavailable):  # (stale beyond max_stale: closed)
                cache.result(plan)
        clock.advance(86400)
    cache.plan(None)


def test_a_caller_of_another_event_loop_never_stands_in_for_the_refetch_granted(
    clock: FixedClock,
) -> None:
    """Whoever comes first behind the granted caller's lock makes the refetch; a caller of
    another event loop (or of the threads, for a task) is behind another lock: if it made the
    refetch before the granted caller began, that caller would make its own too."""
    cache = make(clock)
    fetch(cache, ok(KEY_A))
    granted = cache.plan("b", 1)
    assert granted.action is Action.FETCH and granted.kid == "b"
    same, other, threads = cache.plan("c", 1), cache.plan("d", 2), cache.plan("e")
    assert same.shared and other.shared and threads.shared
    assert cache.fetch_needed(same)  # none has begun: it stands in for the granted caller
    assert not cache.fetch_needed(other) and not cache.fetch_needed(threads)
