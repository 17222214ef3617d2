"""Shadow mode: every request reaches the app, and the figures are exactly those
the same traffic gives a route in ``cache`` mode."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from yarl import URL

from proxy.admin import show_stats
from proxy.config import load_config
from proxy.server import Sidecache
from tests.integration.conftest import Clock, Factory, Running
from tests.integration.upstream_app import HITS

ROUTE = {"name": "photo", "match": "/api/photo/{id}", "ttl": "1m"}
# Small enough that the sequence below evicts, and that 20 KB is too large.
CACHE = {"max_bytes": "48KiB", "max_object_bytes": "16KiB"}

# (path and query, request headers, clock step before it): hits, misses, a
# revalidation-free expiry, a Set-Cookie, private and no-store answers, too-large
# ones (of known and of unknown length), Vary variants, Vary: *, an uncacheable
# status, a range, a HEAD, and enough bodies to evict under the budget.
Step = tuple[str, dict[str, str], float]
SEQUENCE: list[Step] = [
    ("/api/photo/1", {}, 0),
    ("/api/photo/1", {}, 0),
    ("/api/photo/1", {"Range": "bytes=0-9"}, 0),
    ("/api/photo/2?size=5000", {}, 0),
    ("/api/photo/3?set-cookie=a%3Db", {}, 0),
    ("/api/photo/3?set-cookie=a%3Db", {}, 0),
    ("/api/photo/4?cache-control=private", {}, 0),
    ("/api/photo/5?cache-control=no-store", {}, 0),
    ("/api/photo/6?size=20000", {}, 0),
    ("/api/photo/7?size=20000&chunked=1", {}, 0),
    ("/api/photo/8?vary=*", {}, 0),
    ("/api/photo/9?vary=Accept-Language", {"Accept-Language": "en"}, 0),
    ("/api/photo/9?vary=Accept-Language", {"Accept-Language": "en"}, 0),
    ("/api/photo/9?vary=Accept-Language", {"Accept-Language": "fr"}, 0),
    ("/api/photo/9?vary=Accept-Language", {"Accept-Language": "fr"}, 0),
    ("/api/photo/10?status=503", {}, 0),
    ("/api/photo/11?size=3000&chunked=1", {}, 0),
    ("/api/photo/11?size=3000&chunked=1", {}, 0),
    ("/api/photo/1", {}, 30),
    ("/api/photo/1", {}, 31),  # past its minute: expired, fetched again
    ("/api/photo/2?size=5000", {}, 0),
    *((f"/api/photo/{n}?size=9000", {}, 0) for n in range(20, 26)),  # evicts
    ("/api/photo/2?size=5000", {}, 0),
    ("/api/photo/25?size=9000", {}, 0),
    ("/api/photo/12", {}, 0),
]


async def replay(client: aiohttp.ClientSession, proxy: Running, clock: Clock) -> list[str]:
    """Send ``SEQUENCE`` one request after another; the ``X-Cache`` of each."""
    seen = []
    for target, headers, step in SEQUENCE:
        clock.now += step
        async with client.get(proxy.url.join(URL(target)), headers=headers) as r:
            await r.read()
            seen.append(r.headers["X-Cache"])
    return seen


async def stats(client: aiohttp.ClientSession, proxy: Running) -> dict[str, Any]:
    async with client.get(proxy.control / "stats") as r:
        data: dict[str, Any] = await r.json()
        return data


@pytest.mark.parametrize("policy", ["gdsf", "lru", "tinylfu"])
async def test_shadow_figures_equal_what_the_cache_does_with_the_same_traffic(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession, policy: str
) -> None:
    cache_clock, shadow_clock = Clock(), Clock()
    config = {**CACHE, "policy": policy}
    cached = await sidecache([ROUTE], cache=config, clock=cache_clock)
    shadow = await sidecache([{**ROUTE, "mode": "shadow"}], cache=config, clock=shadow_clock)

    outcomes = await replay(client, cached, cache_clock)
    before = upstream.app[HITS]["total"]
    assert set(await replay(client, shadow, shadow_clock)) == {"BYPASS"}
    assert upstream.app[HITS]["total"] - before == len(SEQUENCE)  # every one reached the app

    real, would = await stats(client, cached), await stats(client, shadow)
    counted = real["routes"]["photo"]
    figures = would["shadow"]["routes"]["photo"]
    # The sequence holds every case it names: a check of the test itself.
    assert counted["hits"] >= 5 and counted["misses"] >= 10 and counted["stale"] == 0
    assert outcomes.count("HIT") == counted["hits"]
    assert set(real["storage"]["photo"]["not_stored"]) == {
        "set-cookie",
        "private",
        "no-store",
        "too-large",
        "vary",
        "status",
    } | ({"admission"} if policy == "tinylfu" else set())
    # LRU and GDSF make room by evicting; TinyLFU keeps newcomers seen once out instead.
    made_room = real["cache"]["rejected" if policy == "tinylfu" else "evictions"]
    assert made_room > 0 and real["cache"]["expired"] > 0

    assert figures["hits"] == counted["hits"]
    assert figures["misses"] == counted["misses"]
    assert figures["stale"] == counted["stale"]
    assert figures["stored"] == real["storage"]["photo"]["stored"]
    assert figures["not_stored"] == real["storage"]["photo"]["not_stored"]
    index, cache = would["shadow"]["index"], real["cache"]
    for name in ("entries", "bytes", "max_bytes", "evictions", "expired"):
        assert index[name] == cache[name], name
    assert figures["saved_requests"] == counted["hits"]
    assert figures["saved_bytes"] > 0
    assert figures["hit_rate"] == real["cache"]["hit_rate"]
    # Nothing was stored in the shadow instance's cache, and the app saw all.
    assert would["cache"]["entries"] == 0
    assert would["routes"]["photo"]["bypass"] == len(SEQUENCE)


async def test_a_shadow_answer_says_so_and_comes_from_the_app(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache(mode="shadow")  # the top-level mode: every route
    before = upstream.app[HITS]["GET /api/photo/1"]
    for _ in range(3):
        async with client.get(proxy.url / "api/photo/1") as r:
            assert r.status == 200
            assert r.headers["X-Cache"] == "BYPASS"
            assert r.headers["Cache-Status"] == "sidecache; fwd=bypass; detail=shadow"
            assert "Age" not in r.headers
            await r.read()
    assert upstream.app[HITS]["GET /api/photo/1"] - before == 3
    figures = (await stats(client, proxy))["shadow"]["routes"]["photo"]
    assert (figures["hits"], figures["misses"], figures["stored"]) == (2, 1, 1)
    assert figures["saved_bytes"] == 2 * 1000
    async with client.get(proxy.control / "api/dashboard") as r:
        assert (await r.json())["stats"]["shadow"]["routes"]["photo"] == figures
    async with client.get(proxy.control / "") as r:
        assert 'id="shadow"' in await r.text()  # the dashboard's shadow table


async def test_sidecache_stats_shows_the_shadow_routes(
    sidecache: Factory, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache([{**ROUTE, "mode": "shadow"}])
    for target in ("/api/photo/1", "/api/photo/1", "/api/photo/2?set-cookie=a%3Db"):
        async with client.get(proxy.url.join(URL(target))) as r:
            await r.read()
    console = Console(record=True, width=160)
    await asyncio.to_thread(show_stats, str(proxy.control), "", False, console)
    text = console.export_text()
    assert "shadow routes: what caching would have done" in text
    row = next(line for line in text.splitlines() if "photo" in line and "%" in line)
    assert "33.3%" in row and "set-cookie 1" in row


async def test_shadow_metrics_are_exposed(
    sidecache: Factory, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache([{**ROUTE, "mode": "shadow"}])
    for target in ("/api/photo/1", "/api/photo/1", "/api/photo/2?set-cookie=a%3Db"):
        async with client.get(proxy.url.join(URL(target))) as r:
            await r.read()
    async with client.get(proxy.control / "metrics") as r:
        text = await r.text()
    found = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    requests = "sidecache_shadow_requests_total"
    assert found[(requests, (("outcome", "hit"), ("route", "photo")))] == 1
    assert found[(requests, (("outcome", "miss"), ("route", "photo")))] == 2
    assert found[("sidecache_shadow_stored_total", (("route", "photo"),))] == 1
    assert (
        found[("sidecache_shadow_not_stored_total", (("reason", "set-cookie"), ("route", "photo")))]
        == 1
    )
    assert found[("sidecache_shadow_saved_requests_total", (("route", "photo"),))] == 1
    assert found[("sidecache_shadow_saved_bytes_total", (("route", "photo"),))] == 1000
    assert found[("sidecache_shadow_index_entries", ())] == 1
    assert found[("sidecache_shadow_index_overhead_bytes", ())] > 0
    assert found[("sidecache_shadow_index_max_overhead_bytes", ())] == 64 * 1024**2
    assert ("sidecache_shadow_index_evictions_total", (("reason", "capped"),)) in found


CONFIG = """
listen: 127.0.0.1:0
control: {{listen: "127.0.0.1:0"}}
upstream: {{url: "http://127.0.0.1:{port}"}}
mode: {mode}
routes:
  - {{name: photo, match: "/api/photo/{{id}}", ttl: 5m}}
