"""Real servers over direct mTLS: uvicorn (h11; httptools on uvloop) and hypercorn, serving a
FastAPI app with zerotrust's server context, driven by real httpx and websocket clients."""

import asyncio
import hashlib
import socket
import ssl
import time
from collections.abc import Iterator
from typing import Annotated, Any

import httpx
import pytest
import websockets
from fastapi import FastAPI, Request, Security, WebSocket
from websockets.sync.client import connect

from tests.adapters.asgi._servers import needs_uvicorn_http2, serve, uvicorn_server
from zerotrust import (
    Authenticator,
    Callers,
    Guard,
    MemorySink,
    Operations,
    Policy,
    Principal,
    PrivateJWK,
    RotatingSvidSource,
    Rule,
    TokenIssuer,
    TokenVerifier,
    VerifiedPeer,
    client_ssl_context,
    match,
    server_ssl_context,
)
from zerotrust.asgi import TLS_PEER_KEY
from zerotrust.dev import DevCA
from zerotrust.fastapi import ZeroTrust

pytestmark = pytest.mark.network

SERVER_ID = "spiffe://example.org/ns/shop/sa/orders"
WEB = "spiffe://example.org/ns/shop/sa/web"
ISS, AUD = "https://issuer.example", "orders"
KINDS = ["uvicorn-h11", "uvicorn-httptools", "hypercorn"]
_WS = tuple(int(p) for p in websockets.__version__.split(".")[:2])


@pytest.fixture(scope="module")
def ca() -> DevCA:
    return DevCA.create("example.org")


@pytest.fixture(scope="module")
def issuer() -> TokenIssuer:
    return TokenIssuer(PrivateJWK.generate("ES256", kid="k1"), issuer=ISS)


def build_app(ca: DevCA, issuer: TokenIssuer) -> tuple[FastAPI, MemorySink]:
    sink = MemorySink()
    verifier = TokenVerifier(issuer=ISS, audience=AUD, keys=issuer.jwks(), algorithms=["ES256"])
    policy = Policy(
        [
            Rule(
                id="mesh",
                callers=[Callers(trust_domains=["example.org"])],
                operations=[Operations(routes=["/whoami", "/ws"])],
            )
        ]
    )
    guard = Guard(
        authenticator=Authenticator(tokens=verifier, bundles=ca.bundle),
        policy=policy,
        audit=sink,
        service="orders",
    )
    zt = ZeroTrust(guard)
    app = FastAPI()
    zt.install(app)

    @app.get("/whoami")
    async def whoami(request: Request, principal: Annotated[Principal, Security(zt)]) -> Any:
        tls = request.scope["extensions"]["tls"]
        return {
            "id": principal.id,
            "proven_by": principal.proven_by,
            "peer_verified_at_handshake": isinstance(tls[TLS_PEER_KEY], VerifiedPeer),
            "chain": len(tls["client_cert_chain"]),
            "pem": tls["client_cert_chain"][0].startswith("-----BEGIN CERTIFICATE-----"),
            "tls_version": tls["tls_version"],
            "cipher_suite": tls["cipher_suite"],
            "client_cert_name": tls["client_cert_name"],
            "server_cert": tls["server_cert"],
            "client_cert_error": tls["client_cert_error"],
        }

    @app.websocket("/ws")
    async def ws(websocket: WebSocket, principal: Annotated[Principal, Security(zt)]) -> None:
        await websocket.accept()
        await websocket.send_text(principal.id)
        await websocket.close()

    return app, sink


@pytest.fixture(scope="module")
def rotating(ca: DevCA) -> RotatingSvidSource:
    return RotatingSvidSource(ca.issue_svid(SERVER_ID, dns_names=["localhost"]))


@pytest.fixture(scope="module", params=KINDS)
def server(
    request: pytest.FixtureRequest, ca: DevCA, issuer: TokenIssuer, rotating: RotatingSvidSource
) -> Iterator[tuple[str, int, MemorySink]]:
    app, sink = build_app(ca, issuer)
    context = server_ssl_context(rotating, ca.bundle, authorizer=match.member_of("example.org"))
    with serve(request.param, app, context) as port:
        yield request.param, port, sink


def client_context(ca: DevCA, svid: Any = None) -> ssl.SSLContext:
    if svid is None:
        svid = ca.issue_svid(WEB)
    return client_ssl_context(svid, ca.bundle, authorizer=match.exact(SERVER_ID))


