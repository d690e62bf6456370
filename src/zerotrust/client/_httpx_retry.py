"""When an outgoing request is tried again, and after how long: :class:`RetryPolicy`.

The decisions here are pure functions of the request, the outcome of the last attempt and
the clock; the transports in :mod:`zerotrust.client._httpx_transport` hand them to tenacity.

A request is *retry-safe* when its method is idempotent (``GET``, ``HEAD``, ``OPTIONS``,
``PUT``, ``DELETE`` by default), it carries an ``Idempotency-Key`` header, or it is marked
``extensions={"zerotrust_retry": True}``; ``{"zerotrust_retry": False}`` disables every retry
for that request. Then:

* a connection that could not be opened (:class:`httpx.ConnectError`,
  :class:`httpx.ConnectTimeout`) is retried for **every** method: nothing was sent. A refused
  server identity (:class:`~zerotrust.PeerRejected` or another certificate verification
  failure in the cause chain) is never retried;
* other transport errors (read/write errors and timeouts, protocol errors) before the
  response headers arrive and the statuses 429, 502, 503, 504 are retried for retry-safe
  requests whose body can be replayed; a failure while the response body is read (after the
  transports returned the response) reaches the caller;
* 401 and 403 are never retried here (see :class:`~zerotrust.httpx.ZeroTrustAuth`);
* a response whose ``Retry-After`` asks for more than ``max_retry_after`` seconds is not
  retried: it is returned (sending it again earlier than the server allows would only be
  refused again).

The wait is the response's ``Retry-After`` (seconds or an HTTP date), else exponential
backoff with full jitter. Attempts are bounded by ``attempts`` and by ``max_elapsed``
seconds (a wait that would end past it is not started).
"""

from __future__ import annotations

import math
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timezone
from email.utils import parsedate_to_datetime
from typing import Final

import httpx

from zerotrust.errors import ConfigurationError

__all__ = [
    "IDEMPOTENT_METHODS",
    "RETRY_EXTENSION",
    "RETRY_STATUSES",
    "RetryEvent",
    "RetryPolicy",
    "loggable_url",
    "parse_retry_after",
]

IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
RETRY_STATUSES: Final = frozenset({429, 502, 503, 504})
#: Request extension: ``True`` marks a request retry-safe, ``False`` disables its retries.
RETRY_EXTENSION: Final = "zerotrust_retry"

_NOT_SENT: Final = (httpx.ConnectError, httpx.ConnectTimeout)
_TRANSIENT: Final = (
    httpx.ReadError,
    httpx.WriteError,
    httpx.ReadTimeout,
    httpx.WriteTimeout,
    httpx.RemoteProtocolError,
)
_MAX_DELAY_DIGITS: Final = 10
#: The longest wait between two attempts (``max_backoff``, ``max_retry_after``): a day, well
#: within what ``time.sleep`` takes.
_MAX_WAIT: Final = 86400.0


