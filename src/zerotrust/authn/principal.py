"""The verified caller: who it is and how it proved it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from zerotrust.errors import ConfigurationError
from zerotrust.identity import SpiffeId

__all__ = ["Principal", "ProvenBy"]

#: How a principal was authenticated.
ProvenBy = Literal["mtls", "proxy-mtls", "jwt", "mtls+jwt", "mtls+bound-jwt", "dpop", "api-key"]

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller. Immutable; handed to handlers by every integration.

    * ``spiffe_id`` -- the calling workload: from its certificate (mTLS, direct or forwarded by
      a trusted proxy), else from the token's ``sub`` when that is a SPIFFE ID, whatever the
      issuer and profile. Only a JWT-SVID verifier binds such an ID to its trust domain's keys;
      for any other issuer the ID is that issuer's word, so bind rules to the issuer meant to
      name workloads (``Callers(spiffe_ids=[...], issuers=[...])``).
    * ``subject`` / ``issuer`` -- the token's ``sub`` / ``iss`` (for mTLS alone, the SPIFFE ID
      and its trust domain).
    * ``scopes`` -- granted scopes (space-delimited ``scope`` or ``scp`` list).
    * ``actor`` / ``delegation`` -- RFC 8693: the current actor (``act.sub``) and the whole
      ``act`` chain, outermost first. Decisions use ``subject`` and ``actor``.
    * ``cert_fingerprint`` / ``token_jti`` -- what audit events record instead of credentials.
    """

    proven_by: ProvenBy
    spiffe_id: SpiffeId | None = None
    subject: str | None = None
    issuer: str | None = None
    scopes: frozenset[str] = frozenset()
    claims: Mapping[str, Any] = field(default_factory=lambda: _EMPTY, repr=False)
    client_id: str | None = None
    actor: str | None = None
    delegation: tuple[Mapping[str, Any], ...] = field(default=(), repr=False)
    cert_fingerprint: str | None = None
    token_jti: str | None = None
    api_key_id: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.claims, MappingProxyType):
            object.__setattr__(self, "claims", MappingProxyType(dict(self.claims)))
        scopes: Any = self.scopes
        if not isinstance(scopes, frozenset):  # accept any iterable from callers
            if isinstance(scopes, (str, bytes)):  # its characters would be the scopes
                raise ConfigurationError(
                    "scopes is a collection of scopes (['orders:read']), not one string"
                )
            object.__setattr__(self, "scopes", frozenset(scopes))

    @property
    def id(self) -> str:
        """A stable identifier (rate-limit buckets are per id): the SPIFFE ID, else
        ``issuer|subject``, else the API key id; a token without ``sub`` is named by its
        issuer and ``client_id`` (or ``azp``), else its ``jti``."""
        if self.spiffe_id is not None:
            return str(self.spiffe_id)
        if self.subject is not None:
            return f"{self.issuer or ''}|{self.subject}"
        if self.api_key_id is not None:
            return f"api-key:{self.api_key_id}"
        if self.client_id is not None:
            return f"{self.issuer or ''}#client_id:{self.client_id}"
        return f"{self.issuer or ''}#jti:{self.token_jti or ''}"

    def has_scopes(self, *scopes: str) -> bool:
        """True when every one of ``scopes`` was granted."""
        return self.scopes.issuperset(scopes)

    def summary(self) -> dict[str, str | None]:
        """Identifiers only (never credentials): what logs and audit events may carry."""
        return {
            "spiffe_id": str(self.spiffe_id) if self.spiffe_id is not None else None,
            "subject": self.subject,
            "issuer": self.issuer,
            "proven_by": self.proven_by,
            "client_id": self.client_id,
            "actor": self.actor,
            "cert_fingerprint": self.cert_fingerprint,
            "token_jti": self.token_jti,
        }
