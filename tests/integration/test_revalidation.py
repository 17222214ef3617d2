"""Validation instead of refetching (RFC 9111 section 4.3): a stale entry with the
app's validators is refreshed by a conditional request, and a 304 keeps its body;
a client's own conditions on a miss are the app's to answer."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.integration.conftest import Clock, Factory, Running
from tests.integration.upstream_app import (
    ARRIVED,
    FAIL_WITH,
    GATE,
    HITS,
    LAST,
    TAGS,
    VALIDATED_LM,
    photo_body,
)

SIZE = 2_500_000
ROUTES = [
    {"name": "v", "match": "/validated/{id}", "ttl": "10s", "stale_if_error": "1h"},
    {
        "name": "swr",
        "match": "/swr/validated/{id}",
        "ttl": "10s",
        "stale_while_revalidate": "1m",
        "stale_if_error": "1h",
    },
]


class Reply:
    def __init__(self, status: int, headers: aiohttp.typedefs.LooseHeaders, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def x_cache(self) -> str:
        return self.headers["X-Cache"]  # type: ignore[index,no-any-return]

    @property
    def cache_status(self) -> str:
        return self.headers["Cache-Status"]  # type: ignore[index,no-any-return]


async def get(client: aiohttp.ClientSession, url: object, **headers: str) -> Reply:
    async with client.get(url, headers=headers) as r:  # type: ignore[arg-type]
        return Reply(r.status, r.headers, await r.read())


def sent(upstream: TestServer) -> dict[str, str]:
    """The conditional headers of the app's last request."""
    last: list[list[str]] = upstream.app[LAST]["headers"]  # type: ignore[assignment]
    return {n: v for n, v in last if n.lower().startswith("if-")}


def figures(proxy: Running) -> tuple[int, int, int]:
    up = proxy.runtime.snapshot()["upstream"]
    return up["requests"], up["revalidations"], up["revalidated"]  # type: ignore[index]


async def test_a_304_refreshes_the_entry_and_keeps_its_body(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    clock = Clock()
    proxy = await sidecache(ROUTES, clock=clock)
    url = proxy.url.with_path("/validated/1").with_query(size=SIZE, lm="")
    body = photo_body('1"r1"', SIZE)
    first = await get(client, url)
    assert (first.status, first.x_cache, first.body) == (200, "MISS", body)
    assert first.headers["X-Revision"] == "1"
    clock.now += 11  # stale
    again = await get(client, url)
    assert (again.status, again.x_cache, again.body) == (200, "HIT", body)
    assert again.cache_status == "sidecache; fwd=stale; fwd-status=304; ttl=10"
    # The app was asked with its own validators, and answered 304: no body.
    assert sent(upstream) == {"If-None-Match": '"r1"', "If-Modified-Since": VALIDATED_LM}
    assert upstream.app[HITS]["304 1"] == 1
    # The 304's headers replace the stored ones (RFC 9111 section 3.2).
    assert again.headers["X-Revision"] == "2"
    assert again.headers["ETag"] == '"r1"'
    # Fresh again for a ttl counted from the 304.
    clock.now += 9
    third = await get(client, url)
    assert (third.x_cache, third.body, third.headers["X-Revision"]) == ("HIT", body, "2")
    assert third.cache_status == "sidecache; hit; ttl=1"
    assert upstream.app[HITS]["validated 1"] == 2
    assert figures(proxy) == (2, 1, 1)
    cache = proxy.runtime.snapshot()["cache"]
    assert (cache["hits"], cache["misses"]) == (2, 1)  # type: ignore[index]
    async with client.get(proxy.control / "metrics") as r:
        text = await r.text()
    assert 'sidecache_revalidations_total{outcome="not_modified"} 1.0' in text


async def test_a_200_to_the_revalidation_replaces_the_entry(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    clock = Clock()
    proxy = await sidecache(ROUTES, clock=clock)
    url = proxy.url / "validated/2"
    assert (await get(client, url)).body == photo_body('2"r1"', 1000)
    upstream.app[TAGS]["2"] = '"r2"'  # the photo changed
    clock.now += 11
    replaced = await get(client, url)
    assert (replaced.status, replaced.x_cache) == (200, "MISS")
    assert replaced.cache_status == "sidecache; fwd=stale; fwd-status=200"
    assert replaced.body == photo_body('2"r2"', 1000)
    assert sent(upstream) == {"If-None-Match": '"r1"'}
    after = await get(client, url)
    assert (after.x_cache, after.body, after.headers["ETag"]) == (
        "HIT",
        photo_body('2"r2"', 1000),
        '"r2"',
    )
    assert figures(proxy) == (2, 1, 0)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"noetag": "", "lm": ""}, {"If-Modified-Since": VALIDATED_LM}),
        # No validator of the app's: the ETag sidecache computed is never sent.
        ({"noetag": ""}, {}),
    ],
)
async def test_only_the_apps_own_validators_are_sent(
    sidecache: Factory,
    upstream: TestServer,
    client: aiohttp.ClientSession,
    query: dict[str, str],
    expected: dict[str, str],
) -> None:
    clock = Clock()
    proxy = await sidecache(ROUTES, clock=clock)
    url = proxy.url.with_path("/validated/3").with_query(query)
    await get(client, url)
    hit = await get(client, url)
    assert hit.x_cache == "HIT" and hit.headers["ETag"].startswith('"sc-')  # computed
    clock.now += 11
    again = await get(client, url)
    assert sent(upstream) == expected
    revalidated = 1 if expected else 0
    assert upstream.app[HITS]["304 3"] == revalidated
    assert again.x_cache == ("HIT" if revalidated else "MISS")
    assert figures(proxy) == (2, revalidated, revalidated)
    assert upstream.app[HITS]["validated 3"] == 2


