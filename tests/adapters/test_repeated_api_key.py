"""Two API key header lines get one answer whichever server reads them: an ASGI server keeps the
lines apart, a WSGI server joins them with a comma into one value (real servers, real requests)."""

from __future__ import annotations

import http.client
import json
import secrets
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import uvicorn

from tests._werkzeug import werkzeug_serving
from zerotrust import (
    ApiKeys,
    Authenticator,
    Callers,
    Guard,
    MemorySink,
    Policy,
    Rule,
)
from zerotrust.asgi import ZeroTrustMiddleware as ASGIMiddleware
from zerotrust.errors import ConfigurationError
from zerotrust.wsgi import ZeroTrustMiddleware as WSGIMiddleware

pytestmark = pytest.mark.network

KEY = secrets.token_urlsafe(32)


def make_guard() -> tuple[Guard, MemorySink]:
    sink = MemorySink()
    guard = Guard(
        authenticator=Authenticator(api_keys=ApiKeys({"k1": ApiKeys.hash(KEY)})),
        policy=Policy([Rule(id="keys", callers=[Callers(subjects=["api-key:k1"])])]),
        audit=sink,
        service="svc",
    )
    return guard, sink


def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("content-type", "text/plain")])
    return [b"served"]


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"served"})


@contextmanager
def uvicorn_server(app: Any) -> Iterator[int]:
    """The socket listens before the server starts: requests wait in its queue until then."""
    sock = socket.create_server(("127.0.0.1", 0))
    config = uvicorn.Config(app, lifespan="off", log_config=None, access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def send(port: int, values: list[str]) -> tuple[int, str | None, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.putrequest("GET", "/orders/7")
        for value in values:  # one header line each
            connection.putheader("X-Api-Key", value)
        connection.endheaders()
        response = connection.getresponse()
        body = response.read()
        parsed = json.loads(body) if response.status != 200 else body.decode()
        return response.status, response.getheader("www-authenticate"), parsed
    finally:
        connection.close()


@pytest.mark.parametrize("values", [[KEY, KEY], [KEY, "x" * 40], ["x" * 40, KEY]])
def test_two_api_key_lines_are_malformed_under_wsgi_as_under_asgi(values: list[str]) -> None:
    wsgi_guard, wsgi_sink = make_guard()
    asgi_guard, asgi_sink = make_guard()
    with werkzeug_serving(WSGIMiddleware(wsgi_app, guard=wsgi_guard)) as port:
        wsgi = send(port, values)
        assert send(port, [KEY])[0] == 200  # one line: served
    with uvicorn_server(ASGIMiddleware(asgi_app, guard=asgi_guard)) as port:
        asgi = send(port, values)
        assert send(port, [KEY])[0] == 200
    expected = (
        400,
        'Bearer realm="svc", error="invalid_request"',
        {"error": "invalid_request", "error_description": "malformed credentials"},
    )
    assert asgi == expected
    assert wsgi == expected
    refused = [wsgi_sink.events[0], asgi_sink.events[0]]
    assert [(e.decision, e.reason, e.status) for e in refused] == [
        ("deny", "malformed_credentials", 400)
    ] * 2


def test_a_key_with_a_comma_cannot_be_hashed() -> None:
    with pytest.raises(ConfigurationError, match="comma"):
        ApiKeys.hash(KEY + "," + KEY)
