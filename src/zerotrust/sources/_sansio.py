"""Sans-IO HTTP values shared by the remote key and token sources.

The decisions of a remote source (what to request, whether a response is acceptable, how long
to cache it) are written as generators that yield :class:`HttpRequest` values and are resumed
with :class:`HttpResponse` values, or have a :class:`FetchError` thrown into them when the
transport fails. The httpx drivers in :mod:`zerotrust.sources._httpx` run such a flow
synchronously or asynchronously; nothing here imports an HTTP client.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Final, TypeVar
from urllib.parse import urlsplit

__all__ = [
    "ACCEPT_JSON",
    "FetchError",
    "Flow",
    "HttpRequest",
    "HttpResponse",
    "is_loopback_host",
    "safe_url",
    "url_problem",
]

T = TypeVar("T")

ACCEPT_JSON: Final = "application/json"


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One request a flow wants sent. ``headers`` and ``form`` may hold credentials: no repr."""

    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    form: Mapping[str, str] | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A response read completely within the size bound; header names are lower case."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = field(default=b"", repr=False)


class FetchError(Exception):
    """A transport failure or an unacceptable response.

    The message is safe to log: it never holds a response body, a token or a secret. It never
    leaves :mod:`zerotrust.sources`: sources translate it into a zerotrust error.
    """


Flow = Generator[HttpRequest, HttpResponse, T]
"""A sans-IO exchange: yields requests, is sent responses, returns a result."""


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` is ``localhost`` or a loopback IP address literal."""
    host = host.lower().rstrip(".")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def url_problem(url: object, *, allow_http_loopback: bool) -> str | None:
    """Why ``url`` may not be fetched (``None`` if it may).

    Only ``https`` URLs are fetched; plain ``http`` only for a loopback host and only when
    ``allow_http_loopback`` is set. Credentials in the URL and fragments are refused.
    """
    if not isinstance(url, str) or not url:
        return "URL must be a non-empty string"
    if not url.isascii() or any(ch <= " " or ch == "\x7f" for ch in url):
        return "URL must be ASCII without spaces or control characters"
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return "URL is not valid"
    if not host:
        return "URL has no host"
    if parts.username is not None or parts.password is not None:
        return "URL may not hold credentials"
    if parts.fragment:
        return "URL may not have a fragment"
    if parts.scheme == "https":
        return None
    if parts.scheme == "http":
        if not is_loopback_host(host):
            return "plain http is refused: use https"
        if not allow_http_loopback:
            return "plain http to a loopback host needs allow_http_loopback=True"
        return None
    return f"URL scheme must be https, not {parts.scheme!r}"


def safe_url(url: str) -> str:
    """``url`` without its query string, for log lines and error messages."""
    return url.split("?", 1)[0].split("#", 1)[0]
