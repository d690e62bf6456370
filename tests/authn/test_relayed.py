"""A trusted proxy relays its clients' requests: its own certificate never authenticates one.

The proxy connects to the service over mTLS with its own SVID. When the client sent no
certificate, the proxy forwards none (Envoy's ``SANITIZE_SET`` drops XFCC; nginx leaves out a
``proxy_set_header`` whose value is empty, and the client's copy with it), and the only
certificate left is the proxy's. Taking it for the caller's would give every anonymous client
the proxy's identity.
"""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from zerotrust import (
    Authenticator,
    BundleSet,
    Callers,
    Guard,
    MemorySink,
    Policy,
    Request,
    Rule,
    TokenIssuer,
    TokenVerifier,
    VerifiedPeer,
    X509Svid,
    match,
    verify_x509_svid,
)
from zerotrust._clock import FixedClock
from zerotrust._sansio import drive
from zerotrust.authn.authenticate import PEER_IS_PROXY
from zerotrust.authn.proxy import TrustedProxies
from zerotrust.dev import DevCA
from zerotrust.tokens import PrivateJWK

ENVOY = "spiffe://example.org/ns/edge/sa/envoy"
WEB = "spiffe://example.org/ns/shop/sa/web"
PROXY_ADDR = "10.0.0.5"
ISSUER = "https://issuer.example"
AUDIENCE = "orders"


@pytest.fixture(scope="module")
def issuer() -> TokenIssuer:
    return TokenIssuer(PrivateJWK.generate("ES256"), issuer=ISSUER)


def peer_of(ca: DevCA, svid: X509Svid) -> VerifiedPeer:
    chain = [c.public_bytes(Encoding.DER) for c in svid.cert_chain]
    return verify_x509_svid(chain, BundleSet([ca.bundle]), role="client")


def guard_for(
    ca: DevCA,
    issuer: TokenIssuer,
    proxies: TrustedProxies,
    *,
    require_mtls: bool = False,
    header: str = "xfcc",
) -> tuple[Guard, MemorySink]:
    verifier = TokenVerifier(
        issuer=ISSUER, audience=AUDIENCE, keys=issuer.jwks(), algorithms=["ES256"]
    )
    sink = MemorySink()
    guard = Guard(
        authenticator=Authenticator(
            tokens=verifier, bundles=ca.bundle, trusted_proxies=proxies, require_mtls=require_mtls
        ),
        policy=Policy([Rule(id="mesh", callers=[Callers(trust_domains=["example.org"])])]),
        audit=sink,
    )
    return guard, sink


def envoy_proxies() -> TrustedProxies:
    return TrustedProxies(["10.0.0.0/8"], spiffe_ids=match.exact(ENVOY), header="xfcc")


def request(
    peer: VerifiedPeer | None,
    *,
    remote_addr: str = PROXY_ADDR,
    token: str | None = None,
    headers: dict[str, str] | None = None,
) -> Request:
    sent = dict(headers or {})
    if token is not None:
        sent["authorization"] = f"Bearer {token}"
    return Request(
        method="GET", route="/orders", remote_addr=remote_addr, verified_peer=peer, headers=sent
    )


def test_an_anonymous_client_relayed_by_the_proxy_is_not_the_proxy(
    ca: DevCA, issuer: TokenIssuer
) -> None:
    guard, sink = guard_for(ca, issuer, envoy_proxies())
    envoy = peer_of(ca, ca.issue_svid(ENVOY))
    for _ in range(2):  # the second time too: nothing was remembered as an allow
        outcome = guard.evaluate(request(envoy))
        assert not outcome.allowed and outcome.status == 401
        assert outcome.error is not None and outcome.error.code == "missing_credentials"
        assert PEER_IS_PROXY in outcome.notes
    event = sink.events[-1]
    assert event.spiffe_id is None and PEER_IS_PROXY in event.notes


@pytest.mark.parametrize("asynchronous", [False, True])
def test_a_token_relayed_by_the_proxy_speaks_for_its_own_subject(
    ca: DevCA, issuer: TokenIssuer, asynchronous: bool
) -> None:
    import asyncio

    guard, _ = guard_for(ca, issuer, envoy_proxies())
    envoy = peer_of(ca, ca.issue_svid(ENVOY))
    token = issuer.issue(subject=WEB, audience=AUDIENCE)
    for _ in range(3):  # repeated requests take the same answer
        view = request(envoy, token=token)
        outcome = asyncio.run(guard.aevaluate(view)) if asynchronous else guard.evaluate(view)
        assert outcome.allowed and outcome.principal is not None
        assert outcome.principal.proven_by == "jwt"
        assert str(outcome.principal.spiffe_id) == WEB
        assert outcome.principal.cert_fingerprint is None


