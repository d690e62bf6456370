"""``JWKSEndpoint``: serve an issuer's public keys as a JWKS document (RFC 7517) over HTTP.

One neutral core, :meth:`JWKSEndpoint.respond` (method and ``If-None-Match`` in; status,
headers and body out), and two thin servers over it: the endpoint is an ASGI application
itself (mount it in Starlette or FastAPI, or serve it alone) and :meth:`JWKSEndpoint.wsgi` is
a WSGI application (Flask, Django, gunicorn). Flask and Django views can return what
``respond`` gives.

What the response says:

* ``200`` with ``Content-Type: application/jwk-set+json`` (RFC 7517 section 8.5.1) and the
  public keys only (a ``KeyRing`` publishes its current, staged and previous keys);
* ``Cache-Control: public, max-age=<max_age>`` and a strong ``ETag`` (``If-None-Match`` is
  answered ``304``): verifiers may hold the document that long, so stage a new key
  (:meth:`~zerotrust.tokens.KeyRing.stage`) at least ``max_age`` before it signs;
* ``HEAD`` as ``GET`` without the body, any other method ``405`` with ``Allow: GET, HEAD``;
* ``503`` with ``Cache-Control: no-store`` when the key source cannot answer: nothing stale
  or partial is served, and nothing about the failure.

The document is serialized once per key set (a ``KeyRing`` swaps its set on every change), so
a request costs a lookup. Secret (HMAC) keys cannot be published: they are refused when the
endpoint is built, and a source that returns them is answered ``503``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, Final, cast

from zerotrust.errors import ConfigurationError
from zerotrust.tokens.issue import TokenIssuer
from zerotrust.tokens.jwks import JWKSet
from zerotrust.tokens.keyring import KeyRing
from zerotrust.tokens.keys import JWK
from zerotrust.tokens.secret import SecretKey, SecretKeySet
from zerotrust.tokens.sources import KeySource, as_key_source, get_keys_async_of

__all__ = ["JWKS_MEDIA_TYPE", "JWKSEndpoint"]

#: The media type of a JWK Set document (RFC 7517 section 8.5.1).
JWKS_MEDIA_TYPE: Final = "application/jwk-set+json"
_ALLOW: Final = "GET, HEAD"
_MAX_AGE_LIMIT: Final = 7 * 86400
_MAX_ETAGS: Final = 32  # If-None-Match entries looked at
_log = logging.getLogger("zerotrust.sources")

Response = tuple[int, list[tuple[str, str]], bytes]


class JWKSEndpoint:
    """Serve the public keys of ``keys`` -- a :class:`~zerotrust.tokens.KeyRing`, a
    :class:`~zerotrust.tokens.TokenIssuer` (its ring), a :class:`~zerotrust.tokens.JWKSet`, a
    public :class:`~zerotrust.tokens.JWK` or any :class:`~zerotrust.tokens.KeySource` -- as a
    JWKS document, with ``Cache-Control: public, max-age=<max_age>`` (seconds, 0 to 7 days).

    The instance is an ASGI application; :meth:`wsgi` is the WSGI one. Keep the route out of
    the Guard's checks (``exempt=`` of the middleware): verifiers fetch it without credentials.
    """

    __slots__ = ("_cached", "_failing", "_max_age", "_source")

    def __init__(
        self, keys: KeyRing | TokenIssuer | JWKSet | JWK | KeySource, *, max_age: int = 300
    ) -> None:
        if isinstance(cast(object, keys), (SecretKey, SecretKeySet)):  # typed out; checked too
            raise ConfigurationError("HMAC keys are secrets: they are never published")
        if isinstance(keys, TokenIssuer):
            keys = keys.key_ring
        if isinstance(max_age, bool) or not isinstance(max_age, int):
            raise ConfigurationError("max_age is a whole number of seconds")
        if not 0 <= max_age <= _MAX_AGE_LIMIT:
            raise ConfigurationError(f"max_age must be between 0 and {_MAX_AGE_LIMIT} seconds")
        if isinstance(keys, JWKSet) and keys.ambiguous_kids:
            raise ConfigurationError(
                f"kids naming different keys cannot be published: {sorted(keys.ambiguous_kids)}"
            )
        self._source: KeySource = as_key_source(keys)
        self._max_age = max_age
        # (the key set, its document, its ETag): rebuilt when the source hands out another set
        # (two threads may both build it once: the same bytes; the swap itself is atomic)
        self._cached: tuple[JWKSet, bytes, str] | None = None
        self._failing = False  # the outage is logged once, when it starts

    @property
    def max_age(self) -> int:
        """How long verifiers may keep the document, in seconds."""
        return self._max_age

    # --- the core ---------------------------------------------------------------------------

    def respond(self, method: str, if_none_match: str | None = None) -> Response:
        """``(status, headers, body)`` for a request with this method and ``If-None-Match``
        header, asking the key source in the calling thread."""
        return self._respond(method, if_none_match, wsgi=False)

    def _respond(self, method: str, if_none_match: str | None, *, wsgi: bool) -> Response:
        if method not in ("GET", "HEAD"):
            return _not_allowed()
        try:
            keys = self._source.get_keys()
        except Exception as exc:  # keys unavailable, or a source that broke: never a 500
            return self._unavailable(exc)
        return self._answer(keys, method, if_none_match, wsgi=wsgi)

    async def respond_async(self, method: str, if_none_match: str | None = None) -> Response:
        """:meth:`respond` awaiting the key source (for a remote one: without blocking)."""
        if method not in ("GET", "HEAD"):
            return _not_allowed()
        try:
            keys = await get_keys_async_of(self._source)
        except Exception as exc:  # keys unavailable, or a source that broke: never a 500
            return self._unavailable(exc)
        return self._answer(keys, method, if_none_match)

    def _answer(
        self, keys: object, method: str, if_none_match: str | None, *, wsgi: bool = False
    ) -> Response:
        if not isinstance(keys, JWKSet):  # a SecretKeySet, or anything else: never published
            return self._unavailable(ConfigurationError("the key source gave no public key set"))
        if keys.ambiguous_kids:  # RFC 7517 §4.5: verifiers would refuse every such kid
            return self._unavailable(
                ConfigurationError(f"kids naming different keys: {sorted(keys.ambiguous_kids)}")
            )
        self._failing = False
        body, etag = self._document(keys)
        headers = [
            ("Cache-Control", f"public, max-age={self._max_age}"),
            ("ETag", etag),
        ]
        if if_none_match is not None and _matches(if_none_match, etag):
            if wsgi:  # a WSGI server would add "Content-Length: 0", which RFC 9110 §8.6 forbids
                headers.append(("Content-Length", str(len(body))))
            return 304, headers, b""
        headers += [
            ("Content-Type", JWKS_MEDIA_TYPE),
            ("Content-Length", str(len(body))),
            ("X-Content-Type-Options", "nosniff"),
        ]
        return 200, headers, b"" if method == "HEAD" else body

    def _document(self, keys: JWKSet) -> tuple[bytes, str]:
        cached = self._cached
        if cached is not None and cached[0] is keys:
            return cached[1], cached[2]
        body = json.dumps(keys.to_public_dict(), separators=(",", ":")).encode("ascii")
        digest = hashlib.sha256(body).digest()[:18]
        etag = '"' + base64.urlsafe_b64encode(digest).decode("ascii") + '"'
        self._cached = (keys, body, etag)
        return body, etag

    def _unavailable(self, error: Exception) -> Response:
        # the operator learns why (once per outage); the caller only to come back later
        if not self._failing:
            self._failing = True
            _log.warning("zerotrust: the JWKS endpoint has no keys to publish: %s", error)
        headers = [("Cache-Control", "no-store"), ("Retry-After", "5"), ("Content-Length", "0")]
        return 503, headers, b""

    # --- ASGI --------------------------------------------------------------------------------

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        kind = scope.get("type")
        if kind == "lifespan":  # served alone: nothing to start or stop
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if kind != "http":
            if kind == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            return
        if_none_match = _header(scope.get("headers") or (), b"if-none-match")
        status, headers, body = await self.respond_async(str(scope.get("method")), if_none_match)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in headers],
            }
        )
        await send({"type": "http.response.body", "body": body})

    # --- WSGI --------------------------------------------------------------------------------

    def wsgi(
        self, environ: MutableMapping[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        """The WSGI application serving the document."""
        status, headers, body = self._respond(
            str(environ.get("REQUEST_METHOD", "GET")), environ.get("HTTP_IF_NONE_MATCH"), wsgi=True
        )
        start_response(f"{status} {_REASONS[status]}", headers)
        return [body]

    def __repr__(self) -> str:
        return f"JWKSEndpoint({self._source!r}, max_age={self._max_age})"


_REASONS: Final = {
    200: "OK",
    304: "Not Modified",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}


def _not_allowed() -> Response:
    return 405, [("Allow", _ALLOW), ("Content-Length", "0")], b""


def _matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 13.1.2: ``*`` or a listed entity tag (weak comparison)."""
    value = if_none_match.strip()
    if value == "*":
        return True
    for index, candidate in enumerate(value.split(",")):
        if index >= _MAX_ETAGS:
            return False
        tag = candidate.strip()
        if tag.startswith("W/"):
            tag = tag[2:]
        if tag == etag:
            return True
    return False


def _header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    found = [value for key, value in headers if key.lower() == name]
    return b", ".join(found).decode("latin-1") if found else None
