"""Upstream admission control: at most N requests in flight to the app.

Owns the slots. A request that finds them all taken waits in a FIFO queue for
at most ``queue_timeout`` and is then refused (``UpstreamBusy``, answered 503
with ``Retry-After``), so that a crowd queues here, briefly and visibly, instead
of piling onto the application's own pool. Hits never ask for a slot, and
clients that wait for another client's fill do not take one either.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from proxy.stats import Stats
from proxy.upstream import UpstreamBusy


class Admission:
    def __init__(self, limit: int, queue_timeout: float, stats: Stats) -> None:
        self.limit = limit
        self.queue_timeout = queue_timeout
        self._free = asyncio.Semaphore(limit)
        self._stats = stats

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one upstream slot for the duration of the block."""
        stats = self._stats
        if self._free.locked():
            started = time.monotonic()
            stats.upstream_queued += 1
            try:
                async with asyncio.timeout(self.queue_timeout):
                    await self._free.acquire()
            except TimeoutError:
                stats.upstream_rejected += 1
                raise UpstreamBusy(
                    f"{self.limit} upstream requests in flight; waited {self.queue_timeout:g}s"
                ) from None
            finally:
                stats.upstream_queued -= 1
                stats.upstream_queue_wait_s += time.monotonic() - started
        else:
            await self._free.acquire()
        stats.upstream_in_flight += 1
        try:
            yield
        finally:
            stats.upstream_in_flight -= 1
            self._free.release()
