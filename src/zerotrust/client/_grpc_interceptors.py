"""Client interceptors (sync and aio, all four arities): every attempt of a call waits for the
server identity check, the current OpenTelemetry context is injected into the call's metadata
(W3C ``traceparent`` / ``tracestate``, through the globally configured propagators, replacing
any the caller set), and the channel's :class:`~zerotrust.grpc.RetryPolicy` is applied here.

grpc's own retries (its service-config retry policy and its transparent retries) are turned
off on these channels: grpc sends a retried call over whatever connection it has then, with no
check before it. Here, each attempt is a new call through the check:

* unary-unary calls are tried again when an attempt failed with a retryable status and no
  response metadata arrived;
* calls of every arity are tried again when the identity check could not run (``UNAVAILABLE``,
  nothing was sent yet), whatever status codes the policy names;
* the call's deadline covers every attempt and every wait between them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import namedtuple
from collections.abc import Callable
from typing import Any

import grpc  # type: ignore[import-untyped,unused-ignore]
import grpc.aio  # type: ignore[import-untyped,unused-ignore]
from opentelemetry import propagate

from zerotrust import _jitter
from zerotrust.client._grpc_check import ServerCheck, ServerIdentityError
from zerotrust.client._grpc_creds import RetryPolicy, TokenPlugin
from zerotrust.client._rejections import says_invalid_token

__all__ = ["REFUSAL_TASK", "ClientInterceptor", "aio_interceptors", "trace_metadata"]

#: The name of the task that reads how an aio streaming call ended (the refusal of a token).
REFUSAL_TASK = "zerotrust-grpc-refusal"

_log = logging.getLogger("zerotrust.grpc")

_Fields = namedtuple(
    "_Fields", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")
)


class _CallDetails(_Fields, grpc.ClientCallDetails):  # type: ignore[misc]
    pass


def trace_metadata() -> list[tuple[str, str]]:
    """The current context as metadata entries, as the global propagators inject it (no
    ``traceparent`` without an active, valid span; ``baggage`` when there is some)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return [(key.lower(), value) for key, value in carrier.items()]


def _with_trace(metadata: Any, extra: list[tuple[str, str]]) -> list[tuple[str, Any]]:
    """``metadata`` with the injected context: it replaces the caller's entries of the same
    names, and a ``tracestate`` goes with the ``traceparent`` it came with (W3C Trace Context
    §3.3), so when a ``traceparent`` is injected the caller's ``tracestate`` is removed even if
    the injected context brings none."""
    if not extra:
        return list(metadata or ())
    names = {key for key, _ in extra}
    if "traceparent" in names:
        names.add("tracestate")
    kept = [
        (key, value)
        for key, value in (metadata or ())
        if not (isinstance(key, str) and key.lower() in names)
    ]
    return [*kept, *extra]


class _Plan:
    """The attempts of one call: its deadline, how many were made, the wait before the next."""

    __slots__ = ("attempts", "deadline", "policy")

    def __init__(self, policy: RetryPolicy | None, timeout: float | None) -> None:
        self.policy = policy
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.attempts = 0

    def left(self) -> float | None:
        """What remains of the call's timeout (``None``: no deadline)."""
        if self.deadline is None:
            return None
        return max(self.deadline - time.monotonic(), 0.0)

    def delay(self, code: Any, initial_metadata: Any = ()) -> float | None:
        """Seconds to wait before another attempt after one ended with ``code``, or ``None``
        for no other attempt: no policy, a code not named retryable, response metadata
        received (the server answered), or no attempt left (see :meth:`backoff`)."""
        policy = self.policy
        if policy is None or initial_metadata:
            return None
        if not isinstance(code, grpc.StatusCode) or code.name not in policy.retryable_status_codes:
            return None
        return self.backoff()

    def backoff(self) -> float | None:
        """Seconds to wait before another attempt, or ``None`` for no other attempt: no
        policy, attempts used up, or a wait past the deadline. The n-th wait is uniform in
        [0, min(max_backoff, initial_backoff * multiplier**(n-1))]."""
        policy = self.policy
        if policy is None or self.attempts >= policy.max_attempts:
            return None
        cap = policy.initial_backoff
        for _ in range(self.attempts - 1):
            cap = min(cap * policy.backoff_multiplier, policy.max_backoff)
        wait = min(cap * _jitter.fraction(), threading.TIMEOUT_MAX)
        if self.deadline is not None and time.monotonic() + wait >= self.deadline:
            return None
        return wait


