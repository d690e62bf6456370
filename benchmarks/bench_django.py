"""Django under gunicorn: requests/s with zerotrust divided by the bare app, in the same run.

    python benchmarks/bench_django.py [--duration S] [--rounds N] [--connections C] [--workers W]

One minimal Django project (no other middleware, no apps, no database; ``GET
/orders/<int:order_id>`` answering a small JSON body) is served by gunicorn (sync workers, plain
HTTP on loopback) in five variants:

* bare      -- no zerotrust;
* cached    -- ``ZeroTrustMiddleware``: bearer token (ES256) verified through the verified-token
               cache, revocation lookup in the in-memory store, an ALLOW rule on the route
               template with a SPIFFE ID pattern and a scope, one audit event per request;
* uncached  -- the same with ``TokenVerifier(cache_size=0)``: a full signature check per request;
* uncached-rs256 -- the same with an RS256 token (what most OpenID providers issue), whose
                signature costs less than half of ES256's: context for the uncached row, no target;
* signature -- the bare app with one middleware that verifies the bearer token's ES256 signature
               with ``cryptography`` and does nothing else: the ceiling of any uncached check
               on this server (``_signature.py``; no target of its own).

Audit events go to the default ``LoggingSink`` with logging configured at WARNING, so events are
built but not written (a deployment's log shipping cost is its own). ``wrk`` sends the same
request (with the token) to every variant. The server is pinned to CPU 0 and ``wrk`` to CPU 1
(``taskset``); variants are interleaved across rounds and each variant's best round counts.
Targets (DESIGN §10): cached >= 0.90x bare, uncached >= 0.60x.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from _tokens import tokens_for

ISSUER = "https://issuer.example"
AUDIENCE = "orders-api"
CALLER = "spiffe://example.org/ns/shop/sa/web"
VARIANTS = ("bare", "cached", "uncached", "uncached-rs256", "signature")
TARGETS = {"cached": 0.90, "uncached": 0.60}
PATH = "/orders/7"

APP = """
import json
import logging
import os

import django
from django.conf import settings
from django.http import JsonResponse
from django.urls import path

logging.basicConfig(level=logging.WARNING)
MODE = os.environ["ZT_BENCH_MODE"]


def order(request, order_id):
    return JsonResponse({"order_id": order_id, "status": "shipped"})


urlpatterns = [path("orders/<int:order_id>", order)]


def signature_only(get_response):
    import sys

    sys.path.insert(0, os.environ["ZT_BENCH_HELPERS"])
    from _signature import es256_check

    from django.http import HttpResponse

    check = es256_check(os.environ["ZT_BENCH_JWKS"])

    def middleware(request):
        if not check(request.META.get("HTTP_AUTHORIZATION")):
            return HttpResponse(status=401)
        return get_response(request)

    return middleware


def guard():
    from zerotrust import (
        Authenticator, Callers, Guard, Operations, Policy, Rule, ScopeRule, TokenVerifier,
    )

    with open(os.environ["ZT_BENCH_JWKS"], encoding="utf-8") as fh:
        jwks = json.load(fh)
    verifier = TokenVerifier(
        issuer=os.environ["ZT_BENCH_ISSUER"],
        audience=os.environ["ZT_BENCH_AUDIENCE"],
        keys=jwks,
        algorithms=["RS256"] if MODE == "uncached-rs256" else ["ES256"],
        cache_size=0 if MODE.startswith("uncached") else 10_000,
    )
    policy = Policy([
        Rule(
            id="read-orders",
            callers=[Callers(spiffe_ids=["spiffe://example.org/ns/shop/*"])],
            operations=[Operations(methods=["GET"], routes=["/orders/{order_id}"])],
            scopes=ScopeRule(all=["orders:read"]),
        )
    ])
    return Guard(authenticator=Authenticator(tokens=verifier), policy=policy, service="orders")


