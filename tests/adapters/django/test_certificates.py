"""Client certificates reaching Django: the SSL_CLIENT_CERT environ keys, the ASGI TLS extension,
spoofed forwarded-certificate headers; and the principal while a body is streamed."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from django.core.handlers.asgi import ASGIHandler
from django.http import HttpResponse
from django.test import AsyncClient, Client

from tests.adapters.django.conftest import WEB, Harness, Installer
from zerotrust import Authenticator, Callers, Guard, MemorySink, Policy, Rule, TrustedProxies
from zerotrust.adapters._tls_scope import TLS_PEER_KEY
from zerotrust.dev import DevCA
from zerotrust.x509.verify import verify_x509_svid

XFCC = "By=spiffe://example.org/api;Hash=abc;URI=spiffe://example.org/ns/shop/sa/admin"


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(Encoding.PEM).decode()


@pytest.fixture
def svid(ca_with_intermediate: DevCA) -> Any:
    return ca_with_intermediate.issue_svid(WEB)


@pytest.fixture
def mtls(install: Installer, ca_with_intermediate: DevCA) -> Harness:
    return install(bundles=ca_with_intermediate.bundle)


def asgi_get(path: str, **scope: Any) -> Any:
    """One request through Django's real ASGI handler, with server-provided scope keys (the
    test clients cannot add any)."""

    async def go() -> Any:
        first = True

        async def receive() -> dict[str, Any]:
            nonlocal first
            if first:
                first = False
                return {"type": "http.request", "body": b"", "more_body": False}
            await asyncio.Event().wait()  # no disconnect: Django cancels this when done
            raise AssertionError("unreachable")

        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        full_scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "https",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"testserver")],
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 443),
            **scope,
        }
        await ASGIHandler()(full_scope, receive, send)
        response = HttpResponse(
            b"".join(m.get("body", b"") for m in sent[1:]), status=sent[0]["status"]
        )
        for name, value in sent[0]["headers"]:
            response[name.decode()] = value.decode()
        return response

    return asyncio.run(go())


def seen(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.content
    data: dict[str, Any] = json.loads(response.content)
    return data


def test_ssl_client_cert_environ(mtls: Harness, svid: Any) -> None:
    leaf, intermediate = svid.cert_chain
    response = Client().get(
        "/headers/", SSL_CLIENT_CERT=pem(leaf), SSL_CLIENT_CERT_CHAIN_0=pem(intermediate)
    )
    data = seen(response)
    assert (data["principal"], data["proven_by"]) == (WEB, "mtls")
    assert mtls.sink.last.cert_fingerprint == svid.fingerprint


def test_asgi_tls_extension(mtls: Harness, svid: Any) -> None:
    tls = {"client_cert_chain": [pem(c) for c in svid.cert_chain]}
    response = asgi_get("/headers/", extensions={"tls": tls})
    assert (seen(response)["principal"], seen(response)["proven_by"]) == (WEB, "mtls")


def test_asgi_peer_verified_during_the_handshake(
    install: Installer, ca_with_intermediate: DevCA, svid: Any
) -> None:
    # what zerotrust's uvicorn/hypercorn integration puts in the scope: no bundles needed here
    zt = install()
    peer = verify_x509_svid(svid.cert_chain, ca_with_intermediate.bundle, role="client")
    tls = {"client_cert_chain": (), TLS_PEER_KEY: peer}
    response = asgi_get("/headers/", extensions={"tls": tls})
    assert seen(response)["principal"] == WEB
    assert zt.sink.last.proven_by == "mtls"


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_certificate_of_another_trust_domain(mtls: Harness, other_ca: DevCA, kind: str) -> None:
    stranger = other_ca.issue_svid("spiffe://other.org/ns/x/sa/y")
    chain = [pem(c) for c in stranger.cert_chain]
    if kind == "sync":
        response = Client().get("/headers/", SSL_CLIENT_CERT="".join(chain))
    else:
        tls = {"client_cert_chain": chain}
        response = asgi_get("/headers/", extensions={"tls": tls})
    assert response.status_code == 401
    assert mtls.sink.last.decision == "deny"


def test_malformed_certificate_is_a_bad_request(mtls: Harness) -> None:
    response = Client().get("/headers/", SSL_CLIENT_CERT="-----BEGIN CERTIFICATE-----\nnope")
    assert response.status_code == 400
    assert response["WWW-Authenticate"] == 'Bearer realm="orders", error="invalid_request"'


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_spoofed_forwarded_certificate_is_hidden_from_the_view(zt: Harness, kind: str) -> None:
    headers = {**zt.auth(), "X-Forwarded-Client-Cert": XFCC}
    if kind == "sync":
        response = Client().get("/headers/", headers=headers)
    else:  # raw ASGI headers: Django < 4.2.30's AsyncClient spells them x_forwarded_client_cert
        raw = [(name.lower().encode(), value.encode()) for name, value in headers.items()]
        response = asgi_get("/headers/", headers=[(b"host", b"testserver"), *raw])
    data = seen(response)
    assert (data["principal"], data["xfcc"], data["meta"]) == (WEB, None, False)
    assert "forwarded_cert_ignored_untrusted_peer" in zt.sink.last.notes


def behind_xfcc_proxy(install: Installer, ca: DevCA) -> tuple[MemorySink, str]:
    """Install a Guard trusting an XFCC proxy on loopback; its audit sink and the XFCC value
    the proxy would send for WEB's certificate."""
    harness = install(bundles=ca.bundle)
    authenticator = Authenticator(
        tokens=harness.guard.authenticator.tokens,
        bundles=ca.bundle,
        trusted_proxies=TrustedProxies(["127.0.0.1"], header="xfcc"),
        clock=harness.clock,
    )
    sink = MemorySink()
    policy = Policy([Rule(id="any", callers=[Callers(trust_domains=["example.org"])])])
    guard = Guard(authenticator=authenticator, policy=policy, audit=sink, service="orders")
    install.override(ZEROTRUST={"GUARD": guard, "EXEMPT": []})
    leaf = ca.issue_svid(WEB).leaf.public_bytes(Encoding.PEM).decode()
    return sink, f'By=spiffe://example.org/ns/mesh/sa/proxy;Cert="{quote(leaf, safe="")}"'


