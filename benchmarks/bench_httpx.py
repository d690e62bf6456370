"""Outgoing httpx calls: the cost of attaching a cached token, and TLS handshakes under load.

A private mTLS server (zerotrust's server context, HTTP/1.1 keep-alive, a fixed 200 reply)
runs on a loopback port for the duration of the run. Measured in the same run:

* a keep-alive request through ``zerotrust.httpx.Client`` without a token source, then with
  ``ZeroTrustAuth`` over a cached token source: the token's share of the request time
  (target < 2%), from the end-to-end difference and from the auth flow timed on its own;
* the client transport (trace-context injection and the retry wrapper) against a plain
  ``httpx.HTTPTransport`` with the same TLS context;
* TLS handshakes counted at the server per 1,000 requests of steady traffic from several
  threads sharing one client (connections are kept alive).

    python benchmarks/bench_httpx.py [--requests N] [--threads T]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

import httpx

from zerotrust import match
from zerotrust.dev import DevCA
from zerotrust.httpx import Client, ZeroTrustAuth
from zerotrust.tokens import PrivateJWK, TokenIssuer
from zerotrust.tokens.outgoing import SelfIssuedTokenSource
from zerotrust.x509.sslcontext import client_ssl_context, server_ssl_context

SERVER_ID = "spiffe://example.org/api"
REPLY = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


class Server:
    """A minimal keep-alive mTLS server that counts completed handshakes."""

    def __init__(self, ca: DevCA) -> None:
        svid = ca.issue_svid(SERVER_ID, dns_names=["localhost"])
        self.context = server_ssl_context(
            svid, ca.bundle, authorizer=match.member_of("example.org")
        )
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.handshakes = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def serve(self) -> None:
        while not self.stop.is_set():
            try:
                raw, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self.connection, args=(raw,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def connection(self, raw: socket.socket) -> None:
        raw.settimeout(1.0)
        try:
            conn = self.context.wrap_socket(raw, server_side=True)
        except OSError:
            raw.close()
            return
        with self.lock:
            self.handshakes += 1
        buffer = b""
        with conn:
            while not self.stop.is_set():
                try:
                    chunk = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not chunk:
                    return
                buffer += chunk
                while b"\r\n\r\n" in buffer:  # GET requests: no body
                    _, buffer = buffer.split(b"\r\n\r\n", 1)
                    conn.sendall(REPLY)


@contextmanager
def running(ca: DevCA) -> Iterator[Server]:
    server = Server(ca)
    acceptor = threading.Thread(target=server.serve, daemon=True)
    acceptor.start()
    try:
        yield server
    finally:
        server.stop.set()
        acceptor.join(5)
        server.listener.close()
        for thread in server.threads:
            thread.join(5)


def per_request(client: httpx.Client, url: str, n: int) -> tuple[float, float]:
    """(wall time, CPU time of this thread) per request, in microseconds. The client runs in
    this thread and the server in others, so the CPU time is the client's own cost."""
    wall, cpu = time.perf_counter(), time.thread_time()
    for _ in range(n):
        client.get(url)
    return (time.perf_counter() - wall) / n * 1e6, (time.thread_time() - cpu) / n * 1e6


def interleaved(
    runs: dict[str, Callable[[], tuple[float, float]]], rounds: int
) -> dict[str, list[tuple[float, float]]]:
    """``rounds`` samples of each measurement, interleaved, in an order that rotates every
    round (whatever runs first or last in a round is not always the same client)."""
    names = list(runs)
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(runs[name]())
    return samples


def floor_difference(a: list[tuple[float, float]], b: list[tuple[float, float]], i: int) -> float:
    """Difference of the best samples: noise from other processes only ever adds time."""
    return min(x[i] for x in a) - min(y[i] for y in b)


