"""SPIFFE IDs and trust domains as validated, immutable values.

Validation follows the SPIFFE-ID specification: ``spiffe://`` + a trust domain of
``[a-z0-9._-]`` (at most 255 bytes) + an optional path of ``/``-separated segments of
``[a-zA-Z0-9._-]`` (no empty, ``.`` or ``..`` segment, no trailing slash), at most 2048
bytes in all. Nothing is normalised: a string is either accepted exactly as written or
rejected with an :class:`~zerotrust.errors.InvalidSpiffeId` whose ``rule`` names why.
"""

from __future__ import annotations

import re
from typing import Final, NoReturn, TypeAlias, TypeVar, final

from zerotrust.errors import InvalidSpiffeId, InvalidTrustDomain

__all__ = ["MAX_ID_BYTES", "MAX_TRUST_DOMAIN_BYTES", "SpiffeId", "TrustDomain"]

MAX_ID_BYTES: Final = 2048
"""Longest SPIFFE ID accepted, in UTF-8 bytes (the spec's interoperability limit)."""
MAX_TRUST_DOMAIN_BYTES: Final = 255
"""Longest trust domain name accepted, in bytes."""

_PREFIX: Final = "spiffe://"
_TD_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-_")
_SEGMENT_CHARS: Final = _TD_CHARS | frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
# URI features SPIFFE forbids, each reported under its own rule: char -> (rule, noun).
# In a path only "?", "#" and "%" are such features; "@" and ":" are plain bad characters.
_URI_FEATURES: Final = {
    "@": ("userinfo", "userinfo"),
    ":": ("port", "a port"),
    "?": ("query", "a query"),
    "#": ("fragment", "a fragment"),
    "%": ("percent_encoding", "percent-encoding"),
}

# Fast path: a complete valid ID (dot segments excluded by the lookahead). The character
# classes are ASCII-only, so a match also proves that characters == bytes.
_SEGMENT = r"/(?!\.\.?(?:/|\Z))[a-zA-Z0-9._-]+"
_ID_RE: Final = re.compile(rf"spiffe://([a-z0-9._-]+)((?:{_SEGMENT})*)")
_PATH_RE: Final = re.compile(rf"(?:{_SEGMENT})*")
_TD_RE: Final = re.compile(r"[a-z0-9._-]+")

_Error: TypeAlias = type[InvalidSpiffeId]


def _show(value: str, limit: int = 64) -> str:
    """``repr`` of a (possibly hostile) input, shortened for error messages."""
    if len(value) > limit:
        return repr(value[:limit]) + "..."
    return repr(value)


def _utf8_len(value: str) -> int:
    if value.isascii():
        return len(value)
    # Lone surrogates count as three bytes rather than raising UnicodeEncodeError.
    return len(value.encode("utf-8", "surrogatepass"))


def _as_str(value: object, err: _Error, what: str) -> str:
    if type(value) is str:
        return value
    if isinstance(value, str):  # a str subclass: take a plain copy of its characters
        return str.__str__(value)
    raise err("not_a_string", f"{what} must be a str, not {type(value).__name__}")


def _bad_char(err: _Error, text: str, index: int, where: str = "trust domain") -> NoReturn:
    char, in_path = text[index], where == "path segment"
    rule, allowed = ("path_char", "a-z, A-Z, 0-9") if in_path else ("trust_domain_char", "a-z, 0-9")
    if char in _URI_FEATURES and not (in_path and char in "@:"):
        rule, noun = _URI_FEATURES[char]
        reason = f"{noun} ({char!r}) is not allowed in a SPIFFE ID"
    else:
        case = " (trust domains are lowercase)" if not in_path and "A" <= char <= "Z" else ""
        reason = f"{char!r} is not allowed{case}; use only {allowed}, '.', '-' and '_'"
    raise err(rule, f"{where} {_show(text)}, offset {index}: {reason}")


