"""The plain WSGI middleware and the WSGI request view, through werkzeug's test client."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.test import Client

from zerotrust import (
    Authenticator,
    Callers,
    FixedClock,
    Guard,
    MemorySink,
    Operations,
    Policy,
    RateLimit,
    Request,
    Rule,
    TokenIssuer,
    TokenVerifier,
    TrustedProxies,
    verify_x509_svid,
)
from zerotrust.adapters._common import (
    forwarded_headers_to_strip,
    pem_chain_der,
    route_template,
    routeless_hazards,
)
from zerotrust.authn._trusted import FORWARDED_CERT_HEADERS
from zerotrust.authn.request import MAX_HEADER_LINES
from zerotrust.dev import DevCA
from zerotrust.errors import ConfigurationError, MalformedCredentials
from zerotrust.tokens import PrivateJWK
from zerotrust.wsgi import (
    CHAIN_ENVIRON_KEY,
    PEER_ENVIRON_KEY,
    PRINCIPAL_ENVIRON_KEY,
    WSGIRequestView,
    ZeroTrustMiddleware,
)
from zerotrust.wsgi import current_principal as context_principal
from zerotrust.x509._certs import MAX_CHAIN_LENGTH

from ._support import AUD, ISS, WEB, bearer, expected_refusal, make_guard

ALLOW_ALL = Policy([Rule(id="all")])


@pytest.fixture(scope="module")
def key() -> PrivateJWK:
    return PrivateJWK.generate("ES256", kid="k1")


@pytest.fixture
def issuer(key: PrivateJWK, clock: FixedClock) -> TokenIssuer:
    return TokenIssuer(key, issuer=ISS, clock=clock)


def inner_app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
    """Streams its answer, reading the principal while the body is produced."""
    principal = environ[PRINCIPAL_ENVIRON_KEY]
    start_response("200 OK", [("Content-Type", "application/json")])
    yield b'{"environ": '
    yield json.dumps(str(principal.spiffe_id) if principal else None).encode()
    streamed = context_principal()
    yield b', "streamed": ' + json.dumps(str(streamed.spiffe_id) if streamed else None).encode()
    seen = sorted(k for k in environ if "CLIENT_CERT" in k)
    yield b', "proven_by": ' + json.dumps(principal.proven_by if principal else None).encode()
    yield b', "cert_headers": ' + json.dumps(seen).encode() + b"}"


def test_allowed_request_sees_the_principal_while_streaming(
    issuer: TokenIssuer, clock: FixedClock
) -> None:
    guard, sink = make_guard(issuer, clock, policy=ALLOW_ALL)
    client = Client(ZeroTrustMiddleware(inner_app, guard=guard))
    token = issuer.issue(subject=WEB, audience=AUD)
    response = client.get("/anything", headers=bearer(token))
    assert response.status_code == 200
    assert response.json == {
        "environ": WEB,
        "streamed": WEB,
        "proven_by": "jwt",
        "cert_headers": [],
    }
    assert sink.last.route is None and sink.last.decision == "allow"
    assert context_principal() is None


@pytest.mark.parametrize("case", ["anonymous", "garbage", "rate limited"])
def test_refusals_use_the_shared_table(issuer: TokenIssuer, clock: FixedClock, case: str) -> None:
    policy = Policy([Rule(id="all")], rate_limits=[RateLimit("one", rate=0.001, burst=1)])
    guard, sink = make_guard(issuer, clock, policy=policy)
    client = Client(ZeroTrustMiddleware(inner_app, guard=guard))
    headers = {"anonymous": {}, "garbage": bearer("a.b.c")}.get(case)
    if headers is None:
        headers = bearer(issuer.issue(subject=WEB, audience=AUD))
        assert client.get("/x", headers=headers).status_code == 200
        response = client.get("/x", headers=headers)
        assert (response.status_code, response.headers["Retry-After"]) == (429, "1000")
        return
    status, expected_headers, body = expected_refusal(
        guard, Request(method="GET", path="/x", headers=headers)
    )
    response = client.get("/x", headers=headers)
    assert (response.status_code, response.json) == (status, body)
    for name, value in expected_headers.items():
        assert response.headers[name] == value
    assert sink.last.status == status


def test_exempt_paths_skip_the_guard(issuer: TokenIssuer, clock: FixedClock) -> None:
    guard, sink = make_guard(issuer, clock, policy=Policy([]))
    client = Client(ZeroTrustMiddleware(inner_app, guard=guard, exempt=["/healthz"]))
    assert client.get("/healthz").json["environ"] is None
    spoofed = {"X-Forwarded-Client-Cert": "By=x;Hash=y", "X-SSL-Client-Cert": "x"}
    assert client.get("/healthz", headers=spoofed).json["cert_headers"] == []  # nothing accepted
    assert client.get("/healthz/").status_code == 401  # exact paths only
    assert len(sink) == 1
    with pytest.raises(ConfigurationError):
        ZeroTrustMiddleware(inner_app, guard=guard, exempt="/healthz")
    with pytest.raises(ConfigurationError, match="not one string"):
        ZeroTrustMiddleware(inner_app, guard=guard, exempt="/")
    with pytest.raises(ConfigurationError):
        ZeroTrustMiddleware(inner_app, guard=guard, exempt=["healthz"])
    with pytest.raises(ConfigurationError):
        ZeroTrustMiddleware(inner_app, guard=object())  # type: ignore[arg-type]


def test_route_scoped_policies_need_a_route(issuer: TokenIssuer, clock: FixedClock) -> None:
    deny_admin = Policy(
        [
            Rule(id="no-admin", action="DENY", operations=[Operations(routes=["/admin/*"])]),
            Rule(id="all"),
        ]
    )
    guard, sink = make_guard(issuer, clock, policy=deny_admin)
    with pytest.raises(ConfigurationError, match="no-admin"):
        ZeroTrustMiddleware(inner_app, guard=guard)

    def route(environ: dict[str, Any]) -> str | None:
        path = environ["PATH_INFO"]
        return "/admin/{page}" if path.startswith("/admin/") else path

    client = Client(ZeroTrustMiddleware(inner_app, guard=guard, route=route))
    token = issuer.issue(subject=WEB, audience=AUD)
    assert client.get("/admin/users", headers=bearer(token)).status_code == 403
    assert sink.last.route == "/admin/{page}" and sink.last.rule_id == "no-admin"
    assert client.get("/orders", headers=bearer(token)).status_code == 200
    # a route function's template is normalized as every adapter's is (no trailing slash)
    assert client.get("/reports/", headers=bearer(token)).status_code == 200
    assert sink.last.route == "/reports"


def test_routeless_hazards() -> None:
    ops, not_ops = [Operations(routes=["/a"])], [Operations(not_routes=["/a"])]
    policy = Policy(
        [
            Rule(id="deny-routes", action="DENY", operations=ops),
            Rule(id="deny-not-routes", action="DENY", operations=not_ops),
            Rule(id="custom", action="CUSTOM", hook=lambda p, o: True, operations=ops),
            Rule(id="allow-routes", operations=ops),
            Rule(id="allow-not-routes", operations=not_ops),
            Rule(id="allow-methods", operations=[Operations(methods=["GET"])]),
        ],
        rate_limits=[
            RateLimit("limit-routes", rate=1, burst=1, operations=ops),
            RateLimit("limit-all", rate=1, burst=1),
        ],
    )
    assert routeless_hazards(policy) == (
        "deny-routes",
        "custom",
        "allow-not-routes",
        "limit-routes",
    )


def test_routeless_hazards_any_scoped_operation_counts() -> None:
    # a rule matches when any of its operations does: one route-scoped entry is enough
    mixed = [Operations(methods=["GET"]), Operations(routes=["/admin"])]
    mixed_not = [Operations(methods=["GET"]), Operations(not_routes=["/admin"])]
    policy = Policy(
        [
            Rule(id="deny-mixed", action="DENY", operations=mixed),
            Rule(id="allow-mixed", operations=mixed_not),
        ],
        rate_limits=[RateLimit("limit-mixed", rate=1, burst=1, operations=mixed)],
    )
    assert routeless_hazards(policy) == ("deny-mixed", "allow-mixed", "limit-mixed")


@pytest.mark.parametrize(
    ("rule", "template"),
    [
        ("/orders/<int:order_id>", "/orders/{order_id}"),
        ("/orders/<order_id>", "/orders/{order_id}"),
        ("/files/<path:name>", "/files/{name}"),
        ("/<any(a, 'b>c'):kind>/<uuid:id>", "/{kind}/{id}"),
        ("/static", "/static"),
        # regular-expression characters in a plain rule are literal characters
        ("/v1.0/files/<name>.txt", "/v1.0/files/{name}.txt"),
        ("/a+b/(draft)/<int:id>", "/a+b/(draft)/{id}"),
        ("orders/<int:pk>/", "/orders/{pk}"),  # no trailing slash, in any framework
        ("/reports/", "/reports"),
        ("/", "/"),
        ("^orders/(?P<pk>[0-9]+)/$", "/orders/{pk}"),
        ("^v1\\.0/items/$", "/v1.0/items"),
        ("^orders/(\\d+)/$", None),
        # include() joins a path() prefix and a re_path() (and the reverse) into one pattern
        (
            "tenants/<int:tenant_id>/exports/(?P<export_id>[0-9]+)/$",
            "/tenants/{tenant_id}/exports/{export_id}",
        ),
        ("^legacy/(?P<lid>[0-9]+)/x/<int:y>/", "/legacy/{lid}/x/{y}"),
        ("^legacy/(?P<lid>[0-9]+)/x/<y>/", "/legacy/{lid}/x/{y}"),
        ("tenants/<int:tenant_id>/(?:a|b)/$", None),
        # each of ^, $ and a named group alone marks a re_path() pattern
        ("^reports/", "/reports"),
        ("^orders/\\d+", None),
        ("orders/(?P<pk>[0-9]+)/", "/orders/{pk}"),
        ("^orders/(?P<pk>[0-9]+)\\Z", "/orders/{pk}"),
        # an escape that is not a literal character is a regex with no template
        ("^orders/\\w$", None),
    ],
)
def test_route_template(rule: str, template: str | None) -> None:
    assert route_template(rule) == template


def test_ssl_client_cert_from_the_server(
    issuer: TokenIssuer, clock: FixedClock, ca_with_intermediate: DevCA
) -> None:
    ca = ca_with_intermediate
    guard, sink = make_guard(issuer, clock, policy=ALLOW_ALL, bundles=ca.bundle)
    client = Client(ZeroTrustMiddleware(inner_app, guard=guard))
    svid = ca.issue_svid(WEB)
    leaf, *rest = (c.public_bytes(Encoding.PEM).decode() for c in svid.cert_chain)
    environ = {"SSL_CLIENT_CERT": leaf}
    environ.update({f"SSL_CLIENT_CERT_CHAIN_{i}": pem for i, pem in enumerate(rest)})
    response = client.get("/x", environ_base=environ)
    assert response.status_code == 200 and response.json["proven_by"] == "mtls"
    assert sink.last.cert_fingerprint == svid.fingerprint
    broken = client.get("/x", environ_base={"SSL_CLIENT_CERT": "-----BEGIN CERTIFICATE-----\nAA"})
    assert broken.status_code == 400 and broken.json["error"] == "invalid_request"
    stranger = DevCA.create("example.org").issue_svid(WEB)
    pem = stranger.leaf.public_bytes(Encoding.PEM).decode()
    assert client.get("/x", environ_base={"SSL_CLIENT_CERT": pem}).status_code == 401


def test_peer_verified_by_the_server(issuer: TokenIssuer, clock: FixedClock, ca: DevCA) -> None:
    guard, _ = make_guard(issuer, clock, policy=ALLOW_ALL, bundles=ca.bundle)
    client = Client(ZeroTrustMiddleware(inner_app, guard=guard))
    svid = ca.issue_svid(WEB)
    chain = tuple(c.public_bytes(Encoding.DER) for c in svid.cert_chain)
    peer = verify_x509_svid(chain, ca.bundle, role="client")
    token = issuer.issue(subject=WEB, audience=AUD)
    environ = {PEER_ENVIRON_KEY: peer, CHAIN_ENVIRON_KEY: chain}
    response = client.get("/x", environ_base=environ, headers=bearer(token))
    assert response.status_code == 200 and response.json["proven_by"] == "mtls+jwt"
    view = WSGIRequestView({CHAIN_ENVIRON_KEY: chain, "REQUEST_METHOD": "GET"})
    assert view.peer_chain == chain and view.verified_peer is None
    # the verified peer alone (no chain key) is the caller, asked for before the chain
    alone = WSGIRequestView({PEER_ENVIRON_KEY: peer, "REQUEST_METHOD": "GET"})
    assert alone.verified_peer is peer and alone.peer_chain is None
    response = client.get("/x", environ_base={PEER_ENVIRON_KEY: peer})
    assert response.status_code == 200 and response.json["proven_by"] == "mtls"
    # anything else under the key is not a verified peer
    forged = WSGIRequestView({PEER_ENVIRON_KEY: {"spiffe_id": WEB}, "REQUEST_METHOD": "GET"})
    assert forged.verified_peer is None


def behind_nginx(issuer: TokenIssuer, clock: FixedClock, ca: DevCA) -> tuple[Guard, MemorySink]:
    """A Guard trusting an nginx on 10.0.0.0/8 to forward client certificates of example.org."""
    proxies = TrustedProxies(["10.0.0.0/8"], header="nginx")
    policy = Policy([Rule(id="example", callers=[Callers(trust_domains=["example.org"])])])
    return make_guard(issuer, clock, policy=policy, bundles=ca.bundle, trusted_proxies=proxies)


def test_forwarded_headers_only_from_trusted_proxies(
    issuer: TokenIssuer, clock: FixedClock, ca: DevCA
) -> None:
    guard, sink = behind_nginx(issuer, clock, ca)
    pem = ca.issue_svid(WEB).leaf.public_bytes(Encoding.PEM).decode()
    headers = {"X-SSL-Client-Cert": quote(pem, safe=""), "X-Forwarded-For": "10.0.0.1"}
    middleware = ZeroTrustMiddleware(inner_app, guard=guard)
    proxied = Client(middleware).get(
        "/x", headers=headers, environ_base={"REMOTE_ADDR": "10.0.0.7"}
    )
    assert proxied.status_code == 200
    assert proxied.json["proven_by"] == "proxy-mtls"
    assert proxied.json["cert_headers"] == ["HTTP_X_SSL_CLIENT_CERT"]  # the proxy's own header
    # ProxyFix believes X-Forwarded-For; zerotrust still judges the socket peer
    fixed = Client(ProxyFix(middleware, x_for=1))
    spoofed = fixed.get("/x", headers=headers, environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert spoofed.status_code == 401
    assert "forwarded_cert_ignored_untrusted_peer" in sink.last.notes
    assert sink.last.remote_addr == "203.0.113.9"


def test_a_socket_peer_without_an_address_is_not_taken_from_x_forwarded_for(
    issuer: TokenIssuer, clock: FixedClock, ca: DevCA
) -> None:
    """gunicorn on a unix socket sets an empty ``REMOTE_ADDR``: when ProxyFix rewrote it from
    ``X-Forwarded-For``, the socket peer still has no address, and a client naming a trusted
    proxy's address is no proxy."""
    guard, sink = behind_nginx(issuer, clock, ca)
    pem = ca.issue_svid(WEB).leaf.public_bytes(Encoding.PEM).decode()
    headers = {"X-SSL-Client-Cert": quote(pem, safe=""), "X-Forwarded-For": "10.0.0.1"}
    fixed = Client(ProxyFix(ZeroTrustMiddleware(inner_app, guard=guard), x_for=1))
    spoofed = fixed.get("/x", headers=headers, environ_base={"REMOTE_ADDR": ""})
    assert spoofed.status_code == 401
    assert "forwarded_cert_ignored_untrusted_peer" in sink.last.notes
    assert sink.last.remote_addr is None


