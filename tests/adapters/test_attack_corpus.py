"""One corpus of hostile credential headers, answered the same way through every adapter's view.

The adapters only describe a request to the Guard: ASGI (Starlette, FastAPI, Django under
ASGI) keeps every header line apart, WSGI servers (Flask, Django under WSGI) join repeated
lines with ``,`` (gunicorn) or ``, `` (werkzeug), and gRPC hands over metadata entries. A
request must get the same status, challenge, error and principal whichever way it came in,
first and repeated (the repeat path reads the views in one pass)."""

from __future__ import annotations

import base64
import functools
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from zerotrust import (
    Authenticator,
    Callers,
    Guard,
    MemorySink,
    Policy,
    Rule,
    TokenIssuer,
    TokenVerifier,
    TrustedProxies,
)
from zerotrust.adapters._asgi_view import ScopeView
from zerotrust.adapters._grpc_tls import PeerCache
from zerotrust.adapters.grpc_server import _View
from zerotrust.adapters.wsgi import WSGIRequestView
from zerotrust.authn.request import RequestView
from zerotrust.dev import DevCA
from zerotrust.pipeline import Outcome
from zerotrust.tokens import PrivateJWK

ISSUER = "https://issuer.example"
AUDIENCE = "orders"
CALLER = "spiffe://example.org/ns/shop/sa/web"
PROXY = "10.0.0.1"
CLIENT = "203.0.113.9"

Headers = Sequence[tuple[str, str]]


class _Context:
    """What the gRPC view reads of a ``ServicerContext``."""

    def __init__(self, address: str) -> None:
        self._address = address

    def auth_context(self) -> dict[str, Any]:
        return {}

    def peer(self) -> str:
        return f"ipv4:{self._address}:50000"


def asgi(headers: Headers, address: str, guard: Guard) -> RequestView:
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/orders/7",
        "raw_path": b"/orders/7",
        "scheme": "https",
        "query_string": b"",
        "client": (address, 50000),
        "headers": [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in headers],
    }
    return ScopeView(scope, "/orders/{order_id}")


def wsgi(separator: str) -> Callable[[Headers, str, Guard], RequestView]:
    def view(headers: Headers, address: str, guard: Guard) -> RequestView:
        environ: dict[str, Any] = {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": "/orders/7",
            "wsgi.url_scheme": "https",
            "REMOTE_ADDR": address,
        }
        for name, value in headers:  # as the server joins repeated header lines
            key = "HTTP_" + name.upper().replace("-", "_")
            environ[key] = f"{environ[key]}{separator}{value}" if key in environ else value
        return WSGIRequestView(environ, "/orders/{order_id}")

    return view


def rpc(headers: Headers, address: str, guard: Guard) -> RequestView:
    metadata = [(n.lower(), v) for n, v in headers]  # grpc's keys are lower case
    return _View("/orders/{order_id}", metadata, _Context(address), PeerCache(guard.authenticator))


#: The spellings of one Bearer token that are accepted (RFC 9110 11.1: the scheme in any case).
ACCEPTED = frozenset(
    {"bearer", "lower-case scheme", "upper-case scheme", "several spaces", "trailing spaces"}
)

#: The forwarded certificates a trusted proxy's request is authenticated by.
FORWARDED = frozenset(
    {"xfcc", "xfcc in another case", "xfcc beside client-cert", "client-cert", "nginx"}
)

VIEWS = {"asgi": asgi, "gunicorn": wsgi(","), "werkzeug": wsgi(", "), "grpc": rpc}


@pytest.fixture(scope="module")
def issuer() -> TokenIssuer:
    return TokenIssuer(PrivateJWK.generate("ES256"), issuer=ISSUER)


@pytest.fixture(scope="module")
def token(issuer: TokenIssuer) -> str:
    return issuer.issue(subject=CALLER, audience=AUDIENCE, ttl=600)


def make_guard(issuer: TokenIssuer, ca: DevCA, header: str) -> Guard:
    verifier = TokenVerifier(
        issuer=ISSUER, audience=AUDIENCE, keys=issuer.jwks(), algorithms=["ES256"]
    )
    authenticator = Authenticator(
        tokens=verifier,
        bundles=ca.bundle,
        trusted_proxies=TrustedProxies([PROXY], header=header),  # type: ignore[arg-type]
    )
    policy = Policy([Rule(id="everyone", callers=[Callers(subjects=["*"])])])
    return Guard(authenticator=authenticator, policy=policy, audit=MemorySink(), service="svc")


def answer(outcome: Outcome) -> tuple[Any, ...]:
    body = outcome.body() or {}
    principal = outcome.principal.id if outcome.principal is not None else None
    code = outcome.error.code if outcome.error is not None else None
    www = outcome.www_authenticate
    return (outcome.status, outcome.grpc_status, www, body.get("error"), code, principal)


