"""Load test: a FastAPI app (uvicorn) and a grpc.aio server, with zerotrust (mTLS + tokens)
and bare (plain TLS, no zerotrust), under a fixed-duration multi-process load.

Run: ``python benchmarks/load.py [--duration 10] [--clients 4] [--targets fastapi,grpc]``

The apps are built here with the same zerotrust setup as examples/fastapi/app.py and
examples/grpc/server.py (a Guard with mTLS required, an ES256 token with a scope checked per
route, audit to a ``LoggingSink``), from dev identities written to a temporary folder. Each
server runs in its own process pinned to CPU 0 and the clients in ``--clients`` processes
pinned to CPU 1 (``taskset``, when there is one and two CPUs or more). Every client process
makes one request at a time over one kept-alive connection (httpx with zerotrust's client
context and a token; a grpc channel from ``zerotrust.grpc.secure_channel``; the bare clients
use plain TLS) for ``--duration`` seconds. The table shows requests/s, p50/p99 latency, errors,
the server's CPU use during the run (near 100 %: the server is the bottleneck; well below: the
clients are) and its peak RSS (VmHWM). The script exits non-zero if any request failed.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TD = "example.org"
ORDERS = "spiffe://example.org/ns/shop/sa/orders"
WEB = "spiffe://example.org/ns/shop/sa/web"
ISSUER = "https://issuer.example.org"
TARGETS = ("fastapi", "grpc")
MODES = ("zerotrust", "bare")
STARTUP = 60.0  # seconds: the most a server or client may take to get ready


# --- identities ----------------------------------------------------------------------------------


def write_identities(folder: Path) -> None:
    from zerotrust import TokenIssuer
    from zerotrust.dev import DevCA
    from zerotrust.tokens import PrivateJWK

    ca = DevCA.create(TD)
    issuer = TokenIssuer(PrivateJWK.generate("ES256"), issuer=ISSUER)
    (folder / "bundle.pem").write_bytes(ca.bundle.to_pem())
    ca.issue_svid(ORDERS, dns_names=["localhost"]).save(
        folder / "server.pem", folder / "server.key"
    )
    ca.issue_svid(WEB).save(folder / "client.pem", folder / "client.key")
    (folder / "jwks.json").write_text(json.dumps(issuer.jwks()))
    token = issuer.issue(subject=WEB, audience=ORDERS, scopes=["orders:read"], ttl=3600)
    (folder / "token").write_text(token)


def load_identities(folder: Path) -> dict[str, Any]:
    from zerotrust import TrustBundle, X509Svid

    return {
        "bundle": TrustBundle.from_pem(TD, (folder / "bundle.pem").read_bytes()),
        "server": X509Svid.load(folder / "server.pem", folder / "server.key"),
        "client": X509Svid.load(folder / "client.pem", folder / "client.key"),
        "jwks": json.loads((folder / "jwks.json").read_text()),
        "token": (folder / "token").read_text(),
    }


def guard(ids: dict[str, Any], routes: list[str]) -> Any:
    from zerotrust import Authenticator, Callers, Guard, LoggingSink, Operations, Policy, Rule
    from zerotrust.tokens import TokenVerifier

    verifier = TokenVerifier(issuer=ISSUER, audience=ORDERS, keys=ids["jwks"], algorithms=["ES256"])
    rule = Rule(
        id="shop-calls-orders",
        callers=[Callers(spiffe_ids=["spiffe://example.org/ns/shop/*"])],
        operations=[Operations(routes=routes)],
    )
    return Guard(
        authenticator=Authenticator(tokens=verifier, bundles=ids["bundle"], require_mtls=True),
        policy=Policy([rule]),
        audit=LoggingSink(),
        service="orders",
    )


# --- servers (run in their own process) ----------------------------------------------------------


def serve_fastapi(folder: Path, mode: str, ready: Path) -> None:
    import socket
    import threading

    import uvicorn
    from fastapi import FastAPI, Security

    ids = load_identities(folder)
    app = FastAPI()
    options: dict[str, Any] = {"log_level": "warning", "access_log": False, "lifespan": "off"}
    if mode == "zerotrust":
        from zerotrust import match, server_ssl_context
        from zerotrust.asgi import ZeroTrustUvicornConfig
        from zerotrust.fastapi import ZeroTrust, current_principal

        zt = ZeroTrust(guard(ids, ["/orders/{order_id}"]))
        zt.install(app)

        @app.get("/orders/{order_id}", dependencies=[Security(zt, scopes=["orders:read"])])
        async def get_order(order_id: int) -> dict[str, Any]:
            caller = current_principal()
            return {"order": order_id, "caller": caller.id if caller else None}

        context = server_ssl_context(ids["server"], ids["bundle"], authorizer=match.member_of(TD))
        config: uvicorn.Config = ZeroTrustUvicornConfig(app, ssl_context=context, **options)
    else:

        @app.get("/orders/{order_id}")
        async def get_order_bare(order_id: int) -> dict[str, Any]:
            return {"order": order_id, "caller": None}

        config = uvicorn.Config(
            app,
            ssl_certfile=str(folder / "server.pem"),
            ssl_keyfile=str(folder / "server.key"),
            **options,
        )
    listener = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(config)

    def announce() -> None:
        while not server.started and not server.should_exit:
            time.sleep(0.01)
        write_ready(ready, listener.getsockname()[1])

    threading.Thread(target=announce, daemon=True).start()
    server.run(sockets=[listener])  # until SIGTERM


def serve_grpc(folder: Path, mode: str, ready: Path) -> None:
    import asyncio

    import grpc

    ids = load_identities(folder)

    async def get_order(request: bytes, context: Any) -> bytes:
        return json.dumps({"order": json.loads(request)["id"]}).encode()

    async def main() -> None:
        if mode == "zerotrust":
            from zerotrust.grpc import AioServerInterceptor, require, server_credentials

            handler = require(scopes=["orders:read"])(get_order)
            interceptors = [AioServerInterceptor(guard(ids, ["/shop.Orders/*"]))]
            credentials = server_credentials(ids["server"], ids["bundle"])
        else:
            handler, interceptors = get_order, []
            chain = (folder / "server.pem").read_bytes()
            credentials = grpc.ssl_server_credentials(
                [((folder / "server.key").read_bytes(), chain)]
            )
        server = grpc.aio.server(interceptors=interceptors, options=[("grpc.so_reuseport", 0)])
        methods = {"Get": grpc.unary_unary_rpc_method_handler(handler)}
        server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler("shop.Orders", methods)]
        )
        port = server.add_secure_port("localhost:0", credentials)
        await server.start()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        write_ready(ready, port)
        await stop.wait()
        await server.stop(grace=None)

    asyncio.run(main())


def write_ready(path: Path, port: int) -> None:
    partial = path.with_suffix(".tmp")
    partial.write_text(str(port))
    partial.replace(path)


# --- clients (run in their own processes) --------------------------------------------------------


def fastapi_caller(ids: dict[str, Any], folder: Path, mode: str, port: int) -> tuple[Any, Any]:
    import ssl

    import httpx

    base = f"https://localhost:{port}"
    if mode == "zerotrust":
        from zerotrust import StaticTokenSource
        from zerotrust.httpx import Client

        client = Client(
            svid=ids["client"],
            bundles=ids["bundle"],
            server_id=ORDERS,
            token_source=StaticTokenSource(ids["token"]),
            audience=ORDERS,
            base_url=base,
            retry=None,
            timeout=30,
        )
    else:
        context = ssl.create_default_context(cafile=str(folder / "bundle.pem"))
        client = httpx.Client(verify=context, base_url=base, timeout=30)

    def call() -> bool:
        return client.get("/orders/7").status_code == 200

    return call, client


def grpc_caller(ids: dict[str, Any], folder: Path, mode: str, port: int) -> tuple[Any, Any]:
    import grpc

    target = f"localhost:{port}"
    if mode == "zerotrust":
        from zerotrust import StaticTokenSource
        from zerotrust.grpc import secure_channel

        channel: Any = secure_channel(
            target,
            svid=ids["client"],
            bundles=ids["bundle"],
            server_id=ORDERS,
            token_source=StaticTokenSource(ids["token"]),
            retry=None,
        )
    else:
        roots = (folder / "bundle.pem").read_bytes()
        channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=roots))
    method = channel.unary_unary("/shop.Orders/Get")

    def call() -> bool:
        return bool(json.loads(method(b'{"id": 7}', timeout=30)) == {"order": 7})

    return call, channel


def run_client(folder: Path, target: str, mode: str, port: int, duration: float) -> None:
    ids = load_identities(folder)
    make = fastapi_caller if target == "fastapi" else grpc_caller
    call, closable = make(ids, folder, mode, port)
    errors: list[str] = []
    latencies: list[float] = []
    failed = 0
    try:
        if not call():  # warm: the connection is up before the clock starts
            raise SystemExit("warm-up request failed")
        print("READY", flush=True)
        sys.stdin.readline()  # GO
        clock = time.perf_counter
        start = clock()
        end = start + duration
        while (now := clock()) < end:
            try:
                ok, error = call(), "unexpected answer"
            except Exception as exc:  # counted: the run fails if any request failed
                ok, error = False, repr(exc)
            latency = clock() - now
            if ok:
                latencies.append(latency)
            else:
                failed += 1
                if len(errors) < 5:
                    errors.append(error)
        elapsed = clock() - start
    finally:
        closable.close()
    result = {"ok": len(latencies), "failed": failed, "elapsed": elapsed, "errors": errors}
    print(json.dumps({**result, "latencies": latencies}), flush=True)


# --- the driver ----------------------------------------------------------------------------------


def pinned(cpu: int) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        return ["taskset", "-c", str(cpu)]
    return []


def spawn(args: list[str], cpu: int, **kwargs: Any) -> subprocess.Popen[bytes]:
    command = [*pinned(cpu), sys.executable, __file__, *args]
    return subprocess.Popen(command, start_new_session=True, **kwargs)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(15)
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            pipe.close()


def wait_line(proc: subprocess.Popen[bytes], deadline: float) -> bytes:
    assert proc.stdout is not None
    while proc.poll() is None:
        readable, _, _ = select.select([proc.stdout], [], [], 0.1)
        if readable:
            return proc.stdout.readline()
        if time.monotonic() > deadline:
            break
    raise RuntimeError("a client did not get ready")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(folder: Path, target: str, mode: str, clients: int, duration: float) -> dict[str, Any]:
    ready = folder / f"ready-{target}-{mode}"
    server = spawn(["_serve", str(folder), target, mode, str(ready)], cpu=0)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        deadline = time.monotonic() + STARTUP
        while not ready.exists():
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the {target} {mode} server did not start")
            time.sleep(0.02)
        port = ready.read_text()
        args = ["_client", str(folder), target, mode, port, str(duration)]
        procs.extend(
            spawn(args, cpu=1, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            for _ in range(clients)
        )
        deadline = time.monotonic() + STARTUP
        for proc in procs:
            if wait_line(proc, deadline).strip() != b"READY":
                raise RuntimeError("a client failed its warm-up request")
        cpu_before, started = cpu_seconds(server.pid), time.monotonic()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"GO\n")
            proc.stdin.flush()
        results = [json.loads(proc.communicate(timeout=duration + STARTUP)[0]) for proc in procs]
        cpu = (cpu_seconds(server.pid) - cpu_before) / (time.monotonic() - started)
        rss = peak_rss_mib(server.pid)
    finally:
        for proc in procs:
            stop(proc)
        stop(server)
    latencies = sorted(value for result in results for value in result["latencies"])
    return {
        "rps": sum(result["ok"] / result["elapsed"] for result in results),
        "p50": percentile(latencies, 0.50) * 1000,
        "p99": percentile(latencies, 0.99) * 1000,
        "errors": sum(result["failed"] for result in results),
        "first_errors": [error for result in results for error in result["errors"]][:5],
        "rss": rss,
        "cpu": cpu * 100,
    }


def percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    parser.add_argument("--clients", type=int, default=4, help="load-generator processes")
    parser.add_argument("--targets", default=",".join(TARGETS), help="fastapi,grpc")
    args = parser.parse_args()
    targets = [name for name in args.targets.split(",") if name]
    rows = []
    with tempfile.TemporaryDirectory(prefix="zerotrust-load-") as tmp:
        folder = Path(tmp)
        write_identities(folder)
        for target in targets:
            for mode in MODES:
                print(
                    f"{target} {mode}: {args.duration:g} s, {args.clients} clients ...", flush=True
                )
                rows.append(
                    (target, mode, measure(folder, target, mode, args.clients, args.duration))
                )
    pinning = "server on CPU 0, clients on CPU 1" if pinned(0) else "no CPU pinning"
    print(f"\n{args.clients} client processes, {args.duration:g} s each, {pinning}\n")
    header = f"{'target':<8} {'mode':<10} {'req/s':>8} {'vs bare':>8} {'p50 ms':>8} {'p99 ms':>8}"
    print(f"{header} {'errors':>7} {'server CPU %':>13} {'peak RSS MiB':>13}")
    bare = {target: r["rps"] for target, mode, r in rows if mode == "bare"}
    for target, mode, r in rows:
        ratio = r["rps"] / bare[target] if bare.get(target) else float("nan")
        print(
            f"{target:<8} {mode:<10} {r['rps']:>8.0f} {ratio:>8.2f} {r['p50']:>8.2f}"
            f" {r['p99']:>8.2f} {r['errors']:>7} {r['cpu']:>13.0f} {r['rss']:>13.1f}"
        )
    failed = [(target, mode, r["first_errors"]) for target, mode, r in rows if r["errors"]]
    for target, mode, errors in failed:
        print(f"FAILED: {target} {mode}: {errors}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_serve":
        folder, target, mode, ready = sys.argv[2:6]
        serve = serve_fastapi if target == "fastapi" else serve_grpc
        serve(Path(folder), mode, Path(ready))
    elif len(sys.argv) > 1 and sys.argv[1] == "_client":
        folder, target, mode, port, duration = sys.argv[2:7]
        run_client(Path(folder), target, mode, int(port), float(duration))
    else:
        sys.exit(main())
