"""Configuration of the proxies allowed to forward client certificates (see :mod:`.proxy`)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from typing import Literal, final, get_args

from zerotrust.authn._pem import DEFAULT_MAX_HEADER_BYTES
from zerotrust.errors import ConfigurationError
from zerotrust.identity import Matcher, MatchResult, SpiffeId

__all__ = ["CREDENTIAL_HEADERS", "FORWARDED_CERT_HEADERS", "HeaderFormat", "TrustedProxies"]

#: The forwarded-certificate header formats a proxy can be configured with.
HeaderFormat = Literal["xfcc", "client-cert", "nginx"]

_XFCC = "x-forwarded-client-cert"
_CLIENT_CERT = "client-cert"
_CLIENT_CERT_CHAIN = "client-cert-chain"
_NGINX = "x-ssl-client-cert"

#: Every header name (lower case) that can carry a forwarded client certificate by default.
#: Adapters strip these from requests that do not come from a trusted proxy; a deployment's
#: custom name is in :attr:`TrustedProxies.header_names`.
FORWARDED_CERT_HEADERS: tuple[str, ...] = (_XFCC, _CLIENT_CERT, _CLIENT_CERT_CHAIN, _NGINX)

_DEFAULT_NAMES: dict[str, tuple[str, ...]] = {
    "xfcc": (_XFCC,),
    "client-cert": (_CLIENT_CERT, _CLIENT_CERT_CHAIN),
    "nginx": (_NGINX,),
}
_HEADER_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+", re.ASCII)
#: Headers that carry a token or a proof: no other credential may be read from them.
CREDENTIAL_HEADERS: frozenset[str] = frozenset({"authorization", "dpop"})
#: Headers with a meaning of their own to HTTP, servers, proxies or tracing: a forwarded
#: certificate under one of these names would be parsed out of (and stripped from) requests
#: that carry the header for its own purpose.
_RESERVED_HEADERS: frozenset[str] = frozenset(
    {
        "accept",
        "accept-encoding",
        "baggage",
        "connection",
        "content-encoding",
        "content-length",
        "content-type",
        "cookie",
        "forwarded",
        "host",
        "keep-alive",
        "origin",
        "proxy-authorization",
        "referer",
        "te",
        "traceparent",
        "tracestate",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-real-ip",
    }
)
_MAX_CONFIGURABLE_BYTES = 1024 * 1024

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _unmap_network(network: _Network) -> _Network:
    """``::ffff:a.b.c.d/96+n`` is the IPv4 network ``a.b.c.d/n``."""
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    return network


def _within(address: _Address, network: _Network) -> bool:
    """Whether ``address`` is in ``network``, and on its link when the network names one:
    ``ipaddress`` ignores zones, and ``fe80::1`` on another interface is another host."""
    if address not in network:
        return False
    zone = getattr(network.network_address, "scope_id", None)
    return zone is None or zone == getattr(address, "scope_id", None)


def _parse_address(value: str | None) -> _Address | None:
    if not isinstance(value, str):
        return None
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@final
class TrustedProxies:
    """Which immediate peers may forward client certificates, and in which header format.

    * ``addresses`` -- IPs or CIDRs (IPv4 and IPv6) of the proxies. IPv4-mapped IPv6 peers
      (``::ffff:10.0.0.1``, as dual-stack sockets report IPv4 clients) match IPv4 entries, and
      ``::ffff:0:0/96``-style entries are read as IPv4. An IPv6 entry with a zone
      (``fe80::1%eth0``) matches peers on that link only; without one, on any link. Empty means
      "any address", which is allowed only together with ``spiffe_ids``.
    * ``spiffe_ids`` -- if set, the proxy must *also* have connected over mTLS with a SPIFFE ID
      this matcher accepts.
    * ``header`` -- the one format this deployment's proxy uses: ``"xfcc"`` (Envoy),
      ``"client-cert"`` (RFC 9440) or ``"nginx"`` (URL-encoded PEM).
    * ``header_name`` -- a different header name for ``"xfcc"`` or ``"nginx"`` (default
      ``x-forwarded-client-cert`` / ``x-ssl-client-cert``); RFC 9440 names are fixed.
    * ``hop`` -- which XFCC element to use: ``"last"`` (default), the one the trusted proxy
      appended. ``"first"`` is the element of the outermost proxy, and is safe only when every
      proxy on the path is trusted and sanitizes the header, since a client can send its own.
    * ``max_header_bytes`` -- bound on each forwarded header, all lines together.
    * ``allow_unescaped_pem`` -- ``"nginx"`` only: also accept the deprecated
      ``$ssl_client_cert`` form: raw PEM that nginx sends as an obsolete folded header (each
      line break becomes LF + TAB). gunicorn and uvicorn with httptools answer such a request
      400 before the application runs; h11-based servers (uvicorn ``--http h11``, hypercorn)
      unfold it into spaces. Prefer ``$ssl_client_escaped_cert``.

    Invalid settings raise :class:`~zerotrust.errors.ConfigurationError`. Instances are
    immutable.
    """

    __slots__ = (
        "_allow_unescaped_pem",
        "_header",
        "_header_name",
        "_hop",
        "_max_header_bytes",
        "_networks",
        "_own_names",
        "_spiffe_ids",
    )

    _networks: tuple[_Network, ...]
    _spiffe_ids: Matcher | None
    _header: HeaderFormat
    _header_name: str
    _own_names: tuple[str, ...]
    _hop: Literal["last", "first"]
    _max_header_bytes: int
    _allow_unescaped_pem: bool

    def __init__(
        self,
        addresses: Iterable[str] = (),
        *,
        spiffe_ids: Matcher | None = None,
        header: HeaderFormat = "xfcc",
        header_name: str | None = None,
        hop: Literal["last", "first"] = "last",
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        allow_unescaped_pem: bool = False,
    ) -> None:
        if isinstance(addresses, str):
            raise ConfigurationError("addresses must be a list of IPs or CIDRs, not one string")
        networks: list[_Network] = []
        for entry in addresses:
            if not isinstance(entry, str):
                raise ConfigurationError(f"trusted proxy address {entry!r} is not a string")
            try:
                networks.append(_unmap_network(ipaddress.ip_network(entry, strict=True)))
            except ValueError:
                raise ConfigurationError(
                    f"trusted proxy address {entry!r} is not an IP address or CIDR"
                ) from None
        if spiffe_ids is not None and not callable(spiffe_ids):
            raise ConfigurationError("spiffe_ids must be a matcher from zerotrust.match")
        if not networks and spiffe_ids is None:
            raise ConfigurationError("TrustedProxies needs addresses, spiffe_ids or both")
        if header not in get_args(HeaderFormat):
            raise ConfigurationError(f"unknown forwarded-certificate header format {header!r}")
        own_names = _DEFAULT_NAMES[header]
        if header_name is not None:
            own_names = (self._check_header_name(header, header_name),)
        if hop not in ("last", "first"):
            raise ConfigurationError(f"hop must be 'last' or 'first', not {hop!r}")
        if hop != "last" and header != "xfcc":
            raise ConfigurationError("hop applies to the 'xfcc' header format only")
        if type(max_header_bytes) is not int or not 0 < max_header_bytes <= _MAX_CONFIGURABLE_BYTES:
            raise ConfigurationError(
                f"max_header_bytes must be an int in 1..{_MAX_CONFIGURABLE_BYTES}"
            )
        if not isinstance(allow_unescaped_pem, bool):  # "false" must never read as true
            raise ConfigurationError("allow_unescaped_pem must be True or False")
        if allow_unescaped_pem and header != "nginx":
            raise ConfigurationError("allow_unescaped_pem applies to the 'nginx' format only")
        set_ = object.__setattr__
        set_(self, "_networks", tuple(networks))
        set_(self, "_spiffe_ids", spiffe_ids)
        set_(self, "_header", header)
        set_(self, "_header_name", own_names[0])
        set_(self, "_own_names", own_names)
        set_(self, "_hop", hop)
        set_(self, "_max_header_bytes", max_header_bytes)
        set_(self, "_allow_unescaped_pem", bool(allow_unescaped_pem))

    @staticmethod
    def _check_header_name(header: HeaderFormat, name: str) -> str:
        if header == "client-cert":
            raise ConfigurationError("the RFC 9440 header names cannot be changed")
        lowered = name.lower() if isinstance(name, str) else ""
        if not _HEADER_TOKEN.fullmatch(lowered):
            raise ConfigurationError(f"header_name {name!r} is not a valid header name")
        if lowered in FORWARDED_CERT_HEADERS and lowered not in _DEFAULT_NAMES[header]:
            raise ConfigurationError(f"header_name {name!r} belongs to another header format")
        if lowered in CREDENTIAL_HEADERS:
            raise ConfigurationError(f"header_name {name!r} carries another credential")
        if lowered in _RESERVED_HEADERS:
            raise ConfigurationError(f"header_name {name!r} is a header with a meaning of its own")
        return lowered

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("TrustedProxies is immutable")

    def __repr__(self) -> str:
        return (
            f"TrustedProxies({[str(n) for n in self._networks]!r}, "
            f"spiffe_ids={self._spiffe_ids!r}, header={self._header!r}, "
            f"header_name={self._header_name!r}, hop={self._hop!r})"
        )

    @property
    def networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """The trusted networks (single addresses are /32 or /128 networks)."""
        return self._networks

    @property
    def spiffe_ids(self) -> Matcher | None:
        """The matcher the proxy's own mTLS SPIFFE ID must also satisfy, or ``None`` (the address
        alone decides). When set, a proxy that proved no SPIFFE ID is not trusted."""
        return self._spiffe_ids

    @property
    def header(self) -> HeaderFormat:
        """The forwarded-certificate format: ``"xfcc"``, ``"client-cert"`` or ``"nginx"``."""
        return self._header

    @property
    def header_name(self) -> str:
        """The header read for this format (``client-cert`` for RFC 9440, plus its chain)."""
        return self._header_name

    @property
    def hop(self) -> Literal["last", "first"]:
        """Which XFCC element is read: ``"last"`` (the one the trusted proxy appended) or
        ``"first"`` (safe only if every proxy on the path is trusted and sanitizes the header)."""
        return self._hop

    @property
    def max_header_bytes(self) -> int:
        """The size bound, in bytes, of each forwarded-certificate header (all its lines
        together); a larger one raises :class:`~zerotrust.errors.MalformedCredentials`."""
        return self._max_header_bytes

    @property
    def allow_unescaped_pem(self) -> bool:
        """Whether the ``"nginx"`` format also accepts the deprecated ``$ssl_client_cert`` form
        (raw PEM, sent as a folded header that only some servers pass on)."""
        return self._allow_unescaped_pem

    @property
    def format_headers(self) -> tuple[str, ...]:
        """The header names this format reads (``client-cert`` and ``client-cert-chain`` for
        RFC 9440, else :attr:`header_name` alone)."""
        return self._own_names

    @property
    def header_names(self) -> tuple[str, ...]:
        """Every header name that can carry a forwarded certificate under this configuration:
        :data:`FORWARDED_CERT_HEADERS` plus a custom ``header_name``. Strip these from requests
        that do not come from a trusted proxy."""
        if self._header_name in FORWARDED_CERT_HEADERS:
            return FORWARDED_CERT_HEADERS
        return (*FORWARDED_CERT_HEADERS, self._header_name)

    def is_proxy(self, remote_addr: str | None, spiffe_id: SpiffeId | None) -> bool:
        """Whether a connection from ``remote_addr`` that proved ``spiffe_id`` over mTLS (or
        ``None``) passes the trust checks: such a peer may forward any client's certificate.
        A proxy relays requests and never makes them, so the Authenticator never takes its own
        certificate for the caller's."""
        return self.distrust(remote_addr, spiffe_id) is None

    def distrust(self, remote_addr: str | None, spiffe_id: SpiffeId | None) -> str | None:
        """Why a peer is not one of these proxies (``"untrusted_peer"``, ``"proxy_id_missing"``
        or ``"proxy_id_not_allowed"``), or ``None`` when it is."""
        if self.trusted_address(remote_addr) is None:
            return "untrusted_peer"
        matcher = self._spiffe_ids
        if matcher is None:
            return None
        if spiffe_id is None:
            return "proxy_id_missing"
        result: object = matcher(spiffe_id)
        if isinstance(result, MatchResult) and result.matched:
            return None
        return "proxy_id_not_allowed"

    def trusted_address(self, remote_addr: str | None) -> str | None:
        """``remote_addr`` (a bare IP), normalized, if it is a trusted proxy address; else
        ``None``. ``None`` or an unparsable value is never trusted; an IPv4-mapped IPv6 address
        is returned as the IPv4 address it carries."""
        address = _parse_address(remote_addr)
        if address is None:
            return None
        if not self._networks or any(_within(address, net) for net in self._networks):
            return str(address)
        return None
