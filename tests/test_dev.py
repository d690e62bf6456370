from __future__ import annotations

import base64
import datetime as dt
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from zerotrust import FixedClock, verify_peer_chain
from zerotrust.dev import DevCA
from zerotrust.errors import ConfigurationError, InvalidSpiffeId
from zerotrust.identity import SpiffeId, TrustDomain


def test_save_and_load(tmp_path: Path) -> None:
    ca = DevCA.create("example.org", intermediate=True)
    ca.save(tmp_path / "ca")
    assert stat.S_IMODE((tmp_path / "ca").stat().st_mode) == 0o700
    for key_file in ("root.key.pem", "intermediate.key.pem"):
        assert stat.S_IMODE((tmp_path / "ca" / key_file).stat().st_mode) == 0o600
    loaded = DevCA.load(tmp_path / "ca")
    assert loaded.trust_domain == ca.trust_domain
    assert loaded.bundle == ca.bundle
    svid = loaded.issue_svid("spiffe://example.org/web")
    assert len(svid.cert_chain) == 2
    assert verify_peer_chain(svid.cert_chain, ca.bundle) == svid.spiffe_id


def test_save_replaces_planted_links_and_readable_keys_never_writing_through_them(
    tmp_path: Path,
) -> None:
    """Saving over a CA directory: a key path that is a symbolic link is replaced by a new
    private file (the link's target is left as it was), and a key another save left readable
    to others is replaced by one that is not."""
    outside = tmp_path / "outside.pem"
    outside.write_bytes(b"not a key")
    ca_dir = tmp_path / "ca"
    ca_dir.mkdir(mode=0o700)
    (ca_dir / "root.key.pem").symlink_to(outside)
    (ca_dir / "intermediate.key.pem").write_bytes(b"old")
    (ca_dir / "intermediate.key.pem").chmod(0o644)
    ca = DevCA.create("example.org", intermediate=True)
    ca.save(ca_dir)
    assert outside.read_bytes() == b"not a key"
    for key_file in ("root.key.pem", "intermediate.key.pem"):
        path = ca_dir / key_file
        assert not path.is_symlink()
        assert stat.S_IMODE(path.lstat().st_mode) == 0o600
    assert sorted(p.name for p in ca_dir.iterdir()) == sorted(
        [
            "bundle.pem",
            "ca.json",
            "intermediate.crt.pem",
            "intermediate.key.pem",
            "root.crt.pem",
            "root.key.pem",
        ]
    )
    assert DevCA.load(ca_dir).bundle == ca.bundle


@pytest.mark.parametrize("key_type", ["ec-p384", "rsa-2048"])
def test_key_types(key_type: str) -> None:
    ca = DevCA.create("example.org", key_type=key_type)  # type: ignore[arg-type]
    svid = ca.issue_svid("spiffe://example.org/web", key_type=key_type)  # type: ignore[arg-type]
    assert verify_peer_chain(svid.cert_chain, ca.bundle) == svid.spiffe_id


def test_short_ttl_with_injected_clock() -> None:
    clock = FixedClock(dt.datetime(2030, 5, 1, tzinfo=dt.timezone.utc))
    ca = DevCA.create("example.org", clock=clock)
    svid = ca.issue_svid("spiffe://example.org/web", ttl=dt.timedelta(minutes=5))
    assert svid.expires_at == clock.now() + dt.timedelta(minutes=5)
    assert verify_peer_chain(svid.cert_chain, ca.bundle, now=clock.now())


def test_refuses_foreign_or_root_ids(ca: DevCA) -> None:
    with pytest.raises(ConfigurationError):
        ca.issue_svid("spiffe://other.org/web")
    with pytest.raises(InvalidSpiffeId):
        ca.issue_svid("spiffe://example.org")
    with pytest.raises(ConfigurationError):
        ca.issue_svid("spiffe://example.org/web", ttl=0)
    with pytest.raises(ConfigurationError):
        DevCA.create("example.org", key_type="dsa")  # type: ignore[arg-type]