def _refused_token(
    tokens: TokenPlugin | None, code: Any, trailing: Any, sent: str | None
) -> str | None:
    """The token a call that ended with ``code`` and ``trailing`` metadata was refused
    (``UNAUTHENTICATED`` with ``www-authenticate: ... error="invalid_token"``), now dropped
    from the plugin and its source; ``None`` when the call was not refused for its token.
    ``sent`` is the token the call was made with as far as known (``None``: the call waited
    for a fetch, whose token is the plugin's current one)."""
    if tokens is None or code is not grpc.StatusCode.UNAUTHENTICATED:
        return None
    challenges = [value for key, value in trailing or () if key == "www-authenticate"]
    if not says_invalid_token(challenges):
        return None
    refused = sent if sent is not None else tokens.current()
    if refused is not None:
        tokens.refused(refused)
    return refused


def _retried(plan: _Plan, exc: ServerIdentityError) -> float | None:
    """The wait before another attempt after the check failed. Nothing was sent, so a check
    that could not run (``UNAVAILABLE``) is tried again whatever codes the policy names; a
    refused identity, a passed deadline or a closed channel is final."""
    if exc.code() is not grpc.StatusCode.UNAVAILABLE:
        return None
    return plan.backoff()


class _Attempts:
    """Builds the details of each attempt: the check first (bounded by what is left of the
    deadline), then the metadata with the trace context."""

    def __init__(
        self,
        check: ServerCheck | None,
        trace_context: bool,
        retry: RetryPolicy | None,
        tokens: TokenPlugin | None = None,
    ) -> None:
        self._check = check
        self._trace = trace_context
        self._retry = retry
        self._tokens = tokens
        self._ending: set[asyncio.Task[None]] = set()  # aio: the tasks reading streams' ends

    def _sent(self) -> str | None:
        """The token a call made now goes with, if the plugin has one at hand."""
        return self._tokens.current() if self._tokens is not None else None

    def _plan(self, details: Any) -> _Plan:
        return _Plan(self._retry, details.timeout)

    def _extra(self) -> list[tuple[str, str]]:
        return trace_metadata() if self._trace else []

    def _note(self, code: Any) -> None:
        if self._check is not None:
            self._check.note(code)


# --- sync ---------------------------------------------------------------------------------------


