"""Authentication: from a request's credentials to a verified :class:`Principal`.

Written once as a sans-IO flow (it yields key requests when a JWKS must be fetched); the
:class:`~zerotrust.Guard` drives it for sync and async callers alike.

Rules:

* The certificate of the immediate peer (direct mTLS) is the workload identity, verified as an
  X509-SVID of its own trust domain unless the TLS layer already did so.
* Client certificates forwarded in headers count **only** from a configured trusted proxy;
  from anyone else they are ignored and noted for the audit trail.
* A bearer token is verified (signature, then claims) and its binding enforced: ``cnf.x5t#S256``
  needs that certificate on the connection, ``cnf.jkt`` a DPoP proof with the DPoP scheme.
* mTLS + token: both are verified; with ``token_must_match_peer`` the token's subject,
  ``azp`` or ``client_id`` must be the peer's SPIFFE ID.
* Credentials that are present but invalid are an error, never a fall-back to anonymous.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, Final

from zerotrust._clock import SYSTEM_CLOCK, Clock
from zerotrust.authn.binding import (
    DPoPConfig,
    DPoPProof,
    bound_jkt,
    check_certificate_binding,
    check_confirmation_methods,
    check_dpop_binding,
    request_url,
    verify_dpop_proof,
)
from zerotrust.authn.credentials import B64TOKEN, ApiKeys, Credentials, extract_credentials
from zerotrust.authn.principal import Principal, ProvenBy
from zerotrust.authn.proxy import (
    FORWARDED_CERT_HEADERS,
    ParsedChains,
    TrustedProxies,
    forwarded_cert,
)
from zerotrust.authn.request import RequestView
from zerotrust.errors import (
    AuthenticationError,
    CertificateExpired,
    CertificateNotYetValid,
    ConfigurationError,
    InvalidClaim,
    InvalidSpiffeId,
    MissingCredentials,
    TokenBindingMismatch,
    UntrustedCertificate,
    UseDPoPNonce,
    ZeroTrustError,
)
from zerotrust.identity import SpiffeId
from zerotrust.tokens.verified import VerifiedToken
from zerotrust.tokens.verify import TokenVerifier
from zerotrust.x509.bundle import BundleSet, TrustBundle
from zerotrust.x509.sources import X509BundleSource
from zerotrust.x509.verify import VerifiedChains, VerifiedPeer, verify_x509_svid

__all__ = ["PEER_IS_PROXY", "AuthResult", "Authenticator"]

#: Audit note: the connection's own certificate is a trusted proxy's, so it did not
#: authenticate the request (the proxy forwarded no client certificate).
PEER_IS_PROXY: Final = "peer_is_proxy"


@dataclass(frozen=True, slots=True)
class AuthResult:
    """What authentication established (``principal`` is ``None`` for an anonymous request)."""

    principal: Principal | None
    credentials: Credentials
    token: VerifiedToken | None = None
    dpop_proof: DPoPProof | None = None
    notes: tuple[str, ...] = ()
    #: The client certificate that authenticated the request, if any.
    peer: VerifiedPeer | None = None
    #: A plain ``Bearer`` token and nothing else (no proof, API key or forwarded certificate),
    #: with at most the connection's handshake-verified peer: the next request presenting the
    #: same token the same way on the same connection would authenticate the same.
    reusable: bool = False


#: The most principals of cached tokens remembered (fewer when the verifier's cache is smaller).
_MAX_PRINCIPALS: Final = 4096
#: The Authenticator's configuration: set once, by its constructor.
_SETTINGS: Final = frozenset(
    {
        "tokens",
        "bundles",
        "trusted_proxies",
        "api_keys",
        "dpop",
        "require_mtls",
        "require_token",
        "token_must_match_peer",
        "max_delegation_depth",
        "clock",
    }
)


class Authenticator:
    """Turns requests into principals. Immutable once built (its settings cannot be
    reassigned); share one per service."""

    def __init__(
        self,
        *,
        tokens: TokenVerifier | None = None,
        bundles: X509BundleSource | TrustBundle | BundleSet | None = None,
        trusted_proxies: TrustedProxies | None = None,
        api_keys: ApiKeys | None = None,
        dpop: DPoPConfig | None = DPoPConfig(),  # noqa: B008 - immutable value
        require_mtls: bool = False,
        require_token: bool = False,
        token_must_match_peer: bool = False,
        max_delegation_depth: int = 4,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if tokens is None and bundles is None and api_keys is None:
            raise ConfigurationError("an Authenticator needs tokens=, bundles= or api_keys=")
        if require_token and tokens is None:
            raise ConfigurationError("require_token=True needs a token verifier (tokens=...)")
        if trusted_proxies is not None and bundles is None:
            raise ConfigurationError("forwarded certificates need bundles= to verify them")
        if (
            trusted_proxies is not None
            and api_keys is not None
            and api_keys.header in trusted_proxies.header_names
        ):  # each value would be read as both, a key and a certificate
            raise ConfigurationError(
                f"the API key header {api_keys.header!r} is a forwarded-certificate header too"
            )
        if not 0 <= max_delegation_depth <= 32:
            raise ConfigurationError("max_delegation_depth must be between 0 and 32")
        self.tokens = tokens
        self.bundles = bundles
        self.trusted_proxies = trusted_proxies
        self.api_keys = api_keys
        self.dpop = dpop
        self.require_mtls = require_mtls
        self.require_token = require_token
        self.token_must_match_peer = token_must_match_peer
        self.max_delegation_depth = max_delegation_depth
        self.clock = clock
        # Principals of cached tokens presented without certificate or proof: the verifier's
        # cache hands back the same VerifiedToken object, so the principal is built once.
        self._principals: dict[VerifiedToken, Principal] = {}
        # ... and of verified peers (one object per TLS connection, reused by keep-alive).
        self._peers: dict[VerifiedPeer, Principal] = {}
        # ... and the bundle snapshot each handshake-verified peer was last checked against.
        self._trusted: dict[VerifiedPeer, BundleSet] = {}
        # ... and the chains not verified during a handshake (forwarded by a proxy, handed over
        # by the server), each verified once per bundle snapshot while its path is valid.
        self._chains = VerifiedChains(bundles) if bundles is not None else None
        self._parsed = ParsedChains() if trusted_proxies is not None else None
        # A plain Bearer request carries none of these headers. It is read in one pass only
        # where Authorization can hold nothing but a token (ApiKeys and TrustedProxies refuse
        # its name; anything else takes the reading header by header).
        self._plain_absent = frozenset(self.reuse_absent_headers)
        self._one_pass = "authorization" not in self._plain_absent

    def __setattr__(self, name: str, value: object) -> None:
        # What __init__ derived from the configuration (the one-pass header set, the caches)
        # would not follow a reassignment: refuse it instead of serving half of each.
        if name in _SETTINGS and name in self.__dict__:
            raise AttributeError(
                f"Authenticator.{name} cannot change once built: build a new Authenticator"
            )
        object.__setattr__(self, name, value)

    # --- certificates -------------------------------------------------------------------------

    @property
    def reuse_absent_headers(self) -> tuple[str, ...]:
        """Headers whose presence makes a request other than a plain bearer-token request."""
        names = ["dpop"]
        if self.api_keys is not None:
            names.append(self.api_keys.header)
        proxies = self.trusted_proxies
        names.extend(FORWARDED_CERT_HEADERS if proxies is None else proxies.header_names)
        return tuple(dict.fromkeys(names))

    def recheck_peer(self, peer: VerifiedPeer) -> None:
        """The per-request checks of a peer verified during the TLS handshake: a long-lived
        connection may outlive its certificate, a certificate that issued it (an expired
        intermediate ends the path), or the authority at its root; and a clock set back (a
        step of NTP) may put the request before a certificate of its chain was valid."""
        now = self.clock.now()
        if peer.not_after < now:
            raise CertificateExpired(
                f"a certificate of {peer.spiffe_id}'s chain expired during the connection"
            )
        if now < peer.not_before:
            raise CertificateNotYetValid(
                f"a certificate of {peer.spiffe_id}'s chain is not valid yet"
            )
        if self.bundles is not None:
            self._still_trusted(peer)

    def _direct_peer(self, view: RequestView) -> tuple[VerifiedPeer | None, bool]:
        """The client certificate of the connection itself, and whether it is the peer the
        TLS handshake verified (rather than a chain the server handed over unverified)."""
        direct = view.verified_peer
        if direct is not None:
            self.recheck_peer(direct)
            return direct, True
        chain = view.peer_chain
        if not chain:
            return None, False
        if self._chains is None:
            raise ConfigurationError("a peer certificate arrived but no bundles= are configured")
        return self._chains.verify(chain, now=self.clock.now(), role="client"), False

    def _peer(self, view: RequestView, notes: list[str]) -> tuple[VerifiedPeer | None, bool, bool]:
        """The authenticated client certificate, whether it came through a proxy, and whether
        it is the handshake-verified peer of the connection."""
        direct, handshake = self._direct_peer(view)
        forwarded = forwarded_cert(
            view.header,
            view.remote_addr,
            direct.spiffe_id if direct is not None else None,
            self.trusted_proxies,
            self._parsed,
        )
        if forwarded.ignored:
            notes.append(f"forwarded_cert_ignored_{forwarded.ignored_reason}")
        if forwarded.chain is not None:
            assert self._chains is not None  # bundles are checked at construction
            # noted first: a chain refused below was forwarded too, as its audit event says
            notes.append(f"forwarded_cert_{forwarded.source}")
            peer = self._chains.verify(forwarded.chain, now=self.clock.now(), role="client")
            return peer, True, False
        if self._relayed(view, direct, notes):
            return None, False, False
        return direct, False, handshake

    def _relayed(self, view: RequestView, direct: VerifiedPeer | None, notes: list[str]) -> bool:
        """Whether the connection's own certificate is a trusted proxy's. A proxy relays its
        clients' requests: its certificate never stands for the caller (a client that sent
        no certificate through it would otherwise be taken for the proxy)."""
        proxies = self.trusted_proxies
        if direct is None or proxies is None:
            return False
        if not proxies.is_proxy(view.remote_addr, direct.spiffe_id):
            return False
        notes.append(PEER_IS_PROXY)
        return True

    def _still_trusted(self, peer: VerifiedPeer) -> None:
        """A keep-alive connection's peer must still chain to an authority of the *current*
        bundle of its trust domain: removing an authority ends its connections' access too."""
        assert self.bundles is not None
        bundle_set = self.bundles.get_bundle_set()
        if self._trusted.get(peer) is bundle_set:  # checked against this very snapshot
            return
        bundle = bundle_set.get(peer.spiffe_id.trust_domain)
        if bundle is None or not (
            bundle.has_authority(peer.chain[-1]) or self._validates(peer, bundle_set)
        ):
            raise UntrustedCertificate(
                f"the authority of {peer.spiffe_id}'s certificate was removed from its bundle"
            )
        if len(self._trusted) >= 4096:
            self._trusted.clear()
        self._trusted[peer] = bundle_set

    def _validates(self, peer: VerifiedPeer, bundle_set: BundleSet) -> bool:
        """Whether ``peer``'s chain still validates to ``bundle_set`` although the authority
        it ended at is gone: a renewed CA certificate (same name and key) replaces the one the
        handshake found, and the chain is as good as it was."""
        try:
            verify_x509_svid(peer.chain, bundle_set, now=self.clock.now(), role="client")
        except ZeroTrustError:
            return False
        return True

    # --- the flow -----------------------------------------------------------------------------

    def flow(
        self, view: RequestView, notes: list[str] | None = None
    ) -> Generator[Any, Any, AuthResult]:
        """Authenticate ``view``; raises :class:`~zerotrust.errors.AuthenticationError` subclasses
        (or ``SourceError`` when keys are unavailable). What it notes for the audit trail is
        appended to ``notes`` as it goes, so a caller keeps it when authentication fails."""
        if notes is None:
            notes = []
        max_size = self.tokens.signature_verifier.max_token_size if self.tokens else 8192
        alone = getattr(view, "bearer_alone", None) if self._one_pass else None
        raw = alone(self._plain_absent) if alone is not None else None  # the adapters' views
        if raw is not None and len(raw) <= max_size and B64TOKEN.fullmatch(raw):
            # One canonical Bearer header and no header of any other credential (DPoP, API
            # key, forwarded certificate): what extract_credentials and extract_forwarded_cert
            # would find, without reading every header again.
            creds = Credentials(token=raw, scheme="Bearer")
            peer, handshake = self._direct_peer(view)
            via_proxy = False
            if self._relayed(view, peer, notes):
                peer = None
        else:
            api_header = self.api_keys.header if self.api_keys is not None else None
            creds = extract_credentials(
                view,
                max_token_bytes=max_size,
                api_key_header=api_header,
                dpop=self.dpop is not None,
            )
            peer, via_proxy, handshake = self._peer(view, notes)
        if self.require_mtls and peer is None:
            raise MissingCredentials("a client certificate is required")
        if creds.token is None:
            if self.require_token:
                raise MissingCredentials("a bearer token is required")
            if creds.dpop_proof is not None:
                notes.append("dpop_proof_without_token")
            return self._without_token(creds, peer, via_proxy, notes)
        if self.tokens is None:
            raise AuthenticationError("bearer tokens are not accepted by this service")
        if creds.api_key is not None and self.api_keys is not None:
            # the token names the caller, but an API key that came with it must be valid too
            self._api_key_id(creds.api_key)
        token = yield from self.tokens.flow(creds.token)
        bearer = creds.scheme == "Bearer" and creds.dpop_proof is None
        reusable = bearer and creds.api_key is None and not notes and (peer is None or handshake)
        # the cache hands back the same VerifiedToken object for the same token
        plain = peer is None and bearer and self.tokens.cache is not None
        if plain:
            # The same token object, presented the same way, passed every binding check
            # before: reuse its principal (only successes are remembered).
            principal = self._principals.get(token)
            if principal is not None:
                return AuthResult(
                    principal, creds, token=token, notes=tuple(notes), reusable=reusable
                )
        proof = self._check_bindings(view, creds, token, peer)
        principal = self._token_principal(token, peer, via_proxy, proof)
        cache = self.tokens.cache
        if plain and proof is None and cache is not None:
            # a principal is found again only while the cache holds its token: no more of
            # them than the cache holds tokens
            if len(self._principals) >= min(_MAX_PRINCIPALS, cache.max_entries):
                self._principals.clear()
            self._principals[token] = principal
        return AuthResult(
            principal,
            creds,
            token=token,
            dpop_proof=proof,
            notes=tuple(notes),
            peer=peer,
            reusable=reusable,
        )

    def _check_bindings(
        self, view: RequestView, creds: Credentials, token: VerifiedToken, peer: VerifiedPeer | None
    ) -> DPoPProof | None:
        check_confirmation_methods(token)
        proof = None
        stale: UseDPoPNonce | None = None
        if creds.dpop_proof is not None and creds.scheme == "DPoP":
            if self.dpop is None:  # pragma: no cover - extract_credentials refused the scheme
                raise TokenBindingMismatch("DPoP is not accepted by this service")
            try:
                proof = verify_dpop_proof(
                    creds.dpop_proof,
                    method=view.method,
                    url=request_url(view, self.dpop),
                    access_token=creds.token,
                    config=self.dpop,
                    now=self.clock.now().timestamp(),
                    jkt=bound_jkt(token),
                )
            except UseDPoPNonce as exc:
                if not isinstance(exc.proof, DPoPProof):  # pragma: no cover - always set
                    raise
                # asked for last: a request that would fail anyway fails for that, and a
                # client sending it again with the nonce is accepted
                stale, proof = exc, exc.proof
        check_dpop_binding(token, proof, creds.scheme)
        check_certificate_binding(token, peer)
        if len(token.act) > self.max_delegation_depth:
            raise InvalidClaim(f"delegation chain deeper than {self.max_delegation_depth}")
        if self.token_must_match_peer and peer is not None:
            names = {token.subject, _str_or_none(token.claims.get("azp")), token.client_id}
            if str(peer.spiffe_id) not in names:
                raise TokenBindingMismatch("the token was not issued to the calling workload")
        if stale is not None:
            raise stale
        return proof

    def _without_token(
        self, creds: Credentials, peer: VerifiedPeer | None, via_proxy: bool, notes: list[str]
    ) -> AuthResult:
        """Who a request without a token is: its API key's, else its certificate's, else
        nobody. A key sent beside a certificate must be valid too, but the certificate names
        the caller, as beside a token: a weaker credential never takes its identity away."""
        if creds.api_key is not None and self.api_keys is not None:
            if peer is None:
                principal = self._api_key_principal(creds.api_key)
                return AuthResult(principal, creds, notes=tuple(notes))
            self._api_key_id(creds.api_key)
        if peer is None:
            return AuthResult(None, creds, notes=tuple(notes))
        known = self._peers.get(peer)
        if known is None or known.proven_by != ("proxy-mtls" if via_proxy else "mtls"):
            known = _peer_principal(peer, via_proxy)
            if len(self._peers) >= 4096:
                self._peers.clear()
            self._peers[peer] = known
        return AuthResult(known, creds, notes=tuple(notes), peer=peer)

    def _token_principal(
        self,
        token: VerifiedToken,
        peer: VerifiedPeer | None,
        via_proxy: bool,
        proof: DPoPProof | None,
    ) -> Principal:
        cnf = token.cnf or {}
        proven: ProvenBy
        if proof is not None:
            proven = "dpop"
        elif "x5t#S256" in cnf and not via_proxy:
            proven = "mtls+bound-jwt"
        elif peer is not None:  # a forwarded certificate is the proxy's word, token or not
            proven = "proxy-mtls" if via_proxy else "mtls+jwt"
        else:
            proven = "jwt"
        spiffe_id = peer.spiffe_id if peer is not None else _spiffe_subject(token.subject)
        act = token.act
        actor = act[0].get("sub") if act else None
        return Principal(
            proven_by=proven,
            spiffe_id=spiffe_id,
            subject=token.subject,
            issuer=token.issuer,
            scopes=token.scopes,
            claims=token.claims,
            client_id=token.client_id or _str_or_none(token.claims.get("azp")),
            actor=actor if isinstance(actor, str) else None,
            delegation=act,
            cert_fingerprint=peer.fingerprint if peer is not None else None,
            token_jti=token.jti,
        )

    def _api_key_id(self, presented: str) -> str:
        assert self.api_keys is not None
        key_id = self.api_keys.identify(presented)
        if key_id is None:
            raise AuthenticationError("unknown API key")
        return key_id

    def _api_key_principal(self, presented: str) -> Principal:
        key_id = self._api_key_id(presented)
        return Principal(proven_by="api-key", subject=f"api-key:{key_id}", api_key_id=key_id)


def _peer_principal(peer: VerifiedPeer, via_proxy: bool) -> Principal:
    return Principal(
        proven_by="proxy-mtls" if via_proxy else "mtls",
        spiffe_id=peer.spiffe_id,
        subject=str(peer.spiffe_id),
        issuer=peer.spiffe_id.trust_domain.id_string(),
        cert_fingerprint=peer.fingerprint,
    )


_subjects: dict[str, SpiffeId | None] = {}


def _spiffe_subject(subject: str | None) -> SpiffeId | None:
    if subject is None or not subject.startswith("spiffe://"):
        return None
    try:
        return _subjects[subject]  # callers are few; their tokens are many
    except KeyError:
        pass
    try:
        parsed: SpiffeId | None = SpiffeId.parse(subject)
    except InvalidSpiffeId:
        parsed = None
    if len(_subjects) >= 4096:
        _subjects.clear()
    _subjects[subject] = parsed
    return parsed


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None
