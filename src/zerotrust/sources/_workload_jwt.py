"""JWT-SVIDs and JWT bundles from the SPIFFE Workload API (see
:mod:`zerotrust.sources.spiffe_workload_api`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Final

from zerotrust._clock import Clock
from zerotrust.errors import KeysUnavailable, SourceError, ZeroTrustError
from zerotrust.identity import SpiffeId, TrustDomain
from zerotrust.sources import _workload_grpc as wire
from zerotrust.sources._workload_base import (
    FORKED,
    SocketPath,
    WorkloadApiBase,
    spiffe_id_string,
)
from zerotrust.sources._workload_convert import jwt_bundle_set, pick
from zerotrust.sources.spiffe_jwt import SpiffeJwtBundleKeySource, SpiffeJwtBundleSetKeySource
from zerotrust.tokens._header import JWT_SVID_HEADERS, check_typ
from zerotrust.tokens._outgoing_cache import read_unverified, seconds
from zerotrust.tokens._profiles import JWT_SVID, TYP_RULES
from zerotrust.tokens.algorithms import JWT_SVID_ALGORITHMS
from zerotrust.tokens.claims import numeric_date
from zerotrust.tokens.jwks import JWKSet
from zerotrust.tokens.outgoing import CachedTokenSource
from zerotrust.x509.bundle import BundleSet

__all__ = ["WorkloadApiJwtSource"]

_LEEWAY: Final = 60.0  # seconds of clock skew allowed for nbf, as go-jose's default
_MAX_FETCH: Final = 86400.0  # the longest fetch_timeout: a day


class _JwtBundles:
    """The JWT bundle snapshot seen as a bundle source, for SpiffeJwtBundleKeySource."""

    __slots__ = ("_source",)

    def __init__(self, source: WorkloadApiJwtSource) -> None:
        self._source = source

    def get_bundle_set(self) -> BundleSet:
        return self._source.get_jwt_bundle_set()


class WorkloadApiJwtSource(WorkloadApiBase):
    """JWT-SVIDs for outgoing calls and JWT bundles for verifying incoming ones.

    A :class:`~zerotrust.tokens.TokenSource`: ``token(audience)`` fetches a JWT-SVID for
    ``audience`` (``spiffe_id`` picks one of several identities) and caches it until shortly
    before it expires (:class:`~zerotrust.tokens.CachedTokenSource`; each fetch is bounded by
    ``fetch_timeout``). With ``watch_bundles`` it also follows the JWT bundles:
    :meth:`keys_for` gives the :class:`~zerotrust.tokens.KeySource` of one trust domain, and
    the source itself is the key source of ``trust_domain`` when one is given.
    """

    _unavailable = KeysUnavailable
    _first = "JWT bundle"

    def __init__(
        self,
        socket_path: SocketPath = None,
        *,
        trust_domain: TrustDomain | str | None = None,
        spiffe_id: SpiffeId | str | None = None,
        watch_bundles: bool = True,
        timeout_first: float = 10.0,
        wait: bool = True,
        fetch_timeout: float = 5.0,
        refresh_before: float | None = None,
        max_audiences: int = 256,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        clock: Clock | None = None,
    ) -> None:
        self._subject = spiffe_id_string(spiffe_id)
        # bounded: gRPC turns a deadline centuries ahead into one already passed
        self._fetch_timeout = seconds("fetch_timeout", fetch_timeout, 0.001, _MAX_FETCH)
        self._bundles: BundleSet | None = None
        self._denied = False  # the agent answered PERMISSION_DENIED since its last bundles
        self._tokens_denied = False  # ... or to FetchJWTSVID, since its last JWT-SVID
        self._view = _JwtBundles(self)
        self._keys: dict[TrustDomain, SpiffeJwtBundleKeySource] = {}
        self._tokens = CachedTokenSource(
            self._mint,
            mint_async=self._mint_async,
            refresh_before=refresh_before,
            max_audiences=max_audiences,
            clock=clock,
        )
        self._default = None if trust_domain is None else self.keys_for(trust_domain)
        super().__init__(
            socket_path,
            timeout_first=timeout_first,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            clock=clock,
        )
        if watch_bundles:
            self._watch(
                "zerotrust-workload-jwt-bundles",
                self._stub.FetchJWTBundles,
                wire.pb2.JWTBundlesRequest(),
                self._on_bundles,
                wait,
            )

    # --- tokens ----------------------------------------------------------------------------

    def token(self, audience: str) -> str:
        """A JWT-SVID for ``audience`` (cached; may block up to ``fetch_timeout``)."""
        self._check_usable()
        return self._tokens.token(audience)

    async def token_async(self, audience: str) -> str:
        """Async twin of :meth:`token`; the fetch does not block the event loop."""
        self._check_usable()
        return await self._tokens.token_async(audience)

    def clear(self) -> None:
        """Forget every cached JWT-SVID (e.g. after the audience answered 401)."""
        self._tokens.clear()

    def close(self) -> None:
        """Stop watching bundles, forget cached JWT-SVIDs, close the connection."""
        super().close()
        self._tokens.clear()

    def _check_usable(self) -> None:
        if self._closed:
            raise SourceError("the Workload API source is closed")
        if self._forked():
            raise SourceError(FORKED)

    def _request(self, audience: str) -> Any:
        self._check_usable()
        return wire.pb2.JWTSVIDRequest(audience=[audience], spiffe_id=self._subject or "")

    def _mint(self, audience: str) -> str:
        request = self._request(audience)
        try:
            response = self._stub.FetchJWTSVID(
                request, metadata=wire.HEADER, timeout=self._fetch_timeout, wait_for_ready=True
            )
        except wire.RpcError as exc:
            raise self._refused(exc) from None
        return self._pick(response, audience)

    def _refused(self, exc: BaseException) -> SourceError:
        """The error of a failed ``FetchJWTSVID``. ``PERMISSION_DENIED`` withdraws every
        JWT-SVID the agent sent (SPIFFE Workload API: a client stops using what the agent no
        longer grants): the cached ones are forgotten, so no refresh failure falls back on
        them, and the source is not ready until a fetch succeeds again."""
        if wire.is_denied(exc):
            self._tokens_denied = True
            self._tokens.clear()
        return SourceError(f"Workload API FetchJWTSVID failed: {wire.describe(exc)}")

    async def _mint_async(self, audience: str) -> str:
        request = self._request(audience)
        call = self._stub.FetchJWTSVID.future(
            request, metadata=wire.HEADER, timeout=self._fetch_timeout, wait_for_ready=True
        )
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def wake() -> None:
            if not done.done():
                done.set_result(None)

        def on_done(_: Any) -> None:
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting
                loop.call_soon_threadsafe(wake)

        call.add_done_callback(on_done)
        try:
            await done
        except asyncio.CancelledError:
            call.cancel()
            raise
        try:
            response = call.result()
        except wire.RpcError as exc:
            raise self._refused(exc) from None
        return self._pick(response, audience)

    def _pick(self, response: Any, audience: str) -> str:
        try:
            entry = pick(list(response.svids), self._subject, None)
        except ZeroTrustError as exc:
            raise SourceError(f"Workload API sent no usable JWT-SVID: {exc}") from None
        token = _checked_jwt_svid(entry.svid, entry.spiffe_id, audience, self._clock.now())
        self._tokens_denied = False  # the agent grants an identity again
        return token

    # --- JWT bundles -----------------------------------------------------------------------

    def _on_bundles(self, response: Any) -> str | None:
        self._bundles, left_out = jwt_bundle_set(dict(response.bundles), self._bundles)
        self._denied = False
        return left_out

    def _on_denied(self) -> None:
        # SPIFFE Workload API §6.2.2: the client ceases to use the bundles (and JWT-SVIDs)
        self._denied = True
        self._tokens.clear()

    def _withdrawn(self) -> bool:
        return self._denied or self._tokens_denied

    def get_jwt_bundle_set(self) -> BundleSet:
        """The current JWT bundles, one JWT-only :class:`~zerotrust.TrustBundle` per trust
        domain (never blocks; :class:`~zerotrust.errors.KeysUnavailable` before the first)."""
        bundles = self._bundles
        if self._closed:
            raise KeysUnavailable("the Workload API source is closed")
        if self._forked():
            raise KeysUnavailable(FORKED)
        if self._denied:
            raise KeysUnavailable("the Workload API withdrew the JWT bundles (PERMISSION_DENIED)")
        if bundles is None:
            raise KeysUnavailable("no JWT bundles from the Workload API yet")
        return bundles

    def keys_for(self, trust_domain: TrustDomain | str) -> SpiffeJwtBundleKeySource:
        """The key source of ``trust_domain``'s JWT authorities: pass it as ``keys`` to a
        ``TokenVerifier(token_type="jwt-svid", trust_domain=...)`` of that trust domain."""
        td = (
            trust_domain
            if isinstance(trust_domain, TrustDomain)
            else TrustDomain.parse(trust_domain)
        )
        keys = self._keys.get(td)
        if keys is None:
            keys = self._keys.setdefault(td, SpiffeJwtBundleKeySource(self._view, td))
        return keys

    def federated_keys(
        self, trust_domains: Iterable[TrustDomain | str] | None = None
    ) -> SpiffeJwtBundleSetKeySource:
        """The key source of the JWT authorities of ``trust_domains`` (``None``: every trust
        domain the agent sends JWT bundles for, federated ones included): pass it as ``keys``
        to a ``TokenVerifier(token_type="jwt-svid")`` without ``trust_domain``, and each
        JWT-SVID is verified with its own trust domain's keys."""
        return SpiffeJwtBundleSetKeySource(self._view, trust_domains)

    @property
    def trust_domain(self) -> TrustDomain | None:
        """The trust domain given at construction, whose JWT authorities :meth:`get_keys`
        serves (a ``TokenVerifier`` given this source checks ``sub`` against it)."""
        return None if self._default is None else self._default.trust_domain

    def get_keys(self, *, missing_kid: str | None = None) -> JWKSet:
        """The JWT authorities of ``trust_domain`` (given at construction)."""
        if self._default is None:
            raise KeysUnavailable("no trust_domain was given: use keys_for(trust_domain)")
        return self._default.get_keys(missing_kid=missing_kid)

    async def get_keys_async(self, *, missing_kid: str | None = None) -> JWKSet:
        """Same as :meth:`get_keys` (answered from memory)."""
        return self.get_keys(missing_kid=missing_kid)


