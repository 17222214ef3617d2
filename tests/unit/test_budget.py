"""The eviction policies (proxy/budget.py, s3fifo.py, tinylfu.py, and lru.py through
the same interface): accounting, on_remove, expiry, admission, scan resistance."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest

from proxy.budget import DEFAULT_POLICY, POLICIES, BytePolicy, make_policy
from proxy.gdsf import GDSF, SETTLE_LIMIT
from proxy.lru import ByteLRU, PutResult
from proxy.s3fifo import S3FIFO
from proxy.tinylfu import CountMinSketch, TinyLFU

Removed = list[tuple[str, int]]


def policy(name: str, budget: int) -> tuple[BytePolicy[int], Removed]:
    removed: Removed = []
    return make_policy(name, budget, on_remove=lambda k, v: removed.append((k, v))), removed


def test_make_policy_names_each_class_and_refuses_others() -> None:
    assert isinstance(make_policy("gdsf", 10), GDSF)
    assert isinstance(make_policy("lru", 10), ByteLRU)
    assert isinstance(make_policy("s3fifo", 10), S3FIFO)
    assert isinstance(make_policy("tinylfu", 10), TinyLFU)
    with pytest.raises(ValueError, match="unknown cache policy 'arc'"):
        make_policy("arc", 10)
    for name in POLICIES:
        with pytest.raises(ValueError, match="max_bytes must be positive"):
            make_policy(name, 0)


def run_ops(name: str, seed: int, steps: int = 4000) -> tuple[list[str], tuple[int, ...]]:
    """Random operations on a policy, checked against a mirror kept by ``on_remove``
    alone: the budget holds after every operation, every entry that leaves is
    reported once with its value, and the counters account for every removal."""
    rng = random.Random(seed)
    budget = 1000
    mirror: dict[str, tuple[int, int]] = {}  # key -> (value, size)
    removals = 0

    def on_remove(key: str, value: int) -> None:
        nonlocal removals
        assert mirror.pop(key)[0] == value
        removals += 1

    p: BytePolicy[int] = make_policy(name, budget, on_remove=on_remove)
    replaced = refused = 0
    now = 0.0
    for step in range(steps):
        now += rng.random()
        key = f"k{rng.randrange(60)}"
        op = rng.random()
        if op < 0.45:
            size = rng.choice((rng.randrange(1, 40), rng.randrange(1, 400)))
            was_in = key in p
            result = p.put(key, step, size, now + rng.uniform(0.5, 40), now)
            if result.stored:
                assert key in p and p.peek(key, now) == step
                mirror[key] = (step, size)
                replaced += was_in
            else:
                refused += 1
                assert key not in p or was_in
        elif op < 0.85:
            got = p.get(key, now)
            assert got == (mirror[key][0] if got is not None else None)
        elif op < 0.9:
            p.delete(key)
        elif op < 0.97:
            p.sweep(now, limit=rng.choice((None, 1, 3)))
        elif op < 0.99:
            p.resize(rng.choice((budget, 600, 1000)), now)
        else:
            p.remove_where(lambda k, _v: k.endswith("7"))
        assert p.bytes_used <= p.max_bytes
        assert p.bytes_used == sum(size for _, size in mirror.values())
        assert sorted(p.keys()) == sorted(mirror) and len(p) == len(mirror)
        assert removals == p.evictions + p.expired + p.purged + replaced
    return list(p.keys()), (p.evictions, p.expired, p.purged, refused)


@pytest.mark.parametrize("name", POLICIES)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_randomised_accounting_and_callbacks(name: str, seed: int) -> None:
    run_ops(name, seed)


@pytest.mark.parametrize("name", POLICIES)
def test_a_seeded_run_is_the_same_in_every_process(name: str) -> None:
    """No ``hash()`` salt reaches a decision: two processes with different hash
    seeds keep the same keys and count the same."""
    code = f"from tests.unit.test_budget import run_ops; print(run_ops({name!r}, 7))"
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1
    assert outputs == {f"{run_ops(name, 7)}\n"}


@pytest.mark.parametrize("name", POLICIES)
def test_expiry_is_lazy_and_swept(name: str) -> None:
    p, removed = policy(name, 100)
    p.put("a", 1, 10, expires_at=5, now=0)
    p.put("b", 2, 10, expires_at=8, now=0)
    assert p.peek("a", 4.9) == 1 and p.get("a", 4.9) == 1
    assert p.peek("a", 5) is None and "a" in p  # peek never removes
    assert p.get("a", 5) is None and "a" not in p
    assert p.sweep(8) == 1 and len(p) == 0 and p.bytes_used == 0
    assert (p.expired, removed) == (2, [("a", 1), ("b", 2)])


@pytest.mark.parametrize("name", POLICIES)
def test_delete_clear_and_replace_report_every_leaving_value(name: str) -> None:
    p, removed = policy(name, 100)
    p.put("a", 1, 60, expires_at=10, now=0)
    p.put("b", 2, 30, expires_at=10, now=0)
    # 60 + 30 + 70 would exceed the budget; replacing "a" releases its 60 bytes first.
    assert p.put("a", 3, 70, expires_at=10, now=0) == PutResult(True)
    assert (p.bytes_used, p.get("a", 1), p.get("b", 1)) == (100, 3, 2)
    assert removed == [("a", 1)]
    assert p.delete("b") and not p.delete("b")
    assert p.clear() == 1 and p.bytes_used == 0
    assert removed == [("a", 1), ("b", 2), ("a", 3)] and p.purged == 2


@pytest.mark.parametrize("name", POLICIES)
@pytest.mark.parametrize(("size", "expires_at", "now"), [(101, 10, 0), (10, 5, 5), (-1, 10, 0)])
def test_refusals_change_nothing(name: str, size: int, expires_at: float, now: float) -> None:
    p, removed = policy(name, 100)
    p.put("keep", 1, 50, expires_at=100, now=0)
    assert p.put("x", 2, size, expires_at=expires_at, now=now) == PutResult(False)
    assert list(p.keys()) == ["keep"] and p.bytes_used == 50 and not removed


@pytest.mark.parametrize("name", POLICIES)
def test_retime_keeps_entries_in_place_and_drops_the_expired(name: str) -> None:
    p, removed = policy(name, 1000)
    for i, key in enumerate("abc"):
        p.put(key, i, 10, expires_at=100.0, now=0.0)
    new = {"a": (10, 500.0), "b": (11, 5.0)}
    assert p.retime(lambda key, _value: new.get(key), now=10.0) == 1
    assert removed == [("b", 11)] and sorted(p.keys()) == ["a", "c"]
    assert (p.get("a", 200.0), p.bytes_used, p.expired) == (10, 20, 1)
    assert p.sweep(499.0) == 1 and p.sweep(500.0) == 1 and len(p) == 0


@pytest.mark.parametrize("name", POLICIES)
def test_resize_evicts_down_to_the_new_budget(name: str) -> None:
    p, removed = policy(name, 1000)
    for i in range(10):
        p.put(f"k{i}", i, 100, expires_at=100, now=0)
    assert p.resize(300, now=1) == 7
    assert p.bytes_used <= 300 and len(p) == 3 and len(removed) == 7 and p.evictions == 7


def scan_after_a_hot_set(name: str, *, hot_size: int, scan_size: int) -> set[str]:
    """A hot set of 10 small entries, each read often, then a scan of 200 larger
    objects, each asked for once (a miss, then the fill's put); what stays of the set."""
    p, _ = policy(name, 2000)
    hot = [f"hot{i}" for i in range(10)]
    for key in hot:
        assert p.get(key, 0) is None
        p.put(key, 0, hot_size, expires_at=1e9, now=0)
    for _ in range(5):
        for key in hot:
            assert p.get(key, 0) == 0
    for i in range(200):
        key = f"scan{i}"
        assert p.get(key, 1) is None
        p.put(key, i, scan_size, expires_at=1e9, now=1)
        assert p.bytes_used <= p.max_bytes
    return {key for key in hot if key in p}


@pytest.mark.parametrize("name", ["s3fifo", "tinylfu"])
@pytest.mark.parametrize("scan_size", [30, 150, 900])
def test_a_scan_cannot_evict_a_frequently_used_small_set(name: str, scan_size: int) -> None:
    assert len(scan_after_a_hot_set(name, hot_size=20, scan_size=scan_size)) == 10


def test_the_same_scan_flushes_the_lru() -> None:
    assert scan_after_a_hot_set("lru", hot_size=20, scan_size=150) == set()


def scan_while_a_small_set_is_in_use(name: str, *, scan_size: int) -> set[str]:
    """The same hot set, still read (each key once every ten scan objects) while a
    scan of 200 objects, each asked for once, goes by; what stays of the set."""
    p, _ = policy(name, 2000)
    hot = [f"hot{i}" for i in range(10)]
    for key in hot:
        p.put(key, 0, 20, expires_at=1e9, now=0)
        for _ in range(5):
            p.get(key, 0)
    for i in range(200):
        key = f"scan{i}"
        assert p.get(key, 1) is None
        p.put(key, i, scan_size, expires_at=1e9, now=1)
        if i % 10 == 9:
            for key in hot:
                p.get(key, 1)
    return {key for key in hot if key in p}


@pytest.mark.parametrize("name", ["gdsf", "s3fifo", "tinylfu"])
@pytest.mark.parametrize("scan_size", [30, 150, 900])
def test_a_scan_cannot_evict_a_small_set_still_in_use(name: str, scan_size: int) -> None:
    assert len(scan_while_a_small_set_is_in_use(name, scan_size=scan_size)) == 10


def test_the_same_scan_while_in_use_flushes_the_lru() -> None:
    assert len(scan_while_a_small_set_is_in_use("lru", scan_size=900)) < 10


def test_gdsf_evicts_the_fewest_hits_per_byte_first() -> None:
    """Asked for as often, the large entry leaves before the small one, even when
    the small one was asked for longer ago (an LRU would evict it)."""
    p, removed = policy("gdsf", 1000)
    p.put("small", 1, 100, expires_at=100, now=0)
    p.put("large", 2, 400, expires_at=100, now=0)
    p.get("small", 0)
    p.get("large", 0)
    assert p.put("new", 3, 600, expires_at=100, now=0) == PutResult(True, 1, 400)
    assert removed == [("large", 2)] and sorted(p.keys()) == ["new", "small"]
    # Asked for three times as often, the large entry outranks the small one.
    p, removed = policy("gdsf", 1000)
    p.put("small", 1, 100, expires_at=100, now=0)
    p.put("large", 2, 400, expires_at=100, now=0)
    for _ in range(5):
        p.get("large", 0)
    assert p.put("new", 3, 600, expires_at=100, now=0).stored
    assert removed == [("small", 1)]


def test_gdsf_ages_what_is_no_longer_asked_for() -> None:
    """An entry read often and then never again leaves in time (the inflation
    rises past it), where counting alone would keep it for ever."""
    p, removed = policy("gdsf", 1000)
    p.put("was-hot", 0, 100, expires_at=1e9, now=0)
    for _ in range(20):
        p.get("was-hot", 0)
    for i in range(400):
        key = f"k{i}"
        p.put(key, i, 100, expires_at=1e9, now=0)
        p.get(key, 0)
        p.get(key, 0)
    assert "was-hot" not in p and ("was-hot", 0) in removed
    assert "k399" in p and "k398" in p  # the newest, asked for as often, stay


def test_gdsf_a_replacement_keeps_the_count_of_its_key() -> None:
    p, removed = policy("gdsf", 200)
    p.put("kept", 1, 100, expires_at=100, now=0)
    for _ in range(3):
        p.get("kept", 0)
    p.put("fresh", 2, 100, expires_at=100, now=0)
    p.get("fresh", 0)  # asked for twice; "kept" four times, before its refill
    p.put("kept", 3, 100, expires_at=100, now=0)  # a refill: same key, new value
    p.put("new", 4, 100, expires_at=100, now=0)  # room for it: the fewest requests go
    assert removed == [("kept", 1), ("fresh", 2)] and p.peek("kept", 0) == 3


def test_gdsf_a_hit_renews_an_entry_against_the_inflation() -> None:
    """Each request lifts an entry to the current inflation: read now and then, an
    entry outlives a stream of newcomers that it would not outlive unread."""

    def survives(read_every: int | None) -> bool:
        p, _ = policy("gdsf", 300)
        p.put("a", 0, 100, expires_at=1e9, now=0)
        for _ in range(4):
            p.get("a", 0)
        for i in range(60):
            p.put(f"k{i}", i, 100, expires_at=1e9, now=0)
            if read_every and i % read_every == read_every - 1:
                p.get("a", 0)
        return "a" in p

    assert not survives(None)
    assert survives(10)


def test_gdsf_heap_stays_bounded_by_the_entries() -> None:
    """Entries that left (deleted, replaced, expired) leave stale heap records;
    they are pruned, so the heap never grows past about twice the entries."""
    p: GDSF[int] = GDSF(10_000)
    for i in range(5000):
        p.put("a", i, 10, expires_at=1e9, now=0)  # replaced every time
        p.put(f"gone{i}", i, 10, expires_at=1e9, now=0)
        p.delete(f"gone{i}")
        assert len(p._heap) <= 2 * len(p) + 65
    assert list(p.keys()) == ["a"] and p.bytes_used == 10


def test_gdsf_a_put_settles_a_bounded_number_of_entries() -> None:
    """After many hits and no eviction, every heap record is low; the put that
    needs room pushes at most SETTLE_LIMIT of them again, not the whole cache,
    and still evicts one entry, not more."""
    p: GDSF[int] = GDSF(10_000)
    for i in range(10_000):
        p.put(f"k{i}", i, 1, expires_at=1e9, now=0)
    for i in range(10_000):
        p.get(f"k{i}", 0)
    before = next(p._tickets)
    assert p.put("new", 0, 1, expires_at=1e9, now=0) == PutResult(True, 1, 1)
    assert SETTLE_LIMIT <= 64
    assert next(p._tickets) - before <= 66  # the re-pushes and "new"
    assert len(p) == 10_000 and "new" in p


def test_gdsf_a_large_purge_does_not_leave_the_heap_large() -> None:
    p: GDSF[int] = GDSF(1000)
    for i in range(1000):
        p.put(f"k{i}", i, 1, expires_at=1e9, now=0)
    assert p.remove_where(lambda k, _v: k != "k0") == 999
    for i in range(1000, 2001):  # the cache fills again and makes room once
        p.put(f"k{i}", i, 1, expires_at=1e9, now=0)
    assert len(p._heap) <= 2 * len(p) + 65 and p.bytes_used == 1000


def test_the_default_policy_is_gdsf() -> None:
    assert DEFAULT_POLICY == "gdsf"


def test_tinylfu_refuses_a_large_newcomer_seen_less_often_than_its_victims() -> None:
    p: TinyLFU[str] = TinyLFU(1000)
    for key in ("a", "b"):
        assert p.get(key, 0) is None
        p.put(key, key, 400, expires_at=100, now=0)
        assert p.get(key, 0) == key
    assert p.get("big", 0) is None  # seen once
    assert p.put("big", "B", 600, expires_at=100, now=0) == PutResult(False)
    assert (p.rejected, p.evictions, sorted(p.keys())) == (1, 0, ["a", "b"])
    # Asked for often enough, it displaces the oldest, as much as it needs.
    for _ in range(4):
        assert p.get("big", 0) is None
    assert p.put("big", "B", 600, expires_at=100, now=0) == PutResult(True, 1, 400)
    assert sorted(p.keys()) == ["b", "big"] and p.rejected == 1


def test_tinylfu_window_entries_compete_for_main() -> None:
    """Out of the window, a newcomer seen once loses to main's entry seen more often."""
    p: TinyLFU[int] = TinyLFU(1000, window=0.1)  # window of 100 bytes
    for i, key in enumerate(("m1", "m2", "m3", "m4", "m5")):
        assert p.get(key, 0) is None
        p.put(key, i, 60, expires_at=100, now=0)
    for key in ("m1", "m2", "m3", "m4", "m5"):
        p.get(key, 0)
    for i in range(40):  # one-time objects through the window
        assert p.get(f"once{i}", 0) is None
        assert p.put(f"once{i}", i, 60, expires_at=100, now=0).stored
        assert p.bytes_used <= 1000
    assert {"m1", "m2", "m3", "m4", "m5"} <= set(p.keys())


def test_s3fifo_sends_a_key_seen_in_the_ghost_straight_to_main() -> None:
    p: S3FIFO[int] = S3FIFO(1000)  # small queue of 100 bytes
    p.put("a", 1, 90, expires_at=100, now=0)
    p.put("b", 2, 90, expires_at=100, now=0)  # small overflows: "a" (never read) goes
    for i in range(10):
        p.put(f"x{i}", i, 90, expires_at=100, now=0)
    assert "a" not in p
    p.put("a", 1, 90, expires_at=100, now=0)  # remembered by the ghost
    for i in range(10, 20):  # what passes through small does not push it out
        p.put(f"x{i}", i, 90, expires_at=100, now=0)
    assert "a" in p


def test_count_min_sketch_counts_caps_and_halves() -> None:
    sketch = CountMinSketch(256)
    for _ in range(20):
        sketch.add("hot", sample=10_000)
    sketch.add("cold", sample=10_000)
    assert (sketch.estimate("hot"), sketch.estimate("cold"), sketch.estimate("none")) == (15, 1, 0)
    assert sketch.epoch == 0
    for i in range(10_000 - 21):
        sketch.add(f"other{i}", sample=10_000)
    assert sketch.epoch == 1 and sketch.estimate("hot") <= 8  # halved, collisions aside


@pytest.mark.parametrize("name", POLICIES)
def test_an_entry_of_exactly_the_budget_fits(name: str) -> None:
    p, _ = policy(name, 100)
    p.put("a", 1, 1, expires_at=10, now=0)
    assert p.get("b", 0) is None
    assert p.put("b", 2, 100, expires_at=10, now=0).stored
    assert list(p.keys()) == ["b"]


@pytest.mark.parametrize("name", POLICIES)
def test_evict_oldest_drops_the_first_to_go_without_counting_an_eviction(name: str) -> None:
    p, removed = policy(name, 1000)
    for i in range(3):
        p.put(f"k{i}", i, 10, expires_at=100, now=0)
    assert p.evict_oldest() and removed == [("k0", 0)]
    assert p.bytes_used == 20 and p.evictions == 0
    assert p.evict_oldest() and p.evict_oldest() and not p.evict_oldest()