async def test_a_background_refresh_revalidates(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    clock = Clock()
    proxy = await sidecache(ROUTES, clock=clock)
    url = proxy.url.with_path("/swr/validated/4").with_query(size=SIZE)
    body = photo_body('4"r1"', SIZE)
    assert (await get(client, url)).x_cache == "MISS"
    clock.now += 11
    stale = await get(client, url)
    assert (stale.x_cache, stale.body) == ("STALE", body)
    assert "detail=revalidating" in stale.cache_status
    async with asyncio.timeout(10):
        for fill in proxy.runtime.coalescer.in_progress():
            await fill.result
    assert upstream.app[HITS]["304 4"] == 1
    assert sent(upstream) == {"If-None-Match": '"r1"'}
    fresh = await get(client, url)
    assert (fresh.x_cache, fresh.body, fresh.headers["X-Revision"]) == ("HIT", body, "2")
    assert fresh.cache_status == "sidecache; hit; ttl=10"
    assert figures(proxy) == (2, 1, 1)


async def test_clients_that_wait_on_a_revalidation_share_the_refreshed_entry(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    clock = Clock()
    proxy = await sidecache(ROUTES, clock=clock)
    url = proxy.url.with_path("/validated/5").with_query(gated="", size=SIZE)
    body = photo_body('5"r1"', SIZE)
    upstream.app[GATE].set()
    assert (await get(client, url)).x_cache == "MISS"
    upstream.app[GATE].clear()
    upstream.app[ARRIVED].clear()
    clock.now += 11
    clients = 10
    tasks = [asyncio.create_task(get(client, url)) for _ in range(clients)]
    async with asyncio.timeout(10):
        await upstream.app[ARRIVED].wait()
        (fill,) = proxy.runtime.coalescer.in_progress()
        await fill.wait_for_waiters(clients - 1)
    upstream.app[GATE].set()
    replies = await asyncio.gather(*tasks)
    assert all((r.status, r.x_cache, r.body) == (200, "HIT", body) for r in replies)
    assert sorted(r.cache_status for r in replies) == [
        "sidecache; fwd=stale; fwd-status=304; ttl=10",  # the client that asked
        *["sidecache; fwd=stale; fwd-status=304; ttl=10; detail=coalesced"] * (clients - 1),
    ]
    assert upstream.app[HITS]["validated 5"] == 2  # the fill, then one revalidation
    assert figures(proxy) == (2, 1, 1)


@pytest.mark.parametrize("failure", ["503", "gone"])
async def test_a_failed_revalidation_serves_the_stale_entry(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession, failure: str
) -> None:
    clock = Clock()
    proxy = await sidecache(ROUTES, clock=clock)
    url = proxy.url / "validated/6"
    assert (await get(client, url)).x_cache == "MISS"
    if failure == "503":
        upstream.app[FAIL_WITH].append(503)
    else:
        await upstream.close()
    clock.now += 11
    stale = await get(client, url)
    assert (stale.status, stale.x_cache, stale.body) == (200, "STALE", photo_body('6"r1"', 1000))
    why = "upstream-503" if failure == "503" else "upstream-unavailable"
    assert stale.cache_status.endswith(f"detail={why}")
    _, revalidations, revalidated = figures(proxy)
    assert (revalidations, revalidated) == (1, 0)


@pytest.mark.parametrize(
    "conditions",
    [{"If-None-Match": '"r1"'}, {"If-Modified-Since": VALIDATED_LM}],
)
async def test_a_clients_conditional_miss_goes_to_the_app_and_its_304_is_not_stored(
    sidecache: Factory,
    upstream: TestServer,
    client: aiohttp.ClientSession,
    conditions: dict[str, str],
) -> None:
    proxy = await sidecache(ROUTES)
    url = proxy.url.with_path("/validated/7").with_query(lm="")
    not_modified = await get(client, url, **conditions)
    assert (not_modified.status, not_modified.x_cache, not_modified.body) == (304, "MISS", b"")
    assert not_modified.cache_status == "sidecache; fwd=uri-miss; fwd-status=304"
    assert sent(upstream) == conditions
    assert proxy.runtime.store.figures().entries == 0
    # The next client gets the whole photo, fetched and stored.
    whole = await get(client, url)
    assert (whole.status, whole.x_cache, whole.body) == (200, "MISS", photo_body('7"r1"', 1000))
    assert sent(upstream) == {}
    assert (await get(client, url)).x_cache == "HIT"
    assert upstream.app[HITS]["validated 7"] == 2
    assert figures(proxy) == (2, 0, 0)  # the client's conditions, not a revalidation


async def test_a_clients_conditional_miss_the_app_answers_in_full_is_stored(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache(ROUTES)
    url = proxy.url / "validated/8"
    changed = await get(client, url, **{"If-None-Match": '"r0"'})
    assert (changed.status, changed.x_cache, changed.body) == (
        200,
        "MISS",
        photo_body('8"r1"', 1000),
    )
    assert (await get(client, url)).x_cache == "HIT"
    assert upstream.app[HITS]["validated 8"] == 1
