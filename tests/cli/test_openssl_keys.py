"""Keys made by the ``openssl`` command line, in the files it writes, with ``zerotrust token
mint``, ``zerotrust jwks`` and ``zerotrust token verify``."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from tests.cli.test_token_cli import MINT, run
from zerotrust.tokens import JWK

OPENSSL = shutil.which("openssl")
pytestmark = pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")

#: openssl's ways of writing a new private key, and the algorithm that key signs with
GENERATORS = {
    # SEC 1 ``EC PRIVATE KEY`` after an ``EC PARAMETERS`` block naming the curve
    "ecparam-p256": (["ecparam", "-name", "prime256v1", "-genkey"], "ES256"),
    "ecparam-p384-noout": (["ecparam", "-name", "secp384r1", "-genkey", "-noout"], "ES384"),
    "genrsa-traditional": (["genrsa", "-traditional", "2048"], "RS256"),  # RSA PRIVATE KEY
    "genpkey-rsa": (["genpkey", "-algorithm", "RSA"], "RS256"),  # PKCS#8
    "genpkey-ed25519": (["genpkey", "-algorithm", "ed25519"], "EdDSA"),
}


def openssl(*argv: str, stdin: bytes | None = None) -> bytes:
    assert OPENSSL is not None
    done = subprocess.run(
        [OPENSSL, *argv], input=stdin, capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout


@pytest.mark.parametrize("generator", list(GENERATORS))
def test_keys_openssl_writes_sign_and_publish(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, generator: str
) -> None:
    """``token mint --key`` and ``jwks`` read the same file; the published key is the one
    ``openssl pkey -pubout`` derives, and it verifies the minted token."""
    argv, algorithm = GENERATORS[generator]
    private = tmp_path / "issuer.pem"
    private.write_bytes(openssl(*argv))
    code, token, err = run(capsys, "token", "mint", "--key", str(private), *MINT)
    assert code == 0, err
    code, out, err = run(capsys, "jwks", str(private))
    assert code == 0, err
    [published] = json.loads(out)["keys"]
    public_pem = openssl("pkey", "-in", str(private), "-pubout")
    expected = serialization.load_pem_public_key(public_pem).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "jwks.json").write_text(out)
    code, out, err = run(
        capsys,
        "token",
        "verify",
        token.strip(),
        "--jwks",
        str(tmp_path / "jwks.json"),
        "--issuer",
        "https://issuer.example",
        "--audience",
        "api",
        "--algorithm",
        algorithm,
    )
    assert code == 0, err
    assert json.loads(out)["sub"] == "svc-a"
    assert (
        JWK.from_dict(published).public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        == expected
    )


def test_the_ca_commands_write_what_openssl_verifies(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """``ca init`` and ``ca issue`` write a bundle, a chain and a key that openssl reads as
    they are: the chain verifies strictly for both TLS purposes against the bundle, and the
    key is the leaf's."""
    ca_dir = tmp_path / "ca"
    code, _, err = run(
        capsys,
        "ca",
        "init",
        "--trust-domain",
        "example.org",
        "--dir",
        str(ca_dir),
        "--intermediate",
    )
    assert code == 0, err
    cert, key = tmp_path / "web.pem", tmp_path / "web.key"
    code, _, err = run(
        capsys,
        "ca",
        "issue",
        "--dir",
        str(ca_dir),
        "--spiffe-id",
        "spiffe://example.org/ns/shop/sa/web",
        "--cert",
        str(cert),
        "--key",
        str(key),
        "--dns",
        "web.internal",
    )
    assert code == 0, err
    for purpose in ("sslclient", "sslserver"):
        out = openssl(
            "verify",
            "-x509_strict",
            "-purpose",
            purpose,
            "-CAfile",
            str(ca_dir / "bundle.pem"),
            "-untrusted",
            str(cert),
            str(cert),
        )
        assert out.decode().strip() == f"{cert}: OK"
    leaf_key = openssl("x509", "-in", str(cert), "-noout", "-pubkey")
    assert openssl("pkey", "-in", str(key), "-pubout") == leaf_key
    names = openssl("x509", "-in", str(cert), "-noout", "-ext", "subjectAltName").decode()
    assert "URI:spiffe://example.org/ns/shop/sa/web" in names and "DNS:web.internal" in names
