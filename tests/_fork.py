"""Run a function in a forked child process and read what it reports through a pipe."""

from __future__ import annotations

import os
import select
import signal
import time
import traceback
import warnings
from collections.abc import Callable
from typing import Any


def in_child(body: Callable[[], str], timeout: float = 60.0) -> str:
    """``body()`` run in a child made by ``os.fork()``: its answer, or the traceback of what
    it raised. The child never returns into the test: it ends with ``os._exit``. A child that
    has not answered within ``timeout`` seconds (a deadlock) is killed and the test fails."""
    read, write = os.pipe()
    with warnings.catch_warnings():  # Python 3.12+ warns when a threaded process forks
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child, reported through the pipe
        os.close(read)
        try:
            answer = body()
        except BaseException:
            answer = "raised: " + traceback.format_exc()
        with os.fdopen(write, "w") as out:
            out.write(answer)
        os._exit(0)
    os.close(write)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            ready, _, _ = select.select([read], [], [], max(deadline - time.monotonic(), 0.0))
            if not ready:
                os.kill(pid, signal.SIGKILL)
                raise AssertionError(f"the forked child did not answer within {timeout:g} s")
            chunk = os.read(read, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read)
        _, status = os.waitpid(pid, 0)
    answer = b"".join(chunks).decode()
    assert os.waitstatus_to_exitcode(status) == 0, answer
    return answer


def as_forked_child(source: Any, body: Callable[[], str]) -> str:
    """``body()`` run while ``source`` (which records the id of the process that built it in
    ``_pid``) takes this process for a child forked from its builder; its answer. What a
    ``close()`` in the body marks (``_closed``) stays the child's, as it would in a real one:
    anything else the body did to the parent's watcher or connection is what it leaves."""
    built_by, closed = source._pid, source._closed
    source._pid = os.getpid() + 1 if os.getpid() != built_by + 1 else os.getpid() + 2
    try:
        return body()
    finally:
        source._pid, source._closed = built_by, closed


def outcome(use: Callable[[], object]) -> str:
    """``"served"``, or the type and text of the exception ``use()`` raised."""
    try:
        use()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return "served"