def auth_flow_cost(auth: ZeroTrustAuth, url: str, n: int) -> float:
    """The auth flow alone, as httpx drives it for a request answered 200 (microseconds)."""
    response = httpx.Response(200)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            flow = auth.sync_auth_flow(httpx.Request("GET", url))
            next(flow)
            with suppress(StopIteration):
                flow.send(response)
        best = min(best, (time.perf_counter() - start) / n * 1e6)
    base = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            httpx.Request("GET", url)
        base = min(base, (time.perf_counter() - start) / n * 1e6)
    return best - base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200, help="requests per sample")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--handshake-requests", type=int, default=4000)
    args = parser.parse_args()

    ca = DevCA.create("example.org")
    client_svid = ca.issue_svid("spiffe://example.org/web")
    issuer = TokenIssuer(PrivateJWK.generate("ES256"), issuer="spiffe://example.org/web")
    tokens = SelfIssuedTokenSource(issuer, subject="spiffe://example.org/web", ttl=3600)
    tls = {"svid": client_svid, "bundles": ca.bundle, "server_id": SERVER_ID}

    with running(ca) as server:
        url = f"https://localhost:{server.port}/orders"
        context = client_ssl_context(client_svid, ca.bundle, authorizer=match.exact(SERVER_ID))
        # The same header, set statically: separates the cost of carrying a token (h11 and
        # TLS handle ~400 more bytes) from the cost of ZeroTrustAuth choosing and attaching it.
        static = {"Authorization": f"Bearer {tokens.token('orders')}"}
        with (
            Client(**tls) as bare,
            Client(**tls, token_source=tokens, audience="orders") as with_token,
            Client(**tls, headers=static) as with_header,
            httpx.Client(verify=context, trust_env=False) as plain,
        ):
            n = args.requests
            clients = {"plain": plain, "bare": bare, "header": with_header, "token": with_token}
            for client in clients.values():
                per_request(client, url, 200)  # warm up: connect, mint, caches
            result = interleaved(
                {
                    name: (lambda client=client: per_request(client, url, n))  # type: ignore[misc]
                    for name, client in clients.items()
                },
                args.rounds,
            )
            auth = ZeroTrustAuth(tokens, audience="orders")
            flow_us = auth_flow_cost(auth, url, 20_000)

        wall = {name: statistics.median(x[0] for x in v) for name, v in result.items()}
        cpu = {name: min(x[1] for x in v) for name, v in result.items()}
        for name, label in (
            ("plain", "plain httpx.Client                      "),
            ("bare", "zerotrust Client, no token              "),
            ("header", "zerotrust Client, static Bearer header  "),
            ("token", "zerotrust Client + ZeroTrustAuth        "),
        ):
            print(
                f"{label} wall {wall[name]:7.1f} us/request (median), "
                f"client CPU {cpu[name]:6.1f} us (best)"
            )
        request = wall["bare"]
        token_cpu = floor_difference(result["token"], result["bare"], 1)
        token_wall = floor_difference(result["token"], result["bare"], 0)
        print(
            f"cached token vs no token, client CPU: {token_cpu:+.1f} us = "
            f"{token_cpu / request:+.2%} of a loopback request (target < 2%); "
            f"wall clock (noisy): {token_wall / request:+.2%}"
        )
        attach = floor_difference(result["token"], result["header"], 1)
        print(
            f"  of which ZeroTrustAuth itself (vs the same static header): {attach:+.1f} us = "
            f"{attach / request:+.2%}"
        )
        print(
            f"cached token, auth flow alone: {flow_us:.1f} us = "
            f"{flow_us / request:.2%} of a loopback request"
        )
        wrapper = floor_difference(result["bare"], result["plain"], 1)
        print(
            f"transport wrapper (trace context + retry), client CPU: {wrapper:+.1f} us = "
            f"{wrapper / request:+.2%}"
        )

        before = server.handshakes
        total = 1000 * max(1, args.handshake_requests // 1000)
        with Client(**tls, token_source=tokens, audience="orders") as shared:
            per_thread = total // args.threads

            def worker() -> None:
                for _ in range(per_thread):
                    shared.get(url)

            threads = [threading.Thread(target=worker) for _ in range(args.threads)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        handshakes = server.handshakes - before
        sent = per_thread * args.threads
        print(
            f"TLS handshakes: {handshakes} for {sent} requests from {args.threads} threads "
            f"= {handshakes * 1000 / sent:.1f} per 1,000 requests"
        )


if __name__ == "__main__":
    main()
