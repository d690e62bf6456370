"""Secrets hygiene: real secrets never reach what the library emits.

Each test holds genuine secret values (tokens, private keys, client secrets, store
credentials, certificates) and checks every output the library produces for them, in their
raw, base64, PEM and URL-encoded forms: log records at DEBUG with their tracebacks, audit
events, responses, and the ``str``/``repr`` of errors (with their chained causes) and of the
objects that hold the secrets.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import importlib.util
import json
import logging
import time
import traceback
import urllib.parse
from collections.abc import Iterable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from tests._https import HttpsServer, Recorded, Route
from zerotrust import (
    ApiKeys,
    Authenticator,
    Callers,
    DPoPConfig,
    FixedClock,
    Guard,
    LoggingSink,
    MemorySink,
    MemoryStore,
    Operations,
    Policy,
    PrivateJWK,
    RedisStore,
    Request,
    ResilientStore,
    Rule,
    ScopeRule,
    SecretKey,
    SelfIssuedTokenSource,
    Settings,
    StaticTokenSource,
    TokenIssuer,
    TokenVerifier,
    TrustedProxies,
)
from zerotrust.asgi import ZeroTrustMiddleware
from zerotrust.audit import AuditEvent, AuditPipeline
from zerotrust.client._dpop import dpop_proof
from zerotrust.dev import DevCA
from zerotrust.errors import ConfigurationError, StoreUnavailable, ZeroTrustError
from zerotrust.sources import RemoteJWKSource
from zerotrust.sources.oauth2 import ClientCredentialsTokenSource, TokenExchangeTokenSource
from zerotrust.tokens._b64 import b64url_encode
from zerotrust.tokens.outgoing import CachedTokenSource
from zerotrust.x509 import verify_peer_chain
from zerotrust.x509.sslcontext import HandshakeRefusal

ISS = "https://issuer.example"
AUD = "api"
API_KEY = "zt-api-key-0f9e8d7c6b5a49382716a5f4e3d2"
COOKIE = "cookie-secret-a1b2c3d4e5f6a7b8c9d0"
BASIC_PASSWORD = "basic-password-5f4e3d2c1b0a"
CLIENT_SECRET = "client-secret-7e6d5c4b3a29"
HMAC_SECRET = "hmac-secret-0123456789abcdef0123456789abcdef"
REDIS_PASSWORD = "redis-password-1a2b3c4d5e"


class _Ok:
    """The application behind the middleware: it answers 200 to whatever reaches it."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def _forms(secret: str) -> set[str]:
    """``secret`` as it may appear: raw, URL-encoded, base64 (standard and URL-safe)."""
    raw = secret.encode()
    return {
        secret,
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote_plus(secret, safe=""),
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
    }


def _rendered(error: BaseException) -> str:
    """What a framework logs of ``error``: its traceback with every chained exception; and the
    ``str`` and ``repr`` of every exception reachable through ``__cause__`` and ``__context__``,
    a context ``raise ... from None`` hides from tracebacks included (error trackers, debuggers
    and ``logging`` handlers of their own walk both)."""
    shown = ["".join(traceback.format_exception(error))]
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        shown += [str(current), repr(current)]
        pending += [current.__cause__, current.__context__]
    return "\n".join(shown)


def _assert_clean(outputs: Iterable[str], secrets: Iterable[str]) -> None:
    blob = "\n".join(outputs)
    for secret in secrets:
        for form in _forms(secret):
            assert form not in blob, f"a secret ({len(secret)} chars) leaked"


