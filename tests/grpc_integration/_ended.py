"""A server interceptor, placed before zerotrust's, that tells when grpc ended a call."""

from __future__ import annotations

import asyncio
import inspect
import threading
from typing import Any

import grpc
import grpc.aio

_KINDS = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")


def _watch(handler: Any, ended: threading.Event) -> Any:
    """``handler`` with its (sync) behaviour asking grpc.server to set ``ended`` at the end."""
    if handler is None:
        return None
    kind = next(k for k in _KINDS if getattr(handler, k) is not None)
    behavior = getattr(handler, kind)
    if inspect.iscoroutinefunction(behavior) or inspect.isasyncgenfunction(behavior):
        raise AssertionError("only sync handlers are watched")

    def watched(request: Any, context: Any) -> Any:
        context.add_callback(ended.set)
        return behavior(request, context)

    return handler._replace(**{kind: watched})


class EndWatcher(grpc.ServerInterceptor):  # type: ignore[misc]
    """``ended`` is set once grpc ended the call (a passed deadline, a cancellation)."""

    def __init__(self) -> None:
        self.ended = threading.Event()

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        return _watch(continuation(details), self.ended)


class AioEndWatcher(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """:class:`EndWatcher` for a ``grpc.aio`` server: grpc.aio runs each call in a task of its
    own, which it cancels when the call ends (a sync handler's context has no callback for
    that); while the handler has not returned, that task ends only then."""

    def __init__(self) -> None:
        self.ended = threading.Event()

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        task = asyncio.current_task()
        assert task is not None
        task.add_done_callback(lambda _: self.ended.set())
        return await continuation(details)
