"""FastAPI under uvicorn: requests/s with zerotrust divided by the bare app, in the same run.

    python benchmarks/bench_asgi.py [--duration S] [--rounds N] [--connections C]

One FastAPI app (``GET /orders/{order_id}`` answering a small JSON body) is served by uvicorn
(one process, plain HTTP on loopback, access log off) in these variants:

* bare      -- no zerotrust;
* cached    -- ``ZeroTrust(guard).install(app)`` (the ASGI middleware): bearer token (ES256)
               verified through the verified-token cache, revocation lookup in the in-memory
               store, an ALLOW rule on the route template with a trust-domain caller and the
               ``orders:read`` scope, one audit decision per request; no mTLS. The handler
               reads the principal with ``current_principal()``;
* uncached  -- the same with ``TokenVerifier(cache_size=0)``: a full signature check per request;
* uncached-rs256 -- the same with an RS256 token (what most OpenID providers issue), whose
               signature check costs about a third of ES256's: what the pipeline itself adds to
               an uncached request shows more plainly (no target of its own);
* signature -- the bare app behind a pure ASGI middleware that verifies the bearer token's ES256
               signature with ``cryptography`` and does nothing else: the ceiling of any uncached
               check on this server (``_signature.py``; no target of its own);
* depends   -- ``cached`` plus ``Security(zt, scopes=["orders:read"])`` on the handler, to show
               what FastAPI's dependency injection adds on top (no target);
* audited   -- ``cached`` with the audit logger at INFO: every request's event is built,
               serialized to a JSON line and handed to a ``logging.NullHandler`` (no target: what
               a deployment's log shipping then costs is its own).

Each variant runs on uvloop + httptools and on the default asyncio + h11. Audit events go to the
default ``LoggingSink`` with logging configured at WARNING: no sink listens, so no event is built
(see ``audited`` for the cost of building and serializing them). ``wrk`` sends the same
request, token included, to every variant (``uncached-rs256`` gets its RS256 token). The server
is pinned to CPU 0 and ``wrk`` to CPU 1 (``taskset``); variants are interleaved across rounds
and each variant's best round counts.
Targets (DESIGN section 10): cached >= 0.85x bare on httptools, >= 0.90x on h11; uncached
>= 0.60x.
"""

# No ``from __future__ import annotations``: FastAPI must see the handlers' real annotations.

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

from zerotrust.tokens import PrivateJWK, TokenIssuer

ISSUER = "https://issuer.example"
AUDIENCE = "orders-api"
CALLER = "spiffe://example.org/ns/shop/sa/web"
VARIANTS = ("bare", "cached", "uncached", "uncached-rs256", "signature", "depends", "audited")
SERVERS = {"httptools": "uvloop", "h11": "asyncio"}
CACHED_TARGETS = {"httptools": 0.85, "h11": 0.90}
UNCACHED_TARGET = 0.60
READY_TIMEOUT = 60.0


def build_app(variant: str, jwks_file: str) -> object:
    """The benchmarked application (imported lazily: only the server process needs FastAPI)."""
    from typing import Annotated

    from fastapi import FastAPI, Security

    app = FastAPI()
    if variant in ("bare", "signature"):

        @app.get("/orders/{order_id}")
        async def bare_order(order_id: int) -> dict[str, object]:
            return {"order": order_id, "status": "shipped"}

        return app if variant == "bare" else signature_only(app, jwks_file)

    from zerotrust import (
        Authenticator,
        Callers,
        Guard,
        Operations,
        Policy,
        Principal,
        Rule,
        ScopeRule,
        TokenVerifier,
    )
    from zerotrust.fastapi import ZeroTrust, current_principal

    keys = json.loads(Path(jwks_file).read_text(encoding="utf-8"))
    verifier = TokenVerifier(
        issuer=ISSUER,
        audience=AUDIENCE,
        keys=keys,
        algorithms=["RS256"] if variant == "uncached-rs256" else ["ES256"],
        cache_size=0 if variant.startswith("uncached") else 10_000,
    )
    policy = Policy(
        [
            Rule(
                id="read-orders",
                callers=[Callers(trust_domains=["example.org"])],
                operations=[Operations(methods=["GET"], routes=["/orders/{order_id}"])],
                scopes=ScopeRule(all=["orders:read"]),
            )
        ]
    )
    guard = Guard(authenticator=Authenticator(tokens=verifier), policy=policy, service="orders")
    zt = ZeroTrust(guard)  # the default audit sink: LoggingSink
    zt.install(app)
    if variant != "depends":

        @app.get("/orders/{order_id}")
        async def order(order_id: int) -> dict[str, object]:
            assert current_principal() is not None  # the verified caller, set by the middleware
            return {"order": order_id, "status": "shipped"}

        return app

    Caller = Annotated[Principal, Security(zt, scopes=["orders:read"])]

    @app.get("/orders/{order_id}")
    async def order_with_dependency(order_id: int, principal: Caller) -> dict[str, object]:
        return {"order": order_id, "status": "shipped"}

    return app