def test_allowed_requests_lose_forwarded_headers_no_trusted_proxy_sent(
    issuer: TokenIssuer, clock: FixedClock, ca: DevCA
) -> None:
    guard, sink = behind_nginx(issuer, clock, ca)
    client = Client(ZeroTrustMiddleware(inner_app, guard=guard))
    pem = ca.issue_svid(WEB).leaf.public_bytes(Encoding.PEM).decode()
    spoofed = {"X-SSL-Client-Cert": quote(pem, safe=""), "X-Forwarded-Client-Cert": "By=x;Hash=y"}
    token = issuer.issue(subject=WEB, audience=AUD)
    direct = client.get(
        "/x", headers={**bearer(token), **spoofed}, environ_base={"REMOTE_ADDR": "203.0.113.9"}
    )
    assert direct.status_code == 200 and direct.json["proven_by"] == "jwt"
    assert direct.json["cert_headers"] == []  # the app never sees what the Guard ignored
    assert "forwarded_cert_ignored_untrusted_peer" in sink.last.notes
    # from the proxy, its own header stays and the other format's goes
    proxied = client.get("/x", headers=spoofed, environ_base={"REMOTE_ADDR": "10.0.0.7"})
    assert proxied.json["proven_by"] == "proxy-mtls"
    assert proxied.json["cert_headers"] == ["HTTP_X_SSL_CLIENT_CERT"]