def test_only_leaves_carry_digital_signature() -> None:
    """X509-SVID appendix A: digitalSignature is set if and only if the certificate is a leaf."""
    ca = DevCA.create("example.org", intermediate=True)
    leaf, intermediate, root = (
        *ca.issue_svid("spiffe://example.org/web").cert_chain,
        ca.root_certificate,
    )
    usage = [
        c.extensions.get_extension_for_class(x509.KeyUsage).value
        for c in (leaf, intermediate, root)
    ]
    assert [u.digital_signature for u in usage] == [True, False, False]
    assert [u.key_cert_sign for u in usage] == [False, True, True]


def test_svids_never_outlive_their_ca() -> None:
    """As SPIRE does, a ttl reaching past the issuing certificates is cut to their end."""
    clock = FixedClock(dt.datetime(2030, 5, 1, tzinfo=dt.timezone.utc))
    ca = DevCA.create("example.org", intermediate=True, ttl=dt.timedelta(hours=2), clock=clock)
    svid = ca.issue_svid("spiffe://example.org/web", ttl=dt.timedelta(days=30))
    assert svid.expires_at == ca.root_certificate.not_valid_after_utc
    assert all(svid.expires_at <= cert.not_valid_after_utc for cert in svid.cert_chain[1:])
    clock.advance(3 * 3600)
    with pytest.raises(ConfigurationError, match="expired"):
        ca.issue_svid("spiffe://example.org/web")


def test_svids_never_start_before_their_ca() -> None:
    clock = FixedClock(dt.datetime(2030, 5, 1, tzinfo=dt.timezone.utc))
    ca = DevCA.create("example.org", intermediate=True, clock=clock)
    starts = max(
        cert.not_valid_before_utc for cert in ca.issue_svid("spiffe://example.org/a").cert_chain[1:]
    )
    svid = ca.issue_svid("spiffe://example.org/web")
    assert svid.leaf.not_valid_before_utc >= starts
    clock.advance(-3600)  # the clock was set back
    with pytest.raises(ConfigurationError, match="not valid yet"):
        ca.issue_svid("spiffe://example.org/web")


@pytest.mark.parametrize(
    "ttl",
    [float("nan"), float("inf"), 1e30, 10**400, -5, True, "60", dt.timedelta(days=999_999_999)],
)
def test_ttls_are_bounded(ca: DevCA, ttl: object) -> None:
    with pytest.raises(ConfigurationError, match="ttl"):
        ca.issue_svid("spiffe://example.org/web", ttl=ttl)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="ttl"):
        DevCA.create("example.org", ttl=ttl)  # type: ignore[arg-type]


def test_load_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"missing ca\.json"):
        DevCA.load(tmp_path)
    (tmp_path / "ca.json").write_text('{"trust_domain": "example.org"}')
    with pytest.raises(ConfigurationError, match=r"missing root\.crt\.pem"):
        DevCA.load(tmp_path)
    (tmp_path / "ca.json").write_text("{")
    with pytest.raises(ConfigurationError, match="JSONDecodeError"):
        DevCA.load(tmp_path)


def test_a_ca_directory_with_an_unreadable_certificate_is_a_configuration_error(
    tmp_path: Path,
) -> None:
    """A root certificate whose key cannot be read (a point off its curve) escaped from the
    check of the pair as cryptography's ValueError; a file of two certificates was read as
    its first."""
    from tests.x509.test_hostile_certificates import off_curve, pem

    ca = DevCA.create("example.org", intermediate=True)
    ca.save(tmp_path)
    (tmp_path / "root.crt.pem").write_bytes(pem(off_curve(ca.root_certificate)))
    with pytest.raises(ConfigurationError, match="cannot load CA"):
        DevCA.load(tmp_path)
    ca.save(tmp_path)  # over the directory: every file written again
    both = (tmp_path / "intermediate.crt.pem").read_bytes() + (
        tmp_path / "root.crt.pem"
    ).read_bytes()
    (tmp_path / "intermediate.crt.pem").write_bytes(both)
    with pytest.raises(ConfigurationError, match="cannot load CA"):
        DevCA.load(tmp_path)


