from __future__ import annotations

import json
import logging
import re
import threading
from typing import Any, NoReturn

import pytest

from tests.audit import make_event
from zerotrust.audit import (
    AuditEvent,
    AuditPipeline,
    AuditSink,
    CallableSink,
    LoggingSink,
    MemorySink,
    MultiSink,
    OTelSink,
)
from zerotrust.errors import AuditError, ConfigurationError, KeysUnavailable

ERRORS_LOGGER = "zerotrust.audit.errors"


class FlakySink:
    """Fails while ``failing`` is set; counts calls."""

    def __init__(self, exc: BaseException | None = None) -> None:
        self.exc = exc or RuntimeError("disk full while writing user-42")
        self.failing = True
        self.calls = 0

    def emit(self, event: AuditEvent, /) -> None:
        self.calls += 1
        if self.failing:
            raise self.exc


def test_every_sink_satisfies_the_protocol() -> None:
    sinks: list[object] = [
        LoggingSink(),
        MemorySink(),
        CallableSink(print),
        MultiSink(MemorySink()),
        OTelSink(),
        AuditPipeline([MemorySink()]),
    ]
    for sink in sinks:
        assert isinstance(sink, AuditSink)
    assert not isinstance(object(), AuditSink)


# --- LoggingSink ----------------------------------------------------------------------------


def test_logging_sink_writes_one_json_line(caplog: pytest.LogCaptureFixture) -> None:
    event = make_event(route="/100%/{id}")
    with caplog.at_level(logging.INFO, logger="zerotrust.audit"):
        LoggingSink().emit(event)
    [record] = caplog.records
    assert record.name == "zerotrust.audit"
    assert record.levelno == logging.INFO
    message = record.getMessage()
    assert "\n" not in message
    assert message == event.to_json()
    assert json.loads(message) == event.to_dict()
    assert record.zerotrust_audit == event.to_dict()  # type: ignore[attr-defined]


