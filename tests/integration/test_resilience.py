"""Stale-while-revalidate, admission control, client limits, and a crowd."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp.test_utils import TestServer

from tests.integration.conftest import Clock, Factory, Running, free_port_that_refuses
from tests.integration.upstream_app import ARRIVED, GATE, HITS, photo_body

SWR = [
    {"name": "gated", "match": "/gated/photo/{id}", "ttl": "10s", "stale_while_revalidate": "30s"}
]


async def get(client: aiohttp.ClientSession, url: object) -> tuple[int, str, bytes]:
    async with client.get(url) as r:  # type: ignore[arg-type]
        return r.status, r.headers.get("X-Cache", ""), await r.read()


async def until_stats(proxy: Running, section: str, name: str, value: int) -> None:
    """Wait (bounded) until a /stats counter reaches ``value``."""
    async with asyncio.timeout(10):
        while proxy.runtime.snapshot()[section][name] != value:  # type: ignore[index]  # noqa: ASYNC110
            await asyncio.sleep(0)


async def test_stale_while_revalidate_serves_at_once_and_refreshes_once(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    clock = Clock()
    proxy = await sidecache(SWR, clock=clock)
    url = proxy.url / "gated/photo/1"
    upstream.app[GATE].set()
    assert (await get(client, url))[:2] == (200, "MISS")
    upstream.app[GATE].clear()
    upstream.app[ARRIVED].clear()
    clock.now += 15  # stale, inside the revalidation window
    async with asyncio.timeout(10):
        results = await asyncio.gather(*(get(client, url) for _ in range(10)))
    # Every client got the stale copy at once, while the refresh waits upstream.
    assert all(r == (200, "STALE", photo_body("1", 1000)) for r in results)
    async with asyncio.timeout(10):
        await upstream.app[ARRIVED].wait()
    assert upstream.app[HITS]["GET /gated/photo/1"] == 2  # one refresh for ten clients
    upstream.app[GATE].set()
    await until_stats(proxy, "upstream", "in_flight", 0)
    assert (await get(client, url))[:2] == (200, "HIT")  # refreshed
    clock.now += 10 + 30  # past both windows: a plain miss
    assert (await get(client, url))[:2] == (200, "MISS")


async def test_admission_queues_then_refuses_with_retry_after(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache([], upstream={"max_connections": 2, "queue_timeout": "300ms"})
    held = [asyncio.create_task(get(client, proxy.url / f"gated/photo/{i}")) for i in range(2)]
    await until_stats(proxy, "upstream", "in_flight", 2)
    waiting = asyncio.create_task(client.get(proxy.url / "gated/photo/3"))
    await until_stats(proxy, "upstream", "queued", 1)
    async with asyncio.timeout(10):
        r = await waiting
    assert r.status == 503
    assert r.headers["Retry-After"] == "1"
    assert "upstream busy" in await r.text()
    stats = proxy.runtime.snapshot()["upstream"]
    assert stats["rejected"] == 1 and stats["queued"] == 0 and stats["in_flight"] == 2  # type: ignore[index]
    upstream.app[GATE].set()
    assert [s for s, _, _ in await asyncio.gather(*held)] == [200, 200]
    assert upstream.app[HITS]["GET /gated/photo/3"] == 0  # never reached the app


async def test_hits_and_coalesced_waiters_never_wait_for_a_slot(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    routes = [{"name": "gated", "match": "/gated/photo/{id}", "ttl": "5m"}]
    proxy = await sidecache(routes, upstream={"max_connections": 1, "queue_timeout": "5s"})
    upstream.app[GATE].set()
    assert (await get(client, proxy.url / "gated/photo/1"))[:2] == (200, "MISS")
    upstream.app[GATE].clear()
    # One cold fill holds the only slot; nine clients wait for that fill.
    cold = [asyncio.create_task(get(client, proxy.url / "gated/photo/2")) for _ in range(10)]
    await until_stats(proxy, "upstream", "coalesced", 9)
    assert proxy.runtime.snapshot()["upstream"]["queued"] == 0  # type: ignore[index]
    # A hit is served while the slot is taken.
    async with asyncio.timeout(2):
        assert (await get(client, proxy.url / "gated/photo/1"))[:2] == (200, "HIT")
    upstream.app[GATE].set()
    assert all(s == 200 for s, _, _ in await asyncio.gather(*cold))
    assert upstream.app[HITS]["GET /gated/photo/2"] == 1


async def test_a_slow_request_head_is_cut_off(sidecache: Factory) -> None:
    proxy = await sidecache(server={"header_timeout": "300ms"})
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.url.port)
    writer.write(b"GET /api/photo/1 HTTP/1.1\r\nHost: x\r\n")  # the head never ends
    await writer.drain()
    async with asyncio.timeout(10):
        assert await reader.read() == b""  # closed by the proxy
    writer.close()


async def test_an_idle_keep_alive_connection_is_closed(sidecache: Factory) -> None:
    proxy = await sidecache(server={"keepalive_timeout": "300ms"})
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.url.port)
    writer.write(b"GET /api/photo/1 HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    async with asyncio.timeout(10):
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        await reader.readexactly(1000)
        assert await reader.read() == b""  # then idle: closed
    writer.close()


async def test_request_bodies_over_the_limit_get_413_without_being_read(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache([], server={"max_body_bytes": "1KiB"})
    async with client.post(proxy.url / "echo", data=b"x" * 5000) as r:
        assert r.status == 413
    assert upstream.app[HITS]["POST /echo"] == 0

    async def chunks() -> object:
        for _ in range(10):
            yield b"y" * 500

    async with client.post(proxy.url / "echo", data=chunks()) as r:
        assert r.status == 413
    async with client.post(proxy.url / "echo", data=b"z" * 1024) as r:
        assert r.status == 200  # exactly the limit is allowed


async def test_a_client_leaving_mid_download_releases_its_upstream_slot(
    sidecache: Factory, upstream: TestServer
) -> None:
    proxy = await sidecache([])
    async with aiohttp.ClientSession() as leaving:
        r = await leaving.get(proxy.url.with_path("/files/1").with_query(size=str(50_000_000)))
        assert r.status == 200
        await r.content.readexactly(100_000)
        r.close()  # gone, mid-body
    await until_stats(proxy, "upstream", "in_flight", 0)
    assert proxy.runtime.snapshot()["upstream"]["errors"] == 0  # type: ignore[index]


async def test_hundreds_of_concurrent_clients(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    """300 clients at once on 10 cold objects: 10 upstream requests, 300 good answers."""
    routes = [{"name": "gated", "match": "/gated/photo/{id}", "ttl": "5m"}]
    proxy = await sidecache(routes)
    keys = [f"gated/photo/{i}" for i in range(10)]
    connector = aiohttp.TCPConnector(limit=300)
    async with aiohttp.ClientSession(connector=connector) as crowd:

        async def one(i: int) -> tuple[int, bytes, str]:
            async with crowd.get(proxy.url / keys[i % 10]) as r:
                return r.status, await r.read(), keys[i % 10]

        tasks = [asyncio.create_task(one(i)) for i in range(300)]
        await until_stats(proxy, "upstream", "coalesced", 290)
        upstream.app[GATE].set()
        async with asyncio.timeout(30):
            results = await asyncio.gather(*tasks)
    assert all(s == 200 and body == photo_body(k.rsplit("/", 1)[1], 1000) for s, body, k in results)
    assert upstream.app[HITS]["total"] == 10
    stats = proxy.runtime.snapshot()
    assert stats["cache"]["hits"] == 290 and stats["cache"]["misses"] == 10  # type: ignore[index]
    assert stats["upstream"]["requests"] == 10 and stats["upstream"]["in_flight"] == 0  # type: ignore[index]


async def test_a_cache_miss_refused_for_want_of_a_slot_gets_retry_after(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    """The fill's leader and a client coalesced onto it are both told when to retry."""
    proxy = await sidecache(upstream={"max_connections": 1, "queue_timeout": "2s"})
    held = asyncio.create_task(get(client, proxy.url / "gated/photo/9"))  # takes the only slot
    await until_stats(proxy, "upstream", "in_flight", 1)
    leader = asyncio.create_task(client.get(proxy.url / "api/photo/1"))
    await until_stats(proxy, "upstream", "queued", 1)  # the fill waits for a slot
    follower = asyncio.create_task(client.get(proxy.url / "api/photo/1"))
    await until_stats(proxy, "upstream", "coalesced", 1)  # waits for that fill
    async with asyncio.timeout(10):
        for waiting in (leader, follower):
            r = await waiting
            assert r.status == 503
            assert r.headers["Retry-After"] == "1"
            assert r.headers["X-Cache"] == "MISS"
            assert "upstream busy" in await r.text()
    assert proxy.runtime.snapshot()["upstream"]["rejected"] == 1  # type: ignore[index]
    upstream.app[GATE].set()
    assert (await held)[0] == 200
    assert upstream.app[HITS]["GET /api/photo/1"] == 0


