"""DPoP from the client, checked by the server-side verifier and by a real Guard."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from datetime import datetime, timezone

import httpx
import pytest

from tests._zt_https import Handler, Recorded, Reply, ZtHttpsServer
from tests.client.conftest import CLIENT_ID, SERVER_ID, Call, Mode, send, streamed, tls
from zerotrust import DPoPConfig, DPoPNonces, FixedClock, StaticTokenSource, X509Svid, match
from zerotrust.adapters._status import refusal
from zerotrust.audit import MemorySink
from zerotrust.authn.authenticate import Authenticator
from zerotrust.authn.binding import DPoPProof, normalize_htu, verify_dpop_proof
from zerotrust.authn.request import Request
from zerotrust.authz import Callers, Operations, Policy, Rule
from zerotrust.dev import DevCA
from zerotrust.errors import ConfigurationError
from zerotrust.httpx import (
    AsyncClient,
    Client,
    DPoPSigner,
    RetryPolicy,
    ZeroTrustAuth,
    ZeroTrustTransport,
    dpop_proof,
)
from zerotrust.pipeline import Guard
from zerotrust.stores import MemoryStore
from zerotrust.tokens import PrivateJWK, TokenIssuer, TokenVerifier
from zerotrust.tokens._b64 import b64url_decode
from zerotrust.tokens._json import loads_object
from zerotrust.tokens.outgoing import CachedTokenSource
from zerotrust.x509.sslcontext import client_ssl_context

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


@pytest.mark.parametrize("where", ["same-origin", "another-origin"])
def test_a_plain_client_over_the_zerotrust_transport_signs_a_proof_per_redirect(
    server: ZtHttpsServer,
    ca: DevCA,
    client_svid: X509Svid,
    issuer: TokenIssuer,
    holder: PrivateJWK,
    where: str,
) -> None:
    """httpx follows redirects below the auth, which cannot see them: ZeroTrustTransport, what
    the docs recommend for a client built by hand, signs each redirect's proof (none where
    httpx dropped the token)."""
    token = bound_token(issuer, holder)
    target = server.url("/new", host="127.0.0.1" if where == "another-origin" else "localhost")
    server.script("/old", Reply(307, {"Location": target}))
    server.script("/new", Reply(200))
    context = client_ssl_context(client_svid, ca.bundle, authorizer=match.exact(SERVER_ID))
    transport = ZeroTrustTransport(httpx.HTTPTransport(verify=context), retry=None)
    auth = ZeroTrustAuth(CachedTokenSource(lambda audience: token), audience=AUD, dpop_key=holder)
    with httpx.Client(auth=auth, transport=transport, follow_redirects=True) as client:
        assert client.post(server.url("/old"), content=b"{}").status_code == 200
    first, moved = server.requests()
    verified_proof(first, token)  # the proof names its request's method and URL
    if where == "another-origin":
        assert "authorization" not in moved.headers and "dpop" not in moved.headers
    else:
        verified_proof(moved, token)  # not a copy of the first one: the URL is another


def test_a_shared_ssl_context_dates_the_proofs_with_its_clock(
    mode: Mode,
    server: ZtHttpsServer,
    ca: DevCA,
    client_svid: X509Svid,
    issuer: TokenIssuer,
    holder: PrivateJWK,
) -> None:
    """A client has one time: with a shared TLS context, the context's clock checks the
    server's certificate and dates the proofs. It may be given as clock= again; another clock
    is refused, since the context would still check certificates with its own."""
    clock = FixedClock()
    clock.advance(600)  # ten minutes ahead of the system clock
    context = client_ssl_context(
        client_svid, ca.bundle, authorizer=match.exact(SERVER_ID), clock=clock
    )
    token = bound_token(issuer, holder)
    server.script("/", Reply(200))
    options: dict[str, object] = {
        "ssl_context": context,
        "token_source": CachedTokenSource(lambda audience: token),
        "audience": AUD,
        "dpop_key": holder,
    }
    send(mode, [("GET", server.url("/"))], **options)
    send(mode, [("GET", server.url("/"))], **options, clock=clock)
    dated = [claims_of(r.headers["dpop"])["iat"] for r in server.requests()]
    assert dated == [math.floor(clock.now().timestamp())] * 2
    for factory in (Client, AsyncClient):
        with pytest.raises(ConfigurationError, match="pass clock= to client_ssl_context"):
            factory(**options, clock=FixedClock())  # type: ignore[arg-type]


def test_proof_contents() -> None:
    key = PrivateJWK.generate("EdDSA", kid="k")
    clock = FixedClock(datetime(2030, 1, 2, 3, 4, 5, 600000, tzinfo=timezone.utc))
    proof = dpop_proof(
        key, method="put", url="https://API.example:443/a?b", access_token="t", clock=clock
    )
    header = dict(loads_object(b64url_decode(proof.split(".")[0])))
    assert header["typ"] == "dpop+jwt" and header["alg"] == "EdDSA"
    assert set(header["jwk"]) == {"kty", "crv", "x"}  # public members only, no kid  # type: ignore[arg-type]
    claims = claims_of(proof)
    assert claims["htm"] == "PUT" and claims["iat"] == 1893553445  # the clock's, whole seconds
    assert normalize_htu(str(claims["htu"])) == "https://api.example/a"
    assert "nonce" not in claims  # no nonce: no claim (not a null one)
    assert len(b64url_decode(str(claims["jti"]))) >= 16  # RFC 9449 §11.1: 128 bits or more
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
    with_nonce = dpop_proof(key, method="GET", url="https://api.example", nonce="n-1")
    assert claims_of(with_nonce)["nonce"] == "n-1"
    assert claims_of(with_nonce)["htu"] == "https://api.example/"  # the empty path is "/"
    sidecar = dpop_proof(key, method="GET", url="http://127.0.0.1:15001/a?q")
    assert claims_of(sidecar)["htu"] == "http://127.0.0.1:15001/a"
    for url in ("/relative", "ftp://api.example/a", "https:///a", "wss://api.example/a"):
        with pytest.raises(ConfigurationError, match="absolute http"):
            dpop_proof(key, method="GET", url=url)
    with pytest.raises(ConfigurationError):
        DPoPSigner("not a key")  # type: ignore[arg-type]
    assert repr(DPoPSigner(key)) == f"DPoPSigner({key!r})"  # the key's repr: no private part


def test_a_client_never_signs_proofs_with_a_key_servers_refuse() -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    large = PrivateJWK(rsa.generate_private_key(65537, 4104), algorithm="PS256")
    with pytest.raises(ConfigurationError, match="4096 bits"):
        DPoPSigner(large)
    largest = PrivateJWK(rsa.generate_private_key(65537, 4096), algorithm="PS256")
    proof = DPoPSigner(largest).proof("GET", "https://api.example/a")  # the bound is inclusive
    verify_dpop_proof(
        proof,
        method="GET",
        url="https://api.example/a",
        access_token=None,
        config=DPoPConfig(),
        now=time.time(),
    )


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


def test_a_nonce_challenge_after_a_re_mint_is_answered(
    mode: Mode,
    server: ZtHttpsServer,
    ca: DevCA,
    client_svid: X509Svid,
    issuer: TokenIssuer,
    holder: PrivateJWK,
) -> None:
    """A service that requires nonces refuses an invalid token without asking for one
    (RFC 9449 §9: the token is refused for itself); the re-minted token's proof is then asked
    for the nonce, and the request is sent a third time with it. Once the new token is known
    good, the next request needs no challenge."""
    verifier = TokenVerifier(issuer=ISS, audience=AUD, keys=issuer.jwks(), algorithms=["ES256"])
    nonces = DPoPNonces(bytes(32))
    rule = Rule(id="orders", callers=[Callers(spiffe_ids=[CLIENT_ID])])
    sink = MemorySink()
    guard = Guard(
        authenticator=Authenticator(tokens=verifier, dpop=DPoPConfig(nonces=nonces)),
        policy=Policy([rule], id="test"),
        audit=sink,
        store=MemoryStore(),
    )
    stranger = TokenIssuer(PrivateJWK.generate("ES256"), issuer=ISS)
    minted: list[str] = []

    def mint(audience: str) -> str:
        minted.append(bound_token(stranger if not minted else issuer, holder))
        return minted[-1]

    server.handle("/orders", guard_handler(guard))
    options = {
        **tls(ca, client_svid),
        "token_source": CachedTokenSource(mint),
        "audience": AUD,
        "dpop_key": holder,
        "retry": None,
    }
    first, second = send(mode, [("GET", server.url("/orders"))] * 2, **options)
    assert (first.status_code, second.status_code) == (200, 200)
    sent = server.requests("/orders")
    assert [r.headers["authorization"] for r in sent] == [
        f"DPoP {t}" for t in (minted[0], minted[1], minted[1], minted[1])
    ]
    assert [claims_of(r.headers["dpop"]).get("nonce") is not None for r in sent] == [
        False,  # refused for its token
        False,  # the new token, asked for a nonce
        True,
        True,  # the nonce the allowed answer handed out
    ]
    assert [e.reason for e in sink.events] == [
        "unknown_key",  # signed by a key the service does not know
        "use_dpop_nonce",
        "allowed_by_rule",
        "allowed_by_rule",
    ]


class NonceServer:
    """A resource server that wants DPoP proofs with its nonce (RFC 9449 §9): a proof without
    the current nonce gets 401 ``use_dpop_nonce`` and the nonce; an accepted one gets the next
    nonce in ``DPoP-Nonce``."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.issued = 0
        self.nonce = self.fresh()

    def fresh(self) -> str:
        self.issued += 1
        return f"n-{self.issued}.x~y_z"  # NQCHARs, including the unreserved punctuation

    def __call__(self, record: Recorded) -> Reply:
        proof = verified_proof(record, self.token)  # a proof verifies with or without nonce
        if claims_of(record.headers["dpop"]).get("nonce") != self.nonce:
            challenge = 'DPoP error="use_dpop_nonce", error_description="nonce required"'
            return Reply(401, {"WWW-Authenticate": challenge, "DPoP-Nonce": self.nonce})
        assert proof.jkt
        self.nonce = self.fresh()
        return Reply(200, {"DPoP-Nonce": self.nonce}, b"ok")


