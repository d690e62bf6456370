"""The server's SPIFFE ID, checked by zerotrust's own TLS stack (grpcio's Python client cannot
verify a peer during its handshake, nor show the peer's certificate afterwards).

A :class:`ServerCheck` opens a separate mTLS connection to the channel's target with
:func:`~zerotrust.client_ssl_context` (the server's chain verified against the bundle of its
own trust domain, then the authorizer applied), and closes it. A call waits for a successful
check when the channel was never checked, when grpc reported a new connection since the last
check (a transition to READY), or when the channel is not connected (the call is about to
open a new connection); a refusal fails the call with :class:`ServerIdentityError` before
anything (metadata, token, message) is sent. See docs/grpc.md for what this does and does not
guarantee.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import ssl
import threading
import time
from typing import Any

import grpc  # type: ignore[import-untyped,unused-ignore]
import grpc.aio  # type: ignore[import-untyped,unused-ignore]

from zerotrust.errors import ConfigurationError
from zerotrust.x509.sslcontext import ZeroTrustSSLContext
from zerotrust.x509.verify import VerifiedPeer

__all__ = ["ServerCheck", "ServerIdentityError", "split_target"]


class ServerIdentityError(grpc.aio.AioRpcError):  # type: ignore[misc]
    """The call was not sent: the server did not prove an accepted SPIFFE ID
    (``UNAUTHENTICATED``), or its identity could not be checked (``UNAVAILABLE``).

    A ``grpc.RpcError`` (sync and aio); ``__cause__`` holds the precise reason, e.g. a
    :class:`~zerotrust.PeerRejected` whose ``reason`` is ``peer_not_authorized``.
    """

    def __init__(self, code: Any, details: str) -> None:
        empty = grpc.aio.Metadata()
        super().__init__(code, empty, empty, details=details)


def split_target(target: str) -> tuple[str, int]:
    """``(host, port)`` of a ``host:port`` / ``[v6]:port`` / ``dns:///host:port`` target."""
    name = target.removeprefix("dns:///").removeprefix("dns:")
    if "/" in name or "," in name:
        raise ConfigurationError(f"target {target!r}: only host:port targets can be checked")
    host, sep, port = name.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigurationError(f"target {target!r} must be host:port")
    return host, int(port)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class ServerCheck:
    """Probe the server behind one channel and remember which connection was verified."""

    def __init__(
        self,
        target: str,
        context: ZeroTrustSSLContext,
        *,
        server_name: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self._host, self._port = split_target(target)
        self._context = context
        self._sni = server_name or (None if _is_ip(self._host) else self._host)
        self._timeout = timeout
        self._lock = threading.Lock()
        self._probing = threading.Lock()
        self._connections = 0  # transitions to READY seen so far
        self._ready = False
        self._verified_for = -1  # the connection count a successful probe covers
        self.peer: VerifiedPeer | None = None

    # --- connectivity (grpc's callback thread, or the aio watcher) ---------------------------

    def on_state(self, state: Any) -> None:
        ready = state is grpc.ChannelConnectivity.READY
        with self._lock:
            if ready and not self._ready:
                self._connections += 1
            self._ready = ready

    def _covers(self) -> int:
        # a probe now vouches for the current connection, or for the next one when the
        # channel is not connected (the call about to be made will connect)
        return self._connections if self._ready else self._connections + 1

    @property
    def needed(self) -> bool:
        """Whether the next call must wait for a (new) check: never checked, a new connection
        since the last check, or no connection now (the call would open an unchecked one)."""
        return self._verified_for < self._covers()

    # --- the probe ----------------------------------------------------------------------------

    def verify(self, timeout: float | None = None) -> VerifiedPeer:
        """Probe unless the current connection is already verified; one probe at a time. The
        wait for another caller's probe and this one's count against one deadline."""
        limit = max(min(t for t in (timeout, self._timeout) if t is not None), 0.001)
        deadline = time.monotonic() + limit
        if not self._probing.acquire(timeout=limit):
            raise _late()
        try:
            if not self.needed and self.peer is not None:
                return self.peer  # another caller's probe covered this connection
            with self._lock:
                covers = self._covers()
            peer = self._probe(deadline)
            with self._lock:
                self._verified_for = max(self._verified_for, covers)
                self.peer = peer
            return peer
        finally:
            self._probing.release()

    async def averify(self, timeout: float | None = None) -> VerifiedPeer:
        return await asyncio.to_thread(self.verify, timeout)

    def _probe(self, deadline: float) -> VerifiedPeer:
        left = deadline - time.monotonic()
        if left <= 0:
            raise _late()
        try:
            with (
                socket.create_connection((self._host, self._port), timeout=left) as raw,
                self._context.wrap_socket(
                    raw, server_hostname=self._sni, do_handshake_on_connect=False
                ) as tls,
            ):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise _late()
                tls.settimeout(left)
                # a server sending its handshake a byte at a time resets a socket timeout on
                # every byte: the connection is cut at the deadline instead
                cut = threading.Timer(left, _cut, (tls,))
                cut.daemon = True
                cut.start()
                try:
                    tls.do_handshake()
                finally:
                    cut.cancel()
                peer: VerifiedPeer | None = getattr(tls, "zerotrust_peer", None)
        except ServerIdentityError:
            raise
        except ssl.SSLCertVerificationError as exc:  # includes PeerRejected
            raise ServerIdentityError(
                grpc.StatusCode.UNAUTHENTICATED, "server identity rejected"
            ) from exc
        except (OSError, ValueError) as exc:
            raise ServerIdentityError(
                grpc.StatusCode.UNAVAILABLE, "server identity could not be checked"
            ) from exc
        if peer is None:  # pragma: no cover - a ZeroTrustSSLContext always sets it
            raise ServerIdentityError(grpc.StatusCode.UNAUTHENTICATED, "server identity unknown")
        return peer


def _late() -> ServerIdentityError:
    return ServerIdentityError(
        grpc.StatusCode.UNAVAILABLE, "server identity could not be checked in time"
    )


def _cut(sock: socket.socket) -> None:
    """End a probe's connection from another thread (its handshake then fails at once)."""
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)  # not SSLSocket's: it drops the TLS object
