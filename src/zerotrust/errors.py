"""The zerotrust error tree.

Every error raised by zerotrust derives from :class:`ZeroTrustError` and carries:

* ``code`` -- a short, stable, machine-readable string (part of the public API);
* ``public_message`` -- a terse message that is safe to show to a remote caller;
* ``http_status`` / ``grpc_status`` -- how adapters translate it.

``str(error)`` is the precise internal reason, meant for logs and audit events. It
never contains a raw token, key material or a full certificate, but it may name a
rule, a claim or a SPIFFE ID, so adapters show callers ``public_message`` only.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "AccessDenied",
    "AlgorithmNotAllowed",
    "AuditError",
    "AuthenticationError",
    "AuthorizationError",
    "BundleError",
    "CertificateError",
    "CertificateExpired",
    "CertificateNotYetValid",
    "ConfigurationError",
    "DPoPOriginUnknown",
    "DPoPProofReplayed",
    "IdentityError",
    "InsufficientScope",
    "InvalidAudience",
    "InvalidClaim",
    "InvalidDPoPProof",
    "InvalidIssuer",
    "InvalidSignature",
    "InvalidSpiffeId",
    "InvalidTokenType",
    "InvalidTrustDomain",
    "KeysUnavailable",
    "MalformedCertificate",
    "MalformedCredentials",
    "MalformedToken",
    "MissingClaim",
    "MissingCredentials",
    "MissingDependencyError",
    "NoTrustBundle",
    "PeerNotAuthorized",
    "RateLimited",
    "SourceError",
    "StoreFull",
    "StoreUnavailable",
    "SvidError",
    "SvidProfileViolation",
    "SvidUnavailable",
    "TokenBindingMismatch",
    "TokenError",
    "TokenExpired",
    "TokenLifetimeTooLong",
    "TokenNotYetValid",
    "TokenReplayed",
    "TokenRevoked",
    "TokenTooLarge",
    "UnknownKey",
    "UnsupportedScheme",
    "UnsupportedTokenFeature",
    "UntrustedCertificate",
    "UseDPoPNonce",
    "ZeroTrustError",
]


class ZeroTrustError(Exception):
    """Root of every error raised by zerotrust."""

    code: ClassVar[str] = "zerotrust_error"
    #: The ``error`` a remote caller sees. Precise codes that would help an attacker (why a
    #: token failed, which certificate rule broke) fold into their family's code here; the
    #: precise ``code`` goes to logs and audit events only.
    public_code: ClassVar[str | None] = None
    public_message: ClassVar[str] = "request failed"
    http_status: ClassVar[int] = 500
    grpc_status: ClassVar[str] = "INTERNAL"

    def __init__(self, detail: str | None = None) -> None:
        self.detail = detail or self.public_message
        super().__init__(self.detail)

    def __str__(self) -> str:
        return self.detail

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, detail={self.detail!r})"

    def to_dict(self) -> dict[str, str]:
        """The body an adapter may send to a caller (RFC 6750 style, no internals)."""
        return {"error": self.public_code or self.code, "error_description": self.public_message}


# --- configuration (raised at start-up, never on a request) -------------------------------


class ConfigurationError(ZeroTrustError):
    """Invalid or contradictory configuration; raised when objects are built."""

    code = "configuration_error"
    public_message = "server misconfigured"


class MissingDependencyError(ConfigurationError, ModuleNotFoundError):
    """An optional dependency is not installed, or too old to import; ``extra`` names the pip
    extra to add. Also a :class:`ModuleNotFoundError` (an :class:`ImportError`), so
    ``except ImportError`` and ``pytest.importorskip`` treat it as the missing import it is.
    ``error`` is the :class:`ImportError` that revealed it (also its ``__cause__``)."""

    code = "missing_dependency"

    def __init__(self, package: str, extra: str, *, error: BaseException | None = None) -> None:
        self.package = package
        self.extra = extra
        self.error = error
        if error is None or isinstance(error, ModuleNotFoundError):
            detail = f"{package!r} is required for this feature: pip install 'zerotrust[{extra}]'"
        else:  # installed, but a name zerotrust needs is not there: a release too old
            detail = (
                f"{package!r} is installed but lacks what zerotrust needs (too old?):"
                f" pip install --upgrade 'zerotrust[{extra}]'"
            )
        super().__init__(detail)
        self.name = package  # ImportError's: the module that could not be imported

    def __reduce__(self) -> tuple[Any, ...]:
        # rebuilt from its arguments (pickle, multiprocessing), then its state (the message);
        # not ``error``, which need not survive pickling (nor does ``__cause__``)
        state = {key: value for key, value in self.__dict__.items() if key != "error"}
        return (type(self), (self.package, self.extra), state)


# --- identity values and material ----------------------------------------------------------


class IdentityError(ZeroTrustError):
    """A SPIFFE identity, SVID or bundle is invalid."""

    code = "identity_error"
    public_message = "invalid identity"
    http_status = 400
    grpc_status = "INVALID_ARGUMENT"


class InvalidSpiffeId(IdentityError, ValueError):
    """A string is not a valid SPIFFE ID; ``rule`` names the rule of the spec that failed."""

    code = "invalid_spiffe_id"
    public_message = "invalid SPIFFE ID"

    def __init__(self, rule: str, detail: str | None = None) -> None:
        self.rule = rule
        super().__init__(detail or rule.replace("_", " "))


class InvalidTrustDomain(InvalidSpiffeId):
    """A string is not a valid SPIFFE trust domain name."""

    code = "invalid_trust_domain"
    public_message = "invalid trust domain"


class SvidError(IdentityError):
    """The workload's own SVID material is unusable (bad PEM, key does not match, ...)."""

    code = "invalid_svid"
    public_message = "invalid SVID"


