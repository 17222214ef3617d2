"""Both cache tiers behind one interface: the in-process LRU and, when configured,
the shared tier (Redis).

Owns how they combine: a lookup asks the in-process tier (synchronously: the
hit path), then the shared one; an entry taken from the shared tier is kept
in-process only if no purge touched its path or route while it was fetched
(``since``, the purge epoch); a fill's entry is stored with the epoch taken when
it began, then written through; a purge drops both tiers' entries and reaches
the other replicas. Also the cluster-wide fill lock (one upstream request per
key across replicas). Nothing here decides freshness beyond "fresh or not".
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import NamedTuple

from proxy.entry import StoredResponse
from proxy.shared import SharedTier
from proxy.stats import Stats
from proxy.store import Epoch, MemoryLRUCache

# How often a replica waiting for another's fill looks for the stored entry.
CLUSTER_POLL = 0.05


class SharedLookup(NamedTuple):
    """What the shared tier had for a key. ``answered`` is False when it failed or
    was skipped: the caller stops asking it for the rest of the request."""

    answered: bool
    entry: StoredResponse | None  # None, or one no purge has touched since the ask


class Turn(NamedTuple):
    """This replica's turn to fill a key: ``token`` of the lock it holds, or the
    ``entry`` another replica stored meanwhile; neither: fetch without the lock."""

    token: str | None
    entry: StoredResponse | None


class Tiers:
    def __init__(
        self,
        local: MemoryLRUCache,
        shared: SharedTier | None,
        *,
        stats: Stats,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.local = local
        self.shared = shared
        self._stats = stats
        self._clock = clock

    def epoch(self) -> Epoch:
        """The purge epoch a fill takes when it begins (``store``'s ``since``)."""
        return self.local.purge_epoch()

    async def lookup_shared(self, key: str, route: str, path: str) -> SharedLookup:
        """The shared tier's entry for ``key``; a fresh one is kept in-process too.
        An entry a purge may have dropped while it was fetched is not returned."""
        assert self.shared is not None
        since = self.epoch()
        answered, found = await self.shared.lookup(key)
        if found is None or found.key != key or self.local.purged_since(since, route, path):
            return SharedLookup(answered, None)
        self._adopt(found, since)
        return SharedLookup(answered, found)

    def _adopt(self, found: StoredResponse, since: Epoch) -> bool:
        """Keep a fresh entry of the shared tier in-process (with ``since``)."""
        now = self._clock()
        if now >= found.fresh_until:
            return False
        self.local.store(found, now, since=since)
        self._stats.shared_hits += 1
        return True

    def store(self, entry: StoredResponse, since: Epoch) -> bool:
        """Keep a fill's entry in-process, unless a purge came after ``since``;
        ``share`` writes it through once the fill's clients have it."""
        return self.local.store(entry, self._clock(), since=since)

    async def share(self, entry: StoredResponse) -> None:
        if self.shared is not None:
            await self.shared.put(entry)

    async def purge(self, kind: str, value: str | None) -> int:
        """Drop entries by ``path`` (every path of its loose form), ``route`` or
        ``all`` in both tiers; the other replicas are told. Returns the in-process count."""
        purged = self.purge_local(kind, value)
        if self.shared is not None:
            await self.shared.purge(kind, value)
        return purged

    def purge_local(self, kind: str, value: str | None) -> int:
        """A purge of the in-process tier only (one another replica announced)."""
        if kind == "path" and value:
            return self.local.purge_path(value)
        if kind == "route" and value:
            return self.local.purge_route(value)
        if kind == "all":
            return self.local.purge_all()
        return 0

    async def turn(self, key: str, route: str, path: str) -> Turn:
        """Cluster-wide single flight: our lock, the entry another replica stored
        while we waited, or neither (the tier is away, or the holder neither
        finished nor released in time: fetch unlocked)."""
        shared = self.shared
        assert shared is not None
        token = uuid.uuid4().hex
        deadline = time.monotonic() + shared.lock_timeout
        while True:
            taken = await shared.lock(key, token)
            if taken is None:
                return Turn(None, None)
            if taken:
                # Asked before the lock, the tier may have missed an entry that a
                # holder stored and released since: held now, it is looked at once
                # more, and nobody else can be storing it meanwhile.
                found = await self._stored(key, route, path)
                if found is None:
                    return Turn(token, None)
                await shared.unlock(key, token)
                return Turn(None, found)
            while True:
                if time.monotonic() >= deadline:
                    return Turn(None, None)
                await asyncio.sleep(CLUSTER_POLL)
                # The lock first, then the entry: a holder stores before it unlocks,
                # so a lock seen free means its entry, if any, is there to be read now.
                held = await shared.locked(key)
                if held is None:
                    return Turn(None, None)
                found = await self._stored(key, route, path)
                if found is not None:
                    return Turn(None, found)
                if not held:  # the holder is gone without storing: our turn
                    break

    async def _stored(self, key: str, route: str, path: str) -> StoredResponse | None:
        """The shared tier's fresh entry for ``key``, kept in-process, unless a purge
        touched its path or route while it was fetched."""
        assert self.shared is not None
        since = self.epoch()
        found = await self.shared.get(key)
        if (
            found is not None
            and found.key == key
            and not self.local.purged_since(since, route, path)
            and self._adopt(found, since)
        ):
            return found
        return None

    async def unlock(self, key: str, token: str) -> None:
        if self.shared is not None:
            await self.shared.unlock(key, token)
