"""The framework examples run as their readers run them: as scripts, in a fresh interpreter.

Each example's default run is a self-check (its service on a free loopback port, one allowed
and one refused call, the audit events); ``--serve`` keeps the service up and prints how to
call it, which these tests do before stopping it with SIGINT or SIGTERM.
"""

from __future__ import annotations

import os
import queue
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TIMEOUT = 60.0
WEB = "spiffe://example.org/ns/shop/sa/web"

HTTP_ORDERS = [
    "allowed: GET /orders/7 -> 200 {",
    f"'caller': '{WEB}'",
    "'proven_by': 'mtls+jwt'",
    "refused: POST /orders/7/cancel -> 403 {'error': 'insufficient_scope'",
    'WWW-Authenticate: Bearer realm="orders", error="insufficient_scope", scope="orders:write"',
    f"allow allowed_by_rule     GET /orders/{{order_id}} caller={WEB} proven_by=mtls+jwt",
    f"deny  insufficient_scope  POST /orders/{{order_id}}/cancel caller={WEB} proven_by=mtls+jwt",
]

# example -> (script, lines its self-check must print)
SELF_CHECKS = {
    "fastapi": ("fastapi/app.py", HTTP_ORDERS),
    "flask": ("flask/app.py", HTTP_ORDERS),
    "django": ("django/app.py", HTTP_ORDERS),
    "grpc": (
        "grpc/server.py",
        [
            f"allowed: /shop.Orders/Get -> OK {{'order': 7, 'caller': '{WEB}', "
            "'proven_by': 'mtls+jwt'}",
            "refused: /shop.Orders/Cancel -> PERMISSION_DENIED insufficient_scope",
            f"allow allowed_by_rule     /shop.Orders/Get caller={WEB} proven_by=mtls+jwt",
            f"deny  insufficient_scope  /shop.Orders/Cancel caller={WEB} proven_by=mtls+jwt",
        ],
    ),
    "two_services": (
        "two_services/services.py",
        [
            "allowed: web -> shop POST /orders -> 201 {",
            "'payment': {'caller': 'spiffe://example.org/ns/shop/sa/shop', 'charged': 42, "
            "'proven_by': 'mtls+jwt'}",
            "refused: web -> payments POST /charges -> 403 {'error': 'access_denied'",
            f"payments deny  no_allow_rule_matched POST /charges caller={WEB}",
            "payments saw shop proven by: mtls+jwt",
            "one trace id for both hops: True",
        ],
    ),
}


def run_example(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


@pytest.mark.parametrize("name", sorted(SELF_CHECKS))
def test_self_check(name: str) -> None:
    script, expected = SELF_CHECKS[name]
    result = run_example(script)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stderr == ""  # no warnings, no log lines
    for line in expected:
        assert line in result.stdout, f"{line!r} missing from:\n{result.stdout}"


def test_two_services_share_one_trace_id() -> None:
    result = run_example("two_services/services.py")
    assert result.returncode == 0, result.stdout + result.stderr
    traces = dict(
        re.findall(
            r"^  (shop     allow|payments allow) .* trace=([0-9a-f]{32})$", result.stdout, re.M
        )
    )
    assert set(traces) == {"shop     allow", "payments allow"}
    assert traces["shop     allow"] == traces["payments allow"]
    assert f"one trace id for both hops: True ({traces['payments allow']})" in result.stdout


# --- --serve ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_listening(port: int, process: subprocess.Popen[str]) -> None:
    """Poll until the server accepts connections (it prints its command before it binds)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        with socket.socket() as probe:
            probe.settimeout(5)
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        assert process.poll() is None, "the server stopped"
        assert time.monotonic() < deadline, "the server did not start listening"
        time.sleep(0.05)


# Servers start as a shell starts a background job, with SIGINT ignored: Ctrl-C must stop them
# all the same (Python raises KeyboardInterrupt only when SIGINT was not ignored at start).
_IGNORING_SIGINT = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN);"
    " sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
)


@contextmanager
def serving(script: str, stderr_path: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """Start ``script --serve`` on a free port; yield the command it prints for callers."""
    lines: queue.Queue[str | None] = queue.Queue()
    port = free_port()
    with stderr_path.open("w") as stderr:
        argv = [str(EXAMPLES / script), "--serve", "--port", str(port)]
        process = subprocess.Popen(
            [sys.executable, "-c", _IGNORING_SIGINT, *argv],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            start_new_session=True,  # its own process group, killed as a whole if need be
        )
    assert process.stdout is not None
    stdout = process.stdout

    def read() -> None:
        for line in stdout:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        printed = []
        while True:
            line = lines.get(timeout=TIMEOUT)
            assert line is not None, f"the server stopped: {''.join(printed)}"
            printed.append(line)
            if line.startswith("  "):  # the indented command after "... call it as ...:"
                break
        wait_until_listening(port, process)
        yield line.strip(), process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        reader.join()
        stdout.close()


@pytest.mark.skipif(shutil.which("curl") is None, reason="the printed command uses curl")
@pytest.mark.parametrize(
    ("script", "expected", "stop"),
    [
        ("fastapi/app.py", '"proven_by":"mtls+jwt"', signal.SIGINT),
        ("flask/app.py", '"proven_by":"mtls+jwt"', signal.SIGINT),
        ("django/app.py", '"proven_by": "mtls+jwt"', signal.SIGTERM),
        ("two_services/services.py", '"proven_by":"mtls+jwt"', signal.SIGTERM),
    ],
)
def test_serve_http(script: str, expected: str, stop: signal.Signals, tmp_path: Path) -> None:
    stderr = tmp_path / "stderr"
    with serving(script, stderr) as (command, process):
        assert command.startswith("curl ")
        call = subprocess.run(
            ["bash", "-c", f"{command} --silent --show-error --max-time 30"],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert call.returncode == 0, call.stderr
        assert expected in call.stdout
        assert WEB in call.stdout
        os.killpg(process.pid, stop)  # Ctrl-C or a service manager's stop
        assert process.wait(timeout=TIMEOUT) == 0
    log = stderr.read_text()
    assert "Traceback" not in log
    assert '"decision":"allow"' in log  # the audit event, as a JSON line
    folder = re.search(r"--cacert (\S+)/bundle\.pem", command)
    assert folder is not None
    assert not Path(folder.group(1)).exists()  # credentials removed on the way out


def test_serve_grpc(tmp_path: Path) -> None:
    stderr = tmp_path / "stderr"
    with serving("grpc/server.py", stderr) as (command, process):
        argv = shlex.split(command)
        assert argv[0] == "python"
        call = subprocess.run(
            [sys.executable, *argv[1:]],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert call.returncode == 0, call.stdout + call.stderr
        assert f"/shop.Orders/Get -> OK {{'order': 7, 'caller': '{WEB}'" in call.stdout
        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(timeout=TIMEOUT) == 0
    log = stderr.read_text()
    assert "Traceback" not in log
    assert '"route":"/shop.Orders/Get"' in log
    assert not Path(argv[-1]).exists()
