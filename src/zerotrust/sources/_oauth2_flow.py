"""OAuth 2.0 token requests without I/O: client authentication, the request, the response.

* Client authentication (RFC 6749 §2.3, RFC 7523, RFC 8705): ``client_secret`` in HTTP Basic
  (each part form-urlencoded first, as RFC 6749 §2.3.1 requires) or in the body;
  ``private_key_jwt`` (a fresh assertion per request: ``iss = sub = client_id``,
  ``aud`` = the token endpoint or the configured ``assertion_audience``, a random ``jti``, a
  short ``exp``); mutual TLS (the client certificate authenticates; the body carries
  ``client_id`` only).
* Responses (RFC 6749 §5): a JSON object with a string ``access_token`` in RFC 6750
  ``b64token`` syntax, a ``token_type`` of ``Bearer`` (any case; ``N_A`` too for RFC 8693
  non-access tokens: a ``DPoP`` token is refused, as these requests carry no DPoP proof and
  RFC 6749 7.1 forbids using a token type the client does not understand), a positive
  ``expires_in`` when present (a number, or a string of digits), and for token exchange the
  ``issued_token_type`` that was requested.
* Errors: an ``invalid_client``/``unauthorized_client`` answer raises
  :class:`~zerotrust.errors.AuthenticationError`, ``invalid_grant``
  :class:`~zerotrust.errors.TokenError`, anything else (HTTP errors, redirects, transport
  failures, malformed responses) :class:`~zerotrust.errors.SourceError`. Messages carry the
  OAuth ``error`` code (when it is well-formed) and never a secret, a token or a body.
"""

from __future__ import annotations

import base64
import ssl
from datetime import datetime, timedelta
from typing import Final, Literal
from urllib.parse import quote_plus

from zerotrust._clock import Clock
from zerotrust._scopes import scope_string
from zerotrust.errors import AuthenticationError, ConfigurationError, SourceError, TokenError
from zerotrust.sources._sansio import ACCEPT_JSON, FetchError, Flow, HttpRequest, HttpResponse
from zerotrust.tokens._json import JSONError, loads_object
from zerotrust.tokens._outgoing_cache import MAX_LIFETIME, MintedToken, check_token
from zerotrust.tokens.issue import TokenIssuer
from zerotrust.tokens.keys import PrivateJWK

__all__ = ["ClientAuth", "scope_string", "token_flow"]

JWT_BEARER_ASSERTION: Final = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# The registered OAuth error codes (RFC 6749 5.2, RFC 8693 2.2.2, RFC 9449 7.1, RFC 8628
# 3.5): only these are repeated in messages, since an endpoint may echo anything it was sent,
# the client secret included.
_ERROR_CODES: Final = frozenset(
    {
        "invalid_request",
        "invalid_client",
        "invalid_grant",
        "unauthorized_client",
        "unsupported_grant_type",
        "invalid_scope",
        "invalid_target",
        "invalid_dpop_proof",
        "use_dpop_nonce",
        "authorization_pending",
        "slow_down",
        "access_denied",
        "expired_token",
        "server_error",
        "temporarily_unavailable",
    }
)
_ACCESS_TOKEN_TYPES: Final = frozenset({"bearer"})
ACCESS_TOKEN_TYPE: Final = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105

SecretMethod = Literal["basic", "post"]