def nonces_sent(server: ZtHttpsServer, path: str) -> list[object]:
    return [claims_of(r.headers["dpop"]).get("nonce") for r in server.requests(path)]


def test_server_provided_nonces_go_into_the_next_proofs(
    mode: Mode,
    server: ZtHttpsServer,
    ca: DevCA,
    client_svid: X509Svid,
    issuer: TokenIssuer,
    holder: PrivateJWK,
) -> None:
    token = bound_token(issuer, holder)
    server.handle("/orders", NonceServer(token))
    server.script("/other", Reply(200))
    options = dpop_options(ca, client_svid, token, holder, retry=None)
    calls = [
        ("GET", server.url("/orders")),
        ("POST", server.url("/orders"), {"json": {"n": 1}}),
        ("GET", server.url("/other", host="127.0.0.1")),  # another origin: none of its nonces
        ("GET", server.url("/other")),
    ]
    responses = send(mode, calls, **options)
    assert [r.status_code for r in responses] == [200] * 4
    # the first proof had no nonce: challenged, sent once more with the nonce it was given;
    # the next request used the nonce the accepted one carried
    assert nonces_sent(server, "/orders") == [None, "n-1.x~y_z", "n-2.x~y_z"]
    assert [r.method for r in server.requests("/orders")] == ["GET", "GET", "POST"]
    assert nonces_sent(server, "/other") == [None, "n-3.x~y_z"]
    jtis = {claims_of(r.headers["dpop"])["jti"] for r in server.requests()}
    assert len(jtis) == 5  # every proof is new, the re-sent one too


