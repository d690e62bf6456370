"""httpx clients for zero-trust calls: mTLS with the SVID, tokens, trace context, retries.

:func:`Client` and :func:`AsyncClient` return a configured :class:`httpx.Client` /
:class:`httpx.AsyncClient`:

* TLS through :func:`~zerotrust.client_ssl_context`: the workload's X509-SVID is presented,
  and the server must prove the SPIFFE ID accepted by ``server_id=`` or ``authorizer=`` (one
  of them is required). Rotated SVIDs reach every new connection; connections are kept alive;
* with a ``token_source``, :class:`ZeroTrustAuth` attaches the token for each request's
  audience (Bearer, or DPoP with ``dpop_key``) and re-mints once on ``invalid_token``;
* the current OpenTelemetry context is injected (W3C ``traceparent``/``tracestate``);
* transient failures before the response headers arrive are retried by :class:`RetryPolicy`
  (``retry=None`` turns it off); the body is streamed to the caller, and a failure while it
  is read is raised to the caller.

A refused server identity surfaces as :class:`httpx.ConnectError` whose cause chain holds a
:class:`~zerotrust.PeerRejected` (or OpenSSL's certificate verification error when the chain
is not trusted at all); :func:`identity_refusal` finds it.
"""

from __future__ import annotations

import importlib.util
import ssl
from typing import Any, Final

from zerotrust.errors import MissingDependencyError

try:
    import httpx
    import tenacity  # noqa: F401 - required by the retrying transports
except ImportError as exc:  # pragma: no cover - both are dependencies of zerotrust
    raise MissingDependencyError(exc.name or "httpx", "httpx", error=exc) from exc

from zerotrust import match
from zerotrust._clock import SYSTEM_CLOCK, Clock
from zerotrust.client._dpop import DPoPSigner, dpop_proof
from zerotrust.client._httpx_auth import AudienceFor, SupportsInvalidate, ZeroTrustAuth
from zerotrust.client._httpx_retry import RETRY_EXTENSION, RetryEvent, RetryPolicy
from zerotrust.client._httpx_transport import (
    AsyncZeroTrustTransport,
    ZeroTrustTransport,
    check_https,
)
from zerotrust.errors import ConfigurationError
from zerotrust.identity import Matcher, SpiffeId
from zerotrust.tokens.keys import PrivateJWK
from zerotrust.tokens.outgoing import TokenSource
from zerotrust.x509.bundle import BundleSet, TrustBundle
from zerotrust.x509.peer import PeerRejected
from zerotrust.x509.sources import X509BundleSource, X509SvidSource
from zerotrust.x509.sslcontext import ZeroTrustSSLContext, client_ssl_context
from zerotrust.x509.svid import X509Svid

__all__ = [
    "RETRY_EXTENSION",
    "AsyncClient",
    "AsyncZeroTrustTransport",
    "Client",
    "DPoPSigner",
    "RetryEvent",
    "RetryPolicy",
    "SupportsInvalidate",
    "ZeroTrustAuth",
    "ZeroTrustTransport",
    "dpop_proof",
    "identity_refusal",
]

#: Options that would bypass the zerotrust TLS context or transport.
_REFUSED: Final = frozenset({"verify", "cert", "transport", "mounts", "proxy", "proxies", "app"})
_DEFAULT_RETRY: Final = RetryPolicy()


def identity_refusal(error: BaseException) -> ssl.SSLCertVerificationError | None:
    """Why the server's identity was refused, if that is what an httpx error means; else ``None``.

    The result is a :class:`~zerotrust.PeerRejected` when the certificate chained to a trusted
    authority but failed SPIFFE verification or the authorizer (``.reason`` is the precise code,
    e.g. ``peer_not_authorized``), or OpenSSL's own :class:`ssl.SSLCertVerificationError` when
    the chain is not trusted at all (``.verify_message``).
    """
    found: ssl.SSLCertVerificationError | None = None
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, PeerRejected):
            return current
        if found is None and isinstance(current, ssl.SSLCertVerificationError):
            found = current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return found


class _HttpsOnlyAuth(ZeroTrustAuth):
    """The :class:`ZeroTrustAuth` of :func:`Client` and :func:`AsyncClient`, whose transports
    send nothing over plain http: such a URL (loopback included) is refused as they refuse
    it, with :class:`httpx.UnsupportedProtocol`, before the token source is asked."""

    def _audience_for(self, request: httpx.Request) -> str | None:
        check_https(request)
        return super()._audience_for(request)


def _tls_context(
    *,
    svid: X509SvidSource | X509Svid | None,
    bundles: X509BundleSource | TrustBundle | BundleSet | None,
    server_id: SpiffeId | str | None,
    authorizer: Matcher | None,
    ssl_context: ZeroTrustSSLContext | None,
    clock: Clock | None,
) -> tuple[ZeroTrustSSLContext, Clock]:
    """The client's TLS context and its clock: the one the context checks certificates with,
    which dates the DPoP proofs too (a client has one time)."""
    if ssl_context is not None:
        if not isinstance(ssl_context, ZeroTrustSSLContext):
            raise ConfigurationError("ssl_context must be a ZeroTrustSSLContext")
        if any(v is not None for v in (svid, bundles, server_id, authorizer)):
            raise ConfigurationError("give either ssl_context or svid/bundles/server_id/authorizer")
        own = ssl_context.zerotrust_verifier.clock
        if clock is not None and clock is not own:
            raise ConfigurationError(
                "the ssl_context checks certificates with the clock it was built with, and"
                " DPoP proofs are dated with it too: pass clock= to client_ssl_context"
            )
        return ssl_context, own
    if server_id is not None and authorizer is not None:
        raise ConfigurationError("give server_id or authorizer, not both")
    if server_id is None and authorizer is None:
        raise ConfigurationError(
            "the server's identity must be checked: pass server_id='spiffe://...'"
            " or authorizer=match...."
        )
    if svid is None or bundles is None:
        raise ConfigurationError("svid and bundles are required (or pass ssl_context)")
    check = match.exact(server_id) if server_id is not None else authorizer
    assert check is not None
    clock = clock or SYSTEM_CLOCK
    return client_ssl_context(svid, bundles, authorizer=check, clock=clock), clock


