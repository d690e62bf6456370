"""Server certificate rotation through grpc's dynamic credentials, mid-traffic."""

from __future__ import annotations

import socket
import threading

import grpc
import pytest

from tests.grpc_integration._support import (
    SERVER_ID,
    SERVICE,
    World,
    bearer,
    raw_credentials,
    sync_server,
)
from zerotrust import (
    RotatingBundleSource,
    RotatingSvidSource,
    TrustBundle,
    client_ssl_context,
    match,
)
from zerotrust.adapters._grpc_tls import _CertificateConfigurations
from zerotrust.errors import ConfigurationError


def server_fingerprint(world: World, port: int) -> str:
    """A fresh TLS connection's verified server certificate (zerotrust's own client)."""
    context = client_ssl_context(world.client_svid, world.ca.bundle, authorizer=match.any())
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("localhost", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        return tls.zerotrust_peer.fingerprint  # type: ignore[attr-defined,no-any-return]


def test_rotation_mid_traffic(world: World) -> None:
    source = RotatingSvidSource(world.server_svid)
    rotated = world.ca.issue_svid(SERVER_ID, dns_names=["localhost"])
    errors: list[BaseException] = []
    done = threading.Event()
    rotated_now = threading.Event()
    counts = {"before": 0, "after": 0}

    with (
        sync_server(world, svid=source) as port,
        grpc.secure_channel(f"localhost:{port}", raw_credentials(world)) as channel,
    ):
        assert server_fingerprint(world, port) == world.server_svid.fingerprint
        call = channel.unary_unary(f"/{SERVICE}/Unary")
        metadata = bearer(world.token())

        def traffic() -> None:
            while not done.is_set():
                try:
                    call(b"x", metadata=metadata, timeout=10)
                except grpc.RpcError as exc:
                    errors.append(exc)
                    return
                counts["after" if rotated_now.is_set() else "before"] += 1

        worker = threading.Thread(target=traffic)
        worker.start()
        try:
            for _ in range(200):  # bounded: wait until some calls went through
                if counts["before"] >= 5:
                    break
                threading.Event().wait(0.01)
            source.set(rotated)
            rotated_now.set()
            new_fp = server_fingerprint(world, port)  # a new connection: the new certificate
            for _ in range(500):
                if counts["after"] >= 5 or errors:
                    break
                threading.Event().wait(0.01)
        finally:
            done.set()
            worker.join(30)
        # a brand-new channel handshakes with the rotated certificate and works
        with grpc.secure_channel(f"localhost:{port}", raw_credentials(world)) as fresh:
            assert fresh.unary_unary(f"/{SERVICE}/Unary")(b"y", metadata=metadata, timeout=10)
    assert errors == []
    assert counts["before"] >= 5 and counts["after"] >= 5
    assert new_fp == rotated.fingerprint != world.server_svid.fingerprint


def test_withdrawn_authorities_keep_the_server_handshaking(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """When every authority is withdrawn (an empty bundle), grpc keeps its previous first-pass
    roots: handshakes go on and the interceptor's per-trust-domain check refuses the clients,
    instead of every new handshake failing to load a configuration."""
    bundles = RotatingBundleSource(world.ca.bundle)
    configurations = _CertificateConfigurations(RotatingSvidSource(world.server_svid), bundles)
    assert configurations() is None  # nothing changed
    bundles.set(TrustBundle(world.ca.trust_domain))
    assert configurations() is not None
    assert configurations() is None
    assert "could not load" not in caplog.text
    with pytest.raises(ConfigurationError, match=r"no X\.509 authorities"):
        _CertificateConfigurations(world.server_svid, TrustBundle(world.ca.trust_domain))
