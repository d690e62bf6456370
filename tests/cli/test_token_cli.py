"""``zerotrust token mint|verify|inspect`` and ``zerotrust jwks``."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from zerotrust.cli import main
from zerotrust.dev import DevCA
from zerotrust.tokens import PrivateJWK

PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "k", "oth"}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def pem_private(key: PrivateJWK) -> bytes:
    return key.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def pem_public(key: PrivateJWK) -> bytes:
    return key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    key = PrivateJWK.generate("ES256")
    private, public = tmp_path / "signer.pem", tmp_path / "signer.pub"
    private.write_bytes(pem_private(key))
    public.write_bytes(pem_public(key))
    return private, public


MINT = ["--issuer", "https://issuer.example", "--subject", "svc-a", "--audience", "api"]
VERIFY = ["--issuer", "https://issuer.example", "--audience", "api", "--algorithm", "ES256"]


def mint(capsys: pytest.CaptureFixture[str], key: Path, *extra: str) -> str:
    code, out, err = run(capsys, "token", "mint", "--key", str(key), *MINT, *extra)
    assert code == 0, err
    return out.strip()


def test_mint_verify_round_trip(
    capsys: pytest.CaptureFixture[str], keys: tuple[Path, Path]
) -> None:
    private, public = keys
    token = mint(capsys, private, "--scope", "read", "--scope", "write", "--ttl", "2m")
    assert token.count(".") == 2
    code, out, err = run(capsys, "token", "verify", token, "--key", str(public), *VERIFY)
    assert code == 0, err
    claims = json.loads(out)
    assert claims["sub"] == "svc-a" and claims["aud"] == "api"
    assert claims["scope"] == "read write"
    assert claims["exp"] - claims["iat"] == 120


def test_verify_with_a_jwks_from_the_jwks_command_and_stdin(
    capsys: pytest.CaptureFixture[str],
    keys: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    private, _ = keys
    token = mint(capsys, private, "--kid", "key-1")
    code, out, _ = run(capsys, "jwks", str(private))
    assert code == 0
    document = json.loads(out)
    (tmp_path / "jwks.json").write_text(out)
    thumbprint_kid = document["keys"][0]["kid"]
    assert thumbprint_kid != "key-1"
    # The JWKS names the key by thumbprint: a token minted with its default kid verifies.
    token = mint(capsys, private)
    monkeypatch.setattr("sys.stdin", io.StringIO(token + "\n"))
    code, out, err = run(
        capsys, "token", "verify", "-", "--jwks", str(tmp_path / "jwks.json"), *VERIFY
    )
    assert code == 0, err
    assert json.loads(out)["sub"] == "svc-a"


def test_verify_a_jwt_svid_without_iss_by_its_trust_domain(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A JWT-SVID need not carry ``iss`` (SPIRE issues them without one unless configured):
    ``--type jwt-svid --trust-domain`` verifies it without ``--issuer``, as the library does;
    any other token still needs ``--issuer``."""
    import time

    key = PrivateJWK.generate("ES256", kid="k1")
    now = int(time.time())
    header = {"alg": "ES256", "kid": "k1", "typ": "JWT"}
    claims = {"sub": "spiffe://shop.example/api", "aud": "payments", "exp": now + 300,
              "iat": now}  # fmt: skip
    signing_input = ".".join(
        base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()
        for part in (header, claims)
    )
    signature = base64.urlsafe_b64encode(key.sign(signing_input.encode())).rstrip(b"=")
    token = f"{signing_input}.{signature.decode()}"
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [key.public().to_public_dict()]}))
    common = ["token", "verify", token, "--jwks", str(tmp_path / "jwks.json")]
    common += ["--audience", "payments", "--algorithm", "ES256"]
    code, out, err = run(capsys, *common, "--type", "jwt-svid", "--trust-domain", "shop.example")
    assert code == 0, err
    assert json.loads(out)["sub"] == "spiffe://shop.example/api"
    code, _, err = run(capsys, *common, "--type", "jwt-svid", "--trust-domain", "other.example")
    assert code == 2 and err.startswith("zerotrust: error: [")
    code, _, err = run(capsys, *common)
    assert code == 2 and "issuer is required" in err


