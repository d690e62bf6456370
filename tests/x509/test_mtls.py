"""Real TLS handshakes over loopback sockets: blocking sockets and asyncio."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import socket
import ssl
import threading
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from tests._tls import call, tls_server
from zerotrust import (
    BundleSet,
    PeerRejected,
    RotatingBundleSource,
    RotatingSvidSource,
    X509Svid,
    client_ssl_context,
    match,
    server_ssl_context,
)
from zerotrust._clock import FixedClock
from zerotrust.dev import DevCA
from zerotrust.errors import ConfigurationError
from zerotrust.x509 import HandshakeRefusal, peer_of

NOW = dt.datetime.now(dt.timezone.utc)
HOUR = dt.timedelta(hours=1)
WEB = "spiffe://example.org/ns/shop/sa/web"
API = "spiffe://example.org/ns/shop/sa/api"


def bad_svid(issuer: DevCA, **kw: object) -> X509Svid:
    """A leaf that breaks a rule, wrapped so a client context can present it anyway."""
    kw.setdefault("uri_sans", [WEB])
    kw.setdefault("not_before", NOW - HOUR)
    kw.setdefault("not_after", NOW + HOUR)
    chain, key = issuer.issue_unchecked_leaf(**kw)  # type: ignore[arg-type]
    return _UncheckedSvid(chain, key)  # type: ignore[return-value]


class _UncheckedSvid:
    """Quacks like an X509Svid for loading into a context, without X509Svid's own checks."""

    def __init__(self, chain: list, key: object) -> None:  # type: ignore[type-arg]
        from zerotrust.x509._certs import certs_to_pem

        self._pem = certs_to_pem(chain)
        self._key = key

    @property
    def private_key(self) -> object:
        return self._key

    def cert_chain_pem(self) -> bytes:
        return self._pem

    def private_key_pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return self._key.private_bytes(  # type: ignore[attr-defined, no-any-return]
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def get_x509_svid(self) -> _UncheckedSvid:
        return self


@pytest.fixture
def api_server(ca: DevCA):  # type: ignore[no-untyped-def]
    ctx = server_ssl_context(
        ca.issue_svid(API), ca.bundle, authorizer=match.member_of("example.org")
    )
    with tls_server(ctx) as (port, log):
        yield port, log


def client(svid: object, bundles: object, authorizer: object = None) -> ssl.SSLContext:
    return client_ssl_context(svid, bundles, authorizer=authorizer or match.exact(API))  # type: ignore[arg-type]


def rejected_by_server(port: int, log: object, ctx: ssl.SSLContext) -> BaseException:
    """The server must refuse the handshake; returns the server-side error."""
    try:
        reply, _, _ = call(port, ctx)
    except (OSError, ssl.SSLError):
        reply = b""
    assert reply == b""
    for _ in range(100):
        if log.errors:  # type: ignore[attr-defined]
            break
        import time

        time.sleep(0.01)
    assert log.errors, "server accepted a peer it must refuse"  # type: ignore[attr-defined]
    assert not log.peers  # type: ignore[attr-defined]
    return log.errors[0]  # type: ignore[attr-defined, no-any-return]


def test_peer_verifier_remembers_the_intermediates_of_the_latest_leaves(
    ca_with_intermediate: DevCA,
) -> None:
    """A bare leaf (a resumed session) is verified with the intermediates its last full chain
    brought, for the ``max_remembered`` most recently verified leaves only."""
    from cryptography.hazmat.primitives.serialization import Encoding

    from zerotrust.errors import CertificateError
    from zerotrust.x509.peer import PeerVerifier

    class Small(PeerVerifier):
        __slots__ = ()
        max_remembered = 2

    authorizer = match.any()
    verifier = Small(ca_with_intermediate.bundle, authorizer, role="client")
    assert verifier.authorizer is authorizer and verifier.role == "client"
    a, b, c = (
        [
            cert.public_bytes(Encoding.DER)
            for cert in ca_with_intermediate.issue_svid(WEB).cert_chain
        ]
        for _ in range(3)
    )
    verifier.verify(a)
    verifier.verify(b)
    verifier.verify(a)  # a is now the most recent: c evicts b
    verifier.verify(c)
    assert verifier.verify(a[:1]).chain[1:] == verifier.verify(a).chain[1:]
    assert verifier.verify(c[:1]).spiffe_id == verifier.verify(c).spiffe_id
    with pytest.raises(CertificateError):
        verifier.verify(b[:1])


def test_good_mtls_call(ca: DevCA, api_server) -> None:  # type: ignore[no-untyped-def]
    port, log = api_server
    reply, server_peer, _ = call(port, client(ca.issue_svid(WEB), ca.bundle))
    assert reply == b"ok"
    assert str(server_peer.spiffe_id) == API
    assert [str(p.spiffe_id) for p in log.peers] == [WEB]


def test_good_mtls_call_through_intermediate(ca_with_intermediate: DevCA) -> None:
    ca = ca_with_intermediate
    sctx = server_ssl_context(ca.issue_svid(API), ca.bundle, authorizer=match.exact(WEB))
    with tls_server(sctx) as (port, log):
        reply, peer, _ = call(port, client(ca.issue_svid(WEB), ca.bundle))
    assert reply == b"ok"
    assert str(peer.spiffe_id) == API
    assert len(log.peers[0].chain) == 3


def test_an_intermediate_as_the_bundle_authority(
    ca_with_intermediate: DevCA, other_ca: DevCA
) -> None:
    # X509-SVID §6.1: bundle certificates SHOULD (not must) be self-signed; an upstream-signed
    # SPIRE CA published as the bundle is one. The handshake ends the path at it.
    from zerotrust import TrustBundle

    ca = ca_with_intermediate
    intermediate = ca.issue_svid(API).cert_chain[1]
    bundle = TrustBundle("example.org", [intermediate])
    sctx = server_ssl_context(ca.issue_svid(API), bundle, authorizer=match.exact(WEB))
    with tls_server(sctx) as (port, log):
        reply, peer, _ = call(port, client(ca.issue_svid(WEB), bundle))
        assert reply == b"ok" and str(peer.spiffe_id) == API
        assert [str(p.spiffe_id) for p in log.peers] == [WEB]
    # a chain that does not pass through that intermediate is still refused
    stranger = DevCA.create("example.org", intermediate=True).issue_svid(WEB)
    with tls_server(sctx) as (port, log):
        rejected_by_server(port, log, client(stranger, bundle))
    # and a leaf of another trust domain's authority (both bundles trusted) is refused too
    bundles = BundleSet([bundle, other_ca.bundle])
    sctx = server_ssl_context(ca.issue_svid(API), bundles, authorizer=match.any())
    with tls_server(sctx) as (port, log):
        forged = other_ca.issue_unchecked_leaf(
            uri_sans=[WEB], not_before=NOW - HOUR, not_after=NOW + HOUR
        )
        rejected_by_server(port, log, client(_UncheckedSvid(*forged), bundles))


def test_wrong_trust_domain_is_refused_by_authorizer(ca: DevCA, other_ca: DevCA) -> None:
    # Both domains are trusted (federation) but the server only admits example.org callers.
    bundles = BundleSet([ca.bundle, other_ca.bundle])
    sctx = server_ssl_context(
        ca.issue_svid(API), bundles, authorizer=match.member_of("example.org")
    )
    with tls_server(sctx) as (port, log):
        err = rejected_by_server(
            port, log, client(other_ca.issue_svid("spiffe://other.org/web"), bundles)
        )
    assert isinstance(err, PeerRejected)
    assert err.error.code == "peer_not_authorized"


def test_trust_domain_without_bundle(ca: DevCA, other_ca: DevCA, api_server) -> None:  # type: ignore[no-untyped-def]
    port, log = api_server
    bundles = BundleSet([ca.bundle, other_ca.bundle])
    ctx = client(other_ca.issue_svid("spiffe://other.org/web"), bundles)
    rejected_by_server(port, log, ctx)  # OpenSSL does not even know other.org's CA


def test_cross_trust_domain_minting(ca: DevCA, other_ca: DevCA) -> None:
    bundles = BundleSet([ca.bundle, other_ca.bundle])
    sctx = server_ssl_context(ca.issue_svid(API), bundles, authorizer=match.any())
    with tls_server(sctx) as (port, log):
        forged = bad_svid(other_ca, uri_sans=["spiffe://example.org/admin"])
        err = rejected_by_server(port, log, client(forged, bundles))
    # OpenSSL's merged store accepts the chain; the per-trust-domain check does not.
    assert isinstance(err, PeerRejected)
    assert err.error.code == "untrusted_certificate"


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"not_before": NOW - 3 * HOUR, "not_after": NOW - HOUR}, None),
        ({"not_before": NOW + HOUR, "not_after": NOW + 2 * HOUR}, None),
        ({"uri_sans": [WEB, API]}, "svid_profile_violation"),
        ({"uri_sans": []}, "svid_profile_violation"),
    ],
    ids=["expired", "not-yet-valid", "two-uri-sans", "no-uri-san"],
)
def test_bad_client_leaf_is_refused(ca: DevCA, api_server, kwargs: dict, code: str | None) -> None:  # type: ignore[no-untyped-def, type-arg]
    port, log = api_server
    err = rejected_by_server(port, log, client(bad_svid(ca, **kwargs), ca.bundle))
    if code is not None:  # expiry is already refused by OpenSSL's first pass
        assert isinstance(err, PeerRejected)
        assert err.error.code == code


