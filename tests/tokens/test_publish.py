"""Publishing keys: KeyRing staging and rotation, and JWKSEndpoint over real HTTP servers."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from zerotrust import Authenticator, Guard, Policy, Rule
from zerotrust.errors import ConfigurationError, KeysUnavailable
from zerotrust.fastapi import ZeroTrust
from zerotrust.sources import RemoteJWKSource
from zerotrust.tokens import (
    JWKS_MEDIA_TYPE,
    JWKSEndpoint,
    JWKSet,
    KeyRing,
    PrivateJWK,
    SecretKey,
    TokenIssuer,
    TokenVerifier,
)

ISSUER = "https://issuer.example"


def _ring() -> KeyRing:
    return KeyRing(PrivateJWK.generate("ES256", kid="k1"))


def _kids(document: bytes) -> list[str]:
    return [key["kid"] for key in json.loads(document)["keys"]]


# --- KeyRing: stage, rotate, retire --------------------------------------------------------------


def test_a_staged_key_is_published_before_it_signs() -> None:
    ring = _ring()
    issuer = TokenIssuer(ring, issuer=ISSUER)
    staged = ring.stage(PrivateJWK.generate("ES256", kid="k2"))
    assert ring.staged is staged and ring.current.kid == "k1"
    assert [k["kid"] for k in ring.jwks()["keys"]] == ["k1", "k2"]
    # a verifier that fetched the set now already knows the next key...
    verifier = TokenVerifier(
        issuer=ISSUER, audience="api", keys=JWKSet.from_dict(ring.jwks()), algorithms=["ES256"]
    )
    assert verifier.verify(issuer.issue(subject="svc", audience="api")).header["kid"] == "k1"
    ring.rotate()  # ... so the first token the staged key signs verifies with the cached set
    assert ring.current.kid == "k2" and ring.staged is None
    assert verifier.verify(issuer.issue(subject="svc", audience="api")).header["kid"] == "k2"
    assert [k["kid"] for k in ring.jwks()["keys"]] == ["k2", "k1"]  # k1 stays until retired
    ring.retire("k1")
    assert [k["kid"] for k in ring.jwks()["keys"]] == ["k2"]


def test_rotate_needs_a_key_or_a_staged_one() -> None:
    ring = _ring()
    with pytest.raises(ConfigurationError):
        ring.rotate()
    planned = ring.stage(PrivateJWK.generate("ES256", kid="planned"))
    ring.rotate(PrivateJWK.generate("ES256", kid="emergency"))  # another key: planned stays
    assert ring.current.kid == "emergency" and ring.staged is planned
    assert [k["kid"] for k in ring.jwks()["keys"]] == ["emergency", "planned", "k1"]
    ring.rotate(planned)  # the staged key given explicitly is promoted
    assert ring.current.kid == "planned" and ring.staged is None


def test_rotating_to_other_material_under_the_staged_kid_is_refused() -> None:
    """Verifiers that cached the staged key under that kid would refuse every new token (and a
    known kid never makes them fetch again): the rotation is refused, the ring unchanged."""
    ring = _ring()
    staged = ring.stage(PrivateJWK.generate("ES256", kid="k2"))
    with pytest.raises(ConfigurationError, match="unstage"):
        ring.rotate(PrivateJWK.generate("ES256", kid="k2"))
    assert ring.current.kid == "k1" and ring.staged is staged
    assert ring.rotate(staged) is staged  # the staged key itself, given again, is promoted
    assert ring.staged is None


def test_staging_replaces_and_unstage_withdraws() -> None:
    ring = KeyRing(PrivateJWK.generate("ES256", kid="k1"), staged=PrivateJWK.generate("ES256"))
    assert ring.staged is not None and ring.staged.kid  # a thumbprint kid
    ring.stage(PrivateJWK.generate("ES256", kid="k3"))
    assert [k["kid"] for k in ring.jwks()["keys"]] == ["k1", "k3"]
    ring.unstage()
    assert ring.staged is None and [k["kid"] for k in ring.jwks()["keys"]] == ["k1"]
    ring.unstage()  # nothing staged: nothing happens
    with pytest.raises(ConfigurationError):  # kids stay distinct
        ring.stage(PrivateJWK.generate("ES256", kid="k1"))
    assert "staged" not in repr(ring)
    ring.stage(PrivateJWK.generate("ES256", kid="k4"))
    assert "staged='k4'" in repr(ring)


# --- JWKSEndpoint: the core ----------------------------------------------------------------------


def _headers(headers: list[tuple[str, str]]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers}


def test_get_serves_the_public_keys_with_cache_headers() -> None:
    ring = _ring()
    ring.stage(PrivateJWK.generate("EdDSA", kid="k2"))
    endpoint = JWKSEndpoint(TokenIssuer(ring, issuer=ISSUER), max_age=120)
    status, headers, body = endpoint.respond("GET")
    found = _headers(headers)
    assert status == 200
    assert found["content-type"] == JWKS_MEDIA_TYPE == "application/jwk-set+json"
    assert found["cache-control"] == "public, max-age=120"
    assert found["content-length"] == str(len(body))
    assert found["x-content-type-options"] == "nosniff"
    assert found["etag"].startswith('"') and found["etag"].endswith('"')
    document = json.loads(body)
    assert _kids(body) == ["k1", "k2"]
    private = {"d", "p", "q", "dp", "dq", "qi", "k"}
    assert all(not private & key.keys() for key in document["keys"])  # public members only
    assert JWKSet.from_dict(document).to_public_dict() == ring.jwks()


def test_head_conditional_and_other_methods() -> None:
    endpoint = JWKSEndpoint(_ring())
    _, headers, body = endpoint.respond("GET")
    etag = _headers(headers)["etag"]
    status, head_headers, head_body = endpoint.respond("HEAD")
    assert (status, head_body) == (200, b"")
    assert _headers(head_headers)["content-length"] == str(len(body))
    for condition in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        status, not_modified, empty = endpoint.respond("GET", condition)
        assert (status, empty) == (304, b""), condition
        assert _headers(not_modified)["etag"] == etag
        assert "cache-control" in _headers(not_modified)
    assert endpoint.respond("GET", '"other"')[0] == 200
    assert endpoint.respond("GET", ", ".join(['"x"'] * 40 + [etag]))[0] == 200  # bounded look
    # the first 32 entity tags are looked at, the 33rd no longer
    assert endpoint.respond("GET", ", ".join(['"x"'] * 31 + [etag]))[0] == 304
    assert endpoint.respond("GET", ", ".join(['"x"'] * 32 + [etag]))[0] == 200
    for method in ("POST", "PUT", "DELETE", "OPTIONS", "get"):
        status, refused, empty = endpoint.respond(method)
        assert (status, _headers(refused)["allow"], empty) == (405, "GET, HEAD", b"")


def test_a_not_modified_answer_carries_the_validators_only() -> None:
    """RFC 9110 §15.4.5: a 304 sends the Cache-Control and ETag of the 200 and no other
    representation metadata; the synchronous and asynchronous cores answer alike."""
    endpoint = JWKSEndpoint(_ring(), max_age=60)
    etag = _headers(endpoint.respond("GET")[1])["etag"]
    expected = (304, [("Cache-Control", "public, max-age=60"), ("ETag", etag)], b"")
    assert endpoint.respond("GET", etag) == expected
    assert asyncio.run(endpoint.respond_async("GET", etag)) == expected


def test_a_key_set_and_a_single_key_are_published() -> None:
    one, two = PrivateJWK.generate("ES256", kid="a"), PrivateJWK.generate("EdDSA", kid="b")
    status, _, body = JWKSEndpoint(JWKSet([one.public(), two.public()])).respond("GET")
    assert (status, _kids(body)) == (200, ["a", "b"])
    status, _, body = JWKSEndpoint(one.public()).respond("GET")
    assert (status, _kids(body)) == (200, ["a"])
    status, _, body = JWKSEndpoint(one).respond("GET")  # type: ignore[arg-type]
    assert (status, _kids(body)) == (200, ["a"])
    assert "d" not in json.loads(body)["keys"][0]  # a private key: its public half only


def test_the_document_follows_rotation_and_is_built_once_per_key_set() -> None:
    ring = _ring()
    endpoint = JWKSEndpoint(ring)
    first = endpoint.respond("GET")
    assert endpoint.respond("GET")[2] is first[2]  # serialized once for this key set
    ring.rotate(PrivateJWK.generate("ES256", kid="k2"))
    second = endpoint.respond("GET")
    assert _kids(second[2]) == ["k2", "k1"]
    assert _headers(second[1])["etag"] != _headers(first[1])["etag"]
    assert endpoint.respond("GET", _headers(first[1])["etag"])[0] == 200  # the old tag: stale


def test_secrets_and_bad_settings_are_refused() -> None:
    with pytest.raises(ConfigurationError):
        JWKSEndpoint(SecretKey(b"0" * 32, algorithm="HS256"))  # type: ignore[arg-type]
    for max_age in (-1, 7 * 86400 + 1, 1.5, True):
        with pytest.raises(ConfigurationError):
            JWKSEndpoint(_ring(), max_age=max_age)  # type: ignore[arg-type]
    assert JWKSEndpoint(_ring()).max_age == 300  # five minutes unless told
    assert JWKSEndpoint(_ring(), max_age=7 * 86400).max_age == 7 * 86400  # the limit itself
    assert JWKSEndpoint(_ring(), max_age=0).respond("GET")[1][0] == (
        "Cache-Control",
        "public, max-age=0",
    )


class _Failing:
    """A key source that cannot answer (or answers with secret keys), then recovers."""

    def __init__(self, good: KeyRing) -> None:
        self.good = good
        self.mode = "down"

    def get_keys(self, *, missing_kid: str | None = None) -> Any:
        if self.mode == "down":
            raise KeysUnavailable("the upstream JWKS endpoint is unreachable: 10.0.0.7 timed out")
        if self.mode == "broken":
            raise RuntimeError("a custom source with a bug")
        if self.mode == "secret":
            from zerotrust.tokens import SecretKeySet

            return SecretKeySet(SecretKey(b"1" * 32, algorithm="HS256"))
        return self.good.get_keys()

    async def get_keys_async(self, *, missing_kid: str | None = None) -> Any:
        return self.get_keys()


def test_an_unavailable_source_is_a_bare_503_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    source = _Failing(_ring())
    endpoint = JWKSEndpoint(source)
    with caplog.at_level(logging.WARNING, logger="zerotrust.sources"):
        for _ in range(3):
            status, headers, body = endpoint.respond("GET")
            assert (status, body) == (503, b"")
            assert _headers(headers)["cache-control"] == "no-store"
            assert "retry-after" in _headers(headers)
        source.mode = "secret"  # never published, whatever the source says
        assert endpoint.respond("GET")[0] == 503
        source.mode = "broken"  # nor a 500 for a source that breaks
        assert endpoint.respond("GET")[0] == 503
        assert asyncio.run(endpoint.respond_async("GET"))[0] == 503
    assert len(caplog.records) == 1  # one outage, one line (the reason is for the operator)
    assert "unreachable" in caplog.records[0].getMessage()
    source.mode = "up"
    assert endpoint.respond("GET")[0] == 200
    source.mode = "down"
    with caplog.at_level(logging.WARNING, logger="zerotrust.sources"):
        assert endpoint.respond("GET")[0] == 503
    assert len(caplog.records) == 2  # a new outage is logged again


# --- JWKSEndpoint over real servers ---------------------------------------------------------------


def _listener() -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock, int(sock.getsockname()[1])


@contextmanager
def _uvicorn(app: Any) -> Iterator[int]:
    sock, port = _listener()
    config = uvicorn.Config(app, lifespan="on", log_config=None, access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        yield port
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def _wsgi(app: Any) -> Iterator[int]:
    server = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_port)
    finally:
        server.shutdown()
        server.server_close()


def _verify_through(url: str, issuer: TokenIssuer, ring: KeyRing) -> RemoteJWKSource:
    """zerotrust's own fetcher reads the endpoint: tokens of the ring verify, before and after
    a staged rotation."""
    source = RemoteJWKSource(url, allow_http_loopback=True)
    verifier = TokenVerifier(issuer=ISSUER, audience="api", keys=source, algorithms=["ES256"])
    assert verifier.verify(issuer.issue(subject="svc", audience="api")).subject == "svc"
    ring.stage(PrivateJWK.generate("ES256", kid=f"k{len(ring.jwks()['keys']) + 1}"))
    ring.rotate()
    assert verifier.verify(issuer.issue(subject="svc", audience="api")).subject == "svc"
    return source


def test_served_by_uvicorn_alone_and_fetched_by_remote_jwk_source() -> None:
    ring = _ring()
    issuer = TokenIssuer(ring, issuer=ISSUER)
    with _uvicorn(JWKSEndpoint(ring, max_age=60)) as port:
        url = f"http://127.0.0.1:{port}/.well-known/jwks.json"
        response = httpx.get(url)
        assert response.status_code == 200
        assert response.headers["content-type"] == JWKS_MEDIA_TYPE
        again = httpx.get(url, headers={"If-None-Match": response.headers["etag"]})
        assert (again.status_code, again.content) == (304, b"")
        assert httpx.head(url).headers["content-length"] == response.headers["content-length"]
        assert httpx.post(url).status_code == 405
        _verify_through(url, issuer, ring)


def test_mounted_in_a_fastapi_app_next_to_guarded_routes() -> None:
    """The key set is public: mounted beside the application, outside its Guard."""
    ring = _ring()
    issuer = TokenIssuer(ring, issuer=ISSUER)
    verifier = TokenVerifier(issuer=ISSUER, audience="api", keys=ring, algorithms=["ES256"])
    guard = Guard(authenticator=Authenticator(tokens=verifier), policy=Policy([Rule("any")]))
    api = FastAPI()

    @api.get("/orders")
    async def orders() -> dict[str, str]:
        return {"ok": "yes"}

    api.add_route("/.well-known/jwks.json", JWKSEndpoint(ring), include_in_schema=False)
    ZeroTrust(guard).install(api, exempt=["/.well-known/jwks.json"])
    with _uvicorn(api) as port:
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/orders").status_code == 401  # the application is guarded
        assert httpx.get(f"{base}/.well-known/jwks.json").status_code == 200  # the keys are not
        _verify_through(f"{base}/.well-known/jwks.json", issuer, ring)


def test_served_by_a_wsgi_server() -> None:
    ring = _ring()
    issuer = TokenIssuer(ring, issuer=ISSUER)
    endpoint = JWKSEndpoint(ring)
    with _wsgi(endpoint.wsgi) as port:
        url = f"http://127.0.0.1:{port}/jwks.json"
        response = httpx.get(url)
        assert (response.status_code, response.headers["content-type"]) == (200, JWKS_MEDIA_TYPE)
        etag = response.headers["etag"]
        unchanged = httpx.get(url, headers={"If-None-Match": etag})
        assert unchanged.status_code == 304
        # RFC 9110 §8.6: a 304 states the length of the 200 or none (wsgiref would write 0)
        assert unchanged.headers["content-length"] == response.headers["content-length"]
        assert httpx.request("DELETE", url).status_code == 405
        _verify_through(url, issuer, ring)


def test_a_set_where_one_kid_names_two_keys_is_never_published(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # RFC 7517 §4.5: every verifier would refuse that kid (zerotrust's among them)
    one, two = PrivateJWK.generate("ES256", kid="k1"), PrivateJWK.generate("ES256", kid="k1")
    ambiguous = JWKSet([one.public(), two.public()])
    assert ambiguous.ambiguous_kids == {"k1"}
    with pytest.raises(ConfigurationError, match="kids naming different keys"):
        JWKSEndpoint(ambiguous)

    class Source:
        def get_keys(self) -> JWKSet:
            return ambiguous

        async def get_keys_async(self) -> JWKSet:
            return ambiguous

    status, headers, body = JWKSEndpoint(Source()).respond("GET")  # type: ignore[arg-type]
    assert (status, body) == (503, b"") and ("Cache-Control", "no-store") in headers


def test_the_asgi_application_serves_http_only() -> None:
    """A websocket is closed with 1008 (policy violation) before it is accepted; other scope
    types get nothing; lifespan is answered, as for an application served alone."""
    endpoint = JWKSEndpoint(_ring(), max_age=30)
    assert endpoint.max_age == 30
    sent: list[dict[str, Any]] = []
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: Any) -> None:
        sent.append(dict(message))

    asyncio.run(endpoint({"type": "websocket", "path": "/jwks"}, receive, send))
    assert sent == [{"type": "websocket.close", "code": 1008}]
    sent.clear()
    asyncio.run(endpoint({"type": "other"}, receive, send))
    assert sent == []
    asyncio.run(endpoint({"type": "lifespan"}, receive, send))
    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]


def test_if_none_match_lines_of_an_asgi_request_are_one_list() -> None:
    """RFC 9110 §5.3: a field sent on several lines is one comma-separated list."""
    endpoint = JWKSEndpoint(_ring())
    etag = _headers(endpoint.respond("GET")[1])["etag"]

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    def status_for(headers: list[tuple[bytes, bytes]]) -> int:
        sent: list[dict[str, Any]] = []

        async def send(message: Any) -> None:
            sent.append(dict(message))

        scope = {"type": "http", "method": "GET", "path": "/jwks", "headers": headers}
        asyncio.run(endpoint(scope, receive, send))
        return int(sent[0]["status"])

    assert status_for([(b"if-none-match", b'"other"'), (b"If-None-Match", etag.encode())]) == 304
    assert status_for([(b"if-none-match", b'"other"'), (b"if-none-match", b'"more"')]) == 200
    assert status_for([]) == 200
