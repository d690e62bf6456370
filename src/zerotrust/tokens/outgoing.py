"""Tokens for outgoing calls: the :class:`TokenSource` protocol and its core implementations.

A token source answers one question, "which token do I attach for ``audience``?", through
``token(audience)`` (and, where it has one, ``await token_async(audience)``). The machinery
behind every source here (and behind the OAuth2 sources in :mod:`zerotrust.sources.oauth2`)
is :class:`TokenCache`:

* one token per key (the audience), in a bounded least-recently-used map;
* refreshed ``refresh_before`` seconds before its ``exp`` (default: 20% of its lifetime, at
  least 5 s, but never in the first half of its lifetime);
* single-flight: concurrent callers that need a new token (threads, or tasks of any event
  loop) share one minting; while a still-valid token is being refreshed, the others keep
  using it; a task cancelled while the minting it started runs fails alone (the minting goes
  on for the others);
* a failed refresh while the current token is valid returns the current token (logged once,
  retried after ``retry_interval``); once it has expired, the error is raised;
* tokens are never logged. The expiry of a token is read from its payload *without
  verification* (it was minted here or received from a token endpoint, and is only used to
  schedule the refresh).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from zerotrust._clock import Clock
from zerotrust.errors import ConfigurationError, SourceError
from zerotrust.tokens._outgoing_cache import MintedToken, TokenCache, check_token, seconds
from zerotrust.tokens.issue import TokenIssuer

__all__ = [
    "CachedTokenSource",
    "MintedToken",
    "SelfIssuedTokenSource",
    "StaticTokenSource",
    "TokenCache",
    "TokenSource",
]


@runtime_checkable
class TokenSource(Protocol):
    """Supplies the token to attach to a call for ``audience``: one method, :meth:`token`.

    A source may also have ``async def token_async(audience)``, its async twin, which must
    not block the event loop (every source here has it). Async callers await it, and run
    :meth:`token` in a worker thread for a source without it.
    """

    def token(self, audience: str) -> str:
        """A currently valid token for ``audience`` (may block to obtain one)."""
        ...


async def token_async_of(source: TokenSource, audience: str) -> str:
    """``await source.token_async(audience)``, or ``source.token(audience)`` in a worker thread
    when the source has no ``token_async``."""
    token_async = getattr(source, "token_async", None)
    if callable(token_async):
        token: str = await token_async(audience)
        return token

    def blocking() -> str:
        try:
            return source.token(audience)
        except StopIteration:  # cannot cross into a future: its awaiter would never wake
            raise SourceError("token source failed") from None

    return await asyncio.to_thread(blocking)


def _check_audience(audience: object) -> str:
    if not isinstance(audience, str) or not audience:
        raise ConfigurationError("audience must be a non-empty string")
    return audience


class CachedTokenSource:
    """A :class:`TokenSource` over a minting function, cached per audience.

    ``mint(audience)`` returns a token (or a :class:`MintedToken` with its expiry);
    ``mint_async`` is its async twin, used by :meth:`token_async` (without it, ``mint`` runs
    in a worker thread so the event loop never blocks). Other options: see
    :class:`TokenCache`.
    """

    def __init__(
        self,
        mint: Callable[[str], MintedToken | str],
        *,
        mint_async: Callable[[str], Awaitable[MintedToken | str]] | None = None,
        refresh_before: float | None = None,
        max_audiences: int = 256,
        default_lifetime: float = 60,
        retry_interval: float = 5,
        clock: Clock | None = None,
    ) -> None:
        if not callable(mint) or (mint_async is not None and not callable(mint_async)):
            raise ConfigurationError("mint and mint_async must be callables")
        self._mint = mint
        self._mint_async = mint_async
        self._cache: TokenCache[str] = TokenCache(
            refresh_before=refresh_before,
            max_entries=max_audiences,
            default_lifetime=default_lifetime,
            retry_interval=retry_interval,
            clock=clock,
        )

    def token(self, audience: str) -> str:
        """The token for ``audience``: the cached one until its refresh is due, else one minted
        now (concurrent callers share one minting). A failed refresh falls back to the current
        token while it is valid; otherwise the minting function's error is raised, or
        :class:`~zerotrust.errors.SourceError` for an unusable token or a wait that timed out.
        An empty audience raises :class:`~zerotrust.errors.ConfigurationError`."""
        audience = _check_audience(audience)
        return self._cache.get(audience, lambda: self._mint(audience))

    async def token_async(self, audience: str) -> str:
        """:meth:`token` without blocking the event loop (``mint_async``, else ``mint`` in a
        worker thread)."""
        audience = _check_audience(audience)
        mint_async = self._mint_async
        if mint_async is None:
            return await self._cache.get_async(
                audience, lambda: asyncio.to_thread(self._mint, audience)
            )
        return await self._cache.get_async(audience, lambda: mint_async(audience))

    def clear(self) -> None:
        """Forget every cached token."""
        self._cache.clear()

    def expires_at(self, audience: str, token: str) -> datetime | None:
        """When ``token`` expires, if it is the token cached for ``audience``; ``None``
        otherwise. For a caller that keeps a token it was handed (an opaque one, whose expiry
        it cannot read) and must not use it past that."""
        audience = _check_audience(audience)
        return self._cache.expires_at(token, audience.__eq__)

    def invalidate(self, audience: str, *, token: str | None = None) -> None:
        """Forget the cached token for ``audience`` (e.g. after a 401 ``invalid_token``); with
        ``token``, only if it is the cached one (a late refusal of a token already replaced
        leaves the new one alone)."""
        self._cache.invalidate(_check_audience(audience), token=token)


class SelfIssuedTokenSource(CachedTokenSource):
    """Tokens this service signs itself with a :class:`~zerotrust.tokens.TokenIssuer`, one per
    audience: ``sub=subject``, ``scope`` from ``scopes``, valid for ``ttl`` seconds.

    Pass the issuer's clock as ``clock`` too when it is not the system clock.
    """

    def __init__(
        self,
        issuer: TokenIssuer,
        *,
        subject: str,
        scopes: Iterable[str] = (),
        ttl: float = 300,
        token_type: str | None = None,
        extra_claims: Mapping[str, Any] | None = None,
        refresh_before: float | None = None,
        max_audiences: int = 256,
        clock: Clock | None = None,
    ) -> None:
        if not isinstance(issuer, TokenIssuer):
            raise ConfigurationError("issuer must be a TokenIssuer")
        if not isinstance(subject, str) or not subject:
            raise ConfigurationError("subject must be a non-empty string")
        ttl = seconds("ttl", ttl, 1)
        scope_list = tuple(scopes.split(" ") if isinstance(scopes, str) else scopes)
        claims = dict(extra_claims) if extra_claims else None

        def mint(audience: str) -> str:
            return issuer.issue(
                subject=subject,
                audience=audience,
                scopes=scope_list,
                ttl=ttl,
                extra_claims=claims,
                token_type=token_type,
            )

        async def mint_async(audience: str) -> str:
            return mint(audience)  # signing is CPU-only and fast: no thread needed

        mint("zerotrust-configuration-check")  # configuration errors surface here, not later
        super().__init__(
            mint,
            mint_async=mint_async,
            refresh_before=refresh_before,
            max_audiences=max_audiences,
            clock=clock,
        )
        self._issuer = issuer

    def __repr__(self) -> str:
        return f"SelfIssuedTokenSource({self._issuer!r})"


class StaticTokenSource:
    """The same token for every audience: for tests and simple setups. Never shown in repr."""

    __slots__ = ("_token",)

    def __init__(self, token: str) -> None:
        try:
            self._token = check_token(token)
        except SourceError as exc:
            raise ConfigurationError(str(exc)) from None

    def token(self, audience: str) -> str:
        """The fixed token, whatever ``audience`` is asked for."""
        return self._token

    async def token_async(self, audience: str) -> str:
        """The fixed token, whatever ``audience`` is asked for (async twin of :meth:`token`)."""
        return self._token

    def __repr__(self) -> str:
        return "StaticTokenSource(<token>)"
