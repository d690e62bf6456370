"""The README's demo command runs the examples: keep them working."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (service, decision, reason) rows the demo's scenarios must leave in the audit table.
EXPECTED_ROWS = [
    ("gateway", "allow", "allowed_by_rule"),  # the order ...
    ("inventory", "allow", "allowed_by_rule"),  # ... across all three services
    ("payments", "allow", "allowed_by_rule"),
    ("gateway", "deny", "no_allow_rule_matched"),  # the intruder
    ("gateway", "deny", "insufficient_scope"),
    ("gateway", "deny", "token_expired"),
    ("gateway", "deny", "token_revoked"),
    ("gateway", "deny", "token_binding_mismatch"),
    ("gateway", "deny", "missing_credentials"),  # no client certificate: the TLS handshake
    ("gateway", "allow", "allowed_by_rule"),  # the refund passes the gateway ...
    ("payments", "deny", "denied_by_rule"),  # ... and payments' DENY rule refuses it
    ("gateway", "allow", "would deny (dry-run)"),
]


def audit_table(out: str) -> list[dict[str, str]]:
    """The rows of the demo's audit table, cut at the header's column positions."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("time "))
    header = lines[start]
    names = header.split()
    starts = [header.index(name) for name in names]
    rows = []
    for line in lines[start + 2 :]:
        if not line.strip() or line.startswith("trace:"):
            break
        cells = [
            line[begin:end].strip() for begin, end in zip(starts, [*starts[1:], None], strict=True)
        ]
        rows.append(dict(zip(names, cells, strict=True)))
    return rows


def check_demo_output(out: str) -> None:
    """What every run of the demo must show (shared with the in-process test)."""
    rows = audit_table(out)
    assert [(r["service"], r["decision"], r["reason"]) for r in rows] == EXPECTED_ROWS
    # The call without a client certificate is refused by TLS; the refusal is audited.
    assert "refused in the TLS handshake" in out
    assert any(r["operation"] == "TLS handshake" for r in audit_table(out))
    # One trace id links the hops of the allowed order.
    order_trace = re.search(r"GET /orders/1 \S+ 200 .*\(trace ([0-9a-f]{8})\)", out)
    assert order_trace is not None
    services = {r["service"] for r in rows if r["trace"] == order_trace.group(1)}
    assert services == {"gateway", "inventory", "payments"}
    # Credentials never reach the output.
    assert "PRIVATE KEY" not in out
    assert "eyJ" not in out
    assert max(len(line) for line in out.splitlines()) <= 120


def test_demo() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout
    assert result.stderr == ""  # no warnings, no log lines
    assert "\x1b[" not in result.stdout  # no colour codes when stdout is not a terminal
    check_demo_output(result.stdout)
    assert "All services stopped" in result.stdout
