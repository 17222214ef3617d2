"""Large, unknown-length and broken upstream bodies; upstream down and slow."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.integration.conftest import Factory, free_port_that_refuses
from tests.integration.upstream_app import GATE, HITS, photo_body

SMALL_LIMIT = {"max_bytes": "1MiB", "max_object_bytes": "64KiB"}


@pytest.mark.parametrize("chunked", [False, True])
async def test_objects_over_max_object_bytes_stream_through_and_are_not_stored(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession, chunked: bool
) -> None:
    proxy = await sidecache(cache=SMALL_LIMIT)
    query = {"size": str(300_000)} | ({"chunked": "1"} if chunked else {})
    url = proxy.url.with_path("/api/photo/1").with_query(query)
    for _ in range(2):
        async with client.get(url) as r:
            assert r.status == 200
            assert r.headers["X-Cache"] == "MISS"
            assert ("Content-Length" in r.headers) is not chunked
            assert await r.read() == photo_body("1", 300_000)
    assert upstream.app[HITS][f"GET {url.path_qs}"] == 2
    assert proxy.runtime.store.figures().entries == 0


async def test_unknown_length_within_the_limit_is_stored(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache(cache=SMALL_LIMIT)
    url = proxy.url.with_path("/api/photo/2").with_query(size="20000", chunked="1")
    async with client.get(url) as r:
        assert r.headers.get("Transfer-Encoding") == "chunked"
        assert await r.read() == photo_body("2", 20_000)
    async with client.get(url) as r:
        assert r.headers["X-Cache"] == "HIT"
        assert r.headers["Content-Length"] == "20000"
        assert await r.read() == photo_body("2", 20_000)
    assert upstream.app[HITS][f"GET {url.path_qs}"] == 1


@pytest.mark.parametrize("chunked", [False, True])
async def test_truncated_upstream_body_aborts_the_client_and_is_not_stored(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession, chunked: bool
) -> None:
    routes = [{"name": "t", "match": "/truncated", "ttl": 60}]
    proxy = await sidecache(routes)
    url = proxy.url.with_path("/truncated").with_query({"chunked": "1"} if chunked else {})
    for _ in range(2):
        async with client.get(url) as r:
            assert r.headers["X-Cache"] == "MISS"
            with pytest.raises(aiohttp.ClientPayloadError):
                await r.read()
    assert upstream.app[HITS][f"GET {url.path_qs}"] == 2
    assert proxy.runtime.store.figures().entries == 0


async def test_truncated_pass_through_body_aborts_the_client(
    sidecache: Factory, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache([])
    async with client.get(proxy.url / "truncated") as r:
        assert r.headers["X-Cache"] == "BYPASS"
        with pytest.raises(aiohttp.ClientPayloadError):
            await r.read()


@pytest.mark.parametrize("path", ["/api/photo/1", "/files/1"])
async def test_upstream_down_is_a_quick_502(
    sidecache: Factory, client: aiohttp.ClientSession, path: str
) -> None:
    proxy = await sidecache(upstream_url=f"http://127.0.0.1:{free_port_that_refuses()}")
    started = time.monotonic()
    async with client.get(proxy.url.with_path(path)) as r:
        assert r.status == 502
        assert "upstream unavailable" in await r.text()
    assert time.monotonic() - started < 5  # generous: a refused connect is immediate
    stats = proxy.runtime.snapshot()
    assert stats["upstream"]["errors"] == 1  # type: ignore[index]


@pytest.mark.parametrize("routes", [[{"name": "h", "match": "/hang", "ttl": 60}], []])
async def test_upstream_timeout_is_a_504(
    sidecache: Factory, client: aiohttp.ClientSession, routes: list[dict[str, object]]
) -> None:
    proxy = await sidecache(routes, upstream={"timeout": "300ms"})
    async with client.get(proxy.url / "hang") as r:
        assert r.status == 504
        assert "timed out" in await r.text()


@pytest.mark.parametrize("cached", [True, False])
async def test_bodies_reach_the_client_while_the_upstream_is_still_sending(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession, cached: bool
) -> None:
    routes = [{"name": "s", "match": "/stream/{id}", "ttl": 60}] if cached else []
    proxy = await sidecache(routes)
    async with client.get(proxy.url / "stream/1") as r:
        assert r.headers["X-Cache"] == ("MISS" if cached else "BYPASS")
        # The upstream holds the rest back until the gate opens: this first
        # chunk can only arrive if the proxy forwards as it reads.
        async with asyncio.timeout(10):
            assert await r.content.readexactly(12) == b"first-chunk;"
        upstream.app[GATE].set()
        assert await r.read() == b"the-rest"
    async with client.get(proxy.url / "stream/1") as r:
        assert r.headers["X-Cache"] == ("HIT" if cached else "BYPASS")
        assert await r.read() == b"first-chunk;the-rest"
