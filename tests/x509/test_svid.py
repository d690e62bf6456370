from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path

import pytest

from zerotrust import X509Svid
from zerotrust.dev import DevCA
from zerotrust.errors import SvidError


def test_pem_round_trip(ca_with_intermediate: DevCA) -> None:
    svid = ca_with_intermediate.issue_svid("spiffe://example.org/web")
    again = X509Svid.from_pem(svid.cert_chain_pem(), svid.private_key_pem())
    assert again.spiffe_id == svid.spiffe_id
    assert again.fingerprint == svid.fingerprint
    assert len(again.cert_chain) == 2
    assert again.get_x509_svid() is again
    assert again.expires_at == svid.leaf.not_valid_after_utc
    assert "spiffe://example.org/web" in repr(again) and "PRIVATE" not in repr(again)
    expected = f"X509Svid('spiffe://example.org/web', fingerprint={svid.fingerprint[:16]}…)"
    assert repr(again) == expected


def test_save_writes_the_key_private(ca: DevCA, tmp_path: Path) -> None:
    svid = ca.issue_svid("spiffe://example.org/web")
    svid.save(tmp_path / "c.pem", tmp_path / "k.pem")
    assert stat.S_IMODE((tmp_path / "k.pem").stat().st_mode) == 0o600
    assert X509Svid.load(tmp_path / "c.pem", tmp_path / "k.pem").fingerprint == svid.fingerprint
    assert not list(tmp_path.glob(".*tmp"))


def test_torn_pair_is_refused(ca: DevCA) -> None:
    a, b = ca.issue_svid("spiffe://example.org/a"), ca.issue_svid("spiffe://example.org/a")
    with pytest.raises(SvidError, match="does not match"):
        X509Svid.from_pem(a.cert_chain_pem(), b.private_key_pem())


def test_non_svid_leaf_is_refused(ca: DevCA) -> None:
    import datetime as dt

    now = dt.datetime.now(dt.timezone.utc)
    chain, key = ca.issue_unchecked_leaf(
        uri_sans=[], not_before=now, not_after=now + dt.timedelta(hours=1)
    )
    with pytest.raises(SvidError, match="not an X509-SVID"):
        X509Svid(chain, key)


@pytest.mark.parametrize(
    ("flags", "reason"),
    [
        ({"ca": True}, "has the CA flag"),
        ({"key_cert_sign": True}, "keyCertSign"),
        ({"crl_sign": True}, "cRLSign"),
        ({"digital_signature": False}, "lacks digitalSignature"),
    ],
)
def test_a_leaf_that_may_certify_is_not_an_svid(
    ca: DevCA, flags: dict[str, bool], reason: str
) -> None:
    import datetime as dt

    from cryptography import x509

    now = dt.datetime.now(dt.timezone.utc)
    usage = {"digital_signature": True, "key_cert_sign": False, "crl_sign": False}
    usage.update({k: v for k, v in flags.items() if k != "ca"})
    chain, key = ca.issue_unchecked_leaf(
        uri_sans=["spiffe://example.org/a"],
        not_before=now,
        not_after=now + dt.timedelta(hours=1),
        ca=flags.get("ca", False),
        key_usage=x509.KeyUsage(
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            encipher_only=False,
            decipher_only=False,
            **usage,
        ),
    )
    with pytest.raises(SvidError, match=reason):
        X509Svid(chain, key)


@pytest.mark.parametrize(
    ("cert", "key"),
    [(b"garbage", b"garbage"), (b"", b"")],
)
def test_bad_pem(cert: bytes, key: bytes) -> None:
    with pytest.raises(SvidError):
        X509Svid.from_pem(cert, key)


def test_bad_key_pem(ca: DevCA) -> None:
    svid = ca.issue_svid("spiffe://example.org/a")
    with pytest.raises(SvidError, match="private key"):
        X509Svid.from_pem(
            svid.cert_chain_pem(), b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
        )


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(SvidError, match="cannot read"):
        X509Svid.load(tmp_path / "nope.pem", tmp_path / "nope.key")


