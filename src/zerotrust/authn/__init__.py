"""Authentication: request views, credentials, principals, bindings and trusted proxies."""

from zerotrust.authn.authenticate import Authenticator, AuthResult
from zerotrust.authn.binding import DPoPConfig, DPoPProof
from zerotrust.authn.credentials import ApiKeys, Credentials, extract_credentials
from zerotrust.authn.dpop_nonce import DPoPNonces
from zerotrust.authn.principal import Principal, ProvenBy
from zerotrust.authn.proxy import ForwardedResult, TrustedProxies, extract_forwarded_cert
from zerotrust.authn.request import Request, RequestView

__all__ = [
    "ApiKeys",
    "AuthResult",
    "Authenticator",
    "Credentials",
    "DPoPConfig",
    "DPoPNonces",
    "DPoPProof",
    "ForwardedResult",
    "Principal",
    "ProvenBy",
    "Request",
    "RequestView",
    "TrustedProxies",
    "extract_credentials",
    "extract_forwarded_cert",
]
