"""GreedyDual-Size-Frequency, counted in bytes: the entry that leaves is the one
whose hits per byte, aged, are lowest.

After Cherkasova, "Improving WWW Proxies Performance with Greedy-Dual-Size-
Frequency Caching Policy" (HP Labs, 1998). Each entry has a priority

    base + freq / size ** SIZE_EXPONENT

where ``freq`` counts its requests while stored (1 on the fill, capped at
``FREQ_CAP``) and ``base`` is the cache's *inflation* when it was last asked
for. The entry of the lowest priority leaves first, and the inflation rises to
that priority: what is not asked for again sinks below every newcomer in time
(recency), what is asked for often stays ahead longer (frequency), and a large
object needs more requests than a small one to hold its room (size). A burst
of large objects asked once is stored, but each starts at the bottom: they push
out one another, not the small entries that earn the hits.

``SIZE_EXPONENT`` 1 is the published policy (hits per byte, which favours small
objects so strongly that the byte hit ratio falls below LRU's); 0.5 is what
``bench/simulate.py`` found to raise object hits well above LRU's with byte
hits above LRU's too (BENCHMARKS.md, "Eviction policy").

A hit costs what an LRU hit costs without the reordering: a capped increment
and one assignment. Priorities are kept in a heap that is corrected lazily: a
hit does not touch it; when room is needed, an entry whose priority rose since
it was pushed is pushed again (at most ``SETTLE_LIMIT`` per victim, so no put
does work in proportion to the cache), and entries that left are skipped (the
heap is rebuilt once it holds twice as many records as entries). Nothing is
refused: every put that fits is stored. Pure: imports neither aiohttp nor
asyncio, and no ``hash()`` reaches a decision (ties go to the older entry).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterator
from itertools import count

from proxy.budget import Node, Queue, QueuedMap, V
from proxy.lru import PutResult

SIZE_EXPONENT = 0.5
# Caps how long a once-popular entry outlives its popularity.
FREQ_CAP = 15
# Entries pushed again, at most, to find one victim: after a long spell of hits
# without evictions nearly every record in the heap is low, and settling them
# all at once would hold the event loop for as long as the cache is large.
# Beyond this the top record is taken as it stands (its pushed priority).
SETTLE_LIMIT = 64


class GDSF(QueuedMap[V]):
    def __init__(
        self,
        max_bytes: int,
        on_remove: Callable[[str, V], None] | None = None,
        *,
        size_exponent: float = SIZE_EXPONENT,
    ) -> None:
        super().__init__(max_bytes, on_remove)
        self._exponent = size_exponent
        self._resident: Queue[V] = Queue("resident")
        self._inflation = 0.0
        # (priority when pushed, ticket, key); an entry is current while the
        # node holds its ticket.
        self._heap: list[tuple[float, int, str]] = []
        self._tickets = count()

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
        node.base = self._inflation
        return node.value

    def put(self, key: str, value: V, size: int, expires_at: float, now: float) -> PutResult:
        if self._refusable(size, expires_at, now):
            return PutResult(stored=False)
        freq = 1
        old = self._data.get(key)
        if old is not None:
            # A replacement (a refill, a revalidated answer) keeps its key's count.
            freq = old.freq
            self._drop(key)
        evicted, evicted_bytes = self._make_room(size, now)
        node = Node(key, value, size, expires_at, self._resident)
        node.freq = freq
        node.base = self._inflation
        self._link(node, self._resident)
        self._push(node)
        return PutResult(stored=True, evicted=evicted, evicted_bytes=evicted_bytes)

    def clear(self) -> int:
        cleared = super().clear()
        self._heap.clear()
        return cleared

    def priority(self, node: Node[V]) -> float:
        return node.base + node.freq / math.pow(max(1, node.size), self._exponent)

    def _push(self, node: Node[V]) -> None:
        node.ticket = next(self._tickets)
        heapq.heappush(self._heap, (self.priority(node), node.ticket, node.key))
        self._prune()

    def _prune(self) -> None:
        """Rebuild the heap from the entries once records of entries gone (or
        pushed again) make up half of it: memory stays in proportion to the entries."""
        if len(self._heap) > 2 * len(self._data) + 64:
            self._heap = [(self.priority(n), n.ticket, k) for k, n in self._data.items()]
            heapq.heapify(self._heap)

    def _lowest(self) -> Node[V] | None:
        """The entry at the top of the heap, settled: records of entries gone are
        dropped, and up to ``SETTLE_LIMIT`` entries whose priority rose since they
        were pushed are pushed again first."""
        heap = self._heap
        settle = SETTLE_LIMIT
        while heap:
            pushed, ticket, key = heap[0]
            node = self._data.get(key)
            if node is None or node.ticket != ticket:
                heapq.heappop(heap)
                continue
            if settle > 0:
                current = self.priority(node)
                if current > pushed:
                    settle -= 1
                    node.ticket = next(self._tickets)
                    heapq.heapreplace(heap, (current, node.ticket, key))
                    continue
            return node
        return None

    def _oldest_first(self) -> Iterator[Node[V]]:
        node = self._lowest()
        if node is not None:
            yield node

    def _make_room(self, size: int, now: float) -> tuple[int, int]:
        if self.bytes_used + size <= self._max_bytes:
            return 0, 0
        self.sweep(now)  # expired entries first: dropping them costs no hit
        evicted = evicted_bytes = 0
        while self.bytes_used + size > self._max_bytes:
            node = self._lowest()
            if node is None:  # pragma: no cover - bytes_used > 0 means an entry is stored
                break
            # The priority it leaves with: its own when settled, else its record's.
            pushed = heapq.heappop(self._heap)[0]
            self._inflation = max(self._inflation, pushed)
            evicted += 1
            evicted_bytes += self._evict(node)
        return evicted, evicted_bytes
