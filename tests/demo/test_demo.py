"""The demo in this process, ``--keep-running`` with real calls, and its command line."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.test_examples import audit_table, check_demo_output
from zerotrust.cli import main as cli_main
from zerotrust.demo import run

pytestmark = pytest.mark.network

FRAMEWORKS = ("fastapi", "flask", "grpc", "uvicorn", "opentelemetry.sdk", "werkzeug")


def _demo_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("zerotrust-demo")]


def _ports(out: str) -> list[int]:
    intro = out.split("\nCalls", 1)[0]
    return [int(port) for port in re.findall(r"localhost:(\d+)", intro)]


def test_run_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--color", "always"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    out = re.sub(r"\x1b\[[0-9;]*m", "", captured.out)
    assert captured.out != out  # colour was asked for
    check_demo_output(out)
    assert _demo_threads() == []
    ports = _ports(out)
    assert len(ports) == 3
    for port in ports:  # nothing listens any more
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_missing_dependency(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "flask", None)
    assert run([]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "pip install 'zerotrust[demo]'" in captured.err
    assert "'flask'" in captured.err


def test_a_failure_of_zerotrust_demo_is_the_command_line_s_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every failure of the ``zerotrust`` command is ``zerotrust: error: [code] message``
    (docs/dev-ca.md), which scripts read; ``zerotrust demo`` is one of its commands."""
    monkeypatch.setitem(sys.modules, "flask", None)
    assert cli_main(["demo"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("zerotrust: error: [missing_dependency] ")
    assert captured.err.count("\n") == 1


def test_cli_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["demo", "--help"])
    assert exit_info.value.code == 0
    assert "--keep-running" in capsys.readouterr().out


def test_cli_imports_no_framework() -> None:
    code = (
        "import sys; from zerotrust.cli import build_parser; build_parser(); "
        f"print([m for m in {FRAMEWORKS!r} if m in sys.modules])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


# --- --keep-running ------------------------------------------------------------------------


class _Lines:
    """The demo's stdout, line by line, with a deadline on every wait."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def until(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            line = self._queue.get(timeout=max(0.1, deadline - time.monotonic()))
            if line is None:
                raise AssertionError(f"output ended before {pattern!r}:\n" + "\n".join(self.seen))
            self.seen.append(line)
            found = re.search(pattern, line)
            if found:
                return found

    def rest(self) -> str:
        self._thread.join(timeout=30)
        while not self._queue.empty():
            line = self._queue.get()
            if line is not None:
                self.seen.append(line)
        return "\n".join(self.seen)


@pytest.fixture
def keep_running() -> Iterator[tuple[subprocess.Popen[str], _Lines]]:
    # Started as a shell starts a background job, with SIGINT ignored: the demo must still
    # stop on Ctrl-C (Python only turns SIGINT into KeyboardInterrupt when it is not ignored).
    launch = (
        "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN);"
        " sys.argv = ['zerotrust', 'demo', '--keep-running'];"
        " runpy.run_module('zerotrust', run_name='__main__')"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", launch],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, killed as a whole if need be
    )
    try:
        yield proc, _Lines(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.stderr is not None
        proc.stderr.close()
        assert proc.stdout is not None
        proc.stdout.close()


def test_keep_running(keep_running: tuple[subprocess.Popen[str], _Lines]) -> None:
    proc, lines = keep_running
    directory = Path(lines.until(r"files in (\S+), removed on exit").group(1))
    url = lines.until(r"(https://localhost:\d+/orders/1)").group(1)
    lines.until(r"Press Ctrl-C to stop")
    files = {name: directory / name for name in ("frontend.pem", "frontend-key.pem", "bundle.pem")}
    assert oct((directory / "frontend-key.pem").stat().st_mode & 0o777) == "0o600"
    token = (directory / "frontend.token").read_text()

    # What the printed curl commands do, with the files they name.
    context = ssl.create_default_context(cafile=files["bundle.pem"])
    context.load_cert_chain(files["frontend.pem"], files["frontend-key.pem"])
    with httpx.Client(verify=context, trust_env=False, timeout=30) as client:
        allowed = client.get(url, headers={"Authorization": f"Bearer {token}"})
        assert allowed.status_code == 200, allowed.text
        assert allowed.json()["caller"] == "spiffe://shop.example/frontend"
        refused = client.get(url)  # mTLS alone: no scopes
        assert refused.status_code == 403
        assert refused.json()["error"] == "insufficient_scope"
    lines.until(r"payments .* POST /charges .* allow")  # printed as they happen
    lines.until(r"gateway .* deny .* insufficient_scope")

    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 0
    out = lines.rest()
    assert "All services stopped" in out
    assert not directory.exists()
    assert proc.stderr is not None
    assert proc.stderr.read() == ""
    check_demo_output(out.split("The services keep running")[0])
    assert len(audit_table(out)) == 12


def test_a_ctrl_c_while_stopping_leaves_no_thread_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C while the demo stopped interrupted a join: the payments server's thread was
    never stopped, and Python's exit waited on it (its port open) until a second Ctrl-C."""
    from zerotrust.demo._backends import join

    release = threading.Event()
    worker = threading.Thread(target=release.wait, args=(30,))
    worker.start()
    joins: list[object] = []
    real = threading.Thread.join

    def interrupted(self: threading.Thread, timeout: float | None = None) -> None:
        joins.append(self)
        if len(joins) == 1:  # the user's Ctrl-C, during the first join
            release.set()
            raise KeyboardInterrupt
        real(self, timeout)

    monkeypatch.setattr(threading.Thread, "join", interrupted)
    join(worker)
    assert not worker.is_alive() and len(joins) == 2