def test_leaf_with_ca_flag_is_refused(ca: DevCA, api_server) -> None:  # type: ignore[no-untyped-def]
    from cryptography import x509

    port, log = api_server
    usage = x509.KeyUsage(True, False, False, False, False, False, False, False, False)
    rejected_by_server(port, log, client(bad_svid(ca, ca=True, key_usage=usage), ca.bundle))


def test_unknown_ca(ca: DevCA, api_server) -> None:  # type: ignore[no-untyped-def]
    port, log = api_server
    stranger = DevCA.create("example.org")
    rejected_by_server(port, log, client(stranger.issue_svid(WEB), BundleSet([ca.bundle])))


def test_client_refuses_server_id(ca: DevCA, api_server) -> None:  # type: ignore[no-untyped-def]
    port, _log = api_server
    ctx = client(
        ca.issue_svid(WEB), ca.bundle, authorizer=match.exact("spiffe://example.org/ns/shop/sa/db")
    )
    with pytest.raises(PeerRejected) as info:
        call(port, ctx)
    assert info.value.error.code == "peer_not_authorized"
    assert isinstance(info.value, ssl.SSLCertVerificationError)


def test_client_refuses_server_of_unknown_ca(ca: DevCA) -> None:
    stranger = DevCA.create("example.org")
    sctx = server_ssl_context(stranger.issue_svid(API), stranger.bundle, authorizer=match.any())
    with tls_server(sctx) as (port, _log), pytest.raises(ssl.SSLCertVerificationError):
        call(port, client(ca.issue_svid(WEB), ca.bundle))


def test_authority_removed_from_bundle(ca: DevCA) -> None:
    new_ca = DevCA.create("example.org")
    bundles = RotatingBundleSource(
        ca.bundle.with_x509_authorities([ca.root_certificate, new_ca.root_certificate])
    )
    sctx = server_ssl_context(new_ca.issue_svid(API), bundles, authorizer=match.any())
    old_client = client(ca.issue_svid(WEB), bundles)
    with tls_server(sctx) as (port, log):
        assert call(port, old_client)[0] == b"ok"
        bundles.set(ca.bundle.with_x509_authorities([new_ca.root_certificate]))  # old root retired
        err = rejected_by_server_after(port, log, old_client)
    assert isinstance(err, PeerRejected)
    assert err.error.code == "untrusted_certificate"


def rejected_by_server_after(port: int, log, ctx: ssl.SSLContext) -> BaseException:  # type: ignore[no-untyped-def]
    log.peers.clear()
    return rejected_by_server(port, log, ctx)


