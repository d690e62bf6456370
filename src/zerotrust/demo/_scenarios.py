"""The scripted calls: the frontend and an intruder call the gateway, each call printed as it
happens (who, what, what the caller saw, and what the services' audit trails recorded).

Every call runs inside a span of the calling workload's tracer: the httpx client sends it as
``traceparent``, and the audit events of every hop carry its trace id.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
from opentelemetry.sdk.trace import TracerProvider

from zerotrust import FixedClock, StaticTokenSource, TokenIssuer
from zerotrust.demo._services import Services
from zerotrust.demo._shop import FRONTEND, GATEWAY, INTRUDER, TOKEN_ISSUER, TOKEN_TTL, Shop
from zerotrust.demo._table import Output
from zerotrust.httpx import Client, ZeroTrustAuth

FRONTEND_SCOPES = ("orders:read", "orders:refund")
Summary = Callable[[Any], str]


def _order_summary(body: Any) -> str:
    stock, payment = body["stock"], body["payment"]
    return f"{stock['sku']} reserved ({stock['left']} left), paid {payment['charge']}"


class Calls:
    """The demo's two client workloads and the calls they make."""

    def __init__(self, shop: Shop, services: Services, provider: TracerProvider, out: Output):
        self.shop = shop
        self.services = services
        self.out = out
        self._provider = provider
        self.frontend_tokens = shop.token_source(FRONTEND, FRONTEND_SCOPES)
        self.frontend = self._client(FRONTEND, self.frontend_tokens)
        self.intruder = self._client(INTRUDER, shop.token_source(INTRUDER, ["orders:read"]))

    def _client(self, workload: str, tokens: Any) -> httpx.Client:
        return Client(
            svid=self.shop.svid(workload),
            bundles=self.shop.ca.bundle,
            server_id=GATEWAY,
            token_source=tokens,
            audience=GATEWAY,
            base_url=self.services.gateway.address,
            timeout=10.0,
        )

    def close(self) -> None:
        self.frontend.close()
        self.intruder.close()

    # --- the scenarios ------------------------------------------------------------------

    def run(self) -> str:
        """Make every call; returns the trace id of the allowed order."""
        order = self.call(
            1,
            "Allowed: an order, from the gateway to inventory (gRPC) and payments (HTTP)",
            "frontend",
            "GET",
            "/orders/1",
            summary=_order_summary,
        )
        self.call(
            2,
            "Caller not in the policy: a valid certificate and token, but no rule admits it",
            "intruder",
            "GET",
            "/orders/1",
        )
        self.call(
            3,
            "Missing scope: a token without orders:read",
            "frontend",
            "GET",
            "/orders/2",
            token=self.shop.issuer.issue(
                subject=FRONTEND,
                audience=GATEWAY,
                scopes=["reports:read"],
                extra_claims=self.shop.bound_claims(FRONTEND),
            ),
        )
        self.call(
            4,
            "Expired token: issued 10 minutes ago, valid for 1 minute",
            "frontend",
            "GET",
            "/orders/3",
            token=self._expired_token(),
        )
        self._revoked(order)
        self.call(
            6,
            "Token bound to another certificate: the intruder replays the frontend's token",
            "intruder",
            "GET",
            "/orders/5",
            token=self.frontend_tokens.token(GATEWAY),
        )
        self._without_certificate(7)
        self.call(
            8,
            "DENY rule: payments refuses refunds from anyone but the back office",
            "frontend",
            "POST",
            "/orders/1/refund",
        )
        self.call(
            9,
            "Dry-run rule: a planned DENY rule on reports is only recorded",
            "frontend",
            "GET",
            "/reports/daily",
            summary=lambda body: f"report {body['report']!r}",
        )
        return order

    def _expired_token(self) -> str:
        then = datetime.now(timezone.utc) - timedelta(minutes=10)
        issuer = TokenIssuer(self.shop.signing_key, issuer=TOKEN_ISSUER, clock=FixedClock(then))
        return issuer.issue(
            subject=FRONTEND,
            audience=GATEWAY,
            scopes=FRONTEND_SCOPES,
            ttl=60,
            extra_claims=self.shop.bound_claims(FRONTEND),
        )

    def _revoked(self, order_trace: str) -> None:
        """Revoke the token of the first call (its jti is in the gateway's audit trail)."""
        token = self.frontend_tokens.token(GATEWAY)
        [event] = self.services.gateway.audit.find(trace_id=order_trace)
        assert event.token_jti is not None
        self.services.gateway.guard.store.revoke_token(
            event.token_jti, expires_at=time.time() + TOKEN_TTL
        )
        self.call(
            5,
            f"Revoked token: the gateway revoked jti {event.token_jti[:8]}... (seen in call 1)",
            "frontend",
            "GET",
            "/orders/4",
            token=token,
        )
        self.frontend_tokens.invalidate(GATEWAY)  # the frontend mints a new one next time

    def _without_certificate(self, number: int) -> None:
        out = self.out
        out.line(f"{number:>2} No client certificate: TLS, the right CA, but no certificate")
        context = ssl.create_default_context(cadata=self.shop.ca.bundle.to_pem().decode())
        url = f"{self.services.gateway.address}/orders/6"
        what = f"   anonymous {out.arrow} gateway GET /orders/6 {out.arrow} "
        try:
            with httpx.Client(verify=context, trust_env=False, timeout=10.0) as client:
                response = client.get(url)
        except httpx.TransportError as exc:
            why = _ssl_reason(exc) or "the gateway closed the connection"
            out.line(what + out.style(f"refused in the TLS handshake ({why})", "red"))
            out.line(
                "     the gateway requires a client certificate: the handshake fails before any "
                "HTTP request"
            )
            out.line("     exists; the gateway's TLS layer audits the refusal ('TLS handshake')")
        else:
            out.line(what + out.style(f"unexpected answer {response.status_code}", "red"))

    # --- one call -----------------------------------------------------------------------

    def call(
        self,
        number: int,
        title: str,
        who: str,
        method: str,
        path: str,
        *,
        token: str | None = None,
        summary: Summary | None = None,
    ) -> str:
        """Make one call as ``who`` (``token`` replaces the client's own), print it and
        return its trace id."""
        out = self.out
        out.line(f"{number:>2} {title}")
        client = self.frontend if who == "frontend" else self.intruder
        tracer = self._provider.get_tracer(f"shop.{who}")
        with tracer.start_as_current_span(f"{method} {path}") as span:
            trace_id = format(span.get_span_context().trace_id, "032x")
            if token is None:
                response = client.request(method, path)
            else:
                auth = ZeroTrustAuth(StaticTokenSource(token), audience=GATEWAY)
                response = client.request(method, path, auth=auth)
        seen = self._seen(response, summary)
        out.line(
            f"   {who} {out.arrow} gateway {method} {path} {out.arrow} {seen}"
            + out.style(f"  (trace {trace_id[:8]})", "dim")
        )
        notes = self._audit(trace_id, response)
        if notes:
            out.line(f"     audit: {notes}")
        return trace_id

    def _seen(self, response: httpx.Response, summary: Summary | None) -> str:
        try:
            body = response.json()
        except ValueError:
            body = None
        status = response.status_code
        if status == 200:
            detail = summary(body) if summary is not None else "OK"
            return self.out.style(f"{status} {detail}", "green")
        error = body.get("error") if isinstance(body, dict) else None
        upstream = body.get("upstream_status") if isinstance(body, dict) else None
        text = f"{status} {error or ''}".rstrip()
        if upstream is not None:
            service = str(error or "").removesuffix("_refused")
            text += f" ({service}: {upstream} {body.get('upstream_error') or ''}".rstrip()
            text += ")"
        return self.out.style(text, "red")

    def _audit(self, trace_id: str, response: httpx.Response) -> str:
        """What the services recorded for this trace that the caller was not told."""
        told = response.text
        notes = []
        allowed = []
        for service in self.services.all:
            for event in service.audit.find(trace_id=trace_id):
                if event.decision == "allow" and not event.dry_run:
                    allowed.append(service.name)
                if event.dry_run:
                    notes.append(
                        f"{service.name} allowed it; a dry-run rule would {event.would_decide}"
                    )
                elif event.decision == "deny" and f'"{event.reason}"' not in told:
                    notes.append(f"{service.name} recorded {event.reason}")
        if not notes and len(allowed) > 1:
            notes.append(f"allowed by {', '.join(allowed)}, one trace id for every hop")
        return "; ".join(notes)


def _ssl_reason(exc: BaseException) -> str | None:
    """The TLS alert behind an httpx error, e.g. ``tlsv13 alert certificate required``."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLError):
            reason = current.reason or ""
            return reason.lower().replace("_", " ") or str(current)
        current = current.__cause__ or current.__context__
    return None
