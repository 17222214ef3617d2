"""What crosses the proxy: headers both ways, bodies streamed, invalidation, odd targets."""

from __future__ import annotations

import asyncio
import io
import json

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from yarl import URL

from tests.integration.conftest import Factory
from tests.integration.upstream_app import HITS


async def echo(
    client: aiohttp.ClientSession, url: URL, method: str = "GET", **kw: object
) -> tuple[aiohttp.ClientResponse, dict[str, object]]:
    async with client.request(method, url, **kw) as r:  # type: ignore[arg-type]
        return r, json.loads(await r.read())


async def test_request_headers_hop_by_hop_dropped_forwarding_headers_set(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    # No trusted peer: the client's forwarding headers are replaced (a trusted
    # peer's are passed on: test_trusted_proxies.py).
    proxy = await sidecache([], server={"trusted_proxies": []})
    r, seen = await echo(
        client,
        proxy.url / "echo",
        headers={
            "Connection": "keep-alive, X-Hop",
            "X-Hop": "secret",
            "Keep-Alive": "timeout=5",
            "X-Forwarded-For": "6.6.6.6",
            "X-Forwarded-Host": "evil.example",
            "Forwarded": "for=6.6.6.6",
            "X-App": "kept",
        },
    )
    headers = {k.lower(): v for k, v in seen["headers"]}  # type: ignore[union-attr]
    assert "x-hop" not in headers and "keep-alive" not in headers
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-host"] == f"127.0.0.1:{proxy.url.port}"
    assert "forwarded" not in headers
    assert headers["via"] == "1.1 sidecache"
    assert headers["x-app"] == "kept"
    assert headers["host"] == f"127.0.0.1:{upstream.port}"
    # Response side: the upstream's Connection-named header is dropped, Via added.
    assert "X-Upstream-Hop" not in r.headers
    assert r.headers["Via"] == "1.1 sidecache"


async def test_path_and_query_are_forwarded_unchanged(
    sidecache: Factory, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache([])
    target = "/echo/a%20b/%7Ex?q=%2F&q=2&empty="
    _, seen = await echo(client, URL(f"{proxy.url}{target}", encoded=True))
    assert seen["path_qs"] == target


@pytest.mark.parametrize("chunked", [False, True])
async def test_request_bodies_are_streamed_upstream(
    sidecache: Factory, client: aiohttp.ClientSession, chunked: bool
) -> None:
    proxy = await sidecache([])
    size = 5 * 1024 * 1024

    async def body() -> object:
        for _ in range(size // 65536):
            yield b"z" * 65536

    data: object = body() if chunked else io.BytesIO(b"z" * size)
    _, seen = await echo(client, proxy.url / "echo", "POST", data=data)
    assert seen["method"] == "POST"
    assert seen["body_length"] == size
    assert seen["chunked"] is chunked


async def test_unsafe_methods_pass_through_and_drop_the_entry(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache()
    url = proxy.url / "api/photo/5"
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        for _ in range(2):
            async with client.get(url) as r:
                await r.read()
        assert r.headers["X-Cache"] == "HIT"
        async with client.request(method, url, data=b"x") as r:
            assert r.status == 204
            assert r.headers["X-Cache"] == "BYPASS"
        async with client.get(url) as r:
            assert r.headers["X-Cache"] == "MISS", method
    assert upstream.app[HITS]["GET /api/photo/5"] == 5


async def test_get_with_a_body_is_never_stored(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache()
    for _ in range(2):
        async with client.get(proxy.url / "api/photo/1", data=b"payload") as r:
            assert r.headers["X-Cache"] == "BYPASS"
    async with client.get(proxy.url / "api/photo/1") as r:
        assert r.headers["X-Cache"] == "MISS"


@pytest.mark.parametrize(
    "target",
    [
        "/api/photo/1%2F..%2Fsecret",
        "/api/photo/../photo/1",
        "/api/photo/1;x=y",
        "/api//photo/1",
        "/api/photo/%2e%2e",
    ],
)
async def test_ambiguous_paths_are_never_served_from_or_stored_in_the_cache(
    sidecache: Factory, upstream: TestServer, target: str
) -> None:
    proxy = await sidecache()
    async with aiohttp.ClientSession() as session:
        async with session.get(proxy.url / "api/photo/1") as r:
            await r.read()
        for _ in range(2):
            async with session.get(URL(f"{proxy.url}{target}", encoded=True)) as r:
                assert r.headers.get("X-Cache") == "BYPASS"
    assert proxy.runtime.store.figures().entries == 1


async def test_absolute_form_targets_are_forwarded_by_path_and_keyed_on_their_host(
    sidecache: Factory, upstream: TestServer
) -> None:
    proxy = await sidecache()
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.url.port)
    writer.write(
        b"GET http://other.example/api/photo/1 HTTP/1.1\r\nHost: other.example\r\n"
        b"Connection: close\r\n\r\n"
    )
    await writer.drain()
    response = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert response.startswith(b"HTTP/1.1 200")
    assert b"X-Cache: MISS" in response
    assert upstream.app[HITS]["GET /api/photo/1"] == 1
    async with aiohttp.ClientSession() as session:
        async with session.get(proxy.url / "api/photo/1") as r:
            assert r.headers["X-Cache"] == "MISS"  # another host's entry
        async with session.get(proxy.url / "api/photo/1", headers={"Host": "other.example"}) as r:
            assert r.headers["X-Cache"] == "HIT"


async def test_the_control_api_is_not_reachable_on_the_public_port(
    sidecache: Factory, upstream: TestServer, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache()
    async with client.post(proxy.url / "purge", json={"all": True}) as r:
        assert r.headers["X-Cache"] == "BYPASS"  # forwarded to the app, which knows no /purge
        assert r.status == 404
    async with client.get(proxy.url / "stats") as r:
        assert r.status == 404


async def test_upstream_connections_are_pooled_and_kept_alive(
    sidecache: Factory, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache([])
    peers = set()
    for _ in range(5):
        _, seen = await echo(client, proxy.url / "echo")
        peers.add(seen["peer"])
    assert len(peers) == 1  # one upstream connection served every request


async def test_expect_100_continue_is_answered_by_the_proxy(
    sidecache: Factory, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache([])
    _, seen = await echo(client, proxy.url / "echo", "PUT", data=b"y" * 1000, expect100=True)
    headers = {k.lower() for k, _ in seen["headers"]}  # type: ignore[union-attr]
    assert seen["body_length"] == 1000
    assert "expect" not in headers


async def test_head_and_no_body_statuses_pass_through_without_a_body(
    sidecache: Factory, client: aiohttp.ClientSession
) -> None:
    proxy = await sidecache([])
    async with client.head(proxy.url / "files/1") as r:
        assert r.status == 200
        assert r.headers["Content-Length"] == "1000"
        assert await r.read() == b""
    async with client.delete(proxy.url / "files/1") as r:
        assert r.status == 204
        assert await r.read() == b""
