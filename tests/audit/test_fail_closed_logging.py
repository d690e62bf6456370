"""A fail-closed pipeline with a logging sink: an event that logging would drop (its logger
disabled for the level, no handler to receive it) refuses the request, with real handlers."""

from __future__ import annotations

import hashlib
import io
import logging
import logging.handlers
import queue
from collections.abc import Iterator

import pytest

from tests.audit import make_event
from zerotrust import Request
from zerotrust.audit import AuditPipeline, LoggingSink, MemorySink, MultiSink
from zerotrust.config import Settings
from zerotrust.errors import AuditError

API_KEY = "a-test-api-key-0123456789abcdef0123"


@pytest.fixture
def logger(request: pytest.FixtureRequest) -> Iterator[logging.Logger]:
    """A logger of its own below a parent that does not propagate to the root. pytest hands
    its capturing handler to every logger that does not propagate when a test starts, so the
    parent is detached, and that handler removed, during the test itself."""
    parent = logging.getLogger(f"zerotrust.test.closed.{request.node.name}")
    audit = parent.getChild("audit")
    yield audit
    for each in (audit, parent):
        for handler in list(each.handlers):
            each.removeHandler(handler)
        each.setLevel(logging.NOTSET)
    parent.propagate = True


def detach(logger: logging.Logger) -> logging.Logger:
    assert logger.parent is not None
    logger.parent.propagate = False
    for each in (logger, logger.parent):
        for handler in list(each.handlers):
            each.removeHandler(handler)
    return logger


def closed(logger: logging.Logger) -> AuditPipeline:
    return AuditPipeline([LoggingSink(logger)], on_error="closed")


def test_a_disabled_logger_refuses_when_closed(logger: logging.Logger) -> None:
    detach(logger)
    stream = io.StringIO()
    logger.addHandler(logging.StreamHandler(stream))
    logger.setLevel(logging.WARNING)  # INFO, the audit level, is off
    pipeline = closed(logger)
    assert pipeline.enabled  # a closed pipeline never lets callers skip the event
    with pytest.raises(AuditError) as caught:
        pipeline.emit(make_event())
    assert "not enabled for INFO" in str(caught.value.__cause__)
    assert pipeline.failures == 1 and not pipeline.healthy
    # fail open: nothing is written and nothing fails, as before
    opened = AuditPipeline([LoggingSink(logger)])
    assert not opened.enabled
    opened.emit(make_event())
    assert opened.failures == 0 and stream.getvalue() == ""


def test_no_handler_anywhere_refuses_when_closed(logger: logging.Logger) -> None:
    detach(logger)
    logger.setLevel(logging.INFO)
    assert logging.lastResort is not None  # it prints WARNING and up only: it does not count
    pipeline = closed(logger)
    with pytest.raises(AuditError) as caught:
        pipeline.emit(make_event())
    assert "no handler would receive" in str(caught.value.__cause__)
    LoggingSink(logger).emit(make_event())  # outside a closed pipeline: dropped quietly


def test_a_handler_above_the_level_does_not_count(logger: logging.Logger) -> None:
    detach(logger)
    logger.setLevel(logging.INFO)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.ERROR)
    logger.addHandler(handler)
    with pytest.raises(AuditError):
        closed(logger).emit(make_event())
    handler.setLevel(logging.INFO)
    closed(logger).emit(make_event())
    assert stream.getvalue().count("\n") == 1


def test_handlers_are_found_as_logging_finds_them(logger: logging.Logger) -> None:
    """On an ancestor the record propagates to, yes; above a logger that does not
    propagate, no."""
    detach(logger)
    assert logger.parent is not None
    stream = io.StringIO()
    logger.parent.addHandler(logging.StreamHandler(stream))
    logger.setLevel(logging.INFO)
    closed(logger).emit(make_event())
    assert stream.getvalue().count("\n") == 1
    logger.propagate = False
    try:
        with pytest.raises(AuditError):
            closed(logger).emit(make_event())
    finally:
        logger.propagate = True
    assert stream.getvalue().count("\n") == 1


