"""The LRU as an aiocache backend (proxy/store.py): the generic API and ours."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from proxy.budget import POLICIES
from proxy.entry import StoredResponse
from proxy.store import PURGE_MEMORY, MemoryLRUCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def entry(key: str, *, path: str = "/p", route: str = "photo", size: int = 100) -> StoredResponse:
    return StoredResponse(
        key=key,
        route=route,
        path=path,
        status=200,
        headers=(("Content-Type", "image/jpeg"),),
        body=b"x" * size,
        etag='"e"',
        stored_at=1000.0,
        fresh_until=1060.0,
        stale_until=1100.0,
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cache(clock: Clock) -> MemoryLRUCache:
    return MemoryLRUCache(10_000, clock=clock)


async def test_aiocache_api_round_trip(cache: MemoryLRUCache, clock: Clock) -> None:
    e = entry("k1")
    assert await cache.set("k1", e) is True
    assert await cache.get("k1") is e
    assert await cache.exists("k1")
    assert await cache.multi_get(["k1", "nope"]) == [e, None]
    with pytest.raises(ValueError, match="already exists"):
        await cache.add("k1", e)
    assert await cache.delete("k1") == 1
    assert await cache.get("k1", default="gone") == "gone"
    assert await cache.multi_set([("a", entry("a")), ("b", entry("b"))]) is True
    assert await cache.clear() is True
    assert cache.figures().entries == 0


async def test_aiocache_ttl_is_lazy_and_relative(cache: MemoryLRUCache, clock: Clock) -> None:
    await cache.set("k", entry("k"), ttl=10)
    clock.now += 9.9
    assert await cache.get("k") is not None
    clock.now += 0.1
    assert await cache.get("k") is None
    # Without a ttl, an entry lives until its own stale_until.
    await cache.set("k2", entry("k2"))
    clock.now = 1099.9
    assert await cache.exists("k2")
    clock.now = 1100.0
    assert not await cache.exists("k2")


async def test_expire_and_cas(cache: MemoryLRUCache, clock: Clock) -> None:
    e = entry("k")
    await cache.set("k", e)
    assert await cache.expire("k", 5) is True
    assert await cache.expire("nope", 5) is False
    assert await cache.expire("k", 0) is True
    clock.now += 5
    assert await cache.get("k") is None
    await cache.set("k", e)
    assert await cache._set("k", entry("k"), _cas_token=entry("other")) is False
    assert await cache._set("k", entry("k"), _cas_token=e) is True


async def test_non_responses_and_unsupported_commands_are_refused(cache: MemoryLRUCache) -> None:
    with pytest.raises(TypeError, match="StoredResponse"):
        await cache.set("k", b"bytes")
    with pytest.raises(TypeError, match="increment"):
        await cache.increment("k")
    with pytest.raises(NotImplementedError):
        await cache.raw("get", "k")


async def test_namespaced_clear(clock: Clock) -> None:
    cache = MemoryLRUCache(10_000, clock=clock, namespace="ns:")
    await cache.set("a", entry("ns:a"))
    assert await cache.get("a") is not None
    cache.store(entry("other:b", path="/b"), clock.now)
    await cache.clear(namespace="ns:")
    assert cache.figures().entries == 1


async def test_redlock_release(cache: MemoryLRUCache) -> None:
    e = entry("k")
    await cache.set("k", e)
    assert await cache._redlock_release("k", entry("x")) == 0
    assert await cache._redlock_release("k", e) == 1


def test_typed_api_store_lookup_and_purges(cache: MemoryLRUCache, clock: Clock) -> None:
    now = clock.now
    for key, path, route in [
        ("a1", "/api/photo/1", "photo"),
        ("a1?s", "/api/photo/1", "photo"),
        ("a2", "/api/photo/2", "photo"),
        ("f1", "/files/1", "files"),
    ]:
        assert cache.store(entry(key, path=path, route=route), now)
    assert cache.lookup("a1", now) is not None
    assert cache.purge_path("/api/photo/1") == 2
    assert cache.purge_path("/api/photo/1") == 0
    assert cache.purge_route("files") == 1
    assert cache.purge_all() == 1
    f = cache.figures()
    assert (f.entries, f.bytes, f.purged) == (0, 0, 4)
    assert not cache._by_path and not cache._by_route  # indexes follow removals


@pytest.mark.parametrize("policy", POLICIES)
def test_indexes_stay_consistent_through_eviction_expiry_and_replacement(
    clock: Clock, policy: str
) -> None:
    size = entry("k1", path="/1").size
    cache = MemoryLRUCache(size * 2 + 10, clock=clock, policy=policy)  # room for two entries
    cache.store(entry("k1", path="/1"), clock.now)
    cache.store(entry("k2", path="/2"), clock.now)
    assert cache.lookup("k3", clock.now) is None  # the miss its fill follows
    assert cache.store(entry("k3", path="/3"), clock.now)  # evicts k1
    assert set(cache._by_path) == {"/2", "/3"}
    cache.store(replace(entry("k2", path="/2b")), clock.now)  # replaced under a new path
    assert set(cache._by_path) == {"/2b", "/3"}
    clock.now = 2000.0
    assert cache.lookup("k3", clock.now) is None  # expired
    assert cache.sweep() == 1
    assert not cache._by_path
    f = cache.figures()
    assert (f.evictions, f.expired) == (1, 2)


def test_a_put_the_admission_refuses_is_reported_and_leaves_no_trace(clock: Clock) -> None:
    size = entry("k1", path="/1").size
    cache = MemoryLRUCache(size * 2 + 10, clock=clock, policy="tinylfu")
    for key in ("k1", "k2"):
        cache.store(entry(key, path=f"/{key}"), clock.now)
        for _ in range(3):
            assert cache.lookup(key, clock.now) is not None  # both earn hits
    # Seen once (its miss): not more often than what it would push out.
    assert cache.lookup("k3", clock.now) is None
    assert cache.store(entry("k3", path="/3"), clock.now) is False
    assert set(cache._by_path) == {"/k1", "/k2"} and cache.lookup("k3", clock.now) is None
    f = cache.figures()
    assert (f.entries, f.rejected, f.evictions) == (2, 1, 0)


def test_refuses_what_can_never_fit(clock: Clock) -> None:
    cache = MemoryLRUCache(1000, clock=clock)
    assert not cache.store(entry("big", size=2000), clock.now)
    assert cache.figures().entries == 0


def test_resize_evicts_down_to_the_new_budget(cache: MemoryLRUCache, clock: Clock) -> None:
    for i in range(5):
        cache.store(entry(f"k{i}", path=f"/{i}"), clock.now)
    one = entry("k0").size
    assert cache.resize(one * 2) == 3
    f = cache.figures()
    assert f.max_bytes == one * 2 and f.entries == 2 and f.bytes <= f.max_bytes


async def test_sweep_forever_sweeps_and_stops_when_cancelled(clock: Clock) -> None:
    cache = MemoryLRUCache(10**9, clock=clock)
    for i in range(2500):
        cache.store(entry(f"k{i}", path=f"/{i}"), clock.now)
    clock.now = 5000.0
    task = asyncio.create_task(cache.sweep_forever(0))
    async with asyncio.timeout(10):
        # The sweeper signals nothing by design; yield to it until it has run.
        while cache.figures().entries:  # noqa: ASYNC110
            await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cache.figures().expired == 2500


def test_a_purge_after_a_fill_began_keeps_that_fill_out(
    cache: MemoryLRUCache, clock: Clock
) -> None:
    for purge in (
        lambda: cache.purge_path("/p"),
        lambda: cache.purge_route("photo"),
        cache.purge_all,
    ):
        since = cache.purge_epoch()
        purge()
        assert not cache.store(entry("k", path="/p"), clock.now, since=since)
    since = cache.purge_epoch()
    cache.purge_path("/other")  # another path and another route do not matter
    cache.purge_route("files")
    assert cache.store(entry("k", path="/p"), clock.now, since=since)


def test_a_purge_of_a_path_whose_hash_is_close_does_not_keep_a_fill_out(
    cache: MemoryLRUCache, clock: Clock
) -> None:
    # Its hash in the same one of 4096 buckets as "/p"'s: purge counts kept per
    # bucket would take it for a purge of "/p".
    bucket = hash("/p") % 4096
    other = next(p for i in range(1_000_000) if hash(p := f"/other/{i}") % 4096 == bucket)
    since = cache.purge_epoch()
    cache.purge_path(other)
    assert cache.store(entry("k", path="/p"), clock.now, since=since)


def test_a_fill_that_outlasts_the_remembered_purges_is_not_stored(
    cache: MemoryLRUCache, clock: Clock
) -> None:
    since = cache.purge_epoch()
    for i in range(PURGE_MEMORY + 1):  # the first one is forgotten: it might have been "/p"
        cache.purge_path(f"/other/{i}")
    assert not cache.store(entry("k", path="/p"), clock.now, since=since)


@pytest.mark.parametrize("purged", ["/c/x", "/c/x/", "/C/X", "/c/X/"])
def test_a_path_purge_drops_every_spelling_an_app_may_read_as_that_path(
    cache: MemoryLRUCache, clock: Clock, purged: str
) -> None:
    spellings = ["/c/x", "/c/x/", "/C/X", "/c/X/"]
    for i, path in enumerate(spellings):
        assert cache.store(entry(f"k{i}", path=path), clock.now)
    assert cache.store(entry("other", path="/c/xy"), clock.now)
    assert cache.purge_path(purged) == len(spellings)
    assert cache.figures().entries == 1
    assert cache.lookup("other", clock.now) is not None


@pytest.mark.parametrize(("filled", "purged"), [("/C/X", "/c/x"), ("/c/x/", "/C/X")])
def test_a_purge_of_one_spelling_keeps_fills_of_the_others_out(
    cache: MemoryLRUCache, clock: Clock, filled: str, purged: str
) -> None:
    since = cache.purge_epoch()
    cache.purge_path(purged)
    assert not cache.store(entry("k", path=filled), clock.now, since=since)


def test_vary_specs_follow_their_variants(cache: MemoryLRUCache, clock: Clock) -> None:
    en = replace(
        entry("base\nvary\naccept-language:en"), vary=("accept-language",), base_key="base"
    )
    fr = replace(
        entry("base\nvary\naccept-language:fr"), vary=("accept-language",), base_key="base"
    )
    assert cache.vary_spec("base") is None
    cache.store(en, clock.now)
    cache.store(fr, clock.now)
    assert cache.vary_spec("base") == ("accept-language",)
    cache.purge_path("/p")  # both variants live at /p
    assert cache.vary_spec("base") is None


@pytest.mark.parametrize(
    ("lifetime", "fresh_until", "stale_until"),
    [
        ((3.0, 10.0), 1003.0, 1013.0),  # shorter: stale now, within its new stale window
        ((300.0, 0.0), 1300.0, 1300.0),  # longer: kept past its old expiry
        ((60.0, 40.0), 1060.0, 1100.0),  # unchanged
    ],
)
def test_new_route_lifetimes_apply_to_stored_entries(
    cache: MemoryLRUCache,
    clock: Clock,
    lifetime: tuple[float, float],
    fresh_until: float,
    stale_until: float,
) -> None:
    cache.store(entry("k"), clock.now)  # stored at 1000 with ttl 60 and a 40 s stale window
    clock.now = 1004.0
    assert cache.apply_lifetimes({"photo": lifetime}) == 0
    found = cache.lookup("k", clock.now)
    assert found is not None and (found.fresh_until, found.stale_until) == (
        fresh_until,
        stale_until,
    )
    assert found.stored_at == 1000.0
    clock.now = stale_until
    assert cache.sweep() == 1 and cache.lookup("k", clock.now) is None


@pytest.mark.parametrize(
    ("lifetime", "fresh_until", "stale_until"),
    [
        ((3.0, 10.0), 1060.0, 1070.0),  # the app's lifetime stays; the window follows
        ((None, 0.0), 1060.0, 1060.0),  # an origin route without a ttl
    ],
)
def test_a_lifetime_the_app_gave_survives_a_reload(
    cache: MemoryLRUCache,
    clock: Clock,
    lifetime: tuple[float | None, float],
    fresh_until: float,
    stale_until: float,
) -> None:
    cache.store(replace(entry("k"), origin_lifetime=True), clock.now)
    assert cache.apply_lifetimes({"photo": lifetime}) == 0
    found = cache.lookup("k", clock.now)
    assert found is not None
    assert (found.fresh_until, found.stale_until) == (fresh_until, stale_until)


def test_an_entry_already_past_its_new_lifetime_leaves_at_once(
    cache: MemoryLRUCache, clock: Clock
) -> None:
    cache.store(entry("k"), clock.now)
    clock.now = 1004.0
    assert cache.apply_lifetimes({"photo": (3.0, 0.0)}) == 1
    assert cache.lookup("k", clock.now) is None and cache.figures().entries == 0


def test_fills_stored_after_a_reload_follow_the_new_rules(
    cache: MemoryLRUCache, clock: Clock
) -> None:
    cache.apply_lifetimes({"photo": (5.0, 0.0)})
    assert cache.store(entry("k"), clock.now) is True  # built under an older ttl of 60 s
    found = cache.lookup("k", clock.now)
    assert found is not None and found.fresh_until == 1005.0
    assert cache.store(entry("gone", route="removed"), clock.now) is False


def test_entries_of_a_removed_route_stay_purgeable_by_its_name(
    cache: MemoryLRUCache, clock: Clock
) -> None:
    cache.apply_lifetimes({"photo": (60.0, 40.0)})
    cache.store(entry("k1", path="/a"), clock.now)
    cache.store(entry("k2", path="/b"), clock.now)
    cache.apply_lifetimes({"images": (60.0, 0.0)})
    assert cache.knows_route("photo") and cache.knows_route("images")
    assert not cache.knows_route("typo")
    found = cache.lookup("k1", clock.now)
    assert found is not None and found.fresh_until == 1060.0  # left as it was
    assert cache.purge_route("photo") == 2 and cache.figures().entries == 0


def test_every_purge_is_announced_to_listeners(cache: MemoryLRUCache) -> None:
    heard: list[tuple[str, str | None]] = []
    cache.on_purge(lambda kind, value: heard.append((kind, value)))
    cache.purge_path("/p")
    cache.purge_route("photo")
    cache.purge_all()
    assert heard == [("path", "/p"), ("route", "photo"), ("all", None)]
