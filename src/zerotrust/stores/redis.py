"""The Redis store: shared revocations, replay cache and rate limits for many replicas.

Every operation is one round trip: an atomic Lua script (loaded once, run with ``EVALSHA``
and reloaded automatically after ``NOSCRIPT``), safe to run twice (redis-py sends a command
again when its connection drops, perhaps after Redis ran it). Keys are namespaced
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
import re
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, TypeVar

from zerotrust._clock import SYSTEM_CLOCK, Clock
from zerotrust.errors import (
    ConfigurationError,
    MissingDependencyError,
    StoreFull,
    StoreUnavailable,
)
from zerotrust.stores._logic import DEFAULT_PREFIX, DEFAULT_REPLAY_MAX_TTL, KeySpace, Listeners
from zerotrust.stores._redis_plan import (
    SCRIPTS,
    Op,
    Planner,
    checks_hostname_by_default,
    describe_client,
    describe_url,
    path_problem,
    url_overrides,
)
from zerotrust.stores.base import RateLimitResult, RevocationListener, StoreHealth

if TYPE_CHECKING:
    import redis
    import redis.asyncio
    import redis.asyncio.retry
    import redis.retry
    from redis.commands.core import AsyncScript, Script

__all__ = ["RedisStore"]

DEFAULT_URL: Final = "redis://127.0.0.1:6379/0"
DEFAULT_MAX_CONNECTIONS: Final = 100
#: The longest socket timeout (seconds): far longer ones overflow the platform's clock when a
#: connection is made, and every call would fail with an error no store setting covers.
_MAX_SOCKET_TIMEOUT: Final = 600.0
_MAX_DETAIL: Final = 200
_T = TypeVar("_T")
_P = TypeVar("_P", bound="redis.ConnectionPool | redis.asyncio.ConnectionPool")
_NO_SYNC = "this RedisStore has no sync client: pass url= or client="
_NO_ASYNC = "this RedisStore has no async client: pass url= or async_client="
#: How Redis before 7.0 answers an error a command inside a script ran into: wrapped in an ERR
#: (``Error running script (call to f_<sha1>): @user_script:2: @user_script: 2: -OOM command
#: not allowed ...``), so redis-py raises a plain ResponseError whatever the code within.
_WRAPPED_SCRIPT_ERROR = re.compile(r"Error running script \(call to f_[0-9a-f]+\): .*?: -([A-Z]+) ")


def _wrong_loop() -> ConfigurationError:
    # not an outage: a failure policy of "open" must not answer for it
    return ConfigurationError(
        "this RedisStore's async_client belongs to another event loop: pass url= (a client"
        " per loop) or use the client from its own loop"
    )


def _own_settings_only(url: str) -> str:
    """``url``, unless its query sets what the store sets itself: redis-py would let the
    query win (a longer timeout, a retry on timeouts, another pool size), nor a path that
    names no database (the client ignores it: mostly a password's unencoded ``/``)."""
    problem = path_problem(url)
    if problem is not None:
        raise ConfigurationError(f"invalid Redis URL ({describe_url(url)}): {problem}")
    overrides = url_overrides(url)
    if overrides:
        raise ConfigurationError(
            f"the Redis URL's query sets {', '.join(overrides)}: the store sets its"
            " connections' timeouts, retries and pool size itself (socket_timeout=,"
            " max_connections=)"
        )
    return url


def _buildable(pool: _P, location: str) -> _P:
    """``pool``, once one of its connections could be built (nothing connects): redis-py
    reads the URL's query into its connections' arguments only then, so an option they do
    not take, a value they refuse, or a host name no lookup accepts would otherwise fail
    every call, and not as an outage."""
    import redis

    try:
        pool.connection_class(**pool.connection_kwargs)
        host = pool.connection_kwargs.get("host")
        if isinstance(host, str):
            host.encode("idna")  # as the lookup does: a label of over 63 characters fails
    except (TypeError, ValueError, redis.RedisError) as exc:
        reason = " ".join(str(exc).split())[:_MAX_DETAIL]
        if any(secret in reason for secret in _credentials(pool)):
            reason = "reason withheld: it quotes a credential"
    else:
        return pool
    # raised out of the except clause: a reason withheld is not kept as the error's context
    raise ConfigurationError(f"invalid Redis URL ({location}): {reason}")


def _retries(retry: type[redis.retry.Retry | redis.asyncio.retry.Retry]) -> dict[str, Any]:
    """A pool's arguments for one immediate retry, on a new connection, after a dropped
    connection or after a READONLY reply (a primary since demoted to a read-only replica by a
    failover that moved the URL's address); never after a timeout."""
    import redis
    import redis.backoff

    errors: list[type[redis.RedisError]] = [redis.ConnectionError, redis.ReadOnlyError]
    return {
        "retry": retry(redis.backoff.NoBackoff(), 1, tuple(errors)),
        # redis-py before 6.0 sends a command again only after an error listed here too,
        # whatever the Retry's own list says
        "retry_on_error": errors,
    }


def _script_error_code(exc: BaseException) -> str | None:
    """The code of the error a command inside a script ran into (``OOM``, ``READONLY``) when
    Redis before 7.0 wrapped it in a generic ERR; ``None`` for any other error."""
    import redis.exceptions  # loaded with the client that raised ``exc``

    if not isinstance(exc, redis.exceptions.ResponseError):
        return None
    found = _WRAPPED_SCRIPT_ERROR.match(str(exc))
    return found.group(1) if found else None


def _reason(exc: BaseException) -> str:
    """``exc``'s message on one line, followed by the operating system's reason beneath it
    when the message leaves that out: redis-py before 5.0.8 names an async connection's failure
    by its error number alone (``Error 1 connecting to host:port. 1.`` for a certificate that
    does not verify, ``Error 111 ...`` for a refused connection)."""
    reason = " ".join(str(exc).split())
    below = exc.__cause__ or exc.__context__
    if isinstance(below, OSError):
        detail = " ".join(str(below.strerror or below).split())
        if detail and detail not in reason:
            reason = f"{reason}: {detail}" if reason else detail
    return reason


def _credentials(*clients: Any) -> tuple[str, ...]:
    """The username and password the clients log in with, to keep out of messages."""
    found: set[str] = set()
    for client in clients:
        pool = getattr(client, "connection_pool", client)  # a client, or a pool
        kwargs = getattr(pool, "connection_kwargs", {})
        for name in ("username", "password"):
            value = kwargs.get(name)
            if isinstance(value, str) and value:
                found.add(value)
    return tuple(found)


class RedisStore:
    """Revocations, replay cache and rate limits in Redis (``pip install 'zerotrust[redis]'``).

    Pass a ``url`` (default ``redis://127.0.0.1:6379/0``): the store then owns a sync client
    and an async client per event loop, each with ``socket_timeout`` on connect and on every
    reply, one immediate retry on a new connection after a dropped one or a ``READONLY`` reply
    (a primary demoted by a failover; never after a timeout), and a pool of at most
    ``max_connections`` connections in which a call waits up to ``socket_timeout`` for a free
    one. Or pass your own ``client`` (``redis.Redis``) and/or ``async_client``
    (``redis.asyncio.Redis``, bound to one event loop), configured as you wish: the sync
    methods need ``client``, the ``_async`` ones ``async_client``.

    ``clock`` is this process's clock (revocation cut-offs, replay deadlines);
    ``replay_max_ttl`` caps how long a replay entry is kept, as for :class:`MemoryStore`.
    """

    __slots__ = (
        "_aclient",
        "_aclient_loop",
        "_aclients",
        "_ascripts",
        "_client",
        "_errors",
        "_listeners",
        "_location",
        "_lock",
        "_make_async",
        "_plan",
        "_scripts",
        "_secrets",
    )

    def __init__(
        self,
        url: str | None = None,
        *,
        client: redis.Redis | None = None,
        async_client: redis.asyncio.Redis | None = None,
        prefix: str = DEFAULT_PREFIX,
        socket_timeout: float = 0.5,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        clock: Clock = SYSTEM_CLOCK,
        replay_max_ttl: float = DEFAULT_REPLAY_MAX_TTL,
    ) -> None:
        try:
            import redis
            import redis.asyncio
            import redis.asyncio.retry
            import redis.backoff
            import redis.retry
        except ImportError as exc:
            raise MissingDependencyError("redis", "redis", error=exc) from exc
        if url is not None and (client is not None or async_client is not None):
            raise ConfigurationError("pass either url= or client=/async_client=, not both")
        timeout = socket_timeout
        if isinstance(timeout, bool) or not (
            isinstance(timeout, (int, float)) and 0 < timeout <= _MAX_SOCKET_TIMEOUT
        ):
            raise ConfigurationError(
                "socket_timeout must be a positive number of seconds,"
                f" at most {_MAX_SOCKET_TIMEOUT:g}"
            )
        if isinstance(replay_max_ttl, bool) or not (
            isinstance(replay_max_ttl, (int, float)) and 1 <= replay_max_ttl < math.inf
        ):
            raise ConfigurationError("replay_max_ttl must be at least 1 second")
        if isinstance(max_connections, bool) or not (
            isinstance(max_connections, int) and 1 <= max_connections <= 100_000
        ):
            raise ConfigurationError("max_connections must be an int between 1 and 100000")
        self._plan = Planner(KeySpace(prefix), clock, float(replay_max_ttl))
        self._listeners = Listeners()
        self._errors: tuple[type[BaseException], ...] = (
            redis.RedisError,
            OSError,
            asyncio.TimeoutError,
        )
        # set when the store builds its own clients (from a URL): also how it knows they are its
        self._make_async: Callable[[], redis.asyncio.Redis] | None = None
        if client is None and async_client is None:
            url = _own_settings_only(DEFAULT_URL if url is None else url)
            self._location = describe_url(url)
            options: dict[str, Any] = {
                "max_connections": max_connections,
                "timeout": timeout,  # the wait for a free connection of the pool
                "socket_timeout": timeout,
                "socket_connect_timeout": timeout,
                # a TLS certificate must name the URL's host (redis-py 5 did not check)
                **({"ssl_check_hostname": True} if checks_hostname_by_default(url) else {}),
            }
            try:
                client = redis.Redis(
                    connection_pool=_buildable(
                        redis.BlockingConnectionPool.from_url(
                            url,
                            **_retries(redis.retry.Retry),
                            **options,
                        ),
                        self._location,
                    )
                )
            except ValueError:
                raise ConfigurationError(f"invalid Redis URL ({self._location})") from None
            client.auto_close_connection_pool = True
            owned_url = url

            def make_async() -> redis.asyncio.Redis:
                # an asyncio client belongs to the event loop that first uses it
                pool = _buildable(
                    redis.asyncio.BlockingConnectionPool.from_url(
                        owned_url,
                        **_retries(redis.asyncio.retry.Retry),
                        **options,
                    ),
                    self._location,
                )
                made = redis.asyncio.Redis(connection_pool=pool)
                made.auto_close_connection_pool = True
                return made

            self._make_async = make_async
        else:
            self._location = describe_client(client if client is not None else async_client)
        self._client = client
        self._aclient = async_client
        self._aclient_loop: asyncio.AbstractEventLoop | None = None  # the loop it belongs to
        self._secrets = _credentials(client, async_client)
        self._lock = threading.Lock()
        # one async client per event loop; a client refers to its loop, so entries of closed
        # loops are dropped whenever a new loop needs a client (their sockets close with them)
        self._aclients: dict[
            asyncio.AbstractEventLoop, tuple[redis.asyncio.Redis, dict[str, AsyncScript]]
        ] = {}
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

    def _quotes_credential(self, exc: BaseException) -> bool:
        reason = _reason(exc)
        return any(secret in reason for secret in self._secrets)

    def _cause(self, exc: BaseException) -> BaseException | None:
        """``exc`` to chain to its :class:`StoreUnavailable`, or ``None`` when it quotes a
        credential (a traceback shows the cause's message too). The error is raised out of the
        ``except`` clause that caught ``exc``, else ``exc`` would stay its ``__context__``."""
        return None if self._quotes_credential(exc) else exc

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        # for logs only (callers see "temporarily unavailable", audit events the code): the
        # server's own words name the cause, unless they quote the URL's credentials
        reason = _reason(exc)
        if self._quotes_credential(exc):
            reason = "reason withheld: it quotes a credential"  # masking would outline it
        reason = reason[:_MAX_DETAIL]
        import redis.exceptions  # loaded with the client that raised ``exc``

        # a server at maxmemory with noeviction answers, but has no room: not an outage
        full = (
            isinstance(exc, redis.exceptions.OutOfMemoryError) or _script_error_code(exc) == "OOM"
        )
        error = StoreFull if full else StoreUnavailable
        return error(
            f"shared store unavailable: {type(exc).__name__} from {self._location}"
            + (f" ({reason})" if reason else "")
        )

    def _async(self) -> tuple[redis.asyncio.Redis, dict[str, AsyncScript]]:
        """The async client (and its scripts) for the running event loop."""
        if self._make_async is None:
            if self._aclient is None:
                raise ConfigurationError(_NO_ASYNC)
            # your client belongs to the event loop that first uses it here: from another
            # loop its connections would be shared across loops (calls that hang or fail)
            loop = asyncio.get_running_loop()
            owner = self._aclient_loop
            if owner is None:
                with self._lock:
                    if self._aclient_loop is None:
                        self._aclient_loop = loop
                    owner = self._aclient_loop
            if owner is not loop:
                raise _wrong_loop()
            return self._aclient, self._ascripts
        loop = asyncio.get_running_loop()
        found = self._aclients.get(loop)
        if found is None:
            with self._lock:
                found = self._aclients.get(loop)
                if found is None:
                    for stale in [other for other in self._aclients if other.is_closed()]:
                        del self._aclients[stale]
                    made = self._make_async()
                    scripts = {name: made.register_script(src) for name, src in SCRIPTS.items()}
                    found = self._aclients[loop] = (made, scripts)
        return found

    def _parse(self, op: Op[_T], raw: Any) -> _T:
        try:
            return op.parse(raw)
        except (TypeError, ValueError, IndexError) as exc:
            raise StoreUnavailable(f"unexpected reply from {self._location}") from exc

    def _demoted(self, exc: BaseException) -> bool:
        """Whether ``exc`` is the READONLY of Redis before 7.0, to a client of the store's own:
        that Redis wraps it in a script error, which redis-py neither drops the connection for
        nor sends again, so every later call would reach the demoted primary too. The store
        drops the client's connections itself and sends the call once more, as redis-py does
        after Redis 7's READONLY."""
        return self._make_async is not None and _script_error_code(exc) == "READONLY"

    def _run(self, op: Op[_T]) -> _T:
        if self._client is None:
            raise ConfigurationError(_NO_SYNC)
        script = self._scripts[op.script]
        try:
            try:
                raw = script(keys=list(op.keys), args=list(op.args))
            except self._errors as exc:
                if not self._demoted(exc):
                    raise
                self._client.connection_pool.disconnect()
                raw = script(keys=list(op.keys), args=list(op.args))
        except self._errors as exc:
            failure: BaseException = exc
        else:
            return self._parse(op, raw)
        raise self._unavailable(failure) from self._cause(failure)

    async def _arun(self, op: Op[_T]) -> _T:
        client, scripts = self._async()
        script = scripts[op.script]
        try:
            try:
                raw = await script(keys=list(op.keys), args=list(op.args))
            except self._errors as exc:
                if not self._demoted(exc):
                    raise
                await client.connection_pool.disconnect()
                raw = await script(keys=list(op.keys), args=list(op.args))
        except self._errors as exc:
            failure: BaseException = exc
        except RuntimeError as exc:  # a client of yours used from another event loop
            raise _wrong_loop() from exc
        else:
            return self._parse(op, raw)
        raise self._unavailable(failure) from self._cause(failure)

    # --- revocation -------------------------------------------------------------------------

    def revoke_token(self, jti: str, *, expires_at: float) -> None:
        """Revoke the token with this ``jti`` until ``expires_at`` (its ``exp``), plus
        :data:`~zerotrust.stores.REVOCATION_GRACE`."""
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
            failure: BaseException = exc
        else:
            return
        raise self._unavailable(failure) from self._cause(failure)

    async def ping_async(self) -> None:
        """Async :meth:`ping`."""
        client, _ = self._async()
        try:
            await client.ping()
        except self._errors as exc:
            failure: BaseException = exc
        except RuntimeError as exc:  # a client of yours used from another event loop
            raise _wrong_loop() from exc
        else:
            return
        raise self._unavailable(failure) from self._cause(failure)

    @property
    def replay_max_ttl(self) -> float:
        """The longest a replay entry is kept, in seconds."""
        return self._plan.replay_max_ttl

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
        if self._make_async is not None and self._client is not None:
            self._client.close()

    async def aclose(self) -> None:
        """Close the async client this store created for the running event loop (a client
        passed in stays yours). Each event loop that used the store closes its own."""
        if self._make_async is None:
            return
        found = self._aclients.pop(asyncio.get_running_loop(), None)
        if found is not None:
            await found[0].aclose()
