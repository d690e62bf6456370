"""Drivers for sans-IO flows (httpx ``auth_flow`` style).

A flow is a generator that yields *requests* whenever it needs I/O (keys from a JWKS endpoint,
a Redis lookup, a policy hook) and is resumed with the answer. Every request object has
``fulfil()`` (blocking) and ``async fulfil_async()``. The logic is written once; only these two
drivers differ between sync and async callers. An exception raised while fulfilling a request
is thrown into the flow at its ``yield``, so the flow decides how to fail (closed).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, Protocol, TypeVar

__all__ = ["Flow", "IORequest", "drive", "drive_async"]

T = TypeVar("T")


class IORequest(Protocol):
    def fulfil(self) -> Any: ...
    async def fulfil_async(self) -> Any: ...


Flow = Generator[IORequest, Any, T]


def drive(flow: Generator[Any, Any, T]) -> T:
    """Run ``flow`` to completion, answering each request with ``request.fulfil()``."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            request = flow.throw(error) if error is not None else flow.send(value)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        value, error = None, None
        try:
            value = request.fulfil()
        except StopIteration:  # would silently end the generator it is thrown into
            error = RuntimeError("an I/O request raised StopIteration")
        except Exception as exc:
            error = exc


async def drive_async(flow: Generator[Any, Any, T]) -> T:
    """Run ``flow`` on the event loop, answering with ``await request.fulfil_async()``."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            request = flow.throw(error) if error is not None else flow.send(value)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        value, error = None, None
        try:
            value = await request.fulfil_async()
        except StopIteration:
            error = RuntimeError("an I/O request raised StopIteration")
        except Exception as exc:
            error = exc
