"""``--keep-running``: leave the services up for your own calls until Ctrl-C.

The frontend's certificate, key, the trust bundle and a token for the gateway are written to a
private temporary directory (removed on exit), and ready-to-paste curl commands are printed.
Audit events of the calls you make are printed as they happen.
"""

from __future__ import annotations

import os
import shlex
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from zerotrust.audit import AuditEvent
from zerotrust.demo._scenarios import FRONTEND_SCOPES
from zerotrust.demo._services import Services
from zerotrust.demo._shop import FRONTEND, GATEWAY, Shop
from zerotrust.demo._table import Output, event_line, live_header

CURL_TOKEN_TTL = 1800


class LiveSink:
    """An audit sink that prints events once switched on (and ignores them before)."""

    def __init__(self) -> None:
        self._print: Callable[[AuditEvent], None] | None = None

    def emit(self, event: AuditEvent, /) -> None:
        printer = self._print
        if printer is not None:
            printer(event)

    @contextmanager
    def printing(self, printer: Callable[[AuditEvent], None]) -> Iterator[None]:
        self._print = printer
        try:
            yield
        finally:
            self._print = None


def _write(path: Path, data: bytes) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)


def write_files(directory: Path, shop: Shop) -> dict[str, Path]:
    """The frontend's credentials and a token for the gateway, bound to its certificate."""
    files = {
        "cert": directory / "frontend.pem",
        "key": directory / "frontend-key.pem",
        "bundle": directory / "bundle.pem",
        "token": directory / "frontend.token",
    }
    svid = shop.svid(FRONTEND)
    _write(files["cert"], svid.cert_chain_pem())
    _write(files["key"], svid.private_key_pem())
    _write(files["bundle"], shop.ca.bundle.to_pem())
    token = shop.issuer.issue(
        subject=FRONTEND,
        audience=GATEWAY,
        scopes=FRONTEND_SCOPES,
        ttl=CURL_TOKEN_TTL,
        extra_claims=shop.bound_claims(FRONTEND),
    )
    _write(files["token"], token.encode())
    return files


def curl_commands(files: dict[str, Path], url: str) -> list[tuple[str, list[str]]]:
    """``(what to expect, command lines)`` pairs; the lines end with shell continuations."""
    q = {name: shlex.quote(str(path)) for name, path in files.items()}
    cert = [f"--cert {q['cert']} \\", f"--key {q['key']} \\"]
    bundle = f"--cacert {q['bundle']} \\"
    token = f'-H "Authorization: Bearer $(cat {q["token"]})" \\'
    return [
        ("allowed (200): the frontend's certificate and its token", [*cert, bundle, token, url]),
        ("refused (403 insufficient_scope): mTLS alone, no token", [*cert, bundle, url]),
        ("refused in the TLS handshake (curl: empty reply): no client certificate", [bundle, url]),
    ]


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _wait_for_interrupt() -> None:
    """Wait for Ctrl-C (or SIGTERM). Both are handled here rather than left to Python's
    default: a process started in the background by a shell inherits SIGINT ignored, and
    would then never stop on it."""
    stop = threading.Event()
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in _STOP_SIGNALS:
            previous[signum] = signal.signal(signum, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:  # a Ctrl-C that came before the handlers were in place
        pass
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def keep_running(out: Output, shop: Shop, services: Services, live: LiveSink) -> None:
    """Print how to call the gateway, print audit events as they happen, wait for Ctrl-C."""
    with tempfile.TemporaryDirectory(prefix="zerotrust-demo-") as tmp:
        files = write_files(Path(tmp), shop)
        expires = (datetime.now().astimezone() + timedelta(seconds=CURL_TOKEN_TTL)).strftime(
            "%H:%M"
        )
        out.heading("The services keep running. Call the gateway yourself:")
        out.line(f"  (files in {tmp}, removed on exit; the token is valid until {expires})")
        for what, command in curl_commands(files, f"{services.gateway.address}/orders/1"):
            out.line()
            out.line(f"  # {what}")
            out.line(f"  curl {command[0]}")
            for part in command[1:]:
                out.line(f"       {part}")
        out.line()
        out.line("Audit events appear below as they happen. Press Ctrl-C to stop.")
        live_header(out)
        with live.printing(lambda event: event_line(out, event)):
            _wait_for_interrupt()
