"""``GET /metrics``: the Prometheus text format, via the official client library.

A custom collector reads the same ``Stats``, store figures and ``/stats``
sections (``storage``, ``shadow``) as ``/stats`` at scrape time, so the two
always agree exactly, and no counter is kept twice (the supervisor of several
workers passes the documents it added up).
Labels stay bounded: route names (from the config), cache statuses, outcomes
and eviction reasons; never paths or users.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from proxy.stats import CacheFigures, Histogram, Stats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OUTCOMES = ("HIT", "MISS", "STALE", "BYPASS")


class StatsCollector(Collector):
    def __init__(
        self,
        stats: Stats,
        figures: Callable[[], CacheFigures],
        clock: Callable[[], float],
        shared: Callable[[], SharedFigures | None] = lambda: None,
        storage: Callable[[], Mapping[str, Any]] = dict,
        shadow: Callable[[], Mapping[str, Any]] = dict,
    ) -> None:
        self._stats = stats
        self._figures = figures
        self._clock = clock
        self._shared = shared
        self._storage = storage
        self._shadow = shadow

    def collect(self) -> Iterator[Metric]:
        s, f = self._stats, self._figures()
        requests = CounterMetricFamily(
            "sidecache_requests",
            "Client requests by route and cache status (route empty: no route matched)",
            labels=["route", "cache_status"],
        )
        routed = dict.fromkeys(OUTCOMES, 0)
        for name, c in sorted(s.routes.items()):
            for outcome, value in zip(OUTCOMES, (c.hits, c.misses, c.stale, c.bypass), strict=True):
                requests.add_metric([name, outcome], value)
                routed[outcome] += value
        g = s.cache
        for outcome, value in zip(OUTCOMES, (g.hits, g.misses, g.stale, g.bypass), strict=True):
            requests.add_metric(["", outcome], value - routed[outcome])
        yield requests

        upstream = CounterMetricFamily(
            "sidecache_upstream_requests",
            "Requests to the app by outcome (rejected: refused after queue_timeout)",
            labels=["outcome"],
        )
        upstream.add_metric(["ok"], s.upstream_requests - s.upstream_errors)
        upstream.add_metric(["error"], s.upstream_errors)
        upstream.add_metric(["rejected"], s.upstream_rejected)
        yield upstream
        yield CounterMetricFamily(
            "sidecache_upstream_retries",
            "Requests sent again on a new connection after a reused one failed unanswered",
            s.upstream_retries,
        )
        yield CounterMetricFamily(
            "sidecache_coalesced",
            "Clients that waited for another client's fill",
            s.upstream_coalesced,
        )
        yield CounterMetricFamily(
            "sidecache_slow_clients",
            "Pass-through responses cut because the client read too slowly",
            s.slow_clients,
        )
        yield CounterMetricFamily(
            "sidecache_access_log_dropped",
            "Access log lines dropped because the writer's queue was full",
            s.access_log_dropped,
        )
        revalidations = CounterMetricFamily(
            "sidecache_revalidations",
            "Conditional requests sent to refresh stale entries, by the app's answer",
            labels=["outcome"],
        )
        revalidations.add_metric(["not_modified"], s.upstream_revalidated)
        revalidations.add_metric(["replaced"], s.upstream_revalidations - s.upstream_revalidated)
        yield revalidations
        yield GaugeMetricFamily(
            "sidecache_upstream_in_flight", "Upstream slots in use", s.upstream_in_flight
        )
        yield GaugeMetricFamily(
            "sidecache_upstream_queued", "Requests waiting for an upstream slot", s.upstream_queued
        )
        yield CounterMetricFamily(
            "sidecache_upstream_queue_wait_seconds",
            "Time spent waiting for upstream slots",
            s.upstream_queue_wait_s,
        )
        yield GaugeMetricFamily("sidecache_cache_bytes", "Bytes held by the cache", f.bytes)
        yield GaugeMetricFamily("sidecache_cache_max_bytes", "The cache's byte budget", f.max_bytes)
        yield GaugeMetricFamily("sidecache_cache_entries", "Entries in the cache", f.entries)
        evictions = CounterMetricFamily(
            "sidecache_cache_evictions",
            "Entries removed: size (room for others), expiry, purge",
            labels=["reason"],
        )
        evictions.add_metric(["size"], f.evictions)
        evictions.add_metric(["expiry"], f.expired)
        evictions.add_metric(["purge"], f.purged)
        yield evictions
        yield from _storage(self._storage())
        shadow = self._shadow()
        if shadow:
            yield from _shadow(shadow)
        yield CounterMetricFamily(
            "sidecache_cache_rejected",
            "New objects the eviction policy's admission did not store (cache.policy)",
            f.rejected,
        )

        response = HistogramMetricFamily(
            "sidecache_response_seconds",
            "Time to answer a client, until the body is written, by cache status",
            labels=["cache_status"],
        )
        for outcome in OUTCOMES:
            h = s.latency[outcome]
            response.add_metric([outcome], h.cumulative(), h.total)
        yield response
        up = HistogramMetricFamily(
            "sidecache_upstream_seconds", "Time to the app's response headers"
        )
        up.add_metric([], s.upstream_latency.cumulative(), s.upstream_latency.total)
        yield up
        yield GaugeMetricFamily(
            "sidecache_uptime_seconds", "Seconds since start", self._clock() - s.started_at
        )
        shared = self._shared()
        if shared is not None:
            ops = CounterMetricFamily(
                "sidecache_shared_lookups",
                "Shared-tier lookups: hit, miss, error, skipped (circuit open)",
                labels=["result"],
            )
            for result, name in (
                ("hit", "hits"),
                ("miss", "misses"),
                ("error", "errors"),
                ("skipped", "skipped"),
            ):
                ops.add_metric([result], shared.counts[name])
            yield ops
            state = GaugeMetricFamily(
                "sidecache_shared_up",
                "1 while the shared tier's circuit is closed",
                labels=["state"],
            )
            state.add_metric([shared.state], 1.0 if shared.state == "closed" else 0.0)
            yield state
            h = shared.latency
            lat = HistogramMetricFamily("sidecache_shared_seconds", "Shared-tier operation time")
            lat.add_metric([], h.cumulative(), h.total)
            yield lat


def _storage(storage: Mapping[str, Any]) -> Iterator[Metric]:
    """Fills stored or not, from the ``/stats`` ``storage`` section (route -> counts)."""
    stored = CounterMetricFamily(
        "sidecache_stored", "Fills whose answer was stored, by route", labels=["route"]
    )
    not_stored = CounterMetricFamily(
        "sidecache_not_stored",
        "Fills whose answer was not stored, by route and reason",
        labels=["route", "reason"],
    )
    for name, counters in sorted(storage.items()):
        stored.add_metric([name], counters["stored"])
        for reason, count in sorted(counters["not_stored"].items()):
            not_stored.add_metric([name, reason], count)
    yield stored
    yield not_stored


def _shadow(shadow: Mapping[str, Any]) -> Iterator[Metric]:
    """Shadow routes: what the cache would have done (``proxy.shadow``), from the
    ``/stats`` ``shadow`` section (one process's, or all workers' added up)."""
    requests = CounterMetricFamily(
        "sidecache_shadow_requests",
        "Requests to shadow routes by what the cache would have done (hit, miss, stale)",
        labels=["route", "outcome"],
    )
    stored = CounterMetricFamily(
        "sidecache_shadow_stored", "Answers the cache would have stored", labels=["route"]
    )
    not_stored = CounterMetricFamily(
        "sidecache_shadow_not_stored",
        "Answers the cache would not have stored, by reason",
        labels=["route", "reason"],
    )
    saved = CounterMetricFamily(
        "sidecache_shadow_saved_requests",
        "Requests the app would not have received",
        labels=["route"],
    )
    saved_bytes = CounterMetricFamily(
        "sidecache_shadow_saved_bytes", "Body bytes the app would not have sent", labels=["route"]
    )
    for name, c in sorted(shadow.get("routes", {}).items()):
        for outcome, value in (("hit", c["hits"]), ("miss", c["misses"]), ("stale", c["stale"])):
            requests.add_metric([name, outcome], value)
        stored.add_metric([name], c["stored"])
        for reason, count in sorted(c["not_stored"].items()):
            not_stored.add_metric([name, reason], count)
        saved.add_metric([name], c["saved_requests"])
        saved_bytes.add_metric([name], c["saved_bytes"])
    yield from (requests, stored, not_stored, saved, saved_bytes)
    f = shadow.get("index")
    if not f:
        return
    yield GaugeMetricFamily(
        "sidecache_shadow_index_entries", "Entries the cache would hold", f["entries"]
    )
    yield GaugeMetricFamily(
        "sidecache_shadow_index_bytes", "Bytes the cache would hold (of max_bytes)", f["bytes"]
    )
    yield GaugeMetricFamily(
        "sidecache_shadow_index_overhead_bytes",
        "Memory of the shadow index's records (no bodies)",
        f["overhead_bytes"],
    )
    yield GaugeMetricFamily(
        "sidecache_shadow_index_max_overhead_bytes",
        "Bound of the shadow index's records (cache.shadow_index_bytes)",
        f["max_overhead_bytes"],
    )
    evictions = CounterMetricFamily(
        "sidecache_shadow_index_evictions",
        "Records removed: size (the cache would have evicted), expiry, purge, "
        "capped (over cache.shadow_index_bytes)",
        labels=["reason"],
    )
    evictions.add_metric(["size"], f["evictions"])
    evictions.add_metric(["expiry"], f["expired"])
    evictions.add_metric(["purge"], f["purged"])
    evictions.add_metric(["capped"], f["capped"])
    yield evictions


@dataclass(frozen=True, slots=True)
class SharedFigures:
    state: str
    counts: dict[str, int]
    latency: Histogram


class MemoryCollector(Collector):
    """RSS, the cgroup memory limit and the headroom between them, read at scrape
    time (``proxy.memfit.memory_figures``); the limit and the headroom are absent
    when there is no limit."""

    def __init__(self, figures: Callable[[], dict[str, int | None]]) -> None:
        self._figures = figures

    def collect(self) -> Iterator[Metric]:
        f = self._figures()
        for name, key, text in (
            ("sidecache_memory_rss_bytes", "rss_bytes", "Resident set size of the process(es)"),
            ("sidecache_memory_limit_bytes", "limit_bytes", "The cgroup memory limit"),
            ("sidecache_memory_headroom_bytes", "headroom_bytes", "The limit less the RSS"),
        ):
            value = f[key]
            if value is not None:
                yield GaugeMetricFamily(name, text, value)


def make_registry(
    stats: Stats,
    figures: Callable[[], CacheFigures],
    clock: Callable[[], float],
    shared: Callable[[], SharedFigures | None] = lambda: None,
    storage: Callable[[], Mapping[str, Any]] = dict,
    shadow: Callable[[], Mapping[str, Any]] = dict,
) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatsCollector(stats, figures, clock, shared, storage, shadow))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


__all__ = ["CONTENT_TYPE", "Histogram", "MemoryCollector", "make_registry", "render"]