def get(port: int, context: ssl.SSLContext, **kw: Any) -> httpx.Response:
    with httpx.Client(verify=context, timeout=30) as http:
        return http.get(f"https://localhost:{port}/whoami", **kw)


# IANA numbers of the TLS 1.3 suites (RFC 8446 B.4), as the ASGI TLS extension gives them
_TLS13_SUITES = {
    "TLS_AES_128_GCM_SHA256": 0x1301,
    "TLS_AES_256_GCM_SHA384": 0x1302,
    "TLS_CHACHA20_POLY1305_SHA256": 0x1303,
}


def test_mtls_caller_reaches_the_handler(server: Any, ca: DevCA) -> None:
    _, port, sink = server
    svid = ca.issue_svid(WEB)
    with (
        httpx.Client(verify=client_context(ca, svid), timeout=30) as http,
        http.stream("GET", f"https://localhost:{port}/whoami") as response,
    ):
        response.read()
        tls = response.extensions["network_stream"].get_extra_info("ssl_object")
        negotiated, version = tls.cipher()[0], tls.version()
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == WEB and body["proven_by"] == "mtls"
    assert body["peer_verified_at_handshake"] and body["pem"] and body["chain"] >= 1
    # what the client negotiated, in the extension's terms
    assert body["tls_version"] == {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}[version]
    if version == "TLSv1.3":
        assert body["cipher_suite"] == _TLS13_SUITES[negotiated]
    else:
        assert isinstance(body["cipher_suite"], int)
    assert body["client_cert_name"] == svid.leaf.subject.rfc4514_string()
    assert body["server_cert"] is None and body["client_cert_error"] is None
    assert sink.last.spiffe_id == WEB and sink.last.route == "/whoami"


def test_token_and_certificate(server: Any, ca: DevCA, issuer: TokenIssuer) -> None:
    _, port, _ = server
    token = issuer.issue(subject=WEB, audience=AUD)
    response = get(port, client_context(ca), headers={"Authorization": f"Bearer {token}"})
    assert response.json()["proven_by"] == "mtls+jwt"


def test_client_without_certificate_cannot_connect(server: Any, ca: DevCA) -> None:
    _, port, sink = server
    before = len(sink)
    anonymous = client_ssl_context(None, ca.bundle, authorizer=match.exact(SERVER_ID))
    with pytest.raises(httpx.TransportError):
        get(port, anonymous)
    assert len(sink) == before  # refused at the handshake: the app never saw it


def test_client_of_untrusted_ca_cannot_connect(server: Any, ca: DevCA) -> None:
    _, port, _ = server
    stranger = DevCA.create("example.org").issue_svid(WEB)  # same name, other authority
    with pytest.raises(httpx.TransportError):
        get(port, client_context(ca, stranger))


def test_websocket_over_mtls(server: Any, ca: DevCA) -> None:
    _, port, sink = server
    uri = f"wss://localhost:{port}/ws"
    context = client_context(ca)
    # websockets 15 added proxy= (and reads proxy variables); before 13 ssl= was ssl_context=
    tls: dict[str, Any] = {"ssl": context} if _WS >= (13, 0) else {"ssl_context": context}
    if _WS >= (15, 0):
        tls["proxy"] = None
    with connect(uri, **tls, open_timeout=30) as ws:
        assert ws.recv(timeout=30) == WEB
    assert sink.last.kind == "websocket" and sink.last.proven_by == "mtls"


