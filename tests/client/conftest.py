"""Fixtures for the httpx client tests: a dev CA's SVIDs and a running mTLS server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

import httpx
import pytest

from tests._zt_https import ZtHttpsServer
from zerotrust import X509Svid
from zerotrust.dev import DevCA
from zerotrust.httpx import AsyncClient, Client
from zerotrust.tokens.outgoing import CachedTokenSource, MintedToken

SERVER_ID = "spiffe://example.org/ns/shop/sa/api"
CLIENT_ID = "spiffe://example.org/ns/shop/sa/web"

Mode = Literal["sync", "async"]


@pytest.fixture(scope="session")
def server_svid(ca: DevCA) -> X509Svid:
    return ca.issue_svid(SERVER_ID, dns_names=["localhost"])


@pytest.fixture(scope="session")
def client_svid(ca: DevCA) -> X509Svid:
    return ca.issue_svid(CLIENT_ID)


@pytest.fixture
def server(ca: DevCA, server_svid: X509Svid) -> Iterator[ZtHttpsServer]:
    with ZtHttpsServer(server_svid, ca.bundle) as running:
        yield running


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> Mode:
    """Every client test runs with ``Client`` and with ``AsyncClient``."""
    return request.param  # type: ignore[no-any-return]


Call = tuple[str, str] | tuple[str, str, dict[str, Any]]


def send(mode: Mode, calls: Sequence[Call], **client_options: Any) -> list[httpx.Response]:
    """Build a client with ``client_options``, make ``calls`` in order, close the client."""

    def split(call: Call) -> tuple[str, str, dict[str, Any]]:
        return (call[0], call[1], call[2] if len(call) == 3 else {})

    if mode == "sync":
        with Client(**client_options) as client:
            return [client.request(m, u, **kw) for m, u, kw in map(split, calls)]

    async def run() -> list[httpx.Response]:
        async with AsyncClient(**client_options) as client:
            return [await client.request(m, u, **kw) for m, u, kw in map(split, calls)]

    return asyncio.run(run())


def streamed(mode: Mode, *parts: bytes) -> Iterator[bytes] | AsyncIterator[bytes]:
    """A request body that can be sent once only (a streamed upload)."""

    def chunks() -> Iterator[bytes]:
        yield from parts

    async def achunks() -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    return chunks() if mode == "sync" else achunks()


def tls(ca: DevCA, client_svid: X509Svid) -> dict[str, Any]:
    """The mTLS options of a client that expects the test server's SPIFFE ID."""
    return {"svid": client_svid, "bundles": ca.bundle, "server_id": SERVER_ID}


@dataclass
class CountingSource:
    """A real CachedTokenSource whose mints are numbered and recorded (audience per mint)."""

    minted: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.source = CachedTokenSource(self._mint)

    def _mint(self, audience: str) -> MintedToken:
        self.minted.append(audience)
        expires = datetime.now(timezone.utc) + timedelta(minutes=10)
        # a token's characters are RFC 6750's b64token: the audience's ':' is written '~'
        return MintedToken(f"token-{len(self.minted)}-for-{audience.replace(':', '~')}", expires)
