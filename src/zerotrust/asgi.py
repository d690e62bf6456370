"""ASGI integration (any ASGI framework; Starlette and FastAPI route templates) and serving
direct mTLS with uvicorn or hypercorn; see ``docs/fastapi.md``.

``ZeroTrustMiddleware``, ``DropUnderscoreHeaders`` (a WSGI application under an ASGI
server), ``serve`` and the scope keys need nothing beyond zerotrust. The server
integrations are imported on first use: ``ZeroTrustUvicornConfig`` and ``with_tls_extension``
need ``zerotrust[uvicorn]``, ``ZeroTrustHypercornConfig`` and ``serve_hypercorn`` need
``zerotrust[hypercorn]``.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

from zerotrust.adapters._tls_scope import TLS_PEER_KEY, tls_extension
from zerotrust.adapters.asgi import (
    STATE_OUTCOME,
    STATE_PRINCIPAL,
    DropUnderscoreHeaders,
    ZeroTrustMiddleware,
    current_principal,
)
from zerotrust.adapters.servers import serve

if TYPE_CHECKING:
    from zerotrust.adapters.hypercorn import ZeroTrustHypercornConfig, serve_hypercorn
    from zerotrust.adapters.uvicorn import ZeroTrustUvicornConfig, with_tls_extension

__all__ = [
    "STATE_OUTCOME",
    "STATE_PRINCIPAL",
    "TLS_PEER_KEY",
    "DropUnderscoreHeaders",
    "ZeroTrustMiddleware",
    "current_principal",
    "serve",
    "tls_extension",
]
# The server integrations are public where their server is installed (so that a star import
# never fails for want of an extra; asked for by name, they say which extra to install).
if importlib.util.find_spec("uvicorn") is not None:
    __all__ += ["ZeroTrustUvicornConfig", "with_tls_extension"]
if importlib.util.find_spec("hypercorn") is not None:
    __all__ += ["ZeroTrustHypercornConfig", "serve_hypercorn"]

_LAZY = {
    "ZeroTrustUvicornConfig": "zerotrust.adapters.uvicorn",
    "with_tls_extension": "zerotrust.adapters.uvicorn",
    "ZeroTrustHypercornConfig": "zerotrust.adapters.hypercorn",
    "serve_hypercorn": "zerotrust.adapters.hypercorn",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
