"""One contract for every store: memory and Redis, through the sync and the async methods.

Time is driven by a FixedClock; for Redis, ``Backend.advance`` also ages every key's TTL, so
the same assertions check that each key got the right TTL (and that every key has one).
"""

from __future__ import annotations

import gc
import re
import threading
from collections.abc import Callable
from typing import Any

import pytest

from zerotrust.errors import MalformedCredentials
from zerotrust.stores import MAX_KEY_LENGTH, RateLimitResult, Revocation, Store
from zerotrust.stores._logic import (
    MAX_BURST,
    MAX_REFILL_SECONDS,
    MAX_TIMESTAMP,
    REVOCATION_GRACE,
    OwnedListener,
)

from .conftest import Backend

ISS = "https://issuer.example"
OTHER_ISS = "https://other.example"


class Ops:
    """The store's API in one mode: ``sync`` calls methods, ``async`` their ``_async`` twins."""

    def __init__(self, backend: Backend, mode: str) -> None:
        self.backend = backend
        self.mode = mode

    def __getattr__(self, name: str) -> Callable[..., Any]:
        store = self.backend.store
        if self.mode == "sync":
            return getattr(store, name)  # type: ignore[no-any-return]
        method = getattr(store, f"{name}_async")
        return lambda *args, **kwargs: self.backend.run(lambda: method(*args, **kwargs))


@pytest.fixture(params=["sync", "async"])
def ops(request: pytest.FixtureRequest, backend: Backend) -> Ops:
    return Ops(backend, request.param)


def now(ops: Ops) -> float:
    return ops.backend.clock.now().timestamp()


def test_implements_the_protocol(backend: Backend) -> None:
    assert isinstance(backend.store, Store)


# --- revocation by jti ------------------------------------------------------------------


def test_revoke_token_until_its_expiry(ops: Ops) -> None:
    t = now(ops)
    assert not ops.is_revoked(jti="j1", subject="alice", issuer=ISS, issued_at=t)
    ops.revoke_token("j1", expires_at=t + 60)
    assert ops.is_revoked(jti="j1", subject="alice", issuer=ISS, issued_at=t)
    assert ops.is_revoked(jti="j1", subject=None, issuer=OTHER_ISS, issued_at=None)
    assert not ops.is_revoked(jti="j2", subject="alice", issuer=ISS, issued_at=t)
    # past exp a verifier still accepts the token for its leeway (up to 600 s, on its own
    # clock): the revocation is kept REVOCATION_GRACE longer than the end it was given
    ops.backend.advance(60 + 600)
    assert ops.is_revoked(jti="j1", subject=None, issuer=ISS, issued_at=t)
    ops.backend.advance(REVOCATION_GRACE - 600 - 0.1)
    assert ops.is_revoked(jti="j1", subject=None, issuer=ISS, issued_at=t)
    ops.backend.advance(0.1)
    assert not ops.is_revoked(jti="j1", subject=None, issuer=ISS, issued_at=t)


def test_revoking_a_token_just_past_its_exp_still_counts(ops: Ops) -> None:
    t = now(ops)  # expired a second ago, but inside any verifier's leeway
    ops.revoke_token("late", expires_at=t - 1)
    assert ops.is_revoked(jti="late", subject=None, issuer=ISS, issued_at=None)


def test_revoking_a_long_expired_token_stores_nothing(ops: Ops) -> None:
    t = now(ops)
    ops.revoke_token("old", expires_at=t - REVOCATION_GRACE - 1)
    ops.revoke_token("now", expires_at=t - REVOCATION_GRACE)
    assert not ops.is_revoked(jti="old", subject=None, issuer=ISS, issued_at=t)
    assert not ops.is_revoked(jti="now", subject=None, issuer=ISS, issued_at=t)
    if ops.backend.redis is not None:
        assert ops.backend.redis.dbsize() == 0


