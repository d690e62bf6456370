"""OAuth2 token sources against a loopback HTTPS token endpoint."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
import ssl
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests._https import HttpsServer, Recorded, Route, json_route
from zerotrust import FixedClock
from zerotrust.dev import DevCA
from zerotrust.errors import (
    AuthenticationError,
    ConfigurationError,
    SourceError,
    TokenError,
)
from zerotrust.sources import ClientCredentialsTokenSource, TokenExchangeTokenSource
from zerotrust.tokens import PrivateJWK, TokenIssuer, TokenVerifier
from zerotrust.tokens.outgoing import StaticTokenSource, TokenSource

pytestmark = pytest.mark.network

SECRET = "p@ss word+/"  # characters that must be form-encoded inside HTTP Basic
ACCESS = "urn:ietf:params:oauth:token-type:access_token"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"


def issuing(delay: float = 0.0, **fields: Any) -> Route:
    counter = itertools.count(1)

    def handler(record: Recorded) -> tuple[int, dict[str, str], bytes]:
        body = {"access_token": f"at-{next(counter)}", "token_type": "Bearer", "expires_in": 300}
        body.update(fields)
        body = {k: v for k, v in body.items() if v is not None}
        return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()

    return Route(handler=handler, delay=delay)


@pytest.fixture
def server(ca: DevCA) -> Iterator[HttpsServer]:
    with HttpsServer(ca) as running:
        running.route("/token", issuing())
        yield running


def credentials(
    server: HttpsServer, clock: FixedClock, **options: Any
) -> ClientCredentialsTokenSource:
    options.setdefault("client_secret", SECRET)
    options.setdefault("verify", server.client_context)
    return ClientCredentialsTokenSource(
        server.url("/token"), client_id="my:client", clock=clock, **options
    )


def test_client_secret_basic(server: HttpsServer, clock: FixedClock) -> None:
    with credentials(server, clock, scopes=["read", "write"]) as source:
        assert isinstance(source, TokenSource)
        assert source.token("https://api.example") == "at-1"
    [request] = server.requests("/token")
    assert request.method == "POST"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert request.headers["accept"] == "application/json"
    assert request.form == {
        "grant_type": "client_credentials",
        "audience": "https://api.example",
        "scope": "read write",
    }
    expected = base64.b64encode(b"my%3Aclient:p%40ss+word%2B%2F").decode()
    assert request.headers["authorization"] == f"Basic {expected}"
    assert SECRET not in repr(source)


def test_client_secret_post_and_resource_parameter(server: HttpsServer, clock: FixedClock) -> None:
    with credentials(server, clock, secret_method="post", audience_param="resource") as source:
        source.token("https://api.example/")
    [request] = server.requests("/token")
    assert "authorization" not in request.headers
    assert request.form == {
        "grant_type": "client_credentials",
        "resource": "https://api.example/",
        "client_id": "my:client",
        "client_secret": SECRET,
    }


@pytest.mark.parametrize("as_issuer", [False, True])
def test_private_key_jwt(server: HttpsServer, clock: FixedClock, as_issuer: bool) -> None:
    key = PrivateJWK.generate("ES256", kid="client-key-1")
    signer: TokenIssuer | PrivateJWK = TokenIssuer(key, issuer="my:client") if as_issuer else key
    with credentials(server, clock, client_secret=None, private_key_jwt=signer) as source:
        source.token("https://api.example")
        source.token("https://other.example")
    first, second = server.requests("/token")
    assert "authorization" not in first.headers
    form = first.form
    assert form["client_id"] == "my:client"
    assert form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    assert set(form) == {
        "grant_type",
        "audience",
        "client_id",
        "client_assertion_type",
        "client_assertion",
    }
    verifier = TokenVerifier(
        issuer="my:client",
        audience=server.url("/token"),
        keys=key.public(),
        algorithms=["ES256"],
    )
    claims = verifier.verify(form["client_assertion"])
    assert claims.subject == "my:client"
    assert claims.jti
    assert claims.issued_at is not None
    assert (claims.expires_at - claims.issued_at).total_seconds() == 60
    assert claims.header["kid"] == "client-key-1"
    assert verifier.verify(second.form["client_assertion"]).jti != claims.jti  # fresh each time


def test_private_key_jwt_assertion_audience(server: HttpsServer, clock: FixedClock) -> None:
    """``assertion_audience`` (the authorization server's issuer identifier) replaces the
    token endpoint as the assertion's only audience."""
    key = PrivateJWK.generate("ES256")
    with credentials(
        server,
        clock,
        client_secret=None,
        private_key_jwt=key,
        assertion_audience="https://issuer.example",
    ) as source:
        source.token("https://api.example")
    [request] = server.requests("/token")
    assertion = request.form["client_assertion"]

    def verifier(audience: str) -> TokenVerifier:
        return TokenVerifier(
            issuer="my:client", audience=audience, keys=key.public(), algorithms=["ES256"]
        )

    assert verifier("https://issuer.example").verify(assertion).audience == (
        "https://issuer.example",
    )
    with pytest.raises(TokenError):
        verifier(server.url("/token")).verify(assertion)


def test_private_key_jwt_issuer_must_be_the_client_id(server: HttpsServer) -> None:
    issuer = TokenIssuer(PrivateJWK.generate("ES256"), issuer="someone-else")
    with pytest.raises(ConfigurationError, match="issuer=client_id"):
        ClientCredentialsTokenSource(
            server.url("/token"), client_id="my:client", private_key_jwt=issuer
        )


def test_mtls_client_authentication(ca: DevCA, clock: FixedClock, tmp_path: Path) -> None:
    svid = ca.issue_svid("spiffe://example.org/client")
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    svid.save(cert, key)
    with HttpsServer(ca, client_ca=ca) as server:
        server.route("/token", issuing())
        ctx = ssl.create_default_context(cadata=ca.bundle.to_pem().decode())
        ctx.load_cert_chain(cert, key)
        source = ClientCredentialsTokenSource(
            server.url("/token"), client_id="my:client", mtls=ctx, clock=clock
        )
        with source:
            assert source.token("https://api.example") == "at-1"
        [request] = server.requests("/token")
        assert request.peer_cert is not None
        assert "authorization" not in request.headers
        assert request.form == {
            "grant_type": "client_credentials",
            "audience": "https://api.example",
            "client_id": "my:client",
        }
        no_cert = ClientCredentialsTokenSource(
            server.url("/token"),
            client_id="my:client",
            mtls=ssl.create_default_context(cadata=ca.bundle.to_pem().decode()),
        )
        with no_cert, pytest.raises(SourceError, match="unavailable"):
            no_cert.token("https://api.example")


def test_caching_and_refresh_before_expiry(server: HttpsServer, clock: FixedClock) -> None:
    with credentials(server, clock) as source:
        assert source.token("a") == "at-1"
        assert source.token("a") == "at-1"
        assert source.token("b") == "at-2"
        clock.advance(239)  # expires_in 300: refreshed 60 s before
        assert source.token("a") == "at-1"
        clock.advance(2)
        assert source.token("a") == "at-3"
    assert server.count("/token") == 3


def test_invalidate_and_clear_request_new_tokens(server: HttpsServer, clock: FixedClock) -> None:
    """What an HTTP client does after ``invalid_token``: that audience's token is requested
    again, the others stay cached; ``clear()`` drops them all."""
    with credentials(server, clock) as source:
        assert (source.token("a"), source.token("b")) == ("at-1", "at-2")
        source.invalidate("a")
        assert (source.token("a"), source.token("b")) == ("at-3", "at-2")
        source.invalidate("a", token="at-1")  # a late refusal of the token already replaced
        assert source.token("a") == "at-3"
        source.clear()
        assert (source.token("b"), source.token("a")) == ("at-4", "at-5")
        for audience in ("", None, 7):
            with pytest.raises(ConfigurationError, match="audience must be a non-empty string"):
                source.invalidate(audience)  # type: ignore[arg-type]
    assert server.count("/token") == 5


def test_refresh_failure_keeps_the_valid_token(server: HttpsServer, clock: FixedClock) -> None:
    with credentials(server, clock) as source:
        token = source.token("a")
        expires = clock.now() + timedelta(seconds=300)  # expires_in
        assert source.expires_at("a", token) == expires
        assert source.expires_at("b", token) is None and source.expires_at("a", "other") is None
        server.route("/token", Route(status=503))
        clock.advance(250)
        assert source.token("a") == token
        assert source.expires_at("a", token) == expires  # handed out until then
        clock.advance(60)
        with pytest.raises(SourceError, match="HTTP 503"):
            source.token("a")


def test_single_flight_threads_and_tasks(server: HttpsServer, clock: FixedClock) -> None:
    server.route("/token", issuing(delay=0.3))
    results: list[str] = []
    with credentials(server, clock) as source:
        barrier = threading.Barrier(50)

        def call() -> None:
            barrier.wait()
            results.append(source.token("a"))

        threads = [threading.Thread(target=call) for _ in range(50)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)

        async def main() -> list[str]:
            return list(await asyncio.gather(*(source.token_async("b") for _ in range(50))))

        tasks = asyncio.run(main())
    assert results == ["at-1"] * 50
    assert tasks == ["at-2"] * 50
    assert server.count("/token") == 2


def test_async_parity(server: HttpsServer, clock: FixedClock) -> None:
    source = credentials(server, clock, scopes=["read"])

    async def main() -> None:
        assert await source.token_async("a") == "at-1"
        assert await source.token_async("a") == "at-1"
        server.route("/token", json_route({"error": "invalid_client"}, status=401))
        with pytest.raises(AuthenticationError, match="invalid_client"):
            await source.token_async("b")

    asyncio.run(main())
    assert server.requests("/token")[0].form["scope"] == "read"


ERRORS = [
    (
        json_route({"error": "invalid_client", "error_description": "bad secret"}, status=401),
        AuthenticationError,
        "[invalid_client]",
    ),
    (json_route({"error": "invalid_client"}, status=400), AuthenticationError, "[invalid_client]"),
    (
        json_route({"error": "unauthorized_client"}, status=400),
        AuthenticationError,
        "[unauthorized_client]",
    ),
    (json_route({"error": "invalid_grant"}, status=400), TokenError, "[invalid_grant]"),
    (json_route({"error": "invalid_scope"}, status=400), SourceError, "[invalid_scope]"),
    (json_route({"error": "bad\ncode"}, status=400), SourceError, "HTTP 400"),
    # an endpoint may echo what it was sent: only registered codes are repeated
    (json_route({"error": SECRET}, status=400), SourceError, "[unregistered error]"),
    (json_route({"error": "x" * 20}, status=500), SourceError, "[unregistered error]"),
    (Route(status=401), AuthenticationError, "HTTP 401"),
    (Route(status=500, body=b"stack trace"), SourceError, "HTTP 500"),
    (Route(redirect="https://localhost:1/token"), SourceError, "redirect"),
    (Route(body=b"not json"), SourceError, "not a JSON object"),
    (json_route({"token_type": "Bearer"}), SourceError, "access_token"),
    (
        json_route({"access_token": "two words", "token_type": "Bearer"}),
        SourceError,
        "access_token",
    ),
    (json_route({"access_token": "at", "token_type": "mac"}), SourceError, "token_type"),
    (json_route({"access_token": "at"}), SourceError, "token_type"),
    (
        json_route({"access_token": "at", "token_type": "Bearer", "expires_in": -1}),
        SourceError,
        "expires_in",
    ),
    (
        json_route({"access_token": "at", "token_type": "Bearer", "expires_in": True}),
        SourceError,
        "expires_in",
    ),
    (
        json_route({"access_token": "at", "token_type": "Bearer", "expires_in": "soon"}),
        SourceError,
        "expires_in",
    ),
    (Route(body=b'{"access_token": "' + b"a" * 70000 + b'"}'), SourceError, "larger than"),
]


@pytest.mark.parametrize(("route", "error", "text"), ERRORS)
def test_error_responses_are_typed_and_safe(
    server: HttpsServer, clock: FixedClock, route: Route, error: type[Exception], text: str
) -> None:
    server.route("/token", route)
    with credentials(server, clock) as source, pytest.raises(error) as caught:
        source.token("a")
    message = str(caught.value)
    assert text in message
    assert type(caught.value) is error
    for secret in (SECRET, "bad secret", "stack trace", "my%3Aclient"):
        assert secret not in message


@pytest.mark.parametrize(
    ("expires_in", "lifetime"),
    [
        ("0000000000300", 300),
        (10**9, 365 * 86400),
        ("9" * 40, 365 * 86400),
        ("9" * 5000, 365 * 86400),  # more digits than int() reads: still a long lifetime
        (2.5, 2.5),
        (1, 1),
        (0.5, 0.5),
    ],
)
def test_any_positive_expires_in_is_read_and_long_ones_are_capped(
    clock: FixedClock, expires_in: object, lifetime: float
) -> None:
    """RFC 6749 5.1 sets no upper bound: a long lifetime is kept, capped at a year."""
    from zerotrust.sources._oauth2_flow import parse_token_response
    from zerotrust.sources._sansio import HttpResponse

    body = {"access_token": "at", "token_type": "Bearer", "expires_in": expires_in}
    response = HttpResponse(200, body=json.dumps(body).encode())
    minted = parse_token_response(response, clock=clock, issued_token_type=None)
    assert minted.expires_at is not None
    assert (minted.expires_at - clock.now()).total_seconds() == lifetime


def test_expires_in_counts_from_when_the_request_was_sent(clock: FixedClock) -> None:
    """RFC 6749 5.1: expires_in counts from when the response was made, no earlier than the
    request: an answer that took 8 s to arrive has 8 s less left, not 8 s more."""
    from zerotrust.sources._oauth2_flow import token_flow
    from zerotrust.sources._sansio import HttpRequest, HttpResponse

    sent = clock.now()
    flow = token_flow(HttpRequest("POST", "https://as.example/token", {}), clock=clock)
    next(flow)
    clock.advance(8)  # the answer is on its way
    body = {"access_token": "at", "token_type": "Bearer", "expires_in": 10}
    with pytest.raises(StopIteration) as done:
        flow.send(HttpResponse(200, body=json.dumps(body).encode()))
    minted = done.value.value
    assert minted.expires_at == sent + timedelta(seconds=10)


def test_token_type_is_case_insensitive_and_dpop_is_refused(
    server: HttpsServer, clock: FixedClock
) -> None:
    """These requests carry no DPoP proof: a DPoP-bound token could not be used as one, and a
    client must not use a token type it does not understand (RFC 6749 7.1)."""
    server.route("/token", issuing(token_type="bEaReR", expires_in="3600"))
    with credentials(server, clock) as source:
        assert source.token("a") == "at-1"
    server.route("/token", issuing(token_type="DPoP", expires_in="3600"))
    with credentials(server, clock) as source, pytest.raises(SourceError, match="Bearer"):
        source.token("a")


def test_a_lifetime_sent_as_a_string_counts_by_its_value(
    server: HttpsServer, clock: FixedClock
) -> None:
    server.route("/token", issuing(expires_in="0" * 40 + "5"))
    with credentials(server, clock) as source:
        assert source.token("a") == "at-1"
        clock.advance(6)  # five seconds, not the longest lifetime a long string could mean
        assert source.token("a") == "at-2"
    server.route("/token", issuing(expires_in="0" * 40))
    with credentials(server, clock) as source, pytest.raises(SourceError, match="positive"):
        source.token("a")


def test_timeout(server: HttpsServer, clock: FixedClock) -> None:
    server.route("/token", issuing(delay=2.0))
    with (
        credentials(server, clock, timeout=0.2) as source,
        pytest.raises(SourceError, match="timed out"),
    ):
        source.token("a")


def test_plain_http_only_to_loopback_with_opt_in(clock: FixedClock) -> None:
    with pytest.raises(ConfigurationError, match="https"):
        ClientCredentialsTokenSource(
            "http://auth.example/token", client_id="c", client_secret="s", allow_http_loopback=True
        )
    with HttpsServer(None) as plain:
        plain.route("/token", issuing())
        with pytest.raises(ConfigurationError, match="allow_http_loopback"):
            ClientCredentialsTokenSource(plain.url("/token"), client_id="c", client_secret="s")
        with ClientCredentialsTokenSource(
            plain.url("/token", host="127.0.0.1"),
            client_id="c",
            client_secret="s",
            allow_http_loopback=True,
            clock=clock,
        ) as source:
            assert source.token("a") == "at-1"


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"client_secret": "s", "private_key_jwt": PrivateJWK.generate("ES256")},
        {"client_secret": "s", "mtls": ssl.create_default_context()},
        {"client_secret": ""},
        {"client_secret": 7},
        {"client_secret": "s", "secret_method": "header"},
        {"client_secret": "s", "audience_param": "aud"},
        {"client_secret": "s", "scopes": ["a b"]},
        {"client_secret": "s", "scopes": None},
        {"client_secret": "s", "scopes": 5},
        {"client_secret": "s", "verify": False},
        {"private_key_jwt": "key"},
        {"client_secret": "s", "assertion_audience": "https://issuer.example"},
        {"private_key_jwt": PrivateJWK.generate("ES256"), "assertion_audience": ""},
        {"private_key_jwt": PrivateJWK.generate("ES256"), "assertion_audience": 7},
        {"mtls": "context"},
        {"mtls": True},
        {"mtls": ssl.create_default_context(), "verify": "ca.pem"},
    ],
)
def test_bad_configuration(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        ClientCredentialsTokenSource("https://auth.example/token", client_id="c", **options)


def test_mtls_with_own_client_is_refused() -> None:
    import httpx

    with httpx.Client() as client, pytest.raises(ConfigurationError, match="mtls"):
        ClientCredentialsTokenSource(
            "https://auth.example/token",
            client_id="c",
            mtls=ssl.create_default_context(),
            client=client,
        )


# --- token exchange (RFC 8693) -------------------------------------------------------------


def exchange(server: HttpsServer, clock: FixedClock, **options: Any) -> TokenExchangeTokenSource:
    options.setdefault("client_id", "gateway")
    options.setdefault("client_secret", SECRET)
    return TokenExchangeTokenSource(
        server.url("/token"), verify=server.client_context, clock=clock, **options
    )


def test_token_exchange_parameters(server: HttpsServer, clock: FixedClock) -> None:
    server.route("/token", issuing(issued_token_type=ACCESS))
    actor = StaticTokenSource("actor.token.value")
    with exchange(
        server,
        clock,
        subject_token=lambda: "user.token.value",
        actor_token=actor,
        scopes=["orders"],
    ) as source:
        assert source.token("https://orders.example") == "at-1"
    [request] = server.requests("/token")
    assert request.form == {
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
        "subject_token": "user.token.value",
        "subject_token_type": JWT_TYPE,
        "actor_token": "actor.token.value",
        "actor_token_type": JWT_TYPE,
        "requested_token_type": ACCESS,
        "audience": "https://orders.example",
        "scope": "orders",
    }
    assert request.headers["authorization"].startswith("Basic ")


def test_token_exchange_is_cached_per_subject(server: HttpsServer, clock: FixedClock) -> None:
    server.route("/token", issuing(issued_token_type=ACCESS))
    current = {"token": "alice.token.x"}
    with exchange(server, clock, subject_token=lambda: current["token"]) as source:
        alice = source.token("https://orders.example")
        assert source.token("https://orders.example") == alice
        current["token"] = "bob.token.y"
        bob = source.token("https://orders.example")
        assert bob != alice  # never another subject's exchanged token
        current["token"] = "alice.token.x"
        assert source.token("https://orders.example") == alice
    assert [r.form["subject_token"] for r in server.requests("/token")] == [
        "alice.token.x",
        "bob.token.y",
    ]
    assert "actor_token" not in server.requests("/token")[0].form
    assert "actor_token_type" not in server.requests("/token")[0].form  # RFC 8693 2.1


def test_token_exchange_invalidate_drops_every_subject_of_the_audience(
    server: HttpsServer, clock: FixedClock
) -> None:
    server.route("/token", issuing(issued_token_type=ACCESS))
    current = {"token": "alice.token.x"}
    orders, stock = "https://orders.example", "https://stock.example"
    with exchange(server, clock, subject_token=lambda: current["token"]) as source:
        alice = source.token(orders)
        current["token"] = "bob.token.y"
        bob, bob_stock = source.token(orders), source.token(stock)
        source.invalidate(orders)
        assert source.token(stock) == bob_stock  # another audience: kept
        assert source.token(orders) not in (alice, bob)
        current["token"] = "alice.token.x"
        assert source.token(orders) not in (alice, bob)
        source.clear()
        assert source.token(stock) != bob_stock
    assert server.count("/token") == 6


def test_token_exchange_invalidate_with_a_token_drops_that_subjects_only(
    server: HttpsServer, clock: FixedClock
) -> None:
    """One subject's exchanged token refused by the audience: the other subjects' tokens for
    that audience stay cached."""
    server.route("/token", issuing(issued_token_type=ACCESS))
    current = {"token": "alice.token.x"}
    orders = "https://orders.example"
    with exchange(server, clock, subject_token=lambda: current["token"]) as source:
        alice = source.token(orders)
        current["token"] = "bob.token.y"
        bob = source.token(orders)
        assert source.expires_at(orders, alice) is not None
        assert source.expires_at("https://stock.example", alice) is None
        source.invalidate(orders, token=alice)
        assert source.expires_at(orders, alice) is None
        assert source.token(orders) == bob
        current["token"] = "alice.token.x"
        assert source.token(orders) not in (alice, bob)
    assert server.count("/token") == 3


class SubjectSource:
    """A token source for the subject token, noting the audience each token is asked for."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def token(self, audience: str) -> str:
        self.seen.append(audience)
        return "svc.token.value"

    async def token_async(self, audience: str) -> str:
        return self.token(audience)


def test_token_exchange_subject_from_a_token_source(server: HttpsServer, clock: FixedClock) -> None:
    server.route("/token", issuing(issued_token_type=JWT_TYPE, token_type="N_A"))
    subject = SubjectSource()

    with exchange(
        server,
        clock,
        subject_token=subject,
        subject_audience="https://sts.example",
        requested_token_type=JWT_TYPE,
        client_secret=None,
    ) as source:
        assert source.token("https://orders.example") == "at-1"
        assert asyncio.run(source.token_async("https://orders.example")) == "at-1"
    assert subject.seen == ["https://sts.example", "https://sts.example"]
    [request] = server.requests("/token")
    assert request.form["client_id"] == "gateway"  # public client: client_id only
    assert request.form["requested_token_type"] == JWT_TYPE


@pytest.mark.parametrize("issued", [None, JWT_TYPE])
def test_token_exchange_checks_issued_token_type(
    server: HttpsServer, clock: FixedClock, issued: str | None
) -> None:
    server.route("/token", issuing(issued_token_type=issued))
    source = exchange(server, clock, subject_token=lambda: "user.token")
    with source, pytest.raises(SourceError, match="issued_token_type"):
        source.token("a")


def test_token_exchange_n_a_is_only_for_non_access_tokens(
    server: HttpsServer, clock: FixedClock
) -> None:
    server.route("/token", issuing(issued_token_type=ACCESS, token_type="N_A"))
    source = exchange(server, clock, subject_token=lambda: "user.token")
    with source, pytest.raises(SourceError, match="token_type"):
        source.token("a")


def test_token_exchange_rejected_subject_is_a_token_error(
    server: HttpsServer, clock: FixedClock
) -> None:
    server.route("/token", json_route({"error": "invalid_grant"}, status=400))
    source = exchange(server, clock, subject_token=lambda: "user.token")
    with source, pytest.raises(TokenError, match="invalid_grant") as caught:
        source.token("a")
    assert "user.token" not in str(caught.value)


def test_token_exchange_async(server: HttpsServer, clock: FixedClock) -> None:
    server.route("/token", issuing(issued_token_type=ACCESS, delay=0.2))
    source = exchange(server, clock, subject_token=lambda: "user.token")

    async def main() -> list[str]:
        return list(await asyncio.gather(*(source.token_async("a") for _ in range(20))))

    assert asyncio.run(main()) == ["at-1"] * 20
    [request] = server.requests("/token")
    assert request.form["subject_token"] == "user.token"


def test_token_exchange_without_a_subject_token_is_refused_when_built() -> None:
    # a missing subject is a configuration mistake, not a TypeError on every call
    with pytest.raises(ConfigurationError, match="subject_token"):
        TokenExchangeTokenSource("https://sts.example/token", subject_token=None)  # type: ignore[arg-type]


def test_token_exchange_bad_configuration() -> None:
    with pytest.raises(ConfigurationError):
        TokenExchangeTokenSource("https://sts.example/token", subject_token="token")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        TokenExchangeTokenSource(
            "https://sts.example/token", subject_token=lambda: "t", requested_token_type=""
        )
    with pytest.raises(ConfigurationError):
        TokenExchangeTokenSource(
            "https://sts.example/token", subject_token=lambda: "t", client_secret="s"
        )


@pytest.mark.parametrize(
    ("route", "error", "shown"),
    [
        # the endpoint's status decides what a registered code means: 400/401 only
        (json_route({"error": "invalid_client"}, status=500), SourceError, "500 [invalid_client]"),
        (
            json_route({"error": "invalid_grant"}, status=401),
            AuthenticationError,
            "(HTTP 401) [invalid_grant]",
        ),
        (json_route({"error": "invalid_grant"}, status=500), SourceError, "500 [invalid_grant]"),
        # an error that is not a string is no code at all: nothing is shown
        (json_route({"error": {"code": "invalid_client"}}, status=400), SourceError, "HTTP 400"),
        (json_route({"error": 7}, status=400), SourceError, "HTTP 400"),
        (Route(status=503), SourceError, "HTTP 503"),
        (Route(status=300), SourceError, "redirect refused (HTTP 300)"),
        (Route(status=399), SourceError, "redirect refused (HTTP 399)"),
        (Route(status=299), SourceError, "HTTP 299"),
    ],
)
def test_error_status_and_code_decide_the_error_together(
    server: HttpsServer, clock: FixedClock, route: Route, error: type[Exception], shown: str
) -> None:
    server.route("/token", route)
    with credentials(server, clock) as source, pytest.raises(error) as caught:
        source.token("a")
    assert type(caught.value) is error
    assert str(caught.value).endswith(shown)


def test_a_response_without_expires_in_is_taken(server: HttpsServer, clock: FixedClock) -> None:
    """RFC 6749 5.1: ``expires_in`` is RECOMMENDED, not required."""
    server.route("/token", issuing(expires_in=None))
    with credentials(server, clock) as source:
        assert source.token("a") == "at-1"
        assert source.token("a") == "at-1"
    assert server.count("/token") == 1


def test_client_credentials_ignore_an_issued_token_type(
    server: HttpsServer, clock: FixedClock
) -> None:
    """Only token exchange asks for ``issued_token_type``; elsewhere it is an unknown member
    (RFC 6749 5.1: the client ignores what it does not understand)."""
    server.route("/token", issuing(issued_token_type=JWT_TYPE))
    with credentials(server, clock) as source:
        assert source.token("a") == "at-1"


def test_expires_in_digits_must_be_ascii(server: HttpsServer, clock: FixedClock) -> None:
    server.route("/token", issuing(expires_in="\u0663\u0660\u0660"))  # Arabic-Indic 300
    with credentials(server, clock) as source, pytest.raises(SourceError, match="not a number"):
        source.token("a")


def test_repr_names_the_client_authentication_method(
    server: HttpsServer, clock: FixedClock
) -> None:
    with credentials(server, clock, secret_method="post") as source:
        shown = repr(source)
    assert "client_auth='client_secret_post'" in shown
    assert SECRET not in shown


@pytest.mark.parametrize("client_id", ["", 7])
def test_token_exchange_client_id_must_be_a_non_empty_string(client_id: object) -> None:
    with pytest.raises(ConfigurationError, match="client_id"):
        TokenExchangeTokenSource(
            "https://sts.example/token",
            subject_token=lambda: "t",
            client_id=client_id,  # type: ignore[arg-type]
        )


def test_token_exchange_without_client_authentication(
    server: HttpsServer, clock: FixedClock
) -> None:
    """RFC 8693 2.1: client authentication is optional; without a client_id none is sent."""
    server.route("/token", issuing(issued_token_type=ACCESS))
    with exchange(
        server, clock, subject_token=lambda: "user.token", client_id=None, client_secret=None
    ) as source:
        assert source.token("a") == "at-1"
    [request] = server.requests("/token")
    assert "authorization" not in request.headers
    assert set(request.form) == {
        "grant_type",
        "subject_token",
        "subject_token_type",
        "requested_token_type",
        "audience",
    }


def test_token_exchange_verifies_tls_by_default(server: HttpsServer, clock: FixedClock) -> None:
    """Without ``verify``, the system's CAs decide: the loopback server's dev CA is not one."""
    server.route("/token", issuing(issued_token_type=ACCESS))
    source = TokenExchangeTokenSource(
        server.url("/token"), subject_token=lambda: "user.token", client_id="gateway", clock=clock
    )
    with source, pytest.raises(SourceError, match="unavailable"):
        source.token("a")
    assert server.count("/token") == 0


def test_token_exchange_plain_http_needs_the_opt_in() -> None:
    with HttpsServer(None) as plain:
        url = plain.url("/token", host="127.0.0.1")
        with pytest.raises(ConfigurationError, match="allow_http_loopback"):
            TokenExchangeTokenSource(url, subject_token=lambda: "t")
        TokenExchangeTokenSource(url, subject_token=lambda: "t", allow_http_loopback=True).close()


def test_token_exchange_subject_source_is_asked_for_the_token_endpoint(
    server: HttpsServer, clock: FixedClock
) -> None:
    """Without ``subject_audience``, the subject token is one for the token endpoint."""
    server.route("/token", issuing(issued_token_type=ACCESS))
    subject = SubjectSource()

    with exchange(server, clock, subject_token=subject) as source:
        source.token("a")
        asyncio.run(source.token_async("a"))
    assert subject.seen == [server.url("/token")] * 2


def test_token_exchange_async_sends_subject_and_actor(
    server: HttpsServer, clock: FixedClock
) -> None:
    server.route("/token", issuing(issued_token_type=ACCESS))
    actor = StaticTokenSource("actor.token.value")
    with exchange(server, clock, subject_token=lambda: "user.token", actor_token=actor) as source:
        assert asyncio.run(source.token_async("a")) == "at-1"
    [request] = server.requests("/token")
    assert request.form["subject_token"] == "user.token"
    assert request.form["actor_token"] == "actor.token.value"
    assert request.form["actor_token_type"] == JWT_TYPE


def test_token_exchange_clear_drops_the_current_subjects_tokens(
    server: HttpsServer, clock: FixedClock
) -> None:
    server.route("/token", issuing(issued_token_type=ACCESS))
    with exchange(server, clock, subject_token=lambda: "user.token") as source:
        first = source.token("a")
        source.clear()
        assert source.token("a") != first
    assert server.count("/token") == 2


def test_token_exchange_audience_must_be_a_non_empty_string(
    server: HttpsServer, clock: FixedClock
) -> None:
    with exchange(server, clock, subject_token=lambda: "user.token") as source:
        for audience in ("", None, 7):
            with pytest.raises(ConfigurationError, match="audience"):
                source.token(audience)  # type: ignore[arg-type]
            with pytest.raises(ConfigurationError, match="audience"):
                asyncio.run(source.token_async(audience))  # type: ignore[arg-type]
            with pytest.raises(ConfigurationError, match="audience"):
                source.invalidate(audience)  # type: ignore[arg-type]
    assert server.count("/token") == 0


@pytest.mark.parametrize(
    "options",
    [{"subject_token_type": 7}, {"actor_token_type": ""}, {"requested_token_type": None}],
)
def test_token_exchange_bad_token_types(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match="_token_type must be a non-empty string"):
        TokenExchangeTokenSource("https://sts.example/token", subject_token=lambda: "t", **options)


def test_mtls_with_own_async_client_is_refused() -> None:
    import httpx

    async def main() -> None:
        async with httpx.AsyncClient() as client:
            with pytest.raises(ConfigurationError, match="mtls"):
                ClientCredentialsTokenSource(
                    "https://auth.example/token",
                    client_id="c",
                    mtls=ssl.create_default_context(),
                    async_client=client,
                )

    asyncio.run(main())


def test_close_closes_the_client_the_source_built(server: HttpsServer, clock: FixedClock) -> None:
    with credentials(server, clock) as source:
        source.token("a")
        built = source._transport._own
    assert built is not None and built.is_closed


@pytest.mark.parametrize("secret_method", ["basic", "post"])
def test_nothing_logged_holds_the_secret_a_token_or_the_body(
    server: HttpsServer,
    clock: FixedClock,
    caplog: pytest.LogCaptureFixture,
    secret_method: str,
) -> None:
    """A refresh refused while the token is still valid is logged (and the error raised once
    it expired names its code): neither the log records, at any level and from any logger,
    nor the error hold the client secret, the token or the endpoint's answer, which may echo
    what it was sent."""
    echoed = json.dumps(
        {"error": "invalid_client", "error_description": f"bad secret {SECRET} for at-1"}
    ).encode()
    caplog.set_level(logging.DEBUG)
    with credentials(server, clock, secret_method=secret_method) as source:
        token = source.token("a")
        server.route("/token", Route(status=401, body=echoed))
        clock.advance(250)
        assert source.token("a") == token  # the refresh failed: the valid token is kept
        clock.advance(60)
        with pytest.raises(AuthenticationError, match=r"\[invalid_client\]$") as caught:
            source.token("a")
    assert any("invalid_client" in record.getMessage() for record in caplog.records)
    shown = [str(caught.value)]
    for record in caplog.records:
        shown.append(record.getMessage())
        if record.exc_info:
            shown.append(logging.Formatter().formatException(record.exc_info))
    encoded = base64.b64encode(f"my%3Aclient:{SECRET}".encode()).decode()
    for text in shown:
        for secret in (SECRET, "p%40ss", encoded, token, "bad secret"):
            assert secret not in text
