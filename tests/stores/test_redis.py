"""RedisStore specifics: key layout and TTLs, server time, scripts, outages, configuration."""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import gc
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests._fork import in_child
from tests._sockets import close_listener
from tests._wait import eventually
from zerotrust import FixedClock
from zerotrust.errors import (
    ConfigurationError,
    MissingDependencyError,
    StoreFull,
    StoreUnavailable,
)
from zerotrust.stores import RedisStore, ResilientStore
from zerotrust.stores._logic import REVOCATION_GRACE, KeySpace

from .conftest import RedisServer, make_redis_store, start_redis_server

ISS = "https://issuer.example"
KEY = re.compile(rb"^zerotrust:(\{rv\}:[tsi]|rp|rl):[0-9a-f]{64}$")

pytestmark = pytest.mark.network

try:
    import redis as _redis_py  # noqa: F401
except ImportError:  # pragma: no cover - CI installs it
    HAVE_REDIS_PY = False
else:
    HAVE_REDIS_PY = True
needs_redis_py = pytest.mark.skipif(
    not HAVE_REDIS_PY and os.environ.get("CI") != "true", reason="redis-py is not installed"
)


@pytest.fixture
def store(redis_server: RedisServer, redis_client: Any, clock: FixedClock) -> Iterator[RedisStore]:
    store = RedisStore(redis_server.url, clock=clock)
    yield store
    store.close()


def test_keys_are_namespaced_hashed_and_expire(
    store: RedisStore, redis_client: Any, clock: FixedClock
) -> None:
    t = clock.now().timestamp()
    store.revoke_token("jti\n*", expires_at=t + 60)
    store.revoke_subject("alice", issuer=ISS, until=t + 120)
    store.revoke_issued_before(ISS, before=t, until=t + 180)
    store.check_and_store("proof-jti", expires_at=t + 30)
    store.acquire("alice", rate=1.0, burst=10, cost=4)
    keys = sorted(redis_client.scan_iter())
    assert len(keys) == 5
    assert all(KEY.match(key) for key in keys), keys
    ttls = {key.split(b":")[-2]: redis_client.pttl(key) for key in keys}
    grace = int(REVOCATION_GRACE * 1000)  # revocations outlive the end they were given
    expected = {
        b"t": 60_000 + grace,
        b"s": 120_000 + grace,
        b"i": 180_000 + grace,
        b"rp": 30_000,
        b"rl": 4_000,
    }
    for family, ttl in expected.items():
        assert ttl - 1000 < ttls[family] <= ttl, (family, ttls[family])


def test_key_names_are_stable_across_versions(
    store: RedisStore, redis_client: Any, clock: FixedClock
) -> None:
    # replicas of different versions share one database during a rolling upgrade: a key name
    # derived differently would hide a revocation (or a used proof) from some of them
    t = clock.now().timestamp()
    store.revoke_token("jti-1", expires_at=t + 60)
    store.revoke_subject("alice", issuer=ISS, until=t + 60)
    store.revoke_issued_before(ISS, before=t, until=t + 60)
    store.check_and_store("proof-jti", expires_at=t + 60)
    store.acquire("alice", rate=1.0, burst=10)
    assert sorted(key.decode() for key in redis_client.scan_iter()) == [
        "zerotrust:rl:f8dfb5b368254f3787d32f39fff9873880a2123f3dc273fbfda6b91a29d8768f",
        "zerotrust:rp:44be3856f46a1a2d6d1f1ec27deea15ce39aedeac6c18f6c2421bac3a8f88a81",
        "zerotrust:{rv}:i:22bc656b8baab6e3064d7dc81ef70b10c4c49c7434aea4090730f042280c8d2e",
        "zerotrust:{rv}:s:87ed779cf93e4656429d550482195bdcbfa44a58591a7248408c786d9a59c611",
        "zerotrust:{rv}:t:e1be089b7fea89c1cbc7a5b705cda974b0e464aa6dc5f49a025be0afd591e985",
    ]


def test_a_guard_refuses_a_replay_cap_shorter_than_a_dpop_window() -> None:
    from zerotrust import Guard, Policy
    from zerotrust.dev import DevCA

    bundle = DevCA.create("example.org").bundle
    short = RedisStore("redis://127.0.0.1:1/0", replay_max_ttl=60)  # never connects
    assert short.replay_max_ttl == 60.0
    with pytest.raises(ConfigurationError, match="replay_max_ttl"):
        Guard(bundles=bundle, policy=Policy([]), store=short)
    default = RedisStore("redis://127.0.0.1:1/0")
    Guard(bundles=bundle, policy=Policy([]), store=default)
    short.close()
    default.close()


def test_custom_prefix(redis_server: RedisServer, redis_client: Any) -> None:
    store = RedisStore(redis_server.url, prefix="svc-a/")
    assert store.check_and_store("k", expires_at=time.time() + 5)
    assert [key.startswith(b"svc-a/rp:") for key in redis_client.scan_iter()] == [True]
    store.close()


@needs_redis_py
@pytest.mark.parametrize("prefix", ["", "a b", "x{", "ü", "p" * 65, b"zt:", None])
def test_bad_prefix(prefix: str) -> None:
    with pytest.raises(ConfigurationError, match="prefix"):
        RedisStore(prefix=prefix)


def test_rate_limit_uses_the_server_clock(store: RedisStore) -> None:
    results = [store.acquire("k", rate=0.5, burst=2) for _ in range(3)]
    assert [r.allowed for r in results] == [True, True, False]
    assert 1.9 < results[2].retry_after <= 2.0  # 1 token at 0.5/s, minus elapsed real time


def test_rate_limit_refills_by_server_time(store: RedisStore) -> None:
    assert store.acquire("fast", rate=50.0, burst=1).allowed
    assert not store.acquire("fast", rate=50.0, burst=1).allowed
    time.sleep(0.03)  # 1 token at 50/s takes 20 ms
    assert store.acquire("fast", rate=50.0, burst=1).allowed


def test_token_buckets_ignore_this_process_clock(store: RedisStore, clock: FixedClock) -> None:
    # replicas' clocks may differ: a bucket drained by one must not look refilled to another
    # whose clock runs ahead (one token per 100 s, by the server's clock)
    assert store.acquire("k", rate=0.01, burst=1).allowed
    clock.advance(3600)
    assert not store.acquire("k", rate=0.01, burst=1).allowed


