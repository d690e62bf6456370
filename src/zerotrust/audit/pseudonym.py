"""Keyed pseudonyms for personal identifiers in audit events.

A pseudonym is ``"pseudo:"`` followed by the first 32 hex characters (128 bits) of
HMAC-SHA256 over the UTF-8 value. The same value under the same key always gives the same
pseudonym, so one subject's events still correlate; without the key a pseudonym cannot be
reversed, nor confirmed by hashing guesses. Rotating the key breaks correlation across the
rotation, which is the point of rotating it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
from collections.abc import Iterable
from typing import Any, Final, final

from zerotrust.audit.event import AuditEvent
from zerotrust.errors import ConfigurationError

__all__ = ["PSEUDONYMIZABLE_FIELDS", "PSEUDONYM_PREFIX", "Pseudonymizer"]

#: Starts every pseudonym.
PSEUDONYM_PREFIX: Final = "pseudo:"
#: The event fields a :class:`Pseudonymizer` may be configured to replace.
PSEUDONYMIZABLE_FIELDS: Final = frozenset({"actor", "client_id", "spiffe_id", "subject"})

_MIN_KEY_BYTES = 32
_HEX_CHARS = 32


@final
class Pseudonymizer:
    """Replaces identifiers by ``"pseudo:" + HMAC-SHA256(key, value)[:32 hex]``.

    ``key`` must hold at least 32 random bytes; keep it secret and stable. ``fields``
    names the event fields :meth:`apply` replaces: ``subject`` by default, and any of
    ``actor``, ``client_id`` and ``spiffe_id`` on request. Workload SPIFFE IDs are
    usually not personal data and are most useful in the clear, hence not by default.
    """

    __slots__ = ("_fields", "_mac")

    def __init__(self, key: bytes, *, fields: Iterable[str] = ("subject",)) -> None:
        if not isinstance(key, (bytes, bytearray, memoryview)):
            raise ConfigurationError("the pseudonymisation key must be bytes")
        key = bytes(key)
        if len(key) < _MIN_KEY_BYTES:
            raise ConfigurationError(
                f"the pseudonymisation key must be at least {_MIN_KEY_BYTES} bytes"
            )
        if isinstance(fields, str):
            raise ConfigurationError("fields must be a collection of field names, not a str")
        chosen = frozenset(fields)
        unknown = chosen - PSEUDONYMIZABLE_FIELDS
        if unknown:
            raise ConfigurationError(
                f"cannot pseudonymise {sorted(unknown)}; "
                f"choose from {sorted(PSEUDONYMIZABLE_FIELDS)}"
            )
        self._fields = chosen
        self._mac = hmac.new(key, digestmod=hashlib.sha256)

    @property
    def fields(self) -> frozenset[str]:
        """The event fields :meth:`apply` replaces."""
        return self._fields

    def __call__(self, value: str) -> str:
        """The pseudonym of ``value``: deterministic for a given key."""
        mac = self._mac.copy()
        mac.update(value.encode("utf-8", "surrogatepass"))
        return PSEUDONYM_PREFIX + mac.hexdigest()[:_HEX_CHARS]

    def apply(self, event: AuditEvent) -> AuditEvent:
        """A copy of ``event`` with the configured fields pseudonymised (and every other
        identifier field holding one of their values).

        Apply it once: a pseudonym of a pseudonym no longer correlates with the others.
        Pseudonymising while the event is built (``subject=pseudonymizer(subject)``) is
        cheaper and sees the whole value rather than the stored, possibly truncated one.
        """
        hidden = {value for name in self._fields if (value := getattr(event, name)) is not None}
        # the same identifier often stands in two fields (an mTLS caller's subject is its
        # SPIFFE ID; a JWT-SVID's spiffe_id is its sub): it is hidden wherever it appears
        changes: dict[str, Any] = {
            name: self(value)
            for name in PSEUDONYMIZABLE_FIELDS
            if (value := getattr(event, name)) is not None and value in hidden
        }
        return dataclasses.replace(event, **changes) if changes else event

    def __repr__(self) -> str:
        return f"Pseudonymizer(fields={sorted(self._fields)!r})"
