"""Rotation under load: server SVID, client SVIDs, token signing key and CA authority are all
rotated while clients keep calling a FastAPI app over mTLS (in-process uvicorn) and a grpc
server; no legitimate request fails, and retired credentials are refused afterwards."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
import pytest
from fastapi import FastAPI

from tests.adapters.asgi._servers import uvicorn_server
from tests.faults.conftest import Load
from tests.grpc_integration._support import EXCLUSIVE_PORT, Seen, add_services, sync_handlers
from zerotrust import (
    Authenticator,
    Callers,
    Guard,
    MemorySink,
    Policy,
    RotatingBundleSource,
    RotatingSvidSource,
    Rule,
    SelfIssuedTokenSource,
    TrustBundle,
    match,
    server_ssl_context,
)
from zerotrust.dev import DevCA
from zerotrust.errors import UnknownKey
from zerotrust.fastapi import ZeroTrust, current_principal
from zerotrust.grpc import (
    ServerIdentityError,
    ServerInterceptor,
    secure_channel,
    server_credentials,
)
from zerotrust.httpx import Client
from zerotrust.tokens import KeyRing, PrivateJWK, TokenIssuer, TokenVerifier

pytestmark = pytest.mark.network

TD = "example.org"
ISS = "https://issuer.test"
SERVER = "spiffe://example.org/echo"
WEB = "spiffe://example.org/web"
WORKERS = 4


@dataclass
class Trust:
    """Everything that rotates: two CAs of one trust domain, SVID sources, the key ring."""

    old_ca: DevCA
    new_ca: DevCA = field(default_factory=lambda: DevCA.create(TD))
    ring: KeyRing = field(default_factory=lambda: KeyRing(PrivateJWK.generate("ES256", kid="k1")))

    def __post_init__(self) -> None:
        self.bundles = RotatingBundleSource(self.old_ca.bundle)
        self.server_svid = RotatingSvidSource(
            self.old_ca.issue_svid(SERVER, dns_names=["localhost"])
        )
        self.client_svids = [
            RotatingSvidSource(self.old_ca.issue_svid(WEB)) for _ in range(WORKERS)
        ]
        self.issuer = TokenIssuer(self.ring, issuer=ISS)
        self.tokens = [SelfIssuedTokenSource(self.issuer, subject=WEB) for _ in range(WORKERS)]
        self.retired_token = ""

    def guard(self) -> Guard:
        verifier = TokenVerifier(issuer=ISS, audience=SERVER, keys=self.ring, algorithms=["ES256"])
        return Guard(
            authenticator=Authenticator(
                tokens=verifier, bundles=self.bundles, require_mtls=True, require_token=True
            ),
            policy=Policy([Rule(id="td", callers=[Callers(trust_domains=[TD])])]),
            audit=MemorySink(),
            service="echo",
        )

    def rotations(self) -> Iterator[str]:
        """Each step of the rotation; the load runs between steps."""
        ca = self.old_ca
        self.server_svid.set(ca.issue_svid(SERVER, dns_names=["localhost"]))
        yield "server svid"
        for source in self.client_svids:
            source.set(ca.issue_svid(WEB))
        yield "client svids"
        self.retired_token = self.tokens[0].token(SERVER)  # signed by k1, still valid
        self.ring.rotate(PrivateJWK.generate("ES256", kid="k2"))
        for tokens in self.tokens:
            tokens.clear()  # clients pick up tokens signed by k2
        yield "signing key"
        both = TrustBundle(
            TD, [*self.old_ca.bundle.x509_authorities, *self.new_ca.bundle.x509_authorities]
        )
        self.bundles.set(both)
        yield "bundle: old + new authority"
        self.server_svid.set(self.new_ca.issue_svid(SERVER, dns_names=["localhost"]))
        yield "server svid from the new authority"
        for source in self.client_svids:
            source.set(self.new_ca.issue_svid(WEB))
        yield "client svids from the new authority"
        self.ring.retire("k1")
        self.bundles.set(self.new_ca.bundle)
        yield "old key and old authority retired"


#: How long retired credentials stay in use after a rotation: clients re-read their token
#: source at least this often (the grpc token plugin polls it every second).
GRACE_PERIOD = 1.5


def rotate_under(
    load: Load, trust: Trust, ok: str, reconnected: Callable[[], None] | None = None
) -> list[str]:
    """Rotate everything while ``load`` runs; ``reconnected`` waits until every client has
    opened a connection since the client SVIDs rotated (keep-alive connections keep the
    certificate they were opened with, which the old authority's retirement refuses)."""
    load.wait_for(lambda c: c[ok] >= 20, "warm")
    steps = []
    for step in trust.rotations():
        load.wait_more(ok, 20)
        if step == "client svids from the new authority":
            time.sleep(GRACE_PERIOD)  # the grace period before k1 and the old CA are retired
            if reconnected is not None:
                reconnected()
        steps.append(step)
    load.wait_more(ok, 20)
    return steps


# --- FastAPI over mTLS --------------------------------------------------------------------


def fastapi_app(guard: Guard) -> FastAPI:
    zt = ZeroTrust(guard)
    app = FastAPI()
    zt.install(app)

    @app.get("/echo/{n}")
    async def echo(n: int) -> dict[str, Any]:
        caller = current_principal()
        assert caller is not None
        return {"n": n, "caller": caller.id}

    return app


@contextmanager
def https_server(trust: Trust) -> Iterator[int]:
    context = server_ssl_context(trust.server_svid, trust.bundles, authorizer=match.member_of(TD))
    with uvicorn_server(fastapi_app(trust.guard()), context, "h11") as port:
        yield port


def refused(attempt: Callable[[], bool], errors: tuple[type[BaseException], ...]) -> bool:
    """True when the attempt was refused (an error, or a non-success answer)."""
    try:
        return not attempt()
    except errors:
        return True


def client(trust: Trust, port: int, svid: Any, tokens: Any) -> httpx.Client:
    return Client(
        svid=svid,
        bundles=trust.bundles,
        server_id=SERVER,
        token_source=tokens,
        audience=SERVER if tokens is not None else None,
        base_url=f"https://localhost:{port}",
        retry=None,  # a failed legitimate request must show, not be retried away
        timeout=20,
    )


def test_fastapi_rotation_under_load(ca: DevCA) -> None:
    trust = Trust(ca)
    with https_server(trust) as port, ExitStack() as stack:
        clients = [
            stack.enter_context(client(trust, port, trust.client_svids[i], trust.tokens[i]))
            for i in range(WORKERS)
        ]
        sent = [0] * WORKERS  # each worker's requests (only its own thread counts them)

        def call(index: int) -> str:
            n = sent[index]
            sent[index] += 1
            # every fourth request of a client closes its connection: rotation reaches new
            # handshakes
            headers = {"connection": "close"} if n % 4 == 0 else {}
            response = clients[index].get(f"/echo/{n}", headers=headers)
            return f"{response.status_code}"

        def reconnected() -> None:
            # five more requests each: one of them closed its connection, the next opened one
            marks = list(sent)
            load.wait_for(
                lambda _: all(now >= mark + 5 for now, mark in zip(sent, marks, strict=True)),
                "every client on a connection opened with its new SVID",
            )

        with Load(call, workers=WORKERS) as load:
            steps = rotate_under(load, trust, "200", reconnected)
        assert not load.errors, load.errors
        assert set(load.snapshot()) == {"200"}, load.snapshot()  # zero failed requests
        assert len(steps) == 7

        # retired authority: a client whose SVID comes from the old CA cannot get in
        outsider = RotatingSvidSource(ca.issue_svid(WEB))
        with client(trust, port, outsider, SelfIssuedTokenSource(trust.issuer, subject=WEB)) as old:
            outcomes = [
                refused(lambda: old.get("/echo/1").status_code == 200, (httpx.TransportError,))
                for _ in range(5)
            ]
        assert all(outcomes)  # zero accepted
        # the retired signing key: test_a_cached_token_of_a_retired_key_is_refused


# --- grpc --------------------------------------------------------------------------------------


@contextmanager
def grpc_server(trust: Trust) -> Iterator[int]:
    pool = futures.ThreadPoolExecutor(max_workers=8)
    server = grpc.server(
        pool, interceptors=[ServerInterceptor(trust.guard())], options=EXCLUSIVE_PORT
    )
    add_services(server, sync_handlers(Seen()), registered=False)
    port = server.add_secure_port(
        "localhost:0", server_credentials(trust.server_svid, trust.bundles)
    )
    assert port
    server.start()
    try:
        yield port
    finally:
        server.stop(None).wait(10)
        pool.shutdown(wait=True)


def grpc_call(channel: Any) -> Callable[[], bytes]:
    method = channel.unary_unary("/test.Echo/Unary")
    return lambda: method(b"x", timeout=20)  # type: ignore[no-any-return]


def test_grpc_rotation_under_load(ca: DevCA) -> None:
    trust = Trust(ca)
    with grpc_server(trust) as port, ExitStack() as stack:
        channels = [
            stack.enter_context(
                secure_channel(
                    f"localhost:{port}",
                    svid=trust.client_svids[i],
                    bundles=trust.bundles,
                    server_id=SERVER,
                    token_source=trust.tokens[i],
                    retry=None,
                )
            )
            for i in range(WORKERS)
        ]
        calls = [grpc_call(channel) for channel in channels]

        def call(index: int) -> str:
            try:
                calls[index]()
            except grpc.RpcError as exc:
                return f"{exc.code().name}"
            return "OK"

        with Load(call, workers=WORKERS) as load:
            steps = rotate_under(load, trust, "OK")
        assert not load.errors, load.errors
        assert set(load.snapshot()) == {"OK"}, load.snapshot()
        assert len(steps) == 7

        with secure_channel(
            f"localhost:{port}",
            svid=ca.issue_svid(WEB),  # the retired authority
            bundles=trust.bundles,
            server_id=SERVER,
            token_source=SelfIssuedTokenSource(trust.issuer, subject=WEB),
            retry=None,
            check_timeout=5,
        ) as old:
            call_old = grpc_call(old)
            errors = (grpc.RpcError, ServerIdentityError, OSError)
            outcomes = [refused(lambda: bool(call_old()), errors) for _ in range(3)]
        assert all(outcomes)  # zero accepted
        # the retired signing key: test_a_cached_token_of_a_retired_key_is_refused


def test_a_cached_token_of_a_retired_key_is_refused() -> None:
    ring = KeyRing(PrivateJWK.generate("ES256", kid="k1"))
    issuer = TokenIssuer(ring, issuer=ISS)
    verifier = TokenVerifier(issuer=ISS, audience=SERVER, keys=ring, algorithms=["ES256"])
    old = issuer.issue(subject=WEB, audience=SERVER)
    verifier.verify(old)  # verified once under load: now in the cache
    ring.rotate(PrivateJWK.generate("ES256", kid="k2"))
    ring.retire("k1")
    assert "k1" not in ring.get_keys()
    with pytest.raises(UnknownKey):
        verifier.verify(old)  # the key is gone: the cache must not answer
