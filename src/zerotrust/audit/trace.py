"""Trace context for audit events: our own span's ids, or the caller's W3C ``traceparent``.

An audit event carries a trace id so it can be joined with the traces of the same request.
The id is only as trustworthy as its source. Our own active span is trusted. An incoming
``traceparent`` header is whatever the caller chose to send: from an authenticated caller
it is taken as trusted, from anyone else it is still recorded (it helps correlation) but
flagged ``trace_trusted=False``, and the request pipeline must not parent our spans on it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple, final

from opentelemetry import trace as otel_trace

__all__ = [
    "MAX_TRACEPARENT_LENGTH",
    "TraceIds",
    "TraceParent",
    "current_trace_ids",
    "parse_traceparent",
    "trace_ids_for_audit",
]

#: Longer ``traceparent`` values are ignored (version 00 is exactly 55 characters).
MAX_TRACEPARENT_LENGTH: Final = 512

_TRACEPARENT = re.compile(
    r"(?P<version>[0-9a-f]{2})-(?P<trace_id>[0-9a-f]{32})-(?P<parent_id>[0-9a-f]{16})"
    r"-(?P<flags>[0-9a-f]{2})(?P<rest>-.*)?"
)
_ZERO_TRACE_ID = "0" * 32
_ZERO_SPAN_ID = "0" * 16


@final
@dataclass(frozen=True, slots=True)
class TraceParent:
    """A parsed W3C ``traceparent``: every field already validated, hex in lowercase."""

    version: int
    trace_id: str
    parent_id: str
    flags: int

    @property
    def sampled(self) -> bool:
        """The caller's ``sampled`` flag (bit 0)."""
        return bool(self.flags & 0x01)

    @property
    def random_trace_id(self) -> bool:
        """The Trace Context level 2 ``random`` flag (bit 1)."""
        return bool(self.flags & 0x02)

    def to_header(self) -> str:
        """This context as a version 00 ``traceparent`` value: the flags it defines (``sampled``
        and ``random``) are kept, the others are sent as zero, as the specification requires."""
        return f"00-{self.trace_id}-{self.parent_id}-{self.flags & 0x03:02x}"


class TraceIds(NamedTuple):
    """The trace ids to record in an audit event, and whether they can be trusted."""

    trace_id: str | None
    span_id: str | None
    trusted: bool


def parse_traceparent(value: str) -> TraceParent | None:
    """Parse one ``traceparent`` header value strictly; ``None`` when it is invalid.

    Follows W3C Trace Context levels 1 and 2: lowercase hex only, version ``ff`` and
    all-zero trace or parent ids are invalid, version ``00`` is exactly 55 characters,
    and a later version may carry more fields after a ``-`` (they are ignored).
    Surrounding spaces and tabs (HTTP optional whitespace) are tolerated; values longer
    than :data:`MAX_TRACEPARENT_LENGTH` are not parsed.
    """
    if not isinstance(value, str) or len(value) > MAX_TRACEPARENT_LENGTH:
        return None
    match = _TRACEPARENT.fullmatch(value.strip(" \t"))
    if match is None:
        return None
    version, trace_id, parent_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    if trace_id == _ZERO_TRACE_ID or parent_id == _ZERO_SPAN_ID:
        return None
    return TraceParent(int(version, 16), trace_id, parent_id, int(flags, 16))


def current_trace_ids() -> tuple[str, str] | None:
    """``(trace_id, span_id)`` of the active span as lowercase hex, or ``None``.

    Only a valid context of our own counts: a *remote* span context (one extracted from
    an incoming request and made current without starting a local span) is the caller's.
    """
    context = otel_trace.get_current_span().get_span_context()
    if not context.is_valid or context.is_remote:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def trace_ids_for_audit(
    traceparent_header_values: Sequence[str], *, caller_authenticated: bool
) -> TraceIds:
    """The trace ids for an audit event, with their ``trusted`` flag.

    1. The active span's ids, trusted.
    2. Otherwise the incoming ``traceparent``, when there is exactly one valid header
       value (several values are ambiguous and ignored): trusted only when the caller was
       authenticated. ``span_id`` is then the caller's span (the header's parent id).
    3. Otherwise no ids, untrusted.

    An untrusted context is recorded for correlation only; it must not become the
    parent of our spans.
    """
    own = current_trace_ids()
    if own is not None:
        return TraceIds(own[0], own[1], True)
    if len(traceparent_header_values) == 1:
        parsed = parse_traceparent(traceparent_header_values[0])
        if parsed is not None:
            return TraceIds(parsed.trace_id, parsed.parent_id, bool(caller_authenticated))
    return TraceIds(None, None, False)
