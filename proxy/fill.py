"""Cache fills: one upstream request per key, read into the cache.

Owns what a fill does once started (``Filler.start``): the cluster-wide turn
(``tiers.turn``), an upstream slot (``admission``), the request (conditional when
it revalidates a stale entry), the answer's fate (``flow.on_response``: keep,
refresh with a 304, refuse), the body handed to the client who started it
through the fill's ``Relay`` while it is read, and the entry stored in both tiers
(with the purge epoch taken when the fill began). What clients do with a fill is
the handler's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, assert_never

from multidict import CIMultiDict, CIMultiDictProxy

from proxy import headers as h
from proxy.admission import Admission
from proxy.coalesce import Coalescer, Fill
from proxy.entry import Headers, StoredResponse
from proxy.flow import (
    Head,
    Keep,
    Pass,
    Refresh,
    Refuse,
    Source,
    Stored,
    on_response,
)
from proxy.memfit import STREAM_WINDOW
from proxy.pacing import BodyCopy, SlowClient
from proxy.policy import Lookup, NoStore, build_entry
from proxy.stats import Stats, StorageCounters
from proxy.store import Epoch
from proxy.tiers import Tiers
from proxy.upstream import Upstream, UpstreamBusy, UpstreamError

if TYPE_CHECKING:
    from proxy.config import Config

log = logging.getLogger(__name__)


class Filler:
    def __init__(
        self,
        config: Config,
        *,
        tiers: Tiers,
        upstream: Upstream,
        admission: Admission,
        coalescer: Coalescer,
        stats: Stats,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.tiers = tiers
        self.upstream = upstream
        self.admission = admission
        self.coalescer = coalescer
        self.stats = stats
        self.clock = clock
        self.wall = wall
        # Route name -> what its fills stored or not, and why (``/stats`` ``storage``).
        self.storage: dict[str, StorageCounters] = {}
        self.apply(config)

    def apply(self, config: Config) -> None:
        self.max_object_bytes = config.cache.max_object_bytes
        self.stream_timeout = config.upstream.stream_timeout
        # Bodies of unknown length being filled keep at most the cache's budget.
        self.coalescer.allowance.limit = config.cache.max_bytes

    def start(
        self,
        lookup: Lookup,
        key: str,
        headers: Headers,
        *,
        revalidating: StoredResponse | None = None,
        cluster: bool = True,
        background: bool = False,
    ) -> Fill:
        """Start the fill of ``key`` for ``lookup``, sending ``headers`` (with the
        stale entry's validators when ``revalidating`` it). ``cluster``: take the
        cluster-wide turn first (False when the shared tier just failed for this
        request). ``background``: nobody streams it, it is read only to be stored."""
        fill = self.coalescer.start(
            key,
            STREAM_WINDOW,
            lambda f: self._run(f, lookup, headers, revalidating, cluster),
            route=lookup.route.name,
            path=lookup.path,
        )
        if background:
            fill.relay.abandon()
        return fill

    async def _run(
        self,
        fill: Fill,
        lookup: Lookup,
        headers: Headers,
        revalidating: StoredResponse | None,
        cluster: bool,
    ) -> None:
        token: str | None = None
        share = cluster and self.tiers.shared is not None
        if share:
            token, found = await self.tiers.turn(fill.key, lookup.route.name, lookup.path)
            if found is not None:
                fill.settle(Stored(found, Source.SHARED))
                return
        try:
            async with self.admission.slot():
                self.stats.upstream_started()
                if revalidating is not None:
                    self.stats.upstream_revalidations += 1
                await self._fetch(fill, lookup, headers, revalidating, share)
        except UpstreamBusy as exc:
            log.warning("upstream busy, fill for %s refused: %s", lookup.path, exc)
            fill.fail(exc)
        except UpstreamError as exc:
            self.stats.upstream_failed()
            log.info("upstream %s for %s: %s", exc.reason, lookup.path, exc)
            fill.fail(exc)
        except SlowClient as exc:
            # The fill waited on its first client when its time ran out; that
            # client's copy counts it and cuts it (``handler._pump``).
            fill.fail(exc)
        finally:
            if token is not None:
                await self.tiers.unlock(fill.key, token)

    async def _fetch(
        self,
        fill: Fill,
        lookup: Lookup,
        headers: Headers,
        revalidating: StoredResponse | None,
        share: bool,
    ) -> None:
        relay = fill.relay
        since = self.tiers.epoch()
        requested_at = self.clock()
        started = time.perf_counter()
        async with self.upstream.request(
            "GET", lookup.target, headers, relayed=True, interim=relay.interim
        ) as resp:
            # After the head, the body is bounded as a pass-through one is, but by
            # its first client only while the fill waits on it (``Relay``).
            copy = BodyCopy(cap=asyncio.get_running_loop().time() + self.stream_timeout, idle=None)
            upstream_s = time.perf_counter() - started
            self.stats.upstream_latency.observe(upstream_s)
            kept = h.response_headers_for_client(resp.headers)
            answer = on_response(
                lookup,
                resp.status,
                kept,
                content_length=resp.content_length,
                max_object_bytes=self.max_object_bytes,
                revalidating=revalidating,
                wall=self.wall(),
            )
            match answer:
                case Refresh(stale, merged):
                    self.stats.upstream_revalidated += 1
                    entry = self._entry(
                        lookup, stale.status, merged, stale.body, headers, requested_at
                    )
                    kept_now = self._store(lookup.route.name, entry, since)
                    log.debug("fill %r: not modified, refreshed (stored=%s)", lookup.key, kept_now)
                    fill.settle(Stored(entry, Source.REFRESHED, upstream_s))
                    if kept_now and share:
                        await self.tiers.share(entry)
                    return
                case Refuse(reason):
                    fill.set_head(
                        Head(resp.status, resp.reason, kept, resp.content_length, False, upstream_s)
                    )
                    self._give_up_storing(fill, reason, resp.status)
                case Keep():
                    fill.set_head(
                        Head(resp.status, resp.reason, kept, resp.content_length, True, upstream_s)
                    )
                    relay.expect(resp.content_length)
                case _:
                    assert_never(answer)

            async def keep(chunk: bytes) -> bool:
                if relay.consumer_gone and not relay.keeping:
                    return False
                if relay.keeping:
                    # Decided before the chunk is kept: never past either bound.
                    if relay.size + len(chunk) > self.max_object_bytes:
                        self._give_up_storing(fill, NoStore.TOO_LARGE, resp.status)
                    elif not relay.fits(len(chunk)):
                        self._give_up_storing(fill, NoStore.MEMORY, resp.status)
                await relay.put(chunk)
                return True

            try:
                complete = await copy.run(resp.chunks(), keep)
            except SlowClient:
                if relay.keeping:
                    # Held back for its first client alone, to bound memory
                    # (``Relay``): whoever joined since fetches for itself.
                    self._give_up_storing(fill, NoStore.MEMORY, resp.status)
                raise
            if not complete:
                resp.abort()  # nobody reads and nothing will be stored
                relay.finish()
                return
            stored: StoredResponse | None = None
            if relay.keeping:
                entry = self._entry(lookup, resp.status, kept, relay.body(), headers, requested_at)
                if self._store(lookup.route.name, entry, since):
                    stored = entry
                log.debug(
                    "fill %r complete: %d bytes, stored=%s", lookup.key, relay.size, bool(stored)
                )
                fill.resolve(Stored(entry, Source.FETCHED, upstream_s))
            relay.finish()
            if stored is not None and share:
                await self.tiers.share(stored)  # write-through, once the leader has it all

    def _entry(
        self,
        lookup: Lookup,
        status: int,
        headers: Headers,
        body: bytes | bytearray,
        sent: Headers,
        requested_at: float,
    ) -> StoredResponse:
        return build_entry(
            lookup,
            status,
            headers,
            body,
            now=self.clock(),
            request_headers=CIMultiDictProxy(CIMultiDict(sent)),
            wall=self.wall(),
            requested_at=requested_at,
        )

    def _store(self, route: str, entry: StoredResponse, since: Epoch) -> bool:
        """Store a fill's entry and count what became of it: stored, or kept out by
        the eviction policy's admission (a purge that won is not the fill's doing)."""
        rejected = self.tiers.local.rejected
        if self.tiers.store(entry, since):
            self._storage(route).stored += 1
            return True
        if self.tiers.local.rejected > rejected:
            self._storage(route).not_stored[NoStore.ADMISSION.value] += 1
        return False

    def _storage(self, route: str) -> StorageCounters:
        found = self.storage.get(route)
        if found is None:
            found = self.storage[route] = StorageCounters()
        return found

    def _give_up_storing(self, fill: Fill, reason: NoStore, status: int) -> None:
        log.debug("fill %r not stored: %s", fill.key, reason.value)
        self._storage(fill.route).not_stored[reason.value] += 1
        fill.relay.stop_keeping()
        self.coalescer.forget(fill)
        fill.resolve(Pass(reason, status))
