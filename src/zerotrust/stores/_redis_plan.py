"""Sans-IO planning for the Redis store: each operation becomes one :class:`Op`.

The planner validates arguments, derives key names and script arguments, and says how to read
the reply. The sync and the async drivers in ``redis.py`` only execute the plan, so both share
every line of logic. Nothing here imports redis-py.
"""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

from zerotrust._clock import Clock
from zerotrust.stores import _lua
from zerotrust.stores._logic import (
    KeySpace,
    check_rate,
    finite,
    replay_deadline,
    revocation_end,
)
from zerotrust.stores.base import RateLimitResult, Revocation

__all__ = [
    "OWN_CONNECTION_SETTINGS",
    "SCRIPTS",
    "Op",
    "Planner",
    "checks_hostname_by_default",
    "describe_client",
    "describe_url",
    "path_problem",
    "query_problem",
    "url_overrides",
]

_T = TypeVar("_T")
SCRIPTS: Final = {
    "revoke": _lua.REVOKE,
    "is_revoked": _lua.IS_REVOKED,
    "replay": _lua.REPLAY,
    "rate": _lua.RATE_LIMIT,
}

#: Query parameters of a Redis URL that redis-py would let override the store's own connection
#: settings (the URL's query wins over the arguments it is given): a longer or no timeout, a
#: retry on timeouts, another pool size.
OWN_CONNECTION_SETTINGS: Final = frozenset(
    {
        "max_connections",
        "retry",
        "retry_on_error",
        "retry_on_timeout",
        "socket_connect_timeout",
        "socket_timeout",
        "timeout",
    }
)


def url_overrides(url: str) -> list[str]:
    """The query parameters of ``url`` that would override the store's connection settings."""
    try:
        query = urlsplit(url).query
    except ValueError:
        return []  # refused as an invalid URL where it is used
    names = {name for name, _ in parse_qsl(query, keep_blank_values=True)}
    return sorted(names & OWN_CONNECTION_SETTINGS)


_UNKNOWN_ARGUMENT = re.compile(r"keyword argument '([A-Za-z0-9_]{1,64})'")


def query_problem(url: str) -> str | None:
    """What the Redis client would refuse in ``url`` only when it opens its first connection
    (a query parameter it does not know, a value it does not take): every request would be
    refused, or with a store failing open, every check skipped. Found now, without connecting,
    and said without the query's values."""
    try:
        import redis
    except ModuleNotFoundError:  # building the store names the missing extra
        return None
    try:
        pool = redis.ConnectionPool.from_url(url)
        pool.connection_class(**pool.connection_kwargs)  # a connection object: no socket yet
    except TypeError as exc:
        found = _UNKNOWN_ARGUMENT.search(str(exc))
        what = f" {found.group(1)!r}" if found else ""
        return f"the Redis client takes no query parameter{what}"
    except (ValueError, redis.RedisError):
        return "the Redis client refuses a value of its query"
    return None


def _names_a_database(path: str) -> bool:
    """Whether a ``redis://`` or ``rediss://`` URL's path is what it may be: empty, or the
    number of a database (``/3``)."""
    number = unquote(path).replace("/", "")
    return not number or (number.isascii() and number.isdigit())


def path_problem(url: str) -> str | None:
    """What is wrong with the path of a Redis URL, said without it.

    The path of a ``redis://`` or ``rediss://`` URL names the database; the Redis client
    ignores any other path and uses database 0 of wherever the rest of the URL points. A
    ``unix://`` URL names no host. Either is mostly a password holding an unencoded ``/``:
    what follows it reads as the path, what precedes it as a host and port, and the URL would
    be shown, password included, as where the store points."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None  # refused as an invalid URL where it is used
    if parts.scheme in ("redis", "rediss") and not _names_a_database(parts.path):
        return (
            "its path must be a database number: percent-encode a '/' in the user name or"
            " password (%2F)"
        )
    if parts.scheme == "unix" and parts.netloc.rpartition("@")[2]:
        return (
            "a unix:// URL names no host (unix:///path/to/redis.sock): percent-encode a '/'"
            " in the user name or password (%2F)"
        )
    return None


def checks_hostname_by_default(url: str) -> bool:
    """Whether a TLS ``url`` needs ``ssl_check_hostname=True`` passed: redis-py before 6.0
    verified the server's certificate but not that it names the URL's host (any certificate
    from a trusted authority would pass). Not when the URL turns certificate checks off
    (``ssl_cert_reqs=none``: redis-py 5 refuses the pair); a URL's own ``ssl_check_hostname``
    wins over it anyway."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False  # refused as an invalid URL where it is used
    if parts.scheme != "rediss":
        return False
    query = dict(reversed(parse_qsl(parts.query, keep_blank_values=True)))  # first one wins
    return query.get("ssl_cert_reqs") != "none"