def test_a_trusted_proxy_header_reaches_the_app_with_audit_logging_off(
    issuer: TokenIssuer, clock: FixedClock, ca: DevCA, caplog: pytest.LogCaptureFixture
) -> None:
    from zerotrust.audit import LoggingSink

    proxies = TrustedProxies(["10.0.0.0/8"], header="nginx")
    policy = Policy([Rule(id="example", callers=[Callers(trust_domains=["example.org"])])])
    verifier = TokenVerifier(
        issuer=ISS, audience=AUD, keys=issuer.jwks(), algorithms=["ES256"], clock=clock
    )
    guard = Guard(
        authenticator=Authenticator(
            tokens=verifier, bundles=ca.bundle, trusted_proxies=proxies, clock=clock
        ),
        policy=policy,
        audit=LoggingSink(),  # no event is built while its logger is disabled
        clock=clock,
    )
    pem = ca.issue_svid(WEB).leaf.public_bytes(Encoding.PEM).decode()
    headers = {"X-SSL-Client-Cert": quote(pem, safe="")}
    with caplog.at_level(logging.WARNING, logger="zerotrust.audit"):
        proxied = Client(ZeroTrustMiddleware(inner_app, guard=guard)).get(
            "/x", headers=headers, environ_base={"REMOTE_ADDR": "10.0.0.7"}
        )
    assert proxied.status_code == 200
    assert proxied.json["cert_headers"] == ["HTTP_X_SSL_CLIENT_CERT"]  # kept for the app


