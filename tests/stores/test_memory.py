"""MemoryStore specifics: bounds, eviction order, fail-closed revocation table, settings."""

from __future__ import annotations

import asyncio

import pytest

from zerotrust import FixedClock
from zerotrust.errors import ConfigurationError, StoreUnavailable
from zerotrust.stores import MemoryStore, StoreHealth
from zerotrust.stores._logic import REVOCATION_GRACE

ISS = "https://issuer.example"


def ts(clock: FixedClock) -> float:
    return clock.now().timestamp()


def test_full_revocation_table_refuses_instead_of_forgetting(clock: FixedClock) -> None:
    store = MemoryStore(clock=clock, max_revocations=3)
    t = ts(clock)
    for jti in ("a", "b", "c"):
        store.revoke_token(jti, expires_at=t + 100)
    with pytest.raises(StoreUnavailable, match="revocation table is full"):
        store.revoke_token("d", expires_at=t + 1000)
    assert all(store.is_revoked(jti=j, subject=None, issuer=ISS, issued_at=None) for j in "abc")
    assert not store.is_revoked(jti="d", subject=None, issuer=ISS, issued_at=None)
    store.revoke_token("a", expires_at=t + 500)  # merging into an existing record still works


def test_full_revocation_table_makes_room_from_lapsed_entries(clock: FixedClock) -> None:
    store = MemoryStore(clock=clock, max_revocations=2)
    t = ts(clock)
    store.revoke_token("short", expires_at=t + 10)
    store.revoke_subject("alice", issuer=ISS, until=t + 100)
    clock.advance(10 + REVOCATION_GRACE)
    store.revoke_issued_before(ISS, before=t, until=t + 100)
    assert store.is_revoked(jti=None, subject="alice", issuer=ISS, issued_at=t)
    assert store.is_revoked(jti=None, subject=None, issuer=ISS, issued_at=t - 1)


def test_full_replay_cache_takes_lapsed_slots_and_never_evicts_a_live_entry(
    clock: FixedClock,
) -> None:
    store = MemoryStore(clock=clock, max_replay_entries=3)
    t = ts(clock)
    assert store.check_and_store("lapses", expires_at=t + 5)
    assert store.check_and_store("late", expires_at=t + 300)
    assert store.check_and_store("soon", expires_at=t + 60)
    clock.advance(5)
    assert store.check_and_store("new1", expires_at=t + 400)  # takes the lapsed slot
    # full of live entries: a new one is refused (fail closed), none is forgotten early, or
    # a caller filling the table with proofs of its own could replay a captured one
    with pytest.raises(StoreUnavailable, match="replay table is full"):
        store.check_and_store("new2", expires_at=t + 400)
    for key in ("soon", "late", "new1"):
        assert not store.check_and_store(key, expires_at=t + 400)
    assert "replay=3" in repr(store)
    clock.advance(55)  # "soon" lapses: its slot is free again
    assert store.check_and_store("new2", expires_at=t + 400)
    assert not store.check_and_store("new2", expires_at=t + 400)


def test_full_rate_table_evicts_the_bucket_closest_to_full(clock: FixedClock) -> None:
    store = MemoryStore(clock=clock, max_rate_limit_keys=2)
    store.acquire("drained", rate=1.0, burst=10, cost=10)
    store.acquire("nearly-full", rate=1.0, burst=10, cost=1)
    store.acquire("third", rate=1.0, burst=10, cost=1)
    assert store.acquire("drained", rate=1.0, burst=10).allowed is False
    assert store.acquire("nearly-full", rate=1.0, burst=10).remaining == 9  # evicted: fresh


def test_heap_compaction_keeps_entries(clock: FixedClock) -> None:
    store = MemoryStore(clock=clock, max_rate_limit_keys=4)
    for _ in range(200):  # every acquire re-stores the bucket with a new expiry
        for key in "abcd":
            store.acquire(key, rate=1.0, burst=1000)
        clock.advance(0.001)
    assert [store.acquire(key, rate=1.0, burst=1000).remaining for key in "abcd"] == [799] * 4