def test_a_nonce_challenge_is_answered_once_and_only_when_it_can_be(
    mode: Mode,
    server: ZtHttpsServer,
    ca: DevCA,
    client_svid: X509Svid,
    issuer: TokenIssuer,
    holder: PrivateJWK,
) -> None:
    token = bound_token(issuer, holder)
    challenge = 'DPoP error="use_dpop_nonce"'
    server.script("/same", Reply(401, {"WWW-Authenticate": challenge, "DPoP-Nonce": "abc"}))
    server.script("/bad", Reply(401, {"WWW-Authenticate": challenge, "DPoP-Nonce": 'a"b'}))
    server.script("/plain", Reply(401, {"WWW-Authenticate": "DPoP", "DPoP-Nonce": "fine"}))
    server.script("/stream", Reply(401, {"WWW-Authenticate": challenge, "DPoP-Nonce": "s1"}))

    def body() -> Iterator[bytes]:
        yield b"chunk"

    options = dpop_options(ca, client_svid, token, holder, retry=None)
    calls: list[Call] = [
        ("GET", server.url("/same")),  # always the same nonce: sent twice, then the 401 stands
        ("GET", server.url("/same")),  # the nonce is known: sent with it, once
        ("GET", server.url("/bad")),  # not a nonce (a quote): nothing to retry with
        ("GET", server.url("/plain")),  # a nonce without the challenge: kept, not retried
        ("GET", server.url("/plain")),
    ]
    if mode == "sync":
        calls.append(("POST", server.url("/stream"), {"content": body()}))  # not replayable
    responses = send(mode, calls, **options)
    assert all(r.status_code == 401 for r in responses)
    assert nonces_sent(server, "/same") == [None, "abc", "abc"]
    assert nonces_sent(server, "/bad") == ["abc"]  # the origin's last good nonce
    assert nonces_sent(server, "/plain") == ["abc", "fine"]
    if mode == "sync":
        assert nonces_sent(server, "/stream") == ["fine"]


