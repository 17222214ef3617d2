"""The byte-budgeted LRU (proxy/lru.py): accounting, order, expiry, sweep."""

from __future__ import annotations

import random
from collections import OrderedDict

import pytest

from proxy.lru import ByteLRU, PutResult


def test_put_get_and_accounting() -> None:
    lru: ByteLRU[str] = ByteLRU(100)
    assert lru.put("a", "A", 40, expires_at=10, now=0) == PutResult(True)
    assert lru.put("b", "B", 40, expires_at=10, now=0) == PutResult(True)
    assert lru.bytes_used == 80 and len(lru) == 2 and "a" in lru
    assert lru.get("a", now=1) == "A"
    # "b" is now least recently used: it goes first.
    assert lru.put("c", "C", 40, expires_at=10, now=1) == PutResult(True, 1, 40)
    assert list(lru.keys()) == ["a", "c"]
    assert lru.evictions == 1 and lru.bytes_used == 80


def test_replacement_releases_the_old_size_first() -> None:
    lru: ByteLRU[str] = ByteLRU(100)
    lru.put("a", "A", 60, expires_at=10, now=0)
    # 60 + 90 would exceed the budget; replacing "a" must not evict anything else.
    lru.put("b", "B", 30, expires_at=10, now=0)
    assert lru.put("a", "A2", 70, expires_at=10, now=0) == PutResult(True)
    assert lru.bytes_used == 100
    assert dict(lru.items()) == {"b": "B", "a": "A2"}


@pytest.mark.parametrize(
    ("size", "expires_at", "now"),
    [(101, 10, 0), (10, 5, 5), (10, 4, 5), (-1, 10, 0)],
)
def test_refusals_change_nothing(size: int, expires_at: float, now: float) -> None:
    lru: ByteLRU[str] = ByteLRU(100)
    lru.put("keep", "K", 50, expires_at=100, now=0)
    assert lru.put("x", "X", size, expires_at=expires_at, now=now) == PutResult(False)
    assert list(lru.keys()) == ["keep"] and lru.bytes_used == 50 and lru.evictions == 0


def test_an_entry_of_exactly_the_budget_fits() -> None:
    lru: ByteLRU[str] = ByteLRU(100)
    lru.put("a", "A", 1, expires_at=10, now=0)
    assert lru.put("b", "B", 100, expires_at=10, now=0).stored
    assert list(lru.keys()) == ["b"]


def test_lazy_expiry_on_get_and_peek() -> None:
    lru: ByteLRU[str] = ByteLRU(100)
    lru.put("a", "A", 10, expires_at=5, now=0)
    assert lru.peek("a", now=4.9) == "A"
    assert lru.peek("a", now=5) is None
    assert "a" in lru  # peek never removes
    assert lru.get("a", now=5) is None
    assert "a" not in lru and lru.expired == 1 and lru.bytes_used == 0
    assert lru.get("missing", now=0) is None


def test_peek_does_not_touch_recency() -> None:
    lru: ByteLRU[str] = ByteLRU(100)
    lru.put("a", "A", 50, expires_at=10, now=0)
    lru.put("b", "B", 50, expires_at=10, now=0)
    lru.peek("a", now=1)
    lru.put("c", "C", 50, expires_at=10, now=1)
    assert list(lru.keys()) == ["b", "c"]


def test_expired_entries_are_dropped_before_live_ones_when_making_room() -> None:
    lru: ByteLRU[str] = ByteLRU(100)
    lru.put("live", "L", 50, expires_at=100, now=0)
    lru.put("old", "O", 50, expires_at=5, now=0)
    lru.get("live", now=1)
    lru.put("new", "N", 50, expires_at=100, now=10)
    assert list(lru.keys()) == ["live", "new"]
    assert lru.expired == 1 and lru.evictions == 0


def test_sweep_is_bounded_and_ignores_replaced_keys() -> None:
    lru: ByteLRU[str] = ByteLRU(10_000)
    for i in range(10):
        lru.put(f"k{i}", "v", 10, expires_at=5 + i, now=0)
    lru.put("k0", "v2", 10, expires_at=100, now=0)  # replaced: its old expiry is stale
    assert lru.sweep(now=20, limit=3) == 3
    assert lru.sweep(now=20) == 6
    assert list(lru.keys()) == ["k0"]
    assert lru.expired == 9
    assert lru.sweep(now=20) == 0


