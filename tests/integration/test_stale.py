"""``stale_if_error``: an expired entry stands in when the app fails."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.integration.conftest import Clock, Factory
from tests.integration.upstream_app import FAIL_WITH, HITS, photo_body

ROUTES = [{"name": "photo", "match": "/api/photo/{id}", "ttl": "10s", "stale_if_error": "60s"}]


async def get(client: aiohttp.ClientSession, url: object) -> tuple[int, str, bytes, str]:
    async with client.get(url) as r:  # type: ignore[arg-type]
        return (
            r.status,
            r.headers.get("X-Cache", ""),
            await r.read(),
            r.headers.get("Cache-Status", ""),
        )


@pytest.mark.parametrize("status", [500, 503])
async def test_an_upstream_5xx_is_replaced_by_the_stale_copy_within_the_window(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession, status: int
) -> None:
    clock = Clock()
    proxy = await sidecache(ROUTES, clock=clock)
    url = proxy.url / "api/photo/1"
    assert (await get(client, url))[:2] == (200, "MISS")
    upstream.app[FAIL_WITH].append(status)
    clock.now += 10  # expired: the app is asked again, and fails
    code, x_cache, body, cache_status = await get(client, url)
    assert (code, x_cache, body) == (200, "STALE", photo_body("1", 1000))
    assert "fwd=stale" in cache_status and f"upstream-{status}" in cache_status
    clock.now += 59.9
    assert (await get(client, url))[:2] == (200, "STALE")
    clock.now += 0.1  # past the window: the app's own answer
    assert (await get(client, url))[:2] == (status, "MISS")
    upstream.app[FAIL_WITH].clear()
    assert (await get(client, url))[:2] == (200, "MISS")
    assert upstream.app[HITS]["GET /api/photo/1"] == 5
    stats = proxy.runtime.snapshot()["cache"]
    assert stats["stale"] == 2  # type: ignore[index]


async def test_an_unreachable_upstream_is_replaced_by_the_stale_copy(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    clock = Clock()
    proxy = await sidecache(ROUTES, clock=clock)
    url = proxy.url / "api/photo/2"
    assert (await get(client, url))[:2] == (200, "MISS")
    await upstream.close()  # the app is gone
    clock.now += 30
    code, x_cache, body, cache_status = await get(client, url)
    assert (code, x_cache, body) == (200, "STALE", photo_body("2", 1000))
    assert "upstream-unavailable" in cache_status
    clock.now += 60
    assert (await get(client, url))[:2] == (502, "MISS")


async def test_a_fresh_answer_is_preferred_to_a_stale_one(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    clock = Clock()
    proxy = await sidecache(ROUTES, clock=clock)
    url = proxy.url / "api/photo/3"
    await get(client, url)
    clock.now += 11
    assert (await get(client, url))[:2] == (200, "MISS")  # the app answers: no stale
    assert (await get(client, url))[:2] == (200, "HIT")
