"""W3C Trace Context (level 1, section 3.2, and level 2): the ``traceparent`` cases of the
w3c/trace-context test suite (test/test.py), which sends each value and checks whether the
vendor continues the trace (the value parses) or restarts it (it does not)."""

from __future__ import annotations

import pytest

from zerotrust.audit import TraceParent, parse_traceparent, trace_ids_for_audit

# the test suite's ids
TRACE_ID = "12345678901234567890123456789012"
PARENT_ID = "1234567890123456"
VALID = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.mark.parametrize(
    ("value", "flags"),
    [
        (f"00-{TRACE_ID}-{PARENT_ID}-00", 0),
        (f"00-{TRACE_ID}-{PARENT_ID}-01", 1),
        # test_traceparent_ows_handling: optional whitespace around the value
        (f" 00-{TRACE_ID}-{PARENT_ID}-01", 1),
        (f"\t00-{TRACE_ID}-{PARENT_ID}-01", 1),
        (f"00-{TRACE_ID}-{PARENT_ID}-01 ", 1),
        (f"00-{TRACE_ID}-{PARENT_ID}-01\t", 1),
        (f"\t 00-{TRACE_ID}-{PARENT_ID}-01 \t", 1),
        # test_traceparent_version_0xcc: a future version, with or without more fields
        (f"cc-{TRACE_ID}-{PARENT_ID}-01", 1),
        (f"cc-{TRACE_ID}-{PARENT_ID}-01-what-the-future-will-be-like", 1),
    ],
)
def test_continued(value: str, flags: int) -> None:
    parsed = parse_traceparent(value)
    assert parsed is not None
    assert (parsed.trace_id, parsed.parent_id, parsed.flags) == (TRACE_ID, PARENT_ID, flags)


@pytest.mark.parametrize(
    "value",
    [
        # test_traceparent_version_0x00: nothing may follow the flags of version 00
        f"00-{TRACE_ID}-{PARENT_ID}-01.",
        f"00-{TRACE_ID}-{PARENT_ID}-01-what-the-future-will-be-like",
        # test_traceparent_version_0xcc: a later version's fields still start with "-"
        f"cc-{TRACE_ID}-{PARENT_ID}-01.what-the-future-will-be-like",
        # test_traceparent_version_0xff
        "ff-0123456789abcdef0123456789abcdef-0123456789abcdef-01",
        # test_traceparent_version_illegal_characters
        f".0-{TRACE_ID}-{PARENT_ID}-01",
        f"0.-{TRACE_ID}-{PARENT_ID}-01",
        # test_traceparent_version_too_long / too_short
        f"000-{TRACE_ID}-{PARENT_ID}-01",
        f"0000-{TRACE_ID}-{PARENT_ID}-01",
        f"0-{TRACE_ID}-{PARENT_ID}-01",
        # test_traceparent_trace_id_all_zero
        f"00-00000000000000000000000000000000-{PARENT_ID}-01",
        # test_traceparent_trace_id_illegal_characters
        f"00-.2345678901234567890123456789012-{PARENT_ID}-01",
        f"00-1234567890123456789012345678901.-{PARENT_ID}-01",
        # test_traceparent_trace_id_too_long / too_short
        f"00-123456789012345678901234567890123-{PARENT_ID}-01",
        f"00-1234567890123456789012345678901-{PARENT_ID}-01",
        # test_traceparent_parent_id_all_zero
        f"00-{TRACE_ID}-0000000000000000-01",
        # test_traceparent_parent_id_illegal_characters
        f"00-{TRACE_ID}-.234567890123456-01",
        f"00-{TRACE_ID}-123456789012345.-01",
        # test_traceparent_parent_id_too_long / too_short
        f"00-{TRACE_ID}-12345678901234567-01",
        f"00-{TRACE_ID}-123456789012345-01",
        # test_traceparent_trace_flags_illegal_characters
        f"00-{TRACE_ID}-{PARENT_ID}-.0",
        f"00-{TRACE_ID}-{PARENT_ID}-0.",
        # test_traceparent_trace_flags_too_long / too_short
        f"00-{TRACE_ID}-{PARENT_ID}-001",
        f"00-{TRACE_ID}-{PARENT_ID}-0",
        # section 3.2.2: lowercase hex only
        f"00-{'ABCDEF' + TRACE_ID[6:]}-{PARENT_ID}-01",
        f"00-{TRACE_ID}-{'ABCDEF' + PARENT_ID[6:]}-01",
        f"0A-{TRACE_ID}-{PARENT_ID}-01",
        f"00-{TRACE_ID}-{PARENT_ID}-0A",
    ],
)
def test_restarted(value: str) -> None:
    assert parse_traceparent(value) is None


def test_traceparent_duplicated() -> None:
    # test_traceparent_duplicated: two traceparent headers, the trace restarts
    ids = trace_ids_for_audit([VALID, f"00-{TRACE_ID}-{'2' * 16}-01"], caller_authenticated=True)
    assert (ids.trace_id, ids.span_id) == (None, None)
    ids = trace_ids_for_audit([VALID], caller_authenticated=True)
    assert (ids.trace_id, ids.span_id, ids.trusted) == (TRACE_ID, PARENT_ID, True)


def test_a_future_version_is_propagated_as_version_00() -> None:
    # level 2, section 3.2.2.5 (versioning): a later version is parsed by the rules of 00
    parsed = parse_traceparent(f"cc-{TRACE_ID}-{PARENT_ID}-01-what-the-future-will-be-like")
    assert parsed == TraceParent(version=0xCC, trace_id=TRACE_ID, parent_id=PARENT_ID, flags=1)
    assert parsed.to_header() == VALID