def server_leaf(port: int, context: ssl.SSLContext) -> str:
    """Fingerprint of the certificate the server presents on a new connection."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=30) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as conn,
    ):
        der = conn.getpeercert(binary_form=True)
        assert der is not None
        conn.sendall(b"GET /whoami HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
        assert reply.startswith(b"HTTP/1.1 200")
        return hashlib.sha256(der).hexdigest()


def test_rotation_reaches_new_connections(
    server: Any, ca: DevCA, rotating: RotatingSvidSource
) -> None:
    _, port, _ = server
    context = client_context(ca)
    before = server_leaf(port, context)
    fresh = ca.issue_svid(SERVER_ID, dns_names=["localhost"])
    rotating.set(fresh)
    after = server_leaf(port, context)
    assert before != after
    assert after == hashlib.sha256(fresh.leaf.public_bytes(ssl_der())).hexdigest()


def ssl_der() -> Any:
    from cryptography.hazmat.primitives.serialization import Encoding

    return Encoding.DER


@pytest.mark.parametrize("kind", KINDS)
def test_repeated_requests_on_one_connection_see_a_revocation_at_once(
    kind: str, ca: DevCA, issuer: TokenIssuer, rotating: RotatingSvidSource
) -> None:
    """Keep-alive traffic with the same token is answered from the first decision, yet the
    very next request after a revocation is refused (and audited) on the same connection."""
    sink = MemorySink()
    verifier = TokenVerifier(issuer=ISS, audience=AUD, keys=issuer.jwks(), algorithms=["ES256"])
    guard = Guard(
        authenticator=Authenticator(tokens=verifier, bundles=ca.bundle),
        policy=Policy([Rule(id="mesh", callers=[Callers(trust_domains=["example.org"])])]),
        audit=sink,
    )
    app, zt = FastAPI(), ZeroTrust(guard)
    zt.install(app)

    @app.get("/whoami")
    async def whoami(principal: Annotated[Principal, Security(zt)]) -> Any:
        return {"proven_by": principal.proven_by, "jti": principal.token_jti}

    context = server_ssl_context(rotating, ca.bundle, authorizer=match.member_of("example.org"))
    token = issuer.issue(subject=WEB, audience=AUD, ttl=600)
    fresh = issuer.issue(subject=WEB, audience=AUD, ttl=600)
    with (
        serve(kind, app, context) as port,
        httpx.Client(verify=client_context(ca), timeout=30) as http,
    ):
        url = f"https://localhost:{port}/whoami"
        bearer = {"Authorization": f"Bearer {token}"}
        answers = [http.get(url, headers=bearer) for _ in range(5)]
        assert [r.status_code for r in answers] == [200] * 5
        assert {r.json()["proven_by"] for r in answers} == {"mtls+jwt"}
        assert guard._repeats  # the later requests were repeats of the first decision
        guard.store.revoke_token(answers[0].json()["jti"], expires_at=time.time() + 600)
        refused = http.get(url, headers=bearer)
        assert refused.status_code == 401
        assert refused.json()["error"] == "invalid_token"
        assert http.get(url, headers={"Authorization": f"Bearer {fresh}"}).status_code == 200
    assert [e.decision for e in sink.events[-2:]] == ["deny", "allow"]
    assert sink.events[-2].reason == "token_revoked"
    assert sum(e.decision == "allow" for e in sink.events) == 6  # one event per request


def test_http2_streams_carry_the_peer_of_their_own_connection(
    ca: DevCA, issuer: TokenIssuer, rotating: RotatingSvidSource
) -> None:
    """hypercorn negotiates HTTP/2 by ALPN: every stream of a connection sees that connection's
    verified peer, and two connections from different workloads never see each other's."""
    import asyncio

    app, sink = build_app(ca, issuer)
    context = server_ssl_context(rotating, ca.bundle, authorizer=match.member_of("example.org"))
    other = "spiffe://example.org/ns/shop/sa/batch"

    async def calls(port: int, workload: str) -> list[tuple[str, str, str]]:
        async with httpx.AsyncClient(
            verify=client_context(ca, ca.issue_svid(workload)), http2=True, timeout=30
        ) as http:
            url = f"https://localhost:{port}/whoami"
            answers = await asyncio.gather(*(http.get(url) for _ in range(8)))
        return [(r.http_version, r.json()["id"], r.json()["proven_by"]) for r in answers]

    async def both(port: int) -> tuple[list[Any], list[Any]]:
        return await asyncio.gather(calls(port, WEB), calls(port, other))

    before = len(sink)
    with serve("hypercorn", app, context) as port:
        web, batch = asyncio.run(both(port))
    assert web == [("HTTP/2", WEB, "mtls")] * 8
    assert batch == [("HTTP/2", other, "mtls")] * 8
    assert len(sink) - before == 16  # one audit event per stream
    assert {e.spiffe_id for e in sink.events[before:]} == {WEB, other}