def test_clock_moving_back_refills_nothing(clock: FixedClock) -> None:
    store = MemoryStore(clock=clock)
    store.acquire("k", rate=1.0, burst=2, cost=2)
    clock.advance(-30)
    assert not store.acquire("k", rate=1.0, burst=2).allowed


def test_clock_moving_back_takes_nothing_either(clock: FixedClock) -> None:
    store = MemoryStore(clock=clock)
    assert store.acquire("k", rate=1.0, burst=2).remaining == 1
    clock.advance(-0.5)
    assert store.acquire("k", rate=1.0, burst=2).allowed  # the token left is still there


def test_the_smallest_settings_are_accepted(clock: FixedClock) -> None:
    store = MemoryStore(
        clock=clock,
        max_revocations=1,
        max_replay_entries=1,
        max_rate_limit_keys=1,
        replay_max_ttl=1,
    )
    assert store.replay_max_ttl == 1


def test_replay_max_ttl_setting(clock: FixedClock) -> None:
    store = MemoryStore(clock=clock, replay_max_ttl=60)
    t = ts(clock)
    assert store.check_and_store("k", expires_at=t + 3600)
    clock.advance(60)
    assert store.check_and_store("k", expires_at=t + 3600)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_revocations": 0}, "max_revocations must be a positive int"),
        ({"max_replay_entries": -1}, "max_replay_entries must be a positive int"),
        ({"max_rate_limit_keys": 1.5}, "max_rate_limit_keys must be a positive int"),
        ({"max_revocations": True}, "max_revocations must be a positive int"),
        ({"replay_max_ttl": 0.5}, "replay_max_ttl must be at least 1 second"),
        ({"replay_max_ttl": float("inf")}, "replay_max_ttl must be finite"),
        ({"replay_max_ttl": "1h"}, "replay_max_ttl must be a number of seconds, not str"),
    ],
)
def test_bad_settings(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=f"^{message}$"):
        MemoryStore(**kwargs)  # type: ignore[arg-type]


def test_has_revocations_counts_only_what_is_held(clock: FixedClock) -> None:
    """The Guard's cached answers skip the revocation lookup while this is false: it must
    turn true with the first revocation held, and a revocation that lapsed when it was made
    is not held. Answers are bools, as the protocol says."""
    store, t = MemoryStore(clock=clock), ts(clock)
    assert store.has_revocations is False
    assert store.is_revoked(jti="j", subject="s", issuer=ISS, issued_at=t) is False
    store.revoke_token("lapsing", expires_at=t - REVOCATION_GRACE)  # its end is this instant
    assert store.has_revocations is False
    assert repr(store) == "MemoryStore(revocations=0, replay=0, rate_limits=0)"
    store.revoke_token("j", expires_at=t + 60)
    assert store.has_revocations is True
    assert store.is_revoked(jti="j", subject=None, issuer=ISS, issued_at=t) is True
    assert store.is_revoked(jti="other", subject="s", issuer=ISS, issued_at=t) is False
    assert store.check_and_store("k", expires_at=t + 60) is True
    assert store.check_and_store("k", expires_at=t + 60) is False
    store.acquire("k", rate=1.0, burst=1)
    assert repr(store) == "MemoryStore(revocations=1, replay=1, rate_limits=1)"


def test_times_are_named_when_refused(clock: FixedClock) -> None:
    store, t = MemoryStore(clock=clock), ts(clock)
    with pytest.raises(ValueError, match=r"^before must be finite$"):
        store.revoke_issued_before(ISS, before=float("nan"), until=t + 60)
    with pytest.raises(ValueError, match=r"^until must be finite$"):
        store.revoke_issued_before(ISS, before=t, until=float("nan"))
    for _ in range(2):  # with nothing revoked, then with something
        with pytest.raises(ValueError, match=r"^issued_at must be finite$"):
            store.is_revoked(jti="j", subject=None, issuer=ISS, issued_at=float("inf"))
        with pytest.raises(TypeError, match=r"^store keys must be str, not int$"):
            store.is_revoked(jti=5, subject=None, issuer=ISS, issued_at=None)  # type: ignore[arg-type]
        store.revoke_token("other", expires_at=t + 60)


