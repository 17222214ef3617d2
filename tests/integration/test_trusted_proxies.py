"""Forwarding headers from the hop in front (``server.trusted_proxies``): believed
and keyed from a trusted peer, replaced from any other.

The tests connect from 127.0.0.1, which the default trusts; an untrusted peer is
simulated by trusting a range that excludes it.
"""

from __future__ import annotations

import json

import aiohttp
from aiohttp.test_utils import TestServer
from yarl import URL

from tests.integration.conftest import Factory
from tests.integration.upstream_app import LAST

UNTRUSTED = {"trusted_proxies": ["10.0.0.0/8"]}  # excludes the test client
ECHO_ROUTE = [{"name": "echo", "match": "/echo", "ttl": "5m"}]
FROM_INGRESS = {
    "X-Forwarded-For": "203.0.113.7",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "shop.example",
    "Forwarded": 'for=203.0.113.7;proto=https;host="shop.example"',
}


def seen_upstream(upstream: TestServer) -> dict[str, list[str]]:
    seen: dict[str, list[str]] = {}
    for name, value in upstream.app[LAST]["headers"]:  # type: ignore[union-attr]
        seen.setdefault(name.lower(), []).append(value)
    return seen


async def rendered(
    client: aiohttp.ClientSession, url: URL, headers: dict[str, str] | None = None
) -> tuple[str, dict[str, str]]:
    """X-Cache, and the forwarding headers the app saw when it rendered the answer."""
    async with client.get(url, headers=headers or {}) as r:
        assert r.status == 200
        body = json.loads(await r.read())
    saw = {
        k.lower(): v for k, v in body["headers"] if k.lower().startswith(("x-forwarded", "forw"))
    }
    return r.headers["X-Cache"], saw


async def test_a_trusted_peer_forwarding_headers_are_passed_on(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache([])  # the default trusts loopback
    for path in ("echo", "api/photo/1"):  # pass-through, and a cache fill
        async with client.get(proxy.url / path, headers=FROM_INGRESS) as r:
            assert r.status == 200
        seen = seen_upstream(upstream)
        assert seen["x-forwarded-for"] == ["203.0.113.7, 127.0.0.1"]
        assert seen["x-forwarded-proto"] == ["https"]
        assert seen["x-forwarded-host"] == ["shop.example"]
        assert seen["forwarded"] == [FROM_INGRESS["Forwarded"]]
    # Without them, a trusted peer gets what sidecache saw, as any other.
    async with client.get(proxy.url / "echo") as r:
        assert r.status == 200
    seen = seen_upstream(upstream)
    assert seen["x-forwarded-for"] == ["127.0.0.1"]
    assert seen["x-forwarded-proto"] == ["http"]
    assert seen["x-forwarded-host"] == [f"127.0.0.1:{proxy.url.port}"]
    assert "forwarded" not in seen


async def test_an_untrusted_peer_forwarding_headers_are_replaced(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache(None, server=UNTRUSTED)
    for path in ("echo", "api/photo/1"):
        async with client.get(proxy.url / path, headers=FROM_INGRESS) as r:
            assert r.status == 200
        seen = seen_upstream(upstream)
        assert seen["x-forwarded-for"] == ["127.0.0.1"]
        assert seen["x-forwarded-proto"] == ["http"]
        assert seen["x-forwarded-host"] == [f"127.0.0.1:{proxy.url.port}"]
        assert "forwarded" not in seen


async def test_an_untrusted_client_cannot_poison_the_entry_with_its_scheme(
    sidecache: Factory, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache(ECHO_ROUTE, server=UNTRUSTED)
    attack = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example"}
    cache, saw = await rendered(client, proxy.url / "echo", attack)
    assert (cache, saw["x-forwarded-proto"]) == ("MISS", "http")
    assert saw["x-forwarded-host"] == f"127.0.0.1:{proxy.url.port}"
    # The innocent client gets the entry rendered for what sidecache saw.
    cache, saw = await rendered(client, proxy.url / "echo")
    assert (cache, saw["x-forwarded-proto"]) == ("HIT", "http")
    assert saw["x-forwarded-host"] == f"127.0.0.1:{proxy.url.port}"


async def test_a_trusted_ingress_http_and_https_renderings_are_two_entries(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache(ECHO_ROUTE)
    https = {"X-Forwarded-Proto": "https"}
    http = {"X-Forwarded-Proto": "http"}
    for headers, scheme in ((https, "https"), (http, "http"), (None, "http")):
        cache, saw = await rendered(client, proxy.url / "echo", headers)
        assert (cache, saw["x-forwarded-proto"]) == ("MISS", scheme)
    for headers, scheme in ((https, "https"), (http, "http"), (None, "http")):
        cache, saw = await rendered(client, proxy.url / "echo", headers)
        assert (cache, saw["x-forwarded-proto"]) == ("HIT", scheme)
    # The host and Forwarded a trusted peer names split the key too.
    for headers in ({"X-Forwarded-Host": "a.example"}, {"Forwarded": "proto=https"}):
        cache, _ = await rendered(client, proxy.url / "echo", headers)
        assert cache == "MISS"
        cache, _ = await rendered(client, proxy.url / "echo", headers)
        assert cache == "HIT"
