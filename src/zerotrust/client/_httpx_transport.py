"""Transport wrappers: W3C trace-context injection and tenacity retries around an httpx transport.

:class:`_Plan` holds every per-request decision (through :class:`RetryPolicy`) and is handed
to :class:`tenacity.Retrying` or :class:`tenacity.AsyncRetrying`; the two transports only
differ in how they send and how they discard a failed attempt's response. A new tenacity
object is made per request, so no retry state is shared between concurrent requests.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Final, cast

import httpx
import tenacity
from opentelemetry import propagate

from zerotrust import _jitter
from zerotrust.client._httpx_auth import REFRESH_EXTENSION, note_nonce, resign_redirect
from zerotrust.client._httpx_retry import RetryEvent, RetryPolicy, loggable_url

__all__ = ["AsyncZeroTrustTransport", "ZeroTrustTransport", "check_https"]

#: A failed attempt's body is read (so its connection can be reused) up to this many bytes,
_DRAIN_LIMIT: Final = 64 * 1024
#: for at most this many seconds (and never past the policy's ``max_elapsed``): a server that
#: trickles it costs a new connection, not the caller's time.
_DRAIN_TIME: Final = 1.0


class _Plan:
    """The retry decisions for one request, in tenacity's callback shapes.

    The first attempt is made outside tenacity (most requests need nothing more); when it
    calls for a retry, tenacity takes over and is handed that first outcome as its attempt 1.
    """

    __slots__ = ("_first", "_policy", "_started", "attempts", "request")

    def __init__(self, policy: RetryPolicy, request: httpx.Request) -> None:
        self._policy = policy
        self.request = request
        # a dict of its own (not one the caller may share between requests): the drain of a
        # failed attempt bounds its reads through the ``timeout`` in it
        request.extensions = dict(request.extensions)
        self.attempts = 0
        self._started = time.monotonic()
        self._first: httpx.Response | BaseException | None = None

    def begin_attempt(self) -> bool:
        """Count an attempt; ``False`` when it is the first one, already made, to replay."""
        self.attempts += 1
        if self.attempts == 1 and self._first is not None:
            return False
        if self.attempts > 1:
            refresh = self.request.extensions.get(REFRESH_EXTENSION)
            if callable(refresh):
                refresh(self.request)
        return True

    def first_outcome(self, outcome: httpx.Response | BaseException) -> bool:
        """Record the first attempt's outcome; whether it calls for a retry."""
        if isinstance(outcome, BaseException):
            wanted = self._policy.retries_error(self.request, outcome)
        else:
            wanted = self._policy.retries_response(self.request, outcome)
        if wanted:
            self._first = outcome
            self.attempts = 0
        return wanted

    def replay_first(self) -> httpx.Response:
        first, self._first = self._first, None
        if isinstance(first, BaseException):
            raise first
        assert first is not None
        return first

    def retry(self, state: tenacity.RetryCallState) -> bool:
        outcome = state.outcome
        assert outcome is not None
        error = outcome.exception()
        if error is not None:
            return self._policy.retries_error(self.request, error)
        return self._policy.retries_response(self.request, outcome.result())

    def response(self, state: tenacity.RetryCallState) -> httpx.Response | None:
        outcome = state.outcome
        assert outcome is not None
        return None if outcome.failed else cast(httpx.Response, outcome.result())

    def wait(self, state: tenacity.RetryCallState) -> float:
        jitter = _jitter.fraction()
        return self._policy.delay(state.attempt_number, self.response(state), jitter)

    def stop(self, state: tenacity.RetryCallState) -> bool:
        elapsed = time.monotonic() - self._started
        return self._policy.give_up(state.attempt_number, elapsed, state.upcoming_sleep)

    def drain_time(self, state: tenacity.RetryCallState) -> float:
        """How long the failed attempt's body may be read before the wait for the next one."""
        elapsed = time.monotonic() - self._started
        left = self._policy.max_elapsed - elapsed - state.upcoming_sleep
        return max(0.0, min(_DRAIN_TIME, left))

    def notify(self, state: tenacity.RetryCallState) -> None:
        on_retry = self._policy.on_retry
        if on_retry is None:
            return
        response = self.response(state)
        outcome = state.outcome
        assert outcome is not None
        on_retry(
            RetryEvent(
                method=self.request.method,
                url=loggable_url(self.request.url),
                attempt=state.attempt_number,
                delay=state.upcoming_sleep,
                status=None if response is None else response.status_code,
                error=outcome.exception(),
                retry_after=None if response is None else self._policy.retry_after(response),
            )
        )

    def options(self) -> dict[str, Any]:
        return {
            "retry": self.retry,
            "wait": self.wait,
            "stop": self.stop,
            "reraise": True,
            # Out of attempts: the last response is returned, the last error raised.
            "retry_error_callback": lambda state: state.outcome.result(),
        }


