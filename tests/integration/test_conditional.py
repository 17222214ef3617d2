"""Preconditions on a miss (RFC 9110 section 13.2.2): ``If-Match`` and
``If-Unmodified-Since`` are evaluated against the response the fill stores,
and the entry still serves everybody else."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.integration.conftest import Factory
from tests.integration.upstream_app import ARRIVED, GATE, HITS, LAST, photo_body

LM = "Tue, 24 Nov 2026 10:00:00 GMT"


@pytest.mark.parametrize(
    ("query", "headers", "status"),
    [
        ({"etag": '"v1"'}, {"If-Match": '"v2"'}, 412),
        ({"etag": '"v1"'}, {"If-Match": '"v2"', "If-None-Match": '"v2"'}, 412),
        ({"last-modified": LM}, {"If-Unmodified-Since": "Tue, 24 Nov 2026 09:00:00 GMT"}, 412),
        ({}, {"If-Match": '"not-the-computed-one"'}, 412),
        ({"etag": '"v1"'}, {"If-Match": '"v1"'}, 200),
        ({"last-modified": LM}, {"If-Unmodified-Since": LM}, 200),
        ({}, {"If-Match": "*"}, 200),
    ],
)
async def test_a_miss_evaluates_preconditions_against_the_stored_response(
    sidecache: Factory,
    upstream: TestServer,
    client: aiohttp.ClientSession,
    query: dict[str, str],
    headers: dict[str, str],
    status: int,
) -> None:
    proxy = await sidecache()
    url = proxy.url.with_path("/api/photo/1").with_query(query)
    async with client.get(url, headers=headers) as r:
        assert (r.status, r.headers["X-Cache"]) == (status, "MISS")
        assert (await r.read() == photo_body("1", 1000)) is (status == 200)
        assert "stored" in r.headers["Cache-Status"]
    # The fill was made without the conditions: its entry serves the next client.
    async with client.get(url) as r:
        assert (r.status, r.headers["X-Cache"]) == (200, "HIT")
        assert await r.read() == photo_body("1", 1000)
    assert upstream.app[HITS]["total"] == 1
    assert not any(n.lower().startswith("if-") for n, _ in upstream.app[LAST]["headers"])  # type: ignore[attr-defined]


async def test_a_waiter_with_a_failing_precondition_gets_412(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache()
    url = proxy.url.with_path("/gated/photo/1").with_query(etag='"v1"')

    async def get(**headers: str) -> tuple[int, str, bytes]:
        async with client.get(url, headers=headers) as r:
            return r.status, r.headers["X-Cache"], await r.read()

    leader = asyncio.create_task(get())
    async with asyncio.timeout(10):
        await upstream.app[ARRIVED].wait()
    waiter = asyncio.create_task(get(**{"If-Match": '"v2"'}))
    async with asyncio.timeout(10):
        (fill,) = proxy.runtime.coalescer.in_progress()
        await fill.wait_for_waiters(1)
    upstream.app[GATE].set()
    assert await leader == (200, "MISS", photo_body("1", 1000))
    assert await waiter == (412, "HIT", b"")
    assert upstream.app[HITS]["total"] == 1


async def test_an_unstorable_answer_is_asked_for_again_with_the_conditions(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache()
    url = proxy.url.with_path("/api/photo/1").with_query({"cache-control": "no-store"})
    async with client.get(url, headers={"If-Match": '"v2"'}) as r:
        # The app decides (this one ignores If-Match): its own answer, unchanged.
        assert (r.status, r.headers["X-Cache"]) == (200, "MISS")
        assert await r.read() == photo_body("1", 1000)
    assert upstream.app[HITS]["total"] == 2
    assert ["If-Match", '"v2"'] in upstream.app[LAST]["headers"]  # type: ignore[operator]
