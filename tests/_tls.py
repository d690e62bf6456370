"""A tiny threaded TLS echo server on a loopback ephemeral port, for real-handshake tests."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from zerotrust import VerifiedPeer


@dataclass
class ServerLog:
    peers: list[VerifiedPeer] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextmanager
def tls_server(ctx: ssl.SSLContext) -> Iterator[tuple[int, ServerLog]]:
    """Serve until closed: log each handshake's peer or error, then send b"ok"."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    log = ServerLog()
    stop = threading.Event()

    def handle(raw: socket.socket) -> None:
        raw.settimeout(5)
        try:
            with ctx.wrap_socket(raw, server_side=True) as conn:
                with log.lock:
                    log.peers.append(conn.zerotrust_peer)  # type: ignore[attr-defined]
                conn.sendall(b"ok")
        except (OSError, ssl.SSLError) as exc:
            with log.lock:
                log.errors.append(exc)
        finally:
            raw.close()

    def serve() -> None:
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=handle, args=(raw,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port, log
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def call(port: int, ctx: ssl.SSLContext) -> tuple[bytes, VerifiedPeer, str]:
    """Connect, read the reply; returns (reply, verified server peer, server leaf fingerprint)."""
    import hashlib

    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as conn,
    ):
        leaf = conn.getpeercert(binary_form=True)
        assert leaf is not None
        data = b""
        while len(data) < 2:
            chunk = conn.recv(2 - len(data))
            if not chunk:
                break
            data += chunk
        peer = conn.zerotrust_peer  # type: ignore[attr-defined]
        return data, peer, hashlib.sha256(leaf).hexdigest()
