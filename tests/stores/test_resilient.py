"""ResilientStore: per-feature failure policies over a store that can be switched off."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from zerotrust import FixedClock
from zerotrust.errors import ConfigurationError, StoreFull, StoreUnavailable
from zerotrust.stores import MemoryStore, RateLimitResult, ResilientStore, Revocation, Store

ISS = "https://issuer.example"


class Flaky:
    """A MemoryStore whose every method raises StoreUnavailable while ``down`` is set."""

    def __init__(self, clock: FixedClock) -> None:
        self.inner = MemoryStore(clock=clock)
        self.down = False

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.inner, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                raise StoreUnavailable("down for maintenance")
            return target(*args, **kwargs)

        async def acall(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                raise StoreUnavailable("down for maintenance")
            return await target(*args, **kwargs)

        return acall if name.endswith("_async") else call


def queries(store: ResilientStore, t: float) -> tuple[bool, bool, RateLimitResult]:
    return (
        store.is_revoked(jti="j", subject="s", issuer=ISS, issued_at=t),
        store.check_and_store("once", expires_at=t + 60),
        store.acquire("k", rate=1.0, burst=5, cost=2),
    )


async def aqueries(store: ResilientStore, t: float) -> tuple[bool, bool, RateLimitResult]:
    return (
        await store.is_revoked_async(jti="j", subject="s", issuer=ISS, issued_at=t),
        await store.check_and_store_async("once", expires_at=t + 60),
        await store.acquire_async("k", rate=1.0, burst=5, cost=2),
    )


def test_defaults_fail_closed(clock: FixedClock) -> None:
    flaky = Flaky(clock)
    store = ResilientStore(flaky)  # type: ignore[arg-type]
    assert isinstance(store, Store)
    t = clock.now().timestamp()
    store.revoke_token("j", expires_at=t + 60)
    assert queries(store, t) == (True, True, RateLimitResult(True, 3, 0.0))
    flaky.down = True
    with pytest.raises(StoreUnavailable):
        store.is_revoked(jti="j", subject=None, issuer=ISS, issued_at=t)
    with pytest.raises(StoreUnavailable):
        store.check_and_store("x", expires_at=t + 60)
    with pytest.raises(StoreUnavailable):
        store.acquire("k", rate=1.0, burst=5)
    with pytest.raises(StoreUnavailable):
        asyncio.run(store.acquire_async("k", rate=1.0, burst=5))


def test_open_policies_answer_permissively_and_log_once(
    clock: FixedClock, caplog: pytest.LogCaptureFixture
) -> None:
    flaky = Flaky(clock)
    store = ResilientStore(flaky, revocation="open", replay="open", rate_limit="open")  # type: ignore[arg-type]
    t = clock.now().timestamp()
    store.revoke_token("j", expires_at=t + 60)
    flaky.down = True
    allowed = (False, True, RateLimitResult(True, 3, 0.0))
    with caplog.at_level(logging.INFO, logger="zerotrust.stores"):
        assert queries(store, t) == allowed
        assert queries(store, t) == allowed
        assert asyncio.run(aqueries(store, t)) == allowed
        assert [r.levelno for r in caplog.records] == [logging.WARNING] * 3
        flaky.down = False
        assert asyncio.run(aqueries(store, t))[0] is True
        assert queries(store, t)[1] is False  # "once" was stored by the async call above
    assert [r.levelno for r in caplog.records] == [logging.WARNING] * 3 + [logging.INFO] * 3


def test_mixed_policies(clock: FixedClock) -> None:
    flaky = Flaky(clock)
    store = ResilientStore(flaky, rate_limit="open")  # type: ignore[arg-type]
    flaky.down = True
    assert store.acquire("k", rate=1.0, burst=1).allowed
    with pytest.raises(StoreUnavailable):
        store.check_and_store("k", expires_at=0)
    assert "rate_limit='open'" in repr(store)
    assert "replay='closed'" in repr(store)


def test_revocation_writes_and_listeners_delegate(clock: FixedClock) -> None:
    flaky = Flaky(clock)
    store = ResilientStore(flaky, revocation="open")  # type: ignore[arg-type]
    events: list[Revocation] = []
    store.add_revocation_listener(events.append)
    t = clock.now().timestamp()

    async def revoke_all() -> None:
        await store.revoke_token_async("j", expires_at=t + 60)
        await store.revoke_subject_async("s", issuer=ISS, until=t + 60)
        await store.revoke_issued_before_async(ISS, before=t, until=t + 60)

    store.revoke_subject("s2", issuer=ISS, until=t + 60)
    store.revoke_issued_before(ISS, before=t - 1, until=t + 60)
    asyncio.run(revoke_all())
    assert [e.kind for e in events] == ["subject", "issuer", "token", "subject", "issuer"]
    flaky.down = True
    with pytest.raises(StoreUnavailable):
        store.revoke_token("j2", expires_at=t + 60)
    with pytest.raises(StoreUnavailable):
        asyncio.run(store.revoke_subject_async("s", issuer=ISS, until=t + 60))


@pytest.mark.parametrize("feature", ["revocation", "replay", "rate_limit"])
def test_bad_policy(feature: str) -> None:
    with pytest.raises(ConfigurationError, match=feature):
        ResilientStore(MemoryStore(), **{feature: "ajar"})  # type: ignore[arg-type]


def test_async_checks_fail_closed_by_default(clock: FixedClock) -> None:
    flaky = Flaky(clock)
    store = ResilientStore(flaky)  # type: ignore[arg-type]
    t = clock.now().timestamp()
    store.revoke_token("j", expires_at=t + 60)
    assert asyncio.run(aqueries(store, t)) == (True, True, RateLimitResult(True, 3, 0.0))
    flaky.down = True
    with pytest.raises(StoreUnavailable):
        asyncio.run(store.is_revoked_async(jti="j", subject=None, issuer=ISS, issued_at=t))
    with pytest.raises(StoreUnavailable):
        asyncio.run(store.check_and_store_async("x", expires_at=t + 60))
    flaky.down = False
    assert asyncio.run(aqueries(store, t)) == (True, False, RateLimitResult(True, 1, 0.0))


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_every_outage_is_logged_once_and_every_recovery_once(
    clock: FixedClock, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    flaky = Flaky(clock)
    store = ResilientStore(flaky, revocation="open", replay="open", rate_limit="open")  # type: ignore[arg-type]
    t = clock.now().timestamp()

    def ask() -> tuple[bool, bool, RateLimitResult]:
        return queries(store, t) if mode == "sync" else asyncio.run(aqueries(store, t))

    levels = {"down": [logging.WARNING] * 3, "up": [logging.INFO] * 3}
    expected: list[int] = []
    with caplog.at_level(logging.INFO, logger="zerotrust.stores"):
        for state in ("down", "up", "down", "up"):
            flaky.down = state == "down"
            ask()
            ask()  # the same state again: nothing more to say
            expected += levels[state]
    assert [r.levelno for r in caplog.records] == expected


def test_one_token_is_taken_unless_told_otherwise(clock: FixedClock) -> None:
    flaky = Flaky(clock)
    store = ResilientStore(flaky, rate_limit="open")  # type: ignore[arg-type]
    assert store.acquire("k", rate=1.0, burst=5) == RateLimitResult(True, 4, 0.0)
    assert asyncio.run(store.acquire_async("k", rate=1.0, burst=5)) == RateLimitResult(True, 3, 0.0)
    flaky.down = True  # failing open answers as for a full bucket, minus one token
    assert store.acquire("k", rate=1.0, burst=5) == RateLimitResult(True, 4, 0.0)
    assert asyncio.run(store.acquire_async("k", rate=1.0, burst=5)) == RateLimitResult(True, 4, 0.0)


def test_the_wrapped_stores_replay_cap_shows_through(clock: FixedClock) -> None:
    assert ResilientStore(MemoryStore(clock=clock, replay_max_ttl=60)).replay_max_ttl == 60.0

    class NoCap:
        replay_max_ttl = "1 day"  # not a number: no cap the Guard could check

    assert ResilientStore(NoCap()).replay_max_ttl is None  # type: ignore[arg-type]
    assert ResilientStore(Flaky(clock)).replay_max_ttl is None  # type: ignore[arg-type]


def test_a_full_store_is_never_failed_open(clock: FixedClock) -> None:
    """A replay table full of live proofs is not an outage: any caller can fill it with proofs
    of its own, and with ``replay="open"`` would then have every new proof, a captured one
    too, answered *first use* as often as it is sent."""
    t = clock.now().timestamp()
    store = ResilientStore(MemoryStore(clock=clock, max_replay_entries=2), replay="open")
    assert store.check_and_store("mine-1", expires_at=t + 60)
    assert store.check_and_store("mine-2", expires_at=t + 60)
    for _ in range(2):
        with pytest.raises(StoreFull, match="replay table is full"):
            store.check_and_store("captured", expires_at=t + 60)
        with pytest.raises(StoreFull):
            asyncio.run(store.check_and_store_async("captured", expires_at=t + 60))
    assert not store.check_and_store("mine-1", expires_at=t + 60)  # replays still seen
    assert isinstance(StoreFull("x"), StoreUnavailable) and StoreFull.code == "store_full"