def test_a_token_for_another_subject_is_not_joined_to_the_proxy_identity(
    ca: DevCA, issuer: TokenIssuer
) -> None:
    guard, _ = guard_for(ca, issuer, envoy_proxies())
    envoy = peer_of(ca, ca.issue_svid(ENVOY))
    outcome = guard.evaluate(
        request(envoy, token=issuer.issue(subject="partner-app", audience=AUDIENCE))
    )
    # the token alone: no SPIFFE ID, so the trust-domain rule does not admit it
    assert not outcome.allowed and outcome.status == 403
    assert outcome.principal is not None and outcome.principal.spiffe_id is None


def test_a_certificate_the_proxy_forwards_still_authenticates(
    ca: DevCA, issuer: TokenIssuer
) -> None:
    guard, _ = guard_for(ca, issuer, envoy_proxies())
    envoy = peer_of(ca, ca.issue_svid(ENVOY))
    client = ca.issue_svid(WEB)
    leaf = quote(client.leaf.public_bytes(Encoding.PEM).decode(), safe="")
    outcome = guard.evaluate(request(envoy, headers={"x-forwarded-client-cert": f'Cert="{leaf}"'}))
    assert outcome.allowed and outcome.principal is not None
    assert outcome.principal.proven_by == "proxy-mtls" and str(outcome.principal.spiffe_id) == WEB
    assert PEER_IS_PROXY not in outcome.notes


def test_require_mtls_refuses_a_relayed_client_without_a_certificate(
    ca: DevCA, issuer: TokenIssuer
) -> None:
    guard, _ = guard_for(ca, issuer, envoy_proxies(), require_mtls=True)
    envoy = peer_of(ca, ca.issue_svid(ENVOY))
    token = issuer.issue(subject=WEB, audience=AUDIENCE)
    outcome = guard.evaluate(request(envoy, token=token))
    assert not outcome.allowed and outcome.status == 401


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="left-out"),  # nginx: $ssl_client_escaped_cert is empty, no header
        pytest.param({"x-ssl-client-cert": ""}, id="empty"),  # a proxy that sends it empty
    ],
)
def test_no_certificate_from_nginx_is_not_the_proxy_identity(
    ca: DevCA, issuer: TokenIssuer, headers: dict[str, str]
) -> None:
    proxies = TrustedProxies(["10.0.0.0/8"], header="nginx")
    guard, _ = guard_for(ca, issuer, proxies)
    nginx = peer_of(ca, ca.issue_svid("spiffe://example.org/ns/edge/sa/nginx"))
    outcome = guard.evaluate(request(nginx, headers=headers))
    assert not outcome.allowed and outcome.status == 401
    assert PEER_IS_PROXY in outcome.notes


def test_with_addresses_alone_any_certificate_at_a_proxy_address_is_the_proxys(
    ca: DevCA, issuer: TokenIssuer
) -> None:
    # anything at a trusted address may forward any certificate: its own names nobody
    guard, _ = guard_for(ca, issuer, TrustedProxies(["10.0.0.0/8"]))
    web = peer_of(ca, ca.issue_svid(WEB))
    assert guard.evaluate(request(web)).status == 401
    direct = guard.evaluate(request(web, remote_addr="192.0.2.7"))
    assert direct.allowed and direct.principal is not None
    assert direct.principal.proven_by == "mtls" and PEER_IS_PROXY not in direct.notes


@pytest.mark.parametrize(
    ("spiffe_id", "remote_addr"),
    [
        pytest.param(WEB, PROXY_ADDR, id="another-workload-at-the-proxy-address"),
        pytest.param(ENVOY, "192.0.2.7", id="the-proxy-id-from-an-untrusted-address"),
    ],
)
def test_a_peer_that_fails_the_proxy_checks_keeps_its_own_identity(
    ca: DevCA, issuer: TokenIssuer, spiffe_id: str, remote_addr: str
) -> None:
    # it could not forward a certificate either: it is a caller like any other
    guard, _ = guard_for(ca, issuer, envoy_proxies())
    peer = peer_of(ca, ca.issue_svid(spiffe_id))
    outcome = guard.evaluate(request(peer, remote_addr=remote_addr))
    assert outcome.allowed and outcome.principal is not None
    assert outcome.principal.proven_by == "mtls" and str(outcome.principal.spiffe_id) == spiffe_id


