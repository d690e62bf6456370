"""Zero-trust outgoing calls with httpx: the public names of :mod:`zerotrust.client.httpx`.

``from zerotrust.httpx import Client, AsyncClient, ZeroTrustAuth, RetryPolicy``. Importing
:mod:`zerotrust` does not import httpx; importing this module does.
"""

from zerotrust.client.httpx import (
    RETRY_EXTENSION,
    AsyncClient,
    AsyncZeroTrustTransport,
    Client,
    DPoPSigner,
    RetryEvent,
    RetryPolicy,
    SupportsInvalidate,
    ZeroTrustAuth,
    ZeroTrustTransport,
    dpop_proof,
    identity_refusal,
)

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
