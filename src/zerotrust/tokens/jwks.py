"""JWK sets (RFC 7517 §5), including SPIFFE trust bundle documents.

Reading a set never fails because of one bad key: unusable or unknown entries are skipped and
listed in :attr:`JWKSet.skipped` with the reason, so one exotic key published by an issuer
does not take down verification of every other key. What is never accepted from a document:
``oct`` (symmetric) keys, private keys, and X.509-SVID authorities (``use: x509-svid``), which
are not token keys.

Duplicate ``kid`` values: identical entries are merged; *different* keys under one ``kid``
make that kid ambiguous, and lookups by it find nothing (the verifier then reports
:class:`~zerotrust.errors.UnknownKey`). Choosing one of them would let the order of a
document decide which key is trusted.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, NoReturn, final

from zerotrust.errors import ConfigurationError
from zerotrust.tokens._json import JSONError, loads_object
from zerotrust.tokens.keys import JWK

__all__ = ["JWKSet", "SkippedKey"]

MAX_JWKS_BYTES: Final = 512 * 1024
MAX_JWKS_DEPTH: Final = 8
MAX_KEYS: Final = 256


@dataclass(frozen=True, slots=True)
class SkippedKey:
    """A key-set entry that was not loaded: its position, its ``kid`` (if a string) and why."""

    index: int
    kid: str | None
    reason: str


@final
class JWKSet:
    """An immutable set of public signing keys, looked up by ``kid``.

    ``len()``, iteration and ``kid in key_set`` work as expected; :meth:`get` returns ``None``
    for an unknown or ambiguous kid.
    """

    __slots__ = ("_ambiguous", "_by_kid", "_keys", "_skipped")
    _ambiguous: frozenset[str]
    _by_kid: dict[str, JWK]
    _keys: tuple[JWK, ...]
    _skipped: tuple[SkippedKey, ...]

    def __init__(self, keys: Iterable[JWK] = (), *, skipped: Iterable[SkippedKey] = ()) -> None:
        unique: dict[JWK, None] = {}  # a set in order: a list's `in` made sets quadratic
        by_kid: dict[str, JWK] = {}
        ambiguous: set[str] = set()
        for key in keys:
            if not isinstance(key, JWK):
                raise ConfigurationError(f"JWKSet holds JWK values, not {type(key).__name__}")
            if key in unique:
                continue
            unique[key] = None
            if key.kid is None:
                continue
            if key.kid in by_kid:
                ambiguous.add(key.kid)
            else:
                by_kid[key.kid] = key
        for kid in ambiguous:
            del by_kid[kid]
        object.__setattr__(self, "_keys", tuple(unique))
        object.__setattr__(self, "_by_kid", by_kid)
        object.__setattr__(self, "_ambiguous", frozenset(ambiguous))
        object.__setattr__(self, "_skipped", tuple(skipped))

    @classmethod
    def from_dict(cls, document: Mapping[str, Any], *, max_keys: int = MAX_KEYS) -> JWKSet:
        """Read a JWKS (or SPIFFE bundle) object: ``{"keys": [...]}``.

        Raises ConfigurationError only if the document itself is not a key set; individual
        unusable keys are skipped (see :attr:`skipped`).
        """
        if not isinstance(document, Mapping):
            raise ConfigurationError("a JWKS document must be a JSON object")
        entries = document.get("keys")
        if isinstance(entries, (str, bytes)) or not isinstance(entries, Sequence):
            raise ConfigurationError("a JWKS document needs a 'keys' array")
        if len(entries) > max_keys:
            raise ConfigurationError(f"JWKS document has more than {max_keys} keys")
        keys: list[JWK] = []
        skipped: list[SkippedKey] = []
        for index, entry in enumerate(entries):
            kid = entry.get("kid") if isinstance(entry, Mapping) else None
            kid = kid if isinstance(kid, str) else None
            reason = _skip_reason(entry)
            if reason is None:
                try:
                    keys.append(JWK.from_dict(entry))
                    continue
                except ConfigurationError as exc:
                    reason = exc.detail
            skipped.append(SkippedKey(index, kid, reason))
        return cls(keys, skipped=skipped)

    @classmethod
    def from_json(
        cls,
        data: bytes | str,
        *,
        max_size: int = MAX_JWKS_BYTES,
        max_depth: int = MAX_JWKS_DEPTH,
        max_keys: int = MAX_KEYS,
    ) -> JWKSet:
        """Parse a JWKS document with size, nesting and key-count bounds."""
        if not isinstance(data, (bytes, str)):
            raise ConfigurationError("JWKS data must be bytes or str")
        if len(data) > max_size:
            raise ConfigurationError(f"JWKS document is larger than {max_size} bytes")
        try:
            document = loads_object(data, max_depth=max_depth)
        except JSONError as exc:
            raise ConfigurationError(f"JWKS document is not acceptable JSON: {exc}") from None
        return cls.from_dict(document, max_keys=max_keys)

    @property
    def skipped(self) -> tuple[SkippedKey, ...]:
        """Entries of the source document that were not loaded, and why."""
        return self._skipped

    @property
    def ambiguous_kids(self) -> frozenset[str]:
        """Kids shared by different keys; lookups by these find nothing."""
        return self._ambiguous

    def get(self, kid: str) -> JWK | None:
        """The key with this ``kid``; ``None`` if unknown or ambiguous."""
        return self._by_kid.get(kid)

    def select(self, kid: str | None) -> JWK | None:
        """The key for a token's ``kid``; without a kid, the only key if there is exactly one."""
        if kid is not None:
            return self._by_kid.get(kid)
        return self._keys[0] if len(self._keys) == 1 else None

    def is_ambiguous(self, kid: str) -> bool:
        """Whether ``kid`` names several different keys in this set."""
        return kid in self._ambiguous

    def to_public_dict(self) -> dict[str, Any]:
        """The JWKS document: ``{"keys": [...]}``."""
        return {"keys": [key.to_public_dict() for key in self._keys]}

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[JWK]:
        return iter(self._keys)

    def __contains__(self, item: object) -> bool:
        if isinstance(item, str):
            return item in self._by_kid
        return item in self._keys

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, JWKSet):
            return NotImplemented
        return frozenset(self._keys) == frozenset(other._keys)

    def __hash__(self) -> int:
        return hash(frozenset(self._keys))

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError("JWKSet is immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError("JWKSet is immutable")

    def __repr__(self) -> str:
        kids = [key.kid for key in self._keys]
        return f"JWKSet(kids={kids!r}, skipped={len(self._skipped)})"


def _skip_reason(entry: object) -> str | None:
    if not isinstance(entry, Mapping):
        return "entry is not a JSON object"
    use = entry.get("use")
    if use == "x509-svid":
        return "X.509-SVID authority (not a token key)"
    if entry.get("kty") == "oct":
        return "symmetric ('oct') keys are never accepted from a key set"
    return None
