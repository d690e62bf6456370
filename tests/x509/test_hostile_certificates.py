"""Certificates and keys that ``cryptography`` cannot read, or reads into something weak.

Each must be refused with the zerotrust error of the API it reached (never an exception of
cryptography's own), and a file source must keep its previous snapshot when one is written.
"""

from __future__ import annotations

import base64
import datetime as dt
import math
import secrets
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtensionOID, NameOID

from tests._files import settled
from zerotrust import FileBundleSource, FileSvidSource, TrustBundle, X509Svid, verify_x509_svid
from zerotrust.authn._pem import load_certificates
from zerotrust.dev import DevCA
from zerotrust.errors import (
    BundleError,
    MalformedCertificate,
    MalformedCredentials,
    SvidError,
    SvidProfileViolation,
    UntrustedCertificate,
    ZeroTrustError,
)
from zerotrust.sources._workload_convert import SvidEntry, x509_context

DER, PEM = serialization.Encoding.DER, serialization.Encoding.PEM
WEB = "spiffe://example.org/web"
NOW = dt.datetime.now(dt.timezone.utc)


def pem(der: bytes) -> bytes:
    body = base64.encodebytes(der).replace(b"\n", b"")
    lines = b"\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    return b"-----BEGIN CERTIFICATE-----\n" + lines + b"\n-----END CERTIFICATE-----\n"


def version_5(der: bytes) -> bytes:
    """``der`` claiming X.509 version 6 (``[0] INTEGER 5``): cryptography's InvalidVersion."""
    at = der.index(bytes.fromhex("a003020102"))
    return der[:at] + bytes.fromhex("a003020105") + der[at + 5 :]


def off_curve(cert: x509.Certificate) -> bytes:
    """``cert``'s DER with its EC public point moved off the curve (ValueError on reading)."""
    der = cert.public_bytes(DER)
    point = cert.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    at = der.index(point) + len(point) - 1
    return der[:at] + bytes([der[at] ^ 1]) + der[at + 1 :]


def odd_curve_key(svid: X509Svid) -> bytes:
    """``svid``'s PKCS#8 key naming a curve cryptography does not know (UnsupportedAlgorithm)."""
    der = svid.private_key.private_bytes(
        DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return der.replace(bytes.fromhex("2a8648ce3d030107"), bytes.fromhex("2a8648ce3d030106"))


def key_pem(der: bytes) -> bytes:
    body = base64.encodebytes(der)
    return b"-----BEGIN PRIVATE KEY-----\n" + body + b"-----END PRIVATE KEY-----\n"


def signed_leaf(
    ca: DevCA,
    public_key: object,
    *,
    aki: bool = True,
    key_usage: bool = True,
    basic_constraints: x509.BasicConstraints | None = x509.BasicConstraints(  # noqa: B008
        ca=False, path_length=None
    ),
    san: x509.ExtensionType | None = None,
) -> x509.Certificate:
    root_key = ca._root_key  # the test forges what DevCA itself would never issue
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "forged")]))
        .issuer_name(ca.root_certificate.subject)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(minutes=5))
        .not_valid_after(NOW + dt.timedelta(hours=1))
        .add_extension(
            san or x509.SubjectAlternativeName([x509.UniformResourceIdentifier(WEB)]),
            critical=False,
        )
    )
    if basic_constraints is not None:
        builder = builder.add_extension(basic_constraints, critical=True)
    if key_usage:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        )
    if aki:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    return builder.sign(root_key, hashes.SHA256())  # type: ignore[arg-type]


@pytest.fixture
def svid(ca: DevCA) -> X509Svid:
    return ca.issue_svid(WEB)


def test_peers_presenting_unreadable_certificates(ca: DevCA, svid: X509Svid) -> None:
    for bad in (version_5(svid.leaf.public_bytes(DER)), off_curve(svid.leaf)):
        with pytest.raises(MalformedCertificate):
            verify_x509_svid([bad], ca.bundle)
        with pytest.raises(MalformedCredentials):
            load_certificates([bad], "forwarded certificate")


