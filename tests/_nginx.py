"""Run a real nginx on a free loopback port, configured in a temporary directory.

    with nginx_mtls_proxy(upstream="127.0.0.1:8000", server_svid=svid, client_ca=ca) as proxy:
        httpx.get(proxy.url("/whoami"), verify=client_context)

:func:`nginx_mtls_proxy` terminates mTLS (``ssl_verify_client on``, the dev CA as client CA)
and forwards to an HTTP upstream with the client certificate in ``X-SSL-Client-Cert``
(``$ssl_client_escaped_cert``, replacing any copy the client sent). :func:`run_nginx` runs any
``http { ... }`` body. nginx runs in the foreground as a single process
(``master_process off``, ``-g 'daemon off;'``) with its pid file, logs and temp paths in the
temporary directory, so it needs no root paths and no privilege drop. It is stopped (and killed
if need be) when the block exits.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from zerotrust import X509Svid
from zerotrust.dev import DevCA

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


@dataclass(frozen=True)
class Nginx:
    """A running nginx."""

    host: str
    port: int
    directory: Path

    def url(self, path: str = "/") -> str:
        return f"https://{self.host}:{self.port}{path}"

    def error_log(self) -> str:
        path = self.directory / "error.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


def available() -> bool:
    return os.access(NGINX, os.X_OK)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _config(directory: Path, http_body: str) -> str:
    d = directory
    return f"""
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
{http_body}
}}
"""


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # fast shutdown
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    if proc.poll() is None:
        proc.wait(timeout=10)


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@contextmanager
def run_nginx(
    http_body: Callable[[Path, str, int], str],
    *,
    host: str = "127.0.0.1",
    startup_timeout: float = 30.0,
    attempts: int = 3,
) -> Iterator[Nginx]:
    """Run nginx with ``http { <http_body(directory, host, port)> }``: listen on ``host:port``
    (a free port); ``directory`` holds the configuration, logs and any files the body writes."""
    with tempfile.TemporaryDirectory(prefix="nginx-") as tmp:
        directory = Path(tmp)
        for attempt in range(attempts):  # another process may take the port in between
            port = _free_port(host)
            conf = directory / "nginx.conf"
            conf.write_text(_config(directory, http_body(directory, host, port)), encoding="utf-8")
            error_log = str(directory / "error.log")
            command = [NGINX, "-p", str(directory), "-e", error_log, "-c", str(conf)]
            proc = subprocess.Popen(
                [*command, "-g", "daemon off;"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            try:
                deadline = time.monotonic() + startup_timeout
                while proc.poll() is None and not _listening(host, port):
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.05)
                server = Nginx(host, port, directory)
                if proc.poll() is None and _listening(host, port):
                    yield server
                    return
                log = server.error_log()
                if "Address already in use" not in log or attempt == attempts - 1:
                    raise RuntimeError(f"nginx did not start:\n{log}")
            finally:
                _stop(proc)
        raise AssertionError("unreachable")


@contextmanager
def nginx_mtls_proxy(
    *,
    upstream: str,
    server_svid: X509Svid,
    client_ca: DevCA,
    header: str = "X-SSL-Client-Cert",
    value: str = "$ssl_client_escaped_cert",
    proxy_bind: str = "127.0.0.1",
) -> Iterator[Nginx]:
    """nginx terminating mTLS for ``upstream`` (``host:port``, plain HTTP) and forwarding the
    client certificate in ``header``; connections to the upstream come from ``proxy_bind``."""

    def body(directory: Path, host: str, port: int) -> str:
        (directory / "server.pem").write_bytes(server_svid.cert_chain_pem())
        key = directory / "server.key"
        key.write_bytes(server_svid.private_key_pem())
        key.chmod(0o600)
        (directory / "client-ca.pem").write_bytes(client_ca.bundle.to_pem())
        return f"""
    server {{
        listen {host}:{port} ssl;
        ssl_certificate {directory}/server.pem;
        ssl_certificate_key {directory}/server.key;
        ssl_client_certificate {directory}/client-ca.pem;
        ssl_verify_client on;
        ssl_verify_depth 4;
        location / {{
            proxy_pass http://{upstream};
            proxy_bind {proxy_bind};
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header Connection "";
            proxy_set_header {header} {value};
        }}
    }}
"""

    with run_nginx(body) as server:
        yield server
