"""The policy simulation (bench/simulate.py) on small traces: it replays through the
real store, and the default policy beats the LRU there."""

from __future__ import annotations

import pytest

from bench.simulate import (
    TRACES,
    Result,
    compare,
    gallery_trace,
    make_trace,
    replay,
    table,
    zipf_trace,
)
from proxy.budget import DEFAULT_POLICY


@pytest.mark.parametrize("name", ["zipf-0.7", "zipf-1.0", "scan"])
@pytest.mark.parametrize("budget", [0.01, 0.1])
def test_the_default_beats_the_lru_on_a_small_trace(name: str, budget: float) -> None:
    """The target, on traces small enough for every run of the suite."""
    trace = make_trace(name, seed=3, requests=6000)
    results = {r.policy: r for r in compare([trace], [budget], ["lru", DEFAULT_POLICY])}
    lru, default = results["lru"], results[DEFAULT_POLICY]
    assert default.object_hit >= 1.1 * lru.object_hit
    assert default.byte_hit >= lru.byte_hit


def test_traces_are_reproducible_and_shaped_as_described() -> None:
    a = zipf_trace("z", seed=5, requests=3000, objects=300, alpha=0.9, scan=0.05)
    assert a == zipf_trace("z", seed=5, requests=3000, objects=300, alpha=0.9, scan=0.05)
    assert a != zipf_trace("z", seed=6, requests=3000, objects=300, alpha=0.9, scan=0.05)
    keys = [k for k, _ in a.requests]
    scan = [i for i, k in enumerate(keys) if k.startswith("/scan/")]
    assert len(scan) == 150 == len({keys[i] for i in scan})  # each asked once
    assert scan == list(range(scan[0], scan[0] + 150))  # one burst, in the middle
    assert abs(scan[0] - 1500) <= 1
    assert all(1_000_000 <= s <= 4_000_000 for k, s in a.requests if k.startswith("/scan/"))
    sizes = [s for k, s in a.requests if k.startswith("/obj/")]
    assert min(sizes) >= 2_000 and max(sizes) <= 4_000_000 and max(sizes) > 100 * min(sizes)
    assert 0.05 < sum(k.startswith("/once/") for k in keys) / len(keys) < 0.15


def test_the_gallery_trace_follows_the_load_test_crowd() -> None:
    trace = gallery_trace(seed=1, requests=2000, events=10, users=5)
    assert trace == gallery_trace(seed=1, requests=2000, events=10, users=5)
    paths = [k for k, _ in trace.requests]
    assert all(p.startswith("/api/photo/") for p in paths) and len(paths) == 2000
    assert {int(p.rsplit("/", 1)[1]) for p in paths} <= set(range(1, 241))
    assert all(2_000_000 <= s <= 2_800_000 for _, s in trace.requests)


def test_replay_counts_hits_and_bytes_through_the_store() -> None:
    trace = zipf_trace("z", seed=1, requests=50, objects=5, alpha=1.0, one_hit=0.0)
    obj, byt, rejected = replay(trace, 10**12, "lru")  # everything fits: only cold misses
    distinct = len({k for k, _ in trace.requests})
    assert obj == pytest.approx(1 - distinct / 50) and 0 < byt < 1 and rejected == 0


def test_table_marks_the_target() -> None:
    results = [
        Result("zipf-1.0", 0.01, "lru", 0.40, 0.30, 0),
        Result("zipf-1.0", 0.01, DEFAULT_POLICY, 0.45, 0.31, 5),
        Result("scan", 0.1, "lru", 0.40, 0.30, 0),
        Result("scan", 0.1, DEFAULT_POLICY, 0.43, 0.31, 5),
        Result("gallery", 0.1, "lru", 0.40, 0.30, 0),
        Result("gallery", 0.1, DEFAULT_POLICY, 0.30, 0.20, 0),
    ]
    rows = table(results).splitlines()
    assert "| +12.5% | met |" in rows[3] and "| +7.5% | not met |" in rows[5]
    assert rows[7].endswith("| -25.0% |  |")  # reported, not a target


def test_every_trace_name_builds() -> None:
    for name in TRACES:
        assert len(make_trace(name, seed=1, requests=300).requests) >= 300
    with pytest.raises(ValueError, match="unknown trace"):
        make_trace("nope", seed=1, requests=10)
