"""Signed tokens: verify and issue JWS-compact JWTs on top of ``cryptography``.

Verification is two named steps -- :class:`SignatureVerifier` (bounds, header rules, key
selection, signature) then :class:`ClaimsValidator` (issuer, audience, times, profile) --
composed with a verified-token cache by :class:`TokenVerifier`. Keys come from a
:class:`KeySource`; :class:`TokenIssuer` signs tokens and :class:`JWKSEndpoint` serves its
public keys over HTTP.
"""

from zerotrust.tokens.algorithms import (
    ASYMMETRIC_ALGORITHMS,
    HMAC_ALGORITHMS,
    JWT_SVID_ALGORITHMS,
    SUPPORTED_ALGORITHMS,
)
from zerotrust.tokens.cache import VerifiedTokenCache
from zerotrust.tokens.claims import ClaimsValidator, validate_claims
from zerotrust.tokens.issue import TokenIssuer, certificate_thumbprint
from zerotrust.tokens.jwks import JWKSet, SkippedKey
from zerotrust.tokens.keyring import KeyRing
from zerotrust.tokens.keys import JWK, PrivateJWK
from zerotrust.tokens.publish import JWKS_MEDIA_TYPE, JWKSEndpoint
from zerotrust.tokens.secret import SecretKey, SecretKeySet
from zerotrust.tokens.signature import SignatureVerifier, verify_signature
from zerotrust.tokens.sources import (
    KeyRequest,
    KeySet,
    KeySource,
    StaticKeySource,
    TrustDomainKeySource,
)
from zerotrust.tokens.verified import VerifiedSignature, VerifiedToken
from zerotrust.tokens.verify import TokenVerifier

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "HMAC_ALGORITHMS",
    "JWK",
    "JWKS_MEDIA_TYPE",
    "JWT_SVID_ALGORITHMS",
    "SUPPORTED_ALGORITHMS",
    "ClaimsValidator",
    "JWKSEndpoint",
    "JWKSet",
    "KeyRequest",
    "KeyRing",
    "KeySet",
    "KeySource",
    "PrivateJWK",
    "SecretKey",
    "SecretKeySet",
    "SignatureVerifier",
    "SkippedKey",
    "StaticKeySource",
    "TokenIssuer",
    "TokenVerifier",
    "TrustDomainKeySource",
    "VerifiedSignature",
    "VerifiedToken",
    "VerifiedTokenCache",
    "certificate_thumbprint",
    "validate_claims",
    "verify_signature",
]