def test_strip_list() -> None:
    from zerotrust.pipeline import Outcome

    nothing = Outcome(True, None, None, None, 200, "OK")
    proxies = TrustedProxies(["10.0.0.0/8"], header="xfcc", header_name="x-client-cert")
    assert "x-client-cert" in forwarded_headers_to_strip(nothing, proxies)
    assert "x-forwarded-client-cert" in forwarded_headers_to_strip(nothing, None)


def test_strip_list_keeps_only_an_accepted_proxy_header() -> None:
    from zerotrust.pipeline import Outcome

    accepted = Outcome(True, None, None, None, 200, "OK", notes=("forwarded_cert_xfcc",))
    proxies = TrustedProxies(["10.0.0.0/8"], header="xfcc", header_name="x-client-cert")
    kept = forwarded_headers_to_strip(accepted, proxies)
    assert "x-client-cert" not in kept and "x-forwarded-client-cert" in kept
    # no trusted proxies configured, or an exempt request: everything goes
    assert forwarded_headers_to_strip(accepted, None) == FORWARDED_CERT_HEADERS
    assert forwarded_headers_to_strip(None, proxies) == proxies.header_names
    assert forwarded_headers_to_strip(None, None) == FORWARDED_CERT_HEADERS


def test_too_many_headers_are_refused(issuer: TokenIssuer, clock: FixedClock) -> None:
    guard, sink = make_guard(issuer, clock, policy=ALLOW_ALL)
    client = Client(ZeroTrustMiddleware(inner_app, guard=guard))
    token = issuer.issue(subject=WEB, audience=AUD)
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    headers = {**bearer(token), **{f"X-Pad-{i}": "1" for i in range(MAX_HEADER_LINES)}}
    response = client.get("/x", headers={**headers, "traceparent": traceparent})
    assert response.status_code == 400 and response.json["error"] == "invalid_request"
    assert sink.last.reason == "malformed_credentials"
    assert sink.last.trace_id is None  # no header of such a request is read
    assert client.get("/x", headers=bearer(token)).status_code == 200


