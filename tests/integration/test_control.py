"""The control port: stats, health, readiness, purge, token, byte budget."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.integration.conftest import Factory, free_port_that_refuses
from tests.integration.upstream_app import HITS


async def get_json(client: aiohttp.ClientSession, url: object) -> dict[str, object]:
    async with client.get(url) as r:  # type: ignore[arg-type]
        assert r.status == 200
        data: dict[str, object] = await r.json()
        return data


async def test_stats_has_the_contract_fields_and_counts(
    sidecache: Factory, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache()
    for path in ("api/photo/1", "api/photo/1", "api/photo/1", "api/photo/2", "files/1"):
        async with client.get(proxy.url / path) as r:
            await r.read()
    stats = await get_json(client, proxy.control / "stats")
    cache, upstream, routes = stats["cache"], stats["upstream"], stats["routes"]
    assert isinstance(cache, dict) and isinstance(upstream, dict) and isinstance(routes, dict)
    for name in (
        "entries",
        "bytes",
        "max_bytes",
        "hits",
        "misses",
        "hit_rate",
        "stale",
        "bypass",
        "evictions",
        "expired",
    ):
        assert isinstance(cache[name], int | float), name
    for name in ("requests", "errors", "in_flight", "queued", "coalesced"):
        assert isinstance(upstream[name], int), name
    assert cache["entries"] == 2
    assert cache["hits"] == 2 and cache["misses"] == 2 and cache["bypass"] == 1
    assert cache["hit_rate"] == 0.5
    assert 2000 < cache["bytes"] <= cache["max_bytes"]
    assert upstream["requests"] == 3 and upstream["in_flight"] == 0
    assert routes["photo"] == {"hits": 2, "misses": 2, "stale": 0, "bypass": 0}
    assert isinstance(stats["uptime_s"], float | int)


async def test_healthz_and_readyz(sidecache: Factory, client: aiohttp.ClientSession) -> None:
    up = await sidecache()
    down = await sidecache(upstream_url=f"http://127.0.0.1:{free_port_that_refuses()}")
    for proxy, ready in ((up, 200), (down, 503)):
        async with client.get(proxy.control / "healthz") as r:
            assert r.status == 200
        async with client.get(proxy.control / "readyz") as r:
            assert r.status == ready


async def test_purge_by_path_route_and_all(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    routes = [
        {"name": "photo", "match": "/api/photo/{id}", "ttl": 60},
        {"name": "files", "match": "/files/{id}", "ttl": 60},
    ]
    proxy = await sidecache(routes)

    async def fill(*paths: str) -> None:
        for p in paths:
            async with client.get(proxy.url.join(aiohttp.client.URL(p))) as r:
                await r.read()

    async def purge(body: object) -> tuple[int, dict[str, object]]:
        async with client.post(proxy.control / "purge", json=body) as r:
            return r.status, await r.json()

    await fill("/api/photo/1", "/api/photo/1?size=10", "/api/photo/2", "/files/1", "/files/2")
    assert proxy.runtime.store.figures().entries == 5
    assert await purge({"path": "/api/photo/1"}) == (200, {"purged": 2})  # every variant
    assert await purge({"path": "/api/photo/%31"}) == (200, {"purged": 0})
    assert await purge({"route": "files"}) == (200, {"purged": 2})
    assert await purge({"all": True}) == (200, {"purged": 1})
    assert proxy.runtime.store.figures().entries == 0
    await fill("/api/photo/2")
    assert upstream.app[HITS]["GET /api/photo/2"] == 2
    for bad in ({}, {"path": 1}, {"all": False}, {"path": "/a", "all": True}, [1]):
        status, body = await purge(bad)
        assert status == 400 and "error" in body
    assert (await purge({"path": "/a/../b"}))[0] == 400
    assert (await purge({"route": "nope"}))[0] == 404
    async with client.post(proxy.control / "purge", data=b"not json") as r:
        assert r.status == 400


async def test_purge_requires_the_token_when_one_is_set(
    sidecache: Factory, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache(control={"token": "s3cret"})
    url = proxy.control / "purge"
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}):
        async with client.post(url, json={"all": True}, headers=headers) as r:
            assert r.status == 401
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
    async with client.post(
        url, json={"all": True}, headers={"Authorization": "Bearer s3cret"}
    ) as r:
        assert r.status == 200
    async with client.get(proxy.control / "stats") as r:
        assert r.status == 200  # reading stays open on the loopback-bound port


async def test_byte_budget_is_kept_and_eviction_is_lru(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache(
        cache={"max_bytes": "100KiB", "max_object_bytes": "40KiB", "policy": "lru"}
    )
    async with client.get(proxy.control / "stats") as r:
        assert (await r.json())["cache"]["policy"] == "lru"

    async def get(n: int) -> str:
        async with client.get(proxy.url.with_path(f"/api/photo/{n}").with_query(size="30000")) as r:
            await r.read()
            return r.headers["X-Cache"]

    for n in (1, 2, 3):
        assert await get(n) == "MISS"
    assert await get(1) == "HIT"  # 1 is now the most recently used
    assert await get(4) == "MISS"  # evicts 2, the least recently used
    figures = proxy.runtime.store.figures()
    assert figures.bytes <= figures.max_bytes == 100 * 1024
    assert figures.evictions == 1
    assert await get(1) == "HIT"
    assert await get(3) == "HIT"
    assert await get(2) == "MISS"


async def test_the_default_policy_keeps_what_earns_hits(
    sidecache: Factory, client: aiohttp.ClientSession
) -> None:
    """GDSF: room for a newcomer is taken from the entry with the fewest hits per
    byte, not from the least recently used (which an LRU would evict)."""
    proxy = await sidecache(cache={"max_bytes": "100KiB", "max_object_bytes": "40KiB"})

    async def get(n: int) -> tuple[str, int]:
        async with client.get(proxy.url.with_path(f"/api/photo/{n}").with_query(size="30000")) as r:
            return r.headers["X-Cache"], len(await r.read())

    assert [await get(1) for _ in range(3)] == [("MISS", 30000)] + [("HIT", 30000)] * 2
    assert [await get(2) for _ in range(2)] == [("MISS", 30000), ("HIT", 30000)]
    assert await get(3) == ("MISS", 30000)
    assert await get(4) == ("MISS", 30000)  # room for it: 3 goes, asked for once
    async with client.get(proxy.control / "stats") as r:
        stats = await r.json()
    cache = stats["cache"]
    assert cache["policy"] == "gdsf"
    assert (cache["entries"], cache["rejected"], cache["evictions"]) == (3, 0, 1)
    assert stats["storage"]["photo"] == {"stored": 4, "not_stored": {}}
    assert [await get(n) for n in (1, 2, 4)] == [("HIT", 30000)] * 3
    assert await get(3) == ("MISS", 30000)


async def test_tinylfu_keeps_what_earns_hits_and_says_what_it_refused(
    sidecache: Factory, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache(
        cache={"max_bytes": "100KiB", "max_object_bytes": "40KiB", "policy": "tinylfu"}
    )

    async def get(n: int) -> tuple[str, int]:
        async with client.get(proxy.url.with_path(f"/api/photo/{n}").with_query(size="30000")) as r:
            return r.headers["X-Cache"], len(await r.read())

    for n in (1, 2, 3):
        assert await get(n) == ("MISS", 30000)
        assert await get(n) == ("HIT", 30000)
    # Seen once, 4 would push out entries that earn hits: it is served, not stored.
    assert await get(4) == ("MISS", 30000)
    async with client.get(proxy.control / "stats") as r:
        stats = await r.json()
    cache = stats["cache"]
    assert stats["storage"]["photo"] == {"stored": 3, "not_stored": {"admission": 1}}
    assert cache["policy"] == "tinylfu"
    assert (cache["entries"], cache["rejected"], cache["evictions"]) == (3, 1, 0)
    assert [await get(n) for n in (1, 2, 3)] == [("HIT", 30000)] * 3
    async with client.get(proxy.control / "metrics") as r:
        assert "sidecache_cache_rejected_total 1.0" in await r.text()


async def test_purge_refuses_empty_names_and_keeps_the_cache(
    sidecache: Factory, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache()
    for n in (1, 2):
        async with client.get(proxy.url / f"api/photo/{n}") as r:
            await r.read()
    for body in ({"route": ""}, {"path": ""}, {"route": "  "}, {"path": " "}):
        async with client.post(proxy.control / "purge", json=body) as r:
            assert r.status == 400, body
            assert "must not be empty" in (await r.json())["error"]
    assert proxy.runtime.store.figures().entries == 2
    async with client.get(proxy.url / "api/photo/1") as r:
        assert r.headers["X-Cache"] == "HIT"


async def test_a_non_utf8_authorization_is_401_without_a_logged_error(
    sidecache: Factory, client: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = await sidecache(control={"token": "s3cret"})
    async with client.get(proxy.url / "api/photo/1") as r:
        await r.read()
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.control.port)
    try:
        writer.write(
            b"POST /purge HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3\xffcret\r\n"
            b"Content-Type: application/json\r\nContent-Length: 12\r\nConnection: close\r\n"
            b'\r\n{"all":true}'
        )
        await writer.drain()
        async with asyncio.timeout(10):
            answer = await reader.read()
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 401 ")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    async with client.get(proxy.url / "api/photo/1") as r:
        assert r.headers["X-Cache"] == "HIT"  # nothing was purged


async def test_a_configured_token_with_whitespace_around_it_still_matches(
    sidecache: Factory, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache(control={"token": " s3cret\n"})  # e.g. from a file with a newline
    url = proxy.control / "purge"
    async with client.post(url, json={"all": True}, headers={"Authorization": "Bearer wrong"}) as r:
        assert r.status == 401
    async with client.post(
        url, json={"all": True}, headers={"Authorization": "Bearer s3cret"}
    ) as r:
        assert r.status == 200
