"""The demo's trust domain: one development CA, the workloads' SVIDs and the token service.

Every workload gets a short-lived X509-SVID from the embedded :class:`~zerotrust.dev.DevCA`
(servers also name ``localhost``, so that curl and grpc accept them for that host) and signs
nothing itself: one token service (a :class:`~zerotrust.TokenIssuer` whose JWKS every service
trusts) mints the tokens the workloads present, each for one audience and bound to the
caller's certificate (RFC 8705 ``cnf.x5t#S256``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from zerotrust import (
    Authenticator,
    Guard,
    MemorySink,
    Policy,
    SelfIssuedTokenSource,
    TokenIssuer,
    TokenVerifier,
    X509Svid,
)
from zerotrust.audit import AuditSink
from zerotrust.dev import DevCA
from zerotrust.tokens import PrivateJWK, certificate_thumbprint

TRUST_DOMAIN: Final = "shop.example"
TOKEN_ISSUER: Final = "https://tokens.shop.example"  # noqa: S105 - a URL, not a secret
SVID_TTL: Final = 3600
TOKEN_TTL: Final = 300

FRONTEND: Final = f"spiffe://{TRUST_DOMAIN}/frontend"
GATEWAY: Final = f"spiffe://{TRUST_DOMAIN}/gateway"
INVENTORY: Final = f"spiffe://{TRUST_DOMAIN}/inventory"
PAYMENTS: Final = f"spiffe://{TRUST_DOMAIN}/payments"
BACKOFFICE: Final = f"spiffe://{TRUST_DOMAIN}/backoffice"
INTRUDER: Final = f"spiffe://{TRUST_DOMAIN}/intruder"

_SERVERS: Final = (GATEWAY, INVENTORY, PAYMENTS)
_CLIENTS: Final = (FRONTEND, INTRUDER)


@dataclass(frozen=True)
class Shop:
    """The CA, every workload's SVID and the token service of the demo."""

    ca: DevCA
    svids: dict[str, X509Svid]
    signing_key: PrivateJWK
    issuer: TokenIssuer

    def svid(self, spiffe_id: str) -> X509Svid:
        return self.svids[spiffe_id]

    def verifier(self, audience: str) -> TokenVerifier:
        """What a service accepts: tokens of the token service, for its own SPIFFE ID."""
        return TokenVerifier(
            issuer=TOKEN_ISSUER,
            audience=audience,
            keys=self.issuer.jwks(),
            algorithms=["ES256"],
            max_lifetime=3600,
        )

    def bound_claims(self, spiffe_id: str) -> dict[str, object]:
        """A ``cnf`` claim binding a token to the workload's current certificate."""
        return {"cnf": {"x5t#S256": certificate_thumbprint(self.svid(spiffe_id).leaf)}}

    def token_source(self, spiffe_id: str, scopes: Iterable[str]) -> SelfIssuedTokenSource:
        """Short-lived tokens for ``spiffe_id``, one per audience, bound to its certificate."""
        return SelfIssuedTokenSource(
            self.issuer,
            subject=spiffe_id,
            scopes=scopes,
            ttl=TOKEN_TTL,
            extra_claims=self.bound_claims(spiffe_id),
        )


def create_shop() -> Shop:
    ca = DevCA.create(TRUST_DOMAIN)
    svids = {sid: ca.issue_svid(sid, ttl=SVID_TTL, dns_names=["localhost"]) for sid in _SERVERS}
    svids.update({sid: ca.issue_svid(sid, ttl=SVID_TTL) for sid in _CLIENTS})
    key = PrivateJWK.generate("ES256")
    return Shop(ca=ca, svids=svids, signing_key=key, issuer=TokenIssuer(key, issuer=TOKEN_ISSUER))


@dataclass
class Service:
    """One service of the shop: its identity, its Guard and the audit events it recorded."""

    name: str
    spiffe_id: str
    guard: Guard
    audit: MemorySink
    address: str = ""
    notes: list[str] = field(default_factory=list)


def make_service(
    shop: Shop, name: str, spiffe_id: str, policy: Policy, extra_sinks: Iterable[AuditSink] = ()
) -> Service:
    """A Guard for ``spiffe_id``: mTLS peers of the shop, tokens for it, ``policy``."""
    audit = MemorySink()
    guard = Guard(
        authenticator=Authenticator(
            tokens=shop.verifier(spiffe_id),
            bundles=shop.ca.bundle,
            require_mtls=True,
            token_must_match_peer=True,
        ),
        policy=policy,
        audit=[audit, *extra_sinks],
        service=name,
    )
    return Service(name=name, spiffe_id=spiffe_id, guard=guard, audit=audit)
