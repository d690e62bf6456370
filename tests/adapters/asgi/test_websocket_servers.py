"""Websockets through the middleware and the dependencies on real servers over direct mTLS:
uvicorn (h11 and httptools, with each websocket implementation) and hypercorn, driven by the
``websockets`` client library."""

import gc
import json
import logging
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any

import pytest
import uvicorn
import websockets
from fastapi import APIRouter, FastAPI, Security, WebSocket
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidStatus
from websockets.frames import Opcode
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from tests.adapters.asgi._servers import READY_TIMEOUT, hypercorn_server, uvicorn_server
from zerotrust import (
    Authenticator,
    Callers,
    FixedClock,
    Guard,
    MemorySink,
    Operations,
    Policy,
    Principal,
    PrivateJWK,
    Rule,
    TokenIssuer,
    TokenVerifier,
    client_ssl_context,
    match,
    server_ssl_context,
)
from zerotrust.asgi import ZeroTrustUvicornConfig
from zerotrust.dev import DevCA
from zerotrust.fastapi import ZeroTrust, current_principal

pytestmark = pytest.mark.network

with warnings.catch_warnings():  # uvicorn's legacy "websockets" implementation, still served
    warnings.simplefilter("ignore")
    import uvicorn.protocols.websockets.websockets_impl

SERVER_ID = "spiffe://example.org/ns/shop/sa/orders"
WEB = "spiffe://example.org/ns/shop/sa/web"
CART = "spiffe://example.org/ns/shop/sa/cart"
STRANGER = "spiffe://example.org/ns/other/sa/stranger"
ISS, AUD = "https://issuer.example", "orders"
# the legacy implementation passes websockets a handler it warns about
_LEGACY = pytest.mark.filterwarnings("ignore:remove second argument:DeprecationWarning")
SERVERS = [
    pytest.param("uvicorn-h11-websockets", marks=_LEGACY),
    "uvicorn-h11-websockets-sansio",
    "uvicorn-h11-wsproto",
    pytest.param("uvicorn-httptools-websockets", marks=_LEGACY),
    "uvicorn-httptools-websockets-sansio",
    "uvicorn-httptools-wsproto",
    "hypercorn",
]
_WS = tuple(int(p) for p in websockets.__version__.split(".")[:2])


@pytest.fixture(scope="module")
def ca() -> DevCA:
    return DevCA.create("example.org")


@pytest.fixture(scope="module")
def key() -> PrivateJWK:
    return PrivateJWK.generate("ES256", kid="k1")


@pytest.fixture(scope="module")
def issuer(key: PrivateJWK) -> TokenIssuer:
    return TokenIssuer(key, issuer=ISS)


def build_app(ca: DevCA, issuer: TokenIssuer) -> tuple[FastAPI, MemorySink, list[str]]:
    sink = MemorySink()
    ran: list[str] = []
    verifier = TokenVerifier(issuer=ISS, audience=AUD, keys=issuer.jwks(), algorithms=["ES256"])
    policy = Policy(
        [
            Rule(
                id="no-strangers-on-sockets",
                action="DENY",
                callers=[Callers(spiffe_ids=[STRANGER])],
                operations=[Operations(kinds=["websocket"])],
            ),
            Rule(
                id="closed-room",
                action="DENY",
                operations=[Operations(routes=["/closed/{room}"])],
            ),
            Rule(
                id="mesh",
                callers=[Callers(trust_domains=["example.org"])],
                operations=[
                    Operations(
                        kinds=["websocket"],
                        routes=[
                            "/rooms/{room}",
                            "/closed/{room}",
                            "/api/feed/{topic}",
                            "/mounted/live/{channel}",
                        ],
                    )
                ],
            ),
            Rule(
                id="tokens",
                callers=[Callers(proven_by=["mtls+jwt"])],
                operations=[Operations(kinds=["websocket"], routes=["/tokens"])],
            ),
        ]
    )
    guard = Guard(
        authenticator=Authenticator(tokens=verifier, bundles=ca.bundle),
        policy=policy,
        audit=sink,
        service="orders",
    )
    zt = ZeroTrust(guard)
    app = FastAPI()
    zt.install(app)

    async def session(websocket: WebSocket, principal: Principal | None) -> None:
        ran.append(websocket.url.path)
        await websocket.accept()
        while True:
            message = await websocket.receive_text()
            if message == "bye":
                break
            current = current_principal()
            state = websocket.state.zerotrust_principal
            await websocket.send_json(
                {
                    "context": current.id if current is not None else None,
                    "state": state.id if state is not None else None,
                    "dependency": principal.id if principal is not None else None,
                    "proven_by": principal.proven_by if principal is not None else None,
                }
            )
        await websocket.close()

    @app.websocket("/rooms/{room}")
    async def room(websocket: WebSocket, principal: Annotated[Principal, Security(zt)]) -> None:
        await session(websocket, principal)

    @app.websocket("/closed/{room}")
    async def closed(websocket: WebSocket) -> None:
        await session(websocket, None)

    @app.websocket("/tokens")
    async def tokens(websocket: WebSocket, principal: Annotated[Principal, Security(zt)]) -> None:
        await session(websocket, principal)

    api = APIRouter(prefix="/api")

    @api.websocket("/feed/{topic}")
    async def feed(websocket: WebSocket) -> None:
        await session(websocket, None)

    app.include_router(api)

    async def live(websocket: WebSocket) -> None:
        await session(websocket, None)

    app.mount("/mounted", Starlette(routes=[WebSocketRoute("/live/{channel}", live)]))
    return app, sink, ran