class ClientInterceptor(
    _Attempts,
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[misc]
    grpc.StreamStreamClientInterceptor,  # type: ignore[misc]
):
    """For ``grpc.intercept_channel``."""

    def __init__(
        self,
        check: ServerCheck | None,
        *,
        trace_context: bool = True,
        retry: RetryPolicy | None = None,
        tokens: TokenPlugin | None = None,
    ) -> None:
        super().__init__(check, trace_context, retry, tokens)

    def _details(self, details: Any, plan: _Plan, extra: list[tuple[str, str]]) -> Any:
        """One attempt's details, after the check (raises :class:`ServerIdentityError`)."""
        check = self._check
        if check is not None and check.needed:
            check.verify(plan.left(), wait_for_ready=bool(details.wait_for_ready))
        if plan.attempts == 1 and not extra and plan.deadline is None:
            return details
        return _CallDetails(
            details.method,
            plan.left(),
            _with_trace(details.metadata, extra),
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )

    def _checked(self, details: Any) -> Any:
        """The details of a streaming call: only a failed check is tried again (a request
        stream cannot be replayed, a response stream may have been read)."""
        plan, extra = self._plan(details), self._extra()
        while True:
            plan.attempts += 1
            try:
                return self._details(details, plan, extra)
            except ServerIdentityError as exc:
                wait = _retried(plan, exc)
                if wait is None:
                    raise
                time.sleep(wait)

    def _watch(self, call: Any, sent: str | None) -> Any:
        if self._check is None and self._tokens is None:
            return call

        def ended() -> None:
            code = call.code()
            self._note(code)
            if self._tokens is not None:
                _refused_token(self._tokens, code, call.trailing_metadata(), sent)

        try:
            added = call.add_callback(ended)
        except NotImplementedError:
            # a blocking stream-unary call that failed comes back as its finished RpcError,
            # which takes no callback
            added = False
        if not added:
            ended()
        return call

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        plan, extra = self._plan(details), self._extra()

        def attempt() -> Any:
            return continuation(self._details(details, plan, extra), request)

        # a check to wait for (connecting, probing) runs off the caller's thread: future()
        # returns at once, as grpc's does, and can be cancelled while the check runs
        call = _RetryingCall(attempt, plan, self._note, self._tokens)
        return call.start(defer=self._waits())

    def _waits(self) -> bool:
        """Whether a call made now waits for the identity check."""
        check = self._check
        return check is not None and check.needed

    def _streaming(self, continuation: Any, details: Any, request: Any) -> Any:
        try:
            checked = self._checked(details)
        except ServerIdentityError as exc:
            # a call that ended unsent, with the check's status: raised from here, grpc would
            # report its own INTERNAL to future() callers and streams
            return _Failed(exc)
        sent = self._sent()
        return self._watch(continuation(checked, request), sent)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return self._streaming(continuation, details, request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        if not self._waits():
            return self._streaming(continuation, details, requests)
        # future() returns at once here too: the call is made, once checked, off the caller's
        # thread (only a check that could not run is tried again: the requests are a stream)
        plan, extra = self._plan(details), self._extra()

        def attempt() -> Any:
            return continuation(self._details(details, plan, extra), requests)

        call = _RetryingCall(attempt, plan, self._note, self._tokens, replay=False)
        return call.start(defer=True)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return self._streaming(continuation, details, requests)


class _Raised:
    """The outcome of an attempt that raised instead of making a call (the identity check
    refused or could not run, or grpc refused the call)."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def result(self) -> Any:
        raise self.error

    def exception(self) -> BaseException:
        return self.error

    def traceback(self) -> Any:
        return self.error.__traceback__

    def code(self) -> Any:
        code = getattr(self.error, "code", None)
        return code() if callable(code) else grpc.StatusCode.INTERNAL

    def details(self) -> str:
        details = getattr(self.error, "details", None)
        return str(details() if callable(details) else self.error)

    def initial_metadata(self) -> Any:
        return ()

    def trailing_metadata(self) -> Any:
        return ()

    def cancel(self) -> bool:
        return False


class _Failed(_Raised, grpc.Call, grpc.Future):  # type: ignore[misc]
    """A call that ended before it was sent (the server's identity was refused or could not
    be checked): a finished call, future and response iterator with the error's status, as
    grpc's own calls are once they fail."""

    __slots__ = ()

    def __iter__(self) -> _Failed:
        return self

    def __next__(self) -> Any:
        raise self.error

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float | None:
        return None

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return False  # ended: grpc's calls answer so, and the caller runs it itself

    def cancelled(self) -> bool:
        return False

    def running(self) -> bool:
        return False

    def done(self) -> bool:
        return True

    def result(self, timeout: float | None = None) -> Any:
        raise self.error

    def exception(self, timeout: float | None = None) -> BaseException:
        return self.error

    def traceback(self, timeout: float | None = None) -> Any:
        return self.error.__traceback__

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        _quietly(fn, self)


class _RetryingCall(grpc.Call, grpc.Future):  # type: ignore[misc]
    """A unary-unary call made of attempts (what the interceptor returns, for blocking calls
    and ``future()`` alike; and a stream-unary call that waits for the identity check, with
    ``replay=False``: only a check that could not run is tried again). The first attempt
    starts in the caller's thread (in a thread of its own when it waits for the identity
    check), a later one in a timer thread once its wait is over; a blocking call waits in
    :meth:`result`.

    An attempt refused for its token (``UNAUTHENTICATED``, ``error="invalid_token"``, before
    any response metadata) has the token dropped; the call is then made once more, at once,
    if the token source hands out another token before the deadline (whatever the retry
    policy)."""

    def __init__(
        self,
        attempt: Callable[[], Any],
        plan: _Plan,
        note: Callable[[Any], None],
        tokens: TokenPlugin | None = None,
        *,
        replay: bool = True,
    ) -> None:
        self._attempt = attempt
        self._replay = replay  # False: an attempt grpc took is final (a stream of requests)
        self._plan = plan
        self._note = note
        self._tokens = tokens
        self._sent: str | None = None  # the token of the attempt under way, if known
        self._refused: str | None = None  # the token refused once: the next attempt's differs
        self._remint = False  # the next attempt is the one with a new token
        self._cond = threading.Condition()
        self._call: Any = None  # the attempt under way
        self._outcome: Any = None  # the last attempt that ended
        self._final = False
        self._cancelled = False
        self._timer: threading.Timer | None = None
        self._done_callbacks: list[Callable[[Any], None]] = []
        self._callbacks: list[Callable[[], None]] = []

    def start(self, *, defer: bool = False) -> _RetryingCall:
        """Make the first attempt, in the caller's thread or (``defer``: it waits for the
        identity check) in a thread of its own; its outcome is the call's, as a later
        attempt's is."""
        if defer:
            thread = threading.Thread(target=self._run, name="zerotrust-grpc-call", daemon=True)
            thread.start()
        else:
            self._run(first=True)
        return self

    def _run(self, first: bool = False) -> None:
        with self._cond:
            if self._final:
                return
            self._timer = None
            self._plan.attempts += 1
            remint, self._remint = self._remint, False
        tokens = self._tokens
        if tokens is not None:
            if remint:  # on a timer thread: waiting for the source blocks no caller
                fresh = tokens.wait_token(self._plan.left())
                if fresh is None or fresh == self._refused:
                    self._finish(self._outcome)  # no other token: the refusal stands
                    return
            self._sent = tokens.current()
        try:
            call = self._attempt()
        except ServerIdentityError as exc:
            # a refusal that ends the call is its outcome (grpc's blocking path raises it from
            # result(); raised from here, future() would report grpc's own INTERNAL)
            self._after(_Raised(exc), _retried(self._plan, exc))
            return
        except Exception as exc:
            if first:
                raise
            self._finish(_Raised(exc))
            return
        with self._cond:
            stale = self.done()  # cancelled while this attempt's check ran
            if not stale:
                self._call = call
        if stale:
            call.cancel()
        else:
            call.add_done_callback(self._attempt_done)

    def _attempt_done(self, call: Any) -> None:
        with self._cond:
            # ended: a cancel() from now on finishes the call with this attempt's outcome
            self._call, self._outcome = None, call
        code = call.code()
        self._note(code)
        wait = None
        if code is not grpc.StatusCode.OK and not self._cancelled:
            if not self._replay:
                _refused_token(self._tokens, code, call.trailing_metadata(), self._sent)
            elif self._again_with_new_token(call, code):
                wait = 0.0
            else:
                wait = self._plan.delay(code, call.initial_metadata())
        self._after(call, wait)

    def _again_with_new_token(self, call: Any, code: Any) -> bool:
        """Whether the attempt that ended was refused for its token (which is dropped) and
        the call is to be made once more with a new one."""
        refused = _refused_token(self._tokens, code, call.trailing_metadata(), self._sent)
        if refused is None or self._refused is not None or call.initial_metadata():
            return False
        left = self._plan.left()
        if left is not None and left <= 0:
            return False
        with self._cond:
            self._refused, self._remint = refused, True
        return True

    def _after(self, outcome: Any, wait: float | None) -> None:
        """Another attempt after ``wait`` seconds, or ``outcome`` is the call's (``None``)."""
        with self._cond:
            if wait is not None and not self._cancelled:
                self._outcome = outcome
                self._timer = threading.Timer(wait, self._run)
                self._timer.daemon = True
                self._timer.start()
                return
        self._finish(outcome)

    def _finish(self, outcome: Any) -> None:
        with self._cond:
            if self._final:
                return
            self._outcome, self._final, self._timer = outcome, True, None
            done, self._done_callbacks = self._done_callbacks, []
            callbacks, self._callbacks = self._callbacks, []
            self._cond.notify_all()
        for callback in callbacks:
            _quietly(callback)
        for done_callback in done:
            _quietly(done_callback, self)

    def _last(self, timeout: float | None = None) -> Any:
        with self._cond:
            if not self._cond.wait_for(lambda: self._final, timeout):
                raise grpc.FutureTimeoutError()
            return self._outcome

    def _ended(self, timeout: float | None) -> Any:
        outcome = self._last(timeout)
        if self._cancelled:
            raise grpc.FutureCancelledError()
        return outcome

    # grpc.Future

    def cancel(self) -> bool:
        with self._cond:
            if self._final:
                return False
            self._cancelled = True
            call, outcome, timer = self._call, self._outcome, self._timer
        if call is not None:
            call.cancel()
            # cancelled and done on return, as grpc's futures are (the attempt's own end,
            # later, changes nothing)
            self._finish(call)
        else:  # between attempts, or while an attempt's check runs
            if timer is not None:
                timer.cancel()
            # cancelled before any attempt ended: an outcome without metadata
            self._finish(_Raised(grpc.FutureCancelledError()) if outcome is None else outcome)
        return True

    def cancelled(self) -> bool:
        return self._cancelled and self._final

    def running(self) -> bool:
        return not self._final

    def done(self) -> bool:
        return self._final

    def result(self, timeout: float | None = None) -> Any:
        return self._ended(timeout).result()

    def exception(self, timeout: float | None = None) -> Any:
        return self._ended(timeout).exception()

    def traceback(self, timeout: float | None = None) -> Any:
        return self._ended(timeout).traceback()

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        with self._cond:
            if not self._final:
                self._done_callbacks.append(fn)
                return
        _quietly(fn, self)

    # grpc.Call

    def is_active(self) -> bool:
        return not self._final

    def time_remaining(self) -> float | None:
        return self._plan.left()

    def add_callback(self, callback: Callable[[], None]) -> bool:
        with self._cond:
            if self._final:
                return False
            self._callbacks.append(callback)
            return True

    def initial_metadata(self) -> Any:
        return self._last().initial_metadata()

    def trailing_metadata(self) -> Any:
        return self._last().trailing_metadata()

    def code(self) -> Any:
        outcome = self._last()
        return grpc.StatusCode.CANCELLED if self._cancelled else outcome.code()

    def details(self) -> Any:
        outcome = self._last()
        return "Locally cancelled by application!" if self._cancelled else outcome.details()


def _quietly(callback: Callable[..., Any], *args: Any) -> None:
    try:
        callback(*args)
    except Exception:  # as grpc does for its callbacks
        _log.exception("zerotrust: a gRPC call callback raised")


# --- aio ----------------------------------------------------------------------------------------


class _AioAttempts(_Attempts):
    async def _details(self, details: Any, plan: _Plan, extra: list[tuple[str, str]]) -> Any:
        check = self._check
        if check is not None and check.needed:
            await check.averify(plan.left(), wait_for_ready=bool(details.wait_for_ready))
        if plan.attempts == 1 and not extra and plan.deadline is None:
            return details
        metadata = grpc.aio.Metadata(*_with_trace(details.metadata, extra))
        return grpc.aio.ClientCallDetails(
            details.method, plan.left(), metadata, details.credentials, details.wait_for_ready
        )

    async def _checked(self, details: Any) -> Any:
        plan, extra = self._plan(details), self._extra()
        while True:
            plan.attempts += 1
            try:
                return await self._details(details, plan, extra)
            except ServerIdentityError as exc:
                wait = _retried(plan, exc)
                if wait is None:
                    raise
                await asyncio.sleep(wait)

    def _watch(self, call: Any, sent: str | None) -> Any:
        check = self._check
        if check is not None:
            call.add_done_callback(check.note_aio_call)
        tokens = self._tokens
        if tokens is not None:

            async def ended() -> None:
                with contextlib.suppress(Exception):
                    _refused_token(tokens, await call.code(), await call.trailing_metadata(), sent)

            def done(_: Any) -> None:
                task = asyncio.get_running_loop().create_task(ended(), name=REFUSAL_TASK)
                self._ending.add(task)
                task.add_done_callback(self._ending.discard)

            call.add_done_callback(done)
        return call


class _AioUnaryUnary(_AioAttempts, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        """Attempts as the sync :class:`_RetryingCall` makes them (the one with a new token
        after ``invalid_token`` included)."""
        plan, extra = self._plan(details), self._extra()
        refused_once: str | None = None
        while True:
            plan.attempts += 1
            try:
                attempt = await self._details(details, plan, extra)
            except ServerIdentityError as exc:
                wait = _retried(plan, exc)
                if wait is None:
                    raise
                await asyncio.sleep(wait)
                continue
            sent = self._sent()
            call = await continuation(attempt, request)
            with contextlib.suppress(grpc.RpcError):
                await call
            code = await call.code()
            self._note(code)
            if code is grpc.StatusCode.OK:
                return call
            refused = _refused_token(self._tokens, code, await call.trailing_metadata(), sent)
            if refused is not None:
                left = plan.left()
                if (
                    refused_once is not None
                    or await call.initial_metadata()
                    or (left is not None and left <= 0)
                ):
                    return call
                refused_once = refused
                assert self._tokens is not None
                fresh = await self._tokens.atoken(left)
                if fresh is None or fresh == refused:
                    return call  # no other token: the refusal stands
                continue
            wait = plan.delay(code, await call.initial_metadata())
            if wait is None:
                return call
            await asyncio.sleep(wait)


class _AioUnaryStream(_AioAttempts, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        checked = await self._checked(details)
        sent = self._sent()
        return self._watch(await continuation(checked, request), sent)


class _AioStreamUnary(_AioAttempts, grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        checked = await self._checked(details)
        sent = self._sent()
        return self._watch(await continuation(checked, requests), sent)


class _AioStreamStream(_AioAttempts, grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        checked = await self._checked(details)
        sent = self._sent()
        return self._watch(await continuation(checked, requests), sent)


def aio_interceptors(
    check: ServerCheck | None,
    *,
    trace_context: bool = True,
    retry: RetryPolicy | None = None,
    tokens: TokenPlugin | None = None,
) -> list[Any]:
    """One interceptor per arity (a ``grpc.aio`` channel files each interceptor under the
    first arity it implements); the identity check runs on the event loop."""
    kinds = (_AioUnaryUnary, _AioUnaryStream, _AioStreamUnary, _AioStreamStream)
    return [kind(check, trace_context, retry, tokens) for kind in kinds]