def check_https(request: httpx.Request) -> None:
    """A zero-trust client's requests go over mTLS only: a plain ``http://`` URL (given, or a
    redirect's) would carry the body and token in clear to a server nobody checked."""
    if request.url.scheme != "https":
        raise httpx.UnsupportedProtocol(
            f"zerotrust clients send requests over https only, not {request.url.scheme}://",
            request=request,
        )


def _inject_trace_context(request: httpx.Request) -> None:
    """Write the current OpenTelemetry context (``traceparent``, ...) into the headers. A
    ``tracestate`` the caller set goes with the ``traceparent`` it set (W3C Trace Context
    §3.3): when a new ``traceparent`` replaces it without a ``tracestate`` of its own, the
    caller's is removed rather than left paired with the wrong trace."""
    injected: dict[str, str] = {}
    propagate.inject(injected)
    names = {name.lower() for name in injected}
    if "traceparent" in names and "tracestate" not in names:
        request.headers.pop("tracestate", None)
    request.headers.update(injected)


#: Raised to a request whose retry was due after its client closed: sent then, it would open
#: a connection the closed client never closes (httpx raises so for a closed client).
_CLOSED: Final = "Cannot send a request, as the client has been closed."


class ZeroTrustTransport(httpx.BaseTransport):
    """Wraps a transport: trace-context injection, then retries by ``retry`` (``None``: off).

    Under :class:`~zerotrust.httpx.ZeroTrustAuth` with DPoP, each retry and each redirect httpx
    follows gets a proof of its own, and a redirect without the token (to another origin) gets
    none."""

    def __init__(
        self,
        transport: httpx.BaseTransport,
        *,
        retry: RetryPolicy | None,
        trace_context: bool = True,
        https_only: bool = False,
    ) -> None:
        self._inner = transport
        self._retry = retry
        self._trace = trace_context
        self._https_only = https_only
        self._closed = False  # a retry waiting when the client closes is not sent

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """httpx hook: send ``request`` by the wrapped transport, with trace context and retries."""
        if self._https_only:
            check_https(request)
        response = self._send(request)
        note_nonce(request, response)
        return response

    def _send(self, request: httpx.Request) -> httpx.Response:
        resign_redirect(request)
        if self._trace:
            _inject_trace_context(request)
        if self._retry is None:
            return self._inner.handle_request(request)
        plan = _Plan(self._retry, request)
        try:
            first: httpx.Response | Exception = self._inner.handle_request(request)
        except Exception as exc:
            first = exc
        if not plan.first_outcome(first):
            if isinstance(first, Exception):
                raise first
            return first

        def attempt() -> httpx.Response:
            if not plan.begin_attempt():
                return plan.replay_first()
            if self._closed:
                raise RuntimeError(_CLOSED)
            return self._inner.handle_request(request)

        def before_sleep(state: tenacity.RetryCallState) -> None:
            response = plan.response(state)
            if response is not None:
                note_nonce(request, response)
                _discard(response, request, plan.drain_time(state))
            plan.notify(state)

        retrying = tenacity.Retrying(before_sleep=before_sleep, **plan.options())
        return retrying(attempt)

    def close(self) -> None:
        """Close the wrapped transport; a retry still waiting is not sent."""
        self._closed = True
        self._inner.close()


