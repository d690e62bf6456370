"""mTLS ``ssl.SSLContext`` objects built from SVID and bundle sources.

The standard library has no per-handshake verification hook, so a zerotrust context does three
things on top of a plain context:

* OpenSSL does a first pass against every configured authority (TLS >= 1.2, peer certificate
  required on both sides, hostname checks off: peers are named by SPIFFE ID, not DNS);
* right after each handshake the peer's chain is re-verified with
  :func:`~zerotrust.x509.verify.verify_x509_svid` against the bundle of the peer's **own**
  trust domain and the authorizer is applied. A refusal aborts the handshake with
  :class:`PeerRejected` (an :class:`ssl.SSLCertVerificationError`, so servers and HTTP clients
  treat it as a TLS failure). The verified peer is available as ``sslsock.zerotrust_peer``;
* before each new connection is set up, the context compares the sources' snapshots with what
  it has loaded and loads a rotated SVID (or new authorities) first, so rotation needs no
  restart. Loading and connection set-up share a lock, so no connection sees a torn pair.

Works wherever the server or client takes an ``SSLContext``: blocking sockets, asyncio and
anything built on them (uvicorn, hypercorn, httpx, ...).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import ssl
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from cryptography import x509

from zerotrust._clock import SYSTEM_CLOCK, Clock
from zerotrust._text import escaped
from zerotrust.errors import (
    CertificateExpired,
    CertificateNotYetValid,
    ConfigurationError,
    MalformedCertificate,
    MissingCredentials,
    SvidProfileViolation,
    UntrustedCertificate,
    ZeroTrustError,
)
from zerotrust.identity.match import Matcher
from zerotrust.x509._certs import certs_to_pem, fingerprint
from zerotrust.x509.bundle import BundleSet, TrustBundle
from zerotrust.x509.peer import PeerRejected, PeerVerifier, peer_chain_der
from zerotrust.x509.sources import X509BundleSource, X509SvidSource
from zerotrust.x509.svid import X509Svid
from zerotrust.x509.verify import Role, VerifiedPeer, leaf_spiffe_id

__all__ = [
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "HandshakeRefusal",
    "RefusalListener",
    "ZeroTrustSSLContext",
    "client_ssl_context",
    "peer_of",
    "server_ssl_context",
]

_log = logging.getLogger("zerotrust.tls")

#: Seconds a server's TLS handshake on a blocking socket may take (see server_ssl_context).
DEFAULT_HANDSHAKE_TIMEOUT: Final = 10.0

# Besides certificate verification errors, the OpenSSL reasons for a handshake refused over the
# peer's certificate (network errors and clients that simply leave are not refusals, and an
# alert from the peer means the peer refused us).
_REFUSED_BY_REASON = {
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": (MissingCredentials, "the peer sent no certificate"),
    # a certificate without its private key (CertificateVerify does not verify)
    "BAD_SIGNATURE": (UntrustedCertificate, "the peer did not prove it holds its key"),
}
_X509_V_ERR_CERT_NOT_YET_VALID = 9
_X509_V_ERR_CERT_HAS_EXPIRED = 10
_X509_V_ERR_INVALID_PURPOSE = 26
_X509_V_ERR_EC_KEY_EXPLICIT_PARAMS = 94


@dataclass(frozen=True, slots=True)
class HandshakeRefusal:
    """A TLS handshake refused over the peer's certificate, as refusal listeners receive it.

    ``error`` is the precise zerotrust error (its ``code`` says why); ``role`` is who was
    refused (``"client"`` on a server context); ``remote_addr`` is known for blocking sockets
    only (asyncio servers do not tell the SSL layer); ``cert_fingerprint`` (SHA-256 of the
    leaf) and ``spiffe_id`` are set when the peer's certificate could be read. Never the
    certificate itself.
    """

    error: ZeroTrustError
    role: Role
    remote_addr: str | None = None
    cert_fingerprint: str | None = None
    spiffe_id: str | None = None


#: Called once for each refused handshake, on the thread that ran it; must not block. An
#: exception it raises is logged, and the refusal stands.
RefusalListener = Callable[[HandshakeRefusal], None]


def _refusal_error(exc: BaseException) -> ZeroTrustError | None:
    if isinstance(exc, PeerRejected):
        return exc.error
    if isinstance(exc, ssl.SSLCertVerificationError):  # OpenSSL's first pass
        message = str(getattr(exc, "verify_message", "") or "certificate verification failed")
        code = getattr(exc, "verify_code", None)
        if code == _X509_V_ERR_CERT_HAS_EXPIRED:
            return CertificateExpired(message)
        if code == _X509_V_ERR_CERT_NOT_YET_VALID:
            return CertificateNotYetValid(message)
        if code == _X509_V_ERR_INVALID_PURPOSE:  # an extended key usage for the other side
            return SvidProfileViolation("extended_key_usage", message)
        if code == _X509_V_ERR_EC_KEY_EXPLICIT_PARAMS:  # as verify_x509_svid refuses it
            return MalformedCertificate(message)
        return UntrustedCertificate(message)
    known = _REFUSED_BY_REASON.get(getattr(exc, "reason", None) or "")
    if isinstance(exc, ssl.SSLError) and known is not None:
        error_class, message = known
        return error_class(message)
    return None


def _leaf_facts(conn: Any) -> tuple[str | None, str | None]:
    """The peer leaf's fingerprint and SPIFFE ID, if it can be read; never raises."""
    try:
        chain = peer_chain_der(conn)
        if not chain:
            return None, None
        digest = hashlib.sha256(chain[0]).hexdigest()
    except Exception:  # a failed handshake may have no peer certificate to read
        return None, None
    try:
        return digest, str(leaf_spiffe_id(x509.load_der_x509_certificate(chain[0])))
    except Exception:  # the refusal may be about exactly this: report what is known
        return digest, None


