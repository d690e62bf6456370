"""Flask integration (``pip install 'zerotrust[flask]'``); see ``docs/flask.md``.

``ZeroTrust`` is the extension, ``current_principal`` the verified caller of the request (a
werkzeug ``LocalProxy``) and ``RequestRefused`` the exception a refusal raises.
"""

from zerotrust.adapters.flask import RequestRefused, ZeroTrust, current_principal

__all__ = ["RequestRefused", "ZeroTrust", "current_principal"]