def _checked_jwt_svid(token: object, spiffe_id: str, audience: str, now: datetime) -> str:
    """``token`` once it reads as the JWT-SVID asked for, as go-spiffe's client reads one
    (``jwtsvid.ParseInsecure``): a JWT signed with an algorithm JWT-SVIDs may use, typed as
    one (``JWT``, ``JOSE`` or no ``typ``), with no other header parameter than ``alg``,
    ``kid`` and ``typ`` (what zerotrust's verifiers accept), whose
    ``sub`` is the SPIFFE ID it was sent with, whose ``aud`` holds ``audience``, whose ``exp``
    is ahead and whose ``nbf``, if any, is not (with a minute of leeway). Its signature is the
    audience's to check; this keeps a wrong token from being cached and sent in the workload's
    name."""
    read = read_unverified(token) if isinstance(token, str) else None
    if read is None:
        raise SourceError("Workload API sent a JWT-SVID that is not a JWT")
    header, claims = read
    if header.get("alg") not in JWT_SVID_ALGORITHMS:
        raise SourceError("Workload API sent a JWT-SVID signed with an algorithm it may not use")
    try:
        check_typ(header.get("typ"), TYP_RULES[JWT_SVID], "a JWT-SVID")
    except ZeroTrustError:
        raise SourceError("Workload API sent a JWT-SVID whose typ is not JWT or JOSE") from None
    if not header.keys() <= JWT_SVID_HEADERS:  # JWT-SVID 2: verifiers refuse any other
        raise SourceError("Workload API sent a JWT-SVID with a header other than alg, kid, typ")
    subject = claims.get("sub")
    try:
        SpiffeId.parse(subject if isinstance(subject, str) else "")
    except ZeroTrustError:
        raise SourceError("Workload API sent a JWT-SVID whose sub is not a SPIFFE ID") from None
    if spiffe_id and subject != spiffe_id:
        raise SourceError("Workload API sent a JWT-SVID for another SPIFFE ID than it named")
    aud = claims.get("aud")
    audiences = (aud,) if isinstance(aud, str) else aud if isinstance(aud, (tuple, list)) else ()
    if audience not in audiences:
        raise SourceError("Workload API sent a JWT-SVID for another audience")
    exp = numeric_date(claims.get("exp"))
    if exp is None:
        raise SourceError("Workload API sent a JWT-SVID without a valid exp")
    moment = now.timestamp()
    if exp <= moment:
        raise SourceError("Workload API sent an expired JWT-SVID")
    if "nbf" in claims:
        nbf = numeric_date(claims["nbf"])
        if nbf is None or nbf > moment + _LEEWAY:
            raise SourceError("Workload API sent a JWT-SVID that is not valid yet")
    return str(token)
