"""What the public handler and the control port share in a running process.

Built whole by ``server.py`` once everything in it exists; ``config`` changes on
reload and ``draining`` on stop, the rest stays for the process's life. Its own
module so that ``control`` and ``server`` both read it without importing each other.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from proxy.coalesce import Coalescer
from proxy.config import Config
from proxy.dashboard import History, sample
from proxy.handler import Proxy
from proxy.machine import rss_bytes
from proxy.memfit import memory_figures
from proxy.shared import SharedTier
from proxy.stats import Stats, storage_document
from proxy.store import MemoryLRUCache
from proxy.tiers import Tiers
from proxy.upstream import Upstream


@dataclass
class Runtime:
    config: Config
    tiers: Tiers
    upstream: Upstream
    stats: Stats
    coalescer: Coalescer
    proxy: Proxy
    metrics: CollectorRegistry
    clock: Callable[[], float] = time.monotonic
    history: History = field(default_factory=History)
    # Set on stop: /readyz answers 503 while in-flight requests finish.
    draining: bool = False
    # The cgroup memory limit, read at start and on reload; None: no limit.
    memory_limit: int | None = None

    @property
    def store(self) -> MemoryLRUCache:
        return self.tiers.local

    @property
    def shared(self) -> SharedTier | None:
        return self.tiers.shared

    def take_sample(self) -> None:
        self.history.add(sample(self.stats, self.store.figures(), self.clock()))

    def memory(self) -> dict[str, int | None]:
        return memory_figures(rss_bytes(), self.memory_limit)

    def snapshot(self) -> dict[str, object]:
        snap = self.stats.snapshot(now=self.clock(), cache=self.store.figures())
        cache = snap["cache"]
        assert isinstance(cache, dict)
        cache["policy"] = self.store.policy  # the one running, whatever a reload asked
        if self.shared is not None:
            snap["shared"] = {**self.shared.figures(), "served": self.stats.shared_hits}
        snap["storage"] = storage_document(self.proxy.filler.storage)
        snap["shadow"] = self.proxy.shadow.snapshot()
        snap["memory"] = self.memory()
        return snap
