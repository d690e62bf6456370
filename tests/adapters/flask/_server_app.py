"""The Flask application the real-server tests run under gunicorn.

Configured through environment variables set by the tests: ``ZT_TEST_JWKS`` (token keys, a
JWKS file), ``ZT_TEST_BUNDLE`` (the dev CA bundle, PEM), ``ZT_TEST_AUDIT`` (a file that gets
one JSON audit event per line). ``create_app("mtls")`` serves direct mTLS (no proxy trusted);
``create_app("proxied")`` trusts ``127.0.0.1`` as an nginx proxy and mounts a second app at
``/envoy`` that trusts ``127.0.0.1`` as an Envoy proxy (XFCC). ``create_app("folded")`` (or
:func:`create_folded_app`) trusts ``127.0.0.1`` as an nginx proxy that sends the deprecated
``$ssl_client_cert`` (``allow_unescaped_pem=True``).
"""

from __future__ import annotations

import json
import os
from typing import Any

from flask import Flask, jsonify
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from zerotrust import (
    Authenticator,
    Callers,
    Guard,
    Operations,
    Policy,
    Rule,
    TokenVerifier,
    TrustBundle,
    TrustedProxies,
)
from zerotrust.audit import CallableSink
from zerotrust.audit.event import AuditEvent
from zerotrust.flask import ZeroTrust, current_principal

ISSUER = "https://issuer.example"
AUDIENCE = "orders-api"


def _write_event(event: AuditEvent) -> None:
    with open(os.environ["ZT_TEST_AUDIT"], "a", encoding="utf-8") as fh:
        fh.write(event.to_json() + "\n")


def _guard(proxies: TrustedProxies | None, service: str) -> Guard:
    with open(os.environ["ZT_TEST_JWKS"], encoding="utf-8") as fh:
        jwks = json.load(fh)
    with open(os.environ["ZT_TEST_BUNDLE"], "rb") as fh:
        bundle = TrustBundle.from_pem("example.org", fh.read())
    verifier = TokenVerifier(issuer=ISSUER, audience=AUDIENCE, keys=jwks, algorithms=["ES256"])
    policy = Policy(
        [
            Rule(
                id="example-workloads",
                callers=[Callers(trust_domains=["example.org"])],
                operations=[Operations(routes=["/whoami", "/orders/{order_id}"])],
            )
        ]
    )
    return Guard(
        authenticator=Authenticator(tokens=verifier, bundles=bundle, trusted_proxies=proxies),
        policy=policy,
        audit=CallableSink(_write_event),
        service=service,
    )


def _flask_app(name: str, guard: Guard) -> Flask:
    app = Flask(name)
    ZeroTrust(app, guard=guard)

    @app.get("/whoami")
    def whoami() -> Any:
        return jsonify(
            spiffe_id=str(current_principal.spiffe_id),
            proven_by=current_principal.proven_by,
            forwarded_header_seen={
                "nginx": _header("X-SSL-Client-Cert"),
                "xfcc": _header("X-Forwarded-Client-Cert"),
            },
        )

    @app.get("/orders/<int:order_id>")
    def order(order_id: int) -> Any:
        return jsonify(order_id=order_id, caller=str(current_principal.spiffe_id))

    return app


def _header(name: str) -> bool:
    from flask import request

    return name in request.headers


def create_app(mode: str) -> Any:
    if mode == "mtls":
        return _flask_app("mtls", _guard(None, "orders"))
    if mode == "proxied":
        nginx = _flask_app(
            "nginx", _guard(TrustedProxies(["127.0.0.1/32"], header="nginx"), "nginx")
        )
        envoy = _flask_app(
            "envoy", _guard(TrustedProxies(["127.0.0.1/32"], header="xfcc"), "envoy")
        )
        return DispatcherMiddleware(nginx, {"/envoy": envoy})
    if mode == "folded":
        proxies = TrustedProxies(["127.0.0.1/32"], header="nginx", allow_unescaped_pem=True)
        return _flask_app("folded", _guard(proxies, "folded"))
    raise ValueError(f"unknown mode {mode!r}")


def create_folded_app() -> Any:
    """``create_app("folded")`` for servers that call a factory without arguments."""
    return create_app("folded")
