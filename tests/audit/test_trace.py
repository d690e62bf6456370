from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from zerotrust.audit import (
    TraceIds,
    TraceParent,
    current_trace_ids,
    parse_traceparent,
    trace_ids_for_audit,
)
from zerotrust.audit.trace import MAX_TRACEPARENT_LENGTH

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
VALID = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.fixture
def tracer() -> Iterator[trace.Tracer]:
    provider = TracerProvider(shutdown_on_exit=False)
    yield provider.get_tracer("tests.audit")
    provider.shutdown()


# --- parse_traceparent ----------------------------------------------------------------------


def test_parses_a_version_00_value() -> None:
    parsed = parse_traceparent(VALID)
    assert parsed == TraceParent(version=0, trace_id=TRACE_ID, parent_id=PARENT_ID, flags=1)
    assert parsed.sampled
    assert not parsed.random_trace_id
    assert parsed.to_header() == VALID


@pytest.mark.parametrize(
    ("flags", "sampled", "random"),
    [("00", False, False), ("01", True, False), ("02", False, True), ("03", True, True)],
)
def test_flags(flags: str, sampled: bool, random: bool) -> None:
    parsed = parse_traceparent(f"00-{TRACE_ID}-{PARENT_ID}-{flags}")
    assert parsed is not None
    assert parsed.sampled is sampled
    assert parsed.random_trace_id is random


def test_unknown_flags_are_kept_not_refused() -> None:
    parsed = parse_traceparent(f"00-{TRACE_ID}-{PARENT_ID}-ff")
    assert parsed is not None
    assert parsed.flags == 0xFF


def test_http_optional_whitespace_is_tolerated() -> None:
    assert parse_traceparent(f" \t{VALID}\t ") == parse_traceparent(VALID)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "00",
        VALID.upper(),
        f"00-{TRACE_ID.upper()}-{PARENT_ID}-01",
        f"00-{TRACE_ID}-{PARENT_ID.upper()}-01",
        f"0A-{TRACE_ID}-{PARENT_ID}-01",
        f"00-{TRACE_ID}-{PARENT_ID}-0A",
        f"00-{TRACE_ID[:-1]}-{PARENT_ID}-01",
        f"00-{TRACE_ID}0-{PARENT_ID}-01",
        f"00-{TRACE_ID}-{PARENT_ID[:-1]}-01",
        f"00-{TRACE_ID}-{PARENT_ID}0-01",
        f"00-{TRACE_ID}-{PARENT_ID}-1",
        f"00-{TRACE_ID}-{PARENT_ID}-001",
        f"0-{TRACE_ID}-{PARENT_ID}-01",
        f"000-{TRACE_ID}-{PARENT_ID}-01",
        f"00_{TRACE_ID}-{PARENT_ID}-01",
        f"00-{TRACE_ID}_{PARENT_ID}-01",
        f"00-{TRACE_ID}-{PARENT_ID}_01",
        f"00--{TRACE_ID}-{PARENT_ID}-01",
        f"00-{TRACE_ID}-{PARENT_ID}-01-",
        f"00-{TRACE_ID}-{PARENT_ID}-01-extra",
        f"00-{TRACE_ID}-{PARENT_ID}-01x",
        f"ff-{TRACE_ID}-{PARENT_ID}-01",
        f"0g-{TRACE_ID}-{PARENT_ID}-01",
        f"00-{'0' * 32}-{PARENT_ID}-01",
        f"00-{TRACE_ID}-{'0' * 16}-01",
        f"00-{TRACE_ID}-{PARENT_ID}-01\n",
        f"00-{TRACE_ID}-{PARENT_ID}-01,00-{TRACE_ID}-{PARENT_ID}-01",
        f"00-{TRACE_ID[:-1]}\u0661-{PARENT_ID}-01",  # a non-ASCII digit
        f"00-{TRACE_ID}-{PARENT_ID}-01 x",
    ],
)
def test_invalid_values(value: str) -> None:
    assert parse_traceparent(value) is None


@pytest.mark.parametrize(
    "value",
    [
        f"01-{TRACE_ID}-{PARENT_ID}-01",
        f"cc-{TRACE_ID}-{PARENT_ID}-01",
        f"cc-{TRACE_ID}-{PARENT_ID}-01-what-the-future-will-bring",
        f"fe-{TRACE_ID}-{PARENT_ID}-01-",
    ],
)
def test_future_versions_are_parsed_forward_compatibly(value: str) -> None:
    parsed = parse_traceparent(value)
    assert parsed is not None
    assert (parsed.trace_id, parsed.parent_id, parsed.flags) == (TRACE_ID, PARENT_ID, 1)
    assert parsed.version == int(value[:2], 16)
    assert parsed.to_header() == VALID  # we propagate the version we know


@pytest.mark.parametrize(
    "value",
    [
        f"cc-{TRACE_ID}-{PARENT_ID}-01x",
        f"cc-{TRACE_ID}-{PARENT_ID}-01.extra",
        f"cc-{TRACE_ID}-{PARENT_ID}-0",
        f"cc-{TRACE_ID.upper()}-{PARENT_ID}-01-x",
        f"cc-{'0' * 32}-{PARENT_ID}-01-x",
    ],
)
def test_future_versions_still_need_a_valid_prefix(value: str) -> None:
    assert parse_traceparent(value) is None