def load_server_svid(ctx: ssl.SSLContext, svid: X509Svid) -> None:
    """Load (or replace, for the next handshakes) a plain server context's certificate."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "c.pem").write_bytes(svid.cert_chain_pem())
        (Path(tmp) / "k.pem").write_bytes(svid.private_key_pem())
        ctx.load_cert_chain(Path(tmp) / "c.pem", Path(tmp) / "k.pem")


@contextmanager
def resuming_server(
    svid: X509Svid, bundle_pem: bytes, contexts: list[ssl.SSLContext] | None = None
) -> Iterator[int]:
    """A plain stdlib TLS server that issues session tickets (zerotrust servers do not); its
    context is appended to ``contexts`` (to rotate its certificate)."""
    import socket
    import threading

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=bundle_pem.decode())
    load_server_svid(ctx, svid)
    if contexts is not None:
        contexts.append(ctx)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def handle(raw: socket.socket) -> None:
        try:
            raw.settimeout(5)
            with ctx.wrap_socket(raw, server_side=True) as conn:
                conn.sendall(b"ok")
                conn.recv(1)
        except OSError:
            pass
        finally:
            raw.close()

    def serve() -> None:  # a thread per connection: one may wait while another is served
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=handle, args=(raw,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def test_resumed_sessions_are_verified_again(ca_with_intermediate: DevCA) -> None:
    """A resumed session carries only the peer's leaf: it is re-verified with the remembered
    intermediates against the *current* bundle and authorizer."""
    import socket

    ca = ca_with_intermediate
    bundles = RotatingBundleSource(ca.bundle)
    cctx = client(ca.issue_svid(WEB), bundles)
    reused: list[bool] = []
    with resuming_server(ca.issue_svid(API), ca.bundle.to_pem()) as port:
        for n in range(4):
            if n == 3:  # the authority is retired: remembered sessions go, the handshake fails
                bundles.set(
                    ca.bundle.with_x509_authorities([DevCA.create("example.org").root_certificate])
                )
                with (
                    pytest.raises(ssl.SSLError),
                    socket.create_connection(("127.0.0.1", port)) as raw,
                ):
                    cctx.wrap_socket(raw, server_hostname="localhost").close()
                break
            with (
                socket.create_connection(("127.0.0.1", port)) as raw,
                cctx.wrap_socket(raw, server_hostname="localhost") as conn,
            ):
                assert conn.recv(2) == b"ok"
                assert str(conn.zerotrust_peer.spiffe_id) == API  # type: ignore[attr-defined]
                assert peer_of(conn) is conn.zerotrust_peer  # type: ignore[attr-defined]
                reused.append(conn.session_reused)
                conn.sendall(b"x")
    assert reused == [False, True, True]


def test_a_session_is_not_offered_once_the_servers_certificate_expired(ca: DevCA) -> None:
    """A server that rotated its certificate still resumes sessions of the old one: a client
    offering such a session past that certificate's expiry would be refused on every
    connection. It makes a full handshake instead and sees the current certificate."""
    import socket

    clock = FixedClock(dt.datetime.now(dt.timezone.utc))
    cctx = client_ssl_context(
        ca.issue_svid(WEB), ca.bundle, authorizer=match.exact(API), clock=clock
    )
    contexts: list[ssl.SSLContext] = []
    old = ca.issue_svid(API, ttl=dt.timedelta(minutes=5))

    def connect() -> tuple[bool, dt.datetime]:
        with (
            socket.create_connection(("127.0.0.1", port)) as raw,
            cctx.wrap_socket(raw, server_hostname="localhost") as conn,
        ):
            assert conn.recv(2) == b"ok"
            conn.sendall(b"x")
            return conn.session_reused, peer_of(conn).not_after  # type: ignore[union-attr]

    with resuming_server(old, ca.bundle.to_pem(), contexts) as port:
        assert connect() == (False, old.expires_at)
        assert connect() == (True, old.expires_at)
        new = ca.issue_svid(API, ttl=dt.timedelta(minutes=30))
        load_server_svid(contexts[0], new)
        assert connect() == (True, old.expires_at)  # the old certificate, still valid
        clock.advance(minutes=10)  # the old certificate has expired
        assert connect() == (False, new.expires_at)
        assert connect() == (True, new.expires_at)


def test_a_refused_connection_leaves_no_session_to_offer(ca: DevCA) -> None:
    """Whatever refused a connection, the session remembered for that server name is not
    offered again."""
    import socket

    cctx = client(ca.issue_svid(WEB), ca.bundle)
    with resuming_server(ca.issue_svid(API), ca.bundle.to_pem()) as good:
        with (
            socket.create_connection(("127.0.0.1", good)) as raw,
            cctx.wrap_socket(raw, server_hostname="localhost") as conn,
        ):
            assert conn.recv(2) == b"ok"
            conn.sendall(b"x")
        assert "localhost" in cctx._zt_sessions  # type: ignore[attr-defined]
        with (
            resuming_server(ca.issue_svid(WEB), ca.bundle.to_pem()) as impostor,
            pytest.raises(ssl.SSLError),
            socket.create_connection(("127.0.0.1", impostor)) as raw,
        ):
            cctx.wrap_socket(raw, server_hostname="localhost").close()
        assert "localhost" not in cctx._zt_sessions  # type: ignore[attr-defined]


def test_a_connection_made_before_a_rotation_leaves_no_session_to_resume(ca: DevCA) -> None:
    """A connection whose handshake ends after the client's SVID rotated must not leave its
    session behind: the next connection would resume it and present the old identity."""
    import socket

    old, new = ca.issue_svid(WEB), ca.issue_svid("spiffe://example.org/ns/shop/sa/web-v2")
    source = RotatingSvidSource(old)
    cctx = client_ssl_context(source, ca.bundle, authorizer=match.exact(API))
    with resuming_server(ca.issue_svid(API), ca.bundle.to_pem()) as port:
        in_flight = cctx.wrap_socket(
            socket.create_connection(("127.0.0.1", port)),
            server_hostname="localhost",
            do_handshake_on_connect=False,
        )
        source.set(new)
        cctx.refresh()  # as the next connection does: the new SVID is loaded
        with in_flight:
            in_flight.do_handshake()
            assert in_flight.recv(2) == b"ok"  # (a TLS 1.3 ticket arrives with the data)
            in_flight.sendall(b"x")
        with (
            socket.create_connection(("127.0.0.1", port)) as raw,
            cctx.wrap_socket(raw, server_hostname="localhost") as conn,
        ):
            assert conn.recv(2) == b"ok"
            assert not conn.session_reused  # a full handshake, with the new SVID
            conn.sendall(b"x")
        with (
            socket.create_connection(("127.0.0.1", port)) as raw,
            cctx.wrap_socket(raw, server_hostname="localhost") as conn,
        ):
            assert conn.recv(2) == b"ok"
            assert conn.session_reused  # that connection's session resumes, as before
            conn.sendall(b"x")


def test_authorizer_is_required(ca: DevCA) -> None:
    svid = ca.issue_svid(WEB)
    with pytest.raises(TypeError):
        server_ssl_context(svid, ca.bundle)  # type: ignore[call-arg]
    with pytest.raises(ConfigurationError):
        client_ssl_context(svid, ca.bundle, authorizer=None)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        server_ssl_context(
            svid, ca.bundle, authorizer=match.any(), minimum_version=ssl.TLSVersion.TLSv1_1
        )


def test_contexts_are_strict(ca: DevCA) -> None:
    svid = ca.issue_svid(WEB)
    sctx = server_ssl_context(svid, ca.bundle, authorizer=match.any())
    cctx = client_ssl_context(svid, ca.bundle, authorizer=match.any())
    for ctx in (sctx, cctx):
        assert ctx.verify_mode == ssl.CERT_REQUIRED
        assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert cctx.current_svid is svid


def test_asyncio_server_and_client(ca: DevCA) -> None:
    sctx = server_ssl_context(ca.issue_svid(API), ca.bundle, authorizer=match.exact(WEB))
    cctx = client(ca.issue_svid(WEB), ca.bundle)
    bad = client(ca.issue_svid("spiffe://example.org/ns/shop/sa/intruder"), ca.bundle)
    seen: list[str] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sslobj = writer.get_extra_info("ssl_object")
        seen.append(str(sslobj.zerotrust_peer.spiffe_id))
        writer.write(b"ok")
        await writer.drain()
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=sctx)
        port = server.sockets[0].getsockname()[1]
        async with server:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=cctx)
            assert await reader.read() == b"ok"
            assert str(writer.get_extra_info("ssl_object").zerotrust_peer.spiffe_id) == API
            # the typed spelling: from the writer, its transport or its SSL object alike
            for where in (writer, writer.transport, writer.get_extra_info("ssl_object")):
                peer = peer_of(where)
                assert peer is not None and str(peer.spiffe_id) == API
            writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=bad)
            assert await reader.read() == b""  # the server aborted the connection
            writer.close()

    asyncio.run(main())
    assert seen == [WEB]


def test_servers_issue_no_tls13_session_tickets(ca: DevCA) -> None:
    """Over TLS 1.3 every new connection is a full handshake (no tickets are issued)."""
    import socket

    sctx = server_ssl_context(ca.issue_svid(API), ca.bundle, authorizer=match.exact(WEB))
    cctx = client(ca.issue_svid(WEB), ca.bundle)
    with tls_server(sctx) as (port, _log):
        for _ in range(3):
            with (
                socket.create_connection(("127.0.0.1", port)) as raw,
                cctx.wrap_socket(raw, server_hostname="localhost") as conn,
            ):
                assert conn.recv(2) == b"ok"
                assert not conn.session_reused


# --- a handshake OpenSSL completes on its own, and key-type rotation ----------------------------


def _lazy_exchange(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, lazy: str, send: str = "sendall"
) -> tuple:  # type: ignore[type-arg]
    """One exchange over loopback where the ``lazy`` side wraps with
    ``do_handshake_on_connect=False`` and moves data at once (OpenSSL then handshakes inside
    the first read or write; the client writes with its ``send`` method); returns (what the
    server read, server error, client error)."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    result: dict[str, object] = {}

    def serve() -> None:
        raw, _ = listener.accept()
        raw.settimeout(5)
        try:
            with server_ctx.wrap_socket(
                raw, server_side=True, do_handshake_on_connect=lazy != "server"
            ) as conn:
                result["read"] = conn.recv(64)
                conn.sendall(b"secret")
        except (OSError, ssl.SSLError) as exc:
            result["server"] = exc
        finally:
            raw.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            client_ctx.wrap_socket(
                raw, server_hostname="localhost", do_handshake_on_connect=lazy != "client"
            ) as conn,
        ):
            data = b"Authorization: Bearer token"
            sent = getattr(conn, send)(data)
            assert sent == (None if send == "sendall" else len(data))
            result["reply"] = conn.recv(64)
    except (OSError, ssl.SSLError) as exc:
        result["client"] = exc
    finally:
        thread.join(5)
        listener.close()
    return result.get("read"), result.get("server"), result.get("client")


