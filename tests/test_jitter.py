"""Backoff jitter never draws from the random module's shared generator, which applications
seed to replay a run (and which background threads would otherwise disturb at any moment)."""

from __future__ import annotations

import random
from types import SimpleNamespace

import grpc
import httpx

from zerotrust import _jitter
from zerotrust.client._grpc_interceptors import _Plan as GrpcPlan
from zerotrust.client._httpx_transport import _Plan as HttpxPlan
from zerotrust.grpc import RetryPolicy as GrpcRetryPolicy
from zerotrust.httpx import RetryPolicy as HttpxRetryPolicy


def test_backoff_jitter_leaves_the_shared_generator_alone() -> None:
    random.seed(2026)
    expected = [random.random() for _ in range(3)]
    random.seed(2026)
    grpc_plan = GrpcPlan(GrpcRetryPolicy(initial_backoff=1, max_backoff=3), None)
    grpc_plan.attempts = 1
    grpc_wait = grpc_plan.delay(grpc.StatusCode.UNAVAILABLE, ())
    httpx_plan = HttpxPlan(
        HttpxRetryPolicy(backoff=0.5), httpx.Request("GET", "https://a.example/")
    )
    failed = SimpleNamespace(failed=True, exception=lambda: httpx.ConnectError("refused"))
    httpx_wait = httpx_plan.wait(SimpleNamespace(attempt_number=1, outcome=failed))  # type: ignore[arg-type]
    assert [random.random() for _ in range(3)] == expected
    assert grpc_wait is not None and 0 <= grpc_wait <= 1
    assert 0 <= httpx_wait <= 0.5 * 2


def test_the_workload_api_backoff_leaves_the_shared_generator_alone() -> None:
    # imported here: the Workload API sources need the spiffe extra, the rest of this module not
    from zerotrust.sources._workload_watch import backoff_delay

    random.seed(2026)
    expected = [random.random() for _ in range(3)]
    random.seed(2026)
    watcher = [backoff_delay(failures, 0.1, 5.0) for failures in range(4)]
    assert [random.random() for _ in range(3)] == expected
    assert all(0.05 * 2**n <= w <= 0.1 * 2**n for n, w in enumerate(watcher))


def test_the_jitter_is_spread_over_zero_to_one() -> None:
    draws = [_jitter.fraction() for _ in range(2000)]
    assert all(0 <= d < 1 for d in draws)
    assert min(draws) < 0.1 and max(draws) > 0.9


def test_forked_workers_draw_jitter_of_their_own() -> None:
    """Forked workers (gunicorn --preload) copied the generator's state: all of them waited
    the same "random" backoff before each retry, in lockstep."""
    from tests._fork import in_child

    def draws() -> str:
        return repr([_jitter.fraction() for _ in range(4)])

    assert in_child(draws) != in_child(draws)
