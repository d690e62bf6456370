"""A request carrying one plain ``Authorization: Bearer`` header and nothing else is read in one
pass over the adapter's view. Whatever a request carries, that shortcut must authenticate it
exactly as reading every credential header one by one does."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import given, settings
from hypothesis import strategies as st

from zerotrust import (
    Authenticator,
    BundleSet,
    Request,
    TokenIssuer,
    TokenVerifier,
    TrustedProxies,
    VerifiedPeer,
    verify_x509_svid,
)
from zerotrust._sansio import drive
from zerotrust.adapters._asgi_view import ScopeView
from zerotrust.adapters._tls_scope import TLS_PEER_KEY
from zerotrust.adapters.wsgi import PEER_ENVIRON_KEY, WSGIRequestView
from zerotrust.authn.authenticate import PEER_IS_PROXY
from zerotrust.authn.credentials import ApiKeys
from zerotrust.dev import DevCA
from zerotrust.errors import ConfigurationError, ZeroTrustError
from zerotrust.tokens import PrivateJWK

ISSUER = "https://issuer.example"
AUDIENCE = "orders"
CALLER = "spiffe://example.org/ns/shop/sa/web"


class Hidden:
    """The same view without its one-pass answer: the Authenticator reads header by header."""

    def __init__(self, view: Any) -> None:
        self._view = view

    def __getattr__(self, name: str) -> Any:
        if name == "bearer_alone":
            raise AttributeError(name)
        return getattr(self._view, name)


@pytest.fixture(scope="module")
def issuer() -> TokenIssuer:
    return TokenIssuer(PrivateJWK.generate("ES256", kid="k1"), issuer=ISSUER)


@pytest.fixture(scope="module")
def token(issuer: TokenIssuer) -> str:
    return issuer.issue(subject=CALLER, audience=AUDIENCE, scopes=["orders:read"], ttl=600)


def authenticators(issuer: TokenIssuer) -> dict[str, Authenticator]:
    ca = DevCA.create("example.org")

    def verifier() -> TokenVerifier:
        return TokenVerifier(
            issuer=ISSUER, audience=AUDIENCE, keys=issuer.jwks(), algorithms=["ES256"]
        )

    return {
        "plain": Authenticator(tokens=verifier()),
        "proxies": Authenticator(
            tokens=verifier(), bundles=ca.bundle, trusted_proxies=TrustedProxies(["10.0.0.0/8"])
        ),
        "nginx": Authenticator(
            tokens=verifier(),
            bundles=ca.bundle,
            trusted_proxies=TrustedProxies(["127.0.0.1"], header="nginx"),
        ),
        "api-keys": Authenticator(
            tokens=verifier(), api_keys=ApiKeys({"k": ApiKeys.hash("s" * 32)}, header="x-key")
        ),
    }


def header_sets(token: str) -> dict[str, list[tuple[str, str]]]:
    bearer = ("authorization", f"Bearer {token}")
    return {
        "bearer": [bearer],
        "two spaces": [("authorization", f"Bearer  {token}")],
        "trailing space": [("authorization", f"Bearer {token} ")],
        "leading space": [("authorization", f" Bearer {token}")],
        "tab": [("authorization", f"Bearer\t{token}")],
        "lower-case scheme": [("authorization", f"bearer {token}")],
        "dpop scheme": [("authorization", f"DPoP {token}")],
        "other scheme": [("authorization", f"Basic {token}")],
        "scheme alone": [("authorization", "Bearer")],
        "empty token": [("authorization", "Bearer ")],
        "not b64token": [("authorization", f"Bearer {token},x")],
        "padding": [("authorization", f"Bearer {token}==")],
        "garbage token": [("authorization", "Bearer abc.def.ghi")],
        "oversized": [("authorization", "Bearer " + "a" * 9000)],
        "just below the bound": [("authorization", "Bearer " + "a" * 8192)],
        "two headers": [bearer, bearer],
        "with dpop header": [bearer, ("dpop", "a.b.c")],
        "with xfcc": [bearer, ("x-forwarded-client-cert", "By=spiffe://x;Cert=abc")],
        "with client-cert": [bearer, ("client-cert", ":AAAA:")],
        "with nginx header": [bearer, ("x-ssl-client-cert", "abc")],
        "with api key": [bearer, ("x-key", "s" * 32)],
        "with other headers": [bearer, ("accept", "*/*"), ("x-request-id", "7")],
        "nothing": [],
        "api key alone": [("x-key", "s" * 32)],
    }


def asgi_view(
    headers: Sequence[tuple[str, str]], client: str, peer: VerifiedPeer | None = None
) -> ScopeView:
    scope: dict[str, Any] = {
        "type": "http",
        "method": "GET",
        "path": "/orders/7",
        "raw_path": b"/orders/7",
        "scheme": "http",
        "query_string": b"",
        "client": (client, 5000),
        "server": ("127.0.0.1", 8000),
        "headers": [(b"host", b"svc")] + [(n.encode(), v.encode()) for n, v in headers],
    }
    if peer is not None:  # as zerotrust's servers hand over a handshake-verified peer
        scope["extensions"] = {"tls": {TLS_PEER_KEY: peer}}
    return ScopeView(scope, "/orders/{order_id}")


def wsgi_view(
    headers: Sequence[tuple[str, str]], client: str, peer: VerifiedPeer | None = None
) -> WSGIRequestView:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/orders/7",
        "wsgi.url_scheme": "http",
        "REMOTE_ADDR": client,
        "HTTP_HOST": "svc",
    }
    for name, value in headers:
        key = "HTTP_" + name.upper().replace("-", "_")
        # a WSGI server joins repeated headers with a comma
        environ[key] = f"{environ[key]},{value}" if key in environ else value
    if peer is not None:
        environ[PEER_ENVIRON_KEY] = peer
    return WSGIRequestView(environ, "/orders/{order_id}")


def outcome(authenticator: Authenticator, view: Any) -> tuple[Any, ...]:
    try:
        result = drive(authenticator.flow(view, []))
    except ZeroTrustError as exc:
        return ("error", type(exc), exc.code, str(exc))
    token = result.token
    return (
        "ok",
        result.principal,
        result.credentials,
        result.notes,
        result.peer,
        result.reusable,
        dict(token.claims) if token is not None else None,
    )


@pytest.mark.parametrize("make_view", [asgi_view, wsgi_view], ids=["asgi", "wsgi"])
@pytest.mark.parametrize("client", ["127.0.0.1", "10.1.2.3"])
def test_the_one_pass_reading_authenticates_every_request_as_the_full_reading(
    issuer: TokenIssuer, token: str, make_view: Any, client: str
) -> None:
    for name, authenticator in authenticators(issuer).items():
        for case, headers in header_sets(token).items():
            fast = outcome(authenticator, make_view(headers, client))
            full = outcome(authenticator, Hidden(make_view(headers, client)))
            assert fast == full, (name, case)


@pytest.mark.parametrize("make_view", [asgi_view, wsgi_view], ids=["asgi", "wsgi"])
def test_the_one_pass_reading_takes_the_connections_peer_as_the_full_reading(
    issuer: TokenIssuer, token: str, make_view: Any
) -> None:
    """A handshake-verified peer is the caller, unless it connects from a trusted proxy's
    address: a proxy only relays, its own certificate never authenticates a request."""
    ca = DevCA.create("example.org")
    verifier = TokenVerifier(
        issuer=ISSUER, audience=AUDIENCE, keys=issuer.jwks(), algorithms=["ES256"]
    )
    authenticator = Authenticator(
        tokens=verifier, bundles=ca.bundle, trusted_proxies=TrustedProxies(["10.0.0.0/8"])
    )
    chain = [c.public_bytes(Encoding.DER) for c in ca.issue_svid(CALLER).cert_chain]
    peer = verify_x509_svid(chain, BundleSet([ca.bundle]), role="client")
    bearer = [("authorization", f"Bearer {token}")]
    for client, proven_by, notes in (
        ("127.0.0.1", "mtls+jwt", ()),
        ("10.1.2.3", "jwt", (PEER_IS_PROXY,)),
    ):
        fast = outcome(authenticator, make_view(bearer, client, peer))
        assert fast == outcome(authenticator, Hidden(make_view(bearer, client, peer))), client
        assert fast[0] == "ok" and (fast[1].proven_by, fast[3]) == (proven_by, notes), client


def test_only_a_plain_bearer_request_is_reusable(issuer: TokenIssuer, token: str) -> None:
    """AuthResult.reusable (the Guard repeats only such allows): a Bearer token and nothing
    else, with at most the connection's handshake-verified peer."""
    ca = DevCA.create("example.org")
    verifier = TokenVerifier(
        issuer=ISSUER, audience=AUDIENCE, keys=issuer.jwks(), algorithms=["ES256"]
    )
    keys = ApiKeys({"k": ApiKeys.hash("s" * 32)}, header="x-key")
    authenticator = Authenticator(tokens=verifier, bundles=ca.bundle, api_keys=keys)
    chain = [c.public_bytes(Encoding.DER) for c in ca.issue_svid(CALLER).cert_chain]
    peer = verify_x509_svid(chain, BundleSet([ca.bundle]), role="client")
    bearer = {"authorization": f"Bearer {token}"}

    def reusable(headers: dict[str, str], **kw: Any) -> bool:
        view = Request(method="GET", path="/orders/7", headers=headers, **kw)
        result = drive(authenticator.flow(view, []))
        assert result.principal is not None and result.principal.subject == CALLER
        return result.reusable

    assert reusable(bearer) and reusable(bearer, verified_peer=peer)
    assert not reusable(bearer, peer_chain=chain)  # a chain the server handed over unverified
    for other in ({"x-key": "s" * 32}, {"dpop": "a.b.c"}, {"x-forwarded-client-cert": "x"}):
        assert not reusable({**bearer, **other}), other


