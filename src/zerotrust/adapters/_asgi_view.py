"""A :class:`~zerotrust.RequestView` over an ASGI ``http`` or ``websocket`` scope.

Everything is read from the scope the server built: method, raw path, scheme, ``Host``,
the client address, the headers (decoded as latin-1, names lower-cased) and the TLS extension
(``client_cert_chain`` PEM strings, and the peer a zerotrust SSL context verified during the
handshake). Headers and the certificate chain are decoded lazily, on first use. No framework
imports.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from typing import Any

from zerotrust.adapters._tls_scope import TLS_PEER_KEY
from zerotrust.authn.request import MAX_HEADER_LINES, Kind, encode_path
from zerotrust.errors import MalformedCertificate, MalformedCredentials
from zerotrust.x509._certs import MAX_CHAIN_LENGTH
from zerotrust.x509.verify import VerifiedPeer

__all__ = ["ScopeView", "scope_tls", "strip_scope_headers"]

_WS_SCHEMES = {"ws": "http", "wss": "https"}


def scope_tls(scope: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """``scope["extensions"]["tls"]`` when the server provided it."""
    extensions = scope.get("extensions")
    if not extensions:
        return None
    tls = extensions.get("tls")
    return tls if isinstance(tls, Mapping) else None


class ScopeView:
    """The request an ASGI scope describes, as the Guard sees it.

    ``route`` is the route template the adapter resolved (``None`` when no route matched).
    """

    __slots__ = (
        "_absent",
        "_chain",
        "_headers",
        "_overflow",
        "_scope",
        "_tls",
        "_underscored",
        "kind",
        "method",
        "path",
        "route",
    )

    kind: Kind
    method: str
    route: str | None
    path: str

    def __init__(self, scope: Mapping[str, Any], route: str | None) -> None:
        self._scope = scope
        self._headers: dict[str, list[str]] | None = None
        self._absent: frozenset[str] = frozenset()  # names known to be absent
        self._underscored: bool | None = None  # a header name with '_'? (None: not looked)
        tls = self._tls = scope_tls(scope)
        # False: not decoded yet (without the TLS extension there is nothing to decode)
        self._chain: Sequence[bytes] | bool | None = None if tls is None else False
        websocket = scope["type"] == "websocket"
        self.kind = "websocket" if websocket else "http"
        self.method = "GET" if websocket else scope["method"]
        self.route = route
        raw = scope.get("raw_path")
        if raw:
            self.path = raw.decode("latin-1")
        else:  # a server without raw_path: the decoded path, encoded again
            self.path = encode_path(str(scope.get("path") or "/").encode("utf-8", "replace"))
        # Over MAX_HEADER_LINES nothing is read: no header, no credential, and the refusal is
        # raised (and audited) inside the Guard's flow when it asks for the peer.
        self._overflow = len(scope.get("headers", ())) > MAX_HEADER_LINES

    @property
    def scheme(self) -> str:
        """``http`` or ``https`` (websocket schemes are reported as their HTTP twins)."""
        scheme = self._scope.get("scheme") or ("ws" if self.kind == "websocket" else "http")
        return _WS_SCHEMES.get(scheme, scheme)

    @property
    def host(self) -> str | None:
        """The ``Host`` header, else the server address the connection arrived on."""
        hosts = self.header("host")
        if hosts:
            return hosts[0]
        server = self._scope.get("server")
        if not server or not server[1]:
            return None
        address = str(server[0])
        return f"[{address}]:{server[1]}" if ":" in address else f"{address}:{server[1]}"

    @property
    def remote_addr(self) -> str | None:
        """The immediate peer's IP address."""
        client = self._scope.get("client")
        return client[0] if client else None

    @property
    def verified_peer(self) -> VerifiedPeer | None:
        """The peer a zerotrust SSL context verified during the TLS handshake, if any."""
        if self._overflow:
            raise MalformedCredentials(f"more than {MAX_HEADER_LINES} header lines")
        tls = self._tls
        peer = tls.get(TLS_PEER_KEY) if tls is not None else None
        return peer if isinstance(peer, VerifiedPeer) else None

    def _table(self) -> dict[str, list[str]]:
        headers = self._headers
        if headers is None:
            headers = {}
            for raw_name, raw_value in () if self._overflow else self._scope.get("headers", ()):
                key = raw_name.decode("latin-1").lower()
                value = raw_value.decode("latin-1")
                if key in headers:
                    headers[key].append(value)
                else:
                    headers[key] = [value]
            self._headers = headers
        return headers

    @property
    def underscored(self) -> bool:
        """Whether a header name holds ``_`` (then a lookalike of a forwarded-certificate
        header may be among them: see :func:`strip_scope_headers`)."""
        seen = self._underscored
        if seen is None:
            seen = self._underscored = any(b"_" in n for n, _ in self._scope.get("headers", ()))
        return seen

    def header(self, name: str) -> list[str]:
        """Every value of header ``name`` (case-insensitive), in order; ``[]`` if absent."""
        values = (self._headers or self._table()).get(name.lower())
        return list(values) if values else []

    def has_any(self, names: Iterable[str]) -> bool:
        """Whether any of the (lower-case) header ``names`` is present."""
        if not isinstance(names, (frozenset, set, tuple, list)):
            names = tuple(names)  # read twice below
        headers = self._headers
        if headers is None:
            if self._absent.issuperset(names):  # bearer_alone saw none of them
                return False
            headers = self._table()
        return not headers.keys().isdisjoint(names)

    def bearer_alone(self, absent: frozenset[str]) -> str | None:
        """The token of one ``Authorization: Bearer`` header when none of the (lower-case)
        headers ``absent`` is present; ``None`` otherwise."""
        table = self._headers
        if table is not None:
            values = table.get("authorization")
            if values is None or len(values) != 1 or not table.keys().isdisjoint(absent):
                return None
            value = values[0]
        elif self._overflow:
            return None
        else:  # one pass over the raw headers, names read as _table() reads them
            raw: bytes | None = None
            underscored = False
            for raw_name, raw_value in self._scope.get("headers", ()):
                name = raw_name.decode("latin-1").lower()
                if name in absent:
                    return None
                if name == "authorization":
                    if raw is not None:
                        return None
                    raw = raw_value
                elif "_" in name:
                    underscored = True
            self._absent = absent
            self._underscored = underscored
            if raw is None:
                return None
            value = raw.decode("latin-1")
        return value[7:] if value[:7] == "Bearer " else None

    @property
    def peer_chain(self) -> Sequence[bytes] | None:
        """The client certificate chain from the TLS extension (DER, leaf first)."""
        chain = self._chain
        if chain is False:
            chain = self._chain = _decode_chain(self._tls)
        return chain  # type: ignore[return-value]