def test_expiry_heap_stays_bounded_under_replacement() -> None:
    lru: ByteLRU[str] = ByteLRU(10_000)
    for i in range(10_000):
        lru.put("same", "v", 10, expires_at=1000 + i, now=0)
    assert len(lru._expiry) <= 2 * len(lru) + 65


def test_delete_clear_remove_where_and_resize() -> None:
    removed: list[str] = []
    lru: ByteLRU[int] = ByteLRU(1000, on_remove=lambda k, _v: removed.append(k))
    for i in range(10):
        lru.put(f"k{i}", i, 100, expires_at=10, now=0)
    assert lru.delete("k0") and not lru.delete("k0")
    assert lru.remove_where(lambda _k, v: v % 2 == 1) == 5
    assert lru.purged == 6
    assert lru.resize(250, now=0) == 2  # four left, 400 bytes: two go
    assert lru.max_bytes == 250 and lru.bytes_used == 200
    assert lru.clear() == 2
    assert lru.bytes_used == 0 and len(lru) == 0
    assert sorted(removed) == sorted(f"k{i}" for i in range(10))
    with pytest.raises(ValueError, match="positive"):
        lru.resize(0, now=0)
    with pytest.raises(ValueError, match="positive"):
        ByteLRU(0)


def test_randomised_against_a_reference_model() -> None:
    """The budget holds after every operation, and eviction order is exactly LRU."""
    rng = random.Random(20261124)
    budget = 1000
    lru: ByteLRU[int] = ByteLRU(budget)
    model: OrderedDict[str, tuple[int, float]] = OrderedDict()  # key -> (size, expires_at)
    now = 0.0
    for step in range(5000):
        now += rng.random()
        key = f"k{rng.randrange(40)}"
        op = rng.random()
        if op < 0.5:
            size = rng.randrange(1, 300)
            expires_at = now + rng.uniform(0.5, 30)
            result = lru.put(key, step, size, expires_at, now)
            model.pop(key, None)
            if sum(s for s, _ in model.values()) + size > budget:
                # Needing room sweeps every expired entry before evicting live ones.
                for k in [k for k, (_, e) in model.items() if e <= now]:
                    del model[k]
            while sum(s for s, _ in model.values()) + size > budget:
                model.popitem(last=False)
            model[key] = (size, expires_at)
            assert result.stored
        elif op < 0.9:
            got = lru.get(key, now)
            live = key in model and model[key][1] > now
            assert (got is not None) == live
            if live:
                model.move_to_end(key)
            else:
                model.pop(key, None)
        else:
            lru.sweep(now)
            for k in [k for k, (_, e) in model.items() if e <= now]:
                del model[k]
        assert lru.bytes_used <= budget
        assert lru.bytes_used == sum(s for s, _ in model.values())
        assert list(lru.keys()) == list(model)


def test_retime_changes_values_and_expiry_in_place_and_drops_the_expired() -> None:
    lru: ByteLRU[str] = ByteLRU(1000)
    for key in ("a", "b", "c"):
        lru.put(key, key, 10, expires_at=100.0, now=0.0)
    lru.get("a", 0.0)  # recency: b, c, a
    new = {"a": ("A", 500.0), "b": ("B", 5.0)}
    assert lru.retime(lambda key, _value: new.get(key), now=10.0) == 1  # b expired
    assert list(lru.keys()) == ["c", "a"]
    assert (lru.get("a", 200.0), lru.bytes_used, lru.expired) == ("A", 20, 1)
    assert lru.sweep(499.0) == 1  # c, at 100
    assert lru.sweep(500.0) == 1 and len(lru) == 0  # a, at its new expiry


def test_evict_oldest_for_a_callers_own_bound() -> None:
    removed: list[str] = []
    lru: ByteLRU[str] = ByteLRU(100, on_remove=lambda k, _v: removed.append(k))
    lru.put("a", "A", 30, expires_at=10, now=0)
    lru.put("b", "B", 20, expires_at=10, now=0)
    lru.get("a", now=1)  # "b" is now the oldest
    assert lru.evict_oldest() is True
    assert removed == ["b"] and list(lru.keys()) == ["a"] and lru.bytes_used == 30
    assert lru.evictions == 0  # the caller counts why
    assert lru.evict_oldest() is True and lru.evict_oldest() is False
