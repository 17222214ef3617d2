"""W-TinyLFU, counted in bytes: a small LRU window, a segmented LRU main
(probation and protected) and a count-min sketch that decides who gets in.

After Einziger, Friedman and Manes, "TinyLFU: A Highly Efficient Cache
Admission Policy" (2017), as Caffeine runs it, with sizes: an entry leaving the
window (1 % of the budget) competes with main's oldest entries for the room it
takes: it stays only if seen more often than they are *together* (the sum of
their frequencies: a large object pays for every small one it displaces, which
bench/simulate.py found better for object hits at a small cost in byte hits);
the incumbents win a tie. An object larger than the window is not put in it: it
faces the same contest at once, and if it loses the put is refused
(``PutResult(stored=False)``, counted in ``rejected``). So a burst of large
objects seen once cannot flush the small ones that earn hits.

Frequencies: the sketch counts misses (lookups of absent keys); an entry's own
``freq`` counts its hits. The hit path therefore costs what an LRU hit costs
plus one capped increment (no hashing); a key's frequency is the sum of both.
Every ``SAMPLE_FACTOR x entries`` misses the sketch halves its counters (aging);
entries' counters are halved lazily, by the number of halvings since they last
looked (``epoch``). The sketch hashes keys with BLAKE2b, not ``hash()``, so a
replay is the same in every process. Pure: imports neither aiohttp nor asyncio.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from itertools import chain

from proxy.budget import Node, Queue, QueuedMap, V
from proxy.lru import PutResult

FREQ_CAP = 15
# Aging: the sketch halves after this many misses per stored entry (Caffeine: 10).
SAMPLE_FACTOR = 10
MIN_SAMPLE = 16
WINDOW = 0.01  # of the budget (Caffeine's initial share)
PROTECTED = 0.8  # of main
# The sketch has a counter per this many bytes of budget (per row), within bounds.
BYTES_PER_COUNTER = 16 * 1024
MIN_WIDTH, MAX_WIDTH = 1 << 8, 1 << 22
# Halving a byte is a table lookup: bytearray.translate runs it in C.
_HALVE = bytes(i >> 1 for i in range(256))


class CountMinSketch:
    """Four rows of small counters (capped at ``FREQ_CAP``); ``epoch`` counts halvings."""

    def __init__(self, width: int) -> None:
        width = max(MIN_WIDTH, min(MAX_WIDTH, 1 << max(0, width - 1).bit_length()))
        self._width = width
        self._mask = width - 1
        self._rows = bytearray(4 * width)
        self._additions = 0
        self.epoch = 0

    def _indexes(self, key: str) -> tuple[int, int, int, int]:
        h = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=16).digest(), "little")
        m, w = self._mask, self._width
        return (h & m, w + ((h >> 32) & m), 2 * w + ((h >> 64) & m), 3 * w + ((h >> 96) & m))

    def add(self, key: str, sample: int) -> None:
        """Count ``key``; halve every counter once ``sample`` keys have been counted."""
        rows = self._rows
        for i in self._indexes(key):
            if rows[i] < FREQ_CAP:
                rows[i] += 1
        self._additions += 1
        if self._additions >= sample:
            self._rows = rows.translate(_HALVE)
            self._additions //= 2
            self.epoch += 1

    def estimate(self, key: str) -> int:
        rows = self._rows
        return min(rows[i] for i in self._indexes(key))


class TinyLFU(QueuedMap[V]):
    def __init__(
        self,
        max_bytes: int,
        on_remove: Callable[[str, V], None] | None = None,
        *,
        window: float = WINDOW,
        protected: float = PROTECTED,
        sketch_width: int | None = None,
        aggregate: bool = True,
    ) -> None:
        super().__init__(max_bytes, on_remove)
        self._aggregate = aggregate
        self._window_fraction = window
        self._protected_fraction = protected
        self._window: Queue[V] = Queue("window")
        self._probation: Queue[V] = Queue("probation")
        self._protected: Queue[V] = Queue("protected")
        self._set_sizes()
        self._sketch = CountMinSketch(sketch_width or max_bytes // BYTES_PER_COUNTER)

    def _set_sizes(self) -> None:
        self._window_max = max(1, int(self._max_bytes * self._window_fraction))
        self._protected_max = int((self._max_bytes - self._window_max) * self._protected_fraction)

    def get(self, key: str, now: float) -> V | None:
        node = self._data.get(key)
        if node is None:
            self._missed(key)
            return None
        if node.expires_at <= now:
            self._drop(key)
            self.expired += 1
            self._missed(key)
            return None
        if node.freq < FREQ_CAP:
            node.freq += 1
        queue = node.queue
        if queue is self._probation:
            self._promote(node)
        else:
            queue.nodes.move_to_end(key)
        return node.value

    def _missed(self, key: str) -> None:
        self._sketch.add(key, SAMPLE_FACTOR * max(MIN_SAMPLE, len(self._data)))

    def put(self, key: str, value: V, size: int, expires_at: float, now: float) -> PutResult:
        if self._refusable(size, expires_at, now):
            return PutResult(stored=False)
        old = self._data.get(key)
        if old is not None:
            # Already admitted: a replacement keeps its segment and its count.
            queue, freq, epoch = old.queue, old.freq, old.epoch
            self._drop(key)
            evicted, evicted_bytes = self._make_room(size, now, ())
            node = Node(key, value, size, expires_at, queue, epoch)
            node.freq = freq
            self._link(node, queue)
            self._demote_overflow(node)
            return PutResult(stored=True, evicted=evicted, evicted_bytes=evicted_bytes)
        node = Node(key, value, size, expires_at, self._window, self._sketch.epoch)
        if size > self._window_max:
            return self._admit_large(node, now)
        candidates: list[Node[V]] = []
        while self._window.bytes + size > self._window_max and self._window.nodes:
            candidate = next(iter(self._window.nodes.values()))
            self._move(candidate, self._probation)
            candidates.append(candidate)
        evicted, evicted_bytes = self._make_room(size, now, candidates)
        self._link(node, self._window)
        return PutResult(stored=True, evicted=evicted, evicted_bytes=evicted_bytes)

    def frequency(self, node: Node[V]) -> int:
        """Misses seen by the sketch plus the entry's own hits, both aged alike."""
        shift = self._sketch.epoch - node.epoch
        if shift:
            node.freq >>= min(shift, 8)
            node.epoch = self._sketch.epoch
        return self._sketch.estimate(node.key) + node.freq

    def _promote(self, node: Node[V]) -> None:
        self._move(node, self._protected)
        self._demote_overflow(node)

    def _demote_overflow(self, keep: Node[V]) -> None:
        protected = self._protected
        while protected.bytes > self._protected_max:
            oldest = next(iter(protected.nodes.values()))
            if oldest is keep:
                break
            self._move(oldest, self._probation)

    def _victims(self) -> Iterator[Node[V]]:
        """Main's entries, the first to leave first; the window's last."""
        return chain(
            self._probation.nodes.values(),
            self._protected.nodes.values(),
            self._window.nodes.values(),
        )

    def _oldest_first(self) -> Iterator[Node[V]]:
        return self._victims()

    def _admit_large(self, node: Node[V], now: float) -> PutResult:
        """Store ``node`` (larger than the window) in probation only if it wins the
        contest against the entries that would leave for it."""
        if self.bytes_used + node.size > self._max_bytes:
            self.sweep(now)
        need = self.bytes_used + node.size - self._max_bytes
        doomed: list[Node[V]] = []
        if need > 0:
            found = self._contest(self._sketch.estimate(node.key), need, ())
            if found is None:
                self.rejected += 1
                return PutResult(stored=False)
            doomed = found
        freed = 0
        for victim in doomed:
            freed += self._evict(victim)
        self._link(node, self._probation)
        return PutResult(stored=True, evicted=len(doomed), evicted_bytes=freed)

    def _contest(
        self, wanted: int, need: int, waiting: set[str] | tuple[()]
    ) -> list[Node[V]] | None:
        """The oldest entries (none of ``waiting``) that free ``need`` bytes, if a
        candidate seen ``wanted`` times beats them; None if it does not. It must be
        seen more often than each of them (``aggregate`` False), or than all of them
        together (True: a large candidate pays for every small entry it displaces)."""
        doomed: list[Node[V]] = []
        score = 0
        for victim in self._victims():
            if victim.key in waiting:
                continue
            freq = self.frequency(victim)
            score = score + freq if self._aggregate else max(score, freq)
            if score >= wanted:
                return None
            doomed.append(victim)
            need -= victim.size
            if need <= 0:
                break
        return doomed

    def _make_room(
        self, size: int, now: float, candidates: list[Node[V]] | tuple[()] = ()
    ) -> tuple[int, int]:
        """Evict until ``size`` more bytes fit. ``candidates`` (just out of the
        window, at probation's newest end), oldest first, each contest the oldest
        entries of main for the room they take; a loser leaves (the incumbents win
        a tie)."""
        if self.bytes_used + size <= self._max_bytes:
            return 0, 0
        self.sweep(now)
        evicted = evicted_bytes = 0
        pending = [c for c in candidates if c.key in self._data]
        pending.reverse()  # pop() takes the oldest candidate
        waiting = {c.key for c in pending}
        while self.bytes_used + size > self._max_bytes:
            while pending and pending[-1].key not in self._data:
                waiting.discard(pending.pop().key)
            doomed: list[Node[V]] | None
            if pending:
                candidate = pending.pop()
                waiting.discard(candidate.key)
                need = min(candidate.size, self.bytes_used + size - self._max_bytes)
                doomed = self._contest(self.frequency(candidate), need, waiting)
                if not doomed:  # lost, or nobody else to displace
                    doomed = [candidate]
            else:
                doomed = [next(v for v in self._victims() if v.key not in waiting)]
            for loser in doomed:
                evicted += 1
                evicted_bytes += self._evict(loser)
        return evicted, evicted_bytes