"""


async def test_a_reload_switches_a_route_from_shadow_to_cache(
    tmp_path: Path, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    path = tmp_path / "sidecache.yaml"
    path.write_text(CONFIG.format(port=upstream.port, mode="shadow"))
    instance = Sidecache(load_config(path), str(path))
    await instance.start()
    try:
        base = URL(f"http://127.0.0.1:{instance.public_port}")
        for _ in range(2):
            async with client.get(base / "api/photo/1") as r:
                assert r.headers["X-Cache"] == "BYPASS"
        path.write_text(CONFIG.format(port=upstream.port, mode="cache"))
        assert instance.reload() is True
        assert instance.config.routes[0].mode == "cache"
        before = upstream.app[HITS]["GET /api/photo/1"]
        async with client.get(base / "api/photo/1") as r:
            assert r.headers["X-Cache"] == "MISS"  # the shadow index served nothing
        async with client.get(base / "api/photo/1") as r:
            assert r.headers["X-Cache"] == "HIT"
        assert upstream.app[HITS]["GET /api/photo/1"] - before == 1
        assert instance.runtime is not None
        index = instance.runtime.proxy.shadow.figures()
        assert index.entries == 0  # a route no longer in shadow keeps no records

        path.write_text(CONFIG.format(port=upstream.port, mode="shadow"))
        assert instance.reload() is True
        async with client.get(base / "api/photo/1") as r:
            # Stored while cached, never served in shadow: not even the plain hit.
            assert r.headers["X-Cache"] == "BYPASS"
        assert upstream.app[HITS]["GET /api/photo/1"] - before == 2
    finally:
        await instance.stop(grace=1.0)