def test_a_lazy_server_socket_never_reads_from_a_refused_client(ca: DevCA) -> None:
    server_ctx = server_ssl_context(ca.issue_svid(API), ca.bundle, authorizer=match.exact(WEB))
    intruder = client(ca.issue_svid("spiffe://example.org/ns/shop/sa/intruder"), ca.bundle)
    read, server_error, _ = _lazy_exchange(server_ctx, intruder, "server")
    assert read is None and isinstance(server_error, PeerRejected)
    assert server_error.reason == "peer_not_authorized"
    read, server_error, client_error = _lazy_exchange(
        server_ctx, client(ca.issue_svid(WEB), ca.bundle), "server"
    )
    assert (read, server_error, client_error) == (b"Authorization: Bearer token", None, None)


def test_a_lazy_client_socket_never_writes_to_a_refused_server(ca: DevCA) -> None:
    impostor = "spiffe://example.org/ns/shop/sa/impostor"
    server_ctx = server_ssl_context(
        ca.issue_svid(impostor), ca.bundle, authorizer=match.member_of("example.org")
    )
    read, _, client_error = _lazy_exchange(
        server_ctx, client(ca.issue_svid(WEB), ca.bundle), "client"
    )
    assert not read  # the token was never sent
    assert isinstance(client_error, PeerRejected) and client_error.reason == "peer_not_authorized"


def test_an_svid_of_another_key_type_is_refused_not_half_served(ca: DevCA) -> None:
    """OpenSSL keeps one certificate per key type: after an RSA SVID replaced an EC one, the
    EC certificate would still be presented. The context refuses new connections instead."""
    from zerotrust import RotatingSvidSource

    source = RotatingSvidSource(ca.issue_svid(API))
    ctx = server_ssl_context(source, ca.bundle, authorizer=match.member_of("example.org"))
    source.set(ca.issue_svid(API, key_type="rsa-2048"))
    with pytest.raises(ConfigurationError, match="key type changed"):
        ctx.refresh()
    assert ctx.current_svid is not source.get_x509_svid()


def test_a_client_leaving_before_a_lazy_handshake_reads_as_end_of_stream(ca: DevCA) -> None:
    """A port check or a load balancer's probe: connect, then close. A lazily wrapped server
    socket reads b"" as the standard library reports it (suppress_ragged_eofs)."""
    import socket
    import threading

    server_ctx = server_ssl_context(ca.issue_svid(API), ca.bundle, authorizer=match.exact(WEB))
    listener = socket.create_server(("127.0.0.1", 0))
    seen: list[object] = []

    def serve() -> None:
        raw, _ = listener.accept()
        raw.settimeout(5)
        try:
            with server_ctx.wrap_socket(
                raw, server_side=True, do_handshake_on_connect=False
            ) as conn:
                seen.append(conn.recv(64))
        except (OSError, ssl.SSLError) as exc:
            seen.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    socket.create_connection(listener.getsockname(), timeout=5).close()
    thread.join(5)
    listener.close()
    assert seen == [b""]


