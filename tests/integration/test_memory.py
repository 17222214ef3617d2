"""Resident memory stays within the byte budget plus a bounded overhead."""

from __future__ import annotations

import pytest

from bench.memory import MIB, measure

# What sidecache may hold beyond cache.max_bytes (README "Memory"): the process
# itself (about 50 MiB), one buffer per upstream fill (max_connections x object
# size), and bodies evicted while still being sent. Generous on purpose: this
# is a guard against unbounded growth, not a benchmark.
OVERHEAD_BOUND = 300 * MIB


@pytest.mark.slow
async def test_rss_stays_within_the_budget_plus_a_bounded_overhead() -> None:
    # Eight times more distinct objects than the budget holds: a cache that did
    # not evict would pass the bound below.
    figures = await measure(
        clients=150, requests=6, budget_mib=64, connections=10, distinct_factor=8
    )
    assert figures["responses"] == 150 * 6
    assert figures["evictions"] > 0  # the budget was under pressure all along
    assert figures["cache_bytes"] <= figures["budget"]
    assert figures["rss_peak"] < figures["budget"] + OVERHEAD_BOUND, figures


@pytest.mark.slow
async def test_slow_clients_on_chunked_bodies_hold_a_bounded_amount_and_give_it_back() -> None:
    # 50 MB bodies of unknown length, each might be storable until 16 MiB of it
    # passed: each fill used to keep that much for its slow client (20 fills,
    # 320 MiB), and the process kept it resident afterwards.
    figures = await measure(
        clients=40, requests=1, budget_mib=64, connections=20,
        scenario="slow-chunked", after_load=3.0,
    )  # fmt: skip
    assert figures["responses"] == 40
    assert figures["rss_peak"] < figures["budget"] + 200 * MIB, figures
    assert figures["rss_after"] < figures["rss_idle"] + 50 * MIB, figures