def test_a_missing_file_is_named_for_what_it_holds(ca: DevCA, tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    ca.issue_svid("spiffe://example.org/a").save(cert, key)
    missing, reason = tmp_path / "nope.pem", re.escape(os.strerror(errno.ENOENT))
    for cert_path, key_path, what in ((missing, key, "certificate"), (cert, missing, "key")):
        expected = f"^cannot read SVID {what} file {re.escape(str(missing))}: {reason}$"
        with pytest.raises(SvidError, match=expected):
            X509Svid.load(cert_path, key_path)


def test_svid_is_immutable(ca: DevCA) -> None:
    svid = ca.issue_svid("spiffe://example.org/a")
    with pytest.raises(AttributeError, match=r"^X509Svid is immutable$"):
        svid._spiffe_id = None  # type: ignore[misc]
    with pytest.raises(SvidError, match=r"^an SVID needs at least one certificate$"):
        X509Svid([], svid.private_key)


def test_save_never_writes_through_a_planted_file_or_link(ca: DevCA, tmp_path: Path) -> None:
    """In a directory others can write to, the key file must still be this user's alone: the
    temporary sibling has an unpredictable name and is created exclusively, never through a
    symbolic link."""
    import os

    svid = ca.issue_svid("spiffe://example.org/a")
    elsewhere = tmp_path / "elsewhere.pem"
    for pid in (os.getpid(), 1):  # the predictable names of a pid-based temporary file
        (tmp_path / f".k.pem.{pid}.tmp").symlink_to(elsewhere)
    svid.save(tmp_path / "c.pem", tmp_path / "k.pem")
    assert not elsewhere.exists()
    assert not (tmp_path / "k.pem").is_symlink()
    assert stat.S_IMODE((tmp_path / "k.pem").stat().st_mode) == 0o600
    leftovers = [
        p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp") and not p.is_symlink()
    ]
    assert leftovers == []


def test_a_save_that_cannot_write_the_key_replaces_nothing(ca: DevCA, tmp_path: Path) -> None:
    """Both files are written before either replaces anything: a new certificate is never
    left beside the old key (a pair that no longer loads)."""
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    old, new = ca.issue_svid("spiffe://example.org/a"), ca.issue_svid("spiffe://example.org/a")
    old.save(cert, key)
    nowhere = tmp_path / "missing" / "k.pem"
    with pytest.raises(FileNotFoundError) as caught:
        new.save(cert, nowhere)
    assert caught.value.filename == str(nowhere)  # the user's path, not a temporary file's
    assert X509Svid.load(cert, key).fingerprint == old.fingerprint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pem", "k.pem"]


def test_a_save_whose_certificate_cannot_replace_its_path_puts_the_key_back(
    ca: DevCA, tmp_path: Path
) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    old, new = ca.issue_svid("spiffe://example.org/a"), ca.issue_svid("spiffe://example.org/a")
    old.save(cert, key)
    directory = tmp_path / "a-directory.pem"
    directory.mkdir()
    with pytest.raises(IsADirectoryError) as caught:
        new.save(directory, key)  # the key is renamed first; the certificate's rename fails
    assert caught.value.filename == str(directory)
    assert key.read_bytes() == old.private_key_pem()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert X509Svid.load(cert, key).fingerprint == old.fingerprint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-directory.pem", "c.pem", "k.pem"]
    assert list(directory.iterdir()) == []
    fresh = tmp_path / "fresh.key"  # no previous key: none is left behind either
    with pytest.raises(IsADirectoryError):
        new.save(directory, fresh)
    assert not fresh.exists()


def test_a_save_to_one_path_is_refused(ca: DevCA, tmp_path: Path) -> None:
    from zerotrust.errors import ConfigurationError

    svid = ca.issue_svid("spiffe://example.org/a")
    with pytest.raises(ConfigurationError, match="both be written"):
        svid.save(tmp_path / "svid.pem", tmp_path / "." / "svid.pem")
    assert list(tmp_path.iterdir()) == []


def test_an_encrypted_key_is_named_as_such(ca: DevCA, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    svid = ca.issue_svid("spiffe://example.org/a")
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    svid.save(cert, key)
    for fmt in (serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL):
        key.write_bytes(
            svid.private_key.private_bytes(
                serialization.Encoding.PEM, fmt, serialization.BestAvailableEncryption(b"pw")
            )
        )
        with pytest.raises(SvidError, match=f"{key}: SVID private key is encrypted"):
            X509Svid.load(cert, key)
        with pytest.raises(SvidError, match="encrypted, which is not supported"):
            X509Svid.from_pem(cert.read_bytes(), key.read_bytes())


def test_a_key_of_an_unsupported_type_is_named_as_such(ca: DevCA) -> None:
    """Only EC, RSA and Ed25519 keys are SVID keys: another type is refused for what it is,
    given to the constructor or as PEM, not reported as a mismatch with the leaf."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed448

    svid = ca.issue_svid("spiffe://example.org/a")
    other = ed448.Ed448PrivateKey.generate()
    with pytest.raises(SvidError, match="unsupported private key type"):
        X509Svid(svid.cert_chain, other)  # type: ignore[arg-type]
    pem = other.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(SvidError, match="unsupported private key type"):
        X509Svid.from_pem(svid.cert_chain_pem(), pem)


def test_pem_given_as_text(ca_with_intermediate: DevCA) -> None:
    svid = ca_with_intermediate.issue_svid("spiffe://example.org/web")
    again = X509Svid.from_pem(svid.cert_chain_pem().decode(), svid.private_key_pem().decode())
    assert again.fingerprint == svid.fingerprint
    assert again.private_key_pem() == svid.private_key_pem()


def test_text_that_is_no_pem_is_an_svid_error(ca: DevCA) -> None:
    """Text no PEM document can be (a lone surrogate, from a file decoded with
    surrogateescape) is refused like any unreadable PEM, for the key as for the chain."""
    svid = ca.issue_svid("spiffe://example.org/web")
    key = svid.private_key_pem().decode()
    with pytest.raises(SvidError, match="private key could not be loaded"):
        X509Svid.from_pem(svid.cert_chain_pem(), key.replace("\n", "\n\udc80", 2))
    with pytest.raises(SvidError, match="certificate PEM"):
        X509Svid.from_pem("\udc80", key)


def test_save_writes_the_chain_world_readable_and_leaves_nothing_behind(
    ca: DevCA, tmp_path: Path
) -> None:
    """The chain is 0644 whatever the umask (its staged file is created 0600 like the key's),
    and replacing an existing pair keeps no copy of the old key beside the new one."""
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    old, new = ca.issue_svid("spiffe://example.org/a"), ca.issue_svid("spiffe://example.org/a")
    old.save(cert, key)
    assert stat.S_IMODE(cert.stat().st_mode) == 0o644
    new.save(cert, key)
    assert stat.S_IMODE(cert.stat().st_mode) == 0o644
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert X509Svid.load(cert, key).fingerprint == new.fingerprint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pem", "k.pem"]


def test_a_save_whose_key_cannot_replace_its_path_replaces_nothing(
    ca: DevCA, tmp_path: Path
) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    old, new = ca.issue_svid("spiffe://example.org/a"), ca.issue_svid("spiffe://example.org/a")
    old.save(cert, key)
    directory = tmp_path / "a-directory.key"
    directory.mkdir()
    with pytest.raises(IsADirectoryError) as caught:
        new.save(cert, directory)  # the key's rename, the first, fails
    assert caught.value.filename == str(directory)
    assert X509Svid.load(cert, key).fingerprint == old.fingerprint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-directory.key", "c.pem", "k.pem"]
    assert list(directory.iterdir()) == []


def test_a_save_that_cannot_stage_the_certificate_replaces_nothing(
    ca: DevCA, tmp_path: Path
) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    old, new = ca.issue_svid("spiffe://example.org/a"), ca.issue_svid("spiffe://example.org/a")
    old.save(cert, key)
    nowhere = tmp_path / "missing" / "c.pem"
    with pytest.raises(FileNotFoundError) as caught:
        new.save(nowhere, key)  # the key is staged first: its staged file goes too
    assert caught.value.filename == str(nowhere)
    assert X509Svid.load(cert, key).fingerprint == old.fingerprint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pem", "k.pem"]


def test_a_failed_save_puts_back_a_key_path_that_was_a_symbolic_link(
    ca: DevCA, tmp_path: Path
) -> None:
    cert, real_key = tmp_path / "c.pem", tmp_path / "real.key"
    old, new = ca.issue_svid("spiffe://example.org/a"), ca.issue_svid("spiffe://example.org/a")
    old.save(cert, real_key)
    key = tmp_path / "k.pem"
    key.symlink_to(real_key.name)
    directory = tmp_path / "a-directory.pem"
    directory.mkdir()
    with pytest.raises(IsADirectoryError):
        new.save(directory, key)
    assert key.is_symlink() and key.readlink() == Path(real_key.name)
    assert X509Svid.load(cert, key).fingerprint == old.fingerprint


def test_write_file_atomic_failures_name_the_path_and_leave_nothing(tmp_path: Path) -> None:
    from zerotrust.x509.svid import write_file_atomic

    directory = tmp_path / "a-directory"
    directory.mkdir()
    with pytest.raises(IsADirectoryError) as caught:
        write_file_atomic(directory, b"data", mode=0o644)
    assert caught.value.filename == str(directory)
    assert ".tmp" not in str(caught.value)  # the temporary file means nothing to the caller
    with pytest.raises(TypeError):  # not an OSError: raised as it is
        write_file_atomic(tmp_path / "f", "not bytes", mode=0o644)  # type: ignore[arg-type]
    assert [p.name for p in tmp_path.iterdir()] == ["a-directory"]


def test_load_names_an_unreadable_certificate_file(ca: DevCA, tmp_path: Path) -> None:
    svid = ca.issue_svid("spiffe://example.org/a")
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    svid.save(cert, key)
    cert.write_bytes(b"-----BEGIN CERTIFICATE-----\nAAAA\n")
    with pytest.raises(SvidError, match=f"^{re.escape(str(cert))}: SVID certificate PEM "):
        X509Svid.load(cert, key)
    cert.write_bytes(b"#" * (4 * 1024 * 1024 + 1))  # past the PEM size bound
    with pytest.raises(SvidError, match=f"^SVID certificate file {re.escape(str(cert))} exceeds"):
        X509Svid.load(cert, key)


def test_a_chain_certificate_that_may_not_sign_is_named_by_position(ca: DevCA) -> None:
    leaf, other = ca.issue_svid("spiffe://example.org/a"), ca.issue_svid("spiffe://example.org/b")
    with pytest.raises(SvidError, match="certificate 1 of the chain is not a signing"):
        X509Svid([leaf.leaf, other.leaf], leaf.private_key)
