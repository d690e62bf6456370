"""Generations of a managed channel: one underlying channel per SVID/bundle snapshot, with
the reference counts of its in-flight calls (thread-safe bookkeeping, no I/O)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from zerotrust.client._grpc_check import ServerCheck
from zerotrust.x509.bundle import BundleSet
from zerotrust.x509.sources import X509BundleSource, X509SvidSource
from zerotrust.x509.svid import X509Svid

__all__ = ["Generation", "Generations", "MultiCallables"]

C = TypeVar("C")


class Generation(Generic[C]):
    """One underlying channel, the snapshots it was built from and its in-flight calls."""

    __slots__ = (
        "callables",
        "channel",
        "check",
        "closed",
        "raw",
        "refs",
        "retired",
        "snapshot",
        "task",
    )

    def __init__(
        self,
        channel: C,
        snapshot: tuple[X509Svid, BundleSet],
        check: ServerCheck,
        *,
        raw: Any = None,
    ) -> None:
        self.channel = channel
        self.raw = raw  # sync: the channel under the interceptors, subscribed for connectivity
        self.snapshot = snapshot
        self.check = check
        self.refs = 0
        self.retired = False
        self.closed = False
        self.callables: dict[tuple[object, ...], Any] = {}
        self.task: asyncio.Task[None] | None = None  # aio: the connectivity watcher


class Generations(Generic[C]):
    """The bookkeeping shared by the sync and aio channels (thread-safe, no I/O)."""

    def __init__(
        self,
        build: Callable[[X509Svid, BundleSet], Generation[C]],
        svid: X509SvidSource,
        bundles: X509BundleSource,
    ) -> None:
        self._build = build
        self._svid = svid
        self._bundles = bundles
        self._lock = threading.Lock()
        self._current: Generation[C] | None = None
        self._retired: list[Generation[C]] = []
        self._closed = False
        self.rebuilds = 0

    def _snapshot(self) -> tuple[X509Svid, BundleSet]:
        return self._svid.get_x509_svid(), self._bundles.get_bundle_set()

    def lease(self) -> tuple[Generation[C], list[Generation[C]]]:
        """The current generation (counted), and the retired ones now ready to close.

        The sources are read before the lock (most calls find the current generation built
        from what they read); a generation is built only from a snapshot read under the lock,
        so a call that read the sources before a rotation never replaces the generation
        another call built since with one of the snapshot before it."""
        snapshot = self._snapshot()
        ready: list[Generation[C]] = []
        with self._lock:
            if self._closed:
                raise ValueError("Cannot invoke RPC on closed channel!")
            gen = self._current
            if gen is not None and not _built_from(gen, snapshot):
                snapshot = self._snapshot()  # what was read may be older than ``gen``
            if gen is None or not _built_from(gen, snapshot):
                fresh = self._build(*snapshot)
                if gen is not None:
                    self.rebuilds += 1
                    gen.retired = True
                    self._retired.append(gen)
                    ready = self._collect()
                self._current = gen = fresh
            gen.refs += 1
            return gen, ready

    def release(self, gen: Generation[C]) -> list[Generation[C]]:
        with self._lock:
            gen.refs -= 1
            return self._collect() if gen.retired and gen.refs == 0 else []

    def _collect(self) -> list[Generation[C]]:
        done = [g for g in self._retired if g.refs == 0 and not g.closed]
        for g in done:
            g.closed = True
        self._retired = [g for g in self._retired if not g.closed]
        return done

    def close_all(self) -> list[Generation[C]]:
        with self._lock:
            self._closed = True
            every = [*self._retired, *([self._current] if self._current else [])]
            self._retired, self._current = [], None
            for g in every:
                g.closed = True
            return every

    @property
    def current(self) -> Generation[C] | None:
        return self._current

    @property
    def closed(self) -> bool:
        return self._closed


def _built_from(gen: Generation[Any], snapshot: tuple[X509Svid, BundleSet]) -> bool:
    return gen.snapshot[0] is snapshot[0] and gen.snapshot[1] is snapshot[1]


class MultiCallables:
    """The four multi-callable factories of a managed channel (sync or aio). Each returns a
    wrapper (:meth:`_wrapper`) that leases the current generation per call and finds that
    generation's own multi-callable with :meth:`_callable`."""

    def _wrapper(self, kind: str, key: tuple[Any, ...]) -> Any:
        raise NotImplementedError

    def _callable(self, gen: Generation[Any], key: tuple[Any, ...]) -> Any:
        found = gen.callables.get(key)
        if found is None:
            kind, method, ser, deser, registered = key
            found = getattr(gen.channel, kind)(method, ser, deser, _registered_method=registered)
            gen.callables[key] = found
        return found

    def _factory(
        self, kind: str, method: str, serializer: Any, deserializer: Any, registered: Any
    ) -> Any:
        return self._wrapper(kind, (kind, method, serializer, deserializer, bool(registered)))

    def unary_unary(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: Any = False,
    ) -> Any:
        return self._factory(
            "unary_unary", method, request_serializer, response_deserializer, _registered_method
        )

    def unary_stream(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: Any = False,
    ) -> Any:
        return self._factory(
            "unary_stream", method, request_serializer, response_deserializer, _registered_method
        )

    def stream_unary(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: Any = False,
    ) -> Any:
        return self._factory(
            "stream_unary", method, request_serializer, response_deserializer, _registered_method
        )

    def stream_stream(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: Any = False,
    ) -> Any:
        return self._factory(
            "stream_stream", method, request_serializer, response_deserializer, _registered_method
        )
