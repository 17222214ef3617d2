"""The shadow index (proxy/shadow.py): what the cache would have done, without a body."""

from __future__ import annotations

import gc
import tracemalloc

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.config import RouteConfig
from proxy.entry import Headers
from proxy.policy import Lookup, RequestHeaders, build_entry
from proxy.shadow import RECORD_OVERHEAD, ShadowIndex, Watch

ROUTE = RouteConfig(name="photo", match="/p/{id}", ttl=10, stale_if_error=30, mode="shadow")
LIFETIMES = {"photo": (10.0, 30.0)}
PLAIN: Headers = (("Content-Type", "image/jpeg"),)
NO_HEADERS: RequestHeaders = CIMultiDictProxy(CIMultiDict())


def lookup(n: int = 1) -> Lookup:
    return Lookup(ROUTE, f"photo\nh\n/p/{n}", f"/p/{n}", f"/p/{n}", False)


def index(max_bytes: int = 100_000, max_overhead: int = 1_000_000) -> ShadowIndex:
    shadow = ShadowIndex(max_bytes, max_overhead, max_object_bytes=20_000, policy="lru")
    shadow.apply(max_bytes, max_overhead, 20_000, LIFETIMES, frozenset({"photo"}), now=0.0)
    return shadow


def request(
    shadow: ShadowIndex,
    n: int,
    now: float,
    *,
    status: int = 200,
    headers: Headers = PLAIN,
    length: int | None = 1000,
    body: int = 1000,
) -> Watch | None:
    """One request of a shadow route whose app answers ``status`` with ``body``
    bytes (``length``: its Content-Length, None if it gives none)."""
    watch = shadow.on_request(lookup(n), NO_HEADERS, now, lambda _: NO_HEADERS)
    if watch is None:
        return None
    wall = 1_800_000_000.0
    wants = shadow.answered(watch, status, headers, content_length=length, now=now, wall=wall)
    if wants:
        shadow.stored(watch, status, headers, body, now=now, wall=wall)
    return watch


def test_a_miss_is_recorded_and_the_next_request_would_have_been_a_hit() -> None:
    shadow = index()
    assert request(shadow, 1, now=0.0) is not None
    assert request(shadow, 1, now=5.0) is None  # a hit: nothing to follow
    c = shadow.routes["photo"]
    assert (c.hits, c.misses, c.stored, c.saved_requests, c.saved_bytes) == (1, 1, 1, 1, 1000)
    assert c.as_dict()["hit_rate"] == 0.5


def test_a_record_is_charged_what_the_cache_charges_its_entry() -> None:
    shadow = index()
    request(shadow, 1, now=0.0, body=1234, length=1234)
    real = build_entry(lookup(1), 200, PLAIN, b"x" * 1234, now=0.0, wall=1_800_000_000.0)
    f = shadow.figures()
    assert f.bytes == real.size  # the would-be bytes, body included
    # The record itself holds neither the body nor the headers.
    strings = len(real.key) + 2 * len(real.path) + len(real.etag) + len(real.base_key)
    assert f.overhead == RECORD_OVERHEAD + strings
    assert f.entries == 1


def test_expiry_as_the_cache_would() -> None:
    shadow = index()
    request(shadow, 1, now=0.0)
    request(shadow, 1, now=10.0)  # ttl 10 s over, no validator: fetched again
    c = shadow.routes["photo"]
    assert (c.hits, c.misses, c.stored) == (0, 2, 2)
    request(shadow, 1, now=50.0)  # past stale_if_error too: dropped, then stored
    assert shadow.figures().expired == 1


@pytest.mark.parametrize(
    ("status", "headers", "length", "body", "reason"),
    [
        (200, (("Set-Cookie", "a=b"),), 1000, 1000, "set-cookie"),
        (200, (("Cache-Control", "private"),), 1000, 1000, "private"),
        (200, (("Cache-Control", "no-store"),), 1000, 1000, "no-store"),
        (200, (("Vary", "*"),), 1000, 1000, "vary"),
        (200, PLAIN, 30_000, 30_000, "too-large"),  # said by Content-Length
        (200, PLAIN, None, 30_000, "too-large"),  # known once the body went through
        (503, PLAIN, 10, 10, "status"),
    ],
)
def test_what_blocks_storage_is_counted_by_reason(
    status: int, headers: Headers, length: int | None, body: int, reason: str
) -> None:
    shadow = index()
    request(shadow, 1, now=0.0, status=status, headers=headers, length=length, body=body)
    c = shadow.routes["photo"]
    assert dict(c.not_stored) == {reason: 1}
    assert c.stored == 0 and shadow.figures().entries == 0