def test_mint_with_a_private_jwk_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    key = PrivateJWK.generate("EdDSA")
    numbers = key.private_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    public = key.public().to_public_dict()
    d = base64.urlsafe_b64encode(numbers).rstrip(b"=").decode()
    (tmp_path / "key.jwk").write_text(json.dumps({**public, "d": d, "kid": "ed-1"}))
    (tmp_path / "key.pub").write_bytes(pem_public(key))
    token = mint(capsys, tmp_path / "key.jwk")
    code, out, err = run(
        capsys,
        "token", "verify", token, "--key", str(tmp_path / "key.pub"),
        "--issuer", "https://issuer.example", "--audience", "api", "--algorithm", "EdDSA",
    )  # fmt: skip
    assert code == 0, err
    code, out, err = run(capsys, "token", "inspect", token)
    assert json.loads(out)["header"]["kid"] == "ed-1"


def test_mint_refuses_an_algorithm_other_than_the_one_its_key_names(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    key = PrivateJWK.generate("ES256")
    private = key.private_key.private_numbers().private_value.to_bytes(32, "big")
    d = base64.urlsafe_b64encode(private).rstrip(b"=").decode()
    path = tmp_path / "key.jwk"
    path.write_text(json.dumps({**key.public().to_public_dict(), "alg": "ES256", "d": d}))
    assert mint(capsys, path, "--algorithm", "ES256").count(".") == 2
    code, out, err = run(capsys, "token", "mint", "--key", str(path), *MINT, "--algorithm", "ES384")
    assert code == 2 and out == ""
    assert err.startswith("zerotrust: error: [configuration_error] --algorithm differs")


@pytest.mark.parametrize("command", ["token mint --key", "jwks"])
def test_a_key_file_that_is_not_json_is_refused_by_name(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: str
) -> None:
    broken = tmp_path / "broken.jwk"
    broken.write_text('{"kty": "EC",')
    extra = MINT if command.startswith("token") else []
    code, out, err = run(capsys, *command.split(), str(broken), *extra)
    assert code == 2 and out == ""
    assert err.startswith(
        "zerotrust: error: [configuration_error] broken.jwk is not acceptable JSON"
    )
    assert err.count("\n") == 1


def test_mint_writes_the_type_asked_for(
    capsys: pytest.CaptureFixture[str], keys: tuple[Path, Path]
) -> None:
    """``--type at+jwt`` is an RFC 9068 access token (``typ: at+jwt``, with ``client_id``),
    which a verifier expecting that type accepts; the default is a plain JWT."""
    private, public = keys
    token = mint(capsys, private, "--type", "at+jwt", "--client-id", "shop")
    code, out, _ = run(capsys, "token", "inspect", token)
    decoded = json.loads(out)
    assert code == 0 and decoded["header"]["typ"] == "at+jwt"
    assert decoded["payload"]["client_id"] == "shop"
    code, _, err = run(capsys, "token", "verify", token, "--key", str(public), *VERIFY,
                       "--type", "at+jwt")  # fmt: skip
    assert code == 0, err
    plain = mint(capsys, private)
    code, out, _ = run(capsys, "token", "inspect", plain)
    assert json.loads(out)["header"]["typ"] == "JWT"


def test_mint_refuses_a_key_file_past_the_size_bound(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    huge = tmp_path / "huge.pem"
    with huge.open("wb") as file:
        file.truncate((1 << 20) + 1)  # sparse: one byte past the bound, on no disk
    code, out, err = run(capsys, "token", "mint", "--key", str(huge), *MINT)
    assert code == 2 and out == ""
    assert err == (
        f"zerotrust: error: [configuration_error] huge.pem is larger than {1 << 20} bytes\n"
    )
    with huge.open("r+b") as file:
        file.truncate(1 << 20)  # exactly the bound: read (and refused as no key)
    code, _, err = run(capsys, "token", "mint", "--key", str(huge), *MINT)
    assert code == 2 and "larger than" not in err


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (["--audience", "other"], "invalid_audience"),
        (["--issuer", "https://evil.example"], "invalid_issuer"),
        (["--type", "at+jwt"], "invalid_token_type"),
    ],
)
def test_verify_failure_is_one_line_without_the_token(
    capsys: pytest.CaptureFixture[str], keys: tuple[Path, Path], change: list[str], code: str
) -> None:
    private, public = keys
    token = mint(capsys, private)
    args = dict(zip(VERIFY[::2], VERIFY[1::2], strict=True))
    args.update(dict(zip(change[::2], change[1::2], strict=True)))
    flat = [item for pair in args.items() for item in pair]
    status, out, err = run(capsys, "token", "verify", token, "--key", str(public), *flat)
    assert status == 2
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"zerotrust: error: [{code}] ")
    for part in token.split("."):
        assert part not in err