def test_the_cases_cover_both_readings_and_both_verdicts(issuer: TokenIssuer, token: str) -> None:
    # the comparison above is only worth something if it saw allows and refusals of each kind
    authenticator = authenticators(issuer)["plain"]
    seen = {
        case: outcome(authenticator, asgi_view(headers, "127.0.0.1"))[0]
        for case, headers in header_sets(token).items()
    }
    assert seen["bearer"] == "ok"
    assert seen["trailing space"] == "ok"  # the full reading trims it
    assert seen["with other headers"] == "ok"
    assert seen["nothing"] == "ok"  # anonymous: the policy decides
    for refused in ("two headers", "oversized", "garbage token", "tab", "not b64token"):
        assert seen[refused] == "error", refused


@pytest.mark.parametrize(
    "name", ["authorization", "Authorization", "dpop", "x-forwarded-client-cert", "client-cert"]
)
def test_api_keys_need_a_header_of_their_own(name: str) -> None:
    # a request carrying a token or a forwarded certificate would also seem to carry a key
    with pytest.raises(ConfigurationError):
        ApiKeys({"k": ApiKeys.hash("s" * 32)}, header=name)


@pytest.mark.parametrize("name", ["", "x key", "x-key\r\n", "ключ"])
def test_api_key_headers_are_header_names(name: str) -> None:
    with pytest.raises(ConfigurationError):
        ApiKeys({"k": ApiKeys.hash("s" * 32)}, header=name)


