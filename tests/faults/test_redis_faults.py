"""Redis stopped and restarted under load: every request fails closed while it is down, a
revoked token is never allowed, and the same Guard serves again once Redis is back."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from tests.faults.conftest import Load
from tests.stores.conftest import RedisServer
from zerotrust import Authenticator, Callers, Guard, MemorySink, Policy, Request, Rule
from zerotrust.errors import StoreUnavailable
from zerotrust.stores import RedisStore
from zerotrust.tokens import PrivateJWK, TokenIssuer, TokenVerifier

pytestmark = pytest.mark.network

ISS = "https://issuer.test"
AUD = "orders"


class World:
    def __init__(self, redis: RedisServer) -> None:
        self.redis = redis
        self.phase = "up"
        self.store = RedisStore(redis.url, socket_timeout=0.3)
        issuer = TokenIssuer(PrivateJWK.generate("ES256"), issuer=ISS)
        verifier = TokenVerifier(issuer=ISS, audience=AUD, keys=issuer.jwks(), algorithms=["ES256"])
        self.guard = Guard(
            authenticator=Authenticator(tokens=verifier),
            policy=Policy([Rule(id="anyone", callers=[Callers(subjects=["*"])])]),
            audit=MemorySink(),
            store=self.store,
            service="orders",
        )
        self.good = issuer.issue(subject="svc-good", audience=AUD, ttl=600)
        self.revoked = issuer.issue(subject="svc-revoked", audience=AUD, ttl=600)
        self.banned = issuer.issue(subject="svc-banned", audience=AUD, ttl=600)
        # each is verified (and cached) once, then revoked through the Guard's store
        jti = self.guard.evaluate(self.view(self.revoked)).principal.token_jti
        assert self.guard.evaluate(self.view(self.banned)).allowed
        self.store.revoke_token(jti, expires_at=time.time() + 600)
        self.store.revoke_subject("svc-banned", issuer=ISS, until=time.time() + 600)
        self._turn = 0

    @staticmethod
    def view(token: str) -> Request:
        return Request(route="/orders", headers={"authorization": f"Bearer {token}"})

    def pick(self) -> tuple[str, str]:
        self._turn += 1
        return (("good", self.good), ("revoked", self.revoked), ("banned", self.banned))[
            self._turn % 3
        ]

    def label(self, kind: str, started: str, status: int) -> str:
        phase = started if self.phase == started else "boundary"
        return f"{kind}:{phase}:{status}"

    def call(self, index: int) -> str:
        kind, token = self.pick()
        started = self.phase
        outcome = self.guard.evaluate(self.view(token))
        return self.label(kind, started, outcome.status)

    def stop_redis(self) -> None:
        """Stop Redis (its data saved first, as a production Redis would persist it)."""
        import redis

        self.phase = "stopping"
        with redis.Redis.from_url(self.redis.url) as raw:
            raw.save()
        self.redis.stop()
        self.phase = "down"

    def start_redis(self) -> None:
        self.phase = "restarting"
        self.redis.start()  # same port, same data directory: the revocations come back
        self.phase = "up-again"


@pytest.fixture
def world(redis_server: RedisServer) -> Iterator[World]:
    built = World(redis_server)
    try:
        yield built
    finally:
        built.store.close()


def check(counts: Counter[str]) -> None:
    """The safety property over every request of the run, whatever its phase."""
    revoked_allowed = {
        k: v for k, v in counts.items() if k.split(":")[0] != "good" and k.endswith(":200")
    }
    assert not revoked_allowed, counts  # a revoked token was never allowed, at any point
    assert all(k.split(":")[2] in {"200", "401", "503"} for k in counts), counts
    for kind in ("good", "revoked", "banned"):
        assert counts[f"{kind}:down:503"] >= 10, counts  # fail closed while down
        assert not {k for k in counts if k.startswith(f"{kind}:down:") and not k.endswith(":503")}
    assert counts["good:up:200"] and counts["good:up-again:200"], counts
    assert counts["revoked:up:401"] and counts["revoked:up-again:401"], counts
    assert counts["banned:up:401"] and counts["banned:up-again:401"], counts
    assert not {
        k for k in counts if ":up" in k and k.startswith("good:") and not k.endswith(":200")
    }


def test_redis_outage_under_load_fails_closed_and_recovers(world: World) -> None:
    with Load(world.call, workers=6) as load:
        load.wait_for(lambda c: c["good:up:200"] >= 30 and c["revoked:up:401"] >= 30, "warm")
        world.stop_redis()
        load.wait_for(
            lambda c: min(c[f"{k}:down:503"] for k in ("good", "revoked", "banned")) >= 10,
            "requests during the outage",
        )
        with pytest.raises(StoreUnavailable):  # a revocation cannot silently get lost
            world.store.revoke_token("another", expires_at=time.time() + 60)
        world.start_redis()
        load.wait_for(
            lambda c: (
                min(c["good:up-again:200"], c["revoked:up-again:401"], c["banned:up-again:401"])
                >= 20
            ),
            "the same Guard serving again",
        )
    assert not load.errors, load.errors
    check(load.snapshot())


def test_redis_outage_under_asyncio_tasks(world: World) -> None:
    async def main() -> Counter[str]:
        counts: Counter[str] = Counter()
        stop = asyncio.Event()

        async def worker() -> None:
            while not stop.is_set():
                kind, token = world.pick()
                started = world.phase
                outcome = await world.guard.aevaluate(world.view(token))
                counts[world.label(kind, started, outcome.status)] += 1
                await asyncio.sleep(0)

        async def until(what: str, predicate: object) -> None:
            deadline = time.monotonic() + 15
            while not predicate(counts):  # type: ignore[operator]
                assert time.monotonic() < deadline, f"timed out: {what} {counts}"
                await asyncio.sleep(0.005)

        tasks = [asyncio.create_task(worker()) for _ in range(8)]
        try:
            await until("warm", lambda c: c["good:up:200"] >= 20 and c["revoked:up:401"] >= 20)
            await asyncio.to_thread(world.stop_redis)
            await until(
                "outage",
                lambda c: min(c[f"{k}:down:503"] for k in ("good", "revoked", "banned")) >= 10,
            )
            await asyncio.to_thread(world.start_redis)
            await until(
                "recovery",
                lambda c: (
                    min(c["good:up-again:200"], c["revoked:up-again:401"], c["banned:up-again:401"])
                    >= 10
                ),
            )
        finally:
            stop.set()
            await asyncio.gather(*tasks)
            await world.store.aclose()
        return counts

    check(asyncio.run(main()))