class AsyncZeroTrustTransport(httpx.AsyncBaseTransport):
    """Async twin of :class:`ZeroTrustTransport`."""

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport,
        *,
        retry: RetryPolicy | None,
        trace_context: bool = True,
        https_only: bool = False,
    ) -> None:
        self._inner = transport
        self._retry = retry
        self._trace = trace_context
        self._https_only = https_only
        self._closed = False  # a retry waiting when the client closes is not sent

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """httpx hook: send ``request`` by the wrapped transport, with trace context and retries."""
        if self._https_only:
            check_https(request)
        response = await self._send(request)
        note_nonce(request, response)
        return response

    async def _send(self, request: httpx.Request) -> httpx.Response:
        resign_redirect(request)
        if self._trace:
            _inject_trace_context(request)
        if self._retry is None:
            return await self._inner.handle_async_request(request)
        plan = _Plan(self._retry, request)
        try:
            first: httpx.Response | Exception = await self._inner.handle_async_request(request)
        except Exception as exc:
            first = exc
        if not plan.first_outcome(first):
            if isinstance(first, Exception):
                raise first
            return first

        async def attempt() -> httpx.Response:
            if not plan.begin_attempt():
                return plan.replay_first()
            if self._closed:
                raise RuntimeError(_CLOSED)
            return await self._inner.handle_async_request(request)

        async def before_sleep(state: tenacity.RetryCallState) -> None:
            response = plan.response(state)
            if response is not None:
                note_nonce(request, response)
                await _adiscard(response, request, plan.drain_time(state))
            plan.notify(state)

        retrying = tenacity.AsyncRetrying(before_sleep=before_sleep, **plan.options())
        run = cast(Callable[..., Awaitable[httpx.Response]], retrying)
        return await run(attempt)

    async def aclose(self) -> None:
        """Close the wrapped transport; a retry still waiting is not sent."""
        self._closed = True
        await self._inner.aclose()


@contextlib.contextmanager
def _read_timeout(request: httpx.Request, seconds: float) -> Iterator[None]:
    """Bound each read of ``request``'s response by ``seconds`` while in the block: the
    connection pool reads the ``timeout`` in the request's extensions (the dict it was sent
    with, which :class:`_Plan` made the request's own) as it reads the body."""
    extensions = request.extensions
    original = extensions.get("timeout")
    timeouts = dict(original) if isinstance(original, dict) else {}
    read = timeouts.get("read")
    timeouts["read"] = seconds if read is None else min(read, seconds)
    extensions["timeout"] = timeouts
    try:
        yield
    finally:
        if original is None:
            extensions.pop("timeout", None)
        else:
            extensions["timeout"] = original


def _discard(response: httpx.Response, request: httpx.Request, within: float) -> None:
    """Read a little of a failed attempt's body (to keep its connection), then close it: at
    most ``_DRAIN_LIMIT`` bytes, and no longer than ``within`` seconds (each read is bounded by
    half of it, and none starts after half of it has passed); past either bound, the response
    and its connection are closed. A response the wrapped transport already read
    (``MockTransport``, a caching transport) has nothing left to drain."""
    try:
        if not response.is_stream_consumed and within > 0:
            with _read_timeout(request, within / 2):
                read, stop = 0, time.monotonic() + within / 2
                for chunk in response.iter_raw():
                    read += len(chunk)
                    if read > _DRAIN_LIMIT or time.monotonic() >= stop:
                        break
    except (httpx.HTTPError, httpx.StreamError):
        pass  # the attempt already failed; its connection is dropped
    finally:
        response.close()


async def _adiscard(response: httpx.Response, request: httpx.Request, within: float) -> None:
    try:
        if not response.is_stream_consumed and within > 0:
            with _read_timeout(request, within / 2):
                read, stop = 0, time.monotonic() + within / 2
                async for chunk in response.aiter_raw():
                    read += len(chunk)
                    if read > _DRAIN_LIMIT or time.monotonic() >= stop:
                        break
    except (httpx.HTTPError, httpx.StreamError):
        pass
    finally:
        await response.aclose()
