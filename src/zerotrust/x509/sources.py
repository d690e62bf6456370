"""Where SVIDs and bundles come from: one-method protocols and in-memory rotating sources.

A source hands out immutable snapshots. Consumers (TLS contexts, verifiers) call the source for
every new handshake or verification and compare snapshots by identity, so a rotation is picked
up without restarting anything. :class:`~zerotrust.X509Svid`, :class:`~zerotrust.TrustBundle`
and :class:`~zerotrust.BundleSet` are static sources of themselves. File-backed sources live in
:mod:`zerotrust.sources.files`.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from zerotrust.errors import ConfigurationError

if TYPE_CHECKING:
    from zerotrust.x509.bundle import BundleSet, TrustBundle
    from zerotrust.x509.svid import X509Svid

__all__ = ["RotatingBundleSource", "RotatingSvidSource", "X509BundleSource", "X509SvidSource"]


@runtime_checkable
class X509SvidSource(Protocol):
    """Anything that hands out the workload's current X.509-SVID."""

    def get_x509_svid(self) -> X509Svid:
        """The current SVID snapshot; called for every new handshake, so a rotation is picked up."""
        ...


@runtime_checkable
class X509BundleSource(Protocol):
    """Anything that hands out the current set of trust bundles (one per trust domain)."""

    def get_bundle_set(self) -> BundleSet:
        """The current bundles snapshot; called for every verification, so rotation is picked up."""
        ...


def _an_svid(svid: object) -> X509Svid:
    from zerotrust.x509.svid import X509Svid  # at run time only: svid imports this module

    if not isinstance(svid, X509Svid):
        raise ConfigurationError(f"an X509Svid is needed, not {type(svid).__name__}")
    return svid


class RotatingSvidSource:
    """An in-memory SVID source whose snapshot is replaced whole by :meth:`set`."""

    __slots__ = ("_lock", "_svid")

    def __init__(self, svid: X509Svid) -> None:
        self._svid = _an_svid(svid)
        self._lock = threading.Lock()

    def get_x509_svid(self) -> X509Svid:
        """The SVID last given to the constructor or :meth:`set`."""
        return self._svid

    def set(self, svid: X509Svid) -> None:
        """Make ``svid`` current: the next handshake presents it. Anything but an
        :class:`~zerotrust.X509Svid` (``None`` included) is a ``ConfigurationError``: the
        handshakes would go on presenting the previous one."""
        checked = _an_svid(svid)
        with self._lock:
            self._svid = checked

    def __repr__(self) -> str:
        return f"RotatingSvidSource({self._svid!r})"


class RotatingBundleSource:
    """An in-memory bundle source; :meth:`set` and :meth:`set_bundle` swap whole snapshots."""

    __slots__ = ("_bundles", "_lock")

    def __init__(self, bundles: BundleSet | TrustBundle) -> None:
        self._bundles = bundles.get_bundle_set()
        self._lock = threading.Lock()

    def get_bundle_set(self) -> BundleSet:
        """The current snapshot: as last given to the constructor, :meth:`set` or
        :meth:`set_bundle`."""
        return self._bundles

    def set(self, bundles: BundleSet | TrustBundle) -> None:
        """Make ``bundles`` the whole snapshot: a trust domain it lacks is no longer trusted."""
        with self._lock:
            self._bundles = bundles.get_bundle_set()

    def set_bundle(self, bundle: TrustBundle) -> None:
        """Replace (or add) the bundle of ``bundle.trust_domain``, keeping the others."""
        with self._lock:
            self._bundles = self._bundles.with_bundle(bundle)

    def __repr__(self) -> str:
        return f"RotatingBundleSource({self._bundles!r})"