@pytest.mark.parametrize("name", ["authorization", "DPoP"])
def test_forwarded_certificates_never_come_in_a_credential_header(name: str) -> None:
    with pytest.raises(ConfigurationError):
        TrustedProxies(["10.0.0.0/8"], header="nginx", header_name=name)


def test_a_reconfigured_api_key_header_falls_back_to_reading_header_by_header(
    issuer: TokenIssuer, token: str
) -> None:
    authenticator = authenticators(issuer)["api-keys"]
    assert authenticator.api_keys is not None
    with pytest.raises(AttributeError):  # read-only once built
        authenticator.api_keys.header = "authorization"  # type: ignore[misc]
    object.__setattr__(authenticator.api_keys, "_header", "authorization")  # forced past it
    rebuilt = Authenticator(tokens=authenticator.tokens, api_keys=authenticator.api_keys)
    headers = [("authorization", f"Bearer {token}")]
    for make_view in (asgi_view, wsgi_view):
        fast = outcome(rebuilt, make_view(headers, "127.0.0.1"))
        full = outcome(rebuilt, Hidden(make_view(headers, "127.0.0.1")))
        assert fast == full


_NAMES = st.sampled_from(
    [b"authorization", b"Authorization", b"AUTHORIZATION", b"dpop", b"DPoP", b"x-key",
     b"x-forwarded-client-cert", b"Client-Cert", b"host", b"accept", b"authorizati\xf3n",
     b"\xc0uthorization", b"traceparent"]
)  # fmt: skip
_VALUES = st.sampled_from([b"Bearer abc.def.ghi", b"bearer x", b"Bearer ", b"x", b"\xe9", b""])


