"""Sources of identities and keys: files, remote endpoints and the SPIFFE Workload API.

Importing this package does not import httpx: the HTTP-backed sources
(:class:`~zerotrust.sources.jwks_http.RemoteJWKSource`,
:class:`~zerotrust.sources.oauth2.ClientCredentialsTokenSource`,
:class:`~zerotrust.sources.oauth2.TokenExchangeTokenSource`) are loaded on first access.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

from zerotrust.sources.files import FileBundleSource, FileKeySource, FileSvidSource
from zerotrust.sources.spiffe_jwt import SpiffeJwtBundleKeySource, SpiffeJwtBundleSetKeySource

if TYPE_CHECKING:
    from zerotrust.sources.jwks_http import KeySourceStatus, RemoteJWKSource
    from zerotrust.sources.oauth2 import ClientCredentialsTokenSource, TokenExchangeTokenSource
    from zerotrust.sources.spiffe_workload_api import (
        WorkloadApiJwtSource,
        WorkloadApiStatus,
        WorkloadApiX509Source,
    )

__all__ = [
    "ClientCredentialsTokenSource",
    "FileBundleSource",
    "FileKeySource",
    "FileSvidSource",
    "KeySourceStatus",
    "RemoteJWKSource",
    "SpiffeJwtBundleKeySource",
    "SpiffeJwtBundleSetKeySource",
    "TokenExchangeTokenSource",
]
# The Workload API sources are public where the spiffe package is installed (a star import
# never fails for want of it; asked for by name, they say which extra to install).
if importlib.util.find_spec("spiffe") is not None:
    __all__ += ["WorkloadApiJwtSource", "WorkloadApiStatus", "WorkloadApiX509Source"]

_LAZY = {
    "ClientCredentialsTokenSource": "zerotrust.sources.oauth2",
    "KeySourceStatus": "zerotrust.sources.jwks_http",
    "RemoteJWKSource": "zerotrust.sources.jwks_http",
    "TokenExchangeTokenSource": "zerotrust.sources.oauth2",
    "WorkloadApiJwtSource": "zerotrust.sources.spiffe_workload_api",
    "WorkloadApiStatus": "zerotrust.sources.spiffe_workload_api",
    "WorkloadApiX509Source": "zerotrust.sources.spiffe_workload_api",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'zerotrust.sources' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    # __all__ names the lazy sources that can load here: dir() (and so help() and
    # inspect.getmembers, which read every name it gives) lists no name needing a missing extra
    return sorted(set(globals()) | set(__all__))