def test_a_lookalike_of_the_trusted_proxys_header_hides_it_from_the_view(
    install: Installer, ca: DevCA
) -> None:
    """Behind a trusted XFCC proxy, a client adds its own ``x_forwarded_client_cert``. Django
    before 4.2.30 / 5.2.13 files it under the proxy header's META key, joined to the proxy's
    value, where the view would read its last element: the view sees neither, and the
    principal stays the one the proxy's certificate proved."""
    sink, genuine = behind_xfcc_proxy(install, ca)
    forged = "By=spiffe://example.org/x;URI=spiffe://example.org/ns/ops/sa/admin"
    base = [(b"host", b"testserver"), (b"x-forwarded-client-cert", genuine.encode())]

    alone = seen(asgi_get("/headers/", headers=base))  # the proxy's header reaches the view
    assert (alone["principal"], alone["xfcc"]) == (WEB, genuine)
    both = seen(
        asgi_get("/headers/", headers=[*base, (b"x_forwarded_client_cert", forged.encode())])
    )
    assert (both["principal"], both["xfcc"], both["meta"]) == (WEB, None, False)
    assert sink.last.proven_by == "proxy-mtls" and sink.last.spiffe_id == WEB
    # a lookalike of another format's header is merged into nothing: the proxy's header stays
    for other in (b"client_cert", b"client_cert_chain", b"x_ssl_client_cert"):
        kept = seen(asgi_get("/headers/", headers=[*base, (other, b"junk")]))
        assert (kept["principal"], kept["xfcc"]) == (WEB, genuine), other


def test_the_trusted_proxys_header_reaches_a_wsgi_view(install: Installer, ca: DevCA) -> None:
    """Under WSGI (no ASGI scope to look for lookalikes in) an allowed request keeps the
    trusted proxy's certificate header for the view, and the principal is the one it proved."""
    sink, genuine = behind_xfcc_proxy(install, ca)
    response = Client(REMOTE_ADDR="127.0.0.1").get(
        "/headers/", headers={"X-Forwarded-Client-Cert": genuine}
    )
    data = seen(response)
    assert (data["principal"], data["xfcc"]) == (WEB, genuine)
    assert sink.last.proven_by == "proxy-mtls"


