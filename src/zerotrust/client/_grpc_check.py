"""The server's SPIFFE ID, checked by zerotrust's own TLS stack (grpcio's Python client cannot
verify a peer during its handshake, nor show the peer's certificate afterwards).

A :class:`ServerCheck` follows the connectivity of one grpc channel and counts its
connections: every transition to ``READY`` is a new connection. A call may use the channel
only while it is ``READY`` on a connection that a check verified. Otherwise the call waits:
for grpc to connect first (a call on an idle channel makes it connect), then for a separate
mTLS connection to the channel's target made with :func:`~zerotrust.client_ssl_context` (the
server's chain verified against the bundle of its own trust domain, then the authorizer
applied), which is closed at once. The result counts only if the channel is still on the
connection it was made for. A refusal fails the call with :class:`ServerIdentityError` before
anything (metadata, token, message) is sent.

The state is read from grpc when a call starts (grpc reports changes to subscribers only
later), and a call that ends with ``UNAVAILABLE`` (grpc's code for a lost connection) makes
the next one wait for a check even if grpc still shows the connection. See docs/grpc.md for
what this does and does not guarantee.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc  # type: ignore[import-untyped,unused-ignore]
import grpc.aio  # type: ignore[import-untyped,unused-ignore]

from zerotrust._aio import wait_for
from zerotrust.errors import ConfigurationError
from zerotrust.x509.sslcontext import ZeroTrustSSLContext, peer_of
from zerotrust.x509.verify import VerifiedPeer

__all__ = ["ServerCheck", "ServerIdentityError", "split_target"]

_READY = grpc.ChannelConnectivity.READY
_IDLE = grpc.ChannelConnectivity.IDLE
_FAILURE = grpc.ChannelConnectivity.TRANSIENT_FAILURE
_SHUTDOWN = grpc.ChannelConnectivity.SHUTDOWN
#: grpc's core connectivity numbers (``grpc_connectivity_state``) and their Python names.
_BY_NUMBER = {state.value[0]: state for state in grpc.ChannelConnectivity}
#: A sync call waiting for the channel to connect reads its state at least this often.
_POLL = 0.05
#: Host names the sync probes resolve at once, each on a thread of its own (those stuck in a
#: resolver that does not answer included).
_MAX_RESOLVING = 8

_log = logging.getLogger("zerotrust.grpc")
#: grpc's resolver schemes for anything but one host or address, which it recognises in any
#: case: to grpc, ``unix:50051`` is a Unix socket, not port 50051 of the host ``unix``.
_OTHER_SCHEMES = frozenset(
    {"unix", "unix-abstract", "vsock", "xds", "google-c2p", "google-c2p-experimental"}
)


class ServerIdentityError(grpc.aio.AioRpcError):  # type: ignore[misc]
    """The call was not sent: the server did not prove an accepted SPIFFE ID
    (``UNAUTHENTICATED``), its identity could not be checked (``UNAVAILABLE``), or the call's
    deadline passed while it was checked (``DEADLINE_EXCEEDED``).

    A ``grpc.RpcError`` (sync and aio); ``__cause__`` holds the precise reason, e.g. a
    :class:`~zerotrust.PeerRejected` whose ``reason`` is ``peer_not_authorized``.
    """

    def __init__(self, code: Any, details: str) -> None:
        empty = grpc.aio.Metadata()
        super().__init__(code, empty, empty, details=details)


def split_target(target: str) -> tuple[str, int]:
    """``(host, port)`` of a ``host:port`` / ``[v6]:port`` target, with grpc's ``dns:`` /
    ``dns:///`` scheme, or of one address with its ``ipv4:`` / ``ipv6:`` scheme."""
    scheme = next((s for s in ("dns:///", "dns:", "ipv4:", "ipv6:") if target.startswith(s)), "")
    name = target[len(scheme) :]
    other = not scheme and name.partition(":")[0].lower() in _OTHER_SCHEMES
    if "/" in name or "," in name or other:
        raise ConfigurationError(f"target {target!r}: only host:port targets can be checked")
    host, sep, port = name.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    if bracketed:
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigurationError(f"target {target!r} must be host:port")
    # brackets hold an IPv6 address, and only they do (RFC 3986 3.2.2: "::1:443" is ambiguous)
    # (and a colon outside them is a scheme grpc reads, "UNIX:..." or "IPv4:...", not a host)
    if bracketed != _is_ip(host, 6) or (not bracketed and any(c in host for c in "[]:")):
        raise ConfigurationError(f"target {target!r}: an IPv6 address goes in brackets, [::1]:443")
    if (scheme == "ipv4:" and not _is_ip(host, 4)) or (scheme == "ipv6:" and not bracketed):
        raise ConfigurationError(f"target {target!r}: not an address of its scheme")
    return host, int(port)


