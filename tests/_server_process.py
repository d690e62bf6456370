"""Run a server command as a subprocess on a listening socket the test made.

    with server_process(lambda fd: ["uvicorn", "--fd", str(fd), "app:app"]) as server:
        http.client.HTTPConnection(*server.address)

The socket is bound to an ephemeral loopback port and listening before the server starts, and
the server inherits it (uvicorn ``--fd N``, hypercorn ``--bind fd://N``): connections made
at once wait in the listen queue until the server accepts them, so nothing polls for
readiness. The repository root is the working directory and on ``PYTHONPATH``. On exit the
server gets SIGTERM; whatever is left of its process group (workers) is killed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 60.0  # generous: the machine is shared


@dataclass(frozen=True)
class ServerProcess:
    """A running server: where it listens and what it logged."""

    address: tuple[str, int]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


@contextlib.contextmanager
def server_process(
    command: Callable[[int], list[str]], *, env: Mapping[str, str] | None = None
) -> Iterator[ServerProcess]:
    """Run ``command(fd)``, where ``fd`` is the listening socket the server is to serve."""
    with (
        tempfile.TemporaryDirectory(prefix="server-") as tmp,
        socket.create_server(("127.0.0.1", 0)) as listener,
    ):
        log_path = Path(tmp) / "server.log"
        child_env = {**os.environ, **(env or {})}
        child_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), child_env.get("PYTHONPATH", "")) if p
        )
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command(listener.fileno()),
                cwd=ROOT,
                env=child_env,
                pass_fds=[listener.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, ended as a whole
            )
        try:
            host, port = listener.getsockname()[:2]
            yield ServerProcess((host, port), log_path)
        finally:
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(TIMEOUT)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(TIMEOUT)