class ClientAuth:
    """How a client authenticates to the token endpoint. Never shows its secret."""

    __slots__ = (
        "_assertion_audience",
        "_assertion_ttl",
        "_client_id",
        "_issuer",
        "_method",
        "_secret",
        "mtls",
    )

    def __init__(
        self,
        *,
        client_id: str | None,
        client_secret: str | None = None,
        private_key_jwt: TokenIssuer | PrivateJWK | None = None,
        mtls: ssl.SSLContext | None = None,
        secret_method: SecretMethod = "basic",  # noqa: S107
        required: bool = True,
        assertion_ttl: float = 60,
        assertion_audience: str | None = None,
    ) -> None:
        chosen = [x is not None for x in (client_secret, private_key_jwt, mtls)]
        if sum(chosen) > 1:
            raise ConfigurationError("use one of client_secret, private_key_jwt and mtls")
        if required and not any(chosen):
            raise ConfigurationError("client_secret, private_key_jwt or mtls is required")
        if client_id is not None and (not isinstance(client_id, str) or not client_id):
            raise ConfigurationError("client_id must be a non-empty string")
        if any(chosen) and client_id is None:
            raise ConfigurationError("client authentication needs a client_id")
        self._client_id = client_id
        self._secret = None
        self._issuer = None
        self.mtls = None
        self._assertion_ttl = assertion_ttl
        if assertion_audience is not None:
            if private_key_jwt is None:
                raise ConfigurationError("assertion_audience is for private_key_jwt assertions")
            if not isinstance(assertion_audience, str) or not assertion_audience:
                raise ConfigurationError("assertion_audience must be a non-empty string")
        self._assertion_audience = assertion_audience
        if client_secret is not None:
            if not isinstance(client_secret, str) or not client_secret:
                raise ConfigurationError("client_secret must be a non-empty string")
            if secret_method not in ("basic", "post"):
                raise ConfigurationError("secret_method must be 'basic' or 'post'")
            self._method = f"client_secret_{secret_method}"
            self._secret = client_secret
        elif private_key_jwt is not None:
            self._method = "private_key_jwt"
            self._issuer = _assertion_issuer(private_key_jwt, client_id)
        elif mtls is not None:
            if not isinstance(mtls, ssl.SSLContext):
                raise ConfigurationError("mtls must be an ssl.SSLContext holding the client cert")
            self._method = "tls_client_auth"
            self.mtls = mtls
        else:
            self._method = "none"

    @property
    def method(self) -> str:
        """The RFC 8414 name of the method (``client_secret_basic``, ``private_key_jwt``, ...)."""
        return self._method

    def request(self, token_url: str, form: dict[str, str]) -> HttpRequest:
        """The POST to ``token_url`` with ``form``, authenticated by this method."""
        headers = {"accept": ACCEPT_JSON}
        form = dict(form)
        client_id = self._client_id
        if self._method == "client_secret_basic":
            assert client_id is not None
            assert self._secret is not None
            pair = f"{quote_plus(client_id, safe='')}:{quote_plus(self._secret, safe='')}"
            headers["authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        elif client_id is not None:
            form["client_id"] = client_id
        if self._method == "client_secret_post":
            assert self._secret is not None
            form["client_secret"] = self._secret
        elif self._issuer is not None:
            assert client_id is not None
            form["client_assertion_type"] = JWT_BEARER_ASSERTION
            form["client_assertion"] = self._issuer.issue(
                subject=client_id,
                audience=self._assertion_audience or token_url,
                ttl=self._assertion_ttl,
            )
        return HttpRequest("POST", token_url, headers, form)

    def __repr__(self) -> str:
        return f"ClientAuth(method={self._method!r}, client_id={self._client_id!r})"


def _assertion_issuer(key: TokenIssuer | PrivateJWK, client_id: str | None) -> TokenIssuer:
    if isinstance(key, TokenIssuer):
        if key.issuer != client_id:
            raise ConfigurationError("a private_key_jwt TokenIssuer must have issuer=client_id")
        return key
    if isinstance(key, PrivateJWK):
        assert client_id is not None
        return TokenIssuer(key, issuer=client_id)
    raise ConfigurationError("private_key_jwt must be a TokenIssuer or a PrivateJWK")


def token_flow(
    request: HttpRequest, *, clock: Clock, issued_token_type: str | None = None
) -> Flow[MintedToken]:
    """Send ``request`` and turn the answer into a :class:`MintedToken` (or raise)."""
    sent = clock.now()  # expires_in counts from when the answer was made: at most this late
    try:
        response = yield request
    except FetchError as exc:
        raise SourceError(f"token endpoint unavailable: {exc}") from None
    return parse_token_response(
        response, clock=clock, issued_token_type=issued_token_type, sent_at=sent
    )


def _error_code(body: bytes) -> str | None:
    try:
        code = loads_object(body, max_depth=4).get("error")
    except JSONError:
        return None
    if isinstance(code, str) and code in _ERROR_CODES:
        return code
    return "unregistered error" if isinstance(code, str) else None


def _refused(response: HttpResponse) -> Exception:
    status = response.status
    if 300 <= status < 400:
        return SourceError(f"token endpoint redirect refused (HTTP {status})")
    code = _error_code(response.body)
    if status in (400, 401) and code in ("invalid_client", "unauthorized_client"):
        return AuthenticationError(f"token endpoint rejected the client credentials [{code}]")
    if status == 400 and code == "invalid_grant":
        return TokenError("token endpoint rejected the grant [invalid_grant]")
    shown = f" [{code}]" if code else ""
    if status == 401:
        return AuthenticationError(f"token endpoint refused the client (HTTP 401){shown}")
    return SourceError(f"token endpoint answered HTTP {status}{shown}")


def _invalid(what: str) -> SourceError:
    return SourceError(f"token endpoint response is invalid: {what}")


def parse_token_response(
    response: HttpResponse,
    *,
    clock: Clock,
    issued_token_type: str | None,
    sent_at: datetime | None = None,
) -> MintedToken:
    """Validate a token endpoint response (see the module documentation). ``expires_in``
    counts from ``sent_at``, when the request was sent (RFC 6749 5.1 counts from when the
    response was generated, which is no earlier), else from now."""
    if response.status != 200:
        raise _refused(response)
    now = sent_at if sent_at is not None else clock.now()
    try:
        document = loads_object(response.body)
    except JSONError:
        raise _invalid("not a JSON object") from None
    try:
        token = check_token(document.get("access_token"))
    except SourceError:
        raise _invalid("access_token is missing or malformed") from None
    token_type = document.get("token_type")
    allowed = _ACCESS_TOKEN_TYPES
    if issued_token_type is not None:
        if document.get("issued_token_type") != issued_token_type:
            raise _invalid("issued_token_type is missing or not the requested type")
        if issued_token_type != ACCESS_TOKEN_TYPE:
            allowed = allowed | {"n_a"}
    if not isinstance(token_type, str) or token_type.lower() not in allowed:
        raise _invalid("token_type is not Bearer")
    if "expires_in" not in document:
        return MintedToken(token)
    expires_in = document["expires_in"]
    if isinstance(expires_in, str) and expires_in.isascii() and expires_in.isdigit():
        # some servers send the number as a string; a long number is a long lifetime (its
        # leading zeros are not)
        digits = expires_in.lstrip("0") or "0"
        expires_in = int(digits) if len(digits) <= 32 else MAX_LIFETIME
    if isinstance(expires_in, bool) or not isinstance(expires_in, (int, float)):
        raise _invalid("expires_in is not a number")
    if not expires_in > 0:  # (the JSON reader refuses NaN and infinities)
        raise _invalid("expires_in is not a positive number of seconds")
    # RFC 6749 sets no upper bound: a very long lifetime is kept, but the token is asked for
    # again within MAX_LIFETIME
    return MintedToken(token, now + timedelta(seconds=min(expires_in, MAX_LIFETIME)))
