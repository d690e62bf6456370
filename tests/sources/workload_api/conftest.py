"""Fixtures: an in-process Workload API server on a Unix socket in a short temporary dir."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from tests.sources.workload_api._server import WorkloadApiServer

#: Fast reconnects for tests; a generous first wait for a loaded machine.
FAST: dict[str, Any] = {"backoff_initial": 0.02, "backoff_max": 0.25, "timeout_first": 30.0}


@pytest.fixture
def socket_dir() -> Iterator[str]:
    # Unix socket paths are limited to ~107 bytes: keep the directory name short.
    base = "/tmp" if os.path.isdir("/tmp") else None
    path = tempfile.mkdtemp(prefix="zt-wl-", dir=base)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def agent(socket_dir: str) -> Iterator[WorkloadApiServer]:
    server = WorkloadApiServer(os.path.join(socket_dir, "agent.sock"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
