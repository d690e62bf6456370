"""Outgoing token sources: caching per audience, refresh ahead, single-flight, failures."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import gc
import json
import logging
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from tests._fork import in_child
from zerotrust import FixedClock
from zerotrust.errors import ConfigurationError, SourceError
from zerotrust.tokens import PrivateJWK, TokenIssuer, TokenVerifier
from zerotrust.tokens._outgoing_cache import _unverified_exp, check_token, read_unverified
from zerotrust.tokens.outgoing import (
    CachedTokenSource,
    MintedToken,
    SelfIssuedTokenSource,
    StaticTokenSource,
    TokenCache,
    TokenSource,
)


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def fake_jwt(exp: float, **claims: Any) -> str:
    return f"{b64({'alg': 'ES256'})}.{b64({'exp': exp, **claims})}.c2ln"


class Minter:
    """Mints fake JWTs valid for ``lifetime`` seconds of ``clock``; counts calls per audience."""

    def __init__(self, clock: FixedClock, lifetime: float = 300) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.calls: list[str] = []
        self.fail: Exception | None = None
        self.lock = threading.Lock()

    def __call__(self, audience: str) -> str:
        with self.lock:
            self.calls.append(audience)
            if self.fail is not None:
                raise self.fail
            exp = self.clock.now().timestamp() + self.lifetime
            return fake_jwt(exp, aud=audience, n=len(self.calls))


def test_unverified_exp() -> None:
    assert _unverified_exp(fake_jwt(1_800_000_000)) == datetime.fromtimestamp(
        1_800_000_000, tz=timezone.utc
    )
    assert _unverified_exp(fake_jwt(1.5e9)) is not None
    for bad in ("opaque-token", "a.b", "a.!!!.c", fake_jwt(True), f"x.{b64({'exp': 'soon'})}.y"):
        assert _unverified_exp(bad) is None
    assert _unverified_exp(f"x.{b64({'sub': 'a'})}.y") is None
    assert _unverified_exp(fake_jwt(1e300)) is None
    assert _unverified_exp("a." + "A" * 70000 + ".c") is None


def test_static_token_source() -> None:
    source = StaticTokenSource("abc.def.ghi")
    assert isinstance(source, TokenSource)
    assert source.token("a") == source.token("b") == "abc.def.ghi"
    assert asyncio.run(source.token_async("c")) == "abc.def.ghi"
    assert "abc" not in repr(source)
    for bad in ("", "two words", "line\nbreak", "é", 42, 'a",b\\c;d', "a:b", "=abc", "ab=c"):
        with pytest.raises(ConfigurationError):
            StaticTokenSource(bad)  # type: ignore[arg-type]
    for good in ("a-b.c_d~e+f/g==", "opaque~token/v1+x="):  # RFC 6750 b64token
        assert StaticTokenSource(good).token("a") == good


def test_caches_per_audience(clock: FixedClock) -> None:
    minter = Minter(clock)
    source = CachedTokenSource(minter, clock=clock)
    assert isinstance(source, TokenSource)
    first = source.token("https://a.example")
    assert source.token("https://a.example") == first
    second = source.token("https://b.example")
    assert second != first
    assert minter.calls == ["https://a.example", "https://b.example"]
    with pytest.raises(ConfigurationError):
        source.token("")


def test_refreshes_before_expiry(clock: FixedClock) -> None:
    minter = Minter(clock, lifetime=300)
    source = CachedTokenSource(minter, clock=clock)
    first = source.token("api")
    clock.advance(239)  # default: refresh 20% (60 s) before exp
    assert source.token("api") == first
    clock.advance(2)
    assert source.token("api") != first
    assert len(minter.calls) == 2


def test_explicit_refresh_before_and_short_lifetimes(clock: FixedClock) -> None:
    minter = Minter(clock, lifetime=300)
    source = CachedTokenSource(minter, refresh_before=10, clock=clock)
    first = source.token("api")
    clock.advance(289)
    assert source.token("api") == first
    clock.advance(2)
    assert source.token("api") != first
    short = Minter(clock, lifetime=8)  # 5 s minimum would exceed half the lifetime
    source = CachedTokenSource(short, clock=clock)
    token = source.token("api")
    clock.advance(3.9)
    assert source.token("api") == token
    clock.advance(0.2)
    assert source.token("api") != token


def test_opaque_tokens_use_minted_expiry_or_default_lifetime(clock: FixedClock) -> None:
    calls: list[str] = []

    def mint(audience: str) -> MintedToken:
        calls.append(audience)
        return MintedToken(f"opaque-{len(calls)}", clock.now() + timedelta(seconds=100))

    source = CachedTokenSource(mint, clock=clock)
    assert source.token("a") == "opaque-1"
    clock.advance(79)
    assert source.token("a") == "opaque-1"
    clock.advance(2)
    assert source.token("a") == "opaque-2"
    assert "opaque" not in repr(MintedToken("opaque-3"))

    plain = CachedTokenSource(lambda aud: f"plain-{aud}", default_lifetime=60, clock=clock)
    assert plain.token("x") == "plain-x"


@pytest.mark.parametrize(("own_exp", "expires_in"), [(100, 3600), (3600, 100)])
def test_a_jwt_expires_at_its_own_exp_when_that_comes_first(
    clock: FixedClock, own_exp: float, expires_in: float
) -> None:
    """An expiry given with a token (an OAuth2 expires_in) may outlast the JWT's own exp,
    which is what a server enforces: the earlier of the two counts, either way round."""
    minted: list[str] = []

    def mint(audience: str) -> MintedToken:
        minted.append(audience)
        now = clock.now()
        token = fake_jwt(now.timestamp() + own_exp, n=len(minted))
        return MintedToken(token, now + timedelta(seconds=expires_in))

    source = CachedTokenSource(mint, clock=clock)
    first = source.token("a")
    clock.advance(79)  # a lifetime of 100 s: refreshed 20 s before its end
    assert source.token("a") == first
    clock.advance(2)
    assert source.token("a") != first and len(minted) == 2


def test_a_token_is_asked_for_again_within_a_year_whatever_it_claims(clock: FixedClock) -> None:
    """A token's own exp (no expires_in to read) is capped like expires_in: a revoked grant
    or a rotated client is picked up within a year, not in the year 9999."""
    minted: list[str] = []

    def mint(audience: str) -> str:
        minted.append(audience)
        return fake_jwt(253402300799, n=len(minted))  # 9999-12-31T23:59:59Z

    source = CachedTokenSource(mint, clock=clock)
    first = source.token("a")
    clock.advance(250 * 86400)
    assert source.token("a") == first and len(minted) == 1
    clock.advance(116 * 86400)  # past a year (refreshed from day 292 on): a new one
    assert source.token("a") != first and len(minted) == 2


def test_expired_or_invalid_minted_tokens_are_errors(clock: FixedClock) -> None:
    past = CachedTokenSource(lambda aud: fake_jwt(clock.now().timestamp() - 1), clock=clock)
    with pytest.raises(SourceError, match="expired"):
        past.token("a")
    empty = CachedTokenSource(lambda aud: "", clock=clock)
    with pytest.raises(SourceError):
        empty.token("a")


@pytest.mark.parametrize("produced", [None, 42, b"header.claims.sig", ["t"]])
def test_a_mint_that_returns_no_token_is_a_source_error(
    clock: FixedClock, produced: object
) -> None:
    """Whatever a minting function returns besides a ``str`` or a :class:`MintedToken` is
    refused as such, sync and async (never an AttributeError from inside the cache)."""
    source = CachedTokenSource(lambda audience: produced, clock=clock)  # type: ignore[arg-type,return-value]
    with pytest.raises(SourceError, match="not a token"):
        source.token("api")
    with pytest.raises(SourceError, match="not a token"):
        asyncio.run(source.token_async("api"))


def test_an_expiry_that_is_no_datetime_is_named(clock: FixedClock) -> None:
    minted = MintedToken("opaque", 1_900_000_000)  # type: ignore[arg-type]  # a timestamp
    source = CachedTokenSource(lambda audience: minted, clock=clock)
    with pytest.raises(SourceError, match="not an aware datetime"):
        source.token("api")


def test_a_refreshed_audience_is_the_last_one_evicted(clock: FixedClock) -> None:
    """The cache keeps its most recently minted audiences: a refresh makes an audience the
    newest again, so the next new audience evicts another."""
    cache: TokenCache[str] = TokenCache(clock=clock, max_entries=2)
    minted: list[str] = []

    def mint_for(key: str) -> Any:
        def mint() -> str:
            minted.append(key)
            return fake_jwt(clock.now().timestamp() + 300, aud=key, n=len(minted))

        return mint

    cache.get("a", mint_for("a"))
    cache.get("b", mint_for("b"))
    clock.advance(290)  # within both tokens' refresh window
    cache.get("a", mint_for("a"))  # refreshed: now the newest
    cache.get("c", mint_for("c"))  # evicts b, the oldest
    assert minted == ["a", "b", "a", "c"]
    cache.get("a", mint_for("a"))  # still cached
    assert minted == ["a", "b", "a", "c"]
    cache.get("b", mint_for("b"))  # evicted: minted again
    assert minted == ["a", "b", "a", "c", "b"]


def test_a_minted_token_hides_its_value_and_cannot_change() -> None:
    minted = MintedToken("secret-token-value")
    assert "secret-token-value" not in repr(minted)
    with pytest.raises(dataclasses.FrozenInstanceError):
        minted.token = "other"  # type: ignore[misc]
    assert not hasattr(minted, "__dict__")


def test_a_minted_token_is_expired_at_its_expiry_and_usable_just_before(
    clock: FixedClock,
) -> None:
    at_exp = CachedTokenSource(lambda aud: MintedToken("t", clock.now()), clock=clock)
    with pytest.raises(SourceError, match="expired"):
        at_exp.token("a")
    soon = clock.now() + timedelta(milliseconds=500)
    assert CachedTokenSource(lambda aud: MintedToken("t", soon), clock=clock).token("a") == "t"


def test_failed_refresh_keeps_the_valid_token_then_raises_after_expiry(
    clock: FixedClock, caplog: pytest.LogCaptureFixture
) -> None:
    minter = Minter(clock, lifetime=300)
    source = CachedTokenSource(minter, retry_interval=10, clock=clock)
    token = source.token("api")
    minter.fail = SourceError("token endpoint answered HTTP 503")
    clock.advance(250)
    with caplog.at_level(logging.WARNING, logger="zerotrust.sources"):
        for _ in range(5):
            assert source.token("api") == token  # logged once, retried after 10 s only
        clock.advance(11)
        assert source.token("api") == token
    assert len(minter.calls) == 3
    assert len(caplog.records) == 1
    assert "HTTP 503" in caplog.records[0].getMessage()
    assert token not in caplog.text
    clock.advance(40)  # past exp
    with pytest.raises(SourceError, match="HTTP 503"):
        source.token("api")
    minter.fail = None
    assert source.token("api") != token


@pytest.mark.parametrize("error", [RuntimeError("endpoint down: https://u:p@idp"), OSError(5, "x")])
def test_any_failure_of_a_minting_function_keeps_the_valid_token(
    clock: FixedClock, caplog: pytest.LogCaptureFixture, error: Exception
) -> None:
    """The documented fallback holds for whatever a user's mint raises, and its text (which
    may hold anything) is not logged."""
    minter = Minter(clock, lifetime=300)
    source = CachedTokenSource(minter, retry_interval=10, clock=clock)
    token = source.token("api")
    minter.fail = error
    clock.advance(250)
    with caplog.at_level(logging.WARNING, logger="zerotrust.sources"):
        assert source.token("api") == token
        assert source.token("api") == token  # backing off: no second mint yet
    assert len(minter.calls) == 2
    assert type(error).__name__ in caplog.text and "u:p@" not in caplog.text
    clock.advance(60)  # past exp: the failure is the caller's again
    with pytest.raises(type(error)):
        source.token("api")


def test_an_unusable_mint_result_never_blocks_the_audience(clock: FixedClock) -> None:
    """A naive expiry cannot be compared: the mint fails, and the next one runs (no flight is
    left waiting forever)."""
    results = iter(
        [
            MintedToken("opaque-1", datetime.now() + timedelta(minutes=5)),
            MintedToken("opaque-2", clock.now() + timedelta(minutes=5)),
        ]
    )
    source = CachedTokenSource(lambda audience: next(results), clock=clock)
    with pytest.raises(SourceError, match="aware"):
        source.token("api")
    assert source.token("api") == "opaque-2"


def test_failure_without_a_token_raises(clock: FixedClock) -> None:
    minter = Minter(clock)
    minter.fail = SourceError("down")
    source = CachedTokenSource(minter, clock=clock)
    with pytest.raises(SourceError, match="down"):
        source.token("api")
    with pytest.raises(SourceError, match="down"):
        asyncio.run(source.token_async("api"))


def test_single_flight_under_threads(clock: FixedClock) -> None:
    release = threading.Event()
    calls: list[str] = []

    def mint(audience: str) -> str:
        calls.append(audience)
        release.wait(5)
        return fake_jwt(clock.now().timestamp() + 300, n=len(calls))

    source = CachedTokenSource(mint, clock=clock)
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(source.token("api"))) for _ in range(50)
    ]
    for thread in threads:
        thread.start()
    time.sleep(0.1)  # let every thread reach the cache while the first mint is held
    release.set()
    for thread in threads:
        thread.join(5)
    assert len(calls) == 1
    assert len(results) == 50 and len(set(results)) == 1


def test_waiters_share_the_error_of_a_failed_mint(clock: FixedClock) -> None:
    release = threading.Event()
    calls: list[str] = []

    def mint(audience: str) -> str:
        calls.append(audience)
        release.wait(5)
        raise SourceError("endpoint down")

    source = CachedTokenSource(mint, clock=clock)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            source.token("api")
        except SourceError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(10)]
    for thread in threads:
        thread.start()
    time.sleep(0.1)
    release.set()
    for thread in threads:
        thread.join(5)
    assert len(calls) == 1 and len(errors) == 10


def test_callers_keep_the_old_token_while_a_refresh_runs(clock: FixedClock) -> None:
    started, release = threading.Event(), threading.Event()
    calls: list[str] = []

    def mint(audience: str) -> str:
        calls.append(audience)
        if len(calls) == 2:
            started.set()
            release.wait(5)
        return fake_jwt(clock.now().timestamp() + 300, n=len(calls))

    source = CachedTokenSource(mint, clock=clock)
    old = source.token("api")
    clock.advance(250)
    refresher = threading.Thread(target=source.token, args=("api",))
    refresher.start()
    assert started.wait(5)
    assert source.token("api") == old  # not blocked by the refresh in progress:
    assert refresher.is_alive()  # it is still minting, until released below
    release.set()
    refresher.join(5)
    assert source.token("api") != old


def test_single_flight_under_asyncio(clock: FixedClock) -> None:
    calls: list[str] = []

    async def mint_async(audience: str) -> str:
        calls.append(audience)
        await asyncio.sleep(0.05)
        return fake_jwt(clock.now().timestamp() + 300, n=len(calls))

    source = CachedTokenSource(lambda aud: "unused", mint_async=mint_async, clock=clock)

    async def main() -> list[str]:
        return list(await asyncio.gather(*(source.token_async("api") for _ in range(100))))

    results = asyncio.run(main())
    assert len(calls) == 1 and len(set(results)) == 1
    assert asyncio.run(source.token_async("api")) == results[0]  # cached across event loops


def test_a_cancelled_caller_never_fails_the_callers_sharing_its_mint(
    clock: FixedClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The caller that started the shared mint gives up (a deadline around its request): it
    gets its own timeout, the mint goes on, and the others get the token."""
    calls: list[str] = []

    async def mint_async(audience: str) -> str:
        calls.append(audience)
        await asyncio.sleep(0.3)
        return fake_jwt(clock.now().timestamp() + 300, n=len(calls))

    source = CachedTokenSource(lambda aud: "unused", mint_async=mint_async, clock=clock)

    async def main() -> tuple[BaseException | str, list[str]]:
        hurried = asyncio.ensure_future(asyncio.wait_for(source.token_async("api"), 0.1))
        while not calls:  # it starts the mint
            await asyncio.sleep(0)
        others = await asyncio.gather(*(source.token_async("api") for _ in range(10)))
        first = await asyncio.gather(hurried, return_exceptions=True)
        return first[0], list(others)

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        hurried, others = asyncio.run(main())
    assert isinstance(hurried, asyncio.TimeoutError)
    assert len(others) == 10 and len(set(others)) == 1 and len(calls) == 1
    assert source.token("api") == others[0]  # the mint also filled the cache
    assert caplog.records == []