def _report(conn: Any, exc: BaseException) -> None:
    """Log a refused handshake and tell the context's listeners, once per connection. Never
    raises: the handshake's own error must reach the server unchanged."""
    with contextlib.suppress(Exception):  # a failing log handler cannot change a refusal
        _report_once(conn, exc)


def _report_once(conn: Any, exc: BaseException) -> None:
    if conn.__dict__.get("_zt_reported"):
        return
    error = _refusal_error(exc)
    if error is None:
        return
    conn._zt_reported = True
    context = conn.context
    remote = conn.__dict__.get("_zt_remote")  # read before the handshake: see do_handshake
    if remote is None:
        with contextlib.suppress(Exception):
            address = conn.getpeername() if isinstance(conn, ssl.SSLSocket) else None
            remote = str(address[0]) if address else None
    digest, spiffe_id = _leaf_facts(conn)
    verifier = getattr(context, "zerotrust_verifier", None)
    role: Role = verifier.role if verifier is not None else "client"
    refusal = HandshakeRefusal(error, role, remote, digest, spiffe_id)
    _log.info(
        "zerotrust: TLS handshake refused (%s %s): %s: %s; fingerprint=%s",
        role,
        remote or "?",
        error.code,
        escaped(str(error), 1024),
        digest,
    )
    for listener in getattr(context, "_zt_refusal_listeners", ()):
        try:
            listener(refusal)
        except Exception:  # noqa: PERF203 - the refusal stands whatever a listener does
            _log.exception("zerotrust: TLS refusal listener %r failed", listener)


def peer_of(connection: object) -> VerifiedPeer | None:
    """The peer a zerotrust context verified on ``connection``, or ``None`` (no handshake yet,
    or a connection made without a zerotrust context).

    ``connection`` is an :class:`ssl.SSLSocket`, an :class:`ssl.SSLObject`, or anything with
    asyncio's ``get_extra_info("ssl_object")`` (a transport or ``StreamWriter``). The same
    value is the connection's ``zerotrust_peer`` attribute; this is its typed spelling.
    """
    get_extra_info = getattr(connection, "get_extra_info", None)
    if callable(get_extra_info) and not isinstance(connection, (ssl.SSLSocket, ssl.SSLObject)):
        connection = get_extra_info("ssl_object")
    peer = getattr(connection, "zerotrust_peer", None)
    return peer if isinstance(peer, VerifiedPeer) else None


