"""Counters and the ``/stats`` snapshot.

Owns every number the control port reports about requests and the upstream;
the store reports its own figures (``CacheFigures``). Plain integer fields,
incremented on the hot path without locks (one event loop). Pure: imports
neither aiohttp nor asyncio.
"""

from __future__ import annotations

import bisect
import enum
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

# Latency bucket bounds in seconds (Prometheus "le"): fine where hits live (under
# a millisecond to tens of milliseconds), coarse up to the upstream timeout.
LATENCY_BOUNDS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0
)  # fmt: skip


@dataclass(slots=True)
class Histogram:
    """Cumulative-on-export latency histogram; ``observe`` is one bisect and two adds.

    Kept here rather than in prometheus_client's Histogram because it is fed on
    every hit: its observe takes a lock and scans the buckets in Python.
    """

    bounds: tuple[float, ...] = LATENCY_BOUNDS
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BOUNDS) + 1))
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        """(le, cumulative count) pairs, ``+Inf`` last, as Prometheus exposes them."""
        out, running = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            out.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return out


def quantile(counts: list[int], bounds: tuple[float, ...], q: float) -> float | None:
    """Estimate the ``q`` quantile (0-1) from bucket counts, linearly within a bucket."""
    total = sum(counts)
    if not total:
        return None
    rank = q * total
    seen = 0
    lower = 0.0
    for i, n in enumerate(counts):
        upper = bounds[i] if i < len(bounds) else bounds[-1]
        if n and seen + n >= rank:
            return lower + (upper - lower) * ((rank - seen) / n)
        seen += n
        lower = upper
    return bounds[-1]


class CacheOutcome(enum.Enum):
    HIT = "HIT"
    MISS = "MISS"
    STALE = "STALE"
    BYPASS = "BYPASS"


# Read on every request: a module global is three times cheaper than an Enum
# member read through its class (Python 3.11).
_HIT, _MISS, _STALE = CacheOutcome.HIT, CacheOutcome.MISS, CacheOutcome.STALE


@dataclass(frozen=True, slots=True)
class CacheFigures:
    """What the store knows about itself."""

    entries: int
    bytes: int
    max_bytes: int
    evictions: int
    expired: int
    purged: int
    # New objects the eviction policy's admission refused (``cache.policy``): a
    # fill of one was served to its clients but not stored.
    rejected: int = 0


@dataclass(slots=True)
class RouteCounters:
    hits: int = 0
    misses: int = 0
    stale: int = 0
    bypass: int = 0

    def add(self, outcome: CacheOutcome) -> None:
        if outcome is _HIT:
            self.hits += 1
        elif outcome is _MISS:
            self.misses += 1
        elif outcome is _STALE:
            self.stale += 1
        else:
            self.bypass += 1

    def as_dict(self) -> dict[str, int]:
        return {
            "hits": self.hits,
            "misses": self.misses,
            "stale": self.stale,
            "bypass": self.bypass,
        }


@dataclass(slots=True)
class StorageCounters:
    """What became of one route's fills: stored, or not and why (``policy.NoStore``)."""

    stored: int = 0
    not_stored: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, object]:
        return {"stored": self.stored, "not_stored": dict(sorted(self.not_stored.items()))}


def storage_document(storage: Mapping[str, StorageCounters]) -> dict[str, dict[str, object]]:
    """The ``/stats`` ``storage`` section: route -> what became of its fills."""
    return {name: counters.as_dict() for name, counters in sorted(storage.items())}


@dataclass(slots=True)
class Stats:
    """Request and upstream counters since ``started_at`` (monotonic seconds)."""

    started_at: float
    cache: RouteCounters = field(default_factory=RouteCounters)
    routes: dict[str, RouteCounters] = field(default_factory=dict)
    upstream_requests: int = 0
    upstream_errors: int = 0
    upstream_in_flight: int = 0
    upstream_queued: int = 0
    upstream_coalesced: int = 0
    upstream_rejected: int = 0  # refused after waiting queue_timeout for a slot
    # Requests sent again on a new connection after a reused one failed unanswered
    # (``proxy.reuse``): counted once in ``upstream_requests``.
    upstream_retries: int = 0
    # Pass-through responses cut because the client read too slowly: not app errors.
    slow_clients: int = 0
    # Fills sent as conditional requests to revalidate a stale entry, and those the
    # app answered 304 (the stored body was kept, not transferred again).
    upstream_revalidations: int = 0
    upstream_revalidated: int = 0
    upstream_queue_wait_s: float = 0.0
    # Response time by X-Cache value, and the upstream's time to response headers.
    latency: dict[str, Histogram] = field(
        default_factory=lambda: {k: Histogram() for k in ("HIT", "MISS", "STALE", "BYPASS")}
    )
    upstream_latency: Histogram = field(default_factory=Histogram)
    shared_hits: int = 0  # answered from the shared tier (counted in hits too)
    # Access log lines dropped because the writer's queue was full (or closed).
    access_log_dropped: int = 0

    def record(self, route: str | None, outcome: CacheOutcome) -> None:
        """Count one client request; ``route`` None means no route matched."""
        self.cache.add(outcome)
        if route is not None:
            counters = self.routes.get(route)
            if counters is None:
                counters = self.routes[route] = RouteCounters()
            counters.add(outcome)

    def upstream_started(self) -> None:
        self.upstream_requests += 1

    def upstream_failed(self) -> None:
        self.upstream_errors += 1

    def upstream_retried(self) -> None:
        self.upstream_retries += 1

    def coalesced(self) -> None:
        self.upstream_coalesced += 1

    def access_line_dropped(self) -> None:
        self.access_log_dropped += 1

    def snapshot(self, *, now: float, cache: CacheFigures) -> dict[str, object]:
        """The ``/stats`` document (SPEC "Control port"): numbers, never strings."""
        c = self.cache
        lookups = c.hits + c.misses + c.stale
        return {
            "cache": {
                "entries": cache.entries,
                "bytes": cache.bytes,
                "max_bytes": cache.max_bytes,
                "hits": c.hits,
                "misses": c.misses,
                "hit_rate": round(c.hits / lookups, 4) if lookups else 0.0,
                "stale": c.stale,
                "bypass": c.bypass,
                "evictions": cache.evictions,
                "expired": cache.expired,
                "purged": cache.purged,
                "rejected": cache.rejected,
            },
            "upstream": {
                "requests": self.upstream_requests,
                "errors": self.upstream_errors,
                "in_flight": self.upstream_in_flight,
                "queued": self.upstream_queued,
                "coalesced": self.upstream_coalesced,
                "rejected": self.upstream_rejected,
                "retries": self.upstream_retries,
                "slow_clients": self.slow_clients,
                "revalidations": self.upstream_revalidations,
                "revalidated": self.upstream_revalidated,
                "queue_wait_s": round(self.upstream_queue_wait_s, 3),
            },
            "routes": {name: counters.as_dict() for name, counters in self.routes.items()},
            "access_log_dropped": self.access_log_dropped,
            "uptime_s": round(max(0.0, now - self.started_at), 1),
        }
