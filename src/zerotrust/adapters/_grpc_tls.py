"""TLS material for grpc servers: dynamic server credentials from SVID and bundle sources,
and client chains from grpc's auth context, verified with zerotrust."""

from __future__ import annotations

import functools
import logging
import ssl
import threading
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, Final
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from zerotrust.errors import ConfigurationError, MissingDependencyError, ZeroTrustError

try:
    import grpc  # type: ignore[import-untyped,unused-ignore]
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError("grpcio", "grpc", error=exc) from exc

from zerotrust.authn.authenticate import Authenticator
from zerotrust.x509._certs import certs_to_pem
from zerotrust.x509.bundle import BundleSet, TrustBundle
from zerotrust.x509.sources import X509BundleSource, X509SvidSource
from zerotrust.x509.svid import X509Svid
from zerotrust.x509.verify import VerifiedPeer, verify_x509_svid

__all__ = ["PeerCache", "remote_address", "server_credentials"]

_MAX_CACHED: Final = 4096
#: ... and at most this many bytes of their certificates (PEM keys and DER chains): a caller
#: with a valid SVID may pad its chain with certificates of no use to it.
_MAX_CACHED_BYTES: Final = 32 * 1024 * 1024
_log = logging.getLogger("zerotrust.grpc")


def remote_address(peer: str) -> str | None:
    """The IP address in a grpc peer string (``ipv4:1.2.3.4:5``, ``ipv6:%5B::1%5D:5``)."""
    kind, _, rest = unquote(peer).partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0] or None
    if kind == "ipv6" and rest.startswith("["):
        end = rest.find("]")
        return rest[1:end] if end > 1 else None
    return None  # unix sockets and anything unknown: no address


def _pem_to_der(blobs: Iterable[bytes]) -> list[bytes]:
    marker = b"-----END CERTIFICATE-----"
    return [
        ssl.PEM_cert_to_DER_cert((part + marker).strip().decode("ascii"))
        for blob in blobs
        for part in blob.split(marker)
        if b"-----BEGIN CERTIFICATE-----" in part
    ]


class PeerCache:
    """Client chains from grpc's auth context, verified with zerotrust against the bundle of
    the peer's own trust domain; cached per (exact chain, bundle snapshot)."""

    def __init__(self, authenticator: Authenticator) -> None:
        self._authn = authenticator
        self._bundles = authenticator.bundles
        self._entries: dict[bytes, tuple[object, list[bytes], VerifiedPeer]] = {}
        self._bytes = 0  # of the keys and chains held
        self._insert = threading.Lock()  # grpc's pool threads store chains concurrently

    def lookup(self, auth: Mapping[str, Any]) -> tuple[list[bytes] | None, VerifiedPeer | None]:
        leaf = auth.get("x509_pem_cert")
        if not leaf:
            return None, None
        rest = auth.get("x509_pem_cert_chain") or ()
        key = b"".join((leaf[0], *rest))
        bundles = self._bundles
        snapshot = bundles.get_bundle_set() if bundles is not None else None
        hit = self._entries.get(key)
        if hit is not None and hit[0] is snapshot:
            return hit[1], hit[2]
        try:
            der = _pem_to_der(leaf[:1])[:1]
            if not der:
                raise ValueError("no certificate")
            der += [c for c in _pem_to_der(rest) if c != der[0]]  # the server side has no leaf
        except (ValueError, UnicodeError):
            return [b""], None  # unparseable: the Guard refuses it as malformed (and audits)
        if snapshot is None:
            return der, None  # the Authenticator refuses: no bundles to verify against
        try:
            peer = verify_x509_svid(der, snapshot, now=self._authn.clock.now(), role="client")
        except ZeroTrustError:
            return der, None  # the Guard verifies again, refuses and audits the reason
        size = len(key) + sum(map(len, der))
        if size > _MAX_CACHED_BYTES:  # never kept: nothing else goes for it
            return der, peer
        with self._insert:  # the count and the entries change together (a miss is rare)
            entries = self._entries
            if len(entries) >= _MAX_CACHED or self._bytes + size > _MAX_CACHED_BYTES:
                entries.clear()
                self._bytes = 0
            previous = entries.get(key)
            if previous is not None:  # another thread stored it meanwhile (or a stale one)
                self._bytes -= size
            entries[key] = (snapshot, der, peer)
            self._bytes += size
        return der, peer