def test_tls12_clients_resume_by_session_id_but_are_verified_again(ca: DevCA, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The standard library cannot switch off OpenSSL's server session-ID cache: a TLS 1.2
    client may resume. Its certificate is then checked again, against the server's current
    clock, bundles and authorizer; a client whose certificate expired meanwhile is refused."""
    import socket
    import threading

    from zerotrust import FixedClock

    web = ca.issue_svid(WEB, ttl=dt.timedelta(minutes=30))
    clock = FixedClock(dt.datetime.now(dt.timezone.utc))  # not NOW: set when the module loaded
    refused: list[str] = []
    sctx = server_ssl_context(
        ca.issue_svid(API, ttl=dt.timedelta(hours=4)),
        ca.bundle,
        authorizer=match.exact(WEB),
        clock=clock,
        on_refusal=lambda refusal: refused.append(refusal.error.code),
    )
    pem = tmp_path / "web.pem"
    pem.write_bytes(web.cert_chain_pem() + web.private_key_pem())
    plain = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # an ordinary client, not zerotrust's
    plain.maximum_version = ssl.TLSVersion.TLSv1_2
    plain.check_hostname = False
    plain.load_verify_locations(cadata=ca.bundle.to_pem().decode("ascii"))
    plain.load_cert_chain(pem)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    peers: list[str] = []

    def serve_one() -> None:  # closes cleanly (close_notify), so the session stays resumable
        raw, _ = listener.accept()
        raw.settimeout(5)
        with (
            contextlib.suppress(OSError, ssl.SSLError),
            raw,
            sctx.wrap_socket(raw, server_side=True) as conn,
        ):
            peers.append(str(conn.zerotrust_peer.spiffe_id))  # type: ignore[attr-defined]
            conn.sendall(b"ok")
            conn.unwrap()

    def connect(session: object = None) -> tuple[bytes, object, bool]:
        server = threading.Thread(target=serve_one, daemon=True)
        server.start()
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
                plain.wrap_socket(raw, session=session) as conn,  # type: ignore[arg-type]
            ):
                result = (conn.recv(2), conn.session, conn.session_reused)
                with contextlib.suppress(OSError, ssl.SSLError):
                    conn.unwrap()
                return result
        except (OSError, ssl.SSLError):
            return b"", None, False
        finally:
            server.join(5)

    try:
        reply, session, reused = connect()
        assert (reply, reused) == (b"ok", False)
        reply, _, reused = connect(session)
        assert (reply, reused) == (b"ok", True)
        clock.advance(hours=1)  # the client's certificate has expired
        reply, _, _ = connect(session)
        assert reply == b""
    finally:
        listener.close()
    assert refused == ["certificate_expired"]
    assert peers == [WEB, WEB]


def test_peer_of_is_none_without_a_zerotrust_handshake() -> None:
    """A plain SSL socket, a socket, or anything else: no verified peer to report."""
    plain = ssl.create_default_context().wrap_socket(
        socket.socket(), server_hostname="localhost", do_handshake_on_connect=False
    )
    with plain:
        assert peer_of(plain) is None
    assert peer_of(object()) is None
    assert peer_of(None) is None
    # only a VerifiedPeer counts, not whatever else an object calls zerotrust_peer
    assert peer_of(types.SimpleNamespace(zerotrust_peer=WEB)) is None


def _memory_handshake(
    server: ssl.SSLObject, client: ssl.SSLObject, wires: list[ssl.MemoryBIO]
) -> None:
    """A real TLS handshake between two SSL objects over memory buffers."""
    server_in, server_out, client_in, client_out = wires
    done = {"server": False, "client": False}
    for _ in range(20):
        for side, obj in (("client", client), ("server", server)):
            if not done[side]:
                try:
                    obj.do_handshake()
                    done[side] = True
                except ssl.SSLWantReadError:
                    pass
        server_in.write(client_out.read())
        client_in.write(server_out.read())
        if all(done.values()):
            return
    raise AssertionError("the handshake did not finish")


@pytest.mark.parametrize("client_presents", [True, False])
def test_peer_chain_der_is_the_chain_the_peer_sent(
    ca_with_intermediate: DevCA,
    tmp_path,
    client_presents: bool,  # type: ignore[no-untyped-def]
) -> None:
    """What a server adapter reads from an established connection: the client's chain, leaf
    first, as DER; a client that sent no certificate is MissingCredentials, not an empty chain."""
    from cryptography.hazmat.primitives.serialization import Encoding

    from zerotrust.errors import MissingCredentials
    from zerotrust.x509.peer import peer_chain_der

    ca = ca_with_intermediate
    for name, svid in (("server", ca.issue_svid(API)), ("client", ca.issue_svid(WEB))):
        svid.save(tmp_path / f"{name}.pem", tmp_path / f"{name}.key")
    roots = ca.bundle.to_pem().decode("ascii")
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(tmp_path / "server.pem", tmp_path / "server.key")
    sctx.verify_mode = ssl.CERT_OPTIONAL  # the peer may send none
    sctx.load_verify_locations(cadata=roots)
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.check_hostname = False
    cctx.load_verify_locations(cadata=roots)
    client_svid = None
    if client_presents:
        cctx.load_cert_chain(tmp_path / "client.pem", tmp_path / "client.key")
        client_svid = X509Svid.load(tmp_path / "client.pem", tmp_path / "client.key")
    wires = [ssl.MemoryBIO() for _ in range(4)]
    server = sctx.wrap_bio(wires[0], wires[1], server_side=True)
    client = cctx.wrap_bio(wires[2], wires[3])
    _memory_handshake(server, client, wires)
    if client_svid is None:
        with pytest.raises(MissingCredentials, match="no certificate"):
            peer_chain_der(server)
    else:
        sent = [cert.public_bytes(Encoding.DER) for cert in client_svid.cert_chain]
        assert len(sent) == 2 and peer_chain_der(server) == sent


def test_peer_chain_der_reads_the_public_method_of_python_3_13() -> None:
    """Objects without ``_sslobj`` (Python 3.13's ``get_unverified_chain()`` returns DER, and
    fails on a server whose client sent no certificate; imitated here, as this suite runs on
    the oldest supported Python that has the private method)."""
    from zerotrust.errors import MissingCredentials
    from zerotrust.x509.peer import peer_chain_der

    class Public:
        def __init__(self, chain: list[bytes] | None, leaf: bytes | None) -> None:
            self.chain, self.leaf = chain, leaf

        def get_unverified_chain(self) -> list[bytes]:
            if self.chain is None:
                raise AttributeError("'NoneType' object has no attribute 'public_bytes'")
            return self.chain

        def getpeercert(self, binary_form: bool = False) -> bytes | None:
            return self.leaf

    assert peer_chain_der(Public([b"leaf", b"ca"], b"leaf")) == [b"leaf", b"ca"]
    assert peer_chain_der(Public([], b"leaf")) == [b"leaf"]
    with pytest.raises(MissingCredentials):
        peer_chain_der(Public(None, None))


def test_context_arguments_are_checked(ca: DevCA) -> None:
    svid = ca.issue_svid(API)
    anyone = match.member_of("example.org")
    with pytest.raises(ConfigurationError, match="needs the workload's SVID"):
        server_ssl_context(None, ca.bundle, authorizer=anyone)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="get_x509_svid"):
        server_ssl_context(object(), ca.bundle, authorizer=anyone)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="bundles must be"):
        server_ssl_context(svid, ca.bundle.to_pem(), authorizer=anyone)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="bundles must be"):
        client_ssl_context(None, object(), authorizer=anyone)  # type: ignore[arg-type]
    for timeout in (0, -1, 600.5, True, "5", float("nan")):
        with pytest.raises(ConfigurationError, match=r"handshake_timeout .* \(0, 600\]"):
            server_ssl_context(svid, ca.bundle, authorizer=anyone, handshake_timeout=timeout)  # type: ignore[arg-type]
    for timeout in (0.001, 600, None):
        server_ssl_context(svid, ca.bundle, authorizer=anyone, handshake_timeout=timeout)


def _bio_pair(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, hostname: str = "localhost"
) -> tuple[ssl.SSLObject, ssl.SSLObject, list[ssl.MemoryBIO]]:
    wires = [ssl.MemoryBIO() for _ in range(4)]
    server = server_ctx.wrap_bio(wires[0], wires[1], server_side=True)
    client = client_ctx.wrap_bio(wires[2], wires[3], server_hostname=hostname)
    return server, client, wires


def _pump(wires: list[ssl.MemoryBIO]) -> None:
    wires[0].write(wires[3].read())
    wires[2].write(wires[1].read())


def _try(step: Callable[[], object]) -> object:
    """What one non-blocking step gives: its result, or the exception it raised."""
    try:
        return step()
    except (ssl.SSLError, OSError) as exc:
        return exc


def _handshake(
    server: ssl.SSLObject, client: ssl.SSLObject, wires: list[ssl.MemoryBIO], side: str = "server"
) -> object:
    """Drive both handshakes step by step until ``side``'s ends: what its last step gave
    (``None`` once done, or the exception it raised)."""
    outcome: object = None
    for _ in range(10):
        client_step = _try(client.do_handshake)
        _pump(wires)
        server_step = _try(server.do_handshake)
        _pump(wires)
        outcome = server_step if side == "server" else client_step
        if not isinstance(outcome, ssl.SSLWantReadError):
            break
    return outcome


def test_an_ssl_object_writing_first_sends_nothing_to_a_refused_server(ca: DevCA) -> None:
    """asyncio and other memory-BIO users may write before asking for the handshake: the
    write finishes it, the server's SPIFFE ID is checked, and a refused server gets no byte of
    application data."""
    impostor = "spiffe://example.org/ns/shop/sa/impostor"
    server_ctx = server_ssl_context(
        ca.issue_svid(impostor), ca.bundle, authorizer=match.member_of("example.org")
    )
    server, client_obj, wires = _bio_pair(server_ctx, client(ca.issue_svid(WEB), ca.bundle))
    outcomes = []
    for _ in range(10):
        outcomes.append(_try(lambda: client_obj.write(b"Authorization: Bearer secret")))
        _try(server.do_handshake)
        _pump(wires)
        if isinstance(outcomes[-1], PeerRejected):
            break
    refused = outcomes[-1]
    assert isinstance(refused, PeerRejected) and refused.reason == "peer_not_authorized"
    assert all(isinstance(o, ssl.SSLWantReadError) for o in outcomes[:-1])
    assert client_obj.zerotrust_peer is None  # type: ignore[attr-defined]
    for _ in range(3):  # whatever the client sent arrives: no application data in it
        read = _try(lambda: server.read(64))
        assert not isinstance(read, bytes) or b"secret" not in read
        _pump(wires)


def test_an_ssl_object_reading_first_never_returns_a_refused_clients_data(ca: DevCA) -> None:
    """TLS 1.3: a client sends application data right after its Finished, before the server
    has checked its certificate. A server SSL object read before its handshake finishes the
    handshake first, and refuses: the data is never returned."""
    intruder = ca.issue_svid("spiffe://example.org/ns/shop/sa/intruder")
    server_ctx = server_ssl_context(ca.issue_svid(API), ca.bundle, authorizer=match.exact(WEB))
    server, client_obj, wires = _bio_pair(server_ctx, client(intruder, ca.bundle))
    results = []
    for _ in range(10):
        if _try(client_obj.do_handshake) is None:
            _try(lambda: client_obj.write(b"secret"))
        _pump(wires)
        results.append(_try(lambda: server.read(64)))
        _pump(wires)
        if isinstance(results[-1], PeerRejected):
            break
    assert isinstance(results[-1], PeerRejected)
    assert results[-1].reason == "peer_not_authorized"
    assert not any(isinstance(r, bytes) for r in results)


def test_ssl_objects_reading_and_writing_first_between_accepted_peers(ca: DevCA) -> None:
    server_ctx = server_ssl_context(ca.issue_svid(API), ca.bundle, authorizer=match.exact(WEB))
    server, client_obj, wires = _bio_pair(server_ctx, client(ca.issue_svid(WEB), ca.bundle))
    received = b""
    for _ in range(10):
        _try(lambda: client_obj.write(b"hello"))
        _pump(wires)
        read = _try(lambda: server.read(64))
        _pump(wires)
        if isinstance(read, bytes):
            received = read
            break
    assert received.startswith(b"hello")
    assert str(server.zerotrust_peer.spiffe_id) == WEB  # type: ignore[attr-defined]
    assert str(client_obj.zerotrust_peer.spiffe_id) == API  # type: ignore[attr-defined]


def test_a_connection_moved_to_a_foreign_context_is_refused(
    ca: DevCA,
    tmp_path,  # type: ignore[no-untyped-def]
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An SNI callback may hand a connection another context; one that is not zerotrust's
    has no verifier, and the connection is refused rather than left unchecked."""
    svid = ca.issue_svid(API, dns_names=["localhost"])
    svid.save(tmp_path / "api.pem", tmp_path / "api.key")
    foreign = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    foreign.load_cert_chain(tmp_path / "api.pem", tmp_path / "api.key")
    foreign.verify_mode = ssl.CERT_REQUIRED
    foreign.load_verify_locations(cadata=ca.bundle.to_pem().decode("ascii"))
    server_ctx = server_ssl_context(svid, ca.bundle, authorizer=match.exact(WEB))

    def swap(conn: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
        conn.context = foreign

    server_ctx.sni_callback = swap
    caplog.set_level(logging.INFO, logger="zerotrust.tls")
    server, client_obj, wires = _bio_pair(server_ctx, client(ca.issue_svid(WEB), ca.bundle))
    outcome = _handshake(server, client_obj, wires)
    assert isinstance(outcome, PeerRejected)
    assert "lost its zerotrust context" in str(outcome)
    assert server.zerotrust_peer is None  # type: ignore[attr-defined]
    # logged all the same, although the foreign context knows nothing of zerotrust
    refused = [r.getMessage() for r in caplog.records if r.name == "zerotrust.tls"]
    assert any("handshake refused" in m and "configuration_error" in m for m in refused)


def test_a_client_context_keeps_the_sessions_of_max_sessions_servers(ca: DevCA) -> None:
    """TLS sessions are remembered per server name, the least recently verified dropped
    first beyond ``max_sessions``: a dropped name makes a full handshake again."""
    server_ctx = server_ssl_context(ca.issue_svid(API), ca.bundle, authorizer=match.exact(WEB))
    server_ctx.options &= ~ssl.OP_NO_TICKET  # (zerotrust servers issue none: see _build)
    server_ctx.num_tickets = 1
    client_ctx = client(ca.issue_svid(WEB), ca.bundle)
    client_ctx.max_sessions = 2  # type: ignore[attr-defined]

    def connect(name: str) -> bool:
        server, client_obj, wires = _bio_pair(server_ctx, client_ctx, hostname=name)
        _memory_handshake(server, client_obj, wires)
        for _ in range(3):  # the ticket arrives after the handshake
            _try(lambda: client_obj.read(1))
            _try(lambda: server.read(1))
            _pump(wires)
        return client_obj.session_reused

    assert [connect(name) for name in ("a", "b", "c")] == [False, False, False]
    assert connect("c") and connect("b")  # remembered
    assert not connect("a")  # the oldest, dropped when "c" was added
    # reusing a session makes it the most recent: adding "a" dropped "c", not "b"
    assert connect("b") and not connect("c")


# --- version floor, handshake deadline, write() ------------------------------------------------


@pytest.mark.parametrize("floor_on", ["server", "client"])
def test_minimum_version_is_applied(ca: DevCA, floor_on: str) -> None:
    """A context built with ``minimum_version=TLSv1_3`` refuses a peer that only speaks 1.2."""
    tls13 = ssl.TLSVersion.TLSv1_3
    sctx = server_ssl_context(
        ca.issue_svid(API),
        ca.bundle,
        authorizer=match.exact(WEB),
        minimum_version=tls13 if floor_on == "server" else ssl.TLSVersion.TLSv1_2,
    )
    cctx = client_ssl_context(
        ca.issue_svid(WEB),
        ca.bundle,
        authorizer=match.exact(API),
        minimum_version=tls13 if floor_on == "client" else ssl.TLSVersion.TLSv1_2,
    )
    assert (sctx if floor_on == "server" else cctx).minimum_version == tls13
    (cctx if floor_on == "server" else sctx).maximum_version = ssl.TLSVersion.TLSv1_2
    server, client_obj, wires = _bio_pair(sctx, cctx)
    with pytest.raises(ssl.SSLError, match=r"UNSUPPORTED_PROTOCOL|NO_PROTOCOLS_AVAILABLE"):
        _memory_handshake(server, client_obj, wires)
    assert server.zerotrust_peer is None  # type: ignore[attr-defined]
    assert client_obj.zerotrust_peer is None  # type: ignore[attr-defined]


def test_contexts_refuse_renegotiation_and_compression(ca: DevCA) -> None:
    svid = ca.issue_svid(WEB)
    for ctx in (
        server_ssl_context(svid, ca.bundle, authorizer=match.any()),
        client_ssl_context(svid, ca.bundle, authorizer=match.any()),
    ):
        assert ctx.options & ssl.OP_NO_RENEGOTIATION
        assert ctx.options & ssl.OP_NO_COMPRESSION


@contextmanager
def _stalled_client() -> Iterator[socket.socket]:
    """The server end of a connection whose client never sends a byte. A watchdog ends the
    client's side after 10 s, so a handshake without a deadline fails (EOF) rather than hangs."""
    server_end, client_end = socket.socketpair()
    with server_end, client_end:
        watchdog = threading.Timer(10, client_end.shutdown, (socket.SHUT_RDWR,))
        watchdog.start()
        try:
            yield server_end
        finally:
            watchdog.cancel()
            watchdog.join()


def test_a_stalled_client_cannot_hold_a_blocking_server_socket(ca: DevCA) -> None:
    """gunicorn and werkzeug threads use blocking sockets: the handshake gets the context's
    ``handshake_timeout``, and the socket is blocking again afterwards."""
    sctx = server_ssl_context(
        ca.issue_svid(API), ca.bundle, authorizer=match.exact(WEB), handshake_timeout=0.05
    )
    with (
        _stalled_client() as raw,
        sctx.wrap_socket(raw, server_side=True, do_handshake_on_connect=False) as conn,
    ):
        assert conn.gettimeout() is None
        with pytest.raises(TimeoutError):
            conn.do_handshake()
        assert conn.gettimeout() is None
        assert conn.zerotrust_peer is None  # type: ignore[attr-defined]


def test_a_sockets_own_timeout_is_left_alone(ca: DevCA) -> None:
    """A server socket that has a timeout of its own keeps it: the context's (longer) deadline
    is not applied over it, nor left behind."""
    sctx = server_ssl_context(
        ca.issue_svid(API), ca.bundle, authorizer=match.exact(WEB), handshake_timeout=600
    )
    with _stalled_client() as raw:
        raw.settimeout(0.05)
        with sctx.wrap_socket(raw, server_side=True, do_handshake_on_connect=False) as conn:
            with pytest.raises(TimeoutError):
                conn.do_handshake()
            assert conn.gettimeout() == 0.05


def test_write_on_a_lazy_client_socket_is_verified_first(ca: DevCA) -> None:
    """``SSLSocket.write`` (not only send and sendall) finishes the handshake and checks the
    server first: a refused server gets nothing, an accepted one the whole write."""
    impostor = "spiffe://example.org/ns/shop/sa/impostor"
    server_ctx = server_ssl_context(
        ca.issue_svid(impostor), ca.bundle, authorizer=match.member_of("example.org")
    )
    read, _, client_error = _lazy_exchange(
        server_ctx, client(ca.issue_svid(WEB), ca.bundle), "client", send="write"
    )
    assert not read
    assert isinstance(client_error, PeerRejected) and client_error.reason == "peer_not_authorized"
    server_ctx = server_ssl_context(
        ca.issue_svid(API), ca.bundle, authorizer=match.member_of("example.org")
    )
    read, server_error, client_error = _lazy_exchange(
        server_ctx, client(ca.issue_svid(WEB), ca.bundle), "client", send="write"
    )
    assert (read, server_error, client_error) == (b"Authorization: Bearer token", None, None)


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_servers_hand_out_no_session_ticket(ca: DevCA, version: ssl.TLSVersion) -> None:
    """No ticket under either version (``num_tickets`` covers TLS 1.3, ``OP_NO_TICKET`` TLS
    1.2): the stdlib cannot rotate ticket keys, so a ticket would outlive a rotated
    certificate."""
    sctx = server_ssl_context(ca.issue_svid(API), ca.bundle, authorizer=match.exact(WEB))
    cctx = client(ca.issue_svid(WEB), ca.bundle)
    cctx.maximum_version = version
    server, client_obj, wires = _bio_pair(sctx, cctx)
    _memory_handshake(server, client_obj, wires)
    for _ in range(3):  # a TLS 1.3 ticket would arrive after the handshake
        _try(lambda: client_obj.read(1))
        _try(lambda: server.read(1))
        _pump(wires)
    assert client_obj.version() == ("TLSv1.2" if version == ssl.TLSVersion.TLSv1_2 else "TLSv1.3")
    assert client_obj.session is not None and not client_obj.session.has_ticket


def test_a_non_blocking_server_socket_never_blocks_in_the_handshake(ca: DevCA) -> None:
    """Reading from a lazily wrapped non-blocking socket finishes the handshake first, without
    blocking: with nothing from the client yet, the read wants more data."""
    sctx = server_ssl_context(ca.issue_svid(API), ca.bundle, authorizer=match.exact(WEB))
    with _stalled_client() as raw:
        raw.setblocking(False)
        with sctx.wrap_socket(raw, server_side=True, do_handshake_on_connect=False) as conn:
            with pytest.raises(ssl.SSLWantReadError):
                conn.recv(64)
            with pytest.raises(ssl.SSLWantReadError):
                conn.do_handshake()
            assert conn.gettimeout() == 0.0


def test_the_authorizer_must_be_callable(ca: DevCA) -> None:
    """A SPIFFE ID string where a matcher belongs is a configuration error, not a context
    that fails (or worse) at the first handshake."""
    svid = ca.issue_svid(WEB)
    for build in (server_ssl_context, client_ssl_context):
        with pytest.raises(ConfigurationError, match="authorizer is required"):
            build(svid, ca.bundle, authorizer=API)  # type: ignore[arg-type]


async def _async_authorizer(spiffe_id: object) -> object:  # pragma: no cover - never awaited
    return match.any()(spiffe_id)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "authorizer",
    [_async_authorizer, lambda spiffe_id: "allowed", lambda spiffe_id: True],
    ids=["async", "string", "bool"],
)
def test_an_authorizer_that_returns_no_match_result_refuses_the_peer(
    ca: DevCA, authorizer: Callable[[object], object]
) -> None:
    """Only a MatchResult decides: the coroutine of an async authorizer, a string or a bool
    is truthy, and lets no peer through."""
    refusals: list[HandshakeRefusal] = []
    server_ctx = server_ssl_context(
        ca.issue_svid(API),
        ca.bundle,
        authorizer=authorizer,  # type: ignore[arg-type]
        on_refusal=refusals.append,
    )
    server, client_obj, wires = _bio_pair(server_ctx, client(ca.issue_svid(WEB), ca.bundle))
    outcome = _handshake(server, client_obj, wires)
    assert isinstance(outcome, PeerRejected)
    assert outcome.reason == "configuration_error" and "not MatchResult" in str(outcome)
    assert server.zerotrust_peer is None  # type: ignore[attr-defined]
    assert [r.error.code for r in refusals] == ["configuration_error"]


@pytest.mark.parametrize("suppress", [True, False])
def test_a_client_leaving_before_a_lazy_handshake_as_recv_into_and_strict_sockets_see_it(
    ca: DevCA, suppress: bool
) -> None:
    """The client connects and leaves. ``recv_into`` reads 0 bytes, as the standard library
    reports end of stream; a socket made with ``suppress_ragged_eofs=False`` raises instead."""
    sctx = server_ssl_context(ca.issue_svid(API), ca.bundle, authorizer=match.exact(WEB))
    server_end, client_end = socket.socketpair()
    client_end.close()
    with (
        server_end,
        sctx.wrap_socket(
            server_end,
            server_side=True,
            do_handshake_on_connect=False,
            suppress_ragged_eofs=suppress,
        ) as conn,
    ):
        buffer = bytearray(16)
        if suppress:
            assert conn.recv_into(buffer) == 0
        else:
            with pytest.raises(ssl.SSLEOFError):
                conn.recv_into(buffer)
        assert conn.zerotrust_peer is None  # type: ignore[attr-defined]


def test_a_refused_connection_stays_refused_and_is_reported_once(ca: DevCA) -> None:
    """After the refusal, every later read or write on the connection verifies the peer
    again and is refused again (no byte of data in either direction); listeners hear of the
    refusal once."""
    refusals: list[HandshakeRefusal] = []
    server_ctx = server_ssl_context(
        ca.issue_svid(API), ca.bundle, authorizer=match.exact(WEB), on_refusal=refusals.append
    )
    intruder = client(ca.issue_svid("spiffe://example.org/ns/shop/sa/intruder"), ca.bundle)
    server, client_obj, wires = _bio_pair(server_ctx, intruder)
    outcome = _handshake(server, client_obj, wires)
    assert isinstance(outcome, PeerRejected)
    for step in (lambda: server.read(64), lambda: server.write(b"secret"), server.do_handshake):
        again = _try(step)
        assert isinstance(again, PeerRejected) and again.reason == "peer_not_authorized"
    assert server.zerotrust_peer is None  # type: ignore[attr-defined]
    assert [r.error.code for r in refusals] == ["peer_not_authorized"]


def test_a_client_context_reports_the_server_it_refused(ca: DevCA) -> None:
    """On a client context the refused peer is the server: the refusal says so, with the
    server's SPIFFE ID and leaf fingerprint."""
    import hashlib

    from cryptography.hazmat.primitives.serialization import Encoding

    impostor = "spiffe://example.org/ns/shop/sa/impostor"
    impostor_svid = ca.issue_svid(impostor)
    server_ctx = server_ssl_context(impostor_svid, ca.bundle, authorizer=match.exact(WEB))
    client_ctx = client(ca.issue_svid(WEB), ca.bundle)
    refusals: list[HandshakeRefusal] = []
    client_ctx.add_refusal_listener(refusals.append)  # type: ignore[attr-defined]
    server, client_obj, wires = _bio_pair(server_ctx, client_ctx)
    outcome = _handshake(server, client_obj, wires, side="client")
    assert isinstance(outcome, PeerRejected)
    (refusal,) = refusals
    assert (refusal.role, refusal.spiffe_id, refusal.remote_addr) == ("server", impostor, None)
    leaf = impostor_svid.leaf.public_bytes(Encoding.DER)
    assert refusal.cert_fingerprint == hashlib.sha256(leaf).hexdigest()
    assert refusal.error.code == "peer_not_authorized"


def test_an_authority_added_to_the_bundle_is_trusted_without_a_restart(ca: DevCA) -> None:
    """A new authority reaches OpenSSL's first pass before the next handshake, even when the
    context's own SVID did not change: peers it issued are accepted from then on."""
    new_ca = DevCA.create("example.org")
    bundles = RotatingBundleSource(ca.bundle)
    sctx = server_ssl_context(ca.issue_svid(API), bundles, authorizer=match.exact(WEB))
    newcomer = client(new_ca.issue_svid(WEB), ca.bundle)

    def handshake() -> object:
        server, client_obj, wires = _bio_pair(sctx, newcomer)
        outcome = _handshake(server, client_obj, wires)
        return outcome if outcome is not None else server.zerotrust_peer  # type: ignore[attr-defined]

    refused = handshake()
    assert isinstance(refused, ssl.SSLCertVerificationError)
    bundles.set(ca.bundle.with_x509_authorities([ca.root_certificate, new_ca.root_certificate]))
    accepted = handshake()
    assert str(accepted.spiffe_id) == WEB  # type: ignore[attr-defined]


def test_a_client_leaf_without_a_spiffe_id_is_reported_with_its_fingerprint(ca: DevCA) -> None:
    """A certificate that names no SPIFFE ID is refused and still reported, by the
    fingerprint of its leaf (the one thing known about it)."""
    import hashlib

    from cryptography.hazmat.primitives.serialization import Encoding

    refusals: list[HandshakeRefusal] = []
    server_ctx = server_ssl_context(
        ca.issue_svid(API), ca.bundle, authorizer=match.any(), on_refusal=refusals.append
    )
    chain, key = ca.issue_unchecked_leaf(uri_sans=[], not_before=NOW - HOUR, not_after=NOW + HOUR)
    server, client_obj, wires = _bio_pair(server_ctx, client(_UncheckedSvid(chain, key), ca.bundle))
    outcome = _handshake(server, client_obj, wires)
    assert isinstance(outcome, PeerRejected)
    (refusal,) = refusals
    assert refusal.error.code == "svid_profile_violation" and refusal.spiffe_id is None
    assert (
        refusal.cert_fingerprint == hashlib.sha256(chain[0].public_bytes(Encoding.DER)).hexdigest()
    )


def test_a_tls_only_client_context_verifies_the_server(ca: DevCA, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``client_ssl_context(None, ...)`` presents no certificate and still checks the server's
    SPIFFE ID; a zerotrust server, which requires one, refuses it."""
    svid = ca.issue_svid(API)
    svid.save(tmp_path / "api.pem", tmp_path / "api.key")
    plain = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # no client certificate asked for
    plain.load_cert_chain(tmp_path / "api.pem", tmp_path / "api.key")
    tls_only = client_ssl_context(None, ca.bundle, authorizer=match.exact(API))
    assert tls_only.current_svid is None
    server, client_obj, wires = _bio_pair(plain, tls_only)
    _memory_handshake(server, client_obj, wires)
    assert str(client_obj.zerotrust_peer.spiffe_id) == API  # type: ignore[attr-defined]
    assert server.getpeercert() is None
    refusals: list[HandshakeRefusal] = []
    sctx = server_ssl_context(svid, ca.bundle, authorizer=match.any(), on_refusal=refusals.append)
    server, client_obj, wires = _bio_pair(sctx, tls_only)
    with pytest.raises(ssl.SSLError):
        _memory_handshake(server, client_obj, wires)
    assert [r.error.code for r in refusals] == ["missing_credentials"]


def test_an_svid_rotation_forgets_the_sessions_of_the_old_identity(ca: DevCA) -> None:
    """Sessions made with the old SVID are not offered after a rotation: the next connection
    is a full handshake, and the server sees the new identity."""
    web_v2 = "spiffe://example.org/ns/shop/sa/web-v2"
    server_ctx = server_ssl_context(
        ca.issue_svid(API), ca.bundle, authorizer=match.member_of("example.org")
    )
    server_ctx.options &= ~ssl.OP_NO_TICKET  # (zerotrust servers issue none: see _build)
    server_ctx.num_tickets = 1
    source = RotatingSvidSource(ca.issue_svid(WEB))
    client_ctx = client_ssl_context(source, ca.bundle, authorizer=match.exact(API))

    def connect() -> tuple[bool, str]:
        server, client_obj, wires = _bio_pair(server_ctx, client_ctx)
        _memory_handshake(server, client_obj, wires)
        for _ in range(3):  # the ticket arrives after the handshake
            _try(lambda: client_obj.read(1))
            _try(lambda: server.read(1))
            _pump(wires)
        return client_obj.session_reused, str(server.zerotrust_peer.spiffe_id)  # type: ignore[attr-defined]

    assert connect() == (False, WEB)
    assert connect() == (True, WEB)  # resumed while the SVID stays
    source.set(ca.issue_svid(web_v2))
    assert connect() == (False, web_v2)


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_a_connection_set_up_before_a_rotation_completes_with_the_svid_it_was_made_with(
    ca: DevCA, version: ssl.TLSVersion
) -> None:
    """Rotation while a handshake is in flight: the connection made before the swap presents
    the old certificate with the old key until its end (never a torn pair), and the first
    connection made after it presents the new one, on the same context."""
    old, new = ca.issue_svid(API), ca.issue_svid(API)
    source = RotatingSvidSource(old)
    server_ctx = server_ssl_context(source, ca.bundle, authorizer=match.exact(WEB))
    client_ctx = client(ca.issue_svid(WEB), ca.bundle)
    client_ctx.maximum_version = version
    before = _bio_pair(server_ctx, client_ctx)
    _try(before[1].do_handshake)  # the client's hello is on its way
    _pump(before[2])
    source.set(new)
    after = _bio_pair(server_ctx, client_ctx)  # loads the new SVID first
    assert server_ctx.current_svid is new
    for server, client_obj, wires in (before, after):
        _memory_handshake(server, client_obj, wires)
    seen = [peer_of(client_obj) for _, client_obj, _ in (before, after)]
    assert [peer.fingerprint for peer in seen if peer is not None] == [
        old.fingerprint,
        new.fingerprint,
    ]
    assert all(peer_of(server) is not None for server, _, _ in (before, after))


@pytest.mark.parametrize("sent", ["leaf, stray CA, intermediate", "leaf, intermediate, root"])
def test_the_chain_handed_to_applications_is_the_verified_path(
    ca_with_intermediate: DevCA,
    tmp_path,
    sent: str,  # type: ignore[no-untyped-def]
) -> None:
    """What the server adapters hand the application: the certificates of the verified path,
    in path order; one the client added that path building did not use is left out, and the
    bundle authority is there only when the client sent it."""
    from cryptography.hazmat.primitives.serialization import Encoding

    from zerotrust.x509.peer import peer_chain_der, verified_chain_der

    ca = ca_with_intermediate
    client_svid = ca.issue_svid(WEB)
    leaf, intermediate = (c.public_bytes(Encoding.DER) for c in client_svid.cert_chain)
    (root,) = ca.bundle.x509_authorities
    stray = DevCA.create("stray.example").bundle.x509_authorities[0].public_bytes(Encoding.DER)
    root_der = root.public_bytes(Encoding.DER)
    chain = [leaf, stray, intermediate] if "stray" in sent else [leaf, intermediate, root_der]
    pem = "".join(ssl.DER_cert_to_PEM_cert(der) for der in chain)
    (tmp_path / "sent.pem").write_text(pem)
    (tmp_path / "key.pem").write_bytes(client_svid.private_key_pem())
    sctx = server_ssl_context(ca.issue_svid(API), ca.bundle, authorizer=match.exact(WEB))
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.check_hostname = False
    cctx.verify_mode = ssl.CERT_NONE
    cctx.load_cert_chain(tmp_path / "sent.pem", tmp_path / "key.pem")
    wires = [ssl.MemoryBIO() for _ in range(4)]
    server = sctx.wrap_bio(wires[0], wires[1], server_side=True)
    client = cctx.wrap_bio(wires[2], wires[3])
    _memory_handshake(server, client, wires)
    assert peer_of(server) is not None
    assert peer_chain_der(server) == chain  # what the client sent
    if "stray" in sent:
        assert verified_chain_der(server) == [leaf, intermediate]
    else:
        assert verified_chain_der(server) == [leaf, intermediate, root_der]