class BundleError(IdentityError):
    """A trust bundle document is invalid."""

    code = "invalid_bundle"
    public_message = "invalid trust bundle"


# --- authentication: 401 / UNAUTHENTICATED -------------------------------------------------


class AuthenticationError(ZeroTrustError):
    """The caller could not be authenticated."""

    code = "unauthenticated"
    public_message = "authentication required"
    http_status = 401
    grpc_status = "UNAUTHENTICATED"


class MissingCredentials(AuthenticationError):
    """No credential this service accepts was presented (challenged without an ``error`` code)."""

    code = "missing_credentials"
    public_message = "authentication required"


class UnsupportedScheme(MissingCredentials):
    """An ``Authorization`` scheme this service does not accept (``Basic``...): as RFC 6750
    3.1 asks, the caller is challenged as one without credentials (no ``error`` code)."""

    code = "unsupported_scheme"
    public_code = "missing_credentials"


class MalformedCredentials(AuthenticationError):
    """A credential header is unreadable: a repeated ``Authorization``, too many header lines, a
    bad ``DPoP`` header and the like (RFC 6750 ``invalid_request``)."""

    code = "malformed_credentials"
    public_code = "invalid_request"
    public_message = "malformed credentials"
    http_status = 400  # RFC 6750 3.1: invalid_request is a 400 (gRPC: still UNAUTHENTICATED)


class CertificateError(AuthenticationError):
    """A peer certificate (chain) failed X.509-SVID validation."""

    code = "invalid_certificate"
    public_code = "invalid_certificate"
    public_message = "invalid client certificate"


class MalformedCertificate(CertificateError):
    """A peer or forwarded certificate could not be parsed (bad DER/PEM, chain too long)."""

    code = "malformed_certificate"


class UntrustedCertificate(CertificateError):
    """The chain does not validate to the bundle of the leaf's own trust domain."""

    code = "untrusted_certificate"


class NoTrustBundle(UntrustedCertificate):
    """No bundle is configured for the leaf's trust domain."""

    code = "no_trust_bundle"


class CertificateExpired(CertificateError):
    """A certificate of the peer's chain is past its ``notAfter``."""

    code = "certificate_expired"


class CertificateNotYetValid(CertificateError):
    """A certificate of the peer's chain is before its ``notBefore``."""

    code = "certificate_not_yet_valid"


class SvidProfileViolation(CertificateError):
    """The leaf breaks the X509-SVID profile; ``rule`` names which part."""

    code = "svid_profile_violation"

    def __init__(self, rule: str, detail: str | None = None) -> None:
        self.rule = rule
        super().__init__(detail or rule.replace("_", " "))


