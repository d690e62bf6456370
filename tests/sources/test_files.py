from __future__ import annotations

import datetime as dt
import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from tests._files import settled
from tests._fork import in_child
from zerotrust import FileBundleSource, FileSvidSource, X509Svid
from zerotrust.dev import DevCA
from zerotrust.errors import BundleError, SvidError
from zerotrust.sources import files
from zerotrust.x509.bundle import BundleSet


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_svid_reload_is_throttled(ca: DevCA, tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    first, second = ca.issue_svid("spiffe://example.org/a"), ca.issue_svid("spiffe://example.org/a")
    first.save(cert, key)
    ticks = Ticks()
    source = FileSvidSource(cert, key, check_interval=5, monotonic=ticks)
    second.save(cert, key)
    settled(cert, key)
    assert source.get_x509_svid().fingerprint == first.fingerprint  # not checked yet
    ticks.now = 5
    assert source.get_x509_svid().fingerprint == second.fingerprint
    snapshot = source.get_x509_svid()
    assert source.get_x509_svid() is snapshot  # same immutable snapshot until a change


def test_relative_paths_name_the_files_of_the_directory_the_source_was_built_in(
    ca: DevCA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A later change of working directory (a daemon, a framework's chdir) made every reload
    read the files of the new one: another workload's SVID served, another root trusted."""
    evil = DevCA.create("example.org")
    first, other = tmp_path / "first", tmp_path / "other"
    for directory, authority, name in ((first, ca, "web"), (other, evil, "other")):
        directory.mkdir()
        authority.issue_svid(f"spiffe://example.org/{name}").save(
            directory / "svid.pem", directory / "svid.key"
        )
        (directory / "bundle.pem").write_bytes(authority.bundle.to_pem())
    monkeypatch.chdir(first)
    svids = FileSvidSource("svid.pem", "svid.key", check_interval=0)
    bundles = FileBundleSource({"example.org": "bundle.pem"}, check_interval=0)
    monkeypatch.chdir(other)
    ca.issue_svid("spiffe://example.org/web").save(first / "svid.pem", first / "svid.key")
    settled(first / "svid.pem", first / "svid.key")
    svid = svids.get_x509_svid()  # reloaded: the rotated pair in the first directory
    assert str(svid.spiffe_id) == "spiffe://example.org/web" and svids.last_error is None
    assert bundles.get_bundle_set().get("example.org") == ca.bundle
    monkeypatch.chdir("/")
    assert svids.get_x509_svid() is svid and svids.last_error is None


def test_svid_files_vanishing_keep_the_snapshot(ca: DevCA, tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    ca.issue_svid("spiffe://example.org/a").save(cert, key)
    source = FileSvidSource(cert, key, check_interval=0)
    before = source.get_x509_svid()
    cert.unlink()
    assert source.get_x509_svid() is before
    assert source.last_error and "stat" in source.last_error
    cert.write_text("garbage")
    assert source.get_x509_svid() is before


def test_svid_first_load_fails_loudly(tmp_path: Path) -> None:
    with pytest.raises(SvidError):
        FileSvidSource(tmp_path / "c.pem", tmp_path / "k.pem")
    (tmp_path / "c.pem").write_text("garbage")
    (tmp_path / "k.pem").write_text("garbage")
    with pytest.raises(SvidError):
        FileSvidSource(tmp_path / "c.pem", tmp_path / "k.pem")


def test_bundle_file_pem_then_jwks(ca: DevCA, other_ca: DevCA, tmp_path: Path) -> None:
    path = tmp_path / "bundle"
    path.write_bytes(ca.bundle.to_pem())
    source = FileBundleSource({"example.org": path}, check_interval=0)
    assert source.get_bundle_set().get("example.org") == ca.bundle
    rotated = ca.bundle.with_x509_authorities(
        [ca.root_certificate, DevCA.create("example.org").root_certificate]
    )
    path.write_text(json.dumps(rotated.to_jwks()))
    settled(path)
    assert source.get_bundle_set().get("example.org") == rotated
    path.write_text("{not json")
    settled(path)
    assert (
        source.get_bundle_set().get("example.org") == rotated
    )  # bad update keeps the last good one
    assert source.last_error


def test_bundle_source_federation(ca: DevCA, other_ca: DevCA, tmp_path: Path) -> None:
    (tmp_path / "a.pem").write_bytes(ca.bundle.to_pem())
    (tmp_path / "b.json").write_text(json.dumps(other_ca.bundle.to_jwks()))
    source = FileBundleSource({"example.org": tmp_path / "a.pem", "other.org": tmp_path / "b.json"})
    assert len(source.get_bundle_set()) == 2


def test_bundle_source_errors(tmp_path: Path) -> None:
    with pytest.raises(BundleError):
        FileBundleSource({})
    with pytest.raises(BundleError):
        FileBundleSource({"example.org": tmp_path / "missing.pem"})
    (tmp_path / "x.pem").write_text("nothing here")
    with pytest.raises(BundleError):
        FileBundleSource({"example.org": tmp_path / "x.pem"}, format="pem")


def test_a_chain_caught_half_written_keeps_the_snapshot(
    ca_with_intermediate: DevCA, tmp_path: Path
) -> None:
    """A rotation tool writes the key, then the chain: a chain cut after its leaf must not be
    read as a one-certificate SVID (peers could not build its path)."""
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    ca_with_intermediate.issue_svid("spiffe://example.org/a").save(cert, key)
    source = FileSvidSource(cert, key, check_interval=0)
    before = source.get_x509_svid()
    new = ca_with_intermediate.issue_svid("spiffe://example.org/a")
    new.save(tmp_path / "n.pem", key)  # the new key is in place
    full = (tmp_path / "n.pem").read_bytes()
    end = full.index(b"-----END CERTIFICATE-----") + len(b"-----END CERTIFICATE-----\n")
    cert.write_bytes(full[: end + 200])  # the leaf and the start of the intermediate
    settled(cert, key)
    assert source.get_x509_svid() is before
    assert source.last_error is not None and "incomplete" in source.last_error
    cert.write_bytes(full)
    settled(cert)
    assert source.get_x509_svid().fingerprint == new.fingerprint
    assert len(source.get_x509_svid().cert_chain) == 2


@pytest.mark.parametrize("cut", [1, 5, 8, 15, 24])
def test_a_chain_cut_inside_its_last_end_line_keeps_the_snapshot(
    ca_with_intermediate: DevCA, tmp_path: Path, cut: int
) -> None:
    # cut after "-----END " of the last block: as many BEGIN as END markers, nothing after
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    ca_with_intermediate.issue_svid("spiffe://example.org/a").save(cert, key)
    source = FileSvidSource(cert, key, check_interval=0)
    before = source.get_x509_svid()
    new = ca_with_intermediate.issue_svid("spiffe://example.org/a")
    new.save(tmp_path / "n.pem", key)
    full = (tmp_path / "n.pem").read_bytes()
    cert.write_bytes(full.rstrip()[:-cut])
    settled(cert, key)
    assert source.get_x509_svid() is before
    assert source.last_error is not None and "incomplete" in source.last_error
    cert.write_bytes(full)
    settled(cert)
    assert len(source.get_x509_svid().cert_chain) == 2


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda pem: pem[:-9], id="cut-inside-the-last-end-line"),
        pytest.param(lambda pem: pem.replace(b"-----END", b"-----FIN", 1), id="end-misspelt"),
        pytest.param(
            lambda pem: pem.replace(b"-----END CERTIFICATE", b"-----END PUBLIC KEY", 1),
            id="end-of-another-label",
        ),
        pytest.param(lambda pem: pem + b"-----BEGIN CERTIFICATE-----\n", id="begin-left-open"),
        pytest.param(lambda pem: pem.rstrip() + b"junk\n", id="junk-after-the-end"),
    ],
)
def test_a_bundle_that_is_not_whole_is_refused(ca: DevCA, damage: Any) -> None:
    from zerotrust import TrustBundle

    other = DevCA.create("example.org")
    pem = ca.bundle.to_pem() + other.bundle.to_pem()
    assert len(TrustBundle.from_pem("example.org", pem).x509_authorities) == 2
    with pytest.raises(BundleError, match="incomplete"):
        TrustBundle.from_pem("example.org", damage(pem))


def test_oversized_files_are_refused_without_being_read(ca: DevCA, tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    ca.issue_svid("spiffe://example.org/a").save(cert, key)
    source = FileSvidSource(cert, key, check_interval=0)
    before = source.get_x509_svid()
    with cert.open("r+b") as file:  # a sparse 64 MiB file
        file.truncate(64 << 20)
    settled(cert)
    assert source.get_x509_svid() is before
    assert source.last_error is not None and "exceeds" in source.last_error
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(ca.bundle.to_pem())
    with bundle.open("r+b") as file:
        file.truncate(64 << 20)
    with pytest.raises(BundleError, match="exceeds"):
        FileBundleSource({"example.org": bundle})


# --- files caught mid-write --------------------------------------------------------------------


def test_a_chain_caught_after_its_leaf_is_not_read_as_a_shorter_chain(
    ca_with_intermediate: DevCA, tmp_path: Path
) -> None:
    """A writer caught between two PEM blocks leaves a file that parses: a chain written up to
    its leaf is a valid one-certificate SVID, which peers could not verify. A changed file is
    used only once it has settled."""
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    ca_with_intermediate.issue_svid("spiffe://example.org/a").save(cert, key)
    settled(cert, key)
    source = FileSvidSource(cert, key, check_interval=0)
    before = source.get_x509_svid()
    new = ca_with_intermediate.issue_svid("spiffe://example.org/a")
    key.write_bytes(new.private_key_pem())
    settled(key)
    leaf = new.leaf.public_bytes(serialization.Encoding.PEM)
    cert.write_bytes(leaf)  # the writer is between the leaf and the intermediate
    assert source.get_x509_svid() is before
    with cert.open("ab") as file:
        file.write(new.cert_chain_pem()[len(leaf) :])
    assert source.get_x509_svid() is before  # just written: it may not be finished
    assert source.last_error is None  # waiting is no error
    settled(cert)
    assert source.get_x509_svid().fingerprint == new.fingerprint
    assert len(source.get_x509_svid().cert_chain) == 2


def test_a_bundle_caught_between_two_roots_is_not_read_as_a_smaller_bundle(
    ca: DevCA, tmp_path: Path
) -> None:
    path = tmp_path / "bundle.pem"
    path.write_bytes(ca.bundle.to_pem())
    settled(path)
    source = FileBundleSource({"example.org": path}, check_interval=0)
    before = source.get_bundle_set()
    one, two = DevCA.create("example.org"), DevCA.create("example.org")
    path.write_bytes(one.bundle.to_pem())  # rewritten in place, the second root not yet
    assert source.get_bundle_set() is before
    with path.open("ab") as file:
        file.write(two.bundle.to_pem())
    settled(path)
    bundle = source.get_bundle_set().get("example.org")
    assert bundle is not None
    assert bundle.x509_authorities == (one.root_certificate, two.root_certificate)


def test_a_file_changed_while_it_was_read_is_read_again(
    ca: DevCA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from zerotrust.sources import files

    path = tmp_path / "bundle.pem"
    path.write_bytes(ca.bundle.to_pem())
    settled(path)
    source = FileBundleSource({"example.org": path}, check_interval=0)
    before = source.get_bundle_set()
    one, two = DevCA.create("example.org"), DevCA.create("example.org")
    path.write_bytes(one.bundle.to_pem())
    settled(path)
    real = files._load_bundle

    def racing(*args: Any) -> Any:
        loaded = real(*args)
        with path.open("ab") as file:  # the writer goes on while the file is read
            file.write(two.bundle.to_pem())
        return loaded

    monkeypatch.setattr(files, "_load_bundle", racing)
    assert source.get_bundle_set() is before
    monkeypatch.undo()
    settled(path)
    bundle = source.get_bundle_set().get("example.org")
    assert bundle is not None and len(bundle.x509_authorities) == 2


def test_a_file_dated_in_the_future_settles_once_seen_unchanged(ca: DevCA, tmp_path: Path) -> None:
    """A modification time that cannot be trusted (a clock ahead, a copied date) does not hold
    a rotation back: the same stamp seen for the settling time is enough."""
    path = tmp_path / "bundle.pem"
    path.write_bytes(ca.bundle.to_pem())
    ticks = Ticks()
    source = FileBundleSource({"example.org": path}, check_interval=0, monotonic=ticks)
    before = source.get_bundle_set()
    other = DevCA.create("example.org")
    path.write_bytes(other.bundle.to_pem())
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 3600 * 10**9))
    assert source.get_bundle_set() is before
    ticks.now = 0.1
    assert source.get_bundle_set() is before
    ticks.now = 0.5
    assert source.get_bundle_set().get("example.org") == other.bundle


def test_the_first_load_does_not_wait_and_the_finished_file_replaces_it(
    ca_with_intermediate: DevCA, tmp_path: Path
) -> None:
    """At start-up there is no snapshot to keep: a file caught mid-write is used at once (no
    start-up waits for files to settle), and the finished file replaces it once settled."""
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    svid = ca_with_intermediate.issue_svid("spiffe://example.org/a")
    svid.save(tmp_path / "full.pem", key)
    leaf = svid.leaf.public_bytes(serialization.Encoding.PEM)
    cert.write_bytes(leaf)
    source = FileSvidSource(cert, key, check_interval=0)
    assert len(source.get_x509_svid().cert_chain) == 1
    with cert.open("ab") as file:
        file.write(svid.cert_chain_pem()[len(leaf) :])
    settled(cert)
    assert len(source.get_x509_svid().cert_chain) == 2


# --- errors name the file ----------------------------------------------------------------------


def test_a_missing_svid_file_is_named(ca: DevCA, tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    ca.issue_svid("spiffe://example.org/a").save(cert, key)
    key.unlink()
    with pytest.raises(SvidError, match=f"cannot read SVID file {key}: No such file"):
        FileSvidSource(cert, key)
    with pytest.raises(SvidError, match=f"cannot read SVID key file {key}: No such file"):
        X509Svid.load(cert, key)
    with pytest.raises(BundleError, match=f"cannot read bundle file {key}: No such file"):
        FileBundleSource({"example.org": key})


def test_a_kubernetes_secret_volume_swap_is_picked_up(ca: DevCA, tmp_path: Path) -> None:
    """A Secret mounted as a volume: ``tls.crt`` and ``tls.key`` are links through ``..data``
    to a timestamped directory, and an update writes a new directory, points ``..data`` at it
    in one rename and deletes the old one. The pair read after the swap is the new one."""
    first, second = ca.issue_svid("spiffe://example.org/a"), ca.issue_svid("spiffe://example.org/a")

    def publish(svid: X509Svid, name: str) -> Path:
        directory = tmp_path / name
        directory.mkdir()
        svid.save(directory / "tls.crt", directory / "tls.key")
        settled(directory / "tls.crt", directory / "tls.key")
        (tmp_path / "..data_tmp").symlink_to(name)
        os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
        return directory

    old = publish(first, "..2026_01_01_00_00_00.1")
    for name in ("tls.crt", "tls.key"):
        (tmp_path / name).symlink_to(f"..data/{name}")
    ticks = Ticks()
    source = FileSvidSource(
        tmp_path / "tls.crt", tmp_path / "tls.key", check_interval=1, monotonic=ticks
    )
    assert source.get_x509_svid().fingerprint == first.fingerprint
    publish(second, "..2026_01_01_01_00_00.2")
    for item in old.iterdir():
        item.unlink()
    old.rmdir()
    assert source.get_x509_svid().fingerprint == first.fingerprint  # not checked yet
    ticks.now = 1
    assert source.get_x509_svid().fingerprint == second.fingerprint
    assert source.last_error is None and source.reloads == 1


def _write_leaf(ca: DevCA, cert: Path, key: Path, start: dt.timedelta, end: dt.timedelta) -> None:
    """An SVID valid from now + ``start`` to now + ``end``, written as a rotation tool would."""
    now = dt.datetime.now(dt.timezone.utc)
    chain, private = ca.issue_unchecked_leaf(
        uri_sans=["spiffe://example.org/a"], not_before=now + start, not_after=now + end
    )
    cert.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain))
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    settled(cert, key)