def test_request_view_fields() -> None:
    environ = {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "/api",
        "PATH_INFO": "/caf\u00c3\u00a9 x",
        "wsgi.url_scheme": "https",
        "SERVER_NAME": "svc.internal",
        "SERVER_PORT": "8443",
        "REMOTE_ADDR": "10.1.2.3",
        "CONTENT_TYPE": "text/plain",
        "HTTP_X_TRACE": "a,b",
    }
    view = WSGIRequestView(environ, "/caf\u00e9 {x}")
    assert (view.kind, view.method, view.route) == ("http", "POST", "/caf\u00e9 {x}")
    assert view.path == "/api/caf%C3%A9%20x"
    assert (view.scheme, view.host, view.remote_addr) == ("https", "svc.internal:8443", "10.1.2.3")
    assert view.header("content-type") == ["text/plain"]
    assert view.header("X-Trace") == ["a,b"] and view.header("x-missing") == []
    assert view.peer_chain is None and view.verified_peer is None
    raw = WSGIRequestView({**environ, "RAW_URI": "/api/caf%c3%a9%20x?q=1", "HTTP_HOST": "h:1"})
    assert (raw.path, raw.host) == ("/api/caf%c3%a9%20x", "h:1")
    # mod_wsgi and uWSGI name it REQUEST_URI; an absolute-form target is not a path
    assert WSGIRequestView({**environ, "REQUEST_URI": "/api/a%2Fb?q"}).path == "/api/a%2Fb"
    assert WSGIRequestView({"REQUEST_METHOD": "GET"}).remote_addr is None  # a unix socket
    bare = WSGIRequestView({"SERVER_NAME": "svc.internal"})  # keys WSGI servers may leave out
    assert (bare.method, bare.scheme, bare.host, bare.path) == ("GET", "http", "svc.internal", "/")
    assert WSGIRequestView({"PATH_INFO": "/x", "SERVER_NAME": "svc"}).path == "/x"
    absolute = WSGIRequestView({**environ, "RAW_URI": "https://svc.internal/other"})
    assert absolute.path == "/api/caf%C3%A9%20x"
    # the port is left out when it is the scheme's default
    for scheme, port, host in [
        ("https", "443", "svc.internal"),
        ("http", "80", "svc.internal"),
        ("http", "443", "svc.internal:443"),
        ("https", "80", "svc.internal:80"),
    ]:
        view = WSGIRequestView({**environ, "wsgi.url_scheme": scheme, "SERVER_PORT": port})
        assert view.host == host