def test_a_rejected_bound_token_is_dropped_even_when_the_request_cannot_be_re_sent(
    mode: Mode,
    server: ZtHttpsServer,
    ca: DevCA,
    client_svid: X509Svid,
    issuer: TokenIssuer,
    holder: PrivateJWK,
) -> None:
    minted: list[str] = []

    def mint(audience: str) -> str:
        minted.append(audience)
        return bound_token(issuer, holder)

    invalid = Reply(401, {"WWW-Authenticate": 'DPoP error="invalid_token"'})
    server.script("/upload", invalid)
    server.script("/orders", Reply(200))
    options = {
        **dpop_options(ca, client_svid, "unused", holder, retry=None),
        "token_source": CachedTokenSource(mint),
    }
    calls: list[Call] = [
        ("POST", server.url("/upload"), {"content": streamed(mode, b"chunk")}),
        ("GET", server.url("/orders")),
    ]
    rejected, after = send(mode, calls, **options)
    assert rejected.status_code == 401 and after.status_code == 200
    assert server.count("/upload") == 1  # a streamed body is not sent again
    assert len(minted) == 2  # but the token it was refused is not sent again either
    [upload], [orders] = server.requests("/upload"), server.requests("/orders")
    assert upload.headers["authorization"] != orders.headers["authorization"]
    verified_proof(orders, orders.headers["authorization"].removeprefix("DPoP "))


def test_nonces_of_retried_and_redirected_responses_count(
    mode: Mode,
    server: ZtHttpsServer,
    ca: DevCA,
    client_svid: X509Svid,
    issuer: TokenIssuer,
    holder: PrivateJWK,
) -> None:
    """Retries and redirects are answered inside the transport: the nonces they carry are
    remembered and used by the proofs signed for the next attempt."""
    token = bound_token(issuer, holder)
    server.script("/busy", Reply(503, {"Retry-After": "0", "DPoP-Nonce": "r1"}), Reply(200))
    server.script("/moved", Reply(307, {"Location": "/target", "DPoP-Nonce": "m1"}))
    server.script("/target", Reply(200))
    options = dpop_options(
        ca, client_svid, token, holder, retry=RetryPolicy(backoff=0), follow_redirects=True
    )
    responses = send(mode, [("GET", server.url("/busy")), ("GET", server.url("/moved"))], **options)
    assert [r.status_code for r in responses] == [200, 200]
    assert nonces_sent(server, "/busy") == [None, "r1"]
    assert nonces_sent(server, "/moved") == ["r1"]
    assert nonces_sent(server, "/target") == ["m1"]