def test_bundles_and_svids_of_unreadable_certificates(ca: DevCA, svid: X509Svid) -> None:
    root = ca.root_certificate.public_bytes(DER)
    with pytest.raises(BundleError):
        TrustBundle.from_pem("example.org", pem(version_5(root)))
    with pytest.raises(BundleError):
        TrustBundle.from_pem("example.org", pem(off_curve(ca.root_certificate)))
    with pytest.raises(SvidError):
        X509Svid.from_pem(pem(off_curve(svid.leaf)), svid.private_key_pem())
    with pytest.raises(SvidError):
        X509Svid.from_pem(svid.cert_chain_pem(), key_pem(odd_curve_key(svid)))


def entry_of(ca: DevCA, svid: X509Svid) -> SvidEntry:
    """``svid`` as the Workload API sends it, with ``ca``'s root as its bundle."""
    return SvidEntry(
        WEB,
        svid.leaf.public_bytes(DER),
        svid.private_key.private_bytes(
            DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        ca.root_certificate.public_bytes(DER),
    )


def test_workload_api_updates_of_unreadable_material(ca: DevCA, svid: X509Svid) -> None:
    now = dt.datetime.now(dt.timezone.utc)  # the fixture's SVID is new: not NOW, set at import
    good = entry_of(ca, svid)
    assert x509_context([good], {}, previous=None, now=now).svid.fingerprint == svid.fingerprint
    for bad in (
        SvidEntry(WEB, good.cert_chain, odd_curve_key(svid), good.bundle),
        SvidEntry(WEB, version_5(good.cert_chain), good.private_key, good.bundle),
        SvidEntry(WEB, off_curve(svid.leaf), good.private_key, good.bundle),
    ):
        with pytest.raises(ZeroTrustError):
            x509_context([bad], {}, previous=None, now=now)


def test_file_sources_keep_their_snapshot_over_unreadable_files(
    ca: DevCA, svid: X509Svid, tmp_path: Path
) -> None:
    cert, key = tmp_path / "svid.pem", tmp_path / "key.pem"
    svid.save(cert, key)
    svids = FileSvidSource(cert, key, check_interval=0)
    key.write_bytes(key_pem(odd_curve_key(svid)))
    settled(key)
    assert svids.get_x509_svid().fingerprint == svid.fingerprint
    assert svids.last_error is not None

    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(ca.bundle.to_pem())
    bundles = FileBundleSource({"example.org": bundle}, format="pem", check_interval=0)
    bundle.write_bytes(pem(version_5(ca.root_certificate.public_bytes(DER))))
    settled(bundle)
    assert bundles.get_bundle_set().get("example.org") == ca.bundle
    assert bundles.last_error is not None


def test_weak_leaf_keys_are_refused(ca: DevCA) -> None:
    """cryptography's path validation checks the issuer's key; the leaf's own is checked here."""
    weak = signed_leaf(ca, rsa.generate_private_key(65537, 1024).public_key())
    with pytest.raises(SvidProfileViolation) as caught:
        verify_x509_svid([weak], ca.bundle)
    assert caught.value.rule == "weak_key"
    strong = signed_leaf(ca, rsa.generate_private_key(65537, 2048).public_key())
    assert str(verify_x509_svid([strong], ca.bundle).spiffe_id) == WEB


@pytest.mark.parametrize(
    "key",
    [
        ec.generate_private_key(ec.SECP384R1()),
        ec.generate_private_key(ec.SECP521R1()),
        ed25519.Ed25519PrivateKey.generate(),
        ed448.Ed448PrivateKey.generate(),
    ],
    ids=["p384", "p521", "ed25519", "ed448"],
)
def test_leaf_keys_of_every_supported_type_are_accepted(ca: DevCA, key: PrivateKeyTypes) -> None:
    leaf = signed_leaf(ca, key.public_key())
    assert str(verify_x509_svid([leaf], ca.bundle).spiffe_id) == WEB


@pytest.mark.parametrize(
    "key",
    [ec.generate_private_key(ec.SECP256K1()), dsa.generate_private_key(2048)],
    ids=["secp256k1", "dsa"],
)
def test_leaf_keys_of_other_types_are_refused_as_unsupported(
    ca: DevCA, key: PrivateKeyTypes
) -> None:
    leaf = signed_leaf(ca, key.public_key())
    with pytest.raises(SvidProfileViolation) as caught:
        verify_x509_svid([leaf], ca.bundle)
    assert caught.value.rule == "unsupported_key"


def test_an_unreadable_leaf_key_given_as_a_certificate_object_is_refused(ca: DevCA) -> None:
    """Certificate objects skip the DER loader's key check; the profile check reads the key."""
    leaf = signed_leaf(ca, ec.generate_private_key(ec.SECP256R1()).public_key())
    unreadable = x509.load_der_x509_certificate(off_curve(leaf))
    with pytest.raises(SvidProfileViolation) as caught:
        verify_x509_svid([unreadable], ca.bundle)
    assert caught.value.rule == "unsupported_key"


def test_a_leaf_without_key_usage_is_refused(ca: DevCA) -> None:
    """X509-SVID 4.3: a leaf must assert digitalSignature, so it needs a key usage."""
    leaf = signed_leaf(ca, ec.generate_private_key(ec.SECP256R1()).public_key(), key_usage=False)
    with pytest.raises(SvidProfileViolation) as caught:
        verify_x509_svid([leaf], ca.bundle)
    assert caught.value.rule == "missing_key_usage"


def test_a_leaf_whose_extensions_cannot_be_read_is_refused(ca: DevCA) -> None:
    ediparty_san = x509.UnrecognizedExtension(
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME, bytes.fromhex("3007a505a1030c0178")
    )
    leaf = signed_leaf(ca, ec.generate_private_key(ec.SECP256R1()).public_key(), san=ediparty_san)
    with pytest.raises(SvidProfileViolation) as caught:
        verify_x509_svid([leaf], ca.bundle)
    assert caught.value.rule == "malformed_extension"


def test_a_leaf_without_authority_key_identifier_is_an_svid(ca: DevCA) -> None:
    """X509-SVID does not require the AKI of a leaf (go-spiffe accepts such leaves)."""
    bare = signed_leaf(ca, ec.generate_private_key(ec.SECP256R1()).public_key(), aki=False)
    assert str(verify_x509_svid([bare], ca.bundle).spiffe_id) == WEB


def test_basic_constraints_of_a_leaf(ca: DevCA) -> None:
    """X509-SVID 4.1: a leaf's cA flag is false. A leaf claiming to be a CA is refused; one
    without the extension is not a CA (RFC 5280 4.2.1.9), and is an SVID (as go-spiffe
    reads it)."""
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    as_ca = x509.BasicConstraints(ca=True, path_length=None)
    with pytest.raises(SvidProfileViolation) as caught:
        verify_x509_svid([signed_leaf(ca, key, basic_constraints=as_ca)], ca.bundle)
    assert caught.value.rule == "leaf_is_ca"
    without = signed_leaf(ca, key, basic_constraints=None)
    assert str(verify_x509_svid([without], ca.bundle).spiffe_id) == WEB


def test_svid_chains_hold_only_signing_certificates(ca: DevCA, svid: X509Svid) -> None:
    """X509-SVID 3.2 and 4.3: what follows the leaf is a CA with keyCertSign."""
    other_leaf = ca.issue_svid("spiffe://example.org/other").leaf
    with pytest.raises(SvidError, match="not a signing certificate"):
        X509Svid([svid.leaf, other_leaf], svid.private_key)
    assert X509Svid([svid.leaf, ca.root_certificate], svid.private_key).leaf == svid.leaf


def test_a_chain_certificate_whose_extensions_cannot_be_read_is_left_to_path_validation(
    ca: DevCA, svid: X509Svid
) -> None:
    """An SVID is built from such a chain (a peer's path validation refuses it), not
    refused with an exception of Python's own."""
    ediparty_san = x509.UnrecognizedExtension(
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME, bytes.fromhex("3007a505a1030c0178")
    )
    odd = signed_leaf(ca, ec.generate_private_key(ec.SECP256R1()).public_key(), san=ediparty_san)
    assert X509Svid([svid.leaf, odd], svid.private_key).cert_chain == (svid.leaf, odd)


def test_an_unreadable_chain_certificate_does_not_end_the_signing_check(
    ca: DevCA, svid: X509Svid
) -> None:
    """The certificates after one whose extensions cannot be read are still checked."""
    ediparty_san = x509.UnrecognizedExtension(
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME, bytes.fromhex("3007a505a1030c0178")
    )
    odd = signed_leaf(ca, ec.generate_private_key(ec.SECP256R1()).public_key(), san=ediparty_san)
    other_leaf = ca.issue_svid("spiffe://example.org/other").leaf
    with pytest.raises(SvidError, match="certificate 2 of the chain is not a signing"):
        X509Svid([svid.leaf, odd, other_leaf], svid.private_key)


def test_a_certificate_read_lazily_during_path_building_is_malformed(ca: DevCA) -> None:
    # an unknown signature algorithm and a subject that is not UTF-8: cryptography reads the
    # subject only while building the path, and raised ValueError there (a 500 in the Guard)
    from zerotrust import Authenticator, Guard, MemorySink, Policy, Request

    leaf = ca.issue_svid(WEB).cert_chain[0].public_bytes(DER)
    ecdsa_sha256 = bytes.fromhex("06082a8648ce3d040302")
    head, _, tail = leaf.rpartition(ecdsa_sha256)
    unknown = bytes.fromhex("06082a8648cebd040302")
    bad = (head + unknown + tail).replace(b"zerotrust dev SVID", b"zerotrust de\xc5 SVID", 1)
    with pytest.raises(MalformedCertificate):
        verify_x509_svid([bad], ca.bundle)
    guard = Guard(
        authenticator=Authenticator(bundles=ca.bundle), policy=Policy([]), audit=MemorySink()
    )
    outcome = guard.evaluate(Request(peer_chain=[bad]))
    assert outcome.status == 401 and outcome.error is not None
    assert outcome.error.code == "malformed_certificate"


def test_a_refusal_quotes_no_line_a_certificate_s_issuer_wrote(
    ca: DevCA, caplog: pytest.LogCaptureFixture
) -> None:
    # cryptography's refusal text names the certificate by its subject, which the issuing CA
    # (a federated partner's, say) chose: escaped, it cannot forge a log line or move the
    # terminal's cursor
    forged = "x\nINFO zerotrust.tls: accepted spiffe://example.org/admin\x1b[2K"
    assert len(forged) <= 64  # an attribute's longest
    key = ec.generate_private_key(ec.SECP256R1())
    policies = x509.CertificatePolicies(
        [x509.PolicyInformation(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), None)]
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, forged)]))
        .issuer_name(ca.root_certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(minutes=5))
        .not_valid_after(NOW + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(WEB)]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), True
        )
        .add_extension(policies, critical=True)  # refused by path validation, naming the leaf
        .sign(ca._root_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    with pytest.raises(UntrustedCertificate) as refused:
        verify_x509_svid([leaf], ca.bundle)
    message = str(refused.value)
    assert "zerotrust.tls: accepted" in message  # the subject is quoted ...
    assert "\n" not in message and "\x1b" not in message  # ... but only as escaped text
    assert "\\n" in message and "\\x1b" in message


def _rsa_key_with_exponent(exponent: int) -> rsa.RSAPrivateKey:
    """A 2048-bit RSA key whose public exponent is ``exponent`` (or the next odd one below it
    that the key's primes allow): ``generate_private_key`` only makes 3 and 65537."""
    numbers = rsa.generate_private_key(65537, 2048).private_numbers()
    p, q = numbers.p, numbers.q
    lam = (p - 1) * (q - 1) // math.gcd(p - 1, q - 1)
    while math.gcd(exponent, lam) != 1:
        exponent -= 2
    d = pow(exponent, -1, lam)
    public = rsa.RSAPublicNumbers(exponent, p * q)
    private = rsa.RSAPrivateNumbers(
        p, q, d, d % (p - 1), d % (q - 1), rsa.rsa_crt_iqmp(p, q), public
    )
    return private.private_key(unsafe_skip_rsa_key_validation=True)


def _issuing(
    subject: x509.Name,
    public_key: object,
    signer: PrivateKeyTypes,
    *,
    issuer: x509.Name | None = None,
    excluded: int = 0,
) -> x509.Certificate:
    """A CA certificate (self-issued unless ``issuer``), with ``excluded`` excluded DNS
    subtrees of name constraints when not zero."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if issuer is None else issuer)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(minutes=5))
        .not_valid_after(NOW + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), True
        )
    )
    if excluded:
        subtrees = [x509.DNSName(f"excluded{n}.example") for n in range(excluded)]
        builder = builder.add_extension(x509.NameConstraints(None, subtrees), critical=True)
    return builder.sign(signer, hashes.SHA256())  # type: ignore[arg-type]


def test_rsa_keys_of_a_presented_chain_are_bounded_before_path_building(
    ca: DevCA, svid: X509Svid
) -> None:
    """Path building checks up to 100 signatures with keys of the chain itself, which the
    sender chose: certificates that sign one another under one name (a loop no path leaves)
    make it check every one. A key outside the bounds JWKs have is refused before any
    signature is checked with it."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "loop")])
    costly = _rsa_key_with_exponent((1 << 33) + 1)  # OpenSSL takes exponents up to 64 bits
    assert costly.public_key().public_numbers().e > 1 << 32
    cheap = ec.generate_private_key(ec.SECP256R1())
    loop = [
        _issuing(name, costly.public_key(), cheap),
        _issuing(name, cheap.public_key(), costly),
        _issuing(name, costly.public_key(), cheap),
    ]
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(minutes=5))
        .not_valid_after(NOW + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(WEB)]), True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), True
        )
        .sign(costly, hashes.SHA256())
    )
    chain = [cert.public_bytes(DER) for cert in (leaf, *loop)]
    with pytest.raises(SvidProfileViolation) as caught:
        verify_x509_svid(chain, ca.bundle, role="client")
    assert caught.value.rule == "unsupported_key"
    assert "certificate 1 of the chain" in str(caught.value)

    # a modulus over 8192 bits, even on a certificate no path would use
    odd = secrets.randbits(8200) | (1 << 8199) | 1
    huge = rsa.RSAPublicNumbers(65537, odd).public_key()
    extra = _issuing(name, huge, cheap).public_bytes(DER)
    with pytest.raises(SvidProfileViolation) as caught:
        verify_x509_svid([svid.leaf.public_bytes(DER), extra], ca.bundle)
    assert caught.value.rule == "unsupported_key"
    assert "8200 bits" in str(caught.value)
    # within the bounds, the same extra certificate is left to path validation, as before
    fitting = _issuing(name, rsa.generate_private_key(65537, 2048).public_key(), cheap)
    chain = [svid.leaf.public_bytes(DER), fitting.public_bytes(DER)]
    assert str(verify_x509_svid(chain, ca.bundle).spiffe_id) == WEB