def test_a_wrapped_logging_sink_refuses_too(logger: logging.Logger) -> None:
    detach(logger)
    logger.setLevel(logging.INFO)
    memory = MemorySink()
    pipeline = AuditPipeline([MultiSink(memory, LoggingSink(logger))], on_error="closed")
    with pytest.raises(AuditError):
        pipeline.emit(make_event())
    assert len(memory) == 1  # every sink was tried


def _settings(logger: logging.Logger, on_error: str = "closed") -> Settings:
    digest = hashlib.sha256(API_KEY.encode()).hexdigest()
    return Settings.from_dict(
        {
            "service": "orders",
            "api_keys": {"hashes": {"ci": digest}},
            "policy": {"rules": [{"id": "ci", "from": [{"subjects": ["api-key:ci"]}]}]},
            "audit": {"sinks": ["logging"], "on_error": on_error, "logger": logger.name},
        }
    )


REQUEST = Request(method="GET", route="/x", path="/x", headers={"x-api-key": API_KEY})


def test_a_guard_refuses_what_it_cannot_audit(
    logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    """Built while logging is not configured: a warning at start-up, then 503 per request
    until the audit logger writes somewhere; then requests are served and audited."""
    detach(logger)
    logger.setLevel(logging.WARNING)
    with caplog.at_level(logging.WARNING, logger="zerotrust.config"):
        guard = _settings(logger).build_guard()
    [warning] = [r.getMessage() for r in caplog.records if "audit.on_error" in r.getMessage()]
    assert "not enabled for INFO" in warning and "refused (503)" in warning
    outcome = guard.evaluate(REQUEST)
    assert (outcome.allowed, outcome.status) == (False, 503)
    assert outcome.event is not None and outcome.event.reason == "audit_error"

    logger.setLevel(logging.INFO)  # enabled, but still no handler
    assert guard.evaluate(REQUEST).status == 503
    assert guard.evaluate(REQUEST).status == 503  # a repeat is not served from memory

    stream = io.StringIO()
    logger.addHandler(logging.StreamHandler(stream))
    outcome = guard.evaluate(REQUEST)
    assert outcome.allowed and outcome.event is not None
    assert outcome.event.event_id in stream.getvalue()


def test_no_warning_when_logging_is_ready(
    logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    detach(logger)
    logger.setLevel(logging.INFO)
    logger.addHandler(logging.StreamHandler(io.StringIO()))
    with caplog.at_level(logging.WARNING, logger="zerotrust.config"):
        guard = _settings(logger).build_guard()
    assert not [r for r in caplog.records if "audit.on_error" in r.getMessage()]
    assert guard.evaluate(REQUEST).allowed


def test_the_default_open_guard_still_skips_events_nobody_records(
    logger: logging.Logger,
) -> None:
    detach(logger)
    logger.setLevel(logging.WARNING)
    guard = _settings(logger, on_error="open").build_guard()
    outcome = guard.evaluate(REQUEST)
    assert outcome.allowed and outcome.event is None


def test_a_full_bounded_queue_refuses_when_closed(
    logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    """What docs/audit.md offers for a QueueHandler: a bounded queue that fills (its writer
    stuck or dead) fails on the request's thread, so a closed pipeline refuses."""
    detach(logger)
    logger.setLevel(logging.INFO)
    bounded: queue.Queue[logging.LogRecord] = queue.Queue(maxsize=1)
    logger.addHandler(logging.handlers.QueueHandler(bounded))
    pipeline = closed(logger)
    pipeline.emit(make_event())
    with pytest.raises(AuditError):
        pipeline.emit(make_event())
    assert bounded.qsize() == 1
    capsys.readouterr()  # logging's own report of the failed enqueue
