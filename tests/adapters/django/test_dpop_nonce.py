"""Server-provided DPoP nonces through Django: the middleware's refusal and DRF's (whatever
its exception handler: DRF's own writes only ``WWW-Authenticate`` and ``Retry-After``) carry
the ``DPoP-Nonce`` of the ``use_dpop_nonce`` challenge, under WSGI and ASGI."""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import Any

import pytest
from django.conf import settings
from django.test import AsyncClient, Client

from tests.adapters.django.conftest import AUD, EXEMPT, ISS, WEB, Installer, policy
from zerotrust import (
    Authenticator,
    DPoPConfig,
    DPoPNonces,
    Guard,
    MemorySink,
    PrivateJWK,
    TokenIssuer,
    TokenVerifier,
)
from zerotrust.httpx import dpop_proof

ORIGIN = "https://api.example"
CHALLENGE = 'DPoP realm="orders", algs="ES256", error="use_dpop_nonce"'


class Service:
    def __init__(self, install: Installer) -> None:
        self.clock = install.clock
        self.issuer = TokenIssuer(PrivateJWK.generate("ES256"), issuer=ISS, clock=self.clock)
        self.holder = PrivateJWK.generate("ES256")
        self.sink = MemorySink()
        verifier = TokenVerifier(
            issuer=ISS,
            audience=AUD,
            keys=self.issuer.jwks(),
            algorithms=["ES256"],
            clock=self.clock,
        )
        self.nonces = nonces = DPoPNonces(secrets.token_bytes(32))
        dpop = DPoPConfig(algorithms=["ES256"], origins=[ORIGIN], nonces=nonces)
        guard = Guard(
            authenticator=Authenticator(tokens=verifier, dpop=dpop, clock=self.clock),
            policy=policy(),
            audit=self.sink,
            service="orders",
            clock=self.clock,
        )
        install.override(ZEROTRUST={"GUARD": guard, "EXEMPT": list(EXEMPT)})
        self.token = self.issuer.issue(
            subject=WEB,
            audience=AUD,
            scopes=["orders:read"],
            ttl=600,
            extra_claims={"cnf": {"jkt": self.holder.thumbprint()}},
        )

    def headers(self, path: str, nonce: str | None) -> dict[str, str]:
        proof = dpop_proof(
            self.holder,
            method="GET",
            url=ORIGIN + path,
            access_token=self.token,
            nonce=nonce,
            clock=self.clock,
        )
        return {"Authorization": f"DPoP {self.token}", "DPoP": proof}


def get(path: str, headers: dict[str, str], asgi: bool) -> Any:
    if asgi:
        return asyncio.run(AsyncClient().get(path, headers=headers))
    return Client().get(path, headers=headers)


@pytest.mark.parametrize("asgi", [False, True], ids=["wsgi", "asgi"])
@pytest.mark.parametrize(
    ("path", "mode"),
    [
        ("/orders/7/", "middleware"),
        ("/api/orders/", "middleware"),
        ("/api/orders/", "drf alone"),
        ("/api/orders/", "drf alone, drf's exception handler"),
    ],
)
def test_the_challenge_carries_the_nonce(
    install: Installer, path: str, mode: str, asgi: bool
) -> None:
    if mode != "middleware":
        install.override(MIDDLEWARE=[])
    if mode == "drf alone":
        handler = "zerotrust.django.drf_exception_handler"
        install.override(REST_FRAMEWORK={**settings.REST_FRAMEWORK, "EXCEPTION_HANDLER": handler})
    service = Service(install)
    refused = get(path, service.headers(path, None), asgi)
    assert refused.status_code == 401, refused.content
    assert refused["WWW-Authenticate"] == CHALLENGE
    assert refused["Cache-Control"] == "no-store"
    assert json.loads(refused.content)["error"] == "use_dpop_nonce"
    nonce = refused["DPoP-Nonce"]
    allowed = get(path, service.headers(path, nonce), asgi)
    assert allowed.status_code == 200, allowed.content
    assert allowed.get("DPoP-Nonce") is None

    # RFC 9449 8.2: once that nonce is the previous window's, a success brings the current one
    install.clock.advance(service.nonces.lifetime)
    earlier = get(path, service.headers(path, nonce), asgi)
    assert earlier.status_code == 200, earlier.content
    fresh = earlier["DPoP-Nonce"]
    assert fresh == service.nonces.issue(install.clock.now().timestamp()) != nonce
    again = get(path, service.headers(path, fresh), asgi)
    assert again.status_code == 200 and again.get("DPoP-Nonce") is None
    assert [e.reason for e in service.sink.events] == ["use_dpop_nonce"] + ["allowed_by_rule"] * 3


def _drained(response: Any) -> list[Any]:
    """The body of a response, streamed or not (so that all of it ran)."""
    if not response.streaming:
        return [response.content]
    if response.is_async:

        async def drain() -> list[Any]:
            return [part async for part in response.streaming_content]

        return asyncio.run(drain())
    return list(response.streaming_content)


_VIEWS = [
    ("/stream/", "middleware", 200),
    ("/astream/", "middleware", 200),  # an async streamed body: ASGI only
    ("/async/orders/7/", "middleware", 200),
    ("/nowhere/", "middleware", 404),
    ("/api/permission-only/", "middleware", 200),
    ("/api/function/", "middleware", 200),
    ("/api/viewset/", "middleware", 200),
    ("/api/permission-only/", "drf alone", 200),
    ("/api/function/", "drf alone", 200),
    ("/api/viewset/", "drf alone", 200),
]


@pytest.mark.parametrize(
    ("path", "mode", "status", "asgi"),
    [
        pytest.param(*view, asgi, id=f"{view[0]}-{view[1]}-{'asgi' if asgi else 'wsgi'}")
        for view in _VIEWS
        for asgi in (False, True)
        if asgi or view[0] != "/astream/"
    ],
)
def test_every_kind_of_view_brings_the_next_nonce(
    install: Installer, path: str, mode: str, status: int, asgi: bool
) -> None:
    """RFC 9449 8.2 whatever answers: a streamed body (sync or async), an async view, no view
    at all (404), DRF's function views, viewsets and permission-only views, with or without
    the middleware; only when the proof's nonce was an earlier one."""
    if mode == "drf alone":
        install.override(MIDDLEWARE=[])
    service = Service(install)
    nonce = service.nonces.issue(install.clock.now().timestamp())
    install.clock.advance(service.nonces.lifetime)
    earlier = get(path, service.headers(path, nonce), asgi)
    assert earlier.status_code == status, earlier.content
    assert _drained(earlier)
    fresh = service.nonces.issue(install.clock.now().timestamp())
    assert earlier.get("DPoP-Nonce") == fresh
    again = get(path, service.headers(path, fresh), asgi)
    assert again.status_code == status, again.content
    assert _drained(again)
    assert again.get("DPoP-Nonce") is None
    assert [e.decision for e in service.sink.events] == ["allow", "allow"]