def test_scripts_reload_after_script_flush(store: RedisStore, redis_client: Any) -> None:
    assert store.acquire("k", rate=1.0, burst=2).allowed
    redis_client.script_flush()
    assert store.acquire("k", rate=1.0, burst=2).remaining == 0
    assert not store.is_revoked(jti="j", subject="s", issuer=ISS, issued_at=1.0)


def test_foreign_data_under_our_key_is_unavailable(store: RedisStore, redis_client: Any) -> None:
    store.acquire("k", rate=1.0, burst=2)
    (key,) = redis_client.scan_iter()
    redis_client.delete(key)
    redis_client.set(key, "not a hash")
    with pytest.raises(StoreUnavailable, match="ResponseError"):
        store.acquire("k", rate=1.0, burst=2)


def test_unexpected_replies_are_unavailable(
    store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(store._scripts, "rate", lambda keys, args: [1])
    with pytest.raises(StoreUnavailable, match="unexpected reply"):
        store.acquire("k", rate=1.0, burst=1)


def test_caller_supplied_clients(redis_server: RedisServer, redis_client: Any) -> None:
    import redis
    import redis.asyncio

    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    sync_only = RedisStore(client=client)
    assert sync_only.acquire("k", rate=4.0, burst=1).allowed
    assert sync_only.acquire("k", rate=4.0, burst=1).retry_after > 0.2
    assert "127.0.0.1" in repr(sync_only)
    with pytest.raises(ConfigurationError, match="no async client"):
        asyncio.run(sync_only.acquire_async("k", rate=1.0, burst=1))
    with pytest.raises(ConfigurationError, match="no async client"):
        asyncio.run(sync_only.ping_async())
    sync_only.close()
    assert client.ping()  # not ours to close

    async def main() -> None:
        aclient = redis.asyncio.Redis.from_url(redis_server.url)
        async_only = RedisStore(async_client=aclient)
        assert await async_only.check_and_store_async("j", expires_at=time.time() + 5)
        await async_only.aclose()
        assert await aclient.ping()
        with pytest.raises(ConfigurationError, match="no sync client"):
            async_only.ping()
        with pytest.raises(ConfigurationError, match="no sync client"):
            async_only.check_and_store("j", expires_at=time.time() + 5)
        await aclient.aclose()

    asyncio.run(main())
    client.close()


def test_close_releases_the_stores_own_connections_only(
    redis_server: RedisServer, redis_client: Any
) -> None:
    import redis

    def names() -> list[str]:
        redis_client.ping()  # the server has read every close that happened before this
        return sorted(c["name"] for c in redis_client.client_list() if c["name"])

    own = RedisStore(f"{redis_server.url}?client_name=zt-own")
    callers_client = redis.Redis.from_url(redis_server.url, client_name="zt-callers")
    callers = RedisStore(client=callers_client)
    own.ping()
    callers.ping()
    assert names() == ["zt-callers", "zt-own"]
    own.close()
    callers.close()  # the caller's client is the caller's to close
    assert names() == ["zt-callers"]
    callers_client.close()
    assert names() == []


def test_more_concurrent_calls_than_connections_wait_for_one(redis_server: RedisServer) -> None:
    # a full pool makes a call wait (up to socket_timeout) instead of failing on a healthy server
    store = RedisStore(redis_server.url, max_connections=2, socket_timeout=5)
    now = time.time()

    async def burst() -> list[bool]:
        calls = [store.check_and_store_async(f"a{i}", expires_at=now + 60) for i in range(200)]
        try:
            return await asyncio.gather(*calls)
        finally:
            await store.aclose()

    assert asyncio.run(burst()) == [True] * 200
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        firsts = list(
            pool.map(lambda i: store.check_and_store(f"s{i}", expires_at=now + 60), range(200))
        )
    assert firsts == [True] * 200
    store.close()


def test_a_full_pool_that_stays_full_is_unavailable(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url, max_connections=1, socket_timeout=0.2)
    pool = store._client.connection_pool  # type: ignore[union-attr]
    try:
        held = pool.get_connection()
    except TypeError:  # redis < 5.3 requires the command name
        held = pool.get_connection("PING")
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="ConnectionError"):
        store.check_and_store("k", expires_at=time.time() + 60)
    assert time.monotonic() - started < 2.0
    store._client.connection_pool.release(held)  # type: ignore[union-attr]
    assert store.check_and_store("k", expires_at=time.time() + 60)
    store.close()


def test_one_store_serves_several_event_loops(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url)
    now = time.time()

    async def use(key: str) -> tuple[bool, bool]:
        return (
            await store.check_and_store_async(key, expires_at=now + 60),
            await store.check_and_store_async(key, expires_at=now + 60),
        )

    async def use_and_close(key: str) -> tuple[bool, bool]:
        try:
            return await use(key)
        finally:
            await store.aclose()

    # asyncio.run twice (each a new loop), then two live loops in turn
    assert asyncio.run(use_and_close("first")) == (True, False)
    assert asyncio.run(use_and_close("second")) == (True, False)
    loops = [asyncio.new_event_loop() for _ in range(2)]
    try:
        for round_ in range(3):
            for n, loop in enumerate(loops):
                assert loop.run_until_complete(use(f"loop{n}-{round_}")) == (True, False)
                loop.run_until_complete(store.ping_async())
        for loop in loops:
            loop.run_until_complete(store.aclose())  # each loop closes its own client
    finally:
        for loop in loops:
            loop.close()
    store.close()


# the caller's client keeps connections of loops that are gone: they can only be dropped
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_callers_async_client_on_another_loop_fails_closed(redis_server: RedisServer) -> None:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(redis_server.url)
    store = RedisStore(async_client=client)
    revoked = ResilientStore(store, revocation="open", replay="open")  # open on outages only
    now = time.time()
    asyncio.run(store.revoke_token_async("stolen", expires_at=now + 600))
    outcomes: list[object] = []
    for _ in range(4):  # a new event loop each time; the client belongs to the first
        try:
            outcomes.append(
                asyncio.run(
                    revoked.is_revoked_async(jti="stolen", subject=None, issuer=ISS, issued_at=None)
                )
            )
        except ConfigurationError:  # noqa: PERF203 - a misuse, never answered as "not revoked"
            outcomes.append("refused")
    # the client belongs to the loop that first used it here: every other loop is refused
    # (sharing its connections across loops made calls fail, or hang, now and then)
    assert outcomes == ["refused"] * 4
    del store, revoked, client
    gc.collect()  # the stranded connections' warnings belong to this test


