"""Credentials and channel options for gRPC clients: mTLS material from sources, a token
call-credentials plugin, and the retry policy (applied by the channel's interceptors; grpc's
own retries are off)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import grpc  # type: ignore[import-untyped,unused-ignore]

from zerotrust.client._rejections import Rejections
from zerotrust.errors import ConfigurationError, NoTrustBundle, SourceError
from zerotrust.identity import TrustDomain
from zerotrust.tokens._outgoing_cache import _unverified_exp, check_token
from zerotrust.tokens.outgoing import TokenSource
from zerotrust.x509._certs import certs_to_pem
from zerotrust.x509.bundle import BundleSet
from zerotrust.x509.svid import X509Svid

__all__ = ["RetryPolicy", "TokenPlugin", "channel_credentials"]

_log = logging.getLogger("zerotrust.grpc")

_STATUS_NAMES: Final = frozenset(code.name for code in grpc.StatusCode)


def channel_credentials(
    svid: X509Svid, bundles: BundleSet, trust_domain: TrustDomain | None
) -> Any:
    """mTLS channel credentials presenting ``svid``; grpc trusts only the authorities of the
    server's ``trust_domain`` (all bundles' authorities when it is not known). Raises
    :class:`~zerotrust.errors.NoTrustBundle` when there is none (withdrawn, or never known)."""
    if trust_domain is not None:
        bundle = bundles.get(trust_domain)
        authorities = list(bundle.x509_authorities) if bundle is not None else []
    else:
        authorities = bundles.all_x509_authorities()
    if not authorities:
        where = f"trust domain {trust_domain}" if trust_domain is not None else "the bundles"
        raise NoTrustBundle(f"no X.509 authorities for {where}")
    return grpc.ssl_channel_credentials(
        root_certificates=certs_to_pem(authorities),
        private_key=svid.private_key_pem(),
        certificate_chain=svid.cert_chain_pem(),
    )


#: The backoffs grpc's service config accepts: grpc keeps them in whole milliseconds and
#: refuses 0 (so less than 1 ms), and a duration is at most google.protobuf.Duration's limit.
_MIN_DURATION: Final = 0.001
_MAX_DURATION: Final = 315_576_000_000


def _duration(seconds: float) -> str:
    return f"{seconds:.9f}s"


#: Status codes of a refusal (the same credentials get the same answer), as 401 and 403 are
#: for HTTP clients.
_NEVER_RETRIED: Final = frozenset({"UNAUTHENTICATED", "PERMISSION_DENIED"})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retries of a zerotrust channel's calls, applied to every method (by the channel, not
    by grpc, whose own retries are off: they would send a call again over a connection no
    identity check covered).

    Each attempt is a new call that waits for the server identity check first. A unary-unary
    call is tried again when an attempt failed with one of ``retryable_status_codes`` and no
    response metadata arrived; a call of any arity when the check could not run
    (``UNAVAILABLE``: no connection, or the probe failed or took too long), whatever
    ``retryable_status_codes`` names, since nothing was sent. The n-th wait is uniform in [0,
    min(``max_backoff``, ``initial_backoff`` * ``backoff_multiplier`` ** (n-1))], and the call's
    deadline covers all attempts and waits; ``max_attempts`` counts the first attempt (at most
    5, as grpc's). Backoffs are what a grpc service config accepts: from 0.001 to
    315,576,000,000 seconds. ``UNAUTHENTICATED`` and ``PERMISSION_DENIED`` are refused as
    retryable codes: a refusal stands. Any method is retried, idempotent or not: name only codes
    a server sends before it has acted.
    """

    max_attempts: int = 3
    initial_backoff: float = 0.1
    max_backoff: float = 1.0
    backoff_multiplier: float = 2.0
    retryable_status_codes: tuple[str, ...] = ("UNAVAILABLE",)

    def __post_init__(self) -> None:
        if type(self.max_attempts) is not int or not 2 <= self.max_attempts <= 5:
            raise ConfigurationError("max_attempts must be an int from 2 to 5")
        for name in ("initial_backoff", "max_backoff", "backoff_multiplier"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigurationError(f"{name} must be a number")
            if not (math.isfinite(value) and value > 0):
                raise ConfigurationError(f"{name} must be positive and finite")
        for name in ("initial_backoff", "max_backoff"):  # grpc's: 1 ms to ~10,000 years
            if not _MIN_DURATION <= getattr(self, name) <= _MAX_DURATION:
                raise ConfigurationError(
                    f"{name} must be from {_MIN_DURATION} to {_MAX_DURATION} seconds"
                )
        if self.max_backoff < self.initial_backoff:
            raise ConfigurationError("max_backoff must be at least initial_backoff")
        codes: object = self.retryable_status_codes
        if not isinstance(codes, tuple) or not codes or not set(codes) <= _STATUS_NAMES - {"OK"}:
            raise ConfigurationError("retryable_status_codes must name grpc status codes")
        refused = sorted(_NEVER_RETRIED.intersection(codes))
        if refused:  # a refusal stands: sending the same credentials again changes nothing
            raise ConfigurationError(f"{', '.join(refused)} are never retried")

    def service_config(self) -> str:
        """The same policy as grpc's ``grpc.service_config`` JSON (for channels made without
        zerotrust; zerotrust's channels do not use it)."""
        policy = {
            "maxAttempts": self.max_attempts,
            "initialBackoff": _duration(self.initial_backoff),
            "maxBackoff": _duration(self.max_backoff),
            "backoffMultiplier": self.backoff_multiplier,
            "retryableStatusCodes": list(self.retryable_status_codes),
        }
        return json.dumps({"methodConfig": [{"name": [{}], "retryPolicy": policy}]})


@dataclass(frozen=True, slots=True)
class _Memo:
    header: str = field(repr=False)  # "Bearer <token>"
    use_until: float
    poll_at: float


class _Fetch:
    """One call of the token source, on a daemon thread of its own, and the calls waiting for
    its token (grpc's plugin callbacks)."""

    __slots__ = ("done", "error", "memo", "started", "timer", "waiters")

    def __init__(self, started: float) -> None:
        self.started = started
        self.done = False
        self.memo: _Memo | None = None
        self.error: BaseException | None = None
        self.waiters: list[Any] = []
        self.timer: threading.Timer | None = None


def _answer(callback: Any, memo: _Memo | None, error: BaseException | None) -> None:
    if memo is not None:
        callback((("authorization", memo.header),), None)
    else:
        callback(None, error or SourceError("no token"))


def _token_of(metadata: Any) -> str | None:
    """The token in the metadata the plugin answered with (``None``: it answered an error)."""
    if not metadata:
        return None
    header: str = metadata[0][1]
    return header.removeprefix("Bearer ")


class TokenPlugin(grpc.AuthMetadataPlugin):  # type: ignore[misc]
    """Attaches ``authorization: Bearer <token for audience>`` to every call.

    grpc calls the plugin on its own thread for each call. A valid token is answered at once
    from a small memo; the token source is consulted on a background thread (at most every
    ``poll_interval`` seconds, which is where it refreshes ahead of expiry), so no call waits
    for a refresh while a valid token is at hand. Without one, the call waits for the source,
    and grpc fails it at its deadline if the source is slower. A memoized token is never used
    within ``margin`` seconds of its ``exp``, or within a tenth of the life it had left when it
    was handed out if that is shorter (a token minted for 20 s is used for 18 s, not 15 s).
    A token without a readable ``exp`` (an opaque
    token, whose expiry only the source knows) is used for ``opaque_lifetime`` seconds after
    the source last handed it out, and never past the expiry the source tells
    (``source.expires_at(audience, token)``, which zerotrust's sources have): a source whose
    refresh fails hands its token out until the token's last instant.

    Each fetch runs on a daemon thread, so a token source that never returns keeps neither the
    process from exiting nor later calls from fetching: the calls waiting for a fetch fail
    (``SourceError``) once it has run ``fetch_timeout`` seconds, and the next call starts
    another. At most ``max_fetches`` run at once (those stuck in the source included); beyond
    that, calls without a token fail at once. grpc reports a failure here as ``UNAVAILABLE``,
    which a :class:`RetryPolicy` may retry: each attempt is a call of its own here (and may
    wait ``fetch_timeout`` again). :meth:`close` fails the waiting calls and every later one;
    a fetch still inside the source is abandoned.
    """

    poll_interval: Final = 1.0
    margin: Final = 5.0
    opaque_lifetime: Final = 2.0
    fetch_timeout: Final = 30.0
    max_fetches: Final = 4

    def __init__(
        self,
        source: TokenSource,
        audience: str,
        *,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not callable(getattr(source, "token", None)):
            raise ConfigurationError("token_source must be a TokenSource")
        if not isinstance(audience, str) or not audience:
            raise ConfigurationError("audience must be a non-empty string")
        self._source = source
        self._audience = audience
        # the clocks: POSIX time to read a token's exp against, monotonic time for the rest
        self._wall, self._monotonic = wall, monotonic
        self._memo: _Memo | None = None
        self._lock = threading.Lock()
        self._fetch: _Fetch | None = None  # the latest fetch, until it ends or times out
        self._running = 0  # fetch threads inside the source
        self._closed = False
        self._rejections = Rejections(source)

    def __call__(self, context: Any, callback: Any) -> None:
        now = self._monotonic()
        memo = self._memo
        if memo is not None and now < memo.use_until:
            callback((("authorization", memo.header),), None)
            if now >= memo.poll_at:
                with self._lock:
                    self._start()
            return
        with self._lock:
            fetch, error = self._start()
            if fetch is not None and not fetch.done:
                fetch.waiters.append(callback)
                if fetch.timer is None:  # someone waits: bound the wait
                    left = fetch.started + self.fetch_timeout - now
                    fetch.timer = threading.Timer(max(left, 0.0), self._expire, (fetch,))
                    fetch.timer.daemon = True
                    fetch.timer.start()
                return
        if fetch is not None:
            _answer(callback, fetch.memo, fetch.error)
        else:
            callback(None, error)

    def current(self) -> str | None:
        """The token a call made now gets at once (``None``: it would wait for the source)."""
        memo = self._memo
        if memo is None or self._monotonic() >= memo.use_until:
            return None
        return memo.header.removeprefix("Bearer ")

    def refused(self, token: str) -> None:
        """A server refused ``token`` (``error="invalid_token"``): it is no longer attached,
        and the source is asked to drop it (as ``Rejections`` tells it), so that the next call
        gets a new one. A source that raises there is logged; the call's outcome stays its
        refusal."""
        with self._lock:
            memo = self._memo
            if memo is not None and memo.header == f"Bearer {token}":
                self._memo = None
        self._rejections.reject(self._audience, token)  # a source that raises is logged

    def wait_token(self, timeout: float | None) -> str | None:
        """The token the next call would carry, waiting for the source if need be (at most
        ``timeout`` seconds, and the fetch's own bound); ``None`` if there is none."""
        answered = threading.Event()
        box: list[str | None] = []

        def callback(metadata: Any, error: BaseException | None) -> None:
            box.append(_token_of(metadata))
            answered.set()

        self(None, callback)
        if not answered.wait(None if timeout is None else min(timeout, threading.TIMEOUT_MAX)):
            return None
        return box[0]

    async def atoken(self, timeout: float | None) -> str | None:
        """:meth:`wait_token` for the event loop (the wait happens on the plugin's threads)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str | None] = loop.create_future()

        def settle(token: str | None) -> None:
            if not future.done():
                future.set_result(token)

        def callback(metadata: Any, error: BaseException | None) -> None:
            with contextlib.suppress(RuntimeError):  # the loop was closed meanwhile
                loop.call_soon_threadsafe(settle, _token_of(metadata))

        self(None, callback)
        try:
            await asyncio.wait((future,), timeout=timeout)
        finally:
            future.cancel()  # a caller cancelled, or the time is up: a late answer is dropped
        return future.result() if not future.cancelled() else None

    def _start(self) -> tuple[_Fetch | None, SourceError | None]:  # lock held
        """The fetch under way, or a new one (or why none can start)."""
        if self._closed:
            return None, SourceError("the channel is closed")
        fetch = self._fetch
        if fetch is not None and not fetch.done:
            return fetch, None
        if self._running >= self.max_fetches:
            return None, SourceError("the token source does not answer")
        fetch = self._fetch = _Fetch(self._monotonic())
        self._running += 1
        thread = threading.Thread(
            target=self._run, args=(fetch,), name="zerotrust-grpc-token", daemon=True
        )
        thread.start()
        return fetch, None

    def _run(self, fetch: _Fetch) -> None:
        memo: _Memo | None = None
        error: BaseException | None = None
        try:
            memo = self._get()
        except Exception as exc:
            error = exc
        finally:
            with self._lock:
                self._running -= 1
        self._end(fetch, memo, error)

    def _get(self) -> _Memo:
        try:
            token = check_token(self._source.token(self._audience))
        except Exception as exc:
            _log.warning("zerotrust: no token for %s: %s", self._audience, type(exc).__name__)
            raise
        now_wall, now = self._wall(), self._monotonic()
        exp = _unverified_exp(token)
        if exp is not None:
            use_until = self._until(exp, now_wall, now)
        else:
            use_until = now + self.opaque_lifetime
            told = getattr(self._source, "expires_at", None)
            expires = told(self._audience, token) if callable(told) else None
            if isinstance(expires, datetime) and expires.utcoffset() is not None:
                use_until = min(use_until, self._until(expires, now_wall, now))
        memo = _Memo(f"Bearer {token}", use_until, now + self.poll_interval)
        with self._lock:  # never after close(), which clears the memo under the same lock
            if not self._closed:
                self._memo = memo
        return memo

    def _until(self, expires: datetime, now_wall: float, now: float) -> float:
        """Until when (monotonic) a token expiring at ``expires`` is used: ``margin`` before,
        or a tenth of the life it has left if that is shorter."""
        left = expires.timestamp() - now_wall
        return now + left - min(self.margin, max(left, 0) / 10)

    def _expire(self, fetch: _Fetch) -> None:
        self._end(fetch, None, SourceError(f"no token after {self.fetch_timeout:g} s"))

    def _end(self, fetch: _Fetch, memo: _Memo | None, error: BaseException | None) -> None:
        """Answer the calls waiting for ``fetch`` (once: by the fetch, a timeout or close)."""
        with self._lock:
            if fetch.done:
                return
            fetch.done, fetch.memo, fetch.error = True, memo, error
            waiters, fetch.waiters = fetch.waiters, []
            timer = fetch.timer
        if timer is not None:
            timer.cancel()
        for callback in waiters:
            _answer(callback, memo, error)

    def close(self) -> None:
        """Fail the calls waiting for a token and refuse later ones (a fetch still inside
        the token source is abandoned: its thread is a daemon)."""
        with self._lock:
            self._closed = True
            self._memo = None
            fetch = self._fetch
        if fetch is not None:
            self._end(fetch, None, SourceError("the channel is closed"))