def test_the_budget_evicts_as_the_cache_would() -> None:
    one = index()
    request(one, 1, now=0.0)
    budget = one.figures().bytes * 5 // 2  # room for two records
    shadow = index(max_bytes=budget)
    for n in range(1, 6):
        request(shadow, n, now=0.0)
    f = shadow.figures()
    assert f.bytes <= budget and f.evictions > 0
    assert request(shadow, 1, now=0.0) is not None  # the oldest went first
    assert request(shadow, 5, now=0.0) is None


def test_the_index_own_memory_is_bounded() -> None:
    one = index()
    request(one, 1, now=0.0)
    record = one.figures().overhead
    shadow = index(max_overhead=3 * record)
    for n in range(1, 10):
        request(shadow, n, now=0.0)
    f = shadow.figures()
    assert f.overhead <= 3 * record and f.entries == 3 and f.capped == 6
    assert f.evictions == 0  # not what the cache would have evicted


def test_purges_reach_the_index() -> None:
    shadow = index()
    for n in (1, 2, 3):
        request(shadow, n, now=0.0)
    assert shadow.purge("path", "/p/1") == 1
    assert shadow.purge("route", "other") == 0
    assert shadow.purge("route", "photo") == 2
    request(shadow, 1, now=0.0)
    assert shadow.purge("all", None) == 1
    assert shadow.figures().entries == 0 and shadow.figures().overhead == 0


def test_an_app_error_within_stale_if_error_would_have_been_answered_stale() -> None:
    shadow = index()
    request(shadow, 1, now=0.0)
    request(shadow, 1, now=15.0, status=503, length=10, body=10)
    c = shadow.routes["photo"]
    assert (c.misses, c.stale) == (1, 1)
    watch = shadow.on_request(lookup(1), NO_HEADERS, 20.0, lambda _: NO_HEADERS)
    assert watch is not None
    shadow.failed(watch, 20.0)  # no answer at all
    assert (c.misses, c.stale) == (1, 2)


def test_an_unchanged_validator_would_have_been_a_304() -> None:
    shadow = index()
    tagged: Headers = (*PLAIN, ("ETag", '"v1"'))
    request(shadow, 1, now=0.0, headers=tagged)
    request(shadow, 1, now=50.0, headers=tagged)  # stale; the app's ETag unchanged
    c = shadow.routes["photo"]
    assert (c.hits, c.misses, c.saved_requests, c.saved_bytes) == (1, 1, 0, 1000)
    request(shadow, 1, now=120.0, headers=(*PLAIN, ("ETag", '"v2"')))
    assert (c.hits, c.misses) == (1, 2)


def test_a_route_out_of_shadow_keeps_no_records() -> None:
    shadow = index()
    request(shadow, 1, now=0.0)
    shadow.apply(100_000, 1_000_000, 20_000, LIFETIMES, frozenset(), now=0.0)
    assert shadow.figures().entries == 0
    assert shadow.routes["photo"].stored == 1  # the counters stay


def test_the_counted_overhead_is_at_least_the_memory_records_take() -> None:
    """``cache.shadow_index_bytes`` bounds real memory: what is counted per record
    (``RECORD_OVERHEAD`` and its strings) covers what Python allocates for it."""
    shadow = index(max_bytes=10**12, max_overhead=10**12)
    headers: Headers = (
        *PLAIN,
        ("ETag", '"abcdef0123456789"'),
        ("Last-Modified", "Tue, 24 Nov 2026 10:00:00 GMT"),
        ("Vary", "Accept-Encoding"),
        ("Date", "Sat, 28 Nov 2026 17:49:23 GMT"),
    )
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(2000):
            request(shadow, n, now=0.0, headers=headers, length=2_000, body=2_000)
        gc.collect()
        taken = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    f = shadow.figures()
    assert f.entries == 2000
    assert taken <= f.overhead


def test_a_sweep_drops_expired_records_and_their_overhead() -> None:
    shadow = index()
    for n in (1, 2):
        request(shadow, n, now=0.0)
    request(shadow, 3, now=30.0)
    assert shadow.sweep(now=40.0) == 2  # past ttl and stale_if_error: 10 + 30 s
    f = shadow.figures()
    assert (f.entries, f.expired) == (1, 2)
    one = index()
    request(one, 3, now=30.0)
    assert f.overhead == one.figures().overhead  # only the live record's
