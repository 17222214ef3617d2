"""What every byte-budgeted eviction policy shares, and the choice among them.

Owns the contract of the in-memory tier's map (``BytePolicy``: the interface
``lru.ByteLRU`` has always had) and the bookkeeping the frequency-aware
policies (``gdsf``, ``s3fifo``, ``tinylfu``) have in common: entries in named queues,
bytes charged per queue, the expiry heap for the sweep, the counters, and
``on_remove`` for every entry that leaves. A policy only decides where an
entry goes on insert, what a hit does, and which entry leaves when room is
needed. Pure: imports neither aiohttp nor asyncio.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Generic, Literal, Protocol, TypeVar, get_args

from proxy.lru import ByteLRU, PutResult

V = TypeVar("V")

PolicyName = Literal["gdsf", "lru", "s3fifo", "tinylfu"]
POLICIES: tuple[str, ...] = get_args(PolicyName)
# The winner of bench/simulate.py's comparison (BENCHMARKS.md, "Eviction policy").
DEFAULT_POLICY: PolicyName = "gdsf"


class BytePolicy(Protocol[V]):
    """A map bounded by ``max_bytes`` (``bytes_used <= max_bytes`` between any two
    calls), with lazy expiry and counters, as the store uses it."""

    bytes_used: int
    evictions: int
    expired: int
    purged: int

    @property
    def max_bytes(self) -> int: ...
    def __len__(self) -> int: ...
    def __contains__(self, key: object) -> bool: ...
    def __iter__(self) -> Iterator[str]: ...
    def keys(self) -> Iterator[str]: ...
    def items(self) -> Iterator[tuple[str, V]]: ...
    def get(self, key: str, now: float) -> V | None: ...
    def peek(self, key: str, now: float) -> V | None: ...
    def put(self, key: str, value: V, size: int, expires_at: float, now: float) -> PutResult: ...
    def delete(self, key: str) -> bool: ...
    def clear(self) -> int: ...
    def remove_where(self, predicate: Callable[[str, V], bool]) -> int: ...
    def retime(self, update: Callable[[str, V], tuple[V, float] | None], now: float) -> int: ...
    def sweep(self, now: float, limit: int | None = None) -> int: ...
    def resize(self, max_bytes: int, now: float) -> int: ...
    def evict_oldest(self) -> bool: ...


def make_policy(
    name: str, max_bytes: int, on_remove: Callable[[str, V], None] | None = None
) -> BytePolicy[V]:
    """The map ``cache.policy`` names; ValueError for an unknown name."""
    # Imported here: these modules build on this one.
    from proxy.gdsf import GDSF
    from proxy.s3fifo import S3FIFO
    from proxy.tinylfu import TinyLFU

    if name == "gdsf":
        return GDSF(max_bytes, on_remove=on_remove)
    if name == "lru":
        return ByteLRU(max_bytes, on_remove=on_remove)
    if name == "s3fifo":
        return S3FIFO(max_bytes, on_remove=on_remove)
    if name == "tinylfu":
        return TinyLFU(max_bytes, on_remove=on_remove)
    raise ValueError(f"unknown cache policy {name!r}: expected one of {', '.join(POLICIES)}")


class Queue(Generic[V]):
    """One queue of entries in insertion (or recency) order, and its bytes."""

    __slots__ = ("bytes", "name", "nodes")

    def __init__(self, name: str) -> None:
        self.name = name
        self.nodes: OrderedDict[str, Node[V]] = OrderedDict()
        self.bytes = 0


class Node(Generic[V]):
    """An entry: ``freq`` counts its hits (capped, aged by the policy); ``base``
    and ``ticket`` are a priority policy's (``gdsf``)."""

    __slots__ = ("base", "epoch", "expires_at", "freq", "key", "queue", "size", "ticket", "value")

    def __init__(
        self, key: str, value: V, size: int, expires_at: float, queue: Queue[V], epoch: int = 0
    ) -> None:
        self.key = key
        self.value = value
        self.size = size
        self.expires_at = expires_at
        self.queue = queue
        self.freq = 0
        self.epoch = epoch
        self.base = 0.0
        self.ticket = 0


class QueuedMap(Generic[V]):
    """The bookkeeping of a policy made of queues; subclasses place and evict."""

    def __init__(self, max_bytes: int, on_remove: Callable[[str, V], None] | None) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self._max_bytes = max_bytes
        self._data: dict[str, Node[V]] = {}
        # (expires_at, key) for the sweep; stale leftovers are checked against the node.
        self._expiry: list[tuple[float, str]] = []
        self._on_remove = on_remove
        self.bytes_used = 0
        self.evictions = 0
        self.expired = 0
        self.purged = 0
        # Puts refused by admission (not counted in ``evictions``: they never got in).
        self.rejected = 0

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

    def peek(self, key: str, now: float) -> V | None:
        node = self._data.get(key)
        if node is None or node.expires_at <= now:
            return None
        return node.value

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
        """Replace values (of the same size) and expiries in place, queues kept."""
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
        """A new budget: the policy's shares follow, and entries are evicted
        until they fit; the number evicted."""
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self._max_bytes = max_bytes
        self._set_sizes()
        evicted, _ = self._make_room(0, now)
        return evicted

    def _set_sizes(self) -> None:
        """Size the policy's own parts from ``_max_bytes`` (none by default)."""

    def _make_room(self, size: int, now: float) -> tuple[int, int]:
        """Evict until ``size`` more bytes fit: (entries, bytes) evicted."""
        raise NotImplementedError

    def evict_oldest(self) -> bool:
        """Drop the entry the policy would evict first, for a bound of the caller's
        own (not counted in ``evictions``: the caller says why); False if empty."""
        node = next(self._oldest_first(), None)
        if node is None:
            return False
        self._drop(node.key)
        return True

    def _oldest_first(self) -> Iterator[Node[V]]:
        raise NotImplementedError

    def _refusable(self, size: int, expires_at: float, now: float) -> bool:
        return size > self._max_bytes or expires_at <= now or size < 0

    def _link(self, node: Node[V], queue: Queue[V]) -> None:
        """Charge and place a node whose room has been made."""
        node.queue = queue
        queue.nodes[node.key] = node
        queue.bytes += node.size
        self._data[node.key] = node
        self.bytes_used += node.size
        heapq.heappush(self._expiry, (node.expires_at, node.key))
        if len(self._expiry) > 2 * len(self._data) + 64:
            self._rebuild_expiry()

    def _move(self, node: Node[V], queue: Queue[V]) -> None:
        """To the tail (newest end) of ``queue``; the total is unchanged."""
        old = node.queue
        del old.nodes[node.key]
        old.bytes -= node.size
        node.queue = queue
        queue.nodes[node.key] = node
        queue.bytes += node.size

    def _drop(self, key: str) -> Node[V]:
        node = self._data.pop(key)
        queue = node.queue
        del queue.nodes[key]
        queue.bytes -= node.size
        self.bytes_used -= node.size
        if self._on_remove is not None:
            self._on_remove(key, node.value)
        return node

    def _evict(self, node: Node[V]) -> int:
        self._drop(node.key)
        self.evictions += 1
        return node.size

    def _rebuild_expiry(self) -> None:
        self._expiry = [(n.expires_at, k) for k, n in self._data.items()]
        heapq.heapify(self._expiry)