@contextmanager
def serve(kind: str, app: Any, context: Any) -> Iterator[int]:
    if kind == "hypercorn":
        with hypercorn_server(app, context) as port:
            yield port
        return
    _, http, ws = kind.split("-", 2)
    with uvicorn_server(app, context, http, ws=ws) as port:
        yield port


@pytest.fixture(scope="module", params=SERVERS)
def server(
    request: pytest.FixtureRequest, ca: DevCA, issuer: TokenIssuer
) -> Iterator[tuple[int, MemorySink, list[str]]]:
    app, sink, ran = build_app(ca, issuer)
    svid = ca.issue_svid(SERVER_ID, dns_names=["localhost"])
    context = server_ssl_context(svid, ca.bundle, authorizer=match.member_of("example.org"))
    with serve(request.param, app, context) as port:
        yield port, sink, ran


def open_socket(ca: DevCA, port: int, path: str, who: str = WEB, **kw: Any) -> ClientConnection:
    svid = ca.issue_svid(who)
    context = client_ssl_context(svid, ca.bundle, authorizer=match.exact(SERVER_ID))
    tls: dict[str, Any] = {"ssl": context} if _WS >= (13, 0) else {"ssl_context": context}
    if _WS >= (15, 0):
        tls["proxy"] = None
    return connect(f"wss://localhost:{port}{path}", **tls, open_timeout=30, **kw)


def refused_status(ca: DevCA, port: int, path: str, who: str = WEB, **kw: Any) -> int:
    """The HTTP status of a handshake the server refused: every server answers a close before
    accept with 403, so the socket is never opened."""
    with pytest.raises(InvalidStatus) as refused, open_socket(ca, port, path, who, **kw):
        pass
    status: int = refused.value.response.status_code
    return status


def ask(ws: ClientConnection) -> Any:
    ws.send("who")
    return json.loads(ws.recv(timeout=30))


def test_principal_everywhere_for_the_life_of_each_socket(server: Any, ca: DevCA) -> None:
    port, sink, _ = server
    with (
        open_socket(ca, port, "/rooms/a") as first,
        open_socket(ca, port, "/rooms/b", CART) as second,
    ):
        mine = {"context": WEB, "state": WEB, "dependency": WEB, "proven_by": "mtls"}
        theirs = {"context": CART, "state": CART, "dependency": CART, "proven_by": "mtls"}
        assert ask(first) == mine
        assert ask(second) == theirs
        assert ask(first) == mine
        assert ask(second) == theirs
        first.send("bye")
        second.send("bye")
    assert sink.last.kind == "websocket"


@pytest.mark.parametrize(
    ("path", "who", "rule", "template"),
    [
        ("/closed/a", WEB, "closed-room", "/closed/{room}"),
        ("/rooms/a", STRANGER, "no-strangers-on-sockets", "/rooms/{room}"),
        ("/api/feed/x", STRANGER, "no-strangers-on-sockets", "/api/feed/{topic}"),
        ("/mounted/live/x", STRANGER, "no-strangers-on-sockets", "/mounted/live/{channel}"),
        ("/tokens", WEB, None, "/tokens"),
    ],
)
def test_refused_before_accept(
    server: Any, ca: DevCA, path: str, who: str, rule: str | None, template: str
) -> None:
    """A DENY rule on a websocket route, a DENY rule for websocket kinds on a FastAPI route,
    an included router's and a mounted application's routes, and a route whose only rule
    needs a token: the handshake is refused before the socket is accepted."""
    port, sink, ran = server
    before, handled = len(sink), list(ran)
    assert refused_status(ca, port, path, who) == 403
    assert ran == handled  # no handler ran
    assert len(sink) == before + 1  # one decision, audited once
    event = sink.last
    assert event.kind == "websocket" and event.decision == "deny"
    assert (event.rule_id, event.route) == (rule, template)


