"""gunicorn serving mTLS directly, with the caller's certificate reaching the application.

gunicorn does not put the client certificate in the WSGI environ. Two pieces fix that:

* :class:`ZeroTrustTLS` -- its :meth:`~ZeroTrustTLS.ssl_context` is a gunicorn ``ssl_context``
  server hook that serves with zerotrust's :func:`~zerotrust.server_ssl_context`: client
  certificates are required, verified as X509-SVIDs of their own trust domain and authorized
  during the handshake, and a rotated SVID is picked up by new connections without a restart;
* :class:`SyncWorker` / :class:`ThreadWorker` -- gunicorn's ``sync`` and ``gthread`` workers,
  plus the verified peer (``environ["zerotrust.peer"]``) and the DER chain
  (``environ["zerotrust.peer_chain"]``) in the environ of every request on the connection,
  where :class:`~zerotrust.adapters.wsgi.WSGIRequestView` (Flask, Django, plain WSGI) reads it.

A gunicorn configuration file (``gunicorn -c zerotrust_conf.py app:app``)::

    from zerotrust import FileBundleSource, FileSvidSource, match
    from zerotrust.adapters.gunicorn import ZeroTrustTLS

    tls = ZeroTrustTLS(
        FileSvidSource("/run/svid/svid.pem", "/run/svid/svid_key.pem"),
        FileBundleSource({"example.org": "/run/svid/bundle.pem"}),
        authorizer=match.member_of("example.org"),
    )
    bind = "0.0.0.0:8443"
    certfile, keyfile = "/run/svid/svid.pem", "/run/svid/svid_key.pem"  # switches TLS on
    ssl_context = tls.ssl_context
    worker_class = "zerotrust.adapters.gunicorn.SyncWorker"

The workers also work with gunicorn's own TLS options (``--ca-certs``, ``--cert-reqs 2``): the
chain then reaches the Guard unverified and is verified there, per request.
"""

from __future__ import annotations

import os
import ssl
import threading
from collections.abc import Iterable, Mapping
from typing import Any, Final

from zerotrust.errors import ConfigurationError, MissingCredentials, MissingDependencyError

try:
    from gunicorn.workers.gthread import (  # type: ignore[import-untyped,unused-ignore]
        ThreadWorker as _GThreadWorker,
    )
    from gunicorn.workers.sync import (  # type: ignore[import-untyped,unused-ignore]
        SyncWorker as _GSyncWorker,
    )
except ImportError as exc:
    raise MissingDependencyError("gunicorn", "gunicorn", error=exc) from exc

from zerotrust.adapters.wsgi import CHAIN_ENVIRON_KEY, PEER_ENVIRON_KEY, Environ, StartResponse
from zerotrust.identity import TrustDomain, match
from zerotrust.identity.match import Matcher
from zerotrust.sources.files import FileBundleSource, FileSvidSource
from zerotrust.x509.bundle import BundleSet, TrustBundle
from zerotrust.x509.peer import verified_chain_der
from zerotrust.x509.sources import X509BundleSource, X509SvidSource
from zerotrust.x509.sslcontext import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    RefusalListener,
    ZeroTrustSSLContext,
    server_ssl_context,
)
from zerotrust.x509.svid import X509Svid

__all__ = ["SyncWorker", "ThreadWorker", "ZeroTrustTLS"]

_CHAIN_ATTRIBUTE: Final = "_zerotrust_chain"


def _connection_chain(sock: ssl.SSLSocket) -> tuple[bytes, ...]:
    """The peer's DER chain (the verified one when zerotrust's context verified it), computed
    once per connection."""
    chain: tuple[bytes, ...] | None = sock.__dict__.get(_CHAIN_ATTRIBUTE)
    if chain is None:
        try:
            chain = tuple(verified_chain_der(sock))
        except MissingCredentials:  # gunicorn's own TLS with optional client certificates
            chain = ()
        setattr(sock, _CHAIN_ATTRIBUTE, chain)
    return chain


