"""WSGI integration: a middleware for any WSGI application and the request view WSGI
frameworks share; see ``docs/flask.md`` and ``docs/behind-a-proxy.md``.

:func:`current_principal` returns the principal of the request being handled (the middleware
and the Flask extension set it), for code that has no request object at hand.

The environ has one key for ``X-Forwarded-Client-Cert`` and ``X_Forwarded_Client_Cert``: serve
with a server that drops header names with ``_`` (gunicorn, werkzeug), or under an ASGI server
through :class:`zerotrust.asgi.DropUnderscoreHeaders` around its WSGI shim.
"""

from zerotrust.adapters._context import current_principal
from zerotrust.adapters.wsgi import (
    CHAIN_ENVIRON_KEY,
    PEER_ENVIRON_KEY,
    PRINCIPAL_ENVIRON_KEY,
    WSGIRequestView,
    ZeroTrustMiddleware,
)

__all__ = [
    "CHAIN_ENVIRON_KEY",
    "PEER_ENVIRON_KEY",
    "PRINCIPAL_ENVIRON_KEY",
    "WSGIRequestView",
    "ZeroTrustMiddleware",
    "current_principal",
]
