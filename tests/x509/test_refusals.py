"""Refused TLS handshakes are logged and reach refusal listeners (and so the audit trail).

Real handshakes over loopback: a threaded blocking-socket server and an asyncio server, each
with a zerotrust server context, and clients presenting certificates it must refuse.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import socket
import ssl
import threading
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from tests._tls import tls_server
from zerotrust import (
    BundleSet,
    Guard,
    Policy,
    client_ssl_context,
    match,
    server_ssl_context,
)
from zerotrust.audit import MemorySink
from zerotrust.dev import DevCA
from zerotrust.errors import (
    CertificateNotYetValid,
    ConfigurationError,
    PeerNotAuthorized,
    SvidProfileViolation,
)
from zerotrust.x509 import HandshakeRefusal

from .test_mtls import API, HOUR, NOW, WEB, bad_svid

OUTSIDER = "spiffe://example.org/ns/other/sa/batch"


class Collected:
    def __init__(self) -> None:
        self.refusals: list[HandshakeRefusal] = []
        self.lock = threading.Lock()

    def __call__(self, refusal: HandshakeRefusal) -> None:
        with self.lock:
            self.refusals.append(refusal)

    def wait(self, count: int = 1) -> list[HandshakeRefusal]:
        for _ in range(500):
            with self.lock:
                if len(self.refusals) >= count:
                    return list(self.refusals)
            time.sleep(0.01)
        raise AssertionError(f"expected {count} refusal(s), got {self.refusals}")


def attempt(port: int, ctx: ssl.SSLContext) -> bytes:
    """Connect and read; a refused client sees an error or an empty read."""
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            ctx.wrap_socket(raw, server_hostname="localhost") as conn,
        ):
            return conn.recv(2)
    except (OSError, ssl.SSLError):
        return b""


def client(svid: object, bundles: object, **kw: object) -> ssl.SSLContext:
    ctx = client_ssl_context(svid, bundles, authorizer=match.exact(API))  # type: ignore[arg-type]
    for name, value in kw.items():
        setattr(ctx, name, value)
    return ctx


def test_refusals_name_the_reason_the_client_and_its_certificate(ca: DevCA) -> None:
    collected = Collected()
    sctx = server_ssl_context(
        ca.issue_svid(API), ca.bundle, authorizer=match.exact(WEB), on_refusal=collected
    )
    outsider = ca.issue_svid(OUTSIDER)
    with tls_server(sctx) as (port, _log):
        assert attempt(port, client(outsider, ca.bundle)) == b""
        (refusal,) = collected.wait()
        assert attempt(port, client(ca.issue_svid(WEB), ca.bundle)) == b"ok"  # not reported
    assert isinstance(refusal.error, PeerNotAuthorized)
    assert refusal.role == "client"
    assert refusal.remote_addr == "127.0.0.1"
    assert refusal.spiffe_id == OUTSIDER
    leaf = outsider.leaf.public_bytes(serialization.Encoding.DER)
    assert refusal.cert_fingerprint == hashlib.sha256(leaf).hexdigest()
    assert len(collected.refusals) == 1


def test_a_refused_client_that_resets_at_once_keeps_its_address_in_the_report(
    ca: DevCA, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The address was read once the handshake had failed: a client that resets the
    connection as soon as it is refused (SO_LINGER 0) left the report without it, some of the
    time. It is read before the handshake now. (The reset is stood in for, deterministically,
    by a peer name that cannot be read once the report has begun.)"""
    import errno

    from zerotrust.x509 import sslcontext

    real = ssl.SSLSocket.getpeername

    def gone_once_reported(self: ssl.SSLSocket) -> Any:
        if self.__dict__.get("_zt_reported"):
            raise OSError(errno.ENOTCONN, "Transport endpoint is not connected")
        return real(self)

    monkeypatch.setattr(sslcontext._VerifyingSSLSocket, "getpeername", gone_once_reported)
    collected = Collected()
    sctx = server_ssl_context(
        ca.issue_svid(API), ca.bundle, authorizer=match.exact(WEB), on_refusal=collected
    )
    with tls_server(sctx) as (port, _log):
        assert attempt(port, client(ca.issue_svid(OUTSIDER), ca.bundle)) == b""
        (refusal,) = collected.wait()
    assert isinstance(refusal.error, PeerNotAuthorized)
    assert refusal.remote_addr == "127.0.0.1"


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_openssl_refusals_are_reported_too(ca: DevCA, version: ssl.TLSVersion) -> None:
    collected = Collected()
    sctx = server_ssl_context(
        ca.issue_svid(API), ca.bundle, authorizer=match.member_of("example.org")
    )
    sctx.add_refusal_listener(collected)
    stranger = DevCA.create("example.org")
    expired = bad_svid(ca, not_before=NOW - 3 * HOUR, not_after=NOW - HOUR)
    with tls_server(sctx) as (port, _log):
        attempt(
            port, client(stranger.issue_svid(WEB), BundleSet([ca.bundle]), maximum_version=version)
        )
        attempt(port, client(expired, ca.bundle, maximum_version=version))
        refusals = collected.wait(2)
    codes = sorted(r.error.code for r in refusals)
    assert codes == ["certificate_expired", "untrusted_certificate"]
    assert all(r.remote_addr == "127.0.0.1" for r in refusals)


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_a_client_without_a_certificate_is_reported(ca: DevCA, version: ssl.TLSVersion) -> None:
    collected = Collected()
    sctx = server_ssl_context(
        ca.issue_svid(API), ca.bundle, authorizer=match.any(), on_refusal=collected
    )
    bare = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    bare.check_hostname = False
    bare.verify_mode = ssl.CERT_NONE
    bare.maximum_version = version
    with tls_server(sctx) as (port, _log):
        assert attempt(port, bare) == b""
        (refusal,) = collected.wait()
    assert refusal.error.code == "missing_credentials"
    assert refusal.cert_fingerprint is None and refusal.spiffe_id is None