def _check_uri_feature(text: str, chars: str, err: _Error, where: str = "trust domain") -> None:
    """Report the first of ``chars`` in ``text`` under its URI feature rule, if any."""
    hits = [index for index in map(text.find, chars) if index >= 0]
    if hits:
        _bad_char(err, text, min(hits), where)


def _check_trust_domain(name: str, err: _Error) -> None:
    """Validate a non-empty trust domain name (the authority part of an ID).

    Length first, then URI features by precedence (a query or fragment ends a URI, and
    ``user:pw@host`` is userinfo, not a port), then characters from left to right.
    """
    if len(name) > MAX_TRUST_DOMAIN_BYTES or _utf8_len(name) > MAX_TRUST_DOMAIN_BYTES:
        raise err(
            "trust_domain_too_long",
            f"trust domain is longer than {MAX_TRUST_DOMAIN_BYTES} bytes",
        )
    if _TD_RE.fullmatch(name):
        return
    for chars in ("?#", "@", "[", ":"):  # "[::1]" is an IP literal, not a port
        _check_uri_feature(name, chars, err)
    for index, char in enumerate(name):
        if char not in _TD_CHARS:
            _bad_char(err, name, index)
    raise AssertionError("unreachable")  # pragma: no cover


def _check_segment(segment: str, err: _Error) -> None:
    """Validate one path segment (without its ``/``)."""
    if not segment:
        raise err("empty_segment", "path segments must not be empty")
    if segment in (".", ".."):
        raise err("dot_segment", f"path segment {segment!r} is not allowed")
    for index, char in enumerate(segment):
        if char not in _SEGMENT_CHARS:
            _bad_char(err, segment, index, "path segment")


def _check_path(path: str, err: _Error) -> None:
    """Validate a path: ``""`` or ``/seg(/seg)*``."""
    if not path or _PATH_RE.fullmatch(path):
        return
    if path[0] != "/":
        raise err("no_leading_slash", f"path {_show(path)} must start with '/'")
    segments = path[1:].split("/")
    last = len(segments) - 1
    for index, segment in enumerate(segments):
        if not segment and index == last:
            raise err("trailing_slash", "path must not end with '/'")
        _check_segment(segment, err)


def _check_total_length(trust_domain: str, path: str, err: _Error) -> None:
    # The trust domain is already known to be ASCII; ``len`` first keeps huge paths cheap.
    budget = MAX_ID_BYTES - len(_PREFIX) - len(trust_domain)
    if len(path) > budget or _utf8_len(path) > budget:
        raise err("too_long", f"SPIFFE ID is longer than {MAX_ID_BYTES} bytes")


def _parse_id(value: object, err: _Error) -> tuple[str, str, str]:
    """Split and validate a SPIFFE ID string; returns ``(id, trust_domain, path)``."""
    if type(value) is str and len(value) <= MAX_ID_BYTES:
        match = _ID_RE.fullmatch(value)
        if match is not None and match.end(1) - len(_PREFIX) <= MAX_TRUST_DOMAIN_BYTES:
            return value, match[1], match[2]
    return _validate_id(value, err)


def _validate_id(value: object, err: _Error) -> tuple[str, str, str]:
    """The rule-by-rule validator behind :func:`_parse_id`; it names the rule that failed."""
    text = _as_str(value, err, "SPIFFE ID")
    if not text:
        raise err("empty", "SPIFFE ID is empty")
    if len(text) > MAX_ID_BYTES or _utf8_len(text) > MAX_ID_BYTES:
        raise err("too_long", f"SPIFFE ID is longer than {MAX_ID_BYTES} bytes")
    if not text.startswith(_PREFIX):
        if text[: len(_PREFIX)].lower() == _PREFIX:
            raise err("wrong_scheme", "the scheme must be exactly 'spiffe://' (lowercase)")
        raise err("wrong_scheme", f"{_show(text)} does not use the 'spiffe://' scheme")
    _check_uri_feature(text, "?#", err, "SPIFFE ID")  # reported wherever it occurs
    rest = text[len(_PREFIX) :]
    slash = rest.find("/")
    trust_domain, path = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
    if not trust_domain:
        raise err("missing_trust_domain", "SPIFFE ID has no trust domain")
    _check_trust_domain(trust_domain, err)
    _check_path(path, err)
    return text, trust_domain, path


