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
