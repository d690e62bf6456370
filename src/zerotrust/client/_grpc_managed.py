"""Channels that follow SVID rotation: grpcio cannot reload a channel's client certificate, so
a managed channel builds a new underlying channel when the SVID (or bundle) snapshot changed,
sends new calls there, and closes the old one once its last in-flight call finished.

Every call leases the current generation (a reference count) and releases it when the call
is done (``add_callback`` / ``add_done_callback`` of the call). Multicallables are cached per
generation. A stream that never ends keeps its generation open until it ends or the managed
channel is closed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import grpc  # type: ignore[import-untyped,unused-ignore]

from zerotrust.client._grpc_check import ServerIdentityError
from zerotrust.client._grpc_generations import Generation, Generations, MultiCallables
from zerotrust.client._grpc_interceptors import _Failed
from zerotrust.x509.bundle import BundleSet
from zerotrust.x509.sources import X509BundleSource, X509SvidSource
from zerotrust.x509.svid import X509Svid
from zerotrust.x509.verify import VerifiedPeer

__all__ = ["ManagedChannel"]


def _close(gen: Generation[Any]) -> None:
    """Unsubscribe, let grpc's connectivity poller stop, then close: closing a subscribed
    channel races that poller, which then raises in its thread (grpc issue 18995)."""
    raw = gen.raw
    if raw is not None:
        raw.unsubscribe(gen.check.on_state)
        state = getattr(raw, "_connectivity_state", None)
        stopped = threading.Event()
        for _ in range(100):  # grpc's poller wakes every 0.2 s; bounded at 1 s
            if not getattr(state, "polling", False):
                break
            stopped.wait(0.01)
    gen.channel.close()
    gen.check.close()  # a call waiting for a probe ends now, not at the check's timeout


class _Unary:
    """``unary_unary`` / ``stream_unary``: ``__call__``, ``with_call`` and ``future``."""

    def __init__(self, owner: ManagedChannel, key: tuple[Any, ...]) -> None:
        self._owner, self._key = owner, key

    def __call__(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        gen = self._owner._lease()
        try:
            return self._owner._callable(gen, self._key)(request, *args, **kwargs)
        finally:
            self._owner._release(gen)

    def with_call(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        gen = self._owner._lease()
        try:
            return self._owner._callable(gen, self._key).with_call(request, *args, **kwargs)
        finally:
            self._owner._release(gen)

    def future(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            gen = self._owner._lease()
        except ServerIdentityError as exc:  # a future never raises: it ends with the error
            return _Failed(exc)
        try:
            future = self._owner._callable(gen, self._key).future(request, *args, **kwargs)
        except BaseException:
            self._owner._release(gen)
            raise
        future.add_done_callback(lambda _f: self._owner._release(gen))
        return future


class _Streaming:
    """``unary_stream`` / ``stream_stream``: released when the call terminates."""

    def __init__(self, owner: ManagedChannel, key: tuple[Any, ...]) -> None:
        self._owner, self._key = owner, key

    def __call__(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            gen = self._owner._lease()
        except ServerIdentityError as exc:  # a stream that ended, as a refused check's does
            return _Failed(exc)
        try:
            call = self._owner._callable(gen, self._key)(request, *args, **kwargs)
        except BaseException:
            self._owner._release(gen)
            raise
        if not call.add_callback(lambda: self._owner._release(gen)):
            self._owner._release(gen)  # already terminated
        return call


class ManagedChannel(MultiCallables, grpc.Channel):  # type: ignore[misc]
    """A ``grpc.Channel`` rebuilt on SVID or bundle rotation (see the module documentation).

    Made by :func:`zerotrust.grpc.secure_channel`; use it like any channel (stubs, ``with``).
    """

    def __init__(
        self,
        build: Callable[[X509Svid, BundleSet], Generation[Any]],
        svid: X509SvidSource,
        bundles: X509BundleSource,
        *,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self._on_close = on_close
        self._gens: Generations[Any] = Generations(build, svid, bundles)
        self._closers: list[threading.Thread] = []
        self._closers_lock = threading.Lock()  # releases run on many threads at once
        self._lease()  # build the first channel now (no I/O: grpc connects lazily)
        self._release(self._gens.current)  # type: ignore[arg-type]

    @property
    def rebuilds(self) -> int:
        """How many times the underlying channel was rebuilt after a rotation."""
        return self._gens.rebuilds

    @property
    def server_peer(self) -> VerifiedPeer | None:
        """The server identity verified by the latest check of the current channel."""
        gen = self._gens.current
        return gen.check.peer if gen is not None else None

    def _lease(self) -> Generation[Any]:
        gen, ready = self._gens.lease()
        self._close_later(ready)
        return gen

    def _release(self, gen: Generation[Any]) -> None:
        self._close_later(self._gens.release(gen))

    def _close_later(self, gens: list[Generation[Any]]) -> None:
        # Releases run on grpc's callback threads: never close a channel from its own thread.
        for gen in gens:
            thread = threading.Thread(target=_close, args=(gen,), name="zerotrust-grpc-retire")
            with self._closers_lock:  # close() joins every closer started before it
                self._closers = [t for t in self._closers if t.is_alive()]
                self._closers.append(thread)
                thread.start()

    def _wrapper(self, kind: str, key: tuple[Any, ...]) -> Any:
        return (_Streaming if kind.endswith("_stream") else _Unary)(self, key)

    def subscribe(self, callback: Callable[[Any], None], try_to_connect: bool = False) -> None:
        """Connectivity of the *current* underlying channel."""
        gen = self._lease()
        try:
            gen.channel.subscribe(callback, try_to_connect=try_to_connect)
        finally:
            self._release(gen)

    def unsubscribe(self, callback: Callable[[Any], None]) -> None:
        """Stop calling ``callback`` with the connectivity of the current underlying channel."""
        gen = self._gens.current
        if gen is not None:
            gen.channel.unsubscribe(callback)

    def close(self) -> None:
        """Close every underlying channel now (in-flight calls are cancelled)."""
        for gen in self._gens.close_all():
            _close(gen)
        with self._closers_lock:
            closers = list(self._closers)
        for thread in closers:
            thread.join()
        if self._on_close is not None:
            self._on_close()

    def __enter__(self) -> ManagedChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
