"""``freshness: origin`` end to end, for the headers an app may send oddly: an
invalid ``Age``, ``must-understand``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict
from yarl import URL

from tests.integration.conftest import Clock, Factory, Running

# Every request the app received, by path: its headers.
SEEN: web.AppKey[dict[str, list[CIMultiDict[str]]]] = web.AppKey("seen", dict)


async def answer(request: web.Request) -> web.Response:
    """Answers with the status in ``status`` and one header line per ``h=Name:value``
    (repeat ``h`` for several lines of one field)."""
    request.app[SEEN].setdefault(request.path, []).append(CIMultiDict(request.headers))
    headers: CIMultiDict[str] = CIMultiDict()
    for line in request.query.getall("h", []):
        name, _, value = line.partition(":")
        headers.add(name, value)
    status = int(request.query.get("status", "200"))
    return web.Response(status=status, reason="Whatever", headers=headers, body=b"answer")


@pytest.fixture
async def app(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> TestServer:
    application = web.Application()
    application[SEEN] = {}
    application.router.add_get("/{name:.*}", answer)
    return await aiohttp_server(application)


def everything(**rules: Any) -> list[dict[str, Any]]:
    return [{"name": "all", "match": "/{rest:path}", **rules}]


async def start(
    sidecache: Factory, app: TestServer, clock: Clock | None = None, **rules: Any
) -> Running:
    return await sidecache(
        everything(**rules), upstream_url=str(app.make_url("/")).rstrip("/"), clock=clock
    )


def url(proxy: Running, path: str, *lines: tuple[str, str], status: int = 200) -> URL:
    query = [("h", f"{name}:{value}") for name, value in lines]
    if status != 200:
        query.append(("status", str(status)))
    return proxy.url.with_path(path).with_query(query)


async def x_cache(client: aiohttp.ClientSession, target: URL) -> str:
    async with client.get(target) as r:
        await r.read()
        return r.headers["X-Cache"]


def asked(app: TestServer, path: str) -> int:
    return len(app.app[SEEN].get(path, []))


@pytest.mark.parametrize(
    "ages",
    [["abc"], ["-7200"], ["7200.0"], ["7200;foo=bar"], ["0, 0"], ["0", "0"], ["0", "7200"]],
)
async def test_an_invalid_age_makes_a_response_stale_on_arrival(
    sidecache: Factory, app: TestServer, client: aiohttp.ClientSession, ages: list[str]
) -> None:
    proxy = await start(sidecache, app)
    target = url(proxy, "/aged", ("Cache-Control", "max-age=3600"), *(("Age", a) for a in ages))
    assert [await x_cache(client, target) for _ in range(2)] == ["MISS", "MISS"]
    assert asked(app, "/aged") == 2
    valid = url(proxy, "/valid", ("Cache-Control", "max-age=3600"), ("Age", "10"))
    assert [await x_cache(client, valid) for _ in range(2)] == ["MISS", "HIT"]


async def test_must_understand_stores_only_statuses_sidecache_knows(
    sidecache: Factory, app: TestServer, client: aiohttp.ClientSession
) -> None:
    proxy = await start(sidecache, app)
    unknown = url(proxy, "/599", ("Cache-Control", "max-age=3600, must-understand"), status=599)
    assert [await x_cache(client, unknown) for _ in range(2)] == ["MISS", "MISS"]
    assert asked(app, "/599") == 2
    plain = url(proxy, "/599-plain", ("Cache-Control", "max-age=3600"), status=599)
    assert [await x_cache(client, plain) for _ in range(2)] == ["MISS", "HIT"]
    # With a status it knows, must-understand overrides no-store (RFC 9111 5.2.2.3).
    known = url(proxy, "/200", ("Cache-Control", "no-store, must-understand, max-age=60"))
    assert [await x_cache(client, known) for _ in range(2)] == ["MISS", "HIT"]
    assert asked(app, "/200") == 1
