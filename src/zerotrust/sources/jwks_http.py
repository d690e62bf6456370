"""Keys from a remote JWKS URL or an OIDC issuer's discovery document, over httpx.

:class:`RemoteJWKSource` is a :class:`~zerotrust.tokens.KeySource` built for a hostile
network and a hostile caller:

* **Lazy**: the constructor does no I/O; the first verification (or :meth:`prefetch`) fetches.
* **Cached** for the response's ``Cache-Control: max-age`` (or ``Expires``), clamped to
  ``[min_ttl, max_ttl]``; ``default_ttl`` without either; ``no-store``/``no-cache`` mean
  ``min_ttl``.
* **Refreshed ahead**: in the last ``refresh_ahead`` fraction of the TTL one caller starts a
  background refresh (a daemon thread, or an asyncio task) and nobody waits for it.
* **Stale while revalidating, stale on error** (RFC 5861): an expired set is served until
  ``max_stale`` seconds past its expiry while one background refresh replaces it, so callers
  never wait for a slow or stalled endpoint while they have a set; a failed refresh never
  replaces the cached set, and past ``max_stale`` callers fetch themselves and get
  :class:`~zerotrust.errors.KeysUnavailable` if that fails. After a failure no new fetch
  starts for ``retry_interval`` seconds.
* **Single-flight**: concurrent callers that need a fetch share one request (threads share
  one; the tasks of each event loop share one).
* **Unknown kids are rate limited**: a kid missing from the set triggers at most one refetch
  per ``unknown_kid_cooldown`` (globally, not per kid), and a kid still missing after a
  refetch is remembered (``negative_cache_ttl``, bounded) and triggers nothing until then.
  Callers meeting an unknown kid while that refetch is under way wait for it and share it.
* **Transport**: https only (plain http to a loopback host with ``allow_http_loopback``), no
  redirects, ``timeout``, bodies larger than ``max_bytes`` abandoned while streaming, strict
  JSON, and a set with no usable key is an error (``oct`` and private keys are never used).
* **Observable**: :meth:`status` for health checks; failures are logged once per change on
  the ``zerotrust.sources`` logger, never with a response body or key material.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import ssl
import threading
import weakref
from typing import Any

import httpx

from zerotrust._clock import SYSTEM_CLOCK, Clock
from zerotrust.errors import ConfigurationError, KeysUnavailable
from zerotrust.sources._httpx import HttpxTransport
from zerotrust.sources._jwks_cache import Action, JWKSCache
from zerotrust.sources._jwks_policy import CachePolicy, KeySourceStatus
from zerotrust.sources._sansio import url_problem
from zerotrust.tokens.jwks import JWKSet

__all__ = ["KeySourceStatus", "RemoteJWKSource"]

_sources: weakref.WeakSet[RemoteJWKSource] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for source in list(_sources):
        source._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class RemoteJWKSource:
    """A :class:`~zerotrust.tokens.KeySource` backed by a JWKS URL (see the module docs).

    ``client``/``async_client`` are used as given (their redirect setting is overridden per
    request); otherwise the source builds clients with ``verify`` (an ``ssl.SSLContext``, a
    CA file, or ``True`` for httpx's default authorities, the ``certifi`` bundle; never
    ``False``). Times are in seconds; ``clock`` is injectable for tests.
    """

    def __init__(
        self,
        url: str,
        *,
        client: httpx.Client | None = None,
        async_client: httpx.AsyncClient | None = None,
        verify: ssl.SSLContext | str | bool = True,
        min_ttl: float = 60,
        max_ttl: float = 86400,
        default_ttl: float = 300,
        refresh_ahead: float = 0.1,
        max_stale: float = 3600,
        unknown_kid_cooldown: float = 30,
        negative_cache_ttl: float = 300,
        retry_interval: float = 5,
        timeout: float = 5.0,
        max_bytes: int = 1 << 20,
        allow_http_loopback: bool = False,
        clock: Clock | None = None,
    ) -> None:
        options = {
            "client": client,
            "async_client": async_client,
            "verify": verify,
            "min_ttl": min_ttl,
            "max_ttl": max_ttl,
            "default_ttl": default_ttl,
            "refresh_ahead": refresh_ahead,
            "max_stale": max_stale,
            "unknown_kid_cooldown": unknown_kid_cooldown,
            "negative_cache_ttl": negative_cache_ttl,
            "retry_interval": retry_interval,
            "timeout": timeout,
            "max_bytes": max_bytes,
            "allow_http_loopback": allow_http_loopback,
            "clock": clock,
        }
        self._setup(url, None, options)

    @classmethod
    def from_oidc_issuer(cls, issuer: str, **options: Any) -> RemoteJWKSource:
        """A source for ``issuer``'s keys, found through OpenID Connect discovery.

        On first use it fetches ``issuer + "/.well-known/openid-configuration"``, requires the
        document's ``issuer`` to equal ``issuer`` exactly and its ``jwks_uri`` to pass the same
        URL rules, then fetches that. Options are those of the constructor.
        """
        bound = inspect.signature(cls).bind(issuer, **options)  # TypeError if unknown
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        del arguments["url"]
        self = cls.__new__(cls)
        self._setup(None, issuer, arguments)
        return self

    def _setup(self, url: str | None, issuer: str | None, options: dict[str, Any]) -> None:
        allow_http = options["allow_http_loopback"]
        if not isinstance(allow_http, bool):
            raise ConfigurationError("allow_http_loopback must be a bool")
        target = url if issuer is None else issuer
        problem = url_problem(target, allow_http_loopback=allow_http)
        if problem is not None:
            what = "JWKS URL" if issuer is None else "issuer"
            raise ConfigurationError(f"{what} refused: {problem}")
        policy = CachePolicy(**{name: options[name] for name in CachePolicy.__dataclass_fields__})
        self._transport = HttpxTransport(
            client=options["client"],
            async_client=options["async_client"],
            verify=options["verify"],
            timeout=options["timeout"],
            max_bytes=options["max_bytes"],
        )
        clock = options["clock"] or SYSTEM_CLOCK
        if not callable(getattr(clock, "now", None)):
            raise ConfigurationError("clock must have a now() method")
        self._cache = JWKSCache(
            jwks_url=url,
            issuer=issuer,
            policy=policy,
            allow_http_loopback=allow_http,
            max_bytes=options["max_bytes"],
            clock=clock,
            # discovery and the key set: two exchanges of at most twice the timeout each
            refresh_deadline=4 * options["timeout"] + 1.0,
        )
        self._oidc_issuer = issuer
        self._lock = threading.Lock()  # held by the one sync fetch in flight
        self._locks_guard = threading.Lock()  # never held across I/O
        self._loop_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )
        self._tasks: set[asyncio.Task[None]] = set()
        _sources.add(self)

    def _after_fork(self) -> None:
        """In a child forked from this process: the fetches under way were the parent's and
        their threads did not come along, so the locks they held and the refresh they were
        granted are let go (else the child's callers would wait for them forever)."""
        self._lock = threading.Lock()
        self._locks_guard = threading.Lock()
        self._loop_locks = weakref.WeakKeyDictionary()
        self._tasks = set()
        self._cache.after_fork()
        self._transport.after_fork()

    @property
    def oidc_issuer(self) -> str | None:
        """The OpenID issuer whose keys these are (:meth:`from_oidc_issuer`); ``None`` for a
        JWKS URL. A :class:`~zerotrust.tokens.TokenVerifier` over this source must check
        tokens of that same issuer."""
        return self._oidc_issuer

    # --- KeySource ----------------------------------------------------------------------------

    def get_keys(self, *, missing_kid: str | None = None) -> JWKSet:
        """The current key set, fetching it first if needed (blocks only for that fetch: with
        no set, a set past ``max_stale``, or an unknown ``missing_kid`` within its limits)."""
        plan = self._cache.plan(missing_kid)
        if plan.action is Action.SERVE or plan.action is Action.REFRESH:
            if plan.action is Action.REFRESH:
                self._start_thread(plan.generation)
            assert plan.keys is not None
            return plan.keys
        if plan.action is Action.FAIL:
            raise KeysUnavailable(plan.error)
        with self._lock:
            if self._cache.fetch_needed(plan):
                self._transport.run(self._cache.refresh_flow())
        return self._cache.result(plan)

    async def get_keys_async(self, *, missing_kid: str | None = None) -> JWKSet:
        """Async twin of :meth:`get_keys`; never blocks the event loop."""
        # the event loop a refetch for an unknown kid is shared within (its tasks, its lock)
        loop = id(asyncio.get_running_loop()) if missing_kid is not None else None
        plan = self._cache.plan(missing_kid, loop)
        if plan.action is Action.SERVE or plan.action is Action.REFRESH:
            if plan.action is Action.REFRESH:
                self._start_task(plan.generation)
            assert plan.keys is not None
            return plan.keys
        if plan.action is Action.FAIL:
            raise KeysUnavailable(plan.error)
        async with self._loop_lock():
            if self._cache.fetch_needed(plan):
                await self._transport.run_async(self._cache.refresh_flow())
        return self._cache.result(plan)

    # --- start-up, health, shutdown -----------------------------------------------------------

    def prefetch(self) -> JWKSet:
        """Fetch now if nothing is cached (e.g. at start-up); raises KeysUnavailable."""
        return self.get_keys()

    async def prefetch_async(self) -> JWKSet:
        """Async twin of :meth:`prefetch`."""
        return await self.get_keys_async()

    def status(self) -> KeySourceStatus:
        """Health: last success/error, key ids, expiry, fetch count, staleness."""
        return self._cache.status()

    def close(self) -> None:
        """Close the HTTP client the source built (a client passed in is left open)."""
        self._transport.close()

    def __enter__(self) -> RemoteJWKSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RemoteJWKSource({self._cache.url!r})"

    # --- single-flight and background refresh -------------------------------------------------

    def _loop_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        with self._locks_guard:
            lock = self._loop_locks.get(loop)
            if lock is None:
                lock = self._loop_locks[loop] = asyncio.Lock()
            return lock

    # The cache grants one background refresh at a time (Action.REFRESH), so at most one
    # refresh thread or task runs per source; ``generation`` is the plan's: a fetch that
    # completed since then makes the refresh a no-op.

    def _start_thread(self, generation: int) -> None:
        thread = threading.Thread(
            target=self._refresh_in_background,
            args=(generation,),
            name="zerotrust-jwks-refresh",
            daemon=True,
        )
        try:
            thread.start()
        except RuntimeError:  # interpreter shutting down: refresh on a later call
            self._cache.end_refresh()

    def _refresh_in_background(self, generation: int) -> None:
        try:
            with self._lock:
                if self._cache.generation == generation:
                    self._transport.run(self._cache.refresh_flow())
        finally:
            self._cache.end_refresh()

    def _start_task(self, generation: int) -> None:
        task = asyncio.get_running_loop().create_task(self._refresh_async(generation))
        self._tasks.add(task)
        # a done callback, not a finally: it also runs for a task cancelled before it started
        task.add_done_callback(functools.partial(self._refresh_task_done, generation))

    def _refresh_task_done(self, generation: int, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._cache.end_refresh(abandoned_at=generation if task.cancelled() else None)

    async def _refresh_async(self, generation: int) -> None:
        async with self._loop_lock():
            if self._cache.generation == generation:
                await self._transport.run_async(self._cache.refresh_flow())