def _options(
    options: dict[str, Any],
    token_source: TokenSource | None,
    audience: AudienceFor | None,
    dpop_key: PrivateJWK | None,
    clock: Clock,
) -> dict[str, Any]:
    refused = sorted(_REFUSED.intersection(options))
    if refused:
        raise ConfigurationError(f"{', '.join(refused)}: not accepted (the client sets them)")
    if token_source is None:
        if audience is not None or dpop_key is not None:
            raise ConfigurationError("audience and dpop_key need a token_source")
        return {"trust_env": False, **options}
    if "auth" in options:
        raise ConfigurationError("give token_source or auth, not both")
    if audience is None:
        raise ConfigurationError("a token_source needs an audience")
    auth = _HttpsOnlyAuth(token_source, audience=audience, dpop_key=dpop_key, clock=clock)
    return {"trust_env": False, **options, "auth": auth}


def _retry(retry: RetryPolicy | None) -> RetryPolicy | None:
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise ConfigurationError("retry must be a RetryPolicy or None")
    return retry


def _check_http2(http2: bool) -> None:
    # httpx checks for h2 in Client(), which a client given a transport skips; httpcore
    # imports it only when a server first agrees on h2 (ALPN), far from here
    if http2 and importlib.util.find_spec("h2") is None:
        raise ConfigurationError("http2=True needs the h2 package: pip install 'httpx[http2]'")


def Client(
    *,
    svid: X509SvidSource | X509Svid | None = None,
    bundles: X509BundleSource | TrustBundle | BundleSet | None = None,
    server_id: SpiffeId | str | None = None,
    authorizer: Matcher | None = None,
    ssl_context: ZeroTrustSSLContext | None = None,
    token_source: TokenSource | None = None,
    audience: AudienceFor | None = None,
    dpop_key: PrivateJWK | None = None,
    retry: RetryPolicy | None = _DEFAULT_RETRY,
    trace_context: bool = True,
    limits: httpx.Limits = httpx.Limits(),  # noqa: B008 - immutable value
    http2: bool = False,
    clock: Clock | None = None,
    **options: Any,
) -> httpx.Client:
    """A :class:`httpx.Client` for zero-trust calls (see the module documentation).

    ``svid`` (an :class:`~zerotrust.X509Svid` or source) and ``bundles`` build the mTLS
    context, which checks the server against ``server_id`` (exact) or ``authorizer`` (any
    matcher); or pass a ready ``ssl_context`` from :func:`~zerotrust.client_ssl_context`.
    ``token_source`` + ``audience`` (+ ``dpop_key``) add :class:`ZeroTrustAuth`. ``clock``
    (for tests) is the time the server's certificate is checked at and DPoP proofs are dated
    with; with ``ssl_context`` it is that context's own (give it to
    :func:`~zerotrust.client_ssl_context`). Other keyword arguments go to
    :class:`httpx.Client` (``base_url``, ``timeout``, ``headers``, ...); ``verify``, ``cert``,
    ``transport``, ``mounts`` and ``proxy`` are refused.
    """
    context, clock = _tls_context(
        svid=svid,
        bundles=bundles,
        server_id=server_id,
        authorizer=authorizer,
        ssl_context=ssl_context,
        clock=clock,
    )
    client_options = _options(options, token_source, audience, dpop_key, clock)
    policy = _retry(retry)
    _check_http2(http2)
    inner = httpx.HTTPTransport(verify=context, limits=limits, http2=http2, trust_env=False)
    transport = ZeroTrustTransport(
        inner, retry=policy, trace_context=trace_context, https_only=True
    )
    return httpx.Client(transport=transport, **client_options)


def AsyncClient(
    *,
    svid: X509SvidSource | X509Svid | None = None,
    bundles: X509BundleSource | TrustBundle | BundleSet | None = None,
    server_id: SpiffeId | str | None = None,
    authorizer: Matcher | None = None,
    ssl_context: ZeroTrustSSLContext | None = None,
    token_source: TokenSource | None = None,
    audience: AudienceFor | None = None,
    dpop_key: PrivateJWK | None = None,
    retry: RetryPolicy | None = _DEFAULT_RETRY,
    trace_context: bool = True,
    limits: httpx.Limits = httpx.Limits(),  # noqa: B008 - immutable value
    http2: bool = False,
    clock: Clock | None = None,
    **options: Any,
) -> httpx.AsyncClient:
    """Async twin of :func:`Client`, returning a configured :class:`httpx.AsyncClient`."""
    context, clock = _tls_context(
        svid=svid,
        bundles=bundles,
        server_id=server_id,
        authorizer=authorizer,
        ssl_context=ssl_context,
        clock=clock,
    )
    client_options = _options(options, token_source, audience, dpop_key, clock)
    policy = _retry(retry)
    _check_http2(http2)
    inner = httpx.AsyncHTTPTransport(verify=context, limits=limits, http2=http2, trust_env=False)
    transport = AsyncZeroTrustTransport(
        inner, retry=policy, trace_context=trace_context, https_only=True
    )
    return httpx.AsyncClient(transport=transport, **client_options)