def test_revoking_a_subject_or_issuer_long_after_until_stores_nothing(ops: Ops) -> None:
    t = now(ops)
    events: list[Revocation] = []
    ops.backend.store.add_revocation_listener(events.append)
    ops.revoke_subject("alice", issuer=ISS, until=t - REVOCATION_GRACE)
    ops.revoke_issued_before(ISS, before=t, until=t - REVOCATION_GRACE - 1)
    assert not ops.is_revoked(jti=None, subject="alice", issuer=ISS, issued_at=t - 10)
    assert [event.kind for event in events] == ["subject", "issuer"]  # still announced
    if ops.backend.redis is not None:
        assert ops.backend.redis.dbsize() == 0


def test_revocations_never_shrink(ops: Ops) -> None:
    t = now(ops)
    ops.revoke_token("j", expires_at=t + 100)
    ops.revoke_token("j", expires_at=t + 10)
    ops.backend.advance(50 + REVOCATION_GRACE)  # past the shorter one, with its grace
    assert ops.is_revoked(jti="j", subject=None, issuer=ISS, issued_at=None)


def test_a_live_issuer_cutoff_never_moves_back(ops: Ops) -> None:
    t = now(ops)
    ops.revoke_issued_before(ISS, before=t, until=t + 600)
    ops.revoke_issued_before(ISS, before=t - 50, until=t + 600)
    assert ops.is_revoked(jti=None, subject=None, issuer=ISS, issued_at=t - 10)


def test_far_future_revocations(ops: Ops) -> None:
    t = now(ops)
    ops.revoke_token("forever-ish", expires_at=MAX_TIMESTAMP)
    ops.revoke_issued_before(ISS, before=t, until=MAX_TIMESTAMP)
    ops.backend.advance(100 * 365 * 86400)
    assert ops.is_revoked(jti="forever-ish", subject=None, issuer=OTHER_ISS, issued_at=t)
    assert ops.is_revoked(jti=None, subject=None, issuer=ISS, issued_at=t - 1)
    too_far = re.escape(
        f"expires_at must be a POSIX timestamp in seconds (at most {MAX_TIMESTAMP:g})"
    )
    with pytest.raises(ValueError, match=f"^{too_far}$"):
        ops.revoke_token("too-far", expires_at=MAX_TIMESTAMP * 10)
    with pytest.raises(ValueError, match="POSIX timestamp"):
        ops.revoke_subject("alice", issuer=ISS, until=1e300)


def test_slow_buckets_get_long_but_bounded_ttls(ops: Ops) -> None:
    assert ops.acquire("slow", rate=1 / 86400, burst=1000).allowed  # ~1 token a day
    ops.backend.advance(86399)
    assert ops.acquire("slow", rate=1 / 86400, burst=1000).remaining == 998


# --- revocation by subject ----------------------------------------------------------------


def test_revoke_subject_covers_tokens_issued_up_to_now(ops: Ops) -> None:
    t = now(ops)
    ops.revoke_subject("alice", issuer=ISS, until=t + 3600)
    check = ops.is_revoked
    assert check(jti="a", subject="alice", issuer=ISS, issued_at=t - 10)
    assert check(jti="a", subject="alice", issuer=ISS, issued_at=t)  # same instant: revoked
    assert not check(jti="a", subject="alice", issuer=ISS, issued_at=t + 1)  # re-issued later
    assert not check(jti="a", subject="bob", issuer=ISS, issued_at=t - 10)
    assert not check(jti="a", subject="alice", issuer=OTHER_ISS, issued_at=t - 10)
    assert not check(jti="a", subject=None, issuer=ISS, issued_at=t - 10)


def test_revoke_subject_without_iat_fails_closed(ops: Ops) -> None:
    t = now(ops)
    ops.revoke_subject("alice", issuer=ISS, until=t + 60)
    assert ops.is_revoked(jti=None, subject="alice", issuer=ISS, issued_at=None)
    assert not ops.is_revoked(jti=None, subject="bob", issuer=ISS, issued_at=None)


