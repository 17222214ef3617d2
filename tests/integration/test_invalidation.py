"""Unsafe requests against an app that resolves paths loosely (case-insensitive,
trailing slash ignored, ``%2F`` and ``\\`` read as ``/``, dot segments resolved, as
Express, Rails, Spring before 6 and ASP.NET do): after a write the app accepted,
the next innocent GET must reach the app and get the new state."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from urllib.parse import unquote

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from yarl import URL

from tests.integration.conftest import Factory, Running

VERSIONS: web.AppKey[Counter[str]] = web.AppKey("versions", Counter)
GETS: web.AppKey[Counter[str]] = web.AppKey("gets", Counter)
HOLD: web.AppKey[set[str]] = web.AppKey("hold", set)
ARRIVED: web.AppKey[asyncio.Event] = web.AppKey("arrived", asyncio.Event)
GATE: web.AppKey[asyncio.Event] = web.AppKey("gate", asyncio.Event)
ROUTES = [{"name": "all", "match": "/{rest:path}", "ttl": "5m"}]


def resource(raw_path: str) -> str:
    """The resource a loose app reads ``raw_path`` as."""
    path = unquote(raw_path.partition("?")[0]).replace("\\", "/")
    out: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if out:
                out.pop()
        elif segment not in ("", "."):
            out.append(segment)
    return "/" + "/".join(out).lower()


async def loose(request: web.Request) -> web.Response:
    """GET answers the resource's version; an unsafe method changes it (and the
    resource its ``location`` query names) and answers ``status`` (204 by default)."""
    name = resource(request.raw_path)
    versions = request.app[VERSIONS]
    if request.method != "GET":
        status = int(request.query.get("status", "204"))
        headers = {}
        if "location" in request.query:
            headers["Location"] = request.query["location"]
        if status < 400:
            versions[name] += 1
            if "location" in request.query:
                named = request.url.join(URL(request.query["location"]))
                versions[resource(named.raw_path)] += 1
        return web.Response(status=status, headers=headers)
    request.app[GETS][name] += 1
    body = f"{name} version {versions[name]}"  # read when the request arrives
    if name in request.app[HOLD]:
        request.app[HOLD].discard(name)
        request.app[ARRIVED].set()
        await request.app[GATE].wait()
    return web.Response(text=body)


@pytest.fixture
async def app_server(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> TestServer:
    app = web.Application()
    app[VERSIONS] = Counter()
    app[GETS] = Counter()
    app[HOLD] = set()
    app[ARRIVED] = asyncio.Event()
    app[GATE] = asyncio.Event()
    app.router.add_route("*", "/{tail:.*}", loose)
    return await aiohttp_server(app)


async def proxy_for(sidecache: Factory, app_server: TestServer) -> Running:
    return await sidecache(ROUTES, upstream_url=str(app_server.make_url("/")).rstrip("/"))


async def get(client: aiohttp.ClientSession, proxy: Running, path: str) -> tuple[str, str]:
    async with client.get(proxy.url.with_path(path, encoded=True)) as r:
        assert r.status == 200
        return r.headers["X-Cache"], await r.text()


async def send(proxy: Running, method: str, target: str, host: str | None = None) -> bytes:
    """The request line exactly as written; the status line of the answer."""
    port = proxy.url.port or 0
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = f"{method} {target} HTTP/1.1\r\nHost: {host or f'127.0.0.1:{port}'}\r\n"
        writer.write(head.encode() + b"Content-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        async with asyncio.timeout(10):
            return (await reader.read()).partition(b"\r\n")[0]
    finally:
        writer.close()


async def cached(client: aiohttp.ClientSession, proxy: Running, path: str) -> str:
    """Store ``path`` and check that it is served from the cache; its body."""
    x_cache, body = await get(client, proxy, path)
    assert x_cache == "MISS"
    assert await get(client, proxy, path) == ("HIT", body)
    return body


@pytest.mark.parametrize(
    ("stored", "target"),
    [
        ("/c/x", "/c/x/"),
        ("/c/x", "/C/X"),
        ("/c/x", "/c/X"),
        ("/c/x", "/c/x%2F"),
        ("/c/x", "/c/x/."),
        ("/c/x", "/c/x//"),
        ("/c/x", "/c/x%2f%2f"),
        ("/c/x", "/c/x\\"),
        ("/c/x/", "/c/x"),
        ("/C/X", "/c/x"),
        ("/C/x/", "/c/X%2F"),
    ],
)
async def test_a_write_to_any_spelling_of_a_path_drops_the_others(
    sidecache: Factory,
    app_server: TestServer,
    client: aiohttp.ClientSession,
    stored: str,
    target: str,
) -> None:
    proxy = await proxy_for(sidecache, app_server)
    assert await cached(client, proxy, stored) == "/c/x version 0"
    assert await send(proxy, "DELETE", target) == b"HTTP/1.1 204 No Content"
    assert await get(client, proxy, stored) == ("MISS", "/c/x version 1")


@pytest.mark.parametrize(
    ("status", "location"),
    [
        (303, "/c/y"),
        (302, "http://127.0.0.1:{port}/C/Y/"),
        (301, "y"),
        (307, "/c/y"),
    ],
)
async def test_a_redirect_after_a_write_drops_the_path_and_its_location(
    sidecache: Factory,
    app_server: TestServer,
    client: aiohttp.ClientSession,
    status: int,
    location: str,
) -> None:
    proxy = await proxy_for(sidecache, app_server)
    await cached(client, proxy, "/c/x")
    await cached(client, proxy, "/c/y")
    named = location.format(port=proxy.url.port)
    target = str(URL("/c/x").with_query(status=str(status), location=named))
    assert (await send(proxy, "POST", target)).startswith(b"HTTP/1.1 %d" % status)
    assert await get(client, proxy, "/c/x") == ("MISS", "/c/x version 1")
    assert await get(client, proxy, "/c/y") == ("MISS", "/c/y version 1")


async def test_a_location_on_the_default_port_of_its_scheme_is_the_same_host(
    sidecache: Factory, app_server: TestServer, client: aiohttp.ClientSession
) -> None:
    proxy = await proxy_for(sidecache, app_server)
    await cached(client, proxy, "/c/y")
    named = "https://photos.example:443/c/y"  # an app behind TLS names itself so
    target = str(URL("/c/x").with_query(status="303", location=named))
    reply = await send(proxy, "POST", target, host="photos.example")
    assert reply.startswith(b"HTTP/1.1 303")
    assert await get(client, proxy, "/c/y") == ("MISS", "/c/y version 1")


async def test_an_error_answer_to_a_write_keeps_the_entry(
    sidecache: Factory, app_server: TestServer, client: aiohttp.ClientSession
) -> None:
    proxy = await proxy_for(sidecache, app_server)
    body = await cached(client, proxy, "/c/x")
    assert await send(proxy, "DELETE", "/c/x?status=409") == b"HTTP/1.1 409 Conflict"
    assert await get(client, proxy, "/c/x") == ("HIT", body)


async def test_a_fill_of_another_spelling_in_flight_during_a_write_is_neither_stored_nor_joined(
    sidecache: Factory, app_server: TestServer, client: aiohttp.ClientSession
) -> None:
    proxy = await proxy_for(sidecache, app_server)
    app = app_server.app
    app[HOLD].add("/c/x")
    early = asyncio.create_task(get(client, proxy, "/C/X"))
    async with asyncio.timeout(10):
        await app[ARRIVED].wait()  # the fill has read version 0 and is held open
    assert await send(proxy, "DELETE", "/c/x") == b"HTTP/1.1 204 No Content"
    # A request after the write starts its own fill: it does not join the old one.
    assert await get(client, proxy, "/C/X") == ("MISS", "/c/x version 1")
    app[GATE].set()
    async with asyncio.timeout(10):
        assert await early == ("MISS", "/c/x version 0")
    assert app[GETS]["/c/x"] == 2
    # The old fill finished after the write: it did not replace the new entry.
    assert await get(client, proxy, "/C/X") == ("HIT", "/c/x version 1")
    assert app[GETS]["/c/x"] == 2


async def test_a_control_port_path_purge_drops_every_spelling_of_the_path(
    sidecache: Factory, app_server: TestServer, client: aiohttp.ClientSession
) -> None:
    proxy = await proxy_for(sidecache, app_server)
    for path in ("/c/x", "/c/x/", "/C/X", "/c/xy"):
        await cached(client, proxy, path)
    async with client.post(proxy.control / "purge", json={"path": "/c/X/"}) as r:
        assert await r.json() == {"purged": 3}
    assert (await get(client, proxy, "/C/X"))[0] == "MISS"
    assert (await get(client, proxy, "/c/xy"))[0] == "HIT"