@pytest.mark.parametrize(
    ("start", "end", "why"),
    [
        (dt.timedelta(hours=-2), dt.timedelta(hours=-1), "expired"),
        (dt.timedelta(minutes=6), dt.timedelta(hours=1), "valid only from"),
    ],
    ids=["expired", "not-yet-valid"],
)
def test_a_rewritten_svid_no_peer_would_accept_keeps_the_previous_one(
    ca: DevCA, tmp_path: Path, start: dt.timedelta, end: dt.timedelta, why: str
) -> None:
    """A rotation tool that writes an expired certificate (a stale copy restored, a renewal
    that failed) or one valid only in the future must not replace a working SVID."""
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    ca.issue_svid("spiffe://example.org/a").save(cert, key)
    source = FileSvidSource(cert, key, check_interval=0)
    before = source.get_x509_svid()
    _write_leaf(ca, cert, key, start, end)
    assert source.get_x509_svid() is before
    assert source.last_error is not None and why in source.last_error
    assert source.reloads == 0
    _write_leaf(ca, cert, key, dt.timedelta(minutes=4), dt.timedelta(hours=1))  # clock skew
    assert source.get_x509_svid() is not before and source.reloads == 1
    assert source.last_error is None


def test_the_first_load_takes_an_expired_svid_as_it_is(ca: DevCA, tmp_path: Path) -> None:
    """There is no previous SVID to keep: the files are served (peers refuse it, and the
    source's owner sees why), as before."""
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    _write_leaf(ca, cert, key, dt.timedelta(hours=-2), dt.timedelta(hours=-1))
    svid = FileSvidSource(cert, key).get_x509_svid()
    assert svid.leaf.not_valid_after_utc < dt.datetime.now(dt.timezone.utc)