class _VerifyingMixin:
    zerotrust_peer: VerifiedPeer | None = None

    def _zt_after_handshake(self, context: Any) -> None:
        if self.zerotrust_peer is not None:
            return
        verifier = getattr(context, "zerotrust_verifier", None)
        if verifier is None:  # a context swap to a foreign context: refuse, never skip
            raise PeerRejected(ConfigurationError("connection lost its zerotrust context"))
        try:
            peer = verifier.verify(peer_chain_der(self))
        except ZeroTrustError as exc:
            # a client must not offer the same session again (a resumed one whose server
            # certificate expired would fail the same way on every connection)
            forget = getattr(context, "_zt_forget_session", None)
            if forget is not None:
                forget(getattr(self, "server_hostname", None))
            raise PeerRejected(exc) from None
        self.zerotrust_peer = peer
        remember = getattr(context, "_zt_remember_session", None)
        if remember is not None:
            remember(
                getattr(self, "server_hostname", None),
                getattr(self, "_sslobj", None),
                getattr(self, "_zt_generation", None),
                peer.not_after,
            )


# OpenSSL also completes a handshake on its own when application data is read or written
# first (a socket wrapped with do_handshake_on_connect=False): no data moves either way before
# the peer passed the check, so every read and write finishes the handshake explicitly first.


class _VerifyingSSLSocket(_VerifyingMixin, ssl.SSLSocket):
    def do_handshake(self, block: bool = False) -> None:
        # A blocking server socket (gunicorn, werkzeug) would wait forever for a client that
        # stalls mid-handshake, holding a worker: the handshake gets a deadline of its own.
        limit = getattr(self.context, "_zt_handshake_timeout", None)
        bounded = limit is not None and self.server_side and self.gettimeout() is None
        if bounded:
            self.settimeout(limit)
        if "_zt_remote" not in self.__dict__:
            # the peer's address for the audit of a refusal, read while the connection is
            # sure to be there: a client that resets it as soon as it is refused must not
            # take its address out of the audit trail
            with contextlib.suppress(Exception):
                self._zt_remote = str(self.getpeername()[0])
        try:
            super().do_handshake(block)
            self._zt_after_handshake(self.context)
        except ssl.SSLError as exc:
            _report(self, exc)
            raise
        finally:
            if bounded:
                self.settimeout(None)

    def _zt_verified(self) -> None:
        if self.zerotrust_peer is None and self._sslobj is not None:  # type: ignore[attr-defined]
            self.do_handshake()

    def read(self, len: int = 1024, buffer: Any = None) -> Any:
        try:
            self._zt_verified()
        except ssl.SSLEOFError:  # the peer left during the handshake: as read() reports it
            if not self.suppress_ragged_eofs:  # type: ignore[attr-defined]
                raise
            return 0 if buffer is not None else b""
        return super().read(len, buffer)

    def write(self, data: Any) -> int:
        self._zt_verified()
        return super().write(data)

    def send(self, data: Any, flags: int = 0) -> int:
        self._zt_verified()
        return super().send(data, flags)


class _VerifyingSSLObject(_VerifyingMixin, ssl.SSLObject):
    def do_handshake(self) -> None:
        try:
            super().do_handshake()
            self._zt_after_handshake(self.context)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):  # asyncio: more bytes to come
            raise
        except ssl.SSLError as exc:
            _report(self, exc)
            raise

    def read(self, len: int = 1024, buffer: Any = None) -> Any:
        if self.zerotrust_peer is None:
            self.do_handshake()
        return super().read(len, buffer)

    def write(self, data: Any) -> int:
        if self.zerotrust_peer is None:
            self.do_handshake()
        return super().write(data)