def signature_only(app: Any, jwks_file: str) -> Any:
    """``app`` behind a pure ASGI middleware that checks the token's signature, nothing else."""
    from _signature import es256_check

    check = es256_check(jwks_file)

    async def middleware(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            value = next((v for k, v in scope["headers"] if k == b"authorization"), None)
            if not check(value.decode("latin-1") if value is not None else None):
                await send({"type": "http.response.start", "status": 401, "headers": []})
                await send({"type": "http.response.body", "body": b""})
                return
        await app(scope, receive, send)

    return middleware


def serve(variant: str, http: str, port: int, jwks_file: str) -> None:
    """The server process: one uvicorn worker, logging at WARNING."""
    import logging

    import uvicorn

    logging.basicConfig(level=logging.WARNING)
    if variant == "audited":  # events built and serialized on every request, then dropped
        audit_log = logging.getLogger("zerotrust.audit")
        audit_log.setLevel(logging.INFO)
        audit_log.propagate = False
        audit_log.addHandler(logging.NullHandler())
    uvicorn.run(
        build_app(variant, jwks_file),  # type: ignore[arg-type]
        host="127.0.0.1",
        port=port,
        http=http,
        loop=SERVERS[http],
        log_level="warning",
        access_log=False,
        lifespan="off",
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pin(cpu: int) -> list[str]:
    taskset = shutil.which("taskset")
    return [taskset, "-c", str(cpu)] if taskset and (os.cpu_count() or 1) >= 2 else []


@contextmanager
def server(variant: str, http: str, jwks_file: str, token: str) -> Iterator[int]:
    port = free_port()
    argv = [sys.executable, __file__, "--serve", variant, "--http", http, "--port", str(port)]
    process = subprocess.Popen([*pin(0), *argv, "--jwks", jwks_file], start_new_session=True)
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{variant}/{http} server exited with {process.returncode}")
            with suppress(OSError):
                connection = http_client(port)
                connection.request("GET", "/orders/7", headers={"Authorization": f"Bearer {token}"})
                status = connection.getresponse().status
                connection.close()
                if status != 200:
                    raise RuntimeError(f"{variant}/{http} answered {status}")
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{variant}/{http} server did not start")
            time.sleep(0.1)
        yield port
    finally:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def http_client(port: int) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", port, timeout=5)


def wrk(port: int, token: str, duration: float, connections: int) -> float:
    command = [
        *pin(1), "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s",
        "-H", f"Authorization: Bearer {token}", f"http://127.0.0.1:{port}/orders/7",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=True, timeout=120)
    if "Non-2xx" in result.stdout or "Socket errors" in result.stdout:
        raise RuntimeError("wrk saw errors:\n" + result.stdout)
    found = re.search(r"Requests/sec:\s+([\d.]+)", result.stdout)
    if found is None:
        raise RuntimeError("no Requests/sec in wrk output:\n" + result.stdout)
    return float(found.group(1))


def target_for(http: str, variant: str) -> float | None:
    if variant == "cached":
        return CACHED_TARGETS[http]
    return UNCACHED_TARGET if variant == "uncached" else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=int, default=5, help="seconds per measured run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=1, help="seconds of warm-up per server")
    parser.add_argument("--serve", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--http", choices=tuple(SERVERS), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--jwks", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.http, args.port, args.jwks)
        return 0
    if shutil.which("wrk") is None:
        print("bench_asgi: wrk is not installed; skipped")
        return 0
    issuers = {
        alg: TokenIssuer(PrivateJWK.generate(alg, kid=f"bench-{alg}"), issuer=ISSUER)
        for alg in ("ES256", "RS256")
    }
    tokens = {
        alg: issuer.issue(subject=CALLER, audience=AUDIENCE, scopes=["orders:read"], ttl=3600)
        for alg, issuer in issuers.items()
    }

    def token_for(variant: str) -> str:
        return tokens["RS256" if variant == "uncached-rs256" else "ES256"]

    pinned = "server on CPU 0, wrk on CPU 1" if pin(0) else "unpinned (no taskset or 1 CPU)"
    print(f"python {sys.version.split()[0]}; uvicorn, one process; {pinned}")
    print(f"load: wrk -t1 -c{args.connections} -d{args.duration:g}s, {args.rounds} rounds, best")
    print("audit: the default LoggingSink, logging at WARNING (no event built); audited: INFO\n")
    started = time.perf_counter()
    rows: list[tuple[str, str, float, float | None, float | None]] = []
    with tempfile.TemporaryDirectory() as tmp:
        jwks_file = str(Path(tmp) / "jwks.json")
        keys = [key for issuer in issuers.values() for key in issuer.jwks()["keys"]]
        Path(jwks_file).write_text(json.dumps({"keys": keys}), encoding="utf-8")
        for http in SERVERS:
            best = dict.fromkeys(VARIANTS, 0.0)
            with ExitStack() as stack:
                ports = {
                    v: stack.enter_context(server(v, http, jwks_file, token_for(v)))
                    for v in VARIANTS
                }
                for variant, port in ports.items():
                    wrk(port, token_for(variant), args.warmup, args.connections)
                for _ in range(args.rounds):
                    for variant, port in ports.items():
                        rate = wrk(port, token_for(variant), args.duration, args.connections)
                        best[variant] = max(best[variant], rate)
            for variant in VARIANTS:
                ratio = best[variant] / best["bare"] if variant != "bare" else None
                rows.append((http, variant, best[variant], ratio, target_for(http, variant)))
    print("| server              | variant        |    req/s | x bare | target  | ok  |")
    print("|---------------------|----------------|----------|--------|---------|-----|")
    for http, variant, rate, ratio, target in rows:
        stack_name = f"{SERVERS[http]} + {http}"
        shown = f"{ratio:6.3f}" if ratio is not None else "      "
        goal = f">= {target:.2f}" if target is not None else ""
        ok = "" if ratio is None or target is None else ("yes" if ratio >= target else "NO")
        print(f"| {stack_name:<19} | {variant:<14} | {rate:8.0f} | {shown} | {goal:<7} | {ok:<3} |")
    print(f"\n({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
