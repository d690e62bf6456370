"""The demo from start to end: start the shop, make the calls, print the audit trail, stop."""

from __future__ import annotations

import time

from opentelemetry.sdk.trace import TracerProvider

from zerotrust.demo._keep import LiveSink, keep_running
from zerotrust.demo._scenarios import Calls
from zerotrust.demo._services import Services
from zerotrust.demo._shop import (
    FRONTEND,
    INTRUDER,
    SVID_TTL,
    TOKEN_ISSUER,
    TOKEN_TTL,
    TRUST_DOMAIN,
    create_shop,
)
from zerotrust.demo._table import Output, audit_table


def _introduce(out: Output, services: Services) -> None:
    out.line(
        out.style(
            "zerotrust demo: a shop of three services and two clients, in this process", "bold"
        )
    )
    out.line()
    out.line(
        f"Trust domain {TRUST_DOMAIN}: an embedded development CA issued each workload an "
        f"X.509-SVID valid {SVID_TTL // 60} minutes."
    )
    out.line(
        f"A token service ({TOKEN_ISSUER}, ES256) mints {TOKEN_TTL // 60}-minute tokens, "
        "each for one audience and bound to"
    )
    out.line(
        "the caller's certificate. Every connection is mutual TLS; each service decides with "
        "its own policy."
    )
    out.line()
    rows = [
        ("gateway", "FastAPI on uvicorn", services.gateway.address, services.gateway.spiffe_id),
        ("inventory", "gRPC (grpc.aio)", services.inventory.address, services.inventory.spiffe_id),
        ("payments", "Flask on werkzeug", services.payments.address, services.payments.spiffe_id),
        ("frontend", "httpx client", "", FRONTEND),
        ("intruder", "httpx client, in no policy", "", INTRUDER),
    ]
    for name, what, address, spiffe_id in rows:
        out.line(f"  {name:<10} {what:<27} {address:<24} {spiffe_id}")


def run_demo(out: Output, *, keep: bool = False) -> int:
    """Run the whole demo, writing to ``out``; returns the exit status."""
    started = time.monotonic()
    provider = TracerProvider(shutdown_on_exit=False)
    live = LiveSink()
    shop = create_shop()
    services = Services(shop, provider.get_tracer("shop.gateway"), sinks=[live])
    try:
        services.start()
        _introduce(out, services)
        out.heading(f"Calls (who {out.arrow} what {out.arrow} what the caller saw)")
        calls = Calls(shop, services, provider, out)
        try:
            calls.run()
        finally:
            calls.close()
        events = [event for service in services.all for event in service.audit.events]
        out.heading(f"Audit trail of the three services ({len(events)} events, oldest first)")
        audit_table(out, events)
        out.line(
            "trace: the first 8 hex digits of the W3C trace id, one id for all the hops of a "
            "request;"
        )
        out.line(
            "       ? marks the id sent by a caller that failed authentication (recorded, "
            "not trusted)"
        )
        if keep:
            keep_running(out, shop, services, live)
    finally:
        services.stop()
        provider.shutdown()
    out.line()
    out.line(f"All services stopped; done in {time.monotonic() - started:.1f} s.")
    return 0