def test_length_is_bounded() -> None:
    prefix = f"cc-{TRACE_ID}-{PARENT_ID}-01-"
    at_limit = prefix + "x" * (MAX_TRACEPARENT_LENGTH - len(prefix))
    assert parse_traceparent(at_limit) is not None
    assert parse_traceparent(at_limit + "x") is None


def test_non_str_is_not_a_traceparent() -> None:
    assert parse_traceparent(VALID.encode()) is None  # type: ignore[arg-type]


# --- current_trace_ids ----------------------------------------------------------------------


def test_no_active_span_means_no_ids() -> None:
    assert current_trace_ids() is None


def test_active_span_ids(tracer: trace.Tracer) -> None:
    with tracer.start_as_current_span("request") as span:
        context = span.get_span_context()
        assert current_trace_ids() == (
            format(context.trace_id, "032x"),
            format(context.span_id, "016x"),
        )


def test_an_unsampled_local_span_still_has_ids() -> None:
    provider = TracerProvider(sampler=ALWAYS_OFF, shutdown_on_exit=False)
    with provider.get_tracer("tests.audit").start_as_current_span("request") as span:
        assert not span.is_recording()
        ids = current_trace_ids()
        assert ids is not None
        assert ids[0] == format(span.get_span_context().trace_id, "032x")
    provider.shutdown()


def test_a_remote_context_is_not_ours() -> None:
    remote = SpanContext(
        int(TRACE_ID, 16), int(PARENT_ID, 16), is_remote=True, trace_flags=TraceFlags(1)
    )
    with trace.use_span(NonRecordingSpan(remote)):
        assert current_trace_ids() is None


def test_an_invalid_context_is_ignored() -> None:
    with trace.use_span(NonRecordingSpan(trace.INVALID_SPAN_CONTEXT)):
        assert current_trace_ids() is None


# --- trace_ids_for_audit --------------------------------------------------------------------


@pytest.mark.parametrize("authenticated", [True, False])
def test_the_active_span_wins_and_is_trusted(tracer: trace.Tracer, authenticated: bool) -> None:
    with tracer.start_as_current_span("request"):
        own = current_trace_ids()
        assert own is not None
        ids = trace_ids_for_audit([VALID], caller_authenticated=authenticated)
    assert ids == TraceIds(own[0], own[1], True)
    assert ids.trace_id != TRACE_ID


@pytest.mark.parametrize("authenticated", [True, False])
def test_incoming_traceparent_is_trusted_only_from_authenticated_callers(
    authenticated: bool,
) -> None:
    ids = trace_ids_for_audit([VALID], caller_authenticated=authenticated)
    assert ids == TraceIds(TRACE_ID, PARENT_ID, authenticated)
    trace_id, span_id, trusted = ids  # plain tuple unpacking works
    assert (trace_id, span_id, trusted) == (TRACE_ID, PARENT_ID, authenticated)


def test_remote_context_falls_back_to_the_header_rules() -> None:
    remote = SpanContext(int(TRACE_ID, 16), int(PARENT_ID, 16), is_remote=True)
    with trace.use_span(NonRecordingSpan(remote)):
        ids = trace_ids_for_audit([VALID], caller_authenticated=False)
    assert ids == TraceIds(TRACE_ID, PARENT_ID, False)


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [VALID, VALID],
        [VALID, f"00-{'1' * 32}-{PARENT_ID}-01"],
        ["garbage"],
        [VALID.upper()],
    ],
)
@pytest.mark.parametrize("authenticated", [True, False])
def test_no_single_valid_header_means_no_ids(headers: list[str], authenticated: bool) -> None:
    ids = trace_ids_for_audit(headers, caller_authenticated=authenticated)
    assert ids == TraceIds(None, None, False)


@pytest.mark.parametrize(
    ("flags", "sent"), [("ff", "03"), ("f9", "01"), ("02", "02"), ("00", "00")]
)
def test_to_header_sends_only_the_flags_it_defines(flags: str, sent: str) -> None:
    # W3C Trace Context: flags this version does not define are sent as zero
    parsed = parse_traceparent(f"00-{TRACE_ID}-{PARENT_ID}-{flags}")
    assert parsed is not None and parsed.flags == int(flags, 16)  # read as sent
    assert parsed.to_header() == f"00-{TRACE_ID}-{PARENT_ID}-{sent}"
    future = parse_traceparent(f"cc-{TRACE_ID}-{PARENT_ID}-{flags}-more")
    assert future is not None and future.to_header() == f"00-{TRACE_ID}-{PARENT_ID}-{sent}"


@pytest.mark.parametrize(
    "value",
    [f"\r{VALID}", f"{VALID}\r\n", f"\u00a0{VALID}", f"{VALID}\v", f"X{VALID}", f"{VALID}X"],
)
def test_only_spaces_and_tabs_are_trimmed(value: str) -> None:
    """HTTP optional whitespace is SP and HTAB (RFC 9110 section 5.6.3): nothing else around
    the value is stripped before it is parsed."""
    assert parse_traceparent(value) is None


def test_a_parsed_traceparent_is_immutable() -> None:
    parsed = parse_traceparent(VALID)
    assert parsed is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.trace_id = "1" * 32  # type: ignore[misc]
