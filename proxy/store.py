"""The in-memory tier: our byte-budgeted map as an aiocache backend.

Owns the only aiocache import. ``MemoryLRUCache`` implements aiocache's backend
contract (``_get``, ``_set``, ...) over the eviction policy ``cache.policy``
names (``budget.make_policy``: ``gdsf.GDSF``, ``lru.ByteLRU``,
``s3fifo.S3FIFO`` or ``tinylfu.TinyLFU``, all of the same interface), so the
generic aiocache API works on it, and adds typed synchronous methods that the
request handler calls on the hot path (a lookup is a dict access: wrapping it in
aiocache's coroutine, plugin and timeout layers would cost more than the lookup).
No per-call timeout (``timeout=None``), no per-key timers: expiry is lazy, plus
``sweep_forever``. Untyped aiocache calls stay inside this module.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from aiocache.base import BaseCache
from aiocache.serializers import NullSerializer

from proxy.budget import DEFAULT_POLICY, BytePolicy, make_policy
from proxy.entry import StoredResponse
from proxy.keys import loose_path
from proxy.policy import retimed
from proxy.stats import CacheFigures

SWEEP_BATCH = 1000
# Purges remembered for the fills in progress (``purged_since``): a fill that
# more purges than this outlast is not stored, whatever they touched.
PURGE_MEMORY = 4096

# The number of purges so far: what a fill takes when it begins (``store``'s ``since``).
Epoch = int
# Route name -> (ttl, longest stale window) in the configuration in force; ttl is
# None on an ``origin`` route without one (``config.route_lifetimes``).
Lifetimes = Mapping[str, tuple[float | None, float]]
# Told of every purge: (kind, value), kind "path", "route" or "all".
PurgeListener = Callable[[str, str | None], object]


class MemoryLRUCache(BaseCache):  # type: ignore[misc]  # aiocache is untyped
    """Byte-budgeted map of ``StoredResponse`` values under the eviction ``policy``,
    indexed by route and by the loose form of their path (``keys.loose_path``),
    which is what purges match. The name is historical: LRU is one policy of four."""

    NAME = "memory-lru"

    def __init__(
        self,
        max_bytes: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        namespace: str | None = None,
        policy: str = DEFAULT_POLICY,
    ) -> None:
        super().__init__(serializer=NullSerializer(), namespace=namespace, timeout=None)
        self._clock = clock
        # Fixed for the process's life: a reload that names another one is told so.
        self.policy = policy
        self._by_path: dict[str, set[str]] = {}  # loose path -> keys
        self._by_route: dict[str, set[str]] = {}
        self._lru: BytePolicy[StoredResponse] = make_policy(
            policy, max_bytes, on_remove=self._unindex
        )
        # base key -> [Vary names of its latest variant, number of stored variants]
        self._vary: dict[str, list[Any]] = {}
        # The latest purges, each as (kind, what it matches): a route's name, or the
        # hash of a loose path (memory bounded whatever the paths' length; only two
        # paths with the same full hash would have one's purge cost the other a
        # miss). Only the ``PURGE_MEMORY`` latest are kept.
        self._purges = 0
        self._recent: deque[tuple[str, str | int | None]] = deque(maxlen=PURGE_MEMORY)
        self._lifetimes: dict[str, tuple[float | None, float]] | None = None
        self._known_routes: set[str] = set()
        self._purge_listeners: list[PurgeListener] = []

    # -- typed API (hot path and control port) --------------------------------------

    def lookup(self, key: str, now: float) -> StoredResponse | None:
        return self._lru.get(key, now)

    def peek(self, key: str, now: float) -> StoredResponse | None:
        """``lookup`` that changes nothing: no recency bump, no expiry, no counters
        (``/explain``)."""
        return self._lru.peek(key, now)

    def store(self, entry: StoredResponse, now: float, since: Epoch | None = None) -> bool:
        """Keep ``entry`` until its ``stale_until``; False if it can never fit, if
        the policy's admission refused it (``rejected``), or if a purge touched its
        path or route after ``since`` (``purge_epoch()`` taken when its fill
        began): a purge must win over a fill that was already running."""
        if since is not None and self.purged_since(since, entry.route, entry.path):
            return False
        if self._lifetimes is not None:
            if entry.route not in self._lifetimes:
                return False  # a reload removed its route while it was fetched
            retimed = self._retimed(entry)
            if retimed is not None:
                entry = retimed[0]  # fetched under the rules a reload has since replaced
        return self._put(entry.key, entry, entry.stale_until, now)

    def apply_lifetimes(self, lifetimes: Lifetimes) -> int:
        """Re-time every stored entry by its route's current ttl and stale windows,
        counted from when it was stored: a reload changes them at once (a lifetime
        the app's headers gave is kept, ``policy.retimed``). Entries of
        routes no longer configured are left as they are (no lookup can reach them)
        until they expire, are evicted or purged. O(entries); returns the number
        that expired."""
        self._lifetimes = dict(lifetimes)
        self._known_routes.update(lifetimes)
        return self._lru.retime(lambda _key, entry: self._retimed(entry), self._clock())

    def knows_route(self, route: str) -> bool:
        """Was ``route`` ever configured, or does any entry belong to it?"""
        return route in self._known_routes or route in self._by_route

    def vary_spec(self, base_key: str) -> tuple[str, ...] | None:
        """The ``Vary`` names stored variants of ``base_key`` were keyed on, if any."""
        spec = self._vary.get(base_key)
        return spec[0] if spec is not None else None

    def purge_epoch(self) -> Epoch:
        """The count of purges so far: ``since`` for ``store`` and ``purged_since``."""
        return self._purges

    def purged_since(self, since: Epoch, route: str, path: str) -> bool:
        """Whether a purge after ``since`` could touch an entry of ``route`` at
        ``path`` (or at any path of the same loose form): a purge of all, of that
        route or of that loose path; also when more purges came than are remembered."""
        count = self._purges - since
        if count == 0:
            return False
        if count > len(self._recent):
            return True
        path_hash = hash(loose_path(path))
        for kind, value in itertools.islice(reversed(self._recent), count):
            if (
                kind == "all"
                or (kind == "route" and value == route)
                or (kind == "path" and value == path_hash)
            ):
                return True
        return False

    def _purged(self, kind: str, value: str | int | None) -> None:
        self._purges += 1
        self._recent.append((kind, value))

    def on_purge(self, listener: PurgeListener) -> None:
        """Call ``listener(kind, value)`` on every purge, whoever asked for it (the
        control port, an unsafe request, another replica): fills in progress are
        detached there, so no request that arrives after a purge joins one."""
        self._purge_listeners.append(listener)

    def purge_path(self, path: str) -> int:
        """Drop the entries stored at ``path`` and at every path of the same loose
        form (``/c/x``, ``/c/x/``, ``/C/X``...): an app may read them as one."""
        loose = loose_path(path)
        self._purged("path", hash(loose))
        self._announce("path", path)
        return self._delete_keys(self._by_path.get(loose, ()))

    def purge_route(self, route: str) -> int:
        self._purged("route", route)
        self._announce("route", route)
        return self._delete_keys(self._by_route.get(route, ()))

    def purge_all(self) -> int:
        self._purged("all", None)
        self._announce("all", None)
        return self._lru.clear()

    def figures(self) -> CacheFigures:
        lru = self._lru
        return CacheFigures(
            entries=len(lru),
            bytes=lru.bytes_used,
            max_bytes=lru.max_bytes,
            evictions=lru.evictions,
            expired=lru.expired,
            purged=lru.purged,
            rejected=self.rejected,
        )

    @property
    def rejected(self) -> int:
        """New entries the policy's admission refused so far (``ByteLRU`` has no
        admission: it stores whatever fits)."""
        return int(getattr(self._lru, "rejected", 0))

    def resize(self, max_bytes: int) -> int:
        return self._lru.resize(max_bytes, self._clock())

    def sweep(self, limit: int | None = None) -> int:
        return self._lru.sweep(self._clock(), limit)

    async def sweep_forever(self, interval: float) -> None:
        """Drop expired entries every ``interval`` seconds, in batches that yield the loop."""
        while True:
            await asyncio.sleep(interval)
            # Batches bound each pause of the event loop; sleep(0) lets requests run between.
            while self.sweep(SWEEP_BATCH) == SWEEP_BATCH:  # noqa: ASYNC110
                await asyncio.sleep(0)

    # -- internals ---------------------------------------------------------------------

    def _retimed(self, entry: StoredResponse) -> tuple[StoredResponse, float] | None:
        """``entry`` with the lifetime its route now gives it, or None if unchanged."""
        lifetime = self._lifetimes.get(entry.route) if self._lifetimes is not None else None
        if lifetime is None:
            return None
        fresh_until, stale_until = retimed(entry, *lifetime)
        if fresh_until == entry.fresh_until and stale_until == entry.stale_until:
            return None
        return replace(entry, fresh_until=fresh_until, stale_until=stale_until), stale_until

    def _announce(self, kind: str, value: str | None) -> None:
        for listener in self._purge_listeners:
            listener(kind, value)

    def _put(self, key: str, entry: StoredResponse, expires_at: float, now: float) -> bool:
        result = self._lru.put(key, entry, entry.size, expires_at, now)
        if result.stored:
            self._by_path.setdefault(loose_path(entry.path), set()).add(key)
            self._by_route.setdefault(entry.route, set()).add(key)
            if entry.vary:
                spec = self._vary.setdefault(entry.base_key, [entry.vary, 0])
                spec[0] = entry.vary  # the upstream's latest word on what varies
                spec[1] += 1
        return result.stored

    def _delete_keys(self, keys: set[str] | tuple[()]) -> int:
        return sum(self._lru.delete(key) for key in list(keys))

    def _unindex(self, key: str, entry: StoredResponse) -> None:
        if entry.vary:
            spec = self._vary.get(entry.base_key)
            if spec is not None:
                spec[1] -= 1
                if spec[1] <= 0:
                    del self._vary[entry.base_key]
        for index, name in ((self._by_path, loose_path(entry.path)), (self._by_route, entry.route)):
            keys = index.get(name)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del index[name]

    # -- aiocache backend contract -----------------------------------------------------

    async def _get(self, key: str, encoding: str | None = "utf-8", _conn: Any = None) -> Any:
        return self._lru.get(key, self._clock())

    async def _gets(self, key: str, encoding: str | None = "utf-8", _conn: Any = None) -> Any:
        return self._lru.get(key, self._clock())

    async def _multi_get(
        self, keys: list[str], encoding: str | None = "utf-8", _conn: Any = None
    ) -> list[Any]:
        now = self._clock()
        return [self._lru.get(k, now) for k in keys]

    async def _set(
        self,
        key: str,
        value: Any,
        ttl: float | None = None,
        _cas_token: Any = None,
        _conn: Any = None,
    ) -> bool:
        if not isinstance(value, StoredResponse):
            raise TypeError(f"MemoryLRUCache stores StoredResponse values, not {type(value)!r}")
        now = self._clock()
        if _cas_token is not None and _cas_token != self._lru.peek(key, now):
            return False
        expires_at = now + ttl if ttl else value.stale_until
        return self._put(key, value, expires_at, now)

    async def _multi_set(
        self, pairs: list[tuple[str, Any]], ttl: float | None = None, _conn: Any = None
    ) -> bool:
        results = [await self._set(k, v, ttl=ttl) for k, v in pairs]
        return all(results)

    async def _add(self, key: str, value: Any, ttl: float | None = None, _conn: Any = None) -> bool:
        if self._lru.peek(key, self._clock()) is not None:
            raise ValueError(f"Key {key} already exists, use .set to update the value")
        return await self._set(key, value, ttl=ttl)

    async def _exists(self, key: str, _conn: Any = None) -> bool:
        return self._lru.peek(key, self._clock()) is not None

    async def _increment(self, key: str, delta: int, _conn: Any = None) -> int:
        raise TypeError("MemoryLRUCache stores responses; increment is not supported")

    async def _expire(self, key: str, ttl: float, _conn: Any = None) -> bool:
        now = self._clock()
        entry = self._lru.peek(key, now)
        if entry is None:
            return False
        if not ttl:
            return True
        return self._put(key, entry, now + ttl, now)

    async def _delete(self, key: str, _conn: Any = None) -> int:
        return int(self._lru.delete(key))

    async def _clear(self, namespace: str | None = None, _conn: Any = None) -> bool:
        if namespace:
            self._lru.remove_where(lambda k, _v: k.startswith(namespace))
        else:
            self._lru.clear()
        return True

    async def _raw(self, command: str, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("MemoryLRUCache has no raw commands")

    async def _redlock_release(self, key: str, value: Any) -> int:
        if self._lru.peek(key, self._clock()) == value:
            return int(self._lru.delete(key))
        return 0

    async def _close(self, *args: Any, **kwargs: Any) -> None:
        return None
