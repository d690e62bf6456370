"""X.509 trust: bundles, SVIDs, SPIFFE peer verification and mTLS contexts."""

from zerotrust.x509.bundle import BundleSet, TrustBundle
from zerotrust.x509.peer import PeerRejected, PeerVerifier, peer_chain_der
from zerotrust.x509.sources import (
    RotatingBundleSource,
    RotatingSvidSource,
    X509BundleSource,
    X509SvidSource,
)
from zerotrust.x509.sslcontext import (
    HandshakeRefusal,
    RefusalListener,
    ZeroTrustSSLContext,
    client_ssl_context,
    peer_of,
    server_ssl_context,
)
from zerotrust.x509.svid import X509Svid
from zerotrust.x509.verify import VerifiedPeer, leaf_spiffe_id, verify_peer_chain, verify_x509_svid

__all__ = [
    "BundleSet",
    "HandshakeRefusal",
    "PeerRejected",
    "PeerVerifier",
    "RefusalListener",
    "RotatingBundleSource",
    "RotatingSvidSource",
    "TrustBundle",
    "VerifiedPeer",
    "X509BundleSource",
    "X509Svid",
    "X509SvidSource",
    "ZeroTrustSSLContext",
    "client_ssl_context",
    "leaf_spiffe_id",
    "peer_chain_der",
    "peer_of",
    "server_ssl_context",
    "verify_peer_chain",
    "verify_x509_svid",
]