def _nonce() -> str:
    """Names one call, so that the same call sent twice is recognised as one (see _lua)."""
    return secrets.token_hex(8)


@dataclass(frozen=True, slots=True)
class Op(Generic[_T]):
    """One round trip: the Lua script ``script`` on ``keys`` and ``args``.

    Operations are safe to send twice: redis-py sends a command again when its connection
    drops, which may happen after Redis ran it. Revocations merge; the replay check carries a
    nonce naming the call (its second run answers what the first did), and so does the token
    bucket, which remembers its last call only (docs/stores.md)."""

    script: str
    keys: tuple[str, ...]
    args: tuple[str, ...]
    parse: Callable[[Any], _T]


def _num(value: float) -> str:
    """A float as text that Lua's ``tonumber`` reads back exactly."""
    return repr(float(value))


def _ignore(_raw: Any) -> None:
    return None


def _flag(raw: Any) -> bool:
    return int(raw) == 1


def _rate_result(raw: Any) -> RateLimitResult:
    allowed, remaining, retry = raw
    if isinstance(retry, bytes):
        retry = retry.decode("ascii")
    return RateLimitResult(int(allowed) == 1, int(remaining), float(retry))


_Revoke = tuple[Op[None] | None, Revocation]


class Planner:
    """Builds :class:`Op` values; revocations that already lapsed plan no round trip."""

    __slots__ = ("clock", "keys", "replay_max_ttl", "server_time")

    def __init__(self, keys: KeySpace, clock: Clock, replay_max_ttl: float) -> None:
        self.keys = keys
        self.clock = clock
        self.replay_max_ttl = replay_max_ttl
        self.server_time = True  # tests switch this off to drive token buckets by `clock`

    def now(self) -> float:
        return self.clock.now().timestamp()

    def _revoke(self, key: str, until: float, cutoff: float | None, now: float) -> Op[None] | None:
        if until <= now:
            return None
        args = (_num(now), _num(until), "" if cutoff is None else _num(cutoff))
        return Op("revoke", (key,), args, _ignore)

    def revoke_token(self, jti: str, expires_at: float) -> _Revoke:
        until, now = revocation_end("expires_at", expires_at), self.now()
        op = self._revoke(self.keys.token(jti), until, None, now)
        return op, Revocation("token", until, jti=jti)

    def revoke_subject(self, subject: str, issuer: str, until: float) -> _Revoke:
        until, now = revocation_end("until", until), self.now()
        op = self._revoke(self.keys.subject(issuer, subject), until, now, now)
        return op, Revocation("subject", until, subject=subject, issuer=issuer, cutoff=now)

    def revoke_issued_before(self, issuer: str, before: float, until: float) -> _Revoke:
        before, now = finite("before", before), self.now()
        until = revocation_end("until", until)
        op = self._revoke(self.keys.issuer(issuer), until, before, now)
        return op, Revocation("issuer", until, issuer=issuer, cutoff=before)

    def is_revoked(
        self, jti: str | None, subject: str | None, issuer: str, issued_at: float | None
    ) -> Op[bool]:
        iat = "" if issued_at is None else _num(finite("issued_at", issued_at))
        by_issuer = self.keys.issuer(issuer)
        keys = (
            by_issuer if jti is None else self.keys.token(jti),
            by_issuer if subject is None else self.keys.subject(issuer, subject),
            by_issuer,
        )
        flags = ("0" if jti is None else "1", "0" if subject is None else "1")
        return Op("is_revoked", keys, (_num(self.now()), iat, *flags), _flag)

    def replay(self, key: str, expires_at: float) -> Op[bool]:
        expires_at, now = finite("expires_at", expires_at), self.now()
        deadline = replay_deadline(expires_at, now, self.replay_max_ttl)
        ttl_ms = max(1, math.ceil((deadline - now) * 1000))
        return Op("replay", (self.keys.replay(key),), (str(ttl_ms), _nonce()), _flag)

    def rate(self, key: str, rate: float, burst: int, cost: int) -> Op[RateLimitResult]:
        rate_f, burst_f, cost = check_rate(rate, burst, cost)
        now = "" if self.server_time else _num(self.now())
        args = (_num(rate_f), _num(burst_f), str(cost), now, _nonce())
        return Op("rate", (self.keys.rate(key),), args, _rate_result)


def describe_url(url: str) -> str:
    """``url`` without credentials or query, for messages: ``scheme://host:port/db``."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "an invalid Redis URL"
    if path_problem(url) is not None:  # perhaps a password's tail: never echoed
        return "an invalid Redis URL"
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"


def describe_client(client: Any) -> str:
    """Where a caller-supplied client points, from its pool's connection settings."""
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {})
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    return f"redis://{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"
