"""Store operation latency: MemoryStore vs RedisStore on loopback.

Baselines measured in the same run: a dict lookup for the memory store, a raw ``PING`` round
trip for Redis (so the ratio is the cost of the script or command over the network floor).
Redis is measured when ``redis-server`` and redis-py are installed; a private server is started
on a free loopback port and stopped at the end.

    python benchmarks/bench_stores.py [--iterations N]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import count
from typing import Any

from zerotrust.stores import MemoryStore, RedisStore

ISS = "https://issuer.example"


def per_op(fn: Callable[[], Any], iterations: int) -> float:
    """Best of three runs, in microseconds per call."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(iterations):
            fn()
        best = min(best, (time.perf_counter() - start) / iterations)
    return best * 1e6


def operations(store: Any) -> dict[str, Callable[[], Any]]:
    far = time.time() + 3600
    store.revoke_subject("mallory", issuer=ISS, until=far)
    fresh = count()
    return {
        "is_revoked": lambda: store.is_revoked(
            jti="j", subject="alice", issuer=ISS, issued_at=far - 7200
        ),
        "check_and_store (new key)": lambda: store.check_and_store(
            f"jti-{next(fresh)}", expires_at=far
        ),
        "check_and_store (replay)": lambda: store.check_and_store("jti-0", expires_at=far),
        "acquire": lambda: store.acquire("alice", rate=1e9, burst=1_000_000),
    }


@contextmanager
def redis_server() -> Iterator[str | None]:
    binary = shutil.which("redis-server")
    try:
        import redis  # noqa: F401
    except ImportError:
        binary = None
    if binary is None:
        yield None
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as workdir:
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", workdir]
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = f"redis://127.0.0.1:{port}/0"
            probe = RedisStore(url)
            for _ in range(500):
                if probe.health().available:
                    break
                time.sleep(0.01)
            probe.close()
            yield url
        finally:
            process.terminate()
            process.wait(5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=2000)
    iterations = parser.parse_args().iterations

    table = {"k": 1}
    dict_us = per_op(lambda: table.get("k"), iterations * 50)
    memory = operations(MemoryStore())
    print(f"memory store (baseline: dict lookup {dict_us:.3f} µs)")
    for name, fn in memory.items():
        us = per_op(fn, iterations * 10)
        print(f"  {name:28} {us:8.2f} µs   {us / dict_us:8.0f}x dict")

    with redis_server() as url:
        if url is None:
            print("redis store: skipped (redis-server or redis-py not installed)")
            return
        store = RedisStore(url)
        ping_us = per_op(store.ping, iterations)
        print(f"redis store (baseline: PING round trip {ping_us:.1f} µs)")
        for name, fn in operations(store).items():
            us = per_op(fn, iterations)
            print(f"  {name:28} {us:8.1f} µs   {us / ping_us:8.2f}x PING")
        store.close()


if __name__ == "__main__":
    main()
