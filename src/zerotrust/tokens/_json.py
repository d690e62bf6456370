"""Strict, bounded JSON for token headers, claims and key sets.

* Only a JSON *object* is accepted at the top level.
* Duplicate member names are refused (RFC 7515 §5.2 / RFC 7519 §4: a parser that keeps the
  last value lets two readers of one token disagree on what it says).
* ``NaN``/``Infinity`` and non-finite floats are refused (integers are bounded by the
  input size and by the interpreter's integer-string conversion limit).
* A ``\\ud800``-style escape of an unpaired surrogate is refused (I-JSON, RFC 7493 §2.1): the
  string it makes is no Unicode text, and it would fail later, wherever a claim is encoded
  (an audit exporter, a store key, a response header), rather than here.
* Nesting depth is bounded *before* parsing, with a few linear C-level regex passes (no
  Python loop over characters and no recursion), so no input can reach ``RecursionError``.
* The result is deeply immutable: objects become :class:`types.MappingProxyType` and arrays
  become tuples, so a value shared through a cache cannot be changed by one of its readers.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

__all__ = ["MAX_DEPTH", "JSONError", "depth_ok", "freeze", "loads_dict", "loads_object", "thaw"]

MAX_DEPTH: Final = 16
"""Deepest nesting of objects/arrays accepted in a header, a claims set or a key set."""

_ESCAPE: Final = re.compile(r"\\.", re.DOTALL)
_STRING: Final = re.compile(r'"[^"]*"')
_NOT_BRACKET: Final = re.compile(r"[^\[\]{}]+")
_EMPTY_PAIR: Final = re.compile(r"\[\]|\{\}")


class JSONError(ValueError):
    """The text is not an acceptable JSON object (the message names the rule only)."""


def _constant(name: str) -> Any:
    raise JSONError("non-finite number")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JSONError("non-finite number")
    return value


# Objects are parsed to tuples of (name, value) pairs by a C-level hook (no Python call per
# object); _build() turns them into read-only mappings and refuses duplicate names.
_DECODER: Final = json.JSONDecoder(
    object_pairs_hook=tuple, parse_constant=_constant, parse_float=_float
)
_SCAN: Final = _DECODER.scan_once  # type: ignore[attr-defined]
_WHITESPACE: Final = " \t\n\r"


def depth_ok(text: str, max_depth: int = MAX_DEPTH) -> bool:
    """Whether the object/array nesting of ``text`` is at most ``max_depth``.

    Counting brackets is an upper bound, so most inputs are settled by two ``str.count``
    calls. Otherwise: drop escapes, then strings, then everything but brackets, and peel
    innermost ``[]``/``{}`` pairs once per level. Unbalanced input answers ``False``.
    """
    if text.count("{") + text.count("[") <= max_depth:
        return True
    return _depth_exact(text, max_depth)


def _depth_exact(text: str, max_depth: int) -> bool:
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", _ESCAPE.sub("", text)))
    for _ in range(max_depth):
        if not brackets:
            return True
        peeled = _EMPTY_PAIR.sub("", brackets)
        if len(peeled) == len(brackets):
            return False
        brackets = peeled
    return not brackets


def _build(value: Any) -> Any:
    kind = type(value)
    if kind is tuple:  # an object, as its (name, value) pairs
        obj = {name: _build(item) for name, item in value}
        if len(obj) != len(value):
            raise JSONError("duplicate member name")
        return MappingProxyType(obj)
    if kind is list:
        return tuple(_build(item) for item in value)
    return value


def freeze(value: Any) -> Any:
    """A deeply immutable copy: dicts become mapping proxies, lists become tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({key: freeze(item) for key, item in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(item) for item in value)
    return value


def thaw(value: Any) -> Any:
    """The inverse of :func:`freeze`: plain dicts and lists (e.g. for ``json.dumps``)."""
    if isinstance(value, Mapping):
        return {key: thaw(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return [thaw(item) for item in value]
    return value


def loads_object(data: bytes | str, *, max_depth: int = MAX_DEPTH) -> Mapping[str, Any]:
    """Parse a UTF-8 JSON object strictly; raises :class:`JSONError` for anything else."""
    return MappingProxyType(loads_dict(data, max_depth=max_depth))


def loads_dict(data: bytes | str, *, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """Like :func:`loads_object`, but the top level is a plain dict (nested values are
    still read-only): for callers that wrap it themselves after reading it."""
    # Errors are raised out of the except clauses: the caught exception would stay their
    # __context__ (which ``from None`` only hides from tracebacks), and a UnicodeDecodeError
    # holds the whole input (a token's claims, a response that echoes a secret) in its repr.
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is None:
            raise JSONError("not UTF-8")
    else:
        text = data
    flat = "[" not in text and text.count("{") == 1  # one object, no array: depth 1
    if not flat and not depth_ok(text, max_depth):
        raise JSONError("nested too deeply")
    parsed = True
    try:
        if text[:1] == "{":  # the common case: skip the whitespace handling of decode()
            value, end = _SCAN(text, 0)
            if end != len(text) and text[end:].strip(_WHITESPACE):
                raise JSONError("trailing data after the JSON object")
        else:
            value = _DECODER.decode(text)
    except JSONError:
        raise
    except (StopIteration, ValueError, RecursionError):  # JSONDecodeError is a ValueError
        parsed = False
    if not parsed:
        raise JSONError("not valid JSON")
    if type(value) is not tuple:
        raise JSONError("not a JSON object")
    # flat: no nested value to build
    obj = dict(value) if flat else {name: _build(item) for name, item in value}
    if len(obj) != len(value):
        raise JSONError("duplicate member name")
    if "\\u" in text:  # only an escape can make a lone surrogate out of UTF-8 text
        _check_text(obj)
    return obj


def _check_text(value: Any) -> None:
    """Refuse a string (member name or value) holding an unpaired surrogate."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # its repr holds the string: raised with no context
            value = None
        if value is None:
            raise JSONError("unpaired surrogate escape")
    elif isinstance(value, Mapping):
        for name, item in value.items():
            _check_text(name)
            _check_text(item)
    elif type(value) is tuple:
        for item in value:
            _check_text(item)
