"""zerotrust walkthrough: an embedded CA, two workloads, one allowed and two refused mTLS calls.

Run it with ``nox -s demo`` (or ``python examples/demo.py`` where zerotrust is installed).
Everything happens in this process over loopback: no infrastructure, no files left behind.
"""

from __future__ import annotations

import socket
import ssl
import threading

from zerotrust import PeerRejected, client_ssl_context, match, server_ssl_context
from zerotrust.dev import DevCA

ORDERS = "spiffe://shop.example/ns/prod/sa/orders"
PAYMENTS = "spiffe://shop.example/ns/prod/sa/payments"
INTRUDER = "spiffe://shop.example/ns/dev/sa/intruder"


def step(text: str) -> None:
    print(f"\n== {text}")


def serve(listener: socket.socket, ctx: ssl.SSLContext, calls: int) -> None:
    """The payments service: mTLS, only the orders workload may call it."""
    for _ in range(calls):
        raw, _addr = listener.accept()
        try:
            with ctx.wrap_socket(raw, server_side=True) as conn:
                caller = conn.zerotrust_peer.spiffe_id  # type: ignore[attr-defined]
                request = conn.recv(100).decode()
                if not request:
                    print(f"   payments: verified caller {caller}, who then hung up")
                    continue
                print(f"   payments: verified caller {caller}, request {request!r}")
                conn.sendall(b"payment accepted")
        except PeerRejected as exc:
            print(f"   payments: refused the handshake [{exc.error.code}] {exc.error}")
        except OSError as exc:
            print(f"   payments: connection failed: {exc}")
        finally:
            raw.close()


def call(port: int, ctx: ssl.SSLContext) -> None:
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            ctx.wrap_socket(raw) as conn,
        ):
            server = conn.zerotrust_peer.spiffe_id  # type: ignore[attr-defined]
            print(f"   client:   server proved it is {server}")
            conn.sendall(b"charge order 42")
            reply = conn.recv(100)
            if reply:
                print(f"   client:   reply {reply.decode()!r}")
            else:
                print("   client:   connection closed by the server (no data exchanged)")
    except PeerRejected as exc:
        print(f"   client:   refused the server [{exc.error.code}] {exc.error}")


def main() -> None:
    step("1. An embedded development CA for the trust domain shop.example")
    ca = DevCA.create("shop.example", intermediate=True)
    print(f"   root:         {ca.root_certificate.subject.rfc4514_string()}")

    step("2. Short-lived X.509-SVIDs for two workloads (and one that should not get in)")
    orders = ca.issue_svid(ORDERS, ttl=600)
    payments = ca.issue_svid(PAYMENTS, ttl=600)
    intruder = ca.issue_svid(INTRUDER, ttl=600)
    for svid in (orders, payments, intruder):
        expires = f"{svid.expires_at:%H:%M:%S}Z"
        print(f"   {svid.spiffe_id}  sha256:{svid.fingerprint[:16]}…  expires {expires}")

    step("3. payments serves mTLS and admits only the orders workload")
    server_ctx = server_ssl_context(payments, ca.bundle, authorizer=match.exact(ORDERS))
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = threading.Thread(target=serve, args=(listener, server_ctx, 2), daemon=True)
    server.start()
    print(f"   listening on 127.0.0.1:{port}")

    step("4. orders calls payments (both sides verify each other's SPIFFE ID)")
    call(port, client_ssl_context(orders, ca.bundle, authorizer=match.exact(PAYMENTS)))

    step("5. intruder calls payments: a valid certificate, but not an allowed caller")
    call(port, client_ssl_context(intruder, ca.bundle, authorizer=match.exact(PAYMENTS)))
    server.join(5)
    listener.close()

    step("6. orders refuses a server that is not the one it expects")
    picky = client_ssl_context(orders, ca.bundle, authorizer=match.exact(INTRUDER))
    listener = socket.create_server(("127.0.0.1", 0))
    server = threading.Thread(target=serve, args=(listener, server_ctx, 1), daemon=True)
    server.start()
    call(listener.getsockname()[1], picky)
    server.join(5)
    listener.close()
    print("\ndone.")


if __name__ == "__main__":
    main()