def _check_trust_domain_name(value: object, err: _Error) -> str:
    """Validate a bare trust domain name such as ``example.org``."""
    name = _as_str(value, err, "trust domain")
    if not name:
        raise err("empty", "trust domain name is empty")
    if ":/" in name:
        raise err(
            "trust_domain_char",
            f"{_show(name)} is a URI, not a trust domain name; use TrustDomain.parse()",
        )
    _check_trust_domain(name, err)
    return name


_V = TypeVar("_V", bound="_Value")


class _Value:
    """Shared behaviour of the two value types: immutable, keyed by one string ``_s``.

    Equality only holds between instances of the same class; ordering is by ``_s``.
    """

    __slots__ = ()
    _s: str

    def __init_subclass__(cls) -> None:
        if cls.__module__ != __name__ or cls.__bases__ != (_Value,):
            raise TypeError(f"{cls.__bases__[0].__name__} cannot be subclassed")

    def __str__(self) -> str:
        return self._s

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._s!r})"

    def __eq__(self, other: object) -> bool:
        if type(other) is type(self):
            return self._s == other._s
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._s)

    def __lt__(self: _V, other: _V) -> bool:
        return self._s < other._s if type(other) is type(self) else NotImplemented

    def __le__(self: _V, other: _V) -> bool:
        return self._s <= other._s if type(other) is type(self) else NotImplemented

    def __gt__(self: _V, other: _V) -> bool:
        return self._s > other._s if type(other) is type(self) else NotImplemented

    def __ge__(self: _V, other: _V) -> bool:
        return self._s >= other._s if type(other) is type(self) else NotImplemented

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __reduce__(self) -> tuple[type[_Value], tuple[str]]:
        return (type(self), (self._s,))


@final
class TrustDomain(_Value):
    """A validated SPIFFE trust domain name, e.g. ``example.org``.

    ``TrustDomain(name)`` accepts a bare name only; :meth:`parse` also accepts a SPIFFE
    ID. Instances are immutable, hashable, compare by name and sort by name.
    """

    __slots__ = ("_s",)

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "_s", _check_trust_domain_name(name, InvalidTrustDomain))

    @classmethod
    def parse(cls, value: str) -> TrustDomain:
        """Parse a trust domain name (``example.org``) or take one from a SPIFFE ID.

        Raises :class:`~zerotrust.errors.InvalidTrustDomain` for anything invalid.
        """
        return _parse_trust_domain(value)[0]

    @classmethod
    def _unchecked(cls, name: str) -> TrustDomain:
        self = object.__new__(cls)
        object.__setattr__(self, "_s", name)
        return self

    @property
    def name(self) -> str:
        """The trust domain name, e.g. ``"example.org"``."""
        return self._s

    def id_string(self) -> str:
        """The trust domain's own SPIFFE ID as a string, e.g. ``"spiffe://example.org"``."""
        return _PREFIX + self._s


