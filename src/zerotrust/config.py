"""Settings: build a :class:`~zerotrust.Guard` from a file and/or ``ZEROTRUST_*`` variables.

Precedence is defaults < file < environment. Everything is checked when the settings are
loaded: an unknown key or variable, a wrong type, a missing or unreadable file, a policy that
does not parse or two settings that contradict each other raise a
:class:`~zerotrust.errors.ConfigurationError` naming the setting, e.g.
``zerotrust.toml: tokens.audiance: unknown setting (did you mean 'audience'?)`` or
``ZEROTRUST_TOKENS__LEEWAY: not a number``. Building the Guard does no network I/O.

Secrets (``tokens.hmac_secret``, ``api_keys.hashes``, ``store.password``,
``audit.pseudonym_key``) come from environment variables or from files named by
``<setting>_file``, never from the settings file itself, and are shown as ``<redacted>``::

    settings = Settings.load("zerotrust.toml")   # plus os.environ
    guard = settings.build_guard(hooks={"opa": ask_opa})

See ``docs/configuration.md`` for every setting.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from zerotrust._clock import SYSTEM_CLOCK, Clock
from zerotrust._config_backends import build_audit, build_store, pseudonymizer, unheard_audit
from zerotrust._config_build import build_authenticator, build_policy
from zerotrust._config_cautions import cautions
from zerotrust._config_check import Names, check, named
from zerotrust._config_files import read_document
from zerotrust._config_schema import (
    REDACTED,
    ApiKeySettings,
    AuditSettings,
    DPoPSettings,
    MtlsSettings,
    PolicySettings,
    ProxySettings,
    RemoteKeySettings,
    Secret,
    StoreSettings,
    TokenSettings,
    shown_url,
)
from zerotrust._config_sources import (
    ENV_CONFIG,
    Layer,
    Origin,
    env_layer,
    fail,
    mapping_layer,
    merge,
    sections_of,
)
from zerotrust._config_values import construct, recheck
from zerotrust.audit.sinks import AuditPipeline, AuditSink
from zerotrust.pipeline import _REALM, Guard, check_replay_cap
from zerotrust.stores.base import Store

_log = logging.getLogger("zerotrust.config")

__all__ = [
    "ENV_CONFIG",
    "ApiKeySettings",
    "AuditSettings",
    "DPoPSettings",
    "MtlsSettings",
    "PolicySettings",
    "ProxySettings",
    "RemoteKeySettings",
    "Secret",
    "Settings",
    "StoreSettings",
    "TokenSettings",
]

_TABLE = "zerotrust"
_INTERNAL = MappingProxyType({"internal": True})


@dataclass(frozen=True)
class Settings:
    """Validated, immutable settings for one service. Build them with :meth:`load` or
    :meth:`from_dict`, then call :meth:`build_guard` (as often as you like).

    Constructing or :func:`dataclasses.replace`-ing a ``Settings`` runs every check again,
    so an instance that exists is a valid one. ``sources`` lists where the values came from.
    """

    service: str = "zerotrust"
    tokens: TokenSettings | None = None
    mtls: MtlsSettings | None = None
    proxies: ProxySettings | None = None
    api_keys: ApiKeySettings | None = None
    dpop: DPoPSettings = field(default_factory=DPoPSettings)
    policy: PolicySettings = field(default_factory=PolicySettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    audit: AuditSettings = field(default_factory=AuditSettings)
    sources: tuple[str, ...] = field(default=(), metadata=_INTERNAL)
    origins: Mapping[str, str] = field(
        default_factory=lambda: MappingProxyType({}),
        repr=False,
        compare=False,
        metadata=_INTERNAL,
    )

    def __post_init__(self) -> None:
        name = self._names()
        service = self.service
        if not isinstance(service, str) or not _REALM.fullmatch(service):  # as the Guard checks it
            raise fail(
                name("service"),
                "must be a non-empty name without quotes or backslashes, in printable ASCII",
            )
        for info in sections_of(Settings).values():  # sections built or replaced by code
            if info.kind == "section" and info.section is not None:
                checked = recheck(getattr(self, info.name), info.section, name(info.name))
                object.__setattr__(self, info.name, checked)  # its file paths made absolute
        object.__setattr__(self, "policy", check(self, name))
        # Build the local parts once now (files, keys, policy), so that a bad bundle or key
        # file fails at start-up rather than on the first request.
        authenticator = build_authenticator(self, name, None, trial=True)
        with named(name("store.replay_max_ttl")):  # the store these settings describe
            check_replay_cap(self.store, authenticator)
        pseudonymizer(self.audit, name)

    def _names(self) -> Names:
        return Names(self.origins, self.sources[0] if self.sources else "settings")

    # --- loading ------------------------------------------------------------------------------

    @classmethod
    def load(
        cls, path: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None
    ) -> Settings:
        """Settings from the file at ``path`` (TOML, YAML or JSON, by suffix; its settings in a
        top-level ``zerotrust`` table) overridden by ``ZEROTRUST_*`` variables from ``env``
        (default: :data:`os.environ`). ``ZEROTRUST_CONFIG``, when set, names the file instead
        of ``path``; with neither, the settings come from the environment alone.
        """
        environ = os.environ if env is None else env
        from_env = environ.get(ENV_CONFIG)
        layer: Layer = {}
        sources: list[str] = []
        target = from_env or path
        if target is not None:
            shown = os.fspath(target)
            label = ENV_CONFIG if from_env else "settings file"
            layer = _file_layer(Path(shown), shown, label)
            sources.append(shown)
        overrides = env_layer(environ, cls)
        if overrides:
            sources.append("environment")
            layer = merge(layer, overrides, cls)
        return cls._from_layer(layer, sources or ["environment"])

    @classmethod
    def from_dict(
        cls,
        mapping: Mapping[str, Any],
        *,
        source: str = "<dict>",
        env: Mapping[str, str] | None = None,
    ) -> Settings:
        """Settings from the content of a ``zerotrust`` table given by code (e.g. Django's
        ``settings.ZEROTRUST``). Secrets may be given here (read them from your secret store),
        paths may be :class:`~pathlib.Path` objects. ``env``, if given, overrides the mapping
        as :meth:`load` does; by default the environment is not read. ``source`` names the
        mapping in error messages.
        """
        layer = mapping_layer(mapping, cls, kind="dict", source=source)
        sources = [source]
        if env is not None:
            overrides = env_layer(env, cls)
            if overrides:
                sources.append("environment")
                layer = merge(layer, overrides, cls)
        return cls._from_layer(layer, sources)

    @classmethod
    def _from_layer(cls, layer: Layer, sources: Sequence[str]) -> Settings:
        origins: dict[str, str] = {}
        where = Origin("env" if sources[0] == "environment" else "dict", sources[0], ())
        kwargs = construct(cls, layer, (), where, origins)
        return cls(**kwargs, sources=tuple(sources), origins=MappingProxyType(origins))

    # --- building -----------------------------------------------------------------------------

    def build_guard(
        self,
        *,
        audit: AuditSink | Sequence[AuditSink] | AuditPipeline | None = None,
        store: Store | None = None,
        hooks: Mapping[str, Callable[..., Any]] | None = None,
        clock: Clock | None = None,
    ) -> Guard:
        """A new :class:`~zerotrust.Guard` from these settings.

        ``hooks`` maps the CUSTOM hook names the policy uses to callables. ``audit`` and
        ``store``, when given, replace what the ``audit`` and ``store`` settings describe;
        ``clock`` is for tests. No network I/O happens here: remote keys are fetched on
        first use (or call ``prefetch()`` on the key source) and Redis is connected lazily.

        Each of :meth:`cautions` is logged at WARNING on the ``zerotrust.config`` logger, so
        that a setting which weakens what is enforced shows in the service's start-up log.
        So is a fail-closed ``audit.on_error`` whose ``logging`` sink would drop events as
        logging is configured now (its logger not enabled for the level, or no handler to
        receive the records): the Guard is still built, since logging is often configured
        later, but each request is refused with 503 for as long as that holds.
        """
        name = self._names()
        policy = build_policy(self.policy, hooks)
        configured = store is None
        if store is None:
            store = build_store(self.store, name, clock)
        unheard: list[str] = []
        if audit is None:
            audit = build_audit(self.audit, name)
            unheard = unheard_audit(self.audit, audit, name)
        authenticator = build_authenticator(self, name, clock, trial=False)
        if configured:  # the Guard checks it too; here the message can name the setting
            with named(name("store.replay_max_ttl")):
                check_replay_cap(store, authenticator)
        with named(name("service")):
            guard = Guard(
                authenticator=authenticator,
                policy=policy,
                audit=audit,
                store=store,
                service=self.service,
                check_revocation=self.store.check_revocation,
                clock=clock or SYSTEM_CLOCK,
            )
        for caution in self.cautions():
            _log.warning("caution: %s", caution)
        for warning in unheard:
            _log.warning("%s", warning)
        return guard

    def cautions(self) -> tuple[str, ...]:
        """Valid settings that weaken what the Guard enforces, one message each, naming the
        setting and where it came from: store checks turned off or failing open, a trusted
        proxy range open to every address or the outermost XFCC element trusted
        (``hop = "first"``), TLS verification of the Redis store turned off in its URL
        (``ssl_cert_reqs=none``, ``ssl_check_hostname=false``), a policy that allows by
        default with no ALLOW rule, and policies or rules in dry-run. :meth:`build_guard` logs them;
        ``zerotrust config check`` prints them."""
        return cautions(self, self._names())

    def to_dict(self) -> dict[str, Any]:
        """The effective settings as plain data, secrets shown as ``"<redacted>"``, and so
        is each value in the query of ``store.url`` (the Redis client reads any of them)."""
        plain = _plain(self)
        assert isinstance(plain, dict)
        return plain


def _file_layer(file: Path, shown: str, label: str) -> Layer:
    document = read_document(file, label)
    if not isinstance(document, Mapping):
        raise fail(shown, f"must hold a {_TABLE!r} table")
    for key in document:
        if key != _TABLE and difflib.get_close_matches(str(key), [_TABLE], n=1, cutoff=0.8):
            raise fail(f"{shown}: {key}", f"unknown table (did you mean {_TABLE!r}?)")
    if _TABLE not in document:
        raise fail(shown, f"has no {_TABLE!r} table (write the settings under [{_TABLE}])")
    return mapping_layer(document[_TABLE], Settings, kind="file", source=shown, base=file.parent)


def _plain(value: Any) -> Any:
    if isinstance(value, Secret):
        return REDACTED
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: shown_url(v) if f.metadata.get("url") and isinstance(v, str) else _plain(v)
            for f in dataclasses.fields(value)
            if not f.metadata.get("internal")
            for v in (getattr(value, f.name),)
        }
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
