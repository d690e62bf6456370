"""Text from outside (a certificate's subject, a library's error message) made safe to put in
a message, a log line or a terminal: control characters (ESC, CR, LF, ...) and anything not
printable are escaped, so such text cannot forge the lines around it."""

from __future__ import annotations

__all__ = ["escaped"]


def escaped(text: str, limit: int | None = None) -> str:
    """``text`` with anything not printable escaped (``\\n``, ``\\x1b``, ``\\u2028``), cut to
    ``limit`` characters first (``...`` marks the cut)."""
    if limit is not None and len(text) > limit:
        text = text[:limit] + "..."
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")
