"""How every HTTP adapter answers a refusal: one table, written once.

| outcome                          | status | headers                                              |
|----------------------------------|--------|------------------------------------------------------|
| no credentials                   | 401    | ``WWW-Authenticate: Bearer realm="svc"``             |
| malformed Authorization / DPoP   | 400    | ``... error="invalid_request"``                      |
| token rejected                   | 401    | ``... error="invalid_token"``                        |
| DPoP proof rejected              | 401    | ``WWW-Authenticate: DPoP ... "invalid_dpop_proof"``  |
| certificate rejected             | 401    | ``WWW-Authenticate: Bearer realm="svc"``             |
| missing scopes                   | 403    | ``... error="insufficient_scope", scope="a b"``      |
| policy denial                    | 403    |                                                      |
| rate limited                     | 429    | ``Retry-After: <seconds>``                           |
| keys / store / audit unavailable | 503    |                                                      |

The body is always ``{"error": <code>, "error_description": <terse text>}``: never a stack
trace, a reason that helps an attacker, or anything the caller sent.
"""

from __future__ import annotations

import json
from typing import Final

from zerotrust.pipeline import Outcome

__all__ = ["WEBSOCKET_POLICY_VIOLATION", "refusal", "refusal_body"]

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
