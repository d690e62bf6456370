"""Where audit events go, and what happens when a destination fails.

A sink is anything with ``emit(event) -> None``. ``emit`` runs on the request path, for
sync and async callers alike, so it must be fast and must not do I/O beyond handing the
event to ``logging`` (whose handlers can be made asynchronous with a
``logging.handlers.QueueHandler``) or to an in-memory buffer.

:class:`AuditPipeline` puts a failure policy around a set of sinks: fail open (count, log
once, keep serving) or fail closed (raise :class:`~zerotrust.errors.AuditError`, which the
request pipeline turns into 503 / UNAVAILABLE).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import logging
import threading
import weakref
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Iterator
from typing import Any, Literal, Protocol, final, runtime_checkable

from zerotrust.audit.event import AuditEvent, _dumps
from zerotrust.audit.otel import OTelSink
from zerotrust.errors import AuditError, ConfigurationError

__all__ = [
    "AuditPipeline",
    "AuditSink",
    "CallableSink",
    "LoggingSink",
    "MemorySink",
    "MultiSink",
]

_errors_log = logging.getLogger("zerotrust.audit.errors")


@runtime_checkable
class AuditSink(Protocol):
    """Receives every :class:`AuditEvent`; ``emit`` must be fast and should not block."""

    def emit(self, event: AuditEvent, /) -> None:
        """Record ``event``, synchronously on the request path. An exception it raises is
        counted by :class:`AuditPipeline`, and refuses the request when ``on_error="closed"``."""
        ...


#: The handlers that failed to write the audit event being logged in this context.
_failed: contextvars.ContextVar[list[logging.Handler] | None] = contextvars.ContextVar(
    "zerotrust_audit_failed", default=None
)
#: True while a fail-closed :class:`AuditPipeline` hands an event to its sinks (whichever
#: sinks wrap a :class:`LoggingSink`): an event logging would drop must then be refused.
_required: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "zerotrust_audit_required", default=False
)
_watched: weakref.WeakSet[logging.Handler] = weakref.WeakSet()
_watch_lock = threading.Lock()


def _watch_handlers(logger: logging.Logger, level: int) -> int:
    """Make the handlers an event reaches note when they fail to write it: a handler
    catches its own errors and calls ``handleError``, so a failed write is otherwise
    invisible to the sink (and a required sink could not refuse). Returns how many handlers
    would be handed a record at ``level``, found as ``Logger.callHandlers`` finds them."""
    receivers = 0
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if handler not in _watched:
                with _watch_lock:
                    if handler not in _watched:
                        _watch(handler)
            if level >= handler.level:
                receivers += 1
        if not current.propagate:
            break
        current = current.parent
    return receivers


def _watch(handler: logging.Handler) -> None:
    original = handler.handleError

    def handle_error(record: logging.LogRecord) -> None:
        failed = _failed.get()  # set only while a LoggingSink hands its event to logging
        if failed is not None:
            failed.append(handler)
        original(record)

    handler.handleError = handle_error  # type: ignore[method-assign]
    _watched.add(handler)


@final
class LoggingSink:
    """One compact JSON line per event through stdlib :mod:`logging`.

    The record's message is :meth:`AuditEvent.to_json`'s text and the same data is
    attached as ``record.zerotrust_audit`` (a dict) for structured handlers. Nothing is
    serialized when ``logger`` is not enabled for ``level``, unless the sink is emitting for
    a fail-closed :class:`AuditPipeline`: then ``emit`` raises
    :class:`~zerotrust.errors.AuditError` when the logger is not enabled for ``level``,
    when no handler would receive the record (on the logger or on an ancestor it propagates
    to; ``logging.lastResort`` does not count), or when a handler fails to write it.
    """

    __slots__ = ("_level", "_logger")

    def __init__(
        self, logger: str | logging.Logger = "zerotrust.audit", level: int = logging.INFO
    ) -> None:
        if isinstance(logger, str):
            logger = logging.getLogger(logger)
        if not isinstance(logger, logging.Logger):
            raise ConfigurationError("logger must be a logger name or a logging.Logger")
        if type(level) is not int:
            raise ConfigurationError("level must be a logging level number")
        self._logger = logger
        self._level = level

    @property
    def logger(self) -> logging.Logger:
        """The logger events are written to."""
        return self._logger

    @property
    def level(self) -> int:
        """The level events are logged at."""
        return self._level

    @property
    def enabled(self) -> bool:
        """Whether events would be written now (the logger is enabled for the level)."""
        return self._logger.isEnabledFor(self._level)

    def _unheard(self) -> str | None:
        """Why events would not be written now, or ``None``: the logger is not enabled for
        the level, or no handler would receive a record (a fail-closed pipeline then refuses
        every event)."""
        logger = self._logger
        if not logger.isEnabledFor(self._level):
            return (
                f"the {logger.name!r} logger is not enabled for {logging.getLevelName(self._level)}"
            )
        # watching the handlers found on the way changes nothing but what a failure tells;
        # logging.lastResort (WARNING and above on stderr) is not counted as a receiver
        if not _watch_handlers(logger, self._level):
            return f"no handler would receive the {logger.name!r} logger's records"
        return None

    def emit(self, event: AuditEvent, /) -> None:
        """Log ``event`` as one JSON line, or do nothing if the level is disabled (raise
        :class:`~zerotrust.errors.AuditError` instead for a fail-closed pipeline)."""
        logger = self._logger
        if not logger.isEnabledFor(self._level):
            if _required.get():
                raise AuditError(f"{self._unheard()}: the audit event would not be written")
            return
        data = event.to_dict()
        # No arguments, so logging never applies %-formatting to the JSON text. The record is
        # made directly: Logger.log would walk the stack to find where it was called from,
        # which is always here.
        record = logger.makeRecord(
            logger.name,
            self._level,
            __file__,
            0,
            _dumps(data),
            (),
            None,
            func="emit",
            extra={"zerotrust_audit": data},
        )
        if not _watch_handlers(logger, self._level) and _required.get():
            raise AuditError(f"{self._unheard()}: the audit event would not be written")
        failed: list[logging.Handler] = []
        reset = _failed.set(failed)
        try:
            logger.handle(record)
        finally:
            _failed.reset(reset)
        if failed:  # a handler could not write it (logging reports that and carries on)
            raise AuditError(
                f"a handler of the {logger.name!r} logger could not write the audit event"
            )

    def __repr__(self) -> str:
        return f"LoggingSink(logger={self._logger.name!r}, level={self._level!r})"


@final
class MemorySink:
    """Keeps the latest ``max_events`` events in memory: for tests and debugging."""

    __slots__ = ("_events", "_max_events")

    def __init__(self, max_events: int = 10_000) -> None:
        if type(max_events) is not int or max_events < 1:
            raise ConfigurationError("max_events must be a positive int")
        self._max_events = max_events
        self._events: deque[AuditEvent] = deque(maxlen=max_events)

    def emit(self, event: AuditEvent, /) -> None:
        """Keep ``event``, dropping the oldest one when full."""
        self._events.append(event)

    @property
    def max_events(self) -> int:
        """How many events are retained at most."""
        return self._max_events

    @property
    def events(self) -> list[AuditEvent]:
        """The retained events, oldest first (a copy; once full, the oldest are dropped)."""
        return list(self._events)

    @property
    def last(self) -> AuditEvent:
        """The most recent event; :class:`IndexError` when there is none."""
        try:
            return self._events[-1]
        except IndexError:
            raise IndexError("no audit event has been recorded") from None

    def find(self, **field_equals: Any) -> list[AuditEvent]:
        """The retained events whose named fields all equal the given values, oldest first.

        ``sink.find(decision="deny", rule_id="admins-only")``. An unknown field name is a
        :class:`TypeError`, so a typo cannot silently match nothing.
        """
        unknown = field_equals.keys() - AuditEvent.__dataclass_fields__.keys()
        if unknown:
            raise TypeError(f"AuditEvent has no field(s) {sorted(unknown)}")
        items = tuple(field_equals.items())
        return [
            event
            for event in tuple(self._events)
            if all(getattr(event, name) == value for name, value in items)
        ]

    def clear(self) -> None:
        """Forget every retained event."""
        self._events.clear()

    def __len__(self) -> int:
        return len(self._events)

    def __iter__(self) -> Iterator[AuditEvent]:
        return iter(tuple(self._events))

    def __repr__(self) -> str:
        return f"MemorySink({len(self._events)}/{self._max_events} events)"


@final
class CallableSink:
    """Adapts any ``fn(event)`` callable into a sink."""

    __slots__ = ("_fn",)

    def __init__(self, fn: Callable[[AuditEvent], object]) -> None:
        if not callable(fn):
            raise ConfigurationError("CallableSink needs a callable")
        _never_async(fn, "CallableSink")
        self._fn = fn

    def emit(self, event: AuditEvent, /) -> None:
        """Call the wrapped function with ``event``."""
        _ran(self._fn(event))

    def __repr__(self) -> str:
        return f"CallableSink({self._fn!r})"


@final
class MultiSink:
    """Sends each event to every sink, in order.

    A failing sink does not starve the others: every sink is called, then the first
    exception is re-raised for the enclosing :class:`AuditPipeline` to handle.
    """

    __slots__ = ("_flags", "_sinks")

    def __init__(self, *sinks: AuditSink) -> None:
        self._sinks = _check_sinks(sinks)
        self._flags = tuple(_enabled_flag(sink) for sink in self._sinks)

    @property
    def sinks(self) -> tuple[AuditSink, ...]:
        """The sinks, in call order."""
        return self._sinks

    @property
    def enabled(self) -> bool:
        """Whether any of the sinks would record an event now."""
        for flag in self._flags:  # noqa: SIM110 - asked on every request: no generator
            if flag():
                return True
        return False

    def emit(self, event: AuditEvent, /) -> None:
        """Emit to every sink, then re-raise the first exception, if any."""
        error: Exception | None = None
        for sink in self._sinks:
            emit: Callable[[AuditEvent], object] = sink.emit
            try:
                result = emit(event)
                if result is not None:  # a sink's emit returns nothing, or it failed
                    _ran(result)
            except Exception as exc:  # every sink must be tried
                if error is None:
                    error = exc
        if error is not None:
            raise error

    def __repr__(self) -> str:
        return f"MultiSink({', '.join(map(repr, self._sinks))})"


@final
class AuditPipeline:
    """Emits each event to every sink under a failure policy.

    ``on_error="open"`` (the default) keeps serving when a sink raises: the failure is
    counted in :attr:`failures` and logged on ``zerotrust.audit.errors`` the first time
    that sink fails, then not again until it has succeeded once more (so a dead sink
    cannot flood the logs). ``on_error="closed"`` does the same bookkeeping and then
    raises :class:`~zerotrust.errors.AuditError` once every sink has been tried: the
    request is refused rather than served unaudited. Either way no sink exception escapes
    as anything but ``AuditError``, and log records never include the event.
    """

    __slots__ = ("_failing", "_failures", "_flags", "_lock", "_on_error", "_sinks")

    def __init__(
        self, sinks: Iterable[AuditSink], *, on_error: Literal["open", "closed"] = "open"
    ) -> None:
        if on_error not in ("open", "closed"):
            raise ConfigurationError("on_error must be 'open' or 'closed'")
        if callable(getattr(sinks, "emit", None)):  # one sink (a MemorySink is iterable too)
            raise ConfigurationError("AuditPipeline takes a list of sinks: [sink]")
        self._sinks = _check_sinks(tuple(sinks))
        # asked on every request: the logging sinks' question is bound once
        self._flags = tuple(_enabled_flag(sink) for sink in self._sinks)
        self._on_error = on_error
        self._failing = [False] * len(self._sinks)
        self._failures = 0
        self._lock = threading.Lock()

    @property
    def sinks(self) -> tuple[AuditSink, ...]:
        """The sinks, in call order."""
        return self._sinks

    @property
    def on_error(self) -> Literal["open", "closed"]:
        """The failure policy: ``"open"`` or ``"closed"``."""
        return self._on_error

    @property
    def failures(self) -> int:
        """How many times a sink has raised since this pipeline was built."""
        return self._failures

    @property
    def enabled(self) -> bool:
        """Whether events must be built and emitted now. Always true when
        ``on_error="closed"``: a sink that would drop the event must be able to refuse the
        request. Otherwise, whether any sink would record an event now: when none would (for
        example the default :class:`LoggingSink` with its logger disabled), callers may skip
        building events altogether; every decision is still audited as soon as a sink
        listens."""
        if self._on_error == "closed":
            return True
        for flag in self._flags:  # noqa: SIM110 - asked on every request: no generator
            if flag():
                return True
        return False

    @property
    def healthy(self) -> bool:
        """False while any sink's latest attempt failed: for health checks."""
        return not any(self._failing)

    def emit(self, event: AuditEvent, /) -> None:
        """Emit to every sink; raise :class:`AuditError` on failure only when closed."""
        if self._on_error == "closed":
            required = _required.set(True)
            try:
                self._emit(event)
            finally:
                _required.reset(required)
        else:
            self._emit(event)

    def _emit(self, event: AuditEvent) -> None:
        first_error: Exception | None = None
        for index, sink in enumerate(self._sinks):
            emit: Callable[[AuditEvent], object] = sink.emit
            try:
                result = emit(event)
                if result is not None:  # a sink's emit returns nothing, or it failed
                    _ran(result)
            except Exception as exc:  # every sink must be tried
                self._failed(index, exc)
                if first_error is None:
                    first_error = exc
            else:
                if self._failing[index]:
                    self._recovered(index)
        if first_error is not None and self._on_error == "closed":
            raise AuditError(
                f"audit sink failed ({type(first_error).__name__}); failing closed"
            ) from first_error

    def _failed(self, index: int, exc: Exception) -> None:
        with self._lock:
            self._failures += 1
            first = not self._failing[index]
            self._failing[index] = True
        if first:
            name = _describe(index, self._sinks[index])
            _report(
                logging.ERROR,
                "%s failed (%s); its failures are now counted but not logged until it recovers",
                name,
                type(exc).__name__,
            )
            # The traceback may quote the event, so it only appears when asked for.
            _report(logging.DEBUG, "%s failure details", name, exc_info=exc)

    def _recovered(self, index: int) -> None:
        with self._lock:
            was_failing = self._failing[index]
            self._failing[index] = False
        if was_failing:
            _report(logging.INFO, "%s recovered", _describe(index, self._sinks[index]))

    def __repr__(self) -> str:
        return f"AuditPipeline({list(self._sinks)!r}, on_error={self._on_error!r})"


