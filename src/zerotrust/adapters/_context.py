"""The principal of the request being handled, for code that has no request object at hand.

Adapters set it around the handler call (and reset it afterwards); ``current_principal()``
reads it. Framework-native places (``request.state``, ``flask.g``, ``request.principal``) are
set as well.
"""

from __future__ import annotations

from contextvars import ContextVar, Token

from zerotrust.authn.principal import Principal

__all__ = ["current_principal", "reset_principal", "set_principal"]

_current: ContextVar[Principal | None] = ContextVar("zerotrust_principal", default=None)


def current_principal() -> Principal | None:
    """The verified principal of the request being handled, or ``None`` outside one."""
    return _current.get()


def set_principal(principal: Principal | None) -> Token[Principal | None]:
    return _current.set(principal)


def reset_principal(token: Token[Principal | None]) -> None:
    _current.reset(token)