@pytest.mark.parametrize(
    ("swap", "message"),
    [
        pytest.param(["root.key.pem"], "root CA's private key", id="root-key-of-another-ca"),
        pytest.param(
            ["intermediate.key.pem"], "intermediate CA's private key", id="intermediate-key"
        ),
        pytest.param(
            ["intermediate.crt.pem", "intermediate.key.pem"],
            "not a CA certificate issued by the root",
            id="intermediate-of-another-root",
        ),
    ],
)
def test_a_ca_directory_of_mismatched_files_is_refused(
    tmp_path: Path, swap: list[str], message: str
) -> None:
    # an interrupted `ca init --force` writes one file after the other
    DevCA.create("example.org", intermediate=True).save(tmp_path / "a")
    DevCA.create("example.org", intermediate=True).save(tmp_path / "b")
    for name in swap:
        (tmp_path / "a" / name).write_bytes((tmp_path / "b" / name).read_bytes())
    with pytest.raises(ConfigurationError, match=message):
        DevCA.load(tmp_path / "a")


def test_a_leaf_is_not_a_root(ca: DevCA) -> None:
    svid = ca.issue_svid("spiffe://example.org/web")
    with pytest.raises(ConfigurationError, match="not a CA certificate"):
        DevCA(ca.trust_domain, svid.leaf, svid.private_key)


@pytest.mark.parametrize(
    "names",
    [
        "localhost",  # one string, not a list: one SAN per character
        [""],
        ["\u00e9.example"],
        ["a\nb.example"],
        ["\x1b[2J.example"],
        ["*"],
        ["*.org"],
        ["-bad.example"],
        ["a" * 64 + ".example"],
        ["a." * 127 + "example"],
        ["-bad.svc.example"],  # only a leading "*" label is set aside
        ["*.-bad.example"],
        ["example.org."],
        [5],
        ["127.0.0.1"],  # an address: clients compare it with IP SANs, never a DNS name
        ["10.0.0.7"],
        ["*.10.0.0"],
    ],
)
def test_svid_dns_names_are_host_names(ca: DevCA, names: object) -> None:
    with pytest.raises(ConfigurationError, match="dns_names"):
        ca.issue_svid("spiffe://example.org/web", dns_names=names)  # type: ignore[arg-type]


def test_svid_dns_names_accept_host_names_wildcards_and_a_labels(ca: DevCA) -> None:
    names = ["localhost", "*.svc.example.org", "xn--caf-dma.example", "10-0-0-7.example"]
    svid = ca.issue_svid("spiffe://example.org/web", dns_names=names)
    san = svid.leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == names


def test_a_ca_directory_others_may_write_to_is_refused(tmp_path: Path) -> None:
    ca = DevCA.create("example.org")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(ConfigurationError, match="writable by other users"):
        ca.save(shared)
    assert list(shared.iterdir()) == []
    private = ca.save(tmp_path / "private")
    private.chmod(0o777)  # someone opened it up since: it is not loaded either
    with pytest.raises(ConfigurationError, match="writable by other users"):
        DevCA.load(private)
    private.chmod(0o700)
    assert DevCA.load(private).trust_domain == ca.trust_domain
    shared.chmod(0o755)  # others may read (the keys are 0600), not write
    ca.save(shared)
    fresh = ca.save(tmp_path / "new" / "ca")
    assert fresh.stat().st_mode & 0o777 == 0o700