@pytest.mark.parametrize("kind", KINDS)
def test_dependencies_alone_leave_no_principal_to_the_next_request_on_a_connection(
    ca: DevCA, rotating: RotatingSvidSource, kind: str
) -> None:
    """Without the middleware nothing resets ``current_principal()`` after the dependency set
    it: each request runs in a task of its own, so the next request on the same keep-alive
    connection starts without the previous caller."""
    from zerotrust.fastapi import current_principal

    guard = Guard(
        authenticator=Authenticator(bundles=ca.bundle),
        policy=Policy([Rule(id="mesh", callers=[Callers(trust_domains=["example.org"])])]),
        audit=MemorySink(),
    )
    zt = ZeroTrust(guard)
    app = FastAPI()
    zt.install(app, middleware=False)

    def seen(request: Request) -> dict[str, Any]:
        assert request.client is not None
        return {"context": getattr(current_principal(), "id", None), "port": request.client.port}

    @app.get("/guarded")
    async def guarded(request: Request, principal: Annotated[Principal, Security(zt)]) -> Any:
        return seen(request)

    @app.get("/open")
    async def unguarded(request: Request) -> Any:
        return seen(request)

    context = server_ssl_context(rotating, ca.bundle, authorizer=match.member_of("example.org"))
    with (
        serve(kind, app, context) as port,
        httpx.Client(verify=client_context(ca), timeout=30) as http,
    ):
        first = http.get(f"https://localhost:{port}/guarded").json()
        second = http.get(f"https://localhost:{port}/open").json()
    assert first["context"] == WEB
    assert second == {"context": None, "port": first["port"]}  # the same connection


def test_x_forwarded_for_never_names_the_trusted_proxy(
    ca: DevCA, rotating: RotatingSvidSource
) -> None:
    """``ZeroTrustUvicornConfig`` keeps the socket peer as the client address: a caller on
    loopback that names the proxy's address in ``X-Forwarded-For`` and sends another workload's
    (public) certificate in the proxy's header is itself, and the header is ignored and gone.
    uvicorn's own default (``proxy_headers`` on, trusting loopback) would believe it."""
    from urllib.parse import quote

    from cryptography.hazmat.primitives.serialization import Encoding

    from zerotrust import TrustedProxies

    admin = "spiffe://example.org/ns/ops/sa/admin"
    sink = MemorySink()
    guard = Guard(
        authenticator=Authenticator(
            bundles=ca.bundle, trusted_proxies=TrustedProxies(["10.0.0.1/32"], header="nginx")
        ),
        policy=Policy([Rule(id="mesh", callers=[Callers(trust_domains=["example.org"])])]),
        audit=sink,
    )
    zt = ZeroTrust(guard)
    app = FastAPI()
    zt.install(app)

    @app.get("/whoami")
    async def whoami(request: Request, principal: Annotated[Principal, Security(zt)]) -> Any:
        return {"id": principal.id, "sent": "x-ssl-client-cert" in request.headers}

    pem = ca.issue_svid(admin).leaf.public_bytes(Encoding.PEM).decode()
    spoof = {"X-Forwarded-For": "10.0.0.1", "X-SSL-Client-Cert": quote(pem, safe="")}
    context = server_ssl_context(rotating, ca.bundle, authorizer=match.member_of("example.org"))
    with uvicorn_server(app, context, "h11") as port:
        answer = get(port, client_context(ca), headers=spoof)
    assert answer.status_code == 200
    assert answer.json() == {"id": WEB, "sent": False}
    assert sink.last.remote_addr == "127.0.0.1"
    assert "forwarded_cert_ignored_untrusted_peer" in sink.last.notes


class _HandsOn(asyncio.Protocol):
    """Hands each connection to a protocol instance of its own in ``connection_made``, as
    uvicorn's HTTP/2 protocol (``http2=True``) hands it to its HTTP/1.1 or HTTP/2 protocol once
    ALPN has chosen."""

    def __init__(self, **kw: Any) -> None:
        self._kw = kw

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        from uvicorn.protocols.http.h11_impl import H11Protocol

        protocol = H11Protocol(**self._kw)
        transport.set_protocol(protocol)
        protocol.connection_made(transport)  # type: ignore[arg-type]