class ZeroTrustSSLContext(ssl.SSLContext):
    """An :class:`ssl.SSLContext` that verifies and authorizes the peer's SPIFFE ID.

    Build it with :func:`server_ssl_context` or :func:`client_ssl_context`.
    """

    sslsocket_class = _VerifyingSSLSocket
    sslobject_class = _VerifyingSSLObject

    zerotrust_verifier: PeerVerifier
    _zt_svid_source: X509SvidSource | None
    _zt_bundle_source: X509BundleSource
    _zt_lock: threading.Lock
    _zt_svid: X509Svid | None
    _zt_bundles: BundleSet | None
    #: Per server name: the SSL object of the last verified connection (whose session is
    #: offered) and when the server's certificate chain it verified expires.
    _zt_sessions: OrderedDict[str, tuple[Any, datetime]]
    #: Seconds a server handshake on a blocking socket may take (``None``: no limit).
    _zt_handshake_timeout: float | None = None
    #: Counts the SVID and bundle snapshots loaded: a connection carries the one it was made
    #: with, and only a connection of the current one may leave a session to resume.
    _zt_generation: int
    _zt_refusal_listeners: tuple[RefusalListener, ...] = ()

    #: How many servers' TLS sessions a client context keeps for resumption.
    max_sessions = 256

    def _zt_setup(
        self,
        svid: X509SvidSource | None,
        bundles: X509BundleSource,
        verifier: PeerVerifier,
    ) -> None:
        self.zerotrust_verifier = verifier
        self._zt_svid_source = svid
        self._zt_bundle_source = bundles
        self._zt_lock = threading.Lock()
        self._zt_svid = None
        self._zt_bundles = None
        self._zt_sessions = OrderedDict()
        self._zt_generation = 0
        self.refresh()

    def refresh(self) -> None:
        """Load the sources' current snapshots if they changed (done before every connection)."""
        source = self._zt_svid_source
        svid = source.get_x509_svid() if source is not None else None
        bundles = self._zt_bundle_source.get_bundle_set()
        if svid is self._zt_svid and bundles is self._zt_bundles:
            return
        with self._zt_lock:
            # Read again under the lock: a slower refresh must never load a snapshot older
            # than the one another connection has loaded meanwhile.
            svid = source.get_x509_svid() if source is not None else None
            bundles = self._zt_bundle_source.get_bundle_set()
            if bundles is not self._zt_bundles:
                authorities = bundles.all_x509_authorities()
                if not authorities and self._zt_bundles is None:
                    raise ConfigurationError("the bundle source has no X.509 authorities")
                # OpenSSL's store only grows; removed authorities are refused by the
                # authoritative per-trust-domain check after the handshake (which refuses
                # every peer once all of them are withdrawn).
                if authorities:
                    _load_authorities(self, authorities)
                self._zt_bundles = bundles
            if svid is not None and svid is not self._zt_svid:
                _load_svid(self, svid)
                self._zt_svid = svid
            # sessions of the old SVID or bundles would resume the old identity: forget them,
            # and those of connections made before now (still handshaking) too
            self._zt_sessions.clear()
            self._zt_generation += 1

    def add_refusal_listener(self, listener: RefusalListener) -> None:
        """Call ``listener(HandshakeRefusal)`` for every handshake this context refuses over
        the peer's certificate (e.g. ``guard.audit_handshake``, to audit them)."""
        if not callable(listener):
            raise ConfigurationError("a refusal listener must be callable")
        with self._zt_lock:
            self._zt_refusal_listeners = (*self._zt_refusal_listeners, listener)

    @property
    def current_svid(self) -> X509Svid | None:
        """The SVID presented by new connections."""
        return self._zt_svid

    # Every connection's SSL object is created through these two private hooks (sockets at
    # wrap or connect time, memory BIOs for asyncio): refresh first, then create under the
    # lock so a concurrent reload can never hand out a certificate without its key.
    def _wrap_socket(self, *args: Any, **kwargs: Any) -> Any:
        self.refresh()
        with self._zt_lock:
            if len(args) >= 3 and not args[1]:  # (sock, server_side, server_hostname)
                self._zt_resume(args[2], kwargs)
            self._zt_stamp(kwargs)
            return super()._wrap_socket(*args, **kwargs)  # type: ignore[misc]

    def _wrap_bio(self, *args: Any, **kwargs: Any) -> Any:
        self.refresh()
        with self._zt_lock:
            if not kwargs.get("server_side", args[2] if len(args) > 2 else False):
                hostname = kwargs.get("server_hostname", args[3] if len(args) > 3 else None)
                self._zt_resume(hostname, kwargs)
            self._zt_stamp(kwargs)
            return super()._wrap_bio(*args, **kwargs)  # type: ignore[misc]

    def _zt_stamp(self, kwargs: dict[str, Any]) -> None:
        """Mark the connection (the ssl module's Python object) with the snapshot it uses."""
        owner = kwargs.get("owner")
        if owner is not None:
            with contextlib.suppress(AttributeError):  # an owner without attributes: none
                owner._zt_generation = self._zt_generation

    # TLS session resumption for clients. HTTP clients never pass ``session=``, so the context
    # remembers the last verified connection per server name and offers its session (TLS 1.3
    # tickets arrive after the handshake, so the session is read when the next connection is
    # made). A resumed session is verified again like any other (see PeerVerifier); one whose
    # server certificate has expired is no longer offered, and a refused connection leaves
    # nothing to offer: the next one makes a full handshake and sees the server's current
    # certificate.
    def _zt_remember_session(
        self,
        server_hostname: str | None,
        sslobj: Any,
        generation: int | None,
        not_after: datetime,
    ) -> None:
        if self.protocol != ssl.PROTOCOL_TLS_CLIENT or not server_hostname or sslobj is None:
            return
        with self._zt_lock:
            if generation != self._zt_generation:  # made with an SVID or bundles since replaced
                return
            self._zt_sessions[server_hostname] = (sslobj, not_after)
            self._zt_sessions.move_to_end(server_hostname)
            while len(self._zt_sessions) > self.max_sessions:
                self._zt_sessions.popitem(last=False)

    def _zt_forget_session(self, server_hostname: str | None) -> None:
        if server_hostname:
            with self._zt_lock:
                self._zt_sessions.pop(server_hostname, None)

    def _zt_resume(self, server_hostname: object, kwargs: dict[str, Any]) -> None:
        if kwargs.get("session") is not None or not isinstance(server_hostname, str):
            return
        remembered = self._zt_sessions.get(server_hostname)
        if remembered is None:
            return
        previous, not_after = remembered
        if not_after <= self.zerotrust_verifier.clock.now():
            del self._zt_sessions[server_hostname]  # it would resume an expired certificate
            return
        try:
            session = previous.session
        except (ValueError, OSError):  # pragma: no cover - defensive: a freed SSL object
            session = None
        if session is not None and (session.has_ticket or session.id):
            kwargs["session"] = session


