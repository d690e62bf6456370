"""Building the Guard's parts from checked settings.

``trial=True`` builds everything that is local (policy, bundle and key files, verifier,
authenticator, API keys) so that :class:`~zerotrust.config.Settings` fails at
start-up, and leaves out what would open clients (remote key sources, Redis, OTel).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from zerotrust._clock import SYSTEM_CLOCK, Clock
from zerotrust._config_check import Names, hook_names, named, named_field
from zerotrust._config_files import thaw
from zerotrust._config_schema import DPoPSettings, PolicySettings, TokenSettings
from zerotrust._config_sources import fail
from zerotrust.authn.authenticate import Authenticator
from zerotrust.authn.binding import DPoPConfig
from zerotrust.authn.credentials import ApiKeys
from zerotrust.authn.dpop_nonce import DPoPNonces
from zerotrust.authn.proxy import TrustedProxies
from zerotrust.authz.loader import policy_from_dict
from zerotrust.authz.policy import Policy
from zerotrust.errors import (
    ConfigurationError,
    KeysUnavailable,
)
from zerotrust.identity import TrustDomain
from zerotrust.identity.match import Matcher, any_of, exact, member_of, path_glob
from zerotrust.sources._jwks_policy import CachePolicy
from zerotrust.sources._sansio import url_problem
from zerotrust.sources.files import FileBundleSource, FileKeySource
from zerotrust.sources.spiffe_jwt import SpiffeJwtBundleKeySource, SpiffeJwtBundleSetKeySource
from zerotrust.tokens.jwks import JWKSet
from zerotrust.tokens.secret import SecretKey
from zerotrust.tokens.verify import TokenVerifier

if TYPE_CHECKING:
    from zerotrust.config import Settings

__all__ = ["build_authenticator", "build_policy"]

#: Settings of ``tokens`` that TokenVerifier checks itself; its messages name the parameter.
_VERIFIER_SETTINGS = (
    "issuer", "audience", "algorithms", "leeway", "token_type", "required_claims",
    "max_lifetime", "max_token_size", "cache_size", "trust_domain",
)  # fmt: skip


class _NotFetched:  # pragma: no cover - never asked for keys
    """Stands in for a remote key source while settings are checked (no client is opened),
    naming the OpenID issuer whose keys it would hold, as the source does: the verifier
    refuses keys of another issuer than its own."""

    def __init__(self, oidc_issuer: str | None) -> None:
        self.oidc_issuer = oidc_issuer

    def get_keys(self, *, missing_kid: str | None = None) -> JWKSet:
        raise KeysUnavailable("settings check only")

    async def get_keys_async(self, *, missing_kid: str | None = None) -> JWKSet:
        raise KeysUnavailable("settings check only")


def build_policy(policy: PolicySettings, hooks: Mapping[str, Callable[..., Any]] | None) -> Policy:
    """The policy, with the CUSTOM hooks it names taken from ``hooks``."""
    given = dict(hooks or {})
    for hook in sorted(hook_names(policy.document)):
        if hook not in given:
            known = ", ".join(sorted(given)) or "none"
            raise ConfigurationError(
                f"{policy.source}: CUSTOM hook {hook!r} was not passed to "
                f"build_guard(hooks=...) (given: {known})"
            )
    return policy_from_dict(thaw(policy.document), hooks=given, source=policy.source)


def build_authenticator(
    settings: Settings, name: Names, clock: Clock | None, *, trial: bool
) -> Authenticator:
    bundles = None
    mtls, tokens, proxies = settings.mtls, settings.tokens, settings.proxies
    if mtls is not None:
        with named(name("mtls.bundles")):
            # as written: two names of one trust domain (example.org, spiffe://example.org)
            # are two bundles for it, which the source refuses; never one silently dropped
            paths: dict[TrustDomain | str, str] = dict(mtls.bundles.items())
            bundles = FileBundleSource(
                paths,
                format=mtls.bundle_format,
                check_interval=mtls.check_interval,
            )
    verifier = None
    if tokens is not None:
        verifier = _verifier(tokens, bundles, name, clock, trial=trial)
    trusted = None
    if proxies is not None:
        with named(name("proxies")):
            trusted = TrustedProxies(
                proxies.addresses,
                spiffe_ids=_matcher(proxies.spiffe_ids) if proxies.spiffe_ids else None,
                header=proxies.header,
                header_name=proxies.header_name,
                hop=proxies.hop,
                max_header_bytes=proxies.max_header_bytes,
                allow_unescaped_pem=proxies.allow_unescaped_pem,
            )
    api_keys = None
    if settings.api_keys is not None:
        with named_field(name, "api_keys", ("header",), otherwise="hashes"):
            hashes = settings.api_keys.hashes.reveal()
            api_keys = ApiKeys(dict(hashes), header=settings.api_keys.header)
    dpop = None
    if settings.dpop.enabled:
        d = settings.dpop
        nonces = _nonces(d, name)
        with named(name("dpop")):
            dpop = DPoPConfig(
                algorithms=d.algorithms,
                max_age=d.max_age,
                leeway=d.leeway,
                origins=d.origins,
                nonces=nonces,
            )
    with named(name("tokens") if tokens is not None else name.where):
        return Authenticator(
            tokens=verifier,
            bundles=bundles,
            trusted_proxies=trusted,
            api_keys=api_keys,
            dpop=dpop,
            require_mtls=mtls.require if mtls is not None else False,
            require_token=tokens.require if tokens is not None else False,
            token_must_match_peer=mtls.token_must_match_peer if mtls is not None else False,
            max_delegation_depth=tokens.max_delegation_depth if tokens is not None else 4,
            clock=clock or SYSTEM_CLOCK,
        )


def _verifier(
    tokens: TokenSettings,
    bundles: FileBundleSource | None,
    name: Names,
    clock: Clock | None,
    *,
    trial: bool,
) -> TokenVerifier:
    keys: Any
    if tokens.jwks_file is not None:
        with named(name("tokens.jwks_file")):
            keys = FileKeySource(tokens.jwks_file, algorithms=tokens.algorithms)
    elif tokens.spiffe_trust_domain is not None:
        assert bundles is not None  # checked
        with named(name("tokens.spiffe_trust_domain")):
            keys = SpiffeJwtBundleKeySource(bundles, tokens.spiffe_trust_domain)
    elif tokens.spiffe_trust_domains is not None:
        assert bundles is not None  # checked
        with named(name("tokens.spiffe_trust_domains")):
            keys = SpiffeJwtBundleSetKeySource(bundles, tokens.spiffe_trust_domains)
    elif tokens.hmac_secret is not None:
        with named(name("tokens.hmac_secret")):
            keys = SecretKey(tokens.hmac_secret.reveal(), tokens.algorithms[0])
    else:
        keys = _remote(tokens, name, clock, trial=trial)
    token_type = tokens.token_type
    trust_domain = tokens.trust_domain
    if tokens.spiffe_trust_domain is not None:
        token_type = "jwt-svid"  # noqa: S105 - a token profile, not a secret
        trust_domain = trust_domain or tokens.spiffe_trust_domain
    elif tokens.spiffe_trust_domains is not None:
        token_type = "jwt-svid"  # noqa: S105 - a token profile, not a secret
    with named_field(name, "tokens", _VERIFIER_SETTINGS):
        return TokenVerifier(
            issuer=tokens.issuer,
            audience=tokens.audience,
            keys=keys,
            algorithms=tokens.algorithms,
            leeway=tokens.leeway,
            token_type=token_type,
            required_claims=tokens.required_claims,
            max_lifetime=tokens.max_lifetime,
            max_token_size=tokens.max_token_size,
            clock=clock,
            cache_size=tokens.cache_size,
            trust_domain=trust_domain,
        )


def _remote(tokens: TokenSettings, name: Names, clock: Clock | None, *, trial: bool) -> Any:
    remote = tokens.remote
    url = tokens.jwks_url if tokens.jwks_url is not None else tokens.oidc_issuer
    label = name("tokens.jwks_url" if tokens.jwks_url is not None else "tokens.oidc_issuer")
    assert url is not None  # one key source is set: checked
    options: dict[str, Any] = {
        "min_ttl": remote.min_ttl,
        "max_ttl": remote.max_ttl,
        "default_ttl": remote.default_ttl,
        "max_stale": remote.max_stale,
    }
    if trial:
        problem = url_problem(url, allow_http_loopback=remote.allow_http_loopback)
        if problem is not None:
            raise fail(label, problem)
        with named(name("tokens.remote")):
            CachePolicy(
                **options,
                refresh_ahead=0.1,
                unknown_kid_cooldown=30,
                negative_cache_ttl=300,
                retry_interval=5,
            )
        if remote.ca_file is not None:  # its certificates are read now, as the bundles are
            from zerotrust.sources._httpx import ssl_context  # imports httpx (opens no client)

            with named(name("tokens.remote.ca_file")):
                ssl_context(remote.ca_file)
        return _NotFetched(tokens.oidc_issuer)
    from zerotrust.sources.jwks_http import RemoteJWKSource  # imports httpx

    options.update(
        verify=remote.ca_file if remote.ca_file is not None else True,
        timeout=remote.timeout,
        allow_http_loopback=remote.allow_http_loopback,
        clock=clock,
    )
    with named(label):
        if tokens.jwks_url is not None:
            return RemoteJWKSource(url, **options)
        return RemoteJWKSource.from_oidc_issuer(url, **options)


def _nonces(dpop: DPoPSettings, name: Names) -> DPoPNonces | None:
    """Server-provided DPoP nonces, when ``dpop.nonce_secret`` is set (the previous secret
    still verifies the nonces handed out before a rotation). A secret that is refused is named
    by its own setting."""
    if dpop.nonce_secret is None:
        return None
    secrets: list[bytes] = []
    for field in ("nonce_secret", "nonce_previous_secret"):
        secret = getattr(dpop, field)
        if secret is not None:
            with named(name(f"dpop.{field}")):
                DPoPNonces(secret.reveal())
            secrets.append(secret.reveal())
    with named(name("dpop.nonce_lifetime")):
        return DPoPNonces(secrets, lifetime=dpop.nonce_lifetime)


def _matcher(ids: Sequence[str]) -> Matcher:
    """``spiffe://td`` (the whole trust domain), ``spiffe://td/ns/*/sa/x`` (a glob), or an ID."""
    matchers = []
    for text in ids:
        domain, slash, path = text.removeprefix("spiffe://").partition("/")
        if not slash:
            matchers.append(member_of(text))
        elif "*" in path:
            matchers.append(path_glob(domain, "/" + path))
        else:
            matchers.append(exact(text))
    return matchers[0] if len(matchers) == 1 else any_of(*matchers)
