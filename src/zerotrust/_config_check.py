"""Checks across settings: contradictions and missing companions, named in every message."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from zerotrust._config_files import freeze, read_document, thaw
from zerotrust._config_schema import (
    DPoPSettings,
    PolicySettings,
    RemoteKeySettings,
    StoreSettings,
)
from zerotrust._config_sources import fail
from zerotrust.authz.loader import policy_from_dict
from zerotrust.errors import ConfigurationError, MissingDependencyError, ZeroTrustError
from zerotrust.identity import TrustDomain
from zerotrust.stores._logic import KeySpace
from zerotrust.stores._redis_plan import path_problem, query_problem, url_overrides

if TYPE_CHECKING:
    from zerotrust.config import Settings

__all__ = ["KEY_SOURCES", "Names", "check", "hook_names", "named", "named_field"]

KEY_SOURCES = (
    "jwks_url",
    "oidc_issuer",
    "jwks_file",
    "spiffe_trust_domain",
    "spiffe_trust_domains",
    "hmac_secret",
)
_REMOTE = ("jwks_url", "oidc_issuer")
_INLINE_POLICY = ("id", "default", "dry_run", "rules", "rate_limits")
_REDIS_SCHEMES = ("redis", "rediss", "unix")


class Names:
    """How to name a setting in a message: where its value came from, else where it would go."""

    def __init__(self, origins: Mapping[str, str], where: str) -> None:
        self.origins = origins
        self.where = where

    def __call__(self, dotted: str) -> str:
        return self.origins.get(dotted) or f"{self.where}: {dotted}"


@contextmanager
def named(label: str) -> Iterator[None]:
    """Re-raise errors of the wrapped constructors as ConfigurationErrors naming ``label``."""
    try:
        yield
    except MissingDependencyError:
        raise
    except ZeroTrustError as exc:
        raise ConfigurationError(f"{label}: {exc}") from exc


@contextmanager
def named_field(
    name: Names, section: str, fields: Iterable[str], *, otherwise: str | None = None
) -> Iterator[None]:
    """As :func:`named`, for a constructor fed by several settings of ``section``: the message
    names the one of ``fields`` the error mentions first, else ``otherwise`` (else the section)."""
    try:
        yield
    except MissingDependencyError:
        raise
    except ZeroTrustError as exc:
        message = str(exc)
        found = [
            (match.start(), field)
            for field in fields
            if (match := re.search(rf"\b{re.escape(field)}\b", message)) is not None
        ]
        field = min(found)[1] if found else otherwise
        label = name(f"{section}.{field}" if field is not None else section)
        raise ConfigurationError(f"{label}: {exc}") from exc


def check(settings: Settings, name: Names) -> PolicySettings:
    """Raise on contradictory settings; return the policy settings with the document read."""
    if settings.tokens is None and settings.mtls is None and settings.api_keys is None:
        raise fail(
            name.where, "no way to authenticate callers: configure tokens, mtls and/or api_keys"
        )
    _check_tokens(settings, name)
    mtls = settings.mtls
    if mtls is not None and mtls.token_must_match_peer and settings.tokens is None:
        raise fail(name("mtls.token_must_match_peer"), "needs tokens (no token to compare)")
    if settings.proxies is not None and mtls is None:
        raise fail(
            name("proxies"),
            "forwarded certificates are verified against mtls.bundles: configure mtls",
        )
    _check_store(settings.store, name)
    audit = settings.audit
    if not audit.sinks:
        raise fail(name("audit.sinks"), "needs at least one sink ('logging', 'otel')")
    if audit.pseudonymize and audit.pseudonym_key is None:
        raise fail(
            name("audit.pseudonymize"),
            "needs audit.pseudonym_key (ZEROTRUST_AUDIT__PSEUDONYM_KEY or "
            "audit.pseudonym_key_file)",
        )
    if audit.pseudonym_key is not None and not audit.pseudonymize:
        raise fail(name("audit.pseudonym_key"), "is set but audit.pseudonymize names no field")
    if audit.include_personal_data and "otel" not in audit.sinks:
        raise fail(name("audit.include_personal_data"), "applies to the 'otel' sink only")
    if not settings.dpop.enabled:
        for changed in _changed(settings.dpop, DPoPSettings(enabled=False)):
            raise fail(name(f"dpop.{changed}"), "is set but dpop.enabled is false")
    if settings.dpop.nonce_secret is None:
        unset = DPoPSettings()
        for changed in ("nonce_previous_secret", "nonce_lifetime"):
            if getattr(settings.dpop, changed) != getattr(unset, changed):
                raise fail(name(f"dpop.{changed}"), "is set but dpop.nonce_secret is not")
    return _policy(settings.policy, name)


def _check_tokens(settings: Settings, name: Names) -> None:
    tokens = settings.tokens
    if tokens is None:
        return
    chosen = [key for key in KEY_SOURCES if getattr(tokens, key) is not None]
    if not chosen:
        options = ", ".join(f"tokens.{key}" for key in KEY_SOURCES)
        raise fail(name("tokens"), f"needs a key source: set one of {options}")
    if len(chosen) > 1:
        raise fail(
            name(f"tokens.{chosen[1]}"),
            f"conflicts with {name(f'tokens.{chosen[0]}')}: set exactly one key source",
        )
    if chosen[0] not in _REMOTE:
        for changed in _changed(tokens.remote, RemoteKeySettings()):
            raise fail(
                name(f"tokens.remote.{changed}"),
                "applies to tokens.jwks_url and tokens.oidc_issuer only",
            )
    hmac = [alg for alg in tokens.algorithms if alg.startswith("HS")]
    if tokens.hmac_secret is not None and (len(tokens.algorithms) != 1 or not hmac):
        raise fail(
            name("tokens.algorithms"),
            "an HMAC secret is used with exactly one algorithm: HS256, HS384 or HS512",
        )
    if tokens.hmac_secret is None and hmac:
        raise fail(
            name("tokens.algorithms"),
            f"{hmac[0]} needs tokens.hmac_secret (ZEROTRUST_TOKENS__HMAC_SECRET or "
            "tokens.hmac_secret_file)",
        )
    several = tokens.spiffe_trust_domains
    names = (tokens.spiffe_trust_domain,) if tokens.spiffe_trust_domain is not None else several
    svid = tokens.token_type == "jwt-svid"  # noqa: S105 - a token profile, not a secret
    if tokens.issuer is None and names is None and not (svid and tokens.trust_domain):
        raise fail(
            name("tokens.issuer"),
            "required: only JWT-SVIDs checked against a trust domain may leave it out"
            " (tokens.spiffe_trust_domain(s), or token_type = 'jwt-svid' with"
            " tokens.trust_domain)",
        )
    if names is None:
        return
    key = "spiffe_trust_domains" if several is not None else "spiffe_trust_domain"
    label = name(f"tokens.{key}")
    if tokens.token_type not in (None, "jwt-svid"):
        raise fail(name("tokens.token_type"), "keys from a SPIFFE bundle verify JWT-SVIDs only")
    if settings.mtls is None:
        raise fail(label, "reads the JWT authorities of mtls.bundles: configure mtls.bundles")
    try:
        domains = [TrustDomain.parse(td) for td in names]
        present = {TrustDomain.parse(td) for td in settings.mtls.bundles}
    except ZeroTrustError as exc:
        raise fail(label, str(exc)) from None
    for wanted in domains:
        if wanted not in present:
            raise fail(label, f"mtls.bundles has no bundle for {wanted.name!r}")
    if several is not None:
        if tokens.trust_domain is not None:
            raise fail(
                name("tokens.trust_domain"),
                "conflicts with tokens.spiffe_trust_domains: each JWT-SVID is checked against"
                " its own trust domain's keys",
            )
        return
    wanted = domains[0]
    if tokens.trust_domain is not None:
        try:
            same = TrustDomain.parse(tokens.trust_domain) == wanted
        except ZeroTrustError as exc:
            raise fail(name("tokens.trust_domain"), str(exc)) from None
        if not same:
            raise fail(
                name("tokens.trust_domain"),
                f"must be {wanted.name!r}: the JWT authorities of one trust domain cannot vouch"
                " for another's JWT-SVIDs",
            )


def _changed(section: object, defaults: object) -> list[str]:
    """The fields of ``section`` that differ from ``defaults``."""
    return [
        f.name
        for f in dataclasses.fields(defaults)  # type: ignore[arg-type]
        if getattr(section, f.name) != getattr(defaults, f.name)
    ]


def _check_store(store: StoreSettings, name: Names) -> None:
    label = name("store.url")
    try:
        parts = urlsplit(store.url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise fail(label, "is not a valid URL") from None
    if parts.scheme == "memory":
        if store.url != "memory://":
            raise fail(label, "the in-memory store is 'memory://' (no host, path or options)")
        for key in ("username", "password"):
            if getattr(store, key) is not None:
                raise fail(name(f"store.{key}"), "applies to a Redis store only")
        return
    if parts.scheme not in _REDIS_SCHEMES:
        raise fail(label, "must be 'memory://', or a redis://, rediss:// or unix:// URL")
    try:
        KeySpace(store.prefix)
    except ConfigurationError as exc:
        raise fail(name("store.prefix"), str(exc)) from None
    problem = path_problem(store.url)  # a password's unencoded '/': before it is shown
    if problem is not None:
        raise fail(label, problem)
    if parts.password is not None:
        raise fail(
            label,
            "must not hold a password: set ZEROTRUST_STORE__PASSWORD or store.password_file",
        )
    # the Redis client passes every query parameter to the connection: a secret there
    # (password, ssl_password, ...) would be in the settings file and shown with the URL
    for key in parse_qs(parts.query, keep_blank_values=True):
        if "password" in key.lower():
            raise fail(
                label,
                f"must not hold a password (query parameter {key!r}): set the Redis password"
                " with ZEROTRUST_STORE__PASSWORD or store.password_file",
            )
    overrides = url_overrides(store.url)
    if overrides:  # the Redis client would let them win over store.socket_timeout, ...
        raise fail(
            label,
            f"must not set {', '.join(overrides)} in its query: set store.socket_timeout and"
            " store.max_connections instead",
        )
    if parts.username and store.username is not None:
        raise fail(name("store.username"), f"conflicts with the user name in {label}")
    problem = query_problem(store.url)
    if problem is not None:
        raise fail(label, problem)


def hook_names(document: Any) -> set[str]:
    """The CUSTOM hook names a policy document refers to."""
    rules = document.get("rules") if isinstance(document, Mapping) else None
    if not isinstance(rules, (list, tuple)):
        return set()
    return {
        rule["hook"]
        for rule in rules
        if isinstance(rule, Mapping) and isinstance(rule.get("hook"), str)
    }


def _deny(*_: object) -> bool:  # pragma: no cover - never called
    return False  # placeholder while checking the document: build_guard gets the real hooks


def _policy(policy: PolicySettings, name: Names) -> PolicySettings:
    inline = {k: getattr(policy, k) for k in _INLINE_POLICY if getattr(policy, k) is not None}
    if policy.file is not None:
        if inline:
            first = next(iter(inline))
            raise fail(
                name(f"policy.{first}"),
                f"is part of an inline policy, but {name('policy.file')} is set",
            )
        document = read_document(Path(policy.file), name("policy.file"))
        source = policy.file
    elif inline:
        document = thaw(inline)
        source = name("policy")
    else:
        raise fail(
            name("policy"),
            "required: set policy.file (ZEROTRUST_POLICY__FILE) or write the policy inline "
            "(policy.rules)",
        )
    placeholders: dict[str, Callable[..., Any]] = dict.fromkeys(hook_names(document), _deny)
    policy_from_dict(document, hooks=placeholders, source=source)  # raises naming the key
    return replace(policy, document=freeze(document), source=source)