@contextlib.contextmanager
def _private_file(data: bytes) -> Iterator[str]:
    """A path to ``data`` that only this process can read: a memfd where available."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("zerotrust-svid", getattr(os, "MFD_CLOEXEC", 0))
        try:
            os.write(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="zerotrust-") as tmp:  # created 0700
        path = Path(tmp) / "svid.pem"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        yield str(path)


def _load_authorities(context: ssl.SSLContext, authorities: list[x509.Certificate]) -> None:
    """Add every authority OpenSSL can load to the context's trust store.

    OpenSSL refuses some certificates cryptography reads (a name attribute that is no string
    type, say). Loaded together, one such authority would fail every refresh: new connections
    would fail, for every trust domain, and a rotated SVID would never be loaded. It is then
    skipped and logged, and trusts nothing; the others are loaded one by one."""
    try:
        context.load_verify_locations(cadata=certs_to_pem(authorities).decode("ascii"))
        return
    except ssl.SSLError:
        pass
    for cert in authorities:
        try:
            context.load_verify_locations(cadata=certs_to_pem([cert]).decode("ascii"))
        except ssl.SSLError as exc:  # noqa: PERF203 - only once a whole set was refused
            _log.warning(
                "zerotrust: an X.509 authority OpenSSL cannot load is not trusted (%s): %s",
                fingerprint(cert)[:16],
                exc.reason or type(exc).__name__,
            )


def _load_svid(context: ZeroTrustSSLContext, svid: X509Svid) -> None:
    # OpenSSL keeps one certificate per key type and Python cannot empty a slot: after an
    # SVID of another key type, the old certificate would still be chosen for every peer that
    # accepts it, expired or not. Such a rotation needs a new context: refuse it loudly.
    loaded = context._zt_svid
    if loaded is not None:
        old = type(getattr(loaded, "private_key", None)).__name__
        new = type(getattr(svid, "private_key", None)).__name__
        if old != new:
            raise ConfigurationError(
                f"the SVID's key type changed ({old} to {new}): an SSL context keeps"
                " presenting the old certificate; build a new context"
            )
    with _private_file(svid.cert_chain_pem() + svid.private_key_pem()) as path:
        context.load_cert_chain(path)


def _as_svid_source(svid: X509SvidSource | X509Svid | None) -> X509SvidSource | None:
    if svid is None or isinstance(svid, X509Svid):
        return svid
    if not callable(getattr(svid, "get_x509_svid", None)):
        raise ConfigurationError("svid must be an X509Svid or have get_x509_svid()")
    return svid


def _as_bundle_source(bundles: X509BundleSource | TrustBundle | BundleSet) -> X509BundleSource:
    if not callable(getattr(bundles, "get_bundle_set", None)):
        raise ConfigurationError("bundles must be a TrustBundle, BundleSet or bundle source")
    return bundles


def _build(
    *,
    protocol: int,
    svid: X509SvidSource | X509Svid | None,
    bundles: X509BundleSource | TrustBundle | BundleSet,
    authorizer: Matcher,
    role: Role,
    clock: Clock,
    minimum_version: ssl.TLSVersion,
) -> ZeroTrustSSLContext:
    if authorizer is None or not callable(authorizer):
        raise ConfigurationError(
            "an authorizer is required: pass a matcher such as match.exact(...)"
            " or match.member_of(...)"
        )
    if minimum_version < ssl.TLSVersion.TLSv1_2:
        raise ConfigurationError("minimum_version below TLS 1.2 is not allowed")
    svid_source = _as_svid_source(svid)
    bundle_source = _as_bundle_source(bundles)
    ctx = ZeroTrustSSLContext(protocol)
    ctx.minimum_version = minimum_version
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    # A bundle may hold an intermediate CA as its authority (X509-SVID §6.1 only says SHOULD
    # be self-signed): OpenSSL then ends the path there instead of asking for a self-signed
    # root. The verification after the handshake, against the peer's own trust domain, is
    # the one that decides.
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    if protocol == ssl.PROTOCOL_TLS_CLIENT:
        # the peer is named by its SPIFFE ID, checked after the handshake
        ctx.check_hostname = False
    else:
        # No session resumption on servers: the stdlib cannot rotate session-ticket keys, so a
        # resumed session would keep presenting a certificate that has since been rotated.
        ctx.options |= ssl.OP_NO_TICKET
        ctx.num_tickets = 0
    verifier = PeerVerifier(bundle_source, authorizer, role=role, clock=clock)
    ctx._zt_setup(svid_source, bundle_source, verifier)
    return ctx


def server_ssl_context(
    svid: X509SvidSource | X509Svid,
    bundles: X509BundleSource | TrustBundle | BundleSet,
    *,
    authorizer: Matcher,
    clock: Clock = SYSTEM_CLOCK,
    minimum_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2,
    on_refusal: RefusalListener | None = None,
    handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
) -> ZeroTrustSSLContext:
    """A server context that requires a client X509-SVID accepted by ``authorizer``.

    Every refused handshake is logged (``zerotrust.tls``, INFO) and passed to ``on_refusal``
    (pass ``guard.audit_handshake`` to put it in the audit trail). On blocking sockets (the
    threads of gunicorn and werkzeug) a handshake must finish within ``handshake_timeout``
    seconds, so that a client stalling mid-handshake cannot hold a worker; ``None`` leaves
    it to the socket. asyncio servers set their own (``ssl_handshake_timeout``).
    """
    if svid is None:
        raise ConfigurationError("a server context needs the workload's SVID")
    if handshake_timeout is not None and (
        isinstance(handshake_timeout, bool)
        or not isinstance(handshake_timeout, (int, float))
        or not 0 < handshake_timeout <= 600
    ):
        raise ConfigurationError("handshake_timeout must be a number of seconds in (0, 600]")
    context = _build(
        protocol=ssl.PROTOCOL_TLS_SERVER,
        svid=svid,
        bundles=bundles,
        authorizer=authorizer,
        role="client",
        clock=clock,
        minimum_version=minimum_version,
    )
    context._zt_handshake_timeout = (
        float(handshake_timeout) if handshake_timeout is not None else None
    )
    if on_refusal is not None:
        context.add_refusal_listener(on_refusal)
    return context


def client_ssl_context(
    svid: X509SvidSource | X509Svid | None,
    bundles: X509BundleSource | TrustBundle | BundleSet,
    *,
    authorizer: Matcher,
    clock: Clock = SYSTEM_CLOCK,
    minimum_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2,
) -> ZeroTrustSSLContext:
    """A client context presenting ``svid`` (``None``: TLS only) and checking the server's ID."""
    return _build(
        protocol=ssl.PROTOCOL_TLS_CLIENT,
        svid=svid,
        bundles=bundles,
        authorizer=authorizer,
        role="server",
        clock=clock,
        minimum_version=minimum_version,
    )
