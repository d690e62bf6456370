"""The Redis store: shared revocations, replay cache and rate limits for many replicas.

Every operation is one round trip: an atomic Lua script (loaded once, run with ``EVALSHA``
and reloaded automatically after ``NOSCRIPT``) or a single ``SET NX PX``. Keys are namespaced
by ``prefix`` and carry a SHA-256 of the caller's value, never the value itself; every key
has a TTL. Token-bucket arithmetic uses the Redis server's clock so that replicas with skewed
clocks agree; revocation and replay deadlines are computed on this process's clock, the one
its token verifier uses for ``exp``.

Every redis-py exception is translated into :class:`~zerotrust.errors.StoreUnavailable`. The
store holds no broken state: once the server answers again, so does the store. redis-py is
imported only when a :class:`RedisStore` is built.
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING, Any, Final, TypeVar

from zerotrust._clock import SYSTEM_CLOCK, Clock
from zerotrust.errors import ConfigurationError, MissingDependencyError, StoreUnavailable
from zerotrust.stores._logic import DEFAULT_PREFIX, DEFAULT_REPLAY_MAX_TTL, KeySpace, Listeners
from zerotrust.stores._redis_plan import SCRIPTS, Op, Planner, describe_client, describe_url
from zerotrust.stores.base import RateLimitResult, RevocationListener, StoreHealth

if TYPE_CHECKING:
    import redis
    import redis.asyncio
    from redis.commands.core import AsyncScript, Script

__all__ = ["RedisStore"]

DEFAULT_URL: Final = "redis://127.0.0.1:6379/0"
_T = TypeVar("_T")
_NO_SYNC = "this RedisStore has no sync client: pass url= or client="
_NO_ASYNC = "this RedisStore has no async client: pass url= or async_client="


class RedisStore:
    """Revocations, replay cache and rate limits in Redis (``pip install 'zerotrust[redis]'``).

    Pass a ``url`` (default ``redis://127.0.0.1:6379/0``): the store then owns a sync and an
    async client with ``socket_timeout`` on connect and on every reply, and one immediate
    retry on a dropped connection (never on a timeout). Or pass your own ``client``
    (``redis.Redis``) and/or ``async_client`` (``redis.asyncio.Redis``), configured as you
    wish: the sync methods need ``client``, the ``_async`` ones ``async_client``.

    ``clock`` is this process's clock (revocation cut-offs, replay deadlines);
    ``replay_max_ttl`` caps how long a replay entry is kept, as for :class:`MemoryStore`.
    """

    __slots__ = (
        "_aclient",
        "_ascripts",
        "_client",
        "_errors",
        "_listeners",
        "_location",
        "_owned",
        "_plan",
        "_scripts",
    )

    def __init__(
        self,
        url: str | None = None,
        *,
        client: redis.Redis | None = None,
        async_client: redis.asyncio.Redis | None = None,
        prefix: str = DEFAULT_PREFIX,
        socket_timeout: float = 0.5,
        clock: Clock = SYSTEM_CLOCK,
        replay_max_ttl: float = DEFAULT_REPLAY_MAX_TTL,
    ) -> None:
        try:
            import redis
            import redis.asyncio
            import redis.asyncio.retry
            import redis.backoff
            import redis.retry
        except ImportError:
            raise MissingDependencyError("redis", "redis") from None
        if url is not None and (client is not None or async_client is not None):
            raise ConfigurationError("pass either url= or client=/async_client=, not both")
        timeout = socket_timeout
        if isinstance(timeout, bool) or not (
            isinstance(timeout, (int, float)) and 0 < timeout < math.inf
        ):
            raise ConfigurationError("socket_timeout must be a positive number of seconds")
        if isinstance(replay_max_ttl, bool) or not (
            isinstance(replay_max_ttl, (int, float)) and 1 <= replay_max_ttl < math.inf
        ):
            raise ConfigurationError("replay_max_ttl must be at least 1 second")
        self._plan = Planner(KeySpace(prefix), clock, float(replay_max_ttl))
        self._listeners = Listeners()
        self._errors: tuple[type[BaseException], ...] = (
            redis.RedisError,
            OSError,
            asyncio.TimeoutError,
        )
        self._owned = client is None and async_client is None
        if self._owned:
            url = DEFAULT_URL if url is None else url
            self._location = describe_url(url)
            try:
                client = redis.Redis.from_url(
                    url,
                    socket_timeout=timeout,
                    socket_connect_timeout=timeout,
                    retry=redis.retry.Retry(redis.backoff.NoBackoff(), 1, (redis.ConnectionError,)),
                )
                async_client = redis.asyncio.Redis.from_url(
                    url,
                    socket_timeout=timeout,
                    socket_connect_timeout=timeout,
                    retry=redis.asyncio.retry.Retry(
                        redis.backoff.NoBackoff(), 1, (redis.ConnectionError,)
                    ),
                )
            except ValueError:
                raise ConfigurationError(f"invalid Redis URL ({self._location})") from None
        else:
            self._location = describe_client(client if client is not None else async_client)
        self._client = client
        self._aclient = async_client
        self._scripts: dict[str, Script] = {}
        self._ascripts: dict[str, AsyncScript] = {}
        for name, source in SCRIPTS.items():  # computes the SHA1 locally: no round trip
            if client is not None:
                self._scripts[name] = client.register_script(source)
            if async_client is not None:
                self._ascripts[name] = async_client.register_script(source)

    def __repr__(self) -> str:
        return f"RedisStore({self._location!r}, prefix={self._plan.keys.prefix!r})"

    # --- the two drivers: the only code that differs between sync and async ---------------

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        return StoreUnavailable(
            f"shared store unavailable: {type(exc).__name__} from {self._location}"
        )

    def _parse(self, op: Op[_T], raw: Any) -> _T:
        try:
            return op.parse(raw)
        except (TypeError, ValueError, IndexError) as exc:
            raise StoreUnavailable(f"unexpected reply from {self._location}") from exc

    def _run(self, op: Op[_T]) -> _T:
        if self._client is None:
            raise ConfigurationError(_NO_SYNC)
        try:
            if op.script is None:
                raw = self._client.set(op.keys[0], b"1", nx=True, px=int(op.args[0]))
            else:
                raw = self._scripts[op.script](keys=list(op.keys), args=list(op.args))
        except self._errors as exc:
            raise self._unavailable(exc) from exc
        return self._parse(op, raw)

    async def _arun(self, op: Op[_T]) -> _T:
        if self._aclient is None:
            raise ConfigurationError(_NO_ASYNC)
        try:
            if op.script is None:
                raw = await self._aclient.set(op.keys[0], b"1", nx=True, px=int(op.args[0]))
            else:
                raw = await self._ascripts[op.script](keys=list(op.keys), args=list(op.args))
        except self._errors as exc:
            raise self._unavailable(exc) from exc
        return self._parse(op, raw)

    # --- revocation -------------------------------------------------------------------------

    def revoke_token(self, jti: str, *, expires_at: float) -> None:
        """Revoke the token with this ``jti`` until ``expires_at`` (its ``exp``)."""
        op, event = self._plan.revoke_token(jti, expires_at)
        if op is not None:
            self._run(op)
        self._listeners.notify(event)

    def revoke_subject(self, subject: str, *, issuer: str, until: float) -> None:
        """Revoke every token of ``subject`` from ``issuer`` issued up to now, until ``until``."""
        op, event = self._plan.revoke_subject(subject, issuer, until)
        if op is not None:
            self._run(op)
        self._listeners.notify(event)

    def revoke_issued_before(self, issuer: str, *, before: float, until: float) -> None:
        """Revoke every token from ``issuer`` with ``iat < before``, until ``until``."""
        op, event = self._plan.revoke_issued_before(issuer, before, until)
        if op is not None:
            self._run(op)
        self._listeners.notify(event)

    def is_revoked(
        self, *, jti: str | None, subject: str | None, issuer: str, issued_at: float | None
    ) -> bool:
        """Whether the token, its subject or its issuer's cut-off revokes it (one round trip)."""
        return self._run(self._plan.is_revoked(jti, subject, issuer, issued_at))

    def add_revocation_listener(self, callback: RevocationListener) -> None:
        """Call ``callback`` after each revocation made through this object (not other replicas)."""
        self._listeners.add(callback)

    async def revoke_token_async(self, jti: str, *, expires_at: float) -> None:
        """Async twin of :meth:`revoke_token`."""
        op, event = self._plan.revoke_token(jti, expires_at)
        if op is not None:
            await self._arun(op)
        self._listeners.notify(event)

    async def revoke_subject_async(self, subject: str, *, issuer: str, until: float) -> None:
        """Async twin of :meth:`revoke_subject`."""
        op, event = self._plan.revoke_subject(subject, issuer, until)
        if op is not None:
            await self._arun(op)
        self._listeners.notify(event)

    async def revoke_issued_before_async(self, issuer: str, *, before: float, until: float) -> None:
        """Async twin of :meth:`revoke_issued_before`."""
        op, event = self._plan.revoke_issued_before(issuer, before, until)
        if op is not None:
            await self._arun(op)
        self._listeners.notify(event)

    async def is_revoked_async(
        self, *, jti: str | None, subject: str | None, issuer: str, issued_at: float | None
    ) -> bool:
        """Async twin of :meth:`is_revoked`."""
        return await self._arun(self._plan.is_revoked(jti, subject, issuer, issued_at))

    # --- replay cache and rate limits -------------------------------------------------------

    def check_and_store(self, key: str, *, expires_at: float) -> bool:
        """``True`` the first time ``key`` is seen, ``False`` while it is remembered."""
        return self._run(self._plan.replay(key, expires_at))

    def acquire(self, key: str, *, rate: float, burst: int, cost: int = 1) -> RateLimitResult:
        """Take ``cost`` tokens from ``key``'s bucket, timed by the Redis server's clock."""
        return self._run(self._plan.rate(key, rate, burst, cost))

    async def check_and_store_async(self, key: str, *, expires_at: float) -> bool:
        """Async twin of :meth:`check_and_store`."""
        return await self._arun(self._plan.replay(key, expires_at))

    async def acquire_async(
        self, key: str, *, rate: float, burst: int, cost: int = 1
    ) -> RateLimitResult:
        """Async twin of :meth:`acquire`."""
        return await self._arun(self._plan.rate(key, rate, burst, cost))

    # --- health and lifecycle ---------------------------------------------------------------

    def ping(self) -> None:
        """Round trip to the server; raises :class:`StoreUnavailable` if it does not answer."""
        if self._client is None:
            raise ConfigurationError(_NO_SYNC)
        try:
            self._client.ping()
        except self._errors as exc:
            raise self._unavailable(exc) from exc

    async def ping_async(self) -> None:
        """Async :meth:`ping`."""
        if self._aclient is None:
            raise ConfigurationError(_NO_ASYNC)
        try:
            await self._aclient.ping()
        except self._errors as exc:
            raise self._unavailable(exc) from exc

    def health(self) -> StoreHealth:
        """A :meth:`ping` as a :class:`StoreHealth` (never raises for an unavailable server)."""
        try:
            self.ping()
        except StoreUnavailable as exc:
            return StoreHealth("redis", False, str(exc))
        return StoreHealth("redis", True)

    async def health_async(self) -> StoreHealth:
        """Async :meth:`health`."""
        try:
            await self.ping_async()
        except StoreUnavailable as exc:
            return StoreHealth("redis", False, str(exc))
        return StoreHealth("redis", True)

    def close(self) -> None:
        """Close the sync client if this store created it (clients passed in stay yours)."""
        if self._owned and self._client is not None:
            self._client.close()

    async def aclose(self) -> None:
        """Close the async client if this store created it; call it inside its event loop."""
        if self._owned and self._aclient is not None:
            await self._aclient.aclose()
