"""A token a server refused (``error="invalid_token"``): how the token source is made to drop
it, for the httpx and gRPC clients alike."""

from __future__ import annotations

import hashlib
import inspect
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Final, Protocol, TypeAlias, runtime_checkable

__all__ = ["Rejections", "SupportsInvalidate", "challenge_errors", "says_invalid_token"]

_TCHARS: Final = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
#: An auth-param of a ``WWW-Authenticate`` challenge (RFC 9110 §11.2): a token, ``=`` with
#: optional whitespace around it, and a token or quoted-string value (groups: name, quoted
#: value, token value). A quoted-string met anywhere else is matched whole, so that nothing
#: inside one is ever read as a parameter.
_AUTH_PARAM: Final = re.compile(
    rf'(?<![^\s,])({_TCHARS})[ \t]*=[ \t]*(?:"((?:[^"\\]|\\.)*)"|({_TCHARS}))|"(?:[^"\\]|\\.)*"?',
    re.DOTALL,
)
_QUOTED_PAIR: Final = re.compile(r"\\(.)", re.DOTALL)
_log = logging.getLogger("zerotrust")
#: Audiences whose last refused token is remembered.
_MAX_REMEMBERED: Final = 1024
#: How long a refused token counts as dropped already, for a source that can only drop
#: whatever it holds: the calls in flight with it when it was refused end within that.
IN_FLIGHT_SECONDS: Final = 5.0


def challenge_errors(challenges: Iterable[object]) -> set[str]:
    """The ``error`` auth-params of the ``WWW-Authenticate`` values ``challenges`` (RFC 6750
    §3, RFC 9449 §7.1), lower-cased, quoted-pairs unescaped; text inside a quoted-string is no
    parameter, and values that are not text are ignored."""
    errors: set[str] = set()
    for value in challenges:
        if not isinstance(value, str):
            continue
        for match in _AUTH_PARAM.finditer(value):
            name, quoted, token = match.groups()
            if name is not None and name.lower() == "error":
                text = token if quoted is None else _QUOTED_PAIR.sub(r"\1", quoted)
                errors.add(text.lower())
    return errors


def says_invalid_token(challenges: Iterable[object]) -> bool:
    """Whether one of the ``WWW-Authenticate`` values ``challenges`` carries
    ``error="invalid_token"``."""
    return "invalid_token" in challenge_errors(challenges)


@runtime_checkable
class SupportsInvalidate(Protocol):
    """An optional token-source method: forget the cached token for ``audience``.

    :class:`ZeroTrustAuth` and zerotrust's gRPC channels pass the refused token as ``token``:
    only a cached token that is that one is forgotten. A source whose ``invalidate`` takes no
    ``token`` keyword is called with the audience alone."""

    def invalidate(self, audience: str, *, token: str | None = None) -> None:
        """Forget the cached token for ``audience`` (with ``token``: only if it is that one),
        so that the next ``token(audience)`` gets a new one."""
        ...


_Drop: TypeAlias = "Callable[[str, str], None]"
_Remembered: TypeAlias = "tuple[bytes, float]"


def _takes_token(method: Callable[..., object]) -> bool:
    """Whether ``method`` accepts a ``token`` keyword."""
    try:
        parameters = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):  # no signature to read: called the way it always was
        return False
    return any(
        p.kind is p.VAR_KEYWORD
        or (p.name == "token" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))
        for p in parameters
    )


def _dropper(source: object) -> tuple[_Drop | None, bool]:
    """How ``source`` is made to drop a refused token for an audience, and whether that drops
    the token only: that token only (``invalidate(audience, token=...)``), whatever it holds
    for the audience (an ``invalidate(audience)`` without the keyword), or everything
    (``clear()``); ``None`` when it has none of them."""
    if isinstance(source, SupportsInvalidate):
        invalidate = source.invalidate
        if _takes_token(invalidate):
            return (lambda audience, token: invalidate(audience, token=token)), True
        return (lambda audience, token: invalidate(audience)), False
    clear = getattr(source, "clear", None)
    if callable(clear):
        return (lambda audience, token: clear()), False
    return None, False


class Rejections:
    """Makes ``source`` drop each token a server refused.

    A source that drops the refused token only (``invalidate(audience, token=...)``) is told
    of every refusal: it keeps a token minted in the meantime, and a source that handed a
    refused token out again is told again. A source that can only drop whatever it holds is
    told once per token while the calls in flight with it are refused
    (:data:`IN_FLIGHT_SECONDS`), so a late refusal of the old token does not drop a new one,
    and again after that."""

    __slots__ = ("_drop", "_last", "_lock", "_now", "_precise")

    def __init__(self, source: object, *, now: Callable[[], float] = time.monotonic) -> None:
        self._drop, self._precise = _dropper(source)
        self._now = now
        self._lock = threading.Lock()
        self._last: OrderedDict[str, _Remembered] = OrderedDict()

    def reject(self, audience: str, token: str) -> None:
        """``token`` was refused for ``audience``: have the source drop it."""
        drop = self._drop
        if drop is None:
            return
        if self._precise:
            _tell(drop, audience, token)
            return
        digest = hashlib.sha256(token.encode("ascii", "replace")).digest()
        now = self._now()
        with self._lock:  # never held across a suspension of the callers' flows
            last = self._last.get(audience)
            if last is not None and last[0] == digest and now - last[1] < IN_FLIGHT_SECONDS:
                return  # a concurrent call already had it dropped
            self._last[audience] = (digest, now)
            self._last.move_to_end(audience)
            if len(self._last) > _MAX_REMEMBERED:
                self._last.popitem(last=False)
            _tell(drop, audience, token)


def _tell(drop: Callable[[str, str], object], audience: str, token: str) -> None:
    """Have the source drop ``token``. A source that raises there is logged (its type only):
    the request's outcome stays the refusal the server gave, whichever client made it."""
    try:
        drop(audience, token)
    except Exception as exc:
        _log.warning(
            "zerotrust: the token source could not drop a refused token for %s: %s",
            audience,
            type(exc).__name__,
        )
