"""Framework-neutral helpers shared by the ASGI adapters.

:func:`presents_credentials` tells whether a request carries anything to authenticate, for
optional authentication. (Checking a handler's requirement after the middleware and refusing
a request before the pipeline runs are the Guard's own :meth:`~zerotrust.Guard.refine` and
:meth:`~zerotrust.Guard.refuse`.)
"""

from __future__ import annotations

from zerotrust.authn.authenticate import Authenticator
from zerotrust.authn.request import RequestView
from zerotrust.errors import ZeroTrustError

__all__ = ["presents_credentials"]


def presents_credentials(view: RequestView, authenticator: Authenticator) -> bool:
    """Whether ``view`` carries a token, a client certificate, an API key or a forwarded
    certificate (nothing here is verified)."""
    try:
        if view.verified_peer is not None:
            return True
    except ZeroTrustError:  # refused on sight (too many header lines): the Guard says so
        return True
    if view.header("authorization"):
        return True
    # DPoP, the API key header and the forwarded-certificate headers (the configured names)
    if any(view.header(name) for name in authenticator.reuse_absent_headers):
        return True
    try:
        return bool(view.peer_chain)
    except ZeroTrustError:  # present but malformed: let authentication say so
        return True
