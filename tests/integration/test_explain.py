"""``/explain`` against the next real request: what it says the request gets (X-Cache,
bypass reason, route, key) is what the public port then answers; and it changes
nothing (counters, LRU order), shows no header value and follows the purge token."""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from yarl import URL

from tests.integration.conftest import AccessLines, Clock, Factory, Running
from tests.integration.upstream_app import HITS, TAGS

ROUTES: list[dict[str, Any]] = [
    {"name": "photo", "match": "/api/photo/{id}", "ttl": "5m", "credentials": "per-user"},
    {"name": "files", "match": "/files/{id}", "ttl": "5m", "credentials": "bypass"},
    {"name": "swr", "match": "/swr/validated/{id}", "ttl": "10s", "stale_while_revalidate": "30s"},
]
SECRET = "Bearer tOpSeCrEt-4711"
# Requests sent to each instance's public port so far: its access line's index.
SENT: dict[int, int] = {}


@pytest.fixture(autouse=True)
def _count_from_zero() -> None:
    SENT.clear()


def host(proxy: Running) -> str:
    return f"{proxy.url.host}:{proxy.url.port}"


async def explain(
    client: aiohttp.ClientSession,
    proxy: Running,
    target: str,
    headers: dict[str, str] | None = None,
    method: str | None = None,
    token: str | None = None,
) -> dict[str, Any]:
    params = [("url", target), ("h", f"Host: {host(proxy)}")]
    params += [("h", f"{name}: {value}") for name, value in (headers or {}).items()]
    if method is not None:
        params.append(("method", method))
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    async with client.get(proxy.control / "explain", params=params, headers=auth) as r:
        assert r.status == 200, await r.text()
        data: dict[str, Any] = await r.json()
        return data


async def real(
    client: aiohttp.ClientSession,
    proxy: Running,
    target: str,
    headers: dict[str, str] | None = None,
    method: str = "GET",
) -> aiohttp.ClientResponse:
    url = URL(str(proxy.url) + target, encoded=True)
    SENT[id(proxy.instance)] = SENT.get(id(proxy.instance), 0) + 1
    async with client.request(method, url, headers=headers or {}) as r:
        await r.read()
        return r


async def agree(
    client: aiohttp.ClientSession,
    proxy: Running,
    access: AccessLines,
    target: str,
    headers: dict[str, str] | None = None,
    method: str = "GET",
) -> tuple[dict[str, Any], aiohttp.ClientResponse]:
    """Explain, then send the same request: the outcome, the bypass reason and the
    route are the ones the public port then gives it."""
    said = await explain(client, proxy, target, headers, method)
    seen = SENT.get(id(proxy.instance), 0)  # lines written by the access log's thread
    got = await real(client, proxy, target, headers, method)
    assert got.headers["X-Cache"] == said["outcome"]["x_cache"], said
    if said["decision"]["action"] == "bypass":
        assert f"detail={said['decision']['reason']}" in got.headers["Cache-Status"]
    await access.first(lambda _: len(access.lines) > seen)
    line = access.lines[seen]
    route = said["route"]["name"] if said["route"] is not None else None
    assert line["route"] == route and line["cache"] == got.headers["X-Cache"]
    return said, got


async def test_a_cold_url_then_a_stored_fresh_entry(
    sidecache: Factory, client: aiohttp.ClientSession, access: AccessLines
) -> None:
    proxy = await sidecache(ROUTES)
    cold, _ = await agree(client, proxy, access, "/api/photo/1?cache-control=max-age%3D60")
    assert cold["decision"] == {"action": "lookup", "reason": "cacheable"}
    assert cold["outcome"]["step"] == "fetch" and cold["entry"] is None
    assert cold["route"]["name"] == "photo" and cold["route"]["params"] == {"id": "1"}
    assert cold["route"]["match"] == "/api/photo/{id}"
    assert cold["path"] == {"raw": "/api/photo/1", "normalised": "/api/photo/1", "ambiguous": False}
    key = cold["key"]
    assert key["route"] == "photo" and key["host"] == host(proxy)
    assert key["target"] == "/api/photo/1?cache-control=max-age%3D60"

    fresh, _ = await agree(client, proxy, access, "/api/photo/1?cache-control=max-age%3D60")
    assert fresh["outcome"]["step"] == "serve"
    # The entry the real request stored is the one under the key explained before it.
    entry = fresh["entry"]
    assert fresh["key"] == key and entry["key_digest"] == key["digest"]
    assert entry["tier"] == "memory" and entry["state"] == "fresh" and entry["status"] == 200
    assert entry["lifetime"]["rule"] == "max-age"
    assert 0 < entry["fresh_for_s"] <= 60
    assert entry["size"]["body_bytes"] == 1000 < entry["size"]["charged_bytes"]
    assert entry["validators"]["etag"] is None and entry["validators"]["served_etag"]


