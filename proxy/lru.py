"""A least-recently-used map bounded by a byte budget.

Owns the accounting: every entry is charged its size on insert, and room is
made *before* an insert so that ``bytes_used <= max_bytes`` holds at every
instant. Expiry is lazy (checked on access) plus a bounded sweep driven by the
caller; there are no timers. Time is an argument. Pure: imports neither aiohttp
nor asyncio.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class PutResult:
    stored: bool
    evicted: int = 0
    evicted_bytes: int = 0


class _Node(Generic[V]):
    __slots__ = ("expires_at", "size", "value")

    def __init__(self, value: V, size: int, expires_at: float) -> None:
        self.value = value
        self.size = size
        self.expires_at = expires_at


class ByteLRU(Generic[V]):
    """Keys in recency order (oldest first), sizes summed against ``max_bytes``.

    ``on_remove(key, value)`` is called for every entry that leaves the map for
    any reason (eviction, expiry, deletion, replacement), so that indexes kept
    beside it stay consistent.
    """

    def __init__(self, max_bytes: int, on_remove: Callable[[str, V], None] | None = None) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self._max_bytes = max_bytes
        self._data: OrderedDict[str, _Node[V]] = OrderedDict()
        # (expires_at, key) for the sweep; entries are checked against the live
        # node when popped, so replaced or deleted keys leave harmless leftovers.
        self._expiry: list[tuple[float, str]] = []
        self._on_remove = on_remove
        self.bytes_used = 0
        self.evictions = 0
        self.expired = 0
        self.purged = 0

    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def keys(self) -> Iterator[str]:
        return iter(list(self._data))

    def __iter__(self) -> Iterator[str]:
        return self.keys()

    def items(self) -> Iterator[tuple[str, V]]:
        return iter([(k, n.value) for k, n in self._data.items()])

    def get(self, key: str, now: float) -> V | None:
        """The live value for ``key``, marked most recently used; None if absent or expired."""
        node = self._data.get(key)
        if node is None:
            return None
        if node.expires_at <= now:
            self._drop(key)
            self.expired += 1
            return None
        self._data.move_to_end(key)
        return node.value

    def peek(self, key: str, now: float) -> V | None:
        """Like ``get`` without touching recency or removing anything."""
        node = self._data.get(key)
        if node is None or node.expires_at <= now:
            return None
        return node.value

    def put(self, key: str, value: V, size: int, expires_at: float, now: float) -> PutResult:
        """Insert or replace; refuses what can never fit or is already expired."""
        if size > self._max_bytes or expires_at <= now or size < 0:
            return PutResult(stored=False)
        if key in self._data:
            self._drop(key)  # the old value's bytes are released before charging the new
        evicted, evicted_bytes = self._make_room(size, now)
        self._data[key] = _Node(value, size, expires_at)
        self.bytes_used += size
        heapq.heappush(self._expiry, (expires_at, key))
        if len(self._expiry) > 2 * len(self._data) + 64:
            self._rebuild_expiry()
        return PutResult(stored=True, evicted=evicted, evicted_bytes=evicted_bytes)

    def delete(self, key: str) -> bool:
        if key not in self._data:
            return False
        self._drop(key)
        self.purged += 1
        return True

    def clear(self) -> int:
        count = len(self._data)
        for key in list(self._data):
            self._drop(key)
        self._expiry.clear()
        self.purged += count
        return count

    def remove_where(self, predicate: Callable[[str, V], bool]) -> int:
        doomed = [k for k, n in self._data.items() if predicate(k, n.value)]
        for key in doomed:
            self._drop(key)
        self.purged += len(doomed)
        return len(doomed)

    def retime(self, update: Callable[[str, V], tuple[V, float] | None], now: float) -> int:
        """Replace values in place, recency kept: ``update(key, value)`` returns the
        new value (of the same size) and its expiry, or None to leave the entry be.
        Entries whose new expiry has passed are dropped; returns how many."""
        doomed: list[str] = []
        for key, node in self._data.items():
            changed = update(key, node.value)
            if changed is not None:
                node.value, node.expires_at = changed
                if node.expires_at <= now:
                    doomed.append(key)
        for key in doomed:
            self._drop(key)
        self.expired += len(doomed)
        self._rebuild_expiry()
        return len(doomed)

    def sweep(self, now: float, limit: int | None = None) -> int:
        """Drop up to ``limit`` expired entries, soonest-expiring first; returns the count."""
        removed = 0
        heap = self._expiry
        while heap and heap[0][0] <= now and (limit is None or removed < limit):
            expires_at, key = heapq.heappop(heap)
            node = self._data.get(key)
            if node is not None and node.expires_at == expires_at and expires_at <= now:
                self._drop(key)
                self.expired += 1
                removed += 1
        return removed

    def resize(self, max_bytes: int, now: float) -> int:
        """Change the budget, evicting least-recently-used entries down to it."""
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self._max_bytes = max_bytes
        evicted, _ = self._make_room(0, now)
        return evicted

    def _make_room(self, size: int, now: float) -> tuple[int, int]:
        evicted = evicted_bytes = 0
        if self.bytes_used + size > self._max_bytes:
            # Expired entries go first: dropping them costs no hit.
            self.sweep(now)
        while self.bytes_used + size > self._max_bytes:
            key = next(iter(self._data))
            evicted_bytes += self._data[key].size
            self._drop(key)
            evicted += 1
        self.evictions += evicted
        return evicted, evicted_bytes

    def _drop(self, key: str) -> None:
        node = self._data.pop(key)
        self.bytes_used -= node.size
        if self._on_remove is not None:
            self._on_remove(key, node.value)

    def _rebuild_expiry(self) -> None:
        self._expiry = [(n.expires_at, k) for k, n in self._data.items()]
        heapq.heapify(self._expiry)

    def evict_oldest(self) -> bool:
        """Drop the least recently used entry, for a bound of the caller's own (not
        counted in ``evictions``: the caller says why); False if empty."""
        if not self._data:
            return False
        self._drop(next(iter(self._data)))
        return True