def strip_scope_headers(
    scope: MutableMapping[str, Any], names: Iterable[str], lookalikes: Iterable[str] = ()
) -> bool:
    """Remove the (lower-case) headers ``names`` from ``scope``, and any header spelled with
    ``_`` for one of ``names`` or ``lookalikes`` (``x_forwarded_client_cert``): ASGI servers
    pass such names on, and a WSGI application mounted below reads them as the hyphenated
    header. Whether any was there."""
    headers = scope.get("headers") or ()
    drop = {name.encode("latin-1") for name in names}
    if not drop and not any(b"_" in raw_name for raw_name, _ in headers):
        return False  # the usual request: nothing to look at twice
    alike = drop | {name.encode("latin-1") for name in lookalikes}

    def dropped(raw_name: bytes) -> bool:
        low = raw_name.lower()
        return low in drop or (b"_" in low and low.replace(b"_", b"-") in alike)

    if not any(dropped(raw_name) for raw_name, _ in headers):
        return False
    scope["headers"] = [pair for pair in headers if not dropped(pair[0])]
    return True


def _decode_chain(tls: Mapping[str, Any] | None) -> tuple[bytes, ...] | None:
    if tls is None:
        return None
    pems = tls.get("client_cert_chain") or ()
    if isinstance(pems, (str, bytes)):
        raise MalformedCertificate("client_cert_chain must be a list of PEM strings")
    pems = tuple(pems)
    if not pems:
        return None
    if len(pems) > MAX_CHAIN_LENGTH:
        raise MalformedCertificate(f"client certificate chain longer than {MAX_CHAIN_LENGTH}")
    try:
        return tuple(ssl.PEM_cert_to_DER_cert(pem) for pem in pems)
    except (ValueError, TypeError):
        raise MalformedCertificate("client certificate in the TLS extension is not PEM") from None
