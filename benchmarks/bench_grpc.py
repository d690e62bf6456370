"""gRPC server benchmark: unary calls/s with the zerotrust interceptor vs the bare server.

Run: ``python benchmarks/bench_grpc.py [--requests N] [--rounds R] [--servers sync,aio]``

Each server runs in its own process pinned to CPU 0 (``taskset``); the load generator is
``h2load`` pinned to CPU 1, sending prebuilt gRPC frames (5-byte length prefix + message)
over plaintext h2c with ``content-type: application/grpc``, ``te: trailers`` and a fixed
bearer token. For each server kind (``grpc.server``, ``grpc.aio.server``) three modes are
measured in interleaved rounds, the best round counting (plus a baseline):

* bare     -- no interceptor;
* cached   -- the interceptor, a ``Guard`` with a real policy, audit to the default
              ``LoggingSink`` (logging at WARNING), the same token every call (verified once,
              then served from the verified-token cache);
* uncached -- the same with ``TokenVerifier(cache_size=0)``: every call verifies the ES256
              signature and the claims;
* uncached-rs256 -- the same with an RS256 token (what most OpenID providers issue), whose
              signature costs less than half of ES256's: context for the uncached row, no target;
* signature -- no interceptor; the handler verifies the bearer token's ES256 signature with
              ``cryptography`` and does nothing else: the ceiling of any uncached check on
              this server (``_signature.py``; no target of its own);
* reads    -- an interceptor that reads what any check of a call must read, and does nothing
              with it: the call's metadata (to find its ``authorization`` entry) and its
              ``auth_context()`` (the peer's certificate). The ceiling of any cached check on
              this server, with the cost grpc's interceptor hook adds (no target of its own).

Plaintext h2c means no TLS, so this measures the interceptor's token path (h2load cannot
present a client certificate); the mTLS peer re-verification is cached per certificate and
bundle snapshot and costs a dictionary lookup once warm. h2load cannot read gRPC trailers, so
every handler counts its calls and the run fails unless all of them reached the handler.
Targets: cached >= 0.90 x bare, uncached >= 0.60 x bare.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
from concurrent import futures
from pathlib import Path
from typing import Any

ISSUER = "https://issuer.bench"
AUDIENCE = "spiffe://example.org/bench"
SUBJECT = "spiffe://example.org/client"
# grpc binds with SO_REUSEPORT by default: off, a server on port 0 has its port to itself
EXCLUSIVE_PORT: list[tuple[str, Any]] = [("grpc.so_reuseport", 0)]
METHOD = "/bench.Echo/Unary"
MODES = ("bare", "cached", "uncached", "uncached-rs256", "signature", "reads")
TARGETS = {"cached": 0.90, "uncached": 0.60}


# --- the server process --------------------------------------------------------------------------


def _guard(jwks: dict[str, Any], mode: str) -> Any:
    from zerotrust import Authenticator, Callers, Guard, Operations, Policy, Rule
    from zerotrust.tokens import TokenVerifier

    verifier = TokenVerifier(
        issuer=ISSUER,
        audience=AUDIENCE,
        keys=jwks,
        algorithms=["RS256"] if mode == "uncached-rs256" else ["ES256"],
        **({} if mode == "cached" else {"cache_size": 0}),
    )
    policy = Policy(
        [
            Rule(
                id="bench",
                callers=[Callers(trust_domains=["example.org"])],
                operations=[Operations(routes=["/bench.Echo/*"])],
            )
        ]
    )
    authenticator = Authenticator(tokens=verifier, require_token=True)
    return Guard(authenticator=authenticator, policy=policy, service="bench")  # LoggingSink


def _authorization(context: Any) -> str | None:
    return next((v for k, v in context.invocation_metadata() if k == "authorization"), None)


def _reads(kind: str) -> Any:
    """The ``reads`` interceptor: per call, the token's metadata entry and the auth context are
    read, and nothing is done with them. Like zerotrust's, it wraps each method's handler once."""
    import grpc
    import grpc.aio

    wrapped: dict[str, Any] = {}

    def wrap(handler: Any) -> Any:
        behavior = handler.unary_unary
        if kind == "sync":

            def call(request: bytes, context: Any) -> Any:
                _authorization(context)
                context.auth_context()
                return behavior(request, context)

        else:

            async def call(request: bytes, context: Any) -> Any:  # type: ignore[misc]
                _authorization(context)
                context.auth_context()
                return await behavior(request, context)

        return grpc.unary_unary_rpc_method_handler(
            call, handler.request_deserializer, handler.response_serializer
        )

    def lookup(handler: Any, method: str) -> Any:
        known = wrapped.get(method)
        if known is None or known[0] is not handler:
            known = wrapped[method] = (handler, wrap(handler))
        return known[1]

    if kind == "sync":

        class Reads(grpc.ServerInterceptor):  # type: ignore[misc]
            def intercept_service(self, continuation: Any, details: Any) -> Any:
                return lookup(continuation(details), details.method)

        return Reads()

    class AioReads(grpc.aio.ServerInterceptor):  # type: ignore[misc]
        async def intercept_service(self, continuation: Any, details: Any) -> Any:
            return lookup(await continuation(details), details.method)

    return AioReads()


def _interceptors(kind: str, mode: str, jwks: dict[str, Any]) -> list[Any]:
    if mode in ("bare", "signature"):
        return []
    if mode == "reads":
        return [_reads(kind)]
    if kind == "sync":
        from zerotrust.grpc import ServerInterceptor

        return [ServerInterceptor(_guard(jwks, mode))]
    from zerotrust.grpc import AioServerInterceptor

    return [AioServerInterceptor(_guard(jwks, mode))]


def serve(kind: str, mode: str, jwks_file: str) -> None:
    """Serve until stdin closes; print the port first and the handled-call count last."""
    import grpc
    import grpc.aio
    from _signature import es256_check

    logging.basicConfig(level=logging.WARNING)
    jwks = json.loads(Path(jwks_file).read_text())
    handled = [0]
    check = es256_check(jwks_file) if mode == "signature" else None

    def echo(request: bytes, context: Any) -> bytes:
        if check is not None and not check(_authorization(context)):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "bad signature")
        handled[0] += 1
        return request

    async def aecho(request: bytes, context: Any) -> bytes:
        if check is not None and not check(_authorization(context)):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "bad signature")
        handled[0] += 1
        return request

    if kind == "sync":
        interceptors = _interceptors(kind, mode, jwks)
        pool = futures.ThreadPoolExecutor(max_workers=8)
        server = grpc.server(pool, interceptors=interceptors, options=EXCLUSIVE_PORT)
        handler = grpc.unary_unary_rpc_method_handler(echo)
        server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler("bench.Echo", {"Unary": handler})]
        )
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        print(port, flush=True)
        sys.stdin.read()
        server.stop(None).wait()
        pool.shutdown()
    else:

        async def main() -> None:
            interceptors = _interceptors(kind, mode, jwks)
            server = grpc.aio.server(interceptors=interceptors, options=EXCLUSIVE_PORT)
            handler = grpc.unary_unary_rpc_method_handler(aecho)
            server.add_generic_rpc_handlers(
                [grpc.method_handlers_generic_handler("bench.Echo", {"Unary": handler})]
            )
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            print(port, flush=True)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            threading.Thread(
                target=lambda: (sys.stdin.read(), loop.call_soon_threadsafe(stop.set)),
                daemon=True,
            ).start()
            await stop.wait()
            await server.stop(None)

        asyncio.run(main())
    print(handled[0], flush=True)


# --- the driver ---------------------------------------------------------------------------


def _pinned(cpu: int, argv: list[str]) -> list[str]:
    taskset = shutil.which("taskset")
    return [taskset, "-c", str(cpu), *argv] if taskset and (os.cpu_count() or 1) > 1 else argv


class Server:
    def __init__(self, kind: str, mode: str, jwks_path: Path) -> None:
        argv = [sys.executable, __file__, "--serve", kind, mode, str(jwks_path)]
        self.proc = subprocess.Popen(
            _pinned(0, argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.strip().isdigit():
            self.stop()
            raise RuntimeError(f"{kind}/{mode} server did not start")
        self.port = int(line)

    def stop(self) -> int:
        """Close stdin (the server stops), return the handled-call count."""
        try:
            out, _ = self.proc.communicate(input="", timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            return -1
        counts = [int(x) for x in out.split() if x.isdigit()]
        return counts[-1] if counts else -1


def h2load(port: int, token: str, body: Path, requests: int) -> float:
    argv = [
        "h2load",
        "-n", str(requests), "-c", "4", "-m", "16", "-t", "1",
        "-H", "content-type: application/grpc",
        "-H", "te: trailers",
        "-H", f"authorization: Bearer {token}",
        "-d", str(body),
        f"http://127.0.0.1:{port}{METHOD}",
    ]  # fmt: skip
    result = subprocess.run(
        _pinned(1, argv), capture_output=True, text=True, timeout=600, check=True
    )
    done = re.search(
        r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", result.stdout
    )
    rate = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", result.stdout)
    if done is None or rate is None or int(done.group(2)) != requests:
        raise RuntimeError(f"h2load failed:\n{result.stdout}\n{result.stderr}")
    return float(rate.group(1))


def run(requests: int, rounds: int, kinds: list[str]) -> int:
    if shutil.which("h2load") is None:
        print("h2load is not installed: apt-get install nghttp2-client")
        return 2
    from _tokens import tokens_for

    tokens, jwks = tokens_for(MODES, issuer=ISSUER, subject=SUBJECT, audience=AUDIENCE)
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        jwks_path, body = Path(tmp, "jwks.json"), Path(tmp, "body.bin")
        jwks_path.write_text(json.dumps(jwks))
        message = b"ping" * 8
        body.write_bytes(struct.pack(">BI", 0, len(message)) + message)
        print(f"unary calls/s, {requests} calls per run, best of {rounds} interleaved rounds")
        print(f"{'server':<8} {'mode':<14} {'calls/s':>10} {'ratio':>7} {'target':>7}")
        for kind in kinds:
            best = dict.fromkeys(MODES, 0.0)
            for _ in range(rounds):
                for mode in MODES:
                    server = Server(kind, mode, jwks_path)
                    try:
                        h2load(server.port, tokens[mode], body, requests // 10)  # warm-up
                        rate = h2load(server.port, tokens[mode], body, requests)
                    finally:
                        handled = server.stop()
                    if handled != requests + requests // 10:
                        raise RuntimeError(f"{kind}/{mode}: {handled} calls reached the handler")
                    best[mode] = max(best[mode], rate)
            for mode in MODES:
                ratio = best[mode] / best["bare"]
                target = TARGETS.get(mode)
                mark = (
                    ""
                    if target is None
                    else f"{target:.2f}" + (" ok" if ratio >= target else " !!")
                )
                failed |= target is not None and ratio < target
                print(f"{kind:<8} {mode:<14} {best[mode]:>10.0f} {ratio:>7.2f} {mark:>7}")
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--servers", default="sync,aio")
    parser.add_argument(
        "--serve", nargs=3, metavar=("KIND", "MODE", "JWKS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.serve:
        kind, mode, jwks = args.serve
        serve(kind, mode, jwks)
        return 0
    return run(args.requests, args.rounds, [k for k in args.servers.split(",") if k])


if __name__ == "__main__":
    sys.exit(main())
