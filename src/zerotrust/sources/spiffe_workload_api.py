"""SVIDs, bundles and JWT-SVIDs from the SPIFFE Workload API (a SPIRE agent), ``zerotrust[spiffe]``.

:class:`WorkloadApiX509Source` is an X.509-SVID source and a bundle source fed by the
agent's ``FetchX509SVID`` stream; :class:`WorkloadApiJwtSource` is a token source of
JWT-SVIDs (``FetchJWTSVID``, cached per audience) and a key source of the JWT bundles of the
``FetchJWTBundles`` stream. Both:

* talk to the agent over its Unix socket (``socket_path``, else ``SPIFFE_ENDPOINT_SOCKET``)
  with the ``workload.spiffe.io: true`` header the agent requires on every call;
* keep each stream open on a background thread; every update is converted and validated
  in full, then swapped in as one immutable snapshot (an invalid update is refused and the
  previous snapshot stays), so TLS contexts and verifiers pick up rotations without restart;
* reconnect after a broken stream with exponential backoff and jitter, serving the last
  snapshot meanwhile (an expired X.509-SVID is never served);
* answer ``get_*`` calls from memory without blocking; the first update is awaited with a
  bounded wait: in the constructor (``wait=True``), :meth:`wait_ready`, or without blocking
  an event loop by :meth:`wait_ready_async` / ``async with``;
* report their health through :meth:`status` and stop with :meth:`close` (or ``with``).

The ``spiffe`` package supplies the protobuf messages and the gRPC stub; its own high-level
client is not used because it gives up for good after one failure, cannot start before the
agent's socket exists, backs off without jitter and cannot join its threads on close.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from zerotrust._clock import Clock
from zerotrust.errors import SourceError, SvidUnavailable
from zerotrust.identity import SpiffeId
from zerotrust.sources import _workload_grpc as wire
from zerotrust.sources._workload_base import (
    FORKED,
    SocketPath,
    WorkloadApiBase,
    spiffe_id_string,
)
from zerotrust.sources._workload_convert import (
    SvidEntry,
    X509Context,
    withdrawn,
    x509_context,
)
from zerotrust.sources._workload_jwt import WorkloadApiJwtSource
from zerotrust.sources._workload_watch import WorkloadApiStatus
from zerotrust.x509.bundle import BundleSet
from zerotrust.x509.svid import X509Svid

__all__ = ["WorkloadApiJwtSource", "WorkloadApiStatus", "WorkloadApiX509Source"]


class WorkloadApiX509Source(WorkloadApiBase):
    """The workload's X.509-SVID and trust bundles (its own and federated) from the agent.

    An :class:`~zerotrust.X509SvidSource` and :class:`~zerotrust.X509BundleSource`: pass it
    as both to :func:`~zerotrust.server_ssl_context` / :func:`~zerotrust.client_ssl_context`.
    With ``wait=True`` the constructor waits up to ``timeout_first`` seconds for the first
    SVID and raises :class:`~zerotrust.errors.SvidUnavailable` if none came. The default
    SVID is the first one the agent sends; ``spiffe_id`` / ``hint`` choose another.
    """

    _unavailable = SvidUnavailable
    _first = "X.509-SVID"

    def __init__(
        self,
        socket_path: SocketPath = None,
        *,
        timeout_first: float = 10.0,
        wait: bool = True,
        spiffe_id: SpiffeId | str | None = None,
        hint: str | None = None,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        clock: Clock | None = None,
    ) -> None:
        self._want = (spiffe_id_string(spiffe_id), hint)
        self._snapshot: X509Context | None = None
        super().__init__(
            socket_path,
            timeout_first=timeout_first,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            clock=clock,
        )
        self._watch(
            "zerotrust-workload-x509",
            self._stub.FetchX509SVID,
            wire.pb2.X509SVIDRequest(),
            self._on_update,
            wait,
        )

    def _on_update(self, response: Any) -> str | None:
        entries = [
            SvidEntry(s.spiffe_id, s.x509_svid, s.x509_svid_key, s.bundle, s.hint)
            for s in response.svids
        ]
        self._snapshot = x509_context(
            entries,
            dict(response.federated_bundles),
            spiffe_id=self._want[0],
            hint=self._want[1],
            previous=self._snapshot,
            now=self._clock.now(),
        )
        return self._snapshot.refused

    def _current(self, error: type[SourceError]) -> X509Context:
        snapshot = self._snapshot
        if self._closed:
            raise error("the Workload API source is closed")
        if self._forked():
            raise error(FORKED)
        if snapshot is None:
            raise error("no X.509-SVID from the Workload API yet")
        return snapshot

    def _on_denied(self) -> None:
        snapshot = self._snapshot
        if snapshot is not None and snapshot.svid is not None:
            self._snapshot = X509Context(None, snapshot.bundles, withdrawn())

    def _withdrawn(self) -> bool:
        snapshot = self._snapshot
        return snapshot is not None and snapshot.svid is None

    def get_x509_svid(self) -> X509Svid:
        """The current SVID (never blocks). Raises :class:`~zerotrust.errors.SvidUnavailable`
        before the first update, after :meth:`close`, once it expired unrotated, and once the
        agent withdrew it (an update without it, or ``PERMISSION_DENIED``)."""
        snapshot = self._current(SvidUnavailable)
        svid = snapshot.svid
        if svid is None:
            raise SvidUnavailable(snapshot.refused or withdrawn())
        if self._clock.now() >= svid.expires_at:
            raise SvidUnavailable("the X.509-SVID expired and the Workload API sent no other")
        return svid

    def _expires_at(self) -> datetime | None:
        snapshot = self._snapshot
        svid = snapshot.svid if snapshot is not None else None
        return svid.expires_at if svid is not None else None

    def get_bundle_set(self) -> BundleSet:
        """The current trust bundles, federated ones included (never blocks)."""
        return self._current(SourceError).bundles
