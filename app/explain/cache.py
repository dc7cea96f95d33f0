"""A thread-safe LRU cache bounded both in entries and in bytes.

Distinct uploads must not grow memory without limit on a public server; the byte bound matters
more than the count because a ViT-B entry is ~100x a demo-CNN entry.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

Value = TypeVar("Value")


class BoundedLRU(Generic[Value]):
    """LRU mapping with ``max_entries`` and ``max_bytes`` limits (``size_of`` measures values).

    ``size_of`` is re-evaluated on every insertion, so entries that grow after insertion
    (lazily computed gradients) are accounted for at the next put.
    """

    def __init__(self, max_entries: int, max_bytes: int, size_of: Callable[[Value], int]) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._size_of = size_of
        self._items: OrderedDict[Hashable, Value] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Value | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: Hashable, value: Value) -> None:
        """Insert (or refresh) ``key``; evicts least recently used entries beyond the bounds.

        The newest entry is always kept, even alone above ``max_bytes``: the caller is using it.
        """
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > 1 and (
                len(self._items) > self.max_entries or self._total_bytes() > self.max_bytes
            ):
                self._items.popitem(last=False)

    def total_bytes(self) -> int:
        with self._lock:
            return self._total_bytes()

    def _total_bytes(self) -> int:
        return sum(self._size_of(value) for value in self._items.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