@pytest.mark.parametrize("protocol", ["hands-on", "zttp-http2"])
def test_a_protocol_that_hands_the_connection_on_carries_the_peer(
    ca: DevCA, issuer: TokenIssuer, rotating: RotatingSvidSource, protocol: str
) -> None:
    """The TLS extension reaches the requests of the protocol a connection was handed to, not
    only those of the class uvicorn built: with ``http2=True`` every connection is handed on."""
    if protocol == "zttp-http2":
        needs_uvicorn_http2()
        options: dict[str, Any] = {"http": "zttp", "http2": True}
    else:
        options = {"http": _HandsOn}
    app, sink = build_app(ca, issuer)
    context = server_ssl_context(rotating, ca.bundle, authorizer=match.member_of("example.org"))
    with (
        uvicorn_server(app, context, **options) as port,
        httpx.Client(verify=client_context(ca), http2=True, timeout=30) as http,
    ):
        answer = http.get(f"https://localhost:{port}/whoami")
    assert answer.status_code == 200
    assert answer.json()["id"] == WEB and answer.json()["proven_by"] == "mtls"
    assert answer.json()["peer_verified_at_handshake"] is True
    assert sink.last is not None and sink.last.spiffe_id == WEB


def test_server_configurations_refuse_what_would_bypass_the_context(ca: DevCA) -> None:
    """The zerotrust context is the one TLS configuration: uvicorn's own ``ssl_*`` options, a
    plain path to a certificate, or several processes (each would get a pickled copy of the
    context, whose rotation then reaches none of them) are refused."""
    import asyncio

    from hypercorn.config import Config

    from zerotrust import server_ssl_context
    from zerotrust.adapters.hypercorn import ZeroTrustHypercornConfig, serve_hypercorn
    from zerotrust.adapters.uvicorn import ZeroTrustUvicornConfig
    from zerotrust.errors import ConfigurationError

    context = server_ssl_context(
        ca.issue_svid("spiffe://example.org/api"), ca.bundle, authorizer=match.any()
    )
    app = FastAPI()
    for bad in ("svid.pem", None):
        with pytest.raises(ConfigurationError, match=r"ssl_context must be an ssl\.SSLContext"):
            ZeroTrustUvicornConfig(app, ssl_context=bad)  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match=r"ssl_context must be an ssl\.SSLContext"):
            ZeroTrustHypercornConfig(bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="ssl_context replaces ssl_ca_certs, ssl_certfile"):
        ZeroTrustUvicornConfig(app, ssl_context=context, ssl_certfile="a", ssl_ca_certs="b")
    for options in ({"workers": 2}, {"reload": True}):
        with pytest.raises(ConfigurationError, match="one process per context"):
            ZeroTrustUvicornConfig(app, ssl_context=context, **options)
    config = ZeroTrustUvicornConfig(app, ssl_context=context, workers=1, reload=False)
    assert config.zerotrust_ssl_context is context and config.proxy_headers is False
    assert ZeroTrustHypercornConfig(context).ssl_enabled

    with pytest.raises(ConfigurationError, match="needs a ZeroTrustHypercornConfig"):
        asyncio.run(serve_hypercorn(app, Config()))  # type: ignore[arg-type]

    # sockets hypercorn would bind, and zerotrust never serve (nor close; HTTP/3 advertised)
    async def at_once() -> None:  # so that a server started anyway stops
        return None

    for name in ("insecure_bind", "quic_bind"):
        unserved = ZeroTrustHypercornConfig(context)
        setattr(unserved, name, ["127.0.0.1:0"])
        with pytest.raises(ConfigurationError, match=f"not \\['{name}'\\]"):
            asyncio.run(serve_hypercorn(app, unserved, shutdown_trigger=at_once))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ciphers", "AES128-SHA"),
        ("ca_certs", "other-ca.pem"),
        ("verify_mode", ssl.CERT_OPTIONAL),
        ("certfile", "server.pem"),
        ("keyfile", "server.key"),
    ],
)
def test_hypercorn_tls_settings_that_would_be_ignored_are_refused(
    ca: DevCA, name: str, value: object
) -> None:
    """hypercorn's own TLS settings configure a context the zerotrust one replaces: a cipher
    list or CA file set there would be silently ignored, so serving refuses them."""
    from zerotrust.adapters.hypercorn import ZeroTrustHypercornConfig, serve_hypercorn
    from zerotrust.errors import ConfigurationError

    context = server_ssl_context(
        ca.issue_svid("spiffe://example.org/api"), ca.bundle, authorizer=match.any()
    )
    config = ZeroTrustHypercornConfig(context)
    setattr(config, name, value)

    async def at_once() -> None:
        return None

    async def app(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover - refused
        raise AssertionError("served")

    with pytest.raises(ConfigurationError, match=f"hypercorn's {name} would be ignored"):
        asyncio.run(serve_hypercorn(app, config, shutdown_trigger=at_once))
    with pytest.raises(ConfigurationError, match=name):
        config.create_ssl_context()
    assert ZeroTrustHypercornConfig(context).create_ssl_context() is context  # defaults: fine


def _renewed_root(ca: DevCA) -> Any:
    """``ca``'s root certificate issued again: the same name and key, a new serial and
    validity (a CA certificate renewed before it expires)."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    old = ca.root_certificate
    now = dt.datetime.now(dt.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(old.subject)
        .issuer_name(old.subject)
        .public_key(old.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=3650))
    )
    for extension in old.extensions:
        builder = builder.add_extension(extension.value, extension.critical)
    return builder.sign(ca._root_key, hashes.SHA256())  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", KINDS)
def test_a_renewed_authority_keeps_open_connections_served(kind: str) -> None:
    """A bundle whose CA certificate was renewed (same name and key) still vouches for the
    chains the old one did: new connections are accepted, and so are the next requests of
    connections already open, which the Guard checks against the current bundle. A bundle
    without that key still ends their access."""
    from zerotrust import RotatingBundleSource

    ca = DevCA.create("example.org")
    bundles = RotatingBundleSource(ca.bundle)
    guard = Guard(
        authenticator=Authenticator(bundles=bundles),
        policy=Policy([Rule(id="mesh", callers=[Callers(trust_domains=["example.org"])])]),
        audit=MemorySink(),
    )
    app, zt = FastAPI(), ZeroTrust(guard)
    zt.install(app)

    @app.get("/whoami")
    async def whoami(principal: Annotated[Principal, Security(zt)]) -> Any:
        return principal.id

    context = server_ssl_context(
        ca.issue_svid(SERVER_ID), bundles, authorizer=match.member_of("example.org")
    )
    caller = client_ssl_context(ca.issue_svid(WEB), ca.bundle, authorizer=match.exact(SERVER_ID))
    with serve(kind, app, context) as port, httpx.Client(verify=caller, timeout=30) as open_:
        url = f"https://localhost:{port}/whoami"
        assert open_.get(url).status_code == 200
        bundles.set(ca.bundle.with_x509_authorities([_renewed_root(ca)]))
        assert get(port, caller).status_code == 200  # a new connection
        kept = open_.get(url)  # the connection opened before the renewal
        assert (kept.status_code, kept.json()) == (200, WEB)
        bundles.set(ca.bundle.with_x509_authorities([DevCA.create("example.org").root_certificate]))
        assert open_.get(url).status_code == 401


@pytest.mark.parametrize("kind", ["uvicorn-h11", "hypercorn"])
def test_client_cert_chain_is_the_verified_path_not_what_the_client_added(
    kind: str, tmp_path: Any
) -> None:
    """A client may send certificates path building never uses (RFC 8446 4.4.2). The ASGI TLS
    extension's ``client_cert_chain`` is a chain in which each certificate signs the one before
    it, and ``client_cert_error`` is None (verified): it holds the verified path only."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    ca = DevCA.create("example.org", intermediate=True)
    client = ca.issue_svid(WEB)
    leaf, intermediate = (cert.public_bytes(Encoding.PEM) for cert in client.cert_chain)
    stray = DevCA.create("stray.example").bundle.to_pem()  # trusted by no bundle
    (tmp_path / "sent.pem").write_bytes(leaf + stray + intermediate)
    (tmp_path / "key.pem").write_bytes(client.private_key_pem())

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        chain = scope["extensions"]["tls"]["client_cert_chain"]
        names = [
            x509.load_pem_x509_certificate(pem.encode()).subject.rfc4514_string() for pem in chain
        ]
        body = "\n".join(names).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    context = server_ssl_context(
        ca.issue_svid(SERVER_ID, dns_names=["localhost"]),
        ca.bundle,
        authorizer=match.member_of("example.org"),
    )
    client_ctx = ssl.create_default_context(cadata=ca.bundle.to_pem().decode("ascii"))
    client_ctx.load_cert_chain(tmp_path / "sent.pem", tmp_path / "key.pem")
    with serve(kind, app, context) as port, httpx.Client(verify=client_ctx, timeout=30) as http:
        answer = http.get(f"https://localhost:{port}/")
    assert answer.text.split("\n") == [c.subject.rfc4514_string() for c in client.cert_chain]
