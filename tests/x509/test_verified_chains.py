"""VerifiedChains: a chain verified against a bundle snapshot is answered from memory only
while that snapshot is current and every certificate of its path is valid."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from zerotrust import BundleSet, TrustBundle, X509Svid
from zerotrust._clock import SYSTEM_CLOCK
from zerotrust.dev import DevCA
from zerotrust.errors import (
    CertificateExpired,
    CertificateNotYetValid,
    ConfigurationError,
    SvidProfileViolation,
    UntrustedCertificate,
)
from zerotrust.x509.verify import VerifiedChains

WEB = "spiffe://example.org/web"


class Bundles:
    """A bundle source whose snapshot the test replaces (as a rotation does)."""

    def __init__(self, bundle_set: BundleSet) -> None:
        self.current = bundle_set

    def get_bundle_set(self) -> BundleSet:
        return self.current


def der_chain(svid: X509Svid) -> list[bytes]:
    return [cert.public_bytes(Encoding.DER) for cert in svid.cert_chain]


@pytest.fixture(scope="module")
def layered() -> DevCA:
    return DevCA.create("example.org", intermediate=True)


def test_the_same_chain_is_verified_once_per_snapshot(layered: DevCA) -> None:
    bundles = Bundles(BundleSet([layered.bundle]))
    chains = VerifiedChains(bundles)
    chain = der_chain(layered.issue_svid(WEB))
    now = SYSTEM_CLOCK.now()
    first = chains.verify(chain, now=now, role="client")
    assert str(first.spiffe_id) == WEB and len(first.chain) == 3
    assert chains.verify(list(chain), now=now + timedelta(seconds=1), role="client") is first
    assert len(chains) == 1
    # a new snapshot (a rotation): verified again, against the new one
    bundles.current = BundleSet([layered.bundle])
    again = chains.verify(chain, now=now, role="client")
    assert again is not first and again == first
    # the authority withdrawn: refused at once, whatever was remembered
    bundles.current = BundleSet([layered.bundle.with_x509_authorities([])])
    with pytest.raises(UntrustedCertificate):
        chains.verify(chain, now=now, role="client")


def test_a_remembered_chain_is_refused_outside_its_validity(layered: DevCA) -> None:
    chains = VerifiedChains(layered.bundle)  # a TrustBundle: its one snapshot
    svid = layered.issue_svid(WEB, ttl=timedelta(minutes=10))
    chain = der_chain(svid)
    leaf = svid.cert_chain[0]
    start = leaf.not_valid_before_utc
    peer = chains.verify(chain, now=start + timedelta(minutes=1), role="client")
    assert chains.verify(chain, now=leaf.not_valid_after_utc, role="client") is peer  # inclusive
    with pytest.raises(CertificateExpired):
        chains.verify(chain, now=leaf.not_valid_after_utc + timedelta(seconds=1), role="client")
    with pytest.raises(CertificateNotYetValid):
        chains.verify(chain, now=start - timedelta(seconds=1), role="client")
    assert chains.verify(chain, now=start, role="client") is peer  # still remembered


def test_the_path_ends_with_its_first_certificate_to_expire(layered: DevCA) -> None:
    """A leaf that outlives its intermediate: a remembered chain is not accepted past the
    intermediate's end, where the path stops validating."""
    chains = VerifiedChains(layered.bundle)
    intermediate_end = layered.issue_svid(WEB).cert_chain[1].not_valid_after_utc
    certs, _ = layered.issue_unchecked_leaf(
        uri_sans=[WEB],
        not_before=intermediate_end - timedelta(days=1),
        not_after=intermediate_end + timedelta(days=30),
    )
    intermediate = certs[1]
    assert intermediate.not_valid_after_utc < certs[0].not_valid_after_utc
    chain = [cert.public_bytes(Encoding.DER) for cert in certs]
    end = intermediate.not_valid_after_utc
    peer = chains.verify(chain, now=end - timedelta(hours=1), role="client")
    assert chains.verify(chain, now=end, role="client") is peer
    with pytest.raises(UntrustedCertificate):
        chains.verify(chain, now=end + timedelta(seconds=1), role="client")


