"""DPoP from the client, checked by the server-side verifier and by a real Guard."""

from __future__ import annotations

import time

import pytest

from tests._zt_https import Handler, Recorded, Reply, ZtHttpsServer
from tests.client.conftest import CLIENT_ID, Mode, send, tls
from zerotrust import DPoPConfig, FixedClock, X509Svid
from zerotrust.adapters._status import refusal
from zerotrust.audit import MemorySink
from zerotrust.authn.authenticate import Authenticator
from zerotrust.authn.binding import DPoPProof, normalize_htu, verify_dpop_proof
from zerotrust.authn.request import Request
from zerotrust.authz import Callers, Operations, Policy, Rule
from zerotrust.dev import DevCA
from zerotrust.errors import ConfigurationError
from zerotrust.httpx import DPoPSigner, RetryPolicy, dpop_proof
from zerotrust.pipeline import Guard
from zerotrust.stores import MemoryStore
from zerotrust.tokens import PrivateJWK, TokenIssuer, TokenVerifier
from zerotrust.tokens._b64 import b64url_decode
from zerotrust.tokens._json import loads_object
from zerotrust.tokens.outgoing import CachedTokenSource

pytestmark = pytest.mark.network

ISS = "https://issuer.example"
AUD = "orders-api"


@pytest.fixture(scope="module")
def holder() -> PrivateJWK:
    return PrivateJWK.generate("ES256")


@pytest.fixture(scope="module")
def issuer() -> TokenIssuer:
    return TokenIssuer(PrivateJWK.generate("ES256"), issuer=ISS)


def bound_token(issuer: TokenIssuer, holder: PrivateJWK) -> str:
    return issuer.issue(
        subject=CLIENT_ID,
        audience=AUD,
        scopes=["orders:read"],
        extra_claims={"cnf": {"jkt": holder.thumbprint()}},
    )


def claims_of(jws: str) -> dict[str, object]:
    return dict(loads_object(b64url_decode(jws.split(".")[1])))


def dpop_options(
    ca: DevCA, client_svid: X509Svid, token: str, holder: PrivateJWK, **extra: object
) -> dict[str, object]:
    """A client's options: mTLS to the test server, ``token`` for AUD, proofs by ``holder``."""
    return {
        **tls(ca, client_svid),
        "token_source": CachedTokenSource(lambda audience: token),
        "audience": AUD,
        "dpop_key": holder,
        **extra,
    }


def verified_proof(record: Recorded, token: str, method: str | None = None) -> DPoPProof:
    """The recorded request's proof, checked as a server checks it."""
    return verify_dpop_proof(
        record.headers["dpop"],
        method=method or record.method,
        url=record.url,
        access_token=token,
        config=DPoPConfig(),
        now=time.time(),
    )


def test_client_proofs_verify_with_the_server_verifier(
    mode: Mode,
    server: ZtHttpsServer,
    ca: DevCA,
    client_svid: X509Svid,
    issuer: TokenIssuer,
    holder: PrivateJWK,
) -> None:
    token = bound_token(issuer, holder)
    server.script("/orders/7", Reply(200))
    calls = [("GET", server.url("/orders/7?page=2#frag")), ("POST", server.url("/orders/7"))]
    send(mode, calls, **dpop_options(ca, client_svid, token, holder))
    jtis = set()
    for record in server.requests():
        assert record.headers["authorization"] == f"DPoP {token}"
        proof = verified_proof(record, token)
        assert proof.jkt == holder.thumbprint()
        jtis.add(proof.jti)
        assert "?" not in str(claims_of(record.headers["dpop"])["htu"])
    assert len(jtis) == 2  # a fresh proof per request


def test_redirects_and_their_retries_get_proofs_of_their_own(
    mode: Mode,
    server: ZtHttpsServer,
    ca: DevCA,
    client_svid: X509Svid,
    issuer: TokenIssuer,
    holder: PrivateJWK,
) -> None:
    """RFC 9449 4.3: htm/htu name the request the proof travels with, and every jti is new;
    a redirect httpx follows is another request, and so is each retry of it."""
    token = bound_token(issuer, holder)
    server.script("/old", Reply(307, {"Location": server.url("/new?x=1")}))
    server.script("/new", Reply(503), Reply(200))
    retry = RetryPolicy(attempts=3, backoff=0.01)
    options = dpop_options(ca, client_svid, token, holder, follow_redirects=True, retry=retry)
    [response] = send(mode, [("GET", server.url("/old?q=1"))], **options)
    assert response.status_code == 200
    records = server.requests()
    assert [r.path for r in records] == ["/old", "/new", "/new"]
    assert len({verified_proof(record, token, "GET").jti for record in records}) == 3


