"""Coverage-guided fuzzing of every parser that reads attacker-controlled input (atheris).

``nox -s fuzz`` runs each target for a fixed number of iterations. The contract under test:
whatever the input, only a :class:`~zerotrust.errors.ZeroTrustError` may escape (never another
exception), and memory stays bounded (libFuzzer's ``-rss_limit_mb``).

Run one target by hand: ``python fuzz/fuzz_parsers.py token -runs=100000``.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable

import atheris

with atheris.instrument_imports():
    from zerotrust import SpiffeId, TokenVerifier, TrustBundle
    from zerotrust.authn.proxy import (
        parse_client_cert,
        parse_client_cert_chain,
        parse_nginx_cert,
        parse_xfcc,
    )
    from zerotrust.authz import policy_from_dict
    from zerotrust.errors import ZeroTrustError
    from zerotrust.tokens import JWKSet, PrivateJWK

_KEY = PrivateJWK.generate("ES256", kid="k")
_VERIFIER = TokenVerifier(
    issuer="https://issuer.example", audience="api", keys=_KEY.public(), algorithms=["ES256"]
)


def _text(data: bytes) -> str:
    return atheris.FuzzedDataProvider(data).ConsumeUnicodeNoSurrogates(len(data))


def token(data: bytes) -> None:
    _VERIFIER.verify(data)


def token_text(data: bytes) -> None:
    _VERIFIER.verify(_text(data))


def spiffe_id(data: bytes) -> None:
    SpiffeId.parse(_text(data))


def xfcc(data: bytes) -> None:
    for element in parse_xfcc(_text(data)):
        element.der_chain()


def client_cert(data: bytes) -> None:
    text = _text(data)
    parse_client_cert(text)
    parse_client_cert_chain(text)


def nginx(data: bytes) -> None:
    parse_nginx_cert(_text(data))


def jwks(data: bytes) -> None:
    JWKSet.from_json(data)


def bundle(data: bytes) -> None:
    TrustBundle.from_jwks("example.org", data)


def policy(data: bytes) -> None:
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        return
    if isinstance(document, dict):
        policy_from_dict(document)


TARGETS: dict[str, Callable[[bytes], None]] = {
    f.__name__: f
    for f in (token, token_text, spiffe_id, xfcc, client_cert, nginx, jwks, bundle, policy)
}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: fuzz_parsers.py {{{'|'.join(TARGETS)}}} [libFuzzer options]")
    target = TARGETS[sys.argv.pop(1)]

    def one_input(data: bytes) -> None:
        with contextlib.suppress(ZeroTrustError):  # the only exception type allowed to escape
            target(data)

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