async def test_a_stale_entry_within_stale_while_revalidate(
    sidecache: Factory, client: aiohttp.ClientSession, access: AccessLines
) -> None:
    clock = Clock()
    proxy = await sidecache(ROUTES, clock=clock)
    await agree(client, proxy, access, "/swr/validated/1")
    clock.now += 15  # 10 s of ttl, then 5 s into 30 s of stale-while-revalidate
    said, _ = await agree(client, proxy, access, "/swr/validated/1")
    assert said["outcome"]["step"] == "stale-while-revalidate"
    entry = said["entry"]
    assert entry["state"] == "stale-while-revalidate"
    assert entry["fresh_for_s"] == -5 and entry["stale_while_revalidate_s"] == 30
    assert entry["stale_while_revalidate_left_s"] == 25
    assert entry["validators"]["etag"] == '"r1"' and entry["lifetime"]["rule"] == "ttl"


async def test_a_stale_entry_past_its_windows_is_revalidated(
    sidecache: Factory, client: aiohttp.ClientSession, access: AccessLines, upstream: TestServer
) -> None:
    clock = Clock()
    proxy = await sidecache(ROUTES, clock=clock)
    await real(client, proxy, "/swr/validated/2")
    clock.now += 45  # past 10 s of ttl and 30 s of stale-while-revalidate
    said = await explain(client, proxy, "/swr/validated/2")
    assert said["outcome"]["step"] == "revalidate" and said["entry"]["state"] == "expired"
    # The app's answer decides: 304, the refreshed entry is a hit.
    got = await real(client, proxy, "/swr/validated/2")
    assert got.headers["X-Cache"] == said["outcome"]["x_cache_if_304"] == "HIT"
    assert "fwd=stale; fwd-status=304" in got.headers["Cache-Status"]
    clock.now += 45
    upstream.app[TAGS]["2"] = '"r2"'  # changed: the app answers 200
    said = await explain(client, proxy, "/swr/validated/2")
    assert said["outcome"]["step"] == "revalidate"
    got = await real(client, proxy, "/swr/validated/2")
    assert got.headers["X-Cache"] == said["outcome"]["x_cache"] == "MISS"


async def test_authorization_on_routes_that_do_and_do_not_take_credentials(
    sidecache: Factory, client: aiohttp.ClientSession, access: AccessLines
) -> None:
    proxy = await sidecache(ROUTES)
    auth = {"Authorization": SECRET}
    said, _ = await agree(client, proxy, access, "/files/1", auth)
    assert said["decision"]["reason"] == "credentials" and said["key"] is None
    said, _ = await agree(client, proxy, access, "/api/photo/2", auth)
    assert said["outcome"]["step"] == "fetch" and said["key"]["credentials"]
    again, _ = await agree(client, proxy, access, "/api/photo/2", auth)
    assert again["entry"]["key_digest"] == said["key"]["digest"]
    other, _ = await agree(client, proxy, access, "/api/photo/2", {"Authorization": "Bearer b"})
    assert other["outcome"]["x_cache"] == "MISS"
    assert other["key"]["credentials"] != said["key"]["credentials"]


async def test_a_method_the_route_does_not_cache(
    sidecache: Factory, client: aiohttp.ClientSession, access: AccessLines
) -> None:
    proxy = await sidecache(ROUTES)
    said, got = await agree(client, proxy, access, "/api/photo/3", method="POST")
    assert got.status == 204
    assert said["decision"]["reason"] == "method"
    assert "/api/photo/3" in said["decision"]["invalidates"]
    assert said["route"]["name"] == "photo"


