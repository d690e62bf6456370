"""RFC 8705 section 3.1: certificate-bound access tokens, ``cnf`` with ``x5t#S256``, the
base64url-encoded SHA-256 of the client certificate's DER encoding.

The section's example claims set is signed here by an independent JWT library (``aud`` added:
the verifier requires one); its thumbprint names no certificate the tests hold, so it binds to
none of them. A test CA's certificate gives a thumbprint computed independently, from the
certificate the peer presented directly and from the same certificate forwarded in RFC 9440's
``Client-Cert`` field.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from typing import Any

import jwt as pyjwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from zerotrust import BundleSet, FixedClock, verify_x509_svid
from zerotrust.authn.binding import check_certificate_binding, check_confirmation_methods
from zerotrust.authn.proxy import TrustedProxies, extract_forwarded_cert
from zerotrust.dev import DevCA
from zerotrust.errors import TokenBindingMismatch
from zerotrust.tokens import JWK, TokenVerifier, certificate_thumbprint
from zerotrust.tokens.verified import VerifiedToken
from zerotrust.x509.verify import VerifiedPeer

# RFC 8705 section 3.1: the example JWT claims set of a certificate-bound access token
ISSUER = "https://server.example.com"
NBF = 1493722800
EXAMPLE_CLAIMS: dict[str, Any] = {
    "iss": ISSUER,
    "sub": "ty.webb@example.com",
    "exp": 1493726400,
    "nbf": NBF,
    "cnf": {"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"},
}
AUDIENCE = "https://resource.example.org"
WEB = "spiffe://example.org/web"
PROXY = "10.1.2.3"

SIGNER = ec.generate_private_key(ec.SECP256R1())


def verified(claims: dict[str, Any]) -> VerifiedToken:
    """The claims signed by an independent library, verified by zerotrust within their
    validity window."""
    token = pyjwt.encode({**claims, "aud": AUDIENCE}, SIGNER, algorithm="ES256")
    key = JWK.from_dict(pyjwt.algorithms.ECAlgorithm.to_jwk(SIGNER.public_key(), as_dict=True))
    clock = FixedClock(dt.datetime.fromtimestamp(NBF + 60, dt.timezone.utc))
    verifier = TokenVerifier(
        issuer=ISSUER, audience=AUDIENCE, keys=key, algorithms=["ES256"], clock=clock
    )
    return verifier.verify(token)


def independent_thumbprint(cert: x509.Certificate) -> str:
    digest = cert.fingerprint(hashes.SHA256())
    assert digest == hashlib.sha256(cert.public_bytes(Encoding.DER)).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


@pytest.fixture(scope="module")
def ca() -> DevCA:
    return DevCA.create("example.org", intermediate=True)


@pytest.fixture(scope="module")
def chain(ca: DevCA) -> tuple[x509.Certificate, ...]:
    return ca.issue_svid(WEB).cert_chain


@pytest.fixture(scope="module")
def peer(ca: DevCA, chain: tuple[x509.Certificate, ...]) -> VerifiedPeer:
    return verify_x509_svid(chain, BundleSet([ca.bundle]), role="client")


def test_3_1_example_claims(peer: VerifiedPeer) -> None:
    token = verified(EXAMPLE_CLAIMS)
    assert token.cnf == EXAMPLE_CLAIMS["cnf"]
    assert token.subject == "ty.webb@example.com"
    check_confirmation_methods(token)  # x5t#S256 is a method enforced here
    # bound to a certificate nobody here holds: refused from any other, and without one
    with pytest.raises(TokenBindingMismatch, match="another certificate") as info:
        check_certificate_binding(token, peer)
    assert info.value.code == "token_binding_mismatch"
    with pytest.raises(TokenBindingMismatch, match="without a client certificate"):
        check_certificate_binding(token, None)


def test_3_1_thumbprint_of_a_certificate(
    chain: tuple[x509.Certificate, ...], peer: VerifiedPeer
) -> None:
    leaf = chain[0]
    expected = independent_thumbprint(leaf)
    assert certificate_thumbprint(leaf) == expected
    assert certificate_thumbprint(leaf.public_bytes(Encoding.DER)) == expected
    token = verified({**EXAMPLE_CLAIMS, "sub": WEB, "cnf": {"x5t#S256": expected}})
    assert check_certificate_binding(token, peer) is True
    # the SHA-1 thumbprint of the same certificate (RFC 7515's x5t) binds to nothing here
    sha1 = base64.urlsafe_b64encode(leaf.fingerprint(hashes.SHA1())).decode().rstrip("=")
    token = verified({**EXAMPLE_CLAIMS, "sub": WEB, "cnf": {"x5t#S256": sha1}})
    with pytest.raises(TokenBindingMismatch, match="another certificate"):
        check_certificate_binding(token, peer)


def test_3_1_thumbprint_of_a_certificate_forwarded_in_client_cert(
    ca: DevCA, chain: tuple[x509.Certificate, ...]
) -> None:
    # RFC 9440: the proxy forwards the DER the client presented; x5t#S256 is computed over it
    leaf, intermediate = (c.public_bytes(Encoding.DER) for c in chain)
    sent = {
        "client-cert": [":" + base64.b64encode(leaf).decode() + ":"],
        "client-cert-chain": [":" + base64.b64encode(intermediate).decode() + ":"],
    }
    config = TrustedProxies([PROXY], header="client-cert")
    result = extract_forwarded_cert(lambda name: sent.get(name, []), PROXY, None, config)
    assert result.chain is not None
    forwarded = verify_x509_svid(result.chain, BundleSet([ca.bundle]), role="client")
    thumbprint = base64.urlsafe_b64encode(hashlib.sha256(leaf).digest()).decode().rstrip("=")
    token = verified({**EXAMPLE_CLAIMS, "sub": WEB, "cnf": {"x5t#S256": thumbprint}})
    assert check_certificate_binding(token, forwarded) is True