@pytest.fixture
def collected_after() -> Iterator[None]:
    yield
    # redis < 5.2.1: a connection's __del__ fails on its closed loop, and the socket outlives
    # the call phase in that error's traceback; collect it here, not in a later test
    gc.collect()


@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.usefixtures("collected_after")
def test_clients_of_closed_loops_are_dropped(redis_server: RedisServer, redis_client: Any) -> None:
    store = RedisStore(redis_server.url)
    for _ in range(30):  # asyncio.run without aclose(): each run's loop is closed after it
        assert asyncio.run(store.health_async()).available
    assert len(store._aclients) == 1  # only the last loop's client is still held
    gc.collect()
    clients = int(redis_client.info("clients")["connected_clients"])
    assert clients <= 4, clients  # ours (the last run's), the test's own, not 30
    store.close()
    del store
    gc.collect()  # the last loop's client goes with the store: its warnings belong here


def test_the_stores_own_clients_follow_asyncio_run(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url)

    async def once(n: int) -> bool:
        try:
            return await store.check_and_store_async(f"run{n}", expires_at=time.time() + 60)
        finally:
            await store.aclose()

    assert [asyncio.run(once(n)) for n in range(4)] == [True] * 4
    store.close()


@needs_redis_py
@pytest.mark.parametrize(
    "kwargs",
    [
        {"url": "redis://127.0.0.1:1/0", "client": object()},
        {"url": "redis://127.0.0.1:1/0", "async_client": object()},
        {"replay_max_ttl": True},
        {"replay_max_ttl": 0.999},
        {"replay_max_ttl": float("inf")},
        {"replay_max_ttl": "1h"},
        {"socket_timeout": float("inf")},
        {"socket_timeout": 1e10},  # overflows the platform's clock on connect
        {"socket_timeout": 601},
        {"socket_timeout": "1"},
        {"max_connections": 100_001},
        {"socket_timeout": 0},
        {"socket_timeout": float("nan")},
        {"socket_timeout": True},
        {"replay_max_ttl": 0},
        {"url": "http://example.org/"},
        {"max_connections": 0},
        {"max_connections": True},
        {"max_connections": 2.5},
    ],
)
def test_bad_configuration(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        RedisStore(**kwargs)


@pytest.mark.parametrize(
    "query",
    [
        "socket_timeout=30",
        "socket_connect_timeout=30",
        "timeout=30",
        "retry_on_timeout=yes",
        "retry_on_error=TimeoutError",
        "max_connections=100000",
        "db=0&socket_timeout=",
    ],
)
def test_the_url_cannot_override_the_stores_connection_settings(
    redis_server: RedisServer, query: str
) -> None:
    # redis-py lets the URL's query win over the arguments it is given: a URL could lift the
    # bound on how long a call waits for a hung server, or retry on timeouts, unnoticed
    name = query.rpartition("&")[2].partition("=")[0]
    with pytest.raises(ConfigurationError, match=f"query sets {name}:") as info:
        RedisStore(f"{redis_server.url}?{query}", socket_timeout=0.5)
    assert "127.0.0.1" not in str(info.value)  # the URL is not echoed
    # other options of the URL still reach the connection
    store = RedisStore(f"{redis_server.url}?health_check_interval=5&client_name=orders")
    store.ping()
    store.close()


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("health_check_intervall=30", "health_check_intervall"),  # a misspelt option
        ("ssl_cert_reqs=bogus", "bogus"),  # a value redis-py refuses
        ("protocol=4", "protocol"),  # refused as a ConnectionError: no outage all the same
    ],
)
def test_a_connection_option_that_can_never_work_is_refused_when_the_store_is_built(
    query: str, reason: str
) -> None:
    """redis-py reads a URL's query only when it builds a connection: an option its
    connections do not take, or a value they refuse, would otherwise fail every call (a
    TypeError, not even an outage that a failure policy handles) instead of the start."""
    with pytest.raises(ConfigurationError, match=reason) as info:
        RedisStore(f"rediss://zt:s3cret@127.0.0.1:1/0?{query}")
    assert "invalid Redis URL (rediss://127.0.0.1:1/0)" in str(info.value)
    assert "s3cret" not in str(info.value)


def test_a_host_name_that_cannot_be_looked_up_is_refused_when_the_store_is_built() -> None:
    # a DNS label of over 63 characters: the sync client raised UnicodeError on every call
    host = "a" * 64 + ".example"
    with pytest.raises(
        ConfigurationError, match=rf"^invalid Redis URL \(redis://{host}:6379/0\): "
    ):
        RedisStore(f"redis://{host}:6379/0")  # the reason is the idna codec's, worded per Python


def test_an_option_only_sync_connections_take_is_refused_on_the_first_async_call() -> None:
    # redis.asyncio's connections take no OCSP options: a sync-only app keeps its URL, an
    # async call is refused as misconfigured (fails closed whatever the failure policy)
    store = RedisStore("rediss://127.0.0.1:1/0?ssl_validate_ocsp=true")
    with pytest.raises(ConfigurationError, match="ssl_validate_ocsp"):
        asyncio.run(store.ping_async())
    store.close()


@needs_redis_py
@pytest.mark.parametrize("query", ["sockettimeout=9", "ssl_cert_reqs=none"])
def test_a_url_option_the_client_does_not_take_is_a_configuration_error(query: str) -> None:
    # redis-py passes the query to each connection it opens: without a check here, every
    # call would raise the client's TypeError (no StoreUnavailable, no failure policy)
    with pytest.raises(ConfigurationError, match="invalid Redis URL") as info:
        RedisStore(f"redis://zt-operator:s3cret-pw@127.0.0.1:1/0?{query}")
    assert "s3cret" not in str(info.value) and "zt-operator" not in str(info.value)