@final
class SpiffeId(_Value):
    """A validated SPIFFE ID such as ``spiffe://example.org/ns/prod/sa/api``.

    ``SpiffeId(s)`` is the same as ``SpiffeId.parse(s)``. ``str(spiffe_id)`` is exactly
    the string it was parsed from. Instances are immutable, hashable, equal only to
    other ``SpiffeId`` values (never to a ``str``) and sort by their string.
    """

    __slots__ = ("_path", "_s", "_td")
    _td: TrustDomain
    _path: str

    def __init__(self, value: str) -> None:
        text, trust_domain, path = _parse_id(value, InvalidSpiffeId)
        object.__setattr__(self, "_s", text)
        object.__setattr__(self, "_td", TrustDomain._unchecked(trust_domain))
        object.__setattr__(self, "_path", path)

    @classmethod
    def parse(cls, value: str) -> SpiffeId:
        """Parse and validate a SPIFFE ID; raises :class:`~zerotrust.errors.InvalidSpiffeId`."""
        text, trust_domain, path = _parse_id(value, InvalidSpiffeId)
        return cls._unchecked(text, TrustDomain._unchecked(trust_domain), path)

    @classmethod
    def from_path(cls, trust_domain: TrustDomain | str, path: str) -> SpiffeId:
        """Build an ID from a trust domain and a path that is ``""`` or starts with ``/``."""
        td = _coerce_trust_domain(trust_domain)
        text = _as_str(path, InvalidSpiffeId, "path")
        _check_total_length(td.name, text, InvalidSpiffeId)
        _check_path(text, InvalidSpiffeId)
        return cls._unchecked(_PREFIX + td.name + text, td, text)

    @classmethod
    def from_segments(cls, trust_domain: TrustDomain | str, *segments: str) -> SpiffeId:
        """Build an ID from a trust domain and path segments (each validated, no ``/``)."""
        td = _coerce_trust_domain(trust_domain)
        parts = [_as_str(segment, InvalidSpiffeId, "path segment") for segment in segments]
        path = "".join("/" + part for part in parts)
        _check_total_length(td.name, path, InvalidSpiffeId)
        for part in parts:
            _check_segment(part, InvalidSpiffeId)
        return cls._unchecked(_PREFIX + td.name + path, td, path)

    @classmethod
    def _unchecked(cls, text: str, trust_domain: TrustDomain, path: str) -> SpiffeId:
        self = object.__new__(cls)
        object.__setattr__(self, "_s", text)
        object.__setattr__(self, "_td", trust_domain)
        object.__setattr__(self, "_path", path)
        return self

    @property
    def trust_domain(self) -> TrustDomain:
        """The trust domain this ID belongs to."""
        return self._td

    @property
    def path(self) -> str:
        """The path: ``""`` for a trust domain's root ID, else ``"/a/b"``."""
        return self._path

    @property
    def segments(self) -> tuple[str, ...]:
        """The path segments, e.g. ``("a", "b")``; empty for the root ID."""
        return tuple(self._path[1:].split("/")) if self._path else ()

    def is_member_of(self, trust_domain: TrustDomain) -> bool:
        """Whether this ID belongs to ``trust_domain``."""
        return self._td == trust_domain


def _parse_trust_domain(value: object) -> tuple[TrustDomain, str]:
    """Parse a bare name or a SPIFFE ID; returns the trust domain and the ID's path."""
    text = _as_str(value, InvalidTrustDomain, "trust domain")
    if ":/" in text:  # like go-spiffe: anything URI-shaped is parsed as a SPIFFE ID
        _, name, path = _parse_id(text, InvalidTrustDomain)
        return TrustDomain._unchecked(name), path
    return TrustDomain._unchecked(_check_trust_domain_name(text, InvalidTrustDomain)), ""


def _coerce_trust_domain(value: TrustDomain | str) -> TrustDomain:
    """Accept a ``TrustDomain``, a bare name or a root ID (``spiffe://example.org``).

    An ID with a path is refused (rule ``unexpected_path``) rather than silently
    truncated: where a trust domain is expected, ``spiffe://example.org/ns/prod``
    is almost certainly a mistake.
    """
    if type(value) is TrustDomain:
        return value
    trust_domain, path = _parse_trust_domain(value)
    if path:
        raise InvalidTrustDomain(
            "unexpected_path",
            f"expected a trust domain, got a SPIFFE ID with path {_show(path)}",
        )
    return trust_domain


def _coerce_spiffe_id(value: SpiffeId | str) -> SpiffeId:
    """Accept a ``SpiffeId`` or parse a string into one."""
    if type(value) is SpiffeId:
        return value
    return SpiffeId.parse(value)
