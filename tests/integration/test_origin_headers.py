"""``freshness: origin`` end to end, for the headers an app may send oddly or
that only some caches read: an invalid ``Age``, ``must-understand``,
``Surrogate-Control`` and the ``Surrogate-Capability`` a fill announces."""

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


async def test_fills_announce_the_surrogate_and_its_targeted_lifetime_wins(
    sidecache: Factory, app: TestServer, client: aiohttp.ClientSession
) -> None:
    proxy = await start(sidecache, app)
    target = url(
        proxy,
        "/targeted",
        ("Cache-Control", "no-store"),
        ("Surrogate-Control", "max-age=10000;sidecache"),
    )
    headers = {"Surrogate-Capability": 'client="ESI/1.0"'}
    for expected in ("MISS", "HIT"):
        async with client.get(target, headers=headers) as r:
            await r.read()
            assert r.headers["X-Cache"] == expected
            # Forwarded to the client as the app sent it, Cache-Control too.
            assert r.headers.getall("Surrogate-Control") == ["max-age=10000;sidecache"]
            assert r.headers["Cache-Control"] == "no-store"
    (fill,) = app.app[SEEN]["/targeted"]
    assert fill.getall("Surrogate-Capability") == ['sidecache="Surrogate/1.0"']


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        # Surrogate-Control's no-store wins over a fresh Cache-Control and Expires.
        (
            [
                ("Cache-Control", "max-age=10000"),
                ("Surrogate-Control", "no-store"),
                ("Expires", "Fri, 01 Jan 2100 00:00:00 GMT"),
            ],
            ["MISS", "MISS"],
        ),
        # Its max-age=0 wins over a future Expires.
        (
            [("Surrogate-Control", "max-age=0"), ("Expires", "Fri, 01 Jan 2100 00:00:00 GMT")],
            ["MISS", "MISS"],
        ),
        # Targeted at another device: ignored, and nothing else gives a lifetime.
        ([("Surrogate-Control", "max-age=3600;not-for-you")], ["MISS", "MISS"]),
        # Alone, with an extension, in any case, capped: a lifetime.
        ([("Surrogate-Control", "foobar, MaX-aGe=99999999999")], ["MISS", "HIT"]),
    ],
)
async def test_surrogate_control_takes_precedence(
    sidecache: Factory,
    app: TestServer,
    client: aiohttp.ClientSession,
    lines: list[tuple[str, str]],
    expected: list[str],
) -> None:
    proxy = await start(sidecache, app)
    target = url(proxy, "/s", *lines)
    assert [await x_cache(client, target) for _ in range(2)] == expected


@pytest.mark.parametrize(
    ("cache_control", "surrogate", "hit_until"), [(3600, 1, 1), (1, 3600, 3600)]
)
async def test_the_surrogate_lifetime_replaces_the_cache_control_one(
    sidecache: Factory,
    app: TestServer,
    client: aiohttp.ClientSession,
    cache_control: int,
    surrogate: int,
    hit_until: float,
) -> None:
    clock = Clock()
    proxy = await start(sidecache, app, clock)
    target = url(
        proxy,
        "/lifetime",
        ("Cache-Control", f"max-age={cache_control}"),
        ("Surrogate-Control", f"max-age={surrogate}"),
    )
    assert await x_cache(client, target) == "MISS"
    # The app's Date has a one-second resolution: the response arrives up to a
    # second old (RFC 9111 section 4.2.3, apparent age).
    clock.now += max(0.0, hit_until - 1.1)
    assert await x_cache(client, target) == "HIT"
    clock.now = 1000.0 + hit_until
    assert await x_cache(client, target) == "MISS"


async def test_a_route_route_does_not_read_surrogate_control(
    sidecache: Factory, app: TestServer, client: aiohttp.ClientSession
) -> None:
    clock = Clock()
    proxy = await start(sidecache, app, clock, freshness="route", ttl="5m")
    short = url(proxy, "/short", ("Surrogate-Control", "max-age=1"))
    assert await x_cache(client, short) == "MISS"
    clock.now += 2
    assert await x_cache(client, short) == "HIT"  # the route's ttl
    refused = url(
        proxy, "/refused", ("Cache-Control", "no-store"), ("Surrogate-Control", "max-age=60")
    )
    assert [await x_cache(client, refused) for _ in range(2)] == ["MISS", "MISS"]