@settings(max_examples=400, deadline=None)
@given(
    headers=st.lists(st.tuples(_NAMES, _VALUES), max_size=6),
    absent=st.sets(st.sampled_from(["dpop", "x-key", "x-forwarded-client-cert", "client-cert"])),
    asked=st.sets(st.sampled_from(["dpop", "x-forwarded-client-cert", "client-cert", "host"])),
)
def test_the_asgi_view_answers_from_its_raw_headers_as_from_its_table(
    headers: list[tuple[bytes, bytes]], absent: set[str], asked: set[str]
) -> None:
    scope = {"type": "http", "method": "GET", "path": "/", "headers": headers}
    raw, table = ScopeView(dict(scope), None), ScopeView(dict(scope), None)
    table.header("host")  # builds its table: the answers below come from it
    wanted = frozenset(absent)
    assert raw.bearer_alone(wanted) == table.bearer_alone(wanted)
    assert raw.has_any(asked) == table.has_any(asked)
    assert raw.has_any(iter(sorted(asked))) == table.has_any(asked)  # any iterable, read once
    assert raw.header("authorization") == table.header("authorization")


def _grpc_reference(metadata: list[tuple[str, Any]], absent: frozenset[str]) -> str | None:
    if any(key in absent for key, _ in metadata):
        return None
    values = [value for key, value in metadata if key == "authorization"]
    if len(values) != 1 or type(values[0]) is not str or not values[0].startswith("Bearer "):
        return None
    return values[0][7:]


@settings(max_examples=300, deadline=None)
@given(
    metadata=st.lists(
        st.tuples(
            st.sampled_from(["authorization", "dpop", "x-key", "x-key-bin", "user-agent"]),
            st.sampled_from(["Bearer a.b.c", "bearer a", "Bearer ", b"Bearer a.b.c", "x"]),
        ),
        max_size=5,
    ),
    absent=st.sets(st.sampled_from(["dpop", "x-key", "x-key-bin", "authorization"])),
)
def test_the_grpc_view_answers_as_its_metadata_says(
    metadata: list[tuple[str, Any]], absent: set[str]
) -> None:
    from zerotrust.adapters.grpc_server import _View

    view = _View("/pkg.Svc/Method", tuple(metadata), context=None, peers=None)  # type: ignore[arg-type]
    assert view.bearer_alone(frozenset(absent)) == _grpc_reference(metadata, frozenset(absent))
