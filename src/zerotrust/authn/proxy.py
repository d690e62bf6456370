"""Client certificates forwarded by trusted TLS-terminating proxies (Envoy, nginx, RFC 9440).

When a proxy terminates mTLS in front of the application, the client's certificate reaches the
application in a request header. Anyone can send such a header, so it is believed **only**
when the immediate peer is a configured :class:`TrustedProxies` entry (by address, and
optionally by the SPIFFE ID the proxy proved over mTLS). From anyone else the headers are
ignored and :func:`extract_forwarded_cert` says so, so the caller can audit the attempt.

The forwarded chain is *not* verified here: verify it with
:func:`~zerotrust.verify_x509_svid` exactly like a direct mTLS peer. Everything in this module
is pure (no I/O) and parsing raises only :class:`~zerotrust.errors.MalformedCredentials`.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from zerotrust.authn._pem import DEFAULT_MAX_HEADER_BYTES, parse_nginx_cert
from zerotrust.authn._rfc9440 import parse_client_cert, parse_client_cert_chain
from zerotrust.authn._trusted import FORWARDED_CERT_HEADERS, HeaderFormat, TrustedProxies
from zerotrust.authn._xfcc import MAX_XFCC_ELEMENTS, XfccElement, parse_xfcc
from zerotrust.errors import MalformedCredentials
from zerotrust.identity import SpiffeId
from zerotrust.x509._certs import MAX_CHAIN_LENGTH
from zerotrust.x509.verify import MAX_CACHED_CHAIN_BYTES

__all__ = [
    "DEFAULT_MAX_HEADER_BYTES",
    "FORWARDED_CERT_HEADERS",
    "MAX_XFCC_ELEMENTS",
    "ForwardedResult",
    "HeaderFormat",
    "TrustedProxies",
    "XfccElement",
    "extract_forwarded_cert",
    "parse_client_cert",
    "parse_client_cert_chain",
    "parse_nginx_cert",
    "parse_xfcc",
]


@dataclass(frozen=True, slots=True)
class ForwardedResult:
    """What :func:`extract_forwarded_cert` decided.

    * ``chain`` -- the forwarded chain (DER, leaf first) when a trusted proxy sent one; verify
      it with :func:`~zerotrust.verify_x509_svid`. ``source`` names its format.
    * ``ignored`` -- forwarded-certificate headers were present and (some of them) not used;
      ``ignored_headers`` names them and ``ignored_reason`` says why: ``"untrusted_peer"``
      (no configuration, an untrusted or unknown peer address), ``"proxy_id_missing"`` (the
      proxy did not authenticate with mTLS), ``"proxy_id_not_allowed"`` (its SPIFFE ID was
      refused), or ``"unexpected_header"`` (a trusted proxy passed a header of another format,
      which its own sanitizing does not cover). Record an audit event whenever it is set.
    * ``proxy_address`` -- the trusted proxy's address (IPv4-mapped addresses unmapped), set
      whenever the peer passed the trust checks.
    """

    chain: tuple[bytes, ...] | None = field(default=None, repr=False)
    source: HeaderFormat | None = None
    ignored: bool = False
    ignored_reason: str | None = None
    ignored_headers: tuple[str, ...] = ()
    proxy_address: str | None = None


_NOTHING = ForwardedResult()


def _single(values: list[str], name: str) -> str:
    if len(values) != 1:
        raise MalformedCredentials(f"{name} must be sent once, got {len(values)} header lines")
    return values[0]


def _forwarded_chain(
    headers: Callable[[str], list[str]], config: TrustedProxies
) -> tuple[bytes, ...] | None:
    limit = config.max_header_bytes
    name = config.header_name
    if config.header == "xfcc":
        elements = parse_xfcc(_single(headers(name), name), max_bytes=limit)
        return _xfcc_chain(elements, config.hop)
    if config.header == "nginx":
        value = _single(headers(name), name)
        if not value.strip(" \t"):  # no certificate (nginx itself leaves the header out then)
            return None
        return parse_nginx_cert(
            value, max_bytes=limit, allow_unescaped_pem=config.allow_unescaped_pem
        )
    cert_name, chain_name = config.format_headers
    leaf_lines = headers(cert_name)
    if not leaf_lines:
        raise MalformedCredentials("Client-Cert-Chain was sent without Client-Cert")
    leaf = parse_client_cert(_single(leaf_lines, cert_name), max_bytes=limit)
    chain_lines = headers(chain_name)
    rest = parse_client_cert_chain(chain_lines, max_bytes=limit) if chain_lines else ()
    if 1 + len(rest) > MAX_CHAIN_LENGTH:
        raise MalformedCredentials(f"forwarded chain exceeds {MAX_CHAIN_LENGTH} certificates")
    return (leaf, *rest)


def _xfcc_chain(
    elements: tuple[XfccElement, ...], hop: Literal["last", "first"]
) -> tuple[bytes, ...]:
    """The chain of the element ``hop`` names, once every element that carries a certificate
    has been found consistent with it.

    Envoy writes ``URI`` and ``DNS`` values unquoted: a client certificate whose SAN holds a
    ``,`` (legal in a URI, never in a SPIFFE ID) splits the proxy's element in two, and the
    text after the comma (``Cert=<someone else's certificate>``) reads as an element of its
    own, the last one. The part before the comma keeps the client's real ``Cert`` with a URI
    or DNS list that no longer matches it, so checking every element, not only the chosen
    one, refuses the header.
    """
    chosen = elements[-1 if hop == "last" else 0]
    for element in elements:
        if element is not chosen and element.carries_certificate:
            element.der_chain()  # for its cross-checks; only the chosen chain is used
    return chosen.der_chain()


class ParsedChains:
    """Forwarded chains already parsed, by a SHA-256 digest of the exact header lines they were
    read from: a proxy forwards the same client's certificate on every request, and parsing
    it (percent-decoding, PEM or base64, each certificate loaded and checked) costs more than
    the rest of the request's authentication. Only what parsed is kept (a malformed header
    raises every time), at most ``size`` chains and ``max_bytes`` of their certificates, the
    oldest going first: these chains are not verified yet, and a proxy may forward large ones
    (``TrustedProxies(max_header_bytes=...)`` allows up to 1 MiB a header)."""

    __slots__ = ("_bytes", "_entries", "_lock", "_max_bytes", "_size")

    def __init__(self, size: int = 1024, *, max_bytes: int = MAX_CACHED_CHAIN_BYTES) -> None:
        self._size = size
        self._max_bytes = max_bytes
        self._bytes = 0  # of the certificates the entries hold
        self._entries: dict[bytes, tuple[tuple[bytes, ...] | None, int]] = {}
        self._lock = threading.Lock()

    def chain(
        self, headers: Callable[[str], list[str]], config: TrustedProxies
    ) -> tuple[bytes, ...] | None:
        """What :func:`_forwarded_chain` returns for these headers."""
        lines = {name: headers(name) for name in config.format_headers}
        if sum(len(line) for values in lines.values() for line in values) > (
            2 * config.max_header_bytes
        ):
            return _forwarded_chain(headers, config)  # refused as too large: nothing to keep
        digest = hashlib.sha256()
        for values in lines.values():
            digest.update(len(values).to_bytes(4, "big"))
            for line in values:
                raw = line.encode("utf-8", "surrogatepass")
                digest.update(len(raw).to_bytes(8, "big") + raw)
        key = digest.digest()
        try:
            return self._entries[key][0]
        except KeyError:
            pass
        chain = _forwarded_chain(lambda name: lines.get(name, []), config)
        size = sum(map(len, chain)) if chain else 0
        if size > self._max_bytes:  # never kept: nothing else goes for it
            return chain
        with self._lock:
            entries = self._entries
            old = entries.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            while entries and (len(entries) >= self._size or self._bytes + size > self._max_bytes):
                self._bytes -= entries.pop(next(iter(entries)))[1]
            entries[key] = (chain, size)
            self._bytes += size
        return chain

    def __len__(self) -> int:
        return len(self._entries)


def extract_forwarded_cert(
    headers: Callable[[str], list[str]],
    remote_addr: str | None,
    proxy_spiffe_id: SpiffeId | None,
    config: TrustedProxies | None,
) -> ForwardedResult:
    """Decide whether the request carries a client certificate forwarded by a trusted proxy.

    ``headers(name)`` returns every value of a header (case-insensitive, lower-case names are
    passed); ``remote_addr`` is the immediate peer's IP and ``proxy_spiffe_id`` the SPIFFE ID it
    proved over mTLS, if any. Headers from an untrusted peer are never parsed. Headers from a
    trusted proxy must be well formed: otherwise :class:`~zerotrust.errors.MalformedCredentials`
    is raised (as is a single-valued header sent on more than one line, a smuggling pattern,
    and an XFCC header any of whose elements that carry a certificate is inconsistent with it:
    see :meth:`XfccElement.der_chain`).
    """
    return forwarded_cert(headers, remote_addr, proxy_spiffe_id, config, None)


def forwarded_cert(
    headers: Callable[[str], list[str]],
    remote_addr: str | None,
    proxy_spiffe_id: SpiffeId | None,
    config: TrustedProxies | None,
    parsed: ParsedChains | None,
) -> ForwardedResult:
    """:func:`extract_forwarded_cert`, taking chains already parsed from ``parsed``."""
    names = FORWARDED_CERT_HEADERS if config is None else config.header_names
    present = tuple(name for name in names if headers(name))
    if not present:
        return _NOTHING
    if config is None:
        return ForwardedResult(
            ignored=True, ignored_reason="untrusted_peer", ignored_headers=present
        )
    reason = config.distrust(remote_addr, proxy_spiffe_id)
    if reason is not None:
        return ForwardedResult(ignored=True, ignored_reason=reason, ignored_headers=present)
    address = config.trusted_address(remote_addr)
    others = tuple(name for name in present if name not in config.format_headers)
    if len(others) == len(present):
        return ForwardedResult(
            ignored=True,
            ignored_reason="unexpected_header",
            ignored_headers=others,
            proxy_address=address,
        )
    chain = _forwarded_chain(headers, config) if parsed is None else parsed.chain(headers, config)
    return ForwardedResult(
        chain=chain,
        source=config.header if chain is not None else None,
        ignored=bool(others),
        ignored_reason="unexpected_header" if others else None,
        ignored_headers=others,
        proxy_address=address,
    )
