"""A WSGI application under an ASGI server: header names spelled with ``_``.

The WSGI shims of ASGI servers file ``X_Forwarded_Client_Cert`` under the environ key of
``X-Forwarded-Client-Cert``. Behind a proxy that passes such names on and sanitizes only the
hyphenated header, a client without a certificate could name any workload's certificate.
``DropUnderscoreHeaders`` around the shim removes them. Real uvicorn and hypercorn processes
serve the application from a listening socket the test made (``tests._server_process``:
queued connections wait for the server, no polling); in-process tests cover asgiref's
``WsgiToAsgi`` and the scope handling.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from asgiref.wsgi import WsgiToAsgi
from cryptography.hazmat.primitives.serialization import Encoding

from tests._server_process import TIMEOUT, ServerProcess, server_process
from tests.adapters.asgi._wsgi_app import create
from zerotrust.asgi import DropUnderscoreHeaders
from zerotrust.dev import DevCA
from zerotrust.errors import ConfigurationError

UVICORN = [sys.executable, "-m", "uvicorn"]
APP = "tests.adapters.asgi._wsgi_app"
ADMIN = "spiffe://example.org/admin"
WEB = "spiffe://example.org/web"


@pytest.fixture(scope="module")
def ca() -> DevCA:
    return DevCA.create("example.org")


def xfcc(ca: DevCA, spiffe_id: str) -> str:
    pem = ca.issue_svid(spiffe_id).leaf.public_bytes(Encoding.PEM).decode()
    return f'Cert="{quote(pem, safe="")}"'


def server_command(server: str, target: str) -> Callable[[int], list[str]]:
    def command(fd: int) -> list[str]:
        if server == "uvicorn --interface wsgi":
            return [*UVICORN, "--fd", str(fd), "--interface", "wsgi", "--factory", target]
        if server == "uvicorn":
            return [*UVICORN, "--fd", str(fd), "--factory", target]
        return [sys.executable, "-m", "hypercorn", "--bind", f"fd://{fd}", f"{target}()"]

    return command


@pytest.fixture
def bundle(ca: DevCA, tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "bundle.pem"
    path.write_bytes(ca.bundle.to_pem())
    return {"ZT_TEST_BUNDLE": str(path)}


def get(server: ServerProcess, headers: dict[str, str]) -> tuple[int, Any]:
    """One request as the proxy relays it (http.client sends header names as given)."""
    conn = http.client.HTTPConnection(*server.address, timeout=TIMEOUT)
    try:
        conn.request("GET", "/whoami", headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    except TimeoutError:
        raise AssertionError("no answer:\n" + server.log()) from None
    finally:
        conn.close()


@pytest.mark.network
@pytest.mark.parametrize(
    ("server", "target"),
    [("uvicorn --interface wsgi", f"{APP}:plain"), ("hypercorn", f"{APP}:plain")],
)
def test_the_wsgi_shims_of_asgi_servers_merge_underscore_names(
    ca: DevCA, bundle: dict[str, str], server: str, target: str
) -> None:
    """What the wrapper is for: served as is, the spoofed spelling is believed."""
    forged = {"X_Forwarded_Client_Cert": xfcc(ca, ADMIN)}
    with server_process(server_command(server, target), env=bundle) as running:
        assert get(running, forged) == (200, {"caller": ADMIN, "via": "proxy-mtls"})


@pytest.mark.network
@pytest.mark.parametrize(
    ("server", "target"),
    [("uvicorn", f"{APP}:uvicorn_shim"), ("hypercorn", f"{APP}:asgiref_shim")],
)
def test_underscore_names_never_reach_a_wrapped_shim(
    ca: DevCA, bundle: dict[str, str], server: str, target: str
) -> None:
    forged = {"X_Forwarded_Client_Cert": xfcc(ca, ADMIN)}
    genuine = {"X-Forwarded-Client-Cert": xfcc(ca, WEB)}
    with server_process(server_command(server, target), env=bundle) as running:
        status, body = get(running, forged)
        assert (status, body["error"]) == (401, "missing_credentials")
        # the proxy's own header still works, and a spoofed spelling after it is not joined
        assert get(running, genuine) == (200, {"caller": WEB, "via": "proxy-mtls"})
        both = {**genuine, **forged}
        assert get(running, both) == (200, {"caller": WEB, "via": "proxy-mtls"})


# --- in process ----------------------------------------------------------------------------


def call(app: Any, scope: dict[str, Any]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


def http_scope(headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/whoami",
        "raw_path": b"/whoami",
        "query_string": b"",
        "root_path": "",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "headers": [(b"host", b"app"), *headers],
    }


@pytest.mark.parametrize(
    "name", [b"x_forwarded_client_cert", b"X_Forwarded_Client_Cert", b"x-forwarded_client-cert"]
)
def test_asgiref_wsgi_to_asgi_behind_the_wrapper(ca: DevCA, name: bytes) -> None:
    flask_app = create(ca.bundle)
    forged = (name, xfcc(ca, ADMIN).encode())
    unwrapped = call(WsgiToAsgi(flask_app), http_scope([forged]))
    assert unwrapped[0]["status"] == 200  # the hazard, in process
    wrapped = DropUnderscoreHeaders(WsgiToAsgi(flask_app))
    assert call(wrapped, http_scope([forged]))[0]["status"] == 401
    genuine = (b"x-forwarded-client-cert", xfcc(ca, WEB).encode())
    answer = call(wrapped, http_scope([genuine, forged]))
    assert answer[0]["status"] == 200
    assert json.loads(answer[1]["body"])["caller"] == WEB


def test_every_underscore_name_is_dropped_from_a_copy_of_the_scope() -> None:
    seen: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope)

    wrapped = DropUnderscoreHeaders(app)
    headers = [
        (b"host", b"app"),
        (b"x_forwarded_for", b"10.0.0.1"),
        (b"x-request-id", b"1"),
        (b"X_Custom", b"v"),
        (b"accept", b"*/*"),
    ]
    for kind in ("http", "websocket"):
        scope = {"type": kind, "path": "/", "headers": list(headers)}
        asyncio.run(wrapped(scope, None, None))
        assert seen[-1]["headers"] == [
            (b"host", b"app"),
            (b"x-request-id", b"1"),
            (b"accept", b"*/*"),
        ]
        assert seen[-1]["type"] == kind and seen[-1]["path"] == "/"
        assert scope["headers"] == headers  # the server's scope is left as it was
    plain = {"type": "http", "headers": [(b"host", b"app")]}
    lifespan = {"type": "lifespan", "headers": [(b"x_y", b"z")]}
    for scope in (plain, lifespan):
        asyncio.run(wrapped(scope, None, None))
        assert seen[-1] is scope  # nothing to drop, or not a request: passed as it is


def test_the_wrapper_takes_an_asgi_application_not_a_wsgi_one(ca: DevCA) -> None:
    flask_app = create(ca.bundle)
    with pytest.raises(ConfigurationError, match="not the WSGI application itself"):
        DropUnderscoreHeaders(flask_app)  # type: ignore[arg-type]
    assert DropUnderscoreHeaders(WsgiToAsgi(flask_app)).app is not None
