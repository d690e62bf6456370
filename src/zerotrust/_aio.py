"""``asyncio.wait_for`` without its flaw before Python 3.12.

Before 3.12, a task cancelled while the awaitable it waits for finishes (in the same turn of
the event loop) gets that awaitable's result from ``asyncio.wait_for``: the cancellation is
lost, and the task goes on as if nothing asked it to stop (CPython issue 86296). Here the
cancellation always wins, as it does from 3.12 on.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable
from typing import Any, TypeVar

__all__ = ["wait_for"]

T = TypeVar("T")


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # an outcome nobody waits for is never "never retrieved"


if sys.version_info >= (3, 12):
    wait_for = asyncio.wait_for
else:

    async def wait_for(awaitable: Awaitable[T], timeout: float) -> T:
        """The result of ``awaitable`` within ``timeout`` seconds, else
        :class:`asyncio.TimeoutError` (the awaitable is cancelled); a cancelled caller raises
        ``CancelledError`` and cancels the awaitable, whether or not it had finished, once the
        awaitable's own cleanup has run (as ``asyncio.wait_for`` waits for it)."""
        inner = asyncio.ensure_future(awaitable)
        inner.add_done_callback(_retrieve)
        try:
            done, _ = await asyncio.wait((inner,), timeout=timeout)
        except asyncio.CancelledError:
            inner.cancel()
            if not inner.done():
                await asyncio.wait((inner,))  # its cleanup ends before the caller goes on
            raise
        except BaseException:
            inner.cancel()
            raise
        if not done:
            inner.cancel()
            await asyncio.wait((inner,))  # its cleanup ends before the timeout is reported
            raise asyncio.TimeoutError
        return inner.result()
