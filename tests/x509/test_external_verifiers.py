"""The dev CA's certificates as other implementations see them: ``openssl verify -x509_strict``
for both TLS purposes, ``openssl x509 -text`` for the X509-SVID profile, and ``cryptography``'s
own path validation (``x509.verification.PolicyBuilder``, client and server verifiers)."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.verification import PolicyBuilder, Store

from zerotrust.dev import DevCA, KeyType
from zerotrust.x509 import X509Svid

OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")

#: (CA key type, leaf key type, with an intermediate)
SHAPES = [
    ("ec-p256", "ec-p256", False),
    ("ec-p256", "ec-p256", True),
    ("ec-p384", "rsa-2048", True),
    ("rsa-2048", "ec-p256", False),
    ("rsa-3072", "rsa-2048", True),
]


def _pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def openssl(*argv: str) -> subprocess.CompletedProcess[str]:
    assert OPENSSL is not None
    return subprocess.run([OPENSSL, *argv], capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture(
    scope="module", params=SHAPES, ids=lambda s: f"{s[0]}-{s[1]}-{'int' if s[2] else 'root'}"
)
def issued(request: pytest.FixtureRequest) -> tuple[DevCA, X509Svid]:
    ca_key, leaf_key, intermediate = request.param
    ca_type: KeyType = ca_key
    leaf_type: KeyType = leaf_key
    ca = DevCA.create("example.org", intermediate=intermediate, key_type=ca_type)
    svid = ca.issue_svid(
        "spiffe://example.org/ns/shop/sa/web", dns_names=["localhost"], key_type=leaf_type
    )
    return ca, svid


@pytest.fixture
def written(issued: tuple[DevCA, X509Svid], tmp_path: Path) -> dict[str, Path]:
    ca, svid = issued
    files = {
        "root": tmp_path / "root.pem",
        "leaf": tmp_path / "leaf.pem",
        "untrusted": tmp_path / "untrusted.pem",
    }
    files["root"].write_bytes(_pem(ca.root_certificate))
    files["leaf"].write_bytes(_pem(svid.leaf))
    files["untrusted"].write_bytes(_pem(*svid.cert_chain[1:]) or _pem(ca.root_certificate))
    return files


@needs_openssl
@pytest.mark.parametrize("purpose", ["sslclient", "sslserver"])
def test_openssl_verifies_svids_strictly_for_both_purposes(
    written: dict[str, Path], purpose: str
) -> None:
    done = openssl(
        "verify",
        "-x509_strict",
        "-purpose",
        purpose,
        "-CAfile",
        str(written["root"]),
        "-untrusted",
        str(written["untrusted"]),
        str(written["leaf"]),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().endswith(": OK")


@needs_openssl
def test_openssl_verifies_against_an_intermediate_as_the_only_anchor(
    issued: tuple[DevCA, X509Svid], tmp_path: Path
) -> None:
    """With ``-partial_chain`` the certificate that signed the leaf may be the only one
    trusted (an intermediate published as a bundle authority; the root when it signs leaves
    itself)."""
    ca, svid = issued
    signer = svid.cert_chain[1] if len(svid.cert_chain) > 1 else ca.root_certificate
    (tmp_path / "anchor.pem").write_bytes(_pem(signer))
    (tmp_path / "leaf.pem").write_bytes(_pem(svid.leaf))
    done = openssl(
        "verify",
        "-x509_strict",
        "-partial_chain",
        "-purpose",
        "sslclient",
        "-CAfile",
        str(tmp_path / "anchor.pem"),
        str(tmp_path / "leaf.pem"),
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _text(path: Path) -> str:
    done = openssl("x509", "-in", str(path), "-noout", "-text")
    assert done.returncode == 0, done.stderr
    return done.stdout


def _extension(text: str, name: str) -> tuple[bool, str]:
    """Whether the extension is critical, and its value lines, as ``openssl x509 -text``
    prints them."""
    found = re.search(rf"^\s+{re.escape(name)}:( critical)? ?\n((?:\s{{16,}}.*\n)+)", text, re.M)
    assert found is not None, f"no {name} in:\n{text}"
    return found.group(1) is not None, " ".join(found.group(2).split())


@needs_openssl
def test_openssl_reads_the_x509_svid_profile(
    issued: tuple[DevCA, X509Svid], tmp_path: Path
) -> None:
    ca, svid = issued
    leaf_path = tmp_path / "leaf.pem"
    leaf_path.write_bytes(_pem(svid.leaf))
    leaf = _text(leaf_path)
    assert _extension(leaf, "X509v3 Basic Constraints") == (True, "CA:FALSE")
    critical, usage = _extension(leaf, "X509v3 Key Usage")
    assert critical and "Digital Signature" in usage
    assert "Certificate Sign" not in usage and "CRL Sign" not in usage
    rsa = "rsaEncryption" in leaf
    assert ("Key Encipherment" in usage) is rsa
    assert _extension(leaf, "X509v3 Extended Key Usage")[1] == (
        "TLS Web Server Authentication, TLS Web Client Authentication"
    )
    names = _extension(leaf, "X509v3 Subject Alternative Name")[1]
    assert names.count("URI:") == 1
    assert "URI:spiffe://example.org/ns/shop/sa/web" in names
    leaf_ski = _extension(leaf, "X509v3 Subject Key Identifier")[1]
    leaf_aki = _extension(leaf, "X509v3 Authority Key Identifier")[1]
    assert leaf_ski and leaf_aki
    serial = svid.leaf.serial_number
    assert serial > 0 and len(serial.to_bytes((serial.bit_length() + 8) // 8, "big")) <= 20

    issuers = [*svid.cert_chain[1:], ca.root_certificate]
    child_aki = leaf_aki
    for index, cert in enumerate(issuers):
        path = tmp_path / f"ca{index}.pem"
        path.write_bytes(_pem(cert))
        text = _text(path)
        root = cert == ca.root_certificate
        critical, constraints = _extension(text, "X509v3 Basic Constraints")
        assert critical and constraints.startswith("CA:TRUE")
        assert ("pathlen:0" in constraints) is (not root)
        assert _extension(text, "X509v3 Key Usage") == (True, "Certificate Sign, CRL Sign")
        ski = _extension(text, "X509v3 Subject Key Identifier")[1]
        assert child_aki.removeprefix("keyid:") == ski  # the child names its issuer's key
        child_aki = _extension(text, "X509v3 Authority Key Identifier")[1]
        issued_cert = svid.leaf if index == 0 else issuers[index - 1]
        assert cert.not_valid_before_utc <= issued_cert.not_valid_before_utc
        assert issued_cert.not_valid_after_utc <= cert.not_valid_after_utc


@pytest.mark.parametrize("role", ["client", "server"])
def test_cryptography_path_validation_accepts_svids(
    issued: tuple[DevCA, X509Svid], role: str
) -> None:
    ca, svid = issued
    builder = PolicyBuilder().store(Store([ca.root_certificate]))
    intermediates = list(svid.cert_chain[1:])
    if role == "client":
        verified = builder.build_client_verifier().verify(svid.leaf, intermediates)
        assert verified.subjects is not None
        uris = [
            name for name in verified.subjects if isinstance(name, x509.UniformResourceIdentifier)
        ]
        assert [uri.value for uri in uris] == ["spiffe://example.org/ns/shop/sa/web"]
    else:
        verifier = builder.build_server_verifier(x509.DNSName("localhost"))
        chain = verifier.verify(svid.leaf, intermediates)
        assert chain[-1] == ca.root_certificate


def test_validity_times_cross_2050_in_the_encoding_rfc_5280_asks_for(tmp_path: Path) -> None:
    """A CA valid past 2049 ends in GeneralizedTime, its start stays UTCTime (RFC 5280
    4.1.2.5), and every verifier still accepts its SVIDs at a time past 2050."""
    ca = DevCA.create("example.org", intermediate=True, ttl=dt.timedelta(days=36500))
    svid = ca.issue_svid(
        "spiffe://example.org/w", ttl=dt.timedelta(days=30000), dns_names=["localhost"]
    )
    later = dt.datetime(2060, 1, 1, tzinfo=dt.timezone.utc)
    PolicyBuilder().store(Store([ca.root_certificate])).time(later).build_client_verifier().verify(
        svid.leaf, list(svid.cert_chain[1:])
    )
    if OPENSSL is None:
        return
    (tmp_path / "root.pem").write_bytes(_pem(ca.root_certificate))
    (tmp_path / "chain.pem").write_bytes(svid.cert_chain_pem())
    parsed = openssl("asn1parse", "-in", str(tmp_path / "chain.pem"))
    assert parsed.returncode == 0, parsed.stderr
    times = re.findall(r"prim: (UTCTIME|GENERALIZEDTIME)\s+:(\d+)Z", parsed.stdout)
    assert times[:2] == [("UTCTIME", times[0][1]), ("GENERALIZEDTIME", times[1][1])]
    done = openssl(
        "verify",
        "-x509_strict",
        "-attime",
        str(int(later.timestamp())),
        "-CAfile",
        str(tmp_path / "root.pem"),
        "-untrusted",
        str(tmp_path / "chain.pem"),
        str(tmp_path / "chain.pem"),
    )
    assert done.returncode == 0, done.stdout + done.stderr
