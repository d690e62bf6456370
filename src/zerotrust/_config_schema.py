"""The sections of :class:`~zerotrust.config.Settings`: one frozen dataclass per table.

The dataclasses are the single source of truth for the configuration: the file and
environment readers (:mod:`zerotrust._config_sources`) derive the accepted keys, their types
and their environment variable names from these fields and their metadata.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, Generic, Literal, NoReturn, TypeVar, final
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from zerotrust.authn._pem import DEFAULT_MAX_HEADER_BYTES
from zerotrust.authn.binding import DPoPConfig
from zerotrust.stores._logic import DEFAULT_PREFIX, DEFAULT_REPLAY_MAX_TTL
from zerotrust.tokens.signature import DEFAULT_MAX_TOKEN_SIZE

__all__ = [
    "REDACTED",
    "ApiKeySettings",
    "AuditSettings",
    "DPoPSettings",
    "MtlsSettings",
    "PolicySettings",
    "ProxySettings",
    "RemoteKeySettings",
    "Secret",
    "StoreSettings",
    "TokenSettings",
    "shown_url",
]

#: What :meth:`Settings.to_dict` shows instead of a secret value.
REDACTED = "<redacted>"
_T = TypeVar("_T")

#: Field metadata keys understood by the readers:
#: ``path`` (a file path: relative paths in a file are relative to that file's directory),
#: ``group`` (at most one member of a group may be set), ``sensitive`` (``"bytes"``, ``"text"`` or
#: ``"map"``: never inline in a file, also settable as ``<name>_file``), ``min``/``above``/``max``
#: (numeric bounds), ``many`` (a single string is read as a one-item list), ``json`` (an opaque
#: document), ``nonempty`` (optional, but an empty environment variable is refused rather than
#: read as unset), ``internal`` (not a setting), ``url`` (a URL whose query values are shown
#: as ``<redacted>``: a client library may read any of them, secrets included).
_INTERNAL: Mapping[str, Any] = MappingProxyType({"internal": True})


def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


@final
class Secret(Generic[_T]):
    """A secret setting: ``repr``/``str`` show ``<redacted>``; :meth:`reveal` returns the value."""

    __slots__ = ("_value",)
    _value: _T

    def __init__(self, value: _T) -> None:
        object.__setattr__(self, "_value", value)

    def reveal(self) -> _T:
        """The secret value itself: pass it on, never log it."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({REDACTED!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and bool(self._value == other._value)

    __hash__ = None  # type: ignore[assignment]

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError("Secret is immutable")

    def __reduce__(self) -> NoReturn:
        raise TypeError("secrets are not pickled")


def _meta(**items: Any) -> Mapping[str, Any]:
    return MappingProxyType(items)