def test_a_redirect_to_another_origin_carries_no_proof(
    mode: Mode,
    server: ZtHttpsServer,
    ca: DevCA,
    client_svid: X509Svid,
    issuer: TokenIssuer,
    holder: PrivateJWK,
) -> None:
    """httpx drops Authorization on a redirect to another origin; the proof goes with it."""
    token = bound_token(issuer, holder)
    other = server.url("/elsewhere", host="127.0.0.1")  # the same server, another origin
    server.script("/start", Reply(307, {"Location": other}))
    server.script("/elsewhere", Reply(200))
    options = dpop_options(ca, client_svid, token, holder, follow_redirects=True)
    send(mode, [("GET", server.url("/start"))], **options)
    [moved] = server.requests("/elsewhere")
    assert "authorization" not in moved.headers and "dpop" not in moved.headers


def test_proof_contents() -> None:
    key = PrivateJWK.generate("EdDSA", kid="k")
    clock = FixedClock()
    proof = dpop_proof(
        key, method="put", url="https://API.example:443/a?b", access_token="t", clock=clock
    )
    header = dict(loads_object(b64url_decode(proof.split(".")[0])))
    assert header["typ"] == "dpop+jwt" and header["alg"] == "EdDSA"
    assert set(header["jwk"]) == {"kty", "crv", "x"}  # public members only, no kid  # type: ignore[arg-type]
    claims = claims_of(proof)
    assert claims["htm"] == "PUT" and claims["iat"] == int(clock.now().timestamp())
    assert normalize_htu(str(claims["htu"])) == "https://api.example/a"
    verify_dpop_proof(
        proof,
        method="PUT",
        url="https://api.example/a",
        access_token="t",
        config=DPoPConfig(),
        now=clock.now().timestamp(),
    )
    assert DPoPSigner(key).thumbprint == key.thumbprint()
    userinfo = dpop_proof(key, method="GET", url="https://user:secret@api.example/a")
    assert claims_of(userinfo)["htu"] == "https://api.example/a"
    with pytest.raises(ConfigurationError):
        dpop_proof(key, method="GET", url="/relative")
    with pytest.raises(ConfigurationError):
        DPoPSigner("not a key")  # type: ignore[arg-type]


def guard_handler(guard: Guard) -> Handler:
    def handle(record: Recorded) -> Reply:
        view = Request(
            method=record.method,
            route="/orders",
            path=record.path,
            headers={name: (value,) for name, value in record.headers.items()},
            host=record.headers["host"],
            verified_peer=record.peer,
        )
        outcome = guard.evaluate(view)
        if outcome.allowed:
            return Reply(200, body=b"ok")
        status, headers, body = refusal(outcome)
        return Reply(status, dict(headers), body)

    return handle


@pytest.fixture
def guard(issuer: TokenIssuer) -> Guard:
    verifier = TokenVerifier(issuer=ISS, audience=AUD, keys=issuer.jwks(), algorithms=["ES256"])
    rule = Rule(
        id="orders",
        callers=[Callers(spiffe_ids=[CLIENT_ID])],
        operations=[Operations(routes=["/orders"])],
    )
    return Guard(
        authenticator=Authenticator(tokens=verifier),
        policy=Policy([rule], id="test"),
        audit=MemorySink(),
        store=MemoryStore(),
    )


def test_guard_accepts_dpop_re_mints_on_invalid_token_and_re_signs_retries(
    mode: Mode,
    server: ZtHttpsServer,
    ca: DevCA,
    client_svid: X509Svid,
    issuer: TokenIssuer,
    holder: PrivateJWK,
    guard: Guard,
) -> None:
    stranger = TokenIssuer(PrivateJWK.generate("ES256"), issuer=ISS)
    minted: list[str] = []

    def mint(audience: str) -> str:
        # The first token is signed by a key the server does not trust.
        signer = stranger if not minted else issuer
        minted.append(audience)
        return bound_token(signer, holder)

    handle = guard_handler(guard)
    answers = iter([None, Reply(503, {"Retry-After": "0"})])

    def flaky(record: Recorded) -> Reply:
        reply = handle(record)
        if reply.status == 200:
            scripted = next(answers, None)
            if scripted is not None:
                return scripted
        return reply

    server.handle("/orders", flaky)
    options = {
        **tls(ca, client_svid),
        "token_source": CachedTokenSource(mint),
        "audience": AUD,
        "dpop_key": holder,
        "retry": RetryPolicy(backoff=0),
    }
    first, second = send(mode, [("GET", server.url("/orders"))] * 2, **options)
    # 1st request: untrusted token -> 401 invalid_token -> re-minted -> allowed.
    assert first.status_code == 200 and len(minted) == 2
    # 2nd request: allowed but answered 503 -> retried with a NEW proof (the first proof's
    # jti is in the Guard's replay cache) -> allowed again.
    assert second.status_code == 200
    statuses = [r.headers["authorization"][:5] for r in server.requests()]
    assert statuses == ["DPoP "] * 4
    proofs = [r.headers["dpop"] for r in server.requests()]
    assert len(set(proofs)) == 4