def test_health_and_lifecycle(clock: FixedClock) -> None:
    store = MemoryStore(clock=clock)
    store.ping()
    assert store.health() == StoreHealth("memory", True, "ok")
    store.close()

    async def main() -> None:
        await store.ping_async()
        assert (await store.health_async()).available
        await store.aclose()

    asyncio.run(main())


def test_listener_must_be_callable() -> None:
    with pytest.raises(TypeError, match=r"^a revocation listener must be callable$"):
        MemoryStore().add_revocation_listener("not callable")  # type: ignore[arg-type]


def test_keys_must_be_text() -> None:
    with pytest.raises(TypeError, match=r"^store keys must be str, not bytes$"):
        MemoryStore().check_and_store(b"jti", expires_at=0)  # type: ignore[arg-type]


def test_stale_heap_pairs_do_not_hide_live_entries(clock: FixedClock) -> None:
    store = MemoryStore(clock=clock, max_replay_entries=2)
    t = ts(clock)
    assert store.check_and_store("a", expires_at=t + 5)
    clock.advance(5)
    assert store.check_and_store("a", expires_at=t + 105)  # lapsed, stored again
    assert store.check_and_store("b", expires_at=t + 55)
    clock.advance(5)  # the stale pair of "a" (t + 5) is due: it must not free "a"'s slot
    with pytest.raises(StoreUnavailable, match="replay table is full"):
        store.check_and_store("c", expires_at=t + 200)
    assert not store.check_and_store("a", expires_at=t + 105)
    assert not store.check_and_store("b", expires_at=t + 55)


def test_later_listener_errors_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryStore()

    def broken(event: object) -> None:
        raise RuntimeError(f"hook {len(caplog.records)}")

    store.add_revocation_listener(broken)
    store.add_revocation_listener(broken)
    with pytest.raises(RuntimeError, match="hook 0"):
        store.revoke_token("j", expires_at=4_102_444_800)
    assert "revocation listener" in caplog.records[0].getMessage()
    assert caplog.records[0].name == "zerotrust.stores"


@pytest.mark.parametrize(
    ("burst", "cost", "name"), [(2.0, 1, "burst"), (2, True, "cost"), ("2", 1, "burst")]
)
def test_bucket_sizes_must_be_ints(burst: object, cost: object, name: str) -> None:
    with pytest.raises(TypeError, match=f"^{name} must be an int$"):
        MemoryStore().acquire("k", rate=1.0, burst=burst, cost=cost)  # type: ignore[arg-type]


def test_a_guard_refuses_a_replay_cap_shorter_than_a_dpop_window() -> None:
    from zerotrust import Guard, Policy
    from zerotrust.authn.binding import DPoPConfig
    from zerotrust.dev import DevCA
    from zerotrust.pipeline import dpop_replay_window
    from zerotrust.stores import ResilientStore

    bundle = DevCA.create("example.org").bundle
    window = dpop_replay_window(DPoPConfig())
    assert window == 300 + 5 + 10
    # a proof's iat may lie leeway (5 s) ahead: its entry must outlive the window by that much
    for short in (
        MemoryStore(replay_max_ttl=305),
        MemoryStore(replay_max_ttl=window),
        ResilientStore(MemoryStore(replay_max_ttl=60)),
    ):
        with pytest.raises(ConfigurationError, match="replay_max_ttl"):
            Guard(bundles=bundle, policy=Policy([]), store=short)
    Guard(bundles=bundle, policy=Policy([]), store=MemoryStore(replay_max_ttl=window + 5))
    # without DPoP, nothing to check
    Guard(bundles=bundle, dpop=None, policy=Policy([]), store=MemoryStore(replay_max_ttl=60))


