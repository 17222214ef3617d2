"""Several workers' counters as one (proxy/merge.py), and the supervisor's restart
budget (proxy/workers.py)."""

from __future__ import annotations

import json

from proxy.memfit import memory_figures
from proxy.merge import (
    Retired,
    WorkerState,
    figures_document,
    merge,
    shared_document,
    stats_document,
    stats_from_document,
    total_rss,
)
from proxy.metrics import MemoryCollector, make_registry, render
from proxy.stats import CacheFigures, CacheOutcome, Histogram, Stats
from proxy.workers import RestartBudget


def _worker(pid: int, outcomes: list[tuple[str | None, CacheOutcome]], seconds: float) -> Stats:
    stats = Stats(started_at=5.0 * pid)
    for route, outcome in outcomes:
        stats.record(route, outcome)
        stats.latency[outcome.value].observe(seconds)
    stats.upstream_requests = pid
    stats.upstream_in_flight = 1
    stats.upstream_queue_wait_s = 0.25
    stats.upstream_latency.observe(seconds)
    return stats


def _state(pid: int, stats: Stats, entries: int, shared_state: str | None = None) -> WorkerState:
    figures = CacheFigures(entries, entries * 100, 1000, pid, 0, 1)
    latency = Histogram()
    latency.observe(0.002 * pid)
    doc = {
        "pid": pid,
        "stats": stats_document(stats),
        "cache": figures_document(figures),
        "shared": None
        if shared_state is None
        else shared_document(
            shared_state, {"hits": pid, "misses": 1, "errors": 0, "skipped": 0}, latency
        ),
        "draining": False,
    }
    # Through JSON, as it travels over the private socket.
    return WorkerState.from_document(json.loads(json.dumps(doc)))


def test_a_stats_document_gives_back_the_same_stats() -> None:
    stats = _worker(3, [("photo", CacheOutcome.HIT), (None, CacheOutcome.BYPASS)], 0.003)
    again = stats_from_document(json.loads(json.dumps(stats_document(stats))))
    assert again == stats


def test_counters_routes_and_histograms_add_up() -> None:
    HIT, MISS, BYPASS = CacheOutcome.HIT, CacheOutcome.MISS, CacheOutcome.BYPASS
    one = _worker(1, [("photo", HIT), ("photo", MISS), (None, BYPASS)], 0.0007)
    two = _worker(2, [("photo", HIT), ("thumb", HIT)], 0.02)
    merged = merge([_state(1, one, 2), _state(2, two, 3)], started_at=100.0)

    snap = merged.snapshot(now=160.0)
    cache, upstream = snap["cache"], snap["upstream"]
    assert isinstance(cache, dict) and isinstance(upstream, dict)
    assert (cache["hits"], cache["misses"], cache["bypass"]) == (3, 1, 1)
    assert cache["hit_rate"] == 0.75
    assert (cache["entries"], cache["bytes"], cache["max_bytes"]) == (5, 500, 2000)
    assert (cache["evictions"], cache["purged"]) == (3, 2)
    assert snap["routes"] == {
        "photo": {"hits": 2, "misses": 1, "stale": 0, "bypass": 0},
        "thumb": {"hits": 1, "misses": 0, "stale": 0, "bypass": 0},
    }
    assert (upstream["requests"], upstream["in_flight"], upstream["queue_wait_s"]) == (3, 2, 0.5)
    assert snap["uptime_s"] == 60.0  # the supervisor's, not a worker's
    # Bucket by bucket: both workers' hits, in their own buckets.
    hits = merged.stats.latency["HIT"]
    assert hits.count == 3
    assert hits.counts[1] == 1 and hits.counts[5] == 2  # <= 1 ms and <= 25 ms
    assert merged.stats.upstream_latency.count == 2

    text = render(
        make_registry(merged.stats, lambda: merged.cache, lambda: 160.0, lambda: merged.shared)
    ).decode()
    assert 'sidecache_requests_total{cache_status="HIT",route="photo"} 2.0' in text
    assert 'sidecache_requests_total{cache_status="BYPASS",route=""} 1.0' in text
    assert 'sidecache_response_seconds_count{cache_status="HIT"} 3.0' in text
    assert 'sidecache_response_seconds_bucket{cache_status="HIT",le="0.001"} 1.0' in text
    assert "sidecache_cache_entries 5.0" in text
    assert "sidecache_shared" not in text  # no shared tier configured


def test_the_shared_tier_figures_add_up_and_show_the_worst_state() -> None:
    states = [
        _state(1, Stats(started_at=0.0), 0, "closed"),
        _state(2, Stats(started_at=0.0), 0, "open"),
    ]
    merged = merge(states, started_at=0.0)
    shared = merged.snapshot(now=1.0)["shared"]
    assert isinstance(shared, dict)
    assert (shared["state"], shared["hits"], shared["misses"]) == ("open", 3, 2)
    assert shared["served"] == 0
    assert shared["latency_ms_p50"] is not None


def _with_rss(pid: int, rss: int | None) -> WorkerState:
    doc = {
        "pid": pid,
        "stats": stats_document(Stats(started_at=0.0)),
        "cache": figures_document(CacheFigures(0, 0, 1000, 0, 0, 0)),
        "shared": None,
        "draining": False,
    }
    if rss is not None:
        doc["rss"] = rss
    return WorkerState.from_document(json.loads(json.dumps(doc)))