def _intermediate_for(ca_dir: Path, trust_domain: str) -> tuple[x509.Certificate, object]:
    """An intermediate signed by the CA's root that names another trust domain."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import NameOID

    from zerotrust.dev import _ca_builder, _hash_for, generate_key
    from zerotrust.identity import TrustDomain

    root = x509.load_pem_x509_certificate((ca_dir / "root.crt.pem").read_bytes())
    root_key = serialization.load_pem_private_key((ca_dir / "root.key.pem").read_bytes(), None)
    key = generate_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "intermediate")])
    cert = _ca_builder(
        name,
        root.subject,
        key.public_key(),
        dt.datetime.now(dt.timezone.utc),
        dt.timedelta(days=1),
        td=TrustDomain.parse(trust_domain),
        path_length=0,
    ).sign(root_key, _hash_for(root_key))  # type: ignore[arg-type]
    return cert, key


def test_a_trust_domain_its_certificates_do_not_name_is_refused(tmp_path: Path) -> None:
    """X509-SVID 3.2: a CA certificate's SPIFFE ID is its trust domain's. A CA directory whose
    ca.json was edited to another trust domain would issue SVIDs for it, and publish its bundle
    under that name."""
    import json

    from cryptography.hazmat.primitives import serialization

    from zerotrust.identity import TrustDomain

    ca_dir = DevCA.create("example.org", intermediate=True).save(tmp_path / "ca")
    meta = json.loads((ca_dir / "ca.json").read_text())
    (ca_dir / "ca.json").write_text(json.dumps({**meta, "trust_domain": "other.org"}))
    edited = r"names 'spiffe://example\.org', not trust domain other\.org"
    with pytest.raises(ConfigurationError, match=edited):
        DevCA.load(ca_dir)
    root = x509.load_pem_x509_certificate((ca_dir / "root.crt.pem").read_bytes())
    root_key = serialization.load_pem_private_key((ca_dir / "root.key.pem").read_bytes(), None)
    with pytest.raises(ConfigurationError, match="the root CA's certificate names"):
        DevCA(TrustDomain.parse("other.org"), root, root_key)  # type: ignore[arg-type]
    foreign = _intermediate_for(ca_dir, "other.org")
    with pytest.raises(ConfigurationError, match="the intermediate CA's certificate names"):
        DevCA(TrustDomain.parse("example.org"), root, root_key, intermediate=foreign)  # type: ignore[arg-type]
    own = _intermediate_for(ca_dir, "example.org")
    DevCA(TrustDomain.parse("example.org"), root, root_key, intermediate=own)  # type: ignore[arg-type]


def test_an_encrypted_ca_key_is_named_as_such(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    ca_dir = DevCA.create("example.org").save(tmp_path / "ca")
    path = ca_dir / "root.key.pem"
    key = serialization.load_pem_private_key(path.read_bytes(), None)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        )
    )
    with pytest.raises(ConfigurationError, match=f"{path} is an encrypted private key"):
        DevCA.load(ca_dir)


# --- certificate profiles (X509-SVID sections 4.1-4.4, RFC 5280 section 4.2) --------------------

_NOW = dt.datetime(2030, 5, 1, tzinfo=dt.timezone.utc)


def _ext(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.Extension[Any]:
    return cert.extensions.get_extension_for_class(kind)


def _usage(
    *, signs_certificates: bool, ec_key: bool = False, rsa_key: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not signs_certificates,
        content_commitment=False,
        key_encipherment=rsa_key,
        data_encipherment=False,
        key_agreement=ec_key,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def test_the_certificate_profiles() -> None:
    """Every extension of the leaf, the intermediate and the root, with its criticality:
    basicConstraints and keyUsage critical (RFC 5280 4.2.1.3, 4.2.1.9; X509-SVID 4.1, 4.3),
    key identifiers and the SAN not (RFC 5280 4.2.1.1, 4.2.1.2, 4.2.1.6), a leaf for both TLS
    sides (X509-SVID 4.4) naming exactly one SPIFFE ID, CAs naming their trust domain."""
    ca = DevCA.create("example.org", intermediate=True, clock=FixedClock(_NOW))
    svid = ca.issue_svid("spiffe://example.org/web")
    leaf, intermediate = svid.cert_chain
    root = ca.root_certificate

    constraints = [_ext(c, x509.BasicConstraints) for c in (leaf, intermediate, root)]
    assert [(e.critical, e.value.ca, e.value.path_length) for e in constraints] == [
        (True, False, None),
        (True, True, 0),  # an intermediate signs leaves only
        (True, True, None),
    ]
    usages = [_ext(c, x509.KeyUsage) for c in (leaf, intermediate, root)]
    assert all(e.critical for e in usages)
    assert [e.value for e in usages] == [
        _usage(signs_certificates=False, ec_key=True),
        _usage(signs_certificates=True),
        _usage(signs_certificates=True),
    ]
    eku = _ext(leaf, x509.ExtendedKeyUsage)
    assert not eku.critical
    assert list(eku.value) == [
        x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
        x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH,
    ]
    for cert, uri in ((leaf, "spiffe://example.org/web"), (intermediate, "spiffe://example.org")):
        san = _ext(cert, x509.SubjectAlternativeName)
        assert not san.critical and list(san.value) == [x509.UniformResourceIdentifier(uri)]
    for cert, issuer in ((leaf, intermediate), (intermediate, root), (root, root)):
        ski = _ext(cert, x509.SubjectKeyIdentifier)
        aki = _ext(cert, x509.AuthorityKeyIdentifier)
        assert not ski.critical and not aki.critical
        assert aki.value.key_identifier == _ext(issuer, x509.SubjectKeyIdentifier).value.digest
    for cert in (leaf, intermediate, root):  # RFC 5280 4.1.2.2: positive, at most 20 octets
        assert 0 < cert.serial_number < 2**159
    assert len({leaf.serial_number, intermediate.serial_number, root.serial_number}) == 3


def test_an_rsa_leaf_may_encipher_keys_and_no_other_usage_changes() -> None:
    ca = DevCA.create("example.org")
    leaf = ca.issue_svid("spiffe://example.org/web", key_type="rsa-2048").leaf
    assert _ext(leaf, x509.KeyUsage).value == _usage(signs_certificates=False, rsa_key=True)


def test_default_lifetimes_and_backdating() -> None:
    """A CA lives 365 days from five minutes ago, an SVID one hour from 30 seconds ago (room
    for peers whose clocks run a little behind)."""
    ca = DevCA.create("example.org", intermediate=True, clock=FixedClock(_NOW))
    leaf, intermediate = ca.issue_svid("spiffe://example.org/web").cert_chain
    for cert in (ca.root_certificate, intermediate):
        assert cert.not_valid_before_utc == _NOW - dt.timedelta(minutes=5)
        assert cert.not_valid_after_utc == _NOW + dt.timedelta(days=365)
    assert leaf.not_valid_before_utc == _NOW - dt.timedelta(seconds=30)
    assert leaf.not_valid_after_utc == _NOW + dt.timedelta(hours=1)
    assert len(DevCA.create("example.org").issue_svid("spiffe://example.org/a").cert_chain) == 1


@pytest.mark.parametrize(
    ("key_type", "digest"),
    [("ec-p256", "sha256"), ("ec-p384", "sha384"), ("rsa-2048", "sha256")],
)
def test_signature_hashes_match_the_ca_key(key_type: str, digest: str) -> None:
    ca = DevCA.create("example.org", key_type=key_type)  # type: ignore[arg-type]
    leaf = ca.issue_svid("spiffe://example.org/web").leaf
    for cert in (ca.root_certificate, leaf):
        assert cert.signature_hash_algorithm is not None
        assert cert.signature_hash_algorithm.name == digest


def test_rsa_3072_keys() -> None:
    from zerotrust.dev import generate_key

    key = generate_key("rsa-3072")
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 3072


def test_ttls_in_seconds_and_the_longest_one() -> None:
    clock = FixedClock(_NOW)
    ca = DevCA.create("example.org", clock=clock, ttl=2 * 86400)
    assert ca.root_certificate.not_valid_after_utc == _NOW + dt.timedelta(days=2)
    assert ca.issue_svid("spiffe://example.org/a", ttl=60).expires_at == _NOW + dt.timedelta(
        seconds=60
    )
    assert ca.issue_svid("spiffe://example.org/a", ttl=90.0).expires_at == _NOW + dt.timedelta(
        seconds=90
    )
    longest = ca.issue_svid("spiffe://example.org/a", ttl=dt.timedelta(days=36500))
    assert longest.expires_at == ca.root_certificate.not_valid_after_utc  # accepted, then cut
    with pytest.raises(ConfigurationError, match="at most 36500 days"):
        ca.issue_svid("spiffe://example.org/a", ttl=dt.timedelta(days=36500, microseconds=1))


def test_issuing_at_the_edges_of_the_ca_validity() -> None:
    """RFC 5280 4.1.2.5: a certificate is valid from notBefore through notAfter. At the CA's
    first second SVIDs are issued; at its last one an SVID would not live at all."""
    clock = FixedClock(_NOW)
    ca = DevCA.create("example.org", clock=clock, ttl=dt.timedelta(hours=2))
    clock.advance(-300)  # the root's notBefore exactly
    assert ca.issue_svid("spiffe://example.org/a").leaf.not_valid_before_utc == clock.now()
    clock.advance(300 + 2 * 3600)  # the root's notAfter exactly
    with pytest.raises(ConfigurationError, match="expired"):
        ca.issue_svid("spiffe://example.org/a")


def test_typed_trust_domains_and_ids() -> None:
    td = TrustDomain.parse("example.org")
    ca = DevCA.create(td)
    assert ca.trust_domain == td
    sid = SpiffeId.parse("spiffe://example.org/web")
    assert ca.issue_svid(sid).spiffe_id == sid


def test_saved_public_files_are_readable_and_the_bundle_is_the_root(tmp_path: Path) -> None:
    ca = DevCA.create("example.org", intermediate=True)
    directory = ca.save(tmp_path / "ca")
    for name in ("root.crt.pem", "intermediate.crt.pem", "bundle.pem", "ca.json"):
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o644, name
    assert (directory / "bundle.pem").read_bytes() == ca.bundle.to_pem()


def test_loading_what_is_not_a_ca_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"missing ca\.json"):
        DevCA.load(tmp_path / "nothing-here")
    ca_dir = DevCA.create("example.org").save(tmp_path / "ca")
    (ca_dir / "root.crt.pem").unlink()
    (ca_dir / "root.crt.pem").mkdir()
    with pytest.raises(ConfigurationError, match=r"cannot load CA from .*: root\.crt\.pem: \w"):
        DevCA.load(ca_dir)


def test_a_ca_key_of_an_unsupported_type_is_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed448

    ca_dir = DevCA.create("example.org").save(tmp_path / "ca")
    (ca_dir / "root.key.pem").write_bytes(
        ed448.Ed448PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(ConfigurationError, match=r"cannot load CA from .*: ValueError"):
        DevCA.load(ca_dir)


def test_a_ca_key_on_a_curve_cryptography_does_not_know_is_refused(tmp_path: Path) -> None:
    """A PKCS#8 key naming prime239v3 (cryptography raises UnsupportedAlgorithm, no
    ValueError) is a ConfigurationError like any other unusable key."""
    from cryptography.hazmat.primitives import serialization

    ca_dir = DevCA.create("example.org").save(tmp_path / "ca")
    key = serialization.load_pem_private_key((ca_dir / "root.key.pem").read_bytes(), None)
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    odd = der.replace(bytes.fromhex("2a8648ce3d030107"), bytes.fromhex("2a8648ce3d030106"))
    body = base64.encodebytes(odd)
    (ca_dir / "root.key.pem").write_bytes(
        b"-----BEGIN PRIVATE KEY-----\n" + body + b"-----END PRIVATE KEY-----\n"
    )
    with pytest.raises(ConfigurationError, match=r"cannot load CA from .*: ValueError"):
        DevCA.load(ca_dir)


def _self_signed(
    *, ca: bool, uris: list[str], edwards: bool = False, signs: bool | None = True
) -> tuple[x509.Certificate, Any]:
    """A self-signed certificate; ``signs``: keyUsage with (True) or without (False)
    keyCertSign, or no keyUsage at all (None)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    key: Any = (
        ed25519.Ed25519PrivateKey.generate() if edwards else ec.generate_private_key(ec.SECP256R1())
    )
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "not the dev CA")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(_NOW - dt.timedelta(days=1))
        .not_valid_after(_NOW + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if uris:
        names = [x509.UniformResourceIdentifier(uri) for uri in uris]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if signs is not None:
        builder = builder.add_extension(_usage(signs_certificates=signs), critical=True)
    return builder.sign(key, None if edwards else hashes.SHA256()), key


@pytest.mark.parametrize("signs", [False, None], ids=["without-keyCertSign", "no-keyUsage"])
def test_a_root_that_cannot_sign_certificates_is_refused(signs: bool | None) -> None:
    """X509-SVID 4.3: SVIDs issued by such a CA would be refused by every verifier."""
    cert, key = _self_signed(ca=True, uris=["spiffe://example.org"], signs=signs)
    with pytest.raises(ConfigurationError, match="cannot sign certificates"):
        DevCA(TrustDomain.parse("example.org"), cert, key)


@pytest.mark.parametrize("damage", ["duplicate-extension", "x400-address"])
def test_a_ca_directory_whose_root_extensions_cannot_be_read_is_refused(
    tmp_path: Path, damage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """DevCA.load raises ConfigurationError naming what is wrong: a root whose extensions
    cryptography refuses to read (basicConstraints twice, RFC 5280 4.2; an x400Address in its
    subjectAltName) raised cryptography's own exception instead, and `ca issue` ended with a
    traceback."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    from zerotrust.cli import main

    DevCA.create("example.org").save(tmp_path / "ca")
    key: Any = serialization.load_pem_private_key(
        (tmp_path / "ca" / "root.key.pem").read_bytes(), password=None
    )
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "example.org root")])
    spiffe = x509.UniformResourceIdentifier("spiffe://example.org")
    placeholder = x509.ObjectIdentifier("1.2.3.4")
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(_NOW - dt.timedelta(days=1))
        .not_valid_after(_NOW + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_usage(signs_certificates=True), critical=True)
    )
    if damage == "duplicate-extension":  # an unknown extension whose OID becomes BC's
        extra = x509.UnrecognizedExtension(x509.ObjectIdentifier("2.5.29.99"), b"\x05\x00")
        der = (
            builder.add_extension(extra, critical=False)
            .sign(key, hashes.SHA256())
            .public_bytes(serialization.Encoding.DER)
        )
        der = der.replace(b"\x06\x03\x55\x1d\x63", b"\x06\x03\x55\x1d\x13")
    else:  # an otherName [0] becomes an x400Address [3]
        names = x509.SubjectAlternativeName([spiffe, x509.OtherName(placeholder, b"\x05\x00")])
        der = (
            builder.add_extension(names, critical=False)
            .sign(key, hashes.SHA256())
            .public_bytes(serialization.Encoding.DER)
        )
        at = der.index(b"\x06\x03\x2a\x03\x04")
        assert der[at - 2] == 0xA0
        der = der[: at - 2] + b"\xa3" + der[at - 1 :]
    damaged = x509.load_der_x509_certificate(der)
    (tmp_path / "ca" / "root.crt.pem").write_bytes(damaged.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(ConfigurationError, match="not a CA certificate"):
        DevCA.load(tmp_path / "ca")
    issue = ["ca", "issue", "--dir", str(tmp_path / "ca"), "--spiffe-id"]
    outputs = ["--cert", str(tmp_path / "w.pem"), "--key", str(tmp_path / "w.key")]
    assert main([*issue, "spiffe://example.org/w", *outputs]) == 2
    err = capsys.readouterr().err
    assert err.startswith("zerotrust: error: [configuration_error]") and err.count("\n") == 1


def test_a_self_signed_end_entity_is_not_a_root() -> None:
    cert, key = _self_signed(ca=False, uris=["spiffe://example.org"])
    with pytest.raises(ConfigurationError, match="not a CA certificate"):
        DevCA(TrustDomain.parse("example.org"), cert, key)


@pytest.mark.parametrize(
    "uri", ["https://example.org", "spiffe://example.org/ca", "spiffe://other.org"]
)
def test_a_root_naming_anything_but_its_trust_domain_is_refused(uri: str) -> None:
    """X509-SVID 3.2: a signing certificate's SPIFFE ID is its trust domain's, with no path."""
    cert, key = _self_signed(ca=True, uris=["spiffe://example.org", uri])
    with pytest.raises(ConfigurationError, match="the root CA's certificate names"):
        DevCA(TrustDomain.parse("example.org"), cert, key)
    unnamed, unnamed_key = _self_signed(ca=True, uris=[])  # naming none is fine
    DevCA(TrustDomain.parse("example.org"), unnamed, unnamed_key)


def test_svid_dns_names_must_be_a_real_list(ca: DevCA) -> None:
    with pytest.raises(ConfigurationError, match="dns_names"):  # it would be used up unread
        ca.issue_svid("spiffe://example.org/web", dns_names=iter(["a.example"]))  # type: ignore[arg-type]
    longest = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])
    assert len(longest) == 253
    svid = ca.issue_svid("spiffe://example.org/web", dns_names=[longest, "*.example.org"])
    san = svid.leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [longest, "*.example.org"]
    with pytest.raises(ConfigurationError, match="dns_names"):
        ca.issue_svid("spiffe://example.org/web", dns_names=[longest + "d"])


def test_an_ed25519_root_loaded_from_files_issues_svids() -> None:
    """A CA key may be Ed25519 (it is signed with no separate hash)."""
    cert, key = _self_signed(ca=True, uris=["spiffe://example.org"], edwards=True)
    ca = DevCA(TrustDomain.parse("example.org"), cert, key, clock=FixedClock(_NOW))
    svid = ca.issue_svid("spiffe://example.org/web")
    svid.leaf.verify_directly_issued_by(cert)


def test_an_unchecked_leaf_carries_what_it_is_given(ca: DevCA) -> None:
    """The helper that makes bad leaves for refusal tests: no EKU, no SAN, the key usage given."""
    usage = _usage(signs_certificates=True)
    now = dt.datetime.now(dt.timezone.utc)
    (leaf, *_), _ = ca.issue_unchecked_leaf(
        uri_sans=[],
        not_before=now,
        not_after=now + dt.timedelta(minutes=1),
        key_usage=usage,
        extended_key_usage=None,
    )
    assert leaf.extensions.get_extension_for_class(x509.KeyUsage).value == usage
    for absent in (x509.ExtendedKeyUsage, x509.SubjectAlternativeName):
        with pytest.raises(x509.ExtensionNotFound):
            leaf.extensions.get_extension_for_class(absent)


def test_a_ca_directory_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    ca_dir = DevCA.create("example.org").save(tmp_path / "ca")
    if os.geteuid() == 0:  # root may hand it to another user
        os.chown(ca_dir, 65534, 65534)
        theirs = ca_dir
    else:  # the file system root is another user's (and not writable by others)
        theirs = Path(tmp_path.anchor)
    assert theirs.stat().st_mode & 0o022 == 0 and theirs.stat().st_uid != os.geteuid()
    with pytest.raises(ConfigurationError, match="owned by another one"):
        DevCA.load(theirs)


def test_a_trust_domain_longer_than_a_common_name_has_a_ca(tmp_path: Path) -> None:
    """A trust domain may have 255 characters, a common name 64 (RFC 5280 appendix A,
    ub-common-name): the CA's common name shortens it, its URI SAN names it whole."""
    name = ".".join(["a" * 63, "b" * 63, "c" * 63, "example"])
    ca = DevCA.create(name, intermediate=True)
    svid = ca.issue_svid(f"spiffe://{name}/web")
    assert verify_peer_chain(svid.cert_chain, ca.bundle) == svid.spiffe_id
    for cert in (ca.root_certificate, svid.cert_chain[1]):
        (common_name,) = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        assert isinstance(common_name.value, str) and len(common_name.value) <= 64
        san = _ext(cert, x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.UniformResourceIdentifier) == [f"spiffe://{name}"]
    assert ca.root_certificate.subject != svid.cert_chain[1].subject
    assert DevCA.load(ca.save(tmp_path / "ca")).bundle == ca.bundle
    short = DevCA.create("example.org", intermediate=True).root_certificate.subject
    assert short.rfc4514_string() == "CN=example.org root,O=zerotrust dev CA"
