"""One fetch per cold object: concurrent misses share one upstream request."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.integration.conftest import Factory, Running
from tests.integration.upstream_app import ARRIVED, GATE, HITS, photo_body

CLIENTS = 50


async def waiters(proxy: Running, count: int) -> None:
    """Wait (bounded) until the one fill in progress has ``count`` waiting clients."""
    async with asyncio.timeout(10):
        (fill,) = proxy.runtime.coalescer.in_progress()
        await fill.wait_for_waiters(count)


async def test_concurrent_misses_make_one_upstream_request(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache()
    url = proxy.url / "gated/photo/1"

    async def get() -> tuple[int, str, bytes]:
        async with client.get(url) as r:
            return r.status, r.headers["X-Cache"], await r.read()

    tasks = [asyncio.create_task(get()) for _ in range(CLIENTS)]
    async with asyncio.timeout(10):
        await upstream.app[ARRIVED].wait()
    await waiters(proxy, CLIENTS - 1)
    upstream.app[GATE].set()
    results = await asyncio.gather(*tasks)
    assert upstream.app[HITS]["GET /gated/photo/1"] == 1
    assert all(status == 200 and body == photo_body("1", 1000) for status, _, body in results)
    assert sorted(x for _, x, _ in results) == ["HIT"] * (CLIENTS - 1) + ["MISS"]
    stats = proxy.runtime.snapshot()
    assert stats["upstream"]["coalesced"] == CLIENTS - 1  # type: ignore[index]
    assert stats["upstream"]["requests"] == 1  # type: ignore[index]


async def test_a_waiter_that_goes_away_does_not_disturb_the_fill(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache()
    url = proxy.url / "gated/photo/2"

    async def get() -> bytes:
        async with client.get(url) as r:
            return await r.read()

    leader = asyncio.create_task(get())
    async with asyncio.timeout(10):
        await upstream.app[ARRIVED].wait()
    quitter = asyncio.create_task(get())
    await waiters(proxy, 1)
    quitter.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await quitter
    upstream.app[GATE].set()
    assert await leader == photo_body("2", 1000)
    async with client.get(url) as r:
        assert r.headers["X-Cache"] == "HIT"
    assert upstream.app[HITS]["GET /gated/photo/2"] == 1


async def test_a_leader_that_goes_away_does_not_stop_the_fill(
    sidecache: Factory, upstream: TestServer
) -> None:
    proxy = await sidecache()
    url = proxy.url / "gated/photo/3"
    async with aiohttp.ClientSession() as quitting, aiohttp.ClientSession() as waiting:
        leader = asyncio.create_task(quitting.get(url))
        async with asyncio.timeout(10):
            await upstream.app[ARRIVED].wait()
        follower = asyncio.create_task(waiting.get(url))
        await waiters(proxy, 1)
        leader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await leader
        await quitting.close()  # the leader's connection is gone
        upstream.app[GATE].set()
        async with asyncio.timeout(10):
            r = await follower
        assert r.status == 200
        assert await r.read() == photo_body("3", 1000)
        r.release()
    assert upstream.app[HITS]["GET /gated/photo/3"] == 1


async def test_a_failed_fill_releases_every_waiter_with_the_error(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    routes = [{"name": "h", "match": "/hang", "ttl": 60}]
    proxy = await sidecache(routes, upstream={"timeout": "500ms"})

    async def get() -> int:
        async with client.get(proxy.url / "hang") as r:
            return r.status

    async with asyncio.timeout(10):
        statuses = await asyncio.gather(*(get() for _ in range(10)))
    assert statuses == [504] * 10
    assert upstream.app[HITS]["GET /hang"] == 1
    assert len(proxy.runtime.coalescer) == 0


# 403 has no explicit freshness and is not heuristically cacheable: not stored.
@pytest.mark.parametrize("query", ["status=403", "set-cookie=session"])
async def test_waiters_on_an_unshareable_response_fetch_for_themselves(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession, query: str
) -> None:
    proxy = await sidecache()
    url = proxy.url.with_path("/gated/photo/4").with_query(query)

    async def get() -> int:
        async with client.get(url) as r:
            await r.read()
            return r.status

    tasks = [asyncio.create_task(get()) for _ in range(5)]
    async with asyncio.timeout(10):
        await upstream.app[ARRIVED].wait()
    await waiters(proxy, 4)
    upstream.app[GATE].set()
    statuses = await asyncio.gather(*tasks)
    assert len(set(statuses)) == 1
    assert upstream.app[HITS][f"GET {url.path_qs}"] == 5