settings.configure(
    DEBUG=False,
    SECRET_KEY="benchmark-only",
    ALLOWED_HOSTS=["127.0.0.1"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=[],
    DATABASES={},
    USE_TZ=True,
    LOGGING_CONFIG=None,
    MIDDLEWARE={
        "bare": [], "signature": [__name__ + ".signature_only"],
    }.get(MODE, ["zerotrust.django.ZeroTrustMiddleware"]),
    ZEROTRUST={"GUARD": __name__ + ".guard"},
)
django.setup()

from django.core.wsgi import get_wsgi_application

application = get_wsgi_application()
"""

_LISTENING = re.compile(r"Listening at: http://127\.0\.0\.1:(\d+)")
_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")


def pinned(cpu: int | None, command: list[str]) -> list[str]:
    return ["taskset", "-c", str(cpu), *command] if cpu is not None else command


@contextmanager
def server(directory: Path, mode: str, workers: int, cpu: int | None) -> Iterator[int]:
    log = directory / f"gunicorn-{mode}.log"
    log.unlink(missing_ok=True)
    command = [sys.executable, "-m", "gunicorn", "--chdir", str(directory), "--bind",
               "127.0.0.1:0", "--workers", str(workers), "--worker-class", "sync",
               "--no-control-socket", "--log-level", "info", "--error-logfile", str(log),
               "bench_django_app:application"]  # fmt: skip
    env = {
        **os.environ,
        "ZT_BENCH_MODE": mode,
        "ZT_BENCH_JWKS": str(directory / "jwks.json"),
        "ZT_BENCH_HELPERS": str(Path(__file__).resolve().parent),
        "ZT_BENCH_ISSUER": ISSUER,
        "ZT_BENCH_AUDIENCE": AUDIENCE,
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    proc = subprocess.Popen(
        pinned(cpu, command), env=env, stdin=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 60
        port = None
        while port is None:
            text = log.read_text() if log.exists() else ""
            found = _LISTENING.search(text)
            if found and text.count("Booting worker") >= workers:
                port = int(found.group(1))
            elif proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not start:\n{text}")
            else:
                time.sleep(0.05)
        yield port
    finally:
        with suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


def check(port: int, token: str) -> None:
    """Wait until the app answers 200 to the benchmark request (workers have loaded it)."""
    deadline = time.monotonic() + 60
    while True:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request("GET", PATH, headers={"Authorization": f"Bearer {token}"})
            response = conn.getresponse()
            body = response.read()
            if response.status == 200:
                return
            raise RuntimeError(f"unexpected answer {response.status}: {body[:200]!r}")
        except ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
        finally:
            conn.close()


def wrk(port: int, token: str, duration: int, connections: int, cpu: int | None) -> float:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "-H",
               f"Authorization: Bearer {token}", f"http://127.0.0.1:{port}{PATH}"]  # fmt: skip
    out = subprocess.run(pinned(cpu, command), capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw error responses:\n{out}")
    found = _RPS.search(out)
    if found is None:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    return float(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1, help="gunicorn sync workers")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed")
    pin = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
    server_cpu, client_cpu = (0, 1) if pin else (None, None)

    tokens, jwks = tokens_for(
        VARIANTS, issuer=ISSUER, subject=CALLER, audience=AUDIENCE, scopes=["orders:read"]
    )
    results: dict[str, list[float]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="bench-django-") as tmp:
        directory = Path(tmp)
        (directory / "bench_django_app.py").write_text(APP, encoding="utf-8")
        (directory / "jwks.json").write_text(json.dumps(jwks), encoding="utf-8")
        for _ in range(args.rounds):
            for variant in VARIANTS:
                with server(directory, variant, args.workers, server_cpu) as port:
                    check(port, tokens[variant])
                    wrk(port, tokens[variant], min(2, args.duration), args.connections, client_cpu)
                    rps = wrk(port, tokens[variant], args.duration, args.connections, client_cpu)
                    results[variant].append(rps)

    best = {v: max(r) for v, r in results.items()}
    print(
        f"Django {args.workers} sync worker(s), gunicorn, plain HTTP, wrk -c{args.connections}"
        f" {args.duration:g}s x {args.rounds} round(s);"
        f" {'server CPU 0, wrk CPU 1' if pin else 'not pinned'};"
        " audit: default LoggingSink, logging at WARNING"
    )
    print(f"{'variant':<14} {'best req/s':>11} {'ratio':>7} {'target':>7}  rounds")
    for variant in VARIANTS:
        ratio = best[variant] / best["bare"]
        target = TARGETS.get(variant)
        mark = "" if target is None else ("  ok" if ratio >= target else "  BELOW")
        rounds = " ".join(f"{r:.0f}" for r in results[variant])
        shown = f">={target:.2f}" if target is not None else ""
        print(f"{variant:<14} {best[variant]:>11.0f} {ratio:>7.3f} {shown:>7}  {rounds}{mark}")


if __name__ == "__main__":
    main()