def test_request_view_counts_header_lines_not_environ_keys() -> None:
    server_keys = {f"wsgi.server_{i}": "x" for i in range(MAX_HEADER_LINES + 50)}
    headers = {f"HTTP_X_PAD_{i}": "1" for i in range(MAX_HEADER_LINES - 1)}
    environ = {**server_keys, **headers, "HTTP_AUTHORIZATION": "Bearer t"}
    assert WSGIRequestView(environ).header("authorization") == ["Bearer t"]  # 256 lines
    environ["HTTP_X_ONE_MORE"] = "1"
    assert WSGIRequestView(environ).header("authorization") == []


def test_pem_chain_der_bounds(ca_with_intermediate: DevCA) -> None:
    svid = ca_with_intermediate.issue_svid(WEB)
    pem = svid.cert_chain_pem()
    assert len(pem_chain_der(pem, "x")) == len(svid.cert_chain)
    assert pem_chain_der([pem.decode()], "x") == pem_chain_der(pem, "x")
    for bad in ([], [b"\xff"], [""], [pem] * 11):
        with pytest.raises(MalformedCredentials):
            pem_chain_der(bad, "x")


def test_pem_chain_der_holds_at_most_max_chain_length_certificates(
    ca_with_intermediate: DevCA,
) -> None:
    leaf = ca_with_intermediate.issue_svid(WEB).leaf.public_bytes(Encoding.PEM)
    assert len(pem_chain_der([leaf] * MAX_CHAIN_LENGTH, "x")) == MAX_CHAIN_LENGTH
    assert len(pem_chain_der(leaf * MAX_CHAIN_LENGTH, "x")) == MAX_CHAIN_LENGTH
    for too_many in ([leaf] * (MAX_CHAIN_LENGTH + 1), leaf * (MAX_CHAIN_LENGTH + 1)):
        with pytest.raises(MalformedCredentials, match="more than"):
            pem_chain_der(too_many, "x")


def test_pem_chain_der_refuses_what_is_not_pem_text() -> None:
    with pytest.raises(MalformedCredentials, match="not ASCII PEM text"):
        pem_chain_der([b"\xff"], "x")
    for bad in ([None], [123], [bytearray(b"x")]):
        with pytest.raises(MalformedCredentials, match="not PEM text"):
            pem_chain_der(bad, "x")  # type: ignore[list-item]


