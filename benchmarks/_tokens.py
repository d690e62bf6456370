"""The tokens the server benchmarks send: one per variant, from an ES256 or an RS256 issuer.

Every variant gets an ES256 token except ``uncached-rs256``, which gets an RS256 one; the
servers load one JWKS holding both public keys (each token names its key by ``kid``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from zerotrust.tokens import PrivateJWK, TokenIssuer

RS256_VARIANT = "uncached-rs256"


def tokens_for(
    variants: Iterable[str],
    *,
    issuer: str,
    subject: str,
    audience: str,
    scopes: Sequence[str] = (),
) -> tuple[dict[str, str], dict[str, Any]]:
    """``(token per variant, JWKS of both issuers)``; tokens live an hour."""
    issuers = {
        alg: TokenIssuer(PrivateJWK.generate(alg, kid=f"bench-{alg}"), issuer=issuer)
        for alg in ("ES256", "RS256")
    }
    tokens = {
        variant: issuers["RS256" if variant == RS256_VARIANT else "ES256"].issue(
            subject=subject, audience=audience, scopes=list(scopes), ttl=3600
        )
        for variant in variants
    }
    jwks = {"keys": [key for each in issuers.values() for key in each.jwks()["keys"]]}
    return tokens, jwks
