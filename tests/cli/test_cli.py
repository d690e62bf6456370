from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from zerotrust import X509Svid
from zerotrust.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_ca_init_issue_inspect(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ca = str(tmp_path / "ca")
    assert (
        run(capsys, "ca", "init", "--trust-domain", "example.org", "--dir", ca, "--intermediate")[0]
        == 0
    )
    cert, key = str(tmp_path / "web.pem"), str(tmp_path / "web.key")
    issue = ["ca", "issue", "--dir", ca, "--spiffe-id", "spiffe://example.org/web"]
    code, out, _ = run(capsys, *issue, "--cert", cert, "--key", key, "--ttl", "15m")
    assert code == 0
    svid = X509Svid.load(cert, key)
    assert svid.fingerprint in out
    code, out, _ = run(capsys, "cert", "inspect", cert)
    assert code == 0
    assert "spiffe://example.org/web" in out and svid.fingerprint in out
    assert "PRIVATE KEY" not in out
    code, out, _ = run(capsys, "cert", "inspect", cert, "--json")
    info = json.loads(out)
    assert info[0]["spiffe_id"] == "spiffe://example.org/web"
    assert info[0]["status"] == "valid"
    assert info[1]["ca"] is True
    code, out, _ = run(capsys, "ca", "bundle", "--dir", ca, "--format", "jwks")
    assert code == 0 and json.loads(out)["keys"][0]["use"] == "x509-svid"
    code, out, _ = run(capsys, "ca", "bundle", "--dir", ca)
    assert code == 0 and out.startswith("-----BEGIN CERTIFICATE-----")


def test_inspect_never_prints_a_key(tmp_path: Path, capsys: pytest.CaptureFixture[str], ca) -> None:  # type: ignore[no-untyped-def]
    svid = ca.issue_svid("spiffe://example.org/web")
    both = tmp_path / "both.pem"
    both.write_bytes(svid.cert_chain_pem() + svid.private_key_pem())
    code, out, _ = run(capsys, "cert", "inspect", str(both))
    assert code == 0
    assert "BEGIN" not in out and "not shown" in out
    key_only = tmp_path / "key.pem"
    key_only.write_bytes(svid.private_key_pem())
    code, out, err = run(capsys, "cert", "inspect", str(key_only))
    assert code == 2
    assert "BEGIN" not in out + err


@pytest.mark.parametrize(
    "argv",
    [
        ["ca", "init", "--trust-domain", "Bad_Domain", "--dir", "{tmp}/x"],
        [
            "ca",
            "issue",
            "--dir",
            "{tmp}/none",
            "--spiffe-id",
            "spiffe://example.org/a",
            "--cert",
            "c",
            "--key",
            "k",
        ],
        ["cert", "inspect", "{tmp}/missing.pem"],
        ["ca", "init", "--trust-domain", "example.org", "--dir", "{tmp}/y", "--ttl", "forever"],
        ["ca", "init", "--trust-domain", "example.org", "--dir", "{tmp}/y", "--ttl", "9" * 12],
        ["ca", "init", "--trust-domain", "example.org", "--dir", "{tmp}/y", "--ttl", "9" * 9 + "d"],
        ["ca", "init", "--trust-domain", "example.org", "--dir", "{tmp}/y", "--ttl", "99999d"],
        ["no-such-command"],
        # a name the dev CA cannot sign, a CA file nested past any parser's stack, a file
        # too large to be a certificate
        [
            "ca",
            "issue",
            "--dir",
            "{tmp}/ca",
            "--spiffe-id",
            "spiffe://example.org/a",
            "--cert",
            "{tmp}/c",
            "--key",
            "{tmp}/k",
            "--dns",
            "\u00e9.example",
        ],
        ["ca", "bundle", "--dir", "{tmp}/deep"],
        ["cert", "inspect", "{tmp}/huge.pem"],
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    from zerotrust.dev import DevCA

    DevCA.create("example.org").save(tmp_path / "ca")
    DevCA.create("example.org").save(tmp_path / "deep")
    (tmp_path / "deep" / "ca.json").write_text("[" * 100_000 + "]" * 100_000)
    with (tmp_path / "huge.pem").open("wb") as huge:
        huge.truncate(64 << 20)  # sparse: 64 MiB of zeros on no disk
    code, _out, err = run(capsys, *[a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert code == 2
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("zerotrust")


def test_private_keys_are_written_for_their_owner_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``ca init`` and ``ca issue`` write keys 0600 (the CA's directory 0700), also over an
    existing file that others could read."""
    import stat

    ca = tmp_path / "ca"
    init = ["ca", "init", "--trust-domain", "example.org", "--dir", str(ca), "--intermediate"]
    assert run(capsys, *init)[0] == 0
    assert stat.S_IMODE(ca.stat().st_mode) == 0o700
    keys = sorted(path for path in ca.iterdir() if path.name.endswith(".key.pem"))
    assert len(keys) == 2
    assert all(stat.S_IMODE(path.stat().st_mode) == 0o600 for path in keys)
    cert, key = tmp_path / "web.pem", tmp_path / "web.key"
    key.write_text("an older key\n")
    key.chmod(0o644)
    issue = ["ca", "issue", "--dir", str(ca), "--spiffe-id", "spiffe://example.org/web"]
    code, out, _ = run(capsys, *issue, "--cert", str(cert), "--key", str(key))
    assert code == 0 and "(mode 0600)" in out
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(cert.stat().st_mode) == 0o644
    assert b"PRIVATE KEY" in key.read_bytes() and b"PRIVATE KEY" not in cert.read_bytes()


def test_existing_ca_is_not_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["ca", "init", "--trust-domain", "example.org", "--dir", str(tmp_path)]
    assert run(capsys, *args)[0] == 0
    code, _, err = run(capsys, *args)
    assert code == 2 and "--force" in err
    assert run(capsys, *args, "--force")[0] == 0


def test_python_dash_m() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "zerotrust", "cert", "inspect", "/nonexistent/file.pem"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_durations_past_any_date_are_refused_as_bad_input() -> None:
    from zerotrust.cli._ca import parse_duration

    with pytest.raises(argparse.ArgumentTypeError, match="invalid duration"):
        parse_duration("9" * 12 + "d")  # more days than a timedelta holds
    assert parse_duration("90m") == dt.timedelta(minutes=90)


@pytest.mark.parametrize("text", ["0", "0s", "000m", "-5m", "5w", "1.5h", ""])
def test_durations_that_give_no_lifetime_are_refused(text: str) -> None:
    from zerotrust.cli._ca import parse_duration

    with pytest.raises(argparse.ArgumentTypeError, match="invalid duration"):
        parse_duration(text)


def self_signed(organization: str, *extensions: tuple[Any, bool]) -> Any:
    """A self-signed P-256 certificate naming ``organization``, with ``(extension,
    critical)`` pairs."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization)])
    now = dt.datetime.now(dt.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(hours=1))
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(key, hashes.SHA256())


def test_inspect_escapes_what_a_certificate_says(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A subject holding ESC, CR or LF cannot clear the terminal or add a line of its own."""

    from cryptography.hazmat.primitives import serialization

    forged = "\x1b[2J\x1b[H\r\n  spiffe_id:     spiffe://example.org/admin"
    cert = self_signed(forged)
    path = tmp_path / "hostile.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    code, out, _ = run(capsys, "cert", "inspect", str(path))
    assert code == 0
    assert "\x1b" not in out and "\r" not in out
    assert "\\x1b[2J" in out  # shown, escaped
    assert [line for line in out.splitlines() if "spiffe://example.org/admin" in line] == [
        line for line in out.splitlines() if line.startswith(("  subject:", "  issuer:"))
    ]


def test_inspect_shows_a_certificate_whose_extensions_cannot_be_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """cryptography reads extensions when asked for them: one named twice (not DER, RFC 5280
    4.2) raised from inside the command, a traceback and exit status 1."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    unknown = x509.ObjectIdentifier("2.5.29.99")
    cert = self_signed(
        "twice",
        (x509.BasicConstraints(ca=True, path_length=None), True),
        (x509.UnrecognizedExtension(unknown, b"\x05\x00"), False),
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    # the unknown extension's OID becomes basicConstraints': the same extension twice
    twice = der.replace(b"\x06\x03\x55\x1d\x63", b"\x06\x03\x55\x1d\x13")
    path = tmp_path / "twice.pem"
    path.write_bytes(x509.load_der_x509_certificate(twice).public_bytes(serialization.Encoding.PEM))
    code, out, err = run(capsys, "cert", "inspect", str(path))
    assert code == 0 and err == "" and "Traceback" not in out
    assert "extensions cannot be read (DuplicateExtension)" in out


def test_inspect_shows_a_certificate_naming_an_x400_address(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A subjectAltName holding an x400Address (RFC 5280 4.2.1.6), a name form cryptography
    refuses to read with an exception of its own (no ValueError): it raised from inside the
    command, a traceback and exit status 1."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    other = x509.OtherName(x509.ObjectIdentifier("1.2.3.4"), b"\x05\x00")
    uri = x509.UniformResourceIdentifier("spiffe://example.org/web")
    cert = self_signed("x400", (x509.SubjectAlternativeName([uri, other]), False))
    der = cert.public_bytes(serialization.Encoding.DER)
    at = der.index(b"\x06\x03\x2a\x03\x04")  # the otherName's type-id, 1.2.3.4
    assert der[at - 2] == 0xA0  # otherName [0] becomes x400Address [3]
    x400 = der[: at - 2] + b"\xa3" + der[at - 1 :]
    path = tmp_path / "x400.pem"
    path.write_bytes(x509.load_der_x509_certificate(x400).public_bytes(serialization.Encoding.PEM))
    code, out, err = run(capsys, "cert", "inspect", str(path))
    assert code == 0 and err == "" and "Traceback" not in out
    assert "extensions cannot be read (UnsupportedGeneralNameType)" in out
    code, out, err = run(capsys, "cert", "inspect", str(path), "--json")
    assert code == 0 and err == "" and json.loads(out)["ca"] is None


@pytest.mark.parametrize(
    ("cert", "key"),
    [
        ("{tmp}/svid.pem", "{tmp}/svid.pem"),
        ("{tmp}/svid.pem", "{tmp}/sub/../svid.pem"),
        ("{tmp}/svid.pem", "{tmp}/hard-link.pem"),
        ("{ca}/bundle.pem", "{tmp}/svid.key"),
        ("{tmp}/svid.pem", "{ca}/root.key.pem"),
        ("{tmp}/svid.pem", "{ca}/./intermediate.key.pem"),
        ("{tmp}/svid.pem", "{link}/root.key.pem"),
        ("{ca}/orders.pem", "{tmp}/svid.key"),
    ],
    ids=[
        "same-path",
        "same-file-spelt-otherwise",
        "hard-links",
        "cert-over-the-bundle",
        "key-over-the-root-key",
        "key-over-the-intermediate-key",
        "through-a-link-to-the-ca",
        "a-new-file-in-the-ca",
    ],
)
def test_issue_refuses_outputs_that_collide(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], cert: str, key: str
) -> None:
    """Writing the key over the certificate, or either into the CA's directory (its root key,
    its bundle), would lose a file while reporting success."""
    from zerotrust.dev import DevCA

    ca_dir = DevCA.create("example.org", intermediate=True).save(tmp_path / "ca")
    (tmp_path / "sub").mkdir()
    (tmp_path / "svid.pem").write_text("an older certificate\n")
    (tmp_path / "hard-link.pem").hardlink_to(tmp_path / "svid.pem")
    (tmp_path / "link").symlink_to(ca_dir)
    before = {path.name: path.read_bytes() for path in ca_dir.iterdir()}
    names = {"{tmp}": str(tmp_path), "{ca}": str(ca_dir), "{link}": str(tmp_path / "link")}
    for placeholder, value in names.items():
        cert, key = cert.replace(placeholder, value), key.replace(placeholder, value)
    issue = ["ca", "issue", "--dir", str(ca_dir), "--spiffe-id", "spiffe://example.org/orders"]
    code, out, err = run(capsys, *issue, "--cert", cert, "--key", key)
    assert code == 2 and out == ""
    assert err.startswith("zerotrust: error: [configuration_error] ") and err.count("\n") == 1
    assert {path.name: path.read_bytes() for path in ca_dir.iterdir()} == before
    assert (tmp_path / "svid.pem").read_text() == "an older certificate\n"


@pytest.mark.parametrize(
    "argv",
    [
        ["ca", "issue", "--dir", "x"],
        ["no-such-command"],
        ["ca", "init", "--trust-domain", "example.org", "--dir", "x", "--ttl", "forever"],
        ["token", "verify", "e30.e30.e30", "--unknown"],
        [],
    ],
)
def test_usage_errors_are_one_line_in_the_documented_format(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith("zerotrust: error: [usage_error] ") and err.count("\n") == 1
    assert "--help" in err


@pytest.mark.parametrize("name", ["root.key.pem", "bundle.pem", "intermediate.key.pem"])
def test_a_directory_holding_a_file_of_a_ca_is_not_written_over(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    """Without ``ca.json`` (lost, or never written), a key or bundle in the directory is still
    a CA's: ``ca init`` leaves it alone unless told ``--force``."""
    kept = tmp_path / name
    kept.write_bytes(b"an earlier CA's file\n")
    args = ["ca", "init", "--trust-domain", "example.org", "--dir", str(tmp_path)]
    code, _, err = run(capsys, *args)
    assert code == 2 and name in err and "--force" in err
    assert kept.read_bytes() == b"an earlier CA's file\n"
    assert not (tmp_path / "ca.json").exists()
    assert run(capsys, *args, "--force")[0] == 0
