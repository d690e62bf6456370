"""``zerotrust.asgi.serve`` end to end: a real process serving mTLS, stopped by SIGTERM."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from zerotrust import client_ssl_context, match
from zerotrust.dev import DevCA

pytestmark = pytest.mark.network

SCRIPT = Path(__file__).with_name("_serve_app.py")
WEB = "spiffe://example.org/ns/shop/sa/web"
LISTENING = re.compile(r"https://127\.0\.0\.1:(\d+)")
TIMEOUT = 60.0  # generous: the machine is shared


def wait_for_port(lines: queue.Queue[str | None]) -> int:
    deadline = time.monotonic() + TIMEOUT
    seen: list[str] = []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        if line is None:
            break
        seen.append(line)
        found = LISTENING.search(line)
        if found:
            return int(found.group(1))
    raise AssertionError("the server did not start:\n" + "".join(seen))


@pytest.mark.parametrize("server", ["uvicorn", "hypercorn"])
def test_serve_runs_until_sigterm(tmp_path: Path, server: str) -> None:
    ca = DevCA.create("example.org")
    ca.save(tmp_path / "ca")
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), str(tmp_path / "ca"), server],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    assert process.stderr is not None
    stderr = process.stderr

    def pump() -> None:
        for line in stderr:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        port = wait_for_port(lines)
        context = client_ssl_context(
            ca.issue_svid(WEB), ca.bundle, authorizer=match.member_of("example.org")
        )
        with httpx.Client(verify=context, timeout=30) as http:
            assert http.get(f"https://localhost:{port}/whoami").json() == {"id": WEB}
        process.send_signal(signal.SIGTERM)
        status = process.wait(TIMEOUT)
        reader.join(TIMEOUT)
        log = "".join(line for line in iter(lines.get_nowait, None))
        assert status == 0, log  # a graceful shutdown, then serve() returns
        if server == "uvicorn":
            assert "Finished server process" in log
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        reader.join(TIMEOUT)
        stderr.close()
