"""A base for immutable value types with ``__slots__`` (set once in ``__init__``)."""

from __future__ import annotations

from typing import NoReturn

__all__ = ["Frozen"]


class Frozen:
    """Refuses attribute assignment and deletion; subclasses set slots with
    ``object.__setattr__`` in their constructor."""

    __slots__ = ()

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is immutable")