@pytest.mark.parametrize(
    "target", ["/api/photo/a%2Fb", "/api/photo/../photo/4", "/api/photo/./4", "/api/photo/4;v=1"]
)
async def test_an_ambiguous_path(
    sidecache: Factory, client: aiohttp.ClientSession, access: AccessLines, target: str
) -> None:
    proxy = await sidecache(ROUTES)
    said, _ = await agree(client, proxy, access, target)
    assert said["decision"]["reason"] == "ambiguous-target"
    assert said["path"]["normalised"] is None and said["path"]["ambiguous"] is True
    assert said["route"] is None


async def test_a_vary_variant(
    sidecache: Factory, client: aiohttp.ClientSession, access: AccessLines
) -> None:
    proxy = await sidecache(ROUTES)
    target = "/api/photo/5?vary=Accept-Language"
    english, french = {"Accept-Language": "en"}, {"Accept-Language": "fr"}
    first, _ = await agree(client, proxy, access, target, english)
    assert first["vary"]["learned"] is None
    # The first fill went without the header (its Vary was not known yet): the
    # variant stored is the one without Accept-Language.
    bare, _ = await agree(client, proxy, access, target)
    assert bare["outcome"]["step"] == "serve"
    assert bare["vary"]["learned"] == ["accept-language"]
    assert bare["vary"]["found_under"] == "variant"
    assert bare["vary"]["request"] == {"accept-language": None}
    assert bare["entry"]["vary"] == ["accept-language"]
    assert bare["entry"]["key_digest"] == bare["vary"]["variant_digest"] != bare["key"]["digest"]
    cold, _ = await agree(client, proxy, access, target, english)
    assert cold["outcome"]["step"] == "fetch" and cold["entry"] is None
    said, _ = await agree(client, proxy, access, target, english)
    assert said["outcome"]["step"] == "serve"
    assert (
        said["entry"]["key_digest"]
        == said["vary"]["variant_digest"]
        == cold["vary"]["variant_digest"]
    )
    assert said["vary"]["variant_digest"] != bare["vary"]["variant_digest"]
    other, _ = await agree(client, proxy, access, target, french)
    assert other["outcome"]["step"] == "fetch"
    assert other["vary"]["request"]["accept-language"] != said["vary"]["request"]["accept-language"]


async def test_no_route_and_a_refused_host(
    sidecache: Factory, client: aiohttp.ClientSession, access: AccessLines
) -> None:
    proxy = await sidecache(ROUTES)
    said, _ = await agree(client, proxy, access, "/echo/x")
    assert said["decision"]["reason"] == "no-route" and said["route"] is None
    params = [("url", "/api/photo/1"), ("h", "Host: bad host")]
    async with client.get(proxy.control / "explain", params=params) as r:
        refused = await r.json()
    assert refused["decision"] == {"action": "refuse", "reason": "unknown or malformed host"}


async def test_header_values_are_never_shown_nor_logged(
    sidecache: Factory,
    client: aiohttp.ClientSession,
    access: AccessLines,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # before the start: the handler reads it then
    proxy = await sidecache(ROUTES)
    secrets = {"Authorization": SECRET, "Cookie": "session=tOpSeCrEt-cookie"}
    texts: list[str] = []
    for target in ("/api/photo/6", "/files/6", "/api/photo/6"):
        params = [("url", target), ("h", f"Host: {host(proxy)}")]
        params += [("h", f"{name}: {value}") for name, value in secrets.items()]
        async with client.get(proxy.control / "explain", params=params) as r:
            assert r.status == 200
            texts.append(await r.text())
        await real(client, proxy, target, secrets)
    # Wrong questions: the error names the parameter, never what it held.
    for wrong in (SECRET, f"Bad Name: {SECRET}", f"X-A: {SECRET}\r\nX-B: b"):
        async with client.get(proxy.control / "explain", params={"url": "/", "h": wrong}) as r:
            assert r.status == 400
            texts.append(await r.text())
    await access.first(lambda _: len(access.lines) == 3)
    assert '"credentials":' in texts[0] and "authorization" in texts[0]
    logged = [record.getMessage() for record in caplog.records]
    for text in (*texts, *access.messages, *logged):
        assert "tOpSeCrEt" not in text


async def test_explain_changes_no_counter_and_no_lru_order(
    sidecache: Factory,
    client: aiohttp.ClientSession,
    access: AccessLines,
    upstream: TestServer,
) -> None:
    # Room for two 10 kB entries, not three: the third evicts the least recent.
    proxy = await sidecache(
        ROUTES, cache={"max_bytes": 25_000, "max_object_bytes": 20_000, "policy": "lru"}
    )
    first, second, third = (f"/api/photo/{n}?size=10000" for n in (7, 8, 9))
    for target in (first, second):
        await real(client, proxy, target)

    async def stats() -> dict[str, Any]:
        async with client.get(proxy.control / "stats") as r:
            data: dict[str, Any] = await r.json()
        data.pop("uptime_s")
        data.pop("memory")  # the resident size of the process, which moves by itself
        return data

    before = await stats()
    for _ in range(3):  # a lookup would make ``first`` the most recent
        said = await explain(client, proxy, first)
        assert said["outcome"]["x_cache"] == "HIT"
    assert await stats() == before
    await real(client, proxy, third)
    evicted = await explain(client, proxy, first)
    assert evicted["outcome"]["step"] == "fetch" and evicted["entry"] is None
    kept = await explain(client, proxy, second)
    assert kept["outcome"]["x_cache"] == "HIT"
    await agree(client, proxy, access, first)
    assert upstream.app[HITS][f"GET {first}"] == 2


async def test_explain_takes_the_purge_token_when_one_is_set(
    sidecache: Factory, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache(ROUTES, control={"token": "s3cret"})
    url = proxy.control.with_path("/explain").with_query(url="/api/photo/1")
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "s3cret"}):
        async with client.get(url, headers=headers) as r:
            assert r.status == 401
            assert "WWW-Authenticate" in r.headers
    said = await explain(client, proxy, "/api/photo/1", token="s3cret")
    assert said["outcome"]["x_cache"] == "MISS"
    # The token on the control port is not the request's: not among its headers.
    assert said["request"]["headers"] == ["host"]


