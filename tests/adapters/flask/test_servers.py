"""Real servers on loopback: gunicorn serving direct mTLS with zerotrust's context, and a real
nginx terminating mTLS in front of gunicorn; real clients, real handshakes."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from gunicorn import config as gunicorn_config

from tests import _nginx
from tests._gunicorn import GunicornServer, gunicorn_server
from tests._server_process import server_process
from zerotrust import X509Svid, client_ssl_context, match
from zerotrust.dev import DevCA
from zerotrust.tokens import PrivateJWK, TokenIssuer

from ._support import AUD, ISS, WEB

pytestmark = pytest.mark.network

APP = "tests.adapters.flask._server_app:create_app"
SERVER_ID = "spiffe://example.org/ns/shop/sa/orders"
PROXY_ID = "spiffe://example.org/ns/edge/sa/nginx"
GUNICORN_CONF = """
import os
from zerotrust.adapters.gunicorn import ZeroTrustTLS

tls = ZeroTrustTLS.from_env()
certfile = os.environ["ZEROTRUST_SVID_CERT"]
keyfile = os.environ["ZEROTRUST_SVID_KEY"]
ssl_context = tls.ssl_context
worker_class = "zerotrust.adapters.gunicorn.SyncWorker"
"""


@dataclass(frozen=True)
class Material:
    ca: DevCA
    issuer: TokenIssuer
    client: X509Svid
    env: dict[str, str]
    audit: Path
    conf: Path

    def events(self) -> list[dict[str, Any]]:
        lines = self.audit.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines]

    def client_context(self, svid: X509Svid | None, expect: str = SERVER_ID) -> ssl.SSLContext:
        return client_ssl_context(svid, self.ca.bundle, authorizer=match.exact(expect))


@pytest.fixture(scope="module")
def material(ca: DevCA, tmp_path_factory: pytest.TempPathFactory) -> Material:
    tmp = tmp_path_factory.mktemp("servers")
    server = ca.issue_svid(SERVER_ID, dns_names=["localhost"])
    (tmp / "svid.pem").write_bytes(server.cert_chain_pem())
    (tmp / "svid.key").write_bytes(server.private_key_pem())
    (tmp / "svid.key").chmod(0o600)
    (tmp / "bundle.pem").write_bytes(ca.bundle.to_pem())
    issuer = TokenIssuer(PrivateJWK.generate("ES256"), issuer=ISS)
    (tmp / "jwks.json").write_text(json.dumps(issuer.jwks()), encoding="utf-8")
    (tmp / "gunicorn_conf.py").write_text(GUNICORN_CONF, encoding="utf-8")
    audit = tmp / "audit.jsonl"
    audit.touch()
    env = {
        "ZEROTRUST_SVID_CERT": str(tmp / "svid.pem"),
        "ZEROTRUST_SVID_KEY": str(tmp / "svid.key"),
        "ZEROTRUST_BUNDLE": str(tmp / "bundle.pem"),
        "ZEROTRUST_TRUST_DOMAIN": "example.org",
        "ZT_TEST_JWKS": str(tmp / "jwks.json"),
        "ZT_TEST_BUNDLE": str(tmp / "bundle.pem"),
        "ZT_TEST_AUDIT": str(audit),
    }
    client = ca.issue_svid(WEB)
    return Material(ca, issuer, client, env, audit, tmp / "gunicorn_conf.py")


@pytest.fixture(scope="module")
def mtls_server(material: Material) -> Iterator[GunicornServer]:
    with gunicorn_server(f"{APP}('mtls')", config=material.conf, env=material.env) as server:
        yield server


@pytest.fixture(scope="module")
def proxied_server(material: Material) -> Iterator[GunicornServer]:
    with gunicorn_server(f"{APP}('proxied')", env=material.env) as server:
        yield server


@pytest.fixture(scope="module")
def nginx(material: Material, proxied_server: GunicornServer) -> Iterator[_nginx.Nginx]:
    if not _nginx.available():
        pytest.skip("nginx is not installed")
    svid = material.ca.issue_svid(PROXY_ID, dns_names=["localhost"])
    upstream = f"127.0.0.1:{proxied_server.port}"
    with _nginx.nginx_mtls_proxy(upstream=upstream, server_svid=svid, client_ca=material.ca) as n:
        yield n


def https_client(context: ssl.SSLContext) -> httpx.Client:
    return httpx.Client(verify=context, timeout=30)


def plain_client(source: str) -> httpx.Client:
    """A plain HTTP client whose connections come from ``source`` (any 127/8 address)."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=30)