def test_a_child_forked_while_its_parent_was_reloading_goes_on_reloading(
    ca: DevCA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fork while another thread checks the files (it holds the check's lock, which the
    child inherits held): the child must not serve its snapshot forever, never seeing a
    rotation (or a withdrawn authority) again."""
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    first, second, third = (ca.issue_svid("spiffe://example.org/a") for _ in range(3))
    first.save(cert, key)
    ticks = Ticks()
    source = FileSvidSource(cert, key, check_interval=5, monotonic=ticks)
    entered, release = threading.Event(), threading.Event()
    load = X509Svid.load

    def held(cls: type[X509Svid], *paths: Path) -> X509Svid:
        entered.set()
        release.wait(10)
        return load(*paths)

    monkeypatch.setattr(X509Svid, "load", classmethod(held))
    second.save(cert, key)
    settled(cert, key)
    ticks.now = 5
    reloaded: list[X509Svid] = []
    checker = threading.Thread(target=lambda: reloaded.append(source.get_x509_svid()))
    checker.start()
    try:
        assert entered.wait(10)

        def child() -> str:
            release.set()  # this process's loads go through at once
            third.save(cert, key)
            settled(cert, key)
            ticks.now = 10
            return source.get_x509_svid().fingerprint

        assert in_child(child) == third.fingerprint
    finally:
        release.set()
        checker.join(10)
    assert not checker.is_alive() and len(reloaded) == 1  # the parent's check ended too


def test_a_child_forked_while_its_parent_rebuilt_the_bundle_set_goes_on_reloading(
    ca: DevCA, other_ca: DevCA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fork while another thread builds the set of the bundles files gave (it holds the
    source's lock, which the child inherits held): the child's callers must neither wait on it
    for ever nor keep the bundles of before the fork."""
    ours, theirs = tmp_path / "ours.pem", tmp_path / "theirs.pem"
    ours.write_bytes(ca.bundle.to_pem())
    theirs.write_bytes(other_ca.bundle.to_pem())
    ticks = Ticks()
    source = FileBundleSource(
        {"example.org": ours, "other.org": theirs}, check_interval=5, monotonic=ticks
    )
    second, third = DevCA.create("example.org"), DevCA.create("example.org")
    entered, release = threading.Event(), threading.Event()
    build = files.BundleSet

    def held(bundles: Any) -> BundleSet:
        entered.set()
        release.wait(10)
        return build(bundles)

    monkeypatch.setattr(files, "BundleSet", held)
    ours.write_bytes(second.bundle.to_pem())
    settled(ours)
    ticks.now = 5
    checker = threading.Thread(target=source.get_bundle_set)
    checker.start()
    try:
        assert entered.wait(10)

        def child() -> str:
            release.set()  # this process's builds go through at once
            ours.write_bytes(third.bundle.to_pem())
            settled(ours)
            ticks.now = 10
            bundle = source.get_bundle_set().get("example.org")
            return "third" if bundle == third.bundle else "other"

        assert in_child(child, timeout=10) == "third"
    finally:
        release.set()
        checker.join(10)
    assert not checker.is_alive()
    assert source.get_bundle_set().get("example.org") == second.bundle


def test_between_checks_a_bundle_source_of_several_files_costs_one_clock_read(
    ca: DevCA, other_ca: DevCA, tmp_path: Path
) -> None:
    """The set is read on every handshake and request: until a file is due for a check, that
    is one clock read, as with one file, not a look at every file's watcher."""
    ours, theirs = tmp_path / "ours.pem", tmp_path / "theirs.pem"
    ours.write_bytes(ca.bundle.to_pem())
    theirs.write_bytes(other_ca.bundle.to_pem())
    reads = 0
    now = 0.0

    def monotonic() -> float:
        nonlocal reads
        reads += 1
        return now

    source = FileBundleSource(
        {"example.org": ours, "other.org": theirs}, check_interval=5, monotonic=monotonic
    )
    first = source.get_bundle_set()
    rotated = DevCA.create("example.org")
    ours.write_bytes(rotated.bundle.to_pem())
    settled(ours)
    reads = 0
    assert all(source.get_bundle_set() is first for _ in range(10))
    assert reads == 10
    now = 5  # due: every file is checked, the changed one reloaded
    assert source.get_bundle_set().get("example.org") == rotated.bundle
    assert source.get_bundle_set().get("other.org") == other_ca.bundle