def read_headers_first(get_response: Any) -> Any:
    """A middleware before zerotrust's that reads ``request.headers`` (Django caches it)."""

    def middleware(request: Any) -> Any:
        assert request.headers.get("X-Forwarded-Client-Cert") == XFCC
        return get_response(request)

    return middleware


def test_headers_read_before_the_decision_do_not_keep_a_spoofed_certificate(
    install: Installer,
) -> None:
    install.override(
        MIDDLEWARE=[f"{__name__}.read_headers_first", "zerotrust.django.ZeroTrustMiddleware"]
    )
    zt = install()
    response = Client().get("/headers/", headers={**zt.auth(), "X-Forwarded-Client-Cert": XFCC})
    data = seen(response)
    assert (data["principal"], data["xfcc"], data["meta"]) == (WEB, None, False)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_exempt_views_see_no_forwarded_certificate(install: Installer, kind: str) -> None:
    install(exempt=["/headers/"])
    headers = {"X-Forwarded-Client-Cert": XFCC}
    if kind == "sync":
        response = Client().get("/headers/", headers=headers)
    else:
        response = asyncio.run(AsyncClient().get("/headers/", headers=headers))
    assert seen(response) == {
        "principal": None, "context": None, "xfcc": None, "meta": False, "proven_by": None
    }  # fmt: skip


def test_asgi_requests_with_too_many_header_lines_are_refused(zt: Harness) -> None:
    """The same bound as every other adapter: the view is never reached, the refusal is
    audited (Django under ASGI builds its request from the scope's headers)."""
    padding = [(f"x-pad-{i}".encode(), b"1") for i in range(300)]
    auth = [(b"authorization", zt.auth()["Authorization"].encode())]
    response = asgi_get("/headers/", headers=[(b"host", b"testserver"), *auth, *padding])
    assert response.status_code == 400
    assert response["WWW-Authenticate"] == 'Bearer realm="orders", error="invalid_request"'
    assert zt.sink.last.reason == "malformed_credentials"


def test_principal_while_streaming_sync(zt: Harness) -> None:
    from zerotrust.django import current_principal

    response = Client().get("/stream/", headers=zt.auth())
    assert b"".join(response.streaming_content).decode().split() == [WEB, WEB]
    assert current_principal() is None  # bound only while each part is produced


def test_principal_while_streaming_async(zt: Harness) -> None:
    async def go() -> bytes:
        response = await AsyncClient().get("/astream/", headers=zt.auth())
        return b"".join([part async for part in response.streaming_content])

    assert asyncio.run(go()).decode().split() == [WEB, WEB]


def test_a_file_response_reaches_the_servers_file_wrapper(install: Installer, zt: Harness) -> None:
    """A ``FileResponse`` keeps its file: Django's WSGI handler hands it to the server's
    ``wsgi.file_wrapper`` (gunicorn sends it with sendfile), as without zerotrust."""
    import io
    import types
    from wsgiref.util import FileWrapper

    from django.core.handlers.wsgi import WSGIHandler
    from django.http import FileResponse
    from django.test import RequestFactory
    from django.urls import path

    def download(request: Any) -> FileResponse:
        return FileResponse(io.BytesIO(b"content"), content_type="text/plain")

    urls = [path("download/", download)]
    install.override(
        ROOT_URLCONF=types.new_class("FileUrls", exec_body=lambda ns: ns.update(urlpatterns=urls))
    )
    environ = RequestFactory().get("/download/", headers=zt.auth()).environ
    environ["wsgi.file_wrapper"] = FileWrapper
    body = WSGIHandler()(environ, lambda status, headers, exc_info=None: None)
    assert isinstance(body, FileWrapper)
    assert b"".join(body) == b"content"
    body.close()
    assert zt.sink.last.decision == "allow"