def _leaf_under(issuer: x509.Name, signer: PrivateKeyTypes, dns: list[str]) -> x509.Certificate:
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(WEB)]
    sans += [x509.DNSName(name) for name in dns]
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(issuer)
        .public_key(ec.generate_private_key(ec.SECP256R1()).public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(minutes=5))
        .not_valid_after(NOW + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName(sans), True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), True
        )
        .sign(signer, hashes.SHA256())  # type: ignore[arg-type]
    )


def test_names_times_name_constraints_of_a_presented_chain_are_bounded(ca: DevCA) -> None:
    """Path building compares every name of the chain with every subtree of its name
    constraints at each of up to 100 steps, through certificates the sender chose: one self-
    issued CA certificate with 250 subtrees under a leaf of 400 names ran it to cryptography's
    2**20 comparisons. Such a chain is refused before path building."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "loop")])
    key = ec.generate_private_key(ec.SECP256R1())
    loop = _issuing(name, key.public_key(), key, excluded=250)
    leaf = _leaf_under(name, key, [f"n{n}.example.org" for n in range(400)])
    with pytest.raises(SvidProfileViolation) as caught:
        verify_x509_svid([leaf.public_bytes(DER), loop.public_bytes(DER)], ca.bundle)
    assert caught.value.rule == "too_many_constraints"

    # a chain within the bound validates as before, its constraints applied
    root, root_key = ca.root_certificate, ca._root_key
    inter_key = ec.generate_private_key(ec.SECP256R1())
    inter_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "constrained")])
    subtrees, dns_names = 8, 100
    # (1 + 100 SANs + 2 subjects) x 8 subtrees: 824 comparisons a step, within the bound
    inter = _issuing(
        inter_name, inter_key.public_key(), root_key, issuer=root.subject, excluded=subtrees
    )
    fitting = _leaf_under(inter_name, inter_key, [f"n{n}.example.org" for n in range(dns_names)])
    chain = [fitting.public_bytes(DER), inter.public_bytes(DER)]
    assert str(verify_x509_svid(chain, ca.bundle).spiffe_id) == WEB
    excluded = _leaf_under(inter_name, inter_key, ["excluded3.example"])
    with pytest.raises(UntrustedCertificate):
        verify_x509_svid([excluded.public_bytes(DER), inter.public_bytes(DER)], ca.bundle)


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _with_serial(ca: DevCA, cert: x509.Certificate, serial: bytes) -> bytes:
    """``cert`` (issued by ``ca``'s root) with the serial number ``serial`` (the INTEGER's
    content octets), signed again by the root: a certificate ``CertificateBuilder`` refuses to
    make, whose signature verifies."""
    tbs = cert.tbs_certificate_bytes
    header = 2 + (tbs[1] & 0x7F if tbs[1] & 0x80 else 0)  # the TBSCertificate SEQUENCE's
    version, rest = tbs[header : header + 5], tbs[header + 5 :]  # [0] EXPLICIT INTEGER 2
    assert version == bytes.fromhex("a003020102") and rest[0] == 0x02 and rest[1] < 0x80
    rest = rest[2 + rest[1] :]  # the old serial number's INTEGER dropped
    inner = version + b"\x02" + _der_length(len(serial)) + serial + rest
    new_tbs = b"\x30" + _der_length(len(inner)) + inner
    signature = ca._root_key.sign(new_tbs, ec.ECDSA(hashes.SHA256()))  # type: ignore[call-arg]
    algorithm = bytes.fromhex("300a06082a8648ce3d040302")  # ecdsa-with-SHA256
    bits = b"\x03" + _der_length(len(signature) + 1) + b"\x00" + signature
    body = new_tbs + algorithm + bits
    return b"\x30" + _der_length(len(body)) + body


@pytest.mark.parametrize("serial", [b"\x80\x01", b"\xff", b"\x00"], ids=["negative", "-1", "zero"])
def test_a_serial_number_that_is_not_positive_is_malformed_whatever_warnings_do(
    ca: DevCA, serial: bytes
) -> None:
    """RFC 5280 4.1.2.2: serial numbers are positive. cryptography parses other ones with a
    deprecation warning (to be refused in a later release), which an application running with
    warnings as errors got as that warning, from any API that reads a certificate; with
    warnings shown, the certificate was accepted. Refused the same way in both."""
    import warnings

    from cryptography.utils import CryptographyDeprecationWarning

    leaf = signed_leaf(ca, ec.generate_private_key(ec.SECP256R1()).public_key())
    forged = _with_serial(ca, leaf, serial)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        parsed = x509.load_der_x509_certificate(forged)
        assert parsed.serial_number == int.from_bytes(serial, "big", signed=True)
        # the forged certificate is sound apart from its serial: its signature verifies
        parsed.verify_directly_issued_by(ca.root_certificate)
    for action in ("error", "ignore"):
        with warnings.catch_warnings():
            warnings.simplefilter(action, CryptographyDeprecationWarning)
            with pytest.raises(MalformedCertificate):
                verify_x509_svid([forged], ca.bundle, role="client")
            with pytest.raises(MalformedCredentials):
                load_certificates([forged], "forwarded certificate")
            with pytest.raises(BundleError):
                TrustBundle.from_pem("example.org", pem(forged))


@pytest.mark.parametrize("serial", [b"\x80\x01", b"\xff", b"\x00"], ids=["negative", "-1", "zero"])
def test_a_certificate_object_whose_serial_number_is_not_positive_is_malformed(
    ca: DevCA, serial: bytes
) -> None:
    """The chain may be given as certificate objects (parsed by the caller, with warnings
    ignored): their serial number is checked as the DER loader checks it, not left to path
    validation (which accepted a zero serial, and named a negative one untrusted)."""
    import warnings

    from cryptography.utils import CryptographyDeprecationWarning

    leaf = signed_leaf(ca, ec.generate_private_key(ec.SECP256R1()).public_key())
    forged = _with_serial(ca, leaf, serial)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        parsed = x509.load_der_x509_certificate(forged)
    for action in ("error", "ignore"):
        with warnings.catch_warnings():
            warnings.simplefilter(action, CryptographyDeprecationWarning)
            with pytest.raises(MalformedCertificate):
                verify_x509_svid([parsed], ca.bundle, role="client")
            with pytest.raises(MalformedCertificate):
                verify_x509_svid([ca.issue_svid(WEB).leaf, parsed], ca.bundle)


def _with_undecodable_name(cert: x509.Certificate) -> bytes:
    """``cert`` with one byte of its subject's last name attribute made invalid UTF-8 (a
    UTF8String cryptography reads lazily, and OpenSSL and Go refuse); the signature no longer
    verifies."""
    der = cert.public_bytes(DER)
    value = cert.subject.rdns[-1]._attributes[0].value
    assert isinstance(value, str)
    name = b"\x0c" + bytes([len(value)]) + value.encode()  # the UTF8String's DER
    assert der.count(name) >= 1
    return der.replace(name, name[:2] + b"\xff" + name[3:])


def test_a_certificate_whose_name_cannot_be_decoded_is_malformed(ca: DevCA, svid: X509Svid) -> None:
    """Loaded, it would be refused later by whichever step first reads its name; OpenSSL's
    trust store, given every authority of every trust domain at once, was one."""
    root = _with_undecodable_name(ca.root_certificate)
    with pytest.raises(BundleError):
        TrustBundle.from_pem("example.org", pem(root))
    with pytest.raises(BundleError, match="name that cannot be decoded"):
        TrustBundle("example.org", [x509.load_der_x509_certificate(root)])
    leaf = _with_undecodable_name(svid.leaf)
    with pytest.raises(MalformedCertificate):
        verify_x509_svid([leaf], ca.bundle)
    with pytest.raises(MalformedCertificate):  # parsed by the caller
        verify_x509_svid([x509.load_der_x509_certificate(leaf)], ca.bundle)
    with pytest.raises(MalformedCredentials):
        load_certificates([leaf], "forwarded certificate")
    with pytest.raises(SvidError, match="cannot be decoded"):
        X509Svid([x509.load_der_x509_certificate(leaf)], svid.private_key)
    with pytest.raises(SvidError):
        X509Svid.from_pem(pem(leaf), svid.private_key_pem())
    # from the Workload API: a federated bundle of it trusts nothing, the update stands
    now = dt.datetime.now(dt.timezone.utc)
    own = entry_of(ca, svid)
    partner = DevCA.create("partner.org")
    update = x509_context(
        [own],
        {"spiffe://partner.org": _with_undecodable_name(partner.root_certificate)},
        previous=None,
        now=now,
    )
    assert update.svid.fingerprint == svid.fingerprint
    assert [b.x509_authorities for b in update.bundles if b.trust_domain.name == "partner.org"] == [
        ()
    ]


@pytest.mark.parametrize("item", [b"not a certificate", None, "PEM"], ids=["bytes", "None", "str"])
@pytest.mark.parametrize("position", [0, 1])
def test_an_svid_chain_holds_certificate_objects(
    svid: X509Svid, item: object, position: int
) -> None:
    chain: list[object] = [svid.leaf]
    chain.insert(position, item)
    with pytest.raises(SvidError, match=f"certificate {position} .* not a Certificate"):
        X509Svid(chain, svid.private_key)  # type: ignore[arg-type]
