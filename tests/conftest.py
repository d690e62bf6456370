from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from zerotrust import FixedClock
from zerotrust.dev import DevCA


@pytest.fixture(scope="session")
def ca() -> DevCA:
    """A root-only dev CA for example.org."""
    return DevCA.create("example.org")


@pytest.fixture(scope="session")
def ca_with_intermediate() -> DevCA:
    return DevCA.create("example.org", intermediate=True)


@pytest.fixture(scope="session")
def other_ca() -> DevCA:
    """A CA for a second trust domain, other.org."""
    return DevCA.create("other.org")


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(dt.datetime.now(dt.timezone.utc))


@pytest.fixture
def own_tracer() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    """A tracer provider of our own (not the global one) and the spans it finished."""
    provider = TracerProvider()
    spans = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    try:
        yield provider, spans
    finally:
        provider.shutdown()


class _UnhandledInCallbacks(logging.Handler):
    """asyncio's reports of an exception nothing handled in a callback or a connection
    handler: a server's defect, even when the test's own checks pass."""

    REPORTS = ("Exception in callback", "Unhandled exception in client_connected_cb")

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.found: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        # grpc.aio's completion queue reader fires on a loop that asyncio.run already closed
        # (a grpc quirk of several event loops in one process, not a server's defect)
        if message.startswith(self.REPORTS) and "PollerCompletionQueue" not in message:
            error = record.exc_info[1] if record.exc_info else None
            self.found.append(f"{message.splitlines()[0]}: {error!r}")


@pytest.fixture(autouse=True)
def _no_unhandled_exceptions_in_callbacks() -> Iterator[None]:
    handler = _UnhandledInCallbacks()
    logger = logging.getLogger("asyncio")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
    assert not handler.found, handler.found