class _PeerEnviron:
    """WSGI wrapper adding the connection's client certificate to the environ."""

    __slots__ = ("app",)

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, environ: Environ, start_response: StartResponse) -> Any:
        sock = environ.get("gunicorn.socket")
        if isinstance(sock, ssl.SSLSocket):
            peer = getattr(sock, "zerotrust_peer", None)
            if peer is not None:
                environ[PEER_ENVIRON_KEY] = peer
            chain = _connection_chain(sock)
            if chain:
                environ[CHAIN_ENVIRON_KEY] = chain
        return self.app(environ, start_response)


class _PeerWorkerMixin:
    cfg: Any
    wsgi: Any

    def init_process(self) -> None:
        # The peer is verified inside do_handshake(); gunicorn's default of a lazy handshake
        # (done implicitly by the first read) would skip that step.
        if self.cfg.is_ssl and not self.cfg.do_handshake_on_connect:
            self.cfg.set("do_handshake_on_connect", True)
        super().init_process()  # type: ignore[misc]

    def load_wsgi(self) -> None:
        super().load_wsgi()  # type: ignore[misc]
        if not isinstance(self.wsgi, _PeerEnviron):
            self.wsgi = _PeerEnviron(self.wsgi)


class SyncWorker(_PeerWorkerMixin, _GSyncWorker):  # type: ignore[misc]
    """gunicorn's ``sync`` worker, with the client certificate in every request's environ."""


class ThreadWorker(_PeerWorkerMixin, _GThreadWorker):  # type: ignore[misc]
    """gunicorn's ``gthread`` worker, with the client certificate in every request's environ.

    Use it instead of ``SyncWorker`` when ``threads > 1`` (gunicorn then replaces any
    ``...SyncWorker`` with its own threaded worker).
    """


class ZeroTrustTLS:
    """zerotrust mTLS for gunicorn: the SVID to serve, the bundles and the caller authorizer.

    Put ``ssl_context = tls.ssl_context`` in the gunicorn configuration (gunicorn >= 21 calls
    it as ``ssl_context(config, default_ssl_context_factory)``). Each worker process builds its
    context once, on its first connection; sources are re-read before every new connection,
    so rotated SVIDs and bundles take effect without a restart. gunicorn only serves TLS when
    ``certfile`` is set: point ``certfile``/``keyfile`` at the SVID files (they must exist).
    A client must finish its TLS handshake within ``handshake_timeout`` seconds (gunicorn's
    workers handshake on blocking sockets, and its own ``timeout`` does not cover a stalled
    handshake on a ``gthread`` worker's thread).
    """

    __slots__ = (
        "_authorizer",
        "_bundles",
        "_context",
        "_handshake_timeout",
        "_lock",
        "_minimum",
        "_on_refusal",
        "_pid",
        "_svid",
    )

    def __init__(
        self,
        svid: X509SvidSource | X509Svid,
        bundles: X509BundleSource | TrustBundle | BundleSet,
        *,
        authorizer: Matcher,
        minimum_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2,
        on_refusal: RefusalListener | None = None,
        handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
    ) -> None:
        if authorizer is None or not callable(authorizer):
            raise ConfigurationError("ZeroTrustTLS needs authorizer= (e.g. match.member_of(...))")
        self._svid = svid
        self._bundles = bundles
        self._authorizer = authorizer
        self._minimum = minimum_version
        self._on_refusal = on_refusal  # each refused handshake (see server_ssl_context)
        self._handshake_timeout = handshake_timeout
        self._context: ZeroTrustSSLContext | None = None
        self._pid = -1
        self._lock = threading.Lock()

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        authorizer: Matcher | None = None,
        on_refusal: RefusalListener | None = None,
        handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
    ) -> ZeroTrustTLS:
        """Files named by environment variables: ``ZEROTRUST_SVID_CERT``, ``ZEROTRUST_SVID_KEY``,
        ``ZEROTRUST_BUNDLE`` (PEM or SPIFFE JWKS) and ``ZEROTRUST_TRUST_DOMAIN`` (the bundle's
        trust domain). ``authorizer`` defaults to any workload of that trust domain."""
        env = os.environ if environ is None else environ
        names = ("ZEROTRUST_SVID_CERT", "ZEROTRUST_SVID_KEY", "ZEROTRUST_BUNDLE")
        missing = [n for n in (*names, "ZEROTRUST_TRUST_DOMAIN") if not env.get(n)]
        if missing:
            raise ConfigurationError(f"missing environment variables: {', '.join(missing)}")
        domain = TrustDomain.parse(env["ZEROTRUST_TRUST_DOMAIN"])
        return cls(
            FileSvidSource(env["ZEROTRUST_SVID_CERT"], env["ZEROTRUST_SVID_KEY"]),
            FileBundleSource({domain: env["ZEROTRUST_BUNDLE"]}),
            authorizer=authorizer if authorizer is not None else match.member_of(domain),
            on_refusal=on_refusal,
            handshake_timeout=handshake_timeout,
        )

    def ssl_context(self, config: Any, default_ssl_context_factory: Any) -> ZeroTrustSSLContext:
        """The gunicorn ``ssl_context`` hook: this process's zerotrust server context, offering
        by ALPN the protocols of gunicorn's ``http_protocols`` (HTTP/2 with ``"h2,h1"``)."""
        context = self._context
        if context is not None and self._pid == os.getpid():
            return context
        with self._lock:
            if self._context is None or self._pid != os.getpid():
                _check_worker(config)
                _check_settings(config)
                context = server_ssl_context(
                    self._svid,
                    self._bundles,
                    authorizer=self._authorizer,
                    minimum_version=self._minimum,
                    on_refusal=self._on_refusal,
                    handshake_timeout=self._handshake_timeout,
                )
                alpn = _alpn_protocols(config)
                if alpn:
                    context.set_alpn_protocols(alpn)
                self._context = context
                self._pid = os.getpid()
            return self._context

    def __repr__(self) -> str:
        return f"ZeroTrustTLS(authorizer={self._authorizer!r})"


