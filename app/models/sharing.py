"""Process-wide sharing of heavy objects: one engine under several names, bounded caches."""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LRUDict(Generic[K, V]):
    """A small thread-safe LRU mapping with an entry bound."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __deepcopy__(self, memo: dict[int, object]) -> LRUDict[K, V]:
        """A copy with its own lock (a model deep-copied for the sanity check takes its caches
        along)."""
        copied: LRUDict[K, V] = LRUDict(self.max_entries)
        memo[id(self)] = copied
        with self._lock:
            copied._items = copy.deepcopy(self._items, memo)
        return copied


_SHARED: dict[Hashable, object] = {}
_SHARED_LOCK = threading.Lock()
_KEY_LOCKS: dict[Hashable, threading.Lock] = {}


def shared_instance(key: Hashable, build: Callable[[], V]) -> V:
    """Build once per key, process-wide (one CLIP under several registry names)."""
    with _SHARED_LOCK:
        if key in _SHARED:
            return _SHARED[key]  # type: ignore[return-value]
        lock = _KEY_LOCKS.setdefault(key, threading.Lock())
    with lock:
        with _SHARED_LOCK:
            if key in _SHARED:
                return _SHARED[key]  # type: ignore[return-value]
        value = build()
        with _SHARED_LOCK:
            _SHARED[key] = value
        return value
