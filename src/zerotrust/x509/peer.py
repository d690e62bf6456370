"""Post-handshake peer authorization, shared by every TLS integration."""

from __future__ import annotations

import ssl
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from zerotrust._clock import SYSTEM_CLOCK, Clock
from zerotrust.errors import (
    AuthenticationError,
    MissingCredentials,
    PeerNotAuthorized,
    ZeroTrustError,
)
from zerotrust.identity.match import Matcher, decide
from zerotrust.x509._certs import fingerprint, load_der_chain
from zerotrust.x509.sources import X509BundleSource
from zerotrust.x509.verify import Role, VerifiedPeer, verify_x509_svid

__all__ = ["PeerRejected", "PeerVerifier", "peer_chain_der"]


class PeerRejected(AuthenticationError, ssl.SSLCertVerificationError):
    """A TLS handshake was aborted because the peer failed SPIFFE verification or authorization.

    It is an :class:`ssl.SSLCertVerificationError`, so TLS stacks treat it as a failed handshake;
    ``error`` is the precise zerotrust error and ``reason`` its ``code``.
    """

    code = "peer_rejected"
    public_message = "peer rejected"
    http_status = 401
    grpc_status = "UNAUTHENTICATED"

    def __init__(self, error: ZeroTrustError) -> None:
        super().__init__(f"{error.code}: {error}")
        self.error = error
        self.reason = error.code
        self.verify_message = f"{error.code}: {error}"


class PeerVerifier:
    """Verify a peer chain as an X509-SVID of its own trust domain, then apply the authorizer.

    A resumed TLS session only carries the peer's leaf, not the intermediates it sent in the
    full handshake. The verifier remembers the intermediates of leaves it has accepted (bounded,
    by leaf fingerprint) and re-verifies a bare leaf with them, against the *current* bundles,
    clock and authorizer: resumption is never a way around a removed authority or an expiry.
    """

    __slots__ = ("_authorizer", "_bundles", "_clock", "_intermediates", "_lock", "_role")

    #: How many leaves' intermediates are remembered for session resumption.
    max_remembered = 4096

    def __init__(
        self,
        bundles: X509BundleSource,
        authorizer: Matcher,
        *,
        role: Role,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._bundles = bundles
        self._authorizer = authorizer
        self._role = role
        self._clock = clock
        self._intermediates: OrderedDict[str, tuple[x509.Certificate, ...]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def authorizer(self) -> Matcher:
        """The matcher a verified peer's SPIFFE ID must satisfy, else :meth:`verify` raises
        :class:`~zerotrust.errors.PeerNotAuthorized`."""
        return self._authorizer

    @property
    def clock(self) -> Clock:
        """The clock every check of :meth:`verify` reads."""
        return self._clock

    def verify(self, chain: Sequence[bytes | x509.Certificate]) -> VerifiedPeer:
        """Return the verified peer, or raise a ``CertificateError`` / ``PeerNotAuthorized``
        (a ``ConfigurationError`` when the authorizer returns anything but a ``MatchResult``)."""
        certs = load_der_chain(chain)
        leaf_fp = fingerprint(certs[0])
        if len(certs) == 1:
            with self._lock:
                remembered = self._intermediates.get(leaf_fp)
            if remembered:
                certs = [certs[0], *remembered]
        peer = verify_x509_svid(certs, self._bundles, now=self._clock.now(), role=self._role)
        result = decide(self._authorizer, peer.spiffe_id)  # only a MatchResult decides
        if not result:
            raise PeerNotAuthorized(f"{peer.spiffe_id} refused: {result.reason}: {result.detail}")
        intermediates = peer.chain[1:-1]
        if intermediates:
            with self._lock:
                self._intermediates[leaf_fp] = intermediates
                self._intermediates.move_to_end(leaf_fp)
                while len(self._intermediates) > self.max_remembered:
                    self._intermediates.popitem(last=False)
        return peer

    @property
    def role(self) -> Role:
        """Whom this verifier checks: ``"client"`` (on servers) or ``"server"``."""
        return self._role

    def __repr__(self) -> str:
        return f"PeerVerifier(role={self._role!r}, authorizer={self._authorizer!r})"


def peer_chain_der(conn: Any) -> list[bytes]:
    """The chain the peer sent on an established ``SSLSocket``/``SSLObject``, leaf first, as DER.

    A peer that sent no certificate (a server asking for one without requiring it) is
    :class:`~zerotrust.errors.MissingCredentials`, never an empty chain."""
    chain = _unverified_chain(conn)
    # On the server side the standard library puts the peer's certificate first, None when
    # there is none: such a chain, [None], is no chain
    if chain and chain[0] is not None:
        return [c if isinstance(c, bytes) else c.public_bytes(ssl._ssl.ENCODING_DER) for c in chain]  # type: ignore[attr-defined]
    leaf = conn.getpeercert(binary_form=True)
    if not leaf:
        raise MissingCredentials("the peer presented no certificate")
    return [leaf]


def verified_chain_der(conn: Any) -> list[bytes]:
    """The peer's chain to hand to an application, leaf first, as DER.

    On a connection a zerotrust context verified: the certificates of the verified path, in
    path order, and its bundle authority only when the peer sent it. A peer may send
    certificates path building never used (TLS 1.3 allows extra ones in any order, RFC 8446
    4.4.2): nothing verified them, so they are left out. On any other connection: the chain
    the peer sent (:func:`peer_chain_der`)."""
    peer = getattr(conn, "zerotrust_peer", None)
    if not isinstance(peer, VerifiedPeer):
        return peer_chain_der(conn)
    path = [cert.public_bytes(Encoding.DER) for cert in peer.chain]
    if len(path) < 2:
        return path
    try:
        sent = set(peer_chain_der(conn))
    except MissingCredentials:  # pragma: no cover - a verified peer sent a certificate
        sent = set()
    return path if path[-1] in sent else path[:-1]


def _unverified_chain(conn: Any) -> Any:
    """The peer's chain as the standard library reads it: certificate objects from the
    ``_sslobj`` (Python 3.10+), or DER from the public method (3.13+), which fails when the
    peer sent no certificate; ``None`` when neither can be read."""
    private = getattr(getattr(conn, "_sslobj", None), "get_unverified_chain", None)
    if private is not None:
        return private()
    public = getattr(conn, "get_unverified_chain", None)
    if public is None:
        return None
    try:
        return public()
    except AttributeError:  # its [None] mapped to DER: the peer sent no certificate
        return None
