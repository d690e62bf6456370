"""zerotrust's DPoP resource-server side against an independent RFC 9449 client:
``requests-oauth2client`` (its ``DPoPKey`` signs the proofs, its ``DPoPToken`` attaches the
token and the proof to ``requests`` calls and answers a resource server's ``use_dpop_nonce``
challenge). The server is FastAPI behind the zerotrust middleware, served by uvicorn with
direct mTLS over loopback; the client presents its X509-SVID from files as any workload would.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import jwskate
import pytest
import requests
from binapy import BinaPy
from requests_oauth2client import DPoPKey, DPoPToken
from requests_oauth2client.dpop import MissingDPoPNonce, validate_dpop_proof

from tests.adapters.asgi._servers import uvicorn_server
from tests.client.conftest import CLIENT_ID
from tests.client.test_httpx_against_uvicorn import AUDIENCE, World
from zerotrust import DPoPConfig, DPoPNonces, FixedClock, X509Svid, match, server_ssl_context
from zerotrust.dev import DevCA
from zerotrust.httpx import dpop_proof
from zerotrust.tokens import PrivateJWK

pytestmark = pytest.mark.network

TIMEOUT = 30  # generous: the machine is shared


@pytest.fixture(scope="module")
def tls_files(
    ca: DevCA, client_svid: X509Svid, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """What ``requests`` reads: the bundle to trust, the client's chain and key."""
    where = tmp_path_factory.mktemp("svid")
    (where / "bundle.pem").write_bytes(ca.bundle.to_pem())
    client_svid.save(where / "web.pem", where / "web.key")
    return {
        "verify": str(where / "bundle.pem"),
        "cert": (str(where / "web.pem"), str(where / "web.key")),
    }


class Served:
    """A running server for ``world`` and a ``requests`` session that trusts it."""

    def __init__(self, world: World, port: int, tls: dict[str, Any]) -> None:
        self.world = world
        self.base = f"https://localhost:{port}"
        self.session = requests.Session()
        # the environment's CA bundle and proxies would override the session's own settings
        self.session.trust_env = False
        self.session.verify = tls["verify"]
        self.session.cert = tls["cert"]

    def token(self, key: DPoPKey) -> DPoPToken:
        """A token bound to ``key`` (``cnf.jkt`` its RFC 7638 thumbprint as the library
        computes it), as the library represents an AS's ``token_type=DPoP`` answer."""
        access_token = self.world.issuer.issue(
            subject=CLIENT_ID,
            audience=AUDIENCE,
            ttl=600,
            extra_claims={"cnf": {"jkt": key.dpop_jkt}},
        )
        return DPoPToken(
            access_token=access_token, token_type="DPoP", expires_in=600, _dpop_key=key
        )

    def raw(self, method: str, path: str, token: DPoPToken, proof: str) -> requests.Response:
        """A request with the given proof, outside the library's auth handler."""
        return self.session.request(
            method,
            self.base + path,
            headers={"Authorization": f"DPoP {token.access_token}", "DPoP": proof},
            timeout=TIMEOUT,
        )

    def reasons(self) -> list[str]:
        return [e.reason for e in self.world.sink.events]


Serve = Callable[[World], Served]


def ath(token: DPoPToken) -> str:
    return BinaPy(token.access_token).to("sha256").to("b64u").decode()


@pytest.fixture
def serve(ca: DevCA, server_svid: X509Svid, tls_files: dict[str, Any]) -> Iterator[Serve]:
    """Starts a server for a ``World`` (stopped, with its session closed, after the test)."""
    context = server_ssl_context(server_svid, ca.bundle, authorizer=match.member_of("example.org"))
    with ExitStack() as stack:

        def start(world: World) -> Served:
            app = world.app()

            @app.get("/items/{name:path}")
            async def item(name: str) -> dict[str, str]:
                return {"name": name}

            port = stack.enter_context(uvicorn_server(app, context, "h11"))
            served = Served(world, port, tls_files)
            stack.callback(served.session.close)
            return served

        yield start


@pytest.mark.parametrize("alg", ["ES256", "PS256", "EdDSA"])
def test_a_bound_token_is_accepted_with_the_librarys_proofs(
    ca: DevCA, serve: Serve, alg: str
) -> None:
    served = serve(World(ca))
    token = served.token(DPoPKey.generate(alg=alg))
    got = served.session.get(f"{served.base}/whoami", auth=token, timeout=TIMEOUT)
    posted = served.session.post(
        f"{served.base}/echo?x=1", json={"a": 1}, auth=token, timeout=TIMEOUT
    )
    assert got.status_code == 200, got.text
    assert got.json()["proven_by"] == "dpop" and got.json()["id"] == CLIENT_ID
    assert posted.status_code == 200, posted.text
    assert served.world.echoed == [b'{"a": 1}']
    assert "nonce" not in claims(sent_proof(got))
    assert served.reasons() == ["allowed_by_rule", "allowed_by_rule"]


