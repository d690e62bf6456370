"""How every HTTP adapter answers a refusal: one table, written once.

| outcome                          | status | headers                                              |
|----------------------------------|--------|------------------------------------------------------|
| no credentials                   | 401    | ``WWW-Authenticate: Bearer realm="svc"``             |
| malformed Authorization / DPoP   | 400    | ``... error="invalid_request"``                      |
| token rejected                   | 401    | ``... error="invalid_token"``                        |
| DPoP proof rejected              | 401    | ``WWW-Authenticate: DPoP ... "invalid_dpop_proof"``  |
| DPoP proof without the nonce     | 401    | ``... "use_dpop_nonce"`` and ``DPoP-Nonce: <nonce>`` |
| certificate rejected             | 401    | ``WWW-Authenticate: Bearer realm="svc"``             |
| missing scopes                   | 403    | ``... error="insufficient_scope", scope="a b"``      |
| ... of a caller without a token  | 403    | ``... scope="a b"`` (RFC 6750 3.1: no error code)    |
| policy denial                    | 403    |                                                      |
| rate limited                     | 429    | ``Retry-After: <seconds>``                           |
| keys / store / audit unavailable | 503    |                                                      |

The body is always ``{"error": <code>, "error_description": <terse text>}``: never a stack
trace, a reason that helps an attacker, or anything the caller sent.

An allowed request's outcome may carry headers for the application's response too (the
service's current ``DPoP-Nonce``, RFC 9449 8.2): :func:`wsgi_adding_headers` and
:func:`asgi_adding_headers` add them.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

from zerotrust.pipeline import Outcome

__all__ = [
    "WEBSOCKET_POLICY_VIOLATION",
    "asgi_adding_headers",
    "refusal",
    "refusal_body",
    "wsgi_adding_headers",
]

Headers = tuple[tuple[str, str], ...]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

#: RFC 6455 close code for a refused websocket.
WEBSOCKET_POLICY_VIOLATION: Final = 1008

_FALLBACK: Final = b'{"error":"access_denied","error_description":"access denied"}'


def refusal_body(outcome: Outcome) -> bytes:
    body = outcome.body()
    return json.dumps(body, separators=(",", ":")).encode() if body else _FALLBACK


def refusal(outcome: Outcome) -> tuple[int, list[tuple[str, str]], bytes]:
    """``(status, headers, body)`` for a refused request, identical in every framework."""
    body = refusal_body(outcome)
    headers = [
        ("content-type", "application/json"),
        ("content-length", str(len(body))),
        ("cache-control", "no-store"),
        *((name.lower(), value) for name, value in outcome.headers),
    ]
    return outcome.status, headers, body


def wsgi_adding_headers(start_response: Callable[..., Any], headers: Headers) -> Callable[..., Any]:
    """``start_response`` with ``headers`` added to the application's response."""
    extra = list(headers)

    def start(status: str, response_headers: list[tuple[str, str]], *exc_info: Any) -> Any:
        return start_response(status, [*response_headers, *extra], *exc_info)

    return start


def asgi_adding_headers(send: Send, headers: Headers) -> Send:
    """``send`` with ``headers`` added to the application's ``http.response.start``."""
    extra = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]

    async def sending(message: MutableMapping[str, Any]) -> None:
        if message.get("type") == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), *extra]}
        await send(message)

    return sending