def _is_ip(host: str, version: int | None = None) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return version is None or address.version == version


def sync_state_reader(channel: Any) -> Callable[[bool], Any]:
    """Read a sync ``grpc.Channel``'s connectivity now (``try_to_connect`` as in grpc).

    grpc's sync channel reports its state only to subscribers, from a poller thread and after
    the fact; the core channel under it answers at once.
    """
    read = getattr(getattr(channel, "_channel", None), "check_connectivity_state", None)
    if not callable(read):  # pragma: no cover - every supported grpcio has it
        raise ConfigurationError("this grpcio does not expose a channel's connectivity state")

    def state(try_to_connect: bool) -> Any:
        try:
            return _BY_NUMBER.get(read(try_to_connect), _SHUTDOWN)
        except ValueError:  # closed
            return _SHUTDOWN

    return state


def aio_state_reader(channel: Any) -> Callable[[bool], Any]:
    """The same for a ``grpc.aio.Channel`` (whose ``get_state`` answers at once)."""

    def state(try_to_connect: bool) -> Any:
        try:
            return channel.get_state(try_to_connect)
        except ValueError:  # pragma: no cover - closed
            return _SHUTDOWN

    return state


class ServerCheck:
    """Verify the server behind one channel, connection by connection."""

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
        self._changed = threading.Condition(self._lock)
        self._probing = threading.Lock()  # sync: one probe at a time
        self._read_state: Callable[[bool], Any] | None = None
        self._wait_change: Callable[[Any], Awaitable[Any]] | None = None
        self._state: Any = _IDLE
        self._connections = 0  # transitions to READY seen so far
        self._verified_for = -1  # the connection a successful check verified
        self._task: asyncio.Task[VerifiedPeer] | None = None  # aio: the probe under way
        self._task_for = -1
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._probe_socket: socket.socket | None = None  # sync: the probe's connection
        self.peer: VerifiedPeer | None = None

    def attach(
        self,
        read_state: Callable[[bool], Any],
        wait_change: Callable[[Any], Awaitable[Any]] | None = None,
    ) -> None:
        """The channel to follow: how to read its state now and (aio) await a change."""
        self._read_state = read_state
        self._wait_change = wait_change

    # --- connectivity -------------------------------------------------------------------------

    def on_state(self, state: Any) -> None:
        """A state grpc reported (subscription callback, or the aio watcher)."""
        with self._changed:
            self._observe(state)
            self._changed.notify_all()

    def note(self, code: Any) -> None:
        """A call ended with ``code``. ``UNAVAILABLE`` is how grpc ends calls on a lost
        connection, possibly before its state shows the loss: the connection is treated as
        gone, so the next call waits for a check (of a new connection, or of the same one)."""
        if code is grpc.StatusCode.UNAVAILABLE:
            with self._lock:
                self._state = _IDLE

    def note_aio_call(self, call: Any) -> None:
        """:meth:`note` for an aio call once it is done (its code is only awaitable)."""

        async def noted() -> None:
            with contextlib.suppress(Exception):
                self.note(await call.code())

        task = asyncio.get_running_loop().create_task(noted())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _observe(self, state: Any) -> None:  # lock held
        if state is _READY and self._state is not _READY:
            self._connections += 1
        self._state = state

    def _read(self, try_to_connect: bool = False) -> Any:  # lock held
        if self._read_state is not None:
            self._observe(self._read_state(try_to_connect))
        return self._state

    def _verified(self) -> bool:  # lock held
        return (
            self._state is _READY
            and self._verified_for == self._connections
            and self.peer is not None
        )

    @property
    def needed(self) -> bool:
        """Whether a call must wait for a check: the channel is not ``READY`` now, or it is on
        a connection no check verified."""
        with self._lock:
            self._read()
            return not self._verified()

    def _settle(self, connection: int, peer: VerifiedPeer) -> bool:  # lock held
        """Record ``peer`` for ``connection`` if the channel is still on that connection."""
        self._read()
        if self._state is _READY and self._connections == connection:
            self._verified_for = max(self._verified_for, connection)
            self.peer = peer
            return True
        return False

    def _limit(self, timeout: float | None) -> tuple[float, bool]:
        """Seconds the check may take, and whether the call's deadline (not the check's own
        timeout) sets them."""
        if timeout is not None and timeout < self._timeout:
            return max(timeout, 0.0), True
        return self._timeout, False

    @staticmethod
    def _unconnected(state: Any, wait_for_ready: bool) -> None:
        """Fail a call that cannot wait for a connection (as grpc fails it)."""
        if state is _SHUTDOWN:
            raise _closed()
        if state is _FAILURE and not wait_for_ready:
            raise ServerIdentityError(grpc.StatusCode.UNAVAILABLE, "no connection to the server")

    # --- sync ---------------------------------------------------------------------------------

    def verify(self, timeout: float | None = None, *, wait_for_ready: bool = False) -> VerifiedPeer:
        """Wait until the channel is on a verified connection (connect, then probe); one probe
        at a time. Waiting for another caller's probe, for grpc to connect and for this probe
        all count against one deadline."""
        limit, by_call = self._limit(timeout)
        deadline = time.monotonic() + limit
        if not self._probing.acquire(timeout=limit):
            raise _late(by_call)
        try:
            while True:
                with self._changed:
                    state = self._read(try_to_connect=True)
                    if self._verified():
                        assert self.peer is not None
                        return self.peer
                    connection = self._connections
                    if state is not _READY:
                        self._unconnected(state, wait_for_ready)
                        left = deadline - time.monotonic()
                        if left <= 0:
                            raise _late(by_call)
                        self._changed.wait(min(left, _POLL))
                        continue
                peer = self._probe(deadline, by_call)
                with self._lock:
                    if self._settle(connection, peer):
                        return peer
        finally:
            self._probing.release()

    def _probe(self, deadline: float, by_call: bool) -> VerifiedPeer:
        left = deadline - time.monotonic()
        if left <= 0:
            raise _late(by_call)
        reached: Any = None  # the address the probe connected to, for the log
        try:
            with (
                _connect(self._host, self._port, deadline, self._probing_on) as raw,
                self._context.wrap_socket(
                    raw, server_hostname=self._sni, do_handshake_on_connect=False
                ) as tls,
            ):
                self._probing_on(tls)  # the socket connected above is detached into it
                with contextlib.suppress(OSError):
                    reached = tls.getpeername()
                left = deadline - time.monotonic()
                if left <= 0:
                    raise _late(by_call)
                tls.settimeout(left)
                # CPython bounds the whole handshake by the socket timeout; the timer bounds it
                # whatever the ssl module does (an implementation whose timeout restarts on
                # every byte would let a server trickle its handshake past the deadline)
                cut = threading.Timer(left, _cut, (tls,))
                cut.daemon = True
                cut.start()
                try:
                    tls.do_handshake()
                finally:
                    cut.cancel()
                peer = peer_of(tls)
        except ServerIdentityError:
            raise
        except ssl.SSLCertVerificationError as exc:  # includes PeerRejected
            raise _rejected() from exc
        except (OSError, ValueError) as exc:
            if self._closed:  # close() cut it
                raise _closed() from exc
            late = time.monotonic() >= deadline
            self._log_failure(reached, "took too long" if late else type(exc).__name__)
            raise (_late(by_call) if late else _unchecked()) from exc
        finally:
            with self._lock:
                self._probe_socket = None
        if peer is None:  # pragma: no cover - a ZeroTrustSSLContext always sets it
            raise ServerIdentityError(grpc.StatusCode.UNAUTHENTICATED, "server identity unknown")
        return peer

    def _probing_on(self, sock: socket.socket) -> None:
        """The probe's connection, for :meth:`close` to cut (at once if it ran already)."""
        with self._lock:
            self._probe_socket = sock
            closed = self._closed
        if closed:
            _cut(sock)

    # --- asyncio ------------------------------------------------------------------------------

    async def averify(
        self, timeout: float | None = None, *, wait_for_ready: bool = False
    ) -> VerifiedPeer:
        """:meth:`verify` on the event loop: no thread is used. Concurrent calls share one
        probe (of the same connection); each waits for it no longer than its own deadline,
        and the probe itself is bounded by the check timeout."""
        limit, by_call = self._limit(timeout)
        deadline = time.monotonic() + limit
        while True:
            with self._lock:
                state = self._read(try_to_connect=True)
                if self._verified():
                    assert self.peer is not None
                    return self.peer
                connection = self._connections
            left = deadline - time.monotonic()
            if left <= 0:
                raise _late(by_call)
            try:
                if state is _READY:
                    await wait_for(asyncio.shield(self._probe_task(connection)), left)
                    continue
                self._unconnected(state, wait_for_ready)
                if self._wait_change is not None:
                    await wait_for(self._wait_change(state), min(left, self._timeout))
                else:  # pragma: no cover - channels always attach
                    await asyncio.sleep(min(left, _POLL))
            except asyncio.TimeoutError:
                raise _late(by_call) from None

    def _probe_task(self, connection: int) -> asyncio.Task[VerifiedPeer]:
        task = self._task
        if task is None or task.done() or self._task_for != connection:
            task = asyncio.get_running_loop().create_task(self._aprobe(connection))
            task.add_done_callback(_retrieve)
            self._task, self._task_for = task, connection
        return task

    async def _aprobe(self, connection: int) -> VerifiedPeer:
        """One probe on the loop (asyncio streams with the zerotrust context), bounded by the
        check timeout; a success is recorded even if every caller waiting for it gave up."""
        writer: asyncio.StreamWriter | None = None
        try:
            _, writer = await wait_for(
                asyncio.open_connection(
                    self._host,
                    self._port,
                    ssl=self._context,
                    server_hostname=self._sni or "",
                    ssl_handshake_timeout=self._timeout,
                ),
                self._timeout,
            )
            peer = peer_of(writer)
        except ssl.SSLCertVerificationError as exc:  # includes PeerRejected
            raise _rejected() from exc
        except asyncio.TimeoutError as exc:
            self._log_failure(None, "took too long")
            raise _late(False) from exc
        except (OSError, ValueError) as exc:
            self._log_failure(None, type(exc).__name__)
            raise _unchecked() from exc
        finally:
            if writer is not None:
                writer.transport.abort()
        if peer is None:  # pragma: no cover - a ZeroTrustSSLContext always sets it
            raise ServerIdentityError(grpc.StatusCode.UNAUTHENTICATED, "server identity unknown")
        with self._lock:
            self._settle(connection, peer)
        return peer

    def _log_failure(self, reached: Any, what: str) -> None:
        """A probe that ended without an answer (a refused identity is logged by the TLS
        context): which server it reached, if it connected, says where to look."""
        where = ""
        if reached:
            address = f"[{reached[0]}]" if ":" in str(reached[0]) else reached[0]
            where = f" (connected to {address}:{reached[1]})"
        _log.warning(
            "zerotrust: the server identity check of %s:%s%s failed: %s",
            self._host,
            self._port,
            where,
            what,
        )

    def close(self) -> None:
        """Stop a probe under way (the channel is closing): a sync probe's connection is cut,
        and the calls waiting for it end ``CANCELLED``, as grpc ends the calls of a closed
        channel; aio: the probe task and pending notes are cancelled."""
        with self._lock:
            self._closed = True
            sock = self._probe_socket
        if sock is not None:
            _cut(sock)
        tasks = [*self._tasks, *([self._task] if self._task is not None else [])]
        for task in tasks:
            task.cancel()