def test_a_store_error_that_withholds_a_quoted_credential_keeps_no_cause_or_context_quoting_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    redis = pytest.importorskip("redis")
    from zerotrust.stores import RedisStore

    caplog.set_level(logging.DEBUG)
    client = redis.Redis(host="127.0.0.1", port=1, username="zt-operator", password="s3cret-pw")
    store = RedisStore(client=client)

    def quoting(keys: Any, args: Any) -> None:
        raise redis.ResponseError("AUTH zt-operator s3cret-pw failed")

    async def quoting_async(*_: Any, **__: Any) -> None:
        raise redis.ResponseError("AUTH zt-operator s3cret-pw failed")

    store._scripts["revoke"] = quoting  # type: ignore[assignment]
    client.ping = lambda: quoting([], [])  # type: ignore[method-assign]
    async_client = redis.asyncio.Redis(
        host="127.0.0.1", port=1, username="zt-operator", password="s3cret-pw"
    )
    async_store = RedisStore(client=client, async_client=async_client)
    async_store._ascripts["revoke"] = quoting_async  # type: ignore[assignment]
    async_client.ping = quoting_async  # type: ignore[method-assign]
    errors: list[BaseException] = []
    for call in (lambda: store.revoke_token("j", expires_at=time.time() + 60), store.ping):
        with pytest.raises(StoreUnavailable) as info:
            call()
        errors.append(info.value)

    async def both() -> None:  # the async client belongs to the first loop that uses it
        for call in (
            lambda: async_store.revoke_token_async("j", expires_at=time.time() + 60),
            async_store.ping_async,
        ):
            with pytest.raises(StoreUnavailable) as info:
                await call()
            errors.append(info.value)

    asyncio.run(both())
    assert len(errors) == 4 and all("reason withheld" in str(error) for error in errors)
    _assert_clean(
        [*map(_rendered, errors), *map(repr, errors), caplog.text], ["s3cret-pw", "zt-operator"]
    )
    client.close()


# --- one corpus of requests carrying real secrets, through the ASGI middleware ------------


def _pem_lines(pem: bytes) -> list[str]:
    """The base64 lines of a PEM block (each one a piece of the key or certificate)."""
    return [line for line in pem.decode().splitlines() if line and not line.startswith("-----")]


def _d(key: PrivateJWK) -> str:
    """The JWK ``d`` member of an EC P-256 key: its private scalar, base64url."""
    private = key.private_key
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    return b64url_encode(private.private_numbers().private_value.to_bytes(32, "big"))


