"""What zerotrust publishes and binds, read by other implementations: the JWKS endpoint fetched
by PyJWT's ``PyJWKClient`` and joserfc's ``KeySet`` over HTTP, key sets in the shapes real
providers publish read by zerotrust, and ``cnf.x5t#S256`` (RFC 8705) computed by openssl."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import threading
import time
import urllib.request
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc import jws as joserfc_jws
from joserfc import jwt as joserfc_jwt
from joserfc.jwk import ECKey, KeySet, OKPKey, RSAKey

from zerotrust.dev import DevCA
from zerotrust.errors import ConfigurationError
from zerotrust.tokens import JWKSet, KeyRing, PrivateJWK, TokenIssuer, TokenVerifier
from zerotrust.tokens.publish import JWKSEndpoint

ISSUER = "https://issuer.example"
AUDIENCE = "orders"
#: PyJWT knows EdDSA, not its RFC 9864 name Ed25519
ALGORITHMS = ["ES256", "ES384", "ES512", "RS256", "PS256", "EdDSA"]


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def published(endpoint: JWKSEndpoint) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, endpoint.wsgi, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/.well-known/jwks.json"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(30)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@pytest.fixture(scope="module")
def ring() -> KeyRing:
    """A ring whose current key signs ES256, with one key of every other algorithm
    published beside it (as after rotations)."""
    keys = {alg: PrivateJWK.generate(alg, kid=f"{alg}-1") for alg in ALGORITHMS}
    return KeyRing(keys["ES256"], previous=[keys[alg] for alg in ALGORITHMS[1:]])


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_pyjwk_client_verifies_with_the_published_key_set(ring: KeyRing, algorithm: str) -> None:
    key = PrivateJWK.generate(algorithm, kid=f"{algorithm}-current")
    issuer = TokenIssuer(KeyRing(key, previous=ring.previous), issuer=ISSUER)
    token = issuer.issue(subject="svc", audience=AUDIENCE)
    with published(JWKSEndpoint(issuer)) as url:
        client = pyjwt.PyJWKClient(url, cache_keys=False)
        signing_key = client.get_signing_key_from_jwt(token)
        claims = pyjwt.decode(
            token, signing_key, algorithms=[algorithm], audience=AUDIENCE, issuer=ISSUER
        )
        assert signing_key.key_id == key.kid
        assert {k.key_id for k in client.get_signing_keys()} == {
            key.kid,
            *(k.kid for k in ring.previous),
        }
    assert claims["sub"] == "svc"


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_joserfc_verifies_with_the_fetched_key_set(ring: KeyRing, algorithm: str) -> None:
    key = PrivateJWK.generate(algorithm, kid=f"{algorithm}-current")
    issuer = TokenIssuer(KeyRing(key, previous=ring.previous), issuer=ISSUER)
    token = issuer.issue(subject="svc", audience=AUDIENCE)
    with published(JWKSEndpoint(issuer)) as url, urllib.request.urlopen(url, timeout=30) as got:
        assert got.headers["Content-Type"] == "application/jwk-set+json"
        document = json.load(got)
    key_set = KeySet.import_key_set(document)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # joserfc's deprecation of plain "EdDSA" (RFC 9864)
        decoded = joserfc_jwt.decode(token, key_set, algorithms=[algorithm])
    assert decoded.claims["sub"] == "svc"
    assert decoded.header["kid"] == key.kid


def _rsa_members(key: rsa.RSAPrivateKey, *, pad: bool = False) -> dict[str, str]:
    numbers = key.public_key().public_numbers()
    n = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
    return {"kty": "RSA", "n": b64(b"\x00" + n if pad else n), "e": "AQAB"}


def test_key_sets_shaped_as_real_providers_publish_them() -> None:
    """Google (RSA with ``use`` and ``alg``), Auth0 (``x5c``/``x5t`` beside the key),
    Keycloak (an encryption key next to the signing ones), a SPIRE bundle (an
    ``x509-svid`` authority, top-level ``spiffe_*`` members), ``key_ops``, extra members, an RSA
    modulus with a leading zero octet and EC keys without ``alg``: the signing keys are read,
    the rest skipped, and tokens PyJWT signs with them verify."""
    ca = DevCA.create("example.org")
    x5c = base64.b64encode(ca.root_certificate.public_bytes(serialization.Encoding.DER)).decode()
    google, auth0 = (rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in "ab")
    keycloak = ec.generate_private_key(ec.SECP256R1())
    point = keycloak.public_key().public_numbers()
    ec_members = {
        "kty": "EC",
        "crv": "P-256",
        "x": b64(point.x.to_bytes(32, "big")),
        "y": b64(point.y.to_bytes(32, "big")),
    }
    document = {
        "keys": [
            {**_rsa_members(google, pad=True), "use": "sig", "alg": "RS256", "kid": "google-1"},
            {
                **_rsa_members(auth0),
                "use": "sig",
                "kid": "auth0-1",
                "x5t": "bm90IGNoZWNrZWQ",
                "x5c": [x5c],
                "alg": "RS256",
            },
            {
                **_rsa_members(google),
                "use": "enc",
                "alg": "RSA-OAEP",
                "kid": "keycloak-enc",
                "x5c": [x5c],
                "x5t#S256": "bm90IGNoZWNrZWQ",
            },
            {**ec_members, "use": "sig", "kid": "keycloak-sig", "key_ops": ["verify"]},
            {**ec_members, "use": "x509-svid", "x5c": [x5c]},
            {**ec_members, "kid": "extra", "ext": True, "issuer": "https://issuer.example"},
        ],
        "spiffe_sequence": 7,
        "spiffe_refresh_hint": 300,
    }
    keys = JWKSet.from_json(json.dumps(document))
    assert sorted(k.kid or "" for k in keys) == sorted(
        ["google-1", "auth0-1", "keycloak-sig", "extra"]
    )
    assert [s.kid for s in keys.skipped] == ["keycloak-enc", None]
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "svc", "iat": now, "exp": now + 300}
    verifier = TokenVerifier(
        issuer=ISSUER, audience=AUDIENCE, keys=keys, algorithms=["RS256", "ES256"]
    )
    for signer, alg, kid in (
        (google, "RS256", "google-1"),
        (auth0, "RS256", "auth0-1"),
        (keycloak, "ES256", "keycloak-sig"),
        (keycloak, "ES256", "extra"),
    ):
        token = pyjwt.encode(claims, signer, algorithm=alg, headers={"kid": kid})
        assert verifier.verify(token).subject == "svc"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_certificate_binding_is_the_thumbprint_openssl_computes() -> None:
    """RFC 8705 3.1: ``x5t#S256`` is base64url(SHA-256(DER certificate)), here as
    ``openssl x509 -outform DER | openssl dgst -sha256 -binary`` computes it."""
    ca = DevCA.create("example.org", intermediate=True)
    svid = ca.issue_svid("spiffe://example.org/ns/shop/sa/web")
    der = subprocess.run(
        ["openssl", "x509", "-outform", "DER"],
        input=svid.leaf.public_bytes(serialization.Encoding.PEM),
        capture_output=True,
        timeout=60,
        check=True,
    ).stdout
    digest = subprocess.run(
        ["openssl", "dgst", "-sha256", "-binary"],
        input=der,
        capture_output=True,
        timeout=60,
        check=True,
    ).stdout
    issuer = TokenIssuer(PrivateJWK.generate("ES256", kid="k1"), issuer=ISSUER)
    token = issuer.issue(subject=str(svid.spiffe_id), audience=AUDIENCE, bind_cert=svid.leaf)
    claims = pyjwt.decode(token, options={"verify_signature": False})
    assert claims["cnf"] == {"x5t#S256": b64(digest)}


#: (profile, typ header) pairs a verifier of that profile accepts (None: no typ header)
TYP_VARIANTS = [
    (None, None),
    (None, "JWT"),
    (None, "jwt"),
    (None, "application/jwt"),
    ("jwt-svid", None),
    ("jwt-svid", "JWT"),
    ("jwt-svid", "JOSE"),
    ("at+jwt", "at+jwt"),
    ("at+jwt", "AT+JWT"),
    ("at+jwt", "application/at+jwt"),
]


@pytest.mark.parametrize("minter", ["pyjwt", "joserfc"])
@pytest.mark.parametrize("algorithm", ["ES256", "RS256", "PS256", "EdDSA"])
@pytest.mark.parametrize(("profile", "typ"), TYP_VARIANTS)
def test_tokens_minted_elsewhere_with_each_typ_spelling_verify(
    minter: str, algorithm: str, profile: str | None, typ: str | None
) -> None:
    key = _minting_key(algorithm)
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "spiffe://example.org/ns/shop/sa/web",
        "iat": now,
        "exp": now + 300,
        "jti": "j-1",
        "client_id": "web",
    }
    if minter == "pyjwt":
        token = pyjwt.encode(
            claims, key.private_key, algorithm=algorithm, headers={"kid": key.kid, "typ": typ}
        )
    else:
        header = {"alg": algorithm, "kid": key.kid, **({"typ": typ} if typ else {})}
        pem = key.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )  # joserfc 1.0 imports PEM, not cryptography's key objects
        imported = _JOSERFC_KEYS[key.public().kty].import_key(pem)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # joserfc's deprecation of plain "EdDSA"
            # the JWS layer: joserfc's jwt.encode would add typ JWT to a header without one
            token = joserfc_jws.serialize_compact(
                header, json.dumps(claims).encode(), imported, algorithms=[algorithm]
            )
    assert ("typ" in pyjwt.get_unverified_header(token)) is (typ is not None)
    options: dict[str, Any] = {
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "keys": {"keys": [key.public().to_public_dict()]},
        "algorithms": [algorithm],
        "token_type": profile,
        "trust_domain": "example.org" if profile == "jwt-svid" else None,
    }
    if profile == "jwt-svid" and algorithm == "EdDSA":  # JWT-SVID: RS*, ES* or PS* only
        with pytest.raises(ConfigurationError, match="JWT-SVIDs are signed with"):
            TokenVerifier(**options)
        return
    assert TokenVerifier(**options).verify(token).subject == claims["sub"]


_MINTING_KEYS: dict[str, PrivateJWK] = {}
_JOSERFC_KEYS = {"EC": ECKey, "RSA": RSAKey, "OKP": OKPKey}


def _minting_key(algorithm: str) -> PrivateJWK:
    if algorithm not in _MINTING_KEYS:
        _MINTING_KEYS[algorithm] = PrivateJWK.generate(algorithm, kid=f"{algorithm}-minted")
    return _MINTING_KEYS[algorithm]