# Not "/items/%3B%3D" (nor %2C, %21, %40, %3A): the library's furl decodes those in the htu
# ("/items/;="), which RFC 3986 2.2 says is another URI, and the service refuses the proof.
PATHS = [
    "/items/a b?q=1&r=%2F",
    "/items/%C3%A4/~x;y=1",
    "/items/a%2Fb",
    "/items/a|b^c",
    "/items/a%25b",
]


def test_the_librarys_htu_matches_the_path_as_the_application_received_it(
    ca: DevCA, serve: Serve
) -> None:
    """The library writes the ``htu`` from the URL ``requests`` sends, without query and
    fragment (re-serialised by ``furl``): the same URL after RFC 3986 normalisation."""
    served = serve(World(ca))
    token = served.token(DPoPKey.generate())
    for path in PATHS:
        answer = served.session.get(served.base + path, auth=token, timeout=TIMEOUT)
        assert answer.status_code == 200, (path, answer.text)
    assert served.reasons() == ["allowed_by_rule"] * len(PATHS)


def test_the_librarys_htm_for_other_methods(ca: DevCA, serve: Serve) -> None:
    """The service checks the proof before routing: whatever the application answers, the
    library's ``htm`` for each method is the request's."""
    served = serve(World(ca))
    token = served.token(DPoPKey.generate())
    methods = ["HEAD", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND"]
    for method in methods:
        answer = served.session.request(
            method, f"{served.base}/items/x", auth=token, timeout=TIMEOUT
        )
        assert answer.status_code in (200, 405), (method, answer.text)
    assert served.reasons() == ["allowed_by_rule"] * len(methods)


def challenge(response: requests.Response) -> tuple[str, dict[str, str]]:
    """The scheme and the auth-params of the one ``WWW-Authenticate`` challenge."""
    value = response.headers["WWW-Authenticate"]
    scheme, _, params = value.partition(" ")
    parsed = dict(re.findall(r'([A-Za-z_]+)="([^"]*)"', params))
    assert re.fullmatch(r'([A-Za-z_]+="[^"]*")(, [A-Za-z_]+="[^"]*")*', params), value
    return scheme, parsed


def sent_proof(response: requests.Response) -> str:
    """The proof the library attached to the request that got ``response``."""
    proof = response.request.headers["DPoP"]
    return proof.decode() if isinstance(proof, bytes) else proof


def claims(proof: str) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(BinaPy(proof.split(".")[1]).decode_from("b64u"))
    return payload


def test_the_librarys_handler_answers_a_nonce_challenge_and_keeps_the_nonce(
    ca: DevCA, serve: Serve
) -> None:
    """RFC 9449 9: the first proof (no nonce) is refused with ``use_dpop_nonce``; the library
    takes the ``DPoP-Nonce``, signs a new proof with it and sends the request once more, and
    puts the nonce in its next proofs without being asked again."""
    served = serve(World(ca, dpop=DPoPConfig(nonces=DPoPNonces(secrets.token_bytes(32)))))
    key = DPoPKey.generate()
    token = served.token(key)
    first = served.session.get(f"{served.base}/whoami", auth=token, timeout=TIMEOUT)
    posted = served.session.post(f"{served.base}/echo", json={"n": 1}, auth=token, timeout=TIMEOUT)
    assert first.status_code == 200 and posted.status_code == 200, (first.text, posted.text)
    assert key.rs_nonce is not None
    assert claims(sent_proof(first))["nonce"] == key.rs_nonce
    assert claims(sent_proof(posted))["nonce"] == key.rs_nonce
    assert served.reasons() == ["use_dpop_nonce", "allowed_by_rule", "allowed_by_rule"]


def test_the_nonce_challenge_is_what_rfc_9449_says(ca: DevCA, serve: Serve) -> None:
    """RFC 9449 7.1 and 9: a 401 with a ``DPoP`` challenge naming the accepted ``algs`` and
    ``error="use_dpop_nonce"``, the nonce in ``DPoP-Nonce`` (``1*NQCHAR``), the error in the
    body too; a proof the library signs with that nonce (taken by its own
    ``handle_rs_provided_dpop_nonce``) is accepted."""
    served = serve(World(ca, dpop=DPoPConfig(nonces=DPoPNonces(secrets.token_bytes(32)))))
    key = DPoPKey.generate(alg="EdDSA")
    token = served.token(key)
    url = f"{served.base}/whoami"
    refused = served.raw("GET", "/whoami", token, str(key.proof("GET", url, ath=ath(token))))
    assert refused.status_code == 401
    scheme, params = challenge(refused)
    assert scheme == "DPoP"
    assert params == {
        "realm": "api",
        "algs": "ES256 ES384 EdDSA PS256 RS256",
        "error": "use_dpop_nonce",
    }
    nonce = refused.headers["DPoP-Nonce"]
    assert re.fullmatch(r"[\x21\x23-\x5b\x5d-\x7e]+", nonce)  # NQCHAR: no space, quote, backslash
    assert refused.headers["Content-Type"] == "application/json"
    assert refused.json()["error"] == "use_dpop_nonce"

    key.handle_rs_provided_dpop_nonce(refused)
    assert key.rs_nonce == nonce
    accepted = served.raw("GET", "/whoami", token, str(key.proof("GET", url, ath=ath(token))))
    assert accepted.status_code == 200, accepted.text
    assert "DPoP-Nonce" not in accepted.headers  # the nonce is the current one
    assert served.reasons() == ["use_dpop_nonce", "allowed_by_rule"]


def test_a_nonce_renewed_on_a_success_or_replaced_by_a_challenge(ca: DevCA, serve: Serve) -> None:
    """RFC 9449 8.2: a success whose proof carried the previous window's nonce brings the
    current one in ``DPoP-Nonce``. The library reads a resource server's nonce only from a
    challenge, so it keeps the older nonce until that one goes stale, and is then challenged
    once: both are legitimate, and the client is never refused."""
    clock = FixedClock()
    world = World(
        ca, dpop=DPoPConfig(nonces=DPoPNonces(secrets.token_bytes(32), lifetime=60)), clock=clock
    )
    served = serve(world)
    key = DPoPKey.generate(iat_generator=lambda: int(clock.now().timestamp()))
    token = served.token(key)
    url = f"{served.base}/whoami"
    assert served.session.get(url, auth=token, timeout=TIMEOUT).status_code == 200
    held = key.rs_nonce
    clock.advance(60)  # the next window: the held nonce is still accepted
    renewed = served.session.get(url, auth=token, timeout=TIMEOUT)
    assert renewed.status_code == 200
    assert renewed.headers.get("DPoP-Nonce") not in (None, held)
    clock.advance(60)  # the window after: the held nonce is stale
    again = served.session.get(url, auth=token, timeout=TIMEOUT)
    assert again.status_code == 200
    assert key.rs_nonce not in (None, held)
    assert served.reasons()[:3] == ["use_dpop_nonce", "allowed_by_rule", "allowed_by_rule"]
    assert served.reasons()[3:] in (["use_dpop_nonce", "allowed_by_rule"], ["allowed_by_rule"])


def test_proofs_for_another_request_and_replayed_proofs_are_refused(
    ca: DevCA, serve: Serve
) -> None:
    """Proofs the library signs (with the service's nonce) for another URL, another origin,
    another method or another token, and a proof it sent once already, are refused as
    ``invalid_dpop_proof`` (RFC 9449 4.3, 11.1): a 401 ``DPoP`` challenge, without a nonce."""
    served = serve(World(ca, dpop=DPoPConfig(nonces=DPoPNonces(secrets.token_bytes(32)))))
    key = DPoPKey.generate()
    token = served.token(key)
    url = f"{served.base}/whoami"
    sent = served.session.get(url, auth=token, timeout=TIMEOUT)  # challenged, then accepted
    assert sent.status_code == 200, sent.text
    other_origin = url.replace("localhost", "127.0.0.1")
    proofs = [
        str(key.proof("GET", f"{served.base}/echo", ath=ath(token))),  # another path
        str(key.proof("GET", other_origin, ath=ath(token))),  # another origin
        str(key.proof("POST", url, ath=ath(token))),  # another method
        str(key.proof("get", url, ath=ath(token))),  # htm is case-sensitive
        str(key.proof("GET", url, ath=ath(served.token(key)))),  # another token's hash
        sent_proof(sent),  # replayed
    ]
    for proof in proofs:
        refused = served.raw("GET", "/whoami", token, proof)
        assert refused.status_code == 401, refused.text
        assert challenge(refused) == (
            "DPoP",
            {
                "realm": "api",
                "algs": "ES256 ES384 EdDSA PS256 RS256",
                "error": "invalid_dpop_proof",
            },
        )
        assert refused.json()["error"] == "invalid_dpop_proof"
        assert "DPoP-Nonce" not in refused.headers
    refusals = ["invalid_dpop_proof"] * (len(proofs) - 1) + ["dpop_proof_replayed"]
    assert served.reasons() == ["use_dpop_nonce", "allowed_by_rule", *refusals]


def test_a_refusal_for_another_reason_is_not_taken_for_a_nonce_challenge(
    ca: DevCA, serve: Serve
) -> None:
    """The library answers any 401 ``DPoP`` challenge as a nonce request: given a refusal
    without ``DPoP-Nonce`` (a token bound to another key, ``invalid_token``) it raises
    ``MissingDPoPNonce`` rather than returning the 401. Either way the request is not sent
    again: the service saw it once, and refused it."""
    served = serve(World(ca, dpop=DPoPConfig(nonces=DPoPNonces(secrets.token_bytes(32)))))
    stolen = served.token(DPoPKey.generate())
    thief = DPoPToken(
        access_token=stolen.access_token, token_type="DPoP", _dpop_key=DPoPKey.generate()
    )
    try:
        answer = served.session.get(f"{served.base}/whoami", auth=thief, timeout=TIMEOUT)
    except MissingDPoPNonce as exc:
        answer = exc.response
    assert answer.status_code == 401
    assert challenge(answer)[1]["error"] == "invalid_token"
    assert "DPoP-Nonce" not in answer.headers
    assert served.reasons() == ["token_binding_mismatch"]


@pytest.mark.parametrize("alg", ["ES256", "ES384", "PS256", "RS256", "EdDSA"])
def test_zerotrusts_proofs_pass_the_librarys_validator(alg: str) -> None:
    """The other way round: a proof by ``zerotrust.httpx.dpop_proof`` passes the library's
    ``validate_dpop_proof`` (typ, jwk, signature, iat, jti, htm, htu without the query and
    fragment, ath, nonce), and its thumbprint is the library's for the same key."""
    holder = PrivateJWK.generate(alg)
    proof = dpop_proof(
        holder,
        method="POST",
        url="https://api.example/orders/7?expand=1#top",
        access_token="token-value",
        nonce="n-1",
    )
    validated = validate_dpop_proof(
        proof,
        htm="POST",
        htu="https://api.example/orders/7",
        ath=BinaPy("token-value").to("sha256").to("b64u").decode(),
        nonce="n-1",
        algs=[alg],  # not alg=: the library passes it on with algs=(), and jwskate ignores it
    )
    assert validated.headers["jwk"] == {
        k: v for k, v in holder.public().to_public_dict().items() if k in validated.headers["jwk"]
    }
    assert jwskate.Jwk(validated.headers["jwk"]).thumbprint() == holder.thumbprint()


@pytest.mark.parametrize("client", ["requests", "httpx"])
def test_a_proof_for_an_iri_names_the_uri_the_request_is_sent_to(client: str) -> None:
    """``htu`` is the target URI (RFC 9449 4.2), ASCII: given an IRI, the proof names the URI
    that ``requests`` and httpx send the request to (the host in A-labels, the rest
    percent-encoded), which the library's validator and zerotrust's verifier both accept."""
    import httpx

    from zerotrust.authn.binding import verify_dpop_proof

    iri = "https://bücher.example/café menu/7?q=ä#top"
    sent = str(
        requests.Request("GET", iri).prepare().url
        if client == "requests"
        else httpx.Request("GET", iri).url
    )
    htu = sent.partition("?")[0]
    assert htu == "https://xn--bcher-kva.example/caf%C3%A9%20menu/7"
    holder = PrivateJWK.generate("ES256")
    proof = dpop_proof(holder, method="GET", url=iri, access_token="token-value")
    validated = validate_dpop_proof(
        proof,
        htm="GET",
        htu=htu,
        ath=BinaPy("token-value").to("sha256").to("b64u").decode(),
        algs=["ES256"],
    )
    assert validated.claims["htu"] == htu
    checked = verify_dpop_proof(
        proof,
        method="GET",
        url=sent.partition("#")[0],  # a request carries no fragment
        access_token="token-value",
        config=DPoPConfig(),
        now=validated.claims["iat"],
    )
    assert checked.jkt == holder.thumbprint()
