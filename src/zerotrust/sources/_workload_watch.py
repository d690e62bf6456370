"""A Workload API stream kept open on a background thread, with backoff and a status.

:class:`StreamWatcher` opens one server stream (``FetchX509SVID`` or ``FetchJWTBundles``),
hands every message to its owner and, when the stream breaks or ends, reconnects after an
exponential backoff with jitter. It never touches the owner's snapshot itself: the owner's
``on_message`` converts a message and swaps its snapshot, or raises a
:class:`~zerotrust.errors.ZeroTrustError` to refuse an invalid update (the previous snapshot
stays); it returns why a part of the update was left out, if one was (the rest applied; the
reason becomes ``last_error``). Only ``INVALID_ARGUMENT`` or ``UNIMPLEMENTED`` from the agent
stops the watcher: the specification says such a request must not be retried.
``PERMISSION_DENIED`` (the agent has no identity for the workload) calls the owner's
``on_denied``, which withdraws what the agent sent before, and the watcher keeps retrying.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from zerotrust import _jitter
from zerotrust._clock import Clock
from zerotrust.errors import SourceError, ZeroTrustError
from zerotrust.sources._workload_grpc import RpcError, describe, is_denied, is_fatal

__all__ = ["StreamWatcher", "WorkloadApiStatus", "backoff_delay"]

_log = logging.getLogger("zerotrust.sources")


@dataclass(frozen=True, slots=True)
class WorkloadApiStatus:
    """A point-in-time view of a Workload API source, for health checks and logs.

    ``connected``: a stream is open and has delivered a message. ``ready``: the source can
    answer now: a valid update arrived, it is not closed, and (X.509) the SVID it holds has not
    expired; for readiness probes. ``expires_at``: when the X.509-SVID held expires (``None``
    for JWT sources and before the first SVID); a probe can warn before ``ready`` turns false.
    ``last_error`` is the latest problem (a refused update, a broken stream, an unreachable
    agent), ``None`` again after the next valid update. ``reconnects`` counts streams
    re-established after a break. ``closed``: no longer watching (closed, or stopped after the
    agent refused the request with ``INVALID_ARGUMENT`` or ``UNIMPLEMENTED``).
    """

    socket: str
    connected: bool
    ready: bool
    closed: bool
    last_update: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    updates: int
    reconnects: int
    expires_at: datetime | None = None


def backoff_delay(failures: int, initial: float, maximum: float) -> float:
    """Exponential backoff with jitter: a random delay in ``[d/2, d]``, ``d = initial * 2**n``
    capped at ``maximum``."""
    ceiling = min(maximum, initial * float(2 ** min(failures, 32)))
    return ceiling * (0.5 + 0.5 * _jitter.fraction())


class StreamWatcher:
    """Keeps one Workload API stream open on a daemon thread (see the module docs)."""

    def __init__(
        self,
        *,
        name: str,
        target: str,
        open_stream: Callable[[], Any],
        on_message: Callable[[Any], str | None],
        on_denied: Callable[[], None] | None = None,
        backoff_initial: float,
        backoff_max: float,
        clock: Clock,
    ) -> None:
        self._target = target
        self._open = open_stream
        self._on_message = on_message
        self._on_denied = on_denied
        self._initial = backoff_initial
        self._max = backoff_max
        self._clock = clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._call: Any = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        #: Resolved by the first valid update; fails if the watcher stops before one.
        self.ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.ready.set_running_or_notify_cancel()  # waiters can time out, never cancel it
        self._connected = False
        self._last_update: datetime | None = None
        self._last_error: str | None = None
        self._last_error_at: datetime | None = None
        self._updates = 0
        self._streams = 0
        self._delivered = False  # the current stream delivered a valid update

    def start(self) -> None:
        self._thread.start()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    @property
    def last_error(self) -> str | None:
        return self._last_error

    def stop(self, timeout: float = 5.0) -> None:
        """Cancel the stream and wait (at most ``timeout`` seconds) for the thread to end."""
        self._stop.set()
        with self._lock:
            call = self._call
        if call is not None:
            call.cancel()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._resolve(SourceError("the Workload API source is closed"))

    def status(self) -> WorkloadApiStatus:
        with self._lock:
            return WorkloadApiStatus(
                socket=self._target,
                connected=self._connected,
                ready=self.ready.done() and self.ready.exception() is None,
                closed=self._stop.is_set(),
                last_update=self._last_update,
                last_error=self._last_error,
                last_error_at=self._last_error_at,
                updates=self._updates,
                reconnects=max(0, self._streams - 1),
            )

    # --- the thread ------------------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            self._delivered = False
            try:
                self._stream()
                self._note_error("the Workload API ended the stream")
            except RpcError as exc:
                if self._stop.is_set():
                    break
                self._note_error(describe(exc))
                if is_denied(exc) and self._on_denied is not None:
                    self._on_denied()  # what was sent is withdrawn; retrying may restore it
                if is_fatal(exc):
                    _log.error("Workload API refused the request; not retrying: %s", describe(exc))
                    self._stop.set()
                    self._resolve(SourceError(f"the Workload API refused: {describe(exc)}"))
                    break
            except Exception as exc:  # a defect must not end the watcher silently
                _log.exception("Workload API watcher failed; reconnecting")
                self._note_error(f"watcher failed: {type(exc).__name__}")
            finally:
                with self._lock:
                    self._call = None
                    self._connected = False
            if self._delivered:  # the stream worked: however it ended, start over
                failures = 0
            if self._stop.wait(backoff_delay(failures, self._initial, self._max)):
                break
            failures += 1

    def _stream(self) -> None:
        call = self._open()
        with self._lock:
            if self._stop.is_set():
                call.cancel()
                return
            self._call = call
        first = True
        for message in call:
            if first:
                first = False
                with self._lock:
                    self._connected = True
                    self._streams += 1
                if self._last_error is not None:
                    _log.info("Workload API stream (re)established on %s", self._target)
            if self._deliver(message):
                self._delivered = True

    def _deliver(self, message: Any) -> bool:
        try:
            refused = self._on_message(message)
        except ZeroTrustError as exc:
            self._note_error(f"update refused, keeping the previous one: {exc}")
            return False
        now = self._clock.now()
        with self._lock:
            self._last_update = now
            self._updates += 1
        if refused is not None:  # applied, without a part that was judged on its own
            self._note_error(f"update applied in part: {refused}")
        else:
            with self._lock:
                self._last_error = None
                self._last_error_at = None
        self._resolve(None)
        return True

    def _note_error(self, message: str) -> None:
        if self._stop.is_set():
            return
        if message != self._last_error:
            _log.warning("Workload API (%s): %s", self._target, message)
        now = self._clock.now()
        with self._lock:
            self._last_error = message
            self._last_error_at = now

    def _resolve(self, error: SourceError | None) -> None:
        try:
            if error is None:
                self.ready.set_result(None)
            else:
                self.ready.set_exception(error)
        except concurrent.futures.InvalidStateError:
            pass  # already resolved