def test_refusals_are_not_remembered_and_roles_are_kept_apart(layered: DevCA) -> None:
    other = DevCA.create("example.org")
    bundles = Bundles(BundleSet([layered.bundle]))
    chains = VerifiedChains(bundles)
    foreign = der_chain(other.issue_svid(WEB))
    now = SYSTEM_CLOCK.now()
    for _ in range(2):
        with pytest.raises(UntrustedCertificate):
            chains.verify(foreign, now=now, role="client")
    assert len(chains) == 0
    both = [*layered.bundle.x509_authorities, *other.bundle.x509_authorities]
    bundles.current = BundleSet([TrustBundle(layered.trust_domain, both)])
    assert str(chains.verify(foreign, now=now, role="client").spiffe_id) == WEB
    # the role is part of what was verified (its extended key usage): remembered apart
    certs, _ = layered.issue_unchecked_leaf(
        uri_sans=[WEB],
        not_before=now - timedelta(hours=1),
        not_after=now + timedelta(hours=1),
        extended_key_usage=[ExtendedKeyUsageOID.SERVER_AUTH],
    )
    server_only = [cert.public_bytes(Encoding.DER) for cert in certs]
    assert str(chains.verify(server_only, now=now, role="server").spiffe_id) == WEB
    with pytest.raises(SvidProfileViolation) as info:
        chains.verify(server_only, now=now, role="client")
    assert info.value.rule == "extended_key_usage"


def test_at_most_size_chains_are_kept_the_oldest_going_first(layered: DevCA) -> None:
    chains = VerifiedChains(layered.bundle, size=2)
    now = SYSTEM_CLOCK.now()
    a, b, c = (der_chain(layered.issue_svid(f"{WEB}/{n}")) for n in "abc")
    peer_a = chains.verify(a, now=now, role="client")
    chains.verify(b, now=now, role="client")
    chains.verify(c, now=now, role="client")
    assert len(chains) == 2
    assert chains.verify(a, now=now, role="client") is not peer_a  # a went first
    for size in (0, -1, True, 1.5):
        with pytest.raises(ConfigurationError):
            VerifiedChains(layered.bundle, size=size)  # type: ignore[arg-type]
    one = VerifiedChains(layered.bundle, size=1)  # the smallest memo: the last chain
    peer_c = one.verify(c, now=now, role="client")
    assert one.verify(c, now=now, role="client") is peer_c and len(one) == 1


def test_certificate_objects_are_verified_every_time(layered: DevCA) -> None:
    chains = VerifiedChains(layered.bundle)
    svid = layered.issue_svid(WEB)
    now = SYSTEM_CLOCK.now()
    first = chains.verify(svid.cert_chain, now=now, role="client")  # type: ignore[arg-type]
    assert chains.verify(svid.cert_chain, now=now, role="client") is not first  # type: ignore[arg-type]
    assert len(chains) == 0
    with pytest.raises(SvidProfileViolation):
        chains.verify(der_chain(layered.issue_svid(WEB))[1:], now=now, role="client")


def test_chains_padded_with_certificates_are_bounded_in_bytes(
    layered: DevCA, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A caller with a valid SVID may send its chain padded with certificates of no use to it,
    each padding a new entry: the bytes kept are bounded as well as the count."""
    from zerotrust.x509 import verify

    chain = der_chain(layered.issue_svid(WEB))
    pads = [
        layered.issue_svid(f"spiffe://example.org/pad{i}").leaf.public_bytes(Encoding.DER)
        for i in range(5)
    ]
    budget = 4 * sum(map(len, chain))  # more than the largest chain below
    monkeypatch.setattr(verify, "MAX_CACHED_CHAIN_BYTES", budget)
    chains = VerifiedChains(Bundles(BundleSet([layered.bundle])))
    now = SYSTEM_CLOCK.now()
    for k in range(len(pads) + 1):
        presented = [chain[0], *pads[:k], *chain[1:]]
        assert str(chains.verify(presented, now=now, role="client").spiffe_id) == WEB
        assert 0 < chains._bytes <= budget
        assert chains._bytes == sum(sum(map(len, key[1:])) for key in chains._entries)
    assert len(chains) < len(pads) + 1  # the oldest went to make room
    # a chain larger than the whole budget is verified, and not kept
    monkeypatch.setattr(verify, "MAX_CACHED_CHAIN_BYTES", sum(map(len, chain)) - 1)
    fresh = VerifiedChains(Bundles(BundleSet([layered.bundle])))
    assert str(fresh.verify(chain, now=now, role="client").spiffe_id) == WEB
    assert len(fresh) == 0 and fresh._bytes == 0