def test_is_proxy_applies_the_forwarding_checks() -> None:
    from zerotrust import SpiffeId

    proxies = envoy_proxies()
    envoy, web = SpiffeId.parse(ENVOY), SpiffeId.parse(WEB)
    assert proxies.is_proxy(PROXY_ADDR, envoy)
    assert proxies.is_proxy(f"::ffff:{PROXY_ADDR}", envoy)
    assert not proxies.is_proxy(PROXY_ADDR, web)
    assert not proxies.is_proxy(PROXY_ADDR, None)
    assert not proxies.is_proxy("192.0.2.7", envoy)
    assert not proxies.is_proxy(None, envoy)
    assert proxies.distrust(PROXY_ADDR, None) == "proxy_id_missing"
    assert proxies.distrust(PROXY_ADDR, web) == "proxy_id_not_allowed"
    assert proxies.distrust("192.0.2.7", envoy) == "untrusted_peer"
    assert proxies.distrust(PROXY_ADDR, envoy) is None


def test_a_forwarded_certificate_is_verified_once_and_refused_once_it_expires(
    ca: DevCA, issuer: TokenIssuer
) -> None:
    clock = FixedClock()
    authenticator = Authenticator(bundles=ca.bundle, trusted_proxies=envoy_proxies(), clock=clock)
    guard = Guard(
        authenticator=authenticator,
        policy=Policy([Rule(id="mesh", callers=[Callers(trust_domains=["example.org"])])]),
        audit=MemorySink(),
    )
    envoy = peer_of(ca, ca.issue_svid(ENVOY))
    client = ca.issue_svid(WEB, ttl=600)
    leaf = quote(client.leaf.public_bytes(Encoding.PEM).decode(), safe="")
    view = request(envoy, headers={"x-forwarded-client-cert": f'Cert="{leaf}"'})
    peers = []
    for _ in range(3):
        auth = drive(authenticator.flow(view))
        assert auth.principal is not None and str(auth.principal.spiffe_id) == WEB
        peers.append(auth.peer)
    assert peers[0] is not None and all(peer is peers[0] for peer in peers)
    assert guard.evaluate(view).allowed
    clock.set(client.leaf.not_valid_after_utc + timedelta(seconds=1))
    outcome = guard.evaluate(view)
    assert not outcome.allowed and outcome.status == 401
    assert outcome.error is not None and outcome.error.code == "certificate_expired"


def test_the_certificate_that_authenticated_a_request_is_its_results_peer(ca: DevCA) -> None:
    authenticator = Authenticator(bundles=ca.bundle)
    web = peer_of(ca, ca.issue_svid(WEB))
    auth = drive(authenticator.flow(request(web, remote_addr="127.0.0.1")))
    assert auth.principal is not None and auth.principal.proven_by == "mtls"
    assert auth.peer is web
    assert drive(authenticator.flow(request(None))).peer is None


def test_a_hand_built_request_without_an_address_comes_from_no_proxy(
    ca: DevCA, issuer: TokenIssuer
) -> None:
    """``Request`` names no immediate peer unless told: an integration that leaves
    ``remote_addr`` out is not taken for the loopback sidecar it would otherwise look like,
    so a forwarded certificate in its headers is not believed."""
    guard, _ = guard_for(ca, issuer, TrustedProxies(["127.0.0.1/32"], header="xfcc"))
    leaf = quote(ca.issue_svid(WEB).leaf.public_bytes(Encoding.PEM).decode(), safe="")
    forwarded = {"x-forwarded-client-cert": f'Cert="{leaf}"'}
    view = Request(method="GET", route="/orders", headers=forwarded)
    assert view.remote_addr is None
    outcome = guard.evaluate(view)
    assert not outcome.allowed and outcome.status == 401
    relayed = Request(method="GET", route="/orders", headers=forwarded, remote_addr="127.0.0.1")
    assert guard.evaluate(relayed).allowed  # from the proxy's address, it is the caller's
