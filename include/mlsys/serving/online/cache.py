"""An LRU prediction cache keyed by (model version, text), with its hit rate.

Used from the server's event loop only (one thread), so it needs no lock.
Keys carry the model version, so a reload never serves a stale answer.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Hashable

from mlsys.spec import require


class LRUCache:
    def __init__(self, capacity: int):
        if capacity < 0:
            require(False, "LRUCache", "capacity", capacity, "use 0 (off) or a positive entry count")
        self.capacity = capacity
        self._data: OrderedDict[Hashable, Any] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> Any | None:
        value = self._data.get(key)
        if value is None:
            self.misses += 1
            return None
        self._data.move_to_end(key)
        self.hits += 1
        return value

    def put(self, key: Hashable, value: Any) -> None:
        if self.capacity == 0:
            return
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.capacity:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0