def authorization_corpus(token: str) -> dict[str, list[tuple[str, str]]]:
    bearer = ("Authorization", f"Bearer {token}")
    return {
        "bearer": [bearer],
        "two bearer headers": [bearer, bearer],
        "one header holding two": [("Authorization", f"Bearer {token}, Bearer {token}")],
        "bearer and basic": [bearer, ("Authorization", "Basic YTpi")],
        "basic and bearer": [("Authorization", "Basic YTpi"), bearer],
        "dpop and bearer": [("Authorization", f"DPoP {token}"), bearer],
        "lower-case scheme": [("Authorization", f"bearer {token}")],
        "upper-case scheme": [("Authorization", f"BEARER {token}")],
        "tab after the scheme": [("Authorization", f"Bearer\t{token}")],
        "several spaces": [("Authorization", f"Bearer    {token}")],
        "trailing spaces": [("Authorization", f"Bearer {token}   ")],
        "not a b64token": [("Authorization", f"Bearer {token}!")],
        "a comma after the token": [("Authorization", f"Bearer {token},")],
        "two tokens": [("Authorization", f"Bearer {token} {token}")],
        "empty token": [("Authorization", "Bearer ")],
        "scheme alone": [("Authorization", "Bearer")],
        "empty header": [("Authorization", "")],
        "basic": [("Authorization", "Basic YTpi")],
        "over the size bound": [("Authorization", "Bearer " + "a" * 20000)],
        "latin-1 byte": [("Authorization", f"Bearer {token}\xe9")],
        "no-break space": [("Authorization", f"Bearer\xa0{token}")],
        "NUL": [("Authorization", f"Bearer {token}\x00")],
        "vertical tab": [("Authorization", f"Bearer {token}\x0b")],
        "two dpop headers": [bearer, ("DPoP", "a.b.c"), ("DPoP", "a.b.c")],
        "dpop scheme without a proof": [("Authorization", f"DPoP {token}")],
    }


def forwarded_corpus(ca: DevCA) -> dict[str, tuple[str, list[tuple[str, str]]]]:
    leaf = ca.issue_svid(CALLER).leaf
    other = ca.issue_svid("spiffe://example.org/ns/ops/sa/admin").leaf
    pem = leaf.public_bytes(Encoding.PEM).decode()
    sf = ":" + base64.b64encode(leaf.public_bytes(Encoding.DER)).decode() + ":"
    sf_other = ":" + base64.b64encode(other.public_bytes(Encoding.DER)).decode() + ":"
    escaped, escaped_other = quote(pem, safe=""), quote(other.public_bytes(Encoding.PEM), safe="")
    xfcc = ("X-Forwarded-Client-Cert", f'Cert="{escaped}"')
    nginx, nginx_other = ("X-SSL-Client-Cert", escaped), ("X-SSL-Client-Cert", escaped_other)
    return {
        "xfcc": ("xfcc", [xfcc]),
        "xfcc in another case": ("xfcc", [(xfcc[0].swapcase(), xfcc[1])]),
        "xfcc beside client-cert": ("xfcc", [xfcc, ("Client-Cert", sf)]),
        "client-cert": ("client-cert", [("Client-Cert", sf)]),
        "client-cert twice": ("client-cert", [("Client-Cert", sf), ("Client-Cert", sf_other)]),
        "client-cert-chain alone": ("client-cert", [("Client-Cert-Chain", sf)]),
        "nginx": ("nginx", [nginx]),
        "nginx twice": ("nginx", [nginx, nginx_other]),
        "nginx empty, then another": ("nginx", [("X-SSL-Client-Cert", ""), nginx_other]),
        "nginx empty": ("nginx", [("X-SSL-Client-Cert", "")]),
    }


def answers(
    guard_for: Callable[[], Guard], headers: Headers, address: str
) -> dict[str, tuple[Any, ...]]:
    found = {}
    for name, make in VIEWS.items():
        guard = guard_for()
        first = answer(guard.evaluate(make(headers, address, guard)))
        again = answer(guard.evaluate(make(headers, address, guard)))  # the repeat path
        assert again == first, name
        found[name] = first
    return found


def test_every_adapter_answers_each_authorization_header_alike(
    issuer: TokenIssuer, token: str, ca: DevCA
) -> None:
    refused = set()
    for case, headers in authorization_corpus(token).items():
        found = answers(functools.partial(make_guard, issuer, ca, "xfcc"), headers, CLIENT)
        if case == "basic and bearer":
            # joined, the lines are one header of an unsupported scheme (401, no error): a
            # WSGI application cannot tell them from one; kept apart, they are two (400)
            assert {found["asgi"][0], found["grpc"][0]} == {400}
            assert {found["gunicorn"][0], found["werkzeug"][0]} == {401}
            continue
        assert len(set(found.values())) == 1, (case, found)
        status = found["asgi"][0]
        if case in ACCEPTED:
            assert status == 200, case
        else:
            assert status in (400, 401), case
            refused.add(status)
    assert refused == {400, 401}


def test_every_adapter_answers_each_forwarded_certificate_alike(
    issuer: TokenIssuer, ca: DevCA
) -> None:
    """From the trusted proxy and from any other client. (Two XFCC lines are the exception
    the proxies page describes: a WSGI server joins them into one header of two elements.)"""
    for case, (header, headers) in forwarded_corpus(ca).items():
        for address in (PROXY, CLIENT):
            found = answers(functools.partial(make_guard, issuer, ca, header), headers, address)
            assert len(set(found.values())) == 1, (case, address, found)
            status, principal = found["asgi"][0], found["asgi"][-1]
            if address == CLIENT:  # ignored, never parsed: no credentials at all
                assert (status, principal) == (401, None), case
            elif case in FORWARDED:
                assert (status, principal) == (200, CALLER), case
            elif case == "nginx empty":
                assert status == 401, case
            else:
                assert status == 400, case
