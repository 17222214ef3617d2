"""``freshness: origin`` end to end: the app's own headers decide how long a
response is reused; the route's ttl only when they say nothing."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from yarl import URL

from tests.integration.conftest import Clock, Factory, Running
from tests.integration.upstream_app import FAIL_WITH, HITS

PAST = "Thu, 01 Jan 2015 00:00:00 GMT"


def photo(**rules: Any) -> list[dict[str, Any]]:
    return [{"name": "photo", "match": "/api/photo/{id}", **rules}]


def url_of(proxy: Running, photo_id: str = "1", **app_headers: str) -> URL:
    """A photo whose response carries ``app_headers`` (the upstream sets them)."""
    return proxy.url.with_path(f"/api/photo/{photo_id}").with_query(app_headers)


async def x_cache(
    client: aiohttp.ClientSession, url: URL, headers: dict[str, str] | None = None
) -> str:
    async with client.get(url, headers=headers) as r:
        await r.read()
        return r.headers["X-Cache"]


def fetched(upstream: TestServer, url: URL) -> int:
    """How many times the app was asked for ``url`` (however it spelt the query)."""
    return sum(
        n
        for key, n in upstream.app[HITS].items()
        if key.startswith("GET ")
        and (URL(key[4:]).path, URL(key[4:]).query) == (url.path, url.query)
    )


async def test_the_app_max_age_wins_over_the_route_ttl(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    clock = Clock()
    proxy = await sidecache(photo(ttl="5m"), clock=clock)
    url = url_of(proxy, **{"cache-control": "max-age=1"})
    assert await x_cache(client, url) == "MISS"
    # The app's Date has a one-second resolution: the response arrives up to a
    # second old (RFC 9111 section 4.2.3, apparent age), so it is fresh at once...
    assert await x_cache(client, url) == "HIT"
    clock.now += 1  # ... and after 1 s the app's lifetime is over, five minutes or not
    assert await x_cache(client, url) == "MISS"
    assert fetched(upstream, url) == 2


async def test_the_route_ttl_is_the_default_when_the_app_says_nothing(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    clock = Clock()
    proxy = await sidecache(photo(ttl="5m"), clock=clock)
    url = url_of(proxy)
    assert await x_cache(client, url) == "MISS"
    clock.now += 299.9
    assert await x_cache(client, url) == "HIT"
    clock.now += 0.1
    assert await x_cache(client, url) == "MISS"


async def test_without_a_ttl_a_response_without_freshness_is_not_reused(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache(photo())
    plain = url_of(proxy)
    for _ in range(2):
        assert await x_cache(client, plain) == "MISS"
    assert fetched(upstream, plain) == 2
    told = url_of(proxy, **{"cache-control": "max-age=60"})
    assert [await x_cache(client, told) for _ in range(2)] == ["MISS", "HIT"]


@pytest.mark.parametrize(
    ("cache_control", "hit_until"),
    [("s-maxage=60, max-age=1", 60), ("max-age=60, s-maxage=1", 1)],
)
async def test_s_maxage_wins_over_max_age(
    sidecache: Factory,
    upstream: TestServer,
    client: aiohttp.ClientSession,
    cache_control: str,
    hit_until: float,
) -> None:
    clock = Clock()
    proxy = await sidecache(photo(ttl="5m"), clock=clock)
    url = url_of(proxy, **{"cache-control": cache_control})
    assert await x_cache(client, url) == "MISS"
    # The app's Date has a one-second resolution: the response arrives up to a
    # second old (RFC 9111 section 4.2.3, apparent age).
    clock.now += max(0.0, hit_until - 1.1)
    assert await x_cache(client, url) == "HIT"
    clock.now = 1000.0 + hit_until
    assert await x_cache(client, url) == "MISS"


@pytest.mark.parametrize("expires", [PAST, "0"])
async def test_an_expires_in_the_past_or_invalid_is_not_reused(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession, expires: str
) -> None:
    proxy = await sidecache(photo(ttl="5m"))
    url = url_of(proxy, expires=expires)
    assert [await x_cache(client, url) for _ in range(2)] == ["MISS", "MISS"]
    assert fetched(upstream, url) == 2
    assert proxy.runtime.snapshot()["cache"]["entries"] == 0  # type: ignore[index]


async def test_the_app_age_counts_against_its_max_age(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    clock = Clock()
    proxy = await sidecache(photo(ttl="5m"), clock=clock)
    url = url_of(proxy, **{"cache-control": "max-age=60", "age": "50"})
    assert await x_cache(client, url) == "MISS"
    clock.now += 9
    async with client.get(url) as r:
        assert r.headers["X-Cache"] == "HIT" and r.headers["Age"] == "59"
    clock.now += 1
    assert await x_cache(client, url) == "MISS"


async def test_cdn_cache_control_takes_precedence(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    clock = Clock()
    proxy = await sidecache(photo(), clock=clock)
    url = url_of(proxy, **{"cache-control": "no-store", "cdn-cache-control": "max-age=60"})
    assert [await x_cache(client, url) for _ in range(2)] == ["MISS", "HIT"]
    short = url_of(proxy, **{"cache-control": "max-age=600", "cdn-cache-control": "max-age=1"})
    assert await x_cache(client, short) == "MISS"
    clock.now += 1
    assert await x_cache(client, short) == "MISS"


@pytest.mark.parametrize(
    "app_headers",
    [
        {"cache-control": "private, max-age=60"},
        {"cache-control": "max-age=60, no-store"},
        {"cache-control": "max-age=60", "set-cookie": "session=1"},
        {"cdn-cache-control": "private", "cache-control": "max-age=60"},
    ],
)
async def test_responses_that_forbid_sharing_are_still_refused(
    sidecache: Factory,
    upstream: TestServer,
    client: aiohttp.ClientSession,
    app_headers: dict[str, str],
) -> None:
    proxy = await sidecache(photo(ttl="5m"))
    url = url_of(proxy, **app_headers)
    assert [await x_cache(client, url) for _ in range(2)] == ["MISS", "MISS"]
    assert fetched(upstream, url) == 2


async def test_no_cache_is_stored_but_never_served_without_the_app(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache(photo(ttl="5m", stale_while_revalidate="1m"))
    url = url_of(proxy, **{"cache-control": "no-cache", "etag": '"v1"'})
    assert [await x_cache(client, url) for _ in range(2)] == ["MISS", "MISS"]
    assert fetched(upstream, url) == 2
    # Kept, with its validator, to be revalidated; without one it is not kept.
    assert proxy.runtime.snapshot()["cache"]["entries"] == 1  # type: ignore[index]
    bare = url_of(proxy, "2", **{"cache-control": "no-cache"})
    await x_cache(client, bare)
    assert proxy.runtime.snapshot()["cache"]["entries"] == 1  # type: ignore[index]


@pytest.mark.parametrize(
    ("cache_control", "when_failing"),
    [
        ("max-age=10", "STALE"),  # the route's stale_if_error
        ("max-age=10, must-revalidate", "MISS"),  # never stale: the app's 503
        ("max-age=10, proxy-revalidate", "MISS"),
        ("s-maxage=10", "MISS"),
    ],
)
async def test_must_revalidate_forbids_the_route_stale_windows(
    sidecache: Factory,
    upstream: TestServer,
    client: aiohttp.ClientSession,
    cache_control: str,
    when_failing: str,
) -> None:
    clock = Clock()
    proxy = await sidecache(photo(stale_if_error="10m"), clock=clock)
    # A validator keeps the entry past its freshness (for revalidation): only the
    # app's word keeps it from standing in for the failure.
    url = url_of(proxy, **{"cache-control": cache_control, "etag": '"v1"'})
    assert await x_cache(client, url) == "MISS"
    upstream.app[FAIL_WITH].append(503)
    clock.now += 11
    async with client.get(url) as r:
        assert r.headers["X-Cache"] == when_failing
        assert r.status == (200 if when_failing == "STALE" else 503)


async def test_the_app_stale_windows_extend_the_route_ones(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    clock = Clock()
    proxy = await sidecache(photo(stale_if_error="10s"), clock=clock)
    url = url_of(proxy, **{"cache-control": "max-age=10, stale-if-error=60"})
    assert await x_cache(client, url) == "MISS"
    upstream.app[FAIL_WITH].append(503)
    clock.now += 69
    assert await x_cache(client, url) == "STALE"
    clock.now += 1
    assert await x_cache(client, url) == "MISS"


async def test_a_route_route_ignores_the_app_lifetimes(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    clock = Clock()
    proxy = await sidecache(photo(ttl="5m", freshness="route"), clock=clock)
    url = url_of(proxy, **{"cache-control": "max-age=1", "expires": PAST})
    assert await x_cache(client, url) == "MISS"
    clock.now += 299
    assert await x_cache(client, url) == "HIT"
    # no-cache still refused there, as it always was.
    no_cache = url_of(proxy, **{"cache-control": "no-cache", "etag": '"v1"'})
    assert [await x_cache(client, no_cache) for _ in range(2)] == ["MISS", "MISS"]
    assert proxy.runtime.snapshot()["cache"]["entries"] == 1  # type: ignore[index]


@pytest.mark.parametrize(
    ("status", "stored"), [("404", True), ("410", True), ("403", False), ("500", False)]
)
async def test_heuristically_cacheable_statuses_get_the_default(
    sidecache: Factory,
    upstream: TestServer,
    client: aiohttp.ClientSession,
    status: str,
    stored: bool,
) -> None:
    proxy = await sidecache(photo(ttl="5m"))
    url = url_of(proxy, status=status)
    assert [await x_cache(client, url) for _ in range(2)] == ["MISS", "HIT" if stored else "MISS"]
    # With explicit freshness, any final status.
    told = url_of(proxy, status=status, **{"cache-control": "max-age=60"})
    assert [await x_cache(client, told) for _ in range(2)] == ["MISS", "HIT"]


ALICE = {"Authorization": "Bearer alice"}
BOB = {"Authorization": "Bearer bob"}


@pytest.mark.parametrize(
    ("cache_control", "shared"),
    [
        (None, False),
        ("max-age=60", False),
        ("public", True),
        ("max-age=60, public", True),
        ("s-maxage=60", True),
        ("max-age=60, must-revalidate", True),
    ],
)
async def test_authorization_follows_rfc_9111_section_3_5(
    sidecache: Factory,
    upstream: TestServer,
    client: aiohttp.ClientSession,
    cache_control: str | None,
    shared: bool,
) -> None:
    proxy = await sidecache(photo(ttl="5m"))
    url = url_of(proxy, **({"cache-control": cache_control} if cache_control else {}))
    assert await x_cache(client, url, ALICE) == "MISS"
    assert await x_cache(client, url, BOB) == ("HIT" if shared else "MISS")
    assert fetched(upstream, url) == (1 if shared else 2)


async def test_on_origin_routes_a_cookie_still_bypasses_and_credentials_still_wins(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache(photo(ttl="5m"))
    url = url_of(proxy, **{"cache-control": "public, max-age=60"})
    assert await x_cache(client, url, {"Cookie": "s=1"}) == "BYPASS"
    assert await x_cache(client, url, {**ALICE, "Cookie": "s=1"}) == "BYPASS"
    per_user = await sidecache(photo(ttl="5m", credentials="per-user"))
    url = url_of(per_user)  # not public: a per-user entry all the same
    assert [await x_cache(client, url, ALICE) for _ in range(2)] == ["MISS", "HIT"]
    assert await x_cache(client, url, BOB) == "MISS"


async def test_vary_values_are_normalised(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache(photo(ttl="5m"))
    url = url_of(proxy, vary="X-Foo")
    assert await x_cache(client, url, {"X-Foo": "1,2"}) == "MISS"
    assert await x_cache(client, url, {"X-Foo": " 1 , 2 "}) == "HIT"
    assert await x_cache(client, url, {"X-Foo": "2, 1"}) == "MISS"
    # A negotiation header is forwarded once the app's Vary names it: the first
    # fill teaches it, the second stores the variant, spellings then share it.
    lang = url_of(proxy, "2", vary="Accept-Language")
    assert await x_cache(client, lang, {"Accept-Language": "en, de"}) == "MISS"
    assert await x_cache(client, lang, {"Accept-Language": "en, de"}) == "MISS"
    assert await x_cache(client, lang, {"Accept-Language": "EN,DE"}) == "HIT"