def _report(level: int, message: str, *args: object, exc_info: Exception | None = None) -> None:
    """Log on ``zerotrust.audit.errors``, which never raises: its records reach the handlers of
    ``zerotrust.audit`` too, and one of them may be the very handler that just failed (a log
    shipper that is down). The failure is counted (:attr:`AuditPipeline.failures`) either way,
    and every sink is still tried."""
    with contextlib.suppress(Exception):  # reporting a failure must not become one
        _errors_log.log(level, message, *args, exc_info=exc_info)


def _check_sinks(sinks: tuple[Any, ...]) -> tuple[AuditSink, ...]:
    """The sinks, a plain ``fn(event)`` callable adapted by :class:`CallableSink`."""
    if not sinks:
        raise ConfigurationError("at least one audit sink is required")
    checked: list[AuditSink] = []
    for sink in sinks:
        emit = getattr(sink, "emit", None)
        if callable(emit):
            _never_async(emit, type(sink).__name__)
            checked.append(sink)
        elif callable(sink):
            checked.append(CallableSink(sink))
        else:
            raise ConfigurationError(
                f"{type(sink).__name__} is not an audit sink (no emit(), not callable)"
            )
    return tuple(checked)


def _never_async(emit: Callable[..., object], name: str) -> None:
    """Sinks are called on the request path and never awaited: the coroutine of an async one
    would be made and dropped, its event never written and nothing failing. An object is
    async when its ``__call__`` is."""
    call = emit if inspect.isroutine(emit) else type(emit).__call__
    if any(inspect.iscoroutinefunction(f) or inspect.isasyncgenfunction(f) for f in (emit, call)):
        raise ConfigurationError(
            f"{name}: an async audit sink would never run (sinks are called, not awaited):"
            " hand the event to a queue or a task from a sync emit"
        )


def _ran(result: object) -> None:
    """What a sink's ``emit`` returned: a coroutine never runs unless awaited, and nothing
    here awaits it, so the event was not written: a failure of that sink."""
    if isinstance(result, Coroutine):
        result.close()
        raise TypeError("the audit sink returned a coroutine, which never runs: event not written")


def _describe(index: int, sink: object) -> str:
    return f"audit sink #{index} ({type(sink).__qualname__})"


def _enabled_flag(sink: AuditSink) -> Callable[[], bool]:
    if type(sink) is LoggingSink:  # its logger and level never change
        return functools.partial(sink.logger.isEnabledFor, sink.level)
    if type(sink) is OTelSink:  # its flag guards itself
        return sink._listening
    return functools.partial(sink_enabled, sink)


def sink_enabled(sink: AuditSink) -> bool:
    """A sink's ``enabled`` flag; sinks without one always want events."""
    try:
        return bool(getattr(sink, "enabled", True))
    except Exception:  # a broken flag never silences auditing (nor breaks the request)
        return True
