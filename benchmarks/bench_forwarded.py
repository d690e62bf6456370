"""Client certificates forwarded by a trusted proxy: what authenticating such a request costs.

Baseline measured in the same run: ``cryptography``'s own path validation of the same chain
(an X.509 store of the bundle's authorities, ``PolicyBuilder().build_client_verifier()``, the
DER certificates loaded first), which any verification of a forwarded certificate has to do
at least once. Measured against it:

* first sight -- reading the Envoy ``x-forwarded-client-cert`` header (percent-decoded PEM leaf
  and chain) and verifying the chain as an X509-SVID, as for a client never seen before;
* repeated -- ``Guard.evaluate`` of a request from the trusted proxy carrying that header, the
  same client again (its chain parsed and verified before), with the allow decision, audit
  check and principal included.

    python benchmarks/bench_forwarded.py [--iterations N] [--no-intermediate]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.verification import PolicyBuilder, Store

from zerotrust import Authenticator, Callers, Guard, Policy, Request, Rule
from zerotrust.authn.proxy import TrustedProxies, extract_forwarded_cert
from zerotrust.dev import DevCA
from zerotrust.x509.verify import verify_x509_svid

WEB = "spiffe://example.org/ns/shop/sa/web"
PROXY = "10.0.0.5"


def per_call(fn: Callable[[], Any], iterations: int) -> float:
    """Best of five runs, in microseconds per call."""
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(iterations):
            fn()
        best = min(best, (time.perf_counter() - start) / iterations)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument(
        "--no-intermediate", action="store_true", help="leaf signed by the root itself"
    )
    args = parser.parse_args()

    ca = DevCA.create("example.org", intermediate=not args.no_intermediate)
    svid = ca.issue_svid(WEB)
    chain_pem = "".join(cert.public_bytes(Encoding.PEM).decode() for cert in svid.cert_chain)
    leaf_pem = svid.leaf.public_bytes(Encoding.PEM).decode()
    xfcc = f'Cert="{quote(leaf_pem, safe="")}";Chain="{quote(chain_pem, safe="")}";URI={WEB}'
    der = [cert.public_bytes(Encoding.DER) for cert in svid.cert_chain]
    proxies = TrustedProxies(["10.0.0.0/8"], header="xfcc")
    headers = {"x-forwarded-client-cert": xfcc}

    store = Store(list(ca.bundle.x509_authorities))

    def raw() -> None:
        certs = [x509.load_der_x509_certificate(blob) for blob in der]
        verifier = (
            PolicyBuilder().store(store).time(datetime.now(timezone.utc)).build_client_verifier()
        )
        verifier.verify(certs[0], certs[1:])

    def header(name: str) -> list[str]:
        value = headers.get(name)
        return [value] if value is not None else []

    def first_sight() -> None:
        forwarded = extract_forwarded_cert(header, PROXY, None, proxies)
        assert forwarded.chain is not None
        verify_x509_svid(forwarded.chain, ca.bundle, role="client")

    guard = Guard(
        authenticator=Authenticator(bundles=ca.bundle, trusted_proxies=proxies),
        policy=Policy([Rule(id="mesh", callers=[Callers(trust_domains=["example.org"])])]),
        service="bench",
    )
    view = Request(method="GET", route="/orders", remote_addr=PROXY, headers=headers)
    outcome = guard.evaluate(view)
    assert outcome.allowed
    assert outcome.principal is not None
    assert outcome.principal.proven_by == "proxy-mtls"

    n = args.iterations
    baseline = per_call(raw, n)
    rows = [
        ("first sight: parse + verify", per_call(first_sight, n)),
        ("repeated: Guard.evaluate", per_call(lambda: guard.evaluate(view), n)),
    ]
    sent = "leaf + intermediate" if len(svid.cert_chain) > 1 else "leaf"
    print(f"forwarded in XFCC: {sent}, to one root authority; {n} calls x 5 runs, best")
    print(f"{'what':<32} {'us/call':>9} {'x raw':>7}")
    print(f"{'raw cryptography path validation':<32} {baseline:9.1f} {1.0:7.2f}")
    for name, cost in rows:
        print(f"{name:<32} {cost:9.1f} {cost / baseline:7.2f}")


if __name__ == "__main__":
    main()