def shown_url(url: str) -> str:
    """``url`` with each query value and any user information replaced by ``<redacted>``
    (query names kept), for display."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    if "@" not in parts.netloc and not parts.query:
        return url
    if "@" in parts.netloc:
        parts = parts._replace(netloc=f"{REDACTED}@{parts.netloc.rpartition('@')[2]}")
    if not parts.query:
        return urlunsplit(parts)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    query = "&".join(f"{name}={REDACTED}" for name, _ in pairs) or REDACTED
    return urlunsplit(parts._replace(query=query))


@dataclass(frozen=True)
class RemoteKeySettings:
    """``tokens.remote``: how ``jwks_url`` / ``oidc_issuer`` keys are fetched and cached."""

    ca_file: str | None = field(default=None, metadata=_meta(path=True))
    timeout: float = field(default=5.0, metadata=_meta(above=0, max=600))
    min_ttl: float = field(default=60.0, metadata=_meta(above=0))
    max_ttl: float = field(default=86400.0, metadata=_meta(above=0))
    default_ttl: float = field(default=300.0, metadata=_meta(min=0))
    max_stale: float = field(default=3600.0, metadata=_meta(min=0))
    allow_http_loopback: bool = False


_KEYS = "key source"


def _repr_hiding_url_queries(self: Any) -> str:
    """A section's ``repr`` whose URL settings (``url`` metadata) show :func:`shown_url`: the
    query of a URL may hold a secret."""
    shown = []
    for f in fields(self):
        value = getattr(self, f.name)
        if f.metadata.get("url") and isinstance(value, str):
            value = shown_url(value)
        shown.append(f"{f.name}={value!r}")
    return f"{type(self).__name__}({', '.join(shown)})"


@dataclass(frozen=True, kw_only=True)
class TokenSettings:
    """``tokens``: accept bearer tokens from one issuer (omit the table to accept none).

    ``issuer`` may be left out for JWT-SVIDs checked against a trust domain only (SPIRE leaves
    ``iss`` out of them unless told otherwise); every other token profile needs it.
    """

    issuer: str | None = field(default=None, metadata=_meta(nonempty=True))
    audience: tuple[str, ...] = field(metadata=_meta(many=True))
    algorithms: tuple[str, ...] = field(metadata=_meta(many=True))
    jwks_url: str | None = field(default=None, metadata=_meta(group=_KEYS, url=True))
    oidc_issuer: str | None = field(default=None, metadata=_meta(group=_KEYS, url=True))
    jwks_file: str | None = field(default=None, metadata=_meta(group=_KEYS, path=True))
    spiffe_trust_domain: str | None = field(default=None, metadata=_meta(group=_KEYS))
    spiffe_trust_domains: tuple[str, ...] | None = field(
        default=None, metadata=_meta(group=_KEYS, many=True)
    )
    hmac_secret: Secret[bytes] | None = field(
        default=None, metadata=_meta(group=_KEYS, sensitive="bytes")
    )
    token_type: Literal["jwt-svid", "at+jwt"] | None = None
    trust_domain: str | None = None
    leeway: float = field(default=60.0, metadata=_meta(min=0, max=600))
    max_lifetime: float | None = field(default=None, metadata=_meta(above=0))
    required_claims: tuple[str, ...] = ()
    max_token_size: int = DEFAULT_MAX_TOKEN_SIZE
    cache_size: int = field(default=10_000, metadata=_meta(min=0))
    max_delegation_depth: int = field(default=4, metadata=_meta(min=0))
    require: bool = False
    remote: RemoteKeySettings = field(default_factory=RemoteKeySettings)

    __repr__ = _repr_hiding_url_queries


@dataclass(frozen=True)
class MtlsSettings:
    """``mtls``: verify client certificates (direct or forwarded) against these bundles."""

    bundles: Mapping[str, str] = field(metadata=_meta(path=True))
    bundle_format: Literal["auto", "pem", "jwks"] = "auto"
    require: bool = False
    token_must_match_peer: bool = False
    check_interval: float = field(default=1.0, metadata=_meta(above=0))


@dataclass(frozen=True)
class ProxySettings:
    """``proxies``: the TLS-terminating proxies allowed to forward client certificates."""

    addresses: tuple[str, ...] = ()
    spiffe_ids: tuple[str, ...] = ()
    header: Literal["xfcc", "client-cert", "nginx"] = "xfcc"
    header_name: str | None = None
    hop: Literal["last", "first"] = "last"
    max_header_bytes: int = field(default=DEFAULT_MAX_HEADER_BYTES, metadata=_meta(above=0))
    allow_unescaped_pem: bool = False


@dataclass(frozen=True)
class ApiKeySettings:
    """``api_keys``: SHA-256 hex digests of accepted API keys, ``{key_id: digest}``."""

    hashes: Secret[Mapping[str, str]] = field(metadata=_meta(sensitive="map"))
    header: str = "x-api-key"


@dataclass(frozen=True)
class DPoPSettings:
    """``dpop``: RFC 9449 proofs for DPoP-bound tokens (on by default)."""

    enabled: bool = True
    algorithms: tuple[str, ...] = DPoPConfig().algorithms
    max_age: float = field(default=300.0, metadata=_meta(above=0, max=3600))
    leeway: float = field(default=5.0, metadata=_meta(min=0, max=300))
    origins: tuple[str, ...] = field(default=(), metadata=_meta(many=True))
    nonce_secret: Secret[bytes] | None = field(default=None, metadata=_meta(sensitive="bytes"))
    nonce_previous_secret: Secret[bytes] | None = field(
        default=None, metadata=_meta(sensitive="bytes")
    )
    nonce_lifetime: float = field(default=60.0, metadata=_meta(min=1, max=3600))


_POLICY = "policy source"


@dataclass(frozen=True)
class PolicySettings:
    """``policy``: a policy ``file``, or the policy written inline (``rules`` and friends).

    ``document`` is the policy document that was read (the file's content, or the inline
    keys); ``source`` names it in error messages.
    """

    file: str | None = field(default=None, metadata=_meta(group=_POLICY, path=True))
    rules: Any = field(default=None, repr=False, metadata=_meta(group=_POLICY, json=True))
    id: str | None = None
    default: Literal["deny", "allow"] | None = None
    dry_run: bool | None = None
    rate_limits: Any = field(default=None, repr=False, metadata=_meta(json=True))
    document: Mapping[str, Any] = field(
        default_factory=_empty, repr=False, compare=False, metadata=_INTERNAL
    )
    source: str = field(default="policy", repr=False, compare=False, metadata=_INTERNAL)


@dataclass(frozen=True)
class StoreSettings:
    """``store``: where revocations, replay entries and rate limits live."""

    url: str = field(default="memory://", metadata=_meta(url=True))
    username: str | None = None
    password: Secret[str] | None = field(default=None, metadata=_meta(sensitive="text"))
    prefix: str = DEFAULT_PREFIX
    socket_timeout: float = field(default=0.5, metadata=_meta(above=0, max=600))
    max_connections: int = field(default=100, metadata=_meta(min=1, max=100_000))
    replay_max_ttl: float = field(default=DEFAULT_REPLAY_MAX_TTL, metadata=_meta(min=1))
    revocation: Literal["closed", "open"] = "closed"
    replay: Literal["closed", "open"] = "closed"
    rate_limit: Literal["closed", "open"] = "closed"
    check_revocation: bool = True

    __repr__ = _repr_hiding_url_queries


_Field = Literal["actor", "client_id", "spiffe_id", "subject"]
_Level = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


@dataclass(frozen=True)
class AuditSettings:
    """``audit``: where audit events go and what a failing sink means."""

    sinks: tuple[Literal["logging", "otel"], ...] = ("logging",)
    on_error: Literal["open", "closed"] = "open"
    logger: str = "zerotrust.audit"
    level: _Level = "INFO"
    include_personal_data: bool = False
    pseudonymize: tuple[_Field, ...] = ()
    pseudonym_key: Secret[bytes] | None = field(default=None, metadata=_meta(sensitive="bytes"))
