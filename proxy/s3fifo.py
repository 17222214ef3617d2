"""S3-FIFO, counted in bytes: a small FIFO that filters one-hit wonders, a main
FIFO with reinsertion, and a ghost queue of recently filtered keys.

After Yang et al., "FIFO queues are all you need for cache eviction" (SOSP
2023), with both queues and the ghost bounded in bytes instead of entries. A
hit only bumps a 2-bit counter (no reordering: cheaper than an LRU hit). A new
key enters the small queue (10 % of the budget); leaving it, an entry seen again
since it came in moves to main, otherwise it is evicted and its key remembered
in the ghost; a key found in the ghost goes straight to main. Main evicts its
oldest entry whose counter is zero, reinserting the others with the counter
decremented. Every put that fits is stored: nothing is refused by admission.
Pure: imports neither aiohttp nor asyncio.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from itertools import chain

from proxy.budget import Node, Queue, QueuedMap, V
from proxy.lru import PutResult

FREQ_CAP = 3


class S3FIFO(QueuedMap[V]):
    def __init__(
        self,
        max_bytes: int,
        on_remove: Callable[[str, V], None] | None = None,
        *,
        small: float = 0.1,
        promote_at: int = 1,
    ) -> None:
        super().__init__(max_bytes, on_remove)
        self._small_fraction = small
        self._promote_at = promote_at
        self._small: Queue[V] = Queue("small")
        self._main: Queue[V] = Queue("main")
        self._ghost: OrderedDict[str, int] = OrderedDict()  # key -> size when filtered
        self._ghost_bytes = 0
        self._set_sizes()

    def _set_sizes(self) -> None:
        self._small_max = max(1, int(self._max_bytes * self._small_fraction))
        self._ghost_max = self._max_bytes - self._small_max
        self._trim_ghost()

    def get(self, key: str, now: float) -> V | None:
        node = self._data.get(key)
        if node is None:
            return None
        if node.expires_at <= now:
            self._drop(key)
            self.expired += 1
            return None
        if node.freq < FREQ_CAP:
            node.freq += 1
        return node.value

    def put(self, key: str, value: V, size: int, expires_at: float, now: float) -> PutResult:
        if self._refusable(size, expires_at, now):
            return PutResult(stored=False)
        freq = 0
        queue = self._small
        old = self._data.get(key)
        if old is not None:
            # A replacement keeps the place and the count its key has earned.
            queue, freq = old.queue, old.freq
            self._drop(key)
        elif key in self._ghost:
            self._ghost_bytes -= self._ghost.pop(key)
            queue = self._main
        evicted, evicted_bytes = self._make_room(size, now)
        node = Node(key, value, size, expires_at, queue)
        node.freq = freq
        self._link(node, queue)
        return PutResult(stored=True, evicted=evicted, evicted_bytes=evicted_bytes)

    def _make_room(self, size: int, now: float) -> tuple[int, int]:
        if self.bytes_used + size <= self._max_bytes:
            return 0, 0
        self.sweep(now)  # expired entries first: dropping them costs no hit
        evicted = evicted_bytes = 0
        while self.bytes_used + size > self._max_bytes:
            if self._small.bytes > self._small_max or not self._main.nodes:
                freed = self._evict_small()
            else:
                freed = self._evict_main()
            if freed is not None:
                evicted += 1
                evicted_bytes += freed
        return evicted, evicted_bytes

    def _evict_small(self) -> int | None:
        """The bytes freed, or None if the oldest entry moved on to main instead."""
        node = next(iter(self._small.nodes.values()))
        if node.freq >= self._promote_at:
            node.freq = 0
            self._move(node, self._main)
            return None
        self._ghost[node.key] = node.size
        self._ghost_bytes += node.size
        self._trim_ghost()
        return self._evict(node)

    def _evict_main(self) -> int | None:
        node = next(iter(self._main.nodes.values()))
        if node.freq > 0:
            node.freq -= 1
            self._main.nodes.move_to_end(node.key)
            return None
        return self._evict(node)

    def _oldest_first(self) -> Iterator[Node[V]]:
        return chain(self._small.nodes.values(), self._main.nodes.values())

    def _trim_ghost(self) -> None:
        while self._ghost_bytes > self._ghost_max and self._ghost:
            self._ghost_bytes -= self._ghost.popitem(last=False)[1]
