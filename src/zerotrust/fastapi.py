"""FastAPI integration (``pip install 'zerotrust[fastapi]'``); see ``docs/fastapi.md``.

>>> from zerotrust.fastapi import ZeroTrust, current_principal  # doctest: +SKIP
"""

from zerotrust.adapters.asgi import ZeroTrustMiddleware
from zerotrust.adapters.fastapi import (
    RequireDependency,
    ZeroTrust,
    ZeroTrustHTTPException,
    current_principal,
    refusal_response,
)

__all__ = [
    "RequireDependency",
    "ZeroTrust",
    "ZeroTrustHTTPException",
    "ZeroTrustMiddleware",
    "current_principal",
    "refusal_response",
]