def test_logging_sink_takes_a_logger_and_a_level(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("tests.audit.custom")
    sink = LoggingSink(logger, level=logging.WARNING)
    assert sink.logger is logger
    assert sink.level == logging.WARNING
    assert "tests.audit.custom" in repr(sink)
    with caplog.at_level(logging.INFO, logger="tests.audit.custom"):
        sink.emit(make_event())
    assert [r.levelno for r in caplog.records] == [logging.WARNING]


@pytest.mark.parametrize("kwargs", [{"logger": 3}, {"level": "INFO"}, {"level": 2.0}])
def test_logging_sink_rejects_bad_configuration(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        LoggingSink(**kwargs)


def test_logging_sink_serializes_nothing_when_disabled(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []

    def spy(name: str) -> Any:
        def called(self: AuditEvent) -> NoReturn:
            calls.append(name)
            raise AssertionError(f"{name} called on the disabled path")

        return called

    monkeypatch.setattr(AuditEvent, "to_dict", spy("to_dict"))
    monkeypatch.setattr(AuditEvent, "to_json", spy("to_json"))
    event = make_event()
    with caplog.at_level(logging.WARNING, logger="zerotrust.audit"):
        LoggingSink().emit(event)  # INFO < WARNING
        LoggingSink(level=logging.DEBUG).emit(event)
    assert calls == []
    assert caplog.records == []


def test_logging_sink_serializes_once_when_enabled(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[AuditEvent] = []
    original = AuditEvent.to_dict

    def counting(self: AuditEvent) -> dict[str, Any]:
        calls.append(self)
        return original(self)

    monkeypatch.setattr(AuditEvent, "to_dict", counting)
    event = make_event()
    with caplog.at_level(logging.INFO, logger="zerotrust.audit"):
        LoggingSink().emit(event)
    assert calls == [event]
    assert len(caplog.records) == 1


# --- MemorySink, CallableSink, MultiSink -----------------------------------------------------


def test_memory_sink_keeps_the_latest_events() -> None:
    sink = MemorySink(max_events=3)
    events = [make_event(event_id=f"{i:032x}") for i in range(5)]
    for event in events:
        sink.emit(event)
    assert sink.events == events[2:]
    assert len(sink) == 3
    assert list(sink) == events[2:]
    assert sink.last is events[4]
    assert sink.max_events == 3
    assert repr(sink) == "MemorySink(3/3 events)"
    sink.events.clear()  # a copy: the sink is unaffected
    assert len(sink) == 3
    sink.clear()
    assert sink.events == []
    with pytest.raises(IndexError, match="no audit event"):
        _ = sink.last


def test_memory_sink_find() -> None:
    sink = MemorySink()
    allowed = make_event()
    denied = make_event(decision="deny", reason="no_rule_matched", rule_id=None, status=403)
    sink.emit(allowed)
    sink.emit(denied)
    assert sink.find(decision="deny") == [denied]
    assert sink.find(decision="deny", status=403, rule_id=None) == [denied]
    assert sink.find(service="orders") == [allowed, denied]
    assert sink.find(decision="deny", status=200) == []
    assert sink.find() == [allowed, denied]
    with pytest.raises(TypeError, match="desicion"):
        sink.find(desicion="deny")


@pytest.mark.parametrize("max_events", [0, -1, 1.5, "10"])
def test_memory_sink_bound_must_be_positive(max_events: Any) -> None:
    with pytest.raises(ConfigurationError):
        MemorySink(max_events=max_events)


def test_callable_sink() -> None:
    received: list[AuditEvent] = []
    sink = CallableSink(received.append)
    event = make_event()
    sink.emit(event)
    assert received == [event]
    assert "CallableSink(" in repr(sink)
    with pytest.raises(ConfigurationError):
        CallableSink("not callable")  # type: ignore[arg-type]


def test_multi_sink_fans_out_in_order() -> None:
    order: list[str] = []
    first, second = MemorySink(), MemorySink()
    sink = MultiSink(
        first,
        CallableSink(lambda e: order.append("a")),
        second,
        CallableSink(lambda e: order.append("b")),
    )
    event = make_event()
    sink.emit(event)
    assert first.events == [event]
    assert second.events == [event]
    assert order == ["a", "b"]
    assert len(sink.sinks) == 4
    assert repr(sink).startswith("MultiSink(MemorySink(")


def test_multi_sink_calls_every_sink_then_raises_the_first_error() -> None:
    bad1, bad2, good = FlakySink(ValueError("one")), FlakySink(KeyError("two")), MemorySink()
    sink = MultiSink(bad1, good, bad2)
    with pytest.raises(ValueError, match="one"):
        sink.emit(make_event())
    assert bad1.calls == bad2.calls == 1
    assert len(good) == 1


@pytest.mark.parametrize("sinks", [(), (object(),), (MemorySink(), "sink")])
def test_multi_sink_needs_sinks(sinks: tuple[Any, ...]) -> None:
    with pytest.raises(ConfigurationError):
        MultiSink(*sinks)


# --- AuditPipeline --------------------------------------------------------------------------


@pytest.mark.parametrize("sink", [MemorySink(), LoggingSink()], ids=["memory", "logging"])
def test_a_pipeline_given_one_sink_instead_of_a_list_says_so(sink: Any) -> None:
    # a MemorySink is iterable (its events): it was taken for an empty list of sinks, and a
    # LoggingSink failed with a TypeError
    with pytest.raises(ConfigurationError, match=re.escape("a list of sinks: [sink]")):
        AuditPipeline(sink)


def healthy(pipeline: AuditPipeline) -> bool:
    return pipeline.healthy


def error_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == ERRORS_LOGGER]


def test_pipeline_emits_to_every_sink() -> None:
    first, second = MemorySink(), MemorySink()
    pipeline = AuditPipeline(iter([first, second]))
    event = make_event()
    pipeline.emit(event)
    assert first.events == second.events == [event]
    assert pipeline.failures == 0
    assert healthy(pipeline)
    assert pipeline.on_error == "open"
    assert pipeline.sinks == (first, second)


def test_fail_open_counts_and_logs_once_per_outage(caplog: pytest.LogCaptureFixture) -> None:
    flaky, memory = FlakySink(), MemorySink()
    pipeline = AuditPipeline([flaky, memory])
    event = make_event()
    with caplog.at_level(logging.INFO, logger=ERRORS_LOGGER):
        for _ in range(5):
            pipeline.emit(event)
    assert pipeline.failures == 5
    assert not healthy(pipeline)
    assert len(memory) == 5  # the healthy sink kept receiving events
    [logged] = error_records(caplog)
    assert logged.levelno == logging.ERROR
    message = logged.getMessage()
    assert "audit sink #0 (FlakySink)" in message
    assert "RuntimeError" in message

    caplog.clear()
    flaky.failing = False
    with caplog.at_level(logging.INFO, logger=ERRORS_LOGGER):
        pipeline.emit(event)
        pipeline.emit(event)
    assert healthy(pipeline)
    [recovered] = error_records(caplog)
    assert recovered.levelno == logging.INFO
    assert "recovered" in recovered.getMessage()

    caplog.clear()
    flaky.failing = True
    with caplog.at_level(logging.INFO, logger=ERRORS_LOGGER):
        pipeline.emit(event)
        pipeline.emit(event)
    assert pipeline.failures == 7
    assert [r.levelno for r in error_records(caplog)] == [logging.ERROR]


def test_failure_logs_never_carry_the_event(caplog: pytest.LogCaptureFixture) -> None:
    pipeline = AuditPipeline([FlakySink()])
    event = make_event()
    with caplog.at_level(logging.INFO, logger=ERRORS_LOGGER):
        pipeline.emit(event)
    for record in error_records(caplog):
        text = record.getMessage()
        for value in (event.subject, event.spiffe_id, event.event_id, "user-42"):
            assert value not in text  # type: ignore[operator]
        assert record.exc_info is None
        assert not hasattr(record, "zerotrust_audit")


def test_failure_details_are_available_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    pipeline = AuditPipeline([FlakySink()])
    with caplog.at_level(logging.DEBUG, logger=ERRORS_LOGGER):
        pipeline.emit(make_event())
    debug = [r for r in error_records(caplog) if r.levelno == logging.DEBUG]
    assert len(debug) == 1
    assert debug[0].exc_info is not None


def test_fail_closed_raises_audit_error_after_trying_every_sink() -> None:
    flaky, memory = FlakySink(), MemorySink()
    pipeline = AuditPipeline([flaky, memory], on_error="closed")
    with pytest.raises(AuditError) as raised:
        pipeline.emit(make_event())
    assert len(memory) == 1
    assert pipeline.failures == 1
    assert isinstance(raised.value.__cause__, RuntimeError)
    assert "user-42" not in str(raised.value)
    assert raised.value.http_status == 503
    flaky.failing = False
    pipeline.emit(make_event())  # recovers without raising
    assert healthy(pipeline)


@pytest.mark.parametrize(
    "exc",
    [ValueError("x"), KeyError("x"), OSError("x"), TypeError("x"), KeysUnavailable(), AuditError()],
)
def test_sink_exceptions_never_leak(exc: Exception) -> None:
    AuditPipeline([FlakySink(exc)]).emit(make_event())  # open: swallowed and counted
    with pytest.raises(AuditError):
        AuditPipeline([FlakySink(exc)], on_error="closed").emit(make_event())


def test_interrupts_are_not_swallowed() -> None:
    with pytest.raises(KeyboardInterrupt):
        AuditPipeline([FlakySink(KeyboardInterrupt())]).emit(make_event())


@pytest.mark.parametrize(
    ("sinks", "on_error"),
    [([], "open"), ([object()], "open"), ([MemorySink()], "ignore"), ([MemorySink()], None)],
)
def test_pipeline_configuration_is_checked(sinks: list[Any], on_error: Any) -> None:
    with pytest.raises(ConfigurationError):
        AuditPipeline(sinks, on_error=on_error)


def test_failure_count_is_exact_under_threads() -> None:
    pipeline = AuditPipeline([FlakySink()])
    event = make_event()

    def work() -> None:
        for _ in range(250):
            pipeline.emit(event)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert pipeline.failures == 2000


def test_fail_closed_chains_the_first_failure() -> None:
    first, second = FlakySink(ValueError("first")), FlakySink(KeyError("second"))
    pipeline = AuditPipeline([first, second], on_error="closed")
    with pytest.raises(AuditError, match="ValueError") as raised:
        pipeline.emit(make_event())
    assert isinstance(raised.value.__cause__, ValueError)
    assert second.calls == 1
    assert pipeline.failures == 2
    assert repr(pipeline) == f"AuditPipeline([{first!r}, {second!r}], on_error='closed')"


def test_enabled_follows_the_sinks_and_the_log_level(caplog: pytest.LogCaptureFixture) -> None:
    class Quiet(MemorySink):
        listening = False

        @property
        def enabled(self) -> bool:
            return self.listening

    class Broken(MemorySink):
        @property
        def enabled(self) -> bool:
            raise RuntimeError("flag")

    logs, quiet = LoggingSink(), Quiet()
    with caplog.at_level(logging.WARNING, logger="zerotrust.audit"):
        for combined in (AuditPipeline([logs, quiet]), MultiSink(logs, quiet)):
            assert logs.enabled is False and combined.enabled is False
            quiet.listening = True
            assert combined.enabled is True  # asked again on every request
            quiet.listening = False
        assert AuditPipeline([logs, MemorySink()]).enabled  # no flag: always listening
        assert MultiSink(Broken()).enabled  # a broken flag never silences auditing
    with caplog.at_level(logging.INFO, logger="zerotrust.audit"):
        assert AuditPipeline([logs, quiet]).enabled and MultiSink(logs).enabled
        assert logs.enabled is True


def test_logging_sink_records_go_through_the_loggers_filters_and_handlers() -> None:
    logger = logging.getLogger("zerotrust.audit.test-records")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    seen: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    handler = Collect()
    logger.addHandler(handler)
    try:
        sink = LoggingSink(logger, level=logging.INFO)
        event = make_event()
        sink.emit(event)
        (record,) = seen
        assert (record.name, record.levelno, record.funcName) == (logger.name, 20, "emit")
        assert record.getMessage() == event.to_json() and record.args == ()
        assert record.zerotrust_audit == event.to_dict()  # type: ignore[attr-defined]
        logger.addFilter(lambda r: False)  # a filter on the logger still applies
        sink.emit(event)
        assert len(seen) == 1
    finally:
        logger.removeHandler(handler)
        logger.filters.clear()


def test_a_logging_handler_that_cannot_write_fails_the_sink(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """logging handlers catch their own write errors (and print them); the sink sees the
    failure all the same, so a required ("closed") pipeline refuses instead of losing events."""
    import io
    import logging

    class Full(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError(28, "No space left on device")

    logger = logging.getLogger("zerotrust.test.full-disk")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    broken = logging.StreamHandler(Full())
    logger.addHandler(broken)
    try:
        sink = LoggingSink(logger)
        with pytest.raises(AuditError, match="could not write"):
            sink.emit(make_event())
        pipeline = AuditPipeline([sink], on_error="closed")
        with pytest.raises(AuditError):
            pipeline.emit(make_event())
        assert not pipeline.healthy
        logger.removeHandler(broken)
        working = io.StringIO()
        logger.addHandler(logging.StreamHandler(working))
        sink.emit(make_event())  # a handler that writes: no failure
        assert working.getvalue().count("\n") == 1
    finally:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
    capsys.readouterr()  # logging's own report of the failed write


def test_a_plain_callable_is_a_sink_wherever_sinks_are_taken() -> None:
    # "any callable": Guard(audit=fn), Guard(audit=[fn, sink]) and AuditPipeline([fn])
    from zerotrust import Authenticator, Callers, Guard, Policy, Request, Rule, TokenVerifier
    from zerotrust.tokens import PrivateJWK, TokenIssuer

    seen: list[AuditEvent] = []
    issuer = TokenIssuer(PrivateJWK.generate("ES256"), issuer="https://issuer.example")
    verifier = TokenVerifier(
        issuer="https://issuer.example", audience="api", keys=issuer.jwks(), algorithms=["ES256"]
    )
    policy = Policy([Rule(id="any", callers=[Callers(subjects=["*"])])])
    memory = MemorySink()
    for audit in (seen.append, [seen.append, memory]):
        guard = Guard(authenticator=Authenticator(tokens=verifier), policy=policy, audit=audit)
        token = issuer.issue(subject="svc", audience="api")
        assert guard.evaluate(Request(headers={"authorization": f"Bearer {token}"})).allowed
    assert [e.decision for e in seen] == ["allow", "allow"] and memory.last is not None
    pipeline = AuditPipeline([seen.append])
    assert isinstance(pipeline.sinks[0], CallableSink)


def test_a_failing_handler_of_a_parent_logger_fails_the_sink(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Handlers usually sit on a parent (often the root) logger: the record propagates there,
    and a write failure there fails the sink too. Logging's own report of it still appears."""
    import io

    class Full(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError(28, "No space left on device")

    parent = logging.getLogger("zerotrust.test.parent")
    parent.propagate = False
    broken = logging.StreamHandler(Full())
    parent.addHandler(broken)
    child = logging.getLogger("zerotrust.test.parent.audit")
    child.setLevel(logging.INFO)
    try:
        with pytest.raises(AuditError, match="could not write"):
            LoggingSink(child).emit(make_event())
        assert "Logging error" in capsys.readouterr().err
    finally:
        parent.removeHandler(broken)
        parent.propagate = True


def test_a_watched_handler_failing_outside_an_audit_event_behaves_as_logging_does(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Once a sink watches a handler, ordinary records through it are unaffected: a failed
    write is reported by logging and the logging call returns, as it would without zerotrust.
    The handler is wrapped once, however many events pass."""
    import io

    class Flaky(io.StringIO):
        full = False

        def write(self, text: str) -> int:
            if self.full:
                raise OSError(28, "No space left on device")
            return super().write(text)

    stream = Flaky()
    logger = logging.getLogger("zerotrust.test.shared-handler")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    try:
        sink = LoggingSink(logger)
        sink.emit(make_event())
        wrapped = handler.handleError
        for _ in range(3):
            sink.emit(make_event())
        assert handler.handleError is wrapped
        stream.full = True
        logger.info("an ordinary record")  # no exception: logging reports it and carries on
        assert "Logging error" in capsys.readouterr().err
        with pytest.raises(AuditError):
            sink.emit(make_event())
    finally:
        logger.removeHandler(handler)
    capsys.readouterr()


def test_a_memory_sink_may_keep_a_single_event() -> None:
    sink = MemorySink(max_events=1)
    first, second = make_event(), make_event()
    sink.emit(first)
    sink.emit(second)
    assert sink.events == [second] and sink.max_events == 1
    assert MemorySink().max_events == 10_000


# --- async sinks: emit is called, never awaited ----------------------------------------------


async def _send(event: AuditEvent) -> None:  # an async "sink": nothing here would await it
    raise AssertionError("never runs")


class _AsyncEmit:
    async def emit(self, event: AuditEvent, /) -> None:
        raise AssertionError("never runs")


class _AsyncDunderCall:
    async def __call__(self, event: AuditEvent) -> None:
        raise AssertionError("never runs")


@pytest.mark.parametrize(
    "build",
    [
        lambda: AuditPipeline([_send], on_error="closed"),
        lambda: AuditPipeline([_AsyncEmit()]),
        lambda: MultiSink(MemorySink(), _AsyncEmit()),
        lambda: CallableSink(_send),
        lambda: AuditPipeline([_AsyncDunderCall()], on_error="closed"),
        lambda: CallableSink(_AsyncDunderCall()),
    ],
    ids=["callable", "emit", "multi", "callable-sink", "async-call", "async-call-sink"],
)
def test_an_async_sink_is_refused(build: Any) -> None:
    # its coroutine would be created and dropped: the event never written, nothing failing
    with pytest.raises(ConfigurationError, match="async"):
        build()


class _AsyncCall:
    """An async callable that no signature check recognises as one."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, event: AuditEvent) -> Any:
        self.calls += 1
        return _send(event)


class _ReturnsCoroutine:
    def emit(self, event: AuditEvent, /) -> Any:
        return _send(event)


@pytest.mark.parametrize(
    "sink",
    [CallableSink(_AsyncCall()), _ReturnsCoroutine(), MultiSink(_ReturnsCoroutine())],
    ids=["callable", "emit", "multi"],
)
def test_a_sink_that_returns_a_coroutine_has_failed(sink: Any) -> None:
    """A coroutine nobody awaits never runs: the event was not written. A required audit
    refuses, an optional one counts the failure; the coroutine is closed (no warning)."""
    memory = MemorySink()
    closed = AuditPipeline([sink, memory], on_error="closed")
    with pytest.raises(AuditError) as raised:
        closed.emit(make_event())
    assert isinstance(raised.value.__cause__, TypeError)
    assert closed.failures == 1 and not closed.healthy and len(memory) == 1
    opened = AuditPipeline([sink])
    opened.emit(make_event())
    assert opened.failures == 1 and not opened.healthy


@pytest.mark.parametrize("on_error", ["open", "closed"])
def test_a_handler_that_raises_fails_its_sink_not_the_report_of_it(on_error: str) -> None:
    """The report of a failed sink goes to ``zerotrust.audit.errors``, whose records reach the
    handlers of ``zerotrust.audit``: there the failing handler raised again, from inside the
    pipeline's own error handling, so the exception left the pipeline as itself (whatever
    ``on_error`` said) and the sinks after the failing one missed the event."""

    class Shipper(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            raise ConnectionError("log shipper down")

    audit = logging.getLogger("zerotrust.audit")
    level, shipper = audit.level, Shipper()
    audit.setLevel(logging.INFO)
    audit.addHandler(shipper)
    memory = MemorySink()
    pipeline = AuditPipeline([LoggingSink(), memory], on_error=on_error)  # type: ignore[arg-type]
    try:
        for expected in (1, 2):
            if on_error == "closed":
                with pytest.raises(AuditError):
                    pipeline.emit(make_event())
            else:
                pipeline.emit(make_event())
            assert len(memory.events) == expected  # every sink is tried
            assert pipeline.failures == expected and not pipeline.healthy
    finally:
        audit.removeHandler(shipper)
        audit.setLevel(level)
