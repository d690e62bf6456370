"""Shared pieces of the Flask/WSGI adapter tests: a policy, Guards with real tokens, an app."""

from __future__ import annotations

import json
from typing import Any

from flask import Flask, g, jsonify

from zerotrust import (
    Authenticator,
    Callers,
    FixedClock,
    Guard,
    MemorySink,
    MemoryStore,
    Operations,
    Policy,
    Request,
    Requirement,
    Rule,
    ScopeRule,
    TokenIssuer,
    TokenVerifier,
)
from zerotrust.adapters._status import refusal
from zerotrust.errors import KeysUnavailable
from zerotrust.flask import ZeroTrust, current_principal
from zerotrust.wsgi import current_principal as context_principal

ISS = "https://issuer.example"
AUD = "orders-api"
WEB = "spiffe://example.org/ns/shop/sa/web"
OTHER = "spiffe://other.org/ns/shop/sa/web"


def make_policy(**kw: Any) -> Policy:
    rules = [
        Rule(id="deny-intruder", action="DENY", callers=[Callers(subjects=["intruder"])]),
        Rule(
            id="read-orders",
            callers=[Callers(not_subjects=["nobody"])],
            operations=[Operations(methods=["GET"], routes=["/orders/{order_id}"])],
            scopes=ScopeRule(all=["orders:read"]),
        ),
        Rule(
            id="authenticated",
            callers=[Callers(not_subjects=["nobody"])],
            operations=[
                Operations(routes=["/me", "/orders/{order_id}/refund", "/api/*", "/async"])
            ],
        ),
        Rule(
            id="public",
            callers=[Callers(anonymous=True)],
            operations=[Operations(routes=["/healthz", "/public/{name}"])],
        ),
    ]
    return Policy(rules, id="orders", **kw)


class DownKeys:
    """A key source whose JWKS endpoint is down."""

    def get_keys(self, *, missing_kid: str | None = None) -> object:
        raise KeysUnavailable("jwks endpoint down")

    async def get_keys_async(self, *, missing_kid: str | None = None) -> object:
        raise KeysUnavailable("jwks endpoint down")


def make_guard(
    issuer: TokenIssuer,
    clock: FixedClock,
    *,
    policy: Policy | None = None,
    keys: Any = None,
    audit: Any = None,
    **authn: Any,
) -> tuple[Guard, MemorySink]:
    sink = MemorySink()
    verifier = TokenVerifier(
        issuer=ISS,
        audience=AUD,
        keys=keys if keys is not None else issuer.jwks(),
        algorithms=["ES256"],
        clock=clock,
    )
    guard = Guard(
        authenticator=Authenticator(tokens=verifier, clock=clock, **authn),
        policy=policy or make_policy(),
        audit=audit if audit is not None else sink,
        store=MemoryStore(clock=clock),
        service="orders",
        clock=clock,
    )
    return guard, sink


def who() -> dict[str, Any]:
    """What a handler sees of the principal, through every access path."""
    principal = current_principal._get_current_object()  # type: ignore[attr-defined]
    return {
        "spiffe_id": str(current_principal.spiffe_id) if current_principal else None,
        "proven_by": current_principal.proven_by if current_principal else None,
        "same_in_g": g.zerotrust_principal is principal,
        "same_in_context": context_principal() is principal,
    }


def make_app(zt: ZeroTrust, *, name: str = "orders") -> Flask:
    """An app with plain, required, exempt and public views (``zt`` not yet installed)."""
    app = Flask(name)

    @app.get("/orders/<int:order_id>")
    def order(order_id: int) -> Any:
        return jsonify(order_id=order_id, **who())

    @app.get("/me")
    @zt.require
    def me() -> Any:
        return jsonify(who())

    @app.route("/orders/<int:order_id>/refund", methods=["GET", "POST"])
    @zt.require(scopes=["orders:refund"], callers=["spiffe://example.org/*"], methods=["POST"])
    def refund(order_id: int) -> Any:
        return jsonify(refunded=order_id)

    @app.get("/public/<name>")
    @zt.require
    def public_but_required(name: str) -> Any:
        return jsonify(name=name)

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify(ok=True, principal=bool(current_principal))

    @app.get("/livez")
    @zt.exempt
    def livez() -> Any:
        return jsonify(ok=True, principal=bool(current_principal))

    @app.get("/async")
    @zt.require
    async def async_view() -> Any:
        return jsonify(who())

    return app


def expected_refusal(
    guard: Guard, view: Request, requirement: Requirement | None = None
) -> tuple[int, dict[str, str], Any]:
    """What the shared refusal table answers for ``view`` (decided without side effects)."""
    outcome = guard.explain(view, requirement)
    assert not outcome.allowed
    status, headers, body = refusal(outcome)
    return status, dict(headers), json.loads(body)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
