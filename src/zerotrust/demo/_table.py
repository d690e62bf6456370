"""Plain-text output of the demo: styles (colour only on a terminal) and the audit table."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterable, Sequence
from typing import TextIO

from zerotrust.audit import AuditEvent

WIDTH = 120
_CODES = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "cyan": "36"}
_COLUMNS = ("time", "service", "caller", "operation", "decision", "reason", "trace")


def wants_color(stream: TextIO, choice: str) -> bool:
    """``always``/``never``, or ``auto``: a terminal, and ``NO_COLOR`` unset."""
    if choice != "auto":
        return choice == "always"
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and not os.environ.get("NO_COLOR")


def _can_encode(stream: TextIO, text: str) -> bool:
    try:
        text.encode(getattr(stream, "encoding", None) or "ascii")
    except (LookupError, UnicodeEncodeError):
        return False
    return True


class Output:
    """Where the demo writes: line by line, flushed, safe to share between threads."""

    def __init__(self, stream: TextIO | None = None, *, color: str = "auto") -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.color = wants_color(self.stream, color)
        self.arrow = "→" if _can_encode(self.stream, "→") else "->"
        self._lock = threading.Lock()

    def style(self, text: str, *names: str) -> str:
        if not self.color or not names:
            return text
        codes = ";".join(_CODES[name] for name in names)
        return f"\033[{codes}m{text}\033[0m"

    def line(self, text: str = "") -> None:
        with self._lock:
            self.stream.write(text + "\n")
            self.stream.flush()

    def heading(self, text: str) -> None:
        self.line()
        self.line(self.style(text, "bold"))


def short_trace(event: AuditEvent) -> str:
    """The first 8 hex digits of the trace id; ``?`` marks one sent by an unauthenticated
    caller (recorded, not trusted)."""
    if event.trace_id is None:
        return "-"
    return event.trace_id[:8] + ("" if event.trace_trusted else "?")


def row(event: AuditEvent) -> tuple[str, ...]:
    """The table's cells for one event."""
    local = event.time.astimezone()
    operation = event.route or "(no route)"
    if event.kind == "tls":  # refused before any request existed
        operation = "TLS handshake"
    elif event.kind != "grpc":
        operation = f"{event.method} {operation}"
    caller = event.spiffe_id or event.subject or "(unauthenticated)"
    reason = event.reason
    if event.dry_run:
        reason = f"would {event.would_decide} (dry-run)"
    return (
        local.strftime("%H:%M:%S.") + f"{local.microsecond // 1000:03d}",
        event.service,
        caller,
        operation,
        event.decision,
        reason,
        short_trace(event),
    )


def _widths(rows: Sequence[tuple[str, ...]]) -> list[int]:
    return [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS))]


def _decision_style(event: AuditEvent) -> tuple[str, ...]:
    if event.dry_run:
        return ("yellow",)
    return ("green",) if event.decision == "allow" else ("red",)


def audit_table(out: Output, events: Iterable[AuditEvent]) -> None:
    """Print ``events`` as a table, oldest first."""
    ordered = sorted(events, key=lambda e: e.time)
    header = _COLUMNS
    cells = [row(event) for event in ordered]
    widths = _widths([header, *cells])
    gap = 2 if sum(widths) + 2 * (len(widths) - 1) <= WIDTH else 1
    out.line(out.style(_join(header, widths, gap), "bold"))
    out.line(_join(tuple("-" * width for width in widths), widths, gap))
    for event, values in zip(ordered, cells, strict=True):
        out.line(_join(values, widths, gap, decision=_decision_style(event), out=out))


#: Column widths for events printed as they happen (``--keep-running``).
LIVE_WIDTHS = (12, 9, 30, 24, 8, 22, 9)


def live_header(out: Output) -> None:
    out.line(out.style(_join(_COLUMNS, LIVE_WIDTHS, 1), "bold"))


def event_line(out: Output, event: AuditEvent) -> None:
    """One event as a table row with fixed widths (for events printed as they happen)."""
    out.line(_join(row(event), LIVE_WIDTHS, 1, decision=_decision_style(event), out=out))


def _join(
    values: Sequence[str],
    widths: Sequence[int],
    gap: int,
    *,
    decision: tuple[str, ...] = (),
    out: Output | None = None,
) -> str:
    parts = []
    for index, (value, width) in enumerate(zip(values, widths, strict=True)):
        cell = value.ljust(width) if index < len(values) - 1 else value
        if out is not None and _COLUMNS[index] == "decision":
            cell = out.style(cell, *decision)
        parts.append(cell)
    return (" " * gap).join(parts).rstrip()
