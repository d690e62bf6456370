"""``zerotrust key generate``: a development issuer's signing key, usable by the other
commands at once."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.test_cli import run
from zerotrust.tokens import JWK, TokenVerifier
from zerotrust.tokens._b64 import b64url_decode


@pytest.mark.parametrize("algorithm", ["ES256", "ES384", "ES512", "EdDSA", "RS256", "PS256"])
def test_a_generated_key_signs_tokens_its_jwks_verifies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], algorithm: str
) -> None:
    key = tmp_path / "issuer.key"
    code, out, err = run(capsys, "key", "generate", "--out", str(key), "--algorithm", algorithm)
    assert (code, err) == (0, "")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS #8
    assert "PRIVATE KEY-----" not in out
    kid = out.splitlines()[2].split()[-1]
    assert out.splitlines()[:2] == [
        f"generated a signing key: {algorithm}",
        f"  private key: {key} (mode 0600)",
    ]
    shown = ["--algorithm", algorithm] if algorithm == "PS256" else []  # a PEM RSA key is RS256
    code, jwks, _ = run(capsys, "jwks", str(key), *shown)
    assert code == 0
    public = json.loads(jwks)
    assert [k["kid"] for k in public["keys"]] == [kid]
    assert JWK.from_dict(public["keys"][0]).thumbprint() == kid
    mint = ["token", "mint", "--key", str(key), "--issuer", "https://i", "--subject", "s"]
    code, token, _ = run(capsys, *mint, "--audience", "a", *shown)
    assert code == 0
    verifier = TokenVerifier(issuer="https://i", audience="a", keys=public, algorithms=[algorithm])
    verified = verifier.verify(token.strip())
    assert verified.subject == "s" and verified.key_id == kid


@pytest.mark.parametrize("algorithm", ["ES256", "ES384", "ES512", "EdDSA", "RS256", "PS256"])
def test_the_output_says_how_to_sign_with_the_algorithm_asked_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], algorithm: str
) -> None:
    """A PEM file names no algorithm: a PS256 key reads as RS256 unless told, and the command
    says so, in the options that make the next commands publish and sign PS256."""
    key = tmp_path / "issuer.key"
    code, out, _ = run(capsys, "key", "generate", "--out", str(key), "--algorithm", algorithm)
    assert code == 0
    notes = [line for line in out.splitlines() if line.lstrip().startswith("note:")]
    mint = ["token", "mint", "--key", str(key), "--issuer", "https://i", "--subject", "s"]
    code, token, _ = run(capsys, *mint, "--audience", "a")
    signed_as = json.loads(b64url_decode(token.split(".")[0]))["alg"]
    if signed_as == algorithm:
        assert notes == []
        return
    assert len(notes) == 1 and f"--algorithm {algorithm}" in notes[0]
    code, token, _ = run(capsys, *mint, "--audience", "a", "--algorithm", algorithm)
    assert code == 0 and json.loads(b64url_decode(token.split(".")[0]))["alg"] == algorithm


def test_an_existing_file_is_replaced_only_when_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "issuer.key"
    key.write_text("keep me")
    code, out, err = run(capsys, "key", "generate", "--out", str(key))
    assert (code, out) == (2, "") and "exists: pass --force to replace it" in err
    assert key.read_text() == "keep me"
    # a dangling symbolic link is a file that exists too: whatever it names is not created
    link = tmp_path / "link.key"
    link.symlink_to(tmp_path / "elsewhere.key")
    assert run(capsys, "key", "generate", "--out", str(link))[0] == 2
    assert not (tmp_path / "elsewhere.key").exists()
    code, out, _ = run(capsys, "key", "generate", "--out", str(key), "--force")
    assert code == 0 and key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_a_key_cannot_be_written_where_no_file_can_be(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "key", "generate", "--out", str(tmp_path / "none" / "k.key"))
    assert (code, out) == (2, "")
    assert err.startswith("zerotrust: error: [io_error]") and "Traceback" not in err
    code, _, err = run(capsys, "key", "generate", "--out", "k.key", "--algorithm", "HS256")
    assert code == 2 and "[usage_error]" in err


#: Runs the command line with a file size limit of 64 bytes (SIGXFSZ ignored: EFBIG instead).
_LIMITED = """
import resource, runpy, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))
sys.argv[0] = "zerotrust"
runpy.run_module("zerotrust", run_name="__main__")
"""


@pytest.mark.skipif(sys.platform == "win32", reason="needs POSIX file size limits")
@pytest.mark.parametrize("force", [False, True])
def test_a_key_that_cannot_be_written_whole_leaves_no_file(tmp_path: Path, force: bool) -> None:
    """A write cut short by the file system (here by a file size limit, as by a full disk)
    leaves no partial private key behind, and the error shows no key material."""
    key = tmp_path / "issuer.key"
    argv = [sys.executable, "-c", _LIMITED, "key", "generate", "--out", str(key)]
    result = subprocess.run(
        argv + (["--force"] if force else []),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr.startswith("zerotrust: error: [io_error]"), result.stderr
    assert "too large" in result.stderr.lower() and "PRIVATE KEY" not in result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []
