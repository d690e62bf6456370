from __future__ import annotations

import datetime as dt
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