def test_response_bodies_keep_their_shape(issuer: TokenIssuer, clock: FixedClock) -> None:
    guard, _ = make_guard(issuer, clock, policy=ALLOW_ALL)
    seen: list[str | None] = []

    class Body:
        def __iter__(self) -> Iterator[bytes]:
            yield b"chunk"

        def close(self) -> None:  # WSGI servers call close(); it runs as the caller
            principal = context_principal()
            seen.append(principal.subject if principal else None)

    class FileWrapper:
        def __init__(self, filelike: Any, block_size: int = 8192) -> None:
            self.filelike = filelike

    bodies: dict[str, Any] = {"list": [b"a"], "file": FileWrapper(None), "custom": Body()}

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [])
        return bodies[environ["PATH_INFO"].strip("/")]

    middleware = ZeroTrustMiddleware(app, guard=guard)
    token = issuer.issue(subject=WEB, audience=AUD)
    environ = {
        "REQUEST_METHOD": "GET",
        "HTTP_AUTHORIZATION": f"Bearer {token}",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.file_wrapper": FileWrapper,
    }
    statuses: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        statuses.append(status)

    assert middleware({**environ, "PATH_INFO": "/list"}, start_response) is bodies["list"]
    assert middleware({**environ, "PATH_INFO": "/file"}, start_response) is bodies["file"]
    custom = middleware({**environ, "PATH_INFO": "/custom"}, start_response)
    assert list(custom) == [b"chunk"]
    custom.close()  # type: ignore[attr-defined]
    assert seen == [WEB] and context_principal() is None
    refused = middleware({**environ, "HTTP_AUTHORIZATION": "Bearer x.y.z"}, start_response)
    assert statuses[-1] == "401 Unauthorized" and b"invalid_token" in b"".join(refused)


def test_views_answer_header_presence_in_one_lookup() -> None:
    from zerotrust.adapters._asgi_view import ScopeView

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/x",
        "headers": [(b"Authorization", b"Bearer abc"), (b"x-client-cert", b":abc:")],
    }
    asgi = ScopeView(scope, "/x")
    assert asgi.has_any(frozenset({"x-client-cert"})) is True
    assert asgi.has_any(("dpop", "x-forwarded-client-cert")) is False
    assert asgi.header("authorization") == ["Bearer abc"]  # names are matched case-insensitively


def test_views_hand_a_repeat_only_a_lone_bearer_token() -> None:
    from zerotrust.adapters._asgi_view import ScopeView

    def asgi(*headers: tuple[bytes, bytes]) -> ScopeView:
        return ScopeView({"type": "http", "method": "GET", "path": "/", "headers": headers}, "/")

    absent = frozenset({"dpop", "x-client-cert"})
    assert asgi((b"Authorization", b"Bearer abc")).bearer_alone(absent) == "abc"
    assert asgi((b"authorization", b"Bearer abc"), (b"DPoP", b"")).bearer_alone(absent) is None
    two = asgi((b"authorization", b"Bearer abc"), (b"authorization", b"Bearer abc"))
    assert two.bearer_alone(absent) is None
    assert asgi((b"authorization", b"bearer abc")).bearer_alone(absent) is None
    assert asgi().bearer_alone(absent) is None

    environ = {"HTTP_AUTHORIZATION": "Bearer abc", "REQUEST_METHOD": "GET"}
    assert WSGIRequestView(environ, "/").bearer_alone(absent) == "abc"
    assert WSGIRequestView({**environ, "HTTP_DPOP": ""}, "/").bearer_alone(absent) is None
    basic = {**environ, "HTTP_AUTHORIZATION": "Basic abc"}
    assert WSGIRequestView(basic, "/").bearer_alone(absent) is None
    assert WSGIRequestView({"REQUEST_METHOD": "GET"}, "/").bearer_alone(absent) is None


def test_environ_key_names_are_remembered_within_a_bound() -> None:
    from zerotrust.adapters import wsgi
    from zerotrust.adapters.wsgi import environ_key

    for n in range(1100):
        assert environ_key(f"x-name-{n}") == f"HTTP_X_NAME_{n}"
    assert len(wsgi._keys) <= 1024
    assert environ_key("Content-Type") == "CONTENT_TYPE"
