"""Caching behaviour end to end: real upstream, real proxy, real client."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp.test_utils import TestServer

from tests.integration.conftest import Factory
from tests.integration.upstream_app import ARRIVED, GATE, HITS, photo_body


def hits(upstream: TestServer, key: str) -> int:
    return upstream.app[HITS][key]


async def test_miss_then_hit_serves_the_stored_body(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache()
    async with client.get(proxy.url / "api/photo/7") as first:
        assert first.status == 200
        assert first.headers["X-Cache"] == "MISS"
        assert first.headers["Cache-Status"] == "sidecache; fwd=uri-miss; fwd-status=200"
        assert await first.read() == photo_body("7", 1000)
    async with client.get(proxy.url / "api/photo/7") as second:
        assert second.status == 200
        assert second.headers["X-Cache"] == "HIT"
        assert second.headers["Cache-Status"].startswith("sidecache; hit")
        assert second.headers["Content-Type"] == "image/jpeg"
        assert int(second.headers["Age"]) >= 0
        assert second.headers["ETag"].startswith('"')
        assert "1.1 sidecache" in second.headers["Via"]
        assert await second.read() == photo_body("7", 1000)
    assert hits(upstream, "GET /api/photo/7") == 1


async def test_if_none_match_is_answered_304_from_the_cache(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache()
    async with client.get(proxy.url / "api/photo/1") as r:
        await r.read()
    async with client.get(proxy.url / "api/photo/1") as r:
        etag = r.headers["ETag"]
    async with client.get(proxy.url / "api/photo/1", headers={"If-None-Match": etag}) as r:
        assert r.status == 304
        assert r.headers["X-Cache"] == "HIT"
        assert r.headers["ETag"] == etag
        assert await r.read() == b""
    async with client.get(proxy.url / "api/photo/1", headers={"If-None-Match": '"other"'}) as r:
        assert r.status == 200
        assert len(await r.read()) == 1000
    assert hits(upstream, "GET /api/photo/1") == 1


async def test_upstream_etag_is_kept(sidecache: Factory, client: aiohttp.ClientSession) -> None:
    proxy = await sidecache()
    url = proxy.url.with_path("/api/photo/2").with_query(etag='"v1"')
    for _ in range(2):
        async with client.get(url) as r:
            await r.read()
    assert r.headers["X-Cache"] == "HIT"
    assert r.headers["ETag"] == '"v1"'


async def test_head_is_answered_from_the_get_entry(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache()
    async with client.head(proxy.url / "api/photo/3") as r:
        assert r.status == 200
        assert r.headers["X-Cache"] == "MISS"
    async with client.get(proxy.url / "api/photo/3") as r:
        assert r.headers["X-Cache"] == "HIT"
        assert await r.read() == photo_body("3", 1000)
    async with client.head(proxy.url / "api/photo/3") as r:
        assert r.headers["X-Cache"] == "HIT"
        assert r.headers["Content-Length"] == "1000"
        assert await r.read() == b""
    assert hits(upstream, "GET /api/photo/3") == 1
    assert hits(upstream, "HEAD /api/photo/3") == 0


async def test_requests_matching_no_route_are_proxied_and_never_stored(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache()
    for _ in range(2):
        async with client.get(proxy.url / "files/9") as r:
            assert r.status == 200
            assert r.headers["X-Cache"] == "BYPASS"
            assert "fwd=bypass" in r.headers["Cache-Status"]
            assert await r.read() == photo_body("9", 1000)
    assert hits(upstream, "GET /files/9") == 2


async def test_statuses_outside_the_route_list_are_not_stored(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache([{"name": "photo", "match": "/api/photo/{id}", "statuses": [200]}])
    url = proxy.url.with_path("/api/photo/4").with_query(status="404")
    for _ in range(2):
        async with client.get(url) as r:
            assert r.status == 404
            assert r.headers["X-Cache"] == "MISS"
            assert "stored" not in r.headers["Cache-Status"]
    assert hits(upstream, "GET /api/photo/4?status=404") == 2


async def test_listed_statuses_are_stored(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    routes = [{"name": "photo", "match": "/api/photo/{id}", "ttl": 60, "statuses": [200, 404]}]
    proxy = await sidecache(routes)
    url = proxy.url.with_path("/api/photo/4").with_query(status="404")
    for _ in range(2):
        async with client.get(url) as r:
            assert r.status == 404
    assert r.headers["X-Cache"] == "HIT"
    assert hits(upstream, "GET /api/photo/4?status=404") == 1


async def test_responses_that_forbid_sharing_are_never_stored(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    routes = [
        {"name": "photo", "match": "/api/photo/{id}", "ttl": 60, "credentials": "shared"},
    ]
    proxy = await sidecache(routes)
    cases = {
        "set-cookie": "session=abc",
        "cache-control": "no-store",
        "vary": "*",
    }
    for name, value in cases.items():
        url = proxy.url.with_path("/api/photo/5").with_query({name: value})
        for _ in range(2):
            async with client.get(url) as r:
                assert r.status == 200
                assert r.headers["X-Cache"] == "MISS", name
                await r.read()
        assert hits(upstream, f"GET {url.path_qs}") == 2, name
    private = proxy.url.with_path("/api/photo/5").with_query({"cache-control": "private"})
    for _ in range(2):
        async with client.get(private) as r:
            assert r.headers["X-Cache"] == "MISS"


async def test_set_cookie_response_never_reaches_another_client(
    sidecache: Factory, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache()
    url = proxy.url.with_path("/api/photo/6").with_query({"set-cookie": "session=alice"})
    async with client.get(url) as r:
        assert r.headers.get("Set-Cookie") == "session=alice"
    async with client.get(url) as r:
        assert r.headers["X-Cache"] == "MISS"


async def test_client_cache_control_is_set_on_cacheable_responses(
    sidecache: Factory, client: aiohttp.ClientSession
) -> None:
    cc = "public, max-age=86400, immutable"
    routes = [{"name": "photo", "match": "/api/photo/{id}", "ttl": 60, "client_cache_control": cc}]
    proxy = await sidecache(routes)
    for expected in ("MISS", "HIT"):
        async with client.get(proxy.url / "api/photo/8") as r:
            assert r.headers["X-Cache"] == expected
            assert r.headers["Cache-Control"] == cc
    async with client.get(proxy.url / "files/8") as r:
        assert "Cache-Control" not in r.headers


async def test_content_types_restrict_what_is_stored(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    routes = [
        {"name": "photo", "match": "/api/photo/{id}", "ttl": 60, "content_types": ["image/*"]}
    ]
    proxy = await sidecache(routes)
    html = proxy.url.with_path("/api/photo/1").with_query(type="text/html")
    jpeg = proxy.url.with_path("/api/photo/1").with_query(type="image/jpeg; q=1")
    for url, second in ((html, "MISS"), (jpeg, "HIT")):
        for _ in range(2):
            async with client.get(url) as r:
                await r.read()
        assert r.headers["X-Cache"] == second


async def test_query_modes(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    routes = [
        {"name": "all", "match": "/api/photo/{id:1}", "ttl": 60},
        {"name": "ignore", "match": "/api/photo/{id:2}", "ttl": 60, "query": "ignore"},
        {"name": "some", "match": "/api/photo/{id:3}", "ttl": 60, "query": ["size"]},
    ]
    proxy = await sidecache(routes)

    async def get(path_qs: str) -> str:
        async with client.get(proxy.url.join(aiohttp.client.URL(path_qs))) as r:
            await r.read()
            return r.headers["X-Cache"]

    assert [await get("/api/photo/1?a=1"), await get("/api/photo/1?a=2")] == ["MISS", "MISS"]
    assert await get("/api/photo/1?a=1") == "HIT"
    # ignore: one entry, and the query is not forwarded (the key names what was fetched)
    assert [await get("/api/photo/2?a=1"), await get("/api/photo/2?b=2")] == ["MISS", "HIT"]
    assert hits(upstream, "GET /api/photo/2") == 1
    # a list: only the named parameters join the key and travel upstream
    assert await get("/api/photo/3?size=10&utm=x") == "MISS"
    assert await get("/api/photo/3?utm=y&size=10") == "HIT"
    assert await get("/api/photo/3?size=20") == "MISS"
    assert hits(upstream, "GET /api/photo/3?size=10") == 1


async def test_vary_headers_join_the_key(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    routes = [{"name": "photo", "match": "/api/photo/{id}", "ttl": 60, "vary": ["accept"]}]
    proxy = await sidecache(routes)
    seen = []
    for accept in ("image/webp", "image/avif", "image/webp", None):
        headers = {"Accept": accept} if accept else {}
        async with client.get(proxy.url / "api/photo/1", headers=headers) as r:
            seen.append(r.headers["X-Cache"])
    assert seen == ["MISS", "MISS", "HIT", "MISS"]


async def test_upstream_vary_keeps_variants_apart(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache()
    url = proxy.url.with_path("/api/photo/1").with_query(
        {"vary": "Accept-Language", "echo": "Accept-Language"}
    )
    seen = []
    for lang in ("en", "fr", "en", "fr", None, None):
        headers = {"Accept-Language": lang} if lang else {}
        async with client.get(url, headers=headers) as r:
            body = await r.read()
            seen.append((r.headers["X-Cache"], body.split(b"|")[0].decode()))
    assert seen == [
        ("MISS", "-"),  # the first fill, before the app's Vary is known, is sent without it
        ("MISS", "fr"),  # now keyed, so forwarded
        ("MISS", "en"),
        ("HIT", "fr"),
        ("HIT", "-"),
        ("HIT", "-"),
    ]
    assert upstream.app[HITS][f"GET {url.path_qs}"] == 3


async def test_vary_star_and_proxy_set_headers_are_never_stored(
    sidecache: Factory, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache()
    for vary in ("*", "X-Forwarded-Host", "Host"):
        url = proxy.url.with_path("/api/photo/2").with_query(vary=vary)
        for _ in range(2):
            async with client.get(url) as r:
                assert r.headers["X-Cache"] == "MISS", vary


async def test_waiters_on_the_first_fill_of_a_varying_key_get_their_own_variant(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache()
    url = proxy.url.with_path("/gated/photo/3").with_query(
        {"vary": "Accept-Language", "echo": "Accept-Language"}
    )

    async def get(lang: str) -> tuple[str, str]:
        async with client.get(url, headers={"Accept-Language": lang}) as r:
            return r.headers["X-Cache"], (await r.read()).split(b"|")[0].decode()

    leader = asyncio.create_task(get("en"))
    async with asyncio.timeout(10):
        await upstream.app[ARRIVED].wait()
    same, other = asyncio.create_task(get("en")), asyncio.create_task(get("fr"))
    async with asyncio.timeout(10):
        (fill,) = proxy.runtime.coalescer.in_progress()
        await fill.wait_for_waiters(2)
    upstream.app[GATE].set()
    # The first fill of a key is sent without Accept-Language (not yet known to be
    # keyed): it stores the variant of clients that send none.
    assert await leader == ("MISS", "-")
    assert await same == ("MISS", "en")  # not the stored variant: fetched for itself
    assert await other == ("MISS", "fr")
    assert upstream.app[HITS][f"GET {url.path_qs}"] == 3
    async with client.get(url) as r:
        assert (r.headers["X-Cache"], (await r.read()).split(b"|")[0]) == ("HIT", b"-")


async def test_ranges_are_answered_from_the_stored_entry(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache()
    url = proxy.url / "api/photo/4"
    async with client.get(url, headers={"Range": "bytes=0-9"}) as r:
        # A miss with Range is forwarded as it is and never stored as the whole.
        assert r.headers["X-Cache"] == "MISS"
        await r.read()
    assert proxy.runtime.store.figures().entries == 0
    async with client.get(url) as r:
        await r.read()
    whole = photo_body("4", 1000)
    async with client.get(url, headers={"Range": "bytes=10-19"}) as r:
        assert (r.status, r.headers["X-Cache"]) == (206, "HIT")
        assert r.headers["Content-Range"] == "bytes 10-19/1000"
        assert r.headers["Content-Length"] == "10"
        assert await r.read() == whole[10:20]
    async with client.get(url, headers={"Range": "bytes=-5"}) as r:
        assert (r.status, await r.read()) == (206, whole[-5:])
    async with client.get(url, headers={"Range": "bytes=5000-"}) as r:
        assert r.status == 416
        assert r.headers["Content-Range"] == "bytes */1000"
    async with client.get(url, headers={"Range": "bytes=0-1", "If-Range": '"stale"'}) as r:
        assert (r.status, len(await r.read())) == (200, 1000)
    assert upstream.app[HITS]["GET /api/photo/4"] == 2  # the Range miss, then the fill


async def test_if_modified_since_is_answered_from_the_entry(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache()
    modified = "Tue, 24 Nov 2026 10:00:00 GMT"
    url = proxy.url.with_path("/api/photo/5").with_query({"last-modified": modified})
    plain = proxy.url / "api/photo/6"  # no Last-Modified: no validator to compare
    for u in (url, plain):
        async with client.get(u) as r:
            await r.read()
    for since, status in [
        ("Tue, 24 Nov 2026 10:00:00 GMT", 304),
        ("Wed, 25 Nov 2026 10:00:00 GMT", 304),
        ("Mon, 23 Nov 2026 10:00:00 GMT", 200),
    ]:
        async with client.get(url, headers={"If-Modified-Since": since}) as r:
            assert (r.status, r.headers["X-Cache"]) == (status, "HIT")
    async with client.get(plain, headers={"If-Modified-Since": modified}) as r:
        assert r.status == 200
    assert upstream.app[HITS]["total"] == 2