@needs_redis_py
@pytest.mark.parametrize(
    ("query", "checked"),
    [
        ("", True),
        ("?ssl_cert_reqs=required&ssl_ca_certs=/etc/ssl/redis-ca.pem", True),
        ("?ssl_cert_reqs=none", None),  # no certificate check at all (a caution in settings)
        ("?ssl_check_hostname=false", False),  # the URL's own word (a caution in settings)
    ],
)
def test_a_tls_url_verifies_that_the_certificate_names_the_host(
    query: str, checked: bool | None
) -> None:
    """redis-py before 6.0 checked a TLS server's certificate but not the host it names: any
    certificate of a trusted authority would have let a machine in the middle answer "not
    revoked" and "first use". The store's own clients ask for the check, whatever the
    redis-py version; nothing connects here."""
    store = RedisStore(f"rediss://redis.internal:6380/0{query}")
    pools = [store._client.connection_pool, store._make_async().connection_pool]  # type: ignore[union-attr, misc]
    for pool in pools:
        assert pool.connection_kwargs.get("ssl_check_hostname") is checked
    plain = RedisStore("redis://redis.internal:6379/0")  # no TLS: nothing to check
    assert "ssl_check_hostname" not in plain._client.connection_pool.connection_kwargs  # type: ignore[union-attr]
    plain.close()
    store.close()


def test_the_bounds_of_the_configuration_are_inclusive(redis_server: RedisServer) -> None:
    for kwargs in ({"replay_max_ttl": 1}, {"max_connections": 1}, {"max_connections": 100_000}):
        store = RedisStore(redis_server.url, **kwargs)  # type: ignore[arg-type]
        store.ping()
        store.close()
    assert RedisStore(redis_server.url, replay_max_ttl=1).replay_max_ttl == 1.0


def test_missing_redis_py_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(MissingDependencyError, match=r"zerotrust\[redis\]"):
        RedisStore()


