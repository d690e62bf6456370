"""The ``signature`` baseline of the server benchmarks: a signature check and nothing else.

An uncached request cannot avoid one signature verification. The ``signature`` variant of each
server benchmark is the bare app plus exactly that: the ES256 signature of the request's bearer
token checked with ``cryptography`` (no claims, no policy, no audit, no principal). Its ratio to
the bare app is the ceiling of any uncached check on that server, whatever library does it; the
``uncached`` variant's distance from it is what the rest of zerotrust's pipeline costs there.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature


def _b64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def es256_check(jwks_file: str) -> Callable[[str | None], bool]:
    """A check of ``Authorization`` header values against the P-256 key of ``jwks_file``."""
    with open(jwks_file, encoding="utf-8") as fh:
        members = next(k for k in json.load(fh)["keys"] if k.get("crv") == "P-256")
    key = ec.EllipticCurvePublicNumbers(
        int.from_bytes(_b64(members["x"]), "big"),
        int.from_bytes(_b64(members["y"]), "big"),
        ec.SECP256R1(),
    ).public_key()
    scheme = ec.ECDSA(hashes.SHA256())

    def check(authorization: str | None) -> bool:
        if authorization is None or not authorization.startswith("Bearer "):
            return False
        signing_input, _, signature = authorization[7:].rpartition(".")
        raw = _b64(signature)
        if len(raw) != 64:
            return False
        der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
        try:
            key.verify(der, signing_input.encode("ascii"), scheme)
        except InvalidSignature:
            return False
        return True

    return check
