"""A Flask application with zerotrust, hosted by ASGI servers in test_wsgi_hosts.py.

It trusts ``127.0.0.1`` as an Envoy proxy (XFCC) and reads the trust bundle from the PEM file
named by ``ZT_TEST_BUNDLE``. Each factory returns what a server is given:

* :func:`plain` -- the WSGI application itself (``uvicorn --interface wsgi``, hypercorn);
* :func:`uvicorn_shim` -- uvicorn's own WSGI shim (what ``--interface wsgi`` uses) inside
  :class:`~zerotrust.asgi.DropUnderscoreHeaders`;
* :func:`asgiref_shim` -- asgiref's ``WsgiToAsgi`` inside ``DropUnderscoreHeaders``.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

from asgiref.wsgi import WsgiToAsgi
from flask import Flask, jsonify

from zerotrust import (
    Authenticator,
    Callers,
    Guard,
    MemorySink,
    Policy,
    Rule,
    TrustBundle,
    TrustedProxies,
)
from zerotrust.asgi import DropUnderscoreHeaders
from zerotrust.flask import ZeroTrust, current_principal


def create(bundle: TrustBundle) -> Flask:
    guard = Guard(
        authenticator=Authenticator(
            bundles=bundle, trusted_proxies=TrustedProxies(["127.0.0.1"], header="xfcc")
        ),
        policy=Policy([Rule(id="workloads", callers=[Callers(trust_domains=["example.org"])])]),
        audit=MemorySink(),
    )
    app = Flask(__name__)
    ZeroTrust(app, guard=guard)

    @app.get("/whoami")
    def whoami() -> Any:
        return jsonify(caller=str(current_principal.spiffe_id), via=current_principal.proven_by)

    return app


def plain() -> Flask:
    with open(os.environ["ZT_TEST_BUNDLE"], "rb") as fh:
        return create(TrustBundle.from_pem("example.org", fh.read()))


def uvicorn_shim() -> DropUnderscoreHeaders:
    from uvicorn.middleware.wsgi import WSGIMiddleware

    with warnings.catch_warnings():  # uvicorn's own shim is deprecated in favour of a2wsgi
        warnings.simplefilter("ignore", DeprecationWarning)
        return DropUnderscoreHeaders(WSGIMiddleware(plain()))


def asgiref_shim() -> DropUnderscoreHeaders:
    return DropUnderscoreHeaders(WsgiToAsgi(plain()))