class TokenError(AuthenticationError):
    """A bearer token was presented and rejected (RFC 6750 ``invalid_token``)."""

    code = "invalid_token"
    public_code = "invalid_token"
    public_message = "invalid token"


class MalformedToken(TokenError):
    """The token is not a well-formed compact JWS (segments, base64url, JSON, header members)."""

    code = "malformed_token"


class TokenTooLarge(MalformedToken):
    """The token is longer than the verifier's ``max_token_size``; it is not parsed."""

    code = "token_too_large"


class UnsupportedTokenFeature(TokenError):
    """JWE, unencoded payloads, unknown ``crit`` parameters and similar are refused."""

    code = "unsupported_token"


class AlgorithmNotAllowed(TokenError):
    """The token's ``alg`` is not in the verifier's allowlist, or not the algorithm its key is
    bound to (``none`` and HMAC with a public key never are)."""

    code = "algorithm_not_allowed"


class UnknownKey(TokenError):
    """No key fits the token: its ``kid`` is not in the key set (asked again of the source for
    that ``kid``) or names several keys, or it has no ``kid`` and the set holds several."""

    code = "unknown_key"


class InvalidSignature(TokenError):
    """The token's signature does not verify with the key it names."""

    code = "invalid_signature"


class TokenExpired(TokenError):
    """The token's ``exp`` has passed (beyond the verifier's leeway)."""

    code = "token_expired"


class TokenNotYetValid(TokenError):
    """The token's ``nbf`` (or an ``iat`` in the future) is not yet reached (beyond the leeway)."""

    code = "token_not_yet_valid"


class TokenLifetimeTooLong(TokenError):
    """The token lives longer than the verifier's ``max_lifetime`` (``exp`` minus ``iat``, or
    minus ``nbf`` without ``iat``)."""

    code = "token_lifetime_too_long"


class InvalidIssuer(TokenError):
    """The token's ``iss`` is not the verifier's issuer."""

    code = "invalid_issuer"


class InvalidAudience(TokenError):
    """None of the token's ``aud`` values is an audience this verifier accepts."""

    code = "invalid_audience"


class InvalidTokenType(TokenError):
    """The token's ``typ`` header does not fit the verifier's profile (``at+jwt``, JWT-SVID)."""

    code = "invalid_token_type"


class MissingClaim(TokenError):
    """A claim the profile or ``required_claims`` asks for is absent."""

    code = "missing_claim"


class InvalidClaim(TokenError):
    """A claim has the wrong type or an unacceptable value (for example a non-numeric ``exp``)."""

    code = "invalid_claim"


class TokenRevoked(TokenError):
    """The token was revoked in the store: by its ``jti``, by its subject, or by its issuer for
    tokens issued before a cut-off."""

    code = "token_revoked"


class TokenReplayed(TokenError):
    """A one-time credential was presented again; raised as its subclass
    :class:`DPoPProofReplayed` (a DPoP proof whose ``jti`` the replay cache already holds)."""

    code = "token_replayed"


class TokenBindingMismatch(TokenError):
    """A sender-constrained token was presented without the key or certificate it is bound to."""

    code = "token_binding_mismatch"


class DPoPOriginUnknown(TokenBindingMismatch):
    """A DPoP proof came with a request that names no host (a gRPC call) to a service whose
    origins are not configured (``DPoPConfig(origins=...)``): its ``htu`` cannot be checked."""

    code = "dpop_origin_unknown"


class InvalidDPoPProof(TokenError):
    """The DPoP proof of a request is missing, malformed or does not match the request (its
    signature, ``typ``, ``alg``, ``htm``, ``htu``, ``iat`` or ``ath``): RFC 9449 7.1's
    ``invalid_dpop_proof``. A token that does not fit its proof's key is ``invalid_token``."""

    code = "invalid_dpop_proof"
    public_code = "invalid_dpop_proof"
    public_message = "invalid DPoP proof"


class UseDPoPNonce(InvalidDPoPProof):
    """The service requires its own nonce in DPoP proofs (RFC 9449 §9) and the proof has
    none, or one that is stale or not the service's: RFC 9449's ``use_dpop_nonce``. The
    refusal carries a fresh nonce in its ``DPoP-Nonce`` header."""

    code = "use_dpop_nonce"
    public_code = "use_dpop_nonce"
    public_message = "resource server requires nonce in DPoP proof"
    #: The proof, verified but for its nonce (a ``DPoPProof``), when the check got that far.
    proof: Any = None