def leaf_pem(svid: X509Svid) -> str:
    return svid.leaf.public_bytes(Encoding.PEM).decode()


# --- gunicorn serving mTLS directly ----------------------------------------------------------


def test_direct_mtls_handler_sees_the_callers_spiffe_id(
    material: Material, mtls_server: GunicornServer
) -> None:
    assert mtls_server.scheme == "https"
    with https_client(material.client_context(material.client)) as client:
        for _ in range(2):  # a new connection each time (the sync worker closes it)
            response = client.get(mtls_server.url("/whoami"))
            assert response.status_code == 200
            assert response.json()["spiffe_id"] == WEB
            assert response.json()["proven_by"] == "mtls"
    event = material.events()[-1]
    assert (event["service"], event["route"], event["status"]) == ("orders", "/whoami", 200)
    assert event["cert_fingerprint"] == material.client.fingerprint


def test_direct_mtls_with_a_token(material: Material, mtls_server: GunicornServer) -> None:
    token = material.issuer.issue(subject=WEB, audience=AUD)
    with https_client(material.client_context(material.client)) as client:
        response = client.get(
            mtls_server.url("/orders/42"), headers={"Authorization": f"Bearer {token}"}
        )
    assert response.status_code == 200 and response.json() == {"order_id": 42, "caller": WEB}
    event = material.events()[-1]
    assert (event["proven_by"], event["route"]) == ("mtls+jwt", "/orders/{order_id}")


