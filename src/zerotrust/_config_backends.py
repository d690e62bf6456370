"""The store and the audit pipeline described by the ``store`` and ``audit`` settings."""

from __future__ import annotations

import logging
from typing import final
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from zerotrust._clock import SYSTEM_CLOCK, Clock
from zerotrust._config_check import Names, named
from zerotrust._config_schema import AuditSettings, StoreSettings
from zerotrust.audit.event import AuditEvent
from zerotrust.audit.otel import OTelSink
from zerotrust.audit.pseudonym import Pseudonymizer
from zerotrust.audit.sinks import AuditPipeline, AuditSink, LoggingSink
from zerotrust.stores.base import Store
from zerotrust.stores.memory import MemoryStore

__all__ = ["build_audit", "build_store", "pseudonymizer", "unheard_audit"]

_LEVELS = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "CRITICAL": logging.CRITICAL,
}


def build_store(store: StoreSettings, name: Names, clock: Clock | None) -> Store:
    """``memory://`` or a Redis store (with its failure policies); never connects."""
    if store.url == "memory://":
        with named(name("store")):
            return MemoryStore(clock=clock or SYSTEM_CLOCK, replay_max_ttl=store.replay_max_ttl)
    from zerotrust.stores.redis import RedisStore
    from zerotrust.stores.resilient import ResilientStore

    with named(name("store.url")):
        redis_store = RedisStore(
            _redis_url(store),
            prefix=store.prefix,
            socket_timeout=store.socket_timeout,
            max_connections=store.max_connections,
            clock=clock or SYSTEM_CLOCK,
            replay_max_ttl=store.replay_max_ttl,
        )
    return ResilientStore(
        redis_store,
        revocation=store.revocation,
        replay=store.replay,
        rate_limit=store.rate_limit,
    )


def _redis_url(store: StoreSettings) -> str:
    """The URL with the user name and password settings in it (percent-encoded)."""
    parts = urlsplit(store.url)
    user = store.username or (unquote(parts.username) if parts.username else None)
    password = store.password.reveal() if store.password is not None else None
    if user is None and password is None:
        return store.url
    credentials = quote(user or "", safe="")
    if password is not None:
        credentials += ":" + quote(password, safe="")
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{credentials}@{host}"))


@final
class _PseudonymizingSink:
    """Hands each sink the event with the configured fields pseudonymised."""

    __slots__ = ("_pseudonymizer", "_sink")

    def __init__(self, sink: AuditSink, pseudonymizer: Pseudonymizer) -> None:
        self._sink = sink
        self._pseudonymizer = pseudonymizer

    def emit(self, event: AuditEvent, /) -> None:
        self._sink.emit(self._pseudonymizer.apply(event))

    def __repr__(self) -> str:
        return f"{self._sink!r} with {self._pseudonymizer!r}"


def pseudonymizer(audit: AuditSettings, name: Names) -> Pseudonymizer | None:
    if audit.pseudonym_key is None:
        return None
    with named(name("audit.pseudonym_key")):
        return Pseudonymizer(audit.pseudonym_key.reveal(), fields=audit.pseudonymize)


def build_audit(audit: AuditSettings, name: Names) -> AuditPipeline:
    sinks: list[AuditSink] = []
    for kind in audit.sinks:
        if kind == "logging":
            sinks.append(LoggingSink(audit.logger, _LEVELS[audit.level]))
        else:
            sinks.append(OTelSink(include_personal_data=audit.include_personal_data))
    alias = pseudonymizer(audit, name)
    if alias is not None:
        sinks = [_PseudonymizingSink(sink, alias) for sink in sinks]
    with named(name("audit")):
        return AuditPipeline(sinks, on_error=audit.on_error)


def unheard_audit(audit: AuditSettings, pipeline: AuditPipeline, name: Names) -> list[str]:
    """Why the logging sink of a fail-closed pipeline would refuse every request if it were
    asked now: a start-up warning (logging may still be configured after the Guard is built,
    so this is not refused here; each request is refused while it holds)."""
    if pipeline.on_error != "closed":
        return []
    found = []
    for sink in pipeline.sinks:
        inner = sink._sink if isinstance(sink, _PseudonymizingSink) else sink
        if isinstance(inner, LoggingSink):
            reason = inner._unheard()
            if reason is not None:
                found.append(
                    f"{name('audit.on_error')}: 'closed', but {reason}: every request is"
                    " refused (503) until logging is configured to write audit records"
                )
    return found
