"""Valid settings that weaken what a Guard enforces: each is said once, naming its setting,
so that a deliberate choice stays visible (``zerotrust config check`` prints them)."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl, urlsplit

from zerotrust._config_check import Names
from zerotrust.authn._trusted import _unmap_network

if TYPE_CHECKING:
    from zerotrust.config import Settings

__all__ = ["cautions"]

_STORE_OPEN: Final = (
    ("revocation", "a revoked token is accepted"),
    ("replay", "a DPoP proof can be used again"),
    ("rate_limit", "no rate limit is enforced"),
)


def cautions(settings: Settings, name: Names) -> tuple[str, ...]:
    """What ``settings`` let through that the defaults would refuse, one message each."""
    found: list[str] = []
    store = settings.store
    if not store.check_revocation:
        found.append(
            f"{name('store.check_revocation')}: false: revoked tokens are accepted until they"
            " expire"
        )
    for key, what in _STORE_OPEN:
        if getattr(store, key) == "open":
            found.append(
                f"{name(f'store.{key}')}: 'open': while the store cannot be reached, {what}"
            )
    found.extend(_store_url_cautions(store.url, name))
    proxies = settings.proxies
    if proxies is not None:
        if proxies.hop == "first":
            found.append(
                f"{name('proxies.hop')}: 'first': the outermost XFCC element decides; a client"
                " can send its own unless every proxy on the path is trusted and the outermost"
                " one strips the header"
            )
        found.extend(
            f"{name('proxies.addresses')}: {entry!r}: any address may forward a client"
            " certificate: any caller can pass off a certificate it has seen as its own"
            for entry in proxies.addresses
            if _unmap_network(ipaddress.ip_network(entry)).prefixlen == 0
        )
    found.extend(_policy_cautions(settings, name))
    return tuple(found)


#: redis-py reads these as false (``ssl_check_hostname``)
_FALSE: Final = frozenset({"0", "F", "FALSE", "N", "NO"})


def _store_url_cautions(url: str, name: Names) -> list[str]:
    """TLS verification turned off in the Redis URL's query (checked valid at load)."""
    found = []
    spoofed = "anyone on the network path can pose as the store"
    for key, value in parse_qsl(urlsplit(url).query, keep_blank_values=True):
        if key == "ssl_cert_reqs" and value.lower() in ("none", "cert_none"):
            found.append(
                f"{name('store.url')}: ssl_cert_reqs={value}: the Redis server's certificate"
                f" is not verified: {spoofed}"
            )
        elif key == "ssl_check_hostname" and value.upper() in _FALSE:
            found.append(
                f"{name('store.url')}: ssl_check_hostname={value}: the Redis server's"
                f" certificate may name any host: {spoofed}"
            )
    return found


def _policy_cautions(settings: Settings, name: Names) -> list[str]:
    policy = settings.policy
    document: Mapping[str, Any] = policy.document

    def where(key: str) -> str:
        if policy.file is not None:
            return f"{policy.source}: {key}"
        top, _, rest = key.partition("[")
        return name(f"policy.{top}") + (f"[{rest}" if rest else "")

    found = []
    rules: Sequence[Mapping[str, Any]] = document.get("rules") or ()  # tables: checked at load
    # a dry-run ALLOW rule restricts nothing: the default still decides for everyone
    allow_rules = [
        r for r in rules if r.get("action", "ALLOW") == "ALLOW" and r.get("dry_run") is not True
    ]
    if document.get("default") == "allow" and not allow_rules:
        found.append(
            f"{where('default')}: 'allow', and no ALLOW rule: every request that no DENY rule"
            " denies is allowed"
        )
    if document.get("dry_run") is True:
        found.append(f"{where('dry_run')}: true: the policy refuses nothing (dry-run)")
    for index, rule in enumerate(rules):
        if rule.get("dry_run") is True:
            found.append(
                f"{where(f'rules[{index}].dry_run')}: true: rule {rule.get('id')!r} is not"
                " enforced (dry-run)"
            )
    return found
