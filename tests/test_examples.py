"""The README's demo command runs the examples: keep them working."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_demo_walkthrough() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    out = result.stdout
    assert "reply 'payment accepted'" in out
    assert "refused the handshake [peer_not_authorized]" in out
    assert "refused the server [peer_not_authorized]" in out
    assert "PRIVATE KEY" not in out