class DPoPProofReplayed(InvalidDPoPProof, TokenReplayed):
    """A DPoP proof whose ``jti`` was already used (the replay cache knows it)."""

    code = "dpop_proof_replayed"


# --- authorization: 403 / PERMISSION_DENIED ------------------------------------------------


class AuthorizationError(ZeroTrustError):
    """The caller is authenticated but not allowed; ``decision`` explains why (when known)."""

    code = "access_denied"
    public_code = "access_denied"
    public_message = "access denied"
    http_status = 403
    grpc_status = "PERMISSION_DENIED"

    def __init__(self, detail: str | None = None, *, decision: Any = None) -> None:
        self.decision = decision
        super().__init__(detail)


class AccessDenied(AuthorizationError):
    """A policy denied the request."""


class InsufficientScope(AuthorizationError):
    """The token lacks scopes the route requires; ``required`` names them (RFC 6750
    ``insufficient_scope``, sent in the ``scope`` attribute of the challenge)."""

    code = "insufficient_scope"
    public_code = "insufficient_scope"
    public_message = "insufficient scope"

    def __init__(
        self,
        detail: str | None = None,
        *,
        required: tuple[str, ...] = (),
        decision: Any = None,
    ) -> None:
        self.required = required
        super().__init__(detail, decision=decision)


class PeerNotAuthorized(AuthorizationError):
    """The peer's SPIFFE ID was verified but the authorizer refused it."""

    code = "peer_not_authorized"
    public_message = "peer not authorized"


class RateLimited(ZeroTrustError):
    """The principal exceeded its rate limit; ``retry_after`` is in whole seconds."""

    code = "rate_limited"
    public_message = "too many requests"
    http_status = 429
    grpc_status = "RESOURCE_EXHAUSTED"

    def __init__(self, detail: str | None = None, *, retry_after: int = 1) -> None:
        self.retry_after = retry_after
        super().__init__(detail)


# --- unavailable sources: 503 / UNAVAILABLE (fail closed) ------------------------------------


class SourceError(ZeroTrustError):
    """Keys, certificates or shared state needed to decide are unavailable; fail closed."""

    code = "source_unavailable"
    public_code = "temporarily_unavailable"
    public_message = "temporarily unavailable"
    http_status = 503
    grpc_status = "UNAVAILABLE"


class KeysUnavailable(SourceError):
    """The key source cannot provide keys (unreachable JWKS endpoint, unreadable file): fail
    closed with 503 / UNAVAILABLE."""

    code = "keys_unavailable"


class SvidUnavailable(SourceError):
    """The workload's own X.509-SVID cannot be had from its source (for example the Workload
    API sent none yet, or the one held expired with no other sent)."""

    code = "svid_unavailable"


class StoreUnavailable(SourceError):
    """The shared store (revocation, replay cache, rate limits) cannot be reached: fail closed."""

    code = "store_unavailable"


class StoreFull(StoreUnavailable):
    """The store answered but has no room for a new entry: an in-memory table full of live
    entries, a Redis server at ``maxmemory`` with ``noeviction``. Callers can fill a store (a
    proof or a rate-limit key each), so it is never an outage to fail open on."""

    code = "store_full"


class AuditError(ZeroTrustError):
    """An audit sink failed and the configured policy is to fail closed."""

    code = "audit_error"
    public_code = "temporarily_unavailable"
    public_message = "temporarily unavailable"
    http_status = 503
    grpc_status = "UNAVAILABLE"


def public_code(code: str) -> str:
    """The code callers see for an error whose precise ``code`` is given (``token_expired``
    -> ``invalid_token``); unknown codes are returned unchanged."""
    for cls in _all_error_classes(ZeroTrustError):
        if cls.code == code:
            return cls.public_code or cls.code
    return code


def _all_error_classes(root: type[ZeroTrustError]) -> list[type[ZeroTrustError]]:
    found = [root]
    for sub in root.__subclasses__():
        found.extend(_all_error_classes(sub))
    return found