def test_stores_import_without_redis_py() -> None:
    code = (
        "import sys; sys.modules['redis'] = None\n"
        "import zerotrust.stores as s\n"
        "m = s.MemoryStore(); assert m.check_and_store('k', expires_at=9e9)\n"
        "loaded = [n for n, m in sys.modules.items() if m and n.split('.')[0] == 'redis']\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# --- outages --------------------------------------------------------------------------------


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A server of our own, so stopping it does not disturb other tests."""
    server = start_redis_server(tmp_path)
    yield server
    server.stop()


def _all_operations(store: Any) -> list[Any]:
    t = time.time()
    return [
        lambda: store.revoke_token("j", expires_at=t + 60),
        lambda: store.revoke_subject("s", issuer=ISS, until=t + 60),
        lambda: store.revoke_issued_before(ISS, before=t, until=t + 60),
        lambda: store.is_revoked(jti="j", subject="s", issuer=ISS, issued_at=t),
        lambda: store.check_and_store("k", expires_at=t + 60),
        lambda: store.acquire("k", rate=1.0, burst=5),
        store.ping,
    ]


def test_outage_fails_promptly_and_recovers(own_server: RedisServer) -> None:
    store = RedisStore(own_server.url, socket_timeout=0.5)
    assert store.check_and_store("before", expires_at=time.time() + 60)

    own_server.stop()
    for operation in _all_operations(store):
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as info:
            operation()
        assert time.monotonic() - started < 1.0
        assert info.value.http_status == 503
        assert "ConnectionError" in str(info.value)
    health = store.health()
    assert not health.available
    assert "127.0.0.1" in health.detail

    own_server.start()  # same port, empty server: scripts must be loaded again
    for operation in _all_operations(store):
        operation()
    assert store.health().available
    store.close()


def test_credentials_never_reach_messages(own_server: RedisServer) -> None:
    url = own_server.url.replace("redis://", "redis://zt-operator:s3cret-pw@")
    store = RedisStore(url)
    assert "s3cret" not in repr(store)
    with pytest.raises(StoreUnavailable) as info:  # no such user on this server
        store.ping()
    assert "WRONGPASS" in str(info.value) or "invalid" in str(info.value)  # the server's reason
    own_server.stop()
    with pytest.raises(StoreUnavailable) as info2:
        store.check_and_store("k", expires_at=time.time() + 60)
    for error in (info.value, info2.value):
        assert "s3cret" not in str(error)
        assert "zt-operator" not in str(error)
        assert "127.0.0.1" in str(error)
    store.close()


def test_a_reason_that_quotes_a_credential_is_withheld(redis_server: RedisServer) -> None:
    url = redis_server.url.replace("redis://", "redis://zt-operator:s3cret-pw@")
    store = RedisStore(url)
    echoed = store._unavailable(RuntimeError("AUTH zt-operator s3cret-pw failed"))
    assert "s3cret" not in str(echoed) and "zt-operator" not in str(echoed)
    assert "reason withheld" in str(echoed) and "RuntimeError" in str(echoed)
    # a short or common credential is withheld too, not masked where it appears
    store._secrets = ("a",)
    masked = str(store._unavailable(RuntimeError("invalid username-password pair")))
    assert "reason withheld" in masked and "*" not in masked
    store.close()


def test_a_long_reason_is_cut_short(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url)
    error = str(store._unavailable(RuntimeError("x" * 5000 + " tail")))
    assert "x" * 200 in error
    assert "x" * 201 not in error and "tail" not in error
    silent = str(store._unavailable(TimeoutError()))  # no reason given: none in brackets
    assert silent.endswith(f"from redis://127.0.0.1:{redis_server.port}/0")
    store.close()


def test_an_empty_credential_withholds_nothing() -> None:
    import redis

    client = redis.Redis(host="127.0.0.1", port=1, username="", password="")
    store = RedisStore(client=client)
    error = str(store._unavailable(ConnectionError("Connection refused")))
    assert "(Connection refused)" in error and "withheld" not in error
    client.close()


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_refused_connection_is_named_by_the_systems_reason(
    own_server: RedisServer, mode: str
) -> None:
    # redis-py before 5.0.8 names an async connection's failure by its error number alone
    store = RedisStore(own_server.url)
    own_server.stop()

    async def call_async() -> None:
        try:
            await store.ping_async()
        finally:
            await store.aclose()

    with pytest.raises(StoreUnavailable) as info:
        store.ping() if mode == "sync" else asyncio.run(call_async())
    # asyncio says it in words of its own
    assert ("Connection refused" if mode == "sync" else "Connect call failed") in str(info.value)
    assert "Connection refused" in store.health().detail
    store.close()


def test_the_systems_reason_that_quotes_a_credential_is_withheld(
    redis_server: RedisServer,
) -> None:
    import redis

    store = RedisStore(redis_server.url.replace("redis://", "redis://zt-operator:s3cret-pw@"))
    exc = redis.ConnectionError("Error 1 connecting to 127.0.0.1:6379. 1.")
    exc.__context__ = OSError(1, "handshake for zt-operator failed")  # as redis-py 5.0 chains it
    error = str(store._unavailable(exc))
    assert "zt-operator" not in error and "reason withheld" in error
    assert store._cause(exc) is None  # its traceback would show the reason beneath
    store.close()


def test_async_outage_fails_promptly_and_recovers(own_server: RedisServer) -> None:
    store = RedisStore(own_server.url, socket_timeout=0.5)
    t = time.time()

    def calls() -> list[Any]:
        return [
            store.revoke_token_async("j", expires_at=t + 60),
            store.revoke_subject_async("s", issuer=ISS, until=t + 60),
            store.revoke_issued_before_async(ISS, before=t, until=t + 60),
            store.is_revoked_async(jti="j", subject="s", issuer=ISS, issued_at=t),
            store.check_and_store_async("k", expires_at=t + 60),
            store.acquire_async("k", rate=1.0, burst=5),
            store.ping_async(),
        ]

    async def main() -> None:
        await store.ping_async()
        own_server.stop()
        for call in calls():
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                await call
            assert time.monotonic() - started < 1.0
        assert not (await store.health_async()).available
        own_server.start()
        for call in calls():
            await call
        assert (await store.health_async()).available
        await store.aclose()

    asyncio.run(main())
    store.close()


def test_a_full_noeviction_server_refuses_replay_and_buckets_but_answers_revocations(
    own_server: RedisServer,
) -> None:
    """docs/stores.md: with ``noeviction`` a full Redis refuses new replay entries and token
    bucket updates (503), while revocation lookups keep answering and every revocation is
    kept."""
    import redis

    store = RedisStore(own_server.url)
    t = time.time()
    store.revoke_token("j", expires_at=t + 60)
    store.revoke_subject("s", issuer=ISS, until=t + 60)
    assert store.check_and_store("seen", expires_at=t + 60)
    assert store.acquire("k", rate=1.0, burst=5).allowed
    admin = redis.Redis.from_url(own_server.url)
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", 1)  # every byte in use is over the limit

    for refused in (
        lambda: store.check_and_store("new", expires_at=t + 60),
        lambda: store.check_and_store("seen", expires_at=t + 60),  # 503 too, never "first"
        lambda: store.acquire("k", rate=1.0, burst=5),
        lambda: store.acquire("other", rate=1.0, burst=5),
    ):
        with pytest.raises(StoreFull, match="OutOfMemoryError"):
            refused()
    open_store = ResilientStore(store, replay="open", rate_limit="open")
    with pytest.raises(StoreFull):  # a full store is no outage: never failed open
        open_store.check_and_store("new", expires_at=t + 60)
    with pytest.raises(StoreFull):
        open_store.acquire("other", rate=1.0, burst=5)
    assert store.is_revoked(jti="j", subject=None, issuer=ISS, issued_at=t)
    assert store.is_revoked(jti=None, subject="s", issuer=ISS, issued_at=t - 1)
    store.revoke_token("j", expires_at=t + 600)  # extending a revocation keeps it
    assert store.is_revoked(jti="j", subject=None, issuer=ISS, issued_at=t)
    assert not store.is_revoked(jti="other", subject="s", issuer=ISS, issued_at=t + 5)
    admin.close()
    store.close()


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs SIGSTOP")
def test_hanging_server_is_bounded_by_the_socket_timeout(own_server: RedisServer) -> None:
    store = RedisStore(own_server.url, socket_timeout=0.2)
    store.ping()
    assert own_server.process is not None
    os.kill(own_server.process.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="TimeoutError"):
            store.check_and_store("k", expires_at=time.time() + 60)
        assert 0.15 < time.monotonic() - started < 0.6
    finally:
        os.kill(own_server.process.pid, signal.SIGCONT)
    assert store.check_and_store("k2", expires_at=time.time() + 60)
    store.close()


def test_resilient_store_over_a_real_outage(
    own_server: RedisServer, clock: FixedClock, caplog: pytest.LogCaptureFixture
) -> None:
    redis_store = make_redis_store(own_server.url, clock)
    open_store = ResilientStore(redis_store, revocation="open", replay="open", rate_limit="open")
    closed_store = ResilientStore(redis_store)
    t = clock.now().timestamp()
    open_store.revoke_token("j", expires_at=t + 60)
    assert open_store.is_revoked(jti="j", subject=None, issuer=ISS, issued_at=None)

    own_server.stop()
    with pytest.raises(StoreUnavailable):
        closed_store.is_revoked(jti="j", subject=None, issuer=ISS, issued_at=None)
    with pytest.raises(StoreUnavailable):  # revoking never fails open
        open_store.revoke_token("k", expires_at=t + 60)
    with caplog.at_level("WARNING", logger="zerotrust.stores"):
        assert not open_store.is_revoked(jti="j", subject=None, issuer=ISS, issued_at=None)
        assert not open_store.is_revoked(jti="j", subject=None, issuer=ISS, issued_at=None)
        assert open_store.check_and_store("once", expires_at=t + 60)
        assert open_store.check_and_store("once", expires_at=t + 60)
        assert open_store.acquire("k", rate=1.0, burst=3).allowed
    assert len(caplog.records) == 3  # once per feature and outage

    own_server.start()
    with caplog.at_level("INFO", logger="zerotrust.stores"):
        assert not open_store.is_revoked(jti="j", subject=None, issuer=ISS, issued_at=None)
    assert "available again" in caplog.records[-1].getMessage()
    redis_store.close()


# --- a reply lost with its connection ---------------------------------------------------------


class _LosingProxy:
    """A TCP proxy in front of Redis that, once armed with a pattern, forwards the next command
    containing it and then drops the connection instead of passing the reply back: Redis ran
    the command, the client never heard, and redis-py sends it again on a new connection."""

    def __init__(self, upstream_port: int) -> None:
        import socket
        import threading

        self._socket = socket
        self._upstream = upstream_port
        self.armed: bytes | None = None
        self.dropped = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closing = False
        self._threads: list[threading.Thread] = []
        self._conns: list[Any] = []
        self._lock = threading.Lock()
        accept = threading.Thread(target=self._accept, daemon=True)
        accept.start()
        self._threading = threading

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = self._socket.create_connection(("127.0.0.1", self._upstream))
            with self._lock:
                if self._closing:  # accepted while close() ran: it would leave these open
                    client.close()
                    upstream.close()
                    return
                self._conns += [client, upstream]
            lose = self._threading.Event()
            for args in ((client, upstream, False, lose), (upstream, client, True, lose)):
                thread = self._threading.Thread(target=self._pipe, args=args, daemon=True)
                thread.start()
                self._threads.append(thread)

    def _pipe(self, source: Any, sink: Any, from_server: bool, lose: Any) -> None:
        try:
            while data := source.recv(65536):
                if not from_server and self.armed is not None and self.armed in data:
                    self.armed = None
                    lose.set()
                if from_server and lose.is_set():  # the reply to the armed command: lost
                    lose.clear()
                    self.dropped += 1
                    for end in (source, sink):
                        end.shutdown(self._socket.SHUT_RDWR)
                    return
                sink.sendall(data)
        except OSError:
            return

    def close(self) -> None:
        with self._lock:
            self._closing = True
            conns, self._conns = self._conns, []
        close_listener(self._listener)
        for conn in conns:
            conn.close()


@pytest.fixture
def losing_proxy(redis_server: RedisServer) -> Iterator[_LosingProxy]:
    port = int(redis_server.url.rsplit(":", 1)[1].split("/")[0])
    proxy = _LosingProxy(port)
    yield proxy
    proxy.close()


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_call_sent_twice_answers_as_once(losing_proxy: _LosingProxy, mode: str) -> None:
    # the replay check's second run is still "first seen" (not a replay of itself), and the
    # bucket charges one call once: a lost reply never refuses a legitimate request
    store = RedisStore(f"redis://127.0.0.1:{losing_proxy.port}/0")
    expires = time.time() + 60
    keys = KeySpace()  # the store's key names: what the armed proxy looks for

    def key(name: str) -> bytes:
        return name.encode()

    async def run_async() -> tuple[bool, bool, Any, Any]:
        await store.acquire_async("warm", rate=1.0, burst=1)  # scripts loaded
        losing_proxy.armed = key(keys.replay("fresh-async"))
        first = await store.check_and_store_async("fresh-async", expires_at=expires)
        again = await store.check_and_store_async("fresh-async", expires_at=expires)
        losing_proxy.armed = key(keys.rate("bucket-async"))
        charged = await store.acquire_async("bucket-async", rate=0.001, burst=2)
        after = await store.acquire_async("bucket-async", rate=0.001, burst=2)
        await store.aclose()
        return first, again, charged, after

    if mode == "sync":
        store.acquire("warm", rate=1.0, burst=1)  # scripts loaded, a pooled connection
        losing_proxy.armed = key(keys.replay("fresh"))
        first = store.check_and_store("fresh", expires_at=expires)
        again = store.check_and_store("fresh", expires_at=expires)
        losing_proxy.armed = key(keys.rate("bucket"))
        charged = store.acquire("bucket", rate=0.001, burst=2)
        after = store.acquire("bucket", rate=0.001, burst=2)
        store.close()
    else:
        first, again, charged, after = asyncio.run(run_async())
    assert losing_proxy.dropped == 2  # both replies were lost, both calls sent again
    assert first is True and again is False  # the real replay is still caught
    assert charged.allowed and charged.remaining == 1  # one token taken, not two
    assert after.allowed and after.remaining == 0


def test_where_a_store_points_is_named_without_credentials() -> None:
    """``repr`` and every message name the server as ``scheme://host:port/db``: no password,
    no query (which may carry one), and an unreadable URL is not echoed."""
    import redis

    store = RedisStore(url="redis://app:hunter2@127.0.0.1:1/3?password=hunter2")
    assert repr(store) == "RedisStore('redis://127.0.0.1:1/3', prefix='zerotrust:')"
    for url in ("redis://app:hunter2@host:99999/0", "redis://[::1/0?password=hunter2"):
        with pytest.raises(ConfigurationError) as info:
            RedisStore(url=url)
        assert str(info.value) == "invalid Redis URL (an invalid Redis URL)"
    by_socket = RedisStore(client=redis.Redis(unix_socket_path="/run/redis.sock", password="x"))
    assert repr(by_socket) == "RedisStore('unix:///run/redis.sock', prefix='zerotrust:')"
    by_host = RedisStore(client=redis.Redis(host="10.0.0.5", port=6380, db=2, password="hunter2"))
    assert repr(by_host) == "RedisStore('redis://10.0.0.5:6380/2', prefix='zerotrust:')"
    import redis.asyncio

    async_only = RedisStore(async_client=redis.asyncio.Redis(host="10.0.0.6", port=6381, db=4))
    assert repr(async_only) == "RedisStore('redis://10.0.0.6:6381/4', prefix='zerotrust:')"
    default = RedisStore()
    assert repr(default) == "RedisStore('redis://127.0.0.1:6379/0', prefix='zerotrust:')"
    without_port = RedisStore(url="rediss://cache.internal/1")
    assert repr(without_port) == "RedisStore('rediss://cache.internal/1', prefix='zerotrust:')"
    by_url_socket = RedisStore(url="unix:///run/redis.sock?db=2")
    assert repr(by_url_socket) == "RedisStore('unix:///run/redis.sock', prefix='zerotrust:')"


def test_a_password_with_an_unencoded_slash_is_never_echoed() -> None:
    """A ``/`` in a password ends the URL's authority there: ``app:12/hunter2@host`` would
    connect to host ``app``, port 12, database 0 (the client ignores a path that names no
    database), and show the password's tail as the path in ``repr`` and in every outage
    message. It is refused when the store is built, without it."""
    for url in (
        "redis://app:12/hunter2@127.0.0.1:1/0",
        "rediss://:8/hunter2@127.0.0.1:1",
        "unix://app:12/hunter2@/run/redis.sock",
    ):
        with pytest.raises(ConfigurationError) as info:
            RedisStore(url=url)
        assert str(info.value).startswith("invalid Redis URL (an invalid Redis URL): ")
        assert "hunter2" not in str(info.value) and "12" not in str(info.value)
    for url in (
        "redis://127.0.0.1:1/15",
        "redis://127.0.0.1:1/",
        "redis://127.0.0.1:1",
        "unix:///run/redis.sock?db=2",
        "unix://app:pw@/run/redis.sock",
    ):
        RedisStore(url=url).close()


def test_a_forked_child_talks_to_redis_over_connections_of_its_own(
    redis_server: RedisServer, redis_client: Any, clock: FixedClock
) -> None:
    """A store built before a fork (gunicorn --preload): the child must never write on a
    connection of the parent's pool, whose replies the parent would then read (or the child
    the parent's). Its calls open connections of its own; the parent's stay the parent's."""
    import redis

    store = RedisStore(f"{redis_server.url}?client_name=zt-fork", clock=clock)
    try:
        store.ping()  # a connection in the pool, idle, its last command PING
        expires = clock.now().timestamp() + 60

        def child() -> str:
            first = store.check_and_store("forked", expires_at=expires)
            with redis.Redis.from_url(redis_server.url) as lister:
                commands = sorted(c["cmd"] for c in lister.client_list() if c["name"] == "zt-fork")
            return f"{first} {' '.join(commands)}"

        # the parent's connection still last ran PING; the child's ran the script
        assert in_child(child) == "True evalsha ping"
        assert store.check_and_store("forked", expires_at=expires) is False
        store.ping()
    finally:
        store.close()


def test_a_call_cancelled_while_redis_holds_it_leaves_no_reply_for_the_next_one(
    redis_server: RedisServer, redis_client: Any
) -> None:
    """A request cancelled (its deadline, its client gone) while its replay check waits for
    Redis: the next call must read its own answer, never the reply to the cancelled one,
    which would answer "first time seen" for a replayed token."""
    store = RedisStore(redis_server.url, max_connections=1)
    now = time.time()
    assert store.check_and_store("seen", expires_at=now + 60) is True

    def held() -> bool:  # a script call waiting for Redis, which holds writes
        return any(c["cmd"] == "evalsha" and "b" in c["flags"] for c in redis_client.client_list())

    async def main() -> bool:
        redis_client.execute_command("CLIENT", "PAUSE", 30_000, "WRITE")
        try:
            cancelled = asyncio.ensure_future(
                store.check_and_store_async("fresh", expires_at=now + 60)
            )
            await asyncio.to_thread(eventually, held)
            cancelled.cancel()
            with pytest.raises(asyncio.CancelledError):
                await cancelled
        finally:
            redis_client.execute_command("CLIENT", "UNPAUSE")
        try:
            return await store.check_and_store_async("seen", expires_at=now + 60)
        finally:
            await store.aclose()

    try:
        assert asyncio.run(main()) is False  # the replay is seen: its own reply was read
    finally:
        store.close()


# --- Redis before 7.0 ----------------------------------------------------------------------------

#: An error a command inside a script ran into, as Redis 7 words it, and as Redis 5 and 6 word the
#: same error: wrapped in an ERR, which redis-py raises as a plain ResponseError.
_SCRIPT_ERROR_7 = re.compile(
    rb"-([A-Z]+) (.*?) script: ([0-9a-f]{40}), on @user_script:([0-9]+)\.\r\n"
)
_SCRIPT_ERROR_BEFORE_7 = (
    rb"-ERR Error running script (call to f_\3): @user_script:\4: @user_script: \4: -\1 \2\r\n"
)


class _Pre7Proxy(_LosingProxy):
    """A proxy in front of Redis 7 that passes every reply on as it is, except the error of a
    command inside a script, which it words as Redis 5 and 6 send it (the server the store is
    documented to work with since version 5): ``-ERR Error running script (call to f_<sha1>):
    @user_script:2: @user_script: 2: -OOM command not allowed when used memory >
    'maxmemory'.``"""

    def _pipe(self, source: Any, sink: Any, from_server: bool, lose: Any) -> None:
        pending = b""
        try:
            while data := source.recv(65536):
                if not from_server:
                    sink.sendall(data)
                    continue
                pending += data
                complete, end, pending = pending.rpartition(b"\r\n")  # whole lines only
                if end:
                    sink.sendall(_SCRIPT_ERROR_7.sub(_SCRIPT_ERROR_BEFORE_7, complete + end))
        except OSError:
            return


@pytest.fixture
def pre7_proxy(own_server: RedisServer) -> Iterator[_Pre7Proxy]:
    proxy = _Pre7Proxy(own_server.port)
    yield proxy
    proxy.close()


def test_a_full_server_is_full_in_the_words_of_redis_before_7(
    own_server: RedisServer, pre7_proxy: _Pre7Proxy
) -> None:
    """Redis 5 and 6 wrap the OOM a script's write runs into in a generic ERR: a full server is
    still a full store (StoreFull), which no failure policy answers for, not an outage that
    ``"open"`` would answer with *first use* and *allowed* for any caller who filled it."""
    import redis

    store = RedisStore(f"redis://127.0.0.1:{pre7_proxy.port}/0")
    t = time.time()
    assert store.check_and_store("seen", expires_at=t + 60)
    admin = redis.Redis.from_url(own_server.url)
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", 1)
    open_store = ResilientStore(store, replay="open", rate_limit="open")

    async def replay_async() -> bool:
        try:
            return await open_store.check_and_store_async("new", expires_at=t + 60)
        finally:
            await store.aclose()

    try:
        for refused in (
            lambda: store.check_and_store("new", expires_at=t + 60),
            lambda: store.check_and_store("seen", expires_at=t + 60),
            lambda: store.acquire("k", rate=1.0, burst=5),
            lambda: open_store.check_and_store("new", expires_at=t + 60),
            lambda: open_store.acquire("k", rate=1.0, burst=5),
            lambda: asyncio.run(replay_async()),
        ):
            with pytest.raises(StoreFull, match="Error running script"):
                refused()
    finally:
        admin.config_set("maxmemory", 0)
        admin.close()
        store.close()


# --- a failover that moves the server's address --------------------------------------------


@pytest.mark.parametrize("wording", ["redis-7", "redis-5-6"])
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_primary_demoted_to_replica_is_left_for_the_new_one(
    own_server: RedisServer, tmp_path: Path, mode: str, wording: str
) -> None:
    """After a failover the store's address (a DNS name, a virtual IP, here a proxy) leads to
    the new primary, while the old one, now a read-only replica, keeps the pooled connections
    open and answers writes with READONLY: each such connection is dropped and the call sent
    again, on a new connection, which reaches the new primary. So too when the READONLY comes
    wrapped in the ERR of Redis before 7.0 (``Error running script ...: -READONLY ...``)."""
    import redis

    (tmp_path / "new").mkdir()
    new_primary = start_redis_server(tmp_path / "new")
    # never armed: it only forwards (and words script errors as Redis 5 and 6 do)
    proxy = (_LosingProxy if wording == "redis-7" else _Pre7Proxy)(own_server.port)
    store = RedisStore(f"redis://127.0.0.1:{proxy.port}/0", max_connections=1)
    old = redis.Redis.from_url(own_server.url)
    expires = time.time() + 60

    def fail_over() -> None:
        old.replicaof("127.0.0.1", new_primary.port)
        proxy._upstream = new_primary.port  # new connections reach the new primary

    async def run_async() -> list[bool]:
        assert await store.check_and_store_async("before", expires_at=expires)
        fail_over()
        answers = [await store.check_and_store_async("after", expires_at=expires)]
        answers.append(await store.check_and_store_async("after", expires_at=expires))
        await store.aclose()
        return answers

    try:
        if mode == "sync":
            assert store.check_and_store("before", expires_at=expires)  # a pooled connection
            fail_over()
            answers = [store.check_and_store("after", expires_at=expires)]
            answers.append(store.check_and_store("after", expires_at=expires))
        else:
            answers = asyncio.run(run_async())
        assert answers == [True, False]
        assert redis.Redis.from_url(new_primary.url).exists(KeySpace().replay("after")) == 1
    finally:
        old.replicaof("no", "one")
        old.close()
        store.close()
        proxy.close()
        new_primary.stop()


# --- replicas in processes of their own -----------------------------------------------------


def _replica(url: str, skew: float, barrier: Any, results: Any) -> None:
    """One replica: its own store (pool, clock) racing the others for one proof and one bucket."""
    clock = FixedClock(dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=skew))
    store = RedisStore(url, clock=clock)
    store.ping()  # connected and scripts ready before the race starts
    barrier.wait()
    first = store.check_and_store("proof", expires_at=clock.now().timestamp() + 60)
    admitted = sum(store.acquire("caller", rate=0.01, burst=5).allowed for _ in range(3))
    results.put((first, admitted))
    store.close()