def test_an_answer_from_another_origin_says_nothing_about_this_one(
    mode: Mode,
    server: ZtHttpsServer,
    ca: DevCA,
    client_svid: X509Svid,
    issuer: TokenIssuer,
    holder: PrivateJWK,
) -> None:
    """A redirect to another origin answered: that origin never saw the token or a proof, so
    its nonce, its use_dpop_nonce challenge and its invalid_token are not this origin's."""
    token = bound_token(issuer, holder)
    minted: list[str] = []

    def mint(audience: str) -> str:
        minted.append(audience)
        return token

    other = server.url("/elsewhere", host="127.0.0.1")
    challenge = 'DPoP error="use_dpop_nonce", error="invalid_token"'
    server.script("/start", Reply(307, {"Location": other}))
    server.script("/elsewhere", Reply(401, {"WWW-Authenticate": challenge, "DPoP-Nonce": "b1"}))
    server.script("/again", Reply(200))
    options = {
        **dpop_options(ca, client_svid, token, holder, follow_redirects=True),
        "token_source": CachedTokenSource(mint),
    }
    calls = [("POST", server.url("/start"), {"json": {}}), ("GET", server.url("/again"))]
    first, second = send(mode, calls, **options)
    assert first.status_code == 401 and second.status_code == 200
    assert len(server.requests("/start")) == 1  # not sent again for another origin's challenge
    assert len(minted) == 1  # and its invalid_token did not drop this origin's token
    assert claims_of(server.requests("/again")[0].headers["dpop"]).get("nonce") is None


def test_a_nonce_challenge_to_the_get_after_a_post_is_learned_not_answered(
    mode: Mode,
    server: ZtHttpsServer,
    ca: DevCA,
    client_svid: X509Svid,
    issuer: TokenIssuer,
    holder: PrivateJWK,
) -> None:
    """A POST answered 303 was processed; httpx follows with a GET. That GET carried the
    proof, so the nonce its 401 brings is this origin's, but answering the challenge would
    send the POST again: the 401 is returned and the nonce goes into the next proofs."""
    token = bound_token(issuer, holder)
    challenge = {"WWW-Authenticate": 'DPoP error="use_dpop_nonce"', "DPoP-Nonce": "n1"}
    server.script("/charges", Reply(303, {"Location": "/charges/1"}))
    server.script("/charges/1", Reply(401, challenge), Reply(200))
    calls: list[Call] = [
        ("POST", server.url("/charges"), {"json": {"amount": 100}}),
        ("GET", server.url("/charges/1")),
    ]
    options = dpop_options(ca, client_svid, token, holder, follow_redirects=True)
    first, second = send(mode, calls, **options)
    assert first.status_code == 401 and second.status_code == 200
    assert [(r.method, r.path) for r in server.requests()] == [
        ("POST", "/charges"),
        ("GET", "/charges/1"),
        ("GET", "/charges/1"),
    ]
    assert nonces_sent(server, "/charges/1") == [None, "n1"]


def test_use_dpop_nonce_challenge_parsing() -> None:
    """RFC 9449 §9: a resource server asks for a nonce with a 401 whose DPoP challenge says
    error="use_dpop_nonce"; nothing else is that challenge."""
    from zerotrust.client._httpx_auth import use_dpop_nonce_challenge

    def check(status: int, *values: str) -> bool:
        headers = [("WWW-Authenticate", v) for v in values]
        return use_dpop_nonce_challenge(httpx.Response(status, headers=headers))

    assert check(401, 'DPoP error="use_dpop_nonce"')
    assert check(401, 'DPoP algs="ES256", error=use_dpop_nonce, error_description="x"')
    assert check(401, 'Bearer realm="a"', 'DPoP ERROR = "use_dpop_nonce"')
    assert not check(401, 'DPoP error="use_dpop_nonce_x"')
    assert not check(401, 'DPoP error_description="use_dpop_nonce"')
    for status in (400, 403):
        assert not check(status, 'DPoP error="use_dpop_nonce"')
    assert not check(401)


def test_a_nonce_challenge_in_another_status_is_not_answered(
    mode: Mode,
    server: ZtHttpsServer,
    ca: DevCA,
    client_svid: X509Svid,
    issuer: TokenIssuer,
    holder: PrivateJWK,
) -> None:
    token = bound_token(issuer, holder)
    challenge = {"WWW-Authenticate": 'DPoP error="use_dpop_nonce"', "DPoP-Nonce": "n1"}
    server.script("/", Reply(403, challenge), Reply(200))
    options = dpop_options(ca, client_svid, token, holder, retry=None)
    [response] = send(mode, [("GET", server.url("/"))], **options)
    assert response.status_code == 403 and server.count() == 1


