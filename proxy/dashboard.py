"""The dashboard's numbers: a per-second history of the counters, and what the
page shows (rates, hit rate, latency percentiles, top routes) computed from it.

Pure: snapshots are taken by the server's sampler task and passed in; nothing
here reads a clock. Imports neither aiohttp nor asyncio.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from itertools import pairwise

from proxy.stats import LATENCY_BOUNDS, CacheFigures, Stats, quantile

HISTORY_SECONDS = 600


@dataclass(frozen=True, slots=True)
class Sample:
    t: float
    hits: int
    misses: int
    stale: int
    bypass: int
    upstream_requests: int
    upstream_errors: int
    in_flight: int
    queued: int
    bytes: int
    entries: int
    latency: tuple[int, ...]  # all responses' histogram counts, summed over statuses


def sample(stats: Stats, figures: CacheFigures, now: float) -> Sample:
    merged = [0] * (len(LATENCY_BOUNDS) + 1)
    for h in stats.latency.values():
        for i, n in enumerate(h.counts):
            merged[i] += n
    c = stats.cache
    return Sample(
        now,
        c.hits,
        c.misses,
        c.stale,
        c.bypass,
        stats.upstream_requests,
        stats.upstream_errors,
        stats.upstream_in_flight,
        stats.upstream_queued,
        figures.bytes,
        figures.entries,
        tuple(merged),
    )


class History:
    """The last ``HISTORY_SECONDS`` samples, one a second."""

    def __init__(self, size: int = HISTORY_SECONDS) -> None:
        self.samples: deque[Sample] = deque(maxlen=size)

    def add(self, s: Sample) -> None:
        self.samples.append(s)


def series(history: History) -> list[dict[str, float]]:
    """Per-interval rates between consecutive samples."""
    out = []
    for a, b in pairwise(history.samples):
        dt = (b.t - a.t) or 1.0
        out.append(
            {
                "t": round(b.t, 1),
                "hit": (b.hits - a.hits) / dt,
                "miss": (b.misses - a.misses) / dt,
                "stale": (b.stale - a.stale) / dt,
                "bypass": (b.bypass - a.bypass) / dt,
                "errors": (b.upstream_errors - a.upstream_errors) / dt,
                "in_flight": b.in_flight,
                "bytes": b.bytes,
            }
        )
    return out


def latency_ms(history: History, window: float = 300.0) -> dict[str, float | None]:
    """p50/p95/p99 (ms) of the responses of the last ``window`` seconds."""
    items = list(history.samples)
    if len(items) < 2:
        return {"p50": None, "p95": None, "p99": None}
    last = items[-1]
    first = next((s for s in items if last.t - s.t <= window), items[0])
    counts = [b - a for a, b in zip(first.latency, last.latency, strict=True)]
    out: dict[str, float | None] = {}
    for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        value = quantile(counts, LATENCY_BOUNDS, q)
        out[name] = round(value * 1000, 2) if value is not None else None
    return out


def top_routes(stats: Stats, limit: int = 10) -> list[dict[str, object]]:
    """Routes by requests, busiest first."""
    ranked = sorted(
        stats.routes.items(),
        key=lambda item: (
            -(item[1].hits + item[1].misses + item[1].stale + item[1].bypass),
            item[0],
        ),
    )
    rows: list[dict[str, object]] = []
    for name, c in ranked[:limit]:
        lookups = c.hits + c.misses + c.stale
        rows.append(
            {
                "route": name,
                "requests": lookups + c.bypass,
                "hit_rate": round(c.hits / lookups, 4) if lookups else None,
                **c.as_dict(),
            }
        )
    return rows
