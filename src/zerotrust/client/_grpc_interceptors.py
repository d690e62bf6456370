"""Client interceptors (sync and aio, all four arities): wait for the server identity check,
then inject the current OpenTelemetry context (W3C ``traceparent`` / ``tracestate``) into the
call's metadata through the globally configured propagators."""

from __future__ import annotations

import time
from collections import namedtuple
from typing import Any

import grpc  # type: ignore[import-untyped,unused-ignore]
import grpc.aio  # type: ignore[import-untyped,unused-ignore]
from opentelemetry import propagate

from zerotrust.client._grpc_check import ServerCheck

__all__ = ["ClientInterceptor", "aio_interceptors", "trace_metadata"]

_Fields = namedtuple(
    "_Fields", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")
)


class _CallDetails(_Fields, grpc.ClientCallDetails):  # type: ignore[misc]
    pass


def trace_metadata() -> list[tuple[str, str]]:
    """The current context as metadata entries (empty without an active, valid span)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return [(key.lower(), value) for key, value in carrier.items()]


def _left(timeout: float | None, started: float) -> float | None:
    """What remains of a call's ``timeout`` after the identity check that began at ``started``:
    the check is part of the call, and grpc starts its deadline only when handed the call."""
    if timeout is None:
        return None
    return max(timeout - (time.monotonic() - started), 0.0)


class ClientInterceptor(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[misc]
    grpc.StreamStreamClientInterceptor,  # type: ignore[misc]
):
    """For ``grpc.intercept_channel``."""

    def __init__(self, check: ServerCheck | None, *, trace_context: bool = True) -> None:
        self._check = check
        self._trace = trace_context

    def _prepare(self, details: Any) -> Any:
        timeout = details.timeout
        if self._check is not None and self._check.needed:
            started = time.monotonic()
            self._check.verify(timeout)  # raises ServerIdentityError
            timeout = _left(timeout, started)
        extra = trace_metadata() if self._trace else []
        if not extra and timeout == details.timeout:
            return details
        return _CallDetails(
            details.method,
            timeout,
            [*(details.metadata or ()), *extra],
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._prepare(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._prepare(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._prepare(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._prepare(details), requests)


class _AioPrepare:
    def __init__(self, check: ServerCheck | None, trace_context: bool) -> None:
        self._check = check
        self._trace = trace_context

    async def _prepare(self, details: Any) -> Any:
        timeout = details.timeout
        if self._check is not None and self._check.needed:
            started = time.monotonic()
            await self._check.averify(timeout)  # raises ServerIdentityError
            timeout = _left(timeout, started)
        extra = trace_metadata() if self._trace else []
        if not extra and timeout == details.timeout:
            return details
        metadata = grpc.aio.Metadata(*(details.metadata or ()), *extra)
        return grpc.aio.ClientCallDetails(
            details.method, timeout, metadata, details.credentials, details.wait_for_ready
        )


class _AioUnaryUnary(_AioPrepare, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(await self._prepare(details), request)


class _AioUnaryStream(_AioPrepare, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(await self._prepare(details), request)


class _AioStreamUnary(_AioPrepare, grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(await self._prepare(details), requests)


class _AioStreamStream(_AioPrepare, grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(await self._prepare(details), requests)


def aio_interceptors(check: ServerCheck | None, *, trace_context: bool = True) -> list[Any]:
    """One interceptor per arity (a ``grpc.aio`` channel files each interceptor under the
    first arity it implements); the identity check runs in a worker thread."""
    kinds = (_AioUnaryUnary, _AioUnaryStream, _AioStreamUnary, _AioStreamStream)
    return [kind(check, trace_context) for kind in kinds]