def test_nonces_are_kept_per_origin_for_1024_origins() -> None:
    """An origin is scheme, host and port (RFC 6454): a nonce is never used for another port;
    the least recently noted origins are forgotten first."""
    from zerotrust.client._httpx_auth import _Nonces

    nonces = _Nonces()

    def note(url: str, nonce: str) -> None:
        nonces.note(httpx.Response(200, headers={"DPoP-Nonce": nonce}), httpx.URL(url))

    note("https://api.example:8443/a", "p8443")
    assert nonces.get(httpx.URL("https://api.example:8443/b")) == "p8443"
    for other in ("https://api.example:9443/", "https://api.example/", "http://api.example:8443/"):
        assert nonces.get(httpx.URL(other)) is None
    note("https://api.example:443/", "p443")
    assert nonces.get(httpx.URL("https://API.example/")) == "p443"
    for n in range(1022):
        note(f"https://h{n}.example/", "x")
    assert len(nonces._by_origin) == 1024
    note("https://api.example:8443/", "again")  # noted again: now the most recent
    note("https://new.example/", "new")  # one origin too many: the oldest goes
    assert len(nonces._by_origin) == 1024
    assert nonces.get(httpx.URL("https://api.example/")) is None
    assert nonces.get(httpx.URL("https://api.example:8443/")) == "again"
    assert nonces.get(httpx.URL("https://h0.example/")) == "x"
    assert nonces.get(httpx.URL("https://new.example/")) == "new"


def test_dpop_on_a_plain_httpx_client() -> None:
    """Without zerotrust's transport, the auth signs each proof and learns each nonce itself."""
    holder = PrivateJWK.generate("ES256")
    sent: list[object] = []

    def answer(request: httpx.Request) -> httpx.Response:
        proof = request.headers["dpop"]
        verify_dpop_proof(
            proof,
            method="GET",
            url=str(request.url),
            access_token="t0k",
            config=DPoPConfig(),
            now=time.time(),
        )
        sent.append(claims_of(proof).get("nonce"))
        if len(sent) == 2:
            challenge = {"WWW-Authenticate": 'DPoP error="use_dpop_nonce"', "DPoP-Nonce": "n2"}
            return httpx.Response(401, headers=challenge)
        return httpx.Response(200, headers={"DPoP-Nonce": f"n{len(sent)}"})

    auth = ZeroTrustAuth(StaticTokenSource("t0k"), audience=AUD, dpop_key=holder)
    with httpx.Client(transport=httpx.MockTransport(answer), auth=auth) as client:
        statuses = [client.get("https://api.example/orders").status_code for _ in range(3)]
    assert statuses == [200] * 3
    # learned from a 200, then a challenge answered once, then learned from its answer
    assert sent == [None, "n1", "n2", "n3"]


def test_an_answer_from_another_origin_to_the_nonce_retry_says_nothing_either(
    mode: Mode,
    server: ZtHttpsServer,
    ca: DevCA,
    client_svid: X509Svid,
    issuer: TokenIssuer,
    holder: PrivateJWK,
) -> None:
    """The request sent once more with the nonce an origin asked for may be redirected to
    another origin: that origin's invalid_token and nonce are not this origin's either."""
    minted: list[str] = []

    def mint(audience: str) -> str:
        minted.append(audience)
        return bound_token(issuer, holder)

    other = server.url("/elsewhere", host="127.0.0.1")
    nonce_challenge = {"WWW-Authenticate": 'DPoP error="use_dpop_nonce"', "DPoP-Nonce": "n1"}
    invalid = {"WWW-Authenticate": 'DPoP error="invalid_token"', "DPoP-Nonce": "b1"}
    server.script("/start", Reply(401, nonce_challenge), Reply(307, {"Location": other}))
    server.script("/elsewhere", Reply(401, invalid))
    server.script("/again", Reply(200))
    options = {
        **dpop_options(ca, client_svid, "unused", holder, follow_redirects=True, retry=None),
        "token_source": CachedTokenSource(mint),
    }
    calls = [("GET", server.url("/start")), ("GET", server.url("/again"))]
    first, second = send(mode, calls, **options)
    assert first.status_code == 401 and second.status_code == 200
    assert nonces_sent(server, "/start") == [None, "n1"]  # not sent a third time
    assert len(minted) == 1  # the token was not dropped for another origin's invalid_token
    assert nonces_sent(server, "/again") == ["n1"]  # nor its nonce taken for this origin's