def test_a_mint_its_caller_left_settles_without_leaks(
    clock: FixedClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A mint whose only caller was cancelled is neither left pending nor reported as an
    unretrieved task exception, and never blocks the audience afterwards."""
    calls: list[str] = []

    async def failing(audience: str) -> str:
        calls.append(audience)
        await asyncio.sleep(0.1)
        raise SourceError("endpoint down")

    async def hanging(audience: str) -> str:
        calls.append(audience)
        await asyncio.sleep(60)
        raise AssertionError("not reached")

    def mint(audience: str) -> str:
        calls.append(f"sync {audience}")
        return fake_jwt(clock.now().timestamp() + 300)

    async def abandon(source: CachedTokenSource, wait: float) -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(source.token_async("api"), 0.05)
        await asyncio.sleep(wait)

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        failed = CachedTokenSource(mint, mint_async=failing, clock=clock)
        asyncio.run(abandon(failed, 0.2))  # the mint fails after its caller left
        gc.collect()
        # the loop closes while the mint still runs: it is cancelled and its flight settled
        hung = CachedTokenSource(mint, mint_async=hanging, clock=clock)
        asyncio.run(abandon(hung, 0))
        gc.collect()
    began = time.monotonic()
    assert failed.token("api") and hung.token("api")  # no wait on a flight nobody settles
    assert time.monotonic() - began < 1
    assert calls == ["api", "api", "sync api", "sync api"]
    assert caplog.records == []


def test_a_mint_whose_event_loop_closed_under_it_never_blocks_the_audience(
    clock: FixedClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A loop closed without cancelling its tasks (``run_until_complete`` then ``close``,
    unlike ``asyncio.run``) leaves the minting task it ran pending for good: the next caller
    mints instead of waiting on it, and a caller already waiting on it is told at once."""
    calls: list[str] = []
    waiting: list[BaseException] = []
    minting = threading.Event()

    async def stalled(audience: str) -> str:
        calls.append(audience)
        minting.set()
        await asyncio.Event().wait()  # outlives its loop
        raise AssertionError("not reached")

    def mint(audience: str) -> str:
        calls.append(f"sync {audience}")
        return fake_jwt(clock.now().timestamp() + 300)

    source = CachedTokenSource(mint, mint_async=stalled, clock=clock)
    cache = source._cache
    loop = asyncio.new_event_loop()
    running = threading.Thread(target=loop.run_forever)
    running.start()
    try:
        started = asyncio.run_coroutine_threadsafe(source.token_async("api"), loop)
        assert minting.wait(5)  # the mint runs on the running loop

        def wait() -> None:
            try:
                source.token("api")  # the loop runs: this caller waits on its flight
            except SourceError as exc:
                waiting.append(exc)

        waiter = threading.Thread(target=wait)
        waiter.start()
        flight = cache._flights["api"][0]
        deadline = time.monotonic() + 5
        while not flight._condition._waiters and time.monotonic() < deadline:  # type: ignore[attr-defined]
            waiter.join(0.001)  # until the waiter is blocked on the flight
    finally:
        loop.call_soon_threadsafe(loop.stop)
        running.join(5)
    started.cancel()
    loop.close()  # the minting task is never cancelled: it will never run again
    assert source.token("api")  # minted here, not a wait for wait_timeout and a SourceError
    waiter.join(5)
    assert calls == ["api", "sync api"]
    assert len(waiting) == 1 and "interrupted" in str(waiting[0])
    assert not cache._tasks  # the stalled task is not kept for ever
    with caplog.at_level(logging.CRITICAL, logger="asyncio"):  # "destroyed but pending"
        gc.collect()
    assert source.token("api")  # settling the lost flight late changed nothing
    assert calls == ["api", "sync api"]


def test_a_mint_whose_event_loop_stopped_under_it_never_blocks_the_audience(
    clock: FixedClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A sync wrapper runs ``token_async`` under ``run_until_complete`` with a deadline: the
    caller is cancelled, the loop stops with the minting task pending, and is not closed.
    Every later caller for that audience waited on that task (30 s, then SourceError) for as
    long as the loop stayed idle; the next caller mints instead."""
    calls: list[str] = []
    go_on = asyncio.Event()

    async def slow(audience: str) -> str:
        calls.append(audience)
        await go_on.wait()
        return fake_jwt(clock.now().timestamp() + 300, n=1)

    def mint(audience: str) -> str:
        calls.append(f"sync {audience}")
        return fake_jwt(clock.now().timestamp() + 300, n=2)

    source = CachedTokenSource(mint, mint_async=slow, clock=clock)
    loop = asyncio.new_event_loop()
    try:

        async def with_deadline() -> None:
            task = asyncio.ensure_future(source.token_async("api"))
            while not calls:  # it starts the mint
                await asyncio.sleep(0)
            task.cancel()  # the caller's deadline
            with pytest.raises(asyncio.CancelledError):
                await task

        loop.run_until_complete(with_deadline())  # stopped now, the minting task pending
        token = source.token("api")  # minted here, at once
        assert calls == ["api", "sync api"]
        go_on.set()
        old = list(source._cache._tasks)
        loop.run_until_complete(asyncio.wait(old))  # the old task settles its own flight
        assert source.token("api") == token  # and does not replace the token minted since
    finally:
        with caplog.at_level(logging.CRITICAL, logger="asyncio"):
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()


def test_a_caller_cancelled_as_the_shared_mint_ends_is_cancelled(clock: FixedClock) -> None:
    """A caller waiting on another's mint and cancelled just as the token arrives gets its
    CancelledError, not the token: its task stops as it was asked to."""
    cache: TokenCache[str] = TokenCache(clock=clock)
    waiter: asyncio.Future[str] | None = None

    async def mint() -> str:
        while waiter is None or not waiter_waits():
            await asyncio.sleep(0)
        asyncio.get_running_loop().call_soon(waiter.cancel)  # as the token is handed over
        return fake_jwt(clock.now().timestamp() + 300)

    def waiter_waits() -> bool:
        return bool(cache._flights["api"][0]._done_callbacks)  # type: ignore[attr-defined]

    async def main() -> str:
        nonlocal waiter
        minting = asyncio.ensure_future(cache.get_async("api", mint))
        await asyncio.sleep(0)  # the mint is under way
        waiter = asyncio.ensure_future(cache.get_async("api", mint))
        with pytest.raises(asyncio.CancelledError):
            await waiter
        return await minting

    token = asyncio.run(main())
    assert cache.get("api", lambda: "unused") == token


def test_async_without_mint_async_runs_mint_in_a_thread(clock: FixedClock) -> None:
    loop_threads: list[int] = []

    def mint(audience: str) -> str:
        loop_threads.append(threading.get_ident())
        return fake_jwt(clock.now().timestamp() + 300)

    source = CachedTokenSource(mint, clock=clock)
    asyncio.run(source.token_async("api"))
    assert loop_threads and loop_threads[0] != threading.get_ident()


def test_cache_is_bounded(clock: FixedClock) -> None:
    minter = Minter(clock)
    source = CachedTokenSource(minter, max_audiences=2, clock=clock)
    source.token("a")
    source.token("b")
    source.token("a")  # a is now the most recently used
    source.token("c")  # evicts b
    source.token("a")
    assert minter.calls == ["a", "b", "c"]
    source.token("b")
    assert minter.calls == ["a", "b", "c", "b"]


def test_token_cache_configuration_errors() -> None:
    for options in (
        {"refresh_before": -1},
        {"max_entries": 0},
        {"default_lifetime": 0},
        {"retry_interval": float("nan")},
        {"clock": object()},
    ):
        with pytest.raises(ConfigurationError):
            TokenCache(**options)
    with pytest.raises(ConfigurationError):
        CachedTokenSource("not callable")  # type: ignore[arg-type]


def test_self_issued_tokens_verify_and_are_cached_per_audience(clock: FixedClock) -> None:
    key = PrivateJWK.generate("ES256")
    issuer = TokenIssuer(key, issuer="spiffe://example.org/orders", clock=clock)
    source = SelfIssuedTokenSource(
        issuer,
        subject="spiffe://example.org/orders",
        scopes=["read", "write"],
        ttl=120,
        clock=clock,
    )
    token = source.token("https://payments.example")
    assert source.token("https://payments.example") == token
    assert asyncio.run(source.token_async("https://payments.example")) == token
    verifier = TokenVerifier(
        issuer="spiffe://example.org/orders",
        audience="https://payments.example",
        keys=issuer.key_ring,
        algorithms=["ES256"],
        clock=clock,
    )
    verified = verifier.verify(token)
    assert verified.subject == "spiffe://example.org/orders"
    assert verified.scopes == {"read", "write"}
    assert (verified.expires_at - clock.now()).total_seconds() <= 120
    other = source.token("https://inventory.example")
    assert other != token
    clock.advance(100)  # 120 s lifetime: refreshed 24 s before exp
    assert source.token("https://payments.example") != token
    assert "SelfIssuedTokenSource" in repr(source)
    # minted by the async path too, and scopes given as one space-separated string
    spaced = SelfIssuedTokenSource(
        issuer, subject="spiffe://example.org/orders", scopes="read write", clock=clock
    )
    first = asyncio.run(spaced.token_async("https://payments.example"))
    assert verifier.verify(first).scopes == {"read", "write"}
    assert spaced.token("https://payments.example") == first


def test_self_issued_configuration_errors(clock: FixedClock) -> None:
    issuer = TokenIssuer(PrivateJWK.generate("ES256"), issuer="me", clock=clock)
    with pytest.raises(ConfigurationError):
        SelfIssuedTokenSource(issuer, subject="")
    with pytest.raises(ConfigurationError):
        SelfIssuedTokenSource(issuer, subject="me", scopes=["bad scope"])
    with pytest.raises(ConfigurationError):
        SelfIssuedTokenSource(issuer, subject="me", ttl=0)
    with pytest.raises(ConfigurationError):
        SelfIssuedTokenSource("issuer", subject="me")  # type: ignore[arg-type]


def test_invalidate_forgets_one_audience(clock: FixedClock) -> None:
    minter = Minter(clock)
    source = CachedTokenSource(minter, clock=clock)
    a, b = source.token("https://a.example"), source.token("https://b.example")
    source.invalidate("https://a.example")
    assert source.token("https://a.example") != a  # minted again
    assert source.token("https://b.example") == b  # untouched
    assert minter.calls == ["https://a.example", "https://b.example", "https://a.example"]
    cache: TokenCache[tuple[str, int]] = TokenCache(clock=clock)
    for n in range(3):
        cache.get(("x", n), lambda n=n: fake_jwt(clock.now().timestamp() + 60, n=n))  # type: ignore[misc]
    cache.invalidate_where(lambda key: key[1] > 0)
    fresh = fake_jwt(clock.now().timestamp() + 60, n=99)
    assert cache.get(("x", 1), lambda: fresh) == fresh
    assert cache.get(("x", 0), lambda: fresh) != fresh


def test_a_source_tells_when_a_token_it_holds_expires(clock: FixedClock) -> None:
    """What a caller that keeps a token (the gRPC channels' memo) needs for an opaque token,
    whose expiry it cannot read: also while a failing refresh hands the token out."""
    minted = ["opaque"]

    def mint(audience: str) -> MintedToken:
        if not minted:
            raise RuntimeError("token endpoint down")
        return MintedToken(minted.pop(), clock.now() + timedelta(seconds=100))

    source = CachedTokenSource(mint, clock=clock)
    token = source.token("https://a.example")
    expires = clock.now() + timedelta(seconds=100)
    assert source.expires_at("https://a.example", token) == expires
    assert source.expires_at("https://b.example", token) is None
    assert source.expires_at("https://a.example", "another") is None
    clock.advance(90)  # refresh due, and failing: the token is handed out until it expires
    assert source.token("https://a.example") == token
    assert source.expires_at("https://a.example", token) == expires
    with pytest.raises(ConfigurationError):
        source.expires_at("", token)


def test_invalidate_with_a_token_forgets_that_token_only(clock: FixedClock) -> None:
    """A refusal of a token the cache already replaced leaves its successor alone."""
    minter = Minter(clock)
    source = CachedTokenSource(minter, clock=clock)
    old = source.token("https://a.example")
    clock.advance(241)  # its refresh is due (300 s lifetime, refreshed 60 s before)
    new = source.token("https://a.example")
    assert new != old
    source.invalidate("https://a.example", token=old)  # the late refusal of the old one
    assert source.token("https://a.example") == new
    source.invalidate("https://a.example", token=new)
    assert source.token("https://a.example") not in (old, new)
    assert len(minter.calls) == 3
    cache: TokenCache[tuple[str, int]] = TokenCache(clock=clock)
    tokens = [fake_jwt(clock.now().timestamp() + 60, n=n) for n in range(3)]
    for n, token in enumerate(tokens):
        cache.get(("x", n), lambda token=token: token)  # type: ignore[misc]
    cache.invalidate_where(lambda key: key[0] == "x", token=tokens[1])
    fresh = fake_jwt(clock.now().timestamp() + 60, n=99)
    assert [cache.get(("x", n), lambda: fresh) for n in range(3)] == [tokens[0], fresh, tokens[2]]


def test_a_caller_waiting_on_a_refresh_gives_up_after_wait_timeout(clock: FixedClock) -> None:
    cache: TokenCache[str] = TokenCache(wait_timeout=0.05, clock=clock)
    started, release = threading.Event(), threading.Event()
    token = fake_jwt(clock.now().timestamp() + 300)

    def mint() -> str:
        started.set()
        release.wait(5)
        return token

    results: list[str] = []
    minter = threading.Thread(target=lambda: results.append(cache.get("api", mint)))
    minter.start()
    assert started.wait(5)
    with pytest.raises(SourceError, match="timed out waiting for a token refresh"):
        cache.get("api", mint)
    release.set()
    minter.join(5)
    assert results == [token]  # the minting caller is not failed by the waiter giving up
    assert cache.get("api", mint) == token


def test_an_async_caller_waiting_on_a_refresh_gives_up_after_wait_timeout(
    clock: FixedClock,
) -> None:
    cache: TokenCache[str] = TokenCache(wait_timeout=0.05, clock=clock)
    token = fake_jwt(clock.now().timestamp() + 300)

    async def main() -> None:
        started, release = asyncio.Event(), asyncio.Event()

        async def mint() -> str:
            started.set()
            await release.wait()
            return token

        minting = asyncio.ensure_future(cache.get_async("api", mint))
        await started.wait()
        with pytest.raises(SourceError, match="timed out waiting for a token refresh"):
            await cache.get_async("api", mint)
        release.set()
        assert await minting == token
        assert await cache.get_async("api", mint) == token

    asyncio.run(main())


def test_read_unverified_reads_three_part_tokens_of_at_most_64_kib_only() -> None:
    header, claims = b64({"alg": "ES256"}), b64({"exp": 1})
    assert read_unverified(f"{header}.{claims}.c2ln") == ({"alg": "ES256"}, {"exp": 1})
    assert read_unverified(f"{header}.{claims}") is None
    assert read_unverified(f"{header}.{claims}.c2ln.c2ln") is None
    prefix = f"{header}.{claims}."  # the signature part fills the rest, never decoded
    assert read_unverified(prefix + "A" * (64 * 1024 - len(prefix))) is not None
    assert read_unverified(prefix + "A" * (64 * 1024 + 1 - len(prefix))) is None


def test_check_token_refuses_empty_oversized_and_non_string_tokens() -> None:
    assert check_token("a" * (64 * 1024)) == "a" * (64 * 1024)
    for bad in ("", "a" * (64 * 1024 + 1), b"abc", None):
        with pytest.raises(SourceError, match="empty, oversized or non-string"):
            check_token(bad)
    with pytest.raises(SourceError, match="invalid characters"):
        check_token("a b")


def test_token_cache_durations_must_be_numbers_not_bools_or_strings() -> None:
    for options in ({"retry_interval": True}, {"wait_timeout": "30"}, {"default_lifetime": None}):
        with pytest.raises(ConfigurationError, match="must be a number of seconds"):
            TokenCache(**options)
    assert TokenCache(retry_interval=0)._retry == 0.0  # an int is a number of seconds


def test_finished_async_mints_are_not_retained(clock: FixedClock) -> None:
    cache: TokenCache[str] = TokenCache(clock=clock)

    async def mint() -> str:
        return fake_jwt(clock.now().timestamp() + 300)

    async def fail() -> str:
        raise SourceError("endpoint down")

    async def main() -> None:
        assert await cache.get_async("api", mint)
        with pytest.raises(SourceError):
            await cache.get_async("other", fail)
        await asyncio.sleep(0)  # the done callbacks run

    asyncio.run(main())
    assert cache._tasks == set()


def test_token_cache_defaults(clock: FixedClock) -> None:
    """An opaque token lives 60 s and is refreshed 12 s (a fifth) ahead; a failed refresh is
    retried after 5 s; 256 audiences are kept."""
    cache: TokenCache[str] = TokenCache(clock=clock)
    calls: list[str] = []
    fail = False

    def mint() -> str:
        calls.append("mint")
        if fail:
            raise SourceError("endpoint down")
        return f"opaque{len(calls)}"

    assert cache.get("api", mint) == "opaque1"
    clock.advance(47.9)
    assert cache.get("api", mint) == "opaque1"
    clock.advance(0.1)
    assert cache.get("api", mint) == "opaque2"  # refreshed 12 s before its 60 s expiry
    fail = True
    clock.advance(48)
    assert cache.get("api", mint) == "opaque2" and len(calls) == 3  # the refresh failed
    clock.advance(4.9)
    assert cache.get("api", mint) == "opaque2" and len(calls) == 3
    clock.advance(0.1)
    assert cache.get("api", mint) == "opaque2" and len(calls) == 4  # retried after 5 s
    fail = False
    bounded: TokenCache[int] = TokenCache(clock=clock)
    for key in range(256):
        bounded.get(key, mint)
    minted = len(calls)
    assert [bounded.get(key, mint) for key in range(256)] and len(calls) == minted
    bounded.get(256, mint)  # the 257th audience evicts the least recently used (0)
    bounded.get(1, mint)
    assert len(calls) == minted + 1
    bounded.get(0, mint)
    assert len(calls) == minted + 2


def test_max_entries_must_be_an_int() -> None:
    for bad in (True, 2.0, 0, -1):
        with pytest.raises(ConfigurationError, match="max_entries"):
            TokenCache(max_entries=bad)  # type: ignore[arg-type]


def test_clear_forgets_every_token(clock: FixedClock) -> None:
    cache: TokenCache[str] = TokenCache(clock=clock)
    calls: list[str] = []

    def mint() -> str:
        calls.append("mint")
        return f"opaque{len(calls)}"

    assert (cache.get("a", mint), cache.get("b", mint)) == ("opaque1", "opaque2")
    cache.clear()
    assert (cache.get("a", mint), cache.get("b", mint)) == ("opaque3", "opaque4")


def test_a_token_expired_while_backing_off_is_not_used(clock: FixedClock) -> None:
    cache: TokenCache[str] = TokenCache(retry_interval=30, clock=clock)
    fail: list[Exception] = []

    def mint() -> MintedToken:
        if fail:
            raise fail[0]
        return MintedToken("opaque", clock.now() + timedelta(seconds=60))

    assert cache.get("api", mint) == "opaque"
    fail.append(SourceError("endpoint down"))
    clock.advance(50)
    assert cache.get("api", mint) == "opaque"  # the refresh failed: next try in 30 s
    clock.advance(10)
    with pytest.raises(SourceError, match="endpoint down"):
        cache.get("api", mint)


def test_an_interrupted_refresh_never_falls_back_and_waiters_get_a_source_error(
    clock: FixedClock,
) -> None:
    cache: TokenCache[str] = TokenCache(clock=clock)
    assert cache.get("api", lambda: "opaque") == "opaque"
    clock.advance(55)  # time to refresh

    def interrupted() -> str:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.get("api", interrupted)  # not swallowed by using the current token
    for error, shared in ((KeyboardInterrupt(), "interrupted"), (SourceError("down"), "down")):
        mine, theirs = mint_with_a_waiter(cache, error)
        assert mine == [error]
        assert len(theirs) == 1 and isinstance(theirs[0], SourceError)
        assert shared in str(theirs[0])


def mint_with_a_waiter(
    cache: TokenCache[str], error: BaseException
) -> tuple[list[BaseException], list[BaseException]]:
    """What a minting caller and one waiting on its refresh raise when the mint raises ``error``."""
    started, release = threading.Event(), threading.Event()
    mine: list[BaseException] = []
    theirs: list[BaseException] = []

    def held() -> str:
        started.set()
        release.wait(5)
        raise error

    def call(into: list[BaseException]) -> None:
        try:
            cache.get("other", held)
        except BaseException as exc:
            into.append(exc)

    minter = threading.Thread(target=call, args=(mine,))
    minter.start()
    assert started.wait(5)
    waiter = threading.Thread(target=call, args=(theirs,))
    waiter.start()
    flight = cache._flights["other"][0]
    deadline = time.monotonic() + 5
    while not flight._condition._waiters and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.001)  # until the waiter is blocked on the refresh in flight
    release.set()
    minter.join(5)
    waiter.join(5)
    return mine, theirs


def test_a_token_minted_across_a_clear_answers_its_caller_but_is_not_kept() -> None:
    # clear() forgets what was granted before it (a withdrawn identity, a refused token): a
    # mint already under way cannot put its token back for later callers
    cache: TokenCache[str] = TokenCache()
    started, release = threading.Event(), threading.Event()
    minted: list[str] = []

    def slow() -> str:
        started.set()
        assert release.wait(5)
        minted.append(f"token-{len(minted)}")
        return minted[-1]

    answer: list[str] = []
    minter = threading.Thread(target=lambda: answer.append(cache.get("api", slow)))
    minter.start()
    assert started.wait(5)
    cache.clear()
    release.set()
    minter.join(5)
    assert answer == ["token-0"]
    assert cache.get("api", slow) == "token-1"  # minted again: the first was not kept
    assert cache.get("api", slow) == "token-1"  # and this one is


def test_durations_are_bounded_where_dates_and_waits_can_reach() -> None:
    """A retry interval or default lifetime past a year, or a wait past a day, was accepted
    and then failed at run time: a failed refresh raised OverflowError (leaving its waiters
    to time out), every opaque token was unusable, every waiter raised OverflowError."""
    year = 365 * 86400
    for options in (
        {"default_lifetime": year + 1},
        {"retry_interval": year + 1},
        {"wait_timeout": 86400.5},
        {"retry_interval": 1e12},
        {"wait_timeout": 1e10},
    ):
        with pytest.raises(ConfigurationError, match="must be at most"):
            TokenCache(**options)
    with pytest.raises(ConfigurationError, match="retry_interval must be at most"):
        CachedTokenSource(lambda audience: "t", retry_interval=1e12)
    cache: TokenCache[str] = TokenCache(
        default_lifetime=year, retry_interval=year, wait_timeout=86400
    )
    assert (cache._default, cache._retry, cache._wait) == (year, year, 86400)


def test_configuration_minimums_are_inclusive() -> None:
    cache: TokenCache[str] = TokenCache(
        refresh_before=0, max_entries=1, default_lifetime=1, retry_interval=0, wait_timeout=0.001
    )
    assert cache._before == cache._retry == 0 and cache._max == cache._default == 1
    assert cache._wait == 0.001


def test_a_mint_result_that_fails_to_be_read_is_a_source_error(clock: FixedClock) -> None:
    class Unreadable(datetime):
        def utcoffset(self) -> timedelta:
            raise RuntimeError("cannot be read")

    cache: TokenCache[str] = TokenCache(clock=clock)
    broken = MintedToken("opaque", Unreadable(2030, 1, 1))
    with pytest.raises(SourceError, match="unusable token"):
        cache.get("api", lambda: broken)
    assert cache.get("api", lambda: "opaque") == "opaque"  # no flight left waiting


@pytest.mark.parametrize("audience", ["", 5, None, b"api"])
def test_an_audience_must_be_a_non_empty_string_sync_and_async(
    clock: FixedClock, audience: Any
) -> None:
    source = CachedTokenSource(Minter(clock), clock=clock)
    with pytest.raises(ConfigurationError, match="audience must be a non-empty string"):
        source.token(audience)
    with pytest.raises(ConfigurationError, match="audience must be a non-empty string"):
        asyncio.run(source.token_async(audience))
    with pytest.raises(ConfigurationError, match="audience must be a non-empty string"):
        source.invalidate(audience)


def test_a_cached_source_forgets_its_tokens_on_clear_and_has_its_defaults(
    clock: FixedClock,
) -> None:
    """An opaque token lives 60 s by default (refreshed 12 s ahead); clear() forgets every
    audience's token."""
    minted: list[str] = []

    def mint(audience: str) -> str:
        minted.append(audience)
        return f"opaque-{len(minted)}"

    source = CachedTokenSource(mint, clock=clock)
    assert source.token("a") == "opaque-1" and source.token("b") == "opaque-2"
    source.clear()
    assert source.token("a") == "opaque-3" and source.token("b") == "opaque-4"
    clock.advance(47.9)
    assert source.token("a") == "opaque-3"
    clock.advance(0.1)
    assert source.token("a") == "opaque-5"  # 60 s default lifetime, refreshed at 48 s


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"subject": ""}, "subject must be a non-empty string"),
        ({"subject": 7}, "subject must be a non-empty string"),
        ({"ttl": 0.5}, "ttl"),
        ({"ttl": "300"}, "ttl"),
        ({"ttl": True}, "ttl"),
    ],
)
def test_self_issued_sources_check_their_subject_and_ttl(
    settings: dict[str, Any], message: str
) -> None:
    issuer = TokenIssuer(PrivateJWK.generate("ES256"), issuer="https://issuer.example")
    arguments: dict[str, Any] = {"subject": "spiffe://example.org/web", "ttl": 60, **settings}
    with pytest.raises(ConfigurationError, match=message):
        SelfIssuedTokenSource(issuer, **arguments)


