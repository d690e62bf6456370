"""zerotrust: zero-trust service-to-service calls.

Every call authenticated (SPIFFE X.509-SVIDs over mTLS, signed tokens), authorized and audited,
inside the service process. The names below are the supported public API.
"""

from zerotrust import errors, match
from zerotrust._clock import Clock, FixedClock, SystemClock
from zerotrust._version import __version__
from zerotrust.errors import (
    AuthenticationError,
    AuthorizationError,
    CertificateError,
    ConfigurationError,
    IdentityError,
    InvalidSpiffeId,
    SourceError,
    TokenError,
    ZeroTrustError,
)
from zerotrust.identity import Matcher, MatchResult, SpiffeId, TrustDomain
from zerotrust.sources.files import FileBundleSource, FileSvidSource
from zerotrust.x509 import (
    BundleSet,
    PeerRejected,
    PeerVerifier,
    RotatingBundleSource,
    RotatingSvidSource,
    TrustBundle,
    VerifiedPeer,
    X509BundleSource,
    X509Svid,
    X509SvidSource,
    ZeroTrustSSLContext,
    client_ssl_context,
    server_ssl_context,
    verify_peer_chain,
    verify_x509_svid,
)

__all__ = [
    "AuthenticationError",
    "AuthorizationError",
    "BundleSet",
    "CertificateError",
    "Clock",
    "ConfigurationError",
    "FileBundleSource",
    "FileSvidSource",
    "FixedClock",
    "IdentityError",
    "InvalidSpiffeId",
    "MatchResult",
    "Matcher",
    "PeerRejected",
    "PeerVerifier",
    "RotatingBundleSource",
    "RotatingSvidSource",
    "SourceError",
    "SpiffeId",
    "SystemClock",
    "TokenError",
    "TrustBundle",
    "TrustDomain",
    "VerifiedPeer",
    "X509BundleSource",
    "X509Svid",
    "X509SvidSource",
    "ZeroTrustError",
    "ZeroTrustSSLContext",
    "__version__",
    "client_ssl_context",
    "errors",
    "match",
    "server_ssl_context",
    "verify_peer_chain",
    "verify_x509_svid",
]
