"""ZeroTrustMiddleware around a plain ASGI application: scopes, TLS extension, pass-through."""

from __future__ import annotations

import asyncio
import importlib
import sys
from typing import Any
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from tests.adapters.asgi._support import AUD, WEB, make_guard
from zerotrust import (
    Authenticator,
    Callers,
    Guard,
    MemorySink,
    Operations,
    Policy,
    PrivateJWK,
    Rule,
    TokenIssuer,
    match,
    server_ssl_context,
)
from zerotrust.adapters._asgi_view import ScopeView
from zerotrust.adapters._context import current_principal
from zerotrust.asgi import TLS_PEER_KEY, ZeroTrustMiddleware
from zerotrust.dev import DevCA
from zerotrust.errors import ConfigurationError, MalformedCertificate, MissingDependencyError
from zerotrust.x509._certs import MAX_CHAIN_LENGTH
from zerotrust.x509.peer import PeerVerifier

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"


@pytest.fixture(scope="module")
def issuer() -> TokenIssuer:
    return TokenIssuer(PrivateJWK.generate("ES256", kid="k1"), issuer="https://issuer.example")


class Recorder:
    """A plain ASGI application that records what it was given."""

    def __init__(self) -> None:
        self.scopes: list[dict[str, Any]] = []
        self.principals: list[Any] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.scopes.append(scope)
        self.principals.append(current_principal())
        if scope["type"] == "lifespan":
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            return
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def run(app: Any, scope_type: str = "http", **scope: Any) -> list[dict[str, Any]]:
    base: dict[str, Any] = {"type": scope_type, "asgi": {"version": "3.0"}}
    if scope_type in ("http", "websocket"):
        base.update(
            method="GET", scheme="https", path="/orders/7", raw_path=b"/orders/7",
            query_string=b"", headers=[(b"host", b"api.example")], client=("10.0.0.9", 4321),
            server=("api.example", 443),
        )  # fmt: skip
    base.update(scope)
    messages = [{"type": "lifespan.startup"} if scope_type == "lifespan" else {}]
    if scope_type == "http":
        messages = [{"type": "http.request", "body": b"", "more_body": False}]
    elif scope_type == "websocket":
        messages = [{"type": "websocket.connect"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(base, receive, send))
    return sent


def routed(scope: Any) -> str | None:
    return "/orders/{order_id}" if scope["path"].startswith("/orders/") else None


def test_route_template_callable_and_principal(issuer: TokenIssuer) -> None:
    guard, sink = make_guard(issuer)
    inner = Recorder()
    app = ZeroTrustMiddleware(inner, guard=guard, route_template=routed)
    token = issuer.issue(subject=WEB, audience=AUD)
    header = f"00-{TRACE_ID}-b7ad6b7169203331-01"
    sent = run(
        app,
        headers=[(b"authorization", f"Bearer {token}".encode()), (b"traceparent", header.encode())],
    )
    assert sent[0]["status"] == 204
    assert inner.principals[0].id == WEB
    assert inner.scopes[0]["state"]["zerotrust_principal"].id == WEB
    assert inner.scopes[0]["state"]["zerotrust_outcome"].allowed
    assert current_principal() is None  # reset after the call
    event = sink.last
    assert event.route == "/orders/{order_id}" and event.remote_addr == "10.0.0.9"
    assert event.trace_id == TRACE_ID and event.trace_trusted  # the caller's traceparent


def test_lifespan_and_other_scopes_pass_through(issuer: TokenIssuer) -> None:
    guard, sink = make_guard(issuer)
    inner = Recorder()
    app = ZeroTrustMiddleware(inner, guard=guard, route_template=routed)
    assert run(app, "lifespan") == [{"type": "lifespan.startup.complete"}]
    assert inner.principals == [None] and len(sink) == 0


def test_refused_http_and_websocket(issuer: TokenIssuer) -> None:
    guard, sink = make_guard(issuer)
    inner = Recorder()
    app = ZeroTrustMiddleware(inner, guard=guard, route_template=routed)
    start, body = run(app)
    assert (
        start["status"] == 401
        and (b"www-authenticate", b'Bearer realm="orders"') in (start["headers"])
    )
    assert (
        body["body"]
        == b'{"error":"missing_credentials","error_description":"authentication required"}'
    )
    assert run(app, "websocket", scheme="wss") == [
        {"type": "websocket.close", "code": 1008, "reason": "missing_credentials"}
    ]
    assert sink.last.kind == "websocket" and inner.scopes == []


def test_a_websocket_client_that_left_is_sent_nothing(issuer: TokenIssuer) -> None:
    guard, sink = make_guard(issuer)
    app = ZeroTrustMiddleware(Recorder(), guard=guard, route_template=routed)
    scope = {"type": "websocket", "path": "/orders/7", "headers": [], "client": ("10.0.0.9", 1)}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.disconnect", "code": 1001}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    assert sent == [] and sink.last.decision == "deny"


def test_the_applications_own_request_state_is_kept(issuer: TokenIssuer) -> None:
    """Starlette copies the lifespan state into ``scope["state"]``: zerotrust adds to it."""
    guard, _ = make_guard(issuer)
    inner = Recorder()
    app = ZeroTrustMiddleware(inner, guard=guard, route_template=routed)
    token = issuer.issue(subject=WEB, audience=AUD)
    run(app, headers=[(b"authorization", f"Bearer {token}".encode())], state={"db": "pool"})
    state = inner.scopes[0]["state"]
    assert state["db"] == "pool" and state["zerotrust_principal"].id == WEB


def test_spoofed_forwarded_certificate_is_stripped(issuer: TokenIssuer) -> None:
    guard, sink = make_guard(issuer)
    inner = Recorder()
    app = ZeroTrustMiddleware(inner, guard=guard, route_template=routed)
    token = issuer.issue(subject=WEB, audience=AUD)
    run(
        app,
        headers=[
            (b"authorization", f"Bearer {token}".encode()),
            (b"x-forwarded-client-cert", b"By=spiffe://example.org/x;Hash=00"),
            (b"X-Other", b"kept"),
        ],
    )
    names = [name for name, _ in inner.scopes[0]["headers"]]
    assert b"x-forwarded-client-cert" not in names and b"authorization" in names
    assert b"X-Other" in names
    assert any(note.startswith("forwarded_cert_ignored") for note in sink.last.notes)


def test_a_custom_forwarded_header_name_is_stripped_too(issuer: TokenIssuer, ca: DevCA) -> None:
    """With a trusted proxy's own header name configured, a copy sent by anyone else is a
    forwarded-certificate header like the standard ones: it never reaches the app."""
    from zerotrust.authn.proxy import TrustedProxies

    proxies = TrustedProxies(["10.0.0.0/8"], header_name="x-mesh-client-cert")
    mesh = Policy([Rule(id="mesh", callers=[Callers(trust_domains=["example.org"])])])
    guard, sink = make_guard(issuer, policy=mesh, bundles=ca.bundle, trusted_proxies=proxies)
    inner = Recorder()
    app = ZeroTrustMiddleware(inner, guard=guard, route_template=routed)
    token = issuer.issue(subject=WEB, audience=AUD)
    auth = (b"authorization", f"Bearer {token}".encode())
    spoofed = (b"x-mesh-client-cert", b"By=spiffe://x;URI=spiffe://example.org/admin")
    run(app, headers=[auth, spoofed], client=("192.0.2.7", 1))
    assert inner.principals[0].id == WEB and inner.scopes[0]["headers"] == [auth]
    assert "forwarded_cert_ignored_untrusted_peer" in sink.last.notes


def test_the_principal_is_unset_when_the_app_returns(issuer: TokenIssuer) -> None:
    """Code that runs after the application in the same task (an outer middleware) does not
    see the request's principal."""
    guard, _ = make_guard(issuer)
    inner = Recorder()
    app = ZeroTrustMiddleware(inner, guard=guard, route_template=routed)
    after: list[Any] = []

    async def outer(scope: Any, receive: Any, send: Any) -> None:
        await app(scope, receive, send)
        after.append(current_principal())

    token = issuer.issue(subject=WEB, audience=AUD)
    run(outer, headers=[(b"authorization", f"Bearer {token}".encode())])
    assert inner.principals[0].id == WEB and after == [None]


def test_exempt_routes_see_no_forwarded_certificate(issuer: TokenIssuer) -> None:
    """Nothing is accepted on an exempt route, so no forwarded certificate reaches it."""
    guard, sink = make_guard(issuer)
    inner = Recorder()
    app = ZeroTrustMiddleware(
        inner, guard=guard, route_template=routed, exempt=["/orders/{order_id}"]
    )
    spoofed = [(b"X-Forwarded-Client-Cert", b"By=spiffe://x;URI=spiffe://example.org/admin")]
    run(app, headers=[*spoofed, (b"x-other", b"kept")])
    assert inner.scopes[0]["headers"] == [(b"x-other", b"kept")]
    assert sink.events == []  # exempt: no decision, no event


LOOKALIKES = [
    (b"x_forwarded_client_cert", b"By=spiffe://x;URI=spiffe://example.org/admin"),
    (b"X-Forwarded_Client-Cert", b"By=spiffe://x;URI=spiffe://example.org/admin"),
    (b"X_SSL_CLIENT_CERT", b"-----BEGIN CERTIFICATE-----"),
    (b"client_cert", b":AAAA:"),
]


@pytest.mark.parametrize("exempt", [False, True], ids=["decided", "exempt"])
def test_underscore_spellings_of_forwarded_certificate_headers_are_stripped(
    issuer: TokenIssuer, exempt: bool
) -> None:
    """ASGI servers pass ``x_forwarded_client_cert`` on as it was sent, and a WSGI application
    mounted below reads it as X-Forwarded-Client-Cert (HTTP_X_FORWARDED_CLIENT_CERT): every
    spelling of a forwarded-certificate header goes, other underscore names stay."""
    guard, _ = make_guard(issuer)
    inner = Recorder()
    app = ZeroTrustMiddleware(
        inner, guard=guard, route_template=routed, exempt=["/orders/{order_id}"] if exempt else ()
    )
    token = issuer.issue(subject=WEB, audience=AUD)
    kept = [(b"authorization", f"Bearer {token}".encode()), (b"x_request_id", b"r1")]
    run(app, headers=[*LOOKALIKES, *kept])
    assert inner.scopes[0]["headers"] == kept
    assert inner.principals[0] is None if exempt else inner.principals[0].id == WEB


def test_underscore_spelling_is_stripped_after_a_dpop_request(issuer: TokenIssuer) -> None:
    """A DPoP header ends the single-pass reading of the headers before it reaches the
    underscore spelling: the middleware must still look for one before the app runs."""
    from zerotrust.httpx import dpop_proof

    guard, sink = make_guard(issuer)
    inner = Recorder()
    app = ZeroTrustMiddleware(inner, guard=guard, route_template=routed)
    holder = PrivateJWK.generate("ES256")
    bound = issuer.issue(
        subject=WEB, audience=AUD, extra_claims={"cnf": {"jkt": holder.public().thumbprint()}}
    )
    proof = dpop_proof(holder, method="GET", url="https://api.example/orders/7", access_token=bound)
    kept = [(b"dpop", proof.encode()), (b"authorization", f"DPoP {bound}".encode())]
    lookalike = (b"x_forwarded_client_cert", b"By=spiffe://x;URI=spiffe://example.org/admin")
    run(app, headers=[(b"host", b"api.example"), *kept, lookalike])
    assert sink.last.proven_by == "dpop" and inner.principals[0].id == WEB
    assert inner.scopes[0]["headers"] == [(b"host", b"api.example"), *kept]


def test_too_many_header_lines_are_refused_by_the_view(issuer: TokenIssuer) -> None:
    guard, sink = make_guard(issuer)
    inner = Recorder()
    app = ZeroTrustMiddleware(inner, guard=guard, route_template=routed)
    token = issuer.issue(subject=WEB, audience=AUD)
    padding = [(f"x-pad-{i}".encode(), b"1") for i in range(255)]
    traceparent = (b"traceparent", f"00-{TRACE_ID}-b7ad6b7169203331-01".encode())
    sent = run(app, headers=[(b"authorization", f"Bearer {token}".encode()), traceparent, *padding])
    assert sent[0]["status"] == 400 and inner.scopes == []
    assert sink.last.decision == "deny" and sink.last.reason == "malformed_credentials"
    assert sink.last.trace_id is None  # no header of such a request is read, not even this one
    # exactly MAX_HEADER_LINES lines are read
    sent = run(app, headers=[(b"authorization", f"Bearer {token}".encode()), *padding])
    assert sent[0]["status"] == 204 and inner.principals[0].id == WEB


def test_the_policy_sees_the_method_and_kind_of_the_scope(issuer: TokenIssuer) -> None:
    only_get = Policy(
        [
            Rule(
                id="read-http",
                operations=[Operations(methods=["GET"], kinds=["http"])],
                callers=[Callers(trust_domains=["example.org"])],
            ),
            Rule(
                id="websocket",
                operations=[Operations(kinds=["websocket"])],
                callers=[Callers(trust_domains=["example.org"])],
            ),
        ]
    )
    guard, sink = make_guard(issuer, policy=only_get)
    inner = Recorder()
    app = ZeroTrustMiddleware(inner, guard=guard, route_template=routed)
    auth = [(b"authorization", f"Bearer {issuer.issue(subject=WEB, audience=AUD)}".encode())]
    assert run(app, headers=auth)[0]["status"] == 204
    assert (sink.last.kind, sink.last.method, sink.last.rule_id) == ("http", "GET", "read-http")
    assert run(app, headers=auth, method="POST")[0]["status"] == 403
    assert (sink.last.kind, sink.last.method) == ("http", "POST")
    # a websocket handshake is a GET whatever the scope says, and its kind is "websocket"
    run(app, "websocket", headers=auth, method="POST")
    event = sink.last
    assert (event.kind, event.method, event.rule_id) == ("websocket", "GET", "websocket")
    assert [scope["type"] for scope in inner.scopes] == ["http", "websocket"]


def test_scope_view_defaults_for_optional_scope_keys() -> None:
    """ASGI makes scheme, client, server and raw_path optional: the view falls back as the
    spec says instead of failing."""
    bare = {"type": "http", "method": "GET", "path": "/a b/c", "headers": []}
    view = ScopeView(bare, None)
    assert view.scheme == "http" and view.remote_addr is None and view.host is None
    assert view.path == "/a%20b/c"  # the decoded path, encoded again
    assert ScopeView({"type": "websocket", "path": "/", "headers": []}, None).scheme == "http"
    assert ScopeView({**bare, "type": "websocket", "scheme": "wss"}, None).scheme == "https"
    assert ScopeView({**bare, "scheme": "https"}, None).scheme == "https"
    served = ScopeView({**bare, "server": ("::1", 8443), "client": ("192.0.2.1", 1)}, None)
    assert served.host == "[::1]:8443" and served.remote_addr == "192.0.2.1"
    assert ScopeView({**bare, "server": ("10.0.0.1", 80)}, None).host == "10.0.0.1:80"
    assert ScopeView({**bare, "server": ("/tmp/sock", None)}, None).host is None
    named = ScopeView({**bare, "headers": [(b"Host", b"api.example")], "raw_path": b"/x%2F"}, None)
    assert named.host == "api.example" and named.path == "/x%2F"


@pytest.fixture(scope="module")
def ca() -> DevCA:
    return DevCA.create("example.org")


def cert_guard(ca: DevCA) -> tuple[Guard, MemorySink]:
    sink = MemorySink()
    policy = Policy([Rule(id="mesh", callers=[Callers(trust_domains=["example.org"])])])
    authenticator = Authenticator(bundles=ca.bundle)
    return Guard(authenticator=authenticator, policy=policy, audit=sink, service="orders"), sink


def test_client_certificate_from_the_tls_extension(ca: DevCA) -> None:
    guard, sink = cert_guard(ca)
    inner = Recorder()
    app = ZeroTrustMiddleware(inner, guard=guard, route_template=routed)
    svid = ca.issue_svid(WEB)
    pems = [cert.public_bytes(Encoding.PEM).decode() for cert in svid.cert_chain]
    run(app, extensions={"tls": {"client_cert_chain": pems, "tls_version": 0x0304}})
    assert inner.principals[0].proven_by == "mtls" and inner.principals[0].id == WEB
    peer = PeerVerifier(ca.bundle, match.any(), role="client").verify(
        [c.public_bytes(Encoding.DER) for c in svid.cert_chain]
    )
    run(app, extensions={"tls": {"client_cert_chain": [], TLS_PEER_KEY: peer}})
    assert inner.principals[1].cert_fingerprint == peer.fingerprint
    sent = run(app, extensions={"tls": {"client_cert_chain": ["not a certificate"]}})
    assert sent[0]["status"] == 401 and sink.last.reason == "malformed_certificate"
    sent = run(app, extensions={"tls": {"client_cert_chain": "-----BEGIN CERTIFICATE-----"}})
    assert sent[0]["status"] == 401


def test_tls_extension_chain_length_is_bounded(ca: DevCA) -> None:
    """At most MAX_CHAIN_LENGTH certificates are decoded from the TLS extension; one more is
    refused before any is decoded."""
    leaf = ca.issue_svid(WEB).cert_chain[0]
    pem, der = leaf.public_bytes(Encoding.PEM).decode(), leaf.public_bytes(Encoding.DER)
    scope = {"type": "http", "method": "GET", "path": "/", "headers": []}

    def view(chain: Any) -> ScopeView:
        return ScopeView({**scope, "extensions": {"tls": {"client_cert_chain": chain}}}, None)

    assert view([pem] * MAX_CHAIN_LENGTH).peer_chain == (der,) * MAX_CHAIN_LENGTH
    with pytest.raises(MalformedCertificate, match="longer than"):
        _ = view([pem] * (MAX_CHAIN_LENGTH + 1)).peer_chain
    assert view([]).peer_chain is None
    assert view(None).peer_chain is None
    assert ScopeView(scope, None).peer_chain is None  # no TLS extension at all
    # an extension that is not a mapping is no TLS extension
    assert ScopeView({**scope, "extensions": {"tls": "garbage"}}, None).verified_peer is None
    forged = {"client_cert_chain": [], TLS_PEER_KEY: {"spiffe_id": WEB}}  # not a VerifiedPeer
    assert ScopeView({**scope, "extensions": {"tls": forged}}, None).verified_peer is None


def mesh_guard(ca: DevCA, proxies: Any) -> tuple[Guard, MemorySink]:
    """A Guard of mTLS callers of example.org, some of them behind ``proxies``."""
    sink = MemorySink()
    guard = Guard(
        authenticator=Authenticator(bundles=ca.bundle, trusted_proxies=proxies),
        policy=Policy([Rule(id="mesh", callers=[Callers(trust_domains=["example.org"])])]),
        audit=sink,
    )
    return guard, sink


def test_a_trusted_proxys_accepted_header_reaches_the_app(ca: DevCA) -> None:
    """Only the forwarded-certificate headers of other formats (and underscore spellings) go;
    the header the trusted proxy set, and the Guard accepted, stays for the application."""
    from zerotrust.authn.proxy import TrustedProxies

    proxies = TrustedProxies(["10.0.0.0/8"], header="nginx")
    guard, _ = mesh_guard(ca, proxies)
    inner = Recorder()
    app = ZeroTrustMiddleware(inner, guard=guard, route_template=routed)
    pem = ca.issue_svid(WEB).leaf.public_bytes(Encoding.PEM).decode()
    nginx = (b"x-ssl-client-cert", quote(pem, safe="").encode())
    spoofed = [
        (b"x-forwarded-client-cert", b"By=spiffe://x;URI=spiffe://example.org/admin"),
        (b"x_ssl_client_cert", b"-----BEGIN CERTIFICATE-----"),
    ]
    run(app, headers=[(b"host", b"api.example"), nginx, *spoofed])  # from 10.0.0.9
    assert inner.principals[0].proven_by == "proxy-mtls" and inner.principals[0].id == WEB
    assert inner.scopes[0]["headers"] == [(b"host", b"api.example"), nginx]


def test_a_trusted_proxys_own_certificate_is_not_the_callers(ca: DevCA) -> None:
    # Envoy connects over mTLS and relays a client that sent no certificate (no XFCC)
    from zerotrust.authn.proxy import TrustedProxies

    envoy_id = "spiffe://example.org/ns/edge/sa/envoy"
    proxies = TrustedProxies(["10.0.0.0/8"], spiffe_ids=match.exact(envoy_id))
    guard, sink = mesh_guard(ca, proxies)
    inner = Recorder()
    app = ZeroTrustMiddleware(inner, guard=guard, route_template=routed)
    envoy = ca.issue_svid(envoy_id)
    pems = [cert.public_bytes(Encoding.PEM).decode() for cert in envoy.cert_chain]
    sent = run(app, extensions={"tls": {"client_cert_chain": pems}})
    assert sent[0]["status"] == 401 and inner.scopes == []
    assert sink.last.spiffe_id is None and "peer_is_proxy" in sink.last.notes
    # from outside the proxies' network the same certificate is a caller of its own
    run(app, extensions={"tls": {"client_cert_chain": pems}}, client=("192.0.2.7", 4321))
    assert inner.principals[0].id == envoy_id


def test_a_token_relayed_by_a_trusted_proxy_is_not_joined_to_its_certificate(
    issuer: TokenIssuer, ca: DevCA
) -> None:
    # A bearer token alone takes the single-pass reading of the headers: the proxy's own
    # certificate must still be set aside there.
    from zerotrust.authn.proxy import TrustedProxies

    envoy_id = "spiffe://example.org/ns/edge/sa/envoy"
    proxies = TrustedProxies(["10.0.0.0/8"], spiffe_ids=match.exact(envoy_id))
    mesh = Policy([Rule(id="mesh", callers=[Callers(trust_domains=["example.org"])])])
    guard, sink = make_guard(issuer, policy=mesh, bundles=ca.bundle, trusted_proxies=proxies)
    inner = Recorder()
    app = ZeroTrustMiddleware(inner, guard=guard, route_template=routed)
    pems = [cert.public_bytes(Encoding.PEM).decode() for cert in ca.issue_svid(envoy_id).cert_chain]
    token = issuer.issue(subject=WEB, audience=AUD)
    headers = [(b"host", b"api.example"), (b"authorization", f"Bearer {token}".encode())]
    for _ in range(2):  # the repeated request is answered the same
        sent = run(app, headers=headers, extensions={"tls": {"client_cert_chain": pems}})
        assert sent[0]["status"] == 204
        assert sink.last is not None and "peer_is_proxy" in sink.last.notes
    for principal in inner.principals:
        assert principal.proven_by == "jwt" and principal.id == WEB
        assert principal.cert_fingerprint is None
    # from outside the proxies' network the certificate is the caller's, joined to the token
    run(
        app,
        headers=headers,
        extensions={"tls": {"client_cert_chain": pems}},
        client=("192.0.2.7", 1),
    )
    joined = inner.principals[-1]
    assert joined.proven_by == "mtls+jwt" and joined.id == envoy_id and joined.subject == WEB


def test_routeless_hazards_are_refused_at_construction(issuer: TokenIssuer) -> None:
    guard, _ = make_guard(issuer)  # its policy has a DENY rule scoped to a route
    with pytest.raises(ConfigurationError, match="route_template"):
        ZeroTrustMiddleware(Recorder(), guard=guard)
    safe = Policy([Rule(id="any", operations=[Operations(methods=["GET"])])])
    sink = MemorySink()
    ok = Guard(authenticator=guard.authenticator, policy=safe, audit=sink)
    routeless = ZeroTrustMiddleware(Recorder(), guard=ok)
    assert run(routeless)[0]["status"] == 401 and sink.last.route is None
    with pytest.raises(ConfigurationError):
        ZeroTrustMiddleware(Recorder(), guard=ok, exempt=["/healthz"])
    with pytest.raises(ConfigurationError):
        ZeroTrustMiddleware(Recorder(), guard=ok, exempt="/healthz")
    with pytest.raises(ConfigurationError, match="not a string"):  # even with templates
        ZeroTrustMiddleware(Recorder(), guard=ok, exempt="/healthz", route_template=routed)
    with pytest.raises(ConfigurationError):
        ZeroTrustMiddleware(Recorder(), guard=object())  # type: ignore[arg-type]


def test_works_without_starlette(monkeypatch: pytest.MonkeyPatch, issuer: TokenIssuer) -> None:
    hide(monkeypatch, "starlette", "zerotrust.adapters._routes")
    guard, _ = make_guard(issuer)
    app = ZeroTrustMiddleware(Recorder(), guard=guard, route_template=routed)
    assert run(app)[0]["status"] == 401


def hide(monkeypatch: pytest.MonkeyPatch, *packages: str) -> None:
    """Make ``packages`` (and their submodules) unimportable, as if not installed."""
    for name in list(sys.modules):
        if any(name == p or name.startswith(p + ".") for p in packages):
            monkeypatch.setitem(sys.modules, name, None)
    for package in packages:
        monkeypatch.setitem(sys.modules, package, None)


@pytest.mark.parametrize(
    ("module", "package", "extra"),
    [
        ("zerotrust.adapters.fastapi", "fastapi", "fastapi"),
        ("zerotrust.adapters.uvicorn", "uvicorn", "uvicorn"),
        ("zerotrust.adapters.hypercorn", "hypercorn", "hypercorn"),
    ],
)
def test_missing_dependency_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, module: str, package: str, extra: str
) -> None:
    monkeypatch.delitem(sys.modules, module, raising=False)
    hide(monkeypatch, package)
    with pytest.raises(MissingDependencyError) as missing:
        importlib.import_module(module)
    assert missing.value.package == package and missing.value.extra == extra


def test_facade_exports(monkeypatch: pytest.MonkeyPatch, ca: DevCA) -> None:
    import zerotrust.asgi as facade

    assert facade.ZeroTrustUvicornConfig.__name__ == "ZeroTrustUvicornConfig"
    assert callable(facade.serve_hypercorn)
    with pytest.raises(AttributeError):
        _ = facade.nothing_here
    context = server_ssl_context(ca.issue_svid(WEB), ca.bundle, authorizer=match.any())
    with pytest.raises(ConfigurationError):
        facade.serve(object(), ssl_context=context, bundles=ca.bundle)
    with pytest.raises(ConfigurationError):
        facade.serve(object(), svid=ca.issue_svid(WEB))
    with pytest.raises(ConfigurationError):
        facade.serve(object(), ssl_context=context, server="gunicorn")  # type: ignore[arg-type]
