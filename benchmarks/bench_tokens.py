"""Token verification benchmark: zerotrust vs raw ``cryptography``, PyJWT and joserfc.

Run: ``python benchmarks/bench_tokens.py [--rounds N] [--target-ms MS]``

For ES256, EdDSA, RS256 and PS256 it times, on the same token:

* raw       -- base64url-decode the signature, convert it to the form ``cryptography``
               needs (DER for ECDSA) and call ``public_key.verify`` on the signing input;
* zerotrust -- ``TokenVerifier.verify`` with the cache disabled (``cache_size=0``): bounds,
               header rules, key selection, signature, claims;
* cached    -- ``TokenVerifier.verify`` of a token already in the verified-token cache;
* pyjwt     -- ``jwt.decode`` with audience and issuer checks;
* joserfc   -- ``jwt.decode`` plus ``JWTClaimsRegistry.validate`` (iss, aud, exp).

Each candidate is timed in interleaved rounds; the best round counts. Ratios are against raw.
"""

from __future__ import annotations

import argparse
import base64
import sys
import time
import timeit
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import jwt as pyjwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from joserfc import jwk as joserfc_jwk
from joserfc import jwt as joserfc_jwt

from zerotrust.tokens import PrivateJWK, TokenIssuer, TokenVerifier

ISSUER = "https://issuer.example"
AUDIENCE = "spiffe://example.org/svc/orders"
ALGORITHMS = ("ES256", "EdDSA", "RS256", "PS256")
UNCACHED_TARGET = {"ES256": 1.20, "EdDSA": 1.20, "RS256": 1.50, "PS256": 1.50}
CACHED_TARGET = 0.02
KEY_TYPES = {"ES256": "EC", "EdDSA": "OKP", "RS256": "RSA", "PS256": "RSA"}


@dataclass
class Case:
    algorithm: str
    candidates: dict[str, Callable[[], object]]


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _raw_verifier(key: PrivateJWK, token: str) -> Callable[[], object]:
    signing_input, signature_b64 = token.rsplit(".", 1)
    data = signing_input.encode("ascii")
    public = key.private_key.public_key()
    algorithm = key.algorithm
    if algorithm == "ES256":
        scheme = ec.ECDSA(hashes.SHA256())

        def raw_ecdsa() -> object:
            sig = _b64decode(signature_b64)
            der = encode_dss_signature(
                int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
            )
            return public.verify(der, data, scheme)  # type: ignore[call-arg, union-attr]

        return raw_ecdsa
    if algorithm == "EdDSA":

        def raw_eddsa() -> object:
            return public.verify(_b64decode(signature_b64), data)  # type: ignore[call-arg, union-attr]

        return raw_eddsa
    digest = hashes.SHA256()
    pad = (
        padding.PKCS1v15()
        if algorithm == "RS256"
        else padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    )

    def raw_rsa() -> object:
        return public.verify(_b64decode(signature_b64), data, pad, digest)  # type: ignore[call-arg, union-attr]

    return raw_rsa


def build_case(algorithm: str) -> Case:
    key = PrivateJWK.generate(algorithm, kid=f"bench-{algorithm}")
    issuer = TokenIssuer(key, issuer=ISSUER)
    token = issuer.issue(
        subject="spiffe://example.org/svc/billing",
        audience=AUDIENCE,
        scopes=["orders:read", "orders:write"],
        ttl=3600,
    )
    jwks = issuer.jwks()
    uncached = TokenVerifier(
        issuer=ISSUER, audience=AUDIENCE, keys=jwks, algorithms=[algorithm], cache_size=0
    )
    cached = TokenVerifier(issuer=ISSUER, audience=AUDIENCE, keys=jwks, algorithms=[algorithm])
    cached.verify(token)
    public_pem_key = key.private_key.public_key()
    joserfc_key = joserfc_jwk.import_key(key.public().to_public_dict(), KEY_TYPES[algorithm])  # type: ignore[arg-type]
    registry = joserfc_jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": ISSUER}, aud={"essential": True, "value": AUDIENCE}
    )

    def run_pyjwt() -> object:
        return pyjwt.decode(
            token, public_pem_key, algorithms=[algorithm], audience=AUDIENCE, issuer=ISSUER
        )

    def run_joserfc() -> object:
        decoded = joserfc_jwt.decode(token, joserfc_key, algorithms=[algorithm])
        registry.validate(decoded.claims)
        return decoded

    # sanity: every candidate accepts the token
    candidates: dict[str, Callable[[], object]] = {
        "raw": _raw_verifier(key, token),
        "zerotrust": lambda: uncached.verify(token),
        "cached": lambda: cached.verify(token),
        "pyjwt": run_pyjwt,
        "joserfc": run_joserfc,
    }
    for run in candidates.values():
        run()
    return Case(algorithm, candidates)


def measure(case: Case, rounds: int, target_seconds: float) -> dict[str, float]:
    numbers: dict[str, int] = {}
    for name, run in case.candidates.items():
        timer = timeit.Timer(run)
        number, _ = timer.autorange()
        elapsed = timer.timeit(number)
        numbers[name] = max(1, int(number * target_seconds / max(elapsed, 1e-9)))
    best = {name: float("inf") for name in case.candidates}
    for _ in range(rounds):  # interleaved, so drifts in machine load hit every candidate
        for name, run in case.candidates.items():
            seconds = timeit.Timer(run).timeit(numbers[name]) / numbers[name]
            best[name] = min(best[name], seconds)
    return {name: seconds * 1e6 for name, seconds in best.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--target-ms", type=float, default=40.0, help="length of one round")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")  # joserfc warns that "EdDSA" is deprecated (RFC 9864)
    print(f"python {sys.version.split()[0]}, {args.rounds} rounds of ~{args.target_ms:g} ms\n")
    rows: list[tuple[str, str, float, float, str, bool | None]] = []
    started = time.perf_counter()
    for algorithm in ALGORITHMS:
        results = measure(build_case(algorithm), args.rounds, args.target_ms / 1000)
        raw = results["raw"]
        print(f"{algorithm}")
        for name, micros in results.items():
            print(f"  {name:<10} {micros:9.2f} us  {micros / raw:7.3f}x raw")
        print()
        for name, micros in results.items():
            ratio = micros / raw
            if name == "zerotrust":
                target, ok = (
                    f"<= {UNCACHED_TARGET[algorithm]:.2f}x",
                    ratio <= UNCACHED_TARGET[algorithm],
                )
            elif name == "cached":
                target, ok = f"<= {CACHED_TARGET:.2f}x", ratio <= CACHED_TARGET
            else:
                target, ok = "", None
            rows.append((algorithm, name, micros, ratio, target, ok))
    print("| alg   | candidate | us       | x raw  | target   | ok  |")
    print("|-------|-----------|----------|--------|----------|-----|")
    for algorithm, name, micros, ratio, target, ok in rows:
        mark = "" if ok is None else ("yes" if ok else "NO")
        cells = f"{algorithm:<5} | {name:<9} | {micros:8.2f} | {ratio:6.3f} | {target:<8}"
        print(f"| {cells} | {mark:<3} |")
    print(f"\n({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
