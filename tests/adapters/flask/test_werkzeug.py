"""werkzeug's server with zerotrust's mTLS, through an intermediate CA (real handshakes)."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import flask
import httpx
import pytest

from zerotrust import (
    Authenticator,
    Callers,
    Guard,
    MemorySink,
    Policy,
    Rule,
    client_ssl_context,
    match,
    server_ssl_context,
)
from zerotrust.adapters.werkzeug import serve_werkzeug
from zerotrust.dev import DevCA
from zerotrust.errors import ConfigurationError
from zerotrust.flask import ZeroTrust, current_principal

WEB = "spiffe://example.org/ns/shop/sa/web"
API = "spiffe://example.org/ns/shop/sa/api"


@contextmanager
def _serving(app: Any, ca: DevCA) -> Iterator[int]:
    """``app`` served by ``serve_werkzeug`` with the API's SVID, for the duration; its port."""
    context = server_ssl_context(
        ca.issue_svid(API, dns_names=["localhost"]),
        ca.bundle,
        authorizer=match.member_of("example.org"),
    )
    server = serve_werkzeug(app, ssl_context=context)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_the_handshake_peer_reaches_the_app_with_intermediates() -> None:
    ca = DevCA.create("example.org", intermediate=True)
    guard = Guard(
        authenticator=Authenticator(bundles=ca.bundle),
        policy=Policy(
            [Rule(id="shop", callers=[Callers(spiffe_ids=["spiffe://example.org/ns/shop/*"])])]
        ),
        audit=MemorySink(),
    )
    app = flask.Flask("werkzeug-test")
    ZeroTrust(app, guard=guard)

    @app.get("/whoami")
    def whoami() -> dict[str, str]:
        return {
            "caller": str(current_principal.spiffe_id),
            "proven_by": current_principal.proven_by,
        }

    with _serving(app, ca) as port:
        client_ctx = client_ssl_context(ca.issue_svid(WEB), ca.bundle, authorizer=match.exact(API))
        with httpx.Client(verify=client_ctx) as client:
            response = client.get(f"https://localhost:{port}/whoami")
        assert response.status_code == 200
        assert response.json() == {"caller": WEB, "proven_by": "mtls"}


def test_needs_a_zerotrust_context() -> None:
    import ssl

    with pytest.raises(ConfigurationError):
        serve_werkzeug(flask.Flask("x"), ssl_context=ssl.create_default_context())  # type: ignore[arg-type]


def test_a_rotated_server_svid_reaches_new_connections_without_a_restart() -> None:
    import socket

    from cryptography.hazmat.primitives.serialization import Encoding

    from zerotrust.x509.sources import RotatingSvidSource

    ca = DevCA.create("example.org")
    guard = Guard(
        authenticator=Authenticator(bundles=ca.bundle),
        policy=Policy([Rule(id="shop", callers=[Callers(trust_domains=["example.org"])])]),
        audit=MemorySink(),
    )
    app = flask.Flask("werkzeug-rotation")
    ZeroTrust(app, guard=guard)

    @app.get("/whoami")
    def whoami() -> dict[str, str]:
        return {"caller": str(current_principal.spiffe_id)}

    first = ca.issue_svid(API, dns_names=["localhost"])
    second = ca.issue_svid(API, dns_names=["localhost"])
    source = RotatingSvidSource(first)
    context = server_ssl_context(source, ca.bundle, authorizer=match.member_of("example.org"))
    server = serve_werkzeug(app, ssl_context=context)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    client_ctx = client_ssl_context(ca.issue_svid(WEB), ca.bundle, authorizer=match.exact(API))

    def presented() -> bytes:
        with (
            socket.create_connection(("localhost", server.server_port), timeout=30) as raw,
            client_ctx.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            der = tls.getpeercert(binary_form=True)
            tls.sendall(b"GET /whoami HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            reply = b""
            while chunk := tls.recv(4096):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 200") and WEB.encode() in reply
        assert der is not None
        return der

    try:
        assert presented() == first.leaf.public_bytes(Encoding.DER)
        source.set(second)
        assert presented() == second.leaf.public_bytes(Encoding.DER)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_a_client_that_stalls_its_handshake_holds_back_no_other() -> None:
    """werkzeug ran each handshake in accept(): a client that connected and sent nothing held
    every other client back for the handshake's deadline (10 s) each. The handshake now runs
    in the connection's own thread."""
    import socket

    ca = DevCA.create("example.org")
    app = flask.Flask("werkzeug-stall")

    @app.get("/ping")
    def ping() -> str:
        return "pong"

    context = server_ssl_context(
        ca.issue_svid(API, dns_names=["localhost"]), ca.bundle, authorizer=match.exact(WEB)
    )
    server = serve_werkzeug(app, ssl_context=context)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    stalled = [socket.create_connection(("127.0.0.1", server.server_port)) for _ in range(3)]
    try:
        client_ctx = client_ssl_context(ca.issue_svid(WEB), ca.bundle, authorizer=match.exact(API))
        # a deadline shorter than the server's handshake deadline: answered only if no
        # stalled handshake stands in the way
        with httpx.Client(verify=client_ctx, timeout=3) as client:
            response = client.get(f"https://localhost:{server.server_port}/ping")
        assert response.status_code == 200 and response.text == "pong"
    finally:
        for sock in stalled:
            sock.close()
        server.shutdown()
        server.server_close()
        thread.join(5)


def _stray_ca() -> bytes:
    """A CA certificate no bundle trusts, that a client may add to the chain it sends."""
    return DevCA.create("stray.example").bundle.to_pem()


def test_the_chain_in_the_environ_is_the_verified_one(tmp_path: Path) -> None:
    """A client may send certificates path building never uses (RFC 8446 4.4.2): the environ's
    chain holds the verified path only, never a certificate nothing verified."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    from zerotrust.wsgi import CHAIN_ENVIRON_KEY

    ca = DevCA.create("example.org", intermediate=True)
    client = ca.issue_svid(WEB)
    leaf, intermediate = (cert.public_bytes(Encoding.PEM) for cert in client.cert_chain)
    (tmp_path / "sent.pem").write_bytes(leaf + _stray_ca() + intermediate)
    (tmp_path / "key.pem").write_bytes(client.private_key_pem())
    seen: list[list[str]] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        chain = environ[CHAIN_ENVIRON_KEY]
        seen.append([x509.load_der_x509_certificate(c).subject.rfc4514_string() for c in chain])
        start_response("204 No Content", [])
        return []

    with _serving(app, ca) as port:
        client_ctx = ssl.create_default_context(cadata=ca.bundle.to_pem().decode("ascii"))
        client_ctx.load_cert_chain(tmp_path / "sent.pem", tmp_path / "key.pem")
        with httpx.Client(verify=client_ctx) as http:
            assert http.get(f"https://localhost:{port}/").status_code == 204
    assert seen == [[c.subject.rfc4514_string() for c in client.cert_chain]]
