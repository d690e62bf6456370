"""OAuth 2.0 token sources for outgoing calls, over httpx (sync and async).

* :class:`ClientCredentialsTokenSource` -- the client credentials grant (RFC 6749 §4.4), one
  token per audience, requested with the ``audience`` (or RFC 8707 ``resource``) parameter.
* :class:`TokenExchangeTokenSource` -- RFC 8693 token exchange: a token for ``audience`` on
  behalf of a subject token (and optionally an actor token), cached per audience *and* per
  subject/actor token, so one caller's exchanged token is never handed to another.

Both are :class:`~zerotrust.tokens.outgoing.TokenSource` implementations built on
:class:`~zerotrust.tokens.outgoing.TokenCache` (refresh before expiry, single-flight, the
current token kept while a refresh fails) and share the transport rules of every remote
source: https only (plain http to a loopback host with ``allow_http_loopback``), no
redirects, ``timeout``, responses bounded by ``max_bytes``. Client authentication: see
:mod:`zerotrust.sources._oauth2_flow` (``client_secret`` via HTTP Basic by default,
``private_key_jwt``, or ``mtls`` with an ``ssl.SSLContext`` holding the client certificate).
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, Final, Literal, TypeVar

import httpx

from zerotrust._clock import SYSTEM_CLOCK, Clock
from zerotrust.errors import ConfigurationError
from zerotrust.sources._httpx import HttpxTransport
from zerotrust.sources._oauth2_flow import (
    ACCESS_TOKEN_TYPE,
    ClientAuth,
    SecretMethod,
    scope_string,
    token_flow,
)
from zerotrust.sources._sansio import safe_url, url_problem
from zerotrust.tokens._outgoing_cache import MintedToken, TokenCache, check_token
from zerotrust.tokens.issue import TokenIssuer
from zerotrust.tokens.keys import PrivateJWK
from zerotrust.tokens.outgoing import TokenSource, token_async_of

__all__ = ["ClientCredentialsTokenSource", "TokenExchangeTokenSource"]

JWT_TOKEN_TYPE: Final = "urn:ietf:params:oauth:token-type:jwt"  # noqa: S105
TOKEN_EXCHANGE_GRANT: Final = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105

AudienceParam = Literal["audience", "resource"]
_S = TypeVar("_S", bound="_OAuth2Source")
SubjectToken = TokenSource | Callable[[], str]


class _OAuth2Source:
    """Shared set-up: endpoint, client authentication, transport and cache."""

    def __init__(self, token_url: str, options: dict[str, Any], *, auth_required: bool) -> None:
        problem = url_problem(token_url, allow_http_loopback=options["allow_http_loopback"])
        if problem is not None:
            raise ConfigurationError(f"token_url refused: {problem}")
        if options["audience_param"] not in ("audience", "resource"):
            raise ConfigurationError("audience_param must be 'audience' or 'resource'")
        self._auth = ClientAuth(
            client_id=options["client_id"],
            client_secret=options["client_secret"],
            private_key_jwt=options["private_key_jwt"],
            mtls=options["mtls"],
            secret_method=options["secret_method"],
            required=auth_required,
            assertion_audience=options["assertion_audience"],
        )
        verify = options["verify"]
        if self._auth.mtls is not None:
            if options["client"] is not None or options["async_client"] is not None:
                raise ConfigurationError("mtls configures the clients the source builds")
            if verify is not True:
                raise ConfigurationError("with mtls, put the server's CA in the mtls context")
            verify = self._auth.mtls
        self._transport = HttpxTransport(
            client=options["client"],
            async_client=options["async_client"],
            verify=verify,
            timeout=options["timeout"],
            max_bytes=options["max_bytes"],
        )
        self._token_url = token_url
        self._scope = scope_string(options["scopes"])
        self._audience_param: str = options["audience_param"]
        self._clock: Clock = options["clock"] or SYSTEM_CLOCK

    def _cache(self, options: dict[str, Any]) -> TokenCache[Any]:
        return TokenCache(
            refresh_before=options["refresh_before"],
            max_entries=options["max_audiences"],
            clock=self._clock,
        )

    def _form(self, audience: str, **params: str | None) -> dict[str, str]:
        form = {name: value for name, value in params.items() if value is not None}
        form[self._audience_param] = audience
        if self._scope is not None:
            form["scope"] = self._scope
        return form

    def _mint(self, form: dict[str, str], issued: str | None = None) -> MintedToken:
        request = self._auth.request(self._token_url, form)
        return self._transport.run(token_flow(request, clock=self._clock, issued_token_type=issued))

    async def _mint_async(self, form: dict[str, str], issued: str | None = None) -> MintedToken:
        request = self._auth.request(self._token_url, form)
        flow = token_flow(request, clock=self._clock, issued_token_type=issued)
        return await self._transport.run_async(flow)

    def close(self) -> None:
        """Close the HTTP client the source built (a client passed in is left open)."""
        self._transport.close()

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({safe_url(self._token_url)!r}, "
            f"client_auth={self._auth.method!r})"
        )


def _audience(audience: object) -> str:
    if not isinstance(audience, str) or not audience:
        raise ConfigurationError("audience must be a non-empty string")
    return audience


class ClientCredentialsTokenSource(_OAuth2Source):
    """Access tokens from the client credentials grant, one per audience.

    Exactly one of ``client_secret`` (HTTP Basic; ``secret_method="post"`` sends it in the
    body), ``private_key_jwt`` (a :class:`~zerotrust.tokens.TokenIssuer` with
    ``issuer=client_id``, or a :class:`~zerotrust.tokens.PrivateJWK` whose ``kid`` the
    server knows) or ``mtls`` (an ``ssl.SSLContext`` with the client certificate loaded and
    the server's CA trusted) authenticates the client. A ``private_key_jwt`` assertion names
    the token endpoint as its ``aud`` (RFC 7523), or ``assertion_audience`` when given. Set
    it to the authorization server's issuer identifier where that server accepts it: a
    client that signs assertions for several authorization servers is then safe from
    audience injection (one server's metadata naming another's token endpoint, to receive
    assertions it can replay there), as the update of RFC 7523 recommends.
    """

    def __init__(
        self,
        token_url: str,
        *,
        client_id: str,
        client_secret: str | None = None,
        private_key_jwt: TokenIssuer | PrivateJWK | None = None,
        assertion_audience: str | None = None,
        mtls: ssl.SSLContext | None = None,
        secret_method: SecretMethod = "basic",  # noqa: S107
        scopes: Iterable[str] = (),
        audience_param: AudienceParam = "audience",
        client: httpx.Client | None = None,
        async_client: httpx.AsyncClient | None = None,
        verify: ssl.SSLContext | str | bool = True,
        timeout: float = 10.0,
        max_bytes: int = 64 * 1024,
        allow_http_loopback: bool = False,
        refresh_before: float | None = None,
        max_audiences: int = 256,
        clock: Clock | None = None,
    ) -> None:
        options = dict(locals())
        super().__init__(token_url, options, auth_required=True)
        self._tokens: TokenCache[str] = self._cache(options)

    def token(self, audience: str) -> str:
        """An access token for ``audience`` (blocks while one is requested)."""
        form = self._form(_audience(audience), grant_type="client_credentials")
        return self._tokens.get(audience, lambda: self._mint(form))

    async def token_async(self, audience: str) -> str:
        """Async twin of :meth:`token`."""
        form = self._form(_audience(audience), grant_type="client_credentials")
        return await self._tokens.get_async(audience, lambda: self._mint_async(form))

    def expires_at(self, audience: str, token: str) -> datetime | None:
        """When ``token`` expires, if it is the token cached for ``audience`` (its
        ``expires_in``); ``None`` otherwise."""
        return self._tokens.expires_at(token, _audience(audience).__eq__)

    def invalidate(self, audience: str, *, token: str | None = None) -> None:
        """Forget the cached token for ``audience`` (the next call requests a new one); with
        ``token``, only if it is the cached one."""
        self._tokens.invalidate(_audience(audience), token=token)

    def clear(self) -> None:
        """Forget every cached token."""
        self._tokens.clear()


def _digest(token: str | None) -> bytes | None:
    return None if token is None else hashlib.sha256(token.encode("ascii")).digest()


class TokenExchangeTokenSource(_OAuth2Source):
    """RFC 8693 token exchange: a token for ``audience`` on behalf of ``subject_token``.

    ``subject_token`` (and ``actor_token``) is a :class:`~zerotrust.tokens.outgoing.TokenSource`
    (asked for a token for ``subject_audience``, the token endpoint by default) or a callable
    returning the token, e.g. the caller's incoming token. Results are cached per audience and
    per subject/actor token. The response must carry ``issued_token_type`` equal to
    ``requested_token_type``. Client authentication is optional here (a ``client_id`` alone
    identifies a public client); ``assertion_audience`` as for
    :class:`ClientCredentialsTokenSource`. ``max_audiences`` bounds the cache of (audience,
    subject, actor) entries.
    """

    def __init__(
        self,
        token_url: str,
        *,
        subject_token: SubjectToken,
        subject_token_type: str = JWT_TOKEN_TYPE,
        subject_audience: str | None = None,
        actor_token: SubjectToken | None = None,
        actor_token_type: str = JWT_TOKEN_TYPE,
        requested_token_type: str = ACCESS_TOKEN_TYPE,
        client_id: str | None = None,
        client_secret: str | None = None,
        private_key_jwt: TokenIssuer | PrivateJWK | None = None,
        assertion_audience: str | None = None,
        mtls: ssl.SSLContext | None = None,
        secret_method: SecretMethod = "basic",  # noqa: S107
        scopes: Iterable[str] = (),
        audience_param: AudienceParam = "audience",
        client: httpx.Client | None = None,
        async_client: httpx.AsyncClient | None = None,
        verify: ssl.SSLContext | str | bool = True,
        timeout: float = 10.0,
        max_bytes: int = 64 * 1024,
        allow_http_loopback: bool = False,
        refresh_before: float | None = None,
        max_audiences: int = 256,
        clock: Clock | None = None,
    ) -> None:
        options = dict(locals())
        super().__init__(token_url, options, auth_required=False)
        for name, value in (("subject_token", subject_token), ("actor_token", actor_token)):
            if value is None and name == "actor_token":  # no actor: optional
                continue
            if not callable(value) and not isinstance(value, TokenSource):
                raise ConfigurationError(f"{name} must be a TokenSource or a callable")
        for name, text in (
            ("subject_token_type", subject_token_type),
            ("actor_token_type", actor_token_type),
            ("requested_token_type", requested_token_type),
        ):
            if not isinstance(text, str) or not text:
                raise ConfigurationError(f"{name} must be a non-empty string")
        self._subject = subject_token
        self._actor = actor_token
        self._subject_audience = subject_audience or token_url
        self._types = (subject_token_type, actor_token_type, requested_token_type)
        self._tokens: TokenCache[tuple[str, bytes | None, bytes | None]] = self._cache(options)

    def _exchange_form(self, audience: str, subject: str, actor: str | None) -> dict[str, str]:
        subject_type, actor_type, requested = self._types
        return self._form(
            audience,
            grant_type=TOKEN_EXCHANGE_GRANT,
            subject_token=subject,
            subject_token_type=subject_type,
            actor_token=actor,
            actor_token_type=actor_type if actor is not None else None,
            requested_token_type=requested,
        )

    def _resolve(self, source: SubjectToken) -> str:
        if isinstance(source, TokenSource):
            return check_token(source.token(self._subject_audience))
        return check_token(source())

    async def _resolve_async(self, source: SubjectToken) -> str:
        if isinstance(source, TokenSource):
            return check_token(await token_async_of(source, self._subject_audience))
        return check_token(source())

    def token(self, audience: str) -> str:
        """A token for ``audience`` exchanged for the current subject (and actor) token."""
        audience = _audience(audience)
        subject = self._resolve(self._subject)
        actor = self._resolve(self._actor) if self._actor is not None else None
        form = self._exchange_form(audience, subject, actor)
        key = (audience, _digest(subject), _digest(actor))
        return self._tokens.get(key, lambda: self._mint(form, self._types[2]))

    def expires_at(self, audience: str, token: str) -> datetime | None:
        """When the exchanged token ``token`` expires, if it is cached for ``audience``;
        ``None`` otherwise."""
        audience = _audience(audience)
        return self._tokens.expires_at(token, lambda key: key[0] == audience)

    def invalidate(self, audience: str, *, token: str | None = None) -> None:
        """Forget the exchanged token ``token`` cached for ``audience`` (the other subjects'
        tokens stay), or without ``token`` every exchanged token cached for ``audience``."""
        audience = _audience(audience)
        self._tokens.invalidate_where(lambda key: key[0] == audience, token=token)

    def clear(self) -> None:
        """Forget every cached token."""
        self._tokens.clear()

    async def token_async(self, audience: str) -> str:
        """Async twin of :meth:`token`."""
        audience = _audience(audience)
        subject = await self._resolve_async(self._subject)
        actor = await self._resolve_async(self._actor) if self._actor is not None else None
        form = self._exchange_form(audience, subject, actor)
        key = (audience, _digest(subject), _digest(actor))
        return await self._tokens.get_async(key, lambda: self._mint_async(form, self._types[2]))
