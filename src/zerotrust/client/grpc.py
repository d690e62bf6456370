"""gRPC channels for zero-trust calls: mTLS with the SVID, the server's SPIFFE ID checked,
tokens, trace context, retries, and rebuilds on SVID rotation.

:func:`secure_channel` returns a :class:`ManagedChannel` (a ``grpc.Channel``) and
:func:`aio_secure_channel` an :class:`AioManagedChannel` (a ``grpc.aio.Channel``):

* channel credentials present the workload's X509-SVID; grpc trusts only the authorities of
  the server's trust domain (``server_id=``), and checks the target's host name (or
  ``server_name``) against the server certificate's DNS SANs, as grpc always does;
* grpcio cannot verify a SPIFFE ID during its handshake, so a call (each attempt of it) is
  handed to grpc only while the channel is connected and a separate mTLS handshake to the
  target with :func:`~zerotrust.client_ssl_context`, made after grpc's connection, proved the
  expected SPIFFE ID; a refusal fails the call with :class:`ServerIdentityError` before
  anything is sent. That probe is another connection: it catches a server reached by
  mistake, not an attacker on the path who holds an SVID of the trust domain with the DNS
  name dialled and passes only the probe through to the genuine server. On grpc's own
  connection, only grpc's check (trust domain and DNS name) holds against such an attacker
  (docs/grpc.md says precisely what is and is not guaranteed);
* with a ``token_source``, call credentials attach ``authorization: Bearer`` for
  ``audience`` (default: the server's SPIFFE ID), cached and refreshed off the call path; a
  call refused with ``UNAUTHENTICATED`` and ``www-authenticate: ... error="invalid_token"``
  has that token dropped (from the source too), and a unary-unary call is made once more
  with a new token when the source has another one;
* the current OpenTelemetry context is injected into the metadata (``traceparent``);
* :class:`RetryPolicy` is applied by the channel, each attempt checked like a call; grpc's
  own retries are off, as they would resend over a connection no check covered
  (``retry=None``: one attempt);
* when the SVID (or bundle) snapshot changes, new calls go to a new underlying channel and
  the old one is closed after its last in-flight call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

from zerotrust.errors import MissingDependencyError

try:
    import grpc  # type: ignore[import-untyped,unused-ignore]
    import grpc.aio  # type: ignore[import-untyped,unused-ignore]
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError("grpcio", "grpc", error=exc) from exc

from zerotrust import match
from zerotrust._clock import SYSTEM_CLOCK, Clock
from zerotrust.client._grpc_aio_managed import AioManagedChannel
from zerotrust.client._grpc_check import (
    ServerCheck,
    ServerIdentityError,
    aio_state_reader,
    sync_state_reader,
)
from zerotrust.client._grpc_creds import RetryPolicy, TokenPlugin, channel_credentials
from zerotrust.client._grpc_generations import Generation
from zerotrust.client._grpc_interceptors import ClientInterceptor, aio_interceptors
from zerotrust.client._grpc_managed import ManagedChannel
from zerotrust.client._grpc_options import channel_options
from zerotrust.errors import ConfigurationError, NoTrustBundle
from zerotrust.identity import Matcher, SpiffeId, TrustDomain
from zerotrust.tokens.outgoing import TokenSource
from zerotrust.x509.bundle import BundleSet, TrustBundle
from zerotrust.x509.sources import X509BundleSource, X509SvidSource
from zerotrust.x509.sslcontext import ZeroTrustSSLContext, client_ssl_context
from zerotrust.x509.svid import X509Svid

__all__ = [
    "AioManagedChannel",
    "ManagedChannel",
    "RetryPolicy",
    "ServerIdentityError",
    "aio_secure_channel",
    "secure_channel",
]

_DEFAULT_RETRY: Final = RetryPolicy()
_MAX_CHECK_TIMEOUT: Final = 86400.0


class _Setup:
    """What both channel kinds need, validated once."""

    def __init__(
        self,
        target: str,
        *,
        svid: X509SvidSource | X509Svid,
        bundles: X509BundleSource | TrustBundle | BundleSet,
        server_id: SpiffeId | str | None,
        authorizer: Matcher | None,
        token_source: TokenSource | None,
        audience: str | None,
        server_name: str | None,
        retry: RetryPolicy | None,
        trace_context: bool,
        check_timeout: float,
        options: Sequence[tuple[str, Any]],
        clock: Clock | None,
    ) -> None:
        if not isinstance(target, str) or not target:
            raise ConfigurationError("target must be 'host:port'")
        if not callable(getattr(svid, "get_x509_svid", None)):
            raise ConfigurationError("svid must be an X509Svid or have get_x509_svid()")
        if not callable(getattr(bundles, "get_bundle_set", None)):
            raise ConfigurationError("bundles must be a TrustBundle, BundleSet or bundle source")
        if (server_id is None) == (authorizer is None):
            raise ConfigurationError(
                "the server's identity must be checked: pass server_id='spiffe://...'"
                " or authorizer=match.... (one of them)"
            )
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise ConfigurationError("retry must be a RetryPolicy or None")
        if isinstance(check_timeout, bool) or not (
            isinstance(check_timeout, (int, float)) and 0 < check_timeout <= _MAX_CHECK_TIMEOUT
        ):
            # (the sync check waits on locks and timers, which refuse waits of centuries)
            raise ConfigurationError(
                "check_timeout must be a positive number of seconds, at most a day (86400)"
            )
        sid = SpiffeId.parse(server_id) if isinstance(server_id, str) else server_id
        authorize = match.exact(sid) if sid is not None else authorizer
        assert authorize is not None
        self.target = target
        self.svid: X509SvidSource = svid
        self.bundles: X509BundleSource = bundles
        self.trust_domain: TrustDomain | None = sid.trust_domain if sid is not None else None
        self.context: ZeroTrustSSLContext = client_ssl_context(
            svid, bundles, authorizer=authorize, clock=clock or SYSTEM_CLOCK
        )
        self.context.set_alpn_protocols(["h2"])
        self.server_name = server_name
        self.check_timeout = float(check_timeout)
        self.trace_context = bool(trace_context)
        self.plugin = self._plugin(token_source, audience, sid)
        self.retry = retry
        self.options = channel_options(options, server_name)
        ServerCheck(target, self.context)  # validates the target now
        try:  # fail early
            self.credentials(svid.get_x509_svid(), bundles.get_bundle_set())
        except ServerIdentityError as exc:
            raise ConfigurationError(str(exc.__cause__)) from None

    @staticmethod
    def _plugin(
        source: TokenSource | None, audience: str | None, sid: SpiffeId | None
    ) -> TokenPlugin | None:
        if source is None:
            if audience is not None:
                raise ConfigurationError("audience needs a token_source")
            return None
        if audience is None and sid is None:
            raise ConfigurationError("a token_source with authorizer= needs an audience")
        return TokenPlugin(source, audience if audience is not None else str(sid))

    def credentials(self, svid: X509Svid, bundles: BundleSet) -> Any:
        try:
            creds = channel_credentials(svid, bundles, self.trust_domain)
        except NoTrustBundle as exc:  # the server's authorities were withdrawn: fail the call
            raise ServerIdentityError(
                grpc.StatusCode.UNAUTHENTICATED, "no authority to verify the server with"
            ) from exc
        if self.plugin is None:
            return creds
        calls = grpc.metadata_call_credentials(self.plugin, name="zerotrust")
        return grpc.composite_channel_credentials(creds, calls)

    def check(self) -> ServerCheck:
        return ServerCheck(
            self.target, self.context, server_name=self.server_name, timeout=self.check_timeout
        )

    def close(self) -> None:
        if self.plugin is not None:
            self.plugin.close()


def _sync_builder(setup: _Setup) -> Callable[[X509Svid, BundleSet], Generation[Any]]:
    def build(svid: X509Svid, bundles: BundleSet) -> Generation[Any]:
        check = setup.check()
        raw = grpc.secure_channel(setup.target, setup.credentials(svid, bundles), setup.options)
        check.attach(sync_state_reader(raw))
        raw.subscribe(check.on_state, try_to_connect=False)
        interceptor = ClientInterceptor(
            check, trace_context=setup.trace_context, retry=setup.retry, tokens=setup.plugin
        )
        channel = grpc.intercept_channel(raw, interceptor)
        return Generation(channel, (svid, bundles), check, raw=raw)

    return build


def _aio_builder(setup: _Setup) -> Callable[[X509Svid, BundleSet], Generation[Any]]:
    def build(svid: X509Svid, bundles: BundleSet) -> Generation[Any]:
        check = setup.check()
        channel = grpc.aio.secure_channel(
            setup.target,
            setup.credentials(svid, bundles),
            setup.options,
            interceptors=aio_interceptors(
                check, trace_context=setup.trace_context, retry=setup.retry, tokens=setup.plugin
            ),
        )
        check.attach(aio_state_reader(channel), channel.wait_for_state_change)
        return Generation(channel, (svid, bundles), check)

    return build


def secure_channel(
    target: str,
    *,
    svid: X509SvidSource | X509Svid,
    bundles: X509BundleSource | TrustBundle | BundleSet,
    server_id: SpiffeId | str | None = None,
    authorizer: Matcher | None = None,
    token_source: TokenSource | None = None,
    audience: str | None = None,
    server_name: str | None = None,
    retry: RetryPolicy | None = _DEFAULT_RETRY,
    trace_context: bool = True,
    check_timeout: float = 10.0,
    options: Sequence[tuple[str, Any]] = (),
    clock: Clock | None = None,
) -> ManagedChannel:
    """A :class:`ManagedChannel` to ``target`` (``host:port``); see the module documentation.

    ``server_id`` (exact) or ``authorizer`` (any matcher) says which server SPIFFE ID is
    accepted; ``server_name`` overrides the name grpc checks against the server
    certificate's DNS SANs (default: the target's host). ``check_timeout`` (at most a day)
    bounds each attempt's wait for the identity check (connecting and probing), unless the
    deadline is sooner.
    ``options`` are extra grpc channel options; those that would weaken the identity checks
    are refused (``grpc.ssl_target_name_override``, ``grpc.default_authority``,
    ``grpc.enable_retries``, a service config with retries or another load-balancing policy
    than ``pick_first``: see docs/grpc.md).
    """
    setup = _Setup(
        target,
        svid=svid,
        bundles=bundles,
        server_id=server_id,
        authorizer=authorizer,
        token_source=token_source,
        audience=audience,
        server_name=server_name,
        retry=retry,
        trace_context=trace_context,
        check_timeout=check_timeout,
        options=options,
        clock=clock,
    )
    return ManagedChannel(_sync_builder(setup), setup.svid, setup.bundles, on_close=setup.close)


def aio_secure_channel(
    target: str,
    *,
    svid: X509SvidSource | X509Svid,
    bundles: X509BundleSource | TrustBundle | BundleSet,
    server_id: SpiffeId | str | None = None,
    authorizer: Matcher | None = None,
    token_source: TokenSource | None = None,
    audience: str | None = None,
    server_name: str | None = None,
    retry: RetryPolicy | None = _DEFAULT_RETRY,
    trace_context: bool = True,
    check_timeout: float = 10.0,
    options: Sequence[tuple[str, Any]] = (),
    clock: Clock | None = None,
) -> AioManagedChannel:
    """The ``grpc.aio`` twin of :func:`secure_channel` (same arguments); the underlying
    channel is created on first use, inside the running event loop."""
    setup = _Setup(
        target,
        svid=svid,
        bundles=bundles,
        server_id=server_id,
        authorizer=authorizer,
        token_source=token_source,
        audience=audience,
        server_name=server_name,
        retry=retry,
        trace_context=trace_context,
        check_timeout=check_timeout,
        options=options,
        clock=clock,
    )
    return AioManagedChannel(_aio_builder(setup), setup.svid, setup.bundles, on_close=setup.close)