def _roots(bundles: BundleSet, *, starting: bool) -> bytes:
    """The PEM authorities grpc checks clients against first. Once every authority has been
    withdrawn, a root no client can chain to: methods served without the interceptor's check
    (``exempt``) are closed to everyone too. A server cannot start with no authority."""
    authorities = bundles.all_x509_authorities()
    if authorities:
        return certs_to_pem(authorities)
    if starting:
        raise ConfigurationError("the bundle source has no X.509 authorities")
    return _unmatchable_root()


@functools.cache
def _unmatchable_root() -> bytes:
    """A self-signed CA certificate whose private key is thrown away at once."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "zerotrust: no authority left")])
    now = datetime.now(timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=36500))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


class _CertificateConfigurations:
    """grpc's certificate-configuration fetcher: called before every new TLS handshake, it
    answers ``None`` (keep the current one) unless the SVID or bundle snapshot changed."""

    def __init__(self, svid: X509SvidSource, bundles: X509BundleSource) -> None:
        self._svid, self._bundles = svid, bundles
        self._lock = threading.Lock()
        current = (svid.get_x509_svid(), bundles.get_bundle_set())
        self._root_pem = _roots(current[1], starting=True)
        self.initial = self._configuration(current[0])
        self._loaded: tuple[X509Svid, BundleSet] = current
        self._failing = False  # the sources failed at the last handshake (logged once)

    def _configuration(self, svid: X509Svid) -> Any:
        return grpc.ssl_server_certificate_configuration(
            [(svid.private_key_pem(), svid.cert_chain_pem())], self._root_pem
        )

    def __call__(self) -> Any:
        try:
            svid, bundles = self._svid.get_x509_svid(), self._bundles.get_bundle_set()
            with self._lock:
                if self._failing:
                    self._failing = False
                    _log.info("zerotrust: the SVID and bundles for grpc load again")
                if svid is self._loaded[0] and bundles is self._loaded[1]:
                    return None
                self._root_pem = _roots(bundles, starting=False)
                config = self._configuration(svid)
                self._loaded = (svid, bundles)
                return config
        except Exception:  # keep serving the current certificate rather than no handshake
            # asked before every handshake, so anyone who connects would repeat the line:
            # the traceback once per outage, then one line at DEBUG per handshake
            with self._lock:
                first, self._failing = not self._failing, True
            if first:
                _log.exception("zerotrust: could not load the rotated SVID or bundles for grpc")
            else:
                _log.debug("zerotrust: the SVID or bundles for grpc still do not load")
            return None


def server_credentials(
    svid: X509SvidSource | X509Svid,
    bundles: X509BundleSource | TrustBundle | BundleSet,
    *,
    require_client_auth: bool = True,
) -> Any:
    """mTLS ``grpc.ServerCredentials`` from an SVID source and a bundle source.

    Built on ``grpc.dynamic_ssl_server_credentials``: before each new connection grpc asks
    for the current configuration, so a rotated SVID (or changed bundles) is served to new
    connections without a restart; established connections keep theirs. Client certificates
    are required (``require_client_auth=True``, the default) and checked by grpc against the
    authorities of *every* trust domain in the bundles (one merged store); the
    :class:`ServerInterceptor` then re-verifies each client against its own trust domain's
    bundle. Use both.

    ``require_client_auth=False`` turns mTLS off: it is handed to grpc, whose servers then do
    not ask for a client certificate at all (grpc-python has no "ask, but do not require"
    mode), so no caller has one, even a client configured to present it. Callers can then
    only authenticate with tokens (token-only); ``Authenticator(require_mtls=True)``,
    requirements such as ``proven_by=["mtls"]`` and certificate-bound tokens
    (``cnf.x5t#S256``) refuse every call.
    """
    if not callable(getattr(svid, "get_x509_svid", None)):
        raise ConfigurationError("svid must be an X509Svid or have get_x509_svid()")
    if not callable(getattr(bundles, "get_bundle_set", None)):
        raise ConfigurationError("bundles must be a TrustBundle, BundleSet or bundle source")
    configs = _CertificateConfigurations(svid, bundles)
    return grpc.dynamic_ssl_server_credentials(
        configs.initial, configs, require_client_authentication=bool(require_client_auth)
    )