def test_a_subject_revocation_leaves_tokens_without_a_subject_alone(ops: Ops) -> None:
    t = now(ops)
    ops.revoke_subject("alice", issuer=ISS, until=t + 600)
    assert not ops.is_revoked(jti="j", subject=None, issuer=ISS, issued_at=t - 10)
    assert ops.is_revoked(jti="j", subject="alice", issuer=ISS, issued_at=t - 10)


def test_revoke_subject_lapses_at_until(ops: Ops) -> None:
    t = now(ops)
    ops.revoke_subject("alice", issuer=ISS, until=t + 30)
    ops.backend.advance(29 + REVOCATION_GRACE)
    assert ops.is_revoked(jti=None, subject="alice", issuer=ISS, issued_at=t - 1)
    ops.backend.advance(1)
    assert not ops.is_revoked(jti=None, subject="alice", issuer=ISS, issued_at=t - 1)


def test_revoking_a_subject_again_moves_the_cutoff_forward(ops: Ops) -> None:
    t = now(ops)
    ops.revoke_subject("alice", issuer=ISS, until=t + 100)
    ops.backend.advance(10)
    assert not ops.is_revoked(jti=None, subject="alice", issuer=ISS, issued_at=t + 5)
    ops.revoke_subject("alice", issuer=ISS, until=t + 50)  # earlier until: kept at t + 100
    assert ops.is_revoked(jti=None, subject="alice", issuer=ISS, issued_at=t + 5)
    ops.backend.advance(60)
    assert ops.is_revoked(jti=None, subject="alice", issuer=ISS, issued_at=t + 5)


def test_subject_and_issuer_are_not_ambiguous(ops: Ops) -> None:
    t = now(ops)
    ops.revoke_subject("b", issuer="a:", until=t + 60)
    assert not ops.is_revoked(jti=None, subject=":b", issuer="a", issued_at=t - 1)
    assert not ops.is_revoked(jti=None, subject="a:b", issuer="", issued_at=t - 1)
    assert ops.is_revoked(jti=None, subject="b", issuer="a:", issued_at=t - 1)


# --- revocation by issuer cut-off ---------------------------------------------------------


def test_revoke_issued_before(ops: Ops) -> None:
    t = now(ops)
    ops.revoke_issued_before(ISS, before=t - 100, until=t + 600)
    check = ops.is_revoked
    assert check(jti="x", subject="alice", issuer=ISS, issued_at=t - 101)
    assert not check(jti="x", subject="alice", issuer=ISS, issued_at=t - 100)  # strictly before
    assert not check(jti="x", subject="alice", issuer=OTHER_ISS, issued_at=t - 101)
    assert check(jti=None, subject=None, issuer=ISS, issued_at=None)  # no iat: fail closed
    ops.backend.advance(600 + REVOCATION_GRACE)
    assert not check(jti="x", subject="alice", issuer=ISS, issued_at=t - 101)


def test_an_issuer_cutoff_is_exclusive_whatever_the_token_carries(ops: Ops) -> None:
    t = now(ops)
    ops.revoke_issued_before(ISS, before=t - 100, until=t + 600)
    for jti in (None, "x"):
        for subject in (None, "alice"):
            at_cutoff = ops.is_revoked(jti=jti, subject=subject, issuer=ISS, issued_at=t - 100)
            assert not at_cutoff, (jti, subject)
            before = ops.is_revoked(jti=jti, subject=subject, issuer=ISS, issued_at=t - 100.5)
            assert before, (jti, subject)


def test_lapsed_issuer_cutoff_does_not_merge(ops: Ops) -> None:
    t = now(ops)
    ops.revoke_issued_before(ISS, before=t, until=t + 10)
    ops.backend.advance(20 + REVOCATION_GRACE)
    ops.revoke_issued_before(ISS, before=t - 50, until=t + 100)
    assert not ops.is_revoked(jti=None, subject=None, issuer=ISS, issued_at=t - 10)
    assert ops.is_revoked(jti=None, subject=None, issuer=ISS, issued_at=t - 51)


