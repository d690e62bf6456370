"""Flask under gunicorn: requests/s with zerotrust divided by the bare app, in the same run.

    python benchmarks/bench_flask.py [--duration S] [--rounds N] [--connections C] [--workers W]

One Flask app (``GET /orders/<int:order_id>`` answering a small JSON body) is served by gunicorn
(sync workers, plain HTTP on loopback) in five variants:

* bare      -- no zerotrust;
* cached    -- ``ZeroTrust`` extension: bearer token (ES256) verified through the verified-token
               cache, revocation lookup in the in-memory store, an ALLOW rule on the route
               template with a SPIFFE ID pattern and a scope, one audit event per request;
* uncached  -- the same with ``TokenVerifier(cache_size=0)``: a full signature check per request;
* uncached-rs256 -- the same with an RS256 token (what most OpenID providers issue), whose
                signature costs less than half of ES256's: context for the uncached row, no target;
* signature -- the bare app behind a WSGI middleware that verifies the bearer token's ES256
               signature with ``cryptography`` and does nothing else: the ceiling of any
               uncached check on this server (``_signature.py``; no target of its own).

Audit events go to the default ``LoggingSink`` with logging configured at WARNING, so events
are built but not written (a deployment's log shipping cost is its own). ``wrk`` sends the same
request (with the token) to every variant. The server is pinned to CPU 0 and ``wrk`` to CPU 1
(``taskset``); variants are interleaved across rounds and each variant's best round counts.
Targets (DESIGN §10): cached >= 0.90x bare, uncached >= 0.60x.

The table also shows the server's CPU time per request (arbiter and workers, from /proc) and
its ratio to the bare app's: the same goal expressed in CPU, which stays meaningful when other
work on the machine makes requests/s noisy (Linux only).
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

import gunicorn
from _tokens import tokens_for

ISSUER = "https://issuer.example"
AUDIENCE = "orders-api"
CALLER = "spiffe://example.org/ns/shop/sa/web"
VARIANTS = ("bare", "cached", "uncached", "uncached-rs256", "signature")
TARGETS = {"cached": 0.90, "uncached": 0.60}

APP = """
import json
import logging
import os

from flask import Flask, jsonify

logging.basicConfig(level=logging.WARNING)
app = Flask("bench")


@app.get("/orders/<int:order_id>")
def order(order_id):
    return jsonify(order_id=order_id, status="shipped")


MODE = os.environ["ZT_BENCH_MODE"]
if MODE == "signature":
    import sys

    sys.path.insert(0, os.environ["ZT_BENCH_HELPERS"])
    from _signature import es256_check

    check = es256_check(os.environ["ZT_BENCH_JWKS"])
    flask_app = app.wsgi_app

    def signature_only(environ, start_response):
        if not check(environ.get("HTTP_AUTHORIZATION")):
            start_response("401 Unauthorized", [("Content-Length", "0")])
            return [b""]
        return flask_app(environ, start_response)

    app.wsgi_app = signature_only
elif MODE != "bare":
    from zerotrust import (
        Authenticator, Callers, Guard, Operations, Policy, Rule, ScopeRule, TokenVerifier,
    )
    from zerotrust.flask import ZeroTrust

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
    ZeroTrust(app, guard=Guard(
        authenticator=Authenticator(tokens=verifier), policy=policy, service="orders"
    ))
"""

# gunicorn >= 25.1 opens a control socket shared through $HOME unless told not to
NO_CONTROL_SOCKET = ["--no-control-socket"] if gunicorn.version_info >= (25, 1) else []
_LISTENING = re.compile(r"Listening at: http://127\.0\.0\.1:(\d+)")
_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_COUNT = re.compile(r"(\d+) requests in")


def cpu_seconds(arbiter: int) -> float:
    """CPU time (user + system) used so far by gunicorn's arbiter and its workers."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # fields[n - 3] is field n of proc(5)
        if int(entry) == arbiter or int(fields[1]) == arbiter:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def pinned(cpu: int | None, command: list[str]) -> list[str]:
    return ["taskset", "-c", str(cpu), *command] if cpu is not None else command