_AddrInfo = tuple[Any, Any, int, str, Any]


class _Resolution:
    """One ``getaddrinfo`` under way, and its answer once it is done."""

    __slots__ = ("addresses", "done", "error")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.addresses: list[_AddrInfo] = []
        self.error: OSError | None = None


class _Resolver:
    """The system resolver for the sync probes, within each probe's deadline.

    ``getaddrinfo`` cannot be interrupted, so it runs on a daemon thread and a probe waits for
    it no longer than its deadline. A name already being resolved is not resolved again: the
    probe waits for the resolution under way (a resolver that never answers holds one thread
    per name, not one per call), and at most ``limit`` names are resolved at once (a probe
    waits for one to end, within its deadline). Answers are not kept: each probe resolves
    anew, as ``socket.create_connection`` does.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._changed = threading.Condition()
        self._pending: dict[tuple[str, int], _Resolution] = {}

    def resolve(self, host: str, port: int, deadline: float) -> list[_AddrInfo]:
        """The addresses of ``host`` (``socket.create_connection``'s query); raises
        ``TimeoutError`` at ``deadline`` (monotonic time), ``OSError`` as the resolver does."""
        if _is_ip(host):  # nothing to ask a resolver
            return socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST)
        key = (host, port)
        with self._changed:
            while (resolution := self._pending.get(key)) is None:
                if len(self._pending) < self._limit:
                    resolution = self._pending[key] = _Resolution()
                    threading.Thread(
                        target=self._run,
                        args=(key, resolution),
                        name="zerotrust-grpc-resolve",
                        daemon=True,
                    ).start()
                    break
                left = deadline - time.monotonic()
                if left <= 0 or not self._changed.wait(left):
                    raise TimeoutError(f"no name resolution of {host} could start in time")
        if not resolution.done.wait(max(deadline - time.monotonic(), 0.0)):
            raise TimeoutError(f"resolving {host} took too long")
        if resolution.error is not None:
            raise resolution.error
        return resolution.addresses

    def _run(self, key: tuple[str, int], resolution: _Resolution) -> None:
        try:
            resolution.addresses = socket.getaddrinfo(*key, 0, socket.SOCK_STREAM)
        except OSError as exc:
            resolution.error = exc
        except Exception as exc:  # whatever a resolver raises: no address
            resolution.error = OSError(f"name resolution failed: {type(exc).__name__}")
        finally:
            with self._changed:
                del self._pending[key]
                self._changed.notify_all()
            resolution.done.set()


_RESOLVER = _Resolver(_MAX_RESOLVING)


def _connect(
    host: str, port: int, deadline: float, opened: Callable[[socket.socket], None]
) -> socket.socket:
    """``socket.create_connection((host, port))`` within ``deadline`` (monotonic time),
    name resolution included: each address in turn, with the time that is left (``opened``
    is told of each socket before it connects)."""
    errors: list[OSError] = []
    for family, kind, proto, _, address in _RESOLVER.resolve(host, port, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"connecting to {host} took too long")
        sock = socket.socket(family, kind, proto)
        try:
            opened(sock)
            sock.settimeout(left)
            sock.connect(address)
        except OSError as exc:
            sock.close()
            errors.append(exc)
            continue
        return sock
    raise errors[0] if errors else OSError(f"no address for {host}")


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark a probe's outcome as seen (its waiters may all have given up)."""
    if not task.cancelled():
        task.exception()


def _rejected() -> ServerIdentityError:
    return ServerIdentityError(grpc.StatusCode.UNAUTHENTICATED, "server identity rejected")


def _unchecked() -> ServerIdentityError:
    return ServerIdentityError(grpc.StatusCode.UNAVAILABLE, "server identity could not be checked")


def _closed() -> ServerIdentityError:
    return ServerIdentityError(grpc.StatusCode.CANCELLED, "the channel is closed")


def _late(by_call: bool) -> ServerIdentityError:
    if by_call:
        return ServerIdentityError(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            "deadline exceeded while the server identity was checked",
        )
    return ServerIdentityError(
        grpc.StatusCode.UNAVAILABLE, "server identity could not be checked in time"
    )


def _cut(sock: socket.socket) -> None:
    """End a probe's connection from another thread (its handshake then fails at once)."""
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)  # not SSLSocket's: it drops the TLS object
