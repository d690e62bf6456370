"""Run gunicorn as a subprocess on an ephemeral loopback port, for real-server tests.

    with gunicorn_server("tests.adapters.flask._server_app:create_app('mtls')",
                         config=conf_path, env={...}) as server:
        httpx.get(server.url("/whoami"))

gunicorn binds ``127.0.0.1:0`` itself and the helper reads the port it logged, so there is no
race for a free port (and no control socket is created: it would be shared through ``$HOME``).
It waits (bounded polling) until every worker has booted. On exit the arbiter gets SIGINT
(quick shutdown); whatever is left of the process group is killed, so no process outlives the
block. The log is kept in a file (``server.log()``) and shown when the
server fails to start.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import gunicorn

ROOT = Path(__file__).resolve().parent.parent
_LISTENING = re.compile(r"Listening at: (?P<scheme>https?)://(?P<host>[^\s]+):(?P<port>\d+)")
_BOOTED = re.compile(r"Booting worker with pid")
# gunicorn >= 25.1 opens a control socket shared through $HOME unless told not to
_NO_CONTROL_SOCKET = ["--no-control-socket"] if gunicorn.version_info >= (25, 1) else []


@dataclass(frozen=True)
class GunicornServer:
    """A running gunicorn: where it listens and what it logged."""

    scheme: str
    host: str
    port: int
    pid: int
    log_path: Path

    def url(self, path: str = "/") -> str:
        return f"{self.scheme}://{self.host}:{self.port}{path}"

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGINT)  # quick shutdown of the arbiter and its workers
            proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # anything left in the group (a stuck worker)
    if proc.poll() is None:
        proc.wait(timeout=15)


@contextmanager
def gunicorn_server(
    app: str,
    *,
    config: str | os.PathLike[str] | None = None,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    host: str = "127.0.0.1",
    workers: int = 1,
    worker_class: str | None = None,
    cwd: str | os.PathLike[str] = ROOT,
    startup_timeout: float = 60.0,
) -> Iterator[GunicornServer]:
    """Serve ``app`` (a gunicorn app string, ``module:callable`` or ``module:factory(...)``).

    ``config`` is a gunicorn configuration file (``-c``), ``args`` extra command-line options
    (they override the file), ``env`` extra environment variables for the server process. The
    repository root is the working directory and on ``PYTHONPATH``, so ``tests.…`` modules
    import.
    """
    with tempfile.TemporaryDirectory(prefix="gunicorn-") as tmp:
        log_path = Path(tmp) / "gunicorn.log"
        command = [sys.executable, "-m", "gunicorn"]
        if config is not None:
            command += ["-c", os.fspath(config)]
        command += [
            "--bind",
            f"{host}:0",
            "--workers",
            str(workers),
            "--graceful-timeout",
            "3",
            "--log-level",
            "info",
            "--error-logfile",
            "-",
            *_NO_CONTROL_SOCKET,
        ]
        if worker_class is not None:
            command += ["--worker-class", worker_class]
        command += [*args, app]
        child_env = dict(os.environ)
        child_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), child_env.get("PYTHONPATH", "")) if p
        )
        child_env.pop("GUNICORN_CMD_ARGS", None)
        child_env.update(env or {})
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen(
                command,
                cwd=cwd,
                env=child_env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, killed as a whole
            )
        try:
            server = _wait_ready(proc, log_path, host, workers, startup_timeout)
            yield server
        finally:
            _stop(proc)


def _wait_ready(
    proc: subprocess.Popen[bytes], log_path: Path, host: str, workers: int, timeout: float
) -> GunicornServer:
    deadline = time.monotonic() + timeout
    while True:
        text = log_path.read_text(encoding="utf-8", errors="replace")
        found = _LISTENING.search(text)
        if found and len(_BOOTED.findall(text)) >= workers:
            return GunicornServer(found["scheme"], host, int(found["port"]), proc.pid, log_path)
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"gunicorn did not start (exit code {proc.poll()}):\n{text}")
        time.sleep(0.05)
