"""Rotation without restart: SVIDs are replaced while connections keep being made."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests._files import settled
from tests._tls import call, tls_server
from tests._wait import eventually
from zerotrust import (
    BundleSet,
    FileBundleSource,
    FileSvidSource,
    PeerRejected,
    RotatingBundleSource,
    RotatingSvidSource,
    TrustBundle,
    client_ssl_context,
    match,
    server_ssl_context,
)
from zerotrust.dev import DevCA
from zerotrust.errors import ConfigurationError, NoTrustBundle
from zerotrust.x509._certs import fingerprint

API = "spiffe://example.org/api"
WEB = "spiffe://example.org/web"


def test_server_svid_rotation_mid_traffic(ca: DevCA) -> None:
    first, second = ca.issue_svid(API), ca.issue_svid(API)
    source = RotatingSvidSource(first)
    sctx = server_ssl_context(source, ca.bundle, authorizer=match.exact(WEB))
    cctx = client_ssl_context(ca.issue_svid(WEB), ca.bundle, authorizer=match.exact(API))
    results: list[tuple[bool, str]] = []  # (started after the swap?, fingerprint seen)
    failures: list[BaseException] = []
    swapped = threading.Event()
    lock = threading.Lock()

    def traffic() -> None:
        for _ in range(40):
            after = swapped.is_set()
            try:
                reply, _, fp = call(port, cctx)
                assert reply == b"ok"
            except BaseException as exc:  # any failed handshake fails the test
                with lock:
                    failures.append(exc)
                return
            with lock:
                results.append((after, fp))

    with tls_server(sctx) as (port, log):
        workers = [threading.Thread(target=traffic) for _ in range(4)]
        for w in workers:
            w.start()
        while True:  # swap once some traffic has flowed
            time.sleep(0.001)
            with lock:
                if len(results) >= 20 or failures:
                    break
        source.set(second)
        swapped.set()
        for w in workers:
            w.join(30)
    assert not failures, failures
    assert not log.errors
    assert len(results) == 160
    after = [fp for started_after, fp in results if started_after]
    before = {fp for started_after, fp in results if not started_after}
    assert after, "no handshake happened after the swap"
    assert set(after) == {second.fingerprint}
    assert first.fingerprint in before


def test_client_svid_rotation(ca: DevCA) -> None:
    old, new = ca.issue_svid(WEB), ca.issue_svid(WEB)
    source = RotatingSvidSource(old)
    sctx = server_ssl_context(ca.issue_svid(API), ca.bundle, authorizer=match.exact(WEB))
    cctx = client_ssl_context(source, ca.bundle, authorizer=match.exact(API))
    with tls_server(sctx) as (port, log):
        call(port, cctx)
        source.set(new)
        assert cctx.current_svid is old  # loaded lazily, on the next connection
        call(port, cctx)
        assert cctx.current_svid is new
    assert [p.fingerprint for p in log.peers] == [old.fingerprint, new.fingerprint]


def test_file_backed_rotation_with_torn_writes(ca: DevCA, tmp_path: Path) -> None:
    cert, key = tmp_path / "svid.pem", tmp_path / "svid.key"
    first, second = ca.issue_svid(API), ca.issue_svid(API)
    first.save(cert, key)
    source = FileSvidSource(cert, key, check_interval=0)
    sctx = server_ssl_context(source, ca.bundle, authorizer=match.exact(WEB))
    cctx = client_ssl_context(ca.issue_svid(WEB), ca.bundle, authorizer=match.exact(API))
    with tls_server(sctx) as (port, log):
        assert call(port, cctx)[2] == first.fingerprint
        # A rotation tool writes the new key first: for a moment the files do not match.
        key.write_bytes(second.private_key_pem())
        settled(key)
        assert call(port, cctx)[2] == first.fingerprint  # the old, complete pair is still served
        assert source.last_error is not None
        cert.write_bytes(second.cert_chain_pem())
        settled(cert)
        assert call(port, cctx)[2] == second.fingerprint
        assert source.last_error is None
        assert source.reloads == 1
    assert not log.errors


def test_a_trust_domain_withdrawing_every_authority_is_refused_not_an_error(ca: DevCA) -> None:
    """Once the bundle is empty, new connections still get a handshake (no configuration
    error on every connection), and the per-trust-domain check refuses every peer."""
    bundles = RotatingBundleSource(ca.bundle)
    sctx = server_ssl_context(ca.issue_svid(API), bundles, authorizer=match.exact(WEB))
    cctx = client_ssl_context(ca.issue_svid(WEB), ca.bundle, authorizer=match.exact(API))
    with tls_server(sctx) as (port, log):
        assert call(port, cctx)[0] == b"ok"
        bundles.set(TrustBundle("example.org"))  # {"keys": []}: everything withdrawn
        with contextlib.suppress(OSError):  # refused right after the handshake
            assert call(port, cctx)[0] != b"ok"
        eventually(lambda: len(log.errors) == 1)
    refused = log.errors[0]
    assert isinstance(refused, PeerRejected) and isinstance(refused.error, NoTrustBundle)
    with pytest.raises(ConfigurationError, match=r"no X\.509 authorities"):
        server_ssl_context(ca.issue_svid(API), TrustBundle("example.org"), authorizer=match.any())


def test_a_bundle_file_that_does_not_load_holds_back_no_other_trust_domain(
    ca: DevCA, other_ca: DevCA, tmp_path: Path
) -> None:
    """Each trust domain's bundle file is judged on its own. example.org withdrawing its
    authorities ({"keys": []}) applies on the next handshake even while other.org's file is
    one that does not load: that keeps other.org's previous bundle, and only that one (it
    kept example.org's withdrawn authority trusted for as long as other.org's file was bad)."""
    ours, theirs = tmp_path / "example.org.json", tmp_path / "other.org.json"
    ours.write_text(json.dumps(ca.bundle.to_jwks()))
    theirs.write_text(json.dumps(other_ca.bundle.to_jwks()))
    bundles = FileBundleSource({"example.org": ours, "other.org": theirs}, check_interval=0)
    sctx = server_ssl_context(ca.issue_svid(API), bundles, authorizer=match.any())
    web = client_ssl_context(ca.issue_svid(WEB), ca.bundle, authorizer=match.exact(API))
    partner = client_ssl_context(
        other_ca.issue_svid("spiffe://other.org/billing"), ca.bundle, authorizer=match.exact(API)
    )
    with tls_server(sctx) as (port, _):
        assert call(port, web)[0] == b"ok" and call(port, partner)[0] == b"ok"
        ours.write_text('{"keys": []}')
        theirs.write_text('{"keys": [{"kty": "EC", "use": "x509-svid", "x5c": ["AA=="]}]}')
        settled(ours, theirs)
        with contextlib.suppress(OSError):  # refused right after the handshake
            assert call(port, web)[0] != b"ok"
        assert call(port, partner)[0] == b"ok"  # other.org's previous bundle still applies
    current = bundles.get_bundle_set()
    assert current.get("example.org") == TrustBundle("example.org")
    assert current.get("other.org") == other_ca.bundle
    assert bundles.last_error is not None and "x509-svid key 0" in bundles.last_error


def test_an_authority_openssl_refuses_stops_neither_connections_nor_rotation(
    ca: DevCA, caplog: pytest.LogCaptureFixture
) -> None:
    """cryptography reads certificates OpenSSL refuses (here a name attribute that is an
    OCTET STRING, no string type). One such authority in a federated bundle update must not
    fail every new connection of every trust domain, nor keep a rotated SVID from loading."""
    partner = DevCA.create("partner.org")
    der = partner.root_certificate.public_bytes(serialization.Encoding.DER)
    value = b"\x0c\x10partner.org root"  # UTF8String, 16 bytes
    odd = x509.load_der_x509_certificate(der.replace(value, b"\x04" + value[1:]))
    federated = TrustBundle("partner.org", [odd])  # cryptography reads it
    bundles = RotatingBundleSource(ca.bundle)
    old, new = ca.issue_svid(API), ca.issue_svid(API)
    svids = RotatingSvidSource(old)
    sctx = server_ssl_context(svids, bundles, authorizer=match.exact(WEB))
    cctx = client_ssl_context(ca.issue_svid(WEB), ca.bundle, authorizer=match.exact(API))
    with tls_server(sctx) as (port, log):
        assert call(port, cctx)[2] == old.fingerprint
        bundles.set(BundleSet([ca.bundle, federated]))
        svids.set(new)
        with caplog.at_level(logging.WARNING, logger="zerotrust.tls"):
            assert call(port, cctx)[2] == new.fingerprint
            assert call(port, cctx)[0] == b"ok"
    assert not log.errors
    refused = [r.getMessage() for r in caplog.records if "cannot load" in r.getMessage()]
    assert len(refused) == 1 and fingerprint(odd)[:16] in refused[0]


def test_a_rotating_source_takes_svids_only(ca: DevCA) -> None:
    """``set(None)`` (an SVID that failed to load, say) was taken: TLS contexts went on
    presenting the previous SVID without a word, and grpc's credentials failed at every
    handshake. It is refused, and the current SVID stays."""
    svid = ca.issue_svid(API)
    source = RotatingSvidSource(svid)
    for bad in (None, svid.cert_chain_pem(), [svid]):
        with pytest.raises(ConfigurationError, match="X509Svid is needed"):
            source.set(bad)  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="X509Svid is needed"):
            RotatingSvidSource(bad)  # type: ignore[arg-type]
    assert source.get_x509_svid() is svid
