"""The ``grpc.aio`` twin of :class:`~zerotrust.client._grpc_managed.ManagedChannel`.

Same generations and reference counts; calls are released from their done callbacks (on the
event loop) and a retired channel is closed by a task the managed channel keeps and awaits in
:meth:`AioManagedChannel.close`. Each generation also runs a small task that reports the
underlying channel's connectivity to its server identity check.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import grpc  # type: ignore[import-untyped,unused-ignore]
import grpc.aio  # type: ignore[import-untyped,unused-ignore]

from zerotrust.client._grpc_check import ServerCheck, ServerIdentityError
from zerotrust.client._grpc_generations import Generation, Generations, MultiCallables
from zerotrust.x509.bundle import BundleSet
from zerotrust.x509.sources import X509BundleSource, X509SvidSource
from zerotrust.x509.svid import X509Svid
from zerotrust.x509.verify import VerifiedPeer

__all__ = ["AioManagedChannel"]


async def _watch(channel: Any, check: ServerCheck) -> None:
    state = channel.get_state(try_to_connect=False)
    while state is not grpc.ChannelConnectivity.SHUTDOWN:
        await channel.wait_for_state_change(state)
        state = channel.get_state(try_to_connect=False)
        check.on_state(state)


class _Failed:
    """A grpc.aio call that ended before it was made (the server's trust domain has no
    authorities left, so no channel can be built for it): awaited, read or iterated, it raises
    its :class:`ServerIdentityError`, and it reports that error's status, as the calls grpc.aio
    makes from a refused check do."""

    def __init__(self, error: ServerIdentityError) -> None:
        self._error = error

    def __await__(self) -> Any:
        return self.read().__await__()

    def __aiter__(self) -> _Failed:
        return self

    async def __anext__(self) -> Any:
        raise self._error

    async def read(self) -> Any:
        raise self._error

    async def write(self, request: Any) -> None:
        raise self._error

    async def done_writing(self) -> None:
        raise self._error

    async def wait_for_connection(self) -> None:
        raise self._error

    async def code(self) -> Any:
        return self._error.code()

    async def details(self) -> str:
        return str(self._error.details())

    async def initial_metadata(self) -> Any:
        return grpc.aio.Metadata()

    async def trailing_metadata(self) -> Any:
        return grpc.aio.Metadata()

    def done(self) -> bool:
        return True

    def cancelled(self) -> bool:
        return False

    def cancel(self) -> bool:
        return False

    def time_remaining(self) -> float | None:
        return None

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        callback(self)


class _Multi:
    def __init__(self, owner: AioManagedChannel, key: tuple[Any, ...]) -> None:
        self._owner, self._key = owner, key

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        owner = self._owner
        try:
            gen = owner._lease()
        except ServerIdentityError as exc:  # a call ended with it, never raised at call time
            return _Failed(exc)
        try:
            call = owner._callable(gen, self._key)(*args, **kwargs)
        except BaseException:
            owner._release(gen)
            raise
        call.add_done_callback(lambda _call: owner._release(gen))
        return call


class AioManagedChannel(MultiCallables, grpc.aio.Channel):  # type: ignore[misc]
    """A ``grpc.aio.Channel`` rebuilt on SVID or bundle rotation.

    Made by :func:`zerotrust.grpc.aio_secure_channel`; use it inside one event loop, like any
    aio channel (``async with``, stubs).
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
        self._closing: set[asyncio.Task[None]] = set()

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
        if gen.task is None:
            gen.task = asyncio.get_running_loop().create_task(_watch(gen.channel, gen.check))
        self._close_later(ready)
        return gen

    def _release(self, gen: Generation[Any]) -> None:
        self._close_later(self._gens.release(gen))

    def _close_later(self, gens: list[Generation[Any]]) -> None:
        for gen in gens:
            task = asyncio.get_running_loop().create_task(_close(gen, None))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def _wrapper(self, kind: str, key: tuple[Any, ...]) -> Any:
        return _Multi(self, key)

    def get_state(self, try_to_connect: bool = False) -> Any:
        """grpc API: the current channel's state (``IDLE`` before any, ``SHUTDOWN`` once closed)."""
        gen = self._gens.current
        if gen is None:
            return grpc.ChannelConnectivity.SHUTDOWN if self._gens.closed else _IDLE
        return gen.channel.get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: Any) -> None:
        """grpc API: wait until the current channel (rebuilt first after a rotation) changes
        state."""
        gen = self._lease()
        try:
            await gen.channel.wait_for_state_change(last_observed_state)
        finally:
            self._release(gen)

    async def channel_ready(self) -> None:
        """grpc API: wait until the current channel (rebuilt first after a rotation) is ready."""
        gen = self._lease()
        try:
            await gen.channel.channel_ready()
        finally:
            self._release(gen)

    async def close(self, grace: float | None = None) -> None:
        """Close every underlying channel (``grace``: seconds granted to in-flight calls)."""
        every = self._gens.close_all()
        await asyncio.gather(*(_close(gen, grace) for gen in every))
        if self._closing:
            await asyncio.gather(*self._closing)
        if self._on_close is not None:
            self._on_close()

    async def __aenter__(self) -> AioManagedChannel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close(None)


_IDLE = grpc.ChannelConnectivity.IDLE


async def _close(gen: Generation[Any], grace: float | None) -> None:
    task, gen.task = gen.task, None
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await gen.channel.close(grace)
    gen.check.close()