async def test_readyz_answers_200_while_every_upstream_slot_is_busy(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    """A busy app that answers is ready: readiness takes no slot and no pooled connection."""
    proxy = await sidecache([], upstream={"max_connections": 2, "queue_timeout": "30s"})
    held = [asyncio.create_task(get(client, proxy.url / f"gated/photo/{i}")) for i in range(3)]
    await until_stats(proxy, "upstream", "in_flight", 2)
    await until_stats(proxy, "upstream", "queued", 1)
    async with asyncio.timeout(10):
        while upstream.app[HITS]["total"] != 2:  # noqa: ASYNC110 - both slow requests are at the app
            await asyncio.sleep(0)
    async with client.get(proxy.control / "readyz") as r:
        assert r.status == 200, await r.text()
    upstream.app[GATE].set()
    assert [s for s, _, _ in await asyncio.gather(*held)] == [200, 200, 200]


async def test_readyz_answers_503_when_the_app_is_down(
    sidecache: Factory, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache(upstream_url=f"http://127.0.0.1:{free_port_that_refuses()}")
    async with client.get(proxy.control / "readyz") as r:
        assert r.status == 503
        assert "upstream not answering" in await r.text()


async def test_clients_of_a_fill_cancelled_at_shutdown_get_503(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache()
    url = proxy.url / "gated/photo/9"
    leader = asyncio.create_task(client.get(url))
    await upstream.app[ARRIVED].wait()  # the fill waits at the app for its head
    follower = asyncio.create_task(client.get(url))
    await until_stats(proxy, "upstream", "coalesced", 1)
    await proxy.runtime.coalescer.close(0)  # what a stop does once the grace is over
    for task in (leader, follower):
        async with await task as r:
            assert r.status == 503
            assert await r.text() == "503 shutting down\n"
    upstream.app[GATE].set()