@pytest.mark.parametrize(
    ("path", "template"),
    [("/api/feed/x", "/api/feed/{topic}"), ("/mounted/live/x", "/mounted/live/{channel}")],
)
def test_route_templates_of_included_and_mounted_websocket_routes(
    server: Any, ca: DevCA, path: str, template: str
) -> None:
    port, sink, _ = server
    with open_socket(ca, port, path) as ws:
        assert ask(ws)["context"] == WEB
        ws.send("bye")
    assert sink.last.route == template and sink.last.kind == "websocket"


def test_tokens_only_from_the_authorization_header(
    server: Any, ca: DevCA, issuer: TokenIssuer
) -> None:
    """A token in the query string or in Sec-WebSocket-Protocol is not read: the route that
    needs one refuses the handshake; the same token in Authorization is verified."""
    port, sink, ran = server
    token = issuer.issue(subject=WEB, audience=AUD)
    handled = list(ran)
    for path, options in [
        (f"/tokens?access_token={token}", {}),
        ("/tokens", {"subprotocols": [Subprotocol(f"bearer.{token}"), Subprotocol(token)]}),
    ]:
        before = len(sink)
        assert refused_status(ca, port, path, **options) == 403
        assert len(sink) == before + 1
        assert (sink.last.decision, sink.last.proven_by) == ("deny", "mtls")
        assert sink.last.token_jti is None
    assert ran == handled
    authorization = {"Authorization": f"Bearer {token}"}
    with open_socket(ca, port, "/tokens", additional_headers=authorization) as ws:
        assert ask(ws)["proven_by"] == "mtls+jwt"
        ws.send("bye")
    assert sink.last.kind == "websocket" and sink.last.proven_by == "mtls+jwt"


def test_a_refused_handshake_is_audited_with_the_status_sent(
    server: Any, ca: DevCA, key: PrivateJWK
) -> None:
    """Every server answers a websocket closed before it was accepted with 403, whatever the
    refusal (a token that is no token, an expired one: 401 for an HTTP request): the audit
    event records that status, as sent; its reason says what the refusal was."""
    port, sink, _ = server
    past = FixedClock(datetime.now(timezone.utc) - timedelta(hours=2))
    expired = TokenIssuer(key, issuer=ISS, clock=past).issue(subject=WEB, audience=AUD, ttl=60)
    for token, reason in [("x.y.z", "malformed_token"), (expired, "token_expired")]:
        authorization = {"Authorization": f"Bearer {token}"}
        assert refused_status(ca, port, "/tokens", additional_headers=authorization) == 403
        event = sink.last
        assert (event.kind, event.decision, event.reason) == ("websocket", "deny", reason)
        assert event.status == 403


PROXY = "spiffe://example.org/ns/mesh/sa/proxy"
ADMIN = "spiffe://example.org/ns/ops/sa/admin"


def xfcc_for(ca: DevCA, who: str) -> str:
    import hashlib
    from urllib.parse import quote

    from cryptography.hazmat.primitives.serialization import Encoding

    leaf = ca.issue_svid(who).leaf
    pem = leaf.public_bytes(Encoding.PEM).decode()
    digest = hashlib.sha256(leaf.public_bytes(Encoding.DER)).hexdigest()
    return f'By={PROXY};Hash={digest};Cert="{quote(pem, safe="")}";URI={who}'


