"""gRPC server interceptor for ``grpc.aio`` servers: the sync interceptor's logic, awaited.

It shares every step with :class:`~zerotrust.adapters.grpc_server.ServerInterceptor` (view,
peer verification, requirements, refusal translation) and decides with
``await guard.aevaluate(...)``. The wrapped handler keeps the kind grpc dispatches on:

* ``async def`` handlers (unary, or streaming with the reader/writer API) and async
  generators are wrapped by coroutines / async generators that decide first;
* *sync* handlers stay sync, so grpc still runs them in its thread pool with a sync context;
  the wrapper decides from that thread by running ``guard.aevaluate`` on the server's event
  loop, then runs the handler in a context that carries the principal (grpc's pool does not
  propagate context variables, and may drive each step of a stream on another thread).

As on sync servers, the request message of a unary-request RPC is deserialized only once the
Guard admitted the call.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any, NoReturn

from zerotrust.errors import MissingDependencyError

try:
    import grpc  # type: ignore[import-untyped,unused-ignore]
    import grpc.aio  # type: ignore[import-untyped,unused-ignore]
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError("grpcio", "grpc", error=exc) from exc

from zerotrust.adapters.grpc_server import (
    _BAD_REQUEST,
    ServerInterceptor,
    _bind,
    _keep_passed_on,
    _log,
    _pass_on,
    _refuse,
    _undecodable,
    _View,
)
from zerotrust.authn.request import RequestView
from zerotrust.authz.policy import Requirement
from zerotrust.pipeline import Outcome

__all__ = ["AioServerInterceptor"]


_warned: set[str] = set()


async def _unimplemented(request: Any, context: Any) -> AsyncIterator[Any]:
    """The behaviour of a method the server does not serve, once the Guard admitted the call."""
    await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")  # raises
    yield  # pragma: no cover - an async generator, as grpc's stream handlers are


async def _deserialize(
    deserializer: Callable[[bytes], Any], raw: bytes, context: Any, method: str
) -> Any:
    """The request of an admitted RPC, deserialized; or the call ends as grpc's sync server
    ends it for a message it cannot deserialize (``INTERNAL``, fixed details: grpc.aio would
    send the parser's text), the handler not run."""
    try:
        return deserializer(raw)
    except Exception as error:  # any parser failure ends the call
        _undecodable(method, error)
    await context.abort(grpc.StatusCode.INTERNAL, _BAD_REQUEST)  # raises
    raise RuntimeError("ServicerContext.abort returned")  # pragma: no cover


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether the calling thread is running ``loop``."""
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:  # no loop in this thread: grpc's pool
        return False


def _warn_on_loop(method: str) -> None:
    if method not in _warned and len(_warned) < 1024:
        _warned.add(method)
        _log.warning(
            "zerotrust: the sync handler of %s runs on the server's event loop (an interceptor"
            " before zerotrust calls it there); it is checked there, blocking the loop",
            method,
        )


class AioServerInterceptor(ServerInterceptor, grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Authenticate, authorize and audit every RPC of a ``grpc.aio.server`` with ``guard``.

    Same arguments as :class:`~zerotrust.adapters.grpc_server.ServerInterceptor`.
    """

    async def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        """grpc.aio hook: wrap the method's handler so the Guard decides each RPC before it runs."""
        handler = await continuation(handler_call_details)
        loop = asyncio.get_running_loop()
        cached = self._wrapped.get(handler_call_details.method)
        if cached is not None and cached[0] is handler and cached[1] is loop:
            return cached[2]  # the next call of a method: its wrapper is ready

        def wrap(
            behavior: Callable[..., Any],
            method: str,
            requirement: Requirement | None,
            response_streaming: bool,
            *,
            deserializer: Callable[[bytes], Any] | None = None,
        ) -> Callable[..., Any]:
            if inspect.iscoroutinefunction(behavior) or inspect.isasyncgenfunction(behavior):
                return self._async_behavior(behavior, method, requirement, deserializer)

            def evaluate(view: RequestView, req: Requirement | None) -> Outcome:
                # runs on grpc's pool thread; the Guard's I/O stays on the server's loop
                if _on_loop(loop):
                    # an interceptor placed before zerotrust called this sync handler on the
                    # loop itself: waiting for the loop there would hang the whole server
                    _warn_on_loop(method)
                    return self._guard.evaluate(view, req)
                if isinstance(view, _View):
                    # the Guard reads the view on the loop, where the call may have ended
                    # meanwhile (grpc.aio then releases it): read the context here, first
                    view.prime()
                future = asyncio.run_coroutine_threadsafe(self._guard.aevaluate(view, req), loop)
                return future.result()

            return self._sync_behavior(
                behavior,
                method,
                requirement,
                response_streaming,
                evaluate,
                deserializer=deserializer,
            )

        return self._intercept(
            handler, handler_call_details.method, wrap, loop, unknown=_unimplemented
        )

    async def _aadmit(self, context: Any, method: str, requirement: Requirement | None) -> Outcome:
        """Decide; abort, or make the principal visible to the rest of this RPC's task."""
        view = self._view(method, context)
        outcome = await self._guard.aevaluate(view, requirement)
        if not outcome.allowed:
            await self._abort(context, outcome)
        _pass_on(context, outcome)
        _bind(self._guard, view, outcome)
        return outcome

    async def _abort(self, context: Any, outcome: Outcome) -> NoReturn:
        await _refuse(context, self._refusal(outcome))

    def _async_behavior(
        self,
        behavior: Callable[..., Any],
        method: str,
        requirement: Requirement | None,
        deserializer: Callable[[bytes], Any] | None = None,
    ) -> Callable[..., Any]:
        # Each RPC runs in its own task (its own copy of the context), so the principal set
        # here is visible to the handler and discarded with the task. With a deserializer,
        # the request arrives as bytes and is deserialized once the call is admitted.
        if inspect.isasyncgenfunction(behavior):

            async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
                outcome = await self._aadmit(context, method, requirement)
                if deserializer is not None:
                    request = await _deserialize(deserializer, request, context, method)
                try:
                    async for item in behavior(request, context):
                        yield item
                finally:
                    if outcome.headers:
                        _keep_passed_on(context, outcome)

            return stream

        guard, peers = self._guard, self._peers

        async def call(request: Any, context: Any) -> Any:
            view = _View(method, context.invocation_metadata() or (), context, peers)
            outcome = await guard.aevaluate(view, requirement)
            if not outcome.allowed:
                await self._abort(context, outcome)
            _pass_on(context, outcome)
            _bind(guard, view, outcome)
            if deserializer is not None:
                request = await _deserialize(deserializer, request, context, method)
            try:
                return await behavior(request, context)
            finally:
                if outcome.headers:
                    _keep_passed_on(context, outcome)

        return call
