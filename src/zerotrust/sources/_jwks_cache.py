"""Every decision of :class:`~zerotrust.sources.jwks_http.RemoteJWKSource`, without I/O.

:class:`JWKSCache` answers "may I serve the cached set, must I fetch, may I refetch for this
kid, how long is this response good for, is it acceptable?" and records outcomes. Its
:meth:`~JWKSCache.refresh_flow` is a sans-IO generator (discovery, then the JWKS) that the
sync and async httpx drivers run. All state changes happen under one short lock, never held
across I/O.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from zerotrust._clock import Clock
from zerotrust.errors import ConfigurationError, KeysUnavailable
from zerotrust.sources._jwks_policy import CachePolicy, KeySourceStatus, cache_ttl
from zerotrust.sources._sansio import (
    ACCEPT_JSON,
    FetchError,
    Flow,
    HttpRequest,
    HttpResponse,
    safe_url,
    url_problem,
)
from zerotrust.tokens._json import JSONError, loads_object
from zerotrust.tokens.jwks import JWKSet

__all__ = ["Action", "JWKSCache", "Plan"]

_log = logging.getLogger("zerotrust.sources")
_NEGATIVE_CACHE_SIZE: Final = 1024
_ACCEPT_JWKS: Final = "application/jwk-set+json, application/json"


class Action(enum.Enum):
    SERVE = "serve"  # use the cached set
    REFRESH = "refresh"  # use the cached set and refresh it in the background
    FETCH = "fetch"  # fetch (single-flight), then ask for the result
    FAIL = "fail"  # no usable keys and no fetch allowed now


@dataclass(frozen=True, slots=True)
class Plan:
    action: Action
    keys: JWKSet | None = None
    generation: int = 0
    kid: str | None = None  # the unknown kid a FETCH is for
    started: int = 0  # for a kid's FETCH: how many fetches had begun when it was planned
    shared: bool = False  # a FETCH that waits for the refetch granted for another's kid
    # ... asked for from the thread or event loop that refetch was granted in: the caller
    # waits behind the same lock, so it may make the refetch if it gets there first
    stand_in: bool = False
    error: str | None = None


@dataclass(frozen=True, slots=True)
class _Entry:
    keys: JWKSet
    fetched_at: datetime
    expires_at: datetime
    refresh_at: datetime


class JWKSCache:
    """The state of one remote key source: cached set, errors, rate limits, negative cache."""

    def __init__(
        self,
        *,
        jwks_url: str | None,
        issuer: str | None,
        policy: CachePolicy,
        allow_http_loopback: bool,
        max_bytes: int,
        clock: Clock,
        refresh_deadline: float = 60.0,
    ) -> None:
        self._issuer = issuer
        self._discovery_url = (
            issuer.rstrip("/") + "/.well-known/openid-configuration" if issuer else None
        )
        self._jwks_url = jwks_url
        self.url = safe_url(jwks_url or issuer or "")
        self._policy = policy
        self._allow_http = allow_http_loopback
        self._max_bytes = max_bytes
        self._clock = clock
        self._lock = threading.Lock()
        self._entry: _Entry | None = None
        self._generation = 0
        self._fetch_count = 0
        self._started = 0  # fetches begun; each is numbered by its place in this count
        self._ended = 0  # the number of the latest-begun fetch that has ended
        self._found = 0  # ... and of the latest-begun one that succeeded
        self._refreshing = False  # a background refresh is under way (single-flight)
        self._refresh_abandoned = False
        # a background refresh that has run this long is taken for lost (its event loop closed
        # without cancelling it, say): callers served an expired set fetch it themselves
        self._refresh_deadline = timedelta(seconds=refresh_deadline)
        self._refresh_started: datetime | None = None
        self._retry_at: datetime | None = None
        self._last_kid_fetch: datetime | None = None
        # fetches begun when the latest refetch for an unknown kid was granted: that refetch
        # is under way until a fetch numbered above this one has ended
        self._kid_fetch_after: int | None = None
        self._kid_fetch_caller: object = None  # the caller's thread or event loop (``caller``)
        self._missing: OrderedDict[str, datetime] = OrderedDict()
        self._last_success: datetime | None = None
        self._last_error: str | None = None
        self._last_error_at: datetime | None = None

    @property
    def generation(self) -> int:
        """Incremented by every completed fetch attempt (the single-flight check)."""
        return self._generation

    # --- decisions ---------------------------------------------------------------------------

    def plan(self, missing_kid: str | None, caller: object = None) -> Plan:
        """What a caller asking for keys (or for an unknown ``missing_kid``) must do now.
        ``caller``: what its fetches are single-flight within (``None``: the threads; else an
        event loop's own key), which a refetch for an unknown kid is shared within."""
        now = self._clock.now()
        policy = self._policy
        with self._lock:
            entry, gen = self._entry, self._generation
            # A clock set back (a step of NTP) puts ``now`` before times this cache recorded:
            # what they hold back (a back-off, a cooldown, a refresh not due yet) would then
            # last as long again as the step; the recorded times count as past instead.
            backoff = (
                self._retry_at is not None
                and now < self._retry_at
                and not (self._last_error_at is not None and now < self._last_error_at)
            )
            if entry is None:
                if backoff:
                    return Plan(Action.FAIL, error=f"no keys from {self.url}: {self._last_error}")
                return Plan(Action.FETCH, generation=gen)
            if missing_kid is not None and missing_kid not in entry.keys and not backoff:
                if self._may_refetch_for(missing_kid, now):
                    self._last_kid_fetch = now
                    self._kid_fetch_after = self._started
                    self._kid_fetch_caller = caller
                    return Plan(
                        Action.FETCH, generation=gen, kid=missing_kid, started=self._started
                    )
                after = self._kid_fetch_after
                if (
                    missing_kid not in self._missing
                    and after is not None
                    and self._ended <= after
                    and now <= entry.expires_at + timedelta(seconds=policy.max_stale)
                ):
                    # the refetch granted for another caller's unknown kid is under way (a
                    # rotated key reaching many callers at once): share it (single-flight)
                    # rather than be refused with the set it is about to replace
                    stand_in = caller == self._kid_fetch_caller
                    return Plan(
                        Action.FETCH, generation=gen, started=after, shared=True, stand_in=stand_in
                    )
            if now >= entry.expires_at:
                if now > entry.expires_at + timedelta(seconds=policy.max_stale):
                    if backoff:
                        return Plan(Action.FAIL, error=self._too_stale())
                    return Plan(Action.FETCH, generation=gen)
                # stale-while-revalidate, stale-if-error (RFC 5861): within max_stale the set
                # is served and one refresh runs in the background (below), so a stalling
                # endpoint holds nobody; only if the last background refresh was abandoned
                # (its event loop closed) or is overdue does a caller fetch itself
                started = self._refresh_started
                lost = (
                    self._refreshing
                    and started is not None
                    and (now >= started + self._refresh_deadline or now < started)
                )
                if not backoff and (lost or (self._refresh_abandoned and not self._refreshing)):
                    return Plan(Action.FETCH, generation=gen)
            # a set fetched "after" now was fetched before the clock went back: as old as the
            # step, which no TTL accounts for, so it is refreshed (in the background)
            due = now >= entry.refresh_at or now < entry.fetched_at
            if due and not self._refreshing and not backoff:
                self._refreshing = True
                self._refresh_started = now
                return Plan(Action.REFRESH, entry.keys, generation=gen)
            return Plan(Action.SERVE, entry.keys)

    def _may_refetch_for(self, kid: str, now: datetime) -> bool:
        until = self._missing.get(kid)
        if until is not None:
            noted = until - timedelta(seconds=self._policy.negative_cache_ttl)
            if noted <= now < until:
                return False
            del self._missing[kid]
        last = self._last_kid_fetch
        return (
            last is None
            or now < last  # the clock went back since
            or now >= last + timedelta(seconds=self._policy.unknown_kid_cooldown)
        )

    def fetch_needed(self, plan: Plan) -> bool:
        """Whether the fetch ``plan`` asked for is still to be made: no fetch has ended since
        it was planned or, for an unknown kid, none that began after the kid was asked for
        (an answer to a request sent before cannot tell whether the issuer publishes it); for a
        caller sharing the refetch granted for another kid, one of the same threads or event
        loop only, none has begun since."""
        with self._lock:
            if plan.shared:
                # made only by a caller behind the same lock as the granted one (which then
                # makes none), and only if no fetch has begun: a caller of another event loop
                # (or the threads, for a task) never adds a request of its own, even before the
                # granted one has begun (waiting for its own lock, held by a refresh)
                return plan.stand_in and self._started <= plan.started
            if plan.kid is not None:
                return self._ended <= plan.started
            return self._generation == plan.generation

    def _too_stale(self) -> str:
        return f"keys from {self.url} are stale beyond max_stale: {self._last_error}"

    def result(self, plan: Plan) -> JWKSet:
        """The keys to use after the fetch ``plan`` asked for (or raise KeysUnavailable)."""
        now = self._clock.now()
        with self._lock:
            entry = self._entry
            if entry is None:
                raise KeysUnavailable(f"no keys from {self.url}: {self._last_error}")
            if now > entry.expires_at + timedelta(seconds=self._policy.max_stale):
                raise KeysUnavailable(self._too_stale())
            kid = plan.kid
            # a kid is remembered as missing only if the latest fetch succeeded and began after
            # the kid was asked for: one whose refetch failed, or was answered by a request
            # sent before, was never looked for (the back-off and cooldown still apply)
            if (
                kid is not None
                and kid not in entry.keys
                and self._last_error is None
                and self._found > plan.started
            ):
                self._missing[kid] = now + timedelta(seconds=self._policy.negative_cache_ttl)
                self._missing.move_to_end(kid)
                while len(self._missing) > _NEGATIVE_CACHE_SIZE:
                    self._missing.popitem(last=False)
            return entry.keys

    def end_refresh(self, *, abandoned_at: int | None = None) -> None:
        """A background refresh finished (however it ended). ``abandoned_at``: the generation
        of the plan of a refresh that was cancelled (its event loop closing, say); if no fetch
        has ended since, the next caller served an expired set fetches it itself."""
        with self._lock:
            self._refreshing, self._refresh_started = False, None
            if abandoned_at is not None and abandoned_at == self._generation:
                self._refresh_abandoned = True

    def after_fork(self) -> None:
        """In a forked child: a refresh under way was the parent's, and never ends here."""
        self._lock = threading.Lock()
        self._refreshing, self._refresh_started = False, None

    # --- the fetch ----------------------------------------------------------------------------

    def refresh_flow(self) -> Flow[None]:
        """Fetch (discovering the JWKS URL first if needed) and record the outcome."""
        with self._lock:
            self._started += 1
            number = self._started
        try:
            keys, headers = yield from self._fetch()
        except FetchError as exc:
            self._record_failure(str(exc), number)
        else:
            self._record_success(keys, headers, number)

    def _fetch(self) -> Flow[tuple[JWKSet, Mapping[str, str]]]:
        url = self._jwks_url
        if url is None:
            assert self._discovery_url is not None
            response = yield HttpRequest("GET", self._discovery_url, {"accept": ACCEPT_JSON})
            url = self._discovered(response)
            self._jwks_url = url
        try:
            response = yield HttpRequest("GET", url, {"accept": _ACCEPT_JWKS})
            return self._parse_jwks(response), response.headers
        except FetchError:
            if self._issuer is not None:
                self._jwks_url = None  # discover again next time: the issuer may have moved it
            raise

    @staticmethod
    def _check_status(response: HttpResponse, what: str) -> None:
        if 300 <= response.status < 400:
            raise FetchError(f"{what}: redirect refused (HTTP {response.status})")
        if response.status != 200:
            raise FetchError(f"{what}: HTTP {response.status}")

    def _discovered(self, response: HttpResponse) -> str:
        self._check_status(response, "OIDC discovery")
        try:
            document = loads_object(response.body)
        except JSONError as exc:
            raise FetchError(f"OIDC discovery document is not acceptable JSON: {exc}") from None
        if document.get("issuer") != self._issuer:
            raise FetchError("OIDC discovery document names a different issuer")
        jwks_uri = document.get("jwks_uri")
        problem = url_problem(jwks_uri, allow_http_loopback=self._allow_http)
        if problem is not None:
            raise FetchError(f"OIDC discovery jwks_uri refused: {problem}")
        assert isinstance(jwks_uri, str)
        return jwks_uri

    def _parse_jwks(self, response: HttpResponse) -> JWKSet:
        self._check_status(response, "JWKS")
        try:
            keys = JWKSet.from_json(response.body, max_size=self._max_bytes)
        except ConfigurationError as exc:
            raise FetchError(f"response is not a usable JWKS: {exc.detail}") from None
        if len(keys) == 0:
            raise FetchError(f"JWKS has no usable keys ({len(keys.skipped)} skipped)")
        return keys

    # --- outcomes -----------------------------------------------------------------------------

    def _record_success(self, keys: JWKSet, headers: Mapping[str, str], number: int) -> None:
        now = self._clock.now()
        ttl = cache_ttl(headers, now, self._policy)
        with self._lock:
            if self._outdated(number):
                return
            old = self._entry
            if old is not None and old.keys == keys:
                keys = old.keys  # the same object while the keys do not change
            elif old is not None:
                _log.info("key set from %s changed: kids %s", self.url, _kids(keys))
            if self._last_error is not None:
                _log.info("key source %s recovered", self.url)
            self._entry = _Entry(
                keys,
                now,
                now + timedelta(seconds=ttl),
                now + timedelta(seconds=ttl * (1 - self._policy.refresh_ahead)),
            )
            self._generation += 1
            self._fetch_count += 1
            self._ended, self._found = max(self._ended, number), max(self._found, number)
            self._refresh_abandoned = False
            self._refreshing, self._refresh_started = False, None  # a lost refresh included
            self._last_success = now
            self._last_error = self._last_error_at = self._retry_at = None

    def _record_failure(self, message: str, number: int) -> None:
        now = self._clock.now()
        with self._lock:
            if self._outdated(number):
                return
            if message != self._last_error:
                entry = self._entry
                serving = (
                    f"serving keys fetched at {entry.fetched_at:%Y-%m-%dT%H:%M:%SZ}"
                    if entry is not None
                    else "no keys available"
                )
                _log.warning("fetching keys from %s failed: %s (%s)", self.url, message, serving)
            self._generation += 1
            self._fetch_count += 1
            self._ended = max(self._ended, number)
            self._refresh_abandoned = False
            self._refreshing, self._refresh_started = False, None  # a lost refresh included
            self._last_error, self._last_error_at = message, now
            self._retry_at = now + timedelta(seconds=self._policy.retry_interval)

    def _outdated(self, number: int) -> bool:  # lock held
        """Whether fetch ``number`` ended after one begun later succeeded. Fetches of sync
        callers and of several event loops overlap: the answer of the older one (the key set
        from before a rotation, or its failure) must not replace the newer key set, or a key
        withdrawn meanwhile would verify again. It counts as a fetch that ended."""
        if number >= self._found:
            return False
        self._generation += 1
        self._fetch_count += 1
        self._ended = max(self._ended, number)
        return True

    def status(self) -> KeySourceStatus:
        now = self._clock.now()
        with self._lock:
            entry = self._entry
            return KeySourceStatus(
                url=self.url,
                last_success=self._last_success,
                last_error=self._last_error,
                last_error_at=self._last_error_at,
                key_ids=tuple(k.kid for k in entry.keys if k.kid) if entry else (),
                expires_at=entry.expires_at if entry else None,
                fetch_count=self._fetch_count,
                stale=entry is not None and now >= entry.expires_at,
            )


def _kids(keys: JWKSet) -> str:
    """The key ids of ``keys`` for a log line: the key server chose them, so each is quoted
    and escaped (a line break cannot start a forged log line) and cut to 64 characters."""
    return ", ".join(sorted(repr(k.kid[:64]) if k.kid else "-" for k in keys))
