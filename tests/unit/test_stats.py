"""Counters and the /stats snapshot (proxy/stats.py)."""

from __future__ import annotations

from proxy.stats import CacheFigures, CacheOutcome, Stats

FIGURES = CacheFigures(entries=3, bytes=300, max_bytes=1000, evictions=1, expired=2, purged=4)


def test_empty_snapshot_has_the_contract_shape() -> None:
    snap = Stats(started_at=100.0).snapshot(now=100.04, cache=FIGURES)
    assert snap == {
        "cache": {
            "entries": 3,
            "bytes": 300,
            "max_bytes": 1000,
            "hits": 0,
            "misses": 0,
            "hit_rate": 0.0,
            "stale": 0,
            "bypass": 0,
            "evictions": 1,
            "expired": 2,
            "purged": 4,
            "rejected": 0,
        },
        "upstream": {
            "requests": 0,
            "errors": 0,
            "in_flight": 0,
            "queued": 0,
            "coalesced": 0,
            "rejected": 0,
            "retries": 0,
            "slow_clients": 0,
            "revalidations": 0,
            "revalidated": 0,
            "queue_wait_s": 0.0,
        },
        "routes": {},
        "access_log_dropped": 0,
        "uptime_s": 0.0,
    }


def test_outcomes_are_counted_globally_and_per_route() -> None:
    s = Stats(started_at=0.0)
    for route, outcome in [
        ("photo", CacheOutcome.HIT),
        ("photo", CacheOutcome.HIT),
        ("photo", CacheOutcome.MISS),
        ("photo", CacheOutcome.STALE),
        ("mine", CacheOutcome.BYPASS),
        (None, CacheOutcome.BYPASS),
    ]:
        s.record(route, outcome)
    snap = s.snapshot(now=12.345, cache=FIGURES)
    cache = snap["cache"]
    assert isinstance(cache, dict)
    assert (cache["hits"], cache["misses"], cache["stale"], cache["bypass"]) == (2, 1, 1, 2)
    assert cache["hit_rate"] == 0.5  # bypasses are not lookups
    assert snap["routes"] == {
        "photo": {"hits": 2, "misses": 1, "stale": 1, "bypass": 0},
        "mine": {"hits": 0, "misses": 0, "stale": 0, "bypass": 1},
    }
    assert snap["uptime_s"] == 12.3


def test_hit_rate_is_rounded_to_four_places() -> None:
    s = Stats(started_at=0.0)
    for _ in range(2):
        s.record("r", CacheOutcome.HIT)
    s.record("r", CacheOutcome.MISS)
    assert s.snapshot(now=0, cache=FIGURES)["cache"]["hit_rate"] == 0.6667  # type: ignore[index]


def test_upstream_counters() -> None:
    s = Stats(started_at=0.0)
    s.upstream_started()
    s.upstream_started()
    s.upstream_failed()
    s.coalesced()
    s.upstream_retried()
    s.upstream_in_flight, s.upstream_queued, s.upstream_rejected = 1, 2, 3
    s.upstream_queue_wait_s = 1.23456
    s.slow_clients = 4
    s.upstream_revalidations, s.upstream_revalidated = 5, 3
    assert s.snapshot(now=0, cache=FIGURES)["upstream"] == {
        "requests": 2,
        "errors": 1,
        "in_flight": 1,
        "queued": 2,
        "coalesced": 1,
        "rejected": 3,
        "retries": 1,
        "slow_clients": 4,
        "revalidations": 5,
        "revalidated": 3,
        "queue_wait_s": 1.235,
    }