def test_tampered_and_garbage_tokens(
    capsys: pytest.CaptureFixture[str], keys: tuple[Path, Path]
) -> None:
    private, public = keys
    token = mint(capsys, private)
    head, body, sig = token.split(".")
    tampered = f"{head}.{body}.{sig[:-4]}AAAA"
    status, _, err = run(capsys, "token", "verify", tampered, "--key", str(public), *VERIFY)
    assert status == 2
    assert err.startswith("zerotrust: error: [invalid_signature]")
    assert sig[:-4] not in err
    status, _, err = run(capsys, "token", "verify", "garbage", "--key", str(public), *VERIFY)
    assert status == 2 and err.startswith("zerotrust: error: [malformed_token]")


@pytest.mark.parametrize("kid", [7, "", "k" * 1025, ["k"]], ids=["number", "empty", "long", "list"])
def test_a_malformed_kid_is_the_tokens_fault_with_a_trusted_pem_key(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, kid: object
) -> None:
    """The one trusted key answers to the kid the token names, when it is a kid at all; any
    other kid is reported as the malformed token it makes, never as a key to configure."""
    key = PrivateJWK.generate("ES256")
    public = tmp_path / "signer.pub"
    public.write_bytes(pem_public(key))

    def seg(value: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    signing_input = seg({"alg": "ES256", "kid": kid}) + "." + seg({"sub": "svc-a"})
    signature = base64.urlsafe_b64encode(key.sign(signing_input.encode())).rstrip(b"=")
    token = f"{signing_input}.{signature.decode()}"
    status, out, err = run(capsys, "token", "verify", token, "--key", str(public), *VERIFY)
    assert (status, out) == (2, "")
    assert err.startswith("zerotrust: error: [malformed_token] "), err


def test_argument_errors_redact_tokens(
    capsys: pytest.CaptureFixture[str], keys: tuple[Path, Path]
) -> None:
    private, public = keys
    token = mint(capsys, private)
    status, _, err = run(
        capsys, "token", "verify", token, "extra-" + token, "--key", str(public), *VERIFY
    )
    assert status == 2
    assert "<redacted>" in err
    assert token.split(".")[1] not in err


@pytest.mark.parametrize("where", ["--jwks", "--algorithm"])
def test_a_token_in_the_wrong_place_is_not_printed_back(
    capsys: pytest.CaptureFixture[str], keys: tuple[Path, Path], where: str
) -> None:
    """A token passed as a file name or an option value ends in an error message: redacted."""
    private, public = keys
    token = mint(capsys, private)
    if where == "--jwks":
        argv = ["token", "verify", "x", "--jwks", token, "--issuer", "https://i", "--audience", "a",
                "--algorithm", "ES256"]  # fmt: skip
    else:
        argv = ["token", "verify", token, "--key", str(public), "--issuer", "https://i",
                "--audience", "a", "--algorithm", token]  # fmt: skip
    status, _, err = run(capsys, *argv)
    assert status == 2 and err.startswith("zerotrust: error: [")
    assert "<redacted>" in err
    assert token.split(".")[0][:20] not in err and token.split(".")[1][:20] not in err


def test_inspect_warns_not_verified(
    capsys: pytest.CaptureFixture[str], keys: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    private, _ = keys
    token = mint(capsys, private)
    monkeypatch.setattr("sys.stdin", io.StringIO(token))
    code, out, err = run(capsys, "token", "inspect", "-")
    assert code == 0
    assert "NOT VERIFIED" in err
    decoded = json.loads(out)
    assert decoded["header"]["alg"] == "ES256"
    assert decoded["payload"]["sub"] == "svc-a"


@pytest.mark.parametrize(
    ("token", "code"),
    [
        ("a.b", "malformed_token"),
        ("a.b.c.d.e", "unsupported_token"),
        ("e30.!!!.c", "malformed_token"),
        ("x" * 70_000, "malformed_token"),
        ("e30.e30.c2ln.e30", "malformed_token"),  # four segments, each decodable
    ],
)
def test_inspect_rejects_bad_input(
    capsys: pytest.CaptureFixture[str], token: str, code: str
) -> None:
    status, out, err = run(capsys, "token", "inspect", token)
    assert status == 2 and out == ""
    assert err.startswith(f"zerotrust: error: [{code}]")
    assert "NOT VERIFIED" not in err


def test_inspect_bounds_a_well_formed_token_given_as_an_argument(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The size bound holds for a token whose segments all decode, not only for garbage."""
    payload = base64.urlsafe_b64encode(json.dumps({"sub": "x" * 70_000}).encode())
    token = "e30." + payload.decode().rstrip("=") + ".c2ln"
    status, out, err = run(capsys, "token", "inspect", token)
    assert status == 2 and out == ""
    assert err.startswith("zerotrust: error: [malformed_token]") and "larger than" in err


def test_a_token_of_exactly_the_bound_is_read(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fits = "e30.e30." + "A" * (64 * 1024 - 8)  # the signature segment is not decoded
    status, out, _ = run(capsys, "token", "inspect", fits)
    assert status == 0 and json.loads(out) == {"header": {}, "payload": {}}
    status, _, err = run(capsys, "token", "inspect", fits + "A")
    assert status == 2 and "larger than" in err
    monkeypatch.setattr("sys.stdin", io.StringIO(fits))
    status, out, _ = run(capsys, "token", "inspect", "-")
    assert status == 0 and json.loads(out) == {"header": {}, "payload": {}}


def test_stdin_past_the_bound_is_refused_even_if_the_token_within_it_is_whole(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Input is not cut to the bound and then trimmed into a token: it is refused."""
    monkeypatch.setattr("sys.stdin", io.StringIO("e30.e30.c2ln" + "\n" * 100_000))
    status, out, err = run(capsys, "token", "inspect", "-")
    assert status == 2 and out == ""
    assert "input is larger than" in err


@pytest.mark.parametrize("given", ["", "-"])
def test_an_empty_token_is_refused_as_missing(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, given: str
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(" \n"))
    status, out, err = run(capsys, "token", "inspect", given)
    assert status == 2 and out == ""
    assert err.startswith("zerotrust: error: [malformed_token]") and "no token given" in err


def test_inspect_bounds_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("a" * 200_000))
    status, _, err = run(capsys, "token", "inspect", "-")
    assert status == 2 and "larger than" in err


def test_jwks_prints_no_private_members(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, ca: DevCA
) -> None:
    keydir = tmp_path / "keys"
    keydir.mkdir()
    ec, rsa = PrivateJWK.generate("ES256"), PrivateJWK.generate("RS256")
    (keydir / "ec.pem").write_bytes(pem_private(ec))
    (keydir / "rsa.key").write_bytes(pem_private(rsa))
    (keydir / "ec.pub").write_bytes(pem_public(ec))  # the same key again: listed once
    (keydir / "notes.txt").write_text("ignored")
    svid = ca.issue_svid("spiffe://example.org/issuer")
    (tmp_path / "cert.pem").write_bytes(svid.cert_chain_pem())
    code, out, err = run(capsys, "jwks", str(keydir), str(tmp_path / "cert.pem"))
    assert code == 0, err
    document = json.loads(out)
    assert len(document["keys"]) == 3
    for jwk in document["keys"]:
        assert not PRIVATE_MEMBERS & set(jwk), jwk
        assert jwk["kid"]
    assert {jwk["kty"] for jwk in document["keys"]} == {"EC", "RSA"}
    assert "PRIVATE" not in out


def test_jwks_from_a_private_jwk_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    key = PrivateJWK.generate("ES256", kid="k1")
    private = key.private_key
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    value = private.private_numbers().private_value.to_bytes(32, "big")
    d = base64.urlsafe_b64encode(value).rstrip(b"=").decode()
    (tmp_path / "k.json").write_text(
        json.dumps({"keys": [{**key.public().to_public_dict(), "d": d}]})
    )
    code, out, err = run(capsys, "jwks", str(tmp_path / "k.json"))
    assert code == 0, err
    [jwk] = json.loads(out)["keys"]
    assert jwk["kid"] == "k1" and "d" not in jwk


def test_jwks_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "empty.pem").write_text("nothing here")
    code, _, err = run(capsys, "jwks", str(tmp_path / "empty.pem"))
    assert code == 2 and err.startswith("zerotrust: error: [configuration_error]")
    assert "empty.pem holds no PEM block" in err
    code, _, err = run(capsys, "jwks", str(tmp_path / "missing.pem"))
    assert code == 2 and "[io_error]" in err
    for document, message in (
        ({"keys": {"kty": "EC"}}, "k.json: 'keys' must be an array"),
        ({"keys": ["not a key"]}, "k.json: a key is not a JSON object"),
    ):
        (tmp_path / "k.json").write_text(json.dumps(document))
        code, _, err = run(capsys, "jwks", str(tmp_path / "k.json"))
        assert code == 2 and message in err, err


def test_jwks_of_a_directory_reads_key_files_only(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    keydir = tmp_path / "keys"
    (keydir / "nested.pem").mkdir(parents=True)  # a directory, not a key file
    (keydir / ".hidden.pem").write_text("not a key")  # an editor's or a tool's file
    code, _, err = run(capsys, "jwks", str(keydir))
    assert code == 2 and "no keys found" in err, err
    key = PrivateJWK.generate("ES256")
    (keydir / "ec.pem").write_bytes(pem_private(key))
    code, out, err = run(capsys, "jwks", str(keydir))
    assert code == 0, err
    [jwk] = json.loads(out)["keys"]
    assert jwk["kid"] == key.public().thumbprint()


def test_mint_errors(capsys: pytest.CaptureFixture[str], keys: tuple[Path, Path]) -> None:
    private, public = keys
    code, _, err = run(capsys, "token", "mint", "--key", str(private), *MINT, "--type", "at+jwt")
    assert code == 2 and "client_id" in err
    code, out, _ = run(
        capsys,
        "token",
        "mint",
        "--key",
        str(private),
        *MINT,
        "--type",
        "at+jwt",
        "--client-id",
        "c",
    )
    assert code == 0 and out.count(".") == 2
    code, _, err = run(capsys, "token", "mint", "--key", str(public), *MINT)
    assert code == 2 and err.startswith("zerotrust: error: [configuration_error]")
    code, _, err = run(
        capsys, "token", "mint", "--key", str(private), *MINT, "--algorithm", "PS256"
    )
    assert code == 2


def test_mint_errors_name_the_option_and_the_file(
    capsys: pytest.CaptureFixture[str], keys: tuple[Path, Path], tmp_path: Path
) -> None:
    private, _ = keys
    code, _, err = run(capsys, "token", "mint", "--key", str(private), *MINT, "--type", "at+jwt")
    assert code == 2
    assert err.startswith("zerotrust: error: [configuration_error] --type at+jwt needs --client-id")
    assert "extra_claims" not in err
    encrypted = tmp_path / "encrypted.pem"
    encrypted.write_bytes(
        PrivateJWK.generate("ES256").private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    for argv in (["token", "mint", "--key", str(encrypted), *MINT], ["jwks", str(encrypted)]):
        code, _, err = run(capsys, *argv)
        assert code == 2
        assert err == (
            f"zerotrust: error: [configuration_error] {encrypted} is an encrypted private key,"
            " which is not supported\n"
        )


@pytest.fixture
def rsa_keys(tmp_path: Path) -> tuple[Path, Path]:
    key = PrivateJWK.generate("PS256")
    private, public = tmp_path / "rsa.pem", tmp_path / "rsa.pub"
    private.write_bytes(pem_private(key))
    public.write_bytes(pem_public(key))
    return private, public


def test_a_pem_rsa_key_verifies_the_one_algorithm_given_for_it(
    capsys: pytest.CaptureFixture[str], rsa_keys: tuple[Path, Path]
) -> None:
    private, public = rsa_keys
    token = mint(capsys, private, "--algorithm", "PS256")
    trust = ["token", "verify", token, "--key", str(public), *VERIFY[:4]]
    code, out, err = run(capsys, *trust, "--algorithm", "PS256")
    assert code == 0, err
    assert json.loads(out)["sub"] == "svc-a"
    # bound to RS256, the key does not verify a PS256 signature
    code, _, err = run(capsys, *trust, "--algorithm", "RS256")
    assert code == 2 and "[algorithm_not_allowed]" in err
    # an RSA key read without an algorithm is an RS256 key wherever RS256 is allowed
    code, _, err = run(capsys, *trust, "--algorithm", "PS256", "--algorithm", "RS256")
    assert code == 2 and "[algorithm_not_allowed]" in err
    code, _, err = run(capsys, *trust, "--algorithm", "PS256", "--algorithm", "PS384")
    assert code == 2
    assert err == (
        "zerotrust: error: [configuration_error] rsa.pub: its RSA key names no algorithm and"
        " PS256, PS384 all fit it: allow one of them, or publish the key as a JWK with its alg\n"
    )
    code, _, err = run(capsys, *trust, "--algorithm", "ES256")
    assert code == 2
    assert err == (
        "zerotrust: error: [configuration_error] rsa.pub: none of --algorithm ES256 fits its"
        " RSA key\n"
    )


def test_jwks_binds_pem_keys_to_the_algorithm_that_fits_each(
    capsys: pytest.CaptureFixture[str],
    rsa_keys: tuple[Path, Path],
    keys: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    rsa_private, _ = rsa_keys
    ec_private, _ = keys
    token = mint(capsys, rsa_private, "--algorithm", "PS256")
    code, out, err = run(capsys, "jwks", str(rsa_private), str(ec_private))
    assert code == 0, err
    assert sorted(jwk["alg"] for jwk in json.loads(out)["keys"]) == ["ES256", "RS256"]
    argv = ["jwks", str(rsa_private), str(ec_private), "--algorithm", "PS256"]
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert "signer.pem: none of --algorithm PS256 fits its EC key" in err
    code, out, err = run(capsys, *argv, "--algorithm", "ES256")
    assert code == 0, err
    assert sorted(jwk["alg"] for jwk in json.loads(out)["keys"]) == ["ES256", "PS256"]
    jwks = tmp_path / "jwks.json"
    jwks.write_text(out)
    code, out, err = run(
        capsys, "token", "verify", token, "--jwks", str(jwks), *VERIFY[:4], "--algorithm", "PS256"
    )
    assert code == 0, err
    # a JWK that names its algorithm keeps it: --algorithm may not rebind it
    code, _, err = run(capsys, "jwks", str(jwks), "--algorithm", "PS256")
    assert code == 2
    assert "jwks.json: the key's alg is ES256, not one of --algorithm" in err
    code, out, err = run(capsys, "jwks", str(jwks), "--algorithm", "PS256", "--algorithm", "ES256")
    assert code == 0, err
    assert sorted(jwk["alg"] for jwk in json.loads(out)["keys"]) == ["ES256", "PS256"]


def test_an_ed25519_pem_key_answers_to_both_names(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    key = PrivateJWK.generate("EdDSA")
    private, public = tmp_path / "ed.pem", tmp_path / "ed.pub"
    private.write_bytes(pem_private(key))
    public.write_bytes(pem_public(key))
    token = mint(capsys, private)
    both = ["--algorithm", "EdDSA", "--algorithm", "Ed25519"]
    code, out, err = run(capsys, "token", "verify", token, "--key", str(public), *VERIFY[:4], *both)
    assert code == 0, err
    # a token that names the newer algorithm verifies with the same PEM key
    fully_named = mint(capsys, private, "--algorithm", "Ed25519")
    code, out, err = run(
        capsys, "token", "verify", fully_named, "--key", str(public), *VERIFY[:4], *both
    )
    assert code == 0, err
    code, out, err = run(capsys, "jwks", str(public), *both)
    assert code == 0, err
    [jwk] = json.loads(out)["keys"]
    assert "alg" not in jwk and jwk["crv"] == "Ed25519"  # its readers accept both names
    code, out, err = run(capsys, "jwks", str(public), "--algorithm", "Ed25519")
    assert code == 0, err
    assert "alg" not in json.loads(out)["keys"][0]