@contextmanager
def server(directory: Path, mode: str, workers: int, cpu: int | None) -> Iterator[tuple[int, int]]:
    """Serve one variant; yields ``(port, arbiter pid)`` (taskset execs gunicorn in place)."""
    log = directory / f"gunicorn-{mode}.log"
    log.unlink(missing_ok=True)  # a previous round's log names a port no longer served
    command = [sys.executable, "-m", "gunicorn", "--chdir", str(directory), "--bind",
               "127.0.0.1:0", "--workers", str(workers), "--worker-class", "sync",
               *NO_CONTROL_SOCKET, "--log-level", "info", "--error-logfile", str(log),
               "bench_app:app"]  # fmt: skip
    env = {
        **os.environ,
        "ZT_BENCH_MODE": mode,
        "ZT_BENCH_JWKS": str(directory / "jwks.json"),
        "ZT_BENCH_HELPERS": str(Path(__file__).resolve().parent),
        "ZT_BENCH_ISSUER": ISSUER,
        "ZT_BENCH_AUDIENCE": AUDIENCE,
    }
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
        yield port, proc.pid
    finally:
        with suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


def check(port: int, token: str) -> None:
    """Wait until the app answers 200 to the benchmark request (workers have loaded it)."""
    deadline = time.monotonic() + 60
    while True:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request("GET", "/orders/7", headers={"Authorization": f"Bearer {token}"})
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


def wrk(
    port: int, token: str, duration: int, connections: int, cpu: int | None
) -> tuple[float, int]:
    """``(requests/s, requests)`` of one wrk run."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "-H",
               f"Authorization: Bearer {token}", f"http://127.0.0.1:{port}/orders/7"]  # fmt: skip
    out = subprocess.run(pinned(cpu, command), capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw error responses:\n{out}")
    found, count = _RPS.search(out), _COUNT.search(out)
    if found is None or count is None:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    return float(found.group(1)), int(count.group(1))


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
    cpu_per_request: dict[str, list[float]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="bench-flask-") as tmp:
        directory = Path(tmp)
        (directory / "bench_app.py").write_text(APP, encoding="utf-8")
        (directory / "jwks.json").write_text(json.dumps(jwks), encoding="utf-8")
        for _ in range(args.rounds):
            for variant in VARIANTS:
                token = tokens[variant]
                with server(directory, variant, args.workers, server_cpu) as (port, arbiter):
                    check(port, token)
                    wrk(port, token, min(2, args.duration), args.connections, client_cpu)
                    before = cpu_seconds(arbiter)
                    rps, count = wrk(port, token, args.duration, args.connections, client_cpu)
                    cpu_per_request[variant].append((cpu_seconds(arbiter) - before) / count)
                    results[variant].append(rps)

    best = {v: max(r) for v, r in results.items()}
    cpu = {v: min(c) for v, c in cpu_per_request.items()}
    print(
        f"Flask {args.workers} sync worker(s), gunicorn, plain HTTP, wrk -c{args.connections}"
        f" {args.duration:g}s x {args.rounds} round(s);"
        f" {'server CPU 0, wrk CPU 1' if pin else 'not pinned'};"
        " audit: default LoggingSink, logging at WARNING"
    )
    print(
        f"{'variant':<14} {'best req/s':>11} {'ratio':>7} {'target':>7}"
        f" {'server CPU/req':>15} {'CPU ratio':>10}  rounds (req/s)"
    )
    for variant in VARIANTS:
        ratio = best[variant] / best["bare"]
        target = TARGETS.get(variant)
        mark = "" if target is None else ("  ok" if ratio >= target else "  BELOW")
        rounds = " ".join(f"{r:.0f}" for r in results[variant])
        shown = f">={target:.2f}" if target is not None else ""
        cpu_ratio = cpu["bare"] / cpu[variant] if cpu[variant] else float("nan")
        print(
            f"{variant:<14} {best[variant]:>11.0f} {ratio:>7.3f} {shown:>7}"
            f" {cpu[variant] * 1e6:>12.0f} us {cpu_ratio:>10.3f}  {rounds}{mark}"
        )
    print("CPU ratio: bare CPU per request / variant's (the same goal, robust to a busy machine)")


if __name__ == "__main__":
    main()