def test_a_cached_source_needs_callable_minting_functions(clock: FixedClock) -> None:
    with pytest.raises(ConfigurationError):
        CachedTokenSource("mint", clock=clock)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        CachedTokenSource(Minter(clock), mint_async="mint", clock=clock)  # type: ignore[arg-type]


def test_a_forked_child_mints_for_itself_while_its_parent_s_mint_runs(clock: FixedClock) -> None:
    """A fork while a token is being minted (a worker forked from a process that made calls):
    the minting thread stays in the parent, so the flight the child inherited never settles.
    The child's callers must mint, not wait out ``wait_timeout`` on it call after call."""
    cache: TokenCache[str] = TokenCache(wait_timeout=5, clock=clock)
    started, release = threading.Event(), threading.Event()
    parents = fake_jwt(clock.now().timestamp() + 300, n="parent")
    childs = fake_jwt(clock.now().timestamp() + 300, n="child")

    def held() -> str:
        started.set()
        release.wait(10)
        return parents

    results: list[str] = []
    minter = threading.Thread(target=lambda: results.append(cache.get("api", held)))
    minter.start()
    try:
        assert started.wait(10)
        assert in_child(lambda: cache.get("api", lambda: childs)) == childs
    finally:
        release.set()
        minter.join(10)
    assert results == [parents] and cache.get("api", held) == parents