def wait_for_errors(log: Any) -> None:
    for _ in range(100):
        if log.errors:
            return
        time.sleep(0.01)


@pytest.mark.parametrize(
    "sent",
    [b"\x16\x03\x01\x00", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"],
    ids=["half-a-client-hello", "plain-http"],
)
def test_a_failed_handshake_over_no_certificate_is_not_a_refusal(ca: DevCA, sent: bytes) -> None:
    collected = Collected()
    sctx = server_ssl_context(
        ca.issue_svid(API), ca.bundle, authorizer=match.any(), on_refusal=collected
    )
    with tls_server(sctx) as (port, log):
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            contextlib.suppress(OSError),  # the server may have reset it already
        ):
            raw.sendall(sent)
            raw.shutdown(socket.SHUT_WR)  # and nothing more: the server fails at once
            raw.recv(64)
        wait_for_errors(log)
    assert log.errors
    assert collected.refusals == []


def test_asyncio_servers_report_refusals(ca: DevCA) -> None:
    collected = Collected()
    sctx = server_ssl_context(
        ca.issue_svid(API), ca.bundle, authorizer=match.exact(WEB), on_refusal=collected
    )

    async def main() -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"ok")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=sctx)
        port = server.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, attempt, port, client(ca.issue_svid(OUTSIDER), ca.bundle))
        await loop.run_in_executor(None, collected.wait)
        server.close()
        await server.wait_closed()

    asyncio.run(main())
    (refusal,) = collected.refusals
    assert refusal.error.code == "peer_not_authorized"
    assert refusal.spiffe_id == OUTSIDER
    assert refusal.remote_addr is None  # asyncio does not tell the SSL layer


