"""OAuth 2.0 scope values (RFC 6749 section 3.3), shared by everything that reads or writes them.

A scope-token is one or more printable ASCII characters other than space, ``"`` and ``\\``: the
form a ``scope`` claim, a token request and an RFC 6750 ``WWW-Authenticate`` challenge can all
carry unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Final

from zerotrust.errors import ConfigurationError

__all__ = ["check_scope_tokens", "scope_string"]

_SCOPE_TOKEN: Final = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")


def _check_collection(values: object, what: str) -> None:
    # a string, bytes or a mapping iterates, but not as a list of scopes; None or a number not
    # at all (a TypeError is no answer to a configuration mistake)
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Iterable):
        raise ConfigurationError(f"{what}s must be a list of RFC 6749 scope-tokens")


def check_scope_tokens(values: Iterable[object], what: str = "scope") -> None:
    """Raise :class:`~zerotrust.errors.ConfigurationError` unless ``values`` is a list (or
    another collection, not a string or mapping) of scope-tokens."""
    _check_collection(values, what)
    for value in values:
        if not isinstance(value, str) or not _SCOPE_TOKEN.fullmatch(value):
            raise ConfigurationError(f"each {what} must be a non-empty RFC 6749 scope-token")


def scope_string(scopes: Iterable[str] | str) -> str | None:
    """Space-joined distinct scopes, in order (a string is split on spaces first); ``None``
    when there are none."""
    if not isinstance(scopes, str):
        _check_collection(scopes, "scope")
    values = scopes.split(" ") if isinstance(scopes, str) else list(scopes)
    check_scope_tokens(values)
    return " ".join(dict.fromkeys(values)) or None