def test_revocations_lapse_on_this_clock_even_while_their_keys_are_kept(ops: Ops) -> None:
    # a replica whose clock runs ahead of the one that revoked: the records are still stored
    # (their TTLs have not run out) but their ends have passed on this replica's clock
    t = now(ops)
    ops.revoke_token("j", expires_at=t + 10)
    ops.revoke_subject("alice", issuer=ISS, until=t + 10)
    ops.revoke_issued_before(OTHER_ISS, before=t, until=t + 10)
    clock = ops.backend.clock  # moves time without ageing any key
    clock.advance(10 + REVOCATION_GRACE - 0.5)
    assert ops.is_revoked(jti="j", subject=None, issuer=ISS, issued_at=None)
    assert ops.is_revoked(jti=None, subject="alice", issuer=ISS, issued_at=t - 1)
    assert ops.is_revoked(jti=None, subject=None, issuer=OTHER_ISS, issued_at=t - 1)
    clock.advance(0.5)  # exactly the end: lapsed
    assert not ops.is_revoked(jti="j", subject=None, issuer=ISS, issued_at=None)
    assert not ops.is_revoked(jti=None, subject="alice", issuer=ISS, issued_at=t - 1)
    assert not ops.is_revoked(jti=None, subject=None, issuer=OTHER_ISS, issued_at=t - 1)
    # and a lapsed record is replaced, not merged: the earlier cut-off now stands alone
    ops.revoke_issued_before(OTHER_ISS, before=t - 50, until=now(ops) + 60)
    assert not ops.is_revoked(jti=None, subject=None, issuer=OTHER_ISS, issued_at=t - 10)
    assert ops.is_revoked(jti=None, subject=None, issuer=OTHER_ISS, issued_at=t - 51)


def test_revocation_listener_called_locally(ops: Ops) -> None:
    t = now(ops)
    events: list[Revocation] = []
    ops.backend.store.add_revocation_listener(events.append)
    ops.revoke_token("j", expires_at=t + 5)
    ops.revoke_subject("alice", issuer=ISS, until=t + 5)
    ops.revoke_issued_before(ISS, before=t - 1, until=t + 5)
    end = t + 5 + REVOCATION_GRACE  # when each lapses
    assert events == [
        Revocation("token", end, jti="j"),
        Revocation("subject", end, subject="alice", issuer=ISS, cutoff=t),
        Revocation("issuer", end, issuer=ISS, cutoff=t - 1),
    ]


def test_all_listeners_run_and_the_first_error_propagates(backend: Backend) -> None:
    calls: list[str] = []

    def broken(event: Revocation) -> None:
        calls.append("broken")
        raise RuntimeError("hook failed")

    backend.store.add_revocation_listener(broken)
    backend.store.add_revocation_listener(lambda event: calls.append("ok"))
    with pytest.raises(RuntimeError, match="hook failed"):
        backend.store.revoke_token("j", expires_at=now(Ops(backend, "sync")) + 5)
    assert calls == ["broken", "ok"]
    assert backend.store.is_revoked(jti="j", subject=None, issuer=ISS, issued_at=None)


def test_a_listener_whose_owner_is_gone_is_not_called(backend: Backend) -> None:
    class Owner:
        pass

    calls: list[str] = []
    owner = Owner()
    backend.store.add_revocation_listener(OwnedListener(owner, lambda o, e: calls.append(e.kind)))
    t = now(Ops(backend, "sync"))
    backend.store.revoke_token("j1", expires_at=t + 5)
    assert calls == ["token"]
    del owner
    gc.collect()
    backend.store.revoke_token("j2", expires_at=t + 5)  # no new listener has pruned it yet
    assert calls == ["token"]
    assert backend.store.is_revoked(jti="j2", subject=None, issuer=ISS, issued_at=None)


def test_a_listener_whose_owner_lives_is_kept_when_others_are_added(backend: Backend) -> None:
    class Owner:
        pass

    calls: list[str] = []
    owner = Owner()
    backend.store.add_revocation_listener(OwnedListener(owner, lambda o, e: calls.append("owned")))
    backend.store.add_revocation_listener(lambda event: calls.append("plain"))  # prunes the dead
    backend.store.revoke_token("j", expires_at=now(Ops(backend, "sync")) + 5)
    assert calls == ["owned", "plain"]
    assert owner is not None  # alive until here


