"""An in-process SPIFFE Workload API server for tests (SPIRE itself is not run).

It speaks the real protocol: a gRPC server on a Unix socket built from the servicer base
class and the protobuf messages that the ``spiffe`` package generates from the Workload API
definition. Like a SPIRE agent it refuses every call without the ``workload.spiffe.io: true``
metadata header (``INVALID_ARGUMENT``). Tests set what it serves (X.509-SVIDs and bundles
minted by zerotrust's DevCA, JWT-SVIDs signed by a TokenIssuer, JWT bundles), push
rotations to open streams, drop streams, refuse new ones, and stop/restart the server.
"""

from __future__ import annotations

import collections
import queue
import threading
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import grpc
from cryptography.hazmat.primitives import serialization
from spiffe._proto import workload_pb2 as pb2
from spiffe._proto import workload_pb2_grpc as pb2_grpc

from zerotrust import TrustBundle, X509Svid
from zerotrust.tokens import TokenIssuer

HEADER = ("workload.spiffe.io", "true")
_DER = serialization.Encoding.DER


def der_certs(certs: Iterable[Any]) -> bytes:
    return b"".join(cert.public_bytes(_DER) for cert in certs)


def x509_response(
    svid: X509Svid,
    bundle: TrustBundle,
    *,
    federated: Iterable[TrustBundle] = (),
    extra: Iterable[tuple[X509Svid, str]] = (),
    hint: str = "",
) -> Any:
    """An ``X509SVIDResponse`` holding ``svid`` first (then ``extra`` SVIDs with hints)."""

    def entry(item: X509Svid, item_hint: str) -> Any:
        key = item.private_key.private_bytes(
            _DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return pb2.X509SVID(
            spiffe_id=str(item.spiffe_id),
            x509_svid=der_certs(item.cert_chain),
            x509_svid_key=key,
            bundle=der_certs(bundle.x509_authorities),
            hint=item_hint,
        )

    return pb2.X509SVIDResponse(
        svids=[entry(svid, hint), *(entry(s, h) for s, h in extra)],
        federated_bundles={
            b.trust_domain.id_string(): der_certs(b.x509_authorities) for b in federated
        },
    )


def jwt_bundles_response(documents: Mapping[str, Mapping[str, Any]]) -> Any:
    import json

    return pb2.JWTBundlesResponse(
        bundles={td: json.dumps(doc).encode() for td, doc in documents.items()}
    )


class _Servicer(pb2_grpc.SpiffeWorkloadAPIServicer):  # type: ignore[misc]
    def __init__(self, state: WorkloadApiServer) -> None:
        self.state = state

    def FetchX509SVID(self, request: Any, context: Any) -> Iterator[Any]:
        yield from self.state._stream(context, "x509")

    def FetchJWTBundles(self, request: Any, context: Any) -> Iterator[Any]:
        yield from self.state._stream(context, "jwt_bundles")

    def FetchJWTSVID(self, request: Any, context: Any) -> Any:
        return self.state._jwt_svid(request, context)


class WorkloadApiServer:
    """See the module docstring. ``socket_path`` is a filesystem path; ``address`` the URI."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self.address = f"unix://{socket_path}"
        self._cond = threading.Condition()
        self._responses: dict[str, Any] = {}
        self._versions: collections.Counter[str] = collections.Counter()
        self._drops = 0
        self._stopping = False
        #: A status code to refuse new calls with (``None``: serve them).
        self.refusing: grpc.StatusCode | None = None
        self.refused_without_header = 0
        self.open_streams: collections.Counter[str] = collections.Counter()
        self.jwt_issuer: TokenIssuer | None = None
        self.jwt_subject = "spiffe://example.org/workload"
        self.jwt_ttl = 300
        self.jwt_fetches: collections.Counter[tuple[str, ...]] = collections.Counter()
        #: The ``spiffe_id`` of every FetchJWTSVID request ("" when none was asked for).
        self.jwt_spiffe_ids: list[str] = []
        #: When set, the JWT-SVID served instead of a token for the audiences asked for.
        self.jwt_served: str | None = None
        #: When set, FetchJWTSVID holds its answer until the event is set (at most 30 s);
        #: each call held puts on ``jwt_held`` an event that is set once the call has ended
        #: (answered, or cancelled by the client).
        self.jwt_gate: threading.Event | None = None
        self.jwt_held: queue.Queue[threading.Event] = queue.Queue()
        self._server: Any = None
        self._pool: ThreadPoolExecutor | None = None

    # --- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        assert self._server is None
        with self._cond:
            self._stopping = False
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="fake-agent")
        server = grpc.server(self._pool)
        pb2_grpc.add_SpiffeWorkloadAPIServicer_to_server(_Servicer(self), server)
        server.add_insecure_port(f"unix:{self.socket_path}")
        server.start()
        self._server = server

    def stop(self) -> None:
        server, pool = self._server, self._pool
        if server is None:
            return
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        server.stop(grace=None).wait(10)
        assert pool is not None
        pool.shutdown(wait=True)
        self._server = self._pool = None

    # --- what tests control ----------------------------------------------------------------

    def push(self, kind: str, response: Any) -> None:
        """Serve ``response`` on the ``"x509"`` or ``"jwt_bundles"`` streams (open ones too)."""
        with self._cond:
            self._responses[kind] = response
            self._versions[kind] += 1
            self._cond.notify_all()

    def drop_streams(self) -> None:
        """Abort every open stream with UNAVAILABLE (clients must reconnect)."""
        with self._cond:
            self._drops += 1
            self._cond.notify_all()

    # --- the protocol ----------------------------------------------------------------------

    def _check_header(self, context: Any) -> None:
        if HEADER not in tuple(context.invocation_metadata()):
            with self._cond:
                self.refused_without_header += 1
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "security header missing from request")

    def _stream(self, context: Any, kind: str) -> Iterator[Any]:
        self._check_header(context)
        if self.refusing is not None:
            context.abort(self.refusing, "refused by the test")

        def wake() -> None:
            with self._cond:
                self._cond.notify_all()

        context.add_callback(wake)
        with self._cond:
            drops, seen = self._drops, 0
            self.open_streams[kind] += 1
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(partial(self._woken, context, kind, drops, seen), 5)
                    if self._stopping or not context.is_active():
                        return
                    dropped = self._drops != drops
                    response = self._responses.get(kind)
                    changed = self._versions[kind] != seen
                    seen = self._versions[kind]
                if dropped:
                    context.abort(grpc.StatusCode.UNAVAILABLE, "stream dropped by the test")
                if changed and response is not None:
                    yield response
        finally:
            with self._cond:
                self.open_streams[kind] -= 1

    def _woken(self, context: Any, kind: str, drops: int, seen: int) -> bool:
        return (
            self._stopping
            or not context.is_active()
            or self._drops != drops
            or self._versions[kind] != seen
        )

    def _jwt_svid(self, request: Any, context: Any) -> Any:
        self._check_header(context)
        if self.refusing is not None:
            context.abort(self.refusing, "refused by the test")
        issuer = self.jwt_issuer
        if issuer is None:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "no identity issued")
        audience = tuple(request.audience)
        if not audience:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "audience must be specified")
        with self._cond:
            self.jwt_fetches[audience] += 1
            self.jwt_spiffe_ids.append(request.spiffe_id)
        gate = self.jwt_gate
        if gate is not None:
            ended = threading.Event()
            context.add_callback(ended.set)
            self.jwt_held.put(ended)
            gate.wait(30)
        token = self.jwt_served or issuer.issue(
            subject=self.jwt_subject,
            audience=list(audience),
            ttl=self.jwt_ttl,
            token_type="jwt-svid",
        )
        return pb2.JWTSVIDResponse(svids=[pb2.JWTSVID(spiffe_id=self.jwt_subject, svid=token)])