def test_clients_without_a_trusted_certificate_cannot_connect(
    material: Material, mtls_server: GunicornServer
) -> None:
    stranger = DevCA.create("example.org").issue_svid(WEB)  # same name, another root
    for svid in (None, stranger):
        with (
            https_client(material.client_context(svid)) as client,
            pytest.raises(httpx.TransportError),
        ):
            client.get(mtls_server.url("/whoami"))
    with https_client(material.client_context(material.client)) as client:
        assert client.get(mtls_server.url("/whoami")).status_code == 200  # still serving


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_and_openssl_reach_gunicorn_with_the_svid_files(
    material: Material, mtls_server: GunicornServer, tmp_path: Path
) -> None:
    """Clients that are not Python: curl with the SVID's chain and key is served and seen as
    its SPIFFE ID; without a certificate, or offering TLS 1.1 at most, it gets no answer."""
    cert, key = tmp_path / "web.pem", tmp_path / "web.key"
    material.client.save(cert, key)
    curl = [
        "curl",
        "--silent",
        "--show-error",
        "--max-time",
        "30",
        "--cacert",
        material.env["ZEROTRUST_BUNDLE"],
        "--write-out",
        "\n%{http_code}",
        f"https://localhost:{mtls_server.port}/whoami",  # the name the server's SVID carries
    ]
    served = subprocess.run(
        [*curl, "--cert", str(cert), "--key", str(key)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    body, status = served.stdout.rsplit("\n", 1)
    assert (status, json.loads(body)["spiffe_id"]) == ("200", WEB), served.stderr
    refused = subprocess.run(curl, capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode != 0 and "200" not in refused.stdout
    if shutil.which("openssl") is None:
        return
    old = subprocess.run(
        [
            "openssl",
            "s_client",
            "-connect",
            f"{mtls_server.host}:{mtls_server.port}",
            "-tls1_1",
            "-cipher",
            "DEFAULT:@SECLEVEL=0",
        ],
        input="",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if "no protocols available" not in old.stderr:  # an openssl that can offer TLS 1.1
        assert old.returncode != 0 and "Cipher is (NONE)" in old.stdout


def test_client_checks_the_servers_spiffe_id(
    material: Material, mtls_server: GunicornServer
) -> None:
    wrong = material.client_context(material.client, expect="spiffe://example.org/ns/x/sa/y")
    with https_client(wrong) as client, pytest.raises(httpx.TransportError):
        client.get(mtls_server.url("/whoami"))


def test_threaded_worker(material: Material) -> None:
    args = ["--worker-class", "zerotrust.adapters.gunicorn.ThreadWorker", "--threads", "2"]
    with (
        gunicorn_server(
            f"{APP}('mtls')", config=material.conf, env=material.env, args=args
        ) as server,
        https_client(material.client_context(material.client)) as client,
    ):
        for _ in range(3):  # kept alive: the peer is attached to every request of the connection
            response = client.get(server.url("/whoami"))
            assert response.status_code == 200 and response.json()["proven_by"] == "mtls"


@pytest.mark.skipif(
    not hasattr(gunicorn_config, "ALPN_PROTOCOL_MAP"), reason="this gunicorn has no HTTP/2"
)
def test_threaded_worker_serves_http2_when_gunicorn_offers_it(material: Material) -> None:
    """With ``http_protocols = "h2,h1"`` gunicorn's threaded worker serves HTTP/2 to a client
    that chooses it by ALPN: the zerotrust context offers what gunicorn's own would, and every
    stream reaches the application with the verified peer. The sync worker (HTTP/1.1 only)
    offers no h2."""
    pytest.importorskip("h2")
    args = [
        "--worker-class",
        "zerotrust.adapters.gunicorn.ThreadWorker",
        "--threads",
        "2",
        "--http-protocols",
        "h2,h1",
    ]
    with (
        gunicorn_server(
            f"{APP}('mtls')", config=material.conf, env=material.env, args=args
        ) as server,
        httpx.Client(
            verify=material.client_context(material.client), http2=True, timeout=30
        ) as client,
    ):
        for _ in range(2):
            response = client.get(server.url("/whoami"))
            assert response.http_version == "HTTP/2"
            assert response.status_code == 200 and response.json()["proven_by"] == "mtls"
            assert response.json()["spiffe_id"] == WEB
    # the sync worker speaks HTTP/1.1 only: nothing offers h2, and the client is served
    with (
        gunicorn_server(
            f"{APP}('mtls')",
            config=material.conf,
            env=material.env,
            args=["--http-protocols", "h2,h1"],
        ) as server,
        httpx.Client(
            verify=material.client_context(material.client), http2=True, timeout=30
        ) as client,
    ):
        response = client.get(server.url("/whoami"))
        assert (response.http_version, response.status_code) == ("HTTP/1.1", 200)


def test_a_stalled_handshake_does_not_hold_a_thread(material: Material, tmp_path: Path) -> None:
    # A client that sends the start of a ClientHello and then nothing held a gthread worker's
    # thread for as long as it kept the connection open; with one thread, nobody was served.
    conf = tmp_path / "gunicorn_conf.py"
    conf.write_text(
        GUNICORN_CONF.replace("from_env()", "from_env(handshake_timeout=1.0)"), encoding="utf-8"
    )
    args = ["--worker-class", "zerotrust.adapters.gunicorn.ThreadWorker", "--threads", "1"]
    with (
        gunicorn_server(f"{APP}('mtls')", config=conf, env=material.env, args=args) as server,
        socket.create_connection((server.host, server.port), timeout=30) as stalled,
    ):
        stalled.sendall(b"\x16\x03\x01\x02\x00\x01")  # a partial ClientHello, then silence
        time.sleep(0.5)  # the worker's one thread takes it first
        with https_client(material.client_context(material.client)) as client:
            response = client.get(server.url("/whoami"), timeout=30)
        assert response.status_code == 200
        assert stalled.recv(1) == b""  # the server gave up on it


def test_gunicorn_own_tls_options_with_the_worker(material: Material) -> None:
    """gunicorn's plain TLS settings: the chain reaches the Guard, which verifies it."""
    env = material.env
    args = ["--certfile", env["ZEROTRUST_SVID_CERT"], "--keyfile", env["ZEROTRUST_SVID_KEY"],
            "--ca-certs", env["ZEROTRUST_BUNDLE"], "--cert-reqs", "2",
            "--worker-class", "zerotrust.adapters.gunicorn.SyncWorker"]  # fmt: skip
    with (
        gunicorn_server(f"{APP}('mtls')", env=env, args=args) as server,
        https_client(material.client_context(material.client)) as client,
    ):
        response = client.get(server.url("/whoami"))
    assert response.status_code == 200 and response.json()["proven_by"] == "mtls"
    assert material.events()[-1]["cert_fingerprint"] == material.client.fingerprint


def test_gunicorn_own_tls_with_optional_client_certificates(material: Material) -> None:
    """``--cert-reqs 1``: a client may connect without a certificate. It is then a caller
    without one (a token authenticates it, nothing else does); one with a certificate is
    verified as ever."""
    env = material.env
    args = ["--certfile", env["ZEROTRUST_SVID_CERT"], "--keyfile", env["ZEROTRUST_SVID_KEY"],
            "--ca-certs", env["ZEROTRUST_BUNDLE"], "--cert-reqs", "1",
            "--worker-class", "zerotrust.adapters.gunicorn.SyncWorker"]  # fmt: skip
    token = material.issuer.issue(subject=WEB, audience=AUD)
    with gunicorn_server(f"{APP}('mtls')", env=env, args=args) as server:
        with https_client(material.client_context(material.client)) as client:
            with_certificate = client.get(server.url("/whoami"))
        with https_client(material.client_context(None)) as client:
            with_token = client.get(
                server.url("/whoami"), headers={"Authorization": f"Bearer {token}"}
            )
            with_nothing = client.get(server.url("/whoami"))
    assert with_certificate.status_code == 200
    assert with_certificate.json()["proven_by"] == "mtls"
    assert with_token.status_code == 200, with_token.text
    assert with_token.json() | {"forwarded_header_seen": None} == {
        "spiffe_id": WEB,
        "proven_by": "jwt",
        "forwarded_header_seen": None,
    }
    assert with_nothing.status_code == 401
    assert with_nothing.headers["www-authenticate"].startswith("Bearer")
    assert material.events()[-1]["decision"] == "deny"


# --- nginx in front ---------------------------------------------------------------------------


def test_nginx_forwards_the_verified_client_certificate(
    material: Material, nginx: _nginx.Nginx
) -> None:
    context = material.client_context(material.client, expect=PROXY_ID)
    with https_client(context) as client:
        response = client.get(nginx.url("/whoami"))
    assert response.status_code == 200, nginx.error_log()
    body = response.json()
    assert (body["spiffe_id"], body["proven_by"]) == (WEB, "proxy-mtls")
    assert body["forwarded_header_seen"] == {"nginx": True, "xfcc": False}
    event = material.events()[-1]
    assert (event["service"], event["remote_addr"]) == ("nginx", "127.0.0.1")
    assert "forwarded_cert_nginx" in event["notes"]


def test_nginx_replaces_a_header_the_client_sent(material: Material, nginx: _nginx.Nginx) -> None:
    other = material.ca.issue_svid("spiffe://example.org/ns/shop/sa/admin")
    context = material.client_context(material.client, expect=PROXY_ID)
    with https_client(context) as client:
        response = client.get(
            nginx.url("/whoami"), headers={"X-SSL-Client-Cert": quote(leaf_pem(other), safe="")}
        )
    assert response.status_code == 200 and response.json()["spiffe_id"] == WEB


def test_nginx_refuses_clients_without_a_certificate(
    material: Material, nginx: _nginx.Nginx
) -> None:
    before = len(material.events())
    with https_client(material.client_context(None, expect=PROXY_ID)) as client:
        response = client.get(nginx.url("/whoami"))
    assert response.status_code == 400  # nginx: "No required SSL certificate was sent"
    assert len(material.events()) == before  # never reached the application


@pytest.mark.parametrize("server", ["gunicorn", "uvicorn-httptools", "uvicorn-h11"])
def test_nginx_ssl_client_cert_is_a_folded_header_few_servers_accept(
    material: Material, server: str
) -> None:
    # $ssl_client_cert sends each line break of the PEM as LF + TAB, an obsolete line folding
    with contextlib.ExitStack() as stack:
        if server == "gunicorn":
            served = stack.enter_context(gunicorn_server(f"{APP}('folded')", env=material.env))
            port = served.port
        else:
            command = [sys.executable, "-m", "uvicorn", "--interface", "wsgi", "--factory"]
            command += ["--http", server.split("-")[1]]

            def uvicorn(fd: int) -> list[str]:
                return [*command, "--fd", str(fd), f"{APP.rpartition(':')[0]}:create_folded_app"]

            port = stack.enter_context(server_process(uvicorn, env=material.env)).address[1]
        svid = material.ca.issue_svid(PROXY_ID, dns_names=["localhost"])
        nginx = stack.enter_context(
            _nginx.nginx_mtls_proxy(
                upstream=f"127.0.0.1:{port}",
                server_svid=svid,
                client_ca=material.ca,
                value="$ssl_client_cert",
            )
        )
        before = len(material.events())
        with https_client(material.client_context(material.client, expect=PROXY_ID)) as client:
            response = client.get(nginx.url("/whoami"))
    if server == "uvicorn-h11":  # h11 unfolds each line break into a space
        assert response.status_code == 200, nginx.error_log()
        assert (response.json()["spiffe_id"], response.json()["proven_by"]) == (WEB, "proxy-mtls")
        assert "forwarded_cert_nginx" in material.events()[-1]["notes"]
    else:  # refused by the server before the application runs
        assert response.status_code == 400
        assert len(material.events()) == before


def test_forwarded_header_sent_directly_is_ignored(
    material: Material, proxied_server: GunicornServer
) -> None:
    header = {"X-SSL-Client-Cert": quote(leaf_pem(material.client), safe="")}
    with plain_client("127.0.0.2") as client:
        response = client.get(proxied_server.url("/whoami"), headers=header)
    assert response.status_code == 401
    assert response.json()["error"] == "missing_credentials"
    event = material.events()[-1]
    assert (event["service"], event["remote_addr"]) == ("nginx", "127.0.0.2")
    assert "forwarded_cert_ignored_untrusted_peer" in event["notes"]


def test_envoy_xfcc_only_from_the_trusted_address(
    material: Material, proxied_server: GunicornServer
) -> None:
    xfcc = f'By={PROXY_ID};Cert="{quote(leaf_pem(material.client), safe="")}";URI={WEB}'
    url = proxied_server.url("/envoy/whoami")
    with plain_client("127.0.0.1") as client:
        trusted = client.get(url, headers={"X-Forwarded-Client-Cert": xfcc})
    assert trusted.status_code == 200
    assert (trusted.json()["spiffe_id"], trusted.json()["proven_by"]) == (WEB, "proxy-mtls")
    assert trusted.json()["forwarded_header_seen"] == {"nginx": False, "xfcc": True}
    event = material.events()[-1]
    assert (event["service"], event["route"]) == ("envoy", "/whoami")
    with plain_client("127.0.0.2") as client:
        spoofed = client.get(url, headers={"X-Forwarded-Client-Cert": xfcc})
    assert spoofed.status_code == 401
    event = material.events()[-1]
    assert (event["service"], event["remote_addr"]) == ("envoy", "127.0.0.2")
    assert "forwarded_cert_ignored_untrusted_peer" in event["notes"]


def test_a_refused_handshake_gets_no_plain_text_answer(material: Material, tmp_path: Path) -> None:
    """A client whose certificate the authorizer refuses after OpenSSL accepted it: the
    connection is closed, and nothing is written to it in the clear (gunicorn's own error
    answer, an HTTP 403 naming the refusal, is no TLS record)."""
    conf = tmp_path / "gunicorn_conf.py"
    only = "spiffe://example.org/ns/shop/sa/nobody"
    conf.write_text(
        GUNICORN_CONF.replace("from_env()", f"from_env(authorizer=match.exact({only!r}))").replace(
            "import os\n", "import os\nfrom zerotrust import match\n"
        ),
        encoding="utf-8",
    )
    served = len(material.events())
    for worker in ("SyncWorker", "ThreadWorker"):
        args = ["--worker-class", f"zerotrust.adapters.gunicorn.{worker}"]
        with gunicorn_server(f"{APP}('mtls')", config=conf, env=material.env, args=args) as server:
            context = material.client_context(material.client)
            context.maximum_version = ssl.TLSVersion.TLSv1_2  # the handshake ends on both sides
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
            received = b""
            with socket.create_connection((server.host, server.port), timeout=30) as raw:
                while True:
                    try:
                        tls.do_handshake()
                        break
                    except ssl.SSLWantReadError:
                        raw.sendall(outgoing.read())
                        data = raw.recv(65536)
                        assert data, "closed during the handshake"
                        incoming.write(data)
                raw.sendall(outgoing.read())
                while data := raw.recv(65536):
                    received += data
            assert b"HTTP/1.1" not in received and b"peer_not_authorized" not in received
    assert len(material.events()) == served  # no request reached the application