@pytest.mark.parametrize(
    "kind", ["uvicorn-h11-websockets-sansio", "uvicorn-httptools-wsproto", "hypercorn"]
)
@pytest.mark.parametrize("proxy_at", ["127.0.0.1/32", "10.0.0.1/32"])
def test_forwarded_certificate_from_a_trusted_proxy(kind: str, proxy_at: str, ca: DevCA) -> None:
    """A websocket handshake relayed by the trusted proxy (its address and identity) carries
    the forwarded caller; a caller that is not that proxy sending the header is itself, and
    the header never reaches the handler."""
    from zerotrust import TrustedProxies

    sink = MemorySink()
    guard = Guard(
        authenticator=Authenticator(
            bundles=ca.bundle,
            trusted_proxies=TrustedProxies([proxy_at], spiffe_ids=match.exact(PROXY)),
        ),
        policy=Policy([Rule(id="mesh", callers=[Callers(trust_domains=["example.org"])])]),
        audit=sink,
    )
    zt = ZeroTrust(guard)
    app = FastAPI()
    zt.install(app)

    @app.websocket("/feed")
    async def feed(websocket: WebSocket, principal: Annotated[Principal, Security(zt)]) -> None:
        await websocket.accept()
        forwarded = websocket.headers.get("x-forwarded-client-cert")
        current = current_principal()
        await websocket.send_json(
            {
                "id": principal.id,
                "context": current.id if current is not None else None,
                "proven_by": principal.proven_by,
                "forwarded": forwarded is not None,
            }
        )
        await websocket.close()

    svid = ca.issue_svid(SERVER_ID, dns_names=["localhost"])
    context = server_ssl_context(svid, ca.bundle, authorizer=match.member_of("example.org"))
    with serve(kind, app, context) as port:
        relayed = {"X-Forwarded-Client-Cert": xfcc_for(ca, WEB)}
        with open_socket(ca, port, "/feed", PROXY, additional_headers=relayed) as ws:
            through_proxy = json.loads(ws.recv(timeout=30))
        proxied = sink.last
        spoofed = {"X-Forwarded-Client-Cert": xfcc_for(ca, ADMIN)}
        with open_socket(ca, port, "/feed", WEB, additional_headers=spoofed) as ws:
            direct = json.loads(ws.recv(timeout=30))
        spoof = sink.last
    direct_answer = {"id": WEB, "context": WEB, "proven_by": "mtls", "forwarded": False}
    assert direct == direct_answer
    assert spoof.kind == "websocket" and spoof.spiffe_id == WEB
    if proxy_at == "127.0.0.1/32":  # the proxy's address: its header is believed
        assert through_proxy == {**direct_answer, "proven_by": "proxy-mtls", "forwarded": True}
        assert proxied.kind == "websocket" and "forwarded_cert_xfcc" in proxied.notes
        assert "forwarded_cert_ignored_proxy_id_not_allowed" in spoof.notes
    else:  # another address: the proxy's own certificate, and no header
        assert through_proxy == {**direct_answer, "id": PROXY, "context": PROXY}
        assert "forwarded_cert_ignored_untrusted_peer" in proxied.notes
        assert "forwarded_cert_ignored_untrusted_peer" in spoof.notes


@pytest.mark.parametrize(
    "kind", ["uvicorn-h11-websockets-sansio", "uvicorn-httptools-wsproto", "hypercorn"]
)
def test_dependencies_alone(kind: str, ca: DevCA, issuer: TokenIssuer) -> None:
    sink = MemorySink()
    guard = Guard(
        authenticator=Authenticator(bundles=ca.bundle),
        policy=Policy(
            [
                Rule(
                    id="no-strangers",
                    action="DENY",
                    callers=[Callers(spiffe_ids=[STRANGER])],
                    operations=[Operations(kinds=["websocket"], routes=["/rooms/{room}"])],
                ),
                Rule(id="mesh", callers=[Callers(trust_domains=["example.org"])]),
            ]
        ),
        audit=sink,
    )
    zt = ZeroTrust(guard)
    app = FastAPI(exception_handlers=ZeroTrust.exception_handlers)
    ran: list[str] = []

    @app.websocket("/rooms/{room}")
    async def room(websocket: WebSocket, principal: Annotated[Principal, Security(zt)]) -> None:
        ran.append(principal.id)
        await websocket.accept()
        while (await websocket.receive_text()) != "bye":
            current = current_principal()
            state = websocket.state.zerotrust_principal
            await websocket.send_json(
                {
                    "context": current.id if current is not None else None,
                    "state": state.id if state is not None else None,
                    "dependency": principal.id,
                    "proven_by": principal.proven_by,
                }
            )
        await websocket.close()

    svid = ca.issue_svid(SERVER_ID, dns_names=["localhost"])
    context = server_ssl_context(svid, ca.bundle, authorizer=match.member_of("example.org"))
    with serve(kind, app, context) as port:
        with (
            open_socket(ca, port, "/rooms/a") as first,
            open_socket(ca, port, "/rooms/b", CART) as second,
        ):
            mine = {"context": WEB, "state": WEB, "dependency": WEB, "proven_by": "mtls"}
            theirs = {"context": CART, "state": CART, "dependency": CART, "proven_by": "mtls"}
            assert ask(first) == mine
            assert ask(second) == theirs
            assert ask(first) == mine
            first.send("bye")
            second.send("bye")
        before = len(sink)
        assert refused_status(ca, port, "/rooms/a", STRANGER) == 403
    assert ran == [WEB, CART]
    assert len(sink) == before + 1 and sink.last.kind == "websocket"
    assert sink.last.rule_id == "no-strangers"


