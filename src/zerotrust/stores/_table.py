"""A bounded, expiring table: the storage of every in-memory feature."""

from __future__ import annotations

import heapq
import threading
from typing import Generic, TypeVar

from zerotrust.errors import StoreFull

__all__ = ["ExpiringTable"]

_V = TypeVar("_V")


class ExpiringTable(Generic[_V]):
    """A bounded dict of ``key -> (expires_at, value)`` with a heap ordered by expiry.

    The heap may hold stale pairs (a key re-stored with a new expiry); they are skipped when
    popped and compacted away when the heap grows past twice the table's size.
    """

    __slots__ = ("_entries", "_evict_live", "_heap", "_max", "_name", "lock")

    def __init__(self, max_entries: int, *, evict_live: bool, name: str) -> None:
        self._entries: dict[str, tuple[float, _V]] = {}
        self._heap: list[tuple[float, str]] = []
        self._max = max_entries
        self._evict_live = evict_live
        self._name = name
        self.lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str, now: float) -> tuple[float, _V] | None:
        """The live entry for ``key`` (caller holds ``lock``); a lapsed one is dropped."""
        entry = self._entries.get(key)
        if entry is not None and entry[0] <= now:
            del self._entries[key]
            return None
        return entry

    def put(self, key: str, value: _V, expires_at: float, now: float) -> None:
        """Store ``value`` until ``expires_at`` (caller holds ``lock``)."""
        if key not in self._entries and len(self._entries) >= self._max:
            self._make_room(now)
        self._entries[key] = (expires_at, value)
        heapq.heappush(self._heap, (expires_at, key))
        if len(self._heap) > 2 * self._max + 64:
            self._heap = [(entry[0], k) for k, entry in self._entries.items()]
            heapq.heapify(self._heap)

    def _pop_live(self) -> tuple[float, str] | None:
        """Pop heap pairs until one matches a current entry; ``None`` when exhausted."""
        while self._heap:
            expires_at, key = heapq.heappop(self._heap)
            entry = self._entries.get(key)
            if entry is not None and entry[0] == expires_at:
                return expires_at, key
        return None

    def _make_room(self, now: float) -> None:
        while self._heap and self._heap[0][0] <= now:
            popped = self._pop_live()
            if popped is not None:
                if popped[0] > now:  # a stale pair hid a live entry: put it back
                    heapq.heappush(self._heap, popped)
                    break
                del self._entries[popped[1]]
        if len(self._entries) < self._max:
            return
        if not self._evict_live:
            raise StoreFull(f"{self._name} table is full ({self._max} live entries)")
        popped = self._pop_live()
        if popped is not None:
            del self._entries[popped[1]]