def test_refusals_are_logged_and_a_failing_listener_changes_nothing(
    ca: DevCA, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(refusal: HandshakeRefusal) -> None:
        raise RuntimeError("listener bug")

    collected = Collected()
    sctx = server_ssl_context(
        ca.issue_svid(API), ca.bundle, authorizer=match.exact(WEB), on_refusal=broken
    )
    sctx.add_refusal_listener(collected)
    caplog.set_level(logging.INFO, logger="zerotrust.tls")
    with tls_server(sctx) as (port, log):
        assert attempt(port, client(ca.issue_svid(OUTSIDER), ca.bundle)) == b""
        collected.wait()
    assert not log.peers
    messages = [r.getMessage() for r in caplog.records if r.name == "zerotrust.tls"]
    assert any("handshake refused" in m and "peer_not_authorized" in m for m in messages)
    assert any("listener" in m for m in messages)
    assert all("BEGIN CERTIFICATE" not in m for m in messages)


def test_the_guard_audits_a_refused_handshake(ca: DevCA) -> None:
    sink = MemorySink()
    guard = Guard(bundles=ca.bundle, policy=Policy([]), audit=sink, service="api")
    sctx = server_ssl_context(
        ca.issue_svid(API), ca.bundle, authorizer=match.exact(WEB), on_refusal=guard.audit_handshake
    )
    with tls_server(sctx) as (port, _log):
        attempt(port, client(ca.issue_svid(OUTSIDER), ca.bundle))
        for _ in range(500):
            if sink.events:
                break
            time.sleep(0.01)
    (event,) = sink.events
    assert event.kind == "tls" and event.method == "HANDSHAKE"
    assert event.decision == "deny" and event.reason == "peer_not_authorized"
    assert event.service == "api" and event.spiffe_id == OUTSIDER
    assert event.remote_addr == "127.0.0.1"
    assert event.cert_fingerprint is not None and len(event.cert_fingerprint) == 64
    assert event.notes == ("tls_client_refused",)


def test_a_refused_handshake_names_no_spiffe_id_its_chain_did_not_prove(ca: DevCA) -> None:
    # a federated partner's CA mints an ID of this trust domain: OpenSSL's merged store lets
    # the chain through, the per-domain check refuses it. The event keeps the presented
    # certificate's fingerprint but names no caller; listeners still get the claim.
    sink = MemorySink()
    partner = DevCA.create("partner.example")
    bundles = BundleSet([ca.bundle, partner.bundle])
    guard = Guard(bundles=bundles, policy=Policy([]), audit=sink, service="api")
    collected = Collected()
    sctx = server_ssl_context(
        ca.issue_svid(API), bundles, authorizer=match.any(), on_refusal=guard.audit_handshake
    )
    sctx.add_refusal_listener(collected)
    with tls_server(sctx) as (port, _log):
        attempt(port, client(bad_svid(partner, uri_sans=[WEB]), ca.bundle))
        collected.wait()
    (event,) = sink.events
    assert event.decision == "deny" and event.reason == "untrusted_certificate"
    assert event.spiffe_id is None
    assert event.cert_fingerprint is not None and len(event.cert_fingerprint) == 64
    (refusal,) = collected.refusals
    assert refusal.spiffe_id == WEB and refusal.cert_fingerprint == event.cert_fingerprint


def test_listeners_must_be_callable(ca: DevCA) -> None:
    with pytest.raises(ConfigurationError, match="callable"):
        server_ssl_context(
            ca.issue_svid(API),
            ca.bundle,
            authorizer=match.any(),
            on_refusal="audit",  # type: ignore[arg-type]
        )


def test_serve_attaches_the_listener_only_to_zerotrust_contexts(ca: DevCA) -> None:
    from zerotrust.adapters.servers import _context

    plain = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with pytest.raises(ConfigurationError, match="on_refusal"):
        _context(plain, None, None, None, lambda refusal: None)
    collected = Collected()
    sctx = server_ssl_context(ca.issue_svid(API), ca.bundle, authorizer=match.any())
    assert _context(sctx, None, None, None, collected) is sctx
    assert sctx._zt_refusal_listeners == (collected,)


def test_the_dataclass_holds_no_certificate() -> None:
    fields = set(HandshakeRefusal.__dataclass_fields__)
    assert fields == {"error", "role", "remote_addr", "cert_fingerprint", "spiffe_id"}


def test_a_client_refused_by_its_server_reports_nothing_itself(ca: DevCA) -> None:
    # the server refuses this client; the client's own context refused nobody
    server_side = Collected()
    client_side = Collected()
    sctx = server_ssl_context(
        ca.issue_svid(API), ca.bundle, authorizer=match.exact(WEB), on_refusal=server_side
    )
    cctx = client(ca.issue_svid(OUTSIDER), ca.bundle)
    cctx.add_refusal_listener(client_side)  # type: ignore[attr-defined]
    with tls_server(sctx) as (port, _log):
        attempt(port, cctx)
        server_side.wait()
    assert client_side.refusals == []


def test_a_tls12_client_refused_by_an_alert_reports_nothing_itself(ca: DevCA) -> None:
    # over TLS 1.2 the client learns of its refusal from the server's alert, inside its own
    # handshake: that is the server refusing it, not a refusal the client made
    server_side = Collected()
    client_side = Collected()
    sctx = server_ssl_context(
        ca.issue_svid(API), ca.bundle, authorizer=match.any(), on_refusal=server_side
    )
    stranger = DevCA.create("example.org")
    cctx = client(stranger.issue_svid(WEB), ca.bundle, maximum_version=ssl.TLSVersion.TLSv1_2)
    cctx.add_refusal_listener(client_side)  # type: ignore[attr-defined]
    with tls_server(sctx) as (port, _log):
        with (
            pytest.raises((OSError, ssl.SSLError)) as info,
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            cctx.wrap_socket(raw, server_hostname="localhost") as conn,
        ):
            conn.recv(2)
        server_side.wait()
    assert "ALERT" in str(info.value).upper()
    assert [r.error.code for r in server_side.refusals] == ["untrusted_certificate"]
    assert client_side.refusals == []


def test_a_failing_log_handler_does_not_change_the_refusal(ca: DevCA) -> None:
    class Broken(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            raise ValueError("log pipeline down")

    logger = logging.getLogger("zerotrust.tls")
    broken = Broken()
    logger.addFilter(broken)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        sctx = server_ssl_context(ca.issue_svid(API), ca.bundle, authorizer=match.exact(WEB))
        with tls_server(sctx) as (port, log):
            assert attempt(port, client(ca.issue_svid(OUTSIDER), ca.bundle)) == b""
            wait_for_errors(log)
    finally:
        logger.removeFilter(broken)
        logger.setLevel(level)
    assert [type(e).__name__ for e in log.errors] == ["PeerRejected"]  # not the ValueError
    assert not log.peers


def test_a_certificate_without_its_key_counts_as_a_refusal() -> None:
    from zerotrust.x509.sslcontext import _refusal_error

    error = ssl.SSLError(1, "[SSL: BAD_SIGNATURE] bad signature")
    error.reason = "BAD_SIGNATURE"  # type: ignore[misc]
    refused = _refusal_error(error)
    assert refused is not None and refused.code == "untrusted_certificate"
    other = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
    other.reason = "WRONG_VERSION_NUMBER"  # type: ignore[misc]
    assert _refusal_error(other) is None
    assert _refusal_error(ssl.SSLWantReadError()) is None


def test_a_certificate_not_yet_valid_is_reported_as_such(ca: DevCA) -> None:
    """OpenSSL's first pass refuses a client certificate whose validity starts later (a clock
    ahead on the client's host): the refusal says so, as it says certificate_expired for one
    that ended, rather than untrusted_certificate."""
    from .test_mtls import _bio_pair, _handshake

    collected = Collected()
    sctx = server_ssl_context(
        ca.issue_svid(API), ca.bundle, authorizer=match.exact(WEB), on_refusal=collected
    )
    early = bad_svid(ca, not_before=NOW + HOUR, not_after=NOW + 2 * HOUR)
    server, client_obj, wires = _bio_pair(sctx, client(early, ca.bundle))
    outcome = _handshake(server, client_obj, wires)
    assert isinstance(outcome, ssl.SSLCertVerificationError)
    (refusal,) = collected.refusals
    assert isinstance(refusal.error, CertificateNotYetValid)
    assert refusal.error.code == "certificate_not_yet_valid"


def test_a_client_certificate_for_servers_only_is_reported_as_a_profile_violation(
    ca: DevCA,
) -> None:
    """OpenSSL's first pass refuses a client leaf whose extended key usage allows the server
    role only (X509_V_ERR_INVALID_PURPOSE): the refusal names the rule, as verify_x509_svid
    names it, rather than untrusted_certificate."""
    from cryptography.x509.oid import ExtendedKeyUsageOID

    from .test_mtls import _bio_pair, _handshake

    collected = Collected()
    sctx = server_ssl_context(
        ca.issue_svid(API), ca.bundle, authorizer=match.exact(WEB), on_refusal=collected
    )
    servers_only = bad_svid(ca, extended_key_usage=[ExtendedKeyUsageOID.SERVER_AUTH])
    server, client_obj, wires = _bio_pair(sctx, client(servers_only, ca.bundle))
    outcome = _handshake(server, client_obj, wires)
    assert isinstance(outcome, ssl.SSLCertVerificationError)
    (refusal,) = collected.refusals
    assert isinstance(refusal.error, SvidProfileViolation)
    assert refusal.error.rule == "extended_key_usage"


def test_a_role_that_is_neither_is_a_configuration_error(ca: DevCA) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    from zerotrust import verify_x509_svid

    chain = [c.public_bytes(Encoding.DER) for c in ca.issue_svid(WEB).cert_chain]
    for role in ("Client", "peer", ""):
        with pytest.raises(ConfigurationError, match="role must be"):
            verify_x509_svid(chain, ca.bundle, role=role)  # type: ignore[arg-type]
