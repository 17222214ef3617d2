"""Fault injection against a real upstream process that breaks HTTP on purpose."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.integration.conftest import Clock, Factory, FaultUpstream

ROUTES = [{"name": "photo", "match": "/photo/{id}", "ttl": "10s", "stale_if_error": "1m"}]
FAST = {"read_timeout": "300ms", "timeout": "2s"}
CUT_SHORT = ["close-mid-body", "short-length", "stall", "chunked-cut"]


async def fetch(client: aiohttp.ClientSession, url: str) -> tuple[int, str, bytes | None]:
    """(status, X-Cache, body or None if the body was aborted)."""
    async with client.get(url) as r:
        try:
            body: bytes | None = await r.read()
        except aiohttp.ClientPayloadError:
            body = None
        return r.status, r.headers.get("X-Cache", ""), body


@pytest.mark.parametrize("mode", CUT_SHORT)
async def test_a_body_cut_short_aborts_the_client_is_not_stored_and_is_retried(
    sidecache: Factory,
    fault_upstream: FaultUpstream,
    client: aiohttp.ClientSession,
    mode: str,
) -> None:
    proxy = await sidecache(ROUTES, upstream_url=fault_upstream.url, upstream=FAST)
    url = f"{proxy.url}/photo/1"
    await fault_upstream.mode(mode)
    for _ in range(2):
        status, x_cache, body = await fetch(client, url)
        assert (status, x_cache, body) == (200, "MISS", None)  # aborted, not short
    assert await fault_upstream.count() == 2  # each request tried again
    assert proxy.runtime.store.figures().entries == 0
    await fault_upstream.mode("ok")
    assert (await fetch(client, url))[:2] == (200, "MISS")
    status, x_cache, body = await fetch(client, url)
    assert (status, x_cache, len(body or b"")) == (200, "HIT", 100_000)


@pytest.mark.parametrize("mode", CUT_SHORT)
async def test_waiters_on_a_broken_fill_get_an_error_or_the_stale_copy(
    sidecache: Factory,
    fault_upstream: FaultUpstream,
    client: aiohttp.ClientSession,
    mode: str,
) -> None:
    clock = Clock()
    proxy = await sidecache(ROUTES, upstream_url=fault_upstream.url, upstream=FAST, clock=clock)
    url = f"{proxy.url}/photo/2"
    cold = f"{proxy.url}/photo/3"
    assert (await fetch(client, url))[:2] == (200, "MISS")
    clock.now += 11  # expired, within stale_if_error
    await fault_upstream.mode(mode)
    async with asyncio.timeout(20):
        stale_key = await asyncio.gather(*(fetch(client, url) for _ in range(5)))
        cold_key = await asyncio.gather(*(fetch(client, cold) for _ in range(5)))
    # A client whose request went upstream was already receiving the body: it
    # sees the abort. Clients that waited for that fill get the stale copy, or,
    # with nothing stored, the fill's error. Nobody hangs, nobody gets a short body.
    follower_status = 504 if mode in ("stall", "short-length") else 502
    leaders = 0
    for status, x_cache, body in stale_key:
        if x_cache == "MISS":
            assert (status, body) == (200, None)
            leaders += 1
        else:
            assert (status, x_cache, len(body or b"")) == (200, "STALE", 100_000)
    for status, x_cache, body in cold_key:
        assert x_cache == "MISS"
        if body is None:
            assert status == 200
            leaders += 1
        else:
            assert status == follower_status
    assert await fault_upstream.count() == 1 + leaders  # one fill per leader, none per waiter
    assert len(proxy.runtime.coalescer) == 0


@pytest.mark.parametrize(("mode", "status"), [("slow-head", 504), ("error", 500)])
async def test_no_answer_or_an_error_answer_uses_the_stale_copy_else_fails_cleanly(
    sidecache: Factory,
    fault_upstream: FaultUpstream,
    client: aiohttp.ClientSession,
    mode: str,
    status: int,
) -> None:
    clock = Clock()
    proxy = await sidecache(
        ROUTES, upstream_url=fault_upstream.url, upstream={"timeout": "500ms"}, clock=clock
    )
    assert (await fetch(client, f"{proxy.url}/photo/1"))[:2] == (200, "MISS")
    await fault_upstream.mode(mode)
    clock.now += 11
    status_, x_cache, body = await fetch(client, f"{proxy.url}/photo/1")
    assert (status_, x_cache, len(body or b"")) == (200, "STALE", 100_000)
    assert (await fetch(client, f"{proxy.url}/photo/9"))[0] == status
    clock.now += 60
    assert (await fetch(client, f"{proxy.url}/photo/1"))[0] == status


async def test_an_upstream_that_dies_gives_stale_then_502_and_recovery_needs_no_restart(
    sidecache: Factory, fault_upstream: FaultUpstream, client: aiohttp.ClientSession
) -> None:
    clock = Clock()
    proxy = await sidecache(ROUTES, upstream_url=fault_upstream.url, clock=clock)
    assert (await fetch(client, f"{proxy.url}/photo/1"))[:2] == (200, "MISS")
    await fault_upstream.kill()
    clock.now += 11
    assert (await fetch(client, f"{proxy.url}/photo/1"))[:2] == (200, "STALE")
    assert (await fetch(client, f"{proxy.url}/photo/2"))[:2] == (502, "MISS")
    async with client.get(f"{proxy.control}/readyz") as r:
        assert r.status == 503