def _asgi(app: Any, headers: list[tuple[str, str]], **scope: Any) -> list[dict[str, Any]]:
    base: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "method": "GET",
        "scheme": "https",
        "path": "/r",
        "raw_path": b"/r",
        "query_string": b"",
        "headers": [(b"host", b"api.example")]
        + [(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers],
        "client": ("203.0.113.7", 4321),
        "server": ("api.example", 443),
    }
    base.update(scope)
    messages = [{"type": "http.request", "body": b"", "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(base, receive, send))
    return sent


def _shown(sent: list[dict[str, Any]]) -> str:
    """Everything a response carried: status, header names and values, body."""
    parts: list[str] = []
    for message in sent:
        parts.append(str(message.get("status", "")))
        for name, value in message.get("headers", []):
            parts.append(f"{name.decode('latin-1')}: {value.decode('latin-1')}")
        parts.append(bytes(message.get("body", b"")).decode("latin-1"))
    return "\n".join(parts)


def test_a_corpus_of_requests_with_real_secrets_leaks_none_of_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    clock = FixedClock(dt.datetime.now(dt.timezone.utc))
    ca = DevCA.create("example.org")
    signing = PrivateJWK.generate("ES256", kid="k1")
    issuer = TokenIssuer(signing, issuer=ISS, clock=clock)
    holder = PrivateJWK.generate("ES256")
    stranger_key = PrivateJWK.generate("ES256", kid="k1")
    svid = ca.issue_svid("spiffe://example.org/caller")
    outsider = DevCA.create("example.org").issue_svid("spiffe://example.org/caller")
    memory = MemorySink()
    guard = Guard(
        authenticator=Authenticator(
            tokens=TokenVerifier(
                issuer=ISS, audience=AUD, keys=issuer.jwks(), algorithms=["ES256"], clock=clock
            ),
            bundles=ca.bundle,
            trusted_proxies=TrustedProxies(["10.0.0.0/8"], header="xfcc"),
            api_keys=ApiKeys({"ci": ApiKeys.hash(API_KEY)}),
            dpop=DPoPConfig(origins=["https://api.example"]),
            clock=clock,
        ),
        policy=Policy(
            [
                Rule(id="deny-bad", action="DENY", callers=[Callers(subjects=["bad"])]),
                Rule(
                    id="read",
                    operations=[Operations(routes=["/r", "/pkg.Svc/Get"])],
                    scopes=ScopeRule(all=["read"]),
                ),
            ]
        ),
        audit=AuditPipeline([memory, LoggingSink(level=logging.DEBUG)]),
        store=MemoryStore(clock=clock),
        clock=clock,
        service="api",
    )
    app = ZeroTrustMiddleware(_Ok(), guard=guard, route_template=lambda scope: scope["path"])

    secrets: list[str] = [API_KEY, COOKIE, BASIC_PASSWORD]
    tokens: list[str] = []

    def token(**claims: Any) -> str:
        claims.setdefault("subject", "svc")
        claims.setdefault("audience", AUD)
        value = issuer.issue(**claims)
        tokens.append(value)
        return value

    forged = TokenIssuer(stranger_key, issuer=ISS, clock=clock).issue(subject="svc", audience=AUD)
    tokens.append(forged)
    bound = token(scopes=["read"], extra_claims={"cnf": {"jkt": holder.thumbprint()}})
    proof = dpop_proof(holder, method="GET", url="https://api.example/r", access_token=bound)
    wrong_proof = dpop_proof(holder, method="POST", url="https://api.example/r", access_token=bound)
    # a proof that carries its private key in the jwk header (RFC 9449 forbids it)
    leaky_header = {
        "typ": "dpop+jwt",
        "alg": "ES256",
        "jwk": {**holder.public().to_public_dict(), "d": _d(holder)},
    }
    leaky_proof = (
        b64url_encode(json.dumps(leaky_header).encode())
        + "."
        + proof.split(".")[1]
        + "."
        + proof.split(".")[2]
    )
    tokens += [proof, wrong_proof, leaky_proof]
    leaf_pem = svid.leaf.public_bytes(Encoding.PEM)
    outsider_pem = outsider.leaf.public_bytes(Encoding.PEM)
    chain_pem = b"".join(c.public_bytes(Encoding.PEM) for c in outsider.cert_chain)
    xfcc_cert = f'Cert="{urllib.parse.quote(outsider_pem.decode(), safe="")}"'
    xfcc_chain = f'Chain="{urllib.parse.quote(chain_pem.decode(), safe="")}"'
    basic = base64.b64encode(f"user:{BASIC_PASSWORD}".encode()).decode()
    expired = token(ttl=1, scopes=["read"])

    def bearer(value: str, *extra: tuple[str, str]) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {value}"), ("cookie", f"session={COOKIE}"), *extra]

    corpus: list[tuple[list[tuple[str, str]], dict[str, Any]]] = [
        ([("cookie", f"session={COOKIE}")], {}),
        ([("authorization", f"Basic {basic}")], {}),
        ([("authorization", f"Bearer {bound}"), ("authorization", f"Bearer {forged}")], {}),
        (bearer("not.a.token"), {}),
        (bearer(forged), {}),
        (bearer(token(audience="other")), {}),
        (bearer(token(subject="bad", scopes=["read"])), {}),
        (bearer(token()), {}),
        (bearer(token(scopes=["read"])), {"path": "/elsewhere", "raw_path": b"/elsewhere"}),
        (bearer(bound), {}),
        ([("authorization", f"DPoP {bound}"), ("dpop", wrong_proof)], {}),
        ([("authorization", f"DPoP {bound}"), ("dpop", leaky_proof)], {}),
        ([("authorization", f"DPoP {bound}"), ("dpop", proof), ("dpop", proof)], {}),
        (bearer(token(bind_cert=svid.leaf, scopes=["read"])), {}),
        ([("x-forwarded-client-cert", xfcc_cert)], {}),
        ([("x-forwarded-client-cert", xfcc_cert)], {"client": ("10.0.0.1", 1)}),
        ([("x-forwarded-client-cert", f"{xfcc_chain};{xfcc_cert}")], {"client": ("10.0.0.1", 1)}),
        ([("x-api-key", API_KEY[::-1])], {}),
        ([("x-api-key", API_KEY)], {}),
        ([("x-api-key", API_KEY), ("authorization", f"Bearer {forged}")], {}),
    ]
    responses: list[str] = []
    errors: list[str] = []
    for headers, scope in corpus:
        sent = _asgi(app, headers, **scope)
        assert sent[0]["status"] != 200, headers
        responses.append(_shown(sent))
        # the same request as the Guard's caller sees it: the outcome and its error
        view = Request(
            route=scope.get("path", "/r"),
            path=scope.get("path", "/r"),
            host="api.example",
            headers=headers,
            remote_addr=scope.get("client", ("203.0.113.7",))[0],
        )
        outcome = guard.evaluate(view)
        assert outcome.error is not None
        errors += [repr(outcome), str(outcome.error), _rendered(outcome.error)]
        errors.append(json.dumps(outcome.body()))
    # the other kinds of decision: gRPC, allowed, dry-run, a refused TLS handshake
    grpc_token = token(scopes=["read"])
    for route, value in (("/pkg.Svc/Get", grpc_token), ("/pkg.Svc/Get", forged)):
        grpc = Request(
            kind="grpc", path=route, route=route, headers={"authorization": f"Bearer {value}"}
        )
        outcome = guard.evaluate(grpc)
        errors += [repr(outcome), json.dumps(outcome.body())]
    allowed = guard.evaluate(Request(route="/r", headers=bearer(token(scopes=["read"]))))
    assert allowed.allowed
    errors.append(repr(allowed))
    dry = Guard(
        authenticator=guard.authenticator,
        policy=Policy([Rule(id="deny-all", action="DENY", dry_run=True), Rule(id="all")]),
        audit=AuditPipeline([memory, LoggingSink(level=logging.DEBUG)]),
        store=MemoryStore(clock=clock),
        clock=clock,
        service="api",
    )
    assert dry.evaluate(Request(route="/r", headers=bearer(token()))).allowed
    outsider_chain = [c.public_bytes(Encoding.DER) for c in outsider.cert_chain]
    with pytest.raises(ZeroTrustError) as refused:
        verify_peer_chain(outsider_chain, ca.bundle)
    errors += [str(refused.value), _rendered(refused.value)]
    guard.audit_handshake(
        HandshakeRefusal(refused.value, "client", "203.0.113.7", outsider.fingerprint)
    )
    kinds = {(event.kind, event.decision, event.dry_run) for event in memory.events}
    assert {("grpc", "allow", False), ("grpc", "deny", False)} <= kinds
    assert {("http", "allow", False), ("http", "allow", True), ("tls", "deny", False)} <= kinds
    # the DPoP proof sent once, then again (a replay), then an expired token
    dpop = [("authorization", f"DPoP {bound}"), ("dpop", proof)]
    assert _asgi(app, dpop)[0]["status"] == 200
    responses.append(_shown(_asgi(app, dpop)))
    clock.advance(3600)
    responses.append(_shown(_asgi(app, bearer(expired))))

    secrets += tokens
    secrets += [t.split(".")[2] for t in tokens if t.count(".") == 2 and t.split(".")[2]]
    for key in (signing, holder, stranger_key):
        secrets.append(_d(key))
    secrets += _pem_lines(svid.private_key_pem()) + _pem_lines(outsider.private_key_pem())
    secrets += _pem_lines(leaf_pem)[1:3] + _pem_lines(outsider_pem)[1:3]
    secrets += [xfcc_cert[6:-1], xfcc_chain[7:-1], basic]
    outputs = [*responses, *errors, caplog.text]
    outputs += [record.getMessage() for record in caplog.records]
    outputs += [event.to_json() for event in memory.events] + [repr(e) for e in memory.events]
    assert len(memory.events) >= len(corpus)
    _assert_clean(outputs, secrets)
    blob = "\n".join(outputs)
    assert "-----BEGIN" not in blob and "PRIVATE KEY" not in blob


# --- the objects that hold secrets never show them ---------------------------------------


def test_objects_holding_secrets_show_none_of_them_in_repr_or_str() -> None:
    clock = FixedClock(dt.datetime.now(dt.timezone.utc))
    ca = DevCA.create("example.org")
    svid = ca.issue_svid("spiffe://example.org/caller")
    signing = PrivateJWK.generate("ES256", kid="k1")
    issuer = TokenIssuer(signing, issuer=ISS, clock=clock)
    hmac = SecretKey(HMAC_SECRET.encode(), kid="h1")
    token = issuer.issue(subject="svc", audience=AUD)
    self_issued = SelfIssuedTokenSource(issuer, subject="svc", clock=clock)
    minted = self_issued.token(AUD)  # now cached
    cached = CachedTokenSource(lambda audience: token, clock=clock)
    cached.token(AUD)
    client_secret = ClientCredentialsTokenSource(
        "https://as.example/token", client_id="c", client_secret=CLIENT_SECRET
    )
    assertion = ClientCredentialsTokenSource(
        "https://as.example/token", client_id="c", private_key_jwt=signing
    )
    exchange = TokenExchangeTokenSource(
        "https://as.example/token",
        subject_token=StaticTokenSource(token),
        client_id="c",
        client_secret=CLIENT_SECRET,
    )
    verifier = TokenVerifier(issuer=ISS, audience=AUD, keys=issuer.jwks(), algorithms=["ES256"])
    verified = verifier.verify(token)
    api_keys = ApiKeys({"ci": ApiKeys.hash(API_KEY)})
    guard = Guard(
        authenticator=Authenticator(tokens=verifier, api_keys=api_keys, bundles=ca.bundle),
        policy=Policy([Rule(id="all")]),
        audit=MemorySink(),
        store=MemoryStore(),
    )
    outcome = guard.evaluate(
        Request(route="/r", headers={"authorization": f"Bearer {token}", "cookie": COOKIE})
    )
    assert outcome.allowed and outcome.principal is not None
    request = Request(
        route="/r", headers={"authorization": f"Bearer {token}", "x-api-key": API_KEY}
    )
    settings = Settings.from_dict(
        {
            "policy": {"rules": [{"id": "all"}]},
            "tokens": {
                "issuer": ISS,
                "audience": AUD,
                "algorithms": ["HS256"],
                "hmac_secret": HMAC_SECRET,
            },
            "store": {"url": "redis://127.0.0.1:6379/0?db=0", "password": REDIS_PASSWORD},
            "api_keys": {"hashes": {"ci": ApiKeys.hash(API_KEY)}},
        }
    )
    redis_url = f"redis://zt-operator:{REDIS_PASSWORD}@127.0.0.1:1/0"
    held: list[object] = [
        signing,
        hmac,
        issuer,
        svid,
        ca,
        StaticTokenSource(token),
        self_issued,
        cached,
        client_secret,
        assertion,
        exchange,
        verified,
        api_keys,
        guard.authenticator,
        outcome,
        outcome.principal,
        request,
        settings,
        settings.store,
        settings.tokens,
    ]
    if importlib.util.find_spec("redis") is not None:
        store = RedisStore(redis_url)
        held += [store, ResilientStore(store)]
    secrets = [token, minted, CLIENT_SECRET, HMAC_SECRET, REDIS_PASSWORD, API_KEY, COOKIE]
    secrets += [_d(signing), ApiKeys.hash(API_KEY)]
    secrets += _pem_lines(svid.private_key_pem()) + _pem_lines(svid.leaf.public_bytes(Encoding.PEM))
    outputs = [repr(value) for value in held] + [str(value) for value in held]
    outputs += [json.dumps(settings.to_dict(), default=str)]
    _assert_clean(outputs, secrets)
    for value in held:
        if isinstance(value, RedisStore):
            value.close()


@pytest.mark.parametrize(
    "variable",
    [
        "ZEROTRUST_STORE__PASSWORD_FILE",
        "ZEROTRUST_TOKENS__HMAC_SECRET_FILE",
        "ZEROTRUST_AUDIT__PSEUDONYM_KEY_FILE",
        "ZEROTRUST_DPOP__NONCE_SECRET_FILE",
        "ZEROTRUST_API_KEYS__HASHES_FILE",
    ],
)
def test_a_secret_file_refused_as_not_utf8_keeps_none_of_it_in_the_errors_it_chains(
    tmp_path: Any, variable: str
) -> None:
    # a UnicodeDecodeError holds all of its input in its repr: the file's secret bytes
    secret = REDIS_PASSWORD + "-and-more-secret-text-0f1e2d3c"
    path = tmp_path / "secret"
    path.write_bytes(secret.encode() + b"\xff\n")
    env = {
        "ZEROTRUST_TOKENS__ISSUER": ISS,
        "ZEROTRUST_TOKENS__AUDIENCE": AUD,
        "ZEROTRUST_TOKENS__ALGORITHMS": "HS256",
        "ZEROTRUST_TOKENS__HMAC_SECRET": HMAC_SECRET.encode().hex(),
        "ZEROTRUST_POLICY__RULES": '[{"id": "all"}]',
        "ZEROTRUST_STORE__URL": "redis://127.0.0.1:6379/0",
        "ZEROTRUST_DPOP__ENABLED": "true",
        "ZEROTRUST_DPOP__ORIGINS": "https://api.example",
        "ZEROTRUST_AUDIT__PSEUDONYMIZE": "subject",
        "ZEROTRUST_AUDIT__PSEUDONYM_KEY": "ab" * 32,
    }
    env.pop(variable.removesuffix("_FILE"), None)
    env[variable] = str(path)
    with pytest.raises(ConfigurationError, match="not UTF-8") as info:
        Settings.load(env=env)
    _assert_clean([_rendered(info.value)], [secret])


def test_a_key_source_of_another_openid_issuer_is_refused_without_its_query() -> None:
    # the query values of tokens.oidc_issuer are redacted wherever settings are shown
    url = f"https://issuer.example/tenant?api_key={API_KEY}"
    env = {
        "ZEROTRUST_TOKENS__ISSUER": "https://other.example",
        "ZEROTRUST_TOKENS__AUDIENCE": AUD,
        "ZEROTRUST_TOKENS__ALGORITHMS": "ES256",
        "ZEROTRUST_TOKENS__OIDC_ISSUER": url,
        "ZEROTRUST_POLICY__RULES": '[{"id": "all"}]',
    }
    errors: list[BaseException] = []
    with pytest.raises(ConfigurationError) as info:
        Settings.load(env=env)
    assert "OpenID issuer 'https://issuer.example/tenant'" in str(info.value)
    errors.append(info.value)
    with RemoteJWKSource.from_oidc_issuer(url) as keys, pytest.raises(ConfigurationError) as info:
        TokenVerifier(issuer="https://other.example", audience=AUD, keys=keys, algorithms=["ES256"])
    errors.append(info.value)
    _assert_clean(map(_rendered, errors), [API_KEY])


# --- a token endpoint that echoes what it was sent ----------------------------------------


def _echoing(answer: str) -> Route:
    """A token endpoint answering with everything the client sent it (form and headers)."""

    def handler(record: Recorded) -> tuple[int, dict[str, str], bytes]:
        echo = record.body.decode("ascii") + " " + json.dumps(dict(record.headers))
        documents: dict[str, tuple[int, Any]] = {
            "unregistered": (400, {"error": echo}),
            "invalid_client": (401, {"error": "invalid_client", "error_description": echo}),
            "invalid_grant": (400, {"error": "invalid_grant", "error_description": echo}),
            "token": (200, {"access_token": echo, "token_type": "Bearer"}),
            "token_type": (200, {"access_token": "at", "token_type": echo}),
            "expires_in": (200, {"access_token": "at", "token_type": "Bearer", "expires_in": echo}),
            "server_error": (500, echo),
        }
        if answer == "not_utf8":  # a body no JSON reader takes, still echoing everything
            return 200, {"Content-Type": "application/json"}, echo.encode() + b"\xff"
        status, document = documents[answer]
        return status, {"Content-Type": "application/json"}, json.dumps(document).encode()

    return Route(handler=handler)


@pytest.mark.network
@pytest.mark.parametrize(
    "answer",
    [
        "unregistered",
        "invalid_client",
        "invalid_grant",
        "token",
        "token_type",
        "expires_in",
        "server_error",
        "not_utf8",
    ],
)
def test_a_token_endpoint_echoing_the_credentials_gets_them_into_no_error_or_log(
    ca: DevCA, answer: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="zerotrust")
    subject = TokenIssuer(PrivateJWK.generate("ES256"), issuer=ISS).issue(
        subject="svc", audience=AUD
    )
    assertion_key = PrivateJWK.generate("ES256", kid="c1")
    with HttpsServer(ca) as server:
        server.route("/token", _echoing(answer))
        url = server.url("/token")
        verify = server.client_context
        sources = [
            ClientCredentialsTokenSource(
                url, client_id="c", client_secret=CLIENT_SECRET, verify=verify
            ),
            ClientCredentialsTokenSource(
                url,
                client_id="c",
                client_secret=CLIENT_SECRET,
                secret_method="post",
                verify=verify,
            ),
            TokenExchangeTokenSource(
                url,
                subject_token=StaticTokenSource(subject),
                client_id="c",
                private_key_jwt=assertion_key,
                verify=verify,
            ),
        ]
        outputs: list[str] = []
        for source in sources:
            with source, pytest.raises(ZeroTrustError) as info:
                source.token(AUD)
            outputs += [str(info.value), repr(info.value), _rendered(info.value)]
        assertions = [r.form.get("client_assertion", "") for r in server.requests("/token")]
    outputs.append(caplog.text)
    secrets = [CLIENT_SECRET, subject, subject.split(".")[2], _d(assertion_key)]
    secrets += [value for value in assertions if value]
    secrets.append(base64.b64encode(f"c:{CLIENT_SECRET}".encode()).decode())
    _assert_clean(outputs, secrets)


# --- tokens no JSON or ASCII reader takes -------------------------------------------------


def test_a_token_refused_as_unreadable_keeps_none_of_it_in_the_errors_it_chains(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # a UnicodeDecodeError (UnicodeEncodeError) holds all of its input in its repr: a token's
    # claims, or the whole token, must not stay the context of the error raised
    caplog.set_level(logging.DEBUG)
    marker = "claim-marker-6c1f0e9d8b7a"
    key = PrivateJWK.generate("ES256", kid="k1")
    issuer = TokenIssuer(key, issuer=ISS)
    real = issuer.issue(subject="svc", audience=AUD, extra_claims={"marker": marker})
    header, claims = (json.loads(base64.urlsafe_b64decode(p + "==")) for p in real.split(".")[:2])

    def signed(header_bytes: bytes, payload: bytes) -> str:
        signing_input = b64url_encode(header_bytes) + "." + b64url_encode(payload)
        return signing_input + "." + b64url_encode(key.sign(signing_input.encode()))

    payload = json.dumps(claims).encode()
    refused = [
        real + "\u00e9",  # not ASCII: the whole token
        signed(json.dumps(header).encode(), payload[:-1] + b',"x":"\xff"}'),  # claims not UTF-8
        signed(json.dumps({**header, "m": marker}).encode()[:-1] + b',"x":"\xff"}', payload),
        signed(json.dumps(header).encode(), payload[:-1] + b',"x":"\\ud800"}'),  # lone surrogate
    ]
    verifier = TokenVerifier(issuer=ISS, audience=AUD, keys=issuer.jwks(), algorithms=["ES256"])
    guard = Guard(
        authenticator=Authenticator(tokens=verifier),
        policy=Policy([Rule(id="all")]),
        audit=MemorySink(),
        store=MemoryStore(),
    )
    outputs: list[str] = []
    for token in refused:
        with pytest.raises(ZeroTrustError) as info:
            verifier.verify(token)
        outcome = guard.evaluate(Request(route="/r", headers={"authorization": f"Bearer {token}"}))
        assert outcome.error is not None and not outcome.allowed
        outputs += [_rendered(info.value), _rendered(outcome.error)]
    outputs.append(caplog.text)
    _assert_clean(outputs, [marker, real, real.split(".")[1], real.split(".")[2]])


# --- internal records that carry a secret keep it out of their repr ----------------------


def test_a_workload_api_svid_entry_shows_no_private_key() -> None:
    # what error trackers and debuggers show of the frames the Workload API watcher runs
    from zerotrust.sources._workload_convert import SvidEntry

    svid = DevCA.create("example.org").issue_svid("spiffe://example.org/caller")
    key = svid.private_key.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption())
    entry = SvidEntry(
        "spiffe://example.org/caller", svid.leaf.public_bytes(Encoding.DER), key, b"", ""
    )
    shown = repr(entry)
    assert isinstance(svid.private_key, ec.EllipticCurvePrivateKey)
    scalar = svid.private_key.private_numbers().private_value.to_bytes(32, "big")
    assert repr(key) not in shown and repr(scalar[:12])[2:-1] not in shown
    assert "spiffe://example.org/caller" in shown


def test_the_grpc_token_plugins_memo_shows_no_token() -> None:
    pytest.importorskip("grpc")
    from zerotrust.client._grpc_creds import TokenPlugin

    token = TokenIssuer(PrivateJWK.generate("ES256"), issuer=ISS).issue(subject="s", audience=AUD)
    plugin = TokenPlugin(StaticTokenSource(token), AUD)
    try:
        assert plugin.wait_token(10) == token
        memo = plugin._memo
        assert memo is not None
        _assert_clean([repr(memo), repr(plugin)], [token, token.split(".")[2]])
    finally:
        plugin.close()


def _private_der_forms() -> dict[str, bytes]:
    """Private keys as DER whose base64url spellings differ from their base64 ones early on
    (a scalar and a seed of mostly one bits: ``_`` where base64 has ``/``)."""
    p256 = ec.derive_private_key(int.from_bytes(b"\xfb" + b"\xff" * 31, "big"), ec.SECP256R1())
    seed = ed25519.Ed25519PrivateKey.from_private_bytes(b"\xff" * 32)
    plain = NoEncryption()
    return {
        "p256-pkcs8": p256.private_bytes(Encoding.DER, PrivateFormat.PKCS8, plain),
        "p256-sec1": p256.private_bytes(Encoding.DER, PrivateFormat.TraditionalOpenSSL, plain),
        "ed25519-pkcs8": seed.private_bytes(Encoding.DER, PrivateFormat.PKCS8, plain),
    }


@pytest.mark.parametrize("name", sorted(_private_der_forms()))
def test_a_private_key_in_base64url_is_kept_out_of_audit_events(name: str) -> None:
    der = _private_der_forms()[name]
    for encoded in (base64.b64encode(der), base64.urlsafe_b64encode(der)):
        for value in (encoded.decode(), encoded.decode().rstrip("=")):
            event = AuditEvent(
                time=dt.datetime.now(dt.timezone.utc),
                service="api",
                decision="deny",
                reason="malformed_credentials",
                kind="http",
                method="GET",
                subject=value,
                notes=(value,),
            )
            _assert_clean([event.to_json(), repr(event)], [value[:60]])


@pytest.mark.parametrize("name", sorted(_private_der_forms()))
def test_a_percent_encoded_private_key_or_certificate_is_kept_out_of_audit_events(
    name: str,
) -> None:
    # as a query string or a forwarded header carries it: "+", "/" and "=" escaped
    der = _private_der_forms()[name]
    certificate = DevCA.create("example.org").root_certificate.public_bytes(Encoding.DER)
    for blob in (der, certificate):
        encoded = base64.b64encode(blob).decode()
        assert "+" in encoded[:60] or "/" in encoded[:60] or blob is certificate
        value = urllib.parse.quote(encoded, safe="")
        event = AuditEvent(
            time=dt.datetime.now(dt.timezone.utc),
            service="api",
            decision="deny",
            reason="malformed_credentials",
            kind="http",
            method="GET",
            route=value,
            remote_addr=value,
        )
        _assert_clean([event.to_json(), repr(event)], [encoded[:60]])


def test_a_base64_encoded_pem_block_is_kept_out_of_audit_events() -> None:
    # as Kubernetes secrets and many environment variables hold keys and certificates
    svid = DevCA.create("example.org").issue_svid("spiffe://example.org/caller")
    for pem in (svid.private_key_pem(), svid.leaf.public_bytes(Encoding.PEM)):
        for encoded in (base64.b64encode(pem), base64.urlsafe_b64encode(pem)):
            value = encoded.decode()
            event = AuditEvent(
                time=dt.datetime.now(dt.timezone.utc),
                service="api",
                decision="deny",
                reason="malformed_credentials",
                kind="http",
                method="GET",
                subject=value,
                notes=(value[:400],),
            )
            _assert_clean([event.to_json(), repr(event)], [value[:60]])


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("s.yaml", 'tokens:\n  issuer: "x"\n  hmac_secret: {secret}\n  bad: [unclosed\n'),
        ("s.yaml", "tokens:\n  hmac_secret: {secret}\n\tbad: tab\n"),
        ("s.json", '{{"tokens": {{"hmac_secret": "{secret}", }}}}'),
        ("s.toml", '[tokens]\nhmac_secret = "{secret}"\nbad = \n'),
        ("s.toml", '[tokens]\nhmac_secret = "{secret}"\n\xff'),
    ],
    ids=["yaml-flow", "yaml-tab", "json", "toml", "not-utf8"],
)
def test_a_settings_file_refused_as_unreadable_keeps_none_of_it_in_the_errors_it_chains(
    tmp_path: Any, name: str, body: str
) -> None:
    """A settings file holds secrets; the errors refusing it, and the parser errors they
    chain (PyYAML's excerpt of the line, a decoder's input, JSON's document), never do."""
    secret = HMAC_SECRET.encode().hex()
    path = tmp_path / name
    path.write_bytes(body.format(secret=secret).encode("utf-8", "surrogateescape"))
    if "\xff" in body:
        path.write_bytes(path.read_bytes().replace("\xff".encode(), b"\xff"))
    with pytest.raises(ConfigurationError) as info:
        Settings.load(path)
    _assert_clean([_rendered(info.value)], [secret])