class _LifespanAndEcho:
    """A bare ASGI application: records its lifespan, accepts websockets and reads them to
    the end, or with ``one_message`` closes each after its first message."""

    def __init__(self, one_message: bool = False) -> None:
        self.events: list[str] = []
        self.one_message = one_message

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                self.events.append(message["type"])
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        assert scope["type"] == "websocket"
        await receive()
        await send({"type": "websocket.accept"})
        if self.one_message:
            await receive()
            await send({"type": "websocket.close", "code": 1000})
            return
        while (await receive())["type"] != "websocket.disconnect":
            pass


@contextmanager
def _uvicorn(
    ca: DevCA, app: Any, ws: str
) -> Iterator[tuple[uvicorn.Server, int, threading.Thread]]:
    """A uvicorn server the test stops itself (``should_exit``); stopped in any case."""
    svid = ca.issue_svid(SERVER_ID, dns_names=["localhost"])
    listener = socket.create_server(("127.0.0.1", 0))
    config = ZeroTrustUvicornConfig(
        app,
        ssl_context=server_ssl_context(svid, ca.bundle, authorizer=match.member_of("example.org")),
        http="h11",
        ws=ws,
        loop="asyncio",  # the standard library's TLS transport, not uvloop's
        lifespan="on",
        log_config=None,
        access_log=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        _until(lambda: server.started, thread, "uvicorn did not start")
        yield server, listener.getsockname()[1], thread
    finally:
        server.should_exit = True
        thread.join(READY_TIMEOUT)
        listener.close()
    assert not thread.is_alive(), "uvicorn did not stop"


def _until(condition: Any, thread: threading.Thread, failure: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while not condition():
        assert thread.is_alive(), f"the server thread ended: {failure}"
        assert time.monotonic() < deadline, failure
        time.sleep(0.01)


def _closing_handshake_done(ca: DevCA, port: int, last: str | None = None) -> socket.socket:
    """A websocket whose client closed it and got the server's close frame back, but which
    never answers the server's TLS close: the server's side stays closing. ``last``: a
    message sent in the same write as the close frame."""
    context = client_ssl_context(ca.issue_svid(WEB), ca.bundle, authorizer=match.exact(SERVER_ID))
    raw = socket.create_connection(("127.0.0.1", port), timeout=READY_TIMEOUT)
    tls = context.wrap_socket(raw, server_hostname="localhost")
    client = ClientProtocol(parse_uri(f"wss://localhost:{port}/ws"))
    client.send_request(client.connect())

    def exchange() -> list[Any]:
        tls.sendall(b"".join(client.data_to_send()))
        events: list[Any] = []
        while not events:
            client.receive_data(tls.recv(65536))
            events = client.events_received()
        return events

    assert exchange()[0].status_code == 101
    if last is not None:
        client.send_text(last.encode())
    client.send_close(1000)
    assert exchange()[0].opcode is Opcode.CLOSE
    return tls


@contextmanager
def _uvicorn_says() -> Iterator[list[str]]:
    """What uvicorn logs at INFO and above meanwhile: a handler of its own, since uvicorn's
    logging configuration (applied by any server started without ``log_config=None``)
    stops its records from reaching the root logger."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    logger = logging.getLogger("uvicorn.error")
    handler, level = Collect(logging.INFO), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


_UVICORN_WS = ["websockets-sansio", "wsproto", pytest.param("websockets", marks=_LEGACY)]


@pytest.mark.parametrize("ws", _UVICORN_WS)
def test_shutdown_while_a_closed_websocket_finishes_its_tls_close(ws: str, ca: DevCA) -> None:
    """uvicorn shuts down gracefully (waits for the connection, runs the lifespan shutdown)
    while a websocket its client closed is still finishing the TLS close. uvicorn's own
    protocols would send a close frame on it, which the websocket library refuses past the
    closing handshake: the server thread died there, before the lifespan shutdown."""
    app = _LifespanAndEcho()
    with (
        _uvicorn_says() as said,
        _uvicorn(ca, app, ws) as (server, port, thread),
        _closing_handshake_done(ca, port),
    ):
        server.should_exit = True
        waiting = "Waiting for connections to close"
        _until(
            lambda: any(waiting in message for message in said),
            thread,
            "uvicorn never reached its graceful wait",
        )
        assert "lifespan.shutdown" not in app.events  # still waiting for the connection
    assert app.events == ["lifespan.startup", "lifespan.shutdown"]


@pytest.mark.parametrize("ws", _UVICORN_WS)
def test_a_websocket_closed_while_reading_is_paused_releases_its_connection(
    ws: str, ca: DevCA, caplog: pytest.LogCaptureFixture
) -> None:
    """A message and the close frame arrive together: uvicorn pauses reading until the
    application has taken every event, and answers the close meanwhile; the application
    takes the message and ends. Once the client has closed, the connection is released,
    without waiting for the server to stop. Python 3.10's TLS transport paused the socket
    itself and kept the connection forever."""
    with _uvicorn(ca, _LifespanAndEcho(one_message=True), ws) as (server, port, thread):
        for _ in range(3):
            _closing_handshake_done(ca, port, last="bye").close()
        connections = server.server_state.connections
        _until(lambda: not connections, thread, "a connection was kept")
    # nothing failed in the server's callbacks (a task another test's server left behind may
    # be collected, and reported, meanwhile: not this test's business)
    failed = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not [message for message in failed if message.startswith("Exception in callback")]


@pytest.mark.parametrize("one_message", [False, True], ids=["client-closes", "app-closes"])
def test_hypercorn_websocket_ends_are_not_server_errors(
    one_message: bool, ca: DevCA, caplog: pytest.LogCaptureFixture
) -> None:
    """A websocket's TLS connection may end in a transport error once its closing handshake is
    done (the client's close frame arriving after the server's TLS close, say): that is the
    connection's own end, never an unhandled exception of the server."""
    svid = ca.issue_svid(SERVER_ID, dns_names=["localhost"])
    context = server_ssl_context(svid, ca.bundle, authorizer=match.member_of("example.org"))
    with hypercorn_server(_LifespanAndEcho(one_message=one_message), context) as port:
        for _ in range(3):
            with open_socket(ca, port, "/ws") as socket_:
                socket_.send("hello")
                if one_message:
                    with pytest.raises(websockets.ConnectionClosedOK):
                        socket_.recv(timeout=READY_TIMEOUT)
    gc.collect()  # Python 3.10 reports a task's unretrieved exception when it is collected
    failed = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not failed


def test_hypercorn_shutdown_cuts_websockets_still_open_before_the_lifespan_ends(
    ca: DevCA, caplog: pytest.LogCaptureFixture
) -> None:
    """As hypercorn's own serve(): a websocket still open once graceful_timeout has passed is
    cancelled, before the lifespan shutdown runs, and serve_hypercorn returns with nothing left
    served. It was left running: served after the lifespan shutdown, and after the server
    had returned."""
    events: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                events.append(message["type"])
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        await receive()
        await send({"type": "websocket.accept"})
        try:
            while (await receive())["type"] != "websocket.disconnect":
                await send({"type": "websocket.send", "text": "still served"})
        finally:
            events.append("websocket ended")

    svid = ca.issue_svid(SERVER_ID, dns_names=["localhost"])
    context = server_ssl_context(svid, ca.bundle, authorizer=match.member_of("example.org"))
    with ExitStack() as client:
        with hypercorn_server(app, context, graceful_timeout=0) as port:
            open_ = client.enter_context(open_socket(ca, port, "/ws"))
            open_.send("hello")
            assert open_.recv(timeout=READY_TIMEOUT) == "still served"
        # the server has stopped; the client has not closed its websocket
        assert events == ["lifespan.startup", "websocket ended", "lifespan.shutdown"]
        with pytest.raises(websockets.ConnectionClosed):
            open_.recv(timeout=READY_TIMEOUT)
    gc.collect()
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