def parse_retry_after(value: str, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delay-seconds or an HTTP date (RFC 9110
    §10.2.3); ``None`` when it is neither. A date in the past means 0; delay-seconds too long
    to read (more than ten digits, centuries) are infinite."""
    value = value.strip()
    if value.isdigit() and value.isascii():
        return float(value) if len(value) <= _MAX_DELAY_DIGITS else math.inf
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # HTTP dates are always GMT
        when = when.replace(tzinfo=timezone.utc)
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


def _cause_chain(exc: BaseException) -> Iterable[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


@dataclass(frozen=True, slots=True)
class RetryEvent:
    """What :attr:`RetryPolicy.on_retry` is told before each wait."""

    method: str
    #: The request URL without user information, query or fragment (safe to log).
    url: str
    #: The attempt that failed (1 for the first).
    attempt: int
    #: Seconds until the next attempt.
    delay: float
    status: int | None = None
    error: BaseException | None = None
    #: The server's ``Retry-After`` in seconds, if it sent a usable one.
    retry_after: float | None = None


def loggable_url(url: httpx.URL) -> str:
    """``url`` without what may hold secrets: user information, query and fragment."""
    return str(url.copy_with(username=None, password=None, query=None, fragment=None))


def _positive(name: str, value: object, *, zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{name} must be a number of seconds")
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        raise ConfigurationError(f"{name} must be finite and {'>=' if zero else '>'} 0")
    return float(value)


@dataclass(frozen=True)
class RetryPolicy:
    """Which requests are retried, on what, and how long to wait (see the module docs)."""

    #: Total attempts, the first included (1 disables retries).
    attempts: int = 3
    #: No wait is started that would end later than this many seconds after the first attempt.
    max_elapsed: float = 30.0
    #: Backoff: the n-th wait is uniform in [0, min(max_backoff, backoff * 2**(n-1))].
    backoff: float = 0.1
    max_backoff: float = 5.0
    #: A response whose ``Retry-After`` asks for a longer wait is returned, not retried.
    max_retry_after: float = 30.0
    statuses: frozenset[int] = RETRY_STATUSES
    methods: frozenset[str] = IDEMPOTENT_METHODS
    #: Called before each wait (logging, metrics); must not block.
    on_retry: Callable[[RetryEvent], None] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if type(self.attempts) is not int or not 1 <= self.attempts <= 100:
            raise ConfigurationError("attempts must be an int from 1 to 100")
        for name in ("max_elapsed", "backoff", "max_backoff", "max_retry_after"):
            seconds = _positive(name, getattr(self, name), zero=name != "max_elapsed")
            object.__setattr__(self, name, seconds)  # a float, whatever number was given
        for name in ("max_backoff", "max_retry_after"):  # every wait is at most one of them
            if getattr(self, name) > _MAX_WAIT:
                raise ConfigurationError(f"{name} must be at most a day ({_MAX_WAIT:g} s)")
        statuses = frozenset(self.statuses)
        if not all(type(s) is int and 400 <= s <= 599 for s in statuses):
            raise ConfigurationError("statuses must be HTTP error statuses (400-599)")
        if statuses & {401, 403}:
            raise ConfigurationError("401 and 403 are never retried")
        object.__setattr__(self, "statuses", statuses)
        object.__setattr__(self, "methods", frozenset(m.upper() for m in self.methods))
        if self.on_retry is not None and not callable(self.on_retry):
            raise ConfigurationError("on_retry must be a callable")

    # -- decisions (shared by the sync and async transports) --------------------------------

    def retry_safe(self, request: httpx.Request) -> bool:
        """Whether the request may be sent again after it may have reached the server."""
        marked = request.extensions.get(RETRY_EXTENSION)
        if marked is not None:
            return marked is True
        return request.method in self.methods or "idempotency-key" in request.headers

    def retries_error(self, request: httpx.Request, error: BaseException) -> bool:
        """Whether an attempt that raised ``error`` is tried again."""
        if request.extensions.get(RETRY_EXTENSION) is False:
            return False
        if any(isinstance(e, ssl.SSLCertVerificationError) for e in _cause_chain(error)):
            return False  # a refused identity does not change on its own
        if isinstance(error, _NOT_SENT):
            return True
        return isinstance(error, _TRANSIENT) and self._resendable(request)

    def retries_response(self, request: httpx.Request, response: httpx.Response) -> bool:
        """Whether an attempt answered with ``response`` is tried again (never before the
        ``Retry-After`` it names: a longer one than ``max_retry_after`` is not waited for)."""
        if response.status_code not in self.statuses or not self._resendable(request):
            return False
        retry_after = self.retry_after(response)
        return retry_after is None or retry_after <= self.max_retry_after

    def _resendable(self, request: httpx.Request) -> bool:
        return self.retry_safe(request) and isinstance(request.stream, httpx.ByteStream)

    def retry_after(self, response: httpx.Response) -> float | None:
        """The response's ``Retry-After`` in seconds, if usable."""
        value = response.headers.get("retry-after")
        return None if value is None else parse_retry_after(value)

    def delay(self, attempt: int, response: httpx.Response | None, jitter: float) -> float:
        """The wait after failed attempt number ``attempt``: the ``Retry-After`` of
        ``response`` (one above ``max_retry_after`` is never waited for, see
        :meth:`retries_response`), else backoff; ``jitter`` is uniform in [0, 1)."""
        if response is not None:
            retry_after = self.retry_after(response)
            if retry_after is not None:
                return retry_after
        ceiling = min(self.max_backoff, self.backoff * 2.0 ** min(attempt - 1, 60))
        return ceiling * jitter

    def give_up(self, attempt: int, elapsed: float, delay: float) -> bool:
        """Whether to stop after ``attempt`` attempts rather than wait ``delay`` more seconds."""
        return attempt >= self.attempts or elapsed + delay > self.max_elapsed