async def test_without_a_host_the_public_listen_address_is_assumed(
    sidecache: Factory, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache(ROUTES)
    url = proxy.control.with_path("/explain").with_query(url="/api/photo/1")
    async with client.get(url) as r:
        said = await r.json()
    assert said["request"]["host_from"] == "listen"
    listen = proxy.runtime.config.listen
    assert said["key"]["host"] == f"{listen.host}:{listen.port}"
    absolute = "http://photos.example:8080/api/photo/1"
    async with client.get(proxy.control / "explain", params={"url": absolute}) as r:
        said = await r.json()
    assert said["request"]["host_from"] == "url" and said["key"]["host"] == "photos.example:8080"
    assert said["key"]["target"] == "/api/photo/1"


async def test_a_range_miss_is_forwarded_and_a_range_hit_served(
    sidecache: Factory, client: aiohttp.ClientSession, access: AccessLines
) -> None:
    proxy = await sidecache(ROUTES)
    part = {"Range": "bytes=0-9"}
    said, got = await agree(client, proxy, access, "/api/photo/10", part)
    assert said["outcome"]["step"] == "forward" and "range" in said["outcome"]["why"]
    assert "detail=range" in got.headers["Cache-Status"]
    assert said["decision"]["range"].startswith("a stored entry answers the range")
    await real(client, proxy, "/api/photo/10")
    said, got = await agree(client, proxy, access, "/api/photo/10", part)
    assert got.status == 206 and said["outcome"]["step"] == "serve"


async def test_a_shadow_route_is_forwarded_and_says_what_the_cache_would_do(
    sidecache: Factory, client: aiohttp.ClientSession, access: AccessLines
) -> None:
    proxy = await sidecache([{**ROUTES[0], "mode": "shadow"}])
    target = "/api/photo/5?cache-control=max-age%3D60"
    cold, got = await agree(client, proxy, access, target)
    assert cold["outcome"]["x_cache"] == "BYPASS" and cold["outcome"]["reason"] == "shadow"
    assert "detail=shadow" in got.headers["Cache-Status"]
    assert cold["outcome"]["would_be"]["x_cache"] == "MISS" and cold["entry"] is None
    again, got = await agree(client, proxy, access, target)
    assert got.headers["X-Cache"] == "BYPASS"
    # The shadow index now holds what the cache would have stored: a hit, were it on.
    assert again["outcome"]["would_be"]["x_cache"] == "HIT"
    assert again["entry"]["tier"] == "shadow index" and again["entry"]["status"] == 200
    assert again["key"] == cold["key"]
    counted = proxy.runtime.snapshot()["shadow"]["routes"]["photo"]  # type: ignore[index]
    assert (counted["hits"], counted["misses"]) == (1, 1)  # the explains counted nothing
