"""Fixtures for the store tests: a real ``redis-server`` on a free loopback port.

Without a ``redis-server`` binary (or redis-py) the Redis tests are skipped, except when the
environment variable ``CI`` is ``true``: there they fail, because CI must run them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from zerotrust import FixedClock
from zerotrust.stores import MemoryStore, RedisStore

T = TypeVar("T")
START = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (required in CI)")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` process on ``127.0.0.1:port``; can be stopped and restarted."""

    def __init__(self, binary: str, workdir: Path, port: int | None = None) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = port or _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--dir", str(self.workdir)]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not _answers_ping(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.01)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
            self.process = None


def start_redis_server(workdir: Path) -> RedisServer:
    """Start a server on a free port (retrying if another process grabbed the port)."""
    binary = shutil.which("redis-server")
    if binary is None:
        _unavailable("redis-server is not installed (apt-get install redis-server)")
    try:
        import redis  # noqa: F401
    except ImportError:
        _unavailable("redis-py is not installed (pip install 'zerotrust[redis]')")
    assert binary is not None
    for attempt in range(3):
        server = RedisServer(binary, workdir)
        try:
            server.start()
        except RuntimeError:
            if attempt == 2:
                raise
        else:
            return server
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with tempfile.TemporaryDirectory() as workdir:
        server = start_redis_server(Path(workdir))
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[Any]:
    """A raw redis-py client on a freshly flushed database."""
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


@dataclass
class Backend:
    """A store under test with a way to move time forward for it and everything it stores."""

    name: str
    store: Any
    clock: FixedClock
    redis: Any = None

    def advance(self, seconds: float) -> None:
        """Move the clock; for Redis also age every key's TTL (expiring the lapsed ones)."""
        self.clock.advance(seconds)
        if self.redis is None:
            return
        for key in self.redis.scan_iter(count=1000):
            pttl = self.redis.pttl(key)
            if pttl == -2:  # expired (in real time) since the scan listed it
                continue
            assert pttl > 0, f"key without TTL: {key!r}"
            if pttl <= seconds * 1000:
                self.redis.delete(key)
            else:
                self.redis.pexpire(key, pttl - round(seconds * 1000))

    def run(self, factory: Callable[[], Awaitable[T]]) -> T:
        """Run a coroutine in a new event loop, closing the store's async client in it."""

        async def main() -> T:
            try:
                return await factory()
            finally:
                await self.store.aclose()

        return asyncio.run(main())


def make_redis_store(url: str, clock: FixedClock, **kwargs: Any) -> RedisStore:
    """A RedisStore whose token buckets follow ``clock`` instead of the server's time."""
    store = RedisStore(url, clock=clock, **kwargs)
    store._plan.server_time = False
    return store


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest, clock: FixedClock) -> Iterator[Backend]:
    if request.param == "memory":
        yield Backend("memory", MemoryStore(clock=clock), clock)
        return
    client = request.getfixturevalue("redis_client")
    server = request.getfixturevalue("redis_server")
    store = make_redis_store(server.url, clock)
    yield Backend("redis", store, clock, client)
    store.close()
