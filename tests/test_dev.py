from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import pytest
from cryptography import x509

from zerotrust import FixedClock, verify_peer_chain
from zerotrust.dev import DevCA
from zerotrust.errors import ConfigurationError, InvalidSpiffeId


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
        ["example.org."],
        [5],
    ],
)
def test_svid_dns_names_are_host_names(ca: DevCA, names: object) -> None:
    with pytest.raises(ConfigurationError, match="dns_names"):
        ca.issue_svid("spiffe://example.org/web", dns_names=names)  # type: ignore[arg-type]


def test_svid_dns_names_accept_host_names_wildcards_and_a_labels(ca: DevCA) -> None:
    names = ["localhost", "*.svc.example.org", "xn--caf-dma.example", "127.0.0.1"]
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