def test_replicas_in_processes_with_skewed_clocks_share_one_proof_and_one_bucket(
    redis_server: RedisServer, redis_client: Any
) -> None:
    """Replicas of a service, each a process with its own pool and a clock minutes apart,
    race for the same DPoP proof and the same caller's bucket: one of them sees the proof
    first, and together they admit exactly the burst: the bucket runs on the server's clock
    (on the replicas' clocks, ten minutes apart at one token per 100 s, it would refill)."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # no fork of this threaded test process
    skews = (-600.0, 0.0, 600.0)
    barrier, results = context.Barrier(len(skews)), context.Queue()
    workers = [
        context.Process(target=_replica, args=(redis_server.url, skew, barrier, results))
        for skew in skews
    ]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    assert sorted(first for first, _ in outcomes) == [False] * (len(skews) - 1) + [True]
    assert sum(admitted for _, admitted in outcomes) == 5


# --- TLS --------------------------------------------------------------------------------------


@pytest.fixture
def tls_server(tmp_path: Path, ca: Any) -> Iterator[tuple[int, Path]]:
    """A ``redis-server`` speaking TLS only, with a certificate naming ``localhost`` alone."""
    import shutil
    import socket

    from cryptography.hazmat.primitives.serialization import Encoding

    from tests._wait import eventually

    from .conftest import _free_port

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    svid = ca.issue_svid("spiffe://example.org/redis", dns_names=["localhost"])
    svid.save(tmp_path / "cert.pem", tmp_path / "key.pem")
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.root_certificate.public_bytes(Encoding.PEM))
    port = _free_port()
    args = [binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1"]
    args += ["--tls-cert-file", str(tmp_path / "cert.pem")]
    args += ["--tls-key-file", str(tmp_path / "key.pem"), "--tls-ca-cert-file", str(ca_file)]
    args += ["--tls-auth-clients", "no", "--save", "", "--appendonly", "no"]
    args += ["--dir", str(tmp_path)]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def listening() -> bool:
        assert process.poll() is None, "redis-server with TLS did not start"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            return False
        return True

    try:
        eventually(listening, timeout=10)
        yield port, ca_file
    finally:
        process.terminate()
        process.wait(5)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_tls_server_must_hold_a_certificate_for_the_urls_host(
    tls_server: tuple[int, Path], mode: str
) -> None:
    """A real handshake: the certificate of a trusted authority, but for another name (here
    ``localhost``, reached as ``127.0.0.1``), is refused as an outage, never spoken to."""
    port, ca_file = tls_server
    query = f"?ssl_ca_certs={ca_file}"
    named = RedisStore(f"rediss://localhost:{port}/0{query}")
    other = RedisStore(f"rediss://127.0.0.1:{port}/0{query}")
    waived = RedisStore(f"rediss://127.0.0.1:{port}/0{query}&ssl_check_hostname=false")
    expires = time.time() + 60

    async def run_async() -> None:
        try:
            assert await named.check_and_store_async("k", expires_at=expires)
            with pytest.raises(StoreUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
                await other.check_and_store_async("k", expires_at=expires)
            assert not await waived.check_and_store_async("k", expires_at=expires)  # its own word
        finally:  # even when it fails: an open connection would be reported in a later test
            for store in (named, other, waived):
                await store.aclose()

    try:
        if mode == "sync":
            assert named.check_and_store("k", expires_at=expires)
            with pytest.raises(StoreUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
                other.check_and_store("k", expires_at=expires)
            assert not waived.check_and_store("k", expires_at=expires)
        else:
            asyncio.run(run_async())
    finally:
        for store in (named, other, waived):
            store.close()