# --- replay cache -------------------------------------------------------------------------


def test_replay_first_use_then_replays_until_expiry(ops: Ops) -> None:
    t = now(ops)
    assert ops.check_and_store("jti-1", expires_at=t + 30)
    assert not ops.check_and_store("jti-1", expires_at=t + 30)
    assert ops.check_and_store("jti-2", expires_at=t + 30)
    ops.backend.advance(29.5)
    assert not ops.check_and_store("jti-1", expires_at=t + 30)
    ops.backend.advance(0.5)
    assert ops.check_and_store("jti-1", expires_at=t + 90)
    assert not ops.check_and_store("jti-1", expires_at=t + 90)


def test_replay_entry_lifetime_is_clamped(ops: Ops) -> None:
    t = now(ops)
    assert ops.check_and_store("far", expires_at=t + 10 * 365 * 86400)
    ops.backend.advance(86400 - 1)
    assert not ops.check_and_store("far", expires_at=t + 10 * 365 * 86400)
    ops.backend.advance(1)  # default replay_max_ttl: one day
    assert ops.check_and_store("far", expires_at=t + 10 * 365 * 86400)


def test_already_expired_replay_key_is_kept_briefly(ops: Ops) -> None:
    t = now(ops)
    assert ops.check_and_store("late", expires_at=t - 5)
    assert not ops.check_and_store("late", expires_at=t - 5)
    ops.backend.advance(1)
    assert ops.check_and_store("late", expires_at=t - 5)


# --- rate limits ----------------------------------------------------------------------------


def test_rate_limit_allows_burst_then_denies(ops: Ops) -> None:
    results = [ops.acquire("alice", rate=2.0, burst=3) for _ in range(4)]
    assert results[:3] == [
        RateLimitResult(True, 2, 0.0),
        RateLimitResult(True, 1, 0.0),
        RateLimitResult(True, 0, 0.0),
    ]
    assert results[3] == RateLimitResult(False, 0, 0.5)
    assert ops.acquire("bob", rate=2.0, burst=3).remaining == 2  # buckets are per key


def test_rate_limit_refills_over_time(ops: Ops) -> None:
    for _ in range(3):
        assert ops.acquire("k", rate=2.0, burst=3).allowed
    ops.backend.advance(0.25)
    assert ops.acquire("k", rate=2.0, burst=3) == RateLimitResult(False, 0, 0.25)
    ops.backend.advance(0.25)
    assert ops.acquire("k", rate=2.0, burst=3) == RateLimitResult(True, 0, 0.0)
    ops.backend.advance(1.0)
    assert ops.acquire("k", rate=2.0, burst=3) == RateLimitResult(True, 1, 0.0)


def test_rate_limit_cost_and_retry_after(ops: Ops) -> None:
    assert ops.acquire("c", rate=0.5, burst=10, cost=8) == RateLimitResult(True, 2, 0.0)
    denied = ops.acquire("c", rate=0.5, burst=10, cost=5)
    assert denied == RateLimitResult(False, 2, 6.0)
    ops.backend.advance(denied.retry_after)
    assert ops.acquire("c", rate=0.5, burst=10, cost=5) == RateLimitResult(True, 0, 0.0)


def test_rate_limit_bucket_lapses_when_full_again(ops: Ops) -> None:
    ops.acquire("full", rate=10.0, burst=5, cost=5)
    ops.backend.advance(0.5)  # 5 tokens at 10/s: full again, the key is gone
    if ops.backend.redis is not None:
        assert ops.backend.redis.dbsize() == 0
    assert ops.acquire("full", rate=10.0, burst=5) == RateLimitResult(True, 4, 0.0)