def test_the_rss_of_the_supervisor_and_its_workers_adds_up() -> None:
    workers = [_with_rss(1, 70_000_000), None, _with_rss(3, 90_000_000)]  # one away
    assert total_rss(60_000_000, workers) == 220_000_000
    # A worker of an older release says nothing: the others still count.
    assert total_rss(60_000_000, [_with_rss(1, None), _with_rss(2, 5)]) == 60_000_005
    assert total_rss(None, [_with_rss(1, 7)]) == 7
    assert total_rss(None, [None, _with_rss(2, None)]) is None


def test_memory_metrics_give_the_limit_and_headroom_only_when_there_is_a_limit() -> None:
    def rendered(figures: dict[str, int | None]) -> str:
        registry = make_registry(Stats(started_at=0.0), lambda: CacheFigures(0, 0, 1, 0, 0, 0),
                                 lambda: 1.0)  # fmt: skip
        registry.register(MemoryCollector(lambda: figures))
        return render(registry).decode()

    limited = rendered(memory_figures(300 * 2**20, 2**30))
    assert "sidecache_memory_rss_bytes 3.145728e+08" in limited
    assert "sidecache_memory_limit_bytes 1.073741824e+09" in limited
    assert "sidecache_memory_headroom_bytes 7.59169024e+08" in limited
    free = rendered(memory_figures(300 * 2**20, None))
    assert "sidecache_memory_rss_bytes 3.145728e+08" in free
    assert "sidecache_memory_limit_bytes" not in free
    assert "sidecache_memory_headroom_bytes" not in free


def test_the_restart_budget_allows_so_many_in_a_window() -> None:
    budget = RestartBudget(limit=3, window=60.0)
    assert [budget.allow(t) for t in (0.0, 1.0, 2.0, 3.0)] == [True, True, True, False]
    assert budget.allow(60.5)  # the first one is a minute old
    assert not budget.allow(60.7)  # three within the minute before


def test_what_exited_workers_counted_stays_but_what_they_held_does_not() -> None:
    HIT, MISS = CacheOutcome.HIT, CacheOutcome.MISS
    gone = _state(1, _worker(1, [("photo", HIT), ("photo", MISS)], 0.001), 4, "open")
    live = _state(2, _worker(2, [("photo", HIT)], 0.002), 3, "closed")
    retired = Retired()
    assert retired.report() is None
    retired.add(gone)
    merged = merge([live], started_at=0.0, retired=retired)
    stats, cache = merged.stats, merged.cache
    assert (stats.cache.hits, stats.cache.misses) == (2, 1)
    assert stats.routes["photo"].hits == 2
    assert stats.latency["HIT"].count == 2
    assert stats.upstream_requests == 3
    assert stats.upstream_in_flight == 1  # the live worker's only: a level, not a total
    assert (cache.entries, cache.bytes, cache.max_bytes) == (3, 300, 1000)
    assert (cache.evictions, cache.purged) == (1 + 2, 2)  # counters: both workers'
    assert merged.shared is not None
    assert merged.shared.state == "closed"  # the live worker's view of the tier
    assert merged.shared.counts["hits"] == 1 + 2


def test_storage_and_shadow_sections_add_up() -> None:
    def shadow(hits: int, misses: int, entries: int, reasons: dict[str, int]) -> dict[str, object]:
        return {
            "index": {"entries": entries, "bytes": 100 * entries, "max_bytes": 1000},
            "routes": {
                "photo": {
                    "hits": hits,
                    "misses": misses,
                    "stale": 0,
                    "hit_rate": 0.0,
                    "not_stored": reasons,
                }
            },
        }

    states = []
    for pid, (hits, misses, reasons) in enumerate(
        [(3, 1, {"set-cookie": 1}), (1, 3, {"set-cookie": 2, "private": 1})], start=1
    ):
        state = _state(pid, Stats(started_at=0.0), 1)
        doc = {
            "pid": pid,
            "stats": stats_document(state.stats),
            "cache": figures_document(state.cache),
            "shared": None,
            "draining": False,
            "storage": {"photo": {"stored": pid, "not_stored": {"too-large": 1}}},
            "shadow": shadow(hits, misses, pid, reasons),
        }
        states.append(WorkerState.from_document(json.loads(json.dumps(doc))))
    snap = merge(states, started_at=0.0).snapshot(now=1.0)
    assert snap["storage"] == {"photo": {"stored": 3, "not_stored": {"too-large": 2}}}
    assert snap["shadow"] == {
        "index": {"entries": 3, "bytes": 300, "max_bytes": 2000},
        "routes": {
            "photo": {
                "hits": 4,
                "misses": 4,
                "stale": 0,
                "hit_rate": 0.5,  # computed again from the sums
                "not_stored": {"set-cookie": 3, "private": 1},
            }
        },
    }
    # A worker that exited: what it counted stays, what its index held does not.
    retired = Retired()
    retired.add(states[0])
    snap = merge(states[1:], started_at=0.0, retired=retired).snapshot(now=1.0)
    assert snap["storage"] == {"photo": {"stored": 3, "not_stored": {"too-large": 2}}}
    assert snap["shadow"]["index"] == {"entries": 2, "bytes": 200, "max_bytes": 1000}  # type: ignore[index]
    assert snap["shadow"]["routes"]["photo"]["hits"] == 4  # type: ignore[index]
