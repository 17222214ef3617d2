"""Fills in progress against purges: nothing a purge removed is served afterwards."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.integration.conftest import Factory, Running
from tests.integration.upstream_app import ARRIVED, GATE, HITS

ROUTES = [{"name": "versioned", "match": "/versioned/{id}", "ttl": "5m"}]


async def _waiters(proxy: Running, count: int) -> None:
    async with asyncio.timeout(10):
        (fill,) = proxy.runtime.coalescer.in_progress()
        await fill.wait_for_waiters(count)


async def _purge(client: aiohttp.ClientSession, proxy: Running, how: str) -> None:
    if how == "delete":  # a successful unsafe request drops its path, like a purge
        async with client.delete(proxy.url / "versioned/1") as r:
            assert r.status == 204
        return
    body = {"path": {"path": "/versioned/1"}, "route": {"route": "versioned"}}.get(
        how, {"all": True}
    )
    async with client.post(proxy.control / "purge", json=body) as r:
        assert r.status == 200


@pytest.mark.parametrize("how", ["path", "route", "all", "delete"])
async def test_a_request_after_a_purge_does_not_join_the_fill_that_began_before_it(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession, how: str
) -> None:
    proxy = await sidecache(ROUTES)
    url = proxy.url / "versioned/1"

    async def get() -> tuple[str, str, bytes]:
        async with client.get(url) as r:
            assert r.status == 200
            return r.headers["X-Cache"], r.headers["Cache-Status"], await r.read()

    leader = asyncio.create_task(get())
    async with asyncio.timeout(10):
        await upstream.app[ARRIVED].wait()  # the first fill is held open upstream
    early = asyncio.create_task(get())
    await _waiters(proxy, 1)
    await _purge(client, proxy, how)

    # Arrived after the purge: a new upstream request, the new body. (Joining the
    # old fill would wait for the gate, still closed.)
    async with asyncio.timeout(10):
        cache, _, body = await get()
    assert (cache, body) == ("MISS", b"/versioned/1 version 2")

    upstream.app[GATE].set()
    async with asyncio.timeout(10):
        cache, _, body = await leader
        assert (cache, body) == ("MISS", b"/versioned/1 version 1")
        cache, status, body = await early  # already waiting: it may have the old fill
    assert (cache, body) == ("HIT", b"/versioned/1 version 1")
    assert "detail=coalesced" in status
    # The old fill, finished last, did not overwrite what the new one stored.
    cache, _, body = await get()
    assert (cache, body) == ("HIT", b"/versioned/1 version 2")
    assert upstream.app[HITS]["GET /versioned/1"] == 2
    assert len(proxy.runtime.coalescer) == 0


@pytest.mark.parametrize(
    ("query", "stored"),
    [
        ({}, True),
        # Chunked, so its size is learnt only as it streams: over max_object_bytes.
        ({"chunked": "1", "size": "300000"}, False),
    ],
)
async def test_a_miss_does_not_claim_stored_before_the_body_is_known(
    sidecache: Factory,
    client: aiohttp.ClientSession,
    query: dict[str, str],
    stored: bool,
) -> None:
    proxy = await sidecache(cache={"max_object_bytes": "100KiB"})
    url = (proxy.url / "api/photo/5").with_query(query)
    async with client.get(url) as r:
        assert r.headers["X-Cache"] == "MISS"
        # RFC 9211 "stored" means stored: unknown while the body streams.
        assert r.headers["Cache-Status"] == "sidecache; fwd=uri-miss; fwd-status=200"
        await r.read()
    async with client.get(url) as r:
        assert r.headers["X-Cache"] == ("HIT" if stored else "MISS")
        await r.read()
