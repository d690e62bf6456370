"""A remote JWKS endpoint misbehaving while threads (and tasks) verify tokens continuously.

The key source runs on an injected clock that only the test moves, in small steps while the
load runs, so "one fetch per window" is counted exactly at the loopback HTTPS server.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import secrets
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from tests._https import HttpsServer, Recorded, Route, json_route
from tests.faults.conftest import Load
from zerotrust import Authenticator, Callers, FixedClock, Guard, MemorySink, Policy, Request, Rule
from zerotrust.dev import DevCA
from zerotrust.errors import KeysUnavailable
from zerotrust.sources.jwks_http import RemoteJWKSource
from zerotrust.tokens import PrivateJWK, TokenIssuer, TokenVerifier

pytestmark = pytest.mark.network

ISS = "https://issuer.test"
AUD = "orders"
TTL = 10.0  # seconds of the injected clock
MAX_STALE = 30.0
RETRY = 1.0
COOLDOWN = 2.0
STEP = 0.25
KNOWN = PrivateJWK.generate("ES256", kid="known")
STRANGER = PrivateJWK.generate("ES256", kid="stranger")
GOOD = json_route({"keys": [KNOWN.public().to_public_dict()]})


def flapping() -> Route:
    """Good and bad answers in turn (500, garbage, good, 500, ...)."""
    turn = iter(range(1_000_000))
    good_body = json.dumps({"keys": [KNOWN.public().to_public_dict()]}).encode()

    def answer(request: Recorded) -> tuple[int, dict[str, str], bytes]:
        n = next(turn) % 3
        if n == 0:
            return 500, {}, b"down"
        if n == 1:
            return 200, {"Content-Type": "application/json"}, b'{"keys": [{'
        return 200, {"Content-Type": "application/json"}, good_body

    return Route(handler=answer)


FAULTS: dict[str, Route] = {
    "slow": Route(delay=3.0, status=200, body=b"{}"),  # beyond the 0.5 s client timeout
    "http-500": Route(status=500, body=b"internal error"),
    "garbage": Route(status=200, headers={"Content-Type": "application/json"}, body=b"\x00{]"),
    "no-usable-keys": json_route({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "x"}]}),
    "huge": Route(status=200, headers={"Content-Type": "application/json"}, stream_bytes=4 << 20),
    "redirect": Route(redirect="https://localhost:1/jwks"),
    "flapping": flapping(),
}


class World:
    """The loopback JWKS server, the remote source on a fixed clock, and a Guard using it."""

    def __init__(self, server: HttpsServer, clock: FixedClock) -> None:
        self.server = server
        self.clock = clock
        self.source = RemoteJWKSource(
            server.url("/jwks"),
            verify=server.client_context,
            clock=clock,
            min_ttl=1,
            default_ttl=TTL,
            refresh_ahead=0,
            max_stale=MAX_STALE,
            unknown_kid_cooldown=COOLDOWN,
            negative_cache_ttl=5,
            retry_interval=RETRY,
            timeout=0.5,
            max_bytes=64 << 10,
        )
        verifier = TokenVerifier(issuer=ISS, audience=AUD, keys=self.source, algorithms=["ES256"])
        self.guard = Guard(
            authenticator=Authenticator(tokens=verifier),
            policy=Policy([Rule(id="anyone", callers=[Callers(subjects=["*"])])]),
            audit=MemorySink(),
            service="orders",
        )
        self.issuer = TokenIssuer(KNOWN, issuer=ISS)
        self.repeated = self.known_token()  # the same token again and again (cache hits)
        self._turns = itertools.count()

    def known_token(self) -> str:
        return self.issuer.issue(subject=f"svc-{secrets.token_hex(4)}", audience=AUD)

    @staticmethod
    def unknown_token() -> str:
        key = STRANGER.with_kid(f"attacker-{secrets.token_hex(8)}")
        return TokenIssuer(key, issuer=ISS).issue(subject="mallory", audience=AUD)

    def view(self, token: str) -> Request:
        return Request(route="/orders", headers={"authorization": f"Bearer {token}"})

    def call(self, index: int) -> str:
        """One request of the load: a fresh known token, the repeated one, or an unknown kid."""
        kind = ("known", "repeated", "unknown")[next(self._turns) % 3]
        token = {"known": self.known_token, "repeated": lambda: self.repeated}.get(
            kind, self.unknown_token
        )()
        outcome = self.guard.evaluate(self.view(token))
        code = outcome.error.code if outcome.error is not None else "ok"
        return f"{kind}:{outcome.status}:{code}"

    def step_clock(self, load: Load, seconds: float) -> None:
        """Move the clock ``seconds`` forward in small steps, each with traffic behind it."""
        for _ in range(round(seconds / STEP)):
            self.clock.advance(STEP)
            load.wait_more("known:200:ok", 5)

    def fetches(self) -> int:
        return self.server.count("/jwks")


@pytest.fixture
def world(ca: DevCA, clock: FixedClock) -> Iterator[World]:
    with HttpsServer(ca) as server:
        server.route("/jwks", GOOD)
        built = World(server, clock)
        try:
            yield built
        finally:
            built.source.close()


def assert_served_correctly(counts: Counter[str]) -> None:
    """Known tokens verify, unknown kids are refused as invalid tokens, nothing else happens."""
    allowed = {"known:200:ok", "repeated:200:ok", "unknown:401:unknown_key"}
    assert set(counts) <= allowed, counts
    assert (
        counts["known:200:ok"] and counts["repeated:200:ok"] and counts["unknown:401:unknown_key"]
    )


def max_fetches(seconds: float) -> int:
    """The most fetches the rate limits allow: one per retry interval or cooldown window."""
    return math.floor(seconds / min(RETRY, COOLDOWN)) + 2


@pytest.mark.parametrize("fault", list(FAULTS))
def test_known_keys_survive_a_faulty_endpoint_without_a_request_storm(
    world: World, fault: str
) -> None:
    with Load(world.call, workers=6) as load:
        load.wait_for(
            lambda c: c["known:200:ok"] >= 20 and c["unknown:401:unknown_key"] >= 20, "warm"
        )
        assert world.fetches() <= 2  # the first fetch, and at most one for unknown kids

        world.server.route("/jwks", FAULTS[fault])
        before, counted = world.fetches(), load.snapshot()
        world.step_clock(load, TTL + 3.0)  # past expiry: the cached set is now stale
        during = load.snapshot() - counted
        fetched = world.fetches() - before
        status = world.source.status()
    assert not load.errors, load.errors
    assert_served_correctly(during)
    assert during["unknown:401:unknown_key"] >= 10
    # hundreds of unknown kids and an expired set, yet at most one request per window
    assert 1 <= fetched <= max_fetches(TTL + 3.0), (fetched, during)
    assert fetched < during["unknown:401:unknown_key"]
    if fault != "flapping":
        assert status.stale and status.last_error is not None
        assert status.key_ids == ("known",)


def test_unknown_kids_cause_at_most_one_fetch_per_cooldown_window(world: World) -> None:
    with Load(world.call, workers=6) as load:
        load.wait_for(lambda c: c["unknown:401:unknown_key"] >= 10, "warm")
        before = world.fetches()
        windows = 4
        for _ in range(windows):
            world.step_clock(load, COOLDOWN)
            load.wait_more("unknown:401:unknown_key", 20)
        fetched = world.fetches() - before
        counts = load.snapshot()
    assert not load.errors, load.errors
    assert_served_correctly(counts)
    # fetches at most every COOLDOWN seconds over windows * COOLDOWN seconds (both ends
    # included, as the warm-up fetch may still have been in flight when counting started)
    assert 1 <= fetched <= windows + 1, fetched
    assert fetched < counts["unknown:401:unknown_key"] // 10


def test_after_max_stale_keys_are_unavailable_then_recover(world: World) -> None:
    with Load(world.call, workers=4) as load:
        load.wait_for(lambda c: c["known:200:ok"] >= 10, "warm")
        world.server.route("/jwks", FAULTS["http-500"])
        world.step_clock(load, TTL + 2.0)  # stale, still served
        assert load.snapshot().keys() <= {
            "known:200:ok",
            "repeated:200:ok",
            "unknown:401:unknown_key",
        }

        counted = load.snapshot()
        world.clock.advance(MAX_STALE)  # beyond max_stale: fail closed
        load.wait_more("known:503:keys_unavailable", 20)
        load.wait_more("unknown:503:keys_unavailable", 20)
        beyond = load.snapshot() - counted
        assert world.source.status().stale

        world.server.route("/jwks", GOOD)
        world.clock.advance(RETRY)  # the next retry window: the endpoint answers again
        load.wait_more("known:200:ok", 20)
        load.wait_more("repeated:200:ok", 20)
        counted = load.snapshot()
        load.wait_more("known:200:ok", 20)
        after = load.snapshot() - counted
    assert not load.errors, load.errors
    # once stale beyond max_stale, nothing known was accepted without keys (only the few calls
    # in flight when the clock moved may have finished with the stale set)
    assert beyond["known:503:keys_unavailable"] >= 20
    assert beyond["unknown:503:keys_unavailable"] >= 20
    assert set(after) <= {"known:200:ok", "repeated:200:ok", "unknown:401:unknown_key"}
    status = world.source.status()
    assert not status.stale and status.last_error is None
    assert world.guard.evaluate(world.view(world.repeated)).status == 200


def test_a_cached_token_is_refused_once_keys_are_unavailable(world: World) -> None:
    view = world.view(world.repeated)
    assert world.guard.evaluate(view).status == 200  # verified once: now in the cache
    world.server.route("/jwks", FAULTS["http-500"])
    world.clock.advance(TTL + MAX_STALE + 1)
    assert world.guard.evaluate(world.view(world.known_token())).status == 503
    with pytest.raises(KeysUnavailable):
        world.source.get_keys()
    assert world.guard.evaluate(view).status == 503  # fails: 200 from the cache


def test_the_same_faults_under_asyncio_tasks(world: World) -> None:
    async def main() -> Counter[str]:
        counts: Counter[str] = Counter()
        stop = asyncio.Event()

        async def worker(index: int) -> None:
            while not stop.is_set():
                kind = ("known", "repeated", "unknown")[index % 3]
                token = (
                    world.known_token()
                    if kind == "known"
                    else world.repeated
                    if kind == "repeated"
                    else world.unknown_token()
                )
                outcome = await world.guard.aevaluate(world.view(token))
                code = outcome.error.code if outcome.error is not None else "ok"
                counts[f"{kind}:{outcome.phase}:{outcome.status}:{code}"] += 1
                await asyncio.sleep(0)

        async def more(label: str, n: int) -> None:
            target = counts[label] + n
            for _ in range(100_000):
                if counts[label] >= target:
                    return
                await asyncio.sleep(0.001)
            raise AssertionError(f"no progress on {label}: {counts}")

        tasks = [asyncio.create_task(worker(i)) for i in range(9)]
        try:
            await more("known:good:200:ok", 10)
            world.server.route("/jwks", FAULTS["http-500"])
            for _ in range(round((TTL + 2) / STEP)):
                world.clock.advance(STEP)
                await more("known:good:200:ok", 3)
            phase["name"] = "beyond"
            world.clock.advance(MAX_STALE)
            await more("known:beyond:503:keys_unavailable", 10)
            await more("unknown:beyond:503:keys_unavailable", 10)
            world.server.route("/jwks", GOOD)
            world.clock.advance(RETRY)
            phase["name"] = "recovering"
            await more("known:recovering:200:ok", 10)
        finally:
            stop.set()
            await asyncio.gather(*tasks)
        return counts

    phase = {"name": "good"}
    original = world.guard.aevaluate

    async def tagged(view: Any, requirement: Any = None) -> Any:
        name = phase["name"]
        outcome = await original(view, requirement)
        return _Tagged(outcome, name if phase["name"] == name else "boundary")

    world.guard.aevaluate = tagged  # type: ignore[method-assign]
    counts = asyncio.run(main())
    fetches = world.fetches()
    allowed_good = {"known:good:200:ok", "repeated:good:200:ok", "unknown:good:401:unknown_key"}
    assert {k for k in counts if ":good:" in k} <= allowed_good, counts
    assert counts["unknown:good:401:unknown_key"] >= 10
    # every call of the recovering phase started after the endpoint came back
    assert {k for k in counts if ":recovering:" in k} <= {
        "known:recovering:200:ok",
        "repeated:recovering:200:ok",
        "unknown:recovering:401:unknown_key",
    }, counts
    assert fetches <= max_fetches(TTL + 2 + MAX_STALE + RETRY) + 2


class _Tagged:
    """An Outcome labelled with the phase its request ran in ("boundary" across two)."""

    def __init__(self, outcome: Any, phase: str) -> None:
        self._outcome = outcome
        self.phase = phase

    def __getattr__(self, name: str) -> Any:
        return getattr(self._outcome, name)