def test_an_extended_revocation_is_never_evicted_by_its_stale_expiry(clock: FixedClock) -> None:
    # revoking again with a later end leaves the earlier end behind in the expiry order; once
    # that earlier end has passed, a full table must still keep the (live) revocation
    store = MemoryStore(clock=clock, max_revocations=1)
    t = ts(clock)
    store.revoke_token("a", expires_at=t + 10)
    store.revoke_token("a", expires_at=t + 1000)
    clock.advance(11 + REVOCATION_GRACE)
    with pytest.raises(StoreUnavailable, match="revocation table is full"):
        store.revoke_token("b", expires_at=t + 5000)
    assert store.is_revoked(jti="a", subject=None, issuer=ISS, issued_at=None)
    assert not store.is_revoked(jti="b", subject=None, issuer=ISS, issued_at=None)


def test_a_full_revocation_table_drops_entries_that_lapsed_earlier(clock: FixedClock) -> None:
    store = MemoryStore(clock=clock, max_revocations=1)
    t = ts(clock)
    store.revoke_token("old", expires_at=t + 10)
    clock.advance(60 + REVOCATION_GRACE)  # well past its end, not just at it
    store.revoke_token("new", expires_at=t + 5000)
    assert store.is_revoked(jti="new", subject=None, issuer=ISS, issued_at=None)
    assert not store.is_revoked(jti="old", subject=None, issuer=ISS, issued_at=None)


def test_a_revocation_dropped_by_a_lookup_leaves_the_full_table_consistent(
    clock: FixedClock,
) -> None:
    store = MemoryStore(clock=clock, max_revocations=2)
    t = ts(clock)
    store.revoke_token("a", expires_at=t + 10)
    store.revoke_token("b", expires_at=t + 5000)
    clock.advance(20 + REVOCATION_GRACE)
    assert not store.is_revoked(jti="a", subject=None, issuer=ISS, issued_at=None)  # drops "a"
    store.revoke_token("c", expires_at=t + 5000)
    with pytest.raises(StoreUnavailable, match="revocation table is full"):
        store.revoke_token("d", expires_at=t + 5000)
    assert store.is_revoked(jti="b", subject=None, issuer=ISS, issued_at=None)
    assert store.is_revoked(jti="c", subject=None, issuer=ISS, issued_at=None)


def test_a_table_of_one_whose_entry_lapsed_takes_a_new_one(clock: FixedClock) -> None:
    store = MemoryStore(clock=clock, max_replay_entries=1, max_revocations=1)
    t = ts(clock)
    assert store.check_and_store("a", expires_at=t + 5)
    store.revoke_token("a", expires_at=t + 5)
    clock.advance(5 + REVOCATION_GRACE)
    assert store.check_and_store("b", expires_at=t + 5000)
    store.revoke_token("b", expires_at=t + 5000)
    assert not store.check_and_store("b", expires_at=t + 5000)
    assert store.is_revoked(jti="b", subject=None, issuer=ISS, issued_at=None)


def test_eviction_picks_the_soonest_expiring_bucket_whatever_the_history(
    clock: FixedClock,
) -> None:
    # however many times a bucket was re-stored (the expiry order is rebuilt now and then),
    # a full table evicts the bucket that would be full again soonest
    for uses in range(1, 160):
        store = MemoryStore(clock=clock, max_rate_limit_keys=2)
        store.acquire("drained", rate=1.0, burst=1000, cost=1000)
        for _ in range(uses):
            store.acquire("busy", rate=1.0, burst=1000)
        store.acquire("third", rate=1.0, burst=1000)
        assert not store.acquire("drained", rate=1.0, burst=1000).allowed, uses


def test_re_storing_the_same_keys_keeps_the_expiry_heap_bounded(clock: FixedClock) -> None:
    store = MemoryStore(clock=clock, max_rate_limit_keys=4)
    longest = 0
    for _ in range(500):
        for key in "abcd":
            store.acquire(key, rate=1.0, burst=10_000)
            longest = max(longest, len(store._rates._heap))
    assert longest <= 2 * 4 + 64  # stale pairs are compacted away, not kept forever