def test_rate_limit_with_awkward_rates_does_not_drift(ops: Ops) -> None:
    allowed = 0
    for _ in range(30):  # one token every 1/3 s (the clock has microsecond resolution)
        allowed += ops.acquire("third", rate=3.0, burst=1).allowed
        ops.backend.advance(0.333334)
    assert allowed == 30
    assert ops.acquire("third", rate=3.0, burst=1).allowed
    assert not ops.acquire("third", rate=3.0, burst=1).allowed


def test_rounding_never_costs_a_due_token(ops: Ops) -> None:
    # 0.1 tokens a second, added up ten times in floating point, make 0.9999999999999999
    assert ops.acquire("a", rate=0.1, burst=2, cost=2).allowed
    assert ops.acquire("b", rate=0.1, burst=3, cost=3).allowed
    for _ in range(9):
        ops.backend.advance(1)
        assert not ops.acquire("a", rate=0.1, burst=2).allowed
        assert ops.acquire("b", rate=0.1, burst=3, cost=2).remaining == 0
    ops.backend.advance(1)
    assert ops.acquire("a", rate=0.1, burst=2) == RateLimitResult(True, 0, 0.0)
    assert ops.acquire("b", rate=0.1, burst=3, cost=2) == RateLimitResult(False, 1, 10.0)


def test_a_clock_moving_back_neither_refills_nor_takes(ops: Ops) -> None:
    assert ops.acquire("k", rate=1.0, burst=2).remaining == 1
    ops.backend.clock.advance(-0.5)  # the keys keep their TTLs
    assert ops.acquire("k", rate=1.0, burst=2) == RateLimitResult(True, 0, 0.0)
    ops.backend.clock.advance(-30)
    assert ops.acquire("k", rate=1.0, burst=2) == RateLimitResult(False, 0, 1.0)


@pytest.mark.parametrize(
    ("rate", "burst", "cost", "reason"),
    [
        (0, 1, 1, "rate must be positive"),
        (-1, 1, 1, "rate must be positive"),
        (float("nan"), 1, 1, "rate must be finite"),
        (float("inf"), 1, 1, "rate must be finite"),
        (1, 0, 1, "burst must be at least 1"),
        (1, -1, -1, "burst must be at least 1"),
        (1, 2, 3, "cost must be between 1 and burst"),
        (1, 2, 0, "cost must be between 1 and burst"),
        (1e-12, 1, 1, "rate is too low"),  # refill would take longer than 30 years
        (1e9, 10**10, 1, "burst must be at most"),
    ],
)
def test_rate_limit_rejects_bad_parameters(
    backend: Backend, rate: float, burst: int, cost: int, reason: str
) -> None:
    with pytest.raises(ValueError, match=f"^{reason}"):
        backend.store.acquire("k", rate=rate, burst=burst, cost=cost)


def test_rejects_non_finite_times(backend: Backend) -> None:
    with pytest.raises(ValueError, match=r"^expires_at must be finite$"):
        backend.store.revoke_token("j", expires_at=float("inf"))
    with pytest.raises(ValueError, match=r"^expires_at must be finite$"):
        backend.store.check_and_store("k", expires_at=float("nan"))
    with pytest.raises(TypeError, match=r"^until must be a number of seconds, not str$"):
        backend.store.revoke_subject("s", issuer=ISS, until="tomorrow")
    # a bool is no time, though Python counts it an int
    with pytest.raises(TypeError, match=r"^expires_at must be a number of seconds, not bool$"):
        backend.store.revoke_token("j", expires_at=True)


def test_rate_limit_bounds_are_inclusive(backend: Backend) -> None:
    # the largest burst, refilled in exactly the longest time allowed
    assert MAX_BURST / 1.0 == MAX_REFILL_SECONDS
    result = backend.store.acquire("k", rate=1.0, burst=MAX_BURST)
    assert result.allowed and result.remaining == MAX_BURST - 1