def _alpn_protocols(config: Any) -> list[str]:
    """The ALPN protocols gunicorn's own TLS context offers for its ``http_protocols`` setting
    (``h2`` and ``http/1.1`` for ``"h2,h1"``, when gunicorn serves HTTP/2): this hook replaces
    that context, and without them no client could negotiate HTTP/2. None for the sync worker,
    which speaks HTTP/1.1 only (a client that chose h2 would get no answer), or a gunicorn
    without HTTP/2."""
    worker: Any = getattr(config, "worker_class", None)
    if not (isinstance(worker, type) and issubclass(worker, _GThreadWorker)):
        return []
    try:
        from gunicorn.sock import (  # type: ignore[import-untyped,unused-ignore]
            _get_alpn_protocols,
        )
    except ImportError:
        return []
    return list(_get_alpn_protocols(config))


#: gunicorn's own TLS settings, and their defaults: the zerotrust context replaces the context
#: they would configure, so a value set for one of them would be silently ignored.
_IGNORED_SETTINGS: Final = (("ciphers", None), ("ca_certs", None), ("cert_reqs", ssl.CERT_NONE))


def _check_settings(config: Any) -> None:
    """Refuse gunicorn TLS settings the zerotrust context would silently replace (a cipher
    list, other CA certificates, another client-certificate requirement)."""
    ignored = [
        name for name, default in _IGNORED_SETTINGS if getattr(config, name, default) != default
    ]
    if ignored:
        raise ConfigurationError(
            f"gunicorn's {', '.join(ignored)} do not apply with ZeroTrustTLS: its context"
            " requires and verifies client X509-SVIDs against the trust bundles and chooses"
            " the ciphers; remove them"
        )


def _check_worker(config: Any) -> None:
    worker: Any = getattr(config, "worker_class", None)
    if not (isinstance(worker, type) and issubclass(worker, _PeerWorkerMixin)):
        names: Iterable[str] = (f"{__name__}.SyncWorker", f"{__name__}.ThreadWorker")
        raise ConfigurationError(
            "the client certificate cannot reach the application with this worker class;"
            f" use worker_class = {' or '.join(repr(n) for n in names)}"
        )
