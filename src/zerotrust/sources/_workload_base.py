"""What the Workload API sources share: the channel, one stream watcher, readiness, status,
and the life cycle (``close``, ``with``, ``async with``)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import os
import threading
from datetime import datetime
from types import TracebackType
from typing import Any, ClassVar, TypeVar

from zerotrust._aio import wait_for
from zerotrust._clock import SYSTEM_CLOCK, Clock
from zerotrust.errors import SourceError
from zerotrust.identity import SpiffeId
from zerotrust.sources import _workload_grpc as wire
from zerotrust.sources._workload_watch import StreamWatcher, WorkloadApiStatus
from zerotrust.tokens._outgoing_cache import seconds

__all__ = ["SocketPath", "WorkloadApiBase", "spiffe_id_string"]

SocketPath = str | os.PathLike[str] | None
#: The longest wait for the first update: the longest a thread can wait on a lock.
_MAX_WAIT = threading.TIMEOUT_MAX
_S = TypeVar("_S", bound="WorkloadApiBase")
#: Why a source refuses in a process forked from the one that built it: its watcher thread
#: and its connection stayed in the parent, so what it holds would never change again.
FORKED = (
    "the Workload API source was created in another process (before a fork): create it in"
    " each process that uses it"
)


class WorkloadApiBase:
    """What both sources share: the channel, one stream watcher, readiness, status, close."""

    _unavailable: ClassVar[type[SourceError]] = SourceError
    _first: ClassVar[str] = "update"

    def __init__(
        self,
        socket_path: SocketPath,
        *,
        timeout_first: float,
        backoff_initial: float,
        backoff_max: float,
        clock: Clock | None,
    ) -> None:
        self._timeout_first = seconds("timeout_first", timeout_first, 0.001, _MAX_WAIT)
        self._backoff = (
            seconds("backoff_initial", backoff_initial, 0.001, wire.MAX_BACKOFF),
            seconds("backoff_max", backoff_max, backoff_initial, wire.MAX_BACKOFF),
        )
        self._clock = clock or SYSTEM_CLOCK
        self._target = wire.grpc_target(socket_path)
        self._closed = False
        self._pid = os.getpid()
        self._watcher: StreamWatcher | None = None
        self._channel = wire.open_channel(
            self._target, backoff_initial=self._backoff[0], backoff_max=self._backoff[1]
        )
        self._stub = wire.stub(self._channel)

    def _watch(self, name: str, method: Any, request: Any, on_message: Any, wait: bool) -> None:
        def open_stream() -> Any:
            return method(request, metadata=wire.HEADER, wait_for_ready=False)

        self._watcher = StreamWatcher(
            name=name,
            target=self._target,
            open_stream=open_stream,
            on_message=on_message,
            on_denied=self._on_denied,
            backoff_initial=self._backoff[0],
            backoff_max=self._backoff[1],
            clock=self._clock,
        )
        self._watcher.start()
        if wait:
            try:
                self.wait_ready()
            except BaseException:
                self.close()
                raise

    def _on_denied(self) -> None:
        """The agent answered ``PERMISSION_DENIED``: stop serving what it sent (the sources
        override this; a later valid update restores them)."""

    def _withdrawn(self) -> bool:
        """Whether what the agent sent has been withdrawn (then the source is not ready)."""
        return False

    # --- readiness -------------------------------------------------------------------------

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until the first update arrived (at most ``timeout``, default
        ``timeout_first`` seconds); raises the source's unavailable error otherwise."""
        self._check_open()
        watcher = self._watcher
        if watcher is None:
            return
        limit = self._limit(timeout)
        try:
            watcher.ready.result(limit)
        except concurrent.futures.TimeoutError:
            raise self._not_ready(limit) from None
        except SourceError as exc:
            raise self._unavailable(str(exc)) from None

    async def wait_ready_async(self, timeout: float | None = None) -> None:
        """Like :meth:`wait_ready`, without blocking the event loop."""
        self._check_open()
        watcher = self._watcher
        if watcher is None:
            return
        limit = self._limit(timeout)
        try:
            await wait_for(asyncio.wrap_future(watcher.ready), limit)
        except asyncio.TimeoutError:
            raise self._not_ready(limit) from None
        except SourceError as exc:
            raise self._unavailable(str(exc)) from None

    def _limit(self, timeout: float | None) -> float:
        if timeout is None:
            return self._timeout_first
        return seconds("timeout", timeout, 0, _MAX_WAIT)

    def _check_open(self) -> None:
        if self._closed:
            raise self._unavailable("the Workload API source is closed")
        if self._forked():
            raise self._unavailable(FORKED)

    def _forked(self) -> bool:
        """Whether this process is a child forked from the one that built the source."""
        return os.getpid() != self._pid

    def _not_ready(self, limit: float) -> SourceError:
        watcher = self._watcher
        error = watcher.last_error if watcher is not None else None
        detail = f"; last error: {error}" if error else ""
        return self._unavailable(
            f"no {self._first} from the Workload API at {self._target} within {limit:g}s{detail}"
        )

    def status(self) -> WorkloadApiStatus:
        """Connection state, last update and last error (for health checks). ``ready`` is
        false once the source cannot answer: closed, or (X.509) its SVID expired unrotated."""
        if self._forked():
            # nothing of the parent's is read here: the watcher's lock and the objects its
            # thread was using at the fork may be in any state in this process
            return self._unwatched(ready=False, closed=True, last_error=FORKED)
        expires = self._expires_at()
        status = self._watcher.status() if self._watcher is not None else self._unwatched()
        closed = status.closed or self._closed
        ready = (
            status.ready
            and not closed
            and not self._withdrawn()
            and (expires is None or self._clock.now() < expires)
        )
        return dataclasses.replace(status, ready=ready, closed=closed, expires_at=expires)

    def _unwatched(
        self, *, ready: bool = True, closed: bool = False, last_error: str | None = None
    ) -> WorkloadApiStatus:
        """The status of a source without a watcher of its own here."""
        return WorkloadApiStatus(
            socket=self._target,
            connected=False,
            ready=ready,
            closed=closed,
            last_update=None,
            last_error=last_error,
            last_error_at=None,
            updates=0,
            reconnects=0,
        )

    def _expires_at(self) -> datetime | None:
        """When what the source serves stops being usable (``None``: it does not expire)."""
        return None

    # --- life cycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Stop watching, close the connection; later ``get_*`` calls raise. Idempotent."""
        self._closed = True
        if self._forked():  # the watcher and the connection are the parent's to close
            return
        if self._watcher is not None:
            self._watcher.stop()
        self._channel.close()

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self: _S) -> _S:
        """Waits for the first update (see :meth:`wait_ready_async`)."""
        try:
            await self.wait_ready_async()
        except BaseException:
            await asyncio.to_thread(self.close)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.close)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._target!r})"


def spiffe_id_string(value: SpiffeId | str | None) -> str | None:
    return None if value is None else str(value if isinstance(value, SpiffeId) else SpiffeId(value))