def test_revocation_lookups_need_an_issuer_on_every_backend(backend: Backend) -> None:
    """The same answer whatever the backend and whether anything is revoked yet."""
    with pytest.raises(TypeError):
        backend.store.is_revoked(jti="j", subject="s", issuer=None, issued_at=None)  # type: ignore[arg-type]
    backend.store.revoke_token("other", expires_at=backend.clock.now().timestamp() + 60)
    with pytest.raises(TypeError):
        backend.store.is_revoked(jti="j", subject="s", issuer=None, issued_at=None)  # type: ignore[arg-type]


# --- hostile keys ---------------------------------------------------------------------------

HOSTILE = [
    "",
    "*",
    "?[a-z]*",
    "line\nbreak\r\n",
    "zerotrust:rp:00",
    "{rv}",
    "\x00\xff\ud800binary",
    "é" * 1000,
    "x" * MAX_KEY_LENGTH,
]


def test_hostile_keys_are_distinct_and_harmless(backend: Backend) -> None:
    store, t = backend.store, now(Ops(backend, "sync"))
    for key in HOSTILE:
        assert store.check_and_store(key, expires_at=t + 60), repr(key[:20])
    for key in HOSTILE:
        assert not store.check_and_store(key, expires_at=t + 60)
        store.revoke_token(key, expires_at=t + 60)
        assert store.is_revoked(jti=key, subject=key, issuer=key, issued_at=None)
        assert store.acquire(key, rate=1.0, burst=2).remaining == 1
    assert not store.is_revoked(jti="other", subject="*", issuer="*", issued_at=None)


def test_overlong_identifiers_are_refused(ops: Ops) -> None:
    huge, longest = "j" * (MAX_KEY_LENGTH + 1), "j" * MAX_KEY_LENGTH
    too_long = f"^identifier longer than {MAX_KEY_LENGTH} characters$"
    with pytest.raises(MalformedCredentials, match=too_long):
        ops.check_and_store(huge, expires_at=now(ops) + 60)
    # the same answers before and after anything is revoked
    for _ in range(2):
        with pytest.raises(MalformedCredentials):
            ops.is_revoked(jti=huge, subject=None, issuer=ISS, issued_at=None)
        with pytest.raises(MalformedCredentials):
            ops.is_revoked(jti=None, subject=huge, issuer=ISS, issued_at=None)
        with pytest.raises(TypeError):
            ops.is_revoked(jti=5, subject=None, issuer=ISS, issued_at=None)
        assert not ops.is_revoked(jti=longest, subject=longest, issuer=ISS, issued_at=None)
        ops.revoke_token("other", expires_at=now(ops) + 60)


# --- concurrency ----------------------------------------------------------------------------


def _threads(count: int, work: Callable[[], Any]) -> list[Any]:
    results: list[Any] = []
    barrier = threading.Barrier(count)

    def run() -> None:
        barrier.wait()
        results.append(work())

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_concurrent_check_and_store_has_one_winner(backend: Backend) -> None:
    t = now(Ops(backend, "sync"))
    results = _threads(50, lambda: backend.store.check_and_store("once", expires_at=t + 60))
    assert results.count(True) == 1
    assert len(results) == 50


def test_concurrent_acquire_never_exceeds_burst(backend: Backend) -> None:
    results = _threads(50, lambda: backend.store.acquire("hot", rate=0.001, burst=10))
    assert sum(result.allowed for result in results) == 10


def test_concurrent_async_check_and_store_has_one_winner(backend: Backend) -> None:
    import asyncio

    t = now(Ops(backend, "sync"))

    async def race() -> list[bool]:
        calls = [backend.store.check_and_store_async("once", expires_at=t + 60) for _ in range(50)]
        return list(await asyncio.gather(*calls))

    assert backend.run(race).count(True) == 1


def test_concurrent_async_acquire_never_exceeds_burst(backend: Backend) -> None:
    import asyncio

    async def race() -> list[RateLimitResult]:
        calls = [backend.store.acquire_async("hot", rate=0.001, burst=7) for _ in range(40)]
        return list(await asyncio.gather(*calls))

    assert sum(result.allowed for result in backend.run(race)) == 7
